//! A direct convolution's weights rewritten into PyTorch's `[K][C][R][S]` layout from any
//! [`WeightLayout`]: the input gradient's transposed, flipped view of the forward weights steps
//! C·R·S elements per reduction channel, so its kernel read each weight from a cache line of its
//! own, at 4 KB strides for ResNet-50's 1x1 convolutions (which all fell into one set of the L1
//! and a few of the L2). The rewritten copy is a kept scratch area, like the Winograd weights.

use crate::codegen::{elem_addr, entry, for_loop, iconst, if_then, load_arg, mul};
use crate::conv::WeightLayout;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, types};
use cranelift_frontend::FunctionBuilder;

/// Output channels a group rewrites: its reads of one (reduction channel, tap) are a few
/// consecutive weights of the source.
const BLOCK: usize = 16;

/// `dst[o][i][r][s] = src[layout.at(o, i, r, s)]` for `out_channels` x `in_channels` filters of
/// `kernel` taps.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct WeightRelayoutSpec {
    /// Where weight (o, i, r, s) is in the source.
    pub from: WeightLayout,
    /// Output channels (rows of the rewritten weights).
    pub out_channels: usize,
    /// Input channels (reduced over by the convolution).
    pub in_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
}

impl WeightRelayoutSpec {
    /// Groups: blocks of `BLOCK` output channels (the last may hold fewer).
    pub fn groups(&self) -> usize {
        self.out_channels.div_ceil(BLOCK)
    }

    /// f32 elements of the rewritten weights.
    pub fn len(&self) -> usize {
        self.out_channels * self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// True when there are no weights.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The layout the rewritten weights have: PyTorch's.
    pub fn to(&self) -> WeightLayout {
        WeightLayout::kcrs(self.in_channels, self.kernel[0], self.kernel[1])
    }

    /// Kernel body: args are the source weights and the destination. A group copies, for each
    /// input channel and tap, its block's output channels (the innermost loop, unrolled).
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end) = entry(b);
        let [src, dst] = [0, 1].map(|k| load_arg(b, ptr, args, k));
        let ([kh, kw], from, to) = (self.kernel, self.from, self.to());
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let (lo, i_hi) = (iconst(b, 0), iconst(b, self.in_channels as i64));
        for_loop(b, begin, end, 1, &[], &mut |b, block, _| {
            let o0 = mul(b, block, BLOCK);
            // The block's first output channel, in each layout.
            let src_o = {
                let e = b.ins().imul_imm_s(o0, from.o as i64);
                b.ins().iadd_imm_s(e, from.base as i64)
            };
            let dst_o = b.ins().imul_imm_s(o0, to.o as i64);
            let last = self.out_channels % BLOCK;
            let copy = |b: &mut FunctionBuilder, channels: usize| {
                for_loop(b, lo, i_hi, 1, &[], &mut |b, i, _| {
                    let src_i = {
                        let e = b.ins().imul_imm_s(i, from.i as i64);
                        let e = b.ins().iadd(src_o, e);
                        elem_addr(b, src, e)
                    };
                    let dst_i = {
                        let e = b.ins().imul_imm_s(i, to.i as i64);
                        let e = b.ins().iadd(dst_o, e);
                        elem_addr(b, dst, e)
                    };
                    for r in 0..kh {
                        for s in 0..kw {
                            for o in 0..channels {
                                let at = |l: WeightLayout| (o as isize * l.o + r as isize * l.r + s as isize * l.s) * 4;
                                let v = b.ins().load(types::F32, read, src_i, at(from) as i32);
                                b.ins().store(write, v, dst_i, at(to) as i32);
                            }
                        }
                    }
                    vec![]
                });
            };
            if last == 0 {
                copy(b, BLOCK);
            } else {
                // The last block holds `last` channels.
                let full = iconst(b, (self.out_channels / BLOCK) as i64);
                let whole = b.ins().icmp(IntCC::UnsignedLessThan, block, full);
                if_then(b, whole, &mut |b| copy(b, BLOCK));
                let partial = b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, block, full);
                if_then(b, partial, &mut |b| copy(b, last));
            }
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
