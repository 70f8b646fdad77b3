//! The op table: every operation a graph can hold, with its attributes and its printed form.
//!
//! Adding an op starts here (see CONTRIBUTING.md): a variant, its name in [`Op::name`] and its
//! attributes in [`Op::attrs`]; then the compiler points at every exhaustive `match` that needs a
//! rule (shape in `infer.rs`, value in the reference interpreter, gradient in autodiff).

use crate::{Graph, Shape};
use smallvec::SmallVec;
use std::fmt;
use std::sync::Arc;

/// A list of axis indices.
pub type Axes = SmallVec<[usize; 4]>;

/// Stride and zero padding of a 2-d convolution, per spatial axis (height, width).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Conv2dAttrs {
    /// Step between output pixels, in input pixels.
    pub stride: [usize; 2],
    /// Zeros added on each side of the input.
    pub pad: [usize; 2],
}

impl Conv2dAttrs {
    /// The same stride and padding on both axes.
    pub fn square(stride: usize, pad: usize) -> Self {
        Conv2dAttrs { stride: [stride; 2], pad: [pad; 2] }
    }
}

/// Window, stride and padding of a 2-d max pool (padding acts as negative infinity).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PoolAttrs {
    /// Window size (height, width).
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Padding on each side.
    pub pad: [usize; 2],
}

/// The paper's option-A shortcut: keep every `stride`-th pixel, then add zero channels.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ShortcutAttrs {
    /// Spatial subsampling step (2 in the paper).
    pub stride: usize,
    /// Zero channels placed before the input's channels.
    pub pad_before: usize,
    /// Zero channels placed after the input's channels.
    pub pad_after: usize,
}

/// An operation. Inputs are listed in the order given on each variant.
#[derive(Clone, PartialEq, Debug)]
pub enum Op {
    // ---- sources -------------------------------------------------------------------------
    /// A value fed at run time (images, labels), looked up by name.
    Input { name: String },
    /// A trainable value fed at run time, looked up by its hierarchical name.
    Parameter { name: String },
    /// A tensor stored in the graph (`Graph::constant`).
    Constant { index: usize },
    /// A tensor of one repeated value; its shape is the node's.
    Fill { value: f64 },

    // ---- convolution ---------------------------------------------------------------------
    /// `(x[N,C,H,W], w[K,C,R,S]) -> y[N,K,OH,OW]`, cross-correlation without bias.
    Conv2d(Conv2dAttrs),
    /// Gradient of conv2d with respect to its input: `(dy[N,K,OH,OW], w[K,C,R,S]) -> dx[N,C,H,W]`.
    Conv2dGradInput { conv: Conv2dAttrs, input_hw: [usize; 2] },
    /// Gradient of conv2d with respect to its weight: `(x[N,C,H,W], dy[N,K,OH,OW]) -> dw[K,C,R,S]`.
    Conv2dGradWeight { conv: Conv2dAttrs, kernel_hw: [usize; 2] },
    /// `(x[N,C,...], b[C]) -> x + b` broadcast along axis 1 (channels or features).
    BiasAdd,

    // ---- batch normalisation -------------------------------------------------------------
    /// Per-channel mean over every axis but 1: `x[N,C,...] -> [C]`.
    BatchMean,
    /// Per-channel biased variance over every axis but 1: `x[N,C,...] -> [C]`.
    BatchVar,
    /// `(x, mean[C], var[C], gamma[C], beta[C]) -> (x - mean) / sqrt(var + eps) * gamma + beta`.
    /// With `training`, mean and var must be `batch_mean(x)` and `batch_var(x)`, and the gradient
    /// flows through them (the batch-statistics rule); otherwise they are constants (running stats).
    BatchNorm { eps: f64, training: bool },
    /// `(x, mean, var, gamma, dy) -> dx` of [`Op::BatchNorm`] with the same attributes.
    BatchNormGradInput { eps: f64, training: bool },
    /// `(x, mean, var, dy) -> dgamma[C] = sum(dy * (x - mean) / sqrt(var + eps))` per channel.
    BatchNormGradGamma { eps: f64 },

