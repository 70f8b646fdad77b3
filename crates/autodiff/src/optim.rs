//! Optimizers as values behind one trait, [`Optimizer`]: each declares the state it keeps per
//! parameter (its slots) and the scalars a step is fed at run time (the learning rate, bias
//! corrections), and records its update on the tape, so a training step's graph ends with the
//! updates and the compiler fuses them. A schedule changes only the fed scalars, never the graph.

use crate::{Error, Result, Var};
use skipgrad_ir::Role;

/// An optimizer, as a training driver uses it: for every parameter it creates one state tensor
/// per [`slot`](Optimizer::slots) (the parameter's shape, zero at the start), one scalar input
/// (`f32[]`) per [`scalar`](Optimizer::scalars) for the whole step, then calls
/// [`Optimizer::record`]. Before each run it feeds [`Optimizer::scalar_values`].
///
/// Implementing one is a few small functions and the update written with `Var` methods; see
/// [`Sgd`] and [`AdamW`], and CONTRIBUTING.md.
pub trait Optimizer: std::fmt::Debug {
    /// A short name (`sgd`, `adamw`), recorded in checkpoints and run configurations.
    fn name(&self) -> &'static str;

    /// Its hyperparameters other than the learning rate, by name (recorded with a run, and
    /// compared when it resumes).
    fn settings(&self) -> Vec<(&'static str, f64)>;

    /// The name and settings in one line: `sgd momentum=0.9 weight_decay=0.0001`.
    fn describe(&self) -> String {
        let settings = self.settings().into_iter().map(|(k, v)| format!(" {k}={v}"));
        format!("{}{}", self.name(), settings.collect::<String>())
    }

    /// The state kept per parameter, by slot name: parameter `p`'s slot `s` is the tensor
    /// `p.s` (`layer1.0.conv1.weight.momentum`).
    fn slots(&self) -> &'static [&'static str];

    /// The names of the scalar inputs a step is fed. They name graph inputs, so they must not
    /// collide with a model's tensors.
    fn scalars(&self) -> &'static [&'static str];

    /// The values of [`Optimizer::scalars`], in order, for the step at learning rate `lr` that is
    /// the optimizer's `step`-th (counted from 1, as PyTorch counts).
    fn scalar_values(&self, lr: f64, step: u64) -> Vec<f64>;

    /// Records the update of `param` (gradient `grad`, its `slots` in [`Optimizer::slots`]'s
    /// order, the step's `scalars` in [`Optimizer::scalars`]' order) as update-role nodes, and
    /// registers the new value of the parameter and of every slot with
    /// [`Tape::record_update`](crate::Tape::record_update).
    fn record(&self, scalars: &[Var], param: &Var, grad: &Var, slots: &[Var]) -> Result<()>;
}

/// Stochastic gradient descent with momentum and weight decay, as PyTorch's `torch.optim.SGD`
/// (no dampening, no Nesterov): `v' = momentum * v + (g + weight_decay * p)`, `p' = p - lr * v'`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate of [`Sgd::update`] (through the [`Optimizer`] trait the rate is fed at run
    /// time instead).
    pub lr: f64,
    /// Momentum (0.9 in the paper).
    pub momentum: f64,
    /// Weight decay (1e-4 in the paper).
    pub weight_decay: f64,
}

