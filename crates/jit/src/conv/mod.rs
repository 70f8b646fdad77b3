//! Convolution kernels on NCHW tensors: the direct kernel and the framework every convolution
//! kernel shares (this file), and in this folder the image packing (`pack`), Winograd forward and
//! backward-data (`winograd`) and weight gradients (`winograd_grad`), the direct weight gradient
//! (`weight_grad`) and the pointwise one's as outer products over transposed x (`pointwise_grad`), stride-2 backward-data by phases (`sub_pixel`), the channels-last transposes
//! (`transpose`), the weights rewritten into PyTorch's layout for a direct kernel (`relayout`)
//! and the batch statistics' serial tail (`stats`). Emission helpers any kernel uses
//! (loops, multiply-add, lane shuffles) are in `codegen`.
//!
//! A convolution kernel reads its NCHW input directly: whenever its groups reach a new image, it
//! first *packs* that image ([`PackSpec`](crate::PackSpec)) into the thread's share of a
//! per-thread scratch, a zero-padded layout `[C][rows][phases][row_len]` where column `u` of the
//! padded input lands in phase `u % S` at position `u / S` (`S` the stride along the width). The
//! input row a tap reads for consecutive output pixels is then contiguous even at stride 2, so the
//! main loop uses plain f32x4 loads. Padding is zero from allocation and never written, so packing
//! only scatters, and one image's packed copy stays in cache while every tile reads it.
//!
//! [`ConvSpec`] computes a register tile of `kb` output channels by `vb` vectors of output
//! pixels (and a tile of the channels left over, when `kb` does not divide them: 64 channels run
//! as 10 tiles of 6 and one of 4, 12 accumulators where 4 by 2 would hold 8). Per tap it loads `vb` input vectors and broadcasts `kb` weights (read through
//! [`WeightLayout`] strides, so the backward-data pass reads the forward weights flipped and
//! transposed without copying). [`WeightGradSpec`](crate::WeightGradSpec) is the same tile with the
//! roles swapped: vectors of output channels times broadcast input pixels, reduced over pixels.

pub(crate) mod factored;
pub(crate) mod pack;
pub(crate) mod pointwise_grad;
pub(crate) mod relayout;
pub(crate) mod stats;
pub(crate) mod sub_pixel;
pub(crate) mod transpose;
pub(crate) mod weight_grad;
pub(crate) mod winograd;
pub(crate) mod winograd_grad;

use crate::MulAdd;
use crate::codegen::{
    elem_addr, entry_with_thread, f32_vector, for_loop, iconst, if_then, load_arg, mul, mul_add_emit, thread_share,
};
use crate::expr::{Env, Expr, Width};
use crate::nest::Operand;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use pack::PackSpec;
use stats::StatsSpec;
use std::collections::HashMap;
use transpose::interleave;
use winograd::Winograd;

/// Where the weight of output channel `o`, input channel `i` and tap `(r, s)` is: at element
/// `base + o * o_stride + i * i_stride + r * r_stride + s * s_stride`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct WeightLayout {
    /// Offset of (0, 0, 0, 0).
    pub base: isize,
    /// Step per output channel.
    pub o: isize,
    /// Step per input channel.
    pub i: isize,
    /// Step per kernel row.
    pub r: isize,
    /// Step per kernel column.
    pub s: isize,
}

impl WeightLayout {
    /// PyTorch's `[K][C][R][S]`.
    pub fn kcrs(c: usize, r: usize, s: usize) -> Self {
        WeightLayout { base: 0, o: (c * r * s) as isize, i: (r * s) as isize, r: s as isize, s: 1 }
    }
    /// The same tensor read as the transposed convolution's weight: output channel = C, input
    /// channel = K, taps flipped.
    pub fn transposed_flipped(c: usize, r: usize, s: usize) -> Self {
        let (r, s) = (r as isize, s as isize);
        WeightLayout { base: (r - 1) * s + (s - 1), o: r * s, i: c as isize * r * s, r: -s, s: -1 }
    }
    fn at(&self, o: usize, i: usize, r: usize, s: usize) -> isize {
        self.base + o as isize * self.o + i as isize * self.i + r as isize * self.r + s as isize * self.s
    }
}

/// The geometry of a convolution: what the forward and backward-data kernels share.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConvShape {
    /// Batch size.
    pub batch: usize,
    /// Input channels (summed over by the forward pass).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride (rows, and phases along the width).
    pub stride: [usize; 2],
    /// Output height and width.
    pub out_hw: [usize; 2],
}

impl ConvShape {
    /// Floating-point operations of one pass (2 per multiply-add).
    pub fn flops(&self) -> f64 {
        let [oh, ow] = self.out_hw;
        2.0 * (self.batch * self.out_channels * oh * ow * self.in_channels * self.kernel[0] * self.kernel[1]) as f64
    }
}

/// A direct convolution from an NCHW input to an NCHW output.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConvSpec {
    /// Sizes, kernel, stride.
    pub shape: ConvShape,
    /// How each image of the input is packed (its planes are the input channels).
    pub pack: PackSpec,
    /// Offset (rows, packed columns) of output (0, 0)'s window in the packed input.
    pub origin: [usize; 2],
    /// Where the weights are.
    pub weights: WeightLayout,
    /// Output channels per register tile; the last block of output channels may hold fewer
    /// (a direct kernel emits a tile of the rest), Winograd's divide the channels.
    pub kb: usize,
    /// f32x4 vectors of output pixels per register tile.
    pub vb: usize,
    /// Tiles of an output row per group of a direct kernel (the row's last group may hold
    /// fewer): a group computes every block of output channels over its tiles in turn, while
    /// their input stays in cache.
    pub block_tiles: usize,
    /// f32 lanes of the accumulators: 4, 8 (each pair of the tile's vectors accumulates in a
    /// 256-bit register), or 16 (each four of them in a 512-bit register: a direct kernel, or
    /// Winograd's products over blocks of 32 tiles or more). A
    /// wide sum is stored whole where no epilogue applies to it (Winograd's products always) and
    /// split into its f32x4 parts otherwise (`f32x4_parts`).
    pub lanes: usize,
    /// Applied to each output vector while it is in registers, before the store.
    pub epilogue: Option<Epilogue>,
    /// With `Some`, the outputs are one sub-pixel phase of a larger output, stored interleaved
    /// (lane by lane) into it; the epilogue reads its operands at the same elements.
    pub interleave: Option<Interleave>,
    /// Also compute the batch-norm statistics of the stored values: each tile writes, per output
    /// channel, its sum and sum of squares to a scratch of partials, and the last thread to
    /// finish reduces them in f64, in a fixed order, to the per-channel mean and variance.
    pub stats: bool,
    /// With `Some`, a 3x3 stride-1 convolution computed by Winograd F(m x m, 3x3) on this tiling
    /// (see [`Winograd`]); the input is then packed as [`Winograd::pack`] says.
    pub winograd: Option<Winograd>,
}

