//! The compiled executor: identical layers share kernels, results do not depend on the thread
//! count and repeat bit for bit, and bad feeds are typed errors.

use skipgrad_ir::{DType, Graph, NodeId, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, compile};

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// Ten identical "BN, ReLU, add" layers on `[4, 8, 9, 9]`.
fn deep_graph() -> (Graph, NodeId) {
    let mut g = Graph::new();
    let mut h = input(&mut g, "x", &[4, 8, 9, 9]);
    for layer in 0..10 {
        let gamma = input(&mut g, &format!("l{layer}.gamma"), &[8]);
        let beta = input(&mut g, &format!("l{layer}.beta"), &[8]);
        let mean = g.add_node(Op::BatchMean, &[h], Role::Forward).unwrap();
        let var = g.add_node(Op::BatchVar, &[h], Role::Forward).unwrap();
        let y = g
            .add_node(Op::BatchNorm { eps: 1e-5, training: true }, &[h, mean, var, gamma, beta], Role::Forward)
            .unwrap();
        let r = g.add_node(Op::Relu, &[y], Role::Forward).unwrap();
        h = g.add_node(Op::Add, &[r, h], Role::Forward).unwrap();
    }
    let out = g.add_node(Op::ReduceSum { axes: [0, 2, 3].as_slice().into() }, &[h], Role::Forward).unwrap();
    (g, out)
}

fn feed(c: &mut skipgrad_jit::CompiledGraph) {
    let x: Vec<f32> = (0..4 * 8 * 81).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    c.set_input("x", &x).unwrap();
    for layer in 0..10 {
        c.set_input(&format!("l{layer}.gamma"), &[1.0, 0.5, 2.0, 1.0, 1.5, 0.7, 1.0, 1.2]).unwrap();
        c.set_input(&format!("l{layer}.beta"), &[0.1; 8]).unwrap();
    }
}

#[test]
fn identical_layers_share_kernels() {
    let (g, out) = deep_graph();
    let c = compile(&g, &[out], &CompileOptions::default()).unwrap();
    // batch_mean, batch_var, batch_norm, relu, add, and the final reduce_sum.
    assert_eq!(c.stats().kernels_compiled, 6, "{:?}", c.stats());
    assert_eq!(c.stats().kernels_reused, 45);
    assert_eq!(c.steps(), 51);
    assert!(c.kernels().iter().all(|k| !k.ir.is_empty() && !k.vcode.is_empty()));
}

#[test]
fn results_are_independent_of_threads_and_repeat_bit_for_bit() {
    let (g, out) = deep_graph();
    let mut results = vec![];
    for threads in [1, 2, 3] {
        let mut c = compile(&g, &[out], &CompileOptions { threads, ..CompileOptions::default() }).unwrap();
        assert_eq!(c.threads(), threads);
        feed(&mut c);
        c.run();
        let first = c.output(0).unwrap().to_vec();
        c.run();
        assert_eq!(c.output(0).unwrap(), first.as_slice(), "replay is deterministic");
        results.push(first);
    }
    // Every group is computed by one thread in a fixed order, so even reductions agree exactly.
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

#[test]
fn bad_feeds_are_typed_errors() {
    let (g, out) = deep_graph();
    let mut c = compile(&g, &[out], &CompileOptions::default()).unwrap();
    let err = c.set_input("nope", &[1.0]).unwrap_err();
    assert_eq!(err.to_string(), "jit run: the graph has no input or parameter \"nope\"");
    let err = c.set_input("x", &[1.0; 3]).unwrap_err();
    assert_eq!(err.to_string(), "jit run: \"x\" is f32[4,8,9,9], got 3 values");
}
