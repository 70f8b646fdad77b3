//! Shape rules: the output type of every op from its attributes and input types.
//!
//! One exhaustive `match` over [`Op`]: adding an op without a shape rule does not compile.

use crate::{DType, Error, Op, Result, TensorType};
use smallvec::SmallVec;

/// The output type of `op` applied to inputs of types `inputs`, or a typed error naming the op,
/// its attributes and the offending shapes. Source ops (input, parameter, fill, constant) carry
/// their own type and are rejected here.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<TensorType> {
    let fail = |message: String| Error::Shape { op: op.to_string(), message };
    let arity = |n: usize| -> Result<()> {
        if inputs.len() == n {
            Ok(())
        } else {
            Err(Error::Arity { op: op.to_string(), expected: n.to_string(), got: inputs.len() })
        }
    };
    if let Some(first) = inputs.first()
        && inputs.iter().any(|t| t.dtype != first.dtype)
    {
        let types = inputs.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ");
        return Err(Error::DType { op: op.to_string(), types });
    }
    let dtype = inputs.first().map(|t| t.dtype).unwrap_or(DType::F32);
    let out = |dims: &[usize]| Ok(TensorType::new(dtype, dims));
    let dims = |i: usize| inputs[i].shape.dims();
    let rank = |i: usize, r: usize, what: &str| -> Result<()> {
        if inputs[i].shape.rank() == r {
            Ok(())
        } else {
            Err(fail(format!("{what} must have rank {r}, got {}", inputs[i])))
        }
    };
    let min_rank = |i: usize, r: usize, what: &str| -> Result<()> {
        if inputs[i].shape.rank() >= r {
            Ok(())
        } else {
            Err(fail(format!("{what} must have rank at least {r}, got {}", inputs[i])))
        }
    };
    let same = |i: usize, j: usize, a: &str, b: &str| -> Result<()> {
        if inputs[i].shape == inputs[j].shape {
            Ok(())
        } else {
            Err(fail(format!("{a} {} and {b} {} must have the same shape", inputs[i], inputs[j])))
        }
    };
    let per_channel = |i: usize, c: usize, what: &str| -> Result<()> {
        if dims(i) == [c] {
            Ok(())
        } else {
            Err(fail(format!("{what} must be [{c}] (one value per channel), got {}", inputs[i])))
        }
    };

    match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Fill { .. } => {
            Err(fail("a source op carries its own type; add it with Graph::add_source".into()))
        }
        Op::Conv2d(c) => {
            arity(2)?;
            rank(0, 4, "input")?;
            rank(1, 4, "weight")?;
            let (x, w) = (dims(0), dims(1));
            if x[1] != w[1] {
                return Err(fail(format!(
                    "input {} has {} channels, weight {} expects {}",
                    inputs[0], x[1], inputs[1], w[1]
                )));
            }
            let [oh, ow] = window_out(&fail, [x[2], x[3]], [w[2], w[3]], c.stride, c.pad)?;
            out(&[x[0], w[0], oh, ow])
        }
        Op::Conv2dGradInput { conv, input_hw } => {
            arity(2)?;
            rank(0, 4, "output gradient")?;
            rank(1, 4, "weight")?;
            let (dy, w) = (dims(0), dims(1));
            if dy[1] != w[0] {
                return Err(fail(format!(
                    "output gradient {} has {} channels, weight {} has {} filters",
                    inputs[0], dy[1], inputs[1], w[0]
                )));
            }
            let o = window_out(&fail, *input_hw, [w[2], w[3]], conv.stride, conv.pad)?;
            if o != [dy[2], dy[3]] {
                return Err(fail(format!(
                    "output gradient {} does not match a {}x{} input (expected {}x{} outputs)",
                    inputs[0], input_hw[0], input_hw[1], o[0], o[1]
                )));
            }
            out(&[dy[0], w[1], input_hw[0], input_hw[1]])
        }
        Op::Conv2dGradWeight { conv, kernel_hw } => {
            arity(2)?;
            rank(0, 4, "input")?;
            rank(1, 4, "output gradient")?;
            let (x, dy) = (dims(0), dims(1));
            if x[0] != dy[0] {
                return Err(fail(format!(
                    "input {} and output gradient {} have different batch sizes",
                    inputs[0], inputs[1]
                )));
            }
            let o = window_out(&fail, [x[2], x[3]], *kernel_hw, conv.stride, conv.pad)?;
            if o != [dy[2], dy[3]] {
                return Err(fail(format!(
                    "output gradient {} does not match input {} (expected {}x{} outputs)",
                    inputs[1], inputs[0], o[0], o[1]
                )));
            }
            out(&[dy[1], x[1], kernel_hw[0], kernel_hw[1]])
        }
        Op::BiasAdd => {
            arity(2)?;
            min_rank(0, 2, "input")?;
            per_channel(1, dims(0)[1], "bias")?;
            out(dims(0))
        }
        Op::BatchMean | Op::BatchVar => {
            arity(1)?;
            min_rank(0, 2, "input")?;
            let c = dims(0)[1];
            if c == 0 || inputs[0].shape.numel() == 0 {
                return Err(fail(format!("input {} has no elements per channel", inputs[0])));
            }
            out(&[c])
        }
        Op::BatchNorm { eps, .. } | Op::BatchNormGradInput { eps, .. } => {
            arity(5)?;
            check_eps(&fail, *eps)?;
            min_rank(0, 2, "input")?;
            let c = dims(0)[1];
            per_channel(1, c, "mean")?;
            per_channel(2, c, "variance")?;
            per_channel(3, c, "gamma")?;
            if matches!(op, Op::BatchNorm { .. }) {
                per_channel(4, c, "beta")?;
            } else {
                same(0, 4, "input", "output gradient")?;
            }
            out(dims(0))
        }
        Op::BatchNormGradGamma { eps } => {
            arity(4)?;
            check_eps(&fail, *eps)?;
            min_rank(0, 2, "input")?;
            let c = dims(0)[1];
            per_channel(1, c, "mean")?;
            per_channel(2, c, "variance")?;
            same(0, 3, "input", "output gradient")?;
            out(&[c])
        }
        Op::Relu | Op::Sqrt | Op::StopGradient | Op::Scale { .. } | Op::AddScalar { .. } => {
            arity(1)?;
            out(dims(0))
        }
        Op::MulScalar => {
            arity(2)?;
            rank(1, 0, "factor")?;
            out(dims(0))
        }
        Op::ReluGrad | Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Equal => {
            arity(2)?;
            same(0, 1, "left", "right")?;
            out(dims(0))
        }
        Op::ShortcutA(s) => {
            arity(1)?;
            rank(0, 4, "input")?;
            if s.stride == 0 {
                return Err(fail("stride must be at least 1".into()));
            }
            let x = dims(0);
            let channels = x[1].checked_add(s.pad_before).and_then(|c| c.checked_add(s.pad_after));
            let channels = channels.ok_or_else(|| fail(format!("{} channels padded overflow", x[1])))?;
            out(&[x[0], channels, x[2].div_ceil(s.stride), x[3].div_ceil(s.stride)])
        }
        Op::ShortcutAGrad { shortcut: s, input_hw } => {
            arity(1)?;
            rank(0, 4, "output gradient")?;
            let dy = dims(0);
            let expect = [input_hw[0].div_ceil(s.stride.max(1)), input_hw[1].div_ceil(s.stride.max(1))];
            let padding = s.pad_before.checked_add(s.pad_after);
            if s.stride == 0 || padding.is_none_or(|p| dy[1] < p) || [dy[2], dy[3]] != expect {
                return Err(fail(format!(
                    "output gradient {} does not come from a {}x{} input",
                    inputs[0], input_hw[0], input_hw[1]
                )));
            }
            out(&[dy[0], dy[1] - s.pad_before - s.pad_after, input_hw[0], input_hw[1]])
        }
        Op::MaxPool(p) => {
            arity(1)?;
            rank(0, 4, "input")?;
            let x = dims(0);
            let [oh, ow] = pool_out(&fail, [x[2], x[3]], p)?;
            out(&[x[0], x[1], oh, ow])
        }
        Op::MaxPoolGrad(p) => {
            arity(2)?;
            rank(0, 4, "input")?;
            rank(1, 4, "output gradient")?;
            let (x, dy) = (dims(0), dims(1));
            let o = pool_out(&fail, [x[2], x[3]], p)?;
            if [x[0], x[1], o[0], o[1]] != dy {
                return Err(fail(format!("output gradient {} does not match pooling input {}", inputs[1], inputs[0])));
            }
            out(x)
        }
        Op::MatMul { transpose_a, transpose_b } => {
            arity(2)?;
            rank(0, 2, "left operand")?;
            rank(1, 2, "right operand")?;
            let (a, b) = (dims(0), dims(1));
            let (m, ka) = if *transpose_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let (kb, n) = if *transpose_b { (b[1], b[0]) } else { (b[0], b[1]) };
            if ka != kb {
                return Err(fail(format!(
                    "left operand {} has inner size {ka}, right operand {} has {kb}",
                    inputs[0], inputs[1]
                )));
            }
            out(&[m, n])
        }
        Op::Reshape { shape } => {
            arity(1)?;
            if shape.checked_numel() != Some(inputs[0].shape.numel()) {
                let target = shape.checked_numel().map_or("too many".into(), |n| n.to_string());
                return Err(fail(format!(
                    "cannot reshape {} ({} elements) to {shape} ({target} elements)",
                    inputs[0],
                    inputs[0].shape.numel(),
                )));
            }
            out(shape.dims())
        }
        Op::ReduceSum { axes } => {
            arity(1)?;
            check_axes(&fail, axes, inputs[0].shape.rank())?;
            let kept: SmallVec<[usize; 4]> =
                dims(0).iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
            out(&kept)
        }
        Op::Broadcast { axes, shape } => {
            arity(1)?;
            check_axes(&fail, axes, shape.rank())?;
            let kept: SmallVec<[usize; 4]> =
                shape.dims().iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
            if kept.as_slice() != dims(0) {
                return Err(fail(format!("input {} is not {shape} without axes {axes:?}", inputs[0])));
            }
            out(shape.dims())
        }
        Op::Softmax | Op::ArgMax => {
            arity(1)?;
            rank(0, 2, "input")?;
            if dims(0)[1] == 0 {
                return Err(fail(format!("input {} has no classes", inputs[0])));
            }
            if matches!(op, Op::ArgMax) { out(&[dims(0)[0]]) } else { out(dims(0)) }
        }
        Op::SoftmaxCrossEntropy | Op::SoftmaxCrossEntropyGrad => {
            let grad = matches!(op, Op::SoftmaxCrossEntropyGrad);
            arity(if grad { 3 } else { 2 })?;
            rank(0, 2, "logits")?;
            let (n, k) = (dims(0)[0], dims(0)[1]);
            if n == 0 || k == 0 {
                return Err(fail(format!("logits {} must have at least one row and one class", inputs[0])));
            }
            if dims(1) != [n] {
                return Err(fail(format!(
                    "labels {} must be [{n}], one class index per row of logits {}",
                    inputs[1], inputs[0]
                )));
            }
            if grad {
                rank(2, 0, "loss gradient")?;
                out(&[n, k])
            } else {
                out(&[])
            }
        }
        Op::Custom { .. } => {
            if inputs.is_empty() {
                return Err(Error::Arity { op: op.to_string(), expected: "at least 1".into(), got: 0 });
            }
            out(dims(0))
        }
        Op::Fused(k) => {
            arity(k.arity())?;
            let body = k.body.nodes();
            for (i, (t, placeholder)) in inputs.iter().zip(body).enumerate() {
                if **t != placeholder.ty {
                    return Err(fail(format!("input {i} is {t}, the body expects {}", placeholder.ty)));
                }
            }
            if body.len() <= k.arity() {
                return Err(fail("the body computes nothing".into()));
            }
            match k.output_nodes().iter().find(|&&o| o < k.arity() || o >= body.len()) {
                Some(o) => Err(fail(format!("output {o} is not a computed body node"))),
                None => Ok(body[k.output_nodes()[0]].ty.clone()),
            }
        }
        Op::Output { .. } => Err(fail("an output's type is its fused node's: add it with Graph::add_node".into())),
    }
}

