//! Strided backward-data as one kernel: the sub-pixel phases of the input gradient, each a small
//! stride-1 convolution storing its outputs interleaved into dx; at stride 2, the two width
//! phases of each row phase computed together, so that their outputs interleave into whole
//! vectors of dx.

use crate::MulAdd;
use crate::codegen::{entry_with_thread, for_loop, iconst, mul};
use crate::conv::ConvSpec;
use cranelift_codegen::ir::{InstBuilder, Type};
use cranelift_frontend::FunctionBuilder;

/// The phases of a strided convolution's input gradient over one range of groups, image by image:
/// each image's groups are every phase's (or pair's) groups of that image, phase 0's first, so
/// that a thread's range holds whole images of every phase (a phase that stores only zeros is not
/// left to one thread) and each packed image serves every phase. Every phase takes the same
/// arguments (dy, the weights, the epilogue's operands, the per-thread packing scratch, dx),
/// packs dy alike, and writes its own positions of dx ([`Interleave`](crate::Interleave)), so
/// together they write every element once. A phase that receives no tap has an empty kernel: it
/// stores zeros, through the epilogue.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SubPixelSpec {
    /// One convolution per output phase.
    pub phases: Vec<ConvSpec>,
    /// Phases `2i` and `2i + 1` are one row phase's even and odd columns (stride 2, as many
    /// outputs each, the same register tile), computed by the same tiles and stored interleaved
    /// into whole vectors; otherwise each phase stores lane by lane.
    pub paired: bool,
}

impl SubPixelSpec {
    /// What runs as one: each phase, or each pair of phases.
    fn runs(&self) -> Vec<(&ConvSpec, Option<&ConvSpec>)> {
        match self.paired {
            true => self.phases.chunks(2).map(|p| (&p[0], p.get(1))).collect(),
            false => self.phases.iter().map(|p| (p, None)).collect(),
        }
    }

    /// Groups: every phase's (or pair's), in order.
    pub fn groups(&self) -> usize {
        self.runs().iter().map(|(p, _)| p.groups()).sum()
    }

    /// Floating-point operations of one pass.
    pub fn flops(&self) -> f64 {
        self.phases.iter().map(|p| p.shape.flops()).sum()
    }

    /// Kernel body: for each image `begin..end` reaches, each phase's share of that image's groups;
    /// the packed image carries over between phases, since they pack dy alike.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let a = self.phases[0].load_args(b, ptr, mul_add, args, thread);
        let batch = self.phases[0].shape.batch;
        // A phase's groups run image by image (see `ConvSpec::emit`), as many per image.
        let per_image: Vec<usize> = self.runs().iter().map(|(p, _)| p.groups() / batch).collect();
        let image_groups: usize = per_image.iter().sum();
        let n_lo = b.ins().udiv_imm_u(begin, image_groups as i64);
        let last = b.ins().iadd_imm_s(end, image_groups as i64 - 1);
        let n_hi = b.ins().udiv_imm_u(last, image_groups as i64);
        let none = iconst(b, -1);
        for_loop(b, n_lo, n_hi, 1, &[none], &mut |b, n, packed| {
            let mut image = packed[0];
            // Image n's groups of each phase, from `image_first`; shifted to the phase's own
            // numbering, which starts image n at n * per_image.
            let image_first = mul(b, n, image_groups);
            let mut first = 0;
            for ((phase, odd), &groups) in self.runs().into_iter().zip(&per_image) {
                let lo = b.ins().iadd_imm_s(image_first, first as i64);
                let hi = b.ins().iadd_imm_s(lo, groups as i64);
                let from = b.ins().umax(begin, lo);
                let to = b.ins().umin(end, hi);
                let to = b.ins().umax(to, from);
                let own = mul(b, n, groups);
                let shift = b.ins().isub(own, lo);
                let (from, to) = (b.ins().iadd(from, shift), b.ins().iadd(to, shift));
                image = phase.emit(b, mul_add, &a, [from, to], image, odd);
                first += groups;
            }
            vec![image]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
