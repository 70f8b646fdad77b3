//! Every op with a kernel, on random shapes and values: the JIT's output matches the reference
//! interpreter (f32) within a relative error of 1e-4, on 1 and 2 threads, with both
//! multiply-add forms the CPU supports, and with 4 lanes as well as the CPU's 8.

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use skipgrad_ir::{Axes, Conv2dAttrs, DType, Fused, Graph, NodeId, Op, Role, Shape, ShortcutAttrs, Tensor, TensorType};
use skipgrad_jit::{CompileOptions, KernelSpec, MulAdd, Target, Winograd, WinogradTiles, compile};
use skipgrad_reference::{Feeds, evaluate};
use std::sync::Arc;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

fn random(seed: u64, dims: &[usize], lo: f32, hi: f32) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = dims.iter().product();
    Tensor::f32(dims, (0..n).map(|_| rng.random_range(lo..hi)).collect()).unwrap()
}

/// The targets to test on this machine: both multiply-add forms where the CPU has FMA, at the
/// host's lanes, and the last of them also at every other width the CPU has (16, 8, 4).
fn targets() -> Vec<Target> {
    let mut t = vec![Target::host_with(MulAdd::Separate).unwrap()];
    if let Ok(fused) = Target::host_with(MulAdd::Fused) {
        t.push(fused);
    }
    let last = t[t.len() - 1].clone();
    for lanes in [16, 8, 4] {
        if lanes != last.lanes()
            && let Ok(other) = last.clone().with_lanes(lanes)
        {
            t.push(other);
        }
    }
    t
}

/// Builds `build(graph, inputs)` over inputs with the given values, then checks the JIT against
/// the reference on every target and thread count, element by element within 1e-4 (relative, or
/// absolute below 1).
fn check(values: &[Tensor], build: impl Fn(&mut Graph, &[NodeId]) -> NodeId) -> Result<(), TestCaseError> {
    check_within(values, 0.0, build)
}

/// [`check`] for outputs that are long sums with cancellation (weight gradients over every pixel
/// of a batch), whose f32 rounding scales with the summed terms rather than with each result:
/// each element may also differ by `normwise` times the largest magnitude of the output.
fn check_within(
    values: &[Tensor],
    normwise: f64,
    build: impl Fn(&mut Graph, &[NodeId]) -> NodeId,
) -> Result<(), TestCaseError> {
    let mut g = Graph::new();
    let mut feeds = Feeds::new();
    let ids: Vec<NodeId> = values
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = format!("x{i}");
            feeds.insert(name.clone(), t.clone());
            g.add_source(Op::Input { name }, TensorType::new(DType::F32, t.shape().clone()), Role::Forward).unwrap()
        })
        .collect();
    let out = build(&mut g, &ids);
    let expected = evaluate(&g, &feeds, &[out]).unwrap().remove(0).to_f64_vec();
    let largest = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for target in targets() {
        for threads in [1, 2] {
            let options = CompileOptions { threads, target: Some(target.clone()), ..CompileOptions::default() };
            let mut compiled = compile(&g, &[out], &options).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got = compiled.run_tensors(&feeds).unwrap().remove(0).to_f64_vec();
            prop_assert_eq!(got.len(), expected.len());
            for (k, (a, b)) in got.iter().zip(&expected).enumerate() {
                prop_assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1.0) + normwise * largest,
                    "element {} of {}: jit {} vs reference {} ({:?}, {} threads)\n{}",
                    k,
                    g.node(out).unwrap().op,
                    a,
                    b,
                    target.mul_add(),
                    threads,
                    g.dump()
                );
            }
        }
    }
    Ok(())
}

/// A 3x3 stride-1 convolution with padding `p` from `c` to `k` channels over `n` images, whose
/// output is `out_hw`, forward and input gradient against the reference. F(4x4, 3x3)'s transforms
/// (coefficients up to 8 and down to 1/24) round more than F(2x2, 3x3)'s: within 1e-5 of the
/// output's largest magnitude.
fn check_f4_convolution([n, c, k]: [usize; 3], [oh, ow]: [usize; 2], p: usize, seed: u64) -> Result<(), TestCaseError> {
    let [h, w] = [oh + 2 - 2 * p, ow + 2 - 2 * p];
    let a = Conv2dAttrs::square(1, p);
    let x = random(seed, &[n, c, h, w], -1.0, 1.0);
    let wt = random(seed ^ 1, &[k, c, 3, 3], -1.0, 1.0);
    let wt_t = random(seed ^ 3, &[c, k, 3, 3], -1.0, 1.0);
    let dy = random(seed ^ 2, &[n, c, oh, ow], -1.0, 1.0);
    check_within(&[x, wt], 1e-5, |g, i| add(g, Op::Conv2d(a), i))?;
    check_within(&[dy, wt_t], 1e-5, |g, i| add(g, Op::Conv2dGradInput { conv: a, input_hw: [h, w] }, i))
}

