//! A whole basic residual block (conv-BN-ReLU-conv-BN, add shortcut, ReLU) with global pooling, a
//! classifier and softmax cross-entropy on top: every gradient agrees with central differences.

mod common;

use common::{check, config, constant, labels, uniform};
use proptest::prelude::*;
use skipgrad::prelude::*;

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, then pool, linear and the loss.
/// `v` = [x, w1, g1, b1, w2, g2, b2, fc_w, fc_b].
fn block_loss(v: &[Var], stride: usize, y: &Tensor) -> skipgrad::Result<Var> {
    let out_channels = v[1].shape().dims()[0];
    let h = v[0].conv2d(&v[1], stride, 1)?.batch_norm_train(&v[2], &v[3], 1e-5)?.relu();
    let h = h.conv2d(&v[4], 1, 1)?.batch_norm_train(&v[5], &v[6], 1e-5)?;
    let shortcut = if stride == 1 { v[0].clone() } else { v[0].shortcut_a(out_channels)? };
    let h = (&h + &shortcut)?.relu();
    let logits = h.global_avg_pool()?.linear(&v[7], &v[8])?;
    logits.cross_entropy(&constant(&v[0], y))
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn basic_block_with_cross_entropy(n in 2..4usize, c in 1..4usize, hw in 2..6usize, downsample: bool, seed: u64) {
        let (stride, k) = if downsample { (2, 2 * c) } else { (1, c) };
        let classes = 3;
        let inputs = [
            uniform(seed, &[n, c, hw, hw]),
            uniform(seed ^ 1, &[k, c, 3, 3]),
            uniform(seed ^ 2, &[k]),
            uniform(seed ^ 3, &[k]),
            uniform(seed ^ 4, &[k, k, 3, 3]),
            uniform(seed ^ 5, &[k]),
            uniform(seed ^ 6, &[k]),
            uniform(seed ^ 7, &[classes, k]),
            uniform(seed ^ 8, &[classes]),
        ];
        let y = labels(seed ^ 9, n, classes);
        check(|v| block_loss(v, stride, &y), &inputs)?;
    }
}
