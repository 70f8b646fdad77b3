//! The layers of the paper's nets, each a small struct of named tensors with a `forward`:
//! [`Conv2d`] (no bias: batch norm follows), [`BatchNorm2d`], [`Linear`], [`MaxPool2d`] and
//! global average pooling. Each call is logged in its scope for summaries.

use crate::Result;
use crate::scope::{Init, Scope};
use skipgrad_autodiff::{BatchNorm, Var};

/// Training (batch statistics, running statistics updated) or evaluation (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch norm normalises with the batch's statistics and updates its running ones.
    Train,
    /// Batch norm normalises with its running statistics.
    Eval,
}

/// A 2-d convolution without bias, He-initialised (normal, `std = sqrt(2 / fan_out)`, as
/// torchvision's ResNets are), named `<scope>.weight`.
#[derive(Clone)]
pub struct Conv2d {
    scope: Scope,
    /// `[out, in, k, k]`.
    pub weight: Var,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub pad: usize,
}

impl Conv2d {
    /// A `k x k` convolution from `input` to `output` channels.
    pub fn new(scope: &Scope, input: usize, output: usize, k: usize, stride: usize, pad: usize) -> Result<Conv2d> {
        let fan_out = (output * k * k).max(1) as f64;
        let weight = scope.parameter("weight", &[output, input, k, k], Init::Normal((2.0 / fan_out).sqrt()))?;
        Ok(Conv2d { scope: scope.clone(), weight, stride, pad })
    }

    /// The convolution of `x`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let y =
            x.conv2d(&self.weight, self.stride, self.pad).map_err(|e| self.scope.layer_error(self.scope.path(), e))?;
        let d = self.weight.shape().dims().to_vec();
        let per_pixel = (d[1] * d[2] * d[3]) as u64;
        let out = y.shape().dims().to_vec();
        let macs = out[1..].iter().product::<usize>() as u64 * per_pixel;
        self.scope.log("Conv2d", &y, d.iter().product(), macs);
        Ok(y)
    }
}

/// Batch normalisation over channels: scale (`weight`, 1) and shift (`bias`, 0) parameters,
/// `running_mean` (0) and `running_var` (1) buffers, momentum 0.1, eps 1e-5, as PyTorch's.
#[derive(Clone)]
pub struct BatchNorm2d {
    scope: Scope,
    /// The tape-level batch norm: its tensors and constants.
    pub bn: BatchNorm,
}

impl BatchNorm2d {
    /// Batch norm over `channels`; with `zero_scale`, the scale starts at 0 (a residual block's
    /// last batch norm, so the block starts as the identity).
    pub fn new(scope: &Scope, channels: usize, zero_scale: bool) -> Result<BatchNorm2d> {
        let bn = BatchNorm {
            gamma: scope.parameter("weight", &[channels], if zero_scale { Init::Zeros } else { Init::Ones })?,
            beta: scope.parameter("bias", &[channels], Init::Zeros)?,
            running_mean: scope.buffer("running_mean", &[channels], Init::Zeros)?,
            running_var: scope.buffer("running_var", &[channels], Init::Ones)?,
            momentum: 0.1,
            eps: 1e-5,
        };
        Ok(BatchNorm2d { scope: scope.clone(), bn })
    }

    /// Normalises `x`; in training mode, also records the running-statistics updates on the tape.
    pub fn forward(&self, x: &Var, mode: Mode) -> Result<Var> {
        let y =
            x.batch_norm(&self.bn, mode == Mode::Train).map_err(|e| self.scope.layer_error(self.scope.path(), e))?;
        self.scope.log("BatchNorm2d", &y, 2 * self.bn.gamma.shape().numel(), 0);
        Ok(y)
    }
}

/// A fully connected layer `x W^T + b`, initialised as PyTorch's `nn.Linear`: both uniform in
/// `+-1 / sqrt(in)`.
#[derive(Clone)]
pub struct Linear {
    scope: Scope,
    /// `[out, in]`.
    pub weight: Var,
    /// `[out]`.
    pub bias: Var,
}

impl Linear {
    /// A layer from `input` to `output` features.
    pub fn new(scope: &Scope, input: usize, output: usize) -> Result<Linear> {
        let bound = 1.0 / (input.max(1) as f64).sqrt();
        let weight = scope.parameter("weight", &[output, input], Init::Uniform(bound))?;
        let bias = scope.parameter("bias", &[output], Init::Uniform(bound))?;
        Ok(Linear { scope: scope.clone(), weight, bias })
    }

    /// `x W^T + b` for `x` of `[N, in]`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let y = x.linear(&self.weight, &self.bias).map_err(|e| self.scope.layer_error(self.scope.path(), e))?;
        let w = self.weight.shape().numel();
        self.scope.log("Linear", &y, w + self.bias.shape().numel(), w as u64);
        Ok(y)
    }
}

/// Max pooling with a square window (the ImageNet stem's 3x3, stride 2, padding 1).
#[derive(Clone)]
pub struct MaxPool2d {
    scope: Scope,
    /// Window size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding (with minus infinity).
    pub pad: usize,
}

impl MaxPool2d {
    /// A pooling layer named by `scope`.
    pub fn new(scope: &Scope, kernel: usize, stride: usize, pad: usize) -> MaxPool2d {
        MaxPool2d { scope: scope.clone(), kernel, stride, pad }
    }

    /// Pools `x`.
    pub fn forward(&self, x: &Var) -> Result<Var> {
        let y =
            x.max_pool(self.kernel, self.stride, self.pad).map_err(|e| self.scope.layer_error(self.scope.path(), e))?;
        self.scope.log("MaxPool2d", &y, 0, 0);
        Ok(y)
    }
}

/// Global average pooling `[N, C, H, W] -> [N, C]`, logged as the layer `scope`.
pub fn global_avg_pool(scope: &Scope, x: &Var) -> Result<Var> {
    let y = x.global_avg_pool().map_err(|e| scope.layer_error(scope.path(), e))?;
    scope.log("AvgPool", &y, 0, 0);
    Ok(y)
}
