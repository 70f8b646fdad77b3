//! Copying a graph node by node into a new one, with ids remapped: how passes build their output.

use crate::{Error, Result};
use skipgrad_ir::{Graph, Node, NodeId, Op, Role};

/// A new graph being built from an old one; `map[old]` is the old node's id in the new graph.
pub(crate) struct Rebuild<'a> {
    old: &'a Graph,
    pass: &'a str,
    pub new: Graph,
    map: Vec<Option<NodeId>>,
}

impl<'a> Rebuild<'a> {
    /// Starts an empty graph for pass `pass` reading `old`.
    pub fn new(old: &'a Graph, pass: &'a str) -> Self {
        Rebuild { old, pass, new: Graph::new(), map: vec![None; old.len()] }
    }

    /// The new id of old node `id` (copied earlier).
    pub fn mapped(&self, id: NodeId) -> NodeId {
        self.map[id.index()].expect("nodes are copied in topological order")
    }

    /// Records that old node `old` is `new` in the new graph.
    pub fn set(&mut self, old: NodeId, new: NodeId) {
        self.set_at(old.index(), new);
    }

    /// Records that the old node at index `old` is `new` in the new graph.
    pub fn set_at(&mut self, old: usize, new: NodeId) {
        self.map[old] = Some(new);
    }

    /// Copies old node `id` with its inputs remapped.
    pub fn copy(&mut self, id: NodeId) -> Result<NodeId> {
        let node = &self.old.nodes()[id.index()];
        let new = copy_node(&mut self.new, self.old, node, |i| self.map[i.index()].expect("topological order"))
            .map_err(|source| Error::Graph { pass: self.pass.into(), source })?;
        self.set(id, new);
        Ok(new)
    }

    /// Adds a new node (inputs are new ids).
    pub fn add(&mut self, op: Op, inputs: &[NodeId], role: Role) -> Result<NodeId> {
        self.new.add_node(op, inputs, role).map_err(|source| Error::Graph { pass: self.pass.into(), source })
    }
}

/// Adds a copy of `node` (from graph `from`) to `to`, its inputs mapped by `input`.
pub(crate) fn copy_node(
    to: &mut Graph,
    from: &Graph,
    node: &Node,
    input: impl Fn(NodeId) -> NodeId,
) -> skipgrad_ir::Result<NodeId> {
    match &node.op {
        Op::Constant { index } => {
            let value = from.constant(*index).ok_or(skipgrad_ir::Error::UnknownNode { node: *index, len: 0 })?;
            Ok(to.add_constant(value.clone(), node.role))
        }
        op if op.is_source() => to.add_source(op.clone(), node.ty.clone(), node.role),
        op => {
            let inputs: Vec<NodeId> = node.inputs.iter().map(|&i| input(i)).collect();
            to.add_node(op.clone(), &inputs, node.role)
        }
    }
}
