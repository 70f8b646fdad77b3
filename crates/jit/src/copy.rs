//! Strided, channel-offset copies between NCHW tensors: the option-A shortcut and its gradient.

use crate::codegen::{elem_addr, entry, fill, for_loop, iconst, load_arg};
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
    /// Kernel body: one group per image; args are source, destination.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end) = entry(b);
        let [src, dst] = [0, 1].map(|k| load_arg(b, ptr, args, k));
        let (([sc, sh, sw], s0, ss), ([dc, dh, dw], d0, ds)) = (self.src, self.dst);
        let flags = MemFlagsData::new().with_notrap();
        for_loop(b, begin, end, 1, &[], &mut |b, n, _| {
            let image = dc * dh * dw;
            let dst_image = b.ins().imul_imm_s(n, image as i64);
            // Zero the destination image.
            let zero = b.ins().f32const(0.0);
            let at = elem_addr(b, dst, dst_image);
            fill(b, at, image, zero);
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
                    let (j_lo, j_hi) = (iconst(b, 0), iconst(b, self.extent[1] as i64));
                    for_loop(b, j_lo, j_hi, 1, &[], &mut |b, j, _| {
                        let sj = b.ins().imul_imm_s(j, ss as i64);
                        let se = b.ins().iadd(srow, sj);
                        let dj = b.ins().imul_imm_s(j, ds as i64);
                        let de = b.ins().iadd(drow, dj);
                        let (sa, da) = (elem_addr(b, src, se), elem_addr(b, dst, de));
                        let v = b.ins().load(types::F32, flags, sa, 0);
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
}
