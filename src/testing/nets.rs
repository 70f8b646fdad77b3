//! Random training networks for testing compiler passes and kernels against the reference
//! interpreter (the property tests and the differential fuzzer use them): chains and residual diamonds of conv-BN-ReLU
//! blocks (basic and bottleneck blocks; identity, option-A and projection shortcuts; strides 1 and
//! 2; 1x1 and 3x3 kernels; the ImageNet stem's 7x7 convolution and max pool), a classifier and
//! softmax cross-entropy, traced with every parameter gradient, the batch-norm running-statistics
//! updates and an SGD-with-momentum step as outputs.

use crate::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A tensor of `dtype` from f64 values.
fn tensor(dtype: DType, dims: &[usize], values: Vec<f64>) -> Tensor {
    match dtype {
        DType::F32 => Tensor::f32(dims, values.into_iter().map(|v| v as f32).collect()),
        DType::F64 => Tensor::f64(dims, values),
    }
    .expect("values match their dims")
}

/// One block of the random network.
#[derive(Clone, Debug)]
pub enum Block {
    /// conv (kernel, stride) - BN - ReLU, to `out` channels.
    Plain { out: usize, kernel: usize, stride: usize },
    /// A basic residual block, doubling the channels with option A when `stride` is 2.
    Residual { stride: usize },
    /// A basic block with a 1x1 projection shortcut (conv-BN): option B at stride 2, option C's
    /// shortcut at stride 1.
    Projection { stride: usize },
    /// A bottleneck block (1x1, 3x3, 1x1 to 2x the channels) with a projection shortcut when its
    /// shape changes, else the identity.
    Bottleneck { stride: usize },
    /// The ImageNet stem: 7x7 stride-2 conv-BN-ReLU to `out` channels, then 3x3 stride-2 max pool.
    Stem { out: usize },
}

/// A traced training step with the values to run it on.
pub struct Net {
    /// The traced tape.
    pub tape: Tape,
    /// Values of every input and parameter.
    pub feeds: Feeds,
    /// Loss, gradients of the trainable parameters, running-statistics updates, and each
    /// parameter's and velocity's SGD update.
    pub outputs: Vec<Var>,
    /// The parameters the loss is differentiated by.
    trainable: Vec<Var>,
    rng: StdRng,
    dtype: DType,
    /// Batch norms normalize by the batch's statistics (else by the running ones).
    training: bool,
}

impl Net {
    /// A trained parameter, uniform in `[lo, hi)`.
    fn param(&mut self, name: &str, dims: &[usize], lo: f64, hi: f64) -> Result<Var> {
        let v = self.state(name, dims, lo, hi)?;
        self.trainable.push(v.clone());
        Ok(v)
    }

    /// State that is not trained (a running statistic, an optimizer slot), uniform in `[lo, hi)`.
    fn state(&mut self, name: &str, dims: &[usize], lo: f64, hi: f64) -> Result<Var> {
        let n: usize = dims.iter().product();
        let values: Vec<f64> = (0..n).map(|_| self.rng.random_range(lo..hi)).collect();
        self.feeds.insert(name.into(), tensor(self.dtype, dims, values));
        self.tape.parameter_spec(name, self.dtype, dims)
    }
    fn conv_bn(&mut self, x: &Var, name: &str, out: usize, kernel: usize, stride: usize) -> Result<Var> {
        self.conv_bn_padded(x, name, out, kernel, stride, kernel / 2)
    }
    fn conv_bn_padded(
        &mut self,
        x: &Var,
        name: &str,
        out: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    ) -> Result<Var> {
        let c = x.shape().dims()[1];
        let bound = (3.0 / (c * kernel * kernel) as f64).sqrt();
        let w = self.param(&format!("{name}.conv.weight"), &[out, c, kernel, kernel], -bound, bound)?;
        let bn = BatchNorm {
            gamma: self.param(&format!("{name}.bn.weight"), &[out], 0.5, 1.5)?,
            beta: self.param(&format!("{name}.bn.bias"), &[out], -0.5, 0.5)?,
            running_mean: self.state(&format!("{name}.bn.running_mean"), &[out], -0.1, 0.1)?,
            running_var: self.state(&format!("{name}.bn.running_var"), &[out], 0.9, 1.1)?,
            momentum: 0.1,
            eps: 1e-5,
        };
        x.conv2d(&w, stride, pad)?.batch_norm(&bn, self.training)
    }
}

