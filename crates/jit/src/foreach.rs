//! Horizontal fusion in one kernel: several independent elementwise nests, one after the other,
//! sharing the thread pool's split of their groups (the optimizer step of every parameter in one
//! call, like PyTorch's multi-tensor `foreach` kernels).

use crate::MulAdd;
use crate::codegen::{entry, load_arg, part_range};
use crate::nest::NestSpec;
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// Independent nests run as one kernel. The groups of part 0 come first, then those of part 1,
/// and so on; each thread runs its range's share of every part.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ForeachSpec {
    /// The nests, in order.
    pub parts: Vec<ForeachPart>,
}

/// One nest of a [`ForeachSpec`] and where its pointers are.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ForeachPart {
    /// The nest (its operands, then its outputs, are its pointers `0..`).
    pub nest: NestSpec,
    /// The kernel argument holding each of the nest's pointers.
    pub args: Vec<usize>,
}

impl ForeachSpec {
    /// Groups: every part's, in order.
    pub fn groups(&self) -> usize {
        self.parts.iter().map(|p| p.nest.nest.groups).sum()
    }

    /// Pointers the kernel takes: one past the highest argument a part reads.
    pub fn arity(&self) -> usize {
        self.parts.iter().flat_map(|p| p.args.iter().map(|&a| a + 1)).max().unwrap_or(0)
    }

    /// Kernel body: for each part, the intersection of its groups with `begin..end`.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let mut first = 0;
        for part in &self.parts {
            let groups = part.nest.nest.groups;
            let pointers: Vec<Value> = part.args.iter().map(|&a| load_arg(b, ptr, args, a)).collect();
            let (from, to) = part_range(b, begin, end, first, groups);
            part.nest.emit(b, &pointers, from, to, mul_add);
            first += groups;
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
