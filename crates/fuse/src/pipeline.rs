//! The pass framework: programs, passes, and pipelines that keep every stage for dumps.

use crate::Result;
use skipgrad_ir::{Graph, NodeId};

/// A graph and the nodes its user reads (a step's loss, gradients and updates). Passes keep the
/// outputs' values and may rewrite or drop everything else.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// The graph.
    pub graph: Graph,
    /// The nodes read after running it, in order.
    pub outputs: Vec<NodeId>,
}

/// A graph-to-graph rewrite.
pub trait Pass {
    /// The pass's name, as stages and counts show it.
    fn name(&self) -> &str;
    /// The rewritten program and the number of rewrites made, per rule.
    fn run(&self, program: &Program) -> Result<(Program, Vec<(String, usize)>)>;
}

/// One stage of a pipeline run: the program after a pass (or the input, named `input`).
#[derive(Clone, Debug)]
pub struct Stage {
    /// `input`, or the pass that produced this stage.
    pub name: String,
    /// The program at this stage.
    pub program: Program,
    /// Rewrites the pass made, per rule (none for the input).
    pub rewrites: Option<Vec<(String, usize)>>,
}

/// Passes run in order.
#[derive(Default)]
pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// The passes for a training (or inference) step: fuse elementwise chains, convolutions with
    /// the chains that consume them, and batch statistics into the convolutions they read; then
    /// merge every update (optimizer steps, running statistics) into one kernel.
    pub fn training() -> Self {
        Self::new().with(crate::Fuse { conv_epilogues: true, conv_stats: true }).with(crate::Foreach)
    }

    /// This pipeline with `pass` appended.
    pub fn with(mut self, pass: impl Pass + 'static) -> Self {
        self.passes.push(Box::new(pass));
        self
    }

    /// Runs every pass; returns the input stage followed by one stage per pass. With the dump
    /// switch on (`SKIPGRAD_DUMP`), each pass's output is written as a numbered stage.
    pub fn run(&self, program: Program) -> Result<Vec<Stage>> {
        let mut stages = vec![Stage { name: "input".into(), program, rewrites: None }];
        for pass in &self.passes {
            let (next, rewrites) = pass.run(&stages[stages.len() - 1].program)?;
            skipgrad_ir::debug::dump_graph(pass.name(), &next.graph);
            stages.push(Stage { name: pass.name().into(), program: next, rewrites: Some(rewrites) });
        }
        Ok(stages)
    }
}

/// The rewrite counts of a run, one `rule: count` per rule of every pass, comma separated.
pub fn counts(stages: &[Stage]) -> String {
    stages
        .iter()
        .filter_map(|s| s.rewrites.as_ref())
        .flatten()
        .map(|(rule, n)| format!("{rule}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Stage {
    /// The text dump of this stage, headed by its name and rewrite count.
    pub fn dump(&self) -> String {
        let head = match &self.rewrites {
            Some(counts) => {
                let counts = counts.iter().map(|(rule, n)| format!("{rule}: {n}")).collect::<Vec<_>>().join(", ");
                format!("# stage {} ({counts})\n", self.name)
            }
            None => format!("# stage {}\n", self.name),
        };
        head + &self.program.graph.dump()
    }
}
