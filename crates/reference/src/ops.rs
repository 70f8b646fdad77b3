//! One plain-loop implementation per op, generic over the element type.
//!
//! Layout conventions: row-major; 4-d tensors are NCHW; "channel" is axis 1 and every other axis
//! is batch-like for the per-channel ops (bias, batch statistics, batch norm).

use crate::{Error, Result};
use skipgrad_ir::{Conv2dAttrs, Op, PoolAttrs, Shape, ShortcutAttrs, Tensor};

/// Computes `op` on input slices of the given shapes; `out` is the inferred output shape.
pub(crate) fn compute(op: &Op, node: usize, x: &[&[f64]], s: &[&Shape], out: &Shape) -> Result<Vec<f64>> {
    let d = |i: usize| s[i].dims();
    let n_out = out.numel();
    let map = |f: &dyn Fn(f64) -> f64| x[0].iter().map(|&v| f(v)).collect::<Vec<f64>>();
    let zip = |f: &dyn Fn(f64, f64) -> f64| x[0].iter().zip(x[1]).map(|(&a, &b)| f(a, b)).collect::<Vec<f64>>();
    Ok(match op {
        Op::Input { .. } | Op::Parameter { .. } | Op::Constant { .. } | Op::Fill { .. } => {
            unreachable!("sources are evaluated by eval_node")
        }
        Op::Fused(_) => unreachable!("fused nodes are evaluated by eval_op, through their body"),
        Op::Output { .. } => unreachable!("outputs of fused nodes are evaluated by evaluate"),
        Op::Conv2d(c) => {
            let mut y = vec![0.0; n_out];
            conv_runs(d(0), d(1), c, |r| {
                let (input, weight) = (&x[0][r.x..], x[1][r.w]);
                for (j, y) in y[r.y..r.y + r.len].iter_mut().enumerate() {
                    *y += input[j * r.step] * weight;
                }
            });
            y
        }
        Op::Conv2dGradInput { conv, .. } => {
            let mut dx = vec![0.0; n_out];
            conv_runs(out.dims(), d(1), conv, |r| {
                let (dy, weight) = (&x[0][r.y..r.y + r.len], x[1][r.w]);
                for (j, &g) in dy.iter().enumerate() {
                    dx[r.x + j * r.step] += g * weight;
                }
            });
            dx
        }
        Op::Conv2dGradWeight { conv, .. } => {
            let mut dw = vec![0.0; n_out];
            conv_runs(d(0), out.dims(), conv, |r| {
                let (input, dy) = (&x[0][r.x..], &x[1][r.y..r.y + r.len]);
                dw[r.w] += dy.iter().enumerate().map(|(j, &g)| input[j * r.step] * g).sum::<f64>();
            });
            dw
        }
        Op::BiasAdd => {
            let ch = Channels::of(d(0));
            x[0].iter().enumerate().map(|(i, &v)| v + x[1][ch.channel(i)]).collect()
        }
        Op::BatchMean => batch_mean(x[0], d(0)),
        Op::BatchVar => batch_var(x[0], d(0)),
        Op::BatchNorm { eps, .. } => {
            let (ch, istd) = (Channels::of(d(0)), inv_std(x[2], *eps));
            let (mean, gamma, beta) = (x[1], x[3], x[4]);
            (0..n_out)
                .map(|i| {
                    let c = ch.channel(i);
                    (x[0][i] - mean[c]) * istd[c] * gamma[c] + beta[c]
                })
                .collect()
        }
        Op::BatchNormGradInput { eps, training } => {
            let (ch, istd) = (Channels::of(d(0)), inv_std(x[2], *eps));
            let (input, mean, gamma, dy) = (x[0], x[1], x[3], x[4]);
            let xhat = |i: usize| (input[i] - mean[ch.channel(i)]) * istd[ch.channel(i)];
            if !*training {
                return Ok((0..n_out).map(|i| dy[i] * gamma[ch.channel(i)] * istd[ch.channel(i)]).collect());
            }
            let (mut sum_dy, mut sum_dy_xhat) = (vec![0.0; ch.c], vec![0.0; ch.c]);
            for (i, &d) in dy.iter().enumerate() {
                let c = ch.channel(i);
                sum_dy[c] += d;
                sum_dy_xhat[c] += d * xhat(i);
            }
            let m = ch.per_channel() as f64;
            (0..n_out)
                .map(|i| {
                    let c = ch.channel(i);
                    gamma[c] * istd[c] / m * (m * dy[i] - sum_dy[c] - xhat(i) * sum_dy_xhat[c])
                })
                .collect()
        }
        Op::BatchNormGradGamma { eps } => {
            let (ch, istd) = (Channels::of(d(0)), inv_std(x[2], *eps));
            let mut g = vec![0.0; ch.c];
            for i in 0..x[0].len() {
                let c = ch.channel(i);
                g[c] += x[3][i] * (x[0][i] - x[1][c]) * istd[c];
            }
            g
        }
        Op::Relu => map(&|v| if v > 0.0 { v } else { 0.0 }),
        Op::ReluGrad => zip(&|v, g| if v > 0.0 { g } else { 0.0 }),
        Op::Add => zip(&|a, b| a + b),
        Op::Sub => zip(&|a, b| a - b),
        Op::Mul => zip(&|a, b| a * b),
        Op::Div => zip(&|a, b| a / b),
        Op::Sqrt => map(&f64::sqrt),
        Op::Equal => zip(&|a, b| if a == b { 1.0 } else { 0.0 }),
        Op::Scale { c } => map(&|v| v * c),
        Op::MulScalar => map(&|v| v * x[1][0]),
        Op::AddScalar { c } => map(&|v| v + c),
        Op::StopGradient | Op::Reshape { .. } | Op::Custom { .. } => x[0].to_vec(),
        Op::ShortcutA(a) => {
            let mut y = vec![0.0; n_out];
            shortcut_pairs(d(0), out.dims(), a, |xi, yi| y[yi] = x[0][xi]);
            y
        }
        Op::ShortcutAGrad { shortcut, .. } => {
            let mut dx = vec![0.0; n_out];
            shortcut_pairs(out.dims(), d(0), shortcut, |xi, yi| dx[xi] = x[0][yi]);
            dx
        }
        Op::MaxPool(p) => {
            let mut y = vec![0.0; n_out];
            pool_windows(d(0), p, |yi, window| y[yi] = x[0][argmax_of(x[0], window)]);
            y
        }
        Op::MaxPoolGrad(p) => {
            let mut dx = vec![0.0; n_out];
            pool_windows(d(0), p, |yi, window| {
                let a = argmax_of(x[0], window);
                dx[a] += x[1][yi];
            });
            dx
        }
        Op::MatMul { transpose_a, transpose_b } => {
            let (a, b) = (d(0), d(1));
            let (m, k) = if *transpose_a { (a[1], a[0]) } else { (a[0], a[1]) };
            let n = out.dims()[1];
            let at = |i: usize, p: usize| if *transpose_a { x[0][p * a[1] + i] } else { x[0][i * a[1] + p] };
            let bt = |p: usize, j: usize| if *transpose_b { x[1][j * b[1] + p] } else { x[1][p * b[1] + j] };
            let mut y = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0;
                    for p in 0..k {
                        acc += at(i, p) * bt(p, j);
                    }
                    y[i * n + j] = acc;
                }
            }
            y
        }
        Op::ReduceSum { axes } => {
            let mut y = vec![0.0; n_out];
            for (i, &v) in x[0].iter().enumerate() {
                let j = drop_axes(i, d(0), axes);
                y[j] += v;
            }
            y
        }
        Op::Broadcast { axes, .. } => (0..n_out).map(|i| x[0][drop_axes(i, out.dims(), axes)]).collect(),
        Op::Softmax => {
            let k = d(0)[1];
            x[0].chunks(k).flat_map(softmax_row).collect()
        }
        Op::SoftmaxCrossEntropy => {
            let (n, k) = (d(0)[0], d(0)[1]);
            let mut total = 0.0;
            for (row, z) in x[0].chunks(k).enumerate() {
                let label = class_index(op, node, row, x[1][row], k)?;
                let max = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                let lse = max + z.iter().map(|&v| (v - max).exp()).fold(0.0, |a, b| a + b).ln();
                total = total + lse - z[label];
            }
            vec![total / n as f64]
        }
        Op::SoftmaxCrossEntropyGrad => {
            let (n, k) = (d(0)[0], d(0)[1]);
            let scale = x[2][0] / n as f64;
            let mut dz = Vec::with_capacity(n * k);
            for (row, z) in x[0].chunks(k).enumerate() {
                let label = class_index(op, node, row, x[1][row], k)?;
                for (j, p) in softmax_row(z).into_iter().enumerate() {
                    let onehot = if j == label { 1.0 } else { 0.0 };
                    dz.push((p - onehot) * scale);
                }
            }
            dz
        }
        Op::ArgMax => {
            let k = d(0)[1];
            x[0].chunks(k).map(|row| argmax_of(row, 0..k) as f64).collect()
        }
    })
}

