//! The table of rules from IR ops to kernels: each node becomes a feed, a constant, or a short
//! list of kernel steps (most often one [`NestSpec`] over the node's inputs) that writes the
//! node's buffer, with scratch buffers where a kernel needs a packed layout.

mod conv;

use self::conv::{Geometry, conv, sub_pixel_grad_input, weight_grad};
use crate::conv::winograd::WinogradTiles;
use crate::conv::{Epilogue, WeightLayout};
use crate::copy::CopySpec;
use crate::expr::{Cond, Expr};
use crate::foreach::{ForeachPart, ForeachSpec};
use crate::matmul::MatMulSpec;
use crate::maxpool::PoolSpec;
use crate::nest::{Nest, NestSpec, Operand, Pass};
use crate::rows::{RowOp, RowSpec};
use crate::spec::KernelSpec;
use crate::{Error, Result};
use skipgrad_ir::{DType, Fused, Graph, NodeId, Op};

/// A buffer a step reads or writes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Buf {
    /// The value of a node (the node being lowered, or one of its inputs).
    Node(NodeId),
    /// Scratch buffer `k` of the node being lowered (zeroed once, then owned by its steps).
    Scratch(usize),
    /// Scratch buffer `k`, one share of its length per thread: the kernel picks its share by
    /// thread index.
    PerThread(usize),
    /// Scratch buffer `k`, kept between runs: written by a step that computes it from its inputs
    /// alone (a transform of weights), which need not run again while they are unchanged.
    Kept(usize),
}

/// One kernel call: reads `inputs`, writes `output`.
pub(crate) struct Planned {
    pub label: String,
    pub spec: KernelSpec,
    pub inputs: Vec<Buf>,
    pub output: Buf,
}

/// What a node becomes.
pub(crate) enum Lowered {
    /// Filled from the feeds at run time (inputs and parameters).
    Feed,
    /// Filled once at compile time.
    Constant(Vec<f32>),
    /// Computed by kernel calls, in order, with scratch buffers of the given lengths.
    Steps { scratch: Vec<usize>, steps: Vec<Planned> },
}

/// One kernel reading `operands` and writing node `out`.
fn single(label: String, spec: KernelSpec, operands: Vec<NodeId>, out: NodeId) -> Lowered {
    let inputs = operands.into_iter().map(Buf::Node).collect();
    Lowered::Steps { scratch: vec![], steps: vec![Planned { label, spec, inputs, output: Buf::Node(out) }] }
}

impl Lowered {
    /// One nest kernel reading `operands` and writing node `out`.
    fn nest(label: String, spec: NestSpec, operands: Vec<NodeId>, out: NodeId) -> Lowered {
        single(label, KernelSpec::Nest(spec), operands, out)
    }
}

/// What the compile options and the target decide about a lowering.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Choices {
    /// Which 3x3 stride-1 convolutions use Winograd tiles, and which tiles.
    pub winograd: WinogradTiles,
    /// f32 lanes of the target's widest vectors ([`Target::lanes`](crate::Target::lanes)): 4, 8
    /// with 256-bit registers, 16 with 512-bit ones. Direct convolutions take them all; the
    /// other kernels at most [`Choices::lanes_up_to_8`].
    pub lanes: usize,
}

impl Choices {
    /// The lanes of the kernels written for 4 or 8 (Winograd's, the weight gradients', the
    /// sub-pixel input gradients').
    pub(crate) fn lanes_up_to_8(&self) -> usize {
        self.lanes.min(8)
    }
}

