use skipgrad::prelude::*;
#[test]
fn smoke() {
    let x = Tensor::f64([2, 3, 5, 5], (0..150).map(|i| ((i * 37 % 17) as f64) / 17.0 - 0.5).collect()).unwrap();
    let w = Tensor::f64([4, 3, 3, 3], (0..108).map(|i| ((i * 13 % 11) as f64) / 11.0 - 0.5).collect()).unwrap();
    let r = gradcheck(|v| v[0].conv2d(&v[1], 2, 1), &[x, w], &GradcheckOptions::default()).unwrap();
    println!("{r:?}");
}
