//! Typed errors of graph construction: each names the op (with attributes) and what was wrong.

use crate::Shape;

/// An error building a graph or a tensor.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Input shapes an op cannot accept, e.g. `conv2d[stride=1, pad=1]: input has 16 channels, weight expects 32`.
    #[error("{op}: {message}")]
    Shape {
        /// The op with its attributes.
        op: String,
        /// What was wrong, with the offending shapes.
        message: String,
    },
    /// Wrong number of inputs.
    #[error("{op}: takes {expected} inputs, got {got}")]
    Arity {
        /// The op with its attributes.
        op: String,
        /// How many it takes (`"2"`, `"at least 1"`).
        expected: String,
        /// How many it got.
        got: usize,
    },
    /// Inputs of different element types.
    #[error("{op}: inputs must share one dtype, got {types}")]
    DType {
        /// The op with its attributes.
        op: String,
        /// The input types, comma separated.
        types: String,
    },
    /// A node id that is not in the graph.
    #[error("node %{node} is not in this graph (it has {len} nodes)")]
    UnknownNode {
        /// The id's index.
        node: usize,
        /// How many nodes the graph has.
        len: usize,
    },
    /// Tensor data whose length does not match its shape.
    #[error("a tensor of shape {shape} needs {expected} elements, got {got}")]
    DataLength {
        /// The shape asked for.
        shape: Shape,
        /// Its element count.
        expected: usize,
        /// The data's element count.
        got: usize,
    },
    /// A JSON graph dump that does not follow the schema: where, and what was wrong.
    #[error("graph JSON, at {at}: {message}")]
    Json {
        /// The path to the offending value, e.g. `nodes[3].attrs.stride`.
        at: String,
        /// What was expected.
        message: String,
    },
    /// Two inputs or two parameters with one name.
    #[error("{kind} name {name:?} is already used by %{existing}")]
    DuplicateName {
        /// `input` or `parameter`.
        kind: &'static str,
        /// The name.
        name: String,
        /// The node that has it.
        existing: usize,
    },
}
