//! Errors of the training driver.

/// An error building, compiling or running a training step.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
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
    /// The loss stopped being a number.
    #[error("iteration {iteration}: the loss is {loss}")]
    NonFinite {
        /// The iteration.
        iteration: u64,
        /// The loss.
        loss: f32,
    },
}
