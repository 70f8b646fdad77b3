//! The training driver of skipgrad: the training step (forward, loss, backward, SGD, running
//! statistics) is traced once with the research API, fused and JIT-compiled, then replayed every
//! iteration; evaluation runs the separately compiled inference graph (batch norm with its
//! running statistics).

mod error;
mod exec;
mod schedule;
mod trainer;

pub use error::Error;
pub use exec::Backend;
pub use schedule::{Decay, Schedule};
pub use trainer::{Evaluation, LEARNING_RATE, NonFiniteValue, StepStats, Trainer, TrainerOptions};

/// Result type of the training driver.
pub type Result<T, E = Error> = std::result::Result<T, E>;