/// Where a sub-pixel phase's outputs go: output `(i, j)` of channel `k` is element
/// `(stride * i + offset[0], stride * j + offset[1])` of plane `k` of an output of `full_hw`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Interleave {
    /// The stride between a phase's outputs in the full output.
    pub stride: usize,
    /// The phase's first output position.
    pub offset: [usize; 2],
    /// The full output's height and width.
    pub full_hw: [usize; 2],
}

/// A convolution kernel's argument pointers, loaded.
pub(crate) struct ConvArgs {
    pub x: Value,
    pub w: Value,
    pub operands: Vec<Value>,
    pub stats: Option<[Value; 4]>,
    pub packed: Value,
    pub y: Value,
    /// The epilogue's per-channel table in this thread's scratch (see [`Epilogue::channel_parts`]).
    pub table: Option<Value>,
    /// f32 of this thread's scratch through which wide sums are split (see [`f32x4_parts`]).
    pub parts: Value,
}

/// An elementwise expression applied to a convolution's outputs in registers: `Load(0)` is the
/// convolution's value, `Load(k)` for `k >= 1` is operand `k - 1` (kernel arguments between the
/// weights and the output), indexed `Full` (a tensor of the output's shape) or `Channel` (one value per
/// output channel).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Epilogue {
    /// The expression.
    pub expr: Expr,
    /// How each operand is indexed.
    pub operands: Vec<Operand>,
}

impl Epilogue {
    /// The sub-expressions worth computing once per output channel (a batch norm's
    /// `gamma / sqrt(var + eps)`): the largest that read only `Channel` operands and constants,
    /// other than a lone load or constant. A kernel computes them for every channel into a table
    /// in its scratch when it starts, and its tiles broadcast them from there, where they cost a
    /// square root and a division per output vector before (ResNet-50's inference).
    pub(crate) fn channel_parts(&self) -> Vec<Expr> {
        let per_element = |k: usize| k == 0 || self.operands[k - 1] != Operand::Channel;
        let mut found = Vec::new();
        self.expr.invariant_parts(&per_element, &mut found);
        let mut parts: Vec<Expr> = Vec::new();
        for e in found {
            if !matches!(e, Expr::Load(_) | Expr::Const(_)) && !parts.contains(&e) {
                parts.push(e);
            }
        }
        parts
    }
}

impl ConvSpec {
    /// Groups: one per (image, output row, block of [`ConvSpec::block_tiles`] tiles), or for
    /// Winograd, one per block of tile rows of each image (or set of images across the lanes).
    pub fn groups(&self) -> usize {
        if let Some(w) = self.winograd {
            return self.shape.batch / w.images * self.winograd_blocks_per_set() * w.channel_parts;
        }
        self.shape.batch * self.shape.out_hw[0] * self.blocks_per_row()
    }
    /// Blocks of output channels: of `kb` each, the last holding the rest (a direct kernel's
    /// `kb` need not divide the channels; Winograd's does).
    pub fn kblocks(&self) -> usize {
        self.shape.out_channels.div_ceil(self.kb)
    }
    /// Tiles per output row: whole tiles of `4 * vb` pixels, and a partial one.
    pub fn tiles_per_row(&self) -> usize {
        self.shape.out_hw[1].div_ceil(4 * self.vb)
    }
    /// f32 elements of the statistics a `stats` kernel writes: (sum, squares) per output channel
    /// of every tile.
    pub fn stats_len(&self) -> usize {
        if let Some(w) = self.winograd {
            return self.groups() / w.channel_parts * self.shape.out_channels * 2;
        }
        self.shape.batch * self.kblocks() * self.shape.out_hw[0] * self.tiles_per_row() * self.kb * 2
    }
    /// Packed row length this spec needs so that every tile's loads stay in the row (a row's
    /// last, partial tile loads only the vectors that hold its pixels).
    pub fn min_row_len(out_w: usize, kernel_w: usize, stride_w: usize) -> usize {
        out_w.div_ceil(4) * 4 + (kernel_w - 1) / stride_w
    }
    /// Whether the kernel reads its input where it is, unpacked: the packing would copy each
    /// image as it is (see [`PackSpec::is_identity`]).
    pub fn reads_input_in_place(&self) -> bool {
        self.winograd.is_none() && self.pack.is_identity()
    }

    /// The packed image's rows, phases and row length.
    fn packed(&self) -> [usize; 3] {
        [self.pack.rows, self.pack.phases, self.pack.row_len]
    }

