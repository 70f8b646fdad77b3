//! Whole training graphs through the JIT: random chains and residual diamonds of conv-BN-ReLU
//! blocks (identity and option-A shortcuts, strides 1 and 2, 1x1 and 3x3 kernels), a classifier
//! and softmax cross-entropy (with 8 input channels, the Winograd convolutions and their fused
//! epilogues and statistics), with every parameter gradient and the batch-norm running-statistics
//! updates, compiled and run on 1 and 2 threads: every output matches the reference interpreter.

mod common;

use common::config;
use common::net::{Block, block, build, degenerate_batch_norm};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;
use skipgrad::reference::kink_distance;

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn random_training_graphs_match_the_reference(blocks in prop::collection::vec(block(), 1..4), batch in 2..4usize, channels in prop::sample::select(vec![1usize, 2, 3, 8]), hw in 3..9usize, seed: u64) {
        let net = build(&blocks, batch, channels, hw, seed, DType::F32).unwrap();
        let graph = net.tape.graph();
        let ids: Vec<NodeId> = net.outputs.iter().map(|v| v.id()).collect();
        prop_assume!(!degenerate_batch_norm(&graph), "a batch norm over fewer than 4 values per channel");
        // Reject samples with a ReLU input within 1e-5 of zero: two f32 evaluations that sum in
        // different orders may fall on different sides of the kink.
        let all: Vec<NodeId> = graph.ids().collect();
        let values = evaluate(&graph, &net.feeds, &all).unwrap();
        for node in graph.nodes() {
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.index()]).collect();
            if let Some(d) = kink_distance(&node.op, &inputs) {
                prop_assume!(d > 1e-5, "a ReLU input is near its kink");
            }
        }
        let expected: Vec<Vec<f64>> = ids.iter().map(|i| values[i.index()].to_f64_vec()).collect();
        for threads in [1, 2] {
            let mut compiled = compile(&graph, &ids, &CompileOptions { threads, ..CompileOptions::default() })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = compiled.run_tensors(&net.feeds).unwrap();
            for (k, (g, e)) in got.iter().zip(&expected).enumerate() {
                for (a, b) in g.to_f64_vec().iter().zip(e) {
                    prop_assert!((a - b).abs() <= 2e-4 * b.abs().max(1.0), "output {k} ({}): jit {a} vs reference {b}, {threads} threads, blocks {blocks:?}", graph.node(ids[k]).unwrap().op);
                }
            }
        }
    }
}

/// Memory planning changes where values live, not what they are: a planned and an unplanned
/// compile of the same training step give bit-identical outputs, and the planned one holds less.
#[test]
fn memory_planning_keeps_results_and_saves_memory() {
    let blocks = [Block::Residual { stride: 1 }, Block::Residual { stride: 2 }, Block::Residual { stride: 1 }];
    let net = build(&blocks, 4, 3, 8, 5, DType::F32).unwrap();
    let graph = net.tape.graph();
    let ids: Vec<NodeId> = net.outputs.iter().map(|v| v.id()).collect();
    let run = |plan_memory: bool| {
        let mut c = compile(&graph, &ids, &CompileOptions { plan_memory, ..CompileOptions::default() }).unwrap();
        let out: Vec<Vec<f64>> = c.run_tensors(&net.feeds).unwrap().iter().map(|t| t.to_f64_vec()).collect();
        (out, c.memory().clone())
    };
    let (planned, with) = run(true);
    let (unplanned, without) = run(false);
    assert_eq!(planned, unplanned);
    assert_eq!(without.unplanned, with.unplanned, "both count the same values");
    assert_eq!(without.shared + without.scratch, without.unplanned);
    assert!(with.shared + with.scratch < without.unplanned / 2, "{with:?} vs {without:?}");
}

/// SGD at a learning rate fed at run time (`Sgd::update_at`, what the training driver records)
/// computes what SGD at the same constant rate does, bit for bit, in one fused update kernel.
#[test]
fn sgd_at_a_run_time_rate_matches_the_constant_rate_bit_for_bit() {
    use rand::{RngExt, SeedableRng};
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    let run = |at_run_time: bool| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let tape = Tape::trace(DType::F32);
        let mut feeds = Feeds::new();
        let lr = tape.input_spec("lr", DType::F32, &[]).unwrap();
        feeds.insert("lr".into(), Tensor::f32([], vec![sgd.lr as f32]).unwrap());
        let mut outputs = vec![];
        for (name, n) in [("a", 1000), ("b", 37)] {
            let mut tensor = |suffix: &str| {
                let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
                feeds.insert(format!("{name}.{suffix}"), Tensor::f32([n], values).unwrap());
                tape.parameter_spec(&format!("{name}.{suffix}"), DType::F32, &[n]).unwrap()
            };
            let (p, g, v) = (tensor("p"), tensor("g"), tensor("v"));
            let (p, v) = if at_run_time { sgd.update_at(&lr, &p, &g, &v) } else { sgd.update(&p, &g, &v) }.unwrap();
            outputs.extend([p.id(), v.id()]);
        }
        let program = skipgrad::fuse::Program { graph: tape.graph(), outputs };
        let fused = skipgrad::fuse::Pipeline::training().run(program).unwrap().pop().unwrap().program;
        let mut compiled = compile(&fused.graph, &fused.outputs, &CompileOptions::default()).unwrap();
        let values: Vec<Vec<f32>> = compiled
            .run_tensors(&feeds)
            .unwrap()
            .iter()
            .map(|t| t.to_f64_vec().iter().map(|&v| v as f32).collect())
            .collect();
        (values, compiled.steps())
    };
    let (constant, kernels) = run(false);
    assert_eq!(run(true), (constant, kernels));
    assert_eq!(kernels, 1, "every update in one kernel");
}
