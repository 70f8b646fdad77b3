//! Whole training graphs through the JIT: random chains and residual diamonds of conv-BN-ReLU
//! blocks (identity and option-A shortcuts, strides 1 and 2, 1x1 and 3x3 kernels), a classifier
//! and softmax cross-entropy, with every parameter gradient and the batch-norm running-statistics
//! updates, compiled and run on 1 and 2 threads: every output matches the reference interpreter.

mod common;

use common::config;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;
use skipgrad::reference::kink_distance;

/// One block of the random network.
#[derive(Clone, Debug)]
enum Block {
    /// conv (kernel, stride) - BN - ReLU, to `out` channels.
    Plain { out: usize, kernel: usize, stride: usize },
    /// A basic residual block, doubling the channels with option A when `stride` is 2.
    Residual { stride: usize },
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        (1..5usize, prop::sample::select(vec![1usize, 3]), 1..3usize).prop_map(|(out, kernel, stride)| Block::Plain {
            out,
            kernel,
            stride
        }),
        (1..3usize).prop_map(|stride| Block::Residual { stride }),
    ]
}

struct Net {
    tape: Tape,
    feeds: Feeds,
    outputs: Vec<Var>,
    trainable: Vec<Var>,
    rng: StdRng,
}

impl Net {
    fn param(&mut self, name: &str, dims: &[usize], lo: f64, hi: f64) -> Var {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.rng.random_range(lo..hi) as f32).collect();
        self.feeds.insert(name.into(), Tensor::f32(dims, values).unwrap());
        let v = self.tape.parameter_spec(name, DType::F32, dims).unwrap();
        if !name.contains("running") {
            self.trainable.push(v.clone());
        }
        v
    }
    fn conv_bn(&mut self, x: &Var, name: &str, out: usize, kernel: usize, stride: usize) -> Var {
        let c = x.shape().dims()[1];
        let bound = (3.0 / (c * kernel * kernel) as f64).sqrt();
        let w = self.param(&format!("{name}.conv.weight"), &[out, c, kernel, kernel], -bound, bound);
        let bn = BatchNorm {
            gamma: self.param(&format!("{name}.bn.weight"), &[out], 0.5, 1.5),
            beta: self.param(&format!("{name}.bn.bias"), &[out], -0.5, 0.5),
            running_mean: self.param(&format!("{name}.bn.running_mean"), &[out], -0.1, 0.1),
            running_var: self.param(&format!("{name}.bn.running_var"), &[out], 0.9, 1.1),
            momentum: 0.1,
            eps: 1e-5,
        };
        x.conv2d(&w, stride, kernel / 2).unwrap().batch_norm(&bn, true).unwrap()
    }
}

/// Builds the traced training graph; returns it with its feeds and outputs (loss, gradients, updates).
fn build(blocks: &[Block], batch: usize, channels: usize, hw: usize, seed: u64) -> Net {
    let mut net = Net {
        tape: Tape::trace(DType::F32),
        feeds: Feeds::new(),
        outputs: vec![],
        trainable: vec![],
        rng: StdRng::seed_from_u64(seed),
    };
    let x_values: Vec<f32> = (0..batch * channels * hw * hw).map(|_| net.rng.random_range(-1.0..1.0)).collect();
    net.feeds.insert("images".into(), Tensor::f32([batch, channels, hw, hw], x_values).unwrap());
    let mut h = net.tape.input_spec("images", DType::F32, &[batch, channels, hw, hw]).unwrap();
    for (i, b) in blocks.iter().enumerate() {
        let c = h.shape().dims()[1];
        h = match *b {
            Block::Plain { out, kernel, stride } => net.conv_bn(&h, &format!("b{i}"), out, kernel, stride).relu(),
            Block::Residual { stride } => {
                let out = if stride == 2 { 2 * c } else { c };
                let y = net.conv_bn(&h, &format!("b{i}.1"), out, 3, stride).relu();
                let y = net.conv_bn(&y, &format!("b{i}.2"), out, 3, 1);
                let shortcut = if stride == 2 { h.shortcut_a(out).unwrap() } else { h.clone() };
                (&y + &shortcut).unwrap().relu()
            }
        };
    }
    let classes = 3;
    let features = h.shape().dims()[1];
    let fc_w = net.param("fc.weight", &[classes, features], -0.5, 0.5);
    let fc_b = net.param("fc.bias", &[classes], -0.1, 0.1);
    let labels: Vec<f32> = (0..batch).map(|_| net.rng.random_range(0..classes) as f32).collect();
    net.feeds.insert("labels".into(), Tensor::f32([batch], labels).unwrap());
    let y = net.tape.input_spec("labels", DType::F32, &[batch]).unwrap();
    let loss = h.global_avg_pool().unwrap().linear(&fc_w, &fc_b).unwrap().cross_entropy(&y).unwrap();
    let refs: Vec<&Var> = net.trainable.iter().collect();
    let grads = grad(&loss, &refs).unwrap();
    net.outputs.push(loss);
    net.outputs.extend(grads);
    net.outputs.extend(net.tape.updates().into_iter().map(|(_, new)| new));
    net
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn random_training_graphs_match_the_reference(blocks in prop::collection::vec(block(), 1..4), batch in 2..4usize, channels in 1..4usize, hw in 3..9usize, seed: u64) {
        let net = build(&blocks, batch, channels, hw, seed);
        let graph = net.tape.graph();
        let ids: Vec<NodeId> = net.outputs.iter().map(|v| v.id()).collect();
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
