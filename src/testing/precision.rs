//! How close an f32 run of a graph comes to the same graph computed in f64.
//!
//! A ReLU is piecewise linear: an element whose input lies within the f32 run's rounding error of
//! zero can fall on the other side of the kink than in f64. The gradient then differs by that
//! element's whole contribution (at batch 32 about 1/sqrt(32 * 32 * 32) of a batch-norm
//! parameter's gradient: up to 1e-2), which says nothing about how accurately the kernels
//! compute; and in a step with millions of ReLU elements, a few always lie that close. So the
//! truth here is the f64 graph held to the f32 run's sides of every ReLU ([`on_sides`]): the same
//! piece of the same function, computed in f64. What is left is rounding error. How many elements
//! changed sides is reported beside it ([`Precision::flipped`]), since that count is the forward
//! pass's accuracy seen from the kinks. Max pool's ties are not held (none of the nets compared
//! here has one).

use crate::prelude::*;
use std::collections::HashMap;

/// The nodes whose f32 values say on which side of its kink each ReLU element is: every `relu`
/// (its output is positive exactly where its input is) and every `relu_grad`'s first input.
pub fn kink_nodes(graph: &Graph) -> Vec<NodeId> {
    let nodes = graph.nodes();
    let mut ids: Vec<NodeId> = graph.ids().filter(|id| nodes[id.index()].op == Op::Relu).collect();
    ids.extend(nodes.iter().filter(|n| n.op == Op::ReluGrad).map(|n| n.inputs[0]));
    ids.sort();
    ids.dedup();
    ids
}

/// The f64 twin of the unfused graph `graph`, held to the sides of the kinks that `sides` (the
/// f32 values of [`kink_nodes`]) took: `relu(x)` becomes `x * mask` and `relu_grad(y, g)` becomes
/// `g * mask`, with `mask` 1 where the side node's value is positive and 0 elsewhere. Returns the
/// new graph and each old node's id in it.
pub fn on_sides(graph: &Graph, sides: &HashMap<NodeId, Tensor>) -> Result<(Graph, Vec<NodeId>)> {
    let mut new = Graph::new();
    let mut map: Vec<NodeId> = Vec::with_capacity(graph.len());
    let mut masks: HashMap<NodeId, NodeId> = HashMap::new();
    for (at, node) in graph.ids().zip(graph.nodes()) {
        let id = match &node.op {
            Op::Constant { index } => {
                let value = graph.constant(*index).expect("the graph's own constant");
                new.add_constant(value.cast(DType::F64), node.role)
            }
            op if op.is_source() => {
                let ty = skipgrad_ir::TensorType { dtype: DType::F64, shape: node.ty.shape.clone() };
                new.add_source(op.clone(), ty, node.role)?
            }
            Op::Fused(_) => {
                return Err(Error::Argument {
                    op: "on_sides".into(),
                    message: format!("{at} is fused: compare the unfused graph"),
                });
            }
            Op::Relu | Op::ReluGrad => {
                let side = if node.op == Op::Relu { at } else { node.inputs[0] };
                let mask = match masks.get(&side) {
                    Some(&m) => m,
                    None => {
                        let values = sides.get(&side).ok_or_else(|| Error::Argument {
                            op: "on_sides".into(),
                            message: format!("no value for {side} (a kink node)"),
                        })?;
                        let ones: Vec<f64> =
                            values.to_f64_vec().iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect();
                        let m = new.add_constant(Tensor::f64(values.shape().clone(), ones)?, node.role);
                        masks.insert(side, m);
                        m
                    }
                };
                let passed = if node.op == Op::Relu { node.inputs[0] } else { node.inputs[1] };
                new.add_node(Op::Mul, &[map[passed.index()], mask], node.role)?
            }
            op => {
                let inputs: Vec<NodeId> = node.inputs.iter().map(|j| map[j.index()]).collect();
                new.add_node(op.clone(), &inputs, node.role)?
            }
        };
        map.push(id);
    }
    Ok((new, map))
}

/// The normwise relative error of `got` against `truth`: the norm of the difference over the
/// norm of the truth (the plain norm of the difference when the truth is zero).
pub fn relative_error(got: &Tensor, truth: &Tensor) -> f64 {
    let (got, truth) = (got.to_f64_vec(), truth.to_f64_vec());
    let diff: f64 = got.iter().zip(&truth).map(|(a, b)| (a - b) * (a - b)).sum();
    let norm: f64 = truth.iter().map(|b| b * b).sum();
    if norm > 0.0 { (diff / norm).sqrt() } else { diff.sqrt() }
}

/// An f32 run measured against f64 on the same sides of every kink.
#[derive(Clone, Debug, PartialEq)]
pub struct Precision {
    /// Each output's [`relative_error`], in the order the outputs were given.
    pub errors: Vec<f64>,
    /// ReLU elements on the other side of the kink than in f64.
    pub flipped: usize,
    /// ReLU elements in all.
    pub kinks: usize,
}

