//! Convolution kernels on NCHW tensors.
//!
//! A convolution's input is first *packed* ([`PackSpec`]) into a zero-padded scratch layout
//! `[N][C][rows][phases][row_len]`, where column `u` of the padded input lands in phase `u % S`
//! at position `u / S` (`S` the stride along the width). The input row a tap reads for
//! consecutive output pixels is then contiguous even at stride 2, so the main loop uses plain
//! f32x4 loads. Padding is zero from allocation and never written, so packing only scatters.
//!
//! [`ConvSpec`] computes a register tile of `kb` output channels by `vb` vectors of output
//! pixels. Per tap it loads `vb` input vectors and broadcasts `kb` weights (read through
//! [`WeightLayout`] strides, so the backward-data pass reads the forward weights flipped and
//! transposed without copying). [`WeightGradSpec`] reduces `dy * x` over the batch and the output
//! pixels for `kb` output channels by every tap of one kernel row.

use crate::MulAdd;
use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Scatter of an NCHW tensor into the packed, padded, phase-split layout (optionally dilated).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PackSpec {
    /// N * C.
    pub planes: usize,
    /// Source height and width.
    pub in_hw: [usize; 2],
    /// Source element `(h, w)` goes to padded coordinate `(h * dilation + pad_before)`.
    pub dilation: [usize; 2],
    /// Zero rows and columns before the first source element (negative crops).
    pub pad_before: [isize; 2],
    /// Packed rows per plane.
    pub rows: usize,
    /// Width phases (the convolution's stride along the width).
    pub phases: usize,
    /// Packed elements per row and phase.
    pub row_len: usize,
}

impl PackSpec {
    /// Elements of the packed buffer.
    pub fn len(&self) -> usize {
        self.planes * self.rows * self.phases * self.row_len
    }
    /// True when the packed buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Source indices (along one axis) that land inside the packed extent.
    fn valid(&self, axis: usize, extent: usize) -> std::ops::Range<usize> {
        let (d, p) = (self.dilation[axis] as isize, self.pad_before[axis]);
        let n = self.in_hw[axis] as isize;
        let lo = (0..n).find(|&i| i * d + p >= 0).unwrap_or(n);
        let hi = (0..n).rev().find(|&i| i * d + p < extent as isize).map_or(lo, |i| i + 1);
        lo as usize..(hi.max(lo)) as usize
    }

    /// Kernel body: one group per plane.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end) = entry(b);
        let src = load_arg(b, ptr, args, 0);
        let dst = load_arg(b, ptr, args, 1);
        let rows = self.valid(0, self.rows);
        let cols = self.valid(1, self.phases * self.row_len);
        let [h_in, w_in] = self.in_hw;
        for_loop(b, begin, end, 1, &[], &mut |b, plane, _| {
            for h in rows.clone() {
                let u = (h * self.dilation[0]) as isize + self.pad_before[0];
                let src_row = plane_offset(b, plane, h_in * w_in, h * w_in);
                let dst_row = plane_offset(
                    b,
                    plane,
                    self.rows * self.phases * self.row_len,
                    u as usize * self.phases * self.row_len,
                );
                if self.phases == 1 && self.dilation[1] == 1 {
                    // Contiguous: copy the row with vectors, then a scalar tail.
                    let start = (cols.start as isize + self.pad_before[1]) as usize;
                    let n = cols.len();
                    let s0 = b.ins().iadd_imm_s(src_row, cols.start as i64);
                    let d0 = b.ins().iadd_imm_s(dst_row, start as i64);
                    let (zero, len) = (iconst(b, 0), iconst(b, n as i64));
                    let (tail, _) = for_loop(b, zero, len, 4, &[], &mut |b, i, _| {
                        copy(b, types::F32X4, src, s0, dst, d0, i);
                        vec![]
                    });
                    for_loop(b, tail, len, 1, &[], &mut |b, i, _| {
                        copy(b, types::F32, src, s0, dst, d0, i);
                        vec![]
                    });
                } else {
                    for w in cols.clone() {
                        let u = (w * self.dilation[1]) as isize + self.pad_before[1];
                        let (phase, q) = (u as usize % self.phases, u as usize / self.phases);
                        let zero = iconst(b, 0);
                        let s = b.ins().iadd_imm_s(src_row, w as i64);
                        let d = b.ins().iadd_imm_s(dst_row, (phase * self.row_len + q) as i64);
                        copy(b, types::F32, src, s, dst, d, zero);
                    }
                }
            }
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}

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

/// The geometry of a convolution over a packed input: what the forward, backward-data and
/// row-wise weight-gradient kernels share.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConvShape {
    /// Batch size.
    pub batch: usize,
    /// Input channels (summed over by the forward pass).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// The packed input's rows, phases and row length (see [`PackSpec`]).
    pub packed: [usize; 3],
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

/// A direct convolution from a packed input to an NCHW output.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ConvSpec {
    /// Sizes, kernel, stride.
    pub shape: ConvShape,
    /// Offset (rows, packed columns) of output (0, 0)'s window in the packed input.
    pub origin: [usize; 2],
    /// Where the weights are.
    pub weights: WeightLayout,
    /// Output channels per register tile.
    pub kb: usize,
    /// f32x4 vectors of output pixels per register tile.
    pub vb: usize,
}

impl ConvSpec {
    /// Groups: one per (image, block of `kb` output channels, output row).
    pub fn groups(&self) -> usize {
        self.shape.batch * (self.shape.out_channels / self.kb) * self.shape.out_hw[0]
    }
    /// Packed row length this spec needs so that every tile's loads stay in the row.
    pub fn min_row_len(out_w: usize, vb: usize, kernel_w: usize, stride_w: usize) -> usize {
        out_w.div_ceil(4 * vb) * 4 * vb + (kernel_w - 1) / stride_w
    }

