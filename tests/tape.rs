//! The research API's behaviour: eager and trace mode, accumulation, no_grad, detach, custom
//! ops, batch-norm running statistics, and typed errors instead of panics.

mod common;

use common::uniform;
use skipgrad::prelude::*;
use std::rc::Rc;

fn values(v: &Var) -> Vec<f64> {
    v.value().unwrap().to_f64_vec()
}

#[test]
fn gradients_accumulate_over_every_use() {
    let tape = Tape::eager(DType::F64);
    let x = tape.input("x", Tensor::f64([3], vec![1.0, -2.0, 3.0]).unwrap()).unwrap();
    let y = (&(&x * &x).unwrap() + &x.scale(2.0)).unwrap().sum().unwrap(); // sum(x^2 + 2x)
    let dx = grad(&y, &[&x]).unwrap().remove(0);
    assert_eq!(values(&dx), vec![4.0, -2.0, 8.0]);
    assert!(dx.to_string().ends_with("= f64[3] [4.000000, -2.000000, 8.000000]"), "{dx}");
    assert!(tape.dump().contains("# backward"), "{}", tape.dump());
}

#[test]
fn trace_mode_records_the_same_graph_and_the_reference_evaluates_it() {
    let build = |x: Var, w: Var| -> skipgrad::Result<(Var, Var)> {
        let loss = x.conv2d(&w, 2, 1)?.relu().mean()?;
        let dw = grad(&loss, &[&w])?.remove(0);
        Ok((loss, dw))
    };
    let (xv, wv) = (uniform(1, &[2, 3, 6, 6]), uniform(2, &[4, 3, 3, 3]));
    let eager = Tape::eager(DType::F64);
    let (el, edw) = build(eager.input("x", xv.clone()).unwrap(), eager.parameter("w", wv.clone()).unwrap()).unwrap();

    let trace = Tape::trace(DType::F64);
    let x = trace.input_spec("x", DType::F64, &[2, 3, 6, 6]).unwrap();
    let w = trace.parameter_spec("w", DType::F64, &[4, 3, 3, 3]).unwrap();
    let (tl, tdw) = build(x, w).unwrap();
    assert!(matches!(tl.value(), Err(Error::NoValue { .. })));
    assert_eq!(trace.dump(), eager.dump(), "eager and trace record the same graph");

    let feeds = Feeds::from([("x".to_string(), xv), ("w".to_string(), wv)]);
    let out = evaluate(&trace.graph(), &feeds, &[tl.id(), tdw.id()]).unwrap();
    assert_eq!(out[0], el.value().unwrap());
    assert_eq!(out[1], edw.value().unwrap());
}

#[test]
fn no_grad_and_detach_stop_gradients() {
    let tape = Tape::eager(DType::F64);
    let x = tape.input("x", Tensor::f64([2], vec![1.0, 2.0]).unwrap()).unwrap();
    let frozen = tape.no_grad(|| x.scale(10.0));
    assert!(!frozen.requires_grad());
    let y = (&(&x * &frozen).unwrap() + &x.detach()).unwrap().sum().unwrap(); // sum(x * c + stop(x))
    assert_eq!(values(&grad(&y, &[&x]).unwrap()[0]), vec![10.0, 20.0]);
}

#[test]
fn unrelated_variables_get_zero_gradients() {
    let tape = Tape::eager(DType::F32);
    let x = tape.input("x", Tensor::f32([2], vec![1.0, 2.0]).unwrap()).unwrap();
    let unused = tape.parameter("unused", Tensor::f32([3], vec![1.0; 3]).unwrap()).unwrap();
    let g = grad(&x.sum().unwrap(), &[&unused]).unwrap().remove(0);
    assert_eq!(values(&g), vec![0.0; 3]);
}

/// `cube(x) = x * x * x`, composed of existing ops, with a hand-written gradient rule.
struct Cube {
    slope: f64,
}

impl CustomOp for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    fn forward(&self, args: &[Var]) -> skipgrad::Result<Var> {
        &(&args[0] * &args[0])? * &args[0]
    }
    fn vjp(&self, args: &[Var], _output: &Var, grad: &Var) -> skipgrad::Result<Vec<Option<Var>>> {
        Ok(vec![Some((&(&args[0] * &args[0])?.scale(self.slope) * grad)?)])
    }
}