/// Measures `outputs` of the unfused f32 graph `graph` computed by `run` on `feeds` against the
/// reference interpreter's f64 result on the same sides of every kink (the feeds cast to f64).
/// `run` gets the nodes whose values it must return, in order: `outputs`, then the
/// [`kink_nodes`]. The JIT can compute them from a fused program, since fusion keeps every
/// requested value.
pub fn measure(
    graph: &Graph,
    feeds: &Feeds,
    outputs: &[NodeId],
    run: impl FnOnce(&[NodeId]) -> Result<Vec<Tensor>>,
) -> Result<Precision> {
    let kinks = kink_nodes(graph);
    let wanted: Vec<NodeId> = outputs.iter().chain(&kinks).copied().collect();
    let values = run(&wanted)?;
    let (got, side_values) = values.split_at(outputs.len());
    let sides: HashMap<NodeId, Tensor> = kinks.iter().copied().zip(side_values.iter().cloned()).collect();
    let (twin, map) = on_sides(graph, &sides)?;
    // Each kink's f64 input decides its true side: a relu's input, or relu_grad's side node itself.
    let nodes = graph.nodes();
    let before: Vec<NodeId> = kinks
        .iter()
        .map(|k| if nodes[k.index()].op == Op::Relu { map[nodes[k.index()].inputs[0].index()] } else { map[k.index()] })
        .collect();
    let requested: Vec<NodeId> = outputs.iter().map(|o| map[o.index()]).chain(before.iter().copied()).collect();
    let feeds64: Feeds = feeds.iter().map(|(k, v)| (k.clone(), v.cast(DType::F64))).collect();
    let truth = evaluate(&twin, &feeds64, &requested)?;
    let (truth, inputs64) = truth.split_at(outputs.len());
    let errors = got.iter().zip(truth).map(|(g, t)| relative_error(g, t)).collect();
    let (mut flipped, mut all) = (0, 0);
    for (side, input) in side_values.iter().zip(inputs64) {
        let (s, v) = (side.to_f64_vec(), input.to_f64_vec());
        flipped += s.iter().zip(&v).filter(|(s, v)| (**s > 0.0) != (**v > 0.0)).count();
        all += s.len();
    }
    Ok(Precision { errors, flipped, kinks: all })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sum(relu(x))` and its gradient, traced in f32, with `x` fed.
    fn relu_sum(x: &[f32]) -> (Graph, Vec<NodeId>, Feeds) {
        let tape = Tape::trace(DType::F32);
        let v = tape.input_spec("x", DType::F32, &[x.len()]).unwrap();
        let loss = v.relu().sum().unwrap();
        let dx = grad(&loss, &[&v]).unwrap().remove(0);
        let feeds = [("x".to_string(), Tensor::f32([x.len()], x.to_vec()).unwrap())].into_iter().collect();
        (tape.graph(), vec![loss.id(), dx.id()], feeds)
    }

    /// A run whose ReLU put element 0 on the other side is measured against the f64 step on that
    /// same side: no error, one element crossed.
    #[test]
    fn a_crossed_relu_is_held_to_the_f32_side_and_counted() {
        let (graph, outputs, feeds) = relu_sum(&[1e-7, -1.0, 2.0, 3.0]);
        let p = measure(&graph, &feeds, &outputs, |wanted| {
            // As if the f32 run had computed element 0 as -1e-7: every value follows that side.
            let mut values = evaluate(&graph, &feeds, wanted)?;
            values[0] = Tensor::f32([], vec![5.0])?;
            values[1] = Tensor::f32([4], vec![0.0, 0.0, 1.0, 1.0])?;
            values[2] = Tensor::f32([4], vec![0.0, 0.0, 2.0, 3.0])?;
            Ok(values)
        })
        .unwrap();
        assert_eq!(kink_nodes(&graph).len(), 1, "the relu serves relu_grad too");
        assert_eq!(p.errors, vec![0.0, 0.0]);
        assert_eq!((p.flipped, p.kinks), (1, 4));
    }

    /// Held to the sides the f64 run itself takes, the twin is the plain f64 graph; a wrong value
    /// shows as its relative error.
    #[test]
    fn on_the_true_sides_errors_are_the_plain_relative_errors() {
        let (graph, outputs, feeds) = relu_sum(&[0.5, -1.0, 2.0, 3.0]);
        let p = measure(&graph, &feeds, &outputs, |wanted| {
            let mut values = evaluate(&graph, &feeds, wanted)?;
            values[0] = Tensor::f32([], vec![5.5 * 1.001])?;
            Ok(values)
        })
        .unwrap();
        assert!((p.errors[0] - 1e-3).abs() < 1e-6, "{:?}", p.errors);
        assert_eq!(p.errors[1], 0.0);
        assert_eq!(p.flipped, 0);
    }

    #[test]
    fn relative_error_is_normwise() {
        let t = Tensor::f64([2], vec![3.0, 4.0]).unwrap();
        let g = Tensor::f64([2], vec![3.0, 4.5]).unwrap();
        assert!((relative_error(&g, &t) - 0.1).abs() < 1e-15);
        assert_eq!(relative_error(&t, &Tensor::f64([2], vec![0.0, 0.0]).unwrap()), 5.0);
    }
}