    /// Kernel body: args are packed input, weights, output.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let [xp, w, y] = [0, 1, 2].map(|k| load_arg(b, ptr, args, k));
        let [rows, phases, row_len] = self.shape.packed;
        let [oh_n, ow_n] = self.shape.out_hw;
        let kblocks = self.shape.out_channels / self.kb;
        let tile_w = 4 * self.vb;
        let full_tiles = ow_n / tile_w;
        let last = ow_n % tile_w; // pixels in a final partial tile

        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let oh = b.ins().urem_imm_u(g, oh_n as i64);
            let t = b.ins().udiv_imm_u(g, oh_n as i64);
            let kb = b.ins().urem_imm_u(t, kblocks as i64);
            let n = b.ins().udiv_imm_u(t, kblocks as i64);
            // Element offsets: the first input row of image n, channel 0, for this output row;
            // the first weight of this channel block; the output row of channel kb * self.kb.
            let x_row = {
                let plane = mul(b, n, self.shape.in_channels * rows);
                let r0 = mul(b, oh, self.shape.stride[0]);
                let row = b.ins().iadd(plane, r0);
                let row = b.ins().iadd_imm_s(row, self.origin[0] as i64);
                let e = mul(b, row, phases * row_len);
                b.ins().iadd_imm_s(e, self.origin[1] as i64)
            };
            let k0 = mul(b, kb, self.kb);
            let w0 = {
                let scaled = b.ins().imul_imm_s(k0, self.weights.o as i64);
                b.ins().iadd_imm_s(scaled, self.weights.base as i64)
            };
            let y_row = {
                let nk = mul(b, n, self.shape.out_channels);
                let plane = b.ins().iadd(nk, k0);
                let plane = mul(b, plane, oh_n);
                let row = b.ins().iadd(plane, oh);
                mul(b, row, ow_n)
            };
            let tiles = iconst(b, full_tiles as i64);
            let zero = iconst(b, 0);
            for_loop(b, zero, tiles, 1, &[], &mut |b, tile, _| {
                let col = mul(b, tile, tile_w);
                self.tile(b, mul_add, [xp, w, y], [x_row, w0, y_row], col, self.vb, None);
                vec![]
            });
            if last > 0 {
                let col = iconst(b, (full_tiles * tile_w) as i64);
                self.tile(b, mul_add, [xp, w, y], [x_row, w0, y_row], col, last.div_ceil(4), Some(last));
            }
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// One register tile: `kb` channels by `vb` vectors starting at output column `col`; with
    /// `valid`, only that many pixels are stored.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [xp, w, y]: [Value; 3],
        [x_row, w0, y_row]: [Value; 3],
        col: Value,
        vb: usize,
        valid: Option<usize>,
    ) {
        let [rows, phases, row_len] = self.shape.packed;
        let [kh, kw] = self.shape.kernel;
        let flags = MemFlagsData::new().with_notrap().with_readonly();
        let zero_s = b.ins().f32const(0.0);
        let zero = b.ins().splat(types::F32X4, zero_s);
        let acc0 = vec![zero; self.kb * vb];
        let (c_lo, c_hi) = (iconst(b, 0), iconst(b, self.shape.in_channels as i64));
        let x_col = b.ins().iadd(x_row, col);
        let (_, acc) = for_loop(b, c_lo, c_hi, 1, &acc0, &mut |b, c, acc| {
            let x_c = {
                let off = mul(b, c, rows * phases * row_len);
                let e = b.ins().iadd(x_col, off);
                elem_addr(b, xp, e)
            };
            let w_c = {
                let off = b.ins().imul_imm_s(c, self.weights.i as i64);
                let e = b.ins().iadd(w0, off);
                elem_addr(b, w, e)
            };
            let mut acc = acc.to_vec();
            for r in 0..kh {
                for s in 0..kw {
                    let (phase, q) = (s % self.shape.stride[1], s / self.shape.stride[1]);
                    let base = ((r * phases + phase) * row_len + q) as i32 * 4;
                    let xs: Vec<Value> =
                        (0..vb).map(|j| b.ins().load(types::F32X4, flags, x_c, base + 16 * j as i32)).collect();
                    for k in 0..self.kb {
                        let offset = (self.weights.at(k, 0, r, s) - self.weights.base) as i32 * 4;
                        let wk = b.ins().load(types::F32, flags, w_c, offset);
                        let wv = b.ins().splat(types::F32X4, wk);
                        for (j, &xv) in xs.iter().enumerate() {
                            let a = &mut acc[k * vb + j];
                            *a = mul_add_emit(b, mul_add, wv, xv, *a);
                        }
                    }
                }
            }
            acc
        });
        let out_flags = MemFlagsData::new().with_notrap();
        let y_col = b.ins().iadd(y_row, col);
        let y_base = elem_addr(b, y, y_col);
        let plane = (self.shape.out_hw[0] * self.shape.out_hw[1]) as i32 * 4;
        for k in 0..self.kb {
            for j in 0..vb {
                let v = acc[k * vb + j];
                let offset = k as i32 * plane + 16 * j as i32;
                let lanes = valid.map_or(4, |n| n.saturating_sub(4 * j).min(4));
                if lanes == 4 {
                    b.ins().store(out_flags, v, y_base, offset);
                } else {
                    for lane in 0..lanes {
                        let e = b.ins().extractlane(v, lane as u8);
                        b.ins().store(out_flags, e, y_base, offset + 4 * lane as i32);
                    }
                }
            }
        }
    }
}

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
                    let nc = mul(b, n, self.shape.in_channels);
                    let nc = b.ins().iadd(nc, c);
                    let plane = mul(b, nc, rows);
                    let r0 = mul(b, oh, self.shape.stride[0]);
                    let row = b.ins().iadd(plane, r0);
                    let row = b.ins().iadd(row, r);
                    let e = mul(b, row, phases * row_len);
                    elem_addr(b, xp, e)
                };
                let dy_row = {
                    let nk = mul(b, n, self.shape.out_channels);
                    let nk = b.ins().iadd(nk, k0);
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
                    let nc = mul(b, n, c_n);
                    let nc = b.ins().iadd(nc, c);
                    let e = mul(b, nc, self.rows * self.grid);
                    elem_addr(b, xp, e)
                };
                let (k_lo, k_hi) = (iconst(b, 0), iconst(b, k_n as i64));
                for_loop(b, k_lo, k_hi, 1, &[], &mut |b, k, _| {
                    let dy_plane = {
                        let nk = mul(b, n, k_n);
                        let nk = b.ins().iadd(nk, k);
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

/// Register-tile sizes within the 16 xmm registers: `accumulators + live inputs + 1 broadcast <=
/// 12`, leaving room for the temporaries of the x64 multiply-add lowering (13 registers already
/// spilled; the code-quality test guards this), maximising the accumulators (enough of them hide the multiply-add latency), for a tile
/// of `kb` (a divisor of `channels`, at most 6) by `n`, where `n` is at most `max_n` and the tile
/// holds `n` (or `fixed_n` when given) live input vectors.
pub(crate) fn register_tile(channels: usize, max_n: usize, fixed_n: Option<usize>) -> (usize, usize) {
    let mut best = (1, 1);
    for kb in (1..=6).filter(|d| channels.is_multiple_of(*d)) {
        let n = match fixed_n {
            Some(n) => n,
            None => (11 / (kb + 1)).min(max_n).max(1),
        };
        let regs = |(k, n): (usize, usize)| k * n + n + 1;
        let better = kb * n > best.0 * best.1 || (kb * n == best.0 * best.1 && regs((kb, n)) < regs(best));
        if regs((kb, n)) <= 12 && better {
            best = (kb, n);
        }
    }
    best
}

/// `a * b + c` in the target's preferred form.
fn mul_add_emit(b: &mut FunctionBuilder, mul_add: MulAdd, x: Value, y: Value, acc: Value) -> Value {
    match mul_add {
        MulAdd::Fused => b.ins().fma(x, y, acc),
        MulAdd::Separate => {
            let p = b.ins().fmul(x, y);
            b.ins().fadd(acc, p)
        }
    }
}

fn mul(b: &mut FunctionBuilder, v: Value, c: usize) -> Value {
    b.ins().imul_imm_s(v, c as i64)
}

/// `plane * plane_len + offset`, in elements.
fn plane_offset(b: &mut FunctionBuilder, plane: Value, plane_len: usize, offset: usize) -> Value {
    let p = mul(b, plane, plane_len);
    b.ins().iadd_imm_s(p, offset as i64)
}

/// `dst[d0 + i] = src[s0 + i]` with `ty` (f32 or f32x4).
fn copy(b: &mut FunctionBuilder, ty: Type, src: Value, s0: Value, dst: Value, d0: Value, i: Value) {
    let si = b.ins().iadd(s0, i);
    let di = b.ins().iadd(d0, i);
    let (sa, da) = (elem_addr(b, src, si), elem_addr(b, dst, di));
    let flags = MemFlagsData::new().with_notrap();
    let v = b.ins().load(ty, flags, sa, 0);
    b.ins().store(flags, v, da, 0);
}
