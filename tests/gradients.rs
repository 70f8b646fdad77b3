//! Gradient properties: for every differentiable op, reverse mode agrees with central differences
//! in f64 on random shapes, strides, paddings and values (samples near a ReLU or max kink are
//! rejected). Raise the case counts with `PROPTEST_CASES`.

mod common;

use common::{check, config, constant, labels, uniform, uniform_in};
use proptest::prelude::*;
use skipgrad::prelude::*;

fn conv_case() -> impl Strategy<Value = (usize, usize, usize, usize, usize, usize, usize, usize, u64)> {
    // (n, c, k, h, w, kernel, stride, pad, seed); kernels 1, 3 and 7 as in the paper's nets.
    (
        1..3usize,
        1..4usize,
        1..4usize,
        1..9usize,
        1..9usize,
        prop::sample::select(vec![1usize, 3, 7]),
        1..3usize,
        0..4usize,
        any::<u64>(),
    )
        .prop_filter("kernel must fit the padded input", |&(_, _, _, h, w, r, _, p, _)| {
            h + 2 * p >= r && w + 2 * p >= r
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn conv2d((n, c, k, h, w, r, stride, pad, seed) in conv_case()) {
        let inputs = [uniform(seed, &[n, c, h, w]), uniform(seed ^ 1, &[k, c, r, r])];
        check(|v| v[0].conv2d(&v[1], stride, pad), &inputs)?;
    }

    #[test]
    fn conv2d_grad_input_is_differentiable((n, c, k, h, w, r, stride, pad, seed) in conv_case()) {
        let a = Conv2dAttrs::square(stride, pad);
        let (oh, ow) = ((h + 2 * pad - r) / stride + 1, (w + 2 * pad - r) / stride + 1);
        let inputs = [uniform(seed, &[n, k, oh, ow]), uniform(seed ^ 1, &[k, c, r, r])];
        check(|v| v[0].conv2d_grad_input(&v[1], a, [h, w]), &inputs)?;
    }

    #[test]
    fn conv2d_grad_weight_is_differentiable((n, c, k, h, w, r, stride, pad, seed) in conv_case()) {
        let a = Conv2dAttrs::square(stride, pad);
        let (oh, ow) = ((h + 2 * pad - r) / stride + 1, (w + 2 * pad - r) / stride + 1);
        let inputs = [uniform(seed, &[n, c, h, w]), uniform(seed ^ 1, &[n, k, oh, ow])];
        check(|v| v[0].conv2d_grad_weight(&v[1], a, [r, r]), &inputs)?;
    }

    #[test]
    fn bias_add(n in 1..4usize, c in 1..5usize, spatial in prop::collection::vec(1..4usize, 0..3), seed: u64) {
        let mut dims = vec![n, c];
        dims.extend(spatial);
        check(|v| v[0].bias_add(&v[1]), &[uniform(seed, &dims), uniform(seed ^ 1, &[c])])?;
    }

    #[test]
    fn batch_norm_training(n in 1..4usize, c in 1..4usize, h in 1..4usize, w in 1..4usize, seed: u64) {
        prop_assume!(n * h * w >= 2);
        let inputs = [uniform(seed, &[n, c, h, w]), uniform(seed ^ 1, &[c]), uniform(seed ^ 2, &[c])];
        check(|v| v[0].batch_norm_train(&v[1], &v[2], 1e-5), &inputs)?;
    }

    #[test]
    fn batch_norm_training_on_features(n in 2..6usize, c in 1..5usize, seed: u64) {
        let inputs = [uniform(seed, &[n, c]), uniform(seed ^ 1, &[c]), uniform(seed ^ 2, &[c])];
        check(|v| v[0].batch_norm_train(&v[1], &v[2], 1e-5), &inputs)?;
    }

    #[test]
    fn batch_norm_eval(n in 1..4usize, c in 1..4usize, h in 1..4usize, w in 1..4usize, seed: u64) {
        let mean = uniform(seed ^ 3, &[c]);
        let var = uniform_in(seed ^ 4, &[c], 0.1, 2.0);
        let inputs = [uniform(seed, &[n, c, h, w]), uniform(seed ^ 1, &[c]), uniform(seed ^ 2, &[c])];
        check(|v| {
            let (m, s) = (constant(&v[0], &mean), constant(&v[0], &var));
            v[0].batch_norm_eval(&m, &s, &v[1], &v[2], 1e-5)
        }, &inputs)?;
    }

    #[test]
    fn batch_statistics(n in 1..4usize, c in 1..4usize, h in 1..4usize, seed: u64) {
        let x = [uniform(seed, &[n, c, h, h])];
        check(|v| v[0].batch_mean(), &x)?;
        check(|v| v[0].batch_var(), &x)?;
    }

    #[test]
    fn relu_and_its_gradient(dims in prop::collection::vec(1..5usize, 1..4), seed: u64) {
        check(|v| Ok(v[0].relu()), &[uniform(seed, &dims)])?;
        // relu_grad is linear in its output gradient (and piecewise constant in x).
        let x = uniform(seed ^ 1, &dims);
        check(|v| constant(&v[0], &x).relu_grad(&v[0]), &[uniform(seed, &dims)])?;
    }

    #[test]
    fn elementwise(dims in prop::collection::vec(1..5usize, 0..4), c in -3.0..3.0f64, seed: u64) {
        let ab = [uniform(seed, &dims), uniform(seed ^ 1, &dims)];
        check(|v| &v[0] + &v[1], &ab)?;
        check(|v| &v[0] - &v[1], &ab)?;
        check(|v| &v[0] * &v[1], &ab)?;
        check(|v| Ok(v[0].scale(c)), &ab[..1])?;
        check(|v| Ok(v[0].add_scalar(c)), &ab[..1])?;
        // A run-time factor: the gradient reaches both the tensor and the scalar.
        check(|v| v[0].mul_scalar(&v[1]), &[ab[0].clone(), Tensor::f64([], vec![c]).unwrap()])?;
        // Division and square roots away from their poles: denominators and radicands in [0.5, 2].
        let positive = uniform_in(seed ^ 2, &dims, 0.5, 2.0);
        check(|v| v[0].div(&v[1]), &[ab[0].clone(), positive.clone()])?;
        check(|v| Ok(v[0].sqrt()), &[positive])?;
    }

    #[test]
    fn shortcut_a(n in 1..3usize, c in 1..4usize, extra in 0..4usize, h in 1..7usize, w in 1..7usize, seed: u64) {
        check(|v| v[0].shortcut_a(c + extra), &[uniform(seed, &[n, c, h, w])])?;
        let a = ShortcutAttrs { stride: 2, pad_before: extra / 2, pad_after: extra - extra / 2 };
        let dy = uniform(seed, &[n, c + extra, h.div_ceil(2), w.div_ceil(2)]);
        check(|v| Var::apply(Op::ShortcutAGrad { shortcut: a, input_hw: [h, w] }, &[&v[0]]), &[dy])?;
    }

    #[test]
    fn max_pool(n in 1..3usize, c in 1..3usize, h in 1..8usize, w in 1..8usize, kernel in 1..4usize, stride in 1..3usize, pad_frac in 0..2usize, seed: u64) {
        let pad = (kernel / 2).min(pad_frac);
        prop_assume!(h + 2 * pad >= kernel && w + 2 * pad >= kernel);
        check(|v| v[0].max_pool(kernel, stride, pad), &[uniform(seed, &[n, c, h, w])])?;
    }

    #[test]
    fn imagenet_stem_max_pool(h in 2..10usize, seed: u64) {
        check(|v| v[0].max_pool(3, 2, 1), &[uniform(seed, &[1, 2, h, h + 1])])?;
    }

    #[test]
    fn pooling_and_reductions(dims in prop::collection::vec(1..4usize, 4..5), mask in 0..16usize, seed: u64) {
        let x = [uniform(seed, &dims)];
        let axes: Vec<usize> = (0..4).filter(|a| mask & (1 << a) != 0).collect();
        check(|v| v[0].global_avg_pool(), &x)?;
        check(|v| v[0].sum(), &x)?;
        check(|v| v[0].mean(), &x)?;
        check(|v| v[0].sum_axes(&axes), &x)?;
        let kept: Vec<usize> = (0..4).filter(|a| !axes.contains(a)).map(|a| dims[a]).collect();
        check(|v| v[0].broadcast(&axes, &dims), &[uniform(seed, &kept)])?;
    }

    #[test]
    fn reshape_and_flatten(dims in prop::collection::vec(1..4usize, 2..5), seed: u64) {
        let x = [uniform(seed, &dims)];
        check(|v| v[0].flatten(), &x)?;
        let n: usize = dims.iter().product();
        check(|v| v[0].reshape(&[n]), &x)?;
    }

    #[test]
    fn matmul(m in 1..5usize, k in 1..5usize, n in 1..5usize, ta: bool, tb: bool, seed: u64) {
        let a = if ta { [k, m] } else { [m, k] };
        let b = if tb { [n, k] } else { [k, n] };
        check(|v| v[0].matmul_t(&v[1], ta, tb), &[uniform(seed, &a), uniform(seed ^ 1, &b)])?;
    }

    #[test]
    fn linear(n in 1..5usize, fin in 1..6usize, fout in 1..5usize, seed: u64) {
        let inputs = [uniform(seed, &[n, fin]), uniform(seed ^ 1, &[fout, fin]), uniform(seed ^ 2, &[fout])];
        check(|v| v[0].linear(&v[1], &v[2]), &inputs)?;
    }

    #[test]
    fn softmax_and_cross_entropy(n in 1..5usize, k in 1..6usize, seed: u64) {
        let z = [uniform_in(seed, &[n, k], -3.0, 3.0)];
        check(|v| v[0].softmax(), &z)?;
        let y = labels(seed ^ 1, n, k);
        check(|v| v[0].cross_entropy(&constant(&v[0], &y)), &z)?;
    }
}