    // ---- elementwise ---------------------------------------------------------------------
    /// `max(x, 0)`.
    Relu,
    /// `(x, dy) -> dy * (x > 0)`.
    ReluGrad,
    /// `a + b`, same shapes.
    Add,
    /// `a - b`, same shapes.
    Sub,
    /// `a * b`, same shapes.
    Mul,
    /// `a / b`, same shapes.
    Div,
    /// `sqrt(x)` (NaN below zero).
    Sqrt,
    /// `x * c`.
    Scale { c: f64 },
    /// `x * s` for a scalar tensor `s` (`f32[]`): a factor fed at run time, like a learning rate
    /// that a schedule changes without recompiling.
    MulScalar,
    /// `x + c`.
    AddScalar { c: f64 },
    /// Identity whose gradient is zero (`detach`).
    StopGradient,

    // ---- residual shortcut and pooling ---------------------------------------------------
    /// Option-A shortcut: `x[N,C,H,W] -> [N, before+C+after, ceil(H/s), ceil(W/s)]`.
    ShortcutA(ShortcutAttrs),
    /// Gradient of the option-A shortcut: `dy -> dx[N,C,H,W]`.
    ShortcutAGrad { shortcut: ShortcutAttrs, input_hw: [usize; 2] },
    /// Max over windows: `x[N,C,H,W] -> [N,C,OH,OW]`.
    MaxPool(PoolAttrs),
    /// `(x, dy) -> dx`: each window's gradient goes to its first maximum.
    MaxPoolGrad(PoolAttrs),

    // ---- linear algebra, shapes, reductions ----------------------------------------------
    /// `(a, b) -> op(a) @ op(b)` for 2-d operands, `op` transposing when asked.
    MatMul { transpose_a: bool, transpose_b: bool },
    /// Same elements, new shape.
    Reshape { shape: Shape },
    /// Sum over the listed axes, which are removed.
    ReduceSum { axes: Axes },
    /// Copy along new axes: the output has `shape`; the input is `shape` without `axes`.
    Broadcast { axes: Axes, shape: Shape },

    // ---- classification ------------------------------------------------------------------
    /// Row-wise softmax of `x[N,K]`.
    Softmax,
    /// `(logits[N,K], labels[N]) -> []`: mean over rows of `logsumexp(z) - z[label]`.
    /// Labels are class indices stored as floats.
    SoftmaxCrossEntropy,
    /// `(logits, labels, dloss[]) -> dlogits = (softmax(z) - onehot(label)) * dloss / N`.
    SoftmaxCrossEntropyGrad,
    /// Index of each row's first maximum: `x[N,K] -> [N]` (as floats).
    ArgMax,
    /// `1` where `a == b`, else `0`.
    Equal,

    // ---- research extensions -------------------------------------------------------------
    /// A user-defined op: the value is input 0 (the op's composed forward); inputs 1.. are the
    /// op's arguments, and the gradient comes from the rule registered on the tape as `rule`.
    Custom { name: String, rule: usize },

    // ---- compiler ------------------------------------------------------------------------
    /// Nodes a fusion pass merged into one kernel (see [`Fused`]).
    Fused(Fused),
    /// Output `index` (1 or more) of a fused node with several outputs, its only input. Its type
    /// is that body node's: [`Graph::add_node`] reads it from the fused node.
    Output { index: usize },
}

/// A group of nodes that a fusion pass merged into one kernel. `body` computes the group: its
/// first nodes are placeholders `Input { name: "in0" }`, `"in1"`... standing for the fused node's
/// inputs in order, and its last node is the value. `covers` lists the ids the merged nodes had in
/// the graph the pass read, so dumps can show what merged: a dump prints
/// `fused[rule=elementwise, ops=batch_norm+add+relu, covers=#25,#32,#33]`.
#[derive(Clone, PartialEq, Debug)]
pub struct Fused {
    /// The fusion rule that made the group, e.g. `elementwise`.
    pub rule: String,
    /// The group as a graph of its own.
    pub body: Arc<Graph>,
    /// Ids of the merged nodes in the graph before the pass.
    pub covers: Vec<usize>,
    /// For a kernel with several outputs, the body nodes it writes: the first is the fused
    /// node's value, the others are read through [`Op::Output`] nodes (`index` 1, 2...). Empty
    /// for one output: the last body node.
    pub outputs: Vec<usize>,
}

impl Fused {
    /// The placeholder name of input `k` in a body.
    pub fn placeholder(k: usize) -> String {
        format!("in{k}")
    }
    /// How many inputs the body takes (its leading placeholders).
    pub fn arity(&self) -> usize {
        self.body.nodes().iter().take_while(|n| matches!(&n.op, Op::Input { .. })).count()
    }
    /// The body nodes it writes, the value first (see [`Fused::outputs`]).
    pub fn output_nodes(&self) -> Vec<usize> {
        if self.outputs.is_empty() { vec![self.body.len().saturating_sub(1)] } else { self.outputs.clone() }
    }
}

