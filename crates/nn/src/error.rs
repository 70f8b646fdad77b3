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
    /// A checkpoint's tensors do not fit its model.
    #[error("checkpoint of {model}: {mismatch}")]
    Mismatch {
        /// The model's name.
        model: String,
        /// What did not match.
        mismatch: crate::scope::Mismatch,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What the system said.
        message: String,
    },
    /// A file is not a checkpoint this version reads (truncated, corrupt, another format).
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}
