//! The JSON dump: schema `skipgrad.graph`, documented field by field in `docs/graph-json.md`.

use crate::{
    Attr, Conv2dAttrs, DType, Error, Fused, Graph, Node, NodeId, Op, PoolAttrs, Result, Role, Shape, ShortcutAttrs,
    Tensor, TensorType,
};
use serde_json::{Value, json};
use std::sync::Arc;

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
                "values": t.to_f64_vec().into_iter().map(number).collect::<Vec<_>>(),
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
        Attr::Float(v) => number(v),
        Attr::Bool(v) => json!(v),
        Attr::Text(v) | Attr::Word(v) => json!(v),
        Attr::Mode(v) => json!(v),
        Attr::Pair(v) | Attr::Tuple(v) | Attr::Size(v) => json!(v),
        Attr::List(v) | Attr::Dims(v) | Attr::Ids(v) => json!(v),
    }
}

/// A number as JSON: JSON has no NaN or infinities, so those are the strings `"NaN"`,
/// `"Infinity"` and `"-Infinity"` (as JavaScript prints them).
fn number(v: f64) -> Value {
    match v {
        v if v.is_nan() => json!("NaN"),
        f64::INFINITY => json!("Infinity"),
        f64::NEG_INFINITY => json!("-Infinity"),
        v => json!(v),
    }
}

/// The reverse of [`number`].
fn number_from(v: &Value) -> Option<f64> {
    match v.as_str() {
        Some("NaN") => Some(f64::NAN),
        Some("Infinity") => Some(f64::INFINITY),
        Some("-Infinity") => Some(f64::NEG_INFINITY),
        Some(_) => None,
        None => v.as_f64(),
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

impl Graph {
    /// Rebuilds a graph from its JSON dump (schema `skipgrad.graph`, version 1): every node is
    /// added again, so shapes are checked as when the graph was built. A malformed dump is an
    /// [`Error::Json`] naming where it went wrong.
    pub fn from_json(value: &Value) -> Result<Graph> {
        let fail = |at: &str, message: &str| Error::Json { at: at.into(), message: message.into() };
        if value["schema"] != "skipgrad.graph" {
            return Err(fail("schema", "expected \"skipgrad.graph\""));
        }
        if value["version"] != JSON_SCHEMA_VERSION {
            return Err(fail("version", &format!("expected {JSON_SCHEMA_VERSION}, got {}", value["version"])));
        }
        let mut g = Graph::new();
        let constants = value["constants"].as_array().ok_or_else(|| fail("constants", "expected an array"))?;
        let mut tensors = vec![];
        for (k, c) in constants.iter().enumerate() {
            let at = format!("constants[{k}]");
            let dims = usizes(&c["shape"], &format!("{at}.shape"))?;
            let values: Vec<f64> = c["values"]
                .as_array()
                .and_then(|v| v.iter().map(number_from).collect())
                .ok_or_else(|| fail(&format!("{at}.values"), "expected an array of numbers"))?;
            let t = match dtype(&c["dtype"], &format!("{at}.dtype"))? {
                DType::F32 => Tensor::f32(dims, values.into_iter().map(|v| v as f32).collect()),
                DType::F64 => Tensor::f64(dims, values),
            };
            tensors.push(t.map_err(|e| fail(&at, &e.to_string()))?);
        }
        let nodes = value["nodes"].as_array().ok_or_else(|| fail("nodes", "expected an array"))?;
        for (i, n) in nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            if n["id"] != i {
                return Err(fail(&format!("{at}.id"), &format!("expected {i}: nodes are listed in order")));
            }
            let role = match n["role"].as_str() {
                Some("forward") => Role::Forward,
                Some("backward") => Role::Backward,
                Some("update") => Role::Update,
                _ => return Err(fail(&format!("{at}.role"), "expected forward, backward or update")),
            };
            let op = op_from_json(n, &at)?;
            let inputs: Vec<NodeId> = usizes(&n["inputs"], &format!("{at}.inputs"))?
                .into_iter()
                .map(|j| {
                    if j < i {
                        Ok(NodeId(j))
                    } else {
                        Err(fail(&format!("{at}.inputs"), "inputs must come before the node"))
                    }
                })
                .collect::<Result<_>>()?;
            match op {
                Op::Constant { index } => {
                    let t = tensors
                        .get(index)
                        .cloned()
                        .ok_or_else(|| fail(&format!("{at}.attrs.index"), "no such constant"))?;
                    g.add_constant(t, role);
                }
                op if op.is_source() => {
                    let ty = TensorType::new(
                        dtype(&n["dtype"], &format!("{at}.dtype"))?,
                        usizes(&n["shape"], &format!("{at}.shape"))?,
                    );
                    g.add_source(op, ty, role)?;
                }
                op => {
                    g.add_node(op, &inputs, role)?;
                }
            }
        }
        Ok(g)
    }

    /// Rebuilds a graph from the text of its JSON dump.
    pub fn from_json_str(text: &str) -> Result<Graph> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            at: format!("line {}, column {}", e.line(), e.column()),
            message: e.to_string(),
        })?;
        Graph::from_json(&value)
    }
}

fn usizes(v: &Value, at: &str) -> Result<Vec<usize>> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect())
        .ok_or_else(|| Error::Json { at: at.into(), message: "expected an array of non-negative integers".into() })
}