/// Lowers node `id` of `graph`, as `choices` say.
pub(crate) fn lower(graph: &Graph, id: NodeId, choices: Choices) -> Result<Lowered> {
    let node = graph.node(id)?;
    let unsupported =
        |reason: &str| Error::Unsupported { op: node.op.to_string(), node: id.index(), reason: reason.into() };
    if node.ty.dtype != DType::F32 {
        return Err(unsupported("the JIT computes in f32 only (f64 graphs run on the reference interpreter)"));
    }
    let dims = |i: usize| graph.node(node.inputs[i]).map(|n| n.ty.shape.dims().to_vec());
    let x = |k: usize| Expr::load(k);
    let total = node.ty.shape.numel();
    let inputs = node.inputs.to_vec();
    let label = || node.op.name().to_string();
    // An elementwise map of the node's inputs, all of the node's shape.
    let flat = |expr: Expr| {
        let spec = NestSpec {
            nest: Nest::flat(total),
            operands: vec![Operand::Full; inputs.len()],
            outputs: 1,
            passes: vec![Pass::Map { expr, output: 0 }],
        };
        Lowered::nest(label(), spec, inputs.clone(), id)
    };
    Ok(match &node.op {
        Op::Input { .. } | Op::Parameter { .. } => Lowered::Feed,
        Op::Constant { index } => {
            let t = graph.constant(*index).ok_or_else(|| unsupported("missing constant"))?;
            Lowered::Constant(t.to_f64_vec().into_iter().map(|v| v as f32).collect())
        }
        Op::Fill { value } => flat(Expr::c(*value)),
        Op::Reshape { .. } => flat(x(0)),
        Op::Custom { .. } => {
            let spec = NestSpec {
                nest: Nest::flat(total),
                operands: vec![Operand::Full],
                outputs: 1,
                passes: vec![Pass::Map { expr: x(0), output: 0 }],
            };
            Lowered::nest(label(), spec, vec![inputs[0]], id)
        }
        Op::Relu
        | Op::ReluGrad
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::Sqrt
        | Op::Equal
        | Op::Scale { .. }
        | Op::MulScalar
        | Op::AddScalar { .. }
        | Op::StopGradient
        | Op::BiasAdd
        | Op::BatchNorm { .. }
        | Op::BatchNormGradInput { training: false, .. } => {
            let (expr, modes) = map_rule(&node.op).ok_or_else(|| unsupported("no elementwise rule"))?;
            map_kernel(label(), id, node.ty.shape.dims(), expr, &modes, inputs)
        }
        // Written by its fused node's kernels.
        Op::Output { .. } => Lowered::Steps { scratch: vec![], steps: vec![] },
        Op::Fused(k) if !k.outputs.is_empty() => {
            let value = &k.body.nodes()[k.output_nodes()[0]];
            match value.op {
                Op::BatchNormGradInput { .. } => bn_backward(graph, id, k, &inputs).map_err(|e| unsupported(&e))?,
                Op::Conv2d(_) => conv_with_stats(graph, id, k, &inputs, choices).map_err(|e| unsupported(&e))?,
                _ => elementwise_outputs(graph, id, k, &inputs).map_err(|e| unsupported(&e))?,
            }
        }
        Op::Fused(k) => {
            let arity = k.arity();
            let body = k.body.nodes();
            let main = body.iter().position(|n| matches!(n.op, Op::Conv2d(_) | Op::Conv2dGradInput { .. }));
            let (expr, operands) = fused_map(k, main).map_err(|e| unsupported(&e))?;
            let modes: Vec<Operand> = operands.iter().map(|o| o.1).collect();
            let operand_nodes: Vec<NodeId> = operands.iter().map(|o| inputs[o.0]).collect();
            let label = format!("fused_{}", k.rule);
            match main {
                None => map_kernel(label, id, node.ty.shape.dims(), expr, &modes, operand_nodes),
                Some(m) => {
                    // The convolution's inputs are placeholders: the fused node's inputs.
                    let conv = &body[m];
                    if conv.inputs.iter().any(|i| i.index() >= arity) {
                        return Err(unsupported("a fused convolution must read the fused node's inputs"));
                    }
                    let outer = |j: usize| inputs[conv.inputs[j].index()];
                    let dims_of = |j: usize| body[conv.inputs[j].index()].ty.shape.dims().to_vec();
                    let lowered = lower_conv(
                        &conv.op,
                        id,
                        [outer(0), outer(1)],
                        [&dims_of(0), &dims_of(1)],
                        conv.ty.shape.dims(),
                        choices,
                    );
                    with_epilogue(lowered, label, expr, modes, operand_nodes)
                }
            }
        }
        Op::BatchNormGradInput { eps, training: true } => {
            let d = dims(0)?;
            let modes = vec![Operand::Full, Operand::Channel, Operand::Channel, Operand::Channel, Operand::Full];
            channel_kernel(label(), id, &d, modes, bn_backward_passes(*eps, &d, false), inputs)
        }
        Op::BatchNormGradGamma { eps } => {
            let istd = Expr::c(1.0).div(x(2).add(Expr::c(*eps)).sqrt());
            let passes = vec![
                Pass::Reduce { expr: x(3).mul(x(0).sub(x(1))).mul(istd), finish: Expr::Acc },
                Pass::Store { expr: Expr::Local(0), output: 0 },
            ];
            let modes = vec![Operand::Full, Operand::Channel, Operand::Channel, Operand::Full];
            channel_kernel(label(), id, &dims(0)?, modes, passes, inputs)
        }
        Op::BatchMean | Op::BatchVar => {
            let d = dims(0)?;
            let inv_m = Expr::c(1.0 / (d.iter().product::<usize>() / d[1]) as f64);
            let mut passes = vec![Pass::Reduce { expr: x(0), finish: Expr::Acc.mul(inv_m.clone()) }];
            if matches!(node.op, Op::BatchVar) {
                // Two passes (mean, then squared deviations): no cancellation when |mean| >> std.
                let dev = x(0).sub(Expr::Local(0));
                passes.push(Pass::Reduce { expr: dev.clone().mul(dev), finish: Expr::Acc.mul(inv_m) });
            }
            passes.push(Pass::Store { expr: Expr::Local(passes.len() - 1), output: 0 });
            channel_kernel(label(), id, &d, vec![Operand::Full], passes, inputs)
        }
        Op::ReduceSum { axes } => {
            let (outer, kept, inner) = split_middle(&dims(0)?, axes)
                .ok_or_else(|| unsupported("reduced axes must surround one block of kept axes"))?;
            let spec = NestSpec {
                nest: Nest {
                    groups: kept,
                    group_stride: inner,
                    segments: outer,
                    segment_stride: kept * inner,
                    inner,
                    total: outer * kept * inner,
                    channels: 1,
                },
                operands: vec![Operand::Full],
                outputs: 1,
                passes: vec![
                    Pass::Reduce { expr: x(0), finish: Expr::Acc },
                    Pass::Store { expr: Expr::Local(0), output: 0 },
                ],
            };
            Lowered::nest(label(), spec, inputs, id)
        }
        Op::Broadcast { axes, shape } => {
            let (outer, kept, inner) = split_middle(shape.dims(), axes)
                .ok_or_else(|| unsupported("broadcast axes must surround one block of kept axes"))?;
            let (nest, mode) = if inner > 1 || kept == 1 {
                (
                    Nest {
                        groups: outer * kept,
                        group_stride: inner,
                        segments: 1,
                        segment_stride: 0,
                        inner,
                        total,
                        channels: kept,
                    },
                    Operand::Channel,
                )
            } else {
                (
                    Nest {
                        groups: outer,
                        group_stride: kept,
                        segments: 1,
                        segment_stride: 0,
                        inner: kept,
                        total,
                        channels: 1,
                    },
                    Operand::Inner,
                )
            };
            let spec =
                NestSpec { nest, operands: vec![mode], outputs: 1, passes: vec![Pass::Map { expr: x(0), output: 0 }] };
            Lowered::nest(label(), spec, inputs, id)
        }
        Op::Conv2d(_) | Op::Conv2dGradInput { .. } => {
            lower_conv(&node.op, id, [inputs[0], inputs[1]], [&dims(0)?, &dims(1)?], node.ty.shape.dims(), choices)
        }
        Op::Conv2dGradWeight { conv: a, kernel_hw } => {
            let (x, dy) = (dims(0)?, dims(1)?);
            let pad = [a.pad[0] as isize, a.pad[1] as isize];
            weight_grad(label(), [id, inputs[0], inputs[1]], [&x, &dy], *kernel_hw, a.stride, pad, choices)
        }
        Op::ShortcutA(a) => {
            let (x, y) = (dims(0)?, node.ty.shape.dims().to_vec());
            let spec = CopySpec {
                batch: x[0],
                channels: x[1],
                src: ([x[1], x[2], x[3]], 0, a.stride),
                dst: ([y[1], y[2], y[3]], a.pad_before, 1),
                extent: [y[2], y[3]],
            };
            single(label(), KernelSpec::Copy(spec), inputs, id)
        }
        Op::ShortcutAGrad { shortcut: a, .. } => {
            let (dy, dx) = (dims(0)?, node.ty.shape.dims().to_vec());
            let spec = CopySpec {
                batch: dy[0],
                channels: dx[1],
                src: ([dy[1], dy[2], dy[3]], a.pad_before, 1),
                dst: ([dx[1], dx[2], dx[3]], 0, a.stride),
                extent: [dy[2], dy[3]],
            };
            single(label(), KernelSpec::Copy(spec), inputs, id)
        }
        Op::MatMul { transpose_a, transpose_b } => {
            let a = dims(0)?;
            let [m, n] = [node.ty.shape.dims()[0], node.ty.shape.dims()[1]];
            let k = if *transpose_a { a[0] } else { a[1] };
            let spec = MatMulSpec { m, n, k, transpose_a: *transpose_a, transpose_b: *transpose_b };
            single(label(), KernelSpec::MatMul(spec), inputs, id)
        }
        Op::Softmax | Op::SoftmaxCrossEntropy | Op::SoftmaxCrossEntropyGrad | Op::ArgMax => {
            let z = dims(0)?;
            let op = match node.op {
                Op::Softmax => RowOp::Softmax,
                Op::SoftmaxCrossEntropy => RowOp::CrossEntropy,
                Op::SoftmaxCrossEntropyGrad => RowOp::CrossEntropyGrad,
                _ => RowOp::ArgMax,
            };
            single(label(), KernelSpec::Rows(RowSpec { op, rows: z[0], classes: z[1] }), inputs, id)
        }
        Op::MaxPool(a) | Op::MaxPoolGrad(a) => {
            let x = dims(0)?;
            let grad = matches!(node.op, Op::MaxPoolGrad(_));
            let out_hw = if grad { dims(1)? } else { node.ty.shape.dims().to_vec() };
            let spec =
                PoolSpec { planes: x[0] * x[1], in_hw: [x[2], x[3]], out_hw: [out_hw[2], out_hw[3]], attrs: *a, grad };
            let scratch = vec![spec.scratch_len()];
            let inputs = inputs.into_iter().map(Buf::Node).chain([Buf::PerThread(0)]).collect();
            let step = Planned { label: label(), spec: KernelSpec::Pool(spec), inputs, output: Buf::Node(id) };
            Lowered::Steps { scratch, steps: vec![step] }
        }
    })
}

