//! `Var`: a handle to one node on a tape, with methods that read like the math.
//!
//! Every method records one or a few IR ops; shape problems come back as typed errors naming the
//! op. Binary operators (`&a + &b`, `a * b`) return `Result<Var>` for the same reason.

use crate::{Error, Result, Tape};
use skipgrad_ir::{Axes, Conv2dAttrs, DType, NodeId, Op, PoolAttrs, Role, Shape, ShortcutAttrs, Tensor, TensorType};

/// A value recorded on a [`Tape`]: an input, a parameter, or the result of an op.
#[derive(Clone)]
pub struct Var {
    pub(crate) tape: Tape,
    pub(crate) id: NodeId,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Var({}: {})", self.id, self.ty())
    }
}

impl std::fmt::Display for Var {
    /// Prints `%id = value` on eager tapes and `%id: type` on tracing tapes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.value() {
            Ok(v) => write!(f, "{} = {v}", self.id),
            Err(_) => write!(f, "{}: {}", self.id, self.ty()),
        }
    }
}

/// The parameters and running statistics of one batch-norm layer.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Scale, `[C]`.
    pub gamma: Var,
    /// Shift, `[C]`.
    pub beta: Var,
    /// Running mean, `[C]`: used in eval mode, updated in training mode.
    pub running_mean: Var,
    /// Running (unbiased) variance, `[C]`.
    pub running_var: Var,
    /// Weight of the new batch statistic in the running update (PyTorch's 0.1).
    pub momentum: f64,
    /// Added to the variance before the square root (PyTorch's 1e-5).
    pub eps: f64,
}

