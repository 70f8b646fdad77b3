//! Convolution weight gradients: row by row for any stride, and over flat grids for stride 1.

use crate::MulAdd;
use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use crate::conv::{ConvShape, mul, mul_add_emit, plane_index};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The weight gradient of a convolution: `dw[k][c][r][s] = sum x_packed * dy` over images and
/// output pixels, from the packed input and the NCHW output gradient, row by row (any stride).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct WeightGradSpec {
    /// Sizes, kernel, stride; `out_hw` is dy's.
    pub shape: ConvShape,
    /// Output channels per tile (times the kernel width accumulators).
    pub kb: usize,
}

impl WeightGradSpec {
    /// Groups: one per (block of output channels, input channel, kernel row).
    pub fn groups(&self) -> usize {
        (self.shape.out_channels / self.kb) * self.shape.in_channels * self.shape.kernel[0]
    }

    /// Kernel body: args are packed input, dy, dw.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let [xp, dy, dw] = [0, 1, 2].map(|k| load_arg(b, ptr, args, k));
        let [kh, kw] = self.shape.kernel;
        let ow_n = self.shape.out_hw[1];
        let c_n = self.shape.in_channels;
        let accs = self.kb * kw;
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let r = b.ins().urem_imm_u(g, kh as i64);
            let t = b.ins().udiv_imm_u(g, kh as i64);
            let c = b.ins().urem_imm_u(t, c_n as i64);
            let kb = b.ins().udiv_imm_u(t, c_n as i64);
            let k0 = mul(b, kb, self.kb);
            let zero_s = b.ins().f32const(0.0);
            let zero_v = b.ins().splat(types::F32X4, zero_s);
            let vector_end = ow_n / 4 * 4;
            // Vector loops over whole f32x4 columns carry only vector accumulators (no spills);
            // the scalar tail columns get a loop nest of their own.
            let vector = self.accumulate(b, mul_add, [xp, dy], [c, r, k0], types::F32X4, 0, vector_end, zero_v);
            let scalar = self.accumulate(b, mul_add, [xp, dy], [c, r, k0], types::F32, vector_end, ow_n, zero_s);
            let acc: Vec<Value> = vector.into_iter().chain(scalar).collect();
            // dw[k0 + k][c][r][s] = hsum(vector acc) + scalar acc.
            let out = {
                let kc = mul(b, k0, c_n);
                let kc = b.ins().iadd(kc, c);
                let kcr = mul(b, kc, kh);
                let kcr = b.ins().iadd(kcr, r);
                let e = mul(b, kcr, kw);
                elem_addr(b, dw, e)
            };
            for k in 0..self.kb {
                for s in 0..kw {
                    let i = k * kw + s;
                    let mut sum = acc[accs + i];
                    for lane in 0..4 {
                        let l = b.ins().extractlane(acc[i], lane);
                        sum = b.ins().fadd(sum, l);
                    }
                    let offset = ((k * c_n * kh * kw + s) * 4) as i32;
                    b.ins().store(MemFlagsData::new().with_notrap(), sum, out, offset);
                }
            }
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}

