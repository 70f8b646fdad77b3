//! Memory: where every value and scratch area of a scheduled graph lives. Intermediates whose
//! lifetimes do not overlap share blocks (`plan.rs`), a kernel's output may take the block of an
//! operand it reads for the last time (`KernelSpec::in_place_operands`), an update may take its
//! input's own buffer (`CompileOptions::updates`), identical kernels share scratch areas, and
//! inputs, parameters, constants and outputs get buffers of their own, as do the kept scratch
//! areas of the steps that need not run again while their inputs are unchanged (`cached`).

use crate::buffer::{Buffer, Guard};
use crate::plan::{Lifetime, assign};
use crate::schedule::{Call, Schedule, ScratchKey, Slot};
use crate::{CompileOptions, Error, KernelCode, Result};
use skipgrad_ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// The memory a compiled graph holds, in bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// Inputs, parameters, constants and outputs: one buffer each, kept across runs.
    pub dedicated: usize,
    /// Intermediate values, in blocks shared by values that are not live at once.
    pub shared: usize,
    /// Kernels' scratch areas (per-thread packed images, statistics partials, weight-gradient
    /// accumulators), shared between identical kernels.
    pub scratch: usize,
    /// What intermediates and scratch areas would take with one buffer each.
    pub unplanned: usize,
}

impl MemoryReport {
    /// Everything the graph holds: dedicated, shared and scratch bytes.
    pub fn total(&self) -> usize {
        self.dedicated + self.shared + self.scratch
    }
}

/// Where everything of a compiled graph lives.
pub(crate) struct Layout {
    /// All memory, never resized.
    pub storage: Vec<Buffer>,
    /// The buffer holding each node's value (`None` for nodes the outputs do not need).
    pub place: Vec<Option<usize>>,
    /// The buffer of each scratch area.
    pub scratch_place: Vec<usize>,
    /// Bytes held.
    pub memory: MemoryReport,
    /// Per output: whether it is written into the input it updates.
    pub in_place: Vec<bool>,
    /// The first call that writes an update in place.
    pub updates_from: usize,
    /// Per call: whether it computes a kept scratch area from inputs and parameters that no
    /// kernel writes, so that it need not run again while they are not fed again.
    pub cached: Vec<bool>,
    /// Per scratch area: whether it keeps a cached call's result between runs, in its own buffer.
    pub kept: Vec<bool>,
    /// Shared blocks of intermediates.
    pub blocks: usize,
}

/// Lays out the memory of `schedule`, whose kernels are `codes`.
pub(crate) fn layout(
    graph: &Graph,
    outputs: &[NodeId],
    options: &CompileOptions,
    schedule: &Schedule,
    codes: &[KernelCode],
) -> Result<Layout> {
    let nodes = graph.nodes();
    let Schedule { needed, computed, calls: planned, constants, feeds, scratch_keys, keepable, .. } = schedule;
    let plan = options.plan_memory && options.guard == Guard::None;
    let (alias_of, in_place, updates_from) = update_aliases(graph, outputs, &options.updates, feeds, planned, codes)?;
    // A call writing a kept area from sources that no update overwrites computes the same
    // values until they are fed again; its area then keeps them in a buffer of its own.
    let overwritten: Vec<bool> = (0..nodes.len()).map(|i| alias_of.contains(&Some(i))).collect();
    let cached: Vec<bool> = planned
        .iter()
        .map(|(_, _, slots, _)| match slots.split_last() {
            Some((Slot::Scratch(k), inputs)) if keepable[*k] => {
                inputs.iter().all(|slot| matches!(*slot, Slot::Node(i) if nodes[i].op.is_source() && !overwritten[i]))
            }
            _ => false,
        })
        .collect();
    let mut kept = vec![false; scratch_keys.len()];
    for (call, (_, _, slots, _)) in planned.iter().enumerate() {
        if let (true, Some(Slot::Scratch(k))) = (cached[call], slots.last()) {
            kept[*k] = true;
        }
    }

    // Lifetimes of computed intermediates; everything else has a buffer of its own.
    let mut lifetimes: Vec<Option<Lifetime>> = vec![None; nodes.len()];
    for (step, (_, _, args, _)) in planned.iter().enumerate() {
        for slot in args {
            if let Slot::Node(i) = *slot {
                let len = nodes[i].ty.shape.numel();
                let l = lifetimes[i].get_or_insert(Lifetime::new(len, step, step));
                l.last = step;
            }
        }
    }
    let mut is_output = vec![false; nodes.len()];
    for o in outputs {
        is_output[o.index()] = true;
    }
    let shared: Vec<usize> = (0..nodes.len()).filter(|&i| plan && computed[i] && !is_output[i]).collect();
    // In place: a step's output may take the block of an operand its kernel reads for the last
    // time at the very elements it writes.
    let position: HashMap<usize, usize> = shared.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut values: Vec<Lifetime> = shared.iter().map(|&i| lifetimes[i].clone().expect("computed")).collect();
    for (step, (_, kernel, slots, _)) in planned.iter().enumerate() {
        let Some(&Slot::Node(o)) = slots.last() else { continue };
        let Some(&v) = position.get(&o) else { continue };
        if values[v].first != step {
            continue;
        }
        for p in codes[*kernel].spec.in_place_operands() {
            if let Slot::Node(u) = slots[p]
                && let Some(&w) = position.get(&u)
                && u != o
                && values[w].last == step
            {
                values[v].in_place.push(w);
            }
        }
    }
    let (block_of, block_sizes) = assign(&values);

    let mut storage: Vec<Buffer> = Vec::new();
    let mut place: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut memory = MemoryReport::default();
    let blocks_start = storage.len();
    for &len in &block_sizes {
        storage.push(Buffer::zeroed(len, options.guard));
        memory.shared += 4 * len;
    }
    for (&i, &block) in shared.iter().zip(&block_of) {
        place[i] = Some(blocks_start + block);
        memory.unplanned += 4 * nodes[i].ty.shape.numel();
    }
    for i in 0..nodes.len() {
        if let Some(target) = alias_of[i] {
            // Sources come before the values computed from them.
            place[i] = place[target];
            continue;
        }
        if !needed[i] || place[i].is_some() {
            continue;
        }
        let len = nodes[i].ty.shape.numel();
        place[i] = Some(storage.len());
        storage.push(Buffer::zeroed(len, options.guard));
        if computed[i] && !is_output[i] {
            memory.shared += 4 * len;
            memory.unplanned += 4 * len;
        } else {
            memory.dedicated += 4 * len;
        }
    }
    for (i, values) in constants {
        storage[place[*i].expect("needed")].as_mut_slice().copy_from_slice(values);
    }
    // Scratch: nodes whose kernels touch a scratch area identically (the same kernels, at the same
    // argument) share one buffer. Kernels rely on the positions they never write staying zero;
    // identical kernels never write them.
    let mut scratch_place: Vec<usize> = Vec::with_capacity(scratch_keys.len());
    let mut by_key: HashMap<ScratchKey, usize> = HashMap::new();
    for (k, key) in scratch_keys.iter().enumerate() {
        memory.unplanned += 4 * key.0;
        let key = key.clone();
        let existing = if plan && !kept[k] { by_key.get(&key).copied() } else { None };
        let at = existing.unwrap_or_else(|| {
            storage.push(Buffer::zeroed(key.0, options.guard));
            memory.scratch += 4 * key.0;
            storage.len() - 1
        });
        if plan && !kept[k] {
            by_key.insert(key, at);
        }
        scratch_place.push(at);
    }
    let blocks = block_sizes.len();
    Ok(Layout { storage, place, scratch_place, memory, in_place, updates_from, cached, kept, blocks })
}

