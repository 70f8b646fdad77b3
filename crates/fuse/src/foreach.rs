//! Horizontal fusion of a step's updates: every optimizer step and running-statistics update runs
//! in one kernel at the end of the step, as PyTorch's multi-tensor `foreach` optimizers do.

use crate::rebuild::{Rebuild, copy_node};
use crate::{Error, Pass, Program, Result};
use skipgrad_ir::{Fused, Graph, NodeId, Op, Role};
use std::sync::Arc;

/// Merges every update-role elementwise node (a fused elementwise group, like one parameter's SGD
/// step, or a single elementwise op) whose values only program outputs read into one fused node,
/// placed where the last of them was. Its body holds each merged node's ops as an independent
/// part, and its outputs are theirs, in order. Counted as `foreach`: the nodes merged (0 when
/// fewer than two qualify).
pub struct Foreach;

/// The rule name, as fused nodes and rewrite counts show it.
const FOREACH: &str = "foreach";

impl Pass for Foreach {
    fn name(&self) -> &str {
        FOREACH
    }

    fn run(&self, program: &Program) -> Result<(Program, Vec<(String, usize)>)> {
        let graph = &program.graph;
        let nodes = graph.nodes();
        let mut consumers: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            for input in &node.inputs {
                consumers[input.index()].push(i);
            }
        }
        // A node's values are read only as program outputs: it has no consumers but its own
        // `output` projections, and those have none.
        let projections =
            |i: usize| consumers[i].iter().all(|&c| is_projection(graph, c, i) && consumers[c].is_empty());
        let candidates: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].role == Role::Update && is_flat_elementwise(graph, i) && projections(i))
            .collect();
        if candidates.len() < 2 {
            return Ok((program.clone(), vec![(FOREACH.into(), 0)]));
        }
        let last = *candidates.last().expect("two or more");
        let mut merged = vec![false; nodes.len()];
        for &c in &candidates {
            merged[c] = true;
            for &p in &consumers[c] {
                merged[p] = true;
            }
        }
        let mut rebuild = Rebuild::new(graph, FOREACH);
        for id in graph.ids() {
            let i = id.index();
            if !merged[i] {
                rebuild.copy(id)?;
            } else if i == last {
                merge(graph, &candidates, &consumers, &mut rebuild)?;
            }
        }
        let outputs = program.outputs.iter().map(|&o| rebuild.mapped(o)).collect();
        Ok((Program { graph: rebuild.new, outputs }, vec![(FOREACH.into(), candidates.len())]))
    }
}

/// Whether node `c` is `output[index]` of node `of`.
fn is_projection(graph: &Graph, c: usize, of: usize) -> bool {
    let node = &graph.nodes()[c];
    matches!(node.op, Op::Output { .. }) && node.inputs.len() == 1 && node.inputs[0].index() == of
}

/// Whether node `i` is an elementwise op, or a fused group of them, whose every operand has its
/// output's shape (no per-channel operands): a flat map over each of its values.
fn is_flat_elementwise(graph: &Graph, i: usize) -> bool {
    let node = &graph.nodes()[i];
    // Every input has the node's shape, or is a scalar (a factor fed at run time).
    let same_shape = |g: &Graph, n: &skipgrad_ir::Node| {
        n.inputs.iter().all(|x| {
            let shape = &g.nodes()[x.index()].ty.shape;
            *shape == n.ty.shape || (n.op == Op::MulScalar && shape.rank() == 0)
        })
    };
    match &node.op {
        Op::Fused(k) => {
            let body = k.body.nodes();
            body[k.arity()..].iter().all(|n| n.op.is_elementwise() && same_shape(&k.body, n))
        }
        op => op.is_elementwise() && same_shape(graph, node),
    }
}