    /// Kernel arguments, in order: the input, the weights, the epilogue's operands, with `stats`
    /// the partials scratch, a counter scratch (2 f32 holding an i64), the mean and the variance,
    /// then the per-thread packing scratch ([`ConvSpec::scratch_len`] per thread) and the output.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let a = self.load_args(b, ptr, mul_add, args, thread);
        if self.winograd.is_some() {
            self.emit_winograd(b, mul_add, &a, begin, end);
        } else {
            let no_image = iconst(b, -1);
            self.emit(b, mul_add, &a, [begin, end], no_image, None);
        }
        let stats = a.stats;
        if let Some([partials, counter, mean, var]) = stats {
            // Count the groups done; the thread that completes the count reduces every tile's
            // partials (the atomic add orders the other threads' stores before it) and resets the
            // counter for the next run.
            let done = b.ins().isub(end, begin);
            let flags = MemFlagsData::new().with_notrap();
            let before = b.ins().atomic_rmw(types::I64, flags, AtomicRmwOp::Add, counter, done);
            let after = b.ins().iadd(before, done);
            let last = b.ins().icmp_imm_s(IntCC::Equal, after, self.groups() as i64);
            if_then(b, last, &mut |b| {
                let zero = iconst(b, 0);
                b.ins().store(flags, zero, counter, 0);
                self.statistics().emit(b, partials, mean, var);
            });
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Loads the kernel's arguments (see [`ConvSpec::build`]) and fills this thread's table of the
    /// epilogue's per-channel parts.
    pub(crate) fn load_args(
        &self,
        b: &mut FunctionBuilder,
        ptr: Type,
        mul_add: MulAdd,
        args: Value,
        thread: Value,
    ) -> ConvArgs {
        let extra = self.epilogue.as_ref().map_or(0, |e| e.operands.len());
        let mut next = 0;
        let mut arg = |b: &mut FunctionBuilder| {
            next += 1;
            load_arg(b, ptr, args, next - 1)
        };
        let [x, w] = [arg(b), arg(b)];
        let operands: Vec<Value> = (0..extra).map(|_| arg(b)).collect();
        let stats = self.stats.then(|| [arg(b), arg(b), arg(b), arg(b)]);
        let scratch = arg(b);
        let y = arg(b);
        let packed = thread_share(b, scratch, thread, self.scratch_len());
        let table = self.fill_channel_table(b, mul_add, &operands, packed);
        let parts = b.ins().iadd_imm_s(packed, 4 * self.parts_at() as i64);
        ConvArgs { x, w, operands, stats, packed, y, table, parts }
    }

    /// The epilogue's per-channel parts (see [`Epilogue::channel_parts`]).
    fn channel_parts(&self) -> Vec<Expr> {
        self.epilogue.as_ref().map_or(vec![], Epilogue::channel_parts)
    }

    /// Computes the epilogue's per-channel parts for every output channel into the table after
    /// this thread's work area, `[part][channel]`; returns the table's address (`None` without
    /// parts).
    fn fill_channel_table(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        operands: &[Value],
        packed: Value,
    ) -> Option<Value> {
        let parts = self.channel_parts();
        if parts.is_empty() {
            return None;
        }
        let table = b.ins().iadd_imm_s(packed, 4 * self.work_len() as i64);
        let channels = self.shape.out_channels;
        let (lo, hi) = (iconst(b, 0), iconst(b, channels as i64));
        for_loop(b, lo, hi, 1, &[], &mut |b, c, _| {
            let read = MemFlagsData::new().with_notrap().with_readonly();
            let mut load = |b: &mut FunctionBuilder, k: usize| {
                let at = elem_addr(b, operands[k - 1], c);
                b.ins().load(types::F32, read, at, 0)
            };
            let empty = HashMap::new();
            let at = elem_addr(b, table, c);
            for (i, part) in parts.iter().enumerate() {
                let mut env = Env {
                    width: Width::Scalar,
                    mul_add,
                    load: &mut load,
                    invariants: &empty,
                    locals: &[],
                    acc: None,
                    loaded: HashMap::new(),
                };
                let v = part.emit(b, &mut env);
                b.ins().store(MemFlagsData::new().with_notrap(), v, at, (4 * i * channels) as i32);
            }
            vec![]
        });
        Some(table)
    }

    /// The epilogue's per-channel parts of output channel `k` from `table_at` (the table's
    /// address at a tile's first channel), at `width`, by sub-expression.
    pub(crate) fn channel_values(
        &self,
        b: &mut FunctionBuilder,
        table_at: Option<Value>,
        k: usize,
        width: Width,
    ) -> HashMap<Expr, Value> {
        let Some(at) = table_at else { return HashMap::new() };
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let channels = self.shape.out_channels;
        let parts = self.channel_parts();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let v = b.ins().load(types::F32, read, at, (4 * (i * channels + k)) as i32);
                let v = if width == Width::Vector { b.ins().splat(types::F32X4, v) } else { v };
                (part, v)
            })
            .collect()
    }

    /// Emits groups `begin..end`. `image` is the image already packed in this thread's scratch
    /// (-1 for none); returns the image packed at the end. With `odd`, a sub-pixel phase of the
    /// same rows and width one column to the right of this one (stride 2): each tile computes
    /// both and stores them interleaved ([`ConvSpec::store`]).
    pub(crate) fn emit(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        [begin, end]: [Value; 2],
        image: Value,
        odd: Option<&ConvSpec>,
    ) -> Value {
        let (x, w, xp) = (a.x, a.w, a.packed);
        let partials = a.stats.map(|s| s[0]);
        let tiles_per_row = self.tiles_per_row();
        // Where tile t of group g writes its statistics.
        let stats_at = |b: &mut FunctionBuilder, g: Value, t: Value| {
            partials.map(|p| {
                let row = b.ins().imul_imm_s(g, tiles_per_row as i64);
                let at = b.ins().iadd(row, t);
                let at = b.ins().imul_imm_s(at, (self.kb * 2 * 4) as i64);
                b.ins().iadd(p, at)
            })
        };
        let [_, phases, row_len] = self.packed();
        let [oh_n, ow_n] = self.shape.out_hw;
        let kblocks = self.kblocks();
        // Output channels in the last block (`kb` unless it divides them).
        let last_kb = self.shape.out_channels - (kblocks - 1) * self.kb;
        let tile_w = 4 * self.vb;
        let full_tiles = ow_n / tile_w;
        let last = ow_n % tile_w; // pixels in a final partial tile
        // The output's rows and row length: this convolution's, or the interleaved full output's.
        let (y_rows, y_row_len, y_step, [row0, col0]) = match &self.interleave {
            Some(i) => (i.full_hw[0], i.full_hw[1], i.stride, i.offset),
            None => (oh_n, ow_n, 1, [0, 0]),
        };

        let block_tiles = self.block_tiles;
        let blocks_per_row = self.blocks_per_row();
        // Full-tile blocks of a row whose channel blocks are whole (`kb`), and the last one.
        let full_kblocks = if last_kb == self.kb { kblocks } else { kblocks - 1 };

        let (_, packed) = for_loop(b, begin, end, 1, &[image], &mut |b, g, packed| {
            // Groups run (image, output row, block of tiles); each runs every block of output
            // channels over its tiles, so its input is read from cache while they take turns.
            // Statistics partials stay laid out by (image, channel block, row, tile), the order
            // the reduction reads.
            let (block, t) = match blocks_per_row {
                1 => (iconst(b, 0), g),
                _ => (b.ins().urem_imm_u(g, blocks_per_row as i64), b.ins().udiv_imm_u(g, blocks_per_row as i64)),
            };
            let oh = b.ins().urem_imm_u(t, oh_n as i64);
            let n = b.ins().udiv_imm_u(t, oh_n as i64);
            // A new image: pack it into this thread's scratch (or read it where it is).
            let xp = if self.reads_input_in_place() {
                let first = mul(b, n, self.pack.len());
                elem_addr(b, x, first)
            } else {
                let new_image = b.ins().icmp(IntCC::NotEqual, n, packed[0]);
                if_then(b, new_image, &mut |b| {
                    let first_plane = mul(b, n, self.shape.in_channels);
                    self.pack.emit(b, x, xp, first_plane);
                });
                xp
            };
            // Element offsets: the packed input row for this output row (channel 0); the output
            // row of channel 0. (The odd phase's, by its own origin.)
            let x_row = |b: &mut FunctionBuilder, spec: &ConvSpec| {
                let r0 = mul(b, oh, spec.shape.stride[0]);
                let row = b.ins().iadd_imm_s(r0, spec.origin[0] as i64);
                let e = mul(b, row, phases * row_len);
                b.ins().iadd_imm_s(e, spec.origin[1] as i64)
            };
            let x_row_odd = odd.map(|o| x_row(b, o));
            let x_row = x_row(b, self);
            let y_row0 = {
                let plane = mul(b, n, self.shape.out_channels);
                let plane = mul(b, plane, y_rows);
                let r = mul(b, oh, y_step);
                let row = b.ins().iadd(plane, r);
                let row = b.ins().iadd_imm_s(row, row0 as i64);
                let e = mul(b, row, y_row_len);
                b.ins().iadd_imm_s(e, col0 as i64)
            };
            // This block's full tiles, `t_lo..t_hi`, and whether it ends the row (and holds the
            // partial tile).
            let t_lo = mul(b, block, block_tiles);
            let t_hi = {
                let e = b.ins().iadd_imm_s(t_lo, block_tiles as i64);
                let full = iconst(b, full_tiles as i64);
                b.ins().umin(e, full)
            };
            let ends_row = b.ins().icmp_imm_u(IntCC::Equal, block, blocks_per_row as i64 - 1);
            // The block's tiles for the `kb` output channels from `kblock * self.kb`.
            let channels = |b: &mut FunctionBuilder, kblock: Value, kb: usize| {
                let k0 = mul(b, kblock, self.kb);
                let w0 = |b: &mut FunctionBuilder, spec: &ConvSpec| {
                    let scaled = b.ins().imul_imm_s(k0, spec.weights.o as i64);
                    b.ins().iadd_imm_s(scaled, spec.weights.base as i64)
                };
                let w0_odd = odd.map(|o| w0(b, o));
                let w0 = w0(b, self);
                let y_row = {
                    let e = mul(b, k0, y_rows * y_row_len);
                    b.ins().iadd(y_row0, e)
                };
                let partial_row = {
                    let e = mul(b, n, kblocks);
                    let e = b.ins().iadd(e, kblock);
                    let e = mul(b, e, oh_n);
                    b.ins().iadd(e, oh)
                };
                // A tile of `kb` channels by `vb` vectors from column `col` (index `t` in its row).
                let tile = |b: &mut FunctionBuilder, t: Value, col: Value, vb: usize, valid: Option<usize>| {
                    let st = stats_at(b, partial_row, t);
                    let mut phases = vec![(self, [x_row, w0])];
                    if let (Some(o), Some(x_row), Some(w0)) = (odd, x_row_odd, w0_odd) {
                        phases.push((o, [x_row, w0]));
                    }
                    let mut sums = accumulate(b, mul_add, [xp, w], &phases, col, [kb, vb]).into_iter();
                    let acc = sums.next().expect("this phase's sums");
                    let odd = sums.next();
                    let at = TileAt { y_row, k0, col, kb, vb, valid, stats_at: st };
                    self.store(b, mul_add, a, at, &acc, odd.as_deref());
                };
                for_loop(b, t_lo, t_hi, 1, &[], &mut |b, t, _| {
                    let col = mul(b, t, tile_w);
                    tile(b, t, col, self.vb, None);
                    vec![]
                });
                if last > 0 {
                    if_then(b, ends_row, &mut |b| {
                        let col = iconst(b, (full_tiles * tile_w) as i64);
                        let t = iconst(b, full_tiles as i64);
                        tile(b, t, col, last.div_ceil(4), Some(last));
                    });
                }
            };
            let (zero, whole) = (iconst(b, 0), iconst(b, full_kblocks as i64));
            for_loop(b, zero, whole, 1, &[], &mut |b, kblock, _| {
                channels(b, kblock, self.kb);
                vec![]
            });
            if full_kblocks < kblocks {
                let kblock = iconst(b, full_kblocks as i64);
                channels(b, kblock, last_kb);
            }
            vec![n]
        });
        packed[0]
    }

    /// Groups per output row and image: blocks of [`ConvSpec::block_tiles`] tiles (the last
    /// may hold fewer).
    fn blocks_per_row(&self) -> usize {
        self.tiles_per_row().div_ceil(self.block_tiles)
    }

    /// f32 elements of one thread's scratch: its work area (see `ConvSpec::work_len`), the
    /// table of the epilogue's per-channel parts, and with 8 or 16 lanes the elements through
    /// which a tile's wide sums are split into f32x4 parts.
    pub fn scratch_len(&self) -> usize {
        self.parts_at() + if self.lanes > 4 { self.lanes } else { 0 }
    }

    /// Element of the thread's scratch where the wide sums are split (see [`accumulate`]).
    fn parts_at(&self) -> usize {
        self.work_len() + self.channel_parts().len() * self.shape.out_channels
    }

    /// f32 elements of one thread's work area: one packed image (none when the input is read in
    /// place; for Winograd, also the transformed weights, inputs and products of one group).
    fn work_len(&self) -> usize {
        if self.winograd.is_some() {
            self.winograd_scratch_len()
        } else if self.reads_input_in_place() {
            0
        } else {
            self.pack.len()
        }
    }

    /// The reduction of this kernel's statistics partials.
    fn statistics(&self) -> StatsSpec {
        let [oh, ow] = self.shape.out_hw;
        if let Some(w) = self.winograd {
            // One entry per block of tile rows, every channel (its channel parts' groups write
            // their own channels).
            let channels = self.shape.out_channels;
            let rows = self.winograd_blocks_per_set();
            return StatsSpec {
                channels,
                kb: channels,
                batch: self.shape.batch / w.images,
                rows,
                tiles: 1,
                count: self.shape.batch * oh * ow,
            };
        }
        StatsSpec {
            channels: self.shape.out_channels,
            kb: self.kb,
            batch: self.shape.batch,
            rows: oh,
            tiles: self.tiles_per_row(),
            count: self.shape.batch * oh * ow,
        }
    }

    /// Stores a register tile's accumulators `acc` (as [`accumulate`] returns them) at `at`
    /// through the epilogue, adding their statistics at `at.stats_at`. With `odd`, the
    /// accumulators of the phase one column to the right of a stride-2 output: each pair of
    /// vectors is interleaved lane by lane into two whole vectors of consecutive pixels (no
    /// statistics).
    fn store(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        at: TileAt,
        acc: &[Value],
        odd: Option<&[Value]>,
    ) {
        let TileAt { y_row, k0, col, kb, vb, valid, stats_at } = at;
        let (y, operands, table) = (a.y, &a.operands, a.table);
        let out_flags = MemFlagsData::new().with_notrap();
        // Interleaved outputs are `step` elements apart and stored lane by lane.
        let (step, plane) = match &self.interleave {
            Some(i) => (i.stride, (i.full_hw[0] * i.full_hw[1]) as i32 * 4),
            None => (1, (self.shape.out_hw[0] * self.shape.out_hw[1]) as i32 * 4),
        };
        let y_col = {
            let c = mul(b, col, step);
            b.ins().iadd(y_row, c)
        };
        let y_base = elem_addr(b, y, y_col);
        // Epilogue operands: the same element of a Full operand, or output channel k0 + k.
        let full_bases: Vec<Value> = operands.iter().map(|&o| elem_addr(b, o, y_col)).collect();
        let channel_bases: Vec<Value> = operands.iter().map(|&o| elem_addr(b, o, k0)).collect();
        let table_at = table.map(|t| elem_addr(b, t, k0));
        let epilogue = |b: &mut FunctionBuilder, v: Value, width: Width, k: usize, offset: i32| -> Value {
            let at = EpilogueAt {
                full: &full_bases,
                full_offset: offset,
                channel: &channel_bases,
                channel_offset: 4 * k as i32,
            };
            let parts = self.channel_values(b, table_at, k, width);
            apply_epilogue(b, self.epilogue.as_ref(), mul_add, &at, &parts, v, width)
        };
        // Channel k's sums (each channel's are alike: f32x16, f32x8 and f32x4 vectors) are split
        // into f32x4 vectors one sum at a time as the stores reach it, so that few parts are
        // live at once (all of a channel's, with 16 lanes, outnumbered the registers).
        let sum_at = |b: &FunctionBuilder, sums: &[Value], k: usize, j: usize| -> Option<Value> {
            let per_channel = sums.len() / kb;
            let mut first = 0;
            for &v in &sums[k * per_channel..][..per_channel] {
                if first == j {
                    return Some(v);
                }
                first += b.func.dfg.value_type(v).lane_count() as usize / 4;
            }
            None
        };
        for k in 0..kb {
            let (mut acc_parts, mut odd_parts) = (Vec::new(), Vec::new());
            // Statistics of this channel's stored values: vector and scalar partial sums, and
            // those of the sums stored whole, by vector type.
            let (mut vector, mut scalar): (Option<[Value; 2]>, Option<[Value; 2]>) = (None, None);
            let mut whole_stats: Vec<(Type, [Value; 2])> = Vec::new();
            // Vectors before this one were stored with a whole sum.
            let mut stored_to = 0;
            for j in 0..vb {
                if j < stored_to {
                    continue;
                }
                if let Some(v) = sum_at(b, acc, k, j) {
                    // A wide sum of contiguous outputs with nothing to apply is stored as it is
                    // (splitting it through memory cost the stem 6% of ResNet-56's step).
                    let ty = b.func.dfg.value_type(v);
                    let parts = ty.lane_count() as usize / 4;
                    let contiguous = self.epilogue.is_none() && odd.is_none() && step == 1;
                    if parts > 1 && contiguous && valid.is_none_or(|n| n >= 4 * (j + parts)) {
                        b.ins().store(out_flags, v, y_base, k as i32 * plane + 16 * j as i32);
                        if stats_at.is_some() {
                            match whole_stats.iter_mut().find(|(t, _)| *t == ty) {
                                Some((_, running)) => *running = sum_and_squares(b, mul_add, Some(*running), v),
                                None => whole_stats.push((ty, sum_and_squares(b, mul_add, None, v))),
                            }
                        }
                        stored_to = j + parts;
                        continue;
                    }
                    acc_parts = f32x4_parts(b, a.parts, &[v]);
                }
                if let Some(v) = odd.and_then(|odd| sum_at(b, odd, k, j)) {
                    odd_parts = f32x4_parts(b, a.parts, &[v]);
                }
                let acc_j = acc_parts.remove(0);
                let odd_j = odd.map(|_| odd_parts.remove(0));
                let offset = k as i32 * plane + (16 * step * j) as i32;
                let lanes = valid.map_or(4, |n| n.saturating_sub(4 * j).min(4));
                // What to store from `offset`: (vector, byte offset, valid lanes, bytes between
                // lanes): this tile's vector, or the pair interleaved into consecutive pixels.
                let stores: Vec<(Value, i32, usize, usize)> = match odd_j {
                    None => vec![(acc_j, offset, lanes, 4 * step)],
                    Some(odd_j) => {
                        let zipped = interleave(b, &[acc_j, odd_j]);
                        vec![
                            (zipped[0], offset, (2 * lanes).min(4), 4),
                            (zipped[1], offset + 16, (2 * lanes).saturating_sub(4), 4),
                        ]
                    }
                };
                for (v, offset, lanes, spacing) in stores {
                    if lanes == 4 && spacing == 4 {
                        let v = epilogue(b, v, Width::Vector, k, offset);
                        b.ins().store(out_flags, v, y_base, offset);
                        if stats_at.is_some() {
                            vector = Some(sum_and_squares(b, mul_add, vector, v));
                        }
                    } else {
                        for lane in 0..lanes {
                            let e = b.ins().extractlane(v, lane as u8);
                            let at = offset + (spacing * lane) as i32;
                            let e = epilogue(b, e, Width::Scalar, k, at);
                            b.ins().store(out_flags, e, y_base, at);
                            if stats_at.is_some() {
                                scalar = Some(sum_and_squares(b, mul_add, scalar, e));
                            }
                        }
                    }
                }
            }
            if let Some(at) = stats_at {
                for (_, [s, q]) in whole_stats {
                    let [s, q] = [s, q].map(|v| f32x4_parts(b, a.parts, &[v]));
                    for (s, q) in s.into_iter().zip(q) {
                        vector = Some(match vector {
                            None => [s, q],
                            Some([vs, vq]) => [b.ins().fadd(vs, s), b.ins().fadd(vq, q)],
                        });
                    }
                }
                let zero = b.ins().f32const(0.0);
                let [mut sum, mut squares] = scalar.unwrap_or([zero, zero]);
                if let Some([vs, vq]) = vector {
                    for lane in 0..4 {
                        let (s, q) = (b.ins().extractlane(vs, lane), b.ins().extractlane(vq, lane));
                        sum = b.ins().fadd(sum, s);
                        squares = b.ins().fadd(squares, q);
                    }
                }
                b.ins().store(out_flags, sum, at, (8 * k) as i32);
                b.ins().store(out_flags, squares, at, (8 * k + 4) as i32);
            }
        }
    }
}

