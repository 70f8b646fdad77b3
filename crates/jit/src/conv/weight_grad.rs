//! Convolution weight gradients: the forward convolution's register tile with the roles swapped.

use crate::MulAdd;
use crate::codegen::shuffle32;
use crate::codegen::{elem_addr, entry_with_thread, for_loop, iconst, load_arg, thread_share};
use crate::codegen::{f32_vector, mul, mul_add_emit};
use crate::conv::pack::PackSpec;
use crate::conv::transpose::TransposeSpec;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The weight gradient as an outer product, the forward convolution's register tile with the
/// roles swapped: for one tap `(r, s)`, a tile of `cb` input channels by `kv` vectors of 4 output
/// channels accumulates `x[n][c][oh * S + r][ow * S + s] * dy[n][oh][ow][k..k + 4]` over every
/// output pixel, broadcasting x and reading dy channels-last.
///
/// Loop order: images outermost, then blocks of output rows, then this thread's tiles, then the
/// block's pixels. For each image, the thread first packs the planes of x its tiles read
/// (zero-padded, [`PackSpec`]) and transposes dy to channels-last rows
/// ([`TransposeSpec`](crate::TransposeSpec)) into its share of a per-thread scratch (each
/// thread prepares every image: the result does not depend on the thread count); every tile then sweeps one block of rows ([`WeightGradSpec::block_rows`], at
/// most `BLOCK_BYTES` of transposed dy, so that it stays in cache) before the next block. A
/// tile sums one image in f32, in registers within a block and in its running sums between
/// blocks, then adds the sums, widened, to its f64 totals (a scratch buffer of
/// `[offsets: 2 x i64][cb * kv x 2 f64x2 totals][cb * kv f32x4 running sums]` per tile), so a
/// sum over a batch of images is as accurate as one image's; at the end it scatters the totals,
/// rounded, into `dw[k][c][r][s]`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct WeightGradSpec {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Elements per channels-last dy row (output channels rounded up to whole tiles; zeros past
    /// the channels).
    pub dy_row: usize,
    /// How each image of x is packed (zero-padded, stride-1 layout; planes = input channels).
    pub pack: PackSpec,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride.
    pub stride: [usize; 2],
    /// Output height and width.
    pub out_hw: [usize; 2],
    /// Input channels per tile (a divisor of `in_channels`).
    pub cb: usize,
    /// f32x4 vectors of output channels per tile (`4 * kv` divides `dy_row`).
    pub kv: usize,
    /// f32 lanes of the accumulators: 4, or 8 (each pair of the `kv` vectors in one f32x8; `kv`
    /// is then even).
    pub lanes: usize,
}

impl WeightGradSpec {
    /// Groups: one per tile (block of input channels, block of output channels, tap).
    pub fn groups(&self) -> usize {
        let [kblocks, cblocks] = self.channel_blocks();
        kblocks * cblocks * self.kernel[0] * self.kernel[1]
    }

    /// Blocks of output channels (of `4 * kv`) and of input channels (of `cb`) of the tiles.
    fn channel_blocks(&self) -> [usize; 2] {
        [self.dy_row / (4 * self.kv), self.in_channels / self.cb]
    }

    /// f32 elements of the accumulator scratch.
    pub fn scratch_len(&self) -> usize {
        self.groups() * self.tile_floats()
    }

    /// f32 slots per tile: the two offsets, the f64 totals (two f64x2 per accumulator), then the
    /// running f32x4 sums.
    fn tile_floats(&self) -> usize {
        4 + 12 * self.cb * self.kv
    }

    /// Sets of accumulators a tile sums alternate pixels into: 2 where one set holds fewer than 8
    /// (the stem's 3 input channels by 2 vectors: 6 chains of multiply-adds, each waiting for
    /// its last, leave the two pipes idle a quarter of the time) and two fit the registers.
    fn pixel_sets(&self) -> usize {
        let vectors = self.kv * 4 / self.lanes;
        let one = self.cb * vectors;
        if one < 8 && 2 * one + vectors < super::REGISTERS { 2 } else { 1 }
    }

    /// Byte offset of accumulator `i`'s running sums in its tile.
    fn running_at(&self, i: usize) -> i32 {
        (16 + 32 * self.cb * self.kv + 16 * i) as i32
    }

