//! The graph: a topologically ordered list of nodes, grown only through checked additions.

use crate::{Error, Op, Result, Tensor, TensorType, infer};
use smallvec::SmallVec;
use std::fmt;

/// Index of a node in its graph. Printed as `%3`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub(crate) usize);

impl NodeId {
    /// The node's position in the graph's node list.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// Which part of a training step a node belongs to: dumps group and colour nodes by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Role {
    /// The model and its loss.
    Forward,
    /// Gradient ops appended by reverse mode.
    Backward,
    /// Parameter and running-statistics updates.
    Update,
}

/// One node: an op applied to earlier nodes, producing one typed tensor.
#[derive(Clone, PartialEq, Debug)]
pub struct Node {
    /// The operation and its attributes.
    pub op: Op,
    /// The nodes it reads, in the op's input order; each precedes this node.
    pub inputs: SmallVec<[NodeId; 4]>,
    /// The output's dtype and shape.
    pub ty: TensorType,
    /// The part of the step the node belongs to.
    pub role: Role,
}

/// A computation graph; node ids index [`Graph::nodes`], which is in topological order.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct Graph {
    nodes: Vec<Node>,
    constants: Vec<Tensor>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// All nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this id, or an error if the id belongs to no node of this graph.
    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.nodes.get(id.0).ok_or(Error::UnknownNode { node: id.0, len: self.nodes.len() })
    }

    /// Ids of all nodes, in order.
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.nodes.len()).map(NodeId)
    }

    /// The tensor behind an [`Op::Constant`] index.
    pub fn constant(&self, index: usize) -> Option<&Tensor> {
        self.constants.get(index)
    }

    /// The node of the input or parameter with this name.
    pub fn find_source(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().position(|n| source_name(&n.op) == Some(name)).map(NodeId)
    }

    /// The name of input or parameter `id` (`None` for other nodes).
    pub fn source_name(&self, id: NodeId) -> Option<&str> {
        self.nodes.get(id.0).and_then(|n| source_name(&n.op))
    }

    /// Ids and names of all inputs and parameters, in order.
    pub fn sources(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        self.nodes.iter().enumerate().filter_map(|(i, n)| source_name(&n.op).map(|name| (NodeId(i), name)))
    }

    /// Ids and names of all parameters, in order.
    pub fn parameters(&self) -> impl Iterator<Item = (NodeId, &str)> + '_ {
        self.nodes.iter().enumerate().filter_map(|(i, n)| match &n.op {
            Op::Parameter { name } => Some((NodeId(i), name.as_str())),
            _ => None,
        })
    }

    /// Adds an input, parameter or fill node of the given type. Names must be unique.
    pub fn add_source(&mut self, op: Op, ty: TensorType, role: Role) -> Result<NodeId> {
        match &op {
            Op::Input { name } | Op::Parameter { name } => {
                if let Some(existing) = self.find_source(name) {
                    let kind = if matches!(op, Op::Input { .. }) { "input" } else { "parameter" };
                    return Err(Error::DuplicateName { kind, name: name.clone(), existing: existing.0 });
                }
            }
            Op::Fill { .. } => {}
            _ => {
                return Err(Error::Shape {
                    op: op.to_string(),
                    message: "not a source op: add it with Graph::add_node".into(),
                });
            }
        }
        check_size(&op, &ty)?;
        Ok(self.push(Node { op, inputs: SmallVec::new(), ty, role }))
    }

    /// Adds a constant holding `value`.
    pub fn add_constant(&mut self, value: Tensor, role: Role) -> NodeId {
        let ty = TensorType { dtype: value.dtype(), shape: value.shape().clone() };
        let op = Op::Constant { index: self.constants.len() };
        self.constants.push(value);
        self.push(Node { op, inputs: SmallVec::new(), ty, role })
    }

    /// Adds `op` applied to `inputs` after inferring and checking its output type.
    pub fn add_node(&mut self, op: Op, inputs: &[NodeId], role: Role) -> Result<NodeId> {
        let ty = self.check_node(&op, inputs)?;
        Ok(self.push(Node { op, inputs: SmallVec::from_slice(inputs), ty, role }))
    }

    /// The output type `op` would have on `inputs`, or why it cannot be added; adds nothing.
    pub fn check_node(&self, op: &Op, inputs: &[NodeId]) -> Result<TensorType> {
        if let Op::Output { index } = op {
            return self.output_type(*index, inputs);
        }
        let mut types = SmallVec::<[&TensorType; 5]>::new();
        for &i in inputs {
            types.push(&self.node(i)?.ty);
        }
        let ty = infer(op, &types)?;
        check_size(op, &ty)?;
        if let Op::BatchNorm { training: true, .. } | Op::BatchNormGradInput { training: true, .. } = op {
            self.check_batch_statistics(op, inputs)?;
        }
        Ok(ty)
    }

    /// The type of output `index` of the fused node `inputs[0]`.
    fn output_type(&self, index: usize, inputs: &[NodeId]) -> Result<TensorType> {
        let op = Op::Output { index }.to_string();
        let fail = |message: String| Error::Shape { op: op.clone(), message };
        let [source] = inputs else {
            return Err(Error::Arity { op: op.clone(), expected: "1".into(), got: inputs.len() });
        };
        let Op::Fused(k) = &self.node(*source)?.op else {
            return Err(fail(format!("input {source} is not a fused node")));
        };
        let outputs = k.output_nodes();
        match outputs.get(index) {
            Some(&body) if index > 0 => Ok(k.body.nodes()[body].ty.clone()),
            _ => Err(fail(format!("{source} has outputs 1..{} beside its value", outputs.len()))),
        }
    }

    /// Training-mode batch norm is defined only on its own input's batch statistics.
    fn check_batch_statistics(&self, op: &Op, inputs: &[NodeId]) -> Result<()> {
        let is_stat =
            |id: NodeId, want: &Op| self.nodes[id.0].op == *want && self.nodes[id.0].inputs.as_slice() == [inputs[0]];
        if is_stat(inputs[1], &Op::BatchMean) && is_stat(inputs[2], &Op::BatchVar) {
            return Ok(());
        }
        // Inside a fused body the statistics are placeholders: the fusion pass checked them.
        let placeholder = |id: NodeId| match &self.nodes[id.0].op {
            Op::Input { name } => name.strip_prefix("in").is_some_and(|k| k.parse::<usize>().is_ok()),
            _ => false,
        };
        if placeholder(inputs[1]) && placeholder(inputs[2]) {
            return Ok(());
        }
        // After fusion: outputs 1 and 2 of the fused node that computes x and its statistics.
        let fused_stat = |id: NodeId, index: usize, want: &Op| {
            let node = &self.nodes[id.0];
            let Op::Fused(k) = &self.nodes[inputs[0].0].op else { return false };
            let outputs = k.output_nodes();
            node.op == (Op::Output { index })
                && node.inputs.as_slice() == [inputs[0]]
                && outputs.len() == 3
                && k.body.nodes()[outputs[index]].op == *want
                && k.body.nodes()[outputs[index]].inputs.iter().map(|i| i.0).eq([outputs[0]])
        };
        if fused_stat(inputs[1], 1, &Op::BatchMean) && fused_stat(inputs[2], 2, &Op::BatchVar) {
            return Ok(());
        }
        Err(Error::Shape {
            op: op.to_string(),
            message: format!(
                "in training mode mean and variance must be batch_mean({x}) and batch_var({x}), got {} and {}",
                inputs[1],
                inputs[2],
                x = inputs[0]
            ),
        })
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        NodeId(self.nodes.len() - 1)
    }
}

/// Every shape in a graph has an element count that fits in `usize`.
fn check_size(op: &Op, ty: &TensorType) -> Result<()> {
    match ty.shape.checked_numel() {
        Some(_) => Ok(()),
        None => {
            Err(Error::Shape { op: op.to_string(), message: format!("output {ty} has too many elements to address") })
        }
    }
}

fn source_name(op: &Op) -> Option<&str> {
    match op {
        Op::Input { name } | Op::Parameter { name } => Some(name),
        _ => None,
    }
}
