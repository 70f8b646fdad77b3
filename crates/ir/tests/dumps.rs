//! The three dumps of a graph: text (attributes printed from the op's attribute table), JSON
//! (schema `skipgrad.graph`) and Graphviz DOT (checked by rendering it with `dot` when installed;
//! CI installs it).

use skipgrad_ir::{Conv2dAttrs, DType, Fused, Graph, NodeId, Op, Role, ShortcutAttrs, TensorType};
use std::sync::Arc;

fn source(g: &mut Graph, op: Op, dims: &[usize]) -> NodeId {
    g.add_source(op, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// conv - batch norm (training) - relu, a fused `batch_norm + relu` beside it, an option-A
/// shortcut and a gradient op.
fn sample() -> Graph {
    let mut g = Graph::new();
    let x = source(&mut g, Op::Input { name: "images".into() }, &[2, 3, 4, 4]);
    let w = source(&mut g, Op::Parameter { name: "conv1.weight".into() }, &[4, 3, 3, 3]);
    let gamma = source(&mut g, Op::Parameter { name: "bn1.weight".into() }, &[4]);
    let beta = source(&mut g, Op::Parameter { name: "bn1.bias".into() }, &[4]);
    let y = g.add_node(Op::Conv2d(Conv2dAttrs::square(1, 1)), &[x, w], Role::Forward).unwrap();
    let mean = g.add_node(Op::BatchMean, &[y], Role::Forward).unwrap();
    let var = g.add_node(Op::BatchVar, &[y], Role::Forward).unwrap();
    let bn =
        g.add_node(Op::BatchNorm { eps: 1e-5, training: true }, &[y, mean, var, gamma, beta], Role::Forward).unwrap();
    g.add_node(Op::Relu, &[bn], Role::Forward).unwrap();
    // The same batch norm and ReLU as one fused node.
    let mut body = Graph::new();
    let ins: Vec<NodeId> = [&[2usize, 4, 4, 4][..], &[4], &[4], &[4], &[4]]
        .iter()
        .enumerate()
        .map(|(k, d)| source(&mut body, Op::Input { name: Fused::placeholder(k) }, d))
        .collect();
    let b = body.add_node(Op::BatchNorm { eps: 1e-5, training: false }, &ins, Role::Forward).unwrap();
    body.add_node(Op::Relu, &[b], Role::Forward).unwrap();
    let fused = Fused { rule: "elementwise".into(), body: Arc::new(body), covers: vec![7, 8], outputs: vec![] };
    g.add_node(Op::Fused(fused), &[y, mean, var, gamma, beta], Role::Forward).unwrap();
    let s = ShortcutAttrs { stride: 2, pad_before: 2, pad_after: 2 };
    g.add_node(Op::ShortcutA(s), &[x], Role::Forward).unwrap();
    g.add_node(Op::Conv2dGradInput { conv: Conv2dAttrs::square(1, 1), input_hw: [4, 4] }, &[y, w], Role::Backward)
        .unwrap();
    g
}

#[test]
fn text_dump_prints_the_attribute_table() {
    let text = sample().dump();
    for line in [
        "%0: f32[2,3,4,4] = input[name=\"images\"]",
        "%4: f32[2,4,4,4] = conv2d[stride=1, pad=1](%0, %1)",
        "%7: f32[2,4,4,4] = batch_norm[eps=0.00001, training](%4, %5, %6, %2, %3)",
        "%9: f32[2,4,4,4] = fused[rule=elementwise, ops=batch_norm+relu, covers=#7,#8](%4, %5, %6, %2, %3)",
        "%10: f32[2,7,2,2] = shortcut_a[stride=2, pad_channels=(2,2)](%0)",
        "# backward",
        "%11: f32[2,3,4,4] = conv2d_grad_input[stride=1, pad=1, input_hw=4x4](%4, %1)",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn json_dump_follows_the_schema() {
    let g = sample();
    let v: serde_json::Value = serde_json::from_str(&g.to_json_string()).unwrap();
    assert_eq!(v["schema"], "skipgrad.graph");
    assert_eq!(v["version"], skipgrad_ir::JSON_SCHEMA_VERSION);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), g.len());
    for (i, (n, node)) in nodes.iter().zip(g.nodes()).enumerate() {
        assert_eq!(n["id"], i);
        assert_eq!(n["op"], node.op.name());
        assert_eq!(n["dtype"], "f32");
        assert_eq!(n["shape"], serde_json::json!(node.ty.shape.dims()));
        let inputs: Vec<usize> = node.inputs.iter().map(|x| x.index()).collect();
        assert_eq!(n["inputs"], serde_json::json!(inputs));
    }
    assert_eq!(nodes[1]["attrs"], serde_json::json!({ "name": "conv1.weight" }));
    assert_eq!(nodes[4]["attrs"], serde_json::json!({ "stride": [1, 1], "pad": [1, 1] }));
    assert_eq!(nodes[7]["attrs"], serde_json::json!({ "eps": 1e-5, "mode": "training" }));
    assert_eq!(nodes[10]["attrs"], serde_json::json!({ "stride": 2, "pad_channels": [2, 2] }));
    assert_eq!(nodes[11]["role"], "backward");
    assert_eq!(nodes[11]["attrs"]["input_hw"], serde_json::json!([4, 4]));
    let fused = &nodes[9];
    assert_eq!(
        fused["attrs"],
        serde_json::json!({ "rule": "elementwise", "ops": "batch_norm+relu", "covers": [7, 8] })
    );
    let body = fused["body"]["nodes"].as_array().unwrap();
    assert_eq!(
        body.iter().map(|n| n["op"].as_str().unwrap()).collect::<Vec<_>>(),
        ["input", "input", "input", "input", "input", "batch_norm", "relu"]
    );
}

#[test]
fn dot_dump_renders_with_graphviz() {
    let g = sample();
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph skipgrad {"));
    assert!(dot.contains("subgraph cluster_n9"), "{dot}");
    assert!(dot.contains("label=\"%1 parameter\\nconv1.weight\""), "{dot}");
    // One edge per input of every node, plus the fused body's inner edge.
    let edges = dot.lines().filter(|l| l.contains(" -> ")).count();
    let inputs: usize = g.nodes().iter().map(|n| n.inputs.len()).sum();
    assert_eq!(edges, inputs + 1, "{dot}");
    match std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut child) => {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(dot.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "dot rejected the dump: {}\n{dot}", String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
        }
        Err(e) => assert!(std::env::var_os("CI").is_none(), "CI installs graphviz, but `dot` did not run: {e}"),
    }
}

#[test]
fn json_dump_round_trips_into_an_equal_graph() {
    let mut g = sample();
    let c = g.add_constant(skipgrad_ir::Tensor::f32([3], vec![0.1, -2.5, 1e-7]).unwrap(), Role::Forward);
    g.add_node(Op::Scale { c: 0.3 }, &[c], Role::Update).unwrap();
    let back = Graph::from_json_str(&g.to_json_string()).unwrap();
    assert_eq!(back, g);
    assert_eq!(back.dump(), g.dump());
}

/// JSON has no NaN or infinities: they round-trip as strings (found by the graph-builder fuzzer).
#[test]
fn non_finite_numbers_round_trip_through_json() {
    let mut g = Graph::new();
    let c = g.add_constant(skipgrad_ir::Tensor::f64([3], vec![f64::NAN, f64::INFINITY, -1.5]).unwrap(), Role::Forward);
    let x = g.add_node(Op::Scale { c: f64::NEG_INFINITY }, &[c], Role::Forward).unwrap();
    g.add_node(Op::AddScalar { c: f64::NAN }, &[x], Role::Forward).unwrap();
    let text = g.to_json_string();
    assert!(text.contains("\"-Infinity\"") && text.contains("\"NaN\""), "{text}");
    let back = Graph::from_json_str(&text).unwrap();
    assert_eq!(back.dump(), g.dump());
    let values = back.constant(0).unwrap().to_f64_vec();
    assert!(values[0].is_nan() && values[1] == f64::INFINITY && values[2] == -1.5, "{values:?}");
}

#[test]
fn malformed_json_dumps_are_typed_errors_naming_the_place() {
    let g = sample();
    let mut v = g.to_json();
    v["version"] = 2.into();
    assert_eq!(Graph::from_json(&v).unwrap_err().to_string(), "graph JSON, at version: expected 1, got 2");
    let mut v = g.to_json();
    v["nodes"][4]["attrs"]["stride"] = serde_json::json!([1]);
    assert_eq!(Graph::from_json(&v).unwrap_err().to_string(), "graph JSON, at nodes[4].attrs.stride: expected [h, w]");
    let mut v = g.to_json();
    v["nodes"][8]["op"] = "gelu".into();
    assert_eq!(Graph::from_json(&v).unwrap_err().to_string(), "graph JSON, at nodes[8].op: unknown op \"gelu\"");
    let mut v = g.to_json();
    v["nodes"][4]["inputs"] = serde_json::json!([0, 9]);
    assert!(Graph::from_json(&v).unwrap_err().to_string().contains("inputs must come before the node"));
    // A well-formed dump of an ill-shaped graph fails the shape rule, as building it would.
    let mut v = g.to_json();
    v["nodes"][7]["inputs"] = serde_json::json!([4, 5, 6, 1, 3]);
    let err = Graph::from_json(&v).unwrap_err().to_string();
    assert!(err.starts_with("batch_norm[eps=0.00001, training]: gamma must be"), "{err}");
    assert!(Graph::from_json_str("{ nope").unwrap_err().to_string().starts_with("graph JSON, at line 1"));
}