/// The elementwise rules: an op's value at one element as an expression of its inputs
/// (`Load(k)` is input `k`), and how each input is indexed: `Full` (the output's shape) or
/// `Channel` (one value per channel, axis 1). Single nodes and fused groups both lower through
/// this table.
pub(crate) fn map_rule(op: &Op) -> Option<(Expr, Vec<Operand>)> {
    let x = Expr::load;
    let zero = || Expr::c(0.0);
    let full = |n: usize| vec![Operand::Full; n];
    let (f, c) = (Operand::Full, Operand::Channel);
    Some(match op {
        Op::Relu => (Expr::select(Cond::Greater, x(0), zero(), x(0), zero()), full(1)),
        Op::ReluGrad => (Expr::select(Cond::Greater, x(0), zero(), x(1), zero()), full(2)),
        Op::Add => (x(0).add(x(1)), full(2)),
        Op::Sub => (x(0).sub(x(1)), full(2)),
        Op::Mul => (x(0).mul(x(1)), full(2)),
        Op::Div => (x(0).div(x(1)), full(2)),
        Op::Sqrt => (x(0).sqrt(), full(1)),
        Op::Equal => (Expr::select(Cond::Equal, x(0), x(1), Expr::c(1.0), zero()), full(2)),
        Op::Scale { c } => (x(0).mul(Expr::c(*c)), full(1)),
        Op::MulScalar => (x(0).mul(x(1)), vec![f, Operand::Scalar]),
        Op::AddScalar { c } => (x(0).add(Expr::c(*c)), full(1)),
        Op::StopGradient => (x(0), full(1)),
        Op::BiasAdd => (x(0).add(x(1)), vec![f, c]),
        Op::BatchNorm { eps, .. } => {
            // (x - mean) * (1 / sqrt(var + eps)) * gamma + beta; the per-channel factors are
            // group invariants, computed once per channel.
            let istd = Expr::c(1.0).div(x(2).add(Expr::c(*eps)).sqrt());
            (x(0).sub(x(1)).mul(istd.mul(x(3))).add(x(4)), vec![f, c, c, c, c])
        }
        Op::BatchNormGradInput { eps, training: false } => {
            // (x, mean, var, gamma, dy) -> dy * gamma / sqrt(var + eps); x and mean are not read.
            (x(4).mul(x(3).div(x(2).add(Expr::c(*eps)).sqrt())), vec![f, c, c, c, f])
        }
        _ => return None,
    })
}

