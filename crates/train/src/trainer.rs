//! The compiled training step and evaluation graph of one model, and the state they share.

use crate::exec::{Backend, Executor};
use crate::{Error, Result};
use skipgrad_autodiff::{Sgd, Tape, Var, grad};
use skipgrad_fuse::{Pipeline, Program};
use skipgrad_ir::{DType, Graph, NodeId, Role, Tensor};
use skipgrad_jit::{CompileOptions, compile};
use skipgrad_nn::{Checkpoint, Mode, Model, Scope, TRAINING_STATE as OPTIMIZER};
use std::collections::{BTreeMap, HashMap};

/// How a model trains.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerOptions {
    /// Images per step.
    pub batch: usize,
    /// Channels, height, width of an image.
    pub input: [usize; 3],
    /// Seed of the initial weights.
    pub seed: u64,
    /// Threads the kernels run on.
    pub threads: usize,
    /// SGD momentum (the paper's 0.9).
    pub momentum: f64,
    /// Weight decay (the paper's 1e-4).
    pub weight_decay: f64,
    /// Run the fusion pipeline before compiling (on by default; off to debug).
    pub fuse: bool,
    /// Where the step runs: the JIT, or the reference interpreter (for debugging).
    pub backend: Backend,
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
            momentum: 0.9,
            weight_decay: 1e-4,
            fuse: true,
            backend: Backend::Jit,
        }
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

/// The compiled training step; the learning rate is its input [`LEARNING_RATE`].
struct Step {
    compiled: Executor,
    /// Each output after the loss and accuracy: the name of the tensor it updates.
    updates: Vec<String>,
}

/// Trains one model, a zoo net or any other [`Model`]: holds its state (parameters, batch-norm
/// buffers, SGD velocities), the compiled training step (compiled once: the learning rate is fed
/// every step) and the compiled evaluation graph.
pub struct Trainer {
    /// The model, traced again for each graph.
    model: Box<dyn Model>,
    options: TrainerOptions,
    /// The model's tensors (parameters and buffers) in creation order, then the velocities.
    names: Vec<String>,
    /// Values of every state tensor, current when `step` is `None` or after a sync.
    state: BTreeMap<String, Vec<f32>>,
    /// Dims of every state tensor.
    dims: HashMap<String, Vec<usize>>,
    step: Option<Step>,
    /// Times the step was compiled.
    compilations: usize,
    eval: Option<Executor>,
}

/// The name of the training step's learning-rate input (a scalar `f32[]`, fed every step).
pub const LEARNING_RATE: &str = "lr";

