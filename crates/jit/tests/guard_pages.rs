//! Generated code never touches memory outside its buffers: whole graphs run with every buffer
//! (node values and kernels' scratch) flush against an inaccessible PROT_NONE page, after the data
//! and, separately, before it, for sizes that are not multiples of the vector width or the tiles.
//! A stray access kills the test process; the guarded results must equal the unguarded ones.

use skipgrad_ir::{Axes, Conv2dAttrs, DType, Fused, Graph, NodeId, Op, Role, Shape, ShortcutAttrs, TensorType};
use skipgrad_jit::{CompileOptions, Guard, Target, compile};
use std::sync::Arc;

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// These tests run with debug assertions on (the test profile keeps them; this test exists to
/// fail when they are off): Cranelift's IR
/// verifier then checks every generated kernel (`target.rs`), and the lowering's
/// `debug_assert!`s run, on top of the guard pages.
#[cfg(not(debug_assertions))]
#[test]
fn guard_page_tests_run_with_debug_assertions() {
    panic!("build the guard-page tests with debug assertions on (the test profile's default)");
}

/// Runs every node of `g` as an output with each guard placement and compares with no guard, on
/// one thread (whose per-thread scratch is the whole buffer, so any overrun of its share meets a
/// guard) and on two; at the host's vectors, and at 8 and 16 lanes too where the CPU has them.
fn run_guarded(g: &Graph, inputs: &[(&str, usize)]) {
    let outputs: Vec<NodeId> = g.ids().filter(|&id| !g.node(id).unwrap().op.is_source()).collect();
    let host = Target::host().unwrap();
    let mut targets = vec![host.clone()];
    targets.extend([8, 16].into_iter().filter(|&l| l != host.lanes()).filter_map(|l| host.clone().with_lanes(l).ok()));
    for (target, threads) in targets.iter().flat_map(|t| [(t, 1), (t, 2)]) {
        let mut results = vec![];
        for guard in [Guard::None, Guard::After, Guard::Before] {
            let target = Some(target.clone());
            let options = CompileOptions { threads, guard, target, ..CompileOptions::default() };
            let mut c = compile(g, &outputs, &options).unwrap();
            for &(name, len) in inputs {
                let values: Vec<f32> = (0..len).map(|i| ((i * 37 % 11) as f32) * 0.2 + 0.1).collect();
                c.set_input(name, &values).unwrap();
            }
            c.run();
            results.push((0..outputs.len()).map(|k| c.output(k).unwrap().to_vec()).collect::<Vec<_>>());
        }
        assert_eq!(results[0], results[1], "guard after, {threads} threads, {target}");
        assert_eq!(results[0], results[2], "guard before, {threads} threads, {target}");
    }
}

