//! The Graphviz DOT dump: a box per node labelled with its id, op and attributes, coloured by role
//! (forward, backward, update); inputs and parameters as ellipses with their names; every edge
//! labelled with the tensor type it carries; fused nodes drawn as clusters of the ops they merged
//! (fused optimizer-side kernels, the running-statistics and parameter updates, as single dashed
//! nodes: Graphviz cannot rank a whole training step with those as clusters too).

use crate::json::role_name;
use crate::{Graph, Node, NodeId, Op, Role};
use std::fmt::Write;

impl Graph {
    /// The graph in Graphviz DOT (render with `dot -Tsvg graph.dot > graph.svg`).
    pub fn to_dot(&self) -> String {
        let mut out = String::new();
        out.push_str("digraph skipgrad {\n  rankdir=TB;\n");
        out.push_str("  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\", fontsize=10];\n");
        out.push_str("  edge [fontname=\"monospace\", fontsize=8, color=\"#6b7280\"];\n");
        for (i, node) in self.nodes().iter().enumerate() {
            match &node.op {
                // Optimizer-side kernels (running statistics, SGD) are drawn as one node each: with
                // them as clusters too, Graphviz's ranking fails on whole training steps
                // ("trouble in init_rank").
                Op::Fused(k) if node.role == Role::Update => {
                    let ops = k.body.nodes()[k.arity()..].iter().map(|n| n.op.name()).collect::<Vec<_>>().join("+");
                    let _ = writeln!(
                        out,
                        "  n{i} [label=\"%{i} fused: {}\\n{ops}\", style=\"rounded,filled,dashed\", fillcolor=\"{}\"];",
                        k.rule,
                        fill(node)
                    );
                    for &from in &node.inputs {
                        let _ = writeln!(
                            out,
                            "  {} -> n{i} [label=\"{}\"{}];",
                            self.endpoint(from),
                            self.nodes()[from.index()].ty,
                            self.edge_attrs(from)
                        );
                    }
                }
                Op::Fused(k) => {
                    let _ = writeln!(
                        out,
                        "  subgraph cluster_n{i} {{\n    label=\"%{i} fused: {} (covers {})\";\n    style=\"rounded,dashed\";\n    color=\"{}\";",
                        k.rule,
                        k.covers.iter().map(|c| format!("#{c}")).collect::<Vec<_>>().join(","),
                        border(node.role)
                    );
                    let arity = k.arity();
                    for (b, inner) in k.body.nodes().iter().enumerate().skip(arity) {
                        let _ = writeln!(
                            out,
                            "    n{i}_{b} [label=\"{}\", fillcolor=\"{}\"];",
                            escape(&inner.op.to_string()),
                            fill(inner)
                        );
                        for input in inner.inputs.iter().filter(|x| x.index() >= arity) {
                            let _ = writeln!(
                                out,
                                "    n{i}_{} -> n{i}_{b} [label=\"{}\"];",
                                input.index(),
                                k.body.nodes()[input.index()].ty
                            );
                        }
                    }
                    out.push_str("  }\n");
                    // Edges from the fused node's inputs go to the body ops that read them.
                    for (b, inner) in k.body.nodes().iter().enumerate().skip(arity) {
                        for input in inner.inputs.iter().filter(|x| x.index() < arity) {
                            let from = node.inputs[input.index()];
                            let _ = writeln!(
                                out,
                                "  {} -> n{i}_{b} [label=\"{}\"{}];",
                                self.endpoint(from),
                                self.nodes()[from.index()].ty,
                                self.edge_attrs(from)
                            );
                        }
                    }
                }
                op => {
                    let (shape, label) = match op {
                        Op::Input { name } | Op::Parameter { name } => {
                            ("ellipse", format!("%{i} {}\\n{}", op.name(), escape(name)))
                        }
                        _ => ("box", format!("%{i} {}", escape(&op.to_string()))),
                    };
                    let _ = writeln!(
                        out,
                        "  n{i} [label=\"{label}\", shape={shape}, fillcolor=\"{}\", tooltip=\"{} {}\"];",
                        fill(node),
                        role_name(node.role),
                        node.ty
                    );
                    for &from in &node.inputs {
                        // An `output` node reads its own body op of the fused node, and carries its type.
                        let (tail, ty) = match (op, &self.nodes()[from.index()].op) {
                            (Op::Output { index }, Op::Fused(k)) if self.is_cluster(from) => {
                                match k.output_nodes().get(*index) {
                                    Some(b) => (format!("n{}_{b}", from.index()), &node.ty),
                                    None => (self.endpoint(from), &node.ty),
                                }
                            }
                            _ => (self.endpoint(from), &self.nodes()[from.index()].ty),
                        };
                        let _ = writeln!(out, "  {tail} -> n{i} [label=\"{ty}\"{}];", self.edge_attrs(from));
                    }
                }
            }
        }
        out.push_str("}\n");
        out
    }

    /// Extra attributes of an edge from `from`: edges from inputs, parameters and constants do not
    /// constrain the ranking (they reach across the whole step, and with clusters they make
    /// Graphviz's ranking fail).
    fn edge_attrs(&self, from: NodeId) -> &'static str {
        if self.nodes()[from.index()].op.is_source() { ", constraint=false" } else { "" }
    }

    /// Whether node `id` is drawn as a cluster of its ops: fused nodes, except those of the
    /// optimizer side (see the module comment).
    fn is_cluster(&self, id: NodeId) -> bool {
        let node = &self.nodes()[id.index()];
        matches!(node.op, Op::Fused(_)) && node.role != Role::Update
    }

    /// The DOT node that carries node `id`'s value: the node itself, or a fused node's value op.
    fn endpoint(&self, id: NodeId) -> String {
        match &self.nodes()[id.index()].op {
            Op::Fused(k) if self.is_cluster(id) => format!("n{}_{}", id.index(), k.output_nodes()[0]),
            _ => format!("n{}", id.index()),
        }
    }
}

/// Fill colour: parameters purple, inputs and constants grey, ops by role.
fn fill(node: &Node) -> &'static str {
    match (&node.op, node.role) {
        (Op::Parameter { .. }, _) => "#ede9fe",
        (op, _) if op.is_source() => "#e5e7eb",
        (_, Role::Forward) => "#dbeafe",
        (_, Role::Backward) => "#fde68a",
        (_, Role::Update) => "#bbf7d0",
    }
}

/// Cluster border colour by role.
fn border(role: Role) -> &'static str {
    match role {
        Role::Forward => "#2563eb",
        Role::Backward => "#d97706",
        Role::Update => "#16a34a",
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