/// How far `op`'s inputs are from a point where the op is not differentiable: the smallest
/// `|x|` at a ReLU, or the smallest gap between a max-pool window's (or an argmax row's) two
/// largest values. `None` for ops that are smooth everywhere. Gradient checks skip samples that
/// come closer than their margin, since finite differences across a kink are meaningless.
/// Inputs the op would reject give `None`.
pub fn kink_distance(op: &Op, inputs: &[&Tensor]) -> Option<f64> {
    let values = |i: usize| inputs.get(i).map(|t| t.to_f64_vec()).unwrap_or_default();
    let min_gap = |v: &[f64], windows: &mut dyn Iterator<Item = Vec<usize>>| {
        windows
            .map(|w| {
                let mut top = [f64::NEG_INFINITY; 2];
                for &i in &w {
                    if v[i] > top[0] {
                        top = [v[i], top[0]];
                    } else if v[i] > top[1] {
                        top[1] = v[i];
                    }
                }
                top[0] - top[1]
            })
            .fold(f64::INFINITY, f64::min)
    };
    match op {
        Op::Relu => Some(values(0).iter().fold(f64::INFINITY, |m, v| m.min(v.abs()))),
        // Reverse mode feeds relu_grad the ReLU's output, whose exact zeros are the same in every
        // precision: only small non-zero values can fall on either side.
        Op::ReluGrad => Some(values(0).iter().filter(|v| **v != 0.0).fold(f64::INFINITY, |m, v| m.min(v.abs()))),
        Op::MaxPool(p) | Op::MaxPoolGrad(p) => {
            let dims = inputs.first()?.shape().dims();
            skipgrad_ir::infer(op, &[&skipgrad_ir::TensorType::new(inputs[0].dtype(), dims)]).ok()?;
            let (v, mut windows) = (values(0), Vec::new());
            pool_windows(dims, p, |_, w| windows.push(w));
            Some(min_gap(&v, &mut windows.into_iter()))
        }
        Op::ArgMax => {
            let dims = inputs.first()?.shape().dims();
            if dims.len() != 2 || dims[1] == 0 {
                return None;
            }
            let (v, k) = (values(0), dims[1]);
            Some(min_gap(&v, &mut (0..v.len() / k.max(1)).map(|r| (r * k..(r + 1) * k).collect())))
        }
        _ => None,
    }
}