#[test]
fn elementwise_reduction_and_batch_norm_kernels_stay_inside_their_buffers() {
    for dims in [
        vec![1usize],
        vec![7],
        vec![1030],
        vec![3, 5],
        vec![2, 3, 5],
        vec![3, 5, 3, 3],
        vec![2, 3, 9, 13],
        vec![2, 4, 2, 2],
        vec![2, 3, 1, 1],
        vec![1, 2, 16, 17],
    ] {
        let mut g = Graph::new();
        let a = input(&mut g, "a", &dims);
        let b = input(&mut g, "b", &dims);
        for op in [Op::Add, Op::Sub, Op::Mul, Op::Div, Op::ReluGrad, Op::Equal] {
            g.add_node(op, &[a, b], Role::Forward).unwrap();
        }
        for op in [Op::Relu, Op::Sqrt, Op::Scale { c: 2.0 }, Op::AddScalar { c: 1.0 }, Op::StopGradient] {
            g.add_node(op, &[a], Role::Forward).unwrap();
        }
        let rank = dims.len();
        for prefix in 0..=rank {
            for suffix in 0..=(rank - prefix) {
                let axes: Axes = (0..prefix).chain(rank - suffix..rank).collect();
                let r = g.add_node(Op::ReduceSum { axes: axes.clone() }, &[a], Role::Forward).unwrap();
                g.add_node(Op::Broadcast { axes, shape: Shape::new(&dims) }, &[r], Role::Forward).unwrap();
            }
        }
        let n: usize = dims.iter().product();
        let mut feeds = vec![("a", n), ("b", n)];
        if rank == 4 {
            // Max pooling reads a packed plane in whole vectors of 4 outputs: the stem's window,
            // and others whose rows end in partial vectors.
            for (k, s, p) in [(3, 2, 1), (2, 1, 0), (3, 1, 1), (2, 2, 1)] {
                if dims[2] + 2 * p < k || dims[3] + 2 * p < k {
                    continue;
                }
                let pool = skipgrad_ir::PoolAttrs { kernel: [k, k], stride: [s, s], pad: [p, p] };
                let y = g.add_node(Op::MaxPool(pool), &[a], Role::Forward).unwrap();
                g.add_node(Op::MaxPoolGrad(pool), &[a, y], Role::Backward).unwrap();
            }
            // The option-A shortcut and its gradient copy rows in vectors of 4 where they fit
            // (widths 16 and 17: whole rows; 13: a vector and a tail) and element by element.
            let shortcut = ShortcutAttrs { stride: 2, pad_before: 1, pad_after: 2 };
            let y = g.add_node(Op::ShortcutA(shortcut), &[a], Role::Forward).unwrap();
            let input_hw = [dims[2], dims[3]];
            g.add_node(Op::ShortcutAGrad { shortcut, input_hw }, &[y], Role::Backward).unwrap();
        }
        if rank >= 2 {
            let c = dims[1];
            let p: Vec<NodeId> = (0..4).map(|i| input(&mut g, ["p0", "p1", "p2", "p3"][i], &[c])).collect();
            feeds.extend(["p0", "p1", "p2", "p3"].map(|name| (name, c)));
            g.add_node(Op::BiasAdd, &[a, p[0]], Role::Forward).unwrap();
            let mean = g.add_node(Op::BatchMean, &[a], Role::Forward).unwrap();
            let var = g.add_node(Op::BatchVar, &[a], Role::Forward).unwrap();
            for training in [true, false] {
                let (m, v) = if training { (mean, var) } else { (p[0], p[1]) };
                g.add_node(Op::BatchNorm { eps: 1e-5, training }, &[a, m, v, p[2], p[3]], Role::Forward).unwrap();
                g.add_node(Op::BatchNormGradInput { eps: 1e-5, training }, &[a, m, v, p[2], b], Role::Forward).unwrap();
                g.add_node(Op::BatchNormGradGamma { eps: 1e-5 }, &[a, m, v, b], Role::Forward).unwrap();
            }
        }
        run_guarded(&g, &feeds);
    }
}

#[test]
fn matrix_products_stay_inside_their_buffers() {
    // (m, k, n): blocks of 16 columns and of 4, dot products in steps of 8, and their tails.
    for (m, k, n) in [(1, 1, 1), (3, 9, 21), (2, 17, 16), (5, 3, 37), (1, 8, 4)] {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut g = Graph::new();
            let a = input(&mut g, "a", &if ta { [k, m] } else { [m, k] });
            let b = input(&mut g, "b", &if tb { [n, k] } else { [k, n] });
            g.add_node(Op::MatMul { transpose_a: ta, transpose_b: tb }, &[a, b], Role::Forward).unwrap();
            run_guarded(&g, &[("a", m * k), ("b", k * n)]);
        }
    }
}

