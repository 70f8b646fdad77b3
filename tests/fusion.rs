//! The fusion passes: fused training graphs compute what the unfused ones compute (in f64 on the
//! reference interpreter, and in f32 through the JIT), and fusion cuts the kernel count.

mod common;

use common::config;
use common::net::{Block, Net, block, build, degenerate_batch_norm};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use skipgrad::fuse::{Pipeline, Program, counts};
use skipgrad::ir::{Fused, TensorType};
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;
use skipgrad::reference::kink_distance;

fn program(net: &Net) -> Program {
    Program { graph: net.tape.graph(), outputs: net.outputs.iter().map(|v| v.id()).collect() }
}

fn fused(net: &Net) -> Program {
    Pipeline::training().run(program(net)).unwrap().pop().unwrap().program
}

fn outputs(p: &Program, feeds: &Feeds) -> Vec<Vec<f64>> {
    evaluate(&p.graph, feeds, &p.outputs).unwrap().iter().map(|t| t.to_f64_vec()).collect()
}

proptest! {
    #![proptest_config(config(24))]

    /// The loss, every gradient and every running-statistics update agree in f64: a fused body
    /// evaluates the same ops in the same order.
    #[test]
    fn fused_graphs_match_unfused_in_f64(blocks in prop::collection::vec(block(), 1..4), batch in 2..4usize, channels in 1..4usize, hw in 3..9usize, seed: u64) {
        let net = build(&blocks, batch, channels, hw, seed, DType::F64).unwrap();
        let (before, after) = (program(&net), fused(&net));
        prop_assert!(after.graph.len() < before.graph.len(), "nothing fused:\n{}", after.graph.dump());
        // Every node is merged into at most one fused node.
        let stages = Pipeline::training().run(program(&net)).unwrap();
        let mut covered: Vec<usize> = stages[1].program.graph.nodes().iter().flat_map(|n| match &n.op {
            Op::Fused(k) => k.covers.clone(),
            _ => vec![],
        }).collect();
        let all = covered.len();
        covered.sort_unstable();
        covered.dedup();
        prop_assert_eq!(covered.len(), all, "a node is covered twice:\n{}", stages[1].dump());
        for (k, (a, b)) in outputs(&after, &net.feeds).iter().zip(outputs(&before, &net.feeds)).enumerate() {
            for (x, y) in a.iter().zip(&b) {
                prop_assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "output {k}: fused {x} vs unfused {y}");
            }
        }
    }

    /// The fused graph compiled by the JIT (1 and 2 threads) matches the unfused graph on the
    /// reference interpreter.
    #[test]
    fn fused_graphs_match_the_reference_on_the_jit(blocks in prop::collection::vec(block(), 1..4), batch in 2..4usize, channels in prop::sample::select(vec![1usize, 2, 3, 8]), hw in 3..9usize, seed: u64) {
        let net = build(&blocks, batch, channels, hw, seed, DType::F32).unwrap();
        let before = program(&net);
        let all: Vec<NodeId> = before.graph.ids().collect();
        prop_assume!(!degenerate_batch_norm(&before.graph), "a batch norm over fewer than 4 values per channel");
        let values = evaluate(&before.graph, &net.feeds, &all).unwrap();
        for node in before.graph.nodes() {
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.index()]).collect();
            if let Some(d) = kink_distance(&node.op, &inputs) {
                prop_assume!(d > 1e-5, "a ReLU input is near its kink");
            }
        }
        let after = fused(&net);
        for threads in [1, 2] {
            let mut compiled = compile(&after.graph, &after.outputs, &CompileOptions { threads, ..CompileOptions::default() })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = compiled.run_tensors(&net.feeds).unwrap();
            for (k, (g, &id)) in got.iter().zip(&before.outputs).enumerate() {
                for (a, b) in g.to_f64_vec().iter().zip(values[id.index()].to_f64_vec()) {
                    prop_assert!((a - b).abs() <= 2e-4 * b.abs().max(1.0), "output {k}: jit {a} vs reference {b}, {threads} threads");
                }
            }
        }
    }
}

