//! Fusion: chains of elementwise ops of one type and role become one fused node, so batch-norm
//! apply, the residual add and the ReLU run as one pass over memory; and a convolution whose only
//! consumer is such a chain takes the chain as its epilogue, applied while its results are in
//! registers (inference: conv + batch norm + add + ReLU; backward: the input gradient with the
//! gradient sum of a branch and the next ReLU mask).

use crate::rebuild::Rebuild;
use crate::{Error, Pass, Program, Result};
use skipgrad_ir::{Fused, Graph, NodeId, Op};
use std::sync::Arc;

/// Merges maximal groups of elementwise ops ([`Op::is_elementwise`]). A group grows from a root
/// towards its inputs and takes a producer when the producer is elementwise, has the root's type
/// and role, is not a program output, and all its consumers are already in the group: then no
/// value inside the group is needed outside it. With `conv_epilogues`, a group then takes one
/// convolution (`conv2d` or `conv2d_grad_input`) on the same terms, as the group's main loop,
/// unless the group has extra outputs (a convolution kernel writes one value).
/// Groups of one node are left alone. With `conv_stats`, a forward convolution whose output
/// feeds `batch_mean` and `batch_var` becomes one fused node with three outputs (the
/// convolution, then the statistics through `output` nodes), so the statistics are summed while
/// the convolution's results are in registers; and batch-norm backward's three ops (input, gamma
/// and beta gradients) become one fused node with three outputs. Rewrites are counted per rule:
/// `elementwise`, `conv_epilogue`, `conv_stats`, `bn_backward`.
pub struct Fuse {
    /// Merge convolutions with the elementwise chains that consume them.
    pub conv_epilogues: bool,
    /// Compute batch statistics in the convolution that produces their input, and batch-norm
    /// backward's three gradients in one kernel.
    pub conv_stats: bool,
}

impl Pass for Fuse {
    fn name(&self) -> &str {
        "fuse"
    }

    fn run(&self, program: &Program) -> Result<(Program, Vec<(String, usize)>)> {
        let graph = &program.graph;
        let groups = find_groups(graph, &program.outputs, self.conv_epilogues);
        let (consumers, is_output) = uses(graph, &program.outputs);
        let mut root_of = vec![None; graph.len()];
        for members in &groups {
            let root = *members.last().expect("groups are never empty");
            for &m in members {
                root_of[m] = Some(root);
            }
        }
        // Kernels with several outputs: [value, output 1, output 2] and their rule.
        let mut multi: Vec<([usize; 3], &str)> = vec![];
        if self.conv_stats {
            multi.extend(find_stats(graph).into_iter().map(|m| (m, STATS)));
            multi.extend(find_bn_backward(graph).into_iter().map(|m| (m, BN_BACKWARD)));
        }
        let mut multi_of = vec![None; graph.len()];
        for (k, (members, _)) in multi.iter().enumerate() {
            for &m in members {
                multi_of[m] = Some(k);
            }
        }
        let mut rebuild = Rebuild::new(graph, self.name());
        let mut next_group = groups.iter().rev();
        for id in graph.ids() {
            if let Some(k) = multi_of[id.index()] {
                // Built at its first member; every member's inputs come before that.
                let (outputs, rule) = multi[k];
                let mut members = outputs.to_vec();
                members.sort_unstable();
                if id.index() == members[0] {
                    let (mut fused, externals) = fuse(graph, &members, rule)?;
                    let arity = fused.arity();
                    let body_index = |m: usize| arity + members.iter().position(|&x| x == m).expect("a member");
                    fused.outputs = outputs.iter().map(|&m| body_index(m)).collect();
                    let inputs: Vec<NodeId> = externals.iter().map(|&e| rebuild.mapped(e)).collect();
                    let new = rebuild.add(Op::Fused(fused), &inputs, graph.nodes()[outputs[0]].role)?;
                    rebuild.set_at(outputs[0], new);
                    for (index, &old) in outputs.iter().enumerate().skip(1) {
                        let out = rebuild.add(Op::Output { index }, &[new], graph.nodes()[old].role)?;
                        rebuild.set_at(old, out);
                    }
                }
                continue;
            }
            match root_of[id.index()] {
                None => {
                    rebuild.copy(id)?;
                }
                Some(root) if root == id.index() => {
                    // Groups were found from the last root backwards.
                    let members = next_group.next().expect("one group per root");
                    let rule = if members.iter().any(|&m| is_conv(&graph.nodes()[m].op)) { CONV } else { ELEMENTWISE };
                    let (mut fused, externals) = fuse(graph, members, rule)?;
                    // Members read outside the group (or that are program outputs) are extra outputs.
                    let extras: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|&m| m != root && (is_output[m] || consumers[m].iter().any(|c| !members.contains(c))))
                        .collect();
                    if !extras.is_empty() {
                        let body_index =
                            |m: usize| fused.arity() + members.iter().position(|&x| x == m).expect("a member");
                        fused.outputs = std::iter::once(root).chain(extras.iter().copied()).map(body_index).collect();
                    }
                    let inputs: Vec<NodeId> = externals.iter().map(|&e| rebuild.mapped(e)).collect();
                    let new = rebuild.add(Op::Fused(fused), &inputs, graph.nodes()[id.index()].role)?;
                    rebuild.set(id, new);
                    for (index, &old) in extras.iter().enumerate() {
                        let out = rebuild.add(Op::Output { index: index + 1 }, &[new], graph.nodes()[old].role)?;
                        rebuild.set_at(old, out);
                    }
                }
                Some(_) => {} // built with its root
            }
        }
        let outputs = program.outputs.iter().map(|&o| rebuild.mapped(o)).collect();
        let convs = groups.iter().filter(|g| g.iter().any(|&m| is_conv(&graph.nodes()[m].op))).count();
        let counts = vec![
            (ELEMENTWISE.to_string(), groups.len() - convs),
            (CONV.to_string(), convs),
            (STATS.to_string(), multi.iter().filter(|m| m.1 == STATS).count()),
            (BN_BACKWARD.to_string(), multi.iter().filter(|m| m.1 == BN_BACKWARD).count()),
        ];
        Ok((Program { graph: rebuild.new, outputs }, counts))
    }
}