#[test]
fn convolution_kernels_stay_inside_their_buffers() {
    // (n, c, k, h, w, kernel, stride, pad): odd widths, partial register tiles, all kernel sizes.
    for (n, c, k, h, w, r, s, p) in [
        (1, 1, 1, 1, 1, 1, 1, 0),
        (2, 3, 5, 7, 9, 3, 1, 1),
        (1, 2, 4, 5, 13, 3, 2, 1),
        (2, 3, 6, 11, 11, 7, 2, 3),
        (1, 4, 8, 6, 5, 1, 2, 0),
        (1, 3, 4, 4, 4, 3, 1, 3),
        (1, 5, 12, 5, 7, 3, 1, 1),
        // The input gradient's weights rewritten for the direct kernel in blocks of 16 output
        // channels, with a partial last block (3x3 at odd sizes, and 1x1).
        (1, 20, 4, 5, 7, 3, 1, 1),
        (1, 36, 8, 6, 6, 1, 1, 0),
        // Winograd F(2x2, 3x3) (forward, input and weight gradients): partial vectors of tiles,
        // several images per block, padding 0.
        (2, 8, 8, 6, 10, 3, 1, 1),
        (3, 12, 16, 14, 14, 3, 1, 1),
        (2, 8, 4, 10, 18, 3, 1, 0),
        // F(4x4, 3x3): a partial vector of tiles, several images per block; blocks of tile rows
        // (the last two 8 tiles a row: input transforms in f32x8, and with 16 lanes, products in
        // f32x16 over blocks of 4 tile rows).
        (2, 8, 8, 12, 12, 3, 1, 1),
        (1, 8, 4, 16, 28, 3, 1, 1),
        (1, 8, 8, 34, 34, 3, 1, 0),
        // F(4x4, 3x3) with lanes across 4 images: 8x8, one tile wide with a crop (padding 0),
        // and (weight gradient) blocks of tile rows, 12 wide.
        (4, 8, 8, 8, 8, 3, 1, 1),
        (8, 8, 8, 18, 6, 3, 1, 0),
        (4, 8, 8, 48, 12, 3, 1, 1),
        // Batch 1: too few blocks of tile rows, so the output channels are split into parts.
        (1, 8, 16, 8, 8, 3, 1, 1),
        // Odd outputs: the weight gradient's F(2x2, 3x3) tiles half outside (dy read as zeros).
        (2, 8, 8, 7, 7, 3, 1, 1),
        (1, 8, 4, 5, 9, 3, 1, 1),
        // Stride 2 at even widths: the input gradient's width phases in pairs (a partial vector
        // at 10 wide; 1x1, whose odd phases have no taps).
        (2, 3, 4, 8, 10, 3, 2, 1),
        (1, 4, 8, 6, 6, 1, 2, 0),
        // 1x1 weight gradients as outer products: small images in sets (a partial panel of
        // input channels, a partial last block of output channels, more output channels than
        // input; 3 images of 49 pixels in one set); large ones in chunks of pixels (2209 in 8,
        // the last shorter); 20 input channels in a full panel and a partial one.
        (2, 8, 6, 3, 5, 1, 1, 0),
        (1, 7, 3, 5, 5, 1, 1, 0),
        (2, 2, 1024, 9, 9, 1, 1, 0),
        (3, 6, 10, 7, 7, 1, 1, 0),
        (1, 64, 64, 47, 47, 1, 1, 0),
        (2, 20, 7, 9, 9, 1, 1, 0),
        // At stride 2, x transposed from every other row and column: in sets (3 images of 25
        // pixels), or chunks of whole output rows (odd sizes, 8 chunks).
        (2, 3, 1024, 9, 7, 1, 2, 0),
        (3, 5, 6, 9, 9, 1, 2, 0),
        (1, 64, 64, 93, 93, 1, 2, 0),
        // Cropped Winograd tiles (forward and input gradient): F(4x4, 3x3) at 14x14 and 9x9,
        // and at 7x6 with lanes across 4 images.
        (2, 8, 8, 14, 14, 3, 1, 1),
        (1, 8, 12, 9, 9, 3, 1, 1),
        (4, 8, 12, 7, 6, 3, 1, 1),
        // Winograd weight gradients split by output channels (128 each way): F(2x2, 3x3) at
        // 6x6, F(4x4, 3x3) cropped at 14x14 and, across 4 images, at 7x5.
        (2, 128, 128, 6, 6, 3, 1, 1),
        (1, 128, 128, 14, 14, 3, 1, 1),
        (4, 128, 128, 7, 5, 3, 1, 1),
        // A last block of output channels smaller than the register tile's (16 = 6 + 6 + 4;
        // the input gradient's pairs of width phases, 16 = 5 x 3 + 1).
        (2, 3, 16, 7, 9, 3, 2, 1),
        (1, 16, 8, 8, 10, 3, 2, 1),
        // Pointwise rows past half of L2 (1089 pixels of 130 channels; the input gradient's, of
        // 130 dy channels): groups take blocks of tiles.
        (1, 130, 130, 33, 33, 1, 1, 0),
    ] {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[n, c, h, w]);
        let wt = input(&mut g, "w", &[k, c, r, r]);
        let a = Conv2dAttrs::square(s, p);
        g.add_node(Op::Conv2d(a), &[x, wt], Role::Forward).unwrap();
        let [oh, ow] = [(h + 2 * p - r) / s + 1, (w + 2 * p - r) / s + 1];
        let dy = input(&mut g, "dy", &[n, k, oh, ow]);
        g.add_node(Op::Conv2dGradInput { conv: a, input_hw: [h, w] }, &[dy, wt], Role::Backward).unwrap();
        g.add_node(Op::Conv2dGradWeight { conv: a, kernel_hw: [r, r] }, &[x, dy], Role::Backward).unwrap();
        run_guarded(&g, &[("x", n * c * h * w), ("w", k * c * r * r), ("dy", n * k * oh * ow)]);
    }
}