/// Where an epilogue reads its operands for one stored value: `Full` operands at byte
/// `full_offset` from their `full` base, `Channel` operands at `channel_offset` from theirs.
pub(crate) struct EpilogueAt<'a> {
    pub full: &'a [Value],
    pub full_offset: i32,
    pub channel: &'a [Value],
    pub channel_offset: i32,
}

/// The accumulators of one register tile of each of `phases` (one convolution, or a pair of
/// sub-pixel width phases computed together), `kb` channels by `vb` f32x4 vectors starting at
/// output column `col` (channel-major): each phase's packed input from its element `x_row`, its
/// weights from its element `w0`. With 8 lanes, each pair of vectors accumulates as one f32x8
/// (a channel's sums are then its f32x8 sums, and an f32x4 one when `vb` is odd). The phases
/// share the packed input, the reduction channels and the weights' channel stride, and run in
/// one loop over the channels, so that a pair's two sets of accumulators are live together:
/// apart, each set alone (a 3x3 stride-2 input gradient's 6 accumulators) left the multiply-add
/// pipes waiting on too few chains.
fn accumulate(
    b: &mut FunctionBuilder,
    mul_add: MulAdd,
    [xp, w]: [Value; 2],
    phases: &[(&ConvSpec, [Value; 2])],
    col: Value,
    [kb, vb]: [usize; 2],
) -> Vec<Vec<Value>> {
    let first = phases[0].0;
    let [rows, packed_phases, row_len] = first.packed();
    let flags = MemFlagsData::new().with_notrap().with_readonly();
    let zero_s = b.ins().f32const(0.0);
    let zero = b.ins().splat(types::F32X4, zero_s);
    // The tile's vectors as loaded and accumulated, as (first f32x4 vector, type): each `lanes /
    // 4` f32x4 vectors as one vector of `lanes`, and the rest in the widest that fit (with 16
    // lanes and 7 vectors: one f32x16, one f32x8, one f32x4).
    let slots = vector_slots(vb, first.lanes);
    let per_set = kb * slots.len();
    let mut zero_of = HashMap::from([(types::F32X4, zero)]);
    let zeros: Vec<Value> =
        slots.iter().map(|&(_, ty)| *zero_of.entry(ty).or_insert_with(|| b.ins().splat(ty, zero_s))).collect();
    let taps = |spec: &ConvSpec| spec.shape.kernel[0] * spec.shape.kernel[1];
    // Few taps leave little work per channel: unroll over channels (about 8 taps of work) so
    // the loop's own instructions are paid less often.
    let all_taps: usize = phases.iter().map(|(spec, _)| taps(spec)).sum();
    let channels = first.shape.in_channels;
    let unroll = (1..=(8 / all_taps.max(1)).max(1)).rev().find(|u| channels.is_multiple_of(*u)).unwrap_or(1);
    // Accumulators only for the phases with taps: a phase no window reaches (a sub-pixel phase
    // of a strided 1x1 convolution's input gradient) stores zeros, and carrying its zeros
    // through the loop would take registers.
    let live: Vec<usize> = (0..phases.len()).filter(|&p| taps(phases[p].0) > 0).collect();
    let acc0: Vec<Value> = (0..live.len() * kb).flat_map(|_| zeros.iter().copied()).collect();
    let channels = if live.is_empty() { 0 } else { channels };
    let (c_lo, c_hi) = (iconst(b, 0), iconst(b, channels as i64));
    let x_channel_bytes = (rows * packed_phases * row_len * 4) as i32;
    let w_stride = first.weights.i;
    debug_assert!(phases.iter().all(|(spec, _)| spec.weights.i == w_stride && spec.packed() == first.packed()));
    let x_cols: Vec<Value> = phases.iter().map(|(_, [x_row, _])| b.ins().iadd(*x_row, col)).collect();
    let (_, acc) = for_loop(b, c_lo, c_hi, unroll as i64, &acc0, &mut |b, c, acc| {
        let x_off = mul(b, c, rows * packed_phases * row_len);
        let w_off = b.ins().imul_imm_s(c, w_stride as i64);
        let mut acc = acc.to_vec();
        for (set, &p) in live.iter().enumerate() {
            let ((spec, [_, w0]), x_col) = (&phases[p], x_cols[p]);
            let [kh, kw] = spec.shape.kernel;
            let x_c = {
                let e = b.ins().iadd(x_col, x_off);
                elem_addr(b, xp, e)
            };
            let w_c = {
                let e = b.ins().iadd(*w0, w_off);
                elem_addr(b, w, e)
            };
            let set = &mut acc[set * per_set..][..per_set];
            for u in 0..unroll as i32 {
                for r in 0..kh {
                    for s in 0..kw {
                        let (phase, q) = (s % spec.shape.stride[1], s / spec.shape.stride[1]);
                        let base = ((r * packed_phases + phase) * row_len + q) as i32 * 4 + u * x_channel_bytes;
                        let xs: Vec<Value> =
                            slots.iter().map(|&(j, ty)| b.ins().load(ty, flags, x_c, base + 16 * j as i32)).collect();
                        for k in 0..kb {
                            // One broadcast per weight (and vector width), held for the tile's
                            // vectors (the multiply-add adds into the accumulator's register).
                            let offset = (spec.weights.at(k, 0, r, s) - spec.weights.base) as i32 * 4;
                            let offset = offset + u * w_stride as i32 * 4;
                            let mut broadcast = HashMap::new();
                            for (i, (&xv, &(_, ty))) in xs.iter().zip(&slots).enumerate() {
                                let wv = *broadcast.entry(ty).or_insert_with(|| {
                                    // A load of its own for each broadcast, which takes it from memory.
                                    let wk = b.ins().load(types::F32, flags, w_c, offset);
                                    b.ins().splat(ty, wk)
                                });
                                let a = &mut set[k * slots.len() + i];
                                *a = mul_add_emit(b, mul_add, wv, xv, *a);
                            }
                        }
                    }
                }
            }
        }
        acc
    });
    (0..phases.len())
        .map(|p| match live.iter().position(|&l| l == p) {
            Some(set) => acc[set * per_set..][..per_set].to_vec(),
            None => vec![zero; kb * vb],
        })
        .collect()
}