/// A fused node's operands: (fused node input, how it is indexed).
type FusedOperands = Vec<(usize, Operand)>;

/// A fused group as one expression over its operands, each (fused node input, how it is
/// indexed); an input read both per element and per channel is two operands.
///
/// With `main` (the body index of a convolution), the expression is the convolution's epilogue:
/// `Load(0)` is the convolution's value, and operands are numbered from 1.
pub(crate) fn fused_map(k: &Fused, main: Option<usize>) -> std::result::Result<(Expr, FusedOperands), String> {
    let last = k.body.len().saturating_sub(1);
    let (mut exprs, operands) = fused_maps(k, main, &[last])?;
    Ok((exprs.remove(0), operands))
}

/// [`fused_map`] for several body nodes at once: one expression per entry of `outputs`, over one
/// list of operands.
fn fused_maps(
    k: &Fused,
    main: Option<usize>,
    outputs: &[usize],
) -> std::result::Result<(Vec<Expr>, FusedOperands), String> {
    fused_maps_within(k, main, outputs, &|_| true)
}

/// [`fused_maps`] over the body nodes `within` selects (one independent part of the body).
fn fused_maps_within(
    k: &Fused,
    main: Option<usize>,
    outputs: &[usize],
    within: &dyn Fn(usize) -> bool,
) -> std::result::Result<(Vec<Expr>, FusedOperands), String> {
    let arity = k.arity();
    let body = k.body.nodes();
    let mut exprs: Vec<Option<Expr>> = vec![None; body.len()];
    let mut operands: Vec<(usize, Operand)> = vec![];
    let first = usize::from(main.is_some());
    for (i, node) in body.iter().enumerate().skip(arity).filter(|(i, _)| within(*i)) {
        if Some(i) == main {
            exprs[i] = Some(Expr::load(0));
            continue;
        }
        let (expr, modes) = map_rule(&node.op)
            .ok_or_else(|| format!("{} inside a fused kernel: only elementwise ops fuse so far", node.op))?;
        let mut operand = |j: usize| {
            let source = node.inputs[j].index();
            if source < arity {
                let key = (source, modes[j]);
                let at = operands.iter().position(|o| *o == key).unwrap_or_else(|| {
                    operands.push(key);
                    operands.len() - 1
                });
                Expr::load(first + at)
            } else {
                exprs[source].clone().expect("bodies are in topological order")
            }
        };
        exprs[i] = Some(expr.substitute(&mut operand));
    }
    let picked = outputs
        .iter()
        .map(|&o| exprs.get(o).cloned().flatten().ok_or_else(|| format!("output {o} is not a computed body node")))
        .collect::<std::result::Result<Vec<Expr>, String>>()?;
    Ok((picked, operands))
}

