//! Hand-computed values for the reference interpreter: the oracle is checked against arithmetic
//! done on paper, not against itself.

use skipgrad_ir::{Conv2dAttrs, DType, Graph, NodeId, Op, PoolAttrs, Role, ShortcutAttrs, Tensor, TensorType};
use skipgrad_reference::{Feeds, evaluate};

/// Evaluates `op` on the given f64 inputs.
fn run(op: Op, inputs: &[Tensor]) -> Vec<f64> {
    run_typed(op, inputs, DType::F64)
}

fn run_typed(op: Op, inputs: &[Tensor], dtype: DType) -> Vec<f64> {
    let mut g = Graph::new();
    let mut feeds = Feeds::new();
    let ids: Vec<NodeId> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = format!("in{i}");
            feeds.insert(name.clone(), t.cast(dtype));
            g.add_source(Op::Input { name }, TensorType::new(dtype, t.shape().clone()), Role::Forward).unwrap()
        })
        .collect();
    let out = g.add_node(op, &ids, Role::Forward).unwrap();
    evaluate(&g, &feeds, &[out]).unwrap().remove(0).to_f64_vec()
}

fn t(dims: &[usize], v: &[f64]) -> Tensor {
    Tensor::f64(dims, v.to_vec()).unwrap()
}

#[test]
fn conv2d_with_padding_and_stride() {
    // 3x3 input 1..9, 2x2 kernel [[1,0],[0,-1]], pad 1, stride 2 -> outputs at (-1,-1), (-1,1), (1,-1), (1,1).
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let w = t(&[1, 1, 2, 2], &[1., 0., 0., -1.]);
    // y[i,j] = x[2i-1, 2j-1] - x[2i, 2j] with zeros outside.
    assert_eq!(run(Op::Conv2d(Conv2dAttrs::square(2, 1)), &[x, w]), vec![-1., -3., -7., -4.]);
}

#[test]
fn conv2d_sums_over_input_channels() {
    let x = t(&[1, 2, 1, 1], &[2., 3.]);
    let w = t(&[2, 2, 1, 1], &[1., 10., -1., 0.5]);
    assert_eq!(run(Op::Conv2d(Conv2dAttrs::square(1, 0)), &[x, w]), vec![32., -0.5]);
}

#[test]
fn batch_norm_normalises_each_channel() {
    // Channel 0 holds 1, 3 (mean 2, biased var 1); channel 1 holds 10, 10 (var 0).
    let x = t(&[2, 2, 1, 1], &[1., 10., 3., 10.]);
    assert_eq!(run(Op::BatchMean, std::slice::from_ref(&x)), vec![2., 10.]);
    assert_eq!(run(Op::BatchVar, std::slice::from_ref(&x)), vec![1., 0.]);
    let (mean, var) = (t(&[2], &[2., 10.]), t(&[2], &[1., 0.]));
    let (gamma, beta) = (t(&[2], &[2., 1.]), t(&[2], &[0., 5.]));
    let y = run(Op::BatchNorm { eps: 0.25, training: false }, &[x, mean, var, gamma, beta]);
    let s = 1.0 / 1.25f64.sqrt();
    assert_eq!(y, vec![-2. * s, 5., 2. * s, 5.]);
}

#[test]
fn option_a_shortcut_subsamples_and_pads_channels() {
    let x = t(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]);
    let a = ShortcutAttrs { stride: 2, pad_before: 1, pad_after: 1 };
    let y = run(Op::ShortcutA(a), std::slice::from_ref(&x));
    assert_eq!(y, vec![0., 0., 0., 0., 1., 3., 7., 9., 0., 0., 0., 0.]);
    let back = run(Op::ShortcutAGrad { shortcut: a, input_hw: [3, 3] }, &[t(&[1, 3, 2, 2], &y)]);
    assert_eq!(back, vec![1., 0., 3., 0., 0., 0., 7., 0., 9.]);
}

#[test]
fn max_pool_pads_with_minus_infinity_and_routes_to_the_first_max() {
    let x = t(&[1, 1, 2, 2], &[-5., -1., -1., -7.]);
    let p = PoolAttrs { kernel: [3, 3], stride: [2, 2], pad: [1, 1] };
    assert_eq!(run(Op::MaxPool(p), std::slice::from_ref(&x)), vec![-1.]);
    assert_eq!(run(Op::MaxPoolGrad(p), &[x, t(&[1, 1, 1, 1], &[4.])]), vec![0., 4., 0., 0.]);
}