/// The weight gradient of a 3x3 stride-1 convolution with padding `p` from `c` to `k` channels
/// over `n` images, whose output is `out_hw`, against the reference: a long sum, within 1e-5 of
/// the largest magnitude.
fn check_weight_gradient(
    [n, c, k]: [usize; 3],
    [oh, ow]: [usize; 2],
    p: usize,
    seed: u64,
) -> Result<(), TestCaseError> {
    let [h, w] = [oh + 2 - 2 * p, ow + 2 - 2 * p];
    let a = Conv2dAttrs::square(1, p);
    let x = random(seed, &[n, c, h, w], -1.0, 1.0);
    let dy = random(seed ^ 2, &[n, k, oh, ow], -1.0, 1.0);
    check_within(&[x, dy], 1e-5, |g, i| add(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [3, 3] }, i))
}

/// A convolution with its batch statistics (outputs: y, mean, variance), fused as the fusion
/// pass makes it, of inputs `i` of shapes `[x, w]`.
fn conv_with_stats(g: &mut Graph, i: &[NodeId], [x, w]: [&Shape; 2], a: Conv2dAttrs) -> NodeId {
    let mut body = Graph::new();
    let source = |body: &mut Graph, j: usize, shape: &Shape| {
        let name = Fused::placeholder(j);
        body.add_source(Op::Input { name }, TensorType::new(DType::F32, shape.clone()), Role::Forward).unwrap()
    };
    let (bx, bw) = (source(&mut body, 0, x), source(&mut body, 1, w));
    let y = add(&mut body, Op::Conv2d(a), &[bx, bw]);
    add(&mut body, Op::BatchMean, &[y]);
    add(&mut body, Op::BatchVar, &[y]);
    let fused = Fused { rule: "conv_stats".into(), body: Arc::new(body), covers: vec![], outputs: vec![2, 3, 4] };
    add(g, Op::Fused(fused), i)
}

/// Checks each output of `stats` (a [`conv_with_stats`] node) on `values` against the reference,
/// within 1e-5 of the largest magnitude (the statistics are sums over the batch).
fn check_conv_with_stats(
    values: &[Tensor],
    stats: impl Fn(&mut Graph, &[NodeId]) -> NodeId,
) -> Result<(), TestCaseError> {
    check_within(values, 1e-5, &stats)?;
    for index in [1, 2] {
        check_within(values, 1e-5, |g, i| {
            let fused = stats(g, i);
            add(g, Op::Output { index }, &[fused])
        })?;
    }
    Ok(())
}

/// The spec of the kernel that computes `build`'s node, over inputs of `values`' shapes.
fn kernel_spec(values: &[&Tensor], build: impl Fn(&mut Graph, &[NodeId]) -> NodeId) -> KernelSpec {
    let mut g = Graph::new();
    let ids: Vec<NodeId> = values
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ty = TensorType::new(DType::F32, t.shape().clone());
            g.add_source(Op::Input { name: format!("x{i}") }, ty, Role::Forward).unwrap()
        })
        .collect();
    let node = build(&mut g, &ids);
    let compiled = compile(&g, &[node], &CompileOptions::default()).unwrap();
    compiled.kernel_for(node).unwrap().spec.clone()
}

fn add(g: &mut Graph, op: Op, inputs: &[NodeId]) -> NodeId {
    g.add_node(op, inputs, Role::Forward).unwrap()
}

/// Shapes from scalars to 4-d, with sizes that are not multiples of the vector width.
fn any_dims() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1..7usize, 0..5)
}

