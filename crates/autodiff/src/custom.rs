//! Custom ops: a new op composed of existing ones, with a gradient rule supplied by its author.
//!
//! The composed forward is recorded with gradients off, then wrapped in one [`Op::Custom`] node
//! whose value is the forward's result and whose inputs are that result and the op's arguments.
//! Reverse mode calls the author's [`CustomOp::vjp`] at that node instead of descending into the
//! composition, dumps show the op by name, and the graph still evaluates anywhere.

use crate::{Error, Result, Var};
use skipgrad_ir::Op;
use std::rc::Rc;

/// A user-defined op: a forward made of research-API calls and its own gradient rule.
pub trait CustomOp {
    /// The op's name in dumps and errors (snake_case by convention).
    fn name(&self) -> &str;
    /// The op's value, composed of existing ops.
    fn forward(&self, args: &[Var]) -> Result<Var>;
    /// Gradients of `<grad, output>` with respect to each argument (`None` for none). Written with
    /// differentiable ops, the rule supports higher-order gradients too.
    fn vjp(&self, args: &[Var], output: &Var, grad: &Var) -> Result<Vec<Option<Var>>>;
}

impl Var {
    /// Applies the custom op `op` to `args`, which must share one tape.
    pub fn custom(op: &Rc<dyn CustomOp>, args: &[&Var]) -> Result<Var> {
        let first = args.first().ok_or_else(|| Error::Argument {
            op: op.name().into(),
            message: "a custom op needs at least one argument".into(),
        })?;
        let tape = first.tape().clone();
        tape.check_same(args, op.name())?;
        let owned: Vec<Var> = args.iter().map(|&v| v.clone()).collect();
        let value = tape.no_grad(|| op.forward(&owned))?;
        let rule = {
            let mut s = tape.0.borrow_mut();
            match s.rules.iter().position(|r| Rc::ptr_eq(r, op)) {
                Some(i) => i,
                None => {
                    s.rules.push(op.clone());
                    s.rules.len() - 1
                }
            }
        };
        let mut inputs = vec![&value];
        inputs.extend_from_slice(args);
        tape.record(Op::Custom { name: op.name().into(), rule }, &inputs)
    }
}
