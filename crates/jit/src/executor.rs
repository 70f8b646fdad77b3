//! `compile` and `CompiledGraph`: a graph scheduled as kernel calls (`schedule.rs`), its memory
//! laid out once (`memory.rs`), each call bound to its buffers, and the calls replayed by `run`
//! on a thread pool without allocating.

use crate::buffer::{Buffer, Guard};
use crate::compiler::{Code, Compiler};
use crate::memory::{Layout, MemoryReport, layout};
use crate::schedule::{Schedule, Slot, schedule};
use crate::{CompileStats, Error, KernelCode, Result, Target, ThreadPool, WinogradTiles};
use skipgrad_ir::debug;
use skipgrad_ir::{Graph, NodeId, Op, Tensor, TensorType};
use std::collections::HashMap;

/// How to compile a graph.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Threads kernels run on (the caller's included).
    pub threads: usize,
    /// The code-generation target; `None` for the host with its preferred multiply-add.
    pub target: Option<Target>,
    /// Place every buffer against an inaccessible page (for tests of generated code). Guarded
    /// graphs are not memory-planned: every value gets a buffer of its own, of its exact size.
    pub guard: Guard,
    /// Share memory between intermediate values whose lifetimes do not overlap, and between the
    /// scratch areas of identical kernels. Off, every value keeps its own buffer, so
    /// [`CompiledGraph::value`] can read any intermediate after a run.
    pub plan_memory: bool,
    /// Which 3x3 stride-1 convolutions (of at least 8 input channels) compute by Winograd's
    /// minimal filtering: F(2x2, 3x3) multiplies 2.25x less than direct, F(4x4, 3x3) 4x less.
    /// [`WinogradTiles::Off`] makes every convolution direct.
    pub winograd: WinogradTiles,
    /// State the graph updates: (input or parameter name, output index) when output `k` is the
    /// new value of that input (a parameter after an optimizer step, a running statistic). Each
    /// output is written straight into its input's buffer when that is safe (no later kernel
    /// reads the input, and the writing kernel reads each element before writing it), so a
    /// training step updates its state in place; [`CompiledGraph::in_place`] says which were.
    pub updates: Vec<(String, usize)>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        CompileOptions {
            threads,
            target: None,
            guard: Guard::None,
            plan_memory: true,
            winograd: WinogradTiles::default(),
            updates: vec![],
        }
    }
}

/// One kernel call of the replay.
struct Step {
    node: NodeId,
    kernel: usize,
    /// Operand pointers then the output pointer, into `CompiledGraph::storage`.
    args: Vec<*mut f32>,
    groups: u64,
    /// Bytes of the tensors the call reads and writes (each counted once).
    bytes: u64,
    /// For a call whose output depends only on inputs that are fed (a Winograd weight
    /// transform): what it saw of them when it last ran, so that it runs again only after one is
    /// fed again.
    cache: Option<Cache>,
}

/// What a cached call read when it last ran: its operands' storage buffers and the number of
/// times each had been fed ([`CompiledGraph::set_input`]) then.
struct Cache {
    buffers: Vec<usize>,
    seen: Vec<u64>,
}

impl Step {
    /// Whether the call can be skipped because none of its operands was fed since it last ran
    /// (given how often each buffer has been fed); a call that is not skipped records `fed`.
    fn unchanged(&mut self, fed: &[u64]) -> bool {
        let Some(c) = &mut self.cache else { return false };
        if c.buffers.iter().zip(&c.seen).all(|(&b, &s)| fed[b] == s) {
            return true;
        }
        for (&b, s) in c.buffers.iter().zip(&mut c.seen) {
            *s = fed[b];
        }
        false
    }
}

/// One distinct kernel's share of a profiled run.
#[derive(Clone, Debug)]
pub struct KernelProfile {
    /// The kernel's name.
    pub name: String,
    /// Calls in one run.
    pub calls: usize,
    /// Seconds over all its calls.
    pub seconds: f64,
    /// Floating-point operations over all its calls (compute-bound kernels).
    pub flops: Option<f64>,
    /// Bytes of tensors read and written over all its calls.
    pub bytes: f64,
    /// The nodes its calls compute, in schedule order.
    pub nodes: Vec<NodeId>,
}

/// The environment variable that makes every run print a per-kernel profile to stderr.
pub const PROFILE_ENV: &str = "SKIPGRAD_PROFILE";

