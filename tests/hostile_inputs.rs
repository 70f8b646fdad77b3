//! Hostile inputs to the research API, the reference interpreter and the JIT: zero-sized
//! dimensions, strides and padding larger than the input, non-finite values, wrong dtypes and
//! labels out of range. Each is a typed error or a well-defined result, never a panic.

use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;

fn full(dims: &[usize], v: f64) -> Tensor {
    Tensor::full(dims, DType::F32, v).unwrap()
}

/// Every op on tensors with a zero-sized dimension (batch, channels or spatial): an error or an
/// empty result, in eager mode (the reference interpreter runs each op) and through the JIT.
#[test]
fn zero_sized_dimensions_are_errors_or_empty_results() {
    for dims in [[0, 3, 4, 4], [2, 0, 4, 4], [2, 3, 0, 4], [2, 3, 4, 0]] {
        let tape = Tape::eager(DType::F32);
        let x = tape.input("x", full(&dims, 1.0)).unwrap();
        let w = tape.parameter("w", full(&[2, dims[1], 3, 3], 0.5)).unwrap();
        let gamma = tape.parameter("gamma", full(&[dims[1]], 1.0)).unwrap();
        let beta = tape.parameter("beta", full(&[dims[1]], 0.0)).unwrap();
        let results = [
            x.conv2d(&w, 1, 1).map(|_| ()),
            x.conv2d(&w, 2, 0).map(|_| ()),
            x.batch_norm_train(&gamma, &beta, 1e-5).map(|_| ()),
            Ok(x.relu()).map(|_| ()),
            (&x + &x).map(|_| ()),
            x.max_pool(3, 2, 1).map(|_| ()),
            x.global_avg_pool().map(|_| ()),
            x.shortcut_a(2 * dims[1]).map(|_| ()),
            x.sum().map(|_| ()),
            x.mean().map(|_| ()),
            x.flatten().and_then(|f| f.softmax()).map(|_| ()),
        ];
        for (k, r) in results.iter().enumerate() {
            if let Err(e) = r {
                // The message names the empty shape ("f32[0,3,4,4]") or the size that fails ("0x4", "4x0").
                let text = e.to_string();
                assert!(
                    text.contains("[0,") || text.contains(",0") || text.contains("0x") || text.contains("x0 "),
                    "{dims:?} op {k}: {text}"
                );
            }
        }
        assert!(
            results[0].is_ok() == (dims[2] > 0 && dims[3] > 0),
            "{dims:?}: a conv over an empty batch or no channels is empty"
        );
        // Through the JIT: where the conv is valid, the traced conv-relu-sum compiles and runs.
        let trace = Tape::trace(DType::F32);
        let x = trace.input_spec("x", DType::F32, &dims).unwrap();
        let w = trace.parameter_spec("w", DType::F32, &[2, dims[1], 3, 3]).unwrap();
        if let Ok(loss) = x.conv2d(&w, 1, 1).and_then(|y| y.relu().sum()) {
            let mut c = compile(&trace.graph(), &[loss.id()], &CompileOptions::default()).unwrap();
            let feeds = [("x".to_string(), full(&dims, 1.0)), ("w".to_string(), full(&[2, dims[1], 3, 3], 0.5))];
            let out = c.run_tensors(&feeds.into_iter().collect()).unwrap();
            assert_eq!(out[0].to_f64_vec(), vec![0.0], "{dims:?}: the sum of nothing");
        }
    }
}

/// Strides and padding larger than the input: the output sizes follow the usual formula, and
/// a window that cannot fit is an error naming the op.
#[test]
fn strides_and_padding_larger_than_the_input() {
    let tape = Tape::eager(DType::F32);
    let x = tape.input("x", full(&[1, 1, 2, 2], 1.0)).unwrap();
    let w = tape.parameter("w", full(&[1, 1, 3, 3], 1.0)).unwrap();
    // Stride 5 on a 2x2 image padded by 1: one output pixel.
    let y = x.conv2d(&w, 5, 1).unwrap();
    assert_eq!(y.shape().dims(), &[1, 1, 1, 1]);
    assert_eq!(y.value().unwrap().to_f64_vec(), vec![4.0]);
    // Padding 10 > the kernel: outputs that see only zeros are zero.
    let y = x.conv2d(&w, 1, 10).unwrap();
    assert_eq!(y.shape().dims(), &[1, 1, 20, 20]);
    assert_eq!(y.value().unwrap().to_f64_vec().iter().sum::<f64>(), 4.0 * 9.0);
    let err = x.conv2d(&w, 0, 1).unwrap_err();
    assert!(err.to_string().contains("conv2d"), "{err}");
    let err = x.max_pool(5, 1, 0).unwrap_err();
    assert!(err.to_string().contains("max_pool"), "{err}");
    assert!(x.max_pool(3, 1, 2).is_err(), "padding of at least the window leaves windows of padding only");
}

