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

proptest! {
    #![proptest_config(config(8))]

    /// State updated in place (`CompileOptions::updates`): the new parameters, velocities and
    /// running statistics of random training steps, written straight into their inputs' buffers,
    /// give the values a step that copies them back gives, bit for bit, over three steps; in the
    /// fused program every update is in place, and the graph holds less dedicated memory.
    #[test]
    fn state_updated_in_place_matches_copying_it_back(blocks in prop::collection::vec(block(), 1..3), channels in prop::sample::select(vec![2usize, 8]), seed: u64) {
        let net = build(&blocks, 2, channels, 6, seed, DType::F32).unwrap();
        let graph = net.tape.graph();
        let updates = net.tape.updates();
        let first_update = net.outputs.len() - updates.len();
        let names: Vec<String> = updates.iter().map(|(t, _)| graph.source_name(t.id()).unwrap().to_string()).collect();
        let program = skipgrad::fuse::Program { graph: graph.clone(), outputs: net.outputs.iter().map(|v| v.id()).collect() };
        let fused = skipgrad::fuse::Pipeline::training().run(program).unwrap().pop().unwrap().program;
        let run = |in_place: bool| {
            let pairs = if in_place { names.iter().enumerate().map(|(k, n)| (n.clone(), first_update + k)).collect() } else { vec![] };
            let options = CompileOptions { threads: 2, updates: pairs, ..CompileOptions::default() };
            let mut c = compile(&fused.graph, &fused.outputs, &options).unwrap();
            for (name, t) in &net.feeds {
                c.set_input(name, &t.to_f64_vec().into_iter().map(|v| v as f32).collect::<Vec<_>>()).unwrap();
            }
            let mut outputs = vec![];
            for _ in 0..3 {
                c.run();
                outputs.push((0..fused.outputs.len()).map(|k| c.output(k).unwrap().to_vec()).collect::<Vec<_>>());
                for (k, name) in names.iter().enumerate() {
                    if !c.in_place(first_update + k) {
                        let values = c.output(first_update + k).unwrap().to_vec();
                        c.set_input(name, &values).unwrap();
                    }
                }
            }
            let in_place: Vec<bool> = (0..names.len()).map(|k| c.in_place(first_update + k)).collect();
            (outputs, in_place, c.memory().dedicated)
        };
        let (copied, none, copying_memory) = run(false);
        let (updated, all, in_place_memory) = run(true);
        prop_assert!(none.iter().all(|&b| !b));
        prop_assert!(all.iter().all(|&b| b), "every update in place: {:?}", all);
        prop_assert!(copied == updated, "in place differs from copying back");
        prop_assert!(in_place_memory < copying_memory);
    }
}

/// An update is written in place only when that is safe: here a kernel after the update still
/// reads the old value, so the update gets a buffer of its own, and both outputs are right.
#[test]
fn an_update_whose_input_is_read_later_is_not_in_place() {
    let tape = Tape::trace(DType::F32);
    let p = tape.parameter_spec("p", DType::F32, &[5]).unwrap();
    let doubled = p.scale(2.0);
    let later = p.add_scalar(1.0);
    let options = CompileOptions { updates: vec![("p".into(), 0)], ..CompileOptions::default() };
    let mut c = compile(&tape.graph(), &[doubled.id(), later.id()], &options).unwrap();
    assert!(!c.in_place(0), "p is read after its update is written");
    c.set_input("p", &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    c.run();
    assert_eq!(c.output(0).unwrap(), &[2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(c.output(1).unwrap(), &[2.0, 3.0, 4.0, 5.0, 6.0]);
    // Without the later reader the same update is in place.
    let mut c = compile(&tape.graph(), &[doubled.id()], &options).unwrap();
    assert!(c.in_place(0));
    c.set_input("p", &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    c.run();
    assert_eq!(c.output(0).unwrap(), &[2.0, 4.0, 6.0, 8.0, 10.0]);
    // A name the graph lacks, or an output it has not, is an error naming it.
    let bad = CompileOptions { updates: vec![("q".into(), 0)], ..CompileOptions::default() };
    let error = compile(&tape.graph(), &[doubled.id()], &bad).err().unwrap().to_string();
    assert!(error.contains("\"q\""), "{error}");
    let bad = CompileOptions { updates: vec![("p".into(), 3)], ..CompileOptions::default() };
    let error = compile(&tape.graph(), &[doubled.id()], &bad).err().unwrap().to_string();
    assert!(error.contains("no output 3"), "{error}");
}