impl Op {
    /// The op's name as printed in dumps and errors (snake_case).
    pub fn name(&self) -> &str {
        match self {
            Op::Input { .. } => "input",
            Op::Parameter { .. } => "parameter",
            Op::Constant { .. } => "constant",
            Op::Fill { .. } => "fill",
            Op::Conv2d(_) => "conv2d",
            Op::Conv2dGradInput { .. } => "conv2d_grad_input",
            Op::Conv2dGradWeight { .. } => "conv2d_grad_weight",
            Op::BiasAdd => "bias_add",
            Op::BatchMean => "batch_mean",
            Op::BatchVar => "batch_var",
            Op::BatchNorm { .. } => "batch_norm",
            Op::BatchNormGradInput { .. } => "batch_norm_grad_input",
            Op::BatchNormGradGamma { .. } => "batch_norm_grad_gamma",
            Op::Relu => "relu",
            Op::ReluGrad => "relu_grad",
            Op::Add => "add",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Div => "div",
            Op::Sqrt => "sqrt",
            Op::Scale { .. } => "scale",
            Op::MulScalar => "mul_scalar",
            Op::AddScalar { .. } => "add_scalar",
            Op::StopGradient => "stop_gradient",
            Op::ShortcutA(_) => "shortcut_a",
            Op::ShortcutAGrad { .. } => "shortcut_a_grad",
            Op::MaxPool(_) => "max_pool",
            Op::MaxPoolGrad(_) => "max_pool_grad",
            Op::MatMul { .. } => "matmul",
            Op::Reshape { .. } => "reshape",
            Op::ReduceSum { .. } => "reduce_sum",
            Op::Broadcast { .. } => "broadcast",
            Op::Softmax => "softmax",
            Op::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Op::SoftmaxCrossEntropyGrad => "softmax_cross_entropy_grad",
            Op::ArgMax => "argmax",
            Op::Equal => "equal",
            Op::Custom { name, .. } => name,
            Op::Fused(_) => "fused",
            Op::Output { .. } => "output",
        }
    }

