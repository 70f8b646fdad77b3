//! The training step in two compiled graphs, for data-parallel training: the gradient graph
//! (forward, loss, backward, and batch norm's new running statistics, all read out into one flat
//! buffer that the ranks sum) and the update graph (the optimizer's update of the summed
//! gradients, written in place). A rank runs the first on its slice of the batch, the world sums
//! the buffers, and every rank runs the second on the same sum, so every rank's state stays the
//! same.

use super::{Trainer, name_of};
use crate::exec::Executor;
use crate::{Error, Result, StateKind, StepStats};
use skipgrad_autodiff::{Tape, Var};
use skipgrad_fuse::{Pipeline, Program};
use skipgrad_ir::DType;
use skipgrad_nn::Scope;

/// The update graph's input that holds the summed gradient of `parameter`.
fn grad_input(parameter: &str) -> String {
    format!("{parameter}.grad")
}

/// The two graphs of a data-parallel step and the layout of the buffer between them.
pub(super) struct SplitStep {
    /// Outputs: loss, accuracy, each parameter's gradient (in `parameters`' order), each running
    /// statistic's new value (in `buffers`' order).
    pub(super) gradients: Executor,
    /// Inputs: the parameters, their optimizer slots, `<parameter>.grad` and the optimizer's
    /// scalars. Outputs: the new value of each of `updated`.
    pub(super) update: Executor,
    /// The parameters, in the buffer's order.
    parameters: Vec<(String, usize)>,
    /// The update graph's input for each parameter's gradient (`<parameter>.grad`).
    grad_inputs: Vec<String>,
    /// The running statistics the gradient graph updates, in the buffer's order.
    buffers: Vec<(String, usize)>,
    /// The tensor each output of the update graph replaces.
    updated: Vec<String>,
    /// The summed buffer scaled by 1/ranks (kept to avoid allocating every step).
    scaled: Vec<f32>,
}

impl SplitStep {
    /// Length of the flat buffer: every gradient, every running statistic, the loss and the
    /// accuracy.
    pub(super) fn len(&self) -> usize {
        self.parameters.iter().chain(&self.buffers).map(|(_, n)| n).sum::<usize>() + 2
    }

    /// Kernel calls of both graphs.
    pub(super) fn kernel_calls(&self) -> Option<usize> {
        Some(self.gradients.kernel_calls()? + self.update.kernel_calls()?)
    }

    /// How many of the update graph's outputs are written in place, of how many.
    pub(super) fn updates_in_place(&self) -> (usize, usize) {
        let n = self.updated.len();
        ((0..n).filter(|&k| self.update.in_place(k)).count(), n)
    }

    /// The current value of state tensor `name`.
    pub(super) fn value(&self, name: &str) -> Option<Vec<f32>> {
        self.update.input(name).or_else(|| self.gradients.input(name))
    }
}

impl Trainer {
    /// Data-parallel training, first half: runs forward and backward on `images` and `labels`
    /// (this rank's slice of the batch, of the trainer's batch size) and writes into `into` the
    /// flat buffer the ranks sum: the loss's gradient for every parameter (in
    /// [`Trainer::state_tensors`]' order), the new value of every running statistic, then the
    /// loss and the accuracy. The state does not change; [`Trainer::apply_gradients`] applies
    /// the sum.
    pub fn gradients(&mut self, images: &[f32], labels: &[f32], into: &mut Vec<f32>) -> Result<()> {
        self.prepare_split()?;
        let split = self.split.as_mut().expect("built above");
        split.gradients.set_input("images", images)?;
        split.gradients.set_input("labels", labels)?;
        split.gradients.run()?;
        into.clear();
        into.reserve(split.len());
        let outputs = split.parameters.len() + split.buffers.len();
        for k in (2..2 + outputs).chain([0, 1]) {
            into.extend_from_slice(&split.gradients.output_values(k));
        }
        Ok(())
    }

    /// Data-parallel training, second half: `summed` is the element-wise sum over `ranks` ranks
    /// of their [`Trainer::gradients`] buffers. Scales it by 1/ranks, then (unless the loss is
    /// non-finite, which leaves the state as it was and returns [`Error::NonFinite`]) sets the
    /// running statistics to their mean and runs the optimizer's update at learning rate `lr`
    /// for the run's `iteration` (from 0). Returns the mean loss and error over the ranks.
    pub fn apply_gradients(&mut self, summed: &[f32], ranks: usize, lr: f64, iteration: u64) -> Result<StepStats> {
        self.prepare_split()?;
        let scalars = self.scalar_feeds(lr, iteration);
        let split = self.split.as_mut().expect("built above");
        if summed.len() != split.len() {
            return Err(Error::Batch(format!(
                "the summed gradient buffer holds {} values, the step's holds {}",
                summed.len(),
                split.len()
            )));
        }
        if ranks == 0 {
            return Err(Error::Batch("gradients summed over 0 ranks".into()));
        }
        let scale = 1.0 / ranks as f32;
        split.scaled.clear();
        split.scaled.extend(summed.iter().map(|v| v * scale));
        let (loss, accuracy) = (split.scaled[summed.len() - 2], split.scaled[summed.len() - 1]);
        if !loss.is_finite() {
            return Err(Error::NonFinite { iteration, loss });
        }
        let mut at = 0;
        for ((_, n), input) in split.parameters.iter().zip(&split.grad_inputs) {
            split.update.set_input(input, &split.scaled[at..at + n])?;
            at += n;
        }
        for (name, n) in &split.buffers {
            split.gradients.set_input(name, &split.scaled[at..at + n])?;
            at += n;
        }
        for (name, value) in scalars {
            split.update.set_input(name, &[value])?;
        }
        split.update.run()?;
        for (k, name) in split.updated.iter().enumerate() {
            if !split.update.in_place(k) {
                let values = split.update.output(k);
                split.update.set_input(name, &values)?;
            }
        }
        // The gradient graph reads the new parameters (copied without allocating).
        for (name, _) in &split.parameters {
            let values = split.update.input_values(name).expect("the update graph holds every parameter");
            split.gradients.set_input(name, &values)?;
        }
        self.eval_fed = false;
        Ok(StepStats { loss, error: 1.0 - accuracy })
    }