/// `sums` (f32x16, f32x8 and f32x4 vectors) as f32x4 vectors: each wider one is stored to
/// `parts_area` (as many f32 of the thread's scratch as the widest has lanes) and its f32x4 parts
/// loaded back, since Cranelift's IR has no instruction that takes part of a vector.
fn f32x4_parts(b: &mut FunctionBuilder, parts_area: Value, sums: &[Value]) -> Vec<Value> {
    let scratch = MemFlagsData::new().with_notrap();
    let mut out = Vec::with_capacity(4 * sums.len());
    for &v in sums {
        let parts = b.func.dfg.value_type(v).lane_count() / 4;
        if parts > 1 {
            b.ins().store(scratch, v, parts_area, 0);
            out.extend((0..parts as i32).map(|i| b.ins().load(types::F32X4, scratch, parts_area, 16 * i)));
        } else {
            out.push(v);
        }
    }
    out
}

/// The vectors of a tile of `vb` f32x4 vectors at `lanes` lanes, as (first f32x4 vector, type):
/// every `lanes / 4` as one vector of `lanes`, the rest in the widest vectors that fit.
fn vector_slots(vb: usize, lanes: usize) -> Vec<(usize, Type)> {
    let mut slots = Vec::new();
    let mut j = 0;
    while j < vb {
        let quads = [4, 2, 1].into_iter().find(|&q| q <= lanes / 4 && j + q <= vb).expect("1 always fits");
        slots.push((j, f32_vector(4 * quads)));
        j += quads;
    }
    slots
}

