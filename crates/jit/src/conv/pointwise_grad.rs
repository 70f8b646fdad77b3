//! The weight gradient of a pointwise convolution (1x1, no padding) as dot products along
//! pixels, reading dy as it is stored (NCHW), and x too at stride 1 (at stride 2, each chunk of x
//! is first gathered into the thread's scratch): no transpose. Small images (fewer than
//! [`JOIN_BELOW`] pixels) are laid end to end instead: each set of images' x and dy gathered as
//! one long row per channel.

use crate::MulAdd;
use crate::codegen::{elem_addr, entry_with_thread, for_loop, iconst, if_then, load_arg, mul, mul_add_emit};
use crate::codegen::{f32_vector, shuffle32, thread_share};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// `dw[k][c] = sum over images n and pixels p of dy[n][k][p] * x[n][c][p]`, where a 1x1, stride-1,
/// unpadded convolution's planes are rows of `pixels` contiguous elements. At a larger stride,
/// `x[n][c][p]` is the input pixel `(i s, j s)` of output pixel `p = i out_w + j`: every thread
/// gathers each chunk's (whole output rows) into its scratch before its tiles read it.
///
/// A tile is `kb` output channels by up to `cb` input channels; its accumulators are vectors
/// along pixels (lane `l` sums pixels `p = l mod lanes`), `kb` vectors of dy and one of x
/// loaded per step of a vector of pixels. Consecutive tiles share their rows of the operand with
/// more channels (`by_output_channels`: dy's; else x's), read from L1, against new rows of the
/// other (2 per tile), whose chunk stays in L2 while every tile reads it. The batch is swept in chunks, all of this
/// thread's tiles per chunk, of at most [`CHUNK_BYTES`] of that operand: `chunk` pixels of one
/// image, or `images` whole images. Each tile keeps its running f32 sums in a scratch between
/// chunks.
///
/// Small images would make short rows, and a tile pays for each row it starts (ResNet-50's 7x7
/// gradients ran at 55% of the ceiling against 85-98% at 56x56). Below [`JOIN_BELOW`] pixels the
/// kernel is `joined`: sets of `images` images (a divisor of the batch) are gathered by every
/// thread into its scratch as `[channel][image][pixel]`, x's channels then dy's, each channel one
/// row of [`row`](Self::row) elements zero-padded to whole vectors (at least about [`MIN_ROW`]
/// pixels), and each tile sweeps its rows once per set.
///
/// Accuracy: every `flush` images (so that no f32 lane sums more than about 1024 products, or
/// one image's), the running sums are added, widened, to f64 totals; at the end the totals' lanes
/// are added in f64 and rounded once into `dw`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PointwiseWeightGradSpec {
    /// Batch size.
    pub batch: usize,
    /// Input channels (x's planes per image).
    pub in_channels: usize,
    /// Output channels (dy's planes per image).
    pub out_channels: usize,
    /// Output pixels per plane (height times width).
    pub pixels: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// x's height and width.
    pub in_hw: [usize; 2],
    /// Output width.
    pub out_w: usize,
    /// Output channels per tile (a divisor of `out_channels`).
    pub kb: usize,
    /// Input channels per tile (the last tile of each block of output channels takes the rest).
    pub cb: usize,
    /// Pixels per chunk of an image (a multiple of 4, and of output rows at a stride above 1;
    /// every pixel, rounded up, when a chunk holds whole images).
    pub chunk: usize,
    /// Whole images per chunk (1 when an image takes several chunks).
    pub images: usize,
    /// Images whose products the running f32 sums take before they go into the f64 totals (a
    /// multiple of `images`).
    pub flush: usize,
    /// Consecutive tiles share their output channels (dy has more channels than x), else their
    /// input channels.
    pub by_output_channels: bool,
    /// Sets of images laid end to end in gathered rows of x and dy (see above).
    pub joined: bool,
    /// f32 lanes of the accumulators: 4, or 8 (f32x8 sums of 8 pixels; chunks and joined rows
    /// are then whole f32x8 vectors, and each running sum's halves go into the f64 totals).
    pub lanes: usize,
}

