//! Errors of compiling and running graphs.

/// An error from the JIT.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The graph is malformed.
    #[error(transparent)]
    Graph(#[from] skipgrad_ir::Error),
    /// A node the JIT has no kernel for yet.
    #[error("jit: no kernel for {op} (node %{node}) yet: {reason}")]
    Unsupported {
        /// The op with attributes.
        op: String,
        /// Its node.
        node: usize,
        /// What is missing.
        reason: String,
    },
    /// The host CPU or Cranelift cannot provide what was asked.
    #[error("jit target: {0}")]
    Target(String),
    /// Cranelift rejected a generated function (a bug in a generator: please report it).
    #[error("jit: Cranelift rejected kernel {kernel}: {message}")]
    Codegen {
        /// The kernel's name.
        kernel: String,
        /// Cranelift's message.
        message: String,
    },
    /// A run was given an input that does not match the graph.
    #[error("jit run: {0}")]
    Feed(String),
}
