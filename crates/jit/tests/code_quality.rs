//! The hot 3x3 convolution kernels keep every floating-point value in registers: their generated
//! code (Cranelift's register-allocated vcode) never moves an xmm register to or from the stack.

use skipgrad_ir::{Conv2dAttrs, DType, Graph, NodeId, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, compile};

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// Lines of vcode that spill or reload a vector register.
fn vector_spills(vcode: &str) -> Vec<&str> {
    vcode.lines().filter(|l| l.contains("%xmm") && l.contains("(%rsp)")).collect()
}

#[test]
fn resnet_3x3_convolutions_do_not_spill() {
    // Every distinct 3x3 convolution of CIFAR ResNet-20/56: (in, out, size, stride).
    for (c, k, hw, s) in
        [(3, 16, 32, 1), (16, 16, 32, 1), (16, 32, 32, 2), (32, 32, 16, 1), (32, 64, 16, 2), (64, 64, 8, 1)]
    {
        let mut g = Graph::new();
        let a = Conv2dAttrs::square(s, 1);
        let out = (hw + 2 - 3) / s + 1;
        let x = input(&mut g, "x", &[2, c, hw, hw]);
        let w = input(&mut g, "w", &[k, c, 3, 3]);
        let dy = input(&mut g, "dy", &[2, k, out, out]);
        let nodes = [
            ("forward", g.add_node(Op::Conv2d(a), &[x, w], Role::Forward).unwrap()),
            (
                "backward-data",
                g.add_node(Op::Conv2dGradInput { conv: a, input_hw: [hw, hw] }, &[dy, w], Role::Backward).unwrap(),
            ),
            (
                "backward-weight",
                g.add_node(Op::Conv2dGradWeight { conv: a, kernel_hw: [3, 3] }, &[x, dy], Role::Backward).unwrap(),
            ),
        ];
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.1).collect();
        let compiled = compile(&g, &ids, &CompileOptions::default()).unwrap();
        for (pass, id) in nodes {
            let code = compiled.kernel_for(id).unwrap();
            let spills = vector_spills(&code.vcode);
            assert!(
                spills.is_empty(),
                "{c}->{k} {hw}x{hw} stride {s} {pass} ({}) spills:\n{}",
                code.name,
                spills.join("\n")
            );
        }
    }
}
