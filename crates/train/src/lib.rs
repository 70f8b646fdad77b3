//! The training driver of skipgrad: the training step (forward, loss, backward, the optimizer's
//! update, running statistics) is traced once with the research API, fused and JIT-compiled, then
//! replayed every iteration with the learning rate and the optimizer's other scalars fed as
//! inputs; evaluation runs the separately compiled inference graph (batch norm with its running
//! statistics), whose own cross-entropy and accuracy ops score a batch.

mod error;
mod exec;
mod run;
mod schedule;
mod trainer;

pub use error::Error;
pub use exec::Backend;
pub use run::{CHECKPOINT, Length, MODEL, RunData, RunOptions, RunResult, run, run_distributed};
pub use schedule::{Decay, Schedule};
pub use trainer::{Evaluation, NonFiniteValue, StateKind, StateTensor, StepStats, Trainer, TrainerOptions};

/// Result type of the training driver.
pub type Result<T, E = Error> = std::result::Result<T, E>;
