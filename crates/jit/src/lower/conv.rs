//! Lowering rules for convolutions: each becomes one kernel (which packs its input image by image
//! into per-thread scratch): a direct convolution, the sub-pixel phases of strided backward-data,
//! or a weight gradient.

use super::{Buf, Choices, Lowered, Planned};
use crate::conv::pack::PackSpec;
use crate::conv::pointwise_grad::PointwiseWeightGradSpec;
use crate::conv::relayout::WeightRelayoutSpec;
use crate::conv::sub_pixel::SubPixelSpec;
use crate::conv::weight_grad::WeightGradSpec;
use crate::conv::winograd::{Winograd, WinogradTiles, WinogradWeightsSpec};
use crate::conv::winograd_grad::WinogradGradSpec;
use crate::conv::{ChannelBlocks, ConvShape, ConvSpec, Interleave, WeightLayout, block_tiles, register_tile};
use crate::spec::KernelSpec;
use skipgrad_ir::NodeId;

/// Where a convolution's taps read, as its kernels see it: output pixel `o` and tap `r` read input
/// pixel `(o * stride + r - pad) / dilation` when that divides (a dilated input has holes:
/// backward-data reads dy dilated by the forward stride).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Batch, input channels, output channels.
    pub nck: [usize; 3],
    /// The input's height and width (before dilation and padding).
    pub in_hw: [usize; 2],
    /// The kernel's height and width.
    pub kernel: [usize; 2],
    /// Between output pixels.
    pub stride: [usize; 2],
    /// Between input pixels.
    pub dilation: [usize; 2],
    /// Before the first input pixel (negative: input pixels are skipped).
    pub pad: [isize; 2],
    /// The output's height and width.
    pub out_hw: [usize; 2],
}

/// The packing of each image of a convolution's input for a direct kernel.
fn conv_pack(g: &Geometry) -> PackSpec {
    let ([kernel_h, kernel_w], stride, out_hw) = (g.kernel, g.stride, g.out_hw);
    let rows = (out_hw[0] - 1) * stride[0] + kernel_h;
    let padded_w = (out_hw[1] - 1) * stride[1] + kernel_w;
    let row_len = padded_w.div_ceil(stride[1]).max(ConvSpec::min_row_len(out_hw[1], kernel_w, stride[1]));
    let (planes, in_hw, dilation, pad_before) = (g.nck[1], g.in_hw, g.dilation, g.pad);
    PackSpec { planes, in_hw, dilation, pad_before, rows, phases: stride[1], row_len, images: 1, step: 1 }
}

/// A pointwise convolution (1x1, stride 1, unpadded) as one row of all its pixels: its planes
/// are contiguous, so the packed image holds the same data, and the tiles run across row ends,
/// so that only an image's last tile is partial (ResNet-50's 56-pixel rows were 3.5 tiles of 16
/// pixels at 8 lanes). Its groups take a few tiles each ([`block_tiles`]), so the input stays in
/// cache while the blocks of output channels take turns.
fn pointwise_as_one_row(g: Geometry) -> Geometry {
    let pointwise = g.kernel == [1, 1] && g.stride == [1, 1] && g.dilation == [1, 1] && g.pad == [0, 0];
    if !pointwise {
        return g;
    }
    let pixels = g.out_hw[0] * g.out_hw[1];
    Geometry { in_hw: [1, pixels], out_hw: [1, pixels], ..g }
}

