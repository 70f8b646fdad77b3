//! The weight gradient of a pointwise convolution (1x1, no padding) as outer products: each
//! thread transposes a chunk of x's pixels, a panel of input channels at a time, to
//! channels-last rows in its scratch, and its tiles broadcast dy where it is stored (NCHW).

use crate::MulAdd;
use crate::codegen::{elem_addr, entry_with_thread, for_loop, iconst, if_then, load_arg, mul, mul_add_emit};
use crate::codegen::{f32_vector, shuffle32, thread_share};
use crate::conv::transpose::transpose4;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// `dw[k][c] = sum over images n and output pixels p of dy[n][k][p] * x[n][c][s p]`, where
/// `s p` is output pixel `p`'s input pixel at stride `s` (`p` itself at stride 1).
///
/// A tile is `kb` output channels by a *panel* of `2 * lanes` input channels: `kb` by 2 vector
/// accumulators, each lane one element of dw. Per pixel it loads the panel's 2 vectors of x
/// (channels-last) and broadcasts `kb` values of dy, `2 kb` multiply-adds, as a direct
/// convolution's register tile does. Groups are tiles, panel by panel, so that a thread's tiles
/// of one panel follow one another.
///
/// The batch is swept in chunks: `images` whole images, or `chunk` pixels (whole output rows at
/// a stride) of one image, about `CHUNK_PIXELS` in all. For each chunk, a thread transposes the
/// chunk of x of each panel its tiles need when it reaches the panel's first tile (4 channels by
/// 4 pixels at a time at stride 1), into its scratch, where the panel's tiles read it from L1
/// while they sweep dy's rows. A tile keeps its running f32 sums in the accumulator scratch
/// between chunks (one f32 per element of dw, where summing along pixels within a vector took a
/// vector per element: those sums forced whole-row sweeps that streamed from L3).
///
/// Accuracy: every `flush` chunks (so that no f32 lane sums more than about 1024 products), the
/// running sums are added, widened, to the tile's f64 totals; at the end the totals are rounded
/// once into `dw`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PointwiseWeightGradSpec {
    /// Batch size.
    pub batch: usize,
    /// Input channels (x's planes per image).
    pub in_channels: usize,
    /// Output channels (dy's planes per image).
    pub out_channels: usize,
    /// x's height and width.
    pub in_hw: [usize; 2],
    /// Stride (both axes).
    pub stride: usize,
    /// Output height and width.
    pub out_hw: [usize; 2],
    /// Output channels per tile (the last tile of a panel takes the rest).
    pub kb: usize,
    /// Whole images per chunk (1 when an image takes several chunks).
    pub images: usize,
    /// Output pixels per chunk of an image (every pixel when a chunk holds whole images; whole
    /// output rows at a stride above 1).
    pub chunk: usize,
    /// Chunks whose products the running f32 sums take before they go into the f64 totals.
    pub flush: usize,
    /// f32 lanes of a vector: 4, or 8 (a panel is two vectors of input channels).
    pub lanes: usize,
}

/// Products per chunk of a panel (images times pixels): its transposed x, 64 bytes per pixel at
/// 8 lanes, stays in L1 while the panel's tiles read it.
pub const CHUNK_PIXELS: usize = 256;

/// Products per lane the running f32 sums take before they go into the f64 totals.
const FLUSH_PRODUCTS: usize = 1024;

/// Output pixels per iteration of a tile's sweep.
const UNROLL: usize = 2;

impl PointwiseWeightGradSpec {
    /// The tiling for x of `[batch][in_channels][in_hw]` at `stride`, dy of `out_channels`
    /// channels: tiles of 6 output channels by 2 vectors of `lanes` input channels (12
    /// accumulators, 15 registers with the loads), chunks of about `CHUNK_PIXELS` pixels.
    pub fn new(
        batch: usize,
        in_channels: usize,
        out_channels: usize,
        in_hw: [usize; 2],
        stride: usize,
        lanes: usize,
    ) -> Self {
        let out_hw = in_hw.map(|d| (d - 1) / stride + 1);
        let pixels = out_hw[0] * out_hw[1];
        let (images, chunk) = if pixels >= CHUNK_PIXELS {
            // Equal parts of an image (of whole output rows at a stride).
            let unit = if stride > 1 { out_hw[1] } else { 1 };
            let units = pixels / unit;
            let parts = (pixels / CHUNK_PIXELS).max(1);
            (1, units.div_ceil(parts) * unit)
        } else {
            ((CHUNK_PIXELS / pixels).clamp(1, batch), pixels)
        };
        let flush = (FLUSH_PRODUCTS / (images * chunk)).max(1);
        PointwiseWeightGradSpec {
            batch,
            in_channels,
            out_channels,
            in_hw,
            stride,
            out_hw,
            kb: 6.min(out_channels),
            images,
            chunk,
            flush,
            lanes,
        }
    }