impl Var {
    // ---- identity ----------------------------------------------------------------------------
    /// The node this Var refers to.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// The tape it is recorded on.
    pub fn tape(&self) -> &Tape {
        &self.tape
    }
    /// Its dtype and shape.
    pub fn ty(&self) -> TensorType {
        self.tape.0.borrow().graph.node(self.id).expect("a Var's node is on its tape").ty.clone()
    }
    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.ty().shape
    }
    /// Its dtype.
    pub fn dtype(&self) -> DType {
        self.ty().dtype
    }
    /// Its value (eager tapes only).
    pub fn value(&self) -> Result<Tensor> {
        self.tape.value_of(self.id)
    }
    /// Whether gradients flow through it.
    pub fn requires_grad(&self) -> bool {
        self.tape.0.borrow().tracked[self.id.index()]
    }

    fn op(&self, op: Op, others: &[&Var]) -> Result<Var> {
        let mut args = vec![self];
        args.extend_from_slice(others);
        self.tape.record(op, &args)
    }
    /// Records a unary op whose shape rule accepts any input (cannot fail).
    fn map(&self, op: Op) -> Var {
        self.op(op, &[]).expect("shape-preserving unary ops accept every input")
    }
    fn dims(&self) -> Vec<usize> {
        self.shape().dims().to_vec()
    }

    // ---- convolution -------------------------------------------------------------------------
    /// 2-d convolution (no bias) with weight `[K,C,R,S]`, the same stride and padding on both axes.
    pub fn conv2d(&self, weight: &Var, stride: usize, pad: usize) -> Result<Var> {
        self.conv2d_with(weight, Conv2dAttrs::square(stride, pad))
    }
    /// 2-d convolution with per-axis stride and padding.
    pub fn conv2d_with(&self, weight: &Var, attrs: Conv2dAttrs) -> Result<Var> {
        self.op(Op::Conv2d(attrs), &[weight])
    }
    /// Gradient of a convolution with respect to its `input_hw`-sized input; `self` is the output gradient.
    pub fn conv2d_grad_input(&self, weight: &Var, attrs: Conv2dAttrs, input_hw: [usize; 2]) -> Result<Var> {
        self.op(Op::Conv2dGradInput { conv: attrs, input_hw }, &[weight])
    }
    /// Gradient of a convolution with respect to its weight; `self` is the convolution's input.
    pub fn conv2d_grad_weight(&self, dy: &Var, attrs: Conv2dAttrs, kernel_hw: [usize; 2]) -> Result<Var> {
        self.op(Op::Conv2dGradWeight { conv: attrs, kernel_hw }, &[dy])
    }
    /// Adds `bias[C]` along axis 1.
    pub fn bias_add(&self, bias: &Var) -> Result<Var> {
        self.op(Op::BiasAdd, &[bias])
    }

    // ---- batch normalisation -----------------------------------------------------------------
    /// Per-channel mean over every axis but 1.
    pub fn batch_mean(&self) -> Result<Var> {
        self.op(Op::BatchMean, &[])
    }
    /// Per-channel biased variance over every axis but 1.
    pub fn batch_var(&self) -> Result<Var> {
        self.op(Op::BatchVar, &[])
    }
    /// Batch norm with batch statistics (training mode), without touching running statistics.
    pub fn batch_norm_train(&self, gamma: &Var, beta: &Var, eps: f64) -> Result<Var> {
        let (mean, var) = (self.batch_mean()?, self.batch_var()?);
        self.op(Op::BatchNorm { eps, training: true }, &[&mean, &var, gamma, beta])
    }
    /// Batch norm with given statistics (eval mode): `(x - mean) / sqrt(var + eps) * gamma + beta`.
    pub fn batch_norm_eval(&self, mean: &Var, var: &Var, gamma: &Var, beta: &Var, eps: f64) -> Result<Var> {
        self.op(Op::BatchNorm { eps, training: false }, &[mean, var, gamma, beta])
    }
    /// Batch norm as a layer: in training mode it normalises with batch statistics and records the
    /// running-statistics update on the tape (PyTorch's convention: `r = (1 - m) r + m s`, with the
    /// unbiased batch variance); in eval mode it normalises with the running statistics.
    pub fn batch_norm(&self, bn: &BatchNorm, training: bool) -> Result<Var> {
        if !training {
            return self.batch_norm_eval(&bn.running_mean, &bn.running_var, &bn.gamma, &bn.beta, bn.eps);
        }
        if !(0.0..=1.0).contains(&bn.momentum) {
            let message = format!("momentum must be in [0, 1], got {}", bn.momentum);
            return Err(Error::Argument { op: "batch_norm".into(), message });
        }
        let y = self.batch_norm_train(&bn.gamma, &bn.beta, bn.eps)?;
        let (mean, var) = {
            let node = self.tape.0.borrow().graph.node(y.id)?.clone();
            (self.tape.var(node.inputs[1]), self.tape.var(node.inputs[2]))
        };
        let per_channel = self.shape().numel() / self.dims()[1];
        let unbias = if per_channel > 1 { per_channel as f64 / (per_channel as f64 - 1.0) } else { 1.0 };
        let m = bn.momentum;
        self.tape.no_grad(|| {
            self.tape.with_role(Role::Update, || -> Result<()> {
                let new_mean = (&bn.running_mean.scale(1.0 - m) + &mean.scale(m))?;
                let new_var = (&bn.running_var.scale(1.0 - m) + &var.scale(m * unbias))?;
                self.tape.record_update(&bn.running_mean, &new_mean)?;
                self.tape.record_update(&bn.running_var, &new_var)
            })
        })?;
        Ok(y)
    }

    // ---- elementwise -------------------------------------------------------------------------
    /// `max(x, 0)`.
    pub fn relu(&self) -> Var {
        self.map(Op::Relu)
    }
    /// `dy * (self > 0)`: the gradient of ReLU at `self`.
    pub fn relu_grad(&self, dy: &Var) -> Result<Var> {
        self.op(Op::ReluGrad, &[dy])
    }
    /// `self + other`, same shapes.
    pub fn add(&self, other: &Var) -> Result<Var> {
        self.op(Op::Add, &[other])
    }
    /// `self - other`, same shapes.
    pub fn sub(&self, other: &Var) -> Result<Var> {
        self.op(Op::Sub, &[other])
    }
    /// `self * other` elementwise, same shapes.
    pub fn mul(&self, other: &Var) -> Result<Var> {
        self.op(Op::Mul, &[other])
    }
    /// `self / other` elementwise, same shapes.
    pub fn div(&self, other: &Var) -> Result<Var> {
        self.op(Op::Div, &[other])
    }
    /// `sqrt(self)` elementwise (NaN below zero).
    pub fn sqrt(&self) -> Var {
        self.map(Op::Sqrt)
    }
    /// `self * c`.
    pub fn scale(&self, c: f64) -> Var {
        self.map(Op::Scale { c })
    }
    /// `self * s` for a scalar tensor `s` (shape `[]`): a factor fed at run time.
    pub fn mul_scalar(&self, s: &Var) -> Result<Var> {
        self.op(Op::MulScalar, &[s])
    }
    /// `self + c`.
    pub fn add_scalar(&self, c: f64) -> Var {
        self.map(Op::AddScalar { c })
    }
    /// `-self`.
    pub fn neg(&self) -> Var {
        self.scale(-1.0)
    }
    /// The same value with gradients stopped.
    pub fn detach(&self) -> Var {
        self.map(Op::StopGradient)
    }
    /// `1` where `self == other`, else `0`; no gradient.
    pub fn equal(&self, other: &Var) -> Result<Var> {
        self.op(Op::Equal, &[other])
    }

    // ---- residual shortcut and pooling -------------------------------------------------------
    /// The paper's option-A shortcut to `out_channels`: every second pixel, zero channels split
    /// evenly before and after (the widely used CIFAR reference layout).
    pub fn shortcut_a(&self, out_channels: usize) -> Result<Var> {
        let c = self.dims().get(1).copied().unwrap_or(0);
        if out_channels < c {
            let message = format!("cannot shrink {} to {out_channels} channels", self.ty());
            return Err(Error::Argument { op: "shortcut_a".into(), message });
        }
        let extra = out_channels - c;
        self.shortcut_a_with(ShortcutAttrs { stride: 2, pad_before: extra / 2, pad_after: extra - extra / 2 })
    }
    /// The option-A shortcut with explicit stride and channel padding.
    pub fn shortcut_a_with(&self, attrs: ShortcutAttrs) -> Result<Var> {
        self.op(Op::ShortcutA(attrs), &[])
    }
    /// Max pooling with square window, stride and padding (ImageNet stem: 3, 2, 1).
    pub fn max_pool(&self, kernel: usize, stride: usize, pad: usize) -> Result<Var> {
        self.op(Op::MaxPool(PoolAttrs { kernel: [kernel; 2], stride: [stride; 2], pad: [pad; 2] }), &[])
    }
    /// Global average pooling: `[N,C,H,W] -> [N,C]`.
    pub fn global_avg_pool(&self) -> Result<Var> {
        if self.shape().rank() != 4 {
            let message = format!("input must be [N,C,H,W], got {}", self.ty());
            return Err(Error::Argument { op: "global_avg_pool".into(), message });
        }
        self.mean_axes(&[2, 3])
    }

    // ---- linear algebra and shapes -----------------------------------------------------------
    /// Matrix product of 2-d tensors.
    pub fn matmul(&self, other: &Var) -> Result<Var> {
        self.matmul_t(other, false, false)
    }
    /// Matrix product with either operand transposed.
    pub fn matmul_t(&self, other: &Var, transpose_a: bool, transpose_b: bool) -> Result<Var> {
        self.op(Op::MatMul { transpose_a, transpose_b }, &[other])
    }
    /// A fully connected layer, `x @ weight^T + bias`, with PyTorch's `weight[out, in]`.
    pub fn linear(&self, weight: &Var, bias: &Var) -> Result<Var> {
        self.matmul_t(weight, false, true)?.bias_add(bias)
    }
    /// The same elements in a new shape.
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        self.op(Op::Reshape { shape: Shape::new(shape) }, &[])
    }
    /// `[N, ...] -> [N, rest]`.
    pub fn flatten(&self) -> Result<Var> {
        let d = self.dims();
        let n = d.first().copied().unwrap_or(1);
        self.reshape(&[n, d.iter().skip(1).product()])
    }
    /// Sum of all elements (a scalar).
    pub fn sum(&self) -> Result<Var> {
        self.sum_axes(&(0..self.shape().rank()).collect::<Vec<_>>())
    }
    /// Sum over `axes` (increasing), which are removed.
    pub fn sum_axes(&self, axes: &[usize]) -> Result<Var> {
        self.op(Op::ReduceSum { axes: Axes::from_slice(axes) }, &[])
    }
    /// Mean of all elements (a scalar).
    pub fn mean(&self) -> Result<Var> {
        self.mean_axes(&(0..self.shape().rank()).collect::<Vec<_>>())
    }
    /// Mean over `axes` (increasing), which are removed.
    pub fn mean_axes(&self, axes: &[usize]) -> Result<Var> {
        let d = self.dims();
        // Checked: repeated axes (which `sum_axes` rejects) could overflow the product.
        let count = axes.iter().try_fold(1usize, |c, &a| c.checked_mul(d.get(a).copied().unwrap_or(1)));
        let problem = match count {
            None => "counts more elements than fit in memory",
            Some(0) => "has no elements",
            Some(count) => return Ok(self.sum_axes(axes)?.scale(1.0 / count as f64)),
        };
        let message = format!("mean over axes {axes:?} of {} {problem}", self.ty());
        Err(Error::Argument { op: "mean".into(), message })
    }
    /// Copies along new `axes` to reach `shape` (the inverse of `sum_axes`).
    pub fn broadcast(&self, axes: &[usize], shape: &[usize]) -> Result<Var> {
        self.op(Op::Broadcast { axes: Axes::from_slice(axes), shape: Shape::new(shape) }, &[])
    }

    // ---- classification ----------------------------------------------------------------------
    /// Row-wise softmax of `[N,K]` logits.
    pub fn softmax(&self) -> Result<Var> {
        self.op(Op::Softmax, &[])
    }
    /// Mean softmax cross-entropy of `[N,K]` logits against `[N]` class labels.
    pub fn cross_entropy(&self, labels: &Var) -> Result<Var> {
        self.op(Op::SoftmaxCrossEntropy, &[labels])
    }
    /// Index of each row's largest logit, `[N]`.
    pub fn argmax(&self) -> Result<Var> {
        self.op(Op::ArgMax, &[])
    }
    /// Fraction of rows whose largest logit is the label (a scalar).
    pub fn accuracy(&self, labels: &Var) -> Result<Var> {
        self.argmax()?.equal(labels)?.mean()
    }

    /// Records `op` with these Vars as its inputs (the low-level door; prefer the methods).
    pub fn apply(op: Op, args: &[&Var]) -> Result<Var> {
        let first = args.first().ok_or_else(|| Error::Argument {
            op: op.to_string(),
            message: "needs at least one argument to know its tape".into(),
        })?;
        first.tape.record(op, args)
    }
}