/// A strided pointwise convolution (1x1, stride s > 1 both ways, unpadded) as a stride-1 one over
/// one row of its output's pixels, whose packing keeps every s-th row and column of the input,
/// rows end to end ([`PackSpec::step`]): its tiles then run across the output's row ends
/// (ResNet-50's 14 and 7 pixels wide), as [`pointwise_as_one_row`]'s do, and it packs a quarter
/// of the input at stride 2.
fn strided_pointwise(g: Geometry) -> Option<(Geometry, PackSpec)> {
    let s = g.stride[0];
    let strided = g.kernel == [1, 1] && s > 1 && g.stride == [s, s] && g.dilation == [1, 1] && g.pad == [0, 0];
    if !strided {
        return None;
    }
    let pixels = g.out_hw[0] * g.out_hw[1];
    let pack = PackSpec {
        planes: g.nck[1],
        in_hw: g.in_hw,
        dilation: [1, 1],
        pad_before: [0, 0],
        rows: 1,
        phases: 1,
        row_len: ConvSpec::min_row_len(pixels, 1, 1),
        images: 1,
        step: s,
    };
    Some((Geometry { in_hw: [1, pixels], stride: [1, 1], out_hw: [1, pixels], ..g }, pack))
}

/// A convolution of `x` with weights `w` (read through `weights`): direct, or by the Winograd
/// tiling `winograd` chooses when it applies (3x3, stride 1, 8 or more input channels; tiles
/// past an output size that is not a multiple of theirs are cropped), after a step that
/// transforms the weights into a kept scratch area.
/// The convolution step (the last) reads `x`, `w` (or the transformed weights), then the
/// per-thread scratch: epilogue operands and statistics go before the scratch.
pub(super) fn conv(id: NodeId, [x, w]: [NodeId; 2], g: Geometry, weights: WeightLayout, choices: Choices) -> Lowered {
    let strided = strided_pointwise(g);
    let g = strided.as_ref().map_or_else(|| pointwise_as_one_row(g), |(g, _)| *g);
    let Geometry { nck: [n, c, k], in_hw, kernel, stride, dilation, pad, out_hw } = g;
    // Few output channels leave F(4x4, 3x3)'s larger input transform most of the work: the
    // stem's input gradient (16 -> 3 channels) ran 15% slower by F(4x4) than by F(2x2).
    let winograd = if k < 8 { choices.winograd.min(WinogradTiles::F2) } else { choices.winograd };
    let tiling = Winograd::for_convolution(out_hw, winograd, n).filter(|_| {
        // Few input channels leave the transforms most of the work (the 3-channel stem).
        kernel == [3, 3] && stride == [1, 1] && dilation == [1, 1] && c >= 8
    });
    // With 16 lanes, blocks of at least 32 tiles where an image has them (CIFAR's 32x32 stage), so
    // that the products accumulate two f32x16 vectors per output channel: its 16-channel
    // forward and input-gradient kernels ran 16-20% faster in ResNet-20's step than in f32x8
    // over blocks of 16 with the machine slow, level with it fast (3 profiled runs each, Intel
    // Xeon). A cropped tiling's block stays its whole image.
    let exact = |t: &Winograd| t.tiled_hw(out_hw) == out_hw;
    let tiling = tiling.map(|t| if choices.lanes >= 16 && exact(&t) { t.with_block_slots(out_hw, 32) } else { t });
    let (pack, kb, vb, lanes, label) = match tiling {
        // Products: kb output channels by vb vectors of 4 slots, vb dividing the group's vectors
        // (with 8 lanes, pairs of them: an even number of vectors; with 16, groups of 4 where
        // the block has two or more: one f32x16 per output channel is too few accumulators).
        Some(tiling) => {
            let vectors = tiling.slots() / 4;
            let group = if choices.lanes >= 16 && vectors.is_multiple_of(8) {
                4
            } else if choices.lanes >= 8 && vectors.is_multiple_of(2) {
                2
            } else {
                1
            };
            let (kb, n) = register_tile(k, vectors / group, None, 1, ChannelBlocks::Dividing);
            let n = (1..=n).rev().find(|v| (vectors / group).is_multiple_of(*v)).unwrap_or(1);
            let tiled_hw = tiling.tiled_hw(out_hw);
            (tiling.pack(c, in_hw, pad, tiled_hw), kb, n * group, 4 * group, format!("conv2d_{}", tiling.label()))
        }
        // Register tile: kb output channels by vb vectors of 4 pixels, accumulated by `lanes /
        // 4` (vectors of 8 or 16 pixels). 16 lanes only where a row holds two such vectors: a
        // tile of one vector has too few accumulators to hide the multiply-add's latency (CIFAR's
        // 16-pixel stride-2 rows ran at 0.8x their 8-lane speed).
        None => {
            let lanes = if out_hw[1] >= 32 { choices.lanes } else { choices.lanes_up_to_8() };
            let (kb, n) = register_tile(k, out_hw[1].div_ceil(lanes), None, 1, ChannelBlocks::LastPartial);
            let vb = n * lanes / 4;
            let pack = strided.as_ref().map_or_else(|| conv_pack(&g), |(_, pack)| pack.clone());
            (pack, kb, vb, lanes, "conv2d".into())
        }
    };
    // Fewer than 4 blocks of tile rows in the batch (batch 1): split the output channels into up
    // to 4 parts of whole register tiles, a group each, so that the threads share the work.
    let tiling = tiling.map(|t| {
        let blocks = n / t.images * (t.tiled_hw(out_hw)[0] / t.m / t.tile_rows);
        let divides = |p: &usize| (k / kb).is_multiple_of(*p);
        let parts = (1..=4).filter(divides).find(|p| blocks * p >= 4).or((1..=4).rev().find(divides));
        Winograd { channel_parts: parts.unwrap_or(1), ..t }
    });
    // A direct kernel reads its weights in PyTorch's layout: another (the input gradient's
    // transposed, flipped view) is rewritten first into a kept copy.
    let relayout = (tiling.is_none() && weights != WeightLayout::kcrs(c, kernel[0], kernel[1]))
        .then_some(WeightRelayoutSpec { from: weights, out_channels: k, in_channels: c, kernel });
    let shape = ConvShape { batch: n, in_channels: c, out_channels: k, kernel, stride, out_hw };
    let spec = ConvSpec {
        block_tiles: block_tiles(&shape, vb),
        shape,
        pack,
        origin: [0, 0],
        weights: relayout.as_ref().map_or(weights, WeightRelayoutSpec::to),
        kb,
        vb,
        lanes,
        epilogue: None,
        interleave: None,
        stats: false,
        winograd: tiling,
    };
    let pack_len = spec.scratch_len();
    let conv = |weights: Buf, pack: usize| Planned {
        label,
        spec: KernelSpec::Conv(Box::new(spec)),
        inputs: vec![Buf::Node(x), weights, Buf::PerThread(pack)],
        output: Buf::Node(id),
    };
    if let Some(relayout) = relayout {
        let len = relayout.len();
        let weights_step = kept_weights("conv2d_weights", KernelSpec::WeightRelayout(relayout), w);
        return Lowered::Steps { scratch: vec![len, pack_len], steps: vec![weights_step, conv(Buf::Kept(0), 1)] };
    }
    let Some(tiling) = tiling else {
        return Lowered::Steps { scratch: vec![pack_len], steps: vec![conv(Buf::Node(w), 0)] };
    };
    let transform = WinogradWeightsSpec { in_channels: c, out_channels: k, weights, m: tiling.m };
    let scratch = vec![transform.len(), pack_len];
    let label = if tiling.m == 2 { "winograd_weights" } else { "winograd4_weights" };
    let weights_step = kept_weights(label, KernelSpec::WinogradWeights(transform), w);
    Lowered::Steps { scratch, steps: vec![weights_step, conv(Buf::Kept(0), 1)] }
}