#[test]
fn custom_ops_behave_like_builtins_in_grad_dumps_and_checks() {
    let cube: Rc<dyn CustomOp> = Rc::new(Cube { slope: 3.0 });
    let x = uniform(5, &[2, 3]);
    let report =
        gradcheck(|v| Var::custom(&cube, &[&v[0]]), std::slice::from_ref(&x), &GradcheckOptions::default()).unwrap();
    assert!(report.jacobian_entries > 0);

    // Second order through the custom rule: d/dx sum(grad(sum(cube(x)))) = 6x.
    let tape = Tape::eager(DType::F64);
    let xv = tape.input("x", x.clone()).unwrap();
    let y = Var::custom(&cube, &[&xv]).unwrap().sum().unwrap();
    let g = grad(&y, &[&xv]).unwrap().remove(0);
    let h = grad(&g.sum().unwrap(), &[&xv]).unwrap().remove(0);
    let expect: Vec<f64> = x.to_f64_vec().iter().map(|v| 6.0 * v).collect();
    for (a, b) in values(&h).iter().zip(&expect) {
        assert!((a - b).abs() < 1e-12);
    }
    assert!(tape.dump().contains("= cube[custom_rule=0]("), "{}", tape.dump());

    // A wrong rule is caught by gradcheck, naming the worst element.
    let wrong: Rc<dyn CustomOp> = Rc::new(Cube { slope: 2.0 });
    let err = gradcheck(|v| Var::custom(&wrong, &[&v[0]]), &[x], &GradcheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("worst element x0["), "{err}");
}