proptest! {
    #![proptest_config(config(16))]

    /// 3x3 stride-1 convolutions with enough input channels take the Winograd F(2x2, 3x3) path
    /// (forward and input gradient) when their output sizes are even: partial vectors of tiles
    /// (widths not a multiple of 8), groups of several tile rows, and padding 0 to 2. Odd sizes
    /// fall back to the direct kernel and are checked too.
    #[test]
    fn winograd_convolutions(n in 1..3usize, c in 8..20usize, k in 1..20usize, h in 2..19usize, w in 2..19usize, p in 0..3usize, seed: u64) {
        prop_assume!(h + 2 * p >= 3 && w + 2 * p >= 3);
        let a = Conv2dAttrs::square(1, p);
        let [oh, ow] = [h + 2 * p - 2, w + 2 * p - 2];
        let x = random(seed, &[n, c, h, w], -1.0, 1.0);
        let wt = random(seed ^ 1, &[k, c, 3, 3], -1.0, 1.0);
        let wt_t = random(seed ^ 3, &[c, k, 3, 3], -1.0, 1.0);
        let dy = random(seed ^ 2, &[n, c, oh, ow], -1.0, 1.0);
        check(&[x, wt], |g, i| add(g, Op::Conv2d(a), i))?;
        // The input gradient reads dy's c channels and writes k.
        check(&[dy, wt_t], |g, i| add(g, Op::Conv2dGradInput { conv: a, input_hw: [h, w] }, i))?;
    }

    /// Output sizes where F(4x4, 3x3) multiplies least take it (forward and input gradient):
    /// whole and partial vectors of 4 tiles (widths 12 to 32), one to four tile rows per group,
    /// up to 47 input channels, padding 0 to 2.
    #[test]
    fn winograd_f4_convolutions(n in 1..3usize, c in 8..48usize, k in 1..12usize, th in 1..5usize, ow in prop::sample::select(vec![12usize, 16, 24, 28, 32]), p in 0..3usize, seed: u64) {
        let oh = 4 * th;
        prop_assert_eq!(Winograd::for_output([oh, ow], WinogradTiles::F4, n).map(|w| w.m), Some(4));
        check_f4_convolution([n, c, k], [oh, ow], p, seed)?;
    }

    /// The Winograd weight gradient (3x3 stride 1, input channels a multiple of 4, even output
    /// channels and sizes): widths that leave a partial vector of tiles, images split into
    /// blocks of tile rows (32 wide, 16 high) or several small images per block (with a partial
    /// last block), chunks of images summed in order, padding 0 to 2; odd heights and widths
    /// (tiles half outside, dy read as zeros there; or direct where that multiplies too much).
    #[test]
    fn winograd_weight_gradients(n in 1..12usize, c4 in 2..5usize, k2 in 1..6usize, th in 1..9usize, tw in 1..17usize, odd in 0..4usize, p in 0..3usize, seed: u64) {
        let (c, k, oh, ow) = (4 * c4, 2 * k2, 2 * th - (odd & 1), 2 * tw - (odd >> 1));
        prop_assume!(oh + 2 > 2 * p && ow + 2 > 2 * p);
        check_weight_gradient([n, c, k], [oh, ow], p, seed)?;
    }

    /// With 128 or more channels each way, the Winograd weight gradient splits its output
    /// channels into parts (4, 2 or 1: as many as divide them into even parts), each over
    /// every image, on the tiles the convolution takes: exact and cropped, F(2x2) and F(4x4),
    /// in one image's rows or across 4 images' lanes (batches of 4 and 8), padding 0 to 2.
    #[test]
    fn winograd_weight_gradients_by_output_channels(n in prop::sample::select(vec![1usize, 2, 3, 4, 8]), c4 in 32..35usize, k2 in 64..69usize, oh in 2..10usize, ow in 2..10usize, p in 0..3usize, seed: u64) {
        let (c, k) = (4 * c4, 2 * k2);
        prop_assume!(oh + 2 > 2 * p && ow + 2 > 2 * p);
        let [h, w] = [oh + 2 - 2 * p, ow + 2 - 2 * p];
        let gradient = |g: &mut Graph, i: &[NodeId]| add(g, Op::Conv2dGradWeight { conv: Conv2dAttrs::square(1, p), kernel_hw: [3, 3] }, i);
        let x = random(seed, &[n, c, h, w], -1.0, 1.0);
        let dy = random(seed ^ 2, &[n, k, oh, ow], -1.0, 1.0);
        if let KernelSpec::WinogradGrad(spec) = kernel_spec(&[&x, &dy], gradient) {
            let parts = [4, 2, 1].into_iter().find(|p| k.is_multiple_of(2 * p));
            prop_assert_eq!(spec.channel_parts, parts);
            let tiles = Winograd::for_convolution([oh, ow], WinogradTiles::F4, n).map(|w| (w.m, w.images));
            prop_assert_eq!(Some((spec.tiling.m, spec.tiling.images)), tiles);
        }
        check_within(&[x, dy], 1e-5, gradient)?;
    }

    /// The weight gradient by F(4x4, 3x3) where it multiplies least: widths with whole and
    /// partial vectors of tiles, blocks of tile rows (32 high) or several images per block (at 12
    /// wide, batches of 4 and 8 take lanes across images).
    #[test]
    fn winograd_f4_weight_gradients(n in 1..10usize, c4 in 2..9usize, k2 in 1..5usize, th in 1..9usize, ow in prop::sample::select(vec![12usize, 16, 28, 32]), p in 0..3usize, seed: u64) {
        let (c, k, oh) = (4 * c4, 2 * k2, 4 * th);
        prop_assert_eq!(Winograd::for_output([oh, ow], WinogradTiles::F4, n).map(|w| w.m), Some(4));
        check_weight_gradient([n, c, k], [oh, ow], p, seed)?;
    }

    /// Outputs fewer than 4 tiles of 4 wide, in batches of 4, 8 or 12, take F(4x4, 3x3) with each
    /// vector's lanes across 4 images (forward and input gradient): one to four tile rows per
    /// group, padding 0 to 2 (a crop of the packed input at 0).
    #[test]
    fn winograd_f4_convolutions_across_images(sets in 1..4usize, c in 8..24usize, k in 8..14usize, th in 1..5usize, ow in prop::sample::select(vec![4usize, 8, 12]), p in 0..3usize, seed: u64) {
        let (n, oh) = (4 * sets, 4 * th);
        prop_assert_eq!(Winograd::for_output([oh, ow], WinogradTiles::F4, n).map(|w| (w.m, w.images)), Some((4, 4)));
        check_f4_convolution([n, c, k], [oh, ow], p, seed)?;
    }

    /// Outputs under 4 tiles of 4 wide whose sizes are not multiples of 4, in batches of 4, 8 or
    /// 12, take cropped F(4x4, 3x3) tiles with lanes across 4 images (ResNet-50's 7x7 stage):
    /// the last tile row and column partly outside, their outputs there not stored, padding 0
    /// to 2.
    #[test]
    fn winograd_f4_cropped_convolutions_across_images(sets in 1..4usize, c in 8..20usize, k in 8..14usize, oh in prop::sample::select(vec![5usize, 6, 7, 8, 9, 10, 11]), ow in prop::sample::select(vec![5usize, 6, 7, 9, 10, 11]), p in 0..3usize, seed: u64) {
        let n = 4 * sets;
        let tiling = Winograd::for_convolution([oh, ow], WinogradTiles::F4, n);
        prop_assert_eq!(tiling.map(|w| (w.m, w.images, w.tile_rows)), Some((4, 4, oh.div_ceil(4))));
        check_f4_convolution([n, c, k], [oh, ow], p, seed)?;
    }

    /// At batch 1 a Winograd convolution has fewer blocks of tile rows than 4, so its output
    /// channels are split into parts, a group each (2 to 4, whole register tiles: 8 to 32
    /// channels): the output and the batch statistics that each part writes for its own channels
    /// match the reference.
    #[test]
    fn winograd_convolutions_split_by_output_channels(c in 8..24usize, k8 in 1..5usize, hw in prop::sample::select(vec![8usize, 16]), seed: u64) {
        let k = 8 * k8;
        let x = random(seed, &[1, c, hw, hw], -1.0, 1.0);
        let wt = random(seed ^ 1, &[k, c, 3, 3], -1.0, 1.0);
        let stats = |g: &mut Graph, i: &[NodeId]| conv_with_stats(g, i, [x.shape(), wt.shape()], Conv2dAttrs::square(1, 1));
        let split = match kernel_spec(&[&x, &wt], stats) {
            KernelSpec::Conv(spec) => spec.winograd.map_or(0, |w| w.channel_parts),
            other => panic!("{other:?}"),
        };
        prop_assert!(split > 1, "{} parts", split);
        check_conv_with_stats(&[x.clone(), wt.clone()], stats)?;
    }

    /// A direct convolution (1x1 or 3x3 with fewer than 8 input channels, or strided) with its
    /// batch statistics, for any number of output channels: the register tile's last block of
    /// output channels may be partial, and stores and writes statistics for its channels only.
    #[test]
    fn direct_convolutions_with_batch_statistics(n in 1..3usize, c in 1..8usize, k in 1..20usize, hw in 1..12usize, r in prop::sample::select(vec![1usize, 3]), s in 1..3usize, seed: u64) {
        let a = Conv2dAttrs::square(s, r / 2);
        let x = random(seed, &[n, c, hw, hw], -1.0, 1.0);
        let wt = random(seed ^ 1, &[k, c, r, r], -1.0, 1.0);
        check_conv_with_stats(&[x.clone(), wt.clone()], |g, i| conv_with_stats(g, i, [x.shape(), wt.shape()], a))?;
    }

    /// The weight gradient with lanes across images: several sets of 4 images per block of
    /// products, or (48 rows of 12) blocks of tile rows, chunks of sets summed in order.
    #[test]
    fn winograd_f4_weight_gradients_across_images(sets in 1..6usize, c4 in 2..5usize, k2 in 1..5usize, th in 1..13usize, ow in prop::sample::select(vec![4usize, 8, 12]), p in 0..3usize, seed: u64) {
        let (n, c, k, oh) = (4 * sets, 4 * c4, 2 * k2, 4 * th);
        prop_assert_eq!(Winograd::for_output([oh, ow], WinogradTiles::F4, n).map(|w| (w.m, w.images)), Some((4, 4)));
        check_weight_gradient([n, c, k], [oh, ow], p, seed)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn elementwise(dims in any_dims(), c in -2.0..2.0f64, seed: u64) {
        let v = [random(seed, &dims, -1.0, 1.0), random(seed ^ 1, &dims, -1.0, 1.0)];
        check(&v, |g, x| add(g, Op::Add, x))?;
        check(&v, |g, x| add(g, Op::Sub, x))?;
        check(&v, |g, x| add(g, Op::Mul, x))?;
        // Denominators and radicands away from zero, where f32 and f64 agree to rounding.
        let positive = random(seed ^ 2, &dims, 0.5, 2.0);
        check(&[v[0].clone(), positive.clone()], |g, x| add(g, Op::Div, x))?;
        check(&[positive], |g, x| add(g, Op::Sqrt, x))?;
        check(&v, |g, x| add(g, Op::ReluGrad, x))?;
        check(&v[..1], |g, x| add(g, Op::Relu, x))?;
        check(&v[..1], |g, x| add(g, Op::Scale { c }, x))?;
        check(&v[..1], |g, x| add(g, Op::AddScalar { c }, x))?;
        let factor = Tensor::f32([], vec![c as f32]).unwrap();
        check(&[v[0].clone(), factor], |g, x| add(g, Op::MulScalar, x))?;
        check(&v[..1], |g, x| add(g, Op::StopGradient, x))?;
        let n = dims.iter().product::<usize>();
        check(&v[..1], |g, x| add(g, Op::Reshape { shape: Shape::new(&[n]) }, x))?;
        let same = [v[0].clone(), v[0].clone()];
        check(&same, |g, x| add(g, Op::Equal, x))?;
        check(&v[..1], |g, x| {
            let f = g.add_source(Op::Fill { value: c }, TensorType::new(DType::F32, dims.clone()), Role::Forward).unwrap();
            add(g, Op::Add, &[x[0], f])
        })?;
    }

    #[test]
    fn large_flat_maps(n in 1000..5000usize, seed: u64) {
        let v = [random(seed, &[n], -1.0, 1.0), random(seed ^ 1, &[n], -1.0, 1.0)];
        check(&v, |g, x| add(g, Op::Mul, x))?;
    }

    #[test]
    fn bias_add(dims in prop::collection::vec(1..7usize, 2..5), seed: u64) {
        let v = [random(seed, &dims, -1.0, 1.0), random(seed ^ 1, &[dims[1]], -1.0, 1.0)];
        check(&v, |g, x| add(g, Op::BiasAdd, x))?;
    }

    #[test]
    fn batch_norm(dims in prop::collection::vec(1..7usize, 2..5), training: bool, seed: u64) {
        let c = dims[1];
        let v = [
            random(seed, &dims, -2.0, 3.0),
            random(seed ^ 1, &[c], -1.0, 1.0),
            random(seed ^ 2, &[c], 0.1, 2.0),
            random(seed ^ 3, &[c], -1.0, 1.0),
            random(seed ^ 4, &[c], -1.0, 1.0),
            random(seed ^ 5, &dims, -1.0, 1.0),
        ];
        let eps = 1e-5;
        // mean and variance: batch statistics in training mode, given (running) ones in eval.
        let stats = |g: &mut Graph, x: &[NodeId]| {
            if training { (add(g, Op::BatchMean, &[x[0]]), add(g, Op::BatchVar, &[x[0]])) } else { (x[1], x[2]) }
        };
        check(&v, |g, x| { let (m, s) = stats(g, x); add(g, Op::BatchNorm { eps, training }, &[x[0], m, s, x[3], x[4]]) })?;
        check(&v, |g, x| { let (m, s) = stats(g, x); add(g, Op::BatchNormGradInput { eps, training }, &[x[0], m, s, x[3], x[5]]) })?;
        check(&v, |g, x| { let (m, s) = stats(g, x); add(g, Op::BatchNormGradGamma { eps }, &[x[0], m, s, x[5]]) })?;
        check(&v[..1], |g, x| add(g, Op::BatchMean, x))?;
        check(&v[..1], |g, x| add(g, Op::BatchVar, x))?;
    }

    #[test]
    fn reductions_and_broadcasts(dims in prop::collection::vec(1..6usize, 1..5), prefix in 0..5usize, suffix in 0..5usize, seed: u64) {
        let rank = dims.len();
        let (prefix, suffix) = (prefix.min(rank), suffix.min(rank - prefix.min(rank)));
        let axes: Axes = (0..prefix).chain(rank - suffix..rank).collect();
        let x = random(seed, &dims, -1.0, 1.0);
        check(std::slice::from_ref(&x), |g, i| add(g, Op::ReduceSum { axes: axes.clone() }, i))?;
        let kept: Vec<usize> = (prefix..rank - suffix).map(|a| dims[a]).collect();
        let small = random(seed ^ 1, &kept, -1.0, 1.0);
        check(&[small], |g, i| add(g, Op::Broadcast { axes: axes.clone(), shape: Shape::new(&dims) }, i))?;
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Strided pointwise convolutions (1x1, stride 2 or 3, unpadded) run as one row of their
    /// outputs over every s-th row and column of the input: odd and even sizes (columns left
    /// after whole shuffles of 4s), partial tiles across row ends, any channel counts.
    #[test]
    fn strided_pointwise_convolutions(n in 1..3usize, c in 1..12usize, k in 1..14usize, h in 1..20usize, w in 1..30usize, s in 2..4usize, seed: u64) {
        let a = Conv2dAttrs::square(s, 0);
        let x = random(seed, &[n, c, h, w], -1.0, 1.0);
        let wt = random(seed ^ 1, &[k, c, 1, 1], -1.0, 1.0);
        check(&[x, wt], |g, i| add(g, Op::Conv2d(a), i))?;
    }
}

proptest! {
    #![proptest_config(config(8))]

    /// Pointwise convolutions whose one row of an image's pixels holds more input than half of
    /// L2 (130 to 300 channels of 33x33 to 39x39): each group takes a block of one to four
    /// tiles, and every block of output channels in turn; the row's last block ends in a partial
    /// tile, the last block of channels may be partial, and the statistics are written per tile.
    #[test]
    fn pointwise_convolutions_in_blocks_of_tiles(n in 1..3usize, c in 130..300usize, k in 1..14usize, hw in 33..40usize, seed: u64) {
        let a = Conv2dAttrs::square(1, 0);
        let x = random(seed, &[n, c, hw, hw], -1.0, 1.0);
        let wt = random(seed ^ 1, &[k, c, 1, 1], -1.0, 1.0);
        let stats = |g: &mut Graph, i: &[NodeId]| conv_with_stats(g, i, [x.shape(), wt.shape()], a);
        let KernelSpec::Conv(spec) = kernel_spec(&[&x, &wt], stats) else { panic!("a direct convolution") };
        prop_assert!((1..spec.tiles_per_row()).contains(&spec.block_tiles), "{} of {} tiles", spec.block_tiles, spec.tiles_per_row());
        check_conv_with_stats(&[x.clone(), wt.clone()], stats)?;
    }
}

fn conv_case() -> impl Strategy<Value = (usize, usize, usize, usize, usize, usize, usize, usize, u64)> {
    // (n, c, k, h, w, kernel, stride, pad)
    (
        1..3usize,
        1..6usize,
        1..10usize,
        1..12usize,
        1..14usize,
        prop::sample::select(vec![1usize, 3, 7]),
        1..3usize,
        0..4usize,
        any::<u64>(),
    )
        .prop_filter("kernel must fit", |&(_, _, _, h, w, r, _, p, _)| h + 2 * p >= r && w + 2 * p >= r)
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn convolutions((n, c, k, h, w, r, s, p, seed) in conv_case()) {
        let a = Conv2dAttrs::square(s, p);
        let [oh, ow] = [(h + 2 * p - r) / s + 1, (w + 2 * p - r) / s + 1];
        let x = random(seed, &[n, c, h, w], -1.0, 1.0);
        let wt = random(seed ^ 1, &[k, c, r, r], -1.0, 1.0);
        let dy = random(seed ^ 2, &[n, k, oh, ow], -1.0, 1.0);
        check(&[x.clone(), wt.clone()], |g, i| add(g, Op::Conv2d(a), i))?;
        check(&[dy.clone(), wt], |g, i| add(g, Op::Conv2dGradInput { conv: a, input_hw: [h, w] }, i))?;
        check(&[x, dy], |g, i| add(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [r, r] }, i))?;
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// The weight gradient of a 1x1, unpadded convolution runs as outer products: tiles of 6
    /// output channels (the last holding the rest) by a panel of 2 vectors of input channels
    /// (zeros past the channels: several panels, a partial last), small images in sets (a
    /// partial last set), odd input sizes at stride 2.
    #[test]
    fn pointwise_weight_gradients(n in 1..4usize, c in 1..40usize, k in prop::sample::select(vec![1usize, 2, 3, 8, 1024]), h in 1..11usize, w in 1..11usize, stride in 1..3usize, seed: u64) {
        let a = Conv2dAttrs::square(stride, 0);
        let [oh, ow] = [(h - 1) / stride + 1, (w - 1) / stride + 1];
        let x = random(seed, &[n, c, h, w], -1.0, 1.0);
        let dy = random(seed ^ 2, &[n, k, oh, ow], -1.0, 1.0);
        check_within(&[x, dy], 1e-5, |g, i| add(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [1, 1] }, i))?;
    }
}

/// Pointwise weight gradients over images large enough to take several chunks each (a shorter
/// last; at stride 2, chunks of whole output rows), with the f32 running sums going into the f64
/// totals every 3 chunks, across images, and after the last.
#[test]
fn pointwise_weight_gradients_in_chunks_and_flush_periods() {
    for (n, c, k, hw, stride, chunk, chunks) in
        [(3, 5, 4, 37, 1, 274, 5), (1, 64, 64, 47, 1, 277, 8), (2, 64, 64, 93, 2, 6 * 47, 8)]
    {
        let lanes = Target::host().unwrap().lanes();
        let spec = skipgrad_jit::PointwiseWeightGradSpec::new(n, c, k, [hw, hw], stride, lanes);
        let pixels = ((hw - 1) / stride + 1).pow(2);
        assert_eq!((spec.images, spec.chunk, pixels.div_ceil(spec.chunk), spec.flush), (1, chunk, chunks, 3));
        check_pointwise_weight_gradient([n, c, k, hw, stride], 7);
    }
}

/// The weight gradient of a 1x1 unpadded convolution from `c` to `k` channels of `n` images
/// `hw` x `hw` at `stride`, on random values from `seed`, against the reference.
fn check_pointwise_weight_gradient([n, c, k, hw, stride]: [usize; 5], seed: u64) {
    let a = Conv2dAttrs::square(stride, 0);
    let out = (hw - 1) / stride + 1;
    let x = random(seed, &[n, c, hw, hw], -1.0, 1.0);
    let dy = random(seed + 1, &[n, k, out, out], -1.0, 1.0);
    check_within(&[x, dy], 1e-5, |g, i| add(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [1, 1] }, i)).unwrap();
}