    /// Output rows per block: as many as keep a block's transposed dy within `BLOCK_BYTES`
    /// (the 7x7 stem's 112 rows of 64 channels, 28 KB each: 9).
    pub fn block_rows(&self) -> usize {
        let row_bytes = 4 * self.out_hw[1] * self.dy_row;
        (BLOCK_BYTES / row_bytes.max(1)).clamp(1, self.out_hw[0].max(1))
    }

    /// The transpose of one image of dy to channels-last rows.
    fn dy_rows(&self) -> TransposeSpec {
        TransposeSpec { channels: self.out_channels, pixels: self.out_hw[0] * self.out_hw[1], row: self.dy_row }
    }

    /// f32 elements of one thread's scratch: a packed image of x, then a transposed image of dy.
    pub fn thread_scratch_len(&self) -> usize {
        self.pack.len() + self.dy_rows().len()
    }
}

/// Output pixels per iteration of the weight gradient's innermost loop.
const UNROLL: usize = 4;

/// The most bytes of transposed dy that a block of output rows takes (so kept in L2 while every
/// tile sweeps it): with the stem's whole images of 3.2 MB, each tile streamed its image from L3.
pub const BLOCK_BYTES: usize = 256 << 10;

impl WeightGradSpec {
    /// Floating-point operations of one pass (2 per multiply-add).
    pub fn flops(&self) -> f64 {
        let [oh, ow] = self.out_hw;
        2.0 * (self.batch * self.out_channels * self.in_channels * oh * ow * self.kernel[0] * self.kernel[1]) as f64
    }