/// A convolution node (`conv2d`, or `conv2d_grad_input`) writing node `id`: `inputs` are its two
/// operands with their dims, `out` the output dims.
fn lower_conv(
    op: &Op,
    id: NodeId,
    inputs: [NodeId; 2],
    dims: [&[usize]; 2],
    out: &[usize],
    choices: Choices,
) -> Lowered {
    let [x, w] = dims;
    let (r, s) = (w[2], w[3]);
    match op {
        Op::Conv2d(a) => {
            let pad = [a.pad[0] as isize, a.pad[1] as isize];
            let kcrs = WeightLayout::kcrs(x[1], r, s);
            let g = Geometry {
                nck: [x[0], x[1], w[0]],
                in_hw: [x[2], x[3]],
                kernel: [r, s],
                stride: a.stride,
                dilation: [1, 1],
                pad,
                out_hw: [out[2], out[3]],
            };
            conv(id, inputs, g, kcrs, choices)
        }
        Op::Conv2dGradInput { conv: a, input_hw } => {
            let dy = x;
            if a.stride != [1, 1] && a.stride[0] == a.stride[1] {
                return sub_pixel_grad_input(
                    id,
                    inputs,
                    [dy, w],
                    a.stride[0],
                    a.pad,
                    *input_hw,
                    choices.lanes_up_to_8(),
                );
            }
            // Stride 1 (or unequal strides): dx is the stride-1 convolution of dy, dilated by the
            // stride and padded by R-1-P, with the weights transposed and flipped.
            let pad = [r as isize - 1 - a.pad[0] as isize, s as isize - 1 - a.pad[1] as isize];
            let layout = WeightLayout::transposed_flipped(w[1], r, s);
            let g = Geometry {
                nck: [dy[0], dy[1], w[1]],
                in_hw: [dy[2], dy[3]],
                kernel: [r, s],
                stride: [1, 1],
                dilation: a.stride,
                pad,
                out_hw: *input_hw,
            };
            conv(id, inputs, g, layout, choices)
        }
        _ => unreachable!("lower_conv is called for convolutions"),
    }
}

/// A fused convolution that also writes its batch statistics (`outputs` = [convolution,
/// batch_mean, batch_var]): the convolution kernel writes per-tile partial sums while its outputs
/// are in registers, and its last thread reduces them into the fused node's `output` nodes.
fn conv_with_stats(
    graph: &Graph,
    id: NodeId,
    k: &Fused,
    inputs: &[NodeId],
    choices: Choices,
) -> std::result::Result<Lowered, String> {
    let body = k.body.nodes();
    let outputs = k.output_nodes();
    let [c, m, v] = outputs[..] else {
        return Err(format!("{} outputs: only convolution + batch statistics have several", outputs.len()));
    };
    let conv = &body[c];
    let stat = |i: usize, op: Op| body[i].op == op && body[i].inputs.as_slice() == [body_id(k, c)];
    if !matches!(conv.op, Op::Conv2d(_)) || !stat(m, Op::BatchMean) || !stat(v, Op::BatchVar) {
        return Err("a fused node with several outputs must be conv2d, batch_mean and batch_var of it".into());
    }
    if conv.inputs.iter().any(|i| i.index() >= k.arity()) {
        return Err("a fused convolution must read the fused node's inputs".into());
    }
    let outer = |j: usize| inputs[conv.inputs[j].index()];
    let dims_of = |j: usize| body[conv.inputs[j].index()].ty.shape.dims().to_vec();
    let Lowered::Steps { mut scratch, mut steps } =
        lower_conv(&conv.op, id, [outer(0), outer(1)], [&dims_of(0), &dims_of(1)], conv.ty.shape.dims(), choices)
    else {
        unreachable!("convolutions lower to steps")
    };
    let channels = body[c].ty.shape.dims()[1];
    let [mean, var] = [1, 2].map(|index| output_target(graph, id, index, channels, &mut scratch));
    let Some(Planned { spec: KernelSpec::Conv(spec), inputs: conv_inputs, label, .. }) = steps.last_mut() else {
        unreachable!("a forward convolution ends with its kernel")
    };
    spec.stats = true;
    *label = format!("fused_{}", k.rule);
    let (partials, counter) = (scratch.len(), scratch.len() + 1);
    scratch.extend([spec.stats_len(), 2]);
    // Before the per-thread packing scratch.
    let at = conv_inputs.len() - 1;
    conv_inputs.splice(at..at, [Buf::Scratch(partials), Buf::Scratch(counter), mean, var]);
    Ok(Lowered::Steps { scratch, steps })
}

/// Where output `index` of fused node `id` goes: its `output` node, or (when the graph has none) a
/// new scratch buffer of `len` elements.
fn output_target(graph: &Graph, id: NodeId, index: usize, len: usize, scratch: &mut Vec<usize>) -> Buf {
    let found = graph.ids().skip(id.index() + 1).find(|&j| {
        let n = &graph.nodes()[j.index()];
        n.op == Op::Output { index } && n.inputs.as_slice() == [id]
    });
    found.map(Buf::Node).unwrap_or_else(|| {
        scratch.push(len);
        Buf::Scratch(scratch.len() - 1)
    })
}