/// Convolutions with a fused epilogue (a per-element operand and per-channel ones) read their
/// operands at the output's positions only, and their table of per-channel values inside their
/// scratch: `relu(batch_norm(conv(x, w)) + r)` (inference, running statistics) at odd widths and
/// partial tiles, forward and stride-1 and stride-2 input gradients.
#[test]
fn fused_convolution_epilogues_stay_inside_their_buffers() {
    // Then F(4x4, 3x3) with lanes across 4 images, at batch 1 with the output channels split
    // into parts, and stride 2 at an even width (the input gradient's width phases in pairs).
    let cases = [
        (2, 3, 5, 7, 9, 3, 1, 1),
        (1, 2, 4, 5, 13, 3, 2, 1),
        (1, 4, 8, 6, 5, 1, 2, 0),
        (4, 8, 8, 8, 8, 3, 1, 1),
        (1, 16, 16, 16, 16, 3, 1, 1),
        (2, 3, 4, 8, 10, 3, 2, 1),
        // A pointwise convolution 7 wide, run as one row of its 49 pixels.
        (2, 3, 5, 7, 7, 1, 1, 0),
        // One whose row (1089 pixels of 130 channels) outgrows half of L2: blocks of tiles, the
        // last ending in a partial tile.
        (2, 130, 7, 33, 33, 1, 1, 0),
        // A last block of output channels smaller than the register tile's.
        (2, 3, 16, 7, 9, 3, 2, 1),
        (1, 16, 8, 8, 10, 3, 2, 1),
        // Cropped Winograd tiles: F(2x2, 3x3) at 7x7, F(4x4, 3x3) at 14x10, and at 7x5 with
        // lanes across 4 images.
        (2, 8, 8, 7, 7, 3, 1, 1),
        (1, 8, 8, 14, 10, 3, 1, 1),
        (4, 8, 8, 7, 5, 3, 1, 1),
        // F(4x4, 3x3) 32 wide, 8 tiles a row: input transforms in f32x8 and, with 16 lanes,
        // products in f32x16 over blocks of 4 tile rows.
        (1, 8, 8, 32, 32, 3, 1, 1),
    ];
    for (n, c, k, h, w, r, s, p) in cases {
        let [oh, ow] = [(h + 2 * p - r) / s + 1, (w + 2 * p - r) / s + 1];
        let a = Conv2dAttrs::square(s, p);
        for (conv, ins, out) in [
            (Op::Conv2d(a), [vec![n, c, h, w], vec![k, c, r, r]], vec![n, k, oh, ow]),
            (
                Op::Conv2dGradInput { conv: a, input_hw: [h, w] },
                [vec![n, k, oh, ow], vec![k, c, r, r]],
                vec![n, c, h, w],
            ),
        ] {
            let mut body = Graph::new();
            let channel = vec![out[1]];
            let shapes = [
                ins[0].clone(),
                ins[1].clone(),
                channel.clone(),
                channel.clone(),
                channel.clone(),
                channel,
                out.clone(),
            ];
            let p: Vec<NodeId> =
                shapes.iter().enumerate().map(|(i, d)| input(&mut body, &Fused::placeholder(i), d)).collect();
            let y = body.add_node(conv.clone(), &[p[0], p[1]], Role::Forward).unwrap();
            let bn = Op::BatchNorm { eps: 1e-5, training: false };
            let normed = body.add_node(bn, &[y, p[2], p[3], p[4], p[5]], Role::Forward).unwrap();
            let sum = body.add_node(Op::Add, &[normed, p[6]], Role::Forward).unwrap();
            body.add_node(Op::Relu, &[sum], Role::Forward).unwrap();
            let fused = Fused { rule: "conv_epilogue".into(), body: Arc::new(body), covers: vec![], outputs: vec![] };
            let mut g = Graph::new();
            let names = ["a", "b", "mean", "var", "gamma", "beta", "residual"];
            let outer: Vec<NodeId> = shapes.iter().zip(names).map(|(d, name)| input(&mut g, name, d)).collect();
            g.add_node(Op::Fused(fused), &outer, Role::Forward).unwrap();
            let lens: Vec<(&str, usize)> =
                shapes.iter().zip(names).map(|(d, name)| (name, d.iter().product())).collect();
            run_guarded(&g, &lens);
        }
    }
}