impl Trainer {
    /// A trainer for `model` (it keeps a copy, traced again for each graph it compiles), its
    /// weights drawn from `options.seed`.
    pub fn new<M: Model + Clone + 'static>(model: &M, options: TrainerOptions) -> Result<Trainer> {
        let tape = Tape::trace(DType::F32);
        let scope = Scope::new(&tape, options.seed);
        let [c, h, w] = options.input;
        let images = tape.input_spec("images", DType::F32, &[options.batch, c, h, w])?;
        model.forward(&scope, &images, Mode::Train)?;
        let mut names = vec![];
        let mut state = BTreeMap::new();
        let mut dims = HashMap::new();
        for e in scope.entries() {
            names.push(e.name.clone());
            dims.insert(e.name.clone(), e.var.shape().dims().to_vec());
            state.insert(e.name, e.init.to_f64_vec().into_iter().map(|v| v as f32).collect());
        }
        let graph = tape.graph();
        for p in scope.parameters() {
            let name = format!("{}.momentum", name_of(&graph, &p));
            state.insert(name.clone(), vec![0.0; p.shape().numel()]);
            dims.insert(name.clone(), p.shape().dims().to_vec());
            names.push(name);
        }
        Ok(Trainer {
            model: Box::new(model.clone()),
            options,
            names,
            state,
            dims,
            step: None,
            compilations: 0,
            eval: None,
        })
    }

    /// A trainer resuming from a zoo net's `checkpoint` (its configuration and tensors), with zero
    /// velocities.
    pub fn from_checkpoint(checkpoint: &Checkpoint, options: TrainerOptions) -> Result<Trainer> {
        checkpoint.build(&Tape::trace(DType::F32))?;
        let config = checkpoint.config.as_ref().expect("build needs a configuration");
        Trainer::with_weights(config, &checkpoint.tensors, options)
    }

    /// A trainer for `model` whose tensors take their values from `tensors` by name (a
    /// checkpoint's, of any model), with zero velocities. A tensor of the model that `tensors`
    /// lacks, or holds in another shape, is an error naming it; other tensors are ignored.
    pub fn with_weights<M: Model + Clone + 'static>(
        model: &M,
        tensors: &BTreeMap<String, Tensor>,
        options: TrainerOptions,
    ) -> Result<Trainer> {
        let mut trainer = Trainer::new(model, options)?;
        for name in trainer.names.iter().filter(|n| !n.ends_with(".momentum")) {
            let t = tensor_for(tensors, name, &trainer.dims[name])?;
            trainer.state.insert(name.clone(), t.to_f64_vec().into_iter().map(|v| v as f32).collect());
        }
        Ok(trainer)
    }

    /// The model this trainer trains.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// Runs one training step on a batch (`images` `[batch, C, H, W]`, `labels` `[batch]`) at
    /// learning rate `lr`.
    pub fn step(&mut self, images: &[f32], labels: &[f32], lr: f64, iteration: u64) -> Result<StepStats> {
        self.prepare()?;
        let step = self.step.as_mut().expect("built above");
        step.compiled.set_input(LEARNING_RATE, &[lr as f32])?;
        step.compiled.set_input("images", images)?;
        step.compiled.set_input("labels", labels)?;
        step.compiled.run()?;
        let loss = step.compiled.output(0)[0];
        let accuracy = step.compiled.output(1)[0];
        if !loss.is_finite() {
            return Err(Error::NonFinite { iteration, loss });
        }
        // Feed each update back into the tensor it updates.
        for k in 0..step.updates.len() {
            let values = step.compiled.output(2 + k);
            step.compiled.set_input(&step.updates[k], &values)?;
        }
        Ok(StepStats { loss, error: 1.0 - accuracy })
    }

    /// Compiles the training step now (the first [`Trainer::step`] would), so that a benchmark
    /// can time compilation apart from running. The step is compiled once: the learning rate is
    /// one of its inputs, so a schedule never recompiles it.
    pub fn prepare(&mut self) -> Result<()> {
        if self.step.is_none() {
            self.sync();
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

    /// Compiles the evaluation graph now, and runs it once on `images` (one batch), returning the
    /// logits (a benchmark's inference step).
    pub fn infer(&mut self, images: &[f32]) -> Result<Vec<f32>> {
        if self.eval.is_none() {
            self.sync();
            self.eval = Some(self.build_eval()?);
            let compiled = self.eval.as_mut().expect("built above");
            for name in &self.names {
                if !name.ends_with(".momentum") {
                    compiled.set_input(name, &self.state[name])?;
                }
            }
        }
        let compiled = self.eval.as_mut().expect("built above");
        compiled.set_input("images", images)?;
        compiled.run()?;
        Ok(compiled.output(0))
    }

    /// Loss and accuracy over `batches` (from [`skipgrad_data::in_order`], of this trainer's batch
    /// size), with batch norm in eval mode.
    pub fn evaluate(&mut self, batches: &[skipgrad_data::Batch]) -> Result<Evaluation> {
        self.sync();
        if self.eval.is_none() {
            self.eval = Some(self.build_eval()?);
        }
        let compiled = self.eval.as_mut().expect("built above");
        for name in &self.names {
            if !name.ends_with(".momentum") {
                compiled.set_input(name, &self.state[name])?;
            }
        }
        let batch = self.options.batch;
        let (mut loss, mut right, mut images) = (0.0f64, 0usize, 0usize);
        for b in batches {
            compiled.set_input("images", &b.images)?;
            compiled.run()?;
            let logits = compiled.output(0);
            let classes = logits.len() / batch;
            for (row, &label) in logits.chunks_exact(classes).zip(&b.labels).take(b.valid) {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
                let label = label as usize;
                loss += max + sum.ln() - row[label] as f64;
                let best = (0..classes).fold(0, |best, k| if row[k] > row[best] { k } else { best });
                right += usize::from(best == label);
            }
            images += b.valid;
        }
        let n = images.max(1) as f64;
        Ok(Evaluation { loss: loss / n, accuracy: right as f64 / n, images })
    }

    /// The model's tensors as a checkpoint.
    pub fn checkpoint(&mut self) -> Checkpoint {
        self.sync();
        let tensors = self
            .names
            .iter()
            .filter(|n| !n.ends_with(".momentum"))
            .map(|n| {
                let values = self.state[n].clone();
                (n.clone(), Tensor::f32(self.dims[n].clone(), values).expect("state matches its dims"))
            })
            .collect();
        Checkpoint { config: self.model.config().cloned(), tensors, metadata: BTreeMap::new() }
    }

    /// Every state tensor: the model's under their names, the SGD velocities as
    /// `optimizer.<parameter>.momentum` (what a resumable checkpoint holds).
    pub fn training_state(&mut self) -> BTreeMap<String, Tensor> {
        self.sync();
        self.names
            .iter()
            .map(|n| {
                let key = if n.ends_with(".momentum") { format!("{OPTIMIZER}{n}") } else { n.clone() };
                let t = Tensor::f32(self.dims[n].clone(), self.state[n].clone());
                (key, t.expect("state matches its dims"))
            })
            .collect()
    }

    /// Restores every state tensor from `tensors` (as [`Trainer::training_state`] names them);
    /// a missing or mis-shaped one is an error naming it.
    pub fn restore(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for n in &self.names {
            let key = if n.ends_with(".momentum") { format!("{OPTIMIZER}{n}") } else { n.clone() };
            let t = tensor_for(tensors, &key, &self.dims[n])?;
            self.state.insert(n.clone(), t.to_f64_vec().into_iter().map(|v| v as f32).collect());
        }
        // The compiled graphs read the state when next built.
        self.step = None;
        Ok(())
    }

    /// The value of state tensor `name` (a model tensor, or `<parameter>.momentum`).
    pub fn value(&mut self, name: &str) -> Option<&[f32]> {
        self.sync();
        self.state.get(name).map(|v| v.as_slice())
    }

    /// Kernel calls of the compiled training step (once it is built).
    pub fn kernel_calls(&self) -> Option<usize> {
        self.step.as_ref().and_then(|s| s.compiled.kernel_calls())
    }

    /// Copies the compiled step's current state into `state`.
    fn sync(&mut self) {
        let Some(step) = &self.step else { return };
        for name in &self.names {
            if let Some(values) = step.compiled.input(name) {
                self.state.insert(name.clone(), values);
            }
        }
    }

    /// Traces, fuses and compiles the training step, and feeds it the state.
    fn build_step(&self) -> Result<Step> {
        let (mut program, updates) = self.trace_step()?;
        if self.options.fuse {
            program = Pipeline::training().run(program)?.pop().expect("the input stage at least").program;
        }
        let mut compiled = Executor::new(self.options.backend, program, self.options.threads)?;
        for name in &self.names {
            compiled.set_input(name, &self.state[name])?;
        }
        Ok(Step { compiled, updates })
    }

    /// Finds where a step first produces a non-finite value: runs the step on `images` and
    /// `labels` at `lr` from the current state, unfused on the JIT, with every intermediate kept, and
    /// returns the first node (in graph order, which is topological) holding a NaN or an
    /// infinity, or `None` when every value is finite. After [`Trainer::step`] returned
    /// [`Error::NonFinite`], the state is still the one before that step, so this replays it.
    pub fn first_non_finite(&mut self, images: &[f32], labels: &[f32], lr: f64) -> Result<Option<NonFiniteValue>> {
        self.sync();
        let (program, _) = self.trace_step()?;
        let options = CompileOptions { threads: self.options.threads, plan_memory: false, ..CompileOptions::default() };
        let mut compiled = compile(&program.graph, &program.outputs, &options)?;
        compiled.set_input(LEARNING_RATE, &[lr as f32])?;
        compiled.set_input("images", images)?;
        compiled.set_input("labels", labels)?;
        for name in &self.names {
            compiled.set_input(name, &self.state[name])?;
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

    /// Traces the training step (forward, loss, backward, SGD updates at the rate fed as
    /// [`LEARNING_RATE`]): the unfused program (outputs: loss, accuracy, then each update) and the
    /// tensor each update replaces.
    fn trace_step(&self) -> Result<(Program, Vec<String>)> {
        let [c, h, w] = self.options.input;
        let tape = Tape::trace(DType::F32);
        let scope = Scope::new(&tape, 0);
        let images = tape.input_spec("images", DType::F32, &[self.options.batch, c, h, w])?;
        let labels = tape.input_spec("labels", DType::F32, &[self.options.batch])?;
        let logits = self.model.forward(&scope, &images, Mode::Train)?;
        let loss = logits.cross_entropy(&labels)?;
        let accuracy = tape.no_grad(|| logits.accuracy(&labels))?;
        let params = scope.parameters();
        let grads = grad(&loss, &params.iter().collect::<Vec<&Var>>())?;
        let lr = tape.input_spec(LEARNING_RATE, DType::F32, &[])?;
        // The rate comes from the input; a NaN constant would show in the loss if anything used it.
        let sgd = Sgd { lr: f64::NAN, momentum: self.options.momentum, weight_decay: self.options.weight_decay };
        let graph = tape.graph();
        for (p, g) in params.iter().zip(&grads) {
            let name = format!("{}.momentum", name_of(&graph, p));
            let v = tape.parameter_spec(&name, DType::F32, p.shape().dims())?;
            sgd.update_at(&lr, p, g, &v)?;
        }
        let updates = tape.updates();
        let graph = tape.graph();
        let targets: Vec<String> = updates.iter().map(|(t, _)| name_of(&graph, t)).collect();
        let outputs = [loss.id(), accuracy.id()].into_iter().chain(updates.iter().map(|(_, new)| new.id())).collect();
        Ok((Program { graph, outputs }, targets))
    }

    /// Traces and compiles the evaluation graph: the logits with batch norm in eval mode.
    fn build_eval(&self) -> Result<Executor> {
        let [c, h, w] = self.options.input;
        let tape = Tape::trace(DType::F32);
        let images = tape.input_spec("images", DType::F32, &[self.options.batch, c, h, w])?;
        let logits = self.model.forward(&Scope::new(&tape, 0), &images, Mode::Eval)?;
        let mut program = Program { graph: tape.graph(), outputs: vec![logits.id()] };
        if self.options.fuse {
            program = Pipeline::training().run(program)?.pop().expect("the input stage at least").program;
        }
        Executor::new(self.options.backend, program, self.options.threads)
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

/// Tensor `name` of `tensors`, which must have `dims`: otherwise an error naming it.
fn tensor_for<'a>(tensors: &'a BTreeMap<String, Tensor>, name: &str, dims: &[usize]) -> Result<&'a Tensor> {
    let t = tensors.get(name).ok_or_else(|| Error::State(format!("the checkpoint has no {name}")))?;
    if t.shape().dims() != dims {
        return Err(Error::State(format!("{name} is {:?} in the checkpoint, {dims:?} in the model", t.shape().dims())));
    }
    Ok(t)
}

/// The name of parameter `v`.
fn name_of(graph: &Graph, v: &Var) -> String {
    graph.source_name(v.id()).expect("scope tensors are parameters").to_string()
}
