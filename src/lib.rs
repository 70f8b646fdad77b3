//! skipgrad: tape-based autodiff and a compiler toolkit for residual-network research.
//!
//! Research code starts with `use skipgrad::prelude::*;`:
//!
//! ```
//! use skipgrad::prelude::*;
//!
//! # fn main() -> Result<(), skipgrad::Error> {
//! let tape = Tape::eager(DType::F32);
//! let x = tape.input("x", Tensor::full([2, 3, 8, 8], DType::F32, 0.5)?)?;
//! let w = tape.parameter("conv.weight", Tensor::full([4, 3, 3, 3], DType::F32, 0.1)?)?;
//! let loss = x.conv2d(&w, 1, 1)?.relu().mean()?;
//! let [dw] = grad(&loss, &[&w])?.try_into().unwrap();
//! println!("{}", tape.dump());
//! assert_eq!(dw.shape().dims(), &[4, 3, 3, 3]);
//! # Ok(())
//! # }
//! ```
//!
//! The crates behind the facade, one job each: [`ir`] (the graph), [`reference`](mod@reference) (the oracle
//! interpreter), [`autodiff`] (the tape, gradients, custom ops, gradcheck), [`fuse`] (graph passes:
//! fusion, with every stage kept for dumps), [`jit`] (Cranelift kernels and the compiled executor),
//! [`nn`] (layers, the paper's model zoo and the `Model` trait), [`data`] (datasets and the
//! loader), [`train`] (the training driver, for the zoo's nets and any other `Model`), [`dist`]
//! (collectives for data-parallel training: one process, or MPI with the `mpi` feature).

pub use skipgrad_autodiff as autodiff;
pub use skipgrad_data as data;
pub use skipgrad_dist as dist;
pub use skipgrad_fuse as fuse;
pub use skipgrad_ir as ir;
pub use skipgrad_jit as jit;
pub use skipgrad_nn as nn;
pub use skipgrad_reference as reference;
pub use skipgrad_train as train;

pub use skipgrad_autodiff::{Error, Result};

pub mod testing;

/// The README's code blocks, compiled and run as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Everything research code usually needs.
pub mod prelude {
    pub use skipgrad_autodiff::{
        AdamW, BatchNorm, CustomOp, Error, GradcheckOptions, GradcheckReport, Mode, Optimizer, Result, Sgd, Tape, Var,
        grad, gradcheck, vjp,
    };
    pub use skipgrad_ir::{Conv2dAttrs, DType, Graph, NodeId, Op, Role, Shape, ShortcutAttrs, Tensor};
    pub use skipgrad_reference::{Feeds, evaluate};
}