/// A convolution that also writes its batch statistics (partial sums per tile, then a reduction
/// into two `output` nodes) at odd widths and partial tiles.
#[test]
fn convolutions_with_batch_statistics_stay_inside_their_buffers() {
    // The last two: F(4x4, 3x3) with lanes across 4 images, and at batch 1 with the output
    // channels split into parts (each writing its own channels' statistics).
    let cases = [
        (2, 3, 5, 7, 9, 3, 1, 1),
        (1, 2, 4, 5, 13, 3, 2, 1),
        (3, 4, 8, 6, 5, 1, 2, 0),
        (8, 8, 8, 8, 8, 3, 1, 1),
        (1, 8, 16, 16, 16, 3, 1, 1),
        // A pointwise convolution 7 wide, run as one row of its 49 pixels.
        (2, 3, 5, 7, 7, 1, 1, 0),
        // One whose row (1089 pixels of 130 channels) outgrows half of L2: blocks of tiles, the
        // last ending in a partial tile.
        (2, 130, 7, 33, 33, 1, 1, 0),
        // A last block of output channels smaller than the register tile's.
        (2, 3, 16, 7, 9, 3, 2, 1),
        (1, 16, 8, 8, 10, 3, 2, 1),
        // Cropped Winograd tiles: F(2x2, 3x3) at 7x7, F(4x4, 3x3) at 14x10, and at 7x5 with
        // lanes across 4 images.
        (2, 8, 8, 7, 7, 3, 1, 1),
        (1, 8, 8, 14, 10, 3, 1, 1),
        (4, 8, 8, 7, 5, 3, 1, 1),
        // F(4x4, 3x3) 32 wide, 8 tiles a row: input transforms in f32x8 and, with 16 lanes,
        // products in f32x16 over blocks of 4 tile rows.
        (1, 8, 8, 32, 32, 3, 1, 1),
    ];
    for (n, c, k, h, w, r, s, p) in cases {
        let [oh, ow] = [(h + 2 * p - r) / s + 1, (w + 2 * p - r) / s + 1];
        let mut body = Graph::new();
        let x = input(&mut body, &Fused::placeholder(0), &[n, c, h, w]);
        let wt = input(&mut body, &Fused::placeholder(1), &[k, c, r, r]);
        let y = body.add_node(Op::Conv2d(Conv2dAttrs::square(s, p)), &[x, wt], Role::Forward).unwrap();
        body.add_node(Op::BatchMean, &[y], Role::Forward).unwrap();
        body.add_node(Op::BatchVar, &[y], Role::Forward).unwrap();
        let fused = Fused { rule: "conv_stats".into(), body: Arc::new(body), covers: vec![], outputs: vec![2, 3, 4] };
        let mut g = Graph::new();
        let (xs, ws) = (input(&mut g, "x", &[n, c, h, w]), input(&mut g, "w", &[k, c, r, r]));
        let f = g.add_node(Op::Fused(fused), &[xs, ws], Role::Forward).unwrap();
        for index in [1, 2] {
            g.add_node(Op::Output { index }, &[f], Role::Forward).unwrap();
        }
        assert_eq!(g.nodes()[f.index()].ty, TensorType::new(DType::F32, [n, k, oh, ow]));
        run_guarded(&g, &[("x", n * c * h * w), ("w", k * c * r * r)]);
    }
}

/// Batch-norm backward as one kernel with three outputs, at sizes that are not multiples of the
/// vector width.
#[test]
fn fused_batch_norm_backward_stays_inside_its_buffers() {
    for dims in [vec![2usize, 3, 5, 3], vec![1, 5, 1, 1], vec![3, 4, 7, 2]] {
        let c = dims[1];
        let mut body = Graph::new();
        let shapes = [dims.clone(), vec![c], vec![c], vec![c], dims.clone()];
        let p: Vec<NodeId> =
            shapes.iter().enumerate().map(|(i, d)| input(&mut body, &Fused::placeholder(i), d)).collect();
        let eps = 1e-5;
        body.add_node(Op::BatchNormGradInput { eps, training: true }, &p, Role::Backward).unwrap();
        body.add_node(Op::BatchNormGradGamma { eps }, &[p[0], p[1], p[2], p[4]], Role::Backward).unwrap();
        let axes: Axes = [0, 2, 3].into_iter().collect();
        body.add_node(Op::ReduceSum { axes }, &[p[4]], Role::Backward).unwrap();
        let fused = Fused { rule: "bn_backward".into(), body: Arc::new(body), covers: vec![], outputs: vec![5, 6, 7] };
        let mut g = Graph::new();
        let names = ["x", "mean", "var", "gamma", "dy"];
        let outer: Vec<NodeId> = shapes.iter().zip(names).map(|(d, name)| input(&mut g, name, d)).collect();
        let f = g.add_node(Op::Fused(fused), &outer, Role::Backward).unwrap();
        for index in [1, 2] {
            g.add_node(Op::Output { index }, &[f], Role::Backward).unwrap();
        }
        let lens: Vec<(&str, usize)> = shapes.iter().zip(names).map(|(d, name)| (name, d.iter().product())).collect();
        run_guarded(&g, &lens);
    }
}