/// Adds the merged node of `candidates` and maps each candidate and its projections to it.
fn merge(graph: &Graph, candidates: &[usize], consumers: &[Vec<usize>], rebuild: &mut Rebuild) -> Result<()> {
    let fail = |source| Error::Graph { pass: FOREACH.into(), source };
    let nodes = graph.nodes();
    let mut externals: Vec<NodeId> = vec![];
    for &c in candidates {
        for &x in &nodes[c].inputs {
            if !externals.contains(&x) {
                externals.push(x);
            }
        }
    }
    let mut body = Graph::new();
    let mut placeholders = vec![];
    for (k, &e) in externals.iter().enumerate() {
        let node = &nodes[e.index()];
        let name = Fused::placeholder(k);
        placeholders.push(body.add_source(Op::Input { name }, node.ty.clone(), node.role).map_err(fail)?);
    }
    let placeholder = |x: NodeId| placeholders[externals.iter().position(|&e| e == x).expect("an external")];
    // Each candidate's outputs in the merged body, and the old nodes they stand for: the
    // candidate itself, then its projections `output[1..]`.
    let mut outputs: Vec<usize> = vec![];
    let mut stands_for: Vec<usize> = vec![];
    for &c in candidates {
        let node = &nodes[c];
        match &node.op {
            Op::Fused(k) => {
                let inner = k.body.nodes();
                let mut map: Vec<NodeId> = (0..k.arity()).map(|j| placeholder(node.inputs[j])).collect();
                for n in &inner[k.arity()..] {
                    let id = copy_node(&mut body, &k.body, n, |x| map[x.index()]).map_err(fail)?;
                    map.push(id);
                }
                let own = k.output_nodes();
                outputs.extend(own.iter().map(|&o| map[o].index()));
                stands_for.push(c);
                for index in 1..own.len() {
                    let p = consumers[c].iter().copied().find(|&p| nodes[p].op == Op::Output { index });
                    // An output nothing reads still has a place: it stands for no old node.
                    stands_for.push(p.unwrap_or(usize::MAX));
                }
            }
            _ => {
                let id = copy_node(&mut body, graph, node, placeholder).map_err(fail)?;
                outputs.push(id.index());
                stands_for.push(c);
            }
        }
    }
    let fused = Fused { rule: FOREACH.into(), body: Arc::new(body), covers: candidates.to_vec(), outputs };
    let inputs: Vec<NodeId> = externals.iter().map(|&e| rebuild.mapped(e)).collect();
    let new = rebuild.add(Op::Fused(fused), &inputs, Role::Update)?;
    rebuild.set_at(stands_for[0], new);
    for (index, &old) in stands_for.iter().enumerate().skip(1).filter(|(_, old)| **old != usize::MAX) {
        let value = rebuild.add(Op::Output { index }, &[new], Role::Update)?;
        rebuild.set_at(old, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skipgrad_ir::{DType, TensorType};

    fn source(g: &mut Graph, name: &str, n: usize) -> NodeId {
        g.add_source(Op::Parameter { name: name.into() }, TensorType::new(DType::F32, [n]), Role::Forward).unwrap()
    }

    /// Updates read only as program outputs merge into one node at the last one's place; an update
    /// something else reads, and a non-update, stay as they were.
    #[test]
    fn merges_the_updates_only_outputs_read() {
        let mut g = Graph::new();
        let (a, b, c) = (source(&mut g, "a", 3), source(&mut g, "b", 5), source(&mut g, "c", 5));
        let a2 = g.add_node(Op::Scale { c: 0.5 }, &[a], Role::Update).unwrap();
        let b2 = g.add_node(Op::Add, &[b, c], Role::Update).unwrap();
        let read = g.add_node(Op::Relu, &[c], Role::Update).unwrap();
        let reader = g.add_node(Op::Scale { c: 2.0 }, &[read], Role::Forward).unwrap();
        let c2 = g.add_node(Op::Sub, &[c, b], Role::Update).unwrap();
        let program = Program { graph: g, outputs: vec![a2, b2, reader, c2] };
        let (after, counts) = Foreach.run(&program).unwrap();
        assert_eq!(counts, vec![("foreach".to_string(), 3)]);
        let dump = after.graph.dump();
        assert!(dump.contains("fused[rule=foreach, ops=scale+add+sub, covers=#3,#4,#7, outputs=3,4,5]"), "{dump}");
        let ops: Vec<&str> = after.outputs.iter().map(|&o| after.graph.node(o).unwrap().op.name()).collect();
        assert_eq!(ops, ["fused", "output", "scale", "output"], "{dump}");
        assert!(dump.contains("relu(%2)"), "{dump}");
    }

    #[test]
    fn one_update_is_left_alone() {
        let mut g = Graph::new();
        let a = source(&mut g, "a", 3);
        let a2 = g.add_node(Op::Scale { c: 0.5 }, &[a], Role::Update).unwrap();
        let program = Program { graph: g, outputs: vec![a2] };
        let (after, counts) = Foreach.run(&program).unwrap();
        assert_eq!(counts, vec![("foreach".to_string(), 0)]);
        assert_eq!(after, program);
    }
}