/// Pointwise weight gradients of small images take sets of whole images per chunk, about 256
/// pixels: ResNet-50's 7x7 in sets of 5 (the last set of batch 16 holds 1), its 14x14 one at a
/// time; checked at batch 7 (sets of 5 and 2) and at stride 2.
#[test]
fn pointwise_weight_gradients_of_small_images_in_sets() {
    use skipgrad_jit::PointwiseWeightGradSpec as Spec;
    for (n, c, k, hw, stride, images, flush) in [(16, 2048, 512, 7, 1, 5, 4), (16, 1024, 2048, 28, 2, 1, 5)] {
        for lanes in [4, 8] {
            let spec = Spec::new(n, c, k, [hw, hw], stride, lanes);
            let pixels = ((hw - 1) / stride + 1).pow(2);
            assert_eq!((spec.images, spec.chunk, spec.flush), (images, pixels, flush), "{spec:?}");
        }
    }
    for shape in [[7, 5, 7, 7, 1], [7, 6, 3, 13, 2]] {
        check_pointwise_weight_gradient(shape, 9);
    }
}

/// Weight gradients whose transposed dy takes more than a block of rows, swept block by block:
/// the stem's 7x7, stride 2, 64 channels at outputs 16 rows of 256 (blocks of 4 rows), and 9
/// rows 256 wide (blocks of 4, 4 and 1 rows).
#[test]
fn weight_gradients_in_blocks_of_rows() {
    for (n, c, k, [h, w], r, s, p) in [(2, 3, 64, [32, 512], 7, 2, 3), (1, 2, 64, [9, 256], 3, 1, 1)] {
        let a = Conv2dAttrs::square(s, p);
        let [oh, ow] = [h, w].map(|d| (d + 2 * p - r) / s + 1);
        let x = random(11, &[n, c, h, w], -1.0, 1.0);
        let dy = random(12, &[n, k, oh, ow], -1.0, 1.0);
        let gradient = |g: &mut Graph, i: &[NodeId]| add(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [r, r] }, i);
        match kernel_spec(&[&x, &dy], gradient) {
            KernelSpec::WeightGrad(spec) => assert_eq!(spec.block_rows(), 4),
            other => panic!("{other:?}"),
        }
        check_within(&[x, dy], 1e-5, gradient).unwrap();
    }
}

