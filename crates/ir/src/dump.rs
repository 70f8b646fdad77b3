//! The text dump: one line per node, readable like a jaxpr.
//!
//! ```text
//! %2: f32[2,16,8,8] = conv2d[stride=1, pad=1](%0, %1)
//! ```
//! A `# backward` or `# update` line marks where a role begins.

use crate::{Graph, Role};
use std::fmt;

impl Graph {
    /// The text dump of the whole graph.
    pub fn dump(&self) -> String {
        self.to_string()
    }

    /// The dump's line for node `id` (`%2: f32[2,16,8,8] = conv2d[stride=1, pad=1](%0, %1)`),
    /// or `None` when the graph has no such node.
    pub fn node_line(&self, id: crate::NodeId) -> Option<String> {
        let node = self.nodes().get(id.index())?;
        let mut line = format!("{id}: {} = {}", node.ty, node.op);
        if !node.op.is_source() {
            let inputs: Vec<String> = node.inputs.iter().map(|i| i.to_string()).collect();
            line.push_str(&format!("({})", inputs.join(", ")));
        }
        Some(line)
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut role = Role::Forward;
        for (id, node) in self.ids().zip(self.nodes()) {
            if node.role != role {
                role = node.role;
                writeln!(f, "# {}", format!("{role:?}").to_lowercase())?;
            }
            writeln!(f, "{}", self.node_line(id).expect("an id of this graph"))?;
        }
        Ok(())
    }
}