/// The step computing a convolution's weights as its kernel reads them (Winograd-transformed or
/// rewritten) from the weights `w`, into kept scratch area 0.
fn kept_weights(label: &str, spec: KernelSpec, w: NodeId) -> Planned {
    Planned { label: label.into(), spec, inputs: vec![Buf::Node(w)], output: Buf::Kept(0) }
}

/// The input gradient of a strided convolution as one small stride-1 convolution per output
/// phase (sub-pixel decomposition), all in one [`SubPixelSpec`] kernel: output rows `h = S i + p`
/// receive only the taps `r = r0 + S t` with `r0 = (p + P) mod S`, from dy rows `i + a - t`,
/// `a = (p + P - r0) / S`. Each phase convolves the (undilated) dy, packed alike for every phase,
/// with its sub-kernel, read through weight strides, and stores its outputs interleaved into dx
/// (at stride 2, paired with its row's other width phase, in whole vectors); a phase that
/// receives no tap stores zeros, so every element of dx is written.
pub(super) fn sub_pixel_grad_input(
    id: NodeId,
    [dy_id, w_id]: [NodeId; 2],
    [dy, w]: [&[usize]; 2],
    stride: usize,
    pad: [usize; 2],
    input_hw: [usize; 2],
    lanes: usize,
) -> Lowered {
    let (n, k, c) = (dy[0], dy[1], w[1]);
    let kernel = [w[2], w[3]];
    // Per axis and phase: (first tap r0, taps T, dy offset a, outputs in this phase).
    let phase = |axis: usize, p: usize| {
        let r0 = (p + pad[axis]) % stride;
        let taps = if r0 < kernel[axis] { (kernel[axis] - r0).div_ceil(stride) } else { 0 };
        let a = (p + pad[axis] - r0) / stride;
        let outputs = input_hw[axis].saturating_sub(p).div_ceil(stride);
        (r0, taps, a, outputs)
    };
    // Every output phase (h mod S, w mod S) with outputs, and its per-axis parameters.
    type Axis = (usize, usize, usize, usize);
    let all: Vec<([usize; 2], [Axis; 2])> = (0..stride)
        .flat_map(|ph| (0..stride).map(move |pw| ([ph, pw], [phase(0, ph), phase(1, pw)])))
        .filter(|(_, [h, w])| h.3 > 0 && w.3 > 0)
        .collect();
    let has_taps = |p: &[Axis; 2]| p[0].1 > 0 && p[1].1 > 0;
    let phases: Vec<[Axis; 2]> = all.iter().map(|p| p.1).filter(has_taps).collect();
    // At stride 2, when each row phase's two width phases have as many outputs, they run as a
    // pair whose outputs interleave into whole vectors of dx. The pair shares one register tile,
    // with a set of accumulators for each of its phases that has taps (a phase without any adds
    // only zeros).
    let paired = stride == 2 && all.len() == 4 && all.chunks(2).all(|p| p[0].1[1].3 == p[1].1[1].3);
    let tiles: Vec<(usize, usize)> = (0..all.len())
        .map(|i| {
            let sets = if paired { [i, i ^ 1].iter().filter(|&&j| has_taps(&all[j].1)).count() } else { 1 };
            let (kb, n) =
                register_tile(c, all[i].1[1].3.div_ceil(lanes), None, sets.max(1), ChannelBlocks::LastPartial);
            (kb, n * lanes / 4)
        })
        .collect();
    // One packed dy serves every phase: pad so that each phase's first window starts inside it.
    let before = |axis: usize| phases.iter().map(|p| (p[axis].1 - 1).saturating_sub(p[axis].2)).max().unwrap_or(0);
    let pad_before = [before(0), before(1)];
    let origin = |p: &[Axis; 2], axis: usize| p[axis].2 + pad_before[axis] + 1 - p[axis].1;
    let rows = phases.iter().map(|p| origin(p, 0) + p[0].3 + p[0].1 - 1).max().unwrap_or(1);
    let row_len = (0..all.len())
        .filter(|&i| has_taps(&all[i].1))
        .map(|i| {
            let p = &all[i].1;
            origin(p, 1) + ConvSpec::min_row_len(p[1].3, p[1].1, 1)
        })
        .max()
        .unwrap_or(1);
    let pack = PackSpec {
        planes: k,
        in_hw: [dy[2], dy[3]],
        dilation: [1, 1],
        pad_before: [pad_before[0] as isize, pad_before[1] as isize],
        rows,
        phases: 1,
        row_len,
        images: 1,
        step: 1,
    };
    let (kh, kw) = (kernel[0], kernel[1]);
    let specs: Vec<ConvSpec> = all
        .iter()
        .zip(&tiles)
        .map(|((at, p), &(kb, vb))| {
            let [(r0h, th, _, oh), (r0w, tw, _, ow)] = *p;
            let interleave = Some(Interleave { stride, offset: *at, full_hw: input_hw });
            // Output channels are c, input channels k.
            let shape = |kernel| ConvShape {
                batch: n,
                in_channels: k,
                out_channels: c,
                kernel,
                stride: [1, 1],
                out_hw: [oh, ow],
            };
            let (shape, origin, weights) = if has_taps(p) {
                // The sub-kernel tap (t'h, t'w) is w[k][c][r0h + S (Th-1-t'h)][r0w + S (Tw-1-t'w)],
                // which the rewritten weights hold at wt[c][k][kh-1-r0h-S (Th-1) + S t'h][...].
                let weights = WeightLayout {
                    base: ((kh - 1 - r0h - stride * (th - 1)) * kw + kw - 1 - r0w - stride * (tw - 1)) as isize,
                    o: (k * kh * kw) as isize,
                    i: (kh * kw) as isize,
                    r: (stride * kw) as isize,
                    s: stride as isize,
                };
                (shape([th, tw]), [origin(p, 0), origin(p, 1)], weights)
            } else {
                (shape([0, 0]), [0, 0], WeightLayout::kcrs(c, kh, kw))
            };
            ConvSpec {
                block_tiles: block_tiles(&shape, vb),
                shape,
                pack: pack.clone(),
                origin,
                weights,
                kb,
                vb,
                lanes,
                epilogue: None,
                interleave,
                stats: false,
                winograd: None,
            }
        })
        .collect();
    // The phases read the weights rewritten as the transposed convolution's, flipped, in
    // PyTorch's layout (one reduction channel after another).
    let relayout = WeightRelayoutSpec {
        from: WeightLayout::transposed_flipped(c, kh, kw),
        out_channels: c,
        in_channels: k,
        kernel: [kh, kw],
    };
    let len = relayout.len();
    let weights_step = kept_weights("conv2d_weights", KernelSpec::WeightRelayout(relayout), w_id);
    // Each thread's scratch: the packed dy, and what the first phase's arguments take after it.
    let thread_len = specs[0].scratch_len();
    let step = Planned {
        label: "conv2d_grad_input_sub_pixel".into(),
        spec: KernelSpec::SubPixel(SubPixelSpec { phases: specs, paired }),
        inputs: vec![Buf::Node(dy_id), Buf::Kept(0), Buf::PerThread(1)],
        output: Buf::Node(id),
    };
    Lowered::Steps { scratch: vec![len, thread_len], steps: vec![weights_step, step] }
}