/// An elementwise group with several outputs (the value and members read elsewhere, like an
/// optimizer's new parameter and velocity): one kernel, one map pass per output. A body made of
/// independent parts (the `foreach` pass's merge of every update) runs them as one
/// [`ForeachSpec`] kernel, one nest per part.
fn elementwise_outputs(
    graph: &Graph,
    id: NodeId,
    k: &Fused,
    inputs: &[NodeId],
) -> std::result::Result<Lowered, String> {
    let body = k.body.nodes();
    if body[k.arity()..].iter().any(|n| !n.op.is_elementwise()) {
        return Err("several outputs: only elementwise groups, convolution statistics and batch-norm backward".into());
    }
    let outputs = k.output_nodes();
    let part_of = independent_parts(k);
    let mut parts: Vec<usize> = outputs.iter().map(|&o| part_of[o]).collect();
    parts.dedup();
    let mut scratch = vec![];
    // Kernel arguments; the fused node's own value (output 0) goes last, as every step's output.
    let mut args: Vec<Buf> = vec![];
    let mut arg = |b: Buf| {
        args.iter().position(|&a| a == b).unwrap_or_else(|| {
            args.push(b);
            args.len() - 1
        })
    };
    let mut nests = vec![];
    for &part in &parts {
        // The value last: the kernel's last argument is the step's output.
        let mut indices: Vec<usize> = (0..outputs.len()).filter(|&i| part_of[outputs[i]] == part).collect();
        indices.sort_by_key(|&i| i == 0);
        let order: Vec<usize> = indices.iter().map(|&i| outputs[i]).collect();
        let (exprs, operands) = fused_maps_within(k, None, &order, &|i| part_of[i] == part)?;
        let len = body[order[0]].ty.shape.numel();
        let flat = operands.iter().all(|o| matches!(o.1, Operand::Full | Operand::Scalar));
        if !flat || order.iter().any(|&o| body[o].ty.shape.numel() != len) {
            return Err(
                "several outputs: every operand and output of a part must have the part's shape (or be a scalar)"
                    .into(),
            );
        }
        let spec = NestSpec {
            nest: Nest::flat(len),
            operands: operands.iter().map(|o| o.1).collect(),
            outputs: exprs.len(),
            passes: exprs.into_iter().enumerate().map(|(output, expr)| Pass::Map { expr, output }).collect(),
        };
        let mut pointers: Vec<usize> = operands.iter().map(|o| arg(Buf::Node(inputs[o.0]))).collect();
        for &i in &indices {
            let target = if i == 0 { None } else { Some(output_target(graph, id, i, len, &mut scratch)) };
            // Output 0 (the node itself) is placed last below: mark it for now.
            pointers.push(target.map_or(usize::MAX, &mut arg));
        }
        nests.push((spec, pointers));
    }
    let last = args.len();
    for (_, pointers) in &mut nests {
        pointers.iter_mut().filter(|p| **p == usize::MAX).for_each(|p| *p = last);
    }
    let label = format!("fused_{}", k.rule);
    let spec = if let [(nest, pointers)] = &nests[..] {
        // One part: a plain nest, its pointers in argument order.
        let mut order: Vec<(usize, usize)> = pointers.iter().copied().enumerate().collect();
        order.sort_by_key(|&(_, a)| a);
        debug_assert!(order.iter().enumerate().all(|(i, &(_, a))| i == a), "one part's arguments are its pointers");
        KernelSpec::Nest(nest.clone())
    } else {
        KernelSpec::Foreach(ForeachSpec {
            parts: nests.into_iter().map(|(nest, args)| ForeachPart { nest, args }).collect(),
        })
    };
    let step = Planned { label, spec, inputs: args, output: Buf::Node(id) };
    Ok(Lowered::Steps { scratch, steps: vec![step] })
}

/// The independent part of each body node of `k`: nodes joined through computed values (not
/// through shared placeholders) are one part. Parts are numbered by their first node.
fn independent_parts(k: &Fused) -> Vec<usize> {
    let body = k.body.nodes();
    let mut part: Vec<usize> = (0..body.len()).collect();
    fn root(part: &mut [usize], mut i: usize) -> usize {
        while part[i] != i {
            part[i] = part[part[i]];
            i = part[i];
        }
        i
    }
    for (i, node) in body.iter().enumerate().skip(k.arity()) {
        for input in node.inputs.iter().map(|x| x.index()).filter(|&x| x >= k.arity()) {
            let (a, b) = (root(&mut part, i), root(&mut part, input));
            part[a.max(b)] = a.min(b);
        }
    }
    (0..body.len()).map(|i| root(&mut part, i)).collect()
}

/// Batch-norm backward as one kernel with three outputs (`outputs` = [batch_norm_grad_input,
/// batch_norm_grad_gamma, reduce_sum of dy]): per channel, one pass sums dy and dy * x-hat (the
/// beta and gamma gradients, stored), and a second computes the input gradient from them.
fn bn_backward(graph: &Graph, id: NodeId, k: &Fused, inputs: &[NodeId]) -> std::result::Result<Lowered, String> {
    let body = k.body.nodes();
    let outputs = k.output_nodes();
    let [gi, gg, rs] = outputs[..] else { return Err("batch-norm backward has three outputs".into()) };
    let Op::BatchNormGradInput { eps, training: true } = body[gi].op else {
        return Err("batch-norm backward must start with batch_norm_grad_input in training mode".into());
    };
    // The kernel computes the gamma and beta gradients from the input gradient's operands: the
    // body must say exactly that.
    let i = &body[gi].inputs;
    let rank = body[gi].ty.shape.rank();
    let gamma_ok =
        body[gg].op == Op::BatchNormGradGamma { eps } && body[gg].inputs.as_slice() == [i[0], i[1], i[2], i[4]];
    let beta_ok = matches!(&body[rs].op, Op::ReduceSum { axes } if axes.iter().copied().eq((0..rank).filter(|&a| a != 1)))
        && body[rs].inputs.as_slice() == [i[4]];
    if !gamma_ok || !beta_ok {
        return Err(
            "batch-norm backward's outputs must be the input, gamma and beta gradients of one batch norm".into()
        );
    }
    // The five operands (x, mean, var, gamma, dy) are placeholders: the fused node's inputs.
    if body[gi].inputs.iter().any(|i| i.index() >= k.arity()) {
        return Err("batch-norm backward must read the fused node's inputs".into());
    }
    let operands: Vec<NodeId> = body[gi].inputs.iter().map(|p| inputs[p.index()]).collect();
    let d = body[gi].ty.shape.dims().to_vec();
    let passes = bn_backward_passes(eps, &d, true);
    let modes = vec![Operand::Full, Operand::Channel, Operand::Channel, Operand::Channel, Operand::Full];
    let nest = channel_nest(&d);
    let c = d[1];
    let mut scratch = vec![];
    let [gamma, beta] = [1, 2].map(|index| output_target(graph, id, index, c, &mut scratch));
    let mut step_inputs: Vec<Buf> = operands.into_iter().map(Buf::Node).collect();
    step_inputs.extend([gamma, beta]);
    let spec = NestSpec { nest, operands: modes, outputs: 3, passes };
    let step = Planned {
        label: format!("fused_{}", k.rule),
        spec: KernelSpec::Nest(spec),
        inputs: step_inputs,
        output: Buf::Node(id),
    };
    Ok(Lowered::Steps { scratch, steps: vec![step] })
}

