//! The compiled training step and evaluation graph of one model, and the state they share: the
//! model's parameters and buffers and the optimizer's slots, each with its [`StateKind`].

mod split;

use crate::exec::{Backend, Executor};
use crate::{Error, Result};
use skipgrad_autodiff::{Optimizer, Sgd, Tape, Var, grad};
use skipgrad_fuse::{Pipeline, Program};
use skipgrad_ir::{DType, Graph, NodeId, Role, Tensor};
use skipgrad_jit::{CompileOptions, MulAdd, Target, WinogradTiles, compile};
use skipgrad_nn::{Checkpoint, Kind, Mode, Model, Scope, TRAINING_STATE};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How a model trains.
#[derive(Clone, Debug)]
pub struct TrainerOptions {
    /// Images per step.
    pub batch: usize,
    /// Channels, height, width of an image.
    pub input: [usize; 3],
    /// Seed of the initial weights.
    pub seed: u64,
    /// Threads the kernels run on.
    pub threads: usize,
    /// The optimizer (the paper's: SGD with momentum 0.9 and weight decay 1e-4).
    pub optimizer: Arc<dyn Optimizer + Send + Sync>,
    /// Run the fusion pipeline before compiling (on by default; off to debug).
    pub fuse: bool,
    /// Where the step runs: the JIT, or the reference interpreter (for debugging).
    pub backend: Backend,
    /// Write each new parameter, optimizer slot and running statistic straight into its own
    /// buffer inside the compiled step (on by default); off, the step's outputs are copied back
    /// after every run (to measure what that costs).
    pub update_in_place: bool,
    /// Which 3x3 stride-1 convolutions the JIT computes by Winograd's minimal filtering, and
    /// with which tiles (the default: F(4x4, 3x3) where it multiplies least).
    pub winograd: WinogradTiles,
    /// f32 lanes of the JIT's widest vectors: `None` for the CPU's (16 with AVX-512F, 8 with
    /// AVX2), or `Some(4)`, `Some(8)`, `Some(16)` (to compare whole processes).
    pub lanes: Option<usize>,
    /// The kernels' multiply-add form: `None` for the one the CPU prefers, or an explicit one
    /// (to compare whole processes, or to run the code another CPU would get).
    pub mul_add: Option<MulAdd>,
}

impl TrainerOptions {
    /// The paper's recipe for `input` images in batches of `batch`, on every core.
    pub fn paper(batch: usize, input: [usize; 3], seed: u64) -> TrainerOptions {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        TrainerOptions {
            batch,
            input,
            seed,
            threads,
            optimizer: Arc::new(Sgd::paper()),
            fuse: true,
            backend: Backend::Jit,
            update_in_place: true,
            winograd: WinogradTiles::default(),
            lanes: None,
            mul_add: None,
        }
    }

    /// The JIT's options for these: threads, Winograd tiles, and the target with `mul_add` and
    /// `lanes` (the host's own where both are `None`).
    pub(crate) fn compile_options(&self) -> Result<CompileOptions> {
        let target = match (self.mul_add, self.lanes) {
            (None, None) => None,
            (mul_add, lanes) => {
                let host = match mul_add {
                    Some(form) => Target::host_with(form)?,
                    None => Target::host()?,
                };
                Some(match lanes {
                    Some(lanes) => host.with_lanes(lanes)?,
                    None => host,
                })
            }
        };
        Ok(CompileOptions { threads: self.threads, winograd: self.winograd, target, ..CompileOptions::default() })
    }

    /// These options with `optimizer` instead.
    pub fn with_optimizer(self, optimizer: impl Optimizer + Send + Sync + 'static) -> TrainerOptions {
        TrainerOptions { optimizer: Arc::new(optimizer), ..self }
    }
}