/// A graph compiled to kernels. Feed its inputs, [`run`](CompiledGraph::run) it, read its outputs.
pub struct CompiledGraph {
    /// All memory: dedicated buffers (inputs, parameters, constants, outputs), shared blocks of
    /// intermediates, scratch areas. Never resized, so the pointers in `steps` stay valid.
    storage: Vec<Buffer>,
    /// The storage buffer holding each node's value (`None` for nodes the outputs do not need).
    place: Vec<Option<usize>>,
    types: Vec<TensorType>,
    steps: Vec<Step>,
    /// Inputs and parameters the outputs read; `None` for those of the graph they do not.
    feeds: HashMap<String, Option<NodeId>>,
    outputs: Vec<NodeId>,
    /// Inputs that feed cross-entropy labels, with their class count: checked when fed.
    labels: HashMap<NodeId, usize>,
    /// Per storage buffer: how many times an input placed in it was fed.
    fed: Vec<u64>,
    kernel_of: HashMap<NodeId, usize>,
    codes: Vec<KernelCode>,
    stats: CompileStats,
    memory: MemoryReport,
    /// Per output: whether it is written into the input it updates ([`CompileOptions::updates`]).
    in_place: Vec<bool>,
    /// The first step that writes an update in place (every other output is computed before it).
    updates_from: usize,
    /// The profile of a run's first part, until [`CompiledGraph::run_updates`] prints it.
    pending_profile: Option<Vec<KernelProfile>>,
    /// Print a profile after every run (`SKIPGRAD_PROFILE`).
    print_profile: bool,
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
    let mut compiler = Compiler::new(target);
    let scheduled = schedule(graph, outputs, options, &mut compiler)?;
    let (code, codes, stats) = compiler.finish()?;
    let Layout { storage, place, scratch_place, memory, in_place, updates_from, cached, kept, blocks } =
        layout(graph, outputs, options, &scheduled, &codes)?;
    let Schedule { needed, calls: planned, feeds, kernel_of, per_thread, .. } = scheduled;

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
    let mut plan_lines = vec![];
    let steps: Vec<Step> = planned
        .into_iter()
        .enumerate()
        .map(|(index, (node, kernel, slots, groups))| {
            // (storage buffer, length, what it holds) of each argument.
            let located: Vec<(usize, usize, String)> = slots
                .iter()
                .map(|slot| match *slot {
                    Slot::Node(i) => (place[i].expect("needed"), nodes[i].ty.shape.numel(), format!("%{i}")),
                    Slot::Scratch(k) if per_thread[k] => {
                        (scratch_place[k], storage[scratch_place[k]].len(), "per-thread-scratch".into())
                    }
                    Slot::Scratch(k) if kept[k] => (scratch_place[k], storage[scratch_place[k]].len(), "kept".into()),
                    Slot::Scratch(k) => (scratch_place[k], storage[scratch_place[k]].len(), "scratch".into()),
                })
                .collect();
            if debug::dump_dir().is_some() {
                let args: Vec<String> = located.iter().map(|(b, len, what)| format!("{what}@b{b}[{len}]")).collect();
                plan_lines.push(format!("{index:5} {node:>6} {:<40} {}", codes[kernel].name, args.join(" ")));
            }
            // Per-thread scratch holds one image at a time and stays in cache: not traffic.
            let bytes = located
                .iter()
                .filter(|(_, _, what)| what != "per-thread-scratch")
                .map(|(_, len, _)| 4 * *len as u64)
                .sum();
            let args = located.iter().map(|(b, _, _)| storage[*b].as_ptr()).collect();
            let cache = cached[index].then(|| {
                let buffers: Vec<usize> = located[..located.len() - 1].iter().map(|(b, _, _)| *b).collect();
                Cache { seen: vec![u64::MAX; buffers.len()], buffers }
            });
            Step { node, kernel, args, groups, bytes, cache }
        })
        .collect();
    if debug::dump_dir().is_some() {
        let mb = |b: usize| b as f64 / 1e6;
        let head = format!(
            "# memory plan: {:.1} MB held: dedicated {:.1} MB, shared {:.1} MB in {} blocks, scratch {:.1} MB ({:.1} MB without planning)\n# one line per kernel call: step, node, kernel, then each argument (inputs, then output) as %node or scratch @ buffer [f32 elements]\n",
            mb(memory.total()),
            mb(memory.dedicated),
            mb(memory.shared),
            blocks,
            mb(memory.scratch),
            mb(memory.dedicated + memory.unplanned),
        );
        debug::dump_files("memory-plan", &[(".txt".into(), head + &plan_lines.join("\n") + "\n")]);
        let files: Vec<(String, String)> = codes
            .iter()
            .flat_map(|k| {
                let mut f =
                    vec![(format!("{}.clif", k.name), k.ir.clone()), (format!("{}.vcode", k.name), k.vcode.clone())];
                f.extend(k.disassembly.clone().map(|d| (format!("{}.asm", k.name), d)));
                f
            })
            .collect();
        debug::dump_files("kernels", &files);
    }
    Ok(CompiledGraph {
        fed: vec![0; storage.len()],
        storage,
        place,
        types: nodes.iter().map(|n| n.ty.clone()).collect(),
        steps,
        feeds,
        outputs: outputs.to_vec(),
        labels,
        kernel_of,
        codes,
        stats,
        memory,
        in_place,
        updates_from,
        pending_profile: None,
        print_profile: std::env::var_os(PROFILE_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
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
        if self.types[id.index()].shape.numel() != values.len() {
            return Err(Error::Feed(format!("{name:?} is {}, got {} values", self.types[id.index()], values.len())));
        }
        if let Some(&classes) = self.labels.get(&id)
            && let Some((row, v)) =
                values.iter().enumerate().find(|(_, v)| !(v.fract() == 0.0 && **v >= 0.0 && (**v as usize) < classes))
        {
            return Err(Error::Feed(format!("{name:?}: label {v} in row {row} is not a class index in 0..{classes}")));
        }
        self.slice_mut(id).copy_from_slice(values);
        self.fed[self.place[id.index()].expect("fed inputs are placed")] += 1;
        Ok(())
    }

    /// Runs every kernel once, in order, on the current inputs, except the kernels whose result
    /// depends only on inputs that were not fed since they last ran (the Winograd weight
    /// transforms of a graph whose weights are fed once: an inference graph's). With
    /// `SKIPGRAD_PROFILE=1` in the environment at compile time, prints a per-kernel profile of the
    /// run to stderr (a skipped kernel counts no call).
    pub fn run(&mut self) {
        self.run_until_updates();
        self.run_updates();
    }

    /// Runs the kernels before the first one that writes an update in place
    /// ([`CompileOptions::updates`]): every output that is not such an update is then computed,
    /// and the inputs still hold their old values, so a caller can check the loss before the
    /// state changes. [`run_updates`](CompiledGraph::run_updates) runs the rest.
    pub fn run_until_updates(&mut self) {
        if self.print_profile {
            let mut rows = self.profile_rows();
            self.run_timed(0..self.updates_from, &mut rows);
            self.pending_profile = Some(rows);
        } else {
            self.run_steps(0..self.updates_from);
        }
    }

    /// Runs the kernels that [`run_until_updates`](CompiledGraph::run_until_updates) left: the
    /// two together are one [`run`](CompiledGraph::run) (which prints its profile here, with
    /// `SKIPGRAD_PROFILE`).
    pub fn run_updates(&mut self) {
        let range = self.updates_from..self.steps.len();
        if self.print_profile {
            let mut rows = self.pending_profile.take().unwrap_or_else(|| self.profile_rows());
            self.run_timed(range, &mut rows);
            eprintln!("{}", profile_table(&sorted_profile(rows)));
        } else {
            self.run_steps(range);
        }
    }

    fn run_steps(&mut self, range: std::ops::Range<usize>) {
        for step in &mut self.steps[range] {
            if step.unchanged(&self.fed) {
                continue;
            }
            // SAFETY: `args` point into `self.storage`, whose buffers are at least as large as
            // every value placed in them and never resized; each kernel reads only its operands and
            // writes only its outputs, within the extents its spec was generated for (checked by
            // the guard-page tests); values sharing a buffer are never live at once (the plan's
            // invariant, tested in `plan.rs`; an update shares its input's buffer only when the
            // input is not read after it is written: `update_aliases`); `&mut self` keeps every
            // other access out until the pool returns.
            unsafe { self.pool.run(self.code.fns[step.kernel], step.args.as_ptr(), step.groups) };
        }
    }

    /// Runs once like [`run`](CompiledGraph::run), timing every kernel call: returns, per distinct
    /// kernel, its calls, seconds, work and the nodes it computes, slowest first.
    pub fn profile(&mut self) -> Vec<KernelProfile> {
        let mut rows = self.profile_rows();
        self.run_timed(0..self.steps.len(), &mut rows);
        sorted_profile(rows)
    }

    /// One empty profile row per distinct kernel.
    fn profile_rows(&self) -> Vec<KernelProfile> {
        let row = |c: &KernelCode| KernelProfile {
            name: c.name.clone(),
            calls: 0,
            seconds: 0.0,
            flops: None,
            bytes: 0.0,
            nodes: vec![],
        };
        self.codes.iter().map(row).collect()
    }

    /// Runs `range` of the steps, adding each call's time and work to its kernel's row.
    fn run_timed(&mut self, range: std::ops::Range<usize>, rows: &mut [KernelProfile]) {
        for step in &mut self.steps[range] {
            if step.unchanged(&self.fed) {
                continue;
            }
            let start = std::time::Instant::now();
            // SAFETY: as in `run_steps`.
            unsafe { self.pool.run(self.code.fns[step.kernel], step.args.as_ptr(), step.groups) };
            let row = &mut rows[step.kernel];
            row.seconds += start.elapsed().as_secs_f64();
            row.calls += 1;
            row.bytes += step.bytes as f64;
            row.flops = self.codes[step.kernel].spec.flops().map(|f| f * row.calls as f64);
            if row.nodes.last() != Some(&step.node) {
                row.nodes.push(step.node);
            }
        }
    }

    /// Bytes of tensors the kernels read and write in one run, each tensor counted once per call.
    pub fn traffic(&self) -> u64 {
        self.steps.iter().map(|s| s.bytes).sum()
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
            .map(|&o| Ok(Tensor::f32(self.types[o.index()].shape.clone(), self.slice(o).unwrap_or(&[]).to_vec())?))
            .collect()
    }

    /// Whether output `k` is written straight into the input it updates
    /// ([`CompileOptions::updates`]): after a run that input already holds the new value.
    pub fn in_place(&self, k: usize) -> bool {
        self.in_place.get(k).copied().unwrap_or(false)
    }

    /// The current value of output `k` (in the order given to [`compile`]).
    pub fn output(&self, k: usize) -> Option<&[f32]> {
        self.outputs.get(k).and_then(|&o| self.slice(o))
    }

    /// The current value of a node the outputs need. With memory planning (the default), an
    /// intermediate's memory is reused once its last reader has run, so after a run only inputs,
    /// parameters, constants and outputs are sure to hold their values; compile with
    /// `plan_memory: false` to read every intermediate.
    pub fn value(&self, node: NodeId) -> Option<&[f32]> {
        self.slice(node)
    }

    /// Bytes of memory held: dedicated, shared and scratch, and what no planning would take.
    pub fn memory(&self) -> &MemoryReport {
        &self.memory
    }

    fn slice(&self, node: NodeId) -> Option<&[f32]> {
        let at = (*self.place.get(node.index())?)?;
        Some(&self.storage[at].as_slice()[..self.types[node.index()].shape.numel()])
    }

    fn slice_mut(&mut self, node: NodeId) -> &mut [f32] {
        let len = self.types[node.index()].shape.numel();
        let at = self.place[node.index()].expect("fed nodes are needed");
        &mut self.storage[at].as_mut_slice()[..len]
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

/// The rows of kernels that ran, slowest first.
fn sorted_profile(mut rows: Vec<KernelProfile>) -> Vec<KernelProfile> {
    rows.retain(|r| r.calls > 0);
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    rows
}

/// A profile as a table: kernel, calls, milliseconds, share of the run, GFLOP/s (compute-bound
/// kernels) or GB/s of tensor traffic, and the nodes it computed.
pub fn profile_table(rows: &[KernelProfile]) -> String {
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    let mut out = format!("{:<40} {:>5} {:>9} {:>6} {:>14}  nodes\n", "kernel", "calls", "ms", "share", "rate");
    for r in rows {
        let rate = match r.flops {
            Some(f) => format!("{:.1} GFLOP/s", f / r.seconds / 1e9),
            None => format!("{:.1} GB/s", r.bytes / r.seconds / 1e9),
        };
        let mut nodes: Vec<String> = r.nodes.iter().take(6).map(|n| n.to_string()).collect();
        if r.nodes.len() > 6 {
            nodes.push(format!("... ({} nodes)", r.nodes.len()));
        }
        let share = 100.0 * r.seconds / total.max(f64::MIN_POSITIVE);
        out += &format!(
            "{:<40} {:>5} {:>9.3} {:>5.1}% {:>14}  {}\n",
            r.name,
            r.calls,
            r.seconds * 1e3,
            share,
            rate,
            nodes.join(" ")
        );
    }
    out + &format!("total {:.3} ms\n", total * 1e3)
}