/// NaN and infinities flow through the ops as IEEE arithmetic says; nothing panics, and the
/// JIT and the reference agree on which outputs are not finite.
#[test]
fn non_finite_inputs_flow_through() {
    let values = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1.0, -2.0, 0.0, 3.0, 1e38];
    let trace = Tape::trace(DType::F32);
    let x = trace.input_spec("x", DType::F32, &[2, 1, 2, 2]).unwrap();
    let w = trace.parameter_spec("w", DType::F32, &[1, 1, 1, 1]).unwrap();
    let y = x.conv2d(&w, 1, 0).unwrap();
    let loss = (&y + &x).unwrap().sum().unwrap();
    let [dw] = grad(&loss, &[&w]).unwrap().try_into().unwrap();
    let feeds: Feeds = [
        ("x".to_string(), Tensor::f32([2, 1, 2, 2], values.iter().map(|&v| v as f32).collect()).unwrap()),
        ("w".to_string(), full(&[1, 1, 1, 1], 2.0)),
    ]
    .into_iter()
    .collect();
    let graph = trace.graph();
    let expected = evaluate(&graph, &feeds, &[y.id(), loss.id(), dw.id()]).unwrap();
    let mut c = compile(&graph, &[y.id(), loss.id(), dw.id()], &CompileOptions::default()).unwrap();
    let got = c.run_tensors(&feeds).unwrap();
    for (g, e) in got.iter().zip(&expected) {
        let finite = |t: &Tensor| t.to_f64_vec().iter().map(|v| v.is_finite()).collect::<Vec<_>>();
        assert_eq!(finite(g), finite(e));
    }
    assert!(expected[1].to_f64_vec()[0].is_nan(), "a NaN input makes the sum NaN");
}

/// A tensor of the other dtype, or of the wrong shape, fed to a tape or a compiled graph, and
/// labels outside the classes: typed errors naming what was wrong.
#[test]
fn wrong_dtypes_shapes_and_labels_are_named() {
    // A tape holds f32 and f64 values; an op mixing them names both.
    let tape = Tape::eager(DType::F32);
    let x = tape.input("x", Tensor::f64([2], vec![1.0, 2.0]).unwrap()).unwrap();
    let y = tape.input("y", full(&[2], 1.0)).unwrap();
    let err = (&x + &y).unwrap_err().to_string();
    assert!(err.contains("f64") && err.contains("f32"), "{err}");

    let trace = Tape::trace(DType::F32);
    let logits = trace.input_spec("logits", DType::F32, &[2, 3]).unwrap();
    let labels = trace.input_spec("labels", DType::F32, &[2]).unwrap();
    let loss = logits.cross_entropy(&labels).unwrap();
    let mut c = compile(&trace.graph(), &[loss.id()], &CompileOptions::default()).unwrap();
    let err = c.set_input("logits", &[0.0; 5]).unwrap_err();
    assert!(err.to_string().contains("logits") && err.to_string().contains("f32[2,3], got 5 values"), "{err}");
    assert!(c.set_input("nothing", &[0.0]).unwrap_err().to_string().contains("nothing"));
    let err = c.set_input("labels", &[0.0, 3.0]).unwrap_err();
    assert!(err.to_string().contains('3'), "label 3 of 3 classes: {err}");
    let err = c.set_input("labels", &[0.0, -1.0]).unwrap_err();
    assert!(err.to_string().contains("-1"), "{err}");
    assert!(c.set_input("labels", &[0.0, f32::NAN]).is_err());
}

/// Sizes and attributes near `usize::MAX` on a tracing tape (shapes only): errors that say what
/// overflows, never an arithmetic overflow (the tests run with overflow checks).
#[test]
fn sizes_near_the_address_limit_are_errors_not_overflows() {
    let t = Tape::trace(DType::F32);
    let (max, big) = (usize::MAX, 1usize << 31);
    // A zero-sized axis does not excuse the others from fitting.
    let err = t.input_spec("empty", DType::F32, &[0, 1, max, max]).unwrap_err();
    assert!(err.to_string().contains("too many elements"), "{err}");
    let x = t.input_spec("x", DType::F32, &[0, 1, big, big]).unwrap();
    let w = t.parameter_spec("w", DType::F32, &[1, 1, 3, 3]).unwrap();
    let err = x.conv2d(&w, 2, max).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    assert!(x.max_pool(3, 1, max).is_err());
    let pad = ShortcutAttrs { stride: 1, pad_before: max, pad_after: max };
    assert!(x.shortcut_a_with(pad).unwrap_err().to_string().contains("overflow"));
    assert!(x.conv2d_grad_input(&w, Conv2dAttrs::square(1, max), [max, max]).is_err());
    assert!(x.conv2d_grad_weight(&x, Conv2dAttrs::square(1, 1), [max, max]).is_err());
    // Partial products of a valid shape fit: flattening and averaging work.
    assert_eq!(x.flatten().unwrap().shape().dims(), &[0, big * big]);
    assert!(x.global_avg_pool().is_ok());
    assert!(x.broadcast(&[0], &[max, 0, 1, big, big]).is_err());
}