impl WeightGradSpec {
    /// Sums `dy[n][k0 + k][oh][ow] * x[n][c][oh * stride + r][tap s][ow]` over images, output rows
    /// and output columns `cols_lo..cols_hi`, in lanes of `ty`; returns `kb * kernel_w`
    /// accumulators (all `zero` when the column range is empty).
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [xp, dy]: [Value; 2],
        [c, r, k0]: [Value; 3],
        ty: Type,
        cols_lo: usize,
        cols_hi: usize,
        zero: Value,
    ) -> Vec<Value> {
        let [rows, phases, row_len] = self.shape.packed;
        let kw = self.shape.kernel[1];
        let [oh_n, ow_n] = self.shape.out_hw;
        let accs = vec![zero; self.kb * kw];
        if cols_lo >= cols_hi {
            return accs;
        }
        let step = if ty == types::F32X4 { 4 } else { 1 };
        let flags = MemFlagsData::new().with_notrap().with_readonly();
        let (n_lo, n_hi) = (iconst(b, 0), iconst(b, self.shape.batch as i64));
        let (_, acc) = for_loop(b, n_lo, n_hi, 1, &accs, &mut |b, n, acc| {
            let (h_lo, h_hi) = (iconst(b, 0), iconst(b, oh_n as i64));
            let (_, acc) = for_loop(b, h_lo, h_hi, 1, acc, &mut |b, oh, acc| {
                // x row: image n, channel c, padded row oh * stride + r; dy row: image n, channel k0.
                let x_row = {
                    let nc = plane_index(b, n, self.shape.in_channels, c);
                    let plane = mul(b, nc, rows);
                    let r0 = mul(b, oh, self.shape.stride[0]);
                    let row = b.ins().iadd(plane, r0);
                    let row = b.ins().iadd(row, r);
                    let e = mul(b, row, phases * row_len);
                    elem_addr(b, xp, e)
                };
                let dy_row = {
                    let nk = plane_index(b, n, self.shape.out_channels, k0);
                    let plane = mul(b, nk, oh_n);
                    let row = b.ins().iadd(plane, oh);
                    let e = mul(b, row, ow_n);
                    elem_addr(b, dy, e)
                };
                let (w_lo, w_hi) = (iconst(b, cols_lo as i64), iconst(b, cols_hi as i64));
                let (_, acc) = for_loop(b, w_lo, w_hi, step, acc, &mut |b, ow, acc| {
                    let mut acc = acc.to_vec();
                    let bytes = b.ins().ishl_imm_u(ow, 2);
                    let (xa, da) = (b.ins().iadd(x_row, bytes), b.ins().iadd(dy_row, bytes));
                    let xs: Vec<Value> = (0..kw)
                        .map(|s| {
                            let (phase, q) = (s % self.shape.stride[1], s / self.shape.stride[1]);
                            b.ins().load(ty, flags, xa, ((phase * row_len + q) * 4) as i32)
                        })
                        .collect();
                    for k in 0..self.kb {
                        let d = b.ins().load(ty, flags, da, (k * oh_n * ow_n * 4) as i32);
                        for (s, &x) in xs.iter().enumerate() {
                            let a = &mut acc[k * kw + s];
                            *a = mul_add_emit(b, mul_add, d, x, *a);
                        }
                    }
                    acc
                });
                acc
            });
            acc
        });
        acc
    }
}

/// The stride-1 weight gradient over flat grids: with x packed in rows of length `grid` and dy
/// packed into the same row length (zeros past its width), input element `x[oh + r][ow + s]` is
/// at flat offset `p + r * grid + s` from dy's `p = oh * grid + ow`. So the whole output plane is
/// one contiguous vector loop: no per-row set-up, and the zero columns add nothing.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct GridWeightGradSpec {
    /// Batch size.
    pub batch: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Packed x rows per plane (output rows + kernel rows - 1).
    pub rows: usize,
    /// Output rows.
    pub out_rows: usize,
    /// Row length of both packed grids.
    pub grid: usize,
    /// Vector positions per plane: `(out_rows - 1) * grid + out_w` rounded up to 4 (`grid` is a
    /// multiple of 4 of at least `ceil4(out_w) + kernel_w - 1`, so taps never read past the plane).
    pub span: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
}

impl GridWeightGradSpec {
    /// Groups: one per input channel.
    pub fn groups(&self) -> usize {
        self.in_channels
    }