/// The weight gradient by Winograd F(m x m, 3x3) (the tile `winograd` chooses for the output):
/// one [`WinogradGradSpec`] kernel, with its partials and counter scratch and a per-thread
/// scratch for each image's packed x and the transforms of a block.
fn winograd_weight_grad(
    label: String,
    [id, x_id, dy_id]: [NodeId; 3],
    x: &[usize],
    out_hw: [usize; 2],
    k: usize,
    pad: [isize; 2],
    choices: Choices,
) -> Lowered {
    let spec = WinogradGradSpec::new(x[0], [x[1], k], [x[2], x[3]], out_hw, pad, choices.winograd);
    let spec = WinogradGradSpec { lanes: choices.lanes_up_to_8(), ..spec };
    let tiling = spec.tiling;
    let scratch = vec![spec.partials_len(), 2, spec.thread_scratch_len()];
    let steps = vec![Planned {
        label: format!("{label}_{}", tiling.label()),
        spec: KernelSpec::WinogradGrad(spec),
        inputs: vec![Buf::Node(x_id), Buf::Node(dy_id), Buf::Scratch(0), Buf::Scratch(1), Buf::PerThread(2)],
        output: Buf::Node(id),
    }];
    Lowered::Steps { scratch, steps }
}

/// The weight gradient as channel tiles: one [`WeightGradSpec`] kernel, with its accumulator
/// scratch and a per-thread scratch for each image's packed x and channels-last dy; a pointwise
/// convolution's (1x1, unpadded) as outer products over chunks of x transposed to channels-last
/// by panels of input channels, broadcasting dy as it is stored ([`PointwiseWeightGradSpec`],
/// with its accumulator scratch and a per-thread scratch for a transposed chunk).
/// `[id, x_id, dy_id]` are the gradient's node and its operands' (x and dy, of dims `[x, dy]`).
pub(super) fn weight_grad(
    label: String,
    [id, x_id, dy_id]: [NodeId; 3],
    [x, dy]: [&[usize]; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [isize; 2],
    choices: Choices,
) -> Lowered {
    let (n, c, k) = (x[0], x[1], dy[1]);
    let winograd = choices.winograd;
    let out_hw = [dy[2], dy[3]];
    if winograd != WinogradTiles::Off && WinogradGradSpec::applies(kernel, stride, out_hw, [c, k], winograd, n) {
        return winograd_weight_grad(label, [id, x_id, dy_id], x, out_hw, k, pad, choices);
    }
    if kernel == [1, 1] && stride[0] == stride[1] && pad == [0, 0] {
        let spec = PointwiseWeightGradSpec::new(n, c, k, [x[2], x[3]], stride[0], choices.lanes_up_to_8());
        let steps = vec![Planned {
            label,
            spec: KernelSpec::PointwiseWeightGrad(spec.clone()),
            inputs: vec![Buf::Node(x_id), Buf::Node(dy_id), Buf::Scratch(0), Buf::PerThread(1)],
            output: Buf::Node(id),
        }];
        return Lowered::Steps { scratch: vec![spec.scratch_len(), spec.thread_scratch_len()], steps };
    }
    // f32x4 vectors of output channels per tile: with 8 lanes, two f32x8 above 8 channels.
    let kv: usize = if choices.lanes >= 8 && k > 8 {
        4
    } else if k > 4 {
        2
    } else {
        1
    };
    let lanes = if kv.is_multiple_of(2) { choices.lanes_up_to_8() } else { 4 };
    let dy_row = k.div_ceil(4 * kv) * 4 * kv;
    let inputs = kv * 4 / lanes; // vectors of dy loaded per pixel
    let (cb, _) = register_tile(c, inputs, Some(inputs), 1, ChannelBlocks::Dividing);
    let pack = PackSpec {
        planes: c,
        in_hw: [x[2], x[3]],
        dilation: [1, 1],
        pad_before: pad,
        rows: (out_hw[0] - 1) * stride[0] + kernel[0],
        phases: 1,
        row_len: (out_hw[1] - 1) * stride[1] + kernel[1],
        images: 1,
        step: 1,
    };
    let spec = WeightGradSpec {
        batch: n,
        in_channels: c,
        out_channels: k,
        dy_row,
        pack,
        kernel,
        stride,
        out_hw,
        cb,
        kv,
        lanes,
    };
    let scratch = vec![spec.scratch_len(), spec.thread_scratch_len()];
    let steps = vec![Planned {
        label,
        spec: KernelSpec::WeightGrad(spec),
        inputs: vec![Buf::Node(x_id), Buf::Node(dy_id), Buf::Scratch(0), Buf::PerThread(1)],
        output: Buf::Node(id),
    }];
    Lowered::Steps { scratch, steps }
}