    /// Input channels per panel: two vectors.
    fn panel(&self) -> usize {
        2 * self.lanes
    }

    /// Panels of input channels (the last may hold fewer).
    fn panels(&self) -> usize {
        self.in_channels.div_ceil(self.panel())
    }

    /// Blocks of `kb` output channels (the last may hold fewer).
    fn kblocks(&self) -> usize {
        self.out_channels.div_ceil(self.kb)
    }

    /// Output pixels per image.
    fn pixels(&self) -> usize {
        self.out_hw[0] * self.out_hw[1]
    }

    /// Groups: one per tile, panel by panel.
    pub fn groups(&self) -> usize {
        self.panels() * self.kblocks()
    }

    /// Bytes of one tile's scratch: its f64 totals, then its running f32 sums.
    fn tile_bytes(&self) -> usize {
        self.kb * self.panel() * (8 + 4)
    }

    /// Byte offset of the running sums in a tile's scratch.
    fn running_at(&self) -> usize {
        self.kb * self.panel() * 8
    }

    /// f32 elements of the accumulator scratch (every tile's).
    pub fn scratch_len(&self) -> usize {
        self.groups() * self.tile_bytes() / 4
    }

    /// f32 elements of one thread's scratch: one panel's transposed chunk of x.
    pub fn thread_scratch_len(&self) -> usize {
        self.images * self.chunk * self.panel()
    }

