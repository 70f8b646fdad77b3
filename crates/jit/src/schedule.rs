//! Scheduling: the nodes a graph's outputs need (dead code goes; a fused node's `output` nodes
//! come with it), each lowered in graph order to kernel calls whose arguments are nodes or
//! scratch areas, the kernels compiled as they are first met. Where the arguments live is
//! `memory.rs`'s job; running the calls is `executor.rs`'s.

use crate::compiler::Compiler;
use crate::lower::{Buf, Choices, Lowered, lower};
use crate::{CompileOptions, Result};
use skipgrad_ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// A scratch area's length and the (kernel, argument position) pairs that touch it.
pub(crate) type ScratchKey = (usize, Vec<(crate::KernelSpec, usize)>);

/// What a kernel call's argument is, before memory is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A node's value.
    Node(usize),
    /// Scratch area `k` of [`Schedule::scratch_keys`].
    Scratch(usize),
}

/// A kernel call: the node, its kernel, its argument slots (inputs, then the output) and its
/// groups.
pub(crate) type Call = (NodeId, usize, Vec<Slot>, u64);

/// A graph as kernel calls.
pub(crate) struct Schedule {
    /// Nodes the outputs need.
    pub needed: Vec<bool>,
    /// Nodes a kernel computes (not fed, not constant).
    pub computed: Vec<bool>,
    /// The kernel calls, in order.
    pub calls: Vec<Call>,
    /// Constant nodes and their values.
    pub constants: Vec<(usize, Vec<f32>)>,
    /// Every input and parameter by name: its node when the outputs need it.
    pub feeds: HashMap<String, Option<NodeId>>,
    /// The kernel computing each node.
    pub kernel_of: HashMap<NodeId, usize>,
    /// Scratch areas: length and how calls touch them (identical keys may share a buffer).
    pub scratch_keys: Vec<ScratchKey>,
    /// Scratch areas with one share per thread (a kernel's working copy of one image).
    pub per_thread: Vec<bool>,
    /// Scratch areas a call may keep between runs ([`Buf::Kept`]).
    pub keepable: Vec<bool>,
}

/// Schedules the part of `graph` that `outputs` depend on, compiling each new kernel with
/// `compiler`.
pub(crate) fn schedule(
    graph: &Graph,
    outputs: &[NodeId],
    options: &CompileOptions,
    compiler: &mut Compiler,
) -> Result<Schedule> {
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
    // A fused node's kernels write all its outputs, so every `output` node of a needed fused node
    // gets a buffer.
    for (i, node) in nodes.iter().enumerate() {
        if let Op::Output { .. } = node.op
            && needed[node.inputs[0].index()]
        {
            needed[i] = true;
        }
    }
    let mut feeds = HashMap::new();
    let mut kernel_of = HashMap::new();
    // Lower every needed node; remember how each is filled and which steps it has.
    let mut planned: Vec<Call> = Vec::new();
    let mut constants: Vec<(usize, Vec<f32>)> = Vec::new();
    let mut computed = vec![false; nodes.len()];
    // Scratch areas: length and how steps touch them, as (spec, argument position); identical
    // keys share one buffer.
    let mut scratch_keys: Vec<ScratchKey> = Vec::new();
    // Scratch areas with one share per thread (a kernel's working copy of one image), and those
    // kept between runs.
    let mut per_thread: Vec<bool> = Vec::new();
    let mut keepable: Vec<bool> = Vec::new();
    for (i, id) in graph.ids().enumerate() {
        if let Op::Input { name } | Op::Parameter { name } = &nodes[i].op {
            feeds.insert(name.clone(), needed[i].then_some(id));
        }
        if !needed[i] {
            continue;
        }
        let choices = Choices { winograd: options.winograd, lanes: compiler.target().lanes() };
        match lower(graph, id, choices)? {
            Lowered::Feed => {}
            Lowered::Constant(values) => constants.push((i, values)),
            Lowered::Steps { scratch: lengths, steps } => {
                computed[i] = !steps.is_empty();
                let first_scratch = scratch_keys.len();
                scratch_keys.extend(lengths.iter().map(|&len| (len, vec![])));
                per_thread.resize(scratch_keys.len(), false);
                keepable.resize(scratch_keys.len(), false);
                for step in steps {
                    let kernel = compiler.kernel(&step.label, &step.spec)?;
                    kernel_of.insert(id, kernel);
                    let mut at = |b: Buf| match b {
                        Buf::Node(n) => Slot::Node(n.index()),
                        Buf::Scratch(k) => Slot::Scratch(first_scratch + k),
                        Buf::PerThread(k) => {
                            let k = first_scratch + k;
                            if !per_thread[k] {
                                per_thread[k] = true;
                                scratch_keys[k].0 *= options.threads.max(1);
                            }
                            Slot::Scratch(k)
                        }
                        Buf::Kept(k) => {
                            keepable[first_scratch + k] = true;
                            Slot::Scratch(first_scratch + k)
                        }
                    };
                    let mut args: Vec<Slot> = step.inputs.into_iter().map(&mut at).collect();
                    args.push(at(step.output));
                    for (position, slot) in args.iter().enumerate() {
                        if let Slot::Scratch(k) = slot {
                            scratch_keys[*k].1.push((step.spec.clone(), position));
                        }
                    }
                    planned.push((id, kernel, args, step.spec.groups() as u64));
                }
            }
        }
    }
    Ok(Schedule { needed, computed, calls: planned, constants, feeds, kernel_of, scratch_keys, per_thread, keepable })
}
