//! Where a traced graph runs: JIT-compiled kernels, or the reference interpreter (slow, for
//! debugging a step that misbehaves).

use crate::Result;
use crate::TrainerOptions;
use skipgrad_fuse::Program;
use skipgrad_ir::{Graph, NodeId, Tensor};
use skipgrad_jit::{CompileOptions, CompiledGraph, compile};
use skipgrad_reference::{Feeds, evaluate};
use std::borrow::Cow;
use std::collections::HashMap;

/// Which executor runs the training step and the evaluation graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Generated kernels (the default).
    Jit,
    /// The reference interpreter: plain loops, the oracle the JIT is tested against.
    Reference,
}

/// A graph ready to run with named inputs and ordered outputs.
pub(crate) enum Executor {
    Jit {
        compiled: Box<CompiledGraph>,
        /// Inputs and parameters by name.
        ids: HashMap<String, NodeId>,
    },
    Reference {
        graph: Graph,
        outputs: Vec<NodeId>,
        feeds: Feeds,
        /// Dims of the graph's inputs and parameters, by name.
        dims: HashMap<String, Vec<usize>>,
        results: Vec<Tensor>,
    },
}

impl Executor {
    /// Prepares `program` on the backend `options` name (on its threads, with its Winograd
    /// tiles and vector lanes); on the JIT, each of `updates` (an input's name and the output that is its new
    /// value) is written in place where that is safe.
    pub(crate) fn new(program: Program, options: &TrainerOptions, updates: Vec<(String, usize)>) -> Result<Executor> {
        let sources: Vec<(String, NodeId)> = program.graph.sources().map(|(id, name)| (name.to_string(), id)).collect();
        Ok(match options.backend {
            Backend::Jit => {
                let options = CompileOptions { updates, ..options.compile_options()? };
                Executor::Jit {
                    compiled: Box::new(compile(&program.graph, &program.outputs, &options)?),
                    ids: sources.into_iter().collect(),
                }
            }
            Backend::Reference => {
                let dims = sources
                    .iter()
                    .map(|(n, id)| (n.clone(), program.graph.nodes()[id.index()].ty.shape.dims().to_vec()))
                    .collect();
                Executor::Reference {
                    graph: program.graph,
                    outputs: program.outputs,
                    feeds: Feeds::new(),
                    dims,
                    results: vec![],
                }
            }
        })
    }

    /// Sets input or parameter `name`.
    pub(crate) fn set_input(&mut self, name: &str, values: &[f32]) -> Result<()> {
        match self {
            Executor::Jit { compiled, .. } => Ok(compiled.set_input(name, values)?),
            Executor::Reference { feeds, dims, .. } => {
                // Names the graph does not read are ignored, as the JIT ignores them.
                if let Some(d) = dims.get(name) {
                    feeds.insert(name.to_string(), Tensor::f32(d.clone(), values.to_vec())?);
                }
                Ok(())
            }
        }
    }

    /// Runs the graph once.
    pub(crate) fn run(&mut self) -> Result<()> {
        self.run_until_updates()?;
        self.run_updates();
        Ok(())
    }

    /// Runs the graph up to the kernels that write state in place: every other output is then
    /// computed and the state is as it was (the whole graph, on the interpreter).
    pub(crate) fn run_until_updates(&mut self) -> Result<()> {
        match self {
            Executor::Jit { compiled, .. } => compiled.run_until_updates(),
            Executor::Reference { graph, outputs, feeds, results, .. } => *results = evaluate(graph, feeds, outputs)?,
        }
        Ok(())
    }

    /// Runs what [`Executor::run_until_updates`] left.
    pub(crate) fn run_updates(&mut self) {
        if let Executor::Jit { compiled, .. } = self {
            compiled.run_updates();
        }
    }

    /// Output `k` of the last run.
    pub(crate) fn output(&self, k: usize) -> Vec<f32> {
        self.output_values(k).into_owned()
    }

    /// Output `k` of the last run, borrowed where the backend holds it as f32 (the JIT).
    pub(crate) fn output_values(&self, k: usize) -> Cow<'_, [f32]> {
        match self {
            Executor::Jit { compiled, .. } => Cow::Borrowed(compiled.output(k).expect("an output of the program")),
            Executor::Reference { results, .. } => {
                Cow::Owned(results[k].to_f64_vec().into_iter().map(|v| v as f32).collect())
            }
        }
    }

    /// Whether output `k` is written into the input it updates (so nothing needs copying back).
    pub(crate) fn in_place(&self, k: usize) -> bool {
        match self {
            Executor::Jit { compiled, .. } => compiled.in_place(k),
            Executor::Reference { .. } => false,
        }
    }

    /// The current value of input or parameter `name`.
    pub(crate) fn input(&self, name: &str) -> Option<Vec<f32>> {
        self.input_values(name).map(Cow::into_owned)
    }

    /// The current value of input or parameter `name`, borrowed where the backend holds it as
    /// f32 (the JIT).
    pub(crate) fn input_values(&self, name: &str) -> Option<Cow<'_, [f32]>> {
        match self {
            Executor::Jit { compiled, ids } => ids.get(name).and_then(|&id| compiled.value(id)).map(Cow::Borrowed),
            Executor::Reference { feeds, .. } => {
                feeds.get(name).map(|t| Cow::Owned(t.to_f64_vec().into_iter().map(|v| v as f32).collect()))
            }
        }
    }

    /// Kernel calls per run (JIT only).
    pub(crate) fn kernel_calls(&self) -> Option<usize> {
        match self {
            Executor::Jit { compiled, .. } => Some(compiled.steps()),
            Executor::Reference { .. } => None,
        }
    }
}