/// Axis 1 of a tensor as "channels": `c` of them, each repeated in blocks of `inner` elements.
struct Channels {
    c: usize,
    inner: usize,
    total: usize,
}

impl Channels {
    fn of(dims: &[usize]) -> Self {
        Channels { c: dims[1], inner: dims[2..].iter().product(), total: dims.iter().product() }
    }
    fn channel(&self, i: usize) -> usize {
        (i / self.inner) % self.c
    }
    /// Elements per channel (N times the spatial size).
    fn per_channel(&self) -> usize {
        self.total / self.c
    }
}

fn batch_mean(x: &[f64], dims: &[usize]) -> Vec<f64> {
    let ch = Channels::of(dims);
    let mut sum = vec![0.0; ch.c];
    for (i, &v) in x.iter().enumerate() {
        sum[ch.channel(i)] = sum[ch.channel(i)] + v;
    }
    let m = ch.per_channel() as f64;
    sum.into_iter().map(|s| s / m).collect()
}

fn batch_var(x: &[f64], dims: &[usize]) -> Vec<f64> {
    let (ch, mean) = (Channels::of(dims), batch_mean(x, dims));
    let mut sq = vec![0.0; ch.c];
    for (i, &v) in x.iter().enumerate() {
        let c = ch.channel(i);
        sq[c] += (v - mean[c]) * (v - mean[c]);
    }
    let m = ch.per_channel() as f64;
    sq.into_iter().map(|s| s / m).collect()
}

fn inv_std(var: &[f64], eps: f64) -> Vec<f64> {
    var.iter().map(|&v| 1.0 / (v + eps).sqrt()).collect()
}

/// One run of a convolution's products: `y[y + j] += x[x + j * step] * w[w]` for `j` in `0..len`.
struct Run {
    x: usize,
    step: usize,
    w: usize,
    y: usize,
    len: usize,
}

