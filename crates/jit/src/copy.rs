//! Strided, channel-offset copies between NCHW tensors: the option-A shortcut and its gradient.

use crate::codegen::{elem_addr, entry, fill, for_loop, iconst, load_arg, shuffle32};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, types};
use cranelift_frontend::FunctionBuilder;

/// A copy between NCHW tensors with channel offsets and spatial steps into a zeroed destination:
/// `dst[n][dst_c0 + c][i * dst_step][j * dst_step] = src[n][src_c0 + c][i * src_step][j * src_step]`
/// for `i, j` over `extent`, and zero elsewhere. The option-A shortcut (src_step 2, dst channel
/// offset) and its gradient (dst_step 2, src channel offset) are both this.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CopySpec {
    /// Batch size.
    pub batch: usize,
    /// Channels copied.
    pub channels: usize,
    /// Source (channels, height, width), first channel read, spatial step.
    pub src: ([usize; 3], usize, usize),
    /// Destination (channels, height, width), first channel written, spatial step.
    pub dst: ([usize; 3], usize, usize),
    /// Copied rows and columns.
    pub extent: [usize; 2],
}

impl CopySpec {
    /// Kernel body: one group per image; args are source, destination. Each copied row runs in
    /// vectors of 4 outputs where its reads and writes stay inside their rows (gathering every
    /// other source element, or spreading into every other destination element beside zeros),
    /// then element by element; only the destination's elements no row writes are zeroed first.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end) = entry(b);
        let [src, dst] = [0, 1].map(|k| load_arg(b, ptr, args, k));
        let (([sc, sh, sw], s0, ss), ([dc, dh, dw], d0, ds)) = (self.src, self.dst);
        let flags = MemFlagsData::new().with_notrap();
        let read = flags.with_readonly();
        let vectors = self.vectors_per_row();
        // Where every copied row covers its destination row whole (the shortcut: step 1 and
        // the destination's size), only the channels outside the copied ones need zeros.
        let covers_planes = ds == 1 && self.extent == [dh, dw];
        for_loop(b, begin, end, 1, &[], &mut |b, n, _| {
            let image = dc * dh * dw;
            let dst_image = b.ins().imul_imm_s(n, image as i64);
            let zero = b.ins().f32const(0.0);
            let plane = dh * dw;
            let zeroed = if covers_planes {
                vec![(0, d0 * plane), ((d0 + self.channels) * plane, image - (d0 + self.channels) * plane)]
            } else {
                vec![(0, image)]
            };
            for (first, len) in zeroed.into_iter().filter(|&(_, len)| len > 0) {
                let e = b.ins().iadd_imm_s(dst_image, first as i64);
                let at = elem_addr(b, dst, e);
                fill(b, at, len, zero);
            }
            let zeros = b.ins().splat(types::F32X4, zero);
            let (c_lo, c_hi) = (iconst(b, 0), iconst(b, self.channels as i64));
            for_loop(b, c_lo, c_hi, 1, &[], &mut |b, c, _| {
                let plane = |b: &mut FunctionBuilder, channels: usize, first: usize, hw: usize| {
                    let nc = b.ins().imul_imm_s(n, channels as i64);
                    let nc = b.ins().iadd(nc, c);
                    let nc = b.ins().iadd_imm_s(nc, first as i64);
                    b.ins().imul_imm_s(nc, hw as i64)
                };
                let sp = plane(b, sc, s0, sh * sw);
                let dp = plane(b, dc, d0, dh * dw);
                let (i_lo, i_hi) = (iconst(b, 0), iconst(b, self.extent[0] as i64));
                for_loop(b, i_lo, i_hi, 1, &[], &mut |b, i, _| {
                    let srow = b.ins().imul_imm_s(i, (ss * sw) as i64);
                    let srow = b.ins().iadd(sp, srow);
                    let drow = b.ins().imul_imm_s(i, (ds * dw) as i64);
                    let drow = b.ins().iadd(dp, drow);
                    let (sa, da) = (elem_addr(b, src, srow), elem_addr(b, dst, drow));
                    let j_lo = iconst(b, 0);
                    let j_vectors = iconst(b, 4 * vectors as i64);
                    for_loop(b, j_lo, j_vectors, 4, &[], &mut |b, j, _| {
                        let (sj, dj) = (b.ins().imul_imm_s(j, 4 * ss as i64), b.ins().imul_imm_s(j, 4 * ds as i64));
                        let (sa, da) = (b.ins().iadd(sa, sj), b.ins().iadd(da, dj));
                        if ss == 2 {
                            // Source elements 2j..2j + 8, every other one.
                            let v0 = b.ins().load(types::F32X4, read, sa, 0);
                            let v1 = b.ins().load(types::F32X4, read, sa, 16);
                            let v = shuffle32(b, v0, v1, [0, 2, 4, 6]);
                            b.ins().store(flags, v, da, 0);
                        } else if ds == 2 {
                            // Destination elements 2j..2j + 8: the source's 4 beside zeros.
                            let v = b.ins().load(types::F32X4, read, sa, 0);
                            let low = shuffle32(b, v, zeros, [0, 4, 1, 5]);
                            let high = shuffle32(b, v, zeros, [2, 6, 3, 7]);
                            b.ins().store(flags, low, da, 0);
                            b.ins().store(flags, high, da, 16);
                        } else {
                            let v = b.ins().load(types::F32X4, read, sa, 0);
                            b.ins().store(flags, v, da, 0);
                        }
                        vec![]
                    });
                    let j_hi = iconst(b, self.extent[1] as i64);
                    for_loop(b, j_vectors, j_hi, 1, &[], &mut |b, j, _| {
                        let sj = b.ins().imul_imm_s(j, ss as i64);
                        let se = b.ins().iadd(srow, sj);
                        let dj = b.ins().imul_imm_s(j, ds as i64);
                        let de = b.ins().iadd(drow, dj);
                        let (sa, da) = (elem_addr(b, src, se), elem_addr(b, dst, de));
                        let v = b.ins().load(types::F32, read, sa, 0);
                        b.ins().store(flags, v, da, 0);
                        vec![]
                    });
                    vec![]
                });
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Vectors of 4 outputs per copied row: those whose reads (4 `src` steps apart, up to 8
    /// elements) and writes (up to 8) stay inside their rows. Steps other than 1 and 2 copy
    /// element by element.
    fn vectors_per_row(&self) -> usize {
        let (sw, dw) = (self.src.0[2], self.dst.0[2]);
        let (ss, ds) = (self.src.2, self.dst.2);
        if !matches!((ss, ds), (1, 1) | (2, 1) | (1, 2)) {
            return 0;
        }
        // Vector g covers outputs 4g..4g + 4: source elements up to ss (4g + 4) and destination
        // elements up to ds (4g + 4) of the row.
        (self.extent[1] / 4).min(sw / (4 * ss)).min(dw / (4 * ds))
    }
}