/// Images of fewer pixels than this are `joined` (14x14 and 7x7 are; 28x28 is not).
pub const JOIN_BELOW: usize = 256;

/// Pixels a joined set's row should reach. Each set costs every tile a pass of its running sums
/// through memory (about 16 MB for a 2048 by 512 gradient), so sets of few pixels spend their
/// time there: ResNet-50's 7x7 gradients ran at 26% of the ceiling in sets of 1 image, 56% in
/// sets of 4 and 75% in sets of 16 (784 pixels); its 14x14 ones best in sets of 4.
const MIN_ROW: usize = 768;

/// The most bytes of a chunk of the operand every tile reads in turn (so kept in L2).
pub const CHUNK_BYTES: usize = 512 << 10;

/// Bytes of an accumulator's two f64x2 totals (after the tile's running sums).
const TOTALS: usize = 32;

impl PointwiseWeightGradSpec {
    /// The tiling for these sizes: `kb` 2 (1 for an odd number of output channels) by `cb`
    /// filling 12 accumulators (13 registers to 15 with the loads), so that each tile reads 2 new
    /// rows of dy; where dy has more channels (4 of them dividing), `kb` 4 by `cb` 2, so that
    /// each tile reads 2 new rows of x, not 6, from L2 (ResNet-50's 512->2048 at 7x7: 41-43% of
    /// the ceiling against 54-55%; 512->1024 at 28x28, stride 2: 49-52% against 67%, though 8
    /// accumulators against 12). Chunks of the operand with
    /// fewer channels of at most [`CHUNK_BYTES`] in equal parts (joined, sets of a divisor of the
    /// batch), flushes after about 1024 products per lane; for x of
    /// `[batch][in_channels][in_hw]` at `stride`.
    /// `lanes` f32 per accumulator (4, or 8).
    pub fn new(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        in_hw: [usize; 2],
        stride: usize,
        lanes: usize,
    ) -> Self {
        let by_output_channels = out_channels > in_channels;
        let (kb, cb) = if by_output_channels && out_channels.is_multiple_of(4) {
            (4, 2.min(in_channels))
        } else {
            let kb = if out_channels.is_multiple_of(2) { 2 } else { 1 };
            (kb, (12 / kb).min(in_channels))
        };
        let [oh, ow] = in_hw.map(|d| (d - 1) / stride + 1);
        let pixels = oh * ow;
        let image_bytes = 4 * out_channels.min(in_channels) * pixels;
        let chunks = image_bytes.div_ceil(CHUNK_BYTES);
        let chunk = pixels.div_ceil(chunks).div_ceil(lanes) * lanes;
        // Gathered chunks are whole output rows, and whole vectors.
        let rows_step = if stride > 1 { lanes / gcd(ow, lanes) } else { 1 };
        let chunk = if stride > 1 { chunk.div_ceil(ow).div_ceil(rows_step) * rows_step * ow } else { chunk };
        let flush = (4096 / pixels).clamp(1, batch);
        let images = (CHUNK_BYTES / image_bytes).clamp(1, flush);
        let joined = pixels < JOIN_BELOW;
        // Joined, the fewest images (a divisor of the batch, at most a flush period's) whose row
        // is at least MIN_ROW pixels long, else as many as a flush period allows.
        let images = if joined {
            let mut sets = (1..=flush).filter(|i| batch.is_multiple_of(*i));
            let fits = sets.clone().find(|i| i * pixels >= MIN_ROW);
            fits.or_else(|| sets.next_back()).unwrap_or(1)
        } else {
            images
        };
        // Joined, a chunk is every pixel of the set's images.
        let chunk = if joined { pixels.div_ceil(lanes) * lanes } else { chunk };
        let flush = flush / images * images;
        PointwiseWeightGradSpec {
            batch,
            in_channels,
            out_channels,
            pixels,
            stride,
            in_hw,
            out_w: ow,
            kb,
            cb,
            chunk,
            images,
            flush,
            by_output_channels,
            joined,
            lanes,
        }
    }

    /// Elements of a joined kernel's gathered row per channel: a set's pixels, rounded up to
    /// whole vectors.
    pub fn row(&self) -> usize {
        (self.images * self.pixels).div_ceil(self.lanes) * self.lanes
    }

