//! The tape: owns the graph being recorded, the eager values, which nodes carry gradients, the
//! registered custom-op rules and the recorded state updates.

use crate::{CustomOp, Error, Result, Var};
use skipgrad_ir::{DType, Graph, NodeId, Op, Role, Shape, Tensor, TensorType};
use std::cell::RefCell;
use std::rc::Rc;

/// How a tape treats the ops recorded on it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Evaluate every op with the reference interpreter as it is recorded.
    Eager,
    /// Record shapes only; values come later from a compiler or [`skipgrad_reference::evaluate`].
    Trace,
}

/// A recording of a computation. Cheap to clone: clones share one recording.
#[derive(Clone)]
pub struct Tape(pub(crate) Rc<RefCell<State>>);

pub(crate) struct State {
    pub graph: Graph,
    mode: Mode,
    dtype: DType,
    values: Vec<Option<Tensor>>,
    /// Whether gradients flow through each node (it depends on an input or parameter, outside
    /// `no_grad` and `detach`).
    pub tracked: Vec<bool>,
    no_grad: usize,
    pub role: Role,
    pub rules: Vec<Rc<dyn CustomOp>>,
    updates: Vec<(NodeId, NodeId)>,
}

impl Tape {
    /// A tape in `mode` whose constants and fills default to `dtype`.
    pub fn new(mode: Mode, dtype: DType) -> Self {
        Tape(Rc::new(RefCell::new(State {
            graph: Graph::new(),
            mode,
            dtype,
            values: Vec::new(),
            tracked: Vec::new(),
            no_grad: 0,
            role: Role::Forward,
            rules: Vec::new(),
            updates: Vec::new(),
        })))
    }
    /// An eager tape: values are computed as ops are recorded.
    pub fn eager(dtype: DType) -> Self {
        Self::new(Mode::Eager, dtype)
    }
    /// A tracing tape: shapes only.
    pub fn trace(dtype: DType) -> Self {
        Self::new(Mode::Trace, dtype)
    }
    /// The tape's mode.
    pub fn mode(&self) -> Mode {
        self.0.borrow().mode
    }
    /// The dtype of constants and fills made from plain numbers.
    pub fn dtype(&self) -> DType {
        self.0.borrow().dtype
    }
    /// A copy of the graph recorded so far.
    pub fn graph(&self) -> Graph {
        self.0.borrow().graph.clone()
    }
    /// The text dump of the graph recorded so far.
    pub fn dump(&self) -> String {
        self.0.borrow().graph.dump()
    }

