//! Packing a convolution's input: a scatter of an NCHW tensor into a zero-padded layout whose
//! width is split into stride phases, so every tap reads contiguous f32x4 rows.

use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use crate::conv::mul;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
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
