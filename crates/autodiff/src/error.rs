//! Errors of the research API: graph and evaluation errors, plus misuse of the tape and failed
//! gradient checks.

use skipgrad_ir::TensorType;
use std::fmt;

/// An error from the research API.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// An op rejected its inputs' shapes or dtypes.
    #[error(transparent)]
    Graph(#[from] skipgrad_ir::Error),
    /// The reference interpreter rejected a value (eager mode or evaluation).
    #[error(transparent)]
    Eval(#[from] skipgrad_reference::Error),
    /// Vars from two different tapes were combined.
    #[error("{op}: argument {index} belongs to another tape")]
    ForeignVar {
        /// The op being recorded.
        op: String,
        /// Which argument.
        index: usize,
    },
    /// A value was asked of a tape that records shapes only.
    #[error("{what}: the tape is in trace mode and records shapes only; use an eager tape for values")]
    NoValue {
        /// What needed the value.
        what: String,
    },
    /// An argument outside what the op accepts.
    #[error("{op}: {message}")]
    Argument {
        /// The op or function.
        op: String,
        /// What was wrong.
        message: String,
    },
    /// `grad` of a non-scalar output without a cotangent.
    #[error("grad: the loss must be a scalar, got {ty}; use vjp with a cotangent for other outputs")]
    NotScalar {
        /// The output's type.
        ty: TensorType,
    },
    /// Reverse mode reached an op that has no gradient rule for the requested input.
    #[error("grad: cannot differentiate {op} (node %{node}) with respect to input {input}: {reason}")]
    NotDifferentiable {
        /// The op with attributes.
        op: String,
        /// Its node.
        node: usize,
        /// Which input.
        input: usize,
        /// Why.
        reason: String,
    },
    /// A gradient check found analytic and numeric derivatives that disagree.
    #[error("{0}")]
    Gradcheck(Box<GradcheckFailure>),
    /// A gradient check's sample lies within `margin` of a kink (ReLU at 0, tied max): finite
    /// differences are meaningless there, so property tests discard such samples.
    #[error("gradcheck: {op} (node %{node}) is {distance:e} from a non-differentiable point (margin {margin:e})")]
    NearKink {
        /// The op.
        op: String,
        /// Its node.
        node: usize,
        /// How close the sample is.
        distance: f64,
        /// The margin asked for.
        margin: f64,
    },
}

/// The worst disagreement a gradient check found.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckFailure {
    /// Which check: `"direction 2"` or `"jacobian"`.
    pub check: String,
    /// Where: the input (and element, and output element for the Jacobian).
    pub location: String,
    /// The derivative from reverse mode.
    pub analytic: f64,
    /// The central-difference estimate.
    pub numeric: f64,
    /// `|analytic - numeric|`.
    pub abs_error: f64,
    /// The tolerance at that point, `atol + rtol * max(|analytic|, |numeric|)`.
    pub tolerance: f64,
}

impl fmt::Display for GradcheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gradcheck failed ({}) at {}: analytic {:.10e}, numeric {:.10e}, |error| {:.3e} > tolerance {:.3e}",
            self.check, self.location, self.analytic, self.numeric, self.abs_error, self.tolerance
        )
    }
}