/// Calls `run` for every run of products of a convolution of an input of shape `x` with weights
/// of shape `w`: `y[n,k,oh,ow] += x[n,c,ih,iw] * w[k,c,r,s]`, a run being one weight tap's
/// products along an output row (the output pixels whose input pixel lies inside the input). The
/// convolution and both of its gradients are this one sum read three ways.
fn conv_runs(x: &[usize], w: &[usize], a: &Conv2dAttrs, mut run: impl FnMut(Run)) {
    let (n, c, h, wd) = (x[0], x[1], x[2], x[3]);
    let (k, r, s) = (w[0], w[2], w[3]);
    let oh = (h + 2 * a.pad[0] - r) / a.stride[0] + 1;
    let ow = (wd + 2 * a.pad[1] - s) / a.stride[1] + 1;
    // Output columns whose input column `o * stride + si - pad` lies in `0..wd`.
    let columns = |si: usize| {
        let first = a.pad[1].saturating_sub(si).div_ceil(a.stride[1]);
        let end = (wd + a.pad[1]).saturating_sub(si).div_ceil(a.stride[1]).min(ow);
        (first < end).then_some((first, end))
    };
    for ni in 0..n {
        for ki in 0..k {
            for ci in 0..c {
                for ri in 0..r {
                    for si in 0..s {
                        let wi = ((ki * c + ci) * r + ri) * s + si;
                        let Some((first, end)) = columns(si) else { continue };
                        for y in 0..oh {
                            let Some(ih) = (y * a.stride[0] + ri).checked_sub(a.pad[0]).filter(|&ih| ih < h) else {
                                continue;
                            };
                            let iw = first * a.stride[1] + si - a.pad[1];
                            run(Run {
                                x: ((ni * c + ci) * h + ih) * wd + iw,
                                step: a.stride[1],
                                w: wi,
                                y: ((ni * k + ki) * oh + y) * ow + first,
                                len: end - first,
                            });
                        }
                    }
                }
            }
        }
    }
}

/// Calls `pair(x_index, y_index)` for every input pixel the option-A shortcut copies to its output.
fn shortcut_pairs(x: &[usize], y: &[usize], a: &ShortcutAttrs, mut pair: impl FnMut(usize, usize)) {
    for n in 0..x[0] {
        for c in 0..x[1] {
            for i in 0..y[2] {
                for j in 0..y[3] {
                    let xi = ((n * x[1] + c) * x[2] + i * a.stride) * x[3] + j * a.stride;
                    let yi = ((n * y[1] + c + a.pad_before) * y[2] + i) * y[3] + j;
                    pair(xi, yi);
                }
            }
        }
    }
}

/// Calls `window(y_index, input_indices)` for every pooling window, padding excluded.
fn pool_windows(x: &[usize], p: &PoolAttrs, mut window: impl FnMut(usize, Vec<usize>)) {
    let oh = (x[2] + 2 * p.pad[0] - p.kernel[0]) / p.stride[0] + 1;
    let ow = (x[3] + 2 * p.pad[1] - p.kernel[1]) / p.stride[1] + 1;
    for plane in 0..x[0] * x[1] {
        for y in 0..oh {
            for xo in 0..ow {
                let mut idx = Vec::with_capacity(p.kernel[0] * p.kernel[1]);
                for r in 0..p.kernel[0] {
                    for s in 0..p.kernel[1] {
                        let ih = (y * p.stride[0] + r) as isize - p.pad[0] as isize;
                        let iw = (xo * p.stride[1] + s) as isize - p.pad[1] as isize;
                        if ih >= 0 && iw >= 0 && (ih as usize) < x[2] && (iw as usize) < x[3] {
                            idx.push((plane * x[2] + ih as usize) * x[3] + iw as usize);
                        }
                    }
                }
                window((plane * oh + y) * ow + xo, idx);
            }
        }
    }
}

/// The first index in `indices` holding the largest value of `v`.
fn argmax_of(v: &[f64], indices: impl IntoIterator<Item = usize>) -> usize {
    let mut best: Option<usize> = None;
    for i in indices {
        if best.is_none_or(|b| v[i] > v[b]) {
            best = Some(i);
        }
    }
    best.expect("windows and rows are never empty")
}

/// Maps a flat index of a tensor of shape `dims` to the flat index with `axes` removed.
fn drop_axes(mut flat: usize, dims: &[usize], axes: &[usize]) -> usize {
    let (mut out, mut stride) = (0, 1);
    for a in (0..dims.len()).rev() {
        let coord = flat % dims[a];
        flat /= dims[a];
        if !axes.contains(&a) {
            out += coord * stride;
            stride *= dims[a];
        }
    }
    out
}

fn softmax_row(z: &[f64]) -> Vec<f64> {
    let max = z.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = z.iter().map(|&v| (v - max).exp()).collect();
    let sum = e.iter().fold(0.0, |a, &b| a + b);
    e.into_iter().map(|v| v / sum).collect()
}

fn class_index(op: &Op, node: usize, row: usize, label: f64, classes: usize) -> Result<usize> {
    let v = label;
    if v >= 0.0 && v.fract() == 0.0 && (v as usize) < classes {
        Ok(v as usize)
    } else {
        Err(Error::Label { op: op.to_string(), node, row, value: v, classes })
    }
}