#[test]
fn batch_norm_layer_records_pytorch_running_statistics() {
    let tape = Tape::eager(DType::F64);
    // One channel holding 1, 2, 3, 4: batch mean 2.5, biased variance 1.25, unbiased 5/3.
    let x = tape.input("x", Tensor::f64([2, 1, 1, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap()).unwrap();
    let p = |name: &str, v: f64| tape.parameter(name, Tensor::f64([1], vec![v]).unwrap()).unwrap();
    let bn = BatchNorm {
        gamma: p("bn.weight", 2.0),
        beta: p("bn.bias", 0.5),
        running_mean: p("bn.running_mean", 0.0),
        running_var: p("bn.running_var", 1.0),
        momentum: 0.1,
        eps: 1e-5,
    };
    let y = x.batch_norm(&bn, true).unwrap();
    let istd = 1.0 / (1.25f64 + 1e-5).sqrt();
    for (got, xi) in values(&y).iter().zip([1.0, 2.0, 3.0, 4.0]) {
        assert!((got - ((xi - 2.5) * istd * 2.0 + 0.5)).abs() < 1e-12);
    }
    let updates = tape.updates();
    assert_eq!(updates.len(), 2);
    assert_eq!(updates[0].0.id(), bn.running_mean.id());
    assert!((values(&updates[0].1)[0] - 0.25).abs() < 1e-12);
    assert!((values(&updates[1].1)[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-12);
    assert!(tape.dump().contains("# update"));

    let eval = x.batch_norm(&bn, false).unwrap(); // running stats 0 and 1
    let expect = 2.0 / (1.0f64 + 1e-5).sqrt() + 0.5;
    assert!((values(&eval)[0] - expect).abs() < 1e-12);
}

#[test]
fn shape_errors_name_the_op_and_the_shapes() {
    let tape = Tape::eager(DType::F32);
    let x = tape.input("x", Tensor::full([1, 16, 8, 8], DType::F32, 1.0).unwrap()).unwrap();
    let w = tape.parameter("w", Tensor::full([8, 32, 3, 3], DType::F32, 1.0).unwrap()).unwrap();
    let err = x.conv2d(&w, 1, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d[stride=1, pad=1]: input f32[1,16,8,8] has 16 channels, weight f32[8,32,3,3] expects 32"
    );
    assert!(tape.graph().len() == 2, "a rejected op adds no node");
}

#[test]
fn misuse_returns_typed_errors() {
    let tape = Tape::eager(DType::F64);
    let x = tape.input("x", uniform(1, &[2, 3])).unwrap();
    let y = tape.input("y", uniform(2, &[3, 2])).unwrap();
    assert!(matches!(&x + &y, Err(Error::Graph(_))));
    assert!(matches!(grad(&x, &[&x]), Err(Error::NotScalar { .. })));
    assert!(matches!(tape.input("x", uniform(3, &[1])), Err(Error::Graph(_))), "duplicate names");
    let labels = tape.constant(Tensor::f64([2], vec![0.0, 7.0]).unwrap());
    let err = x.cross_entropy(&labels).unwrap_err();
    assert!(err.to_string().contains("label 7 in row 1 is not a class index in 0..3"), "{err}");
    let fractional = tape.constant(Tensor::f64([2], vec![0.5, 1.0]).unwrap());
    assert!(x.cross_entropy(&fractional).is_err());

    let other = Tape::eager(DType::F64);
    let z = other.input("z", uniform(4, &[2, 3])).unwrap();
    assert!(matches!(&x + &z, Err(Error::ForeignVar { index: 1, .. })));
    let f32_tape = Tape::eager(DType::F32);
    assert!(matches!(f32_tape.input_spec("s", DType::F32, &[1]), Err(Error::Argument { .. })));

    let big_kernel = tape.parameter("k", uniform(5, &[1, 1, 5, 5])).unwrap();
    let img = tape.input("img", uniform(6, &[1, 1, 2, 2])).unwrap();
    let err = img.conv2d(&big_kernel, 1, 0).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
    assert!(img.max_pool(3, 0, 1).is_err(), "zero stride");
    assert!(img.shortcut_a(0).is_err());
    let huge = tape.input_spec("huge", DType::F64, &[usize::MAX, 2]);
    assert!(matches!(huge, Err(Error::Argument { .. })), "eager tapes need values");
    let trace = Tape::trace(DType::F32);
    let err = trace.input_spec("huge", DType::F32, &[usize::MAX, 2]).unwrap_err();
    assert!(err.to_string().contains("too many elements"), "{err}");
    assert!(Tensor::full([usize::MAX, 2], DType::F32, 0.0).is_err());
    assert!(tape.fill(0.0, &[usize::MAX, 3]).is_err());
    let big = trace.input_spec("big", DType::F32, &[1 << 40, 1]).unwrap();
    assert!(big.reshape(&[1 << 40, 1 << 40]).is_err());
    // Repeated axes multiply a dimension past usize (found by the graph-builder fuzzer's replay).
    let err = big.mean_axes(&[0, 0]).unwrap_err();
    assert!(err.to_string().contains("counts more elements than fit"), "{err}");
    let empty = tape.input("empty", Tensor::f64([0, 1, 2, 2], vec![]).unwrap()).unwrap();
    assert!(empty.batch_mean().is_err(), "no elements per channel");
    assert!(empty.global_avg_pool().is_ok(), "zero-sized batches are fine where nothing divides by them");
}

#[test]
fn gradients_in_f32_match_f64() {
    let run = |dtype: DType| -> Vec<f64> {
        let tape = Tape::eager(dtype);
        let x = tape.input("x", uniform(1, &[2, 3, 5, 5]).cast(dtype)).unwrap();
        let w = tape.parameter("w", uniform(2, &[3, 3, 3, 3]).cast(dtype)).unwrap();
        let g = tape.parameter("g", uniform(3, &[3]).cast(dtype)).unwrap();
        let b = tape.parameter("b", uniform(4, &[3]).cast(dtype)).unwrap();
        let h = x.conv2d(&w, 1, 1).unwrap().batch_norm_train(&g, &b, 1e-5).unwrap();
        let loss = (&h.relu() + &x).unwrap().max_pool(3, 2, 1).unwrap().mean().unwrap();
        grad(&loss, &[&w]).unwrap()[0].value().unwrap().to_f64_vec()
    };
    for (a, b) in run(DType::F32).iter().zip(run(DType::F64)) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

/// A custom op whose rule returns a gradient of the wrong shape.
struct Broken;

impl CustomOp for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn forward(&self, args: &[Var]) -> skipgrad::Result<Var> {
        Ok(args[0].scale(2.0))
    }
    fn vjp(&self, _args: &[Var], _output: &Var, grad: &Var) -> skipgrad::Result<Vec<Option<Var>>> {
        Ok(vec![Some(grad.sum()?)])
    }
}

#[test]
fn custom_rules_are_checked_not_trusted() {
    let tape = Tape::eager(DType::F64);
    let x = tape.input("x", uniform(1, &[2, 3])).unwrap();
    let broken: Rc<dyn CustomOp> = Rc::new(Broken);
    let y = Var::custom(&broken, &[&x]).unwrap().sum().unwrap();
    let err = grad(&y, &[&x]).unwrap_err();
    assert!(err.to_string().contains("returned a f64[] gradient for argument 0 of type f64[2,3]"), "{err}");

    // A custom node built by hand with a rule index the tape does not have.
    let z = Var::apply(Op::Custom { name: "ghost".into(), rule: 7 }, &[&x, &x]).unwrap().sum().unwrap();
    assert!(matches!(grad(&z, &[&x]), Err(Error::NotDifferentiable { .. })));
}

#[test]
fn kink_distance_rejects_what_the_op_would() {
    use skipgrad::reference::kink_distance;
    let pool = Op::MaxPool(skipgrad::ir::PoolAttrs { kernel: [3, 3], stride: [2, 2], pad: [1, 1] });
    let flat = Tensor::f64([4], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(kink_distance(&pool, &[&flat]), None);
    assert_eq!(kink_distance(&Op::ArgMax, &[&flat]), None);
    assert_eq!(kink_distance(&Op::Relu, &[&flat]), Some(1.0));
}
