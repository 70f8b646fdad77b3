//! Transposing an image's CHW planes to channels-last rows (`[H * W][C]`): the layout in which the
//! weight-gradient kernel reads the output gradient as vectors of channels. The weight-gradient
//! kernel emits it per image into per-thread scratch.

use crate::codegen::{for_loop, iconst, shuffle32};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// `dst[p][c] = src[c][p]` for every pixel `p` and channel `c` of one image, where each
/// destination row holds `row >= channels` elements. Lanes past `channels` are never written, so
/// they keep the zeros the scratch buffer starts with.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct TransposeSpec {
    /// Channels of the source.
    pub channels: usize,
    /// Pixels per plane (height times width).
    pub pixels: usize,
    /// Elements per destination row.
    pub row: usize,
}

impl TransposeSpec {
    /// Elements of one transposed image.
    pub fn len(&self) -> usize {
        self.pixels * self.row
    }

    /// True when the destination is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Emits the transpose of one image, from `src_image` to `dst_image` (byte addresses). Blocks
    /// of 4 channels by 4 pixels go through registers as a 4x4 transpose (four f32x4 loads, eight
    /// unpacks, four stores); leftover pixels and channels are copied one by one.
    pub(crate) fn emit_image(&self, b: &mut FunctionBuilder, src_image: Value, dst_image: Value) {
        let flags = MemFlagsData::new().with_notrap();
        let read = flags.with_readonly();
        let (pixels, row) = (self.pixels, self.row);
        let plane_bytes = (pixels * 4) as i32;
        let row_bytes = (row * 4) as i64;
        let full_blocks = self.channels / 4;
        let vector_pixels = pixels / 4 * 4;
        {
            // Whole blocks of 4 channels: 4x4 tiles, then the leftover pixels.
            let (c_lo, c_hi) = (iconst(b, 0), iconst(b, full_blocks as i64));
            for_loop(b, c_lo, c_hi, 1, &[], &mut |b, block, _| {
                let from = b.ins().imul_imm_s(block, 4 * plane_bytes as i64);
                let from = b.ins().iadd(src_image, from);
                let to = b.ins().ishl_imm_u(block, 4);
                let to = b.ins().iadd(dst_image, to);
                let (p_lo, p_hi) = (iconst(b, 0), iconst(b, vector_pixels as i64));
                let (_, at) = for_loop(b, p_lo, p_hi, 4, &[from, to], &mut |b, _, at| {
                    let rows: Vec<Value> =
                        (0..4).map(|c| b.ins().load(types::F32X4, read, at[0], c * plane_bytes)).collect();
                    for (p, v) in transpose4(b, [rows[0], rows[1], rows[2], rows[3]]).into_iter().enumerate() {
                        b.ins().store(flags, v, at[1], (p as i64 * row_bytes) as i32);
                    }
                    vec![b.ins().iadd_imm_s(at[0], 16), b.ins().iadd_imm_s(at[1], 4 * row_bytes)]
                });
                let (p_lo, p_hi) = (iconst(b, vector_pixels as i64), iconst(b, pixels as i64));
                for_loop(b, p_lo, p_hi, 1, &at, &mut |b, _, at| {
                    for c in 0..4 {
                        let v = b.ins().load(types::F32, read, at[0], c * plane_bytes);
                        b.ins().store(flags, v, at[1], c * 4);
                    }
                    vec![b.ins().iadd_imm_s(at[0], 4), b.ins().iadd_imm_s(at[1], row_bytes)]
                });
                vec![]
            });
            // Leftover channels, one element at a time.
            for c in full_blocks * 4..self.channels {
                let from = b.ins().iadd_imm_s(src_image, c as i64 * plane_bytes as i64);
                let to = b.ins().iadd_imm_s(dst_image, c as i64 * 4);
                let (p_lo, p_hi) = (iconst(b, 0), iconst(b, pixels as i64));
                for_loop(b, p_lo, p_hi, 1, &[from, to], &mut |b, _, at| {
                    let v = b.ins().load(types::F32, read, at[0], 0);
                    b.ins().store(flags, v, at[1], 0);
                    vec![b.ins().iadd_imm_s(at[0], 4), b.ins().iadd_imm_s(at[1], row_bytes)]
                });
            }
        }
    }
}

/// Splits the `4p` consecutive values of `p` vectors (p = 2 or 4) into their `p` phases: vector
/// `j` of the result holds values `j, j + p, j + 2p, j + 3p`.
pub(crate) fn deinterleave(b: &mut FunctionBuilder, vectors: &[Value]) -> Vec<Value> {
    match *vectors {
        [x, y] => vec![shuffle32(b, x, y, [0, 2, 4, 6]), shuffle32(b, x, y, [1, 3, 5, 7])],
        [r0, r1, r2, r3] => transpose4(b, [r0, r1, r2, r3]).to_vec(),
        _ => unreachable!("2 or 4 phases, got {}", vectors.len()),
    }
}

/// The inverse of [`deinterleave`]: `p` phase vectors back to `4p` consecutive values.
pub(crate) fn interleave(b: &mut FunctionBuilder, phases: &[Value]) -> Vec<Value> {
    match *phases {
        [x, y] => vec![shuffle32(b, x, y, [0, 4, 1, 5]), shuffle32(b, x, y, [2, 6, 3, 7])],
        [r0, r1, r2, r3] => transpose4(b, [r0, r1, r2, r3]).to_vec(),
        _ => unreachable!("2 or 4 phases, got {}", phases.len()),
    }
}

/// The 4x4 transpose of rows `[a, b, c, d]`: column `i` as a vector `[a_i, b_i, c_i, d_i]`.
pub(crate) fn transpose4(b: &mut FunctionBuilder, [r0, r1, r2, r3]: [Value; 4]) -> [Value; 4] {
    let lo01 = shuffle32(b, r0, r1, [0, 4, 1, 5]); // a0 b0 a1 b1
    let hi01 = shuffle32(b, r0, r1, [2, 6, 3, 7]); // a2 b2 a3 b3
    let lo23 = shuffle32(b, r2, r3, [0, 4, 1, 5]); // c0 d0 c1 d1
    let hi23 = shuffle32(b, r2, r3, [2, 6, 3, 7]); // c2 d2 c3 d3
    [
        shuffle32(b, lo01, lo23, [0, 1, 4, 5]),
        shuffle32(b, lo01, lo23, [2, 3, 6, 7]),
        shuffle32(b, hi01, hi23, [0, 1, 4, 5]),
        shuffle32(b, hi01, hi23, [2, 3, 6, 7]),
    ]
}