/// An elementwise group with two outputs (an SGD step: new velocity and new parameter) at sizes
/// that are not multiples of the vector width.
#[test]
fn elementwise_kernels_with_two_outputs_stay_inside_their_buffers() {
    for dims in [vec![1usize], vec![7], vec![1030], vec![3, 5, 3, 3]] {
        let mut body = Graph::new();
        let p: Vec<NodeId> = (0..3).map(|i| input(&mut body, &Fused::placeholder(i), &dims)).collect();
        let decayed = body.add_node(Op::Scale { c: 1e-4 }, &[p[0]], Role::Update).unwrap();
        let grad = body.add_node(Op::Add, &[p[1], decayed], Role::Update).unwrap();
        let kept = body.add_node(Op::Scale { c: 0.9 }, &[p[2]], Role::Update).unwrap();
        let velocity = body.add_node(Op::Add, &[kept, grad], Role::Update).unwrap();
        let step = body.add_node(Op::Scale { c: 0.1 }, &[velocity], Role::Update).unwrap();
        let param = body.add_node(Op::Sub, &[p[0], step], Role::Update).unwrap();
        let outputs = vec![param.index(), velocity.index()];
        let fused = Fused { rule: "elementwise".into(), body: Arc::new(body), covers: vec![], outputs };
        let mut g = Graph::new();
        let outer: Vec<NodeId> = ["p", "g", "v"].iter().map(|name| input(&mut g, name, &dims)).collect();
        let f = g.add_node(Op::Fused(fused), &outer, Role::Update).unwrap();
        g.add_node(Op::Output { index: 1 }, &[f], Role::Update).unwrap();
        let n: usize = dims.iter().product();
        run_guarded(&g, &[("p", n), ("g", n), ("v", n)]);
    }
}

/// A body of independent parts of different sizes (the `foreach` merge of every update) runs as
/// one kernel with one nest per part; parts share an input, one part has two outputs, and one
/// output has no `output` node (it goes to scratch).
#[test]
fn foreach_kernels_stay_inside_their_buffers() {
    let sizes = [1usize, 7, 1030, 45];
    let mut body = Graph::new();
    let shared = input(&mut body, &Fused::placeholder(0), &[7]);
    let mut outputs = vec![];
    let mut outer_names = vec![("s".to_string(), 7)];
    let placeholders: Vec<NodeId> =
        sizes.iter().enumerate().map(|(i, &n)| input(&mut body, &Fused::placeholder(i + 1), &[n])).collect();
    for (i, (&n, &p)) in sizes.iter().zip(&placeholders).enumerate() {
        outer_names.push((format!("p{i}"), n));
        let halved = body.add_node(Op::Scale { c: 0.5 }, &[p], Role::Update).unwrap();
        let other = if n == 7 { shared } else { p };
        let sum = body.add_node(Op::Add, &[halved, other], Role::Update).unwrap();
        outputs.push(sum.index());
        if i == 2 {
            outputs.push(halved.index());
        }
    }
    let covers = vec![];
    let fused = Fused { rule: "foreach".into(), body: Arc::new(body), covers, outputs: outputs.clone() };
    let mut g = Graph::new();
    let outer: Vec<NodeId> = outer_names.iter().map(|(name, n)| input(&mut g, name, &[*n])).collect();
    let f = g.add_node(Op::Fused(fused), &outer, Role::Update).unwrap();
    // Every output but the last gets an `output` node.
    for index in 1..outputs.len() - 1 {
        g.add_node(Op::Output { index }, &[f], Role::Update).unwrap();
    }
    let feeds: Vec<(&str, usize)> = outer_names.iter().map(|(name, n)| (name.as_str(), *n)).collect();
    run_guarded(&g, &feeds);
    let c = compile(&g, &[f], &CompileOptions::default()).unwrap();
    assert_eq!(c.steps(), 1, "one kernel for every part");
}
