//! Graph passes for skipgrad: graph-to-graph rewrites that run after gradients are taken and
//! before the JIT compiles a step.
//!
//! A [`Pass`] rewrites a [`Program`] (a graph and the nodes its user reads) and counts its
//! rewrites; a [`Pipeline`] runs passes in order and keeps every [`Stage`], so a user can dump the
//! graph before and after each pass and read counts like `elementwise: 19, conv_epilogue: 38`. Fused groups stay
//! explicit in the graph: an [`Op::Fused`](skipgrad_ir::Op::Fused) node holds the group as a body
//! graph and lists the ids of the nodes it covers.

mod error;
mod foreach;
mod fusion;
mod pipeline;
mod rebuild;

pub use error::Error;
pub use foreach::Foreach;
pub use fusion::Fuse;
pub use pipeline::{Pass, Pipeline, Program, Stage, counts};

/// Result type of the passes.
pub type Result<T, E = Error> = std::result::Result<T, E>;