/// Rule names, as fused nodes and rewrite counts show them.
const ELEMENTWISE: &str = "elementwise";
const CONV: &str = "conv_epilogue";
const STATS: &str = "conv_stats";
const BN_BACKWARD: &str = "bn_backward";

/// Batch-norm backward in training mode as its three ops, `[input gradient, gamma gradient, beta
/// gradient]`: `batch_norm_grad_input(x, mean, var, gamma, dy)`, `batch_norm_grad_gamma(x, mean,
/// var, dy)` and `reduce_sum(dy)` over every axis but the channels. One kernel computes all three:
/// the input gradient needs both sums anyway.
/// Two batch norms reading one gradient (the two branches of a projection shortcut) each have a
/// `reduce_sum` of it: each group takes its own.
fn find_bn_backward(graph: &Graph) -> Vec<[usize; 3]> {
    let nodes = graph.nodes();
    let mut taken = vec![false; nodes.len()];
    (0..nodes.len())
        .filter_map(|gi| {
            let Op::BatchNormGradInput { eps, training: true } = nodes[gi].op else { return None };
            let i = &nodes[gi].inputs;
            let (x, mean, var, dy) = (i[0], i[1], i[2], i[4]);
            let gamma = (0..nodes.len()).find(|&n| {
                !taken[n] && nodes[n].op == Op::BatchNormGradGamma { eps } && nodes[n].inputs.as_slice() == [x, mean, var, dy]
            })?;
            let rank = nodes[dy.index()].ty.shape.rank();
            let beta = (0..nodes.len()).find(|&n| {
                !taken[n]
                    && matches!(&nodes[n].op, Op::ReduceSum { axes } if axes.iter().copied().eq((0..rank).filter(|&a| a != 1)))
                    && nodes[n].inputs.as_slice() == [dy]
            })?;
            taken[gamma] = true;
            taken[beta] = true;
            Some([gi, gamma, beta])
        })
        .collect()
}

/// Forward convolutions with `batch_mean` and `batch_var` of their output: `[conv, mean, var]`.
fn find_stats(graph: &Graph) -> Vec<[usize; 3]> {
    let nodes = graph.nodes();
    let of = |op: Op, conv: usize| {
        nodes.iter().position(|n| n.op == op && n.inputs.len() == 1 && n.inputs[0].index() == conv)
    };
    (0..nodes.len())
        .filter(|&c| matches!(nodes[c].op, Op::Conv2d(_)))
        .filter_map(|c| Some([c, of(Op::BatchMean, c)?, of(Op::BatchVar, c)?]))
        .collect()
}

/// Convolutions that can run an epilogue.
fn is_conv(op: &Op) -> bool {
    matches!(op, Op::Conv2d(_) | Op::Conv2dGradInput { .. })
}