    /// Groups: one per tile (block of input channels, block of output channels).
    pub fn groups(&self) -> usize {
        self.in_channels.div_ceil(self.cb) * (self.out_channels / self.kb)
    }

    /// f32 elements of one thread's scratch: joined, a set's gathered x and dy; else the
    /// gathered x of a chunk of every image of a set (none at stride 1).
    pub fn thread_scratch_len(&self) -> usize {
        if self.joined {
            (self.in_channels + self.out_channels) * self.row()
        } else if self.stride > 1 {
            self.images * self.in_channels * self.chunk
        } else {
            0
        }
    }

    /// f32 elements of the accumulator scratch (one full tile's worth per group).
    pub fn scratch_len(&self) -> usize {
        self.groups() * self.tile_bytes() / 4
    }

    fn tile_bytes(&self) -> usize {
        self.kb * self.cb * (self.running() + TOTALS)
    }

    /// Floating-point operations of one pass (2 per multiply-add).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.out_channels * self.in_channels * self.pixels) as f64
    }

    /// Kernel body: args are x, dy (both NCHW), the accumulator scratch, the per-thread scratch
    /// ([`thread_scratch_len`](Self::thread_scratch_len) per thread), dw.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let [x, dy, scratch, per_thread, dw] = [0, 1, 2, 3, 4].map(|k| load_arg(b, ptr, args, k));
        let gathered = thread_share(b, per_thread, thread, self.thread_scratch_len());
        let kblocks = self.out_channels / self.kb;
        let (full_cb, rest_cb) = (self.in_channels / self.cb, self.in_channels % self.cb);
        let flags = MemFlagsData::new().with_notrap();
        let tile_addr = |b: &mut FunctionBuilder, g: Value| {
            let off = mul(b, g, self.tile_bytes());
            b.ins().iadd(scratch, off)
        };
        // (first output channel, first input channel, whether the tile is a partial one) of g.
        let cblocks = self.in_channels.div_ceil(self.cb);
        let decode = |b: &mut FunctionBuilder, g: Value| {
            let (kblk, cblk) = if self.by_output_channels {
                (b.ins().udiv_imm_u(g, cblocks as i64), b.ins().urem_imm_u(g, cblocks as i64))
            } else {
                (b.ins().urem_imm_u(g, kblocks as i64), b.ins().udiv_imm_u(g, kblocks as i64))
            };
            let partial = b.ins().icmp_imm_u(IntCC::Equal, cblk, full_cb as i64);
            (mul(b, kblk, self.kb), mul(b, cblk, self.cb), partial)
        };
        // Runs `body` with the tile's input-channel count: `cb`, or the rest for a partial tile.
        let by_width = |b: &mut FunctionBuilder, partial: Value, body: &mut dyn FnMut(&mut FunctionBuilder, usize)| {
            if rest_cb == 0 {
                return body(b, self.cb);
            }
            let (whole, part, done) = (b.create_block(), b.create_block(), b.create_block());
            b.ins().brif(partial, part, &[], whole, &[]);
            for (block, width) in [(whole, self.cb), (part, rest_cb)] {
                b.switch_to_block(block);
                body(b, width);
                b.ins().jump(done, &[]);
            }
            b.switch_to_block(done);
        };

        // Zero this thread's running sums and totals.
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let tile = tile_addr(b, g);
            let zero = b.ins().f32const(0.0);
            let zero = b.ins().splat(types::F32X4, zero);
            for i in 0..self.tile_bytes() / 16 {
                b.ins().store(flags, zero, tile, 16 * i as i32);
            }
            vec![]
        });

        let chunks = self.pixels.div_ceil(self.chunk);
        let (sets_lo, sets_hi) = (iconst(b, 0), iconst(b, self.batch.div_ceil(self.images) as i64));
        for_loop(b, sets_lo, sets_hi, 1, &[], &mut |b, set, _| {
            // Images n0..n1; after them, the running sums go into the totals.
            let n0 = mul(b, set, self.images);
            let n1 = {
                let end = b.ins().iadd_imm_s(n0, self.images as i64);
                let batch = iconst(b, self.batch as i64);
                b.ins().umin(end, batch)
            };
            let flushes = {
                let within = b.ins().urem_imm_u(n1, self.flush as i64);
                let period_end = b.ins().icmp_imm_u(IntCC::Equal, within, 0);
                let last = b.ins().icmp_imm_u(IntCC::Equal, n1, self.batch as i64);
                b.ins().bor(period_end, last)
            };
            let (ch_lo, ch_hi) = (iconst(b, 0), iconst(b, chunks as i64));
            for_loop(b, ch_lo, ch_hi, 1, &[], &mut |b, ch, _| {
                let p_lo = mul(b, ch, self.chunk);
                let p_end = b.ins().iadd_imm_s(p_lo, self.chunk as i64);
                let p_all = iconst(b, self.pixels as i64);
                let p_hi = b.ins().umin(p_end, p_all);
                let last_chunk = b.ins().icmp_imm_u(IntCC::Equal, ch, chunks as i64 - 1);
                let flush_now = b.ins().band(last_chunk, flushes);
                if self.joined {
                    self.gather_joined(b, [x, dy], gathered, n0);
                } else if self.stride > 1 {
                    self.gather(b, x, gathered, [n0, n1], [p_lo, p_hi]);
                }
                for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
                    let tile = tile_addr(b, g);
                    let (k0, c0, partial) = decode(b, g);
                    by_width(b, partial, &mut |b, width| {
                        let running: Vec<Value> = self
                            .slots(width)
                            .map(|i| b.ins().load(self.vector(), flags, tile, (self.running() * i) as i32))
                            .collect();
                        if self.joined {
                            // The tile's rows of the set, x's first, then dy's.
                            let row = self.row();
                            let x0 = {
                                let e = mul(b, c0, row);
                                elem_addr(b, gathered, e)
                            };
                            let dy0 = {
                                let e = b.ins().iadd_imm_s(k0, self.in_channels as i64);
                                let e = mul(b, e, row);
                                elem_addr(b, gathered, e)
                            };
                            let plane = (4 * row) as i32;
                            let at = Planes { dy0, x0, x_plane: plane, dy_plane: plane, width };
                            let whole = [iconst(b, 0), iconst(b, row as i64)];
                            let acc = self.sweep(b, mul_add, &at, &running, whole, last_chunk);
                            self.keep(b, tile, width, &acc, flush_now);
                            return;
                        }
                        let (_, acc) = for_loop(b, n0, n1, 1, &running, &mut |b, n, acc| {
                            // The tile's first planes in image n.
                            let dy0 = {
                                let e = mul(b, n, self.out_channels);
                                let e = b.ins().iadd(e, k0);
                                let e = mul(b, e, self.pixels);
                                elem_addr(b, dy, e)
                            };
                            // x's row for pixel 0 (at a stride, as if the gathered chunk's
                            // rows started at pixel p_lo).
                            let (x0, x_plane) = if self.stride > 1 {
                                let e = b.ins().isub(n, n0);
                                let e = mul(b, e, self.in_channels);
                                let e = b.ins().iadd(e, c0);
                                let e = mul(b, e, self.chunk);
                                let e = b.ins().isub(e, p_lo);
                                (elem_addr(b, gathered, e), self.chunk)
                            } else {
                                let e = mul(b, n, self.in_channels);
                                let e = b.ins().iadd(e, c0);
                                let e = mul(b, e, self.pixels);
                                (elem_addr(b, x, e), self.pixels)
                            };
                            let dy_plane = (4 * self.pixels) as i32;
                            let at = Planes { dy0, x0, x_plane: (4 * x_plane) as i32, dy_plane, width };
                            self.sweep(b, mul_add, &at, acc, [p_lo, p_hi], last_chunk)
                        });
                        self.keep(b, tile, width, &acc, flush_now);
                    });
                    vec![]
                });
                vec![]
            });
            vec![]
        });

        // Scatter: dw[k0 + k][c0 + c] = the lanes of accumulator (k, c), summed in f64.
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let tile = tile_addr(b, g);
            let (k0, c0, partial) = decode(b, g);
            let out = {
                let e = mul(b, k0, self.in_channels);
                let e = b.ins().iadd(e, c0);
                elem_addr(b, dw, e)
            };
            by_width(b, partial, &mut |b, width| {
                for k in 0..self.kb {
                    for c in 0..width {
                        let at = self.totals_at(k * self.cb + c);
                        let [lo, hi] = [0, 16].map(|h| b.ins().load(types::F64X2, flags, tile, at + h));
                        let pairs = b.ins().fadd(lo, hi);
                        let (a, z) = (b.ins().extractlane(pairs, 0), b.ins().extractlane(pairs, 1));
                        let sum = b.ins().fadd(a, z);
                        let sum = b.ins().fdemote(types::F32, sum);
                        b.ins().store(flags, sum, out, ((k * self.in_channels + c) * 4) as i32);
                    }
                }
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Gathers pixels `p_lo..p_hi` (whole output rows) of every input channel of images `n0..n1`
    /// into `gathered` (`[image - n0][channel][pixel - p_lo]`, `chunk` per channel).
    fn gather(
        &self,
        b: &mut FunctionBuilder,
        x: Value,
        gathered: Value,
        [n0, n1]: [Value; 2],
        [p_lo, p_hi]: [Value; 2],
    ) {
        let flags = MemFlagsData::new().with_notrap();
        let [h, w] = self.in_hw;
        let (s, ow) = (self.stride, self.out_w);
        let planes_lo = mul(b, n0, self.in_channels);
        let planes_hi = mul(b, n1, self.in_channels);
        let row_lo = b.ins().udiv_imm_u(p_lo, ow as i64);
        let row_hi = b.ins().iadd_imm_s(p_hi, ow as i64 - 1);
        let row_hi = b.ins().udiv_imm_u(row_hi, ow as i64);
        for_loop(b, planes_lo, planes_hi, 1, &[], &mut |b, plane, _| {
            let to_plane = {
                let e = b.ins().isub(plane, planes_lo);
                mul(b, e, self.chunk)
            };
            let from_plane = mul(b, plane, h * w);
            for_loop(b, row_lo, row_hi, 1, &[], &mut |b, i, _| {
                let from = {
                    let e = mul(b, i, s * w);
                    let e = b.ins().iadd(from_plane, e);
                    elem_addr(b, x, e)
                };
                let to = {
                    let e = mul(b, i, ow);
                    let e = b.ins().isub(e, p_lo);
                    let e = b.ins().iadd(to_plane, e);
                    elem_addr(b, gathered, e)
                };
                for j in 0..ow {
                    let v = b.ins().load(types::F32, flags.with_readonly(), from, (4 * s * j) as i32);
                    b.ins().store(flags, v, to, 4 * j as i32);
                }
                vec![]
            });
            vec![]
        });
    }

    /// Gathers the `images` images from `n0` into `gathered` as a joined kernel's rows: x's
    /// channels, then dy's, each `[image][pixel]` over [`row`](Self::row) elements, the last
    /// vector's lanes past the set's pixels zero.
    fn gather_joined(&self, b: &mut FunctionBuilder, [x, dy]: [Value; 2], gathered: Value, n0: Value) {
        let flags = MemFlagsData::new().with_notrap();
        let (row, pixels, images) = (self.row(), self.pixels, self.images);
        let [h, w] = self.in_hw;
        let (s, ow) = (self.stride, self.out_w);
        // Channel `c` of image `n0 + i` of `tensor` (`channels` planes of `plane` elements each)
        // into row `first_row + c` from element `i * pixels`; `copy` moves one plane.
        let rows = |b: &mut FunctionBuilder,
                    tensor: Value,
                    [channels, plane, first_row]: [usize; 3],
                    copy: &dyn Fn(&mut FunctionBuilder, Value, Value)| {
            let (lo, hi) = (iconst(b, 0), iconst(b, channels as i64));
            for_loop(b, lo, hi, 1, &[], &mut |b, c, _| {
                let to_row = {
                    let e = b.ins().iadd_imm_s(c, first_row as i64);
                    let e = mul(b, e, row);
                    elem_addr(b, gathered, e)
                };
                let (first, last) = (iconst(b, 0), iconst(b, images as i64));
                for_loop(b, first, last, 1, &[], &mut |b, i, _| {
                    let from = {
                        let n = b.ins().iadd(n0, i);
                        let e = mul(b, n, channels);
                        let e = b.ins().iadd(e, c);
                        let e = mul(b, e, plane);
                        elem_addr(b, tensor, e)
                    };
                    let to = {
                        let e = mul(b, i, pixels);
                        elem_addr(b, to_row, e)
                    };
                    copy(b, from, to);
                    vec![]
                });
                let zero = b.ins().f32const(0.0);
                for p in images * pixels..row {
                    b.ins().store(flags, zero, to_row, (4 * p) as i32);
                }
                vec![]
            });
        };
        // `len` contiguous elements, by vectors and then one by one.
        let contiguous = |len: usize| {
            move |b: &mut FunctionBuilder, from: Value, to: Value| {
                let read = flags.with_readonly();
                for v in 0..len / 4 {
                    let x = b.ins().load(types::F32X4, read, from, (16 * v) as i32);
                    b.ins().store(flags, x, to, (16 * v) as i32);
                }
                for p in len / 4 * 4..len {
                    let x = b.ins().load(types::F32, read, from, (4 * p) as i32);
                    b.ins().store(flags, x, to, (4 * p) as i32);
                }
            }
        };
        // At a stride, every `s`-th pixel of every `s`-th row.
        let strided = move |b: &mut FunctionBuilder, from: Value, to: Value| {
            let read = flags.with_readonly();
            for i in 0..pixels / ow {
                for j in 0..ow {
                    let x = b.ins().load(types::F32, read, from, (4 * (i * s * w + j * s)) as i32);
                    b.ins().store(flags, x, to, (4 * (i * ow + j)) as i32);
                }
            }
        };
        if s == 1 {
            rows(b, x, [self.in_channels, h * w, 0], &contiguous(pixels));
        } else {
            rows(b, x, [self.in_channels, h * w, 0], &strided);
        }
        rows(b, dy, [self.out_channels, pixels, self.in_channels], &contiguous(pixels));
    }

    /// Byte offset of accumulator `i`'s f64 totals in its tile.
    fn totals_at(&self, i: usize) -> i32 {
        (self.kb * self.cb * self.running() + i * TOTALS) as i32
    }

    /// Slots of a tile's scratch that a tile `width` input channels wide uses, in the order of
    /// its accumulators (output channel, then input channel).
    fn slots(&self, width: usize) -> impl Iterator<Item = usize> + use<> {
        let cb = self.cb;
        (0..self.kb).flat_map(move |k| (0..width).map(move |c| k * cb + c))
    }

    /// The tile's accumulators `acc` (`kb` by `at.width`, index `k * at.width + c`) after adding
    /// pixels `p_lo..p_hi` (whole vectors), and with `tail` (the last chunk) the last
    /// `pixels % lanes` pixels one by one into lane 0.
    fn sweep(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        at: &Planes,
        acc: &[Value],
        [p_lo, p_hi]: [Value; 2],
        tail: Value,
    ) -> Vec<Value> {
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let plane = at.dy_plane;
        // `vectors` steps of a vector of pixels from pixel `p` (`ty`: the vector type, or `F32`
        // for steps of one pixel in lane 0): kb vectors of dy held, one of x at a time.
        let vector = self.vector();
        let step = |b: &mut FunctionBuilder, p: Value, acc: &[Value], vectors: usize, ty: Type| {
            let bytes = b.ins().ishl_imm_u(p, 2);
            let (dy_at, x_at) = (b.ins().iadd(at.dy0, bytes), b.ins().iadd(at.x0, bytes));
            let mut acc = acc.to_vec();
            let lane = |b: &mut FunctionBuilder, base: Value, offset: i32| {
                if ty == vector {
                    b.ins().load(ty, read, base, offset)
                } else {
                    let s = b.ins().load(types::F32, read, base, offset);
                    b.ins().scalar_to_vector(vector, s)
                }
            };
            let bytes_per = ty.bytes() as i32;
            for v in 0..vectors as i32 {
                let dys: Vec<Value> = (0..self.kb as i32).map(|k| lane(b, dy_at, k * plane + v * bytes_per)).collect();
                for c in 0..at.width {
                    let xv = lane(b, x_at, c as i32 * at.x_plane + v * bytes_per);
                    for (k, &d) in dys.iter().enumerate() {
                        let a = &mut acc[k * at.width + c];
                        *a = mul_add_emit(b, mul_add, d, xv, *a);
                    }
                }
            }
            acc
        };
        let lanes = self.lanes as i64;
        let (rest, acc) = for_loop(b, p_lo, p_hi, 2 * lanes, acc, &mut |b, p, acc| step(b, p, acc, 2, vector));
        let (_, acc) = for_loop(b, rest, p_hi, lanes, &acc, &mut |b, p, acc| step(b, p, acc, 1, vector));
        // (A joined row is whole vectors.)
        let tail_pixels = if self.joined { 0 } else { self.pixels % self.lanes };
        if tail_pixels == 0 {
            return acc;
        }
        // The last pixels, each a vector with one lane (zeros above), in the last chunk (every
        // chunk, when chunks hold whole images).
        let first = iconst(b, (self.pixels - tail_pixels) as i64);
        if self.chunk >= self.pixels {
            return step(b, first, &acc, tail_pixels, types::F32);
        }
        // Both targets take the sums as parameters of their own, so that each is used once in
        // either (and the multiply-adds add into their registers, as in `for_loop`).
        let (with_tail, done) = (b.create_block(), b.create_block());
        for &a in &acc {
            b.append_block_param(with_tail, vector);
            b.append_block_param(done, b.func.dfg.value_type(a));
        }
        let pass: Vec<_> = acc.iter().map(|&a| a.into()).collect();
        b.ins().brif(tail, with_tail, &pass, done, &pass);
        b.switch_to_block(with_tail);
        let inside = b.block_params(with_tail).to_vec();
        let tailed = step(b, first, &inside, tail_pixels, types::F32);
        let pass: Vec<_> = tailed.iter().map(|&a| a.into()).collect();
        b.ins().jump(done, &pass);
        b.switch_to_block(done);
        b.block_params(done).to_vec()
    }

    /// Stores the tile's running sums `acc`; with `flush`, adds them, widened, to the totals and
    /// restarts them at zero (an f32x8 sum in its two f32x4 halves, read back from the store).
    fn keep(&self, b: &mut FunctionBuilder, tile: Value, width: usize, acc: &[Value], flush: Value) {
        let flags = MemFlagsData::new().with_notrap();
        for (i, &a) in self.slots(width).zip(acc) {
            b.ins().store(flags, a, tile, (self.running() * i) as i32);
        }
        if_then(b, flush, &mut |b| {
            let zero = b.ins().f32const(0.0);
            let zero = b.ins().splat(self.vector(), zero);
            for i in self.slots(width) {
                for quad in 0..self.lanes / 4 {
                    let a = b.ins().load(types::F32X4, flags, tile, (self.running() * i + 16 * quad) as i32);
                    let high = shuffle32(b, a, a, [2, 3, 6, 7]);
                    for (half, v) in [a, high].into_iter().enumerate() {
                        let offset = self.totals_at(i) + 16 * half as i32;
                        let wide = b.ins().fvpromote_low(v);
                        let total = b.ins().load(types::F64X2, flags, tile, offset);
                        let total = b.ins().fadd(total, wide);
                        b.ins().store(flags, total, tile, offset);
                    }
                }
                b.ins().store(flags, zero, tile, (self.running() * i) as i32);
            }
        });
    }

    /// Bytes of an accumulator's running sums (a tile's come first in its scratch): one vector.
    fn running(&self) -> usize {
        4 * self.lanes
    }

    /// The accumulators' vector type.
    fn vector(&self) -> Type {
        f32_vector(self.lanes)
    }
}

/// Where a tile's planes start in this image or joined row (pixel 0 of its first output and input
/// channels), bytes between its x planes and between its dy planes, and how many input channels
/// it has.
struct Planes {
    dy0: Value,
    x0: Value,
    x_plane: i32,
    dy_plane: i32,
    width: usize,
}

/// The greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
