//! Optimizer updates recorded on the tape, so a training step's graph ends with them and the
//! compiler can fuse them.

use crate::{Result, Var};
use skipgrad_ir::Role;

/// Stochastic gradient descent with momentum and weight decay, as PyTorch's `torch.optim.SGD`
/// (no dampening, no Nesterov): `v' = momentum * v + (g + weight_decay * p)`, `p' = p - lr * v'`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f64,
    /// Momentum (0.9 in the paper).
    pub momentum: f64,
    /// Weight decay (1e-4 in the paper).
    pub weight_decay: f64,
}

impl Sgd {
    /// Records the update of `param` with gradient `grad` and velocity buffer `velocity` (a
    /// parameter of the same type, zero at the start of training) as update-role nodes, and
    /// registers both new values with [`Tape::record_update`](crate::Tape::record_update).
    /// Returns (new parameter, new velocity).
    pub fn update(&self, param: &Var, grad: &Var, velocity: &Var) -> Result<(Var, Var)> {
        self.record(param, grad, velocity, |v| Ok(v.scale(self.lr)))
    }

    /// [`Sgd::update`] at the learning rate `lr`, a scalar tensor (`f32[]`) fed at run time
    /// instead of `self.lr`: a schedule then changes the rate without recompiling the step. The
    /// result is the same, bit for bit, as the constant rate's.
    pub fn update_at(&self, lr: &Var, param: &Var, grad: &Var, velocity: &Var) -> Result<(Var, Var)> {
        self.record(param, grad, velocity, |v| v.mul_scalar(lr))
    }

    fn record(
        &self,
        param: &Var,
        grad: &Var,
        velocity: &Var,
        times_lr: impl Fn(&Var) -> Result<Var>,
    ) -> Result<(Var, Var)> {
        let tape = param.tape.clone();
        let (p, v) = tape.with_role(Role::Update, || -> Result<(Var, Var)> {
            let decayed = grad.add(&param.scale(self.weight_decay))?;
            let v = velocity.scale(self.momentum).add(&decayed)?;
            let p = param.sub(&times_lr(&v)?)?;
            Ok((p, v))
        })?;
        tape.record_update(velocity, &v)?;
        tape.record_update(param, &p)?;
        Ok((p, v))
    }
}