macro_rules! binary_operator {
    ($trait:ident, $method:ident) => {
        impl std::ops::$trait<&Var> for &Var {
            type Output = Result<Var>;
            fn $method(self, rhs: &Var) -> Result<Var> {
                Var::$method(self, rhs)
            }
        }
        impl std::ops::$trait<Var> for Var {
            type Output = Result<Var>;
            fn $method(self, rhs: Var) -> Result<Var> {
                Var::$method(&self, &rhs)
            }
        }
        impl std::ops::$trait<&Var> for Var {
            type Output = Result<Var>;
            fn $method(self, rhs: &Var) -> Result<Var> {
                Var::$method(&self, rhs)
            }
        }
        impl std::ops::$trait<Var> for &Var {
            type Output = Result<Var>;
            fn $method(self, rhs: Var) -> Result<Var> {
                Var::$method(self, &rhs)
            }
        }
    };
}
binary_operator!(Add, add);
binary_operator!(Sub, sub);
binary_operator!(Mul, mul);

impl std::ops::Mul<f64> for &Var {
    type Output = Var;
    fn mul(self, c: f64) -> Var {
        self.scale(c)
    }
}
impl std::ops::Neg for &Var {
    type Output = Var;
    fn neg(self) -> Var {
        Var::neg(self)
    }
}