    /// Kernel body: args are packed x, packed dy, dw. One group per input channel `c`; for each
    /// image and output channel, the tile's `taps` accumulators come from a stack buffer, run the
    /// whole plane, and go back. So the x plane of (image, c) stays in L1 across all output channels
    /// and one image's dy planes stay in L2, instead of streaming both from memory per tile.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let [xp, dyp, dw] = [0, 1, 2].map(|k| load_arg(b, ptr, args, k));
        let [kh, kw] = self.kernel;
        let taps = kh * kw;
        let (c_n, k_n) = (self.in_channels, self.out_channels);
        let flags = MemFlagsData::new().with_notrap();
        let slot_bytes = (k_n * taps * 16) as u32;
        let slot = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, slot_bytes, 4));
        for_loop(b, begin, end, 1, &[], &mut |b, c, _| {
            let buffer = b.ins().stack_addr(ptr, slot, 0);
            let zero_s = b.ins().f32const(0.0);
            let zero = b.ins().splat(types::F32X4, zero_s);
            let (lo, hi) = (iconst(b, 0), iconst(b, (k_n * taps) as i64));
            for_loop(b, lo, hi, 1, &[], &mut |b, i, _| {
                let a = b.ins().imul_imm_s(i, 16);
                let a = b.ins().iadd(buffer, a);
                b.ins().store(flags, zero, a, 0);
                vec![]
            });
            let (n_lo, n_hi) = (iconst(b, 0), iconst(b, self.batch as i64));
            for_loop(b, n_lo, n_hi, 1, &[], &mut |b, n, _| {
                let x_plane = {
                    let nc = plane_index(b, n, c_n, c);
                    let e = mul(b, nc, self.rows * self.grid);
                    elem_addr(b, xp, e)
                };
                let (k_lo, k_hi) = (iconst(b, 0), iconst(b, k_n as i64));
                for_loop(b, k_lo, k_hi, 1, &[], &mut |b, k, _| {
                    let dy_plane = {
                        let nk = plane_index(b, n, k_n, k);
                        let e = mul(b, nk, self.out_rows * self.grid);
                        elem_addr(b, dyp, e)
                    };
                    let tile = b.ins().imul_imm_s(k, (taps * 16) as i64);
                    let tile = b.ins().iadd(buffer, tile);
                    let init: Vec<Value> =
                        (0..taps).map(|t| b.ins().load(types::F32X4, flags, tile, (t * 16) as i32)).collect();
                    // Cranelift's x64 FMA ties the destination to a multiplicand, so each
                    // iteration ends by moving every accumulator back to its loop register: unroll
                    // four vectors per iteration to pay those moves once per 16 pixels.
                    const UNROLL: usize = 4;
                    let body = |b: &mut FunctionBuilder, p: Value, acc: &[Value], vectors: usize| -> Vec<Value> {
                        let mut acc = acc.to_vec();
                        let bytes = b.ins().ishl_imm_u(p, 2);
                        let (xa, da) = (b.ins().iadd(x_plane, bytes), b.ins().iadd(dy_plane, bytes));
                        for u in 0..vectors {
                            let d = b.ins().load(types::F32X4, flags.with_readonly(), da, (16 * u) as i32);
                            for r in 0..kh {
                                for s in 0..kw {
                                    let offset = ((r * self.grid + s) * 4 + 16 * u) as i32;
                                    let x = b.ins().load(types::F32X4, flags.with_readonly(), xa, offset);
                                    let a = &mut acc[r * kw + s];
                                    *a = mul_add_emit(b, mul_add, d, x, *a);
                                }
                            }
                        }
                        acc
                    };
                    let (p_lo, p_hi) = (iconst(b, 0), iconst(b, self.span as i64));
                    let (rest, acc) =
                        for_loop(b, p_lo, p_hi, 4 * UNROLL as i64, &init, &mut |b, p, acc| body(b, p, acc, UNROLL));
                    let (_, acc) = for_loop(b, rest, p_hi, 4, &acc, &mut |b, p, acc| body(b, p, acc, 1));
                    for (t, &a) in acc.iter().enumerate() {
                        b.ins().store(flags, a, tile, (t * 16) as i32);
                    }
                    vec![]
                });
                vec![]
            });
            // dw[k][c][t] = horizontal sum of buffer[k][t].
            let (k_lo, k_hi) = (iconst(b, 0), iconst(b, k_n as i64));
            for_loop(b, k_lo, k_hi, 1, &[], &mut |b, k, _| {
                let tile = b.ins().imul_imm_s(k, (taps * 16) as i64);
                let tile = b.ins().iadd(buffer, tile);
                let out = {
                    let kc = mul(b, k, c_n);
                    let kc = b.ins().iadd(kc, c);
                    let e = mul(b, kc, taps);
                    elem_addr(b, dw, e)
                };
                for t in 0..taps {
                    let v = b.ins().load(types::F32X4, flags, tile, (t * 16) as i32);
                    let mut sum = b.ins().extractlane(v, 0);
                    for lane in 1..4 {
                        let l = b.ins().extractlane(v, lane);
                        sum = b.ins().fadd(sum, l);
                    }
                    b.ins().store(flags, sum, out, (t * 4) as i32);
                }
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