impl Sgd {
    /// The paper's: momentum 0.9, weight decay 1e-4, learning rate 0.1.
    pub fn paper() -> Sgd {
        Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 }
    }

    /// Records the update of `param` with gradient `grad` and velocity buffer `velocity` (a
    /// parameter of the same type, zero at the start of training) as update-role nodes, and
    /// registers both new values with [`Tape::record_update`](crate::Tape::record_update).
    /// Returns (new parameter, new velocity).
    pub fn update(&self, param: &Var, grad: &Var, velocity: &Var) -> Result<(Var, Var)> {
        self.record_with(param, grad, velocity, |v| Ok(v.scale(self.lr)))
    }

    /// [`Sgd::update`] at the learning rate `lr`, a scalar tensor (`f32[]`) fed at run time
    /// instead of `self.lr`: a schedule then changes the rate without recompiling the step. The
    /// result is the same, bit for bit, as the constant rate's.
    pub fn update_at(&self, lr: &Var, param: &Var, grad: &Var, velocity: &Var) -> Result<(Var, Var)> {
        self.record_with(param, grad, velocity, |v| v.mul_scalar(lr))
    }

    fn record_with(
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

impl Optimizer for Sgd {
    fn name(&self) -> &'static str {
        "sgd"
    }

    fn settings(&self) -> Vec<(&'static str, f64)> {
        vec![("momentum", self.momentum), ("weight_decay", self.weight_decay)]
    }

    fn slots(&self) -> &'static [&'static str] {
        &["momentum"]
    }

    fn scalars(&self) -> &'static [&'static str] {
        &["lr"]
    }

    fn scalar_values(&self, lr: f64, _step: u64) -> Vec<f64> {
        vec![lr]
    }

    fn record(&self, scalars: &[Var], param: &Var, grad: &Var, slots: &[Var]) -> Result<()> {
        let ([lr], [velocity]) = (scalars, slots) else {
            return Err(arity_error(self, scalars, slots));
        };
        self.update_at(lr, param, grad, velocity).map(|_| ())
    }
}

/// Adam with decoupled weight decay, as PyTorch's `torch.optim.AdamW` (no AMSGrad):
///
/// ```text
/// p  <- p * (1 - lr * weight_decay)
/// m  <- beta1 * m + (1 - beta1) * g
/// v  <- beta2 * v + (1 - beta2) * g * g
/// p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// at step `t` (from 1). The learning rate and both bias corrections are scalars fed per step
/// (`adamw.decay = 1 - lr * weight_decay`, `adamw.step_size = lr / (1 - beta1^t)`,
/// `adamw.inv_sqrt_bias2 = 1 / sqrt(1 - beta2^t)`), so neither a schedule nor the step count
/// recompiles the step. The slots are PyTorch's `exp_avg` and `exp_avg_sq`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamW {
    /// Decay of the first moment (0.9).
    pub beta1: f64,
    /// Decay of the second moment (0.999).
    pub beta2: f64,
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// Decoupled weight decay, multiplied by the learning rate (0.01).
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    fn default() -> AdamW {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }

    fn settings(&self) -> Vec<(&'static str, f64)> {
        vec![("beta1", self.beta1), ("beta2", self.beta2), ("eps", self.eps), ("weight_decay", self.weight_decay)]
    }

    fn slots(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }

    fn scalars(&self) -> &'static [&'static str] {
        &["adamw.decay", "adamw.step_size", "adamw.inv_sqrt_bias2"]
    }

    fn scalar_values(&self, lr: f64, step: u64) -> Vec<f64> {
        let t = step.clamp(1, i32::MAX as u64) as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        vec![1.0 - lr * self.weight_decay, lr / bias1, 1.0 / bias2.sqrt()]
    }

    fn record(&self, scalars: &[Var], param: &Var, grad: &Var, slots: &[Var]) -> Result<()> {
        let ([decay, step_size, inv_sqrt_bias2], [m, v]) = (scalars, slots) else {
            return Err(arity_error(self, scalars, slots));
        };
        let tape = param.tape.clone();
        let (p, new_m, new_v) = tape.with_role(Role::Update, || -> Result<(Var, Var, Var)> {
            let new_m = m.scale(self.beta1).add(&grad.scale(1.0 - self.beta1))?;
            let new_v = v.scale(self.beta2).add(&grad.mul(grad)?.scale(1.0 - self.beta2))?;
            let denominator = new_v.sqrt().mul_scalar(inv_sqrt_bias2)?.add_scalar(self.eps);
            let p = param.mul_scalar(decay)?.sub(&new_m.div(&denominator)?.mul_scalar(step_size)?)?;
            Ok((p, new_m, new_v))
        })?;
        tape.record_update(m, &new_m)?;
        tape.record_update(v, &new_v)?;
        tape.record_update(param, &p)
    }
}

/// The error of a [`Optimizer::record`] given other numbers of scalars or slots than it declares.
fn arity_error(optimizer: &dyn Optimizer, scalars: &[Var], slots: &[Var]) -> Error {
    Error::Argument {
        op: format!("{}::record", optimizer.name()),
        message: format!(
            "needs the scalars {:?} and the slots {:?}, got {} scalars and {} slots",
            optimizer.scalars(),
            optimizer.slots(),
            scalars.len(),
            slots.len()
        ),
    }
}
