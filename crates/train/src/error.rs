//! Errors of the training driver.

/// An error building, compiling or running a training step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the model failed.
    #[error(transparent)]
    Model(#[from] skipgrad_nn::Error),
    /// Recording the step on the tape failed.
    #[error(transparent)]
    Tape(#[from] skipgrad_autodiff::Error),
    /// A graph pass failed.
    #[error(transparent)]
    Pass(#[from] skipgrad_fuse::Error),
    /// Compiling or feeding the step failed.
    #[error(transparent)]
    Jit(#[from] skipgrad_jit::Error),
    /// The reference interpreter rejected the step.
    #[error(transparent)]
    Reference(#[from] skipgrad_reference::Error),
    /// A tensor could not be built (a feed of the wrong length).
    #[error(transparent)]
    Graph(#[from] skipgrad_ir::Error),
    /// A batch that does not fit the compiled step.
    #[error("{0}")]
    Batch(String),
    /// A state tensor that is missing from a checkpoint, or of another shape there.
    #[error("{0}")]
    State(String),
    /// A run's directory or one of its files could not be read or written.
    #[error("{}: {message}", path.display())]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A checkpoint that this run cannot resume from: unreadable, or written by a run with other
    /// settings (named).
    #[error("cannot resume from {}: {message}", path.display())]
    Resume {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// Why not.
        message: String,
    },
    /// A run could not write its checkpoint (the message says what the file on disk still holds).
    #[error("cannot write the checkpoint of iteration {iteration}: {message}")]
    Save {
        /// The iteration the checkpoint was to hold.
        iteration: u64,
        /// Why, and what is on disk.
        message: String,
    },
    /// The data could not be batched.
    #[error(transparent)]
    Data(#[from] skipgrad_data::Error),
    /// A run stopped because its loss went non-finite: where, the last good checkpoint, and
    /// (when asked) the first node that made a non-finite value.
    #[error("{0}")]
    Diverged(String),
    /// The ranks of a data-parallel run disagree (what they were given, or the world's size).
    #[error("{0}")]
    Distributed(String),
    /// The loss stopped being a number.
    #[error("iteration {iteration}: the loss is {loss}")]
    NonFinite {
        /// The iteration.
        iteration: u64,
        /// The loss.
        loss: f32,
    },
}