    /// Floating-point operations of one pass (2 per multiply-add).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.out_channels * self.in_channels * self.pixels()) as f64
    }

    /// Kernel body: args are x, dy (both NCHW), the accumulator scratch, the per-thread scratch
    /// ([`thread_scratch_len`](Self::thread_scratch_len) per thread), dw.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let [x, dy, scratch, per_thread, dw] = [0, 1, 2, 3, 4].map(|k| load_arg(b, ptr, args, k));
        let panel_x = thread_share(b, per_thread, thread, self.thread_scratch_len());
        let flags = MemFlagsData::new().with_notrap();
        let (kblocks, panels, width) = (self.kblocks(), self.panels(), self.panel());
        let last_kb = self.out_channels - (kblocks - 1) * self.kb;
        let last_width = self.in_channels - (panels - 1) * width;
        let tile_addr = |b: &mut FunctionBuilder, g: Value| {
            let off = mul(b, g, self.tile_bytes());
            b.ins().iadd(scratch, off)
        };
        // (panel, block of output channels) of group g.
        let decode = |b: &mut FunctionBuilder, g: Value| {
            (b.ins().udiv_imm_u(g, kblocks as i64), b.ins().urem_imm_u(g, kblocks as i64))
        };
        // Runs `body` with the number of `whole` or `last` things when `is_last` is false or true.
        let split = |b: &mut FunctionBuilder,
                     is_last: Value,
                     [whole, last]: [usize; 2],
                     body: &mut dyn FnMut(&mut FunctionBuilder, usize)| {
            if whole == last {
                return body(b, whole);
            }
            let not_last = b.ins().icmp_imm_u(IntCC::Equal, is_last, 0);
            if_then(b, not_last, &mut |b| body(b, whole));
            if_then(b, is_last, &mut |b| body(b, last));
        };

        // Zero this thread's tiles.
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let tile = tile_addr(b, g);
            let zero = b.ins().f32const(0.0);
            let zero = b.ins().splat(types::F32X4, zero);
            for i in 0..self.tile_bytes() / 16 {
                b.ins().store(flags, zero, tile, 16 * i as i32);
            }
            vec![]
        });

        let pixels = self.pixels();
        let chunks = pixels.div_ceil(self.chunk);
        let sets = self.batch.div_ceil(self.images);
        let all_chunks = sets * chunks;
        let (sets_lo, sets_hi) = (iconst(b, 0), iconst(b, sets as i64));
        for_loop(b, sets_lo, sets_hi, 1, &[], &mut |b, set, _| {
            let n0 = mul(b, set, self.images);
            let n1 = {
                let e = b.ins().iadd_imm_s(n0, self.images as i64);
                let batch = iconst(b, self.batch as i64);
                b.ins().umin(e, batch)
            };
            let (ch_lo, ch_hi) = (iconst(b, 0), iconst(b, chunks as i64));
            for_loop(b, ch_lo, ch_hi, 1, &[], &mut |b, ch, _| {
                let p_lo = mul(b, ch, self.chunk);
                let p_hi = {
                    let e = b.ins().iadd_imm_s(p_lo, self.chunk as i64);
                    let all = iconst(b, pixels as i64);
                    b.ins().umin(e, all)
                };
                let chunk = Chunk { images: [n0, n1], pixels: [p_lo, p_hi] };
                // Flush after every `flush` chunks, and after the last.
                let flush_now = {
                    let index = mul(b, set, chunks);
                    let index = b.ins().iadd(index, ch);
                    let next = b.ins().iadd_imm_s(index, 1);
                    let within = b.ins().urem_imm_u(next, self.flush as i64);
                    let period = b.ins().icmp_imm_u(IntCC::Equal, within, 0);
                    let last = b.ins().icmp_imm_u(IntCC::Equal, next, all_chunks as i64);
                    b.ins().bor(period, last)
                };
                let none = iconst(b, -1);
                for_loop(b, begin, end, 1, &[none], &mut |b, g, current| {
                    let (panel, kblock) = decode(b, g);
                    let c0 = mul(b, panel, width);
                    let k0 = mul(b, kblock, self.kb);
                    let new_panel = b.ins().icmp(IntCC::NotEqual, panel, current[0]);
                    let last_panel = b.ins().icmp_imm_u(IntCC::Equal, panel, panels as i64 - 1);
                    if_then(b, new_panel, &mut |b| {
                        split(b, last_panel, [width, last_width], &mut |b, valid| {
                            self.transpose(b, x, panel_x, c0, valid, chunk);
                        });
                    });
                    let tile = tile_addr(b, g);
                    let last_kblock = b.ins().icmp_imm_u(IntCC::Equal, kblock, kblocks as i64 - 1);
                    split(b, last_kblock, [self.kb, last_kb], &mut |b, kb| {
                        self.sweep(b, mul_add, [dy, panel_x, tile], k0, kb, chunk);
                        if_then(b, flush_now, &mut |b| self.flush_into_totals(b, tile, kb));
                    });
                    vec![panel]
                });
                vec![]
            });
            vec![]
        });

        // Scatter: dw[k0 + i][c0 + j] = the totals of accumulator row i, lane j, rounded.
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let (panel, kblock) = decode(b, g);
            let tile = tile_addr(b, g);
            let out = {
                let k0 = mul(b, kblock, self.kb);
                let e = mul(b, k0, self.in_channels);
                let c0 = mul(b, panel, width);
                let e = b.ins().iadd(e, c0);
                elem_addr(b, dw, e)
            };
            let last_kblock = b.ins().icmp_imm_u(IntCC::Equal, kblock, kblocks as i64 - 1);
            let last_panel = b.ins().icmp_imm_u(IntCC::Equal, panel, panels as i64 - 1);
            split(b, last_kblock, [self.kb, last_kb], &mut |b, kb| {
                split(b, last_panel, [width, last_width], &mut |b, valid| {
                    for i in 0..kb {
                        for j in 0..valid {
                            let total = b.ins().load(types::F64, flags, tile, (8 * (i * width + j)) as i32);
                            let v = b.ins().fdemote(types::F32, total);
                            b.ins().store(flags, v, out, (4 * (i * self.in_channels + j)) as i32);
                        }
                    }
                });
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Transposes input channels `c0..c0 + valid` of the chunk's images `n0..n1`, output pixels
    /// `p_lo..p_hi` of each, into `to` as `[image - n0][pixel - p_lo][panel channel]` (`chunk`
    /// pixels per image), zeros in the panel's channels past `valid`.
    fn transpose(&self, b: &mut FunctionBuilder, x: Value, to: Value, c0: Value, valid: usize, chunk: Chunk) {
        let Chunk { images: [n0, n1], pixels: [p_lo, p_hi] } = chunk;
        let flags = MemFlagsData::new().with_notrap();
        let read = flags.with_readonly();
        let width = self.panel();
        let [h, w] = self.in_hw;
        let (s, ow) = (self.stride, self.out_hw[1]);
        let plane_bytes = (4 * h * w) as i32;
        let pixel_bytes = (4 * width) as i64;
        for_loop(b, n0, n1, 1, &[], &mut |b, n, _| {
            // x's plane c0 of image n, and image n's first transposed pixel.
            let x_plane = {
                let e = mul(b, n, self.in_channels);
                let e = b.ins().iadd(e, c0);
                let e = mul(b, e, h * w);
                elem_addr(b, x, e)
            };
            let to_image = {
                let e = b.ins().isub(n, n0);
                let e = mul(b, e, self.chunk * width);
                let first = mul(b, p_lo, width);
                let e = b.ins().isub(e, first);
                elem_addr(b, to, e)
            };
            let zero = b.ins().f32const(0.0);
            // Pixel p's transposed row: `to_image + p * width` elements.
            let row_at = |b: &mut FunctionBuilder, p: Value| {
                let e = b.ins().imul_imm_s(p, pixel_bytes);
                b.ins().iadd(to_image, e)
            };
            if s == 1 {
                // 4 channels by 4 pixels at a time, then the pixels left one at a time.
                let (tail, _) = for_loop(b, p_lo, p_hi, 4, &[], &mut |b, p, _| {
                    let from = {
                        let e = b.ins().ishl_imm_u(p, 2);
                        b.ins().iadd(x_plane, e)
                    };
                    let at = row_at(b, p);
                    for q in 0..width / 4 {
                        let columns = if 4 * q + 4 <= valid {
                            let rows = [0, 1, 2, 3]
                                .map(|r| b.ins().load(types::F32X4, read, from, (4 * q + r) as i32 * plane_bytes));
                            transpose4(b, rows)
                        } else {
                            // The panel's last channels: those past `valid` are zeros.
                            let rows = [0, 1, 2, 3].map(|r| {
                                if 4 * q + r < valid {
                                    b.ins().load(types::F32X4, read, from, (4 * q + r) as i32 * plane_bytes)
                                } else {
                                    b.ins().splat(types::F32X4, zero)
                                }
                            });
                            transpose4(b, rows)
                        };
                        for (j, v) in columns.into_iter().enumerate() {
                            b.ins().store(flags, v, at, (j * 4 * width + 16 * q) as i32);
                        }
                    }
                    vec![]
                });
                for_loop(b, tail, p_hi, 1, &[], &mut |b, p, _| {
                    let from = {
                        let e = b.ins().ishl_imm_u(p, 2);
                        b.ins().iadd(x_plane, e)
                    };
                    let at = row_at(b, p);
                    for c in 0..width {
                        let v =
                            if c < valid { b.ins().load(types::F32, read, from, c as i32 * plane_bytes) } else { zero };
                        b.ins().store(flags, v, at, 4 * c as i32);
                    }
                    vec![]
                });
            } else {
                // At a stride, output pixel (i, j) reads input pixel (s i, s j): row by row.
                let (i_lo, i_hi) = (b.ins().udiv_imm_u(p_lo, ow as i64), b.ins().udiv_imm_u(p_hi, ow as i64));
                for_loop(b, i_lo, i_hi, 1, &[], &mut |b, i, _| {
                    let from = {
                        let e = b.ins().imul_imm_s(i, (4 * s * w) as i64);
                        b.ins().iadd(x_plane, e)
                    };
                    let p = mul(b, i, ow);
                    let at = row_at(b, p);
                    for j in 0..ow {
                        for c in 0..width {
                            let v = if c < valid {
                                b.ins().load(types::F32, read, from, c as i32 * plane_bytes + (4 * s * j) as i32)
                            } else {
                                zero
                            };
                            b.ins().store(flags, v, at, (4 * (j * width + c)) as i32);
                        }
                    }
                    vec![]
                });
            }
            vec![]
        });
    }

    /// Adds to the running sums of the tile at `tile` (`kb` output channels from `k0`) the
    /// products of the chunk's pixels `p_lo..p_hi` of images `n0..n1`: dy broadcast from its
    /// planes, x from the panel's transposed chunk.
    fn sweep(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [dy, panel_x, tile]: [Value; 3],
        k0: Value,
        kb: usize,
        chunk: Chunk,
    ) {
        let Chunk { images: [n0, n1], pixels: [p_lo, p_hi] } = chunk;
        let flags = MemFlagsData::new().with_notrap();
        let read = flags.with_readonly();
        let ty = f32_vector(self.lanes);
        let width = self.panel();
        let pixels = self.pixels();
        let running = self.running_at() as i32;
        let vector_bytes = (4 * self.lanes) as i32;
        // Accumulator (i, v): output channel k0 + i, the panel's vector v.
        let init: Vec<Value> = (0..2 * kb)
            .map(|a| {
                b.ins().load(ty, flags, tile, running + ((a / 2) * width * 4) as i32 + (a % 2) as i32 * vector_bytes)
            })
            .collect();
        let dy_plane = (4 * pixels) as i32;
        let (_, acc) = for_loop(b, n0, n1, 1, &init, &mut |b, n, acc| {
            let dy_at = {
                let e = mul(b, n, self.out_channels);
                let e = b.ins().iadd(e, k0);
                let e = mul(b, e, pixels);
                let e = b.ins().iadd(e, p_lo);
                elem_addr(b, dy, e)
            };
            let x_at = {
                let e = b.ins().isub(n, n0);
                let e = mul(b, e, self.chunk * width);
                elem_addr(b, panel_x, e)
            };
            let count = b.ins().isub(p_hi, p_lo);
            let body = |b: &mut FunctionBuilder, carried: &[Value], steps: usize| {
                let (dy_at, x_at) = (carried[0], carried[1]);
                let mut acc = carried[2..].to_vec();
                for p in 0..steps as i32 {
                    let xs = [0, 1].map(|v| b.ins().load(ty, read, x_at, p * 4 * width as i32 + v * vector_bytes));
                    for i in 0..kb {
                        let d = b.ins().load(types::F32, read, dy_at, i as i32 * dy_plane + 4 * p);
                        let d = b.ins().splat(ty, d);
                        for (v, &xv) in xs.iter().enumerate() {
                            acc[2 * i + v] = mul_add_emit(b, mul_add, d, xv, acc[2 * i + v]);
                        }
                    }
                }
                let dy_next = b.ins().iadd_imm_s(dy_at, 4 * steps as i64);
                let x_next = b.ins().iadd_imm_s(x_at, (4 * width * steps) as i64);
                [dy_next, x_next].into_iter().chain(acc).collect::<Vec<Value>>()
            };
            let carried: Vec<Value> = [dy_at, x_at].into_iter().chain(acc.iter().copied()).collect();
            let zero = iconst(b, 0);
            let (rest, carried) = for_loop(b, zero, count, UNROLL as i64, &carried, &mut |b, _, c| body(b, c, UNROLL));
            let (_, carried) = for_loop(b, rest, count, 1, &carried, &mut |b, _, c| body(b, c, 1));
            carried[2..].to_vec()
        });
        for (a, &sum) in acc.iter().enumerate() {
            b.ins().store(flags, sum, tile, running + ((a / 2) * width * 4) as i32 + (a % 2) as i32 * vector_bytes);
        }
    }

    /// Adds the running sums of the tile at `tile` (`kb` rows), widened, to its f64 totals and
    /// restarts them at zero.
    fn flush_into_totals(&self, b: &mut FunctionBuilder, tile: Value, kb: usize) {
        let flags = MemFlagsData::new().with_notrap();
        let width = self.panel();
        let running = self.running_at();
        let zero = b.ins().f32const(0.0);
        let zero = b.ins().splat(types::F32X4, zero);
        for i in 0..kb {
            for quad in 0..width / 4 {
                let element = i * width + 4 * quad;
                let sums = b.ins().load(types::F32X4, flags, tile, (running + 4 * element) as i32);
                b.ins().store(flags, zero, tile, (running + 4 * element) as i32);
                let high = shuffle32(b, sums, sums, [2, 3, 6, 7]);
                for (half, v) in [sums, high].into_iter().enumerate() {
                    let at = (8 * (element + 2 * half)) as i32;
                    let wide = b.ins().fvpromote_low(v);
                    let total = b.ins().load(types::F64X2, flags, tile, at);
                    let total = b.ins().fadd(total, wide);
                    b.ins().store(flags, total, tile, at);
                }
            }
        }
    }
}

/// One chunk of a pointwise weight gradient's reduction: images `n0..n1` (`images`) and output
/// pixels `p_lo..p_hi` (`pixels`) of each.
#[derive(Clone, Copy)]
struct Chunk {
    images: [Value; 2],
    pixels: [Value; 2],
}