#[test]
fn cross_entropy_and_its_gradient() {
    // Zero logits: loss ln K for every row; gradient (1/K - onehot) / N.
    let z = t(&[2, 4], &[0.; 8]);
    let y = t(&[2], &[1., 3.]);
    let loss = run(Op::SoftmaxCrossEntropy, &[z.clone(), y.clone()]);
    assert!((loss[0] - 4f64.ln()).abs() < 1e-15);
    let g = run(Op::SoftmaxCrossEntropyGrad, &[z, y, t(&[], &[1.])]);
    assert_eq!(g, vec![0.125, -0.375, 0.125, 0.125, 0.125, 0.125, 0.125, -0.375]);
    // Large logits stay finite (log-sum-exp is shifted by the row max).
    let big = run(Op::SoftmaxCrossEntropy, &[t(&[1, 2], &[1000., 0.]), t(&[1], &[1.])]);
    assert!((big[0] - 1000.).abs() < 1e-9);
}

#[test]
fn matmul_transposes_reductions_and_broadcasts() {
    let a = t(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let mm =
        |ta, tb, x: &Tensor, y: &Tensor| run(Op::MatMul { transpose_a: ta, transpose_b: tb }, &[x.clone(), y.clone()]);
    assert_eq!(mm(false, true, &a, &a), vec![14., 32., 32., 77.]);
    assert_eq!(mm(true, false, &a, &a), vec![17., 22., 27., 22., 29., 36., 27., 36., 45.]);
    let sum = |axes: &[usize]| run(Op::ReduceSum { axes: axes.into() }, std::slice::from_ref(&a));
    assert_eq!(sum(&[0]), vec![5., 7., 9.]);
    assert_eq!(sum(&[1]), vec![6., 15.]);
    assert_eq!(sum(&[0, 1]), vec![21.]);
    let b =
        run(Op::Broadcast { axes: skipgrad_ir::Axes::from_slice(&[0]), shape: [2, 2].into() }, &[t(&[2], &[7., 8.])]);
    assert_eq!(b, vec![7., 8., 7., 8.]);
    assert_eq!(run(Op::MulScalar, &[a.clone(), t(&[], &[0.5])]), vec![0.5, 1., 1.5, 2., 2.5, 3.]);
    assert_eq!(run(Op::Div, &[a.clone(), t(&[2, 3], &[2., 4., 1., 8., 10., 3.])]), vec![0.5, 0.5, 3., 0.5, 0.5, 2.]);
    assert_eq!(run(Op::Sqrt, &[t(&[3], &[4., 0.25, 0.])]), vec![2., 0.5, 0.]);
    assert!(run(Op::Sqrt, &[t(&[1], &[-1.])])[0].is_nan(), "no square root below zero");
    let argmax = run(Op::ArgMax, &[t(&[2, 3], &[0., 5., 5., 9., 1., 2.])]);
    assert_eq!(argmax, vec![1., 0.], "first maximum wins ties");
}

#[test]
fn f32_and_f64_interpreters_agree() {
    let x = Tensor::f64([2, 3, 5, 5], (0..150).map(|i| ((i * 37 % 23) as f64) / 23.0 - 0.5).collect()).unwrap();
    let w = Tensor::f64([4, 3, 3, 3], (0..108).map(|i| ((i * 13 % 11) as f64) / 11.0 - 0.5).collect()).unwrap();
    let op = Op::Conv2d(Conv2dAttrs::square(2, 1));
    let (a, b) = (run_typed(op.clone(), &[x.clone(), w.clone()], DType::F32), run(op, &[x, w]));
    assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-5));
}

#[test]
fn evaluate_reports_missing_and_mistyped_feeds() {
    let mut g = Graph::new();
    let x = g.add_source(Op::Input { name: "x".into() }, TensorType::new(DType::F32, [2]), Role::Forward).unwrap();
    let y = g.add_node(Op::Relu, &[x], Role::Forward).unwrap();
    let err = evaluate(&g, &Feeds::new(), &[y]).unwrap_err();
    assert_eq!(err.to_string(), "no value was fed for input \"x\" (node %0)");
    let feeds = Feeds::from([("x".to_string(), Tensor::full([3], DType::F32, 1.0).unwrap())]);
    let err = evaluate(&g, &feeds, &[y]).unwrap_err();
    assert_eq!(err.to_string(), "the value fed for \"x\" is f32[3], the graph expects f32[2]");
}