    /// Compiles the two graphs of the data-parallel step (once), taking the state from the whole
    /// step when that ran before.
    fn prepare_split(&mut self) -> Result<()> {
        if self.split.is_none() {
            self.sync();
            self.step = None;
            let split = self.build_split()?;
            self.split = Some(split);
            self.compilations += 1;
        }
        Ok(())
    }

    /// Traces, fuses and compiles both graphs, and feeds them the state.
    fn build_split(&self) -> Result<SplitStep> {
        let fuse = |program: Program| -> Result<Program> {
            Ok(match self.options.fuse {
                true => Pipeline::training().run(program)?.pop().expect("the input stage at least").program,
                false => program,
            })
        };
        let (gradients, parameters, buffers) = self.trace_gradients()?;
        let (update, updated) = self.trace_update()?;
        let in_place = updated.iter().enumerate().map(|(k, name)| (name.clone(), k));
        let in_place = if self.options.update_in_place { in_place.collect() } else { vec![] };
        let mut split = SplitStep {
            gradients: Executor::new(fuse(gradients)?, &self.options, vec![])?,
            update: Executor::new(fuse(update)?, &self.options, in_place)?,
            grad_inputs: parameters.iter().map(|(name, _)| grad_input(name)).collect(),
            parameters,
            buffers,
            updated,
            scaled: vec![],
        };
        // The gradient graph reads the model's tensors; the update graph the parameters and slots.
        for t in &self.tensors {
            if t.is_model() {
                split.gradients.set_input(&t.name, &self.state[&t.name])?;
            }
            if t.kind != StateKind::Buffer {
                split.update.set_input(&t.name, &self.state[&t.name])?;
            }
        }
        Ok(split)
    }

    /// The gradient graph (outputs: loss, accuracy, each parameter's gradient, each running
    /// statistic's new value), the parameters and the running statistics with their sizes.
    #[allow(clippy::type_complexity)]
    fn trace_gradients(&self) -> Result<(Program, Vec<(String, usize)>, Vec<(String, usize)>)> {
        let tape = Tape::trace(DType::F32);
        let scope = Scope::new(&tape, 0);
        let (loss, accuracy, params, grads) = self.trace_backward(&tape, &scope)?;
        let graph = tape.graph();
        let sized = |v: &Var| (name_of(&graph, v), v.shape().numel());
        let parameters: Vec<(String, usize)> = params.iter().map(sized).collect();
        let updates = tape.updates();
        let buffers: Vec<(String, usize)> = updates.iter().map(|(target, _)| sized(target)).collect();
        let outputs = [loss.id(), accuracy.id()]
            .into_iter()
            .chain(grads.iter().map(Var::id))
            .chain(updates.iter().map(|(_, new)| new.id()));
        Ok((Program { graph: tape.graph(), outputs: outputs.collect() }, parameters, buffers))
    }

    /// The update graph (the optimizer's update of every parameter from its `<name>.grad` input)
    /// and the tensor each of its outputs replaces.
    fn trace_update(&self) -> Result<(Program, Vec<String>)> {
        let tape = Tape::trace(DType::F32);
        let optimizer = &self.options.optimizer;
        let scalars =
            optimizer.scalars().iter().map(|s| tape.input_spec(s, DType::F32, &[])).collect::<Result<Vec<Var>, _>>()?;
        for p in self.tensors.iter().filter(|t| t.kind == StateKind::Parameter) {
            let param = tape.parameter_spec(&p.name, DType::F32, &p.dims)?;
            let grad = tape.input_spec(&grad_input(&p.name), DType::F32, &p.dims)?;
            let slots =
                optimizer.slots().iter().map(|s| tape.parameter_spec(&format!("{}.{s}", p.name), DType::F32, &p.dims));
            optimizer.record(&scalars, &param, &grad, &slots.collect::<Result<Vec<Var>, _>>()?)?;
        }
        let updates = tape.updates();
        let graph = tape.graph();
        let updated = updates.iter().map(|(target, _)| name_of(&graph, target)).collect();
        let outputs = updates.iter().map(|(_, new)| new.id()).collect();
        Ok((Program { graph, outputs }, updated))
    }
}