/// The id of body node `i`.
fn body_id(k: &Fused, i: usize) -> NodeId {
    k.body.ids().nth(i).expect("a body node")
}

/// Attaches an epilogue (`Load(0)` = the convolution's value, `Load(1..)` = `operands`) to a
/// lowered convolution writing node `id`: every convolution lowers to one kernel writing the
/// node (its last step, after a Winograd weight transform), which applies it in registers before
/// its stores.
fn with_epilogue(lowered: Lowered, label: String, expr: Expr, modes: Vec<Operand>, operands: Vec<NodeId>) -> Lowered {
    let Lowered::Steps { mut scratch, mut steps } = lowered else { unreachable!("convolutions lower to steps") };
    let Some(Planned { spec, inputs, label: l, .. }) = steps.last_mut() else {
        unreachable!("a convolution lowers to its kernel, last")
    };
    let epilogue = Some(Epilogue { expr, operands: modes });
    // The epilogue may add a table of per-channel values to each thread's scratch.
    let thread_scratch = match spec {
        KernelSpec::Conv(c) => {
            c.epilogue = epilogue;
            c.scratch_len()
        }
        KernelSpec::SubPixel(s) => {
            s.phases.iter_mut().for_each(|p| p.epilogue = epilogue.clone());
            s.phases[0].scratch_len()
        }
        _ => unreachable!("a convolution lowers to a convolution kernel"),
    };
    for input in inputs.iter() {
        if let Buf::PerThread(i) = *input {
            scratch[i] = scratch[i].max(thread_scratch);
        }
    }
    // After the input and the weights.
    inputs.splice(2..2, operands.into_iter().map(Buf::Node));
    *l = label;
    Lowered::Steps { scratch, steps }
}

/// An elementwise kernel over an output of shape `d`: flat when every operand is `Full` or
/// `Scalar`, else per channel.
fn map_kernel(label: String, out: NodeId, d: &[usize], expr: Expr, modes: &[Operand], inputs: Vec<NodeId>) -> Lowered {
    if modes.iter().all(|m| matches!(m, Operand::Full | Operand::Scalar)) {
        let spec = NestSpec {
            nest: Nest::flat(d.iter().product()),
            operands: modes.to_vec(),
            outputs: 1,
            passes: vec![Pass::Map { expr, output: 0 }],
        };
        Lowered::nest(label, spec, inputs, out)
    } else {
        per_channel_map(label, out, d, expr, modes, inputs)
    }
}

/// A map over `x[N,C,...]` where some operands are per channel: for rank 3 and up one group per
/// (n, c) plane with channel operands splatted; for `[N,F]` one group per row with per-feature
/// operands read along the row.
fn per_channel_map(
    label: String,
    out: NodeId,
    d: &[usize],
    expr: Expr,
    modes: &[Operand],
    inputs: Vec<NodeId>,
) -> Lowered {
    let (n, c) = (d[0], d[1]);
    let inner: usize = d[2..].iter().product();
    let total = n * c * inner;
    let (nest, channel_mode) = if d.len() > 2 {
        (
            Nest { groups: n * c, group_stride: inner, segments: 1, segment_stride: 0, inner, total, channels: c },
            Operand::Channel,
        )
    } else {
        (
            Nest { groups: n, group_stride: c, segments: 1, segment_stride: 0, inner: c, total, channels: 1 },
            Operand::Inner,
        )
    };
    let operands = modes.iter().map(|&m| if m == Operand::Channel { channel_mode } else { m }).collect();
    let spec = NestSpec { nest, operands, outputs: 1, passes: vec![Pass::Map { expr, output: 0 }] };
    Lowered::nest(label, spec, inputs, out)
}

