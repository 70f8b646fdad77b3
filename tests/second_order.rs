//! Second-order gradients: gradients are graph nodes, so differentiating them again gives
//! Hessian-vector products. Each property checks `x -> <grad f(x), v>` with gradcheck, i.e. the
//! HVP `H v` from reverse-over-reverse against central differences of the gradient.

mod common;

use common::{check, config, constant, labels, uniform, uniform_in};
use proptest::prelude::*;
use skipgrad::prelude::*;

/// `<grad f(x0..), v>` with respect to all inputs: its gradient is the Hessian times `v`.
fn grad_dot(f: impl Fn(&[Var]) -> skipgrad::Result<Var>, v: &[Tensor]) -> impl Fn(&[Var]) -> skipgrad::Result<Var> {
    move |x: &[Var]| {
        let refs: Vec<&Var> = x.iter().collect();
        let grads = grad(&f(x)?, &refs)?;
        let mut total: Option<Var> = None;
        for (g, v) in grads.iter().zip(v) {
            let term = g.mul(&constant(g, v))?.sum()?;
            total = Some(match total {
                Some(t) => (&t + &term)?,
                None => term,
            });
        }
        Ok(total.expect("at least one input"))
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn elementwise_hvp(dims in prop::collection::vec(1..4usize, 1..3), seed: u64) {
        let x = [uniform(seed, &dims), uniform(seed ^ 1, &dims)];
        let v = [uniform(seed ^ 2, &dims), uniform(seed ^ 3, &dims)];
        // A smooth polynomial mixing add, sub, mul, scale and add_scalar; relu(x) * x for the kink.
        let f = |x: &[Var]| -> skipgrad::Result<Var> {
            let a = (&x[0] * &x[1])?;
            let b = (&a * &x[0].add_scalar(0.5))?;
            let c = (&b - &x[1].scale(3.0))?;
            (&(&c * &c)? + &(&x[0].relu() * &x[0])?)?.sum()
        };
        check(grad_dot(f, &v), &x)?;
    }

    #[test]
    fn linear_hvp(n in 1..4usize, fin in 1..4usize, fout in 1..4usize, seed: u64) {
        let dims = [vec![n, fin], vec![fout, fin], vec![fout]];
        let x: Vec<Tensor> = dims.iter().enumerate().map(|(i, d)| uniform(seed ^ i as u64, d)).collect();
        let v: Vec<Tensor> = dims.iter().enumerate().map(|(i, d)| uniform(seed ^ (10 + i as u64), d)).collect();
        let f = |x: &[Var]| { let y = x[0].linear(&x[1], &x[2])?; (&y * &y)?.sum() };
        check(grad_dot(f, &v), &x)?;
    }

    #[test]
    fn reductions_hvp(dims in prop::collection::vec(1..4usize, 4..5), seed: u64) {
        let x = [uniform(seed, &dims)];
        let v = [uniform(seed ^ 1, &dims)];
        let f = |x: &[Var]| {
            let pooled = x[0].global_avg_pool()?;
            let s = x[0].sum_axes(&[1, 3])?;
            &(&pooled * &pooled)?.mean()? + &(&s * &s)?.sum()?
        };
        check(grad_dot(f, &v), &x)?;
    }

    #[test]
    fn softmax_cross_entropy_hvp(n in 1..4usize, k in 2..5usize, seed: u64) {
        let x = [uniform_in(seed, &[n, k], -2.0, 2.0)];
        let v = [uniform(seed ^ 1, &[n, k])];
        let y = labels(seed ^ 2, n, k);
        check(grad_dot(move |x: &[Var]| x[0].cross_entropy(&constant(&x[0], &y)), &v), &x)?;
    }

    #[test]
    fn classifier_head_hvp(n in 1..4usize, fin in 1..4usize, k in 2..4usize, seed: u64) {
        // Linear then softmax cross-entropy: the Hessian couples weights and inputs.
        let dims = [vec![n, fin], vec![k, fin], vec![k]];
        let x: Vec<Tensor> = dims.iter().enumerate().map(|(i, d)| uniform(seed ^ i as u64, d)).collect();
        let v: Vec<Tensor> = dims.iter().enumerate().map(|(i, d)| uniform(seed ^ (10 + i as u64), d)).collect();
        let y = labels(seed ^ 99, n, k);
        check(grad_dot(move |x: &[Var]| x[0].linear(&x[1], &x[2])?.cross_entropy(&constant(&x[0], &y)), &v), &x)?;
    }

    #[test]
    fn convolution_hvp(n in 1..3usize, c in 1..3usize, k in 1..3usize, hw in 3..6usize, stride in 1..3usize, seed: u64) {
        let x = [uniform(seed, &[n, c, hw, hw]), uniform(seed ^ 1, &[k, c, 3, 3])];
        let v = [uniform(seed ^ 2, &[n, c, hw, hw]), uniform(seed ^ 3, &[k, c, 3, 3])];
        let f = |x: &[Var]| { let y = x[0].conv2d(&x[1], stride, 1)?; (&y * &y)?.sum() };
        check(grad_dot(f, &v), &x)?;
    }
}

#[test]
fn batch_norm_backward_is_documented_as_not_differentiable_again() {
    let tape = Tape::eager(DType::F64);
    let x = tape.input("x", uniform(1, &[2, 2, 2, 2])).unwrap();
    let g = tape.parameter("g", uniform(2, &[2])).unwrap();
    let b = tape.parameter("b", uniform(3, &[2])).unwrap();
    let loss = x.batch_norm_train(&g, &b, 1e-5).unwrap().relu().sum().unwrap();
    let dx = grad(&loss, &[&x]).unwrap().remove(0);
    let err = grad(&dx.sum().unwrap(), &[&x]).unwrap_err();
    assert!(matches!(err, Error::NotDifferentiable { .. }), "{err}");
    assert!(err.to_string().contains("batch_norm_grad_input"), "{err}");
}