    /// A named input. In trace mode only `value`'s type is kept; see also [`Tape::input_spec`].
    pub fn input(&self, name: &str, value: Tensor) -> Result<Var> {
        self.source(Op::Input { name: name.into() }, value.dtype(), value.shape().clone(), Some(value))
    }
    /// A named trainable parameter, e.g. `layer1.0.conv1.weight`.
    pub fn parameter(&self, name: &str, value: Tensor) -> Result<Var> {
        self.source(Op::Parameter { name: name.into() }, value.dtype(), value.shape().clone(), Some(value))
    }
    /// A named input of the given type with no value: trace mode only.
    pub fn input_spec(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<Var> {
        self.source(Op::Input { name: name.into() }, dtype, Shape::new(shape), None)
    }
    /// A named parameter of the given type with no value: trace mode only.
    pub fn parameter_spec(&self, name: &str, dtype: DType, shape: &[usize]) -> Result<Var> {
        self.source(Op::Parameter { name: name.into() }, dtype, Shape::new(shape), None)
    }
    /// A constant tensor stored in the graph. Gradients do not flow into constants.
    pub fn constant(&self, value: Tensor) -> Var {
        let mut s = self.0.borrow_mut();
        let role = s.role;
        let id = s.graph.add_constant(value.clone(), role);
        let eager = s.mode == Mode::Eager;
        s.finish(id, false, eager.then_some(value));
        drop(s);
        self.var(id)
    }
    /// A tensor of one value in the tape's dtype.
    pub fn fill(&self, value: f64, shape: &[usize]) -> Result<Var> {
        self.fill_typed(value, TensorType::new(self.dtype(), shape))
    }
    /// A scalar in the tape's dtype.
    pub fn scalar(&self, value: f64) -> Var {
        self.fill(value, &[]).expect("a scalar always fits")
    }

    /// Runs `body` without recording gradients: nodes made inside are constants to reverse mode.
    pub fn no_grad<R>(&self, body: impl FnOnce() -> R) -> R {
        self.0.borrow_mut().no_grad += 1;
        let r = body();
        self.0.borrow_mut().no_grad -= 1;
        r
    }
    /// Runs `body` with new nodes tagged `role` (dumps group nodes by role).
    pub fn with_role<R>(&self, role: Role, body: impl FnOnce() -> R) -> R {
        let old = std::mem::replace(&mut self.0.borrow_mut().role, role);
        let r = body();
        self.0.borrow_mut().role = old;
        r
    }

    /// Records that after a step the source `target` (a parameter or running statistic) takes
    /// the value of `new`. Trainers and compilers read these with [`Tape::updates`].
    pub fn record_update(&self, target: &Var, new: &Var) -> Result<()> {
        self.check_same(&[target, new], "record_update")?;
        let (t, n) = (target.ty(), new.ty());
        let source = matches!(self.0.borrow().graph.node(target.id)?.op, Op::Parameter { .. } | Op::Input { .. });
        if !source || t != n {
            return Err(Error::Argument {
                op: "record_update".into(),
                message: format!(
                    "target {} ({t}) must be an input or parameter of the new value's type {n}",
                    target.id
                ),
            });
        }
        self.0.borrow_mut().updates.push((target.id, new.id));
        Ok(())
    }
    /// The recorded state updates as (source, new value) pairs, in recording order.
    pub fn updates(&self) -> Vec<(Var, Var)> {
        let ups = self.0.borrow().updates.clone();
        ups.into_iter().map(|(t, n)| (self.var(t), self.var(n))).collect()
    }

    /// Records `op` on `args`: checks shapes, evaluates it in eager mode, and returns its Var.
    pub fn record(&self, op: Op, args: &[&Var]) -> Result<Var> {
        self.check_same(args, op.name())?;
        let ids: Vec<NodeId> = args.iter().map(|v| v.id).collect();
        let mut s = self.0.borrow_mut();
        let ty = s.graph.check_node(&op, &ids)?;
        let value = if s.mode == Mode::Eager {
            let inputs: Vec<&Tensor> = ids.iter().map(|i| s.values[i.index()].as_ref().expect("eager")).collect();
            Some(skipgrad_reference::eval_op(&op, &ty, &inputs, s.graph.len())?)
        } else {
            None
        };
        let tracked = s.no_grad == 0
            && !matches!(op, Op::StopGradient | Op::ArgMax | Op::Equal)
            && ids.iter().any(|i| s.tracked[i.index()]);
        let role = s.role;
        let id = s.graph.add_node(op, &ids, role)?;
        s.finish(id, tracked, value);
        drop(s);
        Ok(self.var(id))
    }

    pub(crate) fn fill_typed(&self, value: f64, ty: TensorType) -> Result<Var> {
        let mut s = self.0.borrow_mut();
        let role = s.role;
        let id = s.graph.add_source(Op::Fill { value }, ty.clone(), role)?;
        let eager = match s.mode {
            Mode::Eager => Some(Tensor::full(ty.shape, ty.dtype, value)?),
            Mode::Trace => None,
        };
        s.finish(id, false, eager);
        drop(s);
        Ok(self.var(id))
    }

    pub(crate) fn value_of(&self, id: NodeId) -> Result<Tensor> {
        let s = self.0.borrow();
        match s.mode {
            Mode::Trace => Err(Error::NoValue { what: format!("value of {id}") }),
            Mode::Eager => Ok(s.values[id.index()].clone().expect("eager tapes hold every value")),
        }
    }

    pub(crate) fn var(&self, id: NodeId) -> Var {
        Var { tape: self.clone(), id }
    }

    pub(crate) fn same(&self, other: &Tape) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    pub(crate) fn check_same(&self, args: &[&Var], op: &str) -> Result<()> {
        match args.iter().position(|v| !self.same(&v.tape)) {
            Some(index) => Err(Error::ForeignVar { op: op.into(), index }),
            None => Ok(()),
        }
    }

    fn source(&self, op: Op, dtype: DType, shape: Shape, value: Option<Tensor>) -> Result<Var> {
        let mut s = self.0.borrow_mut();
        if s.mode == Mode::Eager && value.is_none() {
            return Err(Error::Argument {
                op: op.to_string(),
                message: "an eager tape needs a value; use input() or parameter()".into(),
            });
        }
        let role = s.role;
        let id = s.graph.add_source(op, TensorType { dtype, shape }, role)?;
        let eager = s.mode == Mode::Eager;
        s.finish(id, true, value.filter(|_| eager));
        drop(s);
        Ok(self.var(id))
    }
}

impl State {
    fn finish(&mut self, id: NodeId, tracked: bool, value: Option<Tensor>) {
        debug_assert_eq!(id.index(), self.values.len());
        self.values.push(value);
        self.tracked.push(tracked && self.no_grad == 0);
    }
}