fn check_eps(fail: &impl Fn(String) -> Error, eps: f64) -> Result<()> {
    if eps > 0.0 && eps.is_finite() { Ok(()) } else { Err(fail(format!("eps must be positive and finite, got {eps}"))) }
}

fn check_axes(fail: &impl Fn(String) -> Error, axes: &[usize], rank: usize) -> Result<()> {
    if axes.windows(2).any(|w| w[0] >= w[1]) || axes.iter().any(|&a| a >= rank) {
        return Err(fail(format!("axes {axes:?} must be increasing and below the rank {rank}")));
    }
    Ok(())
}

/// Output size of a sliding window over `input` with `kernel`, `stride` and `pad` per axis.
fn window_out(
    fail: &impl Fn(String) -> Error,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
) -> Result<[usize; 2]> {
    let mut o = [0; 2];
    for a in 0..2 {
        if stride[a] == 0 || kernel[a] == 0 {
            return Err(fail(format!("stride {stride:?} and kernel {kernel:?} must be at least 1")));
        }
        let Some(padded) = pad[a].checked_mul(2).and_then(|p| p.checked_add(input[a])) else {
            return Err(fail(format!("a {}x{} input padded by {}x{} overflows", input[0], input[1], pad[0], pad[1])));
        };
        if padded < kernel[a] {
            return Err(fail(format!(
                "a {}x{} kernel does not fit a {}x{} input padded by {}x{}",
                kernel[0], kernel[1], input[0], input[1], pad[0], pad[1]
            )));
        }
        o[a] = (padded - kernel[a]) / stride[a] + 1;
    }
    Ok(o)
}

fn pool_out(fail: &impl Fn(String) -> Error, input: [usize; 2], p: &crate::PoolAttrs) -> Result<[usize; 2]> {
    if p.pad[0] > p.kernel[0] / 2 || p.pad[1] > p.kernel[1] / 2 {
        return Err(fail(format!("padding {:?} must be at most half the kernel {:?}", p.pad, p.kernel)));
    }
    window_out(fail, input, p.kernel, p.stride, p.pad)
}
