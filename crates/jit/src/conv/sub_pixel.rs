//! Strided backward-data as one kernel: the sub-pixel phases of the input gradient, each a small
//! stride-1 convolution storing its outputs interleaved into dx; at stride 2, the two width
//! phases of each row phase computed together, so that their outputs interleave into whole
//! vectors of dx.

use crate::MulAdd;
use crate::codegen::{entry_with_thread, iconst, part_range};
use crate::conv::ConvSpec;
use cranelift_codegen::ir::{InstBuilder, Type};
use cranelift_frontend::FunctionBuilder;

/// The phases of a strided convolution's input gradient, run one after the other over one range
/// of groups (phase 0's groups first). Every phase takes the same arguments (dy, the weights, the
/// epilogue's operands, the per-thread packing scratch, dx), packs dy alike, and writes its own
/// positions of dx ([`Interleave`](crate::Interleave)), so together they write every element once.
/// A phase that receives no tap has an empty kernel: it stores zeros, through the epilogue.
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

    /// Kernel body: each phase's share of `begin..end`; the packed image carries over between
    /// phases, since they pack dy alike.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let a = self.phases[0].load_args(b, ptr, args, thread);
        let mut image = iconst(b, -1);
        let mut first = 0;
        for (phase, odd) in self.runs() {
            let groups = phase.groups();
            let (from, to) = part_range(b, begin, end, first, groups);
            image = phase.emit(b, mul_add, &a, from, to, image, odd);
            first += groups;
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