    /// True for elementwise ops: the value at each element depends only on the inputs at that
    /// element, or at that element's channel for per-channel operands (bias, batch-norm
    /// statistics and parameters). Fusion merges chains of these into one kernel.
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
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
                | Op::BatchNormGradInput { training: false, .. }
        )
    }

    /// True for ops that read no other node (inputs, parameters, constants, fills).
    pub fn is_source(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Fill { .. })
    }

    /// The attributes as (name, value) pairs: the one table both the text dump and the JSON dump
    /// print from.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        use Attr::*;
        let conv = |c: &Conv2dAttrs| vec![("stride", Pair(c.stride)), ("pad", Pair(c.pad))];
        let pool = |p: &PoolAttrs| vec![("kernel", Pair(p.kernel)), ("stride", Pair(p.stride)), ("pad", Pair(p.pad))];
        let shortcut =
            |s: &ShortcutAttrs| vec![("stride", Int(s.stride)), ("pad_channels", Tuple([s.pad_before, s.pad_after]))];
        let with = |mut v: Vec<(&'static str, Attr)>, extra: (&'static str, Attr)| {
            v.push(extra);
            v
        };
        match self {
            Op::Input { name } | Op::Parameter { name } => vec![("name", Text(name.clone()))],
            Op::Constant { index } => vec![("index", Int(*index))],
            Op::Fill { value } => vec![("value", Float(*value))],
            Op::Scale { c } | Op::AddScalar { c } => vec![("c", Float(*c))],
            Op::Conv2d(c) => conv(c),
            Op::Conv2dGradInput { conv: c, input_hw } => with(conv(c), ("input_hw", Size(*input_hw))),
            Op::Conv2dGradWeight { conv: c, kernel_hw } => with(conv(c), ("kernel", Size(*kernel_hw))),
            Op::BatchNorm { eps, training } | Op::BatchNormGradInput { eps, training } => {
                vec![("eps", Float(*eps)), ("mode", Mode(if *training { "training" } else { "eval" }))]
            }
            Op::BatchNormGradGamma { eps } => vec![("eps", Float(*eps))],
            Op::ShortcutA(s) => shortcut(s),
            Op::ShortcutAGrad { shortcut: s, input_hw } => with(shortcut(s), ("input_hw", Size(*input_hw))),
            Op::MaxPool(p) | Op::MaxPoolGrad(p) => pool(p),
            Op::MatMul { transpose_a, transpose_b } => {
                vec![("transpose_a", Bool(*transpose_a)), ("transpose_b", Bool(*transpose_b))]
            }
            Op::Reshape { shape } => vec![("shape", Dims(shape.dims().to_vec()))],
            Op::ReduceSum { axes } => vec![("axes", List(axes.to_vec()))],
            Op::Broadcast { axes, shape } => {
                vec![("axes", List(axes.to_vec())), ("shape", Dims(shape.dims().to_vec()))]
            }
            Op::Custom { rule, .. } => vec![("custom_rule", Int(*rule))],
            Op::Fused(k) => {
                let ops = k.body.nodes()[k.arity()..].iter().map(|n| n.op.name()).collect::<Vec<_>>().join("+");
                let mut attrs =
                    vec![("rule", Word(k.rule.clone())), ("ops", Word(ops)), ("covers", Ids(k.covers.clone()))];
                if !k.outputs.is_empty() {
                    attrs.push(("outputs", List(k.outputs.clone())));
                }
                attrs
            }
            Op::Output { index } => vec![("index", Int(*index))],
            Op::BiasAdd
            | Op::BatchMean
            | Op::BatchVar
            | Op::Relu
            | Op::ReluGrad
            | Op::Add
            | Op::Sub
            | Op::Mul
            | Op::Div
            | Op::Sqrt
            | Op::MulScalar
            | Op::StopGradient
            | Op::Softmax
            | Op::SoftmaxCrossEntropy
            | Op::SoftmaxCrossEntropyGrad
            | Op::ArgMax
            | Op::Equal => vec![],
        }
    }

    /// Writes the attributes as `k=v, k=v` (nothing for attribute-free ops).
    pub fn fmt_attrs(&self, f: &mut impl fmt::Write) -> fmt::Result {
        for (i, (name, value)) in self.attrs().into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match value {
                Attr::Mode(mode) => f.write_str(mode)?,
                value => write!(f, "{name}={value}")?,
            }
        }
        Ok(())
    }
}

/// An attribute value, typed for the JSON dump and printed for the text dump.
#[derive(Clone, PartialEq, Debug)]
pub enum Attr {
    /// A count or index.
    Int(usize),
    /// A real number.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// A name, printed quoted.
    Text(String),
    /// A word, printed as is.
    Word(String),
    /// A per-axis (height, width) pair, printed `1` when both agree, else `(1,2)`.
    Pair([usize; 2]),
    /// Two numbers, printed `(a,b)`.
    Tuple([usize; 2]),
    /// A height by width, printed `4x4`.
    Size([usize; 2]),
    /// Axis indices, printed `2,3`.
    List(Vec<usize>),
    /// A shape, printed `[2,3]`.
    Dims(Vec<usize>),
    /// Node ids of an earlier graph, printed `#3,#5`.
    Ids(Vec<usize>),
    /// A mode word printed alone (`training`, `eval`), without its name.
    Mode(&'static str),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[usize], prefix: &str| v.iter().map(|x| format!("{prefix}{x}")).collect::<Vec<_>>().join(",");
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{v}"),
            Attr::Bool(v) => write!(f, "{v}"),
            Attr::Text(v) => write!(f, "{v:?}"),
            Attr::Word(v) => write!(f, "{v}"),
            Attr::Mode(v) => write!(f, "{v}"),
            Attr::Pair([a, b]) if a == b => write!(f, "{a}"),
            Attr::Pair([a, b]) | Attr::Tuple([a, b]) => write!(f, "({a},{b})"),
            Attr::Size([h, w]) => write!(f, "{h}x{w}"),
            Attr::List(v) => write!(f, "{}", join(v, "")),
            Attr::Dims(v) => write!(f, "[{}]", join(v, "")),
            Attr::Ids(v) => write!(f, "{}", join(v, "#")),
        }
    }
}

impl fmt::Display for Op {
    /// Prints the op as `name[attrs]`, e.g. `conv2d[stride=2, pad=1]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut attrs = String::new();
        self.fmt_attrs(&mut attrs)?;
        if attrs.is_empty() { write!(f, "{}", self.name()) } else { write!(f, "{}[{attrs}]", self.name()) }
    }
}
