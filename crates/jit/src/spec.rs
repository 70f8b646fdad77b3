//! The kinds of kernel the JIT generates, as data: what the cache keys on and what dumps show.

use crate::MulAdd;
use crate::conv::ConvSpec;
use crate::conv::pointwise_grad::PointwiseWeightGradSpec;
use crate::conv::relayout::WeightRelayoutSpec;
use crate::conv::sub_pixel::SubPixelSpec;
use crate::conv::weight_grad::WeightGradSpec;
use crate::conv::winograd::WinogradWeightsSpec;
use crate::conv::winograd_grad::WinogradGradSpec;
use crate::copy::CopySpec;
use crate::foreach::ForeachSpec;
use crate::matmul::MatMulSpec;
use crate::maxpool::PoolSpec;
use crate::nest::{NestSpec, Operand};
use crate::peak::PeakSpec;
use crate::rows::{Imports, RowOp, RowSpec};
use cranelift_codegen::ir::Type;
use cranelift_frontend::FunctionBuilder;

/// A kernel: one of the main loop nests, with its shapes as compile-time constants.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum KernelSpec {
    /// Elementwise maps and per-group reductions with an epilogue expression.
    Nest(NestSpec),
    /// Independent elementwise nests in one kernel (every parameter's update).
    Foreach(ForeachSpec),
    /// A convolution (forward, or backward-data on a dilated input), direct or by Winograd tiles,
    /// packing its input image by image (or 4 at a time, across the lanes).
    Conv(Box<ConvSpec>),
    /// Strided backward-data: sub-pixel phases storing interleaved into dx.
    SubPixel(SubPixelSpec),
    /// Convolution weight gradient: channel tiles over channels-last dy.
    WeightGrad(WeightGradSpec),
    /// Weight gradient of a 1x1, unpadded convolution: outer products over transposed x.
    PointwiseWeightGrad(PointwiseWeightGradSpec),
    /// Convolution weight gradient by Winograd F(m x m, 3x3) (3x3, stride 1).
    WinogradGrad(WinogradGradSpec),
    /// A Winograd convolution's weights, transformed for its kernel.
    WinogradWeights(WinogradWeightsSpec),
    /// A direct convolution's weights, rewritten into PyTorch's layout for its kernel.
    WeightRelayout(WeightRelayoutSpec),
    /// Strided, channel-offset copies (the option-A shortcut and its gradient).
    Copy(CopySpec),
    /// Matrix multiply.
    MatMul(MatMulSpec),
    /// Row-wise classifier ops (softmax, cross-entropy, argmax).
    Rows(RowSpec),
    /// Max pooling and its gradient.
    Pool(PoolSpec),
    /// The benchmark's calibration loop (args: one f32x4 output).
    Peak(PeakSpec),
}

impl KernelSpec {
    /// Size of the outer loop that threads split.
    pub fn groups(&self) -> usize {
        match self {
            KernelSpec::Nest(s) => s.nest.groups,
            KernelSpec::Foreach(s) => s.groups(),
            KernelSpec::Conv(s) => s.groups(),
            KernelSpec::SubPixel(s) => s.groups(),
            KernelSpec::WeightGrad(s) => s.groups(),
            KernelSpec::PointwiseWeightGrad(s) => s.groups(),
            KernelSpec::WinogradGrad(s) => s.groups(),
            KernelSpec::WinogradWeights(s) => s.groups(),
            KernelSpec::WeightRelayout(s) => s.groups(),
            KernelSpec::Copy(s) => s.batch,
            KernelSpec::MatMul(s) => s.m,
            KernelSpec::Rows(s) => s.groups(),
            KernelSpec::Pool(s) => s.planes,
            KernelSpec::Peak(_) => 1,
        }
    }
    /// Pointers the kernel takes (inputs then outputs).
    pub fn arity(&self) -> usize {
        match self {
            KernelSpec::Nest(s) => s.operands.len() + s.outputs,
            KernelSpec::Foreach(s) => s.arity(),
            KernelSpec::Copy(_) | KernelSpec::WinogradWeights(_) | KernelSpec::WeightRelayout(_) => 2,
            KernelSpec::WeightGrad(_) => 5,
            KernelSpec::PointwiseWeightGrad(_) => 5,
            KernelSpec::WinogradGrad(_) => 6,
            KernelSpec::MatMul(_) => 3,
            KernelSpec::Pool(s) => 3 + s.grad as usize,
            KernelSpec::Rows(s) => match s.op {
                RowOp::Softmax | RowOp::ArgMax => 2,
                RowOp::CrossEntropy => 3,
                RowOp::CrossEntropyGrad => 4,
            },
            KernelSpec::Conv(s) => 4 + s.epilogue.as_ref().map_or(0, |e| e.operands.len()) + 4 * usize::from(s.stats),
            KernelSpec::SubPixel(s) => KernelSpec::Conv(Box::new(s.phases[0].clone())).arity(),
            KernelSpec::Peak(_) => 1,
        }
    }
    /// Argument positions of the operands the kernel's output (its last argument) may overwrite
    /// in place: each is read only at the elements the output writes, before writing them, and
    /// not after. For a nest, the operands [`NestSpec::reads_before_writes`] allows (`Full`
    /// operands, the output stored by the last run of maps); for a convolution, its `Full`
    /// epilogue operands (read in registers just before the store).
    pub fn in_place_operands(&self) -> Vec<usize> {
        match self {
            KernelSpec::Nest(s) => {
                let last = (s.operands.len() + s.outputs).saturating_sub(1);
                (0..s.operands.len()).filter(|&k| s.reads_before_writes(k, last)).collect()
            }
            // Each phase writes its own elements of dx.
            KernelSpec::SubPixel(s) => KernelSpec::Conv(Box::new(s.phases[0].clone())).in_place_operands(),
            KernelSpec::Conv(c) => c.epilogue.as_ref().map_or(vec![], |e| {
                e.operands.iter().enumerate().filter(|(_, m)| **m == Operand::Full).map(|(k, _)| 2 + k).collect()
            }),
            _ => vec![],
        }
    }