fn dtype(v: &Value, at: &str) -> Result<DType> {
    match v.as_str() {
        Some("f32") => Ok(DType::F32),
        Some("f64") => Ok(DType::F64),
        _ => Err(Error::Json { at: at.into(), message: "expected \"f32\" or \"f64\"".into() }),
    }
}

/// The op of a node's JSON: its name and attributes, the reverse of [`Op::attrs`].
fn op_from_json(n: &Value, at: &str) -> Result<Op> {
    let attrs = &n["attrs"];
    let fail = |key: &str, message: &str| Error::Json { at: format!("{at}.attrs.{key}"), message: message.into() };
    let int = |key: &str| attrs[key].as_u64().map(|v| v as usize).ok_or_else(|| fail(key, "expected an integer"));
    let float = |key: &str| number_from(&attrs[key]).ok_or_else(|| fail(key, "expected a number"));
    let flag = |key: &str| attrs[key].as_bool().ok_or_else(|| fail(key, "expected true or false"));
    let text = |key: &str| attrs[key].as_str().map(str::to_string).ok_or_else(|| fail(key, "expected a string"));
    let pair = |key: &str| -> Result<[usize; 2]> {
        let v = usizes(&attrs[key], &format!("{at}.attrs.{key}"))?;
        v.try_into().map_err(|_| fail(key, "expected [h, w]"))
    };
    let list = |key: &str| usizes(&attrs[key], &format!("{at}.attrs.{key}"));
    let conv = || -> Result<Conv2dAttrs> { Ok(Conv2dAttrs { stride: pair("stride")?, pad: pair("pad")? }) };
    let pool = || -> Result<PoolAttrs> {
        Ok(PoolAttrs { kernel: pair("kernel")?, stride: pair("stride")?, pad: pair("pad")? })
    };
    let shortcut = || -> Result<ShortcutAttrs> {
        let [before, after] = pair("pad_channels")?;
        Ok(ShortcutAttrs { stride: int("stride")?, pad_before: before, pad_after: after })
    };
    let training = || match attrs["mode"].as_str() {
        Some("training") => Ok(true),
        Some("eval") => Ok(false),
        _ => Err(fail("mode", "expected \"training\" or \"eval\"")),
    };
    let name =
        n["op"].as_str().ok_or_else(|| Error::Json { at: format!("{at}.op"), message: "expected a string".into() })?;
    Ok(match name {
        "input" => Op::Input { name: text("name")? },
        "parameter" => Op::Parameter { name: text("name")? },
        "constant" => Op::Constant { index: int("index")? },
        "fill" => Op::Fill { value: float("value")? },
        "conv2d" => Op::Conv2d(conv()?),
        "conv2d_grad_input" => Op::Conv2dGradInput { conv: conv()?, input_hw: pair("input_hw")? },
        "conv2d_grad_weight" => Op::Conv2dGradWeight { conv: conv()?, kernel_hw: pair("kernel")? },
        "bias_add" => Op::BiasAdd,
        "batch_mean" => Op::BatchMean,
        "batch_var" => Op::BatchVar,
        "batch_norm" => Op::BatchNorm { eps: float("eps")?, training: training()? },
        "batch_norm_grad_input" => Op::BatchNormGradInput { eps: float("eps")?, training: training()? },
        "batch_norm_grad_gamma" => Op::BatchNormGradGamma { eps: float("eps")? },
        "relu" => Op::Relu,
        "relu_grad" => Op::ReluGrad,
        "add" => Op::Add,
        "sub" => Op::Sub,
        "mul" => Op::Mul,
        "div" => Op::Div,
        "sqrt" => Op::Sqrt,
        "scale" => Op::Scale { c: float("c")? },
        "mul_scalar" => Op::MulScalar,
        "add_scalar" => Op::AddScalar { c: float("c")? },
        "stop_gradient" => Op::StopGradient,
        "shortcut_a" => Op::ShortcutA(shortcut()?),
        "shortcut_a_grad" => Op::ShortcutAGrad { shortcut: shortcut()?, input_hw: pair("input_hw")? },
        "max_pool" => Op::MaxPool(pool()?),
        "max_pool_grad" => Op::MaxPoolGrad(pool()?),
        "matmul" => Op::MatMul { transpose_a: flag("transpose_a")?, transpose_b: flag("transpose_b")? },
        "reshape" => Op::Reshape { shape: Shape::new(&list("shape")?) },
        "reduce_sum" => Op::ReduceSum { axes: list("axes")?.into_iter().collect() },
        "broadcast" => Op::Broadcast { axes: list("axes")?.into_iter().collect(), shape: Shape::new(&list("shape")?) },
        "softmax" => Op::Softmax,
        "softmax_cross_entropy" => Op::SoftmaxCrossEntropy,
        "softmax_cross_entropy_grad" => Op::SoftmaxCrossEntropyGrad,
        "argmax" => Op::ArgMax,
        "equal" => Op::Equal,
        "fused" => Op::Fused(Fused {
            rule: text("rule")?,
            body: Arc::new(Graph::from_json(&n["body"])?),
            covers: list("covers")?,
            outputs: if attrs.get("outputs").is_some() { list("outputs")? } else { vec![] },
        }),
        "output" => Op::Output { index: int("index")? },
        custom if attrs.get("custom_rule").is_some() => Op::Custom { name: custom.into(), rule: int("custom_rule")? },
        other => return Err(Error::Json { at: format!("{at}.op"), message: format!("unknown op {other:?}") }),
    })
}