    /// Kernel body: args are x, dy (both NCHW), accumulator scratch, per-thread scratch
    /// ([`WeightGradSpec::thread_scratch_len`] per thread), dw.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let [x, dy, acc_buf, scratch, dw] = [0, 1, 2, 3, 4].map(|k| load_arg(b, ptr, args, k));
        let x_image = thread_share(b, scratch, thread, self.thread_scratch_len());
        let dy_image = b.ins().iadd_imm_s(x_image, (4 * self.pack.len()) as i64);
        let [kh, kw] = self.kernel;
        let [rows, row_len] = [self.pack.rows, self.pack.row_len];
        let [oh_n, ow_n] = self.out_hw;
        let (cb, kv) = (self.cb, self.kv);
        let tile_bytes = (self.tile_floats() * 4) as i64;
        let flags = MemFlagsData::new().with_notrap();
        let tile_addr = |b: &mut FunctionBuilder, g: Value| {
            let off = b.ins().imul_imm_s(g, tile_bytes);
            b.ins().iadd(acc_buf, off)
        };
        // (first output channel, first input channel, r, s) of tile g: blocks of input channels
        // outermost, so that a thread's tiles need few of them (see below).
        let [kblocks, _] = self.channel_blocks();
        let decode = |b: &mut FunctionBuilder, g: Value| {
            let s = b.ins().urem_imm_u(g, kw as i64);
            let t = b.ins().udiv_imm_u(g, kw as i64);
            let r = b.ins().urem_imm_u(t, kh as i64);
            let t = b.ins().udiv_imm_u(t, kh as i64);
            let kblk = b.ins().urem_imm_u(t, kblocks as i64);
            let cblk = b.ins().udiv_imm_u(t, kblocks as i64);
            (mul(b, kblk, 4 * kv), mul(b, cblk, cb), r, s)
        };
        // The input channels this thread's tiles read: it packs only their planes of x (the
        // packing was most of the 2-thread time of CIFAR's stride-2 gradients, every thread
        // packing every plane).
        let planes = {
            let per_block = (kblocks * kh * kw) as i64;
            let first = b.ins().udiv_imm_u(begin, per_block);
            let last = b.ins().iadd_imm_s(end, -1);
            let last = b.ins().udiv_imm_u(last, per_block);
            let after = b.ins().iadd_imm_s(last, 1);
            [first, after].map(|block| mul(b, block, cb))
        };
        // Zero this thread's tiles and record each tile's byte offsets into an image of x and dy.
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let tile = tile_addr(b, g);
            let (k0, c0, r, s) = decode(b, g);
            let x_off = {
                let row = mul(b, c0, rows);
                let row = b.ins().iadd(row, r);
                let e = mul(b, row, row_len);
                let e = b.ins().iadd(e, s);
                b.ins().ishl_imm_u(e, 2)
            };
            let dy_off = b.ins().ishl_imm_u(k0, 2);
            b.ins().store(flags, x_off, tile, 0);
            b.ins().store(flags, dy_off, tile, 8);
            let zero = b.ins().f64const(0.0);
            let zero = b.ins().splat(types::F64X2, zero);
            for i in 0..3 * cb * kv {
                b.ins().store(flags, zero, tile, 16 + 16 * i as i32);
            }
            vec![]
        });
        let block_rows = self.block_rows();
        let row_blocks = oh_n.div_ceil(block_rows);
        let (n_lo, n_hi) = (iconst(b, 0), iconst(b, self.batch as i64));
        for_loop(b, n_lo, n_hi, 1, &[], &mut |b, n, _| {
            let first_plane = mul(b, n, self.in_channels);
            self.pack.emit_planes(b, x, x_image, first_plane, planes);
            let dy_planes = {
                let e = mul(b, n, self.out_channels * oh_n * ow_n);
                elem_addr(b, dy, e)
            };
            self.dy_rows().emit_image(b, dy_planes, dy_image);
            let (rb_lo, rb_hi) = (iconst(b, 0), iconst(b, row_blocks as i64));
            for_loop(b, rb_lo, rb_hi, 1, &[], &mut |b, rb, _| {
                let h_lo = mul(b, rb, block_rows);
                let h_hi = {
                    let e = b.ins().iadd_imm_s(h_lo, block_rows as i64);
                    let rows = iconst(b, oh_n as i64);
                    b.ins().umin(e, rows)
                };
                for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
                    let tile = tile_addr(b, g);
                    self.sweep_rows(b, mul_add, tile, [x_image, dy_image], [h_lo, h_hi]);
                    vec![]
                });
                vec![]
            });
            // The image's sums into the totals, widened; the running sums back to zero.
            for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
                let tile = tile_addr(b, g);
                let zero = b.ins().f32const(0.0);
                let zero = b.ins().splat(types::F32X4, zero);
                for i in 0..cb * kv {
                    let a = b.ins().load(types::F32X4, flags, tile, self.running_at(i));
                    b.ins().store(flags, zero, tile, self.running_at(i));
                    let high = shuffle32(b, a, a, [2, 3, 6, 7]);
                    for (half, v) in [a, high].into_iter().enumerate() {
                        let offset = 16 + 32 * i as i32 + 16 * half as i32;
                        let wide = b.ins().fvpromote_low(v);
                        let total = b.ins().load(types::F64X2, flags, tile, offset);
                        let total = b.ins().fadd(total, wide);
                        b.ins().store(flags, total, tile, offset);
                    }
                }
                vec![]
            });
            vec![]
        });
        // Scatter: dw[k0 + 4j + l][c0 + i][r][s] = lane l of accumulator (i, j).
        let taps = kh * kw;
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let tile = tile_addr(b, g);
            let (k0, c0, r, s) = decode(b, g);
            let out = {
                let kc = mul(b, k0, self.in_channels);
                let kc = b.ins().iadd(kc, c0);
                let e = mul(b, kc, taps);
                let rs = mul(b, r, kw);
                let e = b.ins().iadd(e, rs);
                let e = b.ins().iadd(e, s);
                elem_addr(b, dw, e)
            };
            for i in 0..cb {
                for j in 0..kv {
                    let at = 16 + 32 * (i * kv + j) as i32;
                    let halves = [0, 16].map(|h| b.ins().load(types::F64X2, flags, tile, at + h));
                    for l in 0..4 {
                        let k = 4 * j + l;
                        let offset = ((k * self.in_channels + i) * taps * 4) as i32;
                        // Lanes past the output channels exist only in the last block.
                        if k >= self.out_channels {
                            continue;
                        }
                        let lane = b.ins().extractlane(halves[l / 2], (l % 2) as u8);
                        let lane = b.ins().fdemote(types::F32, lane);
                        if !self.out_channels.is_multiple_of(4 * kv) {
                            let valid = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, k0, (self.out_channels - k) as i64);
                            let (store, skip) = (b.create_block(), b.create_block());
                            b.ins().brif(valid, store, &[], skip, &[]);
                            b.switch_to_block(store);
                            b.ins().store(flags, lane, out, offset);
                            b.ins().jump(skip, &[]);
                            b.switch_to_block(skip);
                        } else {
                            b.ins().store(flags, lane, out, offset);
                        }
                    }
                }
            }
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Adds to the running sums of the tile at `tile` (its scratch: the byte offsets of its first
    /// x and dy elements in an image, then its sums) the products of output rows `h_lo..h_hi` of
    /// the image packed at `x_image` and transposed at `dy_image`.
    fn sweep_rows(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        tile: Value,
        [x_image, dy_image]: [Value; 2],
        [h_lo, h_hi]: [Value; 2],
    ) {
        let (cb, kv) = (self.cb, self.kv);
        // With 8 lanes, each pair of the kv vectors as one f32x8: accumulator (i, j) holds the
        // running sums of vectors 2j and 2j + 1 of input channel i.
        let (ty, pair) = (f32_vector(self.lanes), self.lanes / 4);
        let kv = kv / pair;
        let [rows, row_len] = [self.pack.rows, self.pack.row_len];
        let ow_n = self.out_hw[1];
        let plane_bytes = (rows * row_len * 4) as i32;
        let flags = MemFlagsData::new().with_notrap();
        let x_off = b.ins().load(types::I64, flags, tile, 0);
        let dy_off = b.ins().load(types::I64, flags, tile, 8);
        let x0 = b.ins().iadd(x_image, x_off);
        let dy0 = b.ins().iadd(dy_image, dy_off);
        // The running sums in the first set of accumulators, zeros in the others.
        let sets = self.pixel_sets();
        let zero = b.ins().f32const(0.0);
        let zero = b.ins().splat(ty, zero);
        let init: Vec<Value> = (0..sets * cb * kv)
            .map(|i| if i < cb * kv { b.ins().load(ty, flags, tile, self.running_at(pair * i)) } else { zero })
            .collect();
        let (_, acc) = for_loop(b, h_lo, h_hi, 1, &init, &mut |b, oh, acc| {
            let x_row = b.ins().imul_imm_s(oh, (self.stride[0] * row_len * 4) as i64);
            let x_row = b.ins().iadd(x0, x_row);
            let dy_row = b.ins().imul_imm_s(oh, (ow_n * self.dy_row * 4) as i64);
            let dy_row = b.ins().iadd(dy0, dy_row);
            let dy_end = b.ins().iadd_imm_s(dy_row, (ow_n * self.dy_row * 4) as i64);
            // Unrolled: four pixels per pass of the loop's own instructions.
            let pixel_bytes = (self.dy_row * 4) as i64;
            let x_step = (self.stride[1] * 4) as i32;
            let body = |b: &mut FunctionBuilder, dy_at: Value, carried: &[Value], pixels: usize| {
                let x_at = carried[0];
                let mut acc = carried[1..].to_vec();
                let read = flags.with_readonly();
                for p in 0..pixels {
                    let set = &mut acc[(p % sets) * cb * kv..][..cb * kv];
                    let dy_off = (p as i64 * pixel_bytes) as i32;
                    let dys: Vec<Value> =
                        (0..kv).map(|j| b.ins().load(ty, read, dy_at, dy_off + (16 * pair * j) as i32)).collect();
                    for i in 0..cb {
                        // One broadcast per input pixel, held for the tile's vectors (see
                        // the convolution's products).
                        let x = b.ins().load(types::F32, read, x_at, i as i32 * plane_bytes + p as i32 * x_step);
                        let x = b.ins().splat(ty, x);
                        for (j, &d) in dys.iter().enumerate() {
                            set[i * kv + j] = mul_add_emit(b, mul_add, x, d, set[i * kv + j]);
                        }
                    }
                }
                let next_x = b.ins().iadd_imm_s(x_at, pixels as i64 * x_step as i64);
                std::iter::once(next_x).chain(acc).collect::<Vec<Value>>()
            };
            let carried: Vec<Value> = std::iter::once(x_row).chain(acc.iter().copied()).collect();
            let (rest, carried) =
                for_loop(b, dy_row, dy_end, UNROLL as i64 * pixel_bytes, &carried, &mut |b, at, c| {
                    body(b, at, c, UNROLL)
                });
            let (_, out) = for_loop(b, rest, dy_end, pixel_bytes, &carried, &mut |b, at, c| body(b, at, c, 1));
            out[1..].to_vec()
        });
        for i in 0..cb * kv {
            let sum = (1..sets).fold(acc[i], |sum, set| b.ins().fadd(sum, acc[set * cb * kv + i]));
            b.ins().store(flags, sum, tile, self.running_at(pair * i));
        }
    }
}