/// A Winograd weight gradient whose partials would take 1 MB or more a chunk (128 channels each
/// way) splits its output channels into 4 parts, each over every image; with more images than
/// [`WinogradGradSpec`] transforms at once (33 images of 1024 channels), it runs in 2 chunks of
/// images (16 and 17), summed in order.
#[test]
fn winograd_weight_gradients_with_large_partials() {
    for (n, c, k, hw, parts, chunks) in [(5, 128, 128, 6, Some(4), 1), (33, 1024, 16, 4, None, 2)] {
        let a = Conv2dAttrs::square(1, 1);
        let x = random(9, &[n, c, hw, hw], -1.0, 1.0);
        let dy = random(10, &[n, k, hw, hw], -1.0, 1.0);
        let gradient = |g: &mut Graph, i: &[NodeId]| add(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [3, 3] }, i);
        match kernel_spec(&[&x, &dy], gradient) {
            KernelSpec::WinogradGrad(spec) => assert_eq!((spec.channel_parts, spec.chunks), (parts, chunks)),
            other => panic!("{other:?}"),
        }
        check_within(&[x, dy], 1e-5, gradient).unwrap();
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Heights and widths from 1 to 23: rows copied element by element, in vectors of 4, and both.
    #[test]
    fn shortcut_a(n in 1..3usize, c in 1..5usize, before in 0..4usize, after in 0..4usize, h in 1..24usize, w in 1..24usize, seed: u64) {
        let a = ShortcutAttrs { stride: 2, pad_before: before, pad_after: after };
        check(&[random(seed, &[n, c, h, w], -1.0, 1.0)], |g, i| add(g, Op::ShortcutA(a), i))?;
        let dy = random(seed ^ 1, &[n, before + c + after, h.div_ceil(2), w.div_ceil(2)], -1.0, 1.0);
        check(&[dy], |g, i| add(g, Op::ShortcutAGrad { shortcut: a, input_hw: [h, w] }, i))?;
    }

    /// Sizes past a block of 16 columns and past the dot products' steps of 8, with tails.
    #[test]
    fn matmul(m in 1..6usize, k in 1..40usize, n in 1..40usize, ta: bool, tb: bool, seed: u64) {
        let a = random(seed, &if ta { [k, m] } else { [m, k] }, -1.0, 1.0);
        let b = random(seed ^ 1, &if tb { [n, k] } else { [k, n] }, -1.0, 1.0);
        check(&[a, b], |g, i| add(g, Op::MatMul { transpose_a: ta, transpose_b: tb }, i))?;
    }

    #[test]
    fn classifier_rows(n in 1..9usize, k in 1..12usize, seed: u64) {
        let z = random(seed, &[n, k], -5.0, 5.0);
        let mut rng = StdRng::seed_from_u64(seed ^ 7);
        let labels = Tensor::f32([n], (0..n).map(|_| rng.random_range(0..k) as f32).collect()).unwrap();
        check(std::slice::from_ref(&z), |g, i| add(g, Op::Softmax, i))?;
        check(std::slice::from_ref(&z), |g, i| add(g, Op::ArgMax, i))?;
        check(&[z.clone(), labels.clone()], |g, i| add(g, Op::SoftmaxCrossEntropy, i))?;
        check(&[z, labels, random(seed ^ 3, &[], 0.5, 2.0)], |g, i| add(g, Op::SoftmaxCrossEntropyGrad, i))?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn max_pool(n in 1..3usize, c in 1..4usize, h in 1..10usize, w in 1..10usize, kernel in 1..4usize, stride in 1..3usize, pad_frac in 0..2usize, seed: u64) {
        let pad = (kernel / 2).min(pad_frac);
        prop_assume!(h + 2 * pad >= kernel && w + 2 * pad >= kernel);
        let a = skipgrad_ir::PoolAttrs { kernel: [kernel; 2], stride: [stride; 2], pad: [pad; 2] };
        let [oh, ow] = [(h + 2 * pad - kernel) / stride + 1, (w + 2 * pad - kernel) / stride + 1];
        let x = random(seed, &[n, c, h, w], -1.0, 1.0);
        // Also with ties (values in steps of 0.5): the gradient goes to the first maximum in scan
        // order.
        let tied = x.to_f64_vec().iter().map(|v| (v * 2.0).round() as f32 / 2.0).collect();
        let tied = Tensor::f32(&[n, c, h, w][..], tied).unwrap();
        let dy = random(seed ^ 1, &[n, c, oh, ow], -1.0, 1.0);
        check(std::slice::from_ref(&x), |g, i| add(g, Op::MaxPool(a), i))?;
        check(&[x, dy.clone()], |g, i| add(g, Op::MaxPoolGrad(a), i))?;
        check(&[tied, dy], |g, i| add(g, Op::MaxPoolGrad(a), i))?;
    }
}

#[test]
fn bad_labels_are_rejected_when_fed() {
    let mut g = Graph::new();
    let z = g.add_source(Op::Input { name: "z".into() }, TensorType::new(DType::F32, [2, 3]), Role::Forward).unwrap();
    let y = g.add_source(Op::Input { name: "y".into() }, TensorType::new(DType::F32, [2]), Role::Forward).unwrap();
    let loss = add(&mut g, Op::SoftmaxCrossEntropy, &[z, y]);
    let mut c = compile(&g, &[loss], &CompileOptions::default()).unwrap();
    assert_eq!(
        c.set_input("y", &[0.0, 3.0]).unwrap_err().to_string(),
        "jit run: \"y\": label 3 in row 1 is not a class index in 0..3"
    );
    assert!(c.set_input("y", &[0.5, 1.0]).is_err());
    assert!(c.set_input("y", &[2.0, 1.0]).is_ok());
}

#[test]
fn unsupported_ops_are_typed_errors() {
    let mut g = Graph::new();
    let x =
        g.add_source(Op::Input { name: "x".into() }, TensorType::new(DType::F32, [2, 3, 4, 5]), Role::Forward).unwrap();
    let y = add(&mut g, Op::ReduceSum { axes: [1, 3].as_slice().into() }, &[x]);
    let err = compile(&g, &[y], &CompileOptions::default()).err().expect("non-adjacent reductions have no kernel");
    assert!(err.to_string().contains("no kernel for reduce_sum[axes=1,3]"), "{err}");
    let mut g64 = Graph::new();
    let x = g64.add_source(Op::Input { name: "x".into() }, TensorType::new(DType::F64, [2]), Role::Forward).unwrap();
    let y = add(&mut g64, Op::Relu, &[x]);
    assert!(compile(&g64, &[y], &CompileOptions::default()).is_err());
}

/// The default tiles: F(4x4, 3x3) at 32x32 for 16 output channels, F(2x2, 3x3) for 3 (the stem's
/// input gradient, whose input transform would dominate); at 8x8, F(4x4, 3x3) across 4 images'
/// lanes, and F(2x2, 3x3) for a batch of 2 (a tile row of F(4x4) would leave half of each vector
/// empty).
#[test]
fn winograd_tiles_follow_the_channels_and_the_size() {
    let kernel_in_batch = |n: usize, c: usize, k: usize, hw: usize| {
        let mut g = Graph::new();
        let x = g
            .add_source(Op::Input { name: "x".into() }, TensorType::new(DType::F32, [n, c, hw, hw]), Role::Forward)
            .unwrap();
        let w = g
            .add_source(Op::Input { name: "w".into() }, TensorType::new(DType::F32, [k, c, 3, 3]), Role::Forward)
            .unwrap();
        let y = add(&mut g, Op::Conv2d(Conv2dAttrs::square(1, 1)), &[x, w]);
        let compiled = compile(&g, &[y], &CompileOptions::default()).unwrap();
        compiled.kernel_for(y).unwrap().name.clone()
    };
    let kernel = |c: usize, k: usize, hw: usize| kernel_in_batch(2, c, k, hw);
    assert!(kernel(16, 16, 32).ends_with("conv2d_winograd4"), "{}", kernel(16, 16, 32));
    assert!(kernel(16, 3, 32).ends_with("conv2d_winograd"), "{}", kernel(16, 3, 32));
    assert!(kernel(64, 64, 8).ends_with("conv2d_winograd"), "{}", kernel(64, 64, 8));
    assert!(kernel_in_batch(8, 64, 64, 8).ends_with("conv2d_winograd4_images"), "{}", kernel_in_batch(8, 64, 64, 8));
}
