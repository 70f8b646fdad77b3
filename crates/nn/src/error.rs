//! Errors of building and naming models.

/// An error building a model or one of its layers.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The research API rejected a layer's op (shapes, attributes).
    #[error("{layer}: {source}")]
    Layer {
        /// The layer's hierarchical name.
        layer: String,
        /// What the tape said.
        source: Box<skipgrad_autodiff::Error>,
    },
    /// A model name or configuration that does not describe a net.
    #[error("model {name:?}: {message}")]
    Config {
        /// The name or setting given.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// Two parameters or buffers with one name.
    #[error("two tensors are named {0:?}")]
    Duplicate(String),
}