/// What a tensor of a trainer's state is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// A model parameter: trained by the optimizer, saved in the model's checkpoint.
    Parameter,
    /// A model buffer its layer updates (batch norm's running statistics): saved in the model's
    /// checkpoint, not trained.
    Buffer,
    /// One of the optimizer's slots for a parameter (SGD's velocity, AdamW's moments): saved
    /// only in a resumable training state, under [`TRAINING_STATE`].
    Optimizer,
}

/// One tensor of a trainer's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateTensor {
    /// Its name in the graph: the model's name for it, or `<parameter>.<slot>` for an optimizer
    /// slot.
    pub name: String,
    /// What it is.
    pub kind: StateKind,
    /// Its dims.
    pub dims: Vec<usize>,
}

impl StateTensor {
    /// Its name in a checkpoint: optimizer slots go under [`TRAINING_STATE`]
    /// (`optimizer.layer1.0.conv1.weight.momentum`), the model's tensors under their own names.
    pub fn checkpoint_key(&self) -> String {
        match self.kind {
            StateKind::Optimizer => format!("{TRAINING_STATE}{}", self.name),
            StateKind::Parameter | StateKind::Buffer => self.name.clone(),
        }
    }

    /// True for the model's own tensors (what a model checkpoint holds).
    pub fn is_model(&self) -> bool {
        self.kind != StateKind::Optimizer
    }
}

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy of the batch.
    pub loss: f32,
    /// Fraction of the batch classified wrongly.
    pub error: f32,
}

/// Loss and accuracy over an evaluation set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction classified right.
    pub accuracy: f64,
    /// Images evaluated.
    pub images: usize,
}

/// The compiled training step; the optimizer's scalars are its inputs.
struct Step {
    compiled: Executor,
    /// Each output after the loss and accuracy: the name of the tensor it updates.
    updates: Vec<String>,
}

/// Trains one model, a zoo net or any other [`Model`], with any [`Optimizer`]: holds its state
/// (parameters, batch-norm buffers, optimizer slots), the compiled training step (compiled once:
/// the learning rate and the optimizer's other scalars are fed every step) and the compiled
/// evaluation graphs.
pub struct Trainer {
    /// The model, traced again for each graph.
    model: Box<dyn Model>,
    options: TrainerOptions,
    /// The model's tensors (parameters and buffers) in creation order, then the optimizer's slots.
    tensors: Vec<StateTensor>,
    /// Values of every state tensor, current when `step` is `None` or after a sync.
    state: BTreeMap<String, Vec<f32>>,
    step: Option<Step>,
    /// The data-parallel step's two graphs ([`Trainer::gradients`]); at most one of `step` and
    /// `split` is built, and it holds the current state.
    split: Option<split::SplitStep>,
    /// Times the step was compiled.
    compilations: usize,
    /// The evaluation graph by batch size (the full batch, and a last partial one).
    eval: HashMap<usize, Executor>,
    /// Whether the evaluation graphs hold the current state.
    eval_fed: bool,
}

