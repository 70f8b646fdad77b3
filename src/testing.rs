//! Tools for testing compiler passes, kernels and numerics against the reference interpreter:
//! random training networks ([`build`]) and the comparison of an f32 run with the same graph in
//! f64 on the same pieces of its piecewise-linear ops ([`precision`]).

mod nets;
pub mod precision;

pub use nets::*;
