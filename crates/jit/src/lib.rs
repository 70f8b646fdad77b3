//! skipgrad's JIT: compiles a graph of the IR into Cranelift-generated f32x4 kernels and runs it.
//!
//! A kernel is a main loop nest plus an epilogue [`Expr`] applied to values while they are in
//! registers ([`NestSpec`]; convolutions have their own main loops in [`KernelSpec`]). The loop nest walks an outer space of *groups* (what the thread pool
//! splits) made of strided contiguous *segments*. Per group it runs a sequence of [`Pass`]es, each
//! either a reduction to a per-group local (per-channel statistics, bias gradients) or a map that
//! writes an output. Elementwise maps, per-channel maps and batch norm forward and backward are all
//! instances of this. Convolution and matrix multiply are other main loops that will feed the same
//! epilogue language.
//!
//! [`compile`] lowers each node of a graph to a kernel through one table of rules (`lower/mod.rs`),
//! compiles each distinct kernel once (a cache keyed by the spec and the target's ISA flags), and
//! returns a [`CompiledGraph`] that owns its buffers and a thread pool and replays the graph with
//! `run` without allocating.

mod buffer;
mod codegen;
mod compiler;
mod conv;
mod copy;
mod error;
mod executor;
mod expr;
mod foreach;
mod lower;
mod matmul;
mod maxpool;
mod memory;
mod nest;
mod peak;
mod plan;
mod pool;
mod rows;
mod schedule;
mod spec;
mod target;

pub use buffer::Guard;
pub use compiler::{CompileStats, Kernel, KernelCode};
pub use conv::pack::PackSpec;
pub use conv::pointwise_grad::PointwiseWeightGradSpec;
pub use conv::relayout::WeightRelayoutSpec;
pub use conv::sub_pixel::SubPixelSpec;
pub use conv::transpose::TransposeSpec;
pub use conv::weight_grad::WeightGradSpec;
pub use conv::winograd::{F2, F4, Transform, Winograd, WinogradTiles, WinogradWeightsSpec};
pub use conv::winograd_grad::WinogradGradSpec;
pub use conv::{ConvShape, ConvSpec, Interleave, WeightLayout};
pub use copy::CopySpec;
pub use error::Error;
pub use executor::{CompileOptions, CompiledGraph, KernelProfile, PROFILE_ENV, compile, profile_table};
pub use expr::{Cond, Expr};
pub use foreach::{ForeachPart, ForeachSpec};
pub use matmul::MatMulSpec;
pub use maxpool::PoolSpec;
pub use memory::MemoryReport;
pub use nest::{Nest, NestSpec, Operand, Pass};
pub use peak::PeakSpec;
pub use pool::ThreadPool;
pub use rows::{RowOp, RowSpec};
pub use spec::KernelSpec;
pub use target::{MulAdd, Target};

/// Result type of the JIT.
pub type Result<T, E = Error> = std::result::Result<T, E>;