/// Applies `epilogue` (if any) to the convolution's value `v` (a vector or a scalar), its
/// per-channel parts already computed (`parts`, of this width: see [`ConvSpec::channel_values`]).
pub(crate) fn apply_epilogue(
    b: &mut FunctionBuilder,
    epilogue: Option<&Epilogue>,
    mul_add: MulAdd,
    at: &EpilogueAt,
    parts: &HashMap<Expr, Value>,
    v: Value,
    width: Width,
) -> Value {
    let Some(e) = epilogue else { return v };
    let mut load = |b: &mut FunctionBuilder, i: usize| -> Value {
        if i == 0 {
            return v;
        }
        let read = MemFlagsData::new().with_notrap().with_readonly();
        match e.operands[i - 1] {
            Operand::Channel => {
                let c = b.ins().load(types::F32, read, at.channel[i - 1], at.channel_offset);
                if width == Width::Vector { b.ins().splat(types::F32X4, c) } else { c }
            }
            _ => b.ins().load(width.ty(), read, at.full[i - 1], at.full_offset),
        }
    };
    let mut env =
        Env { width, mul_add, load: &mut load, invariants: parts, locals: &[], acc: None, loaded: HashMap::new() };
    e.expr.emit(b, &mut env)
}

/// Adds `v` and `v * v` to the running (sum, squares), starting them at `v` and `v * v`.
pub(crate) fn sum_and_squares(
    b: &mut FunctionBuilder,
    mul_add: MulAdd,
    running: Option<[Value; 2]>,
    v: Value,
) -> [Value; 2] {
    match running {
        None => [v, b.ins().fmul(v, v)],
        Some([s, q]) => [b.ins().fadd(s, v), mul_add_emit(b, mul_add, v, v, q)],
    }
}

