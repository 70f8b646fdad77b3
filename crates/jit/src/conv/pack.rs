//! Packing a convolution's input: a scatter of NCHW planes into a zero-padded layout whose width
//! is split into stride phases, so every tap reads contiguous f32x4 rows (two and four phases are
//! split 8 or 16 columns at a time with vector shuffles), or whose elements interleave 4 images
//! lane by lane, so that a vector holds one pixel of 4 images (4x4 transposes), or that keeps
//! every s-th row and column, rows end to end (a strided pointwise convolution). Convolution
//! kernels emit it for one image (or 4) at a time into per-thread scratch, so the packed copy
//! stays in cache and is never a kernel of its own.

use crate::codegen::mul;
use crate::codegen::{elem_addr, for_loop, iconst};
use crate::conv::transpose::{deinterleave, transpose4};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Scatter of NCHW planes into the packed, padded, phase-split layout (optionally dilated), of one
/// image, or of several interleaved lane by lane (`[plane][row][column][image]`). Positions it
/// never writes (the padding) stay zero: the scratch starts zeroed and every packing into it
/// writes the same positions.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PackSpec {
    /// Planes packed at once (the channels of one image).
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
    /// Images packed together, interleaved lane by lane: 1, or 4 (then with one phase and no
    /// dilation).
    pub images: usize,
    /// Source rows and columns packed: every one (1), or every `step`-th, laid end to end in
    /// the plane's one packed row (a strided pointwise convolution's input: source element
    /// `(step * h, step * w)` goes to column `h * out_w + w`, `out_w` the packed source columns
    /// per row; then one phase, no padding or dilation, one image).
    pub step: usize,
}

