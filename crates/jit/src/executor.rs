//! `CompiledGraph`: a graph lowered to kernels, with its buffers allocated once and a thread
//! pool, replayed by `run` without allocating.

use crate::buffer::{Buffer, Guard};
use crate::compiler::{Code, Compiler};
use crate::lower::{Buf, Lowered, lower};
use crate::{CompileStats, Error, KernelCode, Result, Target, ThreadPool};
use skipgrad_ir::{Graph, NodeId, Op, Tensor, TensorType};
use std::collections::HashMap;

/// How to compile a graph.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Threads kernels run on (the caller's included).
    pub threads: usize,
    /// The code-generation target; `None` for the host with its preferred multiply-add.
    pub target: Option<Target>,
    /// Place every buffer against an inaccessible page (for tests of generated code).
    pub guard: Guard,
}

impl Default for CompileOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        CompileOptions { threads, target: None, guard: Guard::None }
    }
}

/// Where a step's pointer points while planning.
enum Slot {
    Node(usize),
    Scratch(usize),
}

/// One kernel call of the replay.
struct Step {
    node: NodeId,
    kernel: usize,
    /// Operand pointers then the output pointer, into `CompiledGraph::buffers`.
    args: Vec<*mut f32>,
    groups: u64,
}

/// A graph compiled to kernels. Feed its inputs, [`run`](CompiledGraph::run) it, read its outputs.
pub struct CompiledGraph {
    /// One buffer per node that the outputs depend on (empty for the others). Never resized, so
    /// the pointers in `steps` stay valid.
    buffers: Vec<Buffer>,
    /// Kernels' private buffers (packed convolution inputs), never resized either. Only the steps'
    /// raw pointers read them; the field owns them for the graph's lifetime.
    #[allow(dead_code)]
    scratch: Vec<Buffer>,
    types: Vec<TensorType>,
    steps: Vec<Step>,
    /// Inputs and parameters the outputs read; `None` for those of the graph they do not.
    feeds: HashMap<String, Option<NodeId>>,
    outputs: Vec<NodeId>,
    /// Inputs that feed cross-entropy labels, with their class count: checked when fed.
    labels: HashMap<NodeId, usize>,
    kernel_of: HashMap<NodeId, usize>,
    codes: Vec<KernelCode>,
    stats: CompileStats,
    pool: ThreadPool,
    // Dropped last among the fields that matter: steps hold pointers to its functions.
    code: Code,
}

/// Compiles the part of `graph` that `outputs` depend on.
pub fn compile(graph: &Graph, outputs: &[NodeId], options: &CompileOptions) -> Result<CompiledGraph> {
    let target = match &options.target {
        Some(t) => t.clone(),
        None => Target::host()?,
    };
    let nodes = graph.nodes();
    let mut needed = vec![false; nodes.len()];
    for &o in outputs {
        graph.node(o)?;
        needed[o.index()] = true;
    }
    for i in (0..nodes.len()).rev() {
        if needed[i] {
            for j in &nodes[i].inputs {
                needed[j.index()] = true;
            }
        }
    }
    let mut compiler = Compiler::new(target);
    let mut buffers: Vec<Buffer> = (0..nodes.len()).map(|_| Buffer::zeroed(0, Guard::None)).collect();
    let mut feeds = HashMap::new();
    let mut planned = Vec::new();
    let mut scratch: Vec<Buffer> = Vec::new();
    let mut kernel_of = HashMap::new();
    for (i, id) in graph.ids().enumerate() {
        if let Op::Input { name } | Op::Parameter { name } = &nodes[i].op {
            feeds.insert(name.clone(), needed[i].then_some(id));
        }
        if !needed[i] {
            continue;
        }
        buffers[i] = Buffer::zeroed(nodes[i].ty.shape.numel(), options.guard);
        match lower(graph, id)? {
            Lowered::Feed => {}
            Lowered::Constant(values) => buffers[i].as_mut_slice().copy_from_slice(&values),
            Lowered::Steps { scratch: lengths, steps } => {
                let first_scratch = scratch.len();
                scratch.extend(lengths.iter().map(|&len| Buffer::zeroed(len, options.guard)));
                for step in steps {
                    let kernel = compiler.kernel(&step.label, &step.spec)?;
                    kernel_of.insert(id, kernel);
                    let at = |b: Buf| match b {
                        Buf::Node(n) => Slot::Node(n.index()),
                        Buf::Scratch(k) => Slot::Scratch(first_scratch + k),
                    };
                    let mut args: Vec<Slot> = step.inputs.into_iter().map(at).collect();
                    args.push(at(step.output));
                    planned.push((id, kernel, args, step.spec.groups() as u64));
                }
            }
        }
    }
    let (code, codes, stats) = compiler.finish()?;
    // Kernels clamp labels to stay in bounds; the executor rejects bad labels when they are fed.
    let labels = graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::SoftmaxCrossEntropy | Op::SoftmaxCrossEntropyGrad))
        .filter_map(|n| {
            let (z, y) = (n.inputs[0].index(), n.inputs[1]);
            (needed[y.index()] && nodes[y.index()].op.is_source()).then(|| (y, nodes[z].ty.shape.dims()[1]))
        })
        .collect();
    let steps = planned
        .into_iter()
        .map(|(node, kernel, slots, groups)| {
            let args = slots
                .into_iter()
                .map(|slot| match slot {
                    Slot::Node(i) => buffers[i].as_ptr(),
                    Slot::Scratch(k) => scratch[k].as_ptr(),
                })
                .collect();
            Step { node, kernel, args, groups }
        })
        .collect();
    Ok(CompiledGraph {
        buffers,
        scratch,
        types: nodes.iter().map(|n| n.ty.clone()).collect(),
        steps,
        feeds,
        outputs: outputs.to_vec(),
        labels,
        kernel_of,
        codes,
        stats,
        pool: ThreadPool::new(options.threads),
        code,
    })
}

