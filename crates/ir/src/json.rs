//! The JSON dump: schema `skipgrad.graph`, documented field by field in `docs/graph-json.md`.

use crate::{Attr, Graph, Node, Op, Role};
use serde_json::{Value, json};

/// The version of the JSON dump's schema; it changes whenever a field changes meaning.
pub const JSON_SCHEMA_VERSION: u32 = 1;

impl Graph {
    /// The graph as a JSON value (schema `skipgrad.graph`, version [`JSON_SCHEMA_VERSION`]).
    pub fn to_json(&self) -> Value {
        json!({
            "schema": "skipgrad.graph",
            "version": JSON_SCHEMA_VERSION,
            "nodes": self.nodes().iter().enumerate().map(|(i, n)| node_json(i, n)).collect::<Vec<_>>(),
            "constants": (0..).map_while(|k| self.constant(k).map(|t| json!({
                "index": k,
                "dtype": t.dtype().to_string(),
                "shape": t.shape().dims(),
            }))).collect::<Vec<_>>(),
        })
    }

    /// The JSON dump as indented text.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&self.to_json()).expect("a JSON value always serializes")
    }
}

fn node_json(id: usize, node: &Node) -> Value {
    let attrs: serde_json::Map<String, Value> =
        node.op.attrs().into_iter().map(|(name, value)| (name.to_string(), attr_json(value))).collect();
    let mut v = json!({
        "id": id,
        "op": node.op.name(),
        "attrs": attrs,
        "inputs": node.inputs.iter().map(|i| i.index()).collect::<Vec<_>>(),
        "dtype": node.ty.dtype.to_string(),
        "shape": node.ty.shape.dims(),
        "role": role_name(node.role),
    });
    if let Op::Fused(k) = &node.op {
        v["body"] = k.body.to_json();
    }
    v
}

fn attr_json(value: Attr) -> Value {
    match value {
        Attr::Int(v) => json!(v),
        Attr::Float(v) => json!(v),
        Attr::Bool(v) => json!(v),
        Attr::Text(v) | Attr::Word(v) => json!(v),
        Attr::Mode(v) => json!(v),
        Attr::Pair(v) | Attr::Tuple(v) | Attr::Size(v) => json!(v),
        Attr::List(v) | Attr::Dims(v) | Attr::Ids(v) => json!(v),
    }
}

/// `forward`, `backward` or `update`.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Forward => "forward",
        Role::Backward => "backward",
        Role::Update => "update",
    }
}