/// Batch-norm backward in training mode over operands (x, mean, var, gamma, dy) of dims `d`: one
/// pass sums dy and dy * x-hat per channel, a second computes the input gradient. With `stores`,
/// the two sums are also stored as outputs 0 (gamma gradient) and 1 (beta gradient), and the input
/// gradient is output 2; otherwise it is output 0.
fn bn_backward_passes(eps: f64, d: &[usize], stores: bool) -> Vec<Pass> {
    let x = Expr::load;
    let m = Expr::c((d.iter().product::<usize>() / d[1]) as f64);
    let istd = Expr::c(1.0).div(x(2).add(Expr::c(eps)).sqrt());
    let xhat = x(0).sub(x(1)).mul(istd.clone());
    let mut passes = vec![
        Pass::Reduce { expr: x(4), finish: Expr::Acc },
        Pass::Reduce { expr: x(4).mul(xhat.clone()), finish: Expr::Acc },
    ];
    if stores {
        passes.push(Pass::Store { expr: Expr::Local(1), output: 0 });
        passes.push(Pass::Store { expr: Expr::Local(0), output: 1 });
    }
    let dx = x(3).mul(istd).div(m.clone()).mul(m.mul(x(4)).sub(Expr::Local(0)).sub(xhat.mul(Expr::Local(1))));
    passes.push(Pass::Map { expr: dx, output: if stores { 2 } else { 0 } });
    passes
}

/// One group per channel of an `[N, C, ...]` tensor of dims `d`: per-channel reductions.
fn channel_nest(d: &[usize]) -> Nest {
    let (n, c) = (d[0], d[1]);
    let inner: usize = d[2..].iter().product();
    Nest {
        groups: c,
        group_stride: inner,
        segments: n,
        segment_stride: c * inner,
        inner,
        total: n * c * inner,
        channels: c,
    }
}

/// One group per channel of `x[N,C,...]`, visiting its N segments of spatial elements.
fn channel_kernel(
    label: String,
    out: NodeId,
    d: &[usize],
    operands: Vec<Operand>,
    passes: Vec<Pass>,
    inputs: Vec<NodeId>,
) -> Lowered {
    Lowered::nest(label, NestSpec { nest: channel_nest(d), operands, outputs: 1, passes }, inputs, out)
}

/// Splits `dims` into (product of the leading axes in `axes`, product of the kept middle block,
/// product of the trailing axes in `axes`), when `axes` are exactly a prefix and a suffix.
fn split_middle(dims: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let prefix = (0..dims.len()).take_while(|a| axes.contains(a)).count();
    let suffix = (0..dims.len()).rev().take_while(|a| axes.contains(a) && *a >= prefix).count();
    if prefix + suffix != axes.len() {
        return None;
    }
    let product = |r: std::ops::Range<usize>| dims[r].iter().product::<usize>();
    Some((product(0..prefix), product(prefix..dims.len() - suffix), product(dims.len() - suffix..dims.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skipgrad_ir::{Conv2dAttrs, Shape};

    /// Batch-norm backward walks a channel's elements twice: once for both of its sums (dy and
    /// dy * x-hat read no local of each other), once for the input gradient. A variance's
    /// squared deviations read the mean, so they take a walk after the mean's.
    #[test]
    fn independent_reductions_share_a_walk() {
        let d = [2, 3, 4, 5];
        let nest = |passes| NestSpec { nest: channel_nest(&d), operands: vec![Operand::Full; 5], outputs: 3, passes };
        assert_eq!(nest(bn_backward_passes(1e-5, &d, true)).runs(), [0..2, 2..3, 3..4, 4..5]);
        let dev = Expr::load(0).sub(Expr::Local(0));
        let variance = vec![
            Pass::Reduce { expr: Expr::load(0), finish: Expr::Acc },
            Pass::Reduce { expr: dev.clone().mul(dev), finish: Expr::Acc },
        ];
        assert_eq!(nest(variance).runs(), [0..1, 1..2]);
    }

    /// The IR's elementwise ops (what fusion merges) and the JIT's elementwise rules (what a fused
    /// kernel can compute) are one set.
    #[test]
    fn every_elementwise_op_has_a_map_rule_and_no_other_does() {
        let eps = 1e-5;
        let ops = [
            Op::Relu,
            Op::ReluGrad,
            Op::Add,
            Op::Sub,
            Op::Mul,
            Op::Div,
            Op::Sqrt,
            Op::Equal,
            Op::Scale { c: 2.0 },
            Op::MulScalar,
            Op::AddScalar { c: 1.0 },
            Op::StopGradient,
            Op::BiasAdd,
            Op::BatchNorm { eps, training: true },
            Op::BatchNorm { eps, training: false },
            Op::BatchNormGradInput { eps, training: false },
            Op::BatchNormGradInput { eps, training: true },
            Op::BatchNormGradGamma { eps },
            Op::BatchMean,
            Op::BatchVar,
            Op::Conv2d(Conv2dAttrs::square(1, 1)),
            Op::Softmax,
            Op::SoftmaxCrossEntropy,
            Op::ArgMax,
            Op::Reshape { shape: Shape::new(&[1]) },
            Op::MatMul { transpose_a: false, transpose_b: false },
            Op::Fill { value: 0.0 },
            Op::Output { index: 1 },
        ];
        for op in ops {
            assert_eq!(op.is_elementwise(), map_rule(&op).is_some(), "{op}");
        }
    }
}