/// Which outputs take the buffer of the input they update ([`CompileOptions::updates`]): per node,
/// the source whose buffer it shares, per output whether it does, and the first step that writes
/// one. An output shares when one kernel call writes it, after every output that is not an
/// update is computed, no later call reads the input, and that call reads each element of the
/// input only before writing it ([`crate::KernelSpec::reads_before_writes`]).
fn update_aliases(
    graph: &Graph,
    outputs: &[NodeId],
    updates: &[(String, usize)],
    feeds: &HashMap<String, Option<NodeId>>,
    planned: &[Call],
    codes: &[KernelCode],
) -> Result<(Vec<Option<usize>>, Vec<bool>, usize)> {
    let nodes = graph.nodes();
    let mut alias_of: Vec<Option<usize>> = vec![None; nodes.len()];
    let mut in_place = vec![false; outputs.len()];
    let mut taken = vec![false; nodes.len()];
    let mentions = |args: &[Slot], node: usize| -> Vec<usize> {
        (0..args.len()).filter(|&a| matches!(args[a], Slot::Node(n) if n == node)).collect()
    };
    // The kernel calls of the node that produces `value` (a fused node's, for its outputs).
    let calls = |value: NodeId| -> Vec<usize> {
        let producer = match nodes[value.index()].op {
            Op::Output { .. } => nodes[value.index()].inputs[0],
            _ => value,
        };
        (0..planned.len()).filter(|&s| planned[s].0 == producer).collect()
    };
    // The last call computing an output that is not an update (the loss, metrics).
    let is_update = |j: usize| updates.iter().any(|(_, k)| *k == j);
    let others_done =
        (0..outputs.len()).filter(|&j| !is_update(j)).flat_map(|j| calls(outputs[j])).max().map_or(0, |s| s + 1);
    let mut updates_from = planned.len();
    for (name, k) in updates {
        let target = feeds.get(name).ok_or_else(|| {
            Error::Feed(format!("the update of {name:?}: the graph has no input or parameter of that name"))
        })?;
        let value = *outputs.get(*k).ok_or_else(|| {
            Error::Feed(format!("the update of {name:?}: there is no output {k} (the graph has {})", outputs.len()))
        })?;
        let Some(target) = *target else { continue };
        let (t, v) = (target.index(), value.index());
        if nodes[t].ty != nodes[v].ty {
            return Err(Error::Feed(format!(
                "the update of {name:?}: output {k} is {}, the input is {}",
                nodes[v].ty, nodes[t].ty
            )));
        }
        if taken[t] || alias_of[v].is_some() || t == v || outputs.contains(&target) {
            continue;
        }
        let [writer] = calls(value)[..] else { continue };
        if writer < others_done {
            continue;
        }
        let (_, kernel, args, _) = &planned[writer];
        let Some(&written) = mentions(args, v).last() else { continue };
        let read_later = planned[writer + 1..].iter().any(|(_, _, args, _)| !mentions(args, t).is_empty());
        let safe = mentions(args, t).into_iter().all(|read| codes[*kernel].spec.reads_before_writes(read, written));
        if !read_later && safe {
            alias_of[v] = Some(t);
            taken[t] = true;
            updates_from = updates_from.min(writer);
            for (j, &o) in outputs.iter().enumerate() {
                in_place[j] |= o == value;
            }
        }
    }
    Ok((alias_of, in_place, updates_from))
}