impl Trainer {
    /// A trainer for `model` (it keeps a copy, traced again for each graph it compiles), its
    /// weights drawn from `options.seed`, its optimizer slots zero.
    pub fn new<M: Model + Clone + 'static>(model: &M, options: TrainerOptions) -> Result<Trainer> {
        let tape = Tape::trace(DType::F32);
        let scope = Scope::new(&tape, options.seed);
        let [c, h, w] = options.input;
        let images = tape.input_spec("images", DType::F32, &[options.batch, c, h, w])?;
        model.forward(&scope, &images, Mode::Train)?;
        let mut tensors = vec![];
        let mut state = BTreeMap::new();
        for e in scope.entries() {
            let kind = match e.kind {
                Kind::Parameter => StateKind::Parameter,
                Kind::Buffer => StateKind::Buffer,
            };
            tensors.push(StateTensor { name: e.name.clone(), kind, dims: e.var.shape().dims().to_vec() });
            state.insert(e.name, e.init.to_f64_vec().into_iter().map(|v| v as f32).collect());
        }
        let parameters: Vec<StateTensor> = tensors.iter().filter(|t| t.kind == StateKind::Parameter).cloned().collect();
        for p in parameters {
            for slot in options.optimizer.slots() {
                let name = format!("{}.{slot}", p.name);
                state.insert(name.clone(), vec![0.0; p.dims.iter().product()]);
                tensors.push(StateTensor { name, kind: StateKind::Optimizer, dims: p.dims.clone() });
            }
        }
        Ok(Trainer {
            model: Box::new(model.clone()),
            options,
            tensors,
            state,
            step: None,
            split: None,
            compilations: 0,
            eval: HashMap::new(),
            eval_fed: false,
        })
    }

    /// A trainer resuming from a zoo net's `checkpoint` (its configuration and tensors), with zero
    /// optimizer slots.
    pub fn from_checkpoint(checkpoint: &Checkpoint, options: TrainerOptions) -> Result<Trainer> {
        checkpoint.build(&Tape::trace(DType::F32))?;
        let config = checkpoint.config.as_ref().expect("build needs a configuration");
        Trainer::with_weights(config, &checkpoint.tensors, options)
    }

    /// A trainer for `model` whose tensors take their values from `tensors` by name (a
    /// checkpoint's, of any model), with zero optimizer slots. A tensor of the model that
    /// `tensors` lacks, or holds in another shape, is an error naming it; other tensors are
    /// ignored.
    pub fn with_weights<M: Model + Clone + 'static>(
        model: &M,
        tensors: &BTreeMap<String, Tensor>,
        options: TrainerOptions,
    ) -> Result<Trainer> {
        let mut trainer = Trainer::new(model, options)?;
        for t in trainer.tensors.iter().filter(|t| t.is_model()) {
            let values = tensor_for(tensors, &t.name, &t.dims)?;
            trainer.state.insert(t.name.clone(), values);
        }
        Ok(trainer)
    }

    /// The model this trainer trains.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// The options it was made with.
    pub fn options(&self) -> &TrainerOptions {
        &self.options
    }

    /// The optimizer it trains with.
    pub fn optimizer(&self) -> &dyn Optimizer {
        self.options.optimizer.as_ref()
    }

    /// Every tensor of the state: the model's parameters and buffers in creation order, then
    /// the optimizer's slots.
    pub fn state_tensors(&self) -> &[StateTensor] {
        &self.tensors
    }

    /// Runs one training step on a batch (`images` `[batch, C, H, W]`, `labels` `[batch]`) at
    /// learning rate `lr`. `iteration` counts steps from 0 over the whole run (a resumed run goes
    /// on counting): the optimizer's step is `iteration + 1` (AdamW's bias corrections).
    pub fn step(&mut self, images: &[f32], labels: &[f32], lr: f64, iteration: u64) -> Result<StepStats> {
        self.prepare()?;
        let scalars = self.scalar_feeds(lr, iteration);
        let step = self.step.as_mut().expect("built above");
        for (name, value) in scalars {
            step.compiled.set_input(name, &[value])?;
        }
        step.compiled.set_input("images", images)?;
        step.compiled.set_input("labels", labels)?;
        // The loss is checked before the state changes: a non-finite step leaves it as it was.
        step.compiled.run_until_updates()?;
        let loss = step.compiled.output(0)[0];
        let accuracy = step.compiled.output(1)[0];
        if !loss.is_finite() {
            return Err(Error::NonFinite { iteration, loss });
        }
        step.compiled.run_updates();
        self.eval_fed = false;
        // Feed back each update not already written into the tensor it updates.
        for (k, name) in step.updates.iter().enumerate() {
            if !step.compiled.in_place(2 + k) {
                let values = step.compiled.output(2 + k);
                step.compiled.set_input(name, &values)?;
            }
        }
        Ok(StepStats { loss, error: 1.0 - accuracy })
    }

    /// The optimizer's scalar inputs, by name, for the step at `lr` that is the run's
    /// `iteration` (from 0).
    fn scalar_feeds(&self, lr: f64, iteration: u64) -> Vec<(&'static str, f32)> {
        let optimizer = &self.options.optimizer;
        let values = optimizer.scalar_values(lr, iteration + 1);
        optimizer.scalars().iter().copied().zip(values.into_iter().map(|v| v as f32)).collect()
    }

    /// Compiles the training step now (the first [`Trainer::step`] would), so that a benchmark
    /// can time compilation apart from running. The step is compiled once: the learning rate is
    /// one of its inputs, so a schedule never recompiles it.
    pub fn prepare(&mut self) -> Result<()> {
        if self.step.is_none() {
            self.sync();
            self.split = None;
            self.step = Some(self.build_step()?);
            self.compilations += 1;
        }
        Ok(())
    }

    /// How many times the training step has been compiled (once per trainer, and again after a
    /// [`Trainer::restore`]).
    pub fn step_compilations(&self) -> usize {
        self.compilations
    }

    /// Runs the evaluation graph once on `images` (one batch), returning the logits (a
    /// benchmark's inference step); compiles it first if needed.
    pub fn infer(&mut self, images: &[f32]) -> Result<Vec<f32>> {
        let compiled = self.evaluator(self.options.batch)?;
        compiled.set_input("images", images)?;
        compiled.run()?;
        Ok(compiled.output(0))
    }

    /// Loss and accuracy over `batches` (from [`skipgrad_data::in_order`], of this trainer's batch
    /// size), with batch norm in eval mode. The graph computes them: its cross-entropy and
    /// accuracy ops (argmax against the labels), on a graph of the last batch's size when that
    /// batch is partial.
    pub fn evaluate(&mut self, batches: &[skipgrad_data::Batch]) -> Result<Evaluation> {
        let [c, h, w] = self.options.input;
        let (mut loss, mut right, mut images) = (0.0f64, 0.0f64, 0usize);
        for b in batches {
            if b.valid == 0 {
                continue;
            }
            if b.images.len() < b.valid * c * h * w || b.labels.len() < b.valid {
                return Err(Error::Batch(format!(
                    "a batch of {} valid images holds {} values and {} labels",
                    b.valid,
                    b.images.len(),
                    b.labels.len()
                )));
            }
            let compiled = self.evaluator(b.valid)?;
            compiled.set_input("images", &b.images[..b.valid * c * h * w])?;
            compiled.set_input("labels", &b.labels[..b.valid])?;
            compiled.run()?;
            let n = b.valid as f64;
            loss += compiled.output(1)[0] as f64 * n;
            right += (compiled.output(2)[0] as f64 * n).round();
            images += b.valid;
        }
        let n = images.max(1) as f64;
        Ok(Evaluation { loss: loss / n, accuracy: right / n, images })
    }

    /// The evaluation graph for batches of `batch` images, compiled if new, holding the current
    /// state.
    fn evaluator(&mut self, batch: usize) -> Result<&mut Executor> {
        if !self.eval.contains_key(&batch) {
            let compiled = self.build_eval(batch)?;
            self.eval.insert(batch, compiled);
            self.eval_fed = false;
        }
        if !self.eval_fed {
            self.sync();
            for compiled in self.eval.values_mut() {
                for t in self.tensors.iter().filter(|t| t.is_model()) {
                    compiled.set_input(&t.name, &self.state[&t.name])?;
                }
            }
            self.eval_fed = true;
        }
        Ok(self.eval.get_mut(&batch).expect("inserted above"))
    }

    /// The model's tensors as a checkpoint.
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.sync();
        let tensors = self.tensors.iter().filter(|t| t.is_model()).map(|t| (t.name.clone(), self.tensor(t))).collect();
        Checkpoint { config: self.model.config().cloned(), tensors, metadata: BTreeMap::new() }
    }

    /// Every state tensor under its [`StateTensor::checkpoint_key`]: the model's under their
    /// names, the optimizer's slots under `optimizer.<parameter>.<slot>` (what a resumable
    /// checkpoint holds).
    pub fn training_state(&mut self) -> BTreeMap<String, Tensor> {
        self.sync();
        self.tensors.iter().map(|t| (t.checkpoint_key(), self.tensor(t))).collect()
    }

    /// Restores every state tensor from `tensors` (as [`Trainer::training_state`] names them);
    /// a missing or mis-shaped one is an error naming it.
    pub fn restore(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut restored = BTreeMap::new();
        for t in &self.tensors {
            restored.insert(t.name.clone(), tensor_for(tensors, &t.checkpoint_key(), &t.dims)?);
        }
        self.state = restored;
        // The compiled graphs read the state when next built or evaluated.
        self.step = None;
        self.split = None;
        self.eval_fed = false;
        Ok(())
    }

    /// The value of state tensor `name` (a model tensor, or `<parameter>.<slot>`).
    pub fn value(&mut self, name: &str) -> Option<&[f32]> {
        self.sync();
        self.state.get(name).map(|v| v.as_slice())
    }

    /// How many of the step's state updates are written in place, of how many (once it is
    /// built): the rest are copied back after every step.
    pub fn updates_in_place(&self) -> Option<(usize, usize)> {
        if let Some(split) = &self.split {
            return Some(split.updates_in_place());
        }
        let step = self.step.as_ref()?;
        let n = step.updates.len();
        Some(((0..n).filter(|&k| step.compiled.in_place(2 + k)).count(), n))
    }

    /// Kernel calls of the compiled training step (once it is built).
    pub fn kernel_calls(&self) -> Option<usize> {
        match &self.split {
            Some(split) => split.kernel_calls(),
            None => self.step.as_ref().and_then(|s| s.compiled.kernel_calls()),
        }
    }

    /// State tensor `t` as a tensor.
    fn tensor(&self, t: &StateTensor) -> Tensor {
        Tensor::f32(t.dims.clone(), self.state[&t.name].clone()).expect("state matches its dims")
    }

    /// Copies the compiled step's current state into `state`.
    fn sync(&mut self) {
        for t in &self.tensors {
            let values = match (&self.step, &self.split) {
                (Some(step), _) => step.compiled.input(&t.name),
                (None, Some(split)) => split.value(&t.name),
                (None, None) => return,
            };
            if let Some(values) = values {
                self.state.insert(t.name.clone(), values);
            }
        }
    }

    /// Traces, fuses and compiles the training step, and feeds it the state.
    fn build_step(&self) -> Result<Step> {
        let (mut program, updates) = self.trace_step()?;
        if self.options.fuse {
            program = Pipeline::training().run(program)?.pop().expect("the input stage at least").program;
        }
        // Output 2 + k is the new value of `updates[k]`: written in place where safe.
        let in_place = match self.options.update_in_place {
            true => updates.iter().enumerate().map(|(k, name)| (name.clone(), 2 + k)).collect(),
            false => vec![],
        };
        let mut compiled = Executor::new(program, &self.options, in_place)?;
        for t in &self.tensors {
            compiled.set_input(&t.name, &self.state[&t.name])?;
        }
        Ok(Step { compiled, updates })
    }

    /// Finds where a step first produces a non-finite value: runs the step on `images` and
    /// `labels` at `lr` from the current state, unfused on the JIT, with every intermediate kept, and
    /// returns the first node (in graph order, which is topological) holding a NaN or an
    /// infinity, or `None` when every value is finite. After [`Trainer::step`] returned
    /// [`Error::NonFinite`], the state is still the one before that step, so this replays it
    /// (with the same `lr` and `iteration`).
    pub fn first_non_finite(
        &mut self,
        images: &[f32],
        labels: &[f32],
        lr: f64,
        iteration: u64,
    ) -> Result<Option<NonFiniteValue>> {
        self.sync();
        let (program, _) = self.trace_step()?;
        let options = CompileOptions { plan_memory: false, ..self.options.compile_options()? };
        let mut compiled = compile(&program.graph, &program.outputs, &options)?;
        for (name, value) in self.scalar_feeds(lr, iteration) {
            compiled.set_input(name, &[value])?;
        }
        compiled.set_input("images", images)?;
        compiled.set_input("labels", labels)?;
        for t in &self.tensors {
            compiled.set_input(&t.name, &self.state[&t.name])?;
        }
        compiled.run();
        let graph = &program.graph;
        let describe = |id: NodeId| -> String {
            let values = compiled.value(id).unwrap_or(&[]);
            let bad = values.iter().filter(|v| !v.is_finite()).count();
            let largest = values.iter().filter(|v| v.is_finite()).fold(0f32, |m, v| m.max(v.abs()));
            let what = match graph.source_name(id) {
                Some(name) => format!("{id} ({name})"),
                None => format!("{id} ({})", graph.nodes()[id.index()].op.name()),
            };
            format!("{what}: {bad} of {} values non-finite, largest finite magnitude {largest:e}", values.len())
        };
        for id in graph.ids() {
            let Some(values) = compiled.value(id) else { continue };
            let non_finite = values.iter().filter(|v| !v.is_finite()).count();
            if non_finite > 0 {
                let node = &graph.nodes()[id.index()];
                return Ok(Some(NonFiniteValue {
                    node: id,
                    line: graph.node_line(id).expect("a node of the graph"),
                    role: node.role,
                    parameter: graph.source_name(id).map(str::to_string),
                    non_finite,
                    elements: values.len(),
                    inputs: node.inputs.iter().map(|&i| describe(i)).collect(),
                }));
            }
        }
        Ok(None)
    }

    /// Traces the training step (forward, loss, backward, the optimizer's updates with its
    /// scalars as inputs): the unfused program (outputs: loss, accuracy, then each update) and the
    /// tensor each update replaces.
    fn trace_step(&self) -> Result<(Program, Vec<String>)> {
        let tape = Tape::trace(DType::F32);
        let scope = Scope::new(&tape, 0);
        let (loss, accuracy, params, grads) = self.trace_backward(&tape, &scope)?;
        let optimizer = &self.options.optimizer;
        let scalars =
            optimizer.scalars().iter().map(|s| tape.input_spec(s, DType::F32, &[])).collect::<Result<Vec<Var>, _>>()?;
        let graph = tape.graph();
        for (p, g) in params.iter().zip(&grads) {
            let name = name_of(&graph, p);
            let slots = optimizer
                .slots()
                .iter()
                .map(|s| tape.parameter_spec(&format!("{name}.{s}"), DType::F32, p.shape().dims()));
            let slots = slots.collect::<Result<Vec<Var>, _>>()?;
            optimizer.record(&scalars, p, g, &slots)?;
        }
        let updates = tape.updates();
        let graph = tape.graph();
        let targets: Vec<String> = updates.iter().map(|(t, _)| name_of(&graph, t)).collect();
        let outputs = [loss.id(), accuracy.id()].into_iter().chain(updates.iter().map(|(_, new)| new.id())).collect();
        Ok((Program { graph, outputs }, targets))
    }

    /// Traces forward on the trainer's batch (inputs `images` and `labels`), the loss, the
    /// accuracy and backward: the loss, the accuracy, the parameters and their gradients (what
    /// the whole step and the data-parallel gradient graph share).
    fn trace_backward(&self, tape: &Tape, scope: &Scope) -> Result<(Var, Var, Vec<Var>, Vec<Var>)> {
        let [c, h, w] = self.options.input;
        let images = tape.input_spec("images", DType::F32, &[self.options.batch, c, h, w])?;
        let labels = tape.input_spec("labels", DType::F32, &[self.options.batch])?;
        let logits = self.model.forward(scope, &images, Mode::Train)?;
        let loss = logits.cross_entropy(&labels)?;
        let accuracy = tape.no_grad(|| logits.accuracy(&labels))?;
        let params = scope.parameters();
        let grads = grad(&loss, &params.iter().collect::<Vec<&Var>>())?;
        Ok((loss, accuracy, params, grads))
    }

    /// Traces and compiles the evaluation graph for batches of `batch` images: batch norm in eval
    /// mode; outputs the logits, the mean cross-entropy and the accuracy against the input
    /// `labels`.
    fn build_eval(&self, batch: usize) -> Result<Executor> {
        let [c, h, w] = self.options.input;
        let tape = Tape::trace(DType::F32);
        let images = tape.input_spec("images", DType::F32, &[batch, c, h, w])?;
        let labels = tape.input_spec("labels", DType::F32, &[batch])?;
        let logits = self.model.forward(&Scope::new(&tape, 0), &images, Mode::Eval)?;
        let (loss, accuracy) = (logits.cross_entropy(&labels)?, logits.accuracy(&labels)?);
        let mut program = Program { graph: tape.graph(), outputs: vec![logits.id(), loss.id(), accuracy.id()] };
        if self.options.fuse {
            program = Pipeline::training().run(program)?.pop().expect("the input stage at least").program;
        }
        Executor::new(program, &self.options, vec![])
    }
}