/// One basic block with an identity shortcut, a classifier and the loss, with gradients and
/// running-statistics updates. Fusion makes these groups:
/// - forward, conv_stats: each convolution sums its batch statistics while its outputs are in
///   registers, and its last thread reduces them to mean and variance;
/// - forward, elementwise: batch_norm + relu after the first convolution, batch_norm + add + relu
///   after the second (the ReLU gradient reads the ReLU's output, so the pre-activations are not
///   needed outside the group);
/// - backward, bn_backward: each batch norm's input, gamma and beta gradients in one kernel;
/// - backward, conv_epilogue: the second convolution's input gradient with the first ReLU's mask
///   (the first convolution's input gradient is not computed: the images are not trainable);
/// - update, elementwise: each of the 4 running statistics, `(1 - m) * running + m * batch`
///   (scale, scale, add), and each parameter's SGD step (`v' = m v + g + wd p`, `p' = p - lr v'`:
///   six ops) as one group writing both the new velocity and the new parameter;
/// - then foreach: those 12 update groups become one node, so one kernel updates everything.
#[test]
fn a_basic_block_step_fuses_bn_add_relu() {
    let net = build(&[Block::Residual { stride: 1 }], 2, 4, 6, 7, DType::F32).unwrap();
    let stages = Pipeline::training().run(program(&net)).unwrap();
    assert_eq!(counts(&stages), "elementwise: 14, conv_epilogue: 1, conv_stats: 2, bn_backward: 2, foreach: 12");
    let after = &stages[1].program;
    let dump = stages[1].dump();
    assert!(
        dump.starts_with("# stage fuse (elementwise: 14, conv_epilogue: 1, conv_stats: 2, bn_backward: 2)\n"),
        "{dump}"
    );
    let ops: Vec<String> = after
        .graph
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Fused(k) => Some(k.body.nodes()[k.arity()..].iter().map(|b| b.op.name()).collect::<Vec<_>>().join("+")),
            _ => None,
        })
        .collect();
    assert_eq!(ops.iter().filter(|o| *o == "batch_norm+relu").count(), 1, "{dump}");
    assert_eq!(ops.iter().filter(|o| *o == "batch_norm+add+relu").count(), 1, "{dump}");
    assert_eq!(ops.iter().filter(|o| *o == "scale+scale+add").count(), 4, "{dump}");
    assert_eq!(ops.iter().filter(|o| *o == "conv2d_grad_input+relu_grad").count(), 1, "{dump}");
    assert_eq!(ops.iter().filter(|o| *o == "conv2d+batch_mean+batch_var").count(), 2, "{dump}");
    assert_eq!(
        ops.iter().filter(|o| *o == "batch_norm_grad_input+batch_norm_grad_gamma+reduce_sum").count(),
        2,
        "{dump}"
    );
    // The SGD step of each of the 8 parameters (2 convolutions, 2 batch norms' scale and shift,
    // the classifier's weight and bias): one kernel writing the new parameter and velocity.
    assert_eq!(ops.iter().filter(|o| *o == "scale+add+scale+add+scale+sub").count(), 8, "{dump}");
    // One node holds all 12 updates, with their 4 + 8 x 2 outputs.
    let merged: Vec<&Fused> = stages[2]
        .program
        .graph
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Fused(k) if k.rule == "foreach" => Some(k),
            _ => None,
        })
        .collect();
    assert_eq!(merged.len(), 1, "{}", stages[2].dump());
    assert_eq!((merged[0].covers.len(), merged[0].outputs.len()), (12, 20));
}

/// Kernel calls over activations per role of the node each computes: (forward, backward,
/// update). Weight transforms are not counted.
fn kernels_by_role(p: &Program) -> [usize; 3] {
    let compiled = compile(&p.graph, &p.outputs, &CompileOptions::default()).unwrap();
    let mut counts = [0; 3];
    for (node, _) in compiled.schedule().filter(|(_, k)| !k.spec.transforms_weights()) {
        counts[match p.graph.node(node).unwrap().role {
            Role::Forward => 0,
            Role::Backward => 1,
            Role::Update => 2,
        }] += 1;
    }
    counts
}

/// Passes over activations per role (forward, backward, update) of the kernel calls of `p`: each
/// read or write of a tensor of `dims` (an activation, or its gradient) by a kernel call, a
/// fused node's extra outputs included. Weight transforms read only weights.
fn passes_by_role(p: &Program, dims: &[usize]) -> [usize; 3] {
    let compiled = compile(&p.graph, &p.outputs, &CompileOptions::default()).unwrap();
    let g = &p.graph;
    let is_activation = |id: NodeId| g.node(id).unwrap().ty.shape.dims() == dims;
    let mut counts = [0; 3];
    for (node, _) in compiled.schedule().filter(|(_, k)| !k.spec.transforms_weights()) {
        let n = g.node(node).unwrap();
        let extra_outputs = g.ids().filter(|&o| {
            let out = g.node(o).unwrap();
            matches!(out.op, Op::Output { .. }) && out.inputs.as_slice() == [node] && is_activation(o)
        });
        let passes = n.inputs.iter().filter(|&&i| is_activation(i)).count()
            + usize::from(is_activation(node))
            + extra_outputs.count();
        counts[match n.role {
            Role::Forward => 0,
            Role::Backward => 1,
            Role::Update => 2,
        }] += passes;
    }
    counts
}

