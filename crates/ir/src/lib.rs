//! The graph IR of skipgrad: a graph is a topologically ordered list of single-output nodes, each
//! holding its [`Op`] (with attributes), its inputs, its output [`TensorType`] and its [`Role`].
//!
//! Everything else in skipgrad reads or writes this IR: the tape records into it, the reference
//! interpreter evaluates it, passes rewrite it and the JIT compiles it. Shape inference runs when a
//! node is added ([`Graph::add_node`]), so an ill-shaped graph cannot be built: a mismatch is a typed
//! [`Error`] naming the op, its attributes and the offending shapes. 4-d tensors are NCHW.

pub mod debug;
mod dot;
mod dump;
mod error;
mod graph;
mod infer;
mod json;
mod op;
mod shape;
mod tensor;

pub use error::Error;
pub use graph::{Graph, Node, NodeId, Role};
pub use infer::infer;
pub use json::JSON_SCHEMA_VERSION;
pub use op::{Attr, Axes, Conv2dAttrs, Fused, Op, PoolAttrs, ShortcutAttrs};
pub use shape::{DType, Shape, TensorType};
pub use tensor::{Data, Tensor};

/// Result type of the IR crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
