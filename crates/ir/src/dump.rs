//! The text dump: one line per node, readable like a jaxpr.
//!
//! ```text
//! %2: f32[2,16,8,8] = conv2d[stride=1, pad=1](%0, %1)
//! ```
//! A `# backward` or `# update` line marks where a role begins.

use crate::{Graph, Role};
use std::fmt::{self, Write};

impl Graph {
    /// The text dump of the whole graph.
    pub fn dump(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut role = Role::Forward;
        for (i, node) in self.nodes().iter().enumerate() {
            if node.role != role {
                role = node.role;
                writeln!(f, "# {}", format!("{role:?}").to_lowercase())?;
            }
            let mut line = format!("%{i}: {} = {}", node.ty, node.op);
            if !node.op.is_source() {
                line.push('(');
                for (k, input) in node.inputs.iter().enumerate() {
                    if k > 0 {
                        line.push_str(", ");
                    }
                    write!(line, "{input}")?;
                }
                line.push(')');
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