/// The first value of a step that is not a number or infinite ([`Trainer::first_non_finite`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NonFiniteValue {
    /// The node of the unfused step graph.
    pub node: NodeId,
    /// Its line in the graph's text dump.
    pub line: String,
    /// Forward, backward or update.
    pub role: Role,
    /// The parameter's or input's name, when the node is one (the state itself holds the value).
    pub parameter: Option<String>,
    /// How many of its elements are non-finite.
    pub non_finite: usize,
    /// Its elements.
    pub elements: usize,
    /// One line per input: its node, op or name, and its values' health.
    pub inputs: Vec<String>,
}

impl std::fmt::Display for NonFiniteValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = format!("{:?}", self.role).to_lowercase();
        write!(f, "the first non-finite value is {} ({role}", self.line)?;
        if let Some(name) = &self.parameter {
            write!(f, ", the state tensor {name}")?;
        }
        write!(f, "): {} of {} values", self.non_finite, self.elements)?;
        for input in &self.inputs {
            write!(f, "\n  input {input}")?;
        }
        Ok(())
    }
}

/// The values of tensor `name` of `tensors`, which must have `dims`: otherwise an error naming it.
fn tensor_for(tensors: &BTreeMap<String, Tensor>, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
    let t = tensors.get(name).ok_or_else(|| Error::State(format!("the checkpoint has no {name}")))?;
    if t.shape().dims() != dims {
        return Err(Error::State(format!("{name} is {:?} in the checkpoint, {dims:?} in the model", t.shape().dims())));
    }
    Ok(t.to_f64_vec().into_iter().map(|v| v as f32).collect())
}

/// The name of parameter `v`.
fn name_of(graph: &Graph, v: &Var) -> String {
    graph.source_name(v.id()).expect("scope tensors are parameters").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_and_multiply_add_choose_the_target_and_neither_keeps_the_host() {
        let options = TrainerOptions::paper(2, [3, 8, 8], 0);
        assert!(options.compile_options().unwrap().target.is_none());
        let separate = TrainerOptions { mul_add: Some(MulAdd::Separate), ..options.clone() };
        let target = separate.compile_options().unwrap().target.unwrap();
        assert_eq!((target.mul_add(), target.lanes()), (MulAdd::Separate, Target::host().unwrap().lanes()));
        let narrow = TrainerOptions { mul_add: Some(MulAdd::Separate), lanes: Some(4), ..options.clone() };
        let target = narrow.compile_options().unwrap().target.unwrap();
        assert_eq!((target.mul_add(), target.lanes()), (MulAdd::Separate, 4));
        let odd = TrainerOptions { lanes: Some(5), ..options };
        assert!(odd.compile_options().unwrap_err().to_string().contains("5 lanes"));
    }
}