/// Builds the traced training graph of `blocks` on `batch` images of `channels` x `hw` x `hw`,
/// with weights and data drawn from `seed`; returns it with its feeds and outputs (loss,
/// gradients, updates). Fails when a block does not fit the image (the errors of the research
/// API).
pub fn build(blocks: &[Block], batch: usize, channels: usize, hw: usize, seed: u64, dtype: DType) -> Result<Net> {
    let (mut net, logits) = forward(blocks, [batch, channels, hw], seed, dtype, true)?;
    let classes = logits.shape().dims()[1];
    let labels: Vec<f64> = (0..batch).map(|_| net.rng.random_range(0..classes) as f64).collect();
    net.feeds.insert("labels".into(), tensor(dtype, &[batch], labels));
    let y = net.tape.input_spec("labels", dtype, &[batch])?;
    let loss = logits.cross_entropy(&y)?;
    let refs: Vec<&Var> = net.trainable.iter().collect();
    let grads = grad(&loss, &refs)?;
    // The optimizer step, as training will run it: each parameter and its velocity buffer.
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    for (p, g) in net.trainable.clone().iter().zip(&grads) {
        let name = net.tape.graph().source_name(p.id()).expect("a parameter").to_string();
        let v = net.state(&format!("{name}.momentum"), p.shape().dims(), -0.1, 0.1)?;
        sgd.update(p, g, &v)?;
    }
    net.outputs.push(loss);
    net.outputs.extend(grads);
    net.outputs.extend(net.tape.updates().into_iter().map(|(_, new)| new));
    Ok(net)
}

/// The same network in inference (batch norms by their running statistics, which convolution
/// kernels apply in their epilogues): its only output is the logits.
pub fn build_inference(
    blocks: &[Block],
    batch: usize,
    channels: usize,
    hw: usize,
    seed: u64,
    dtype: DType,
) -> Result<Net> {
    let (mut net, logits) = forward(blocks, [batch, channels, hw], seed, dtype, false)?;
    net.outputs.push(logits);
    Ok(net)
}

/// The network's forward pass to its logits (3 classes), with batch norms in `training` mode
/// or not.
fn forward(
    blocks: &[Block],
    [batch, channels, hw]: [usize; 3],
    seed: u64,
    dtype: DType,
    training: bool,
) -> Result<(Net, Var)> {
    let mut net = Net {
        tape: Tape::trace(dtype),
        feeds: Feeds::new(),
        outputs: vec![],
        trainable: vec![],
        rng: StdRng::seed_from_u64(seed),
        dtype,
        training,
    };
    let x_values: Vec<f64> = (0..batch * channels * hw * hw).map(|_| net.rng.random_range(-1.0..1.0)).collect();
    net.feeds.insert("images".into(), tensor(dtype, &[batch, channels, hw, hw], x_values));
    let mut h = net.tape.input_spec("images", dtype, &[batch, channels, hw, hw])?;
    for (i, b) in blocks.iter().enumerate() {
        let c = h.shape().dims()[1];
        h = match *b {
            Block::Plain { out, kernel, stride } => net.conv_bn(&h, &format!("b{i}"), out, kernel, stride)?.relu(),
            Block::Residual { stride } => {
                let out = if stride == 2 { 2 * c } else { c };
                let y = net.conv_bn(&h, &format!("b{i}.1"), out, 3, stride)?.relu();
                let y = net.conv_bn(&y, &format!("b{i}.2"), out, 3, 1)?;
                let shortcut = if stride == 2 { h.shortcut_a(out)? } else { h.clone() };
                (&y + &shortcut)?.relu()
            }
            Block::Projection { stride } => {
                let out = if stride == 2 { 2 * c } else { c };
                let y = net.conv_bn(&h, &format!("b{i}.1"), out, 3, stride)?.relu();
                let y = net.conv_bn(&y, &format!("b{i}.2"), out, 3, 1)?;
                let shortcut = net.conv_bn(&h, &format!("b{i}.down"), out, 1, stride)?;
                (&y + &shortcut)?.relu()
            }
            Block::Bottleneck { stride } => {
                let (mid, out) = (c.div_ceil(2), 2 * c.div_ceil(2));
                let y = net.conv_bn(&h, &format!("b{i}.1"), mid, 1, 1)?.relu();
                let y = net.conv_bn(&y, &format!("b{i}.2"), mid, 3, stride)?.relu();
                let y = net.conv_bn(&y, &format!("b{i}.3"), out, 1, 1)?;
                let shortcut = if stride == 1 && out == c {
                    h.clone()
                } else {
                    net.conv_bn(&h, &format!("b{i}.down"), out, 1, stride)?
                };
                (&y + &shortcut)?.relu()
            }
            Block::Stem { out } => net.conv_bn_padded(&h, &format!("b{i}"), out, 7, 2, 3)?.relu().max_pool(3, 2, 1)?,
        };
    }
    let classes = 3;
    let features = h.shape().dims()[1];
    let fc_w = net.param("fc.weight", &[classes, features], -0.5, 0.5)?;
    let fc_b = net.param("fc.bias", &[classes], -0.1, 0.1)?;
    let logits = h.global_avg_pool()?.linear(&fc_w, &fc_b)?;
    Ok((net, logits))
}

/// True when some batch norm normalizes fewer than 4 values per channel. With 2 values the input
/// gradient is exactly zero (x-hat is +-1 and the terms cancel), so two f32 evaluations return
/// different rounding noise, amplified by 1/std: comparing them says nothing.
pub fn degenerate_batch_norm(graph: &Graph) -> bool {
    graph.nodes().iter().any(|n| {
        n.op == Op::BatchMean && {
            let x = &graph.nodes()[n.inputs[0].index()].ty.shape;
            x.numel() / x.dims()[1].max(1) < 4
        }
    })
}