/// The groups of the graph, each sorted (its root last), in order of decreasing root.
fn find_groups(graph: &Graph, outputs: &[NodeId], conv_epilogues: bool) -> Vec<Vec<usize>> {
    let nodes = graph.nodes();
    let (consumers, is_output) = uses(graph, outputs);
    let mut taken = vec![false; nodes.len()];
    let mut groups = vec![];
    for root in (0..nodes.len()).rev() {
        if taken[root] || !nodes[root].op.is_elementwise() {
            continue;
        }
        let fits = |p: usize, members: &[usize]| {
            !members.contains(&p) && !taken[p] && nodes[p].ty == nodes[root].ty && nodes[p].role == nodes[root].role
        };
        // Whether producer p can join: nothing outside the group needs its value.
        let joins = |p: usize, members: &[usize]| {
            fits(p, members) && !is_output[p] && consumers[p].iter().all(|c| members.contains(c))
        };
        // Whether elementwise p can join as an extra output: whatever else reads it comes after the
        // root, where the fused node will be.
        let extra = |p: usize, members: &[usize]| {
            fits(p, members) && consumers[p].iter().all(|&c| members.contains(&c) || c > root)
        };
        let grow = |with_extras: bool| {
            let mut members = vec![root];
            let mut grew = true;
            while grew {
                grew = false;
                for m in members.clone() {
                    for p in nodes[m].inputs.iter().map(|i| i.index()) {
                        if nodes[p].op.is_elementwise() && (joins(p, &members) || with_extras && extra(p, &members)) {
                            members.push(p);
                            grew = true;
                        }
                    }
                }
            }
            members
        };
        let has_extras = |members: &[usize]| {
            members.iter().any(|&m| m != root && (is_output[m] || consumers[m].iter().any(|c| !members.contains(c))))
        };
        // A kernel with several outputs reads only operands of its outputs' shape or scalars (no
        // per-channel parameters): a group that would need both takes no extra outputs.
        let mut members = grow(true);
        let per_channel = members.iter().any(|&m| {
            nodes[m].inputs.iter().any(|i| {
                let shape = &nodes[i.index()].ty.shape;
                !members.contains(&i.index()) && *shape != nodes[root].ty.shape && shape.rank() > 0
            })
        });
        if per_channel && has_extras(&members) {
            members = grow(false);
        }
        // A convolution's kernel writes one value and reads its epilogue's operands per element or
        // per channel: it takes a group only when nothing but the root is needed outside the
        // group, and the group reads no scalar factor.
        let reads_scalar = members.iter().any(|&m| nodes[m].op == Op::MulScalar);
        if conv_epilogues && !has_extras(&members) && !reads_scalar {
            let conv = members
                .iter()
                .flat_map(|&m| nodes[m].inputs.iter().map(|i| i.index()))
                .find(|&p| is_conv(&nodes[p].op) && joins(p, &members));
            members.extend(conv);
        }
        if members.len() > 1 {
            members.sort_unstable();
            for &m in &members {
                taken[m] = true;
            }
            groups.push(members);
        }
    }
    groups
}

/// Every node's consumers, and whether it is a program output.
fn uses(graph: &Graph, outputs: &[NodeId]) -> (Vec<Vec<usize>>, Vec<bool>) {
    let nodes = graph.nodes();
    let mut consumers: Vec<Vec<usize>> = vec![vec![]; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for input in &node.inputs {
            consumers[input.index()].push(i);
        }
    }
    let mut is_output = vec![false; nodes.len()];
    for o in outputs {
        is_output[o.index()] = true;
    }
    (consumers, is_output)
}

/// The fused op of a group (sorted member ids) and its external inputs (old ids, in the fused
/// node's input order).
fn fuse(graph: &Graph, members: &[usize], rule: &str) -> Result<(Fused, Vec<NodeId>)> {
    let fail = |source| Error::Graph { pass: rule.into(), source };
    let nodes = graph.nodes();
    let mut externals: Vec<NodeId> = vec![];
    for &m in members {
        for &p in &nodes[m].inputs {
            if !members.contains(&p.index()) && !externals.contains(&p) {
                externals.push(p);
            }
        }
    }
    let mut body = Graph::new();
    let mut body_id: Vec<Option<NodeId>> = vec![None; nodes.len()];
    for (k, &e) in externals.iter().enumerate() {
        let placeholder = Op::Input { name: Fused::placeholder(k) };
        let ty = nodes[e.index()].ty.clone();
        let id = body.add_source(placeholder, ty, nodes[e.index()].role).map_err(fail)?;
        body_id[e.index()] = Some(id);
    }
    for &m in members {
        let node = &nodes[m];
        // Inside a body, batch norm's mean and variance are placeholders, not batch_mean and
        // batch_var of its input, so the training form (which insists on them for its gradient)
        // becomes the eval form: the value is the same, and bodies are not differentiated.
        let op = match node.op {
            Op::BatchNorm { eps, training: true } => Op::BatchNorm { eps, training: false },
            ref op => op.clone(),
        };
        let inputs: Vec<NodeId> = node.inputs.iter().map(|i| body_id[i.index()].expect("topological")).collect();
        let id = body.add_node(op, &inputs, node.role).map_err(fail)?;
        body_id[m] = Some(id);
    }
    let fused = Fused { rule: rule.into(), body: Arc::new(body), covers: members.to_vec(), outputs: vec![] };
    Ok((fused, externals))
}