/// Passes over activations per residual unit (the performance issue's lever 2 counts them): a
/// basic block's training step reads or writes an activation-sized tensor 26 times, and its
/// update none:
/// - forward, 9: conv1 with its statistics (x, y1), BN + ReLU (y1, a1), conv2 with its
///   statistics (a1, y2), BN + add + ReLU (y2, x, out);
/// - backward, 17: per conv-BN, batch-norm backward (its input, dy, dx: 3), the weight gradient
///   (the conv's input, dy: 2) and the input gradient with the previous ReLU's mask in its
///   epilogue (dy, the mask, dx: 3; 4 for conv1's, which also adds the shortcut's gradient).
///
/// A kernel that fuses more lowers these counts: this test says by how much. It counts each
/// tensor once per kernel call, a lower bound of the traffic: batch-norm backward reads its input
/// and dy twice (once to sum, once to apply), which summing them in the kernel that writes dy
/// would save without changing this count.
#[test]
fn a_basic_block_step_passes_over_its_activations_26_times() {
    let stem = Block::Plain { out: 4, kernel: 3, stride: 1 };
    let dims = [2, 4, 8, 8];
    let before = fused(&build(std::slice::from_ref(&stem), 2, 3, 8, 7, DType::F32).unwrap());
    let after = fused(&build(&[stem, Block::Residual { stride: 1 }], 2, 3, 8, 7, DType::F32).unwrap());
    let [b, a] = [passes_by_role(&before, &dims), passes_by_role(&after, &dims)];
    assert_eq!([a[0] - b[0], a[1] - b[1], a[2] - b[2]], [9, 17, 0], "{}", after.graph.dump());
}

