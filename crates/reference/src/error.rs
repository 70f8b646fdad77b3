//! Errors of evaluation: missing or mistyped feeds and values an op cannot accept.

use skipgrad_ir::TensorType;

/// An error evaluating a graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The graph itself is malformed (unknown node, bad shapes).
    #[error(transparent)]
    Graph(#[from] skipgrad_ir::Error),
    /// An input or parameter that was not fed.
    #[error("no value was fed for {kind} {name:?} (node %{node})")]
    MissingFeed {
        /// `input` or `parameter`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Its node.
        node: usize,
    },
    /// A fed value whose dtype or shape differs from the node's.
    #[error("the value fed for {name:?} is {got}, the graph expects {expected}")]
    FeedType {
        /// The input's name.
        name: String,
        /// The node's type.
        expected: TensorType,
        /// The fed tensor's type.
        got: TensorType,
    },
    /// A class label that is not an integer in `0..classes`.
    #[error("{op} (node %{node}): label {value} in row {row} is not a class index in 0..{classes}")]
    Label {
        /// The op.
        op: String,
        /// Its node.
        node: usize,
        /// The row.
        row: usize,
        /// The label value.
        value: f64,
        /// Number of classes.
        classes: usize,
    },
}