impl PackSpec {
    /// Elements of the packed buffer.
    pub fn len(&self) -> usize {
        self.planes * self.rows * self.line()
    }
    /// Elements of one packed row (every phase, every image).
    pub fn line(&self) -> usize {
        self.phases * self.row_len * self.images
    }
    /// Where column `u` of the padded input (its first image) is, from the start of a packed row.
    pub fn column(&self, u: usize) -> usize {
        ((u % self.phases) * self.row_len + u / self.phases) * self.images
    }
    /// Whether packing copies each image as it is (one phase, no padding, crop or dilation, rows
    /// and row length the source's), so that a kernel can read the source in place.
    pub fn is_identity(&self) -> bool {
        self.images == 1
            && self.step == 1
            && self.phases == 1
            && self.dilation == [1, 1]
            && self.pad_before == [0, 0]
            && [self.rows, self.row_len] == self.in_hw
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

    /// Emits the packing of planes `src_plane..src_plane + planes` of `src` into planes
    /// `0..planes` at `dst` (a convolution kernel packs one image at a time into per-thread
    /// scratch), and with several images, of the next images' planes into the following lanes.
    pub(crate) fn emit(&self, b: &mut FunctionBuilder, src: Value, dst: Value, src_plane: Value) {
        let (lo, hi) = (iconst(b, 0), iconst(b, self.planes as i64));
        self.emit_planes(b, src, dst, src_plane, [lo, hi]);
    }

    /// [`emit`](Self::emit) for planes `lo..hi` only (of the `planes` from `src_plane`), each to
    /// its own place in `dst`; the other planes of `dst` are left as they are.
    pub(crate) fn emit_planes(
        &self,
        b: &mut FunctionBuilder,
        src: Value,
        dst: Value,
        src_plane: Value,
        [lo, hi]: [Value; 2],
    ) {
        for_loop(b, lo, hi, 1, &[], &mut |b, plane, _| {
            let from = b.ins().iadd(src_plane, plane);
            if self.images == 1 {
                self.emit_plane(b, src, dst, from, plane);
            } else {
                self.emit_lanes(b, src, dst, from, plane);
            }
            vec![]
        });
    }

    /// Emits the packing of plane `src_plane` of `src` and the same plane of the next 3 images
    /// into lanes 0 to 3 of plane `dst_plane` of `dst`: 4 columns of the 4 images at a time,
    /// transposed so that each vector holds one column's pixel of every image.
    fn emit_lanes(&self, b: &mut FunctionBuilder, src: Value, dst: Value, src_plane: Value, dst_plane: Value) {
        debug_assert!(self.images == 4 && self.phases == 1 && self.dilation == [1, 1]);
        let flags = MemFlagsData::new().with_notrap();
        let [h_in, w_in] = self.in_hw;
        let image = (self.planes * h_in * w_in * 4) as i32; // bytes between images
        let cols = self.valid(1, self.row_len);
        for h in self.valid(0, self.rows) {
            let u = (h as isize + self.pad_before[0]) as usize;
            let src_row = plane_offset(b, src_plane, h_in * w_in, h * w_in);
            let src_at = elem_addr(b, src, src_row);
            let dst_row = plane_offset(b, dst_plane, self.rows * self.line(), u * self.line());
            let dst_at = elem_addr(b, dst, dst_row);
            let column = |w: usize| (4 * self.column((w as isize + self.pad_before[1]) as usize)) as i32;
            let mut w = cols.start;
            while w + 4 <= cols.end {
                let rows: Vec<Value> =
                    (0..4).map(|i| b.ins().load(types::F32X4, flags, src_at, i * image + 4 * w as i32)).collect();
                for (j, v) in transpose4(b, [rows[0], rows[1], rows[2], rows[3]]).into_iter().enumerate() {
                    b.ins().store(flags, v, dst_at, column(w + j));
                }
                w += 4;
            }
            // A width (or crop) that leaves a partial group of columns: one element at a time.
            for w in w..cols.end {
                for i in 0..4 {
                    let v = b.ins().load(types::F32, flags, src_at, i * image + 4 * w as i32);
                    b.ins().store(flags, v, dst_at, column(w) + 4 * i);
                }
            }
        }
    }

    /// Emits the packing of plane `src_plane` of `src` into plane `dst_plane` of `dst`.
    fn emit_plane(&self, b: &mut FunctionBuilder, src: Value, dst: Value, src_plane: Value, dst_plane: Value) {
        if self.step > 1 {
            return self.emit_subsampled(b, src, dst, src_plane, dst_plane);
        }
        let rows = self.valid(0, self.rows);
        let cols = self.valid(1, self.phases * self.row_len);
        let [h_in, w_in] = self.in_hw;
        for h in rows {
            let u = (h * self.dilation[0]) as isize + self.pad_before[0];
            let src_row = plane_offset(b, src_plane, h_in * w_in, h * w_in);
            let dst_row = plane_offset(
                b,
                dst_plane,
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
            } else if matches!(self.phases, 2 | 4) && self.dilation[1] == 1 {
                // p width phases (p = 2 or 4): 4p source columns at a time, split into their
                // phases (each phase's 4 positions are consecutive), then a scalar tail.
                let p = self.phases;
                let mut w = cols.start;
                while w + 4 * p <= cols.end {
                    let flags = MemFlagsData::new().with_notrap();
                    let src_at = {
                        let e = b.ins().iadd_imm_s(src_row, w as i64);
                        elem_addr(b, src, e)
                    };
                    let vectors: Vec<Value> =
                        (0..p).map(|i| b.ins().load(types::F32X4, flags, src_at, 16 * i as i32)).collect();
                    // Phase vector j holds source columns w + j, w + j + p, ...
                    for (j, v) in deinterleave(b, &vectors).into_iter().enumerate() {
                        let u = ((w + j) as isize + self.pad_before[1]) as usize;
                        let e = b.ins().iadd_imm_s(dst_row, ((u % p) * self.row_len + u / p) as i64);
                        let at = elem_addr(b, dst, e);
                        b.ins().store(flags, v, at, 0);
                    }
                    w += 4 * p;
                }
                for w in w..cols.end {
                    let u = (w as isize + self.pad_before[1]) as usize;
                    let zero = iconst(b, 0);
                    let s = b.ins().iadd_imm_s(src_row, w as i64);
                    let d = b.ins().iadd_imm_s(dst_row, ((u % p) * self.row_len + u / p) as i64);
                    copy(b, types::F32, src, s, dst, d, zero);
                }
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
    }
}

impl PackSpec {
    /// Source columns per packed source row, with a `step`: every `step`-th of the width.
    fn out_w(&self) -> usize {
        self.in_hw[1].div_ceil(self.step)
    }

    /// Emits the packing of every `step`-th row and column of plane `src_plane` of `src`, rows
    /// end to end, into plane `dst_plane` of `dst`: `4 step` source columns at a time split into
    /// their phases by shuffles (`step` 2 or 4), keeping the first; then a scalar tail.
    fn emit_subsampled(&self, b: &mut FunctionBuilder, src: Value, dst: Value, src_plane: Value, dst_plane: Value) {
        debug_assert!(self.rows == 1 && self.phases == 1 && self.images == 1 && self.pad_before == [0, 0]);
        let ([h_in, w_in], p, out_w) = (self.in_hw, self.step, self.out_w());
        let flags = MemFlagsData::new().with_notrap();
        for h in 0..h_in.div_ceil(p) {
            let src_row = plane_offset(b, src_plane, h_in * w_in, h * p * w_in);
            let dst_row = plane_offset(b, dst_plane, self.row_len, h * out_w);
            let mut w = 0;
            while matches!(p, 2 | 4) && w + 4 * p <= w_in {
                let src_at = {
                    let e = b.ins().iadd_imm_s(src_row, w as i64);
                    elem_addr(b, src, e)
                };
                let vectors: Vec<Value> =
                    (0..p).map(|i| b.ins().load(types::F32X4, flags, src_at, 16 * i as i32)).collect();
                let kept = deinterleave(b, &vectors)[0]; // columns w, w + p, w + 2p, w + 3p
                let e = b.ins().iadd_imm_s(dst_row, (w / p) as i64);
                let at = elem_addr(b, dst, e);
                b.ins().store(flags, kept, at, 0);
                w += 4 * p;
            }
            for w in (w..w_in).step_by(p) {
                let zero = iconst(b, 0);
                let s = b.ins().iadd_imm_s(src_row, w as i64);
                let d = b.ins().iadd_imm_s(dst_row, (w / p) as i64);
                copy(b, types::F32, src, s, dst, d, zero);
            }
        }
    }
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
