//! Evaluating graphs: whole graphs from named feeds, or one node from its input values.

use crate::ops::compute;
use crate::{Error, Result};
use skipgrad_ir::{Fused, Graph, NodeId, Op, Tensor, TensorType};
use std::collections::HashMap;

/// Values for a graph's inputs and parameters, by name.
pub type Feeds = HashMap<String, Tensor>;

/// Evaluates `graph` on `feeds` and returns the values of `outputs`, in order.
///
/// Only nodes that some output depends on are computed; each intermediate value is dropped after
/// its last use.
pub fn evaluate(graph: &Graph, feeds: &Feeds, outputs: &[NodeId]) -> Result<Vec<Tensor>> {
    let nodes = graph.nodes();
    let mut uses = vec![0usize; nodes.len()];
    let mut needed = vec![false; nodes.len()];
    for &o in outputs {
        graph.node(o)?;
        needed[o.index()] = true;
        uses[o.index()] += 1; // outputs are never dropped
    }
    for i in (0..nodes.len()).rev() {
        if needed[i] {
            for &inp in &nodes[i].inputs {
                needed[inp.index()] = true;
                uses[inp.index()] += 1;
            }
        }
    }
    let mut values: Vec<Option<Tensor>> = vec![None; nodes.len()];
    // The other outputs of fused nodes with several, until their `output` nodes take them.
    let mut extra: HashMap<usize, Vec<Tensor>> = HashMap::new();
    for (i, id) in graph.ids().enumerate() {
        if !needed[i] {
            continue;
        }
        let node = &nodes[i];
        let value = match &node.op {
            Op::Fused(k) if !k.outputs.is_empty() => {
                let inputs: Vec<&Tensor> =
                    node.inputs.iter().map(|j| values[j.index()].as_ref().expect("topological order")).collect();
                let mut all = eval_fused(k, &inputs)?;
                let value = all.remove(0);
                extra.insert(i, all);
                value
            }
            Op::Output { index } => {
                let source = node.inputs[0].index();
                extra.get(&source).and_then(|all| all.get(index - 1)).cloned().ok_or_else(|| {
                    Error::Graph(skipgrad_ir::Error::Shape {
                        op: node.op.to_string(),
                        message: format!("%{source} has no output {index}"),
                    })
                })?
            }
            Op::Input { name } | Op::Parameter { name } => {
                let kind = if matches!(node.op, Op::Input { .. }) { "input" } else { "parameter" };
                let fed = feeds.get(name).ok_or_else(|| Error::MissingFeed { kind, name: name.clone(), node: i })?;
                let got = TensorType { dtype: fed.dtype(), shape: fed.shape().clone() };
                if got != node.ty {
                    return Err(Error::FeedType { name: name.clone(), expected: node.ty.clone(), got });
                }
                fed.clone()
            }
            _ => {
                let inputs: Vec<&Tensor> =
                    node.inputs.iter().map(|j| values[j.index()].as_ref().expect("topological order")).collect();
                eval_node(graph, id, &inputs)?
            }
        };
        for &inp in &node.inputs {
            uses[inp.index()] -= 1;
            if uses[inp.index()] == 0 {
                values[inp.index()] = None;
            }
        }
        values[i] = Some(value);
    }
    Ok(outputs.iter().map(|o| values[o.index()].clone().expect("computed")).collect())
}

/// Evaluates node `id` of `graph` given the values of its inputs (in the node's input order).
/// Inputs and parameters have no rule: their values come from feeds.
pub fn eval_node(graph: &Graph, id: NodeId, inputs: &[&Tensor]) -> Result<Tensor> {
    let node = graph.node(id)?;
    match &node.op {
        Op::Input { name } | Op::Parameter { name } => {
            let kind = if matches!(node.op, Op::Input { .. }) { "input" } else { "parameter" };
            Err(Error::MissingFeed { kind, name: name.clone(), node: id.index() })
        }
        Op::Constant { index } => graph
            .constant(*index)
            .cloned()
            .ok_or(Error::Graph(skipgrad_ir::Error::UnknownNode { node: id.index(), len: graph.len() })),
        Op::Fill { value } => Ok(Tensor::full(node.ty.shape.clone(), node.ty.dtype, *value)?),
        op => eval_op(op, &node.ty, inputs, id.index()),
    }
}

/// Evaluates a non-source `op` whose output type is `ty` on input values; `id` names the node in
/// errors (the index it has or will have). Input values are checked against the types the op's shape rule accepts.
pub fn eval_op(op: &Op, ty: &TensorType, inputs: &[&Tensor], node: usize) -> Result<Tensor> {
    let types: Vec<TensorType> =
        inputs.iter().map(|t| TensorType { dtype: t.dtype(), shape: t.shape().clone() }).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    let inferred = skipgrad_ir::infer(op, &refs)?;
    if &inferred != ty {
        return Err(Error::FeedType { name: format!("output of {op}"), expected: ty.clone(), got: inferred });
    }
    if let Op::Fused(k) = op {
        return Ok(eval_fused(k, inputs)?.remove(0));
    }
    // Every op computes in f64; an f32 result is the f64 result rounded once.
    let shapes: Vec<&skipgrad_ir::Shape> = inputs.iter().map(|t| t.shape()).collect();
    let values: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec()).collect();
    let slices: Vec<&[f64]> = values.iter().map(|v| v.as_slice()).collect();
    let result = compute(op, node, &slices, &shapes, &ty.shape)?;
    Ok(Tensor::from_f64(ty.shape.clone(), ty.dtype, &result)?)
}

/// Every output of a fused node (its value first): its body, evaluated on the node's inputs.
fn eval_fused(k: &Fused, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let feeds: Feeds = inputs.iter().enumerate().map(|(i, t)| (Fused::placeholder(i), (*t).clone())).collect();
    let ids: Vec<NodeId> = k.body.ids().collect();
    let outputs: Vec<NodeId> = k.output_nodes().into_iter().map(|o| ids[o]).collect();
    evaluate(&k.body, &feeds, &outputs)
}