/// Where a register tile of a direct convolution goes: `kb` output channels from `k0` by `vb`
/// f32x4 vectors from output column `col` of row `y_row` (the element of channel 0's row), only
/// `valid` pixels of them where the tile is partial, its statistics added at `stats_at`.
#[derive(Clone, Copy)]
struct TileAt {
    y_row: Value,
    k0: Value,
    col: Value,
    kb: usize,
    vb: usize,
    valid: Option<usize>,
    stats_at: Option<Value>,
}

/// Tiles of an output row per group (see [`ConvSpec::block_tiles`]). A whole row while the input
/// rows its tiles read fit half of a 1 MiB L2 cache: each block of output channels then keeps
/// its weights in L1 over the row and reads the row from L2. Past that, the row would stream
/// from L3 for every block of channels, so a group takes as many tiles as keep their input within
/// half of a 32 KiB L1 data cache (at least one), and the channel blocks take turns on it.
/// (ResNet-50's 1x1 convolutions, as one row of an image's pixels: 256->64 at 56x56 ran at
/// 46-47% of the ceiling by whole rows against 74-75% by tiles of 16 KiB; 128->512 at 28x28, a
/// 400 KiB row, 85-89% by rows against 78-79%. BENCHMARKS.md.)
pub(crate) fn block_tiles(shape: &ConvShape, vb: usize) -> usize {
    const L2_SHARE: usize = 512 << 10;
    const L1_SHARE: usize = 16 << 10;
    let [kh, kw] = shape.kernel;
    let tile_w = 4 * vb;
    let input_bytes = |pixels: usize| 4 * shape.in_channels * kh * (pixels * shape.stride[1] + kw.saturating_sub(1));
    let tiles = shape.out_hw[1].div_ceil(tile_w).max(1);
    if input_bytes(shape.out_hw[1]) <= L2_SHARE {
        return tiles;
    }
    (L1_SHARE / input_bytes(tile_w)).clamp(1, tiles)
}