/// The kernel-count targets: a basic block's training step (BN in training mode) runs at most 2
/// kernels per conv-BN-ReLU(-add) forward and at most 3 per backward. A stem conv-BN-ReLU makes
/// the block's input trainable, so every backward kernel of the block runs; the block's kernels
/// are the difference against the stem alone:
/// - forward, per conv-BN-ReLU: the convolution with its statistics, then BN apply + (add +) ReLU;
/// - backward, per conv-BN-ReLU: batch-norm backward (with the ReLU mask of the block's output
///   folded into the gradient it reads), the input gradient (the previous ReLU's mask and the
///   shortcut's gradient in its epilogue), the weight gradient;
/// - update: nothing of its own: one kernel updates every parameter and running statistic of the
///   step, with or without the block.
///
/// A downsampling block (stride 2, option-A shortcut) meets the same counts (its strided input
/// gradient is one kernel of sub-pixel phases), plus its shortcut's strided copy in each direction.
#[test]
fn a_basic_block_step_meets_the_kernel_count_targets() {
    let stem = Block::Plain { out: 4, kernel: 3, stride: 1 };
    let before = fused(&build(std::slice::from_ref(&stem), 2, 3, 8, 7, DType::F32).unwrap());
    for (stride, shortcut) in [(1, 0), (2, 1)] {
        let after = fused(&build(&[stem.clone(), Block::Residual { stride }], 2, 3, 8, 7, DType::F32).unwrap());
        let [b, a] = [kernels_by_role(&before), kernels_by_role(&after)];
        let block = [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
        let want = [2 * 2 + shortcut, 2 * 3 + shortcut, 0];
        assert_eq!(block, want, "stride {stride}: block kernels (forward, backward, update)");
        assert_eq!((b[2], a[2]), (1, 1), "update kernels: one per step");
    }
    // Blocks with projection shortcuts (options B and C) and bottlenecks: (convolutions, forward
    // and backward kernels). A projection's two batch norms share one apply kernel with the add and
    // the ReLU, so the forward needs 2 per conv-BN less one; the backward 3 per conv-BN.
    for (block, convs, [forward, backward]) in [
        (Block::Projection { stride: 1 }, 3, [5, 9]),
        (Block::Projection { stride: 2 }, 3, [5, 9]),
        (Block::Bottleneck { stride: 1 }, 3, [6, 9]),
        (Block::Bottleneck { stride: 2 }, 4, [7, 12]),
    ] {
        let net = build(&[stem.clone(), block.clone()], 2, 3, 8, 7, DType::F32).unwrap();
        let in_block = net.tape.graph().nodes().iter().filter(|n| matches!(n.op, Op::Conv2d(_))).count() - 1;
        assert_eq!(in_block, convs, "{block:?}");
        let [b, a] = [kernels_by_role(&before), kernels_by_role(&fused(&net))];
        assert_eq!([a[0] - b[0], a[1] - b[1], a[2] - b[2]], [forward, backward, 0], "{block:?}");
        assert!(forward <= 2 * convs && backward <= 3 * convs);
    }
}

/// Parameters recorded on a tracing tape, their values drawn uniformly from one seed into feeds.
struct Params {
    tape: Tape,
    rng: rand::rngs::StdRng,
    feeds: Feeds,
}

impl Params {
    fn new(seed: u64) -> Params {
        use rand::SeedableRng;
        Params { tape: Tape::trace(DType::F32), rng: rand::rngs::StdRng::seed_from_u64(seed), feeds: Feeds::new() }
    }

    /// Parameter `name` of `dims`, uniform in `[lo, hi)`.
    fn param(&mut self, name: &str, dims: &[usize], lo: f32, hi: f32) -> Var {
        use rand::RngExt;
        let n = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        self.feeds.insert(name.into(), Tensor::f32(dims, values).unwrap());
        self.tape.parameter_spec(name, DType::F32, dims).unwrap()
    }

    /// An inference batch norm over 8 channels, its tensors named `<name>.weight` and so on.
    fn batch_norm(&mut self, name: &str) -> BatchNorm {
        BatchNorm {
            gamma: self.param(&format!("{name}.weight"), &[8], 0.5, 1.5),
            beta: self.param(&format!("{name}.bias"), &[8], -0.5, 0.5),
            running_mean: self.param(&format!("{name}.running_mean"), &[8], -0.2, 0.2),
            running_var: self.param(&format!("{name}.running_var"), &[8], 0.5, 1.5),
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

/// Every value of `got` (the JIT's) within 1e-4 of `want` (the reference interpreter's).
fn assert_close(got: &[f64], want: &[f64]) {
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "jit {a} vs reference {b}");
    }
}

/// A basic block in inference on 2 images of 8 x `hw` x `hw`: `relu(bn(conv(relu(bn(conv(x))))) +
/// x)`, `kernel` x `kernel` convolutions (padded to keep the size), batch norms by running
/// statistics.
fn inference_block(p: &mut Params, hw: usize, kernel: usize) -> Program {
    let x = p.param("x", &[2, 8, hw, hw], -1.0, 1.0);
    let mut conv_bn = |name: &str, h: &Var| {
        let w = p.param(&format!("{name}.weight"), &[8, 8, kernel, kernel], -0.3, 0.3);
        let bn = p.batch_norm(&format!("{name}.bn"));
        h.conv2d(&w, 1, kernel / 2).unwrap().batch_norm(&bn, false).unwrap()
    };
    let h = conv_bn("conv1", &x).relu();
    let y = (&conv_bn("conv2", &h) + &x).unwrap().relu();
    Program { graph: p.tape.graph(), outputs: vec![y.id()] }
}

/// Inference: convolution, batch norm with running statistics, the residual add and the ReLU run
/// in the convolution's kernel (which packs its input itself), so a basic block is 2 kernels over
/// activations (and a transform of each convolution's weights), and its output matches the
/// unfused graph on the reference interpreter.
#[test]
fn inference_blocks_run_one_kernel_per_convolution() {
    let mut p = Params::new(11);
    let program = inference_block(&mut p, 6, 3);
    let stages = Pipeline::training().run(program.clone()).unwrap();
    assert_eq!(counts(&stages), "elementwise: 0, conv_epilogue: 2, conv_stats: 0, bn_backward: 0, foreach: 0");
    let after = &stages[1].program;
    let mut compiled = compile(&after.graph, &after.outputs, &CompileOptions::default()).unwrap();
    let kernels: Vec<String> =
        compiled.schedule().filter(|(_, k)| !k.spec.transforms_weights()).map(|(_, k)| k.name.clone()).collect();
    assert_eq!(kernels.len(), 2, "{kernels:?}");
    assert_eq!(kernels.iter().filter(|k| k.ends_with("fused_conv_epilogue")).count(), 2, "{kernels:?}");
    // Each (Winograd) convolution's weights are transformed by a kernel of their own.
    assert_eq!(compiled.schedule().filter(|(_, k)| k.spec.transforms_weights()).count(), 2);
    let got = compiled.run_tensors(&p.feeds).unwrap().remove(0).to_f64_vec();
    assert_close(&got, &outputs(&program, &p.feeds)[0]);
}

/// Inference pointwise convolutions (direct kernels) whose batch norms' per-channel factors are
/// computed once per channel into a table in the kernel's scratch: 8 output channels (register
/// tiles of 6 and 2) on 7-wide rows (a partial tile), matching the reference.
#[test]
fn pointwise_inference_blocks_match_the_reference() {
    let mut p = Params::new(13);
    let program = inference_block(&mut p, 7, 1);
    let after = Pipeline::training().run(program.clone()).unwrap().pop().unwrap().program;
    let mut compiled = compile(&after.graph, &after.outputs, &CompileOptions::default()).unwrap();
    let got = compiled.run_tensors(&p.feeds).unwrap().remove(0).to_f64_vec();
    assert_close(&got, &outputs(&program, &p.feeds)[0]);
}

/// Pre-activation blocks in inference: `relu(bn(x + conv(...)))` where the sum is also the next
/// block's shortcut. The sum is an extra output of its group, and a group with extra outputs takes
/// no convolution (a convolution's kernel writes one value) nor per-channel operands (nor does a
/// kernel with several outputs): the fused graph compiles and computes what the unfused one does.
#[test]
fn pre_activation_inference_compiles_and_matches_the_reference() {
    let mut p = Params::new(12);
    let (bn1, bn2) = (p.batch_norm("bn1"), p.batch_norm("bn2"));
    let x = p.param("x", &[2, 8, 6, 6], -1.0, 1.0);
    let w1 = p.param("w1", &[8, 8, 3, 3], -0.3, 0.3);
    let w2 = p.param("w2", &[8, 8, 3, 3], -0.3, 0.3);
    let pre = x.batch_norm(&bn1, false).unwrap().relu();
    let sum = (&pre.conv2d(&w1, 1, 1).unwrap() + &x).unwrap();
    let pre = sum.batch_norm(&bn2, false).unwrap().relu();
    let y = (&pre.conv2d(&w2, 1, 1).unwrap() + &sum).unwrap();
    let program = Program { graph: p.tape.graph(), outputs: vec![y.id()] };
    let after = Pipeline::training().run(program.clone()).unwrap().pop().unwrap().program;
    let mut compiled = compile(&after.graph, &after.outputs, &CompileOptions::default()).unwrap();
    let got = compiled.run_tensors(&p.feeds).unwrap().remove(0).to_f64_vec();
    assert_close(&got, &outputs(&program, &p.feeds)[0]);
}

#[test]
fn dumps_show_what_merged() {
    let net = build(&[Block::Residual { stride: 1 }], 2, 2, 4, 3, DType::F64).unwrap();
    let dump = fused(&net).graph.dump();
    assert!(dump.contains("fused[rule=elementwise, ops=batch_norm+add+relu, covers=#"), "{dump}");
}

/// Fusion runs after gradients are taken: a fused node met by reverse mode is a typed error.
#[test]
fn fused_nodes_are_not_differentiable() {
    let mut body = Graph::new();
    let x = body
        .add_source(Op::Input { name: Fused::placeholder(0) }, TensorType::new(DType::F64, [3]), Role::Forward)
        .unwrap();
    let y = body.add_node(Op::Relu, &[x], Role::Forward).unwrap();
    body.add_node(Op::Scale { c: 2.0 }, &[y], Role::Forward).unwrap();
    let op =
        Op::Fused(Fused { rule: "test".into(), body: std::sync::Arc::new(body), covers: vec![1, 2], outputs: vec![] });
    let tape = Tape::eager(DType::F64);
    let x = tape.input("x", Tensor::f64([3], vec![-1.0, 0.5, 2.0]).unwrap()).unwrap();
    let y = tape.record(op, &[&x]).unwrap();
    assert_eq!(y.value().unwrap().to_f64_vec(), vec![0.0, 1.0, 4.0]);
    let err = grad(&y.sum().unwrap(), &[&x]).unwrap_err().to_string();
    assert!(err.contains("fusion runs after gradients"), "{err}");
}