    /// Whether the kernel's argument `written` (an output) may share memory with its argument
    /// `read` (an operand): every element of `read` is read only where `written` is written, and
    /// before it is (an optimizer's state updated in place). A nest: `read` is a `Full` operand
    /// and `written` is stored by the last run of maps (which evaluates every map before storing
    /// any, and after which nothing reads). A foreach: the same, within the one part that reads
    /// `read`. Otherwise, for the kernel's own output, its [`in_place_operands`](Self::in_place_operands).
    pub fn reads_before_writes(&self, read: usize, written: usize) -> bool {
        match self {
            KernelSpec::Nest(s) => s.reads_before_writes(read, written),
            KernelSpec::Foreach(f) => {
                let mut readers = f.parts.iter().filter(|p| p.args[..p.nest.operands.len()].contains(&read));
                match (readers.next(), readers.next()) {
                    (Some(part), None) => {
                        let local = |a: usize| part.args.iter().position(|&x| x == a);
                        match (local(read), local(written)) {
                            (Some(r), Some(w)) => part.nest.reads_before_writes(r, w),
                            _ => false,
                        }
                    }
                    _ => false,
                }
            }
            _ => written + 1 == self.arity() && self.in_place_operands().contains(&read),
        }
    }

    /// Whether the kernel computes a convolution's weights as another kernel reads them
    /// (Winograd-transformed or rewritten): it reads only weights, never activations.
    pub fn transforms_weights(&self) -> bool {
        matches!(self, KernelSpec::WinogradWeights(_) | KernelSpec::WeightRelayout(_))
    }

    /// Floating-point operations per run, for compute-bound kernels.
    pub fn flops(&self) -> Option<f64> {
        match self {
            KernelSpec::Conv(s) => Some(s.shape.flops()),
            KernelSpec::SubPixel(s) => Some(s.flops()),
            KernelSpec::WeightGrad(s) => Some(s.flops()),
            KernelSpec::PointwiseWeightGrad(s) => Some(s.flops()),
            KernelSpec::WinogradGrad(s) => Some(s.flops()),
            KernelSpec::Peak(s) => Some(s.flops_per_group()),
            KernelSpec::MatMul(s) => Some(2.0 * (s.m * s.n * s.k) as f64),
            KernelSpec::Nest(_)
            | KernelSpec::Foreach(_)
            | KernelSpec::WinogradWeights(_)
            | KernelSpec::WeightRelayout(_)
            | KernelSpec::Copy(_)
            | KernelSpec::Rows(_)
            | KernelSpec::Pool(_) => None,
        }
    }
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd, imports: &Imports) {
        match self {
            KernelSpec::Nest(s) => s.build(b, ptr, mul_add),
            KernelSpec::Foreach(s) => s.build(b, ptr, mul_add),
            KernelSpec::Conv(s) => s.build(b, ptr, mul_add),
            KernelSpec::SubPixel(s) => s.build(b, ptr, mul_add),
            KernelSpec::WeightGrad(s) => s.build(b, ptr, mul_add),
            KernelSpec::PointwiseWeightGrad(s) => s.build(b, ptr, mul_add),
            KernelSpec::WinogradGrad(s) => s.build(b, ptr, mul_add),
            KernelSpec::WinogradWeights(s) => s.build(b, ptr, mul_add),
            KernelSpec::WeightRelayout(s) => s.build(b, ptr),
            KernelSpec::Copy(s) => s.build(b, ptr),
            KernelSpec::MatMul(s) => s.build(b, ptr, mul_add),
            KernelSpec::Rows(s) => s.build(b, ptr, imports),
            KernelSpec::Pool(s) => s.build(b, ptr),
            KernelSpec::Peak(s) => s.build(b, ptr, mul_add),
        }
    }
}
