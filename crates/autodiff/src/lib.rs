//! The tape and reverse-mode autodiff of skipgrad.
//!
//! Research code records a computation through [`Var`] handles on a [`Tape`]; the tape builds a
//! graph of the IR. [`grad`] walks that graph backwards and *appends* the gradient ops to the same
//! graph, so gradients are ordinary nodes: they can be printed, dumped, compiled, and
//! differentiated again.
//!
//! A tape runs in one of two [`Mode`]s on the same API: eager (every op is evaluated by the
//! reference interpreter as it is recorded, so values can be printed) or trace (shapes only, for
//! the compiler). [`gradcheck`] checks any function's gradients against central differences in f64.
//!
//! Gradient rules live in `vjp.rs`, one arm per op. Ops whose gradient ops are **not
//! differentiable again** (their second derivative errors with [`Error::NotDifferentiable`]):
//! `batch_norm_grad_input`, `batch_norm_grad_gamma`, `max_pool_grad` (with respect to its output
//! gradient), and eval-mode `batch_norm` with respect to its running statistics. Every other op's
//! gradient is built from differentiable ops, so second and higher derivatives work.

mod custom;
mod error;
mod grad;
mod gradcheck;
mod optim;
mod tape;
mod var;
mod vjp;

pub use custom::CustomOp;
pub use error::{Error, GradcheckFailure};
pub use grad::{grad, vjp};
pub use gradcheck::{GradcheckOptions, GradcheckReport, gradcheck};
pub use optim::{AdamW, Optimizer, Sgd};
pub use tape::{Mode, Tape};
pub use var::{BatchNorm, Var};

/// Result type of the autodiff crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