/// xmm registers a register tile may take (see [`register_tile`]).
const REGISTERS: usize = 15;

/// Whether a register tile's blocks of channels must divide the channels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ChannelBlocks {
    /// Every block is whole (Winograd's products and the weight gradients need this).
    Dividing,
    /// The last block may hold fewer channels (a direct [`ConvSpec`] emits it as its own tile).
    LastPartial,
}

/// Register-tile sizes within the 16 xmm registers: `sets` tiles of accumulators (2 for a pair
/// of sub-pixel width phases computed together) + live inputs + 1 broadcast <= 15, leaving one
/// for the product of a separate multiply and add (a fused one adds into the accumulator's
/// register: see vendor/cranelift-codegen/PATCH.md; the code-quality test guards against
/// spills), maximising the accumulators (enough of them hide the multiply-add latency), for a
/// tile of `kb` (at most 6, and at most `channels`) by `n`, where `n` is at most `max_n` and the
/// tile holds `n` (or `fixed_n` when given) live input vectors. With [`ChannelBlocks::Dividing`],
/// `kb` divides `channels`; otherwise the tile maximises the accumulators a block averages
/// (64 channels: 10 blocks of 6 and one of 4 by 2 vectors, 11.6 against 8 for blocks of 4).
pub(crate) fn register_tile(
    channels: usize,
    max_n: usize,
    fixed_n: Option<usize>,
    sets: usize,
    blocks: ChannelBlocks,
) -> (usize, usize) {
    let allowed = |kb: &usize| match blocks {
        ChannelBlocks::Dividing => channels.is_multiple_of(*kb),
        ChannelBlocks::LastPartial => *kb <= channels,
    };
    let regs = |(kb, n): (usize, usize)| sets * kb * n + n + 1;
    // More accumulators per block on average (n * channels / blocks: compare n / blocks by
    // cross-multiplying), then fewer registers.
    let better = |(ka, na): (usize, usize), (kb, nb): (usize, usize)| {
        let (a, b) = (na * channels.div_ceil(kb), nb * channels.div_ceil(ka));
        a > b || (a == b && regs((ka, na)) < regs((kb, nb)))
    };
    let mut best = (1, 1);
    for kb in (1..=6).filter(allowed) {
        let n = match fixed_n {
            Some(n) => n,
            None => ((REGISTERS - 1) / (sets * kb + 1)).min(max_n).max(1),
        };
        if regs((kb, n)) <= REGISTERS && better((kb, n), best) {
            best = (kb, n);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::{ChannelBlocks, REGISTERS, register_tile};

    /// Every tile fits the registers and has at most `channels` rows; dividing tiles divide, and
    /// a tile with a partial last block averages at least as many accumulators per block.
    #[test]
    fn register_tiles_fit_and_partial_blocks_never_lose() {
        for channels in 1..=2048 {
            for (max_n, sets) in [(1, 1), (2, 1), (14, 1), (14, 2), (4, 2)] {
                let average = |(kb, n): (usize, usize)| (n * channels) as f64 / channels.div_ceil(kb) as f64;
                let dividing = register_tile(channels, max_n, None, sets, ChannelBlocks::Dividing);
                let partial = register_tile(channels, max_n, None, sets, ChannelBlocks::LastPartial);
                for (kb, n) in [dividing, partial] {
                    let registers = sets * kb * n + n + 1;
                    assert!(kb <= channels && n <= max_n && registers <= REGISTERS, "{channels}: {kb}x{n}");
                }
                assert!(channels.is_multiple_of(dividing.0), "{channels}: {dividing:?}");
                assert!(average(partial) >= average(dividing), "{channels}: {partial:?} < {dividing:?}");
            }
        }
        // ResNet-50's power-of-two channel counts get 12 accumulators (one tile of 4 left over).
        assert_eq!(register_tile(64, 14, None, 1, ChannelBlocks::LastPartial), (6, 2));
        assert_eq!(register_tile(64, 14, None, 1, ChannelBlocks::Dividing), (4, 2));
    }
}