impl CompiledGraph {
    /// Copies `values` into the input or parameter called `name` (ignored when the outputs do not
    /// depend on it).
    pub fn set_input(&mut self, name: &str, values: &[f32]) -> Result<()> {
        let fed =
            self.feeds.get(name).ok_or_else(|| Error::Feed(format!("the graph has no input or parameter {name:?}")))?;
        let Some(id) = *fed else { return Ok(()) };
        let buffer = self.buffers[id.index()].as_mut_slice();
        if buffer.len() != values.len() {
            return Err(Error::Feed(format!("{name:?} is {}, got {} values", self.types[id.index()], values.len())));
        }
        if let Some(&classes) = self.labels.get(&id)
            && let Some((row, v)) =
                values.iter().enumerate().find(|(_, v)| !(v.fract() == 0.0 && **v >= 0.0 && (**v as usize) < classes))
        {
            return Err(Error::Feed(format!("{name:?}: label {v} in row {row} is not a class index in 0..{classes}")));
        }
        buffer.copy_from_slice(values);
        Ok(())
    }

    /// Runs every kernel once, in order, on the current inputs.
    pub fn run(&mut self) {
        for step in &self.steps {
            // SAFETY: `args` point into `self.buffers`, which are sized for the node's type and
            // never resized; each kernel reads only its operands and writes only its output, within
            // the extents its spec was generated for (checked by the guard-page tests); `&mut self`
            // keeps every other access out until the pool returns.
            unsafe { self.pool.run(self.code.fns[step.kernel], step.args.as_ptr(), step.groups) };
        }
    }

    /// Runs once like [`run`](CompiledGraph::run), timing every kernel call: returns, per distinct
    /// kernel, its name, calls and total seconds, slowest first.
    pub fn profile(&mut self) -> Vec<(String, usize, f64)> {
        let mut totals: Vec<(usize, f64)> = vec![(0, 0.0); self.codes.len()];
        for step in &self.steps {
            let start = std::time::Instant::now();
            // SAFETY: as in `run`.
            unsafe { self.pool.run(self.code.fns[step.kernel], step.args.as_ptr(), step.groups) };
            totals[step.kernel].0 += 1;
            totals[step.kernel].1 += start.elapsed().as_secs_f64();
        }
        let mut rows: Vec<(String, usize, f64)> = totals
            .into_iter()
            .enumerate()
            .filter(|(_, (calls, _))| *calls > 0)
            .map(|(k, (calls, secs))| (self.codes[k].name.clone(), calls, secs))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }

    /// Feeds named tensors, runs, and returns the outputs as tensors (allocates the results).
    pub fn run_tensors(&mut self, feeds: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
        for (name, t) in feeds {
            let values: Vec<f32> = t.to_f64_vec().into_iter().map(|v| v as f32).collect();
            self.set_input(name, &values)?;
        }
        self.run();
        self.outputs
            .iter()
            .map(|o| Ok(Tensor::f32(self.types[o.index()].shape.clone(), self.buffers[o.index()].as_slice().to_vec())?))
            .collect()
    }

    /// The current value of output `k` (in the order given to [`compile`]).
    pub fn output(&self, k: usize) -> Option<&[f32]> {
        self.outputs.get(k).map(|o| self.buffers[o.index()].as_slice())
    }

    /// The current value of any computed node.
    pub fn value(&self, node: NodeId) -> Option<&[f32]> {
        self.buffers.get(node.index()).map(Buffer::as_slice)
    }

    /// Compile-time report: kernels generated, reused, and time taken.
    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// Every distinct kernel, with its IR and generated code.
    pub fn kernels(&self) -> &[KernelCode] {
        &self.codes
    }

    /// The kernel computing `node`, if a kernel does.
    pub fn kernel_for(&self, node: NodeId) -> Option<&KernelCode> {
        self.kernel_of.get(&node).map(|&k| &self.codes[k])
    }

    /// Number of kernel calls per run.
    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    /// Threads the kernels run on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Nodes in execution order, with the kernel each calls.
    pub fn schedule(&self) -> impl Iterator<Item = (NodeId, &KernelCode)> + '_ {
        self.steps.iter().map(|s| (s.node, &self.codes[s.kernel]))
    }
}
