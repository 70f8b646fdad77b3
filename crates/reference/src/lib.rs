//! The reference interpreter: every op of the IR in f32 and f64, as plain loops.
//!
//! This is skipgrad's oracle. Compiled kernels, fused graphs and gradient rules are all checked
//! against it, so it is written to be obviously correct rather than fast: no tiling, no layouts,
//! no clever identities. Every op computes in f64, sums included, and an f32 result is that f64
//! result rounded once: the f32 interpreter is as accurate as an f32 result of each op can be.

mod error;
mod eval;
mod ops;

pub use error::Error;
pub use eval::{Feeds, eval_node, eval_op, evaluate};
pub use ops::kink_distance;

/// Result type of the reference interpreter.
pub type Result<T, E = Error> = std::result::Result<T, E>;
