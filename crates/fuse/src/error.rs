//! Errors of graph passes.

/// An error running a pass.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Rebuilding the graph failed: a pass produced a node the IR rejects (a bug in the pass).
    #[error("pass {pass}: {source}")]
    Graph {
        /// The pass.
        pass: String,
        /// What the IR said.
        source: skipgrad_ir::Error,
    },
}
