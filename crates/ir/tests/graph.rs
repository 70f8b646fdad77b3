//! Graph construction: shape rules reject bad inputs with messages naming op and shapes, and the
//! text dump prints one line per node.

use skipgrad_ir::{Conv2dAttrs, DType, Error, Graph, Op, Role, TensorType};

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> skipgrad_ir::NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

#[test]
fn dump_prints_one_line_per_node_with_roles() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 3, 8, 8]);
    let w = g
        .add_source(
            Op::Parameter { name: "conv1.weight".into() },
            TensorType::new(DType::F32, [16, 3, 3, 3]),
            Role::Forward,
        )
        .unwrap();
    let y = g.add_node(Op::Conv2d(Conv2dAttrs::square(2, 1)), &[x, w], Role::Forward).unwrap();
    let r = g.add_node(Op::Relu, &[y], Role::Forward).unwrap();
    g.add_node(Op::ReluGrad, &[y, r], Role::Backward).unwrap();
    assert_eq!(
        g.dump(),
        "%0: f32[2,3,8,8] = input[name=\"x\"]\n\
         %1: f32[16,3,3,3] = parameter[name=\"conv1.weight\"]\n\
         %2: f32[2,16,4,4] = conv2d[stride=2, pad=1](%0, %1)\n\
         %3: f32[2,16,4,4] = relu(%2)\n\
         # backward\n\
         %4: f32[2,16,4,4] = relu_grad(%2, %3)\n"
    );
}

#[test]
fn rejected_nodes_leave_the_graph_unchanged() {
    let mut g = Graph::new();
    let a = input(&mut g, "a", &[2, 3]);
    let b = input(&mut g, "b", &[4, 5]);
    let err = g.add_node(Op::MatMul { transpose_a: false, transpose_b: false }, &[a, b], Role::Forward).unwrap_err();
    assert_eq!(
        err.to_string(),
        "matmul[transpose_a=false, transpose_b=false]: left operand f32[2,3] has inner size 3, right operand f32[4,5] has 4"
    );
    assert!(matches!(g.add_node(Op::Add, &[a], Role::Forward), Err(Error::Arity { .. })));
    let c = g.add_source(Op::Input { name: "c".into() }, TensorType::new(DType::F64, [2, 3]), Role::Forward).unwrap();
    let err = g.add_node(Op::Add, &[a, c], Role::Forward).unwrap_err();
    assert_eq!(err.to_string(), "add: inputs must share one dtype, got f32[2,3], f64[2,3]");
    assert_eq!(g.len(), 3);
}

#[test]
fn training_batch_norm_requires_its_own_batch_statistics() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[2, 3, 4, 4]);
    let other = input(&mut g, "other", &[2, 3, 4, 4]);
    let p = |g: &mut Graph, n: &str| input(g, n, &[3]);
    let (gamma, beta) = (p(&mut g, "gamma"), p(&mut g, "beta"));
    let mean = g.add_node(Op::BatchMean, &[other], Role::Forward).unwrap();
    let var = g.add_node(Op::BatchVar, &[x], Role::Forward).unwrap();
    let bn = Op::BatchNorm { eps: 1e-5, training: true };
    let err = g.add_node(bn.clone(), &[x, mean, var, gamma, beta], Role::Forward).unwrap_err();
    assert!(err.to_string().contains("must be batch_mean(%0) and batch_var(%0)"), "{err}");
    let mean = g.add_node(Op::BatchMean, &[x], Role::Forward).unwrap();
    assert!(g.add_node(bn, &[x, mean, var, gamma, beta], Role::Forward).is_ok());
}

#[test]
fn shape_rules_cover_windows_and_shortcuts() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1, 4, 7, 7]);
    let pool = |k, s, p| Op::MaxPool(skipgrad_ir::PoolAttrs { kernel: [k; 2], stride: [s; 2], pad: [p; 2] });
    let y = g.add_node(pool(3, 2, 1), &[x], Role::Forward).unwrap();
    assert_eq!(g.node(y).unwrap().ty.shape.dims(), &[1, 4, 4, 4]);
    assert!(g.add_node(pool(3, 2, 2), &[x], Role::Forward).is_err(), "padding over half the kernel");
    let s = skipgrad_ir::ShortcutAttrs { stride: 2, pad_before: 2, pad_after: 2 };
    let y = g.add_node(Op::ShortcutA(s), &[x], Role::Forward).unwrap();
    assert_eq!(g.node(y).unwrap().ty.shape.dims(), &[1, 8, 4, 4]);
    let bad = Op::Reshape { shape: [5, 5].into() };
    assert!(g.add_node(bad, &[x], Role::Forward).unwrap_err().to_string().contains("196 elements"));
}
