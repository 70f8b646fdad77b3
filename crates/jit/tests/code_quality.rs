//! The hot 3x3 convolution kernels and the 1x1 weight gradients keep every floating-point value in
//! registers: their generated
//! code (Cranelift's register-allocated vcode) never moves an xmm register to or from the stack,
//! and never copies a register only for a multiply-add to overwrite it (the multiply-adds add
//! into their accumulators: vendor/cranelift-codegen/PATCH.md).

use skipgrad_ir::{Conv2dAttrs, DType, Graph, NodeId, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, compile};

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// Lines of vcode that spill or reload a vector register.
fn vector_spills(vcode: &str) -> Vec<&str> {
    vcode.lines().filter(|l| l.contains("%xmm") && l.contains("(%rsp)")).collect()
}

/// Pairs of lines where a register is copied and the next instruction, a multiply-add, writes
/// the copy: the multiply-add's destination was a value still needed elsewhere.
fn copies_into_multiply_adds(vcode: &str) -> Vec<String> {
    let lines: Vec<&str> = vcode.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| {
            let copied = pair[0].strip_prefix("movdqa %xmm").and_then(|rest| rest.split(", ").nth(1));
            copied.is_some_and(|dst| pair[1].starts_with("vfmadd") && pair[1].ends_with(dst))
        })
        .map(|pair| pair.join(" / "))
        .collect()
}

#[test]
fn the_copy_finder_sees_a_copy_before_a_multiply_add() {
    let vcode =
        "  movdqa %xmm0, %xmm1\n  vfmadd213ps %xmm3, %xmm8, %xmm1\n  movdqa %xmm5, %xmm2\n  vaddps %xmm2, %xmm1, %xmm1";
    assert_eq!(copies_into_multiply_adds(vcode).len(), 1);
    assert!(copies_into_multiply_adds("  vfmadd231ps %xmm8, %xmm10, %xmm5").is_empty());
}

#[test]
fn resnet_3x3_convolutions_keep_values_in_registers() {
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
            let spills = vector_spills(&code.vcode).into_iter().map(String::from).collect();
            for (what, lines) in
                [("spills", spills), ("copies registers for multiply-adds", copies_into_multiply_adds(&code.vcode))]
            {
                assert!(
                    lines.is_empty(),
                    "{c}->{k} {hw}x{hw} stride {s} {pass} ({}) {what}:\n{}",
                    code.name,
                    lines.join("\n")
                );
            }
        }
    }
}

#[test]
fn pointwise_weight_gradients_keep_values_in_registers() {
    // ResNet-50's 1x1 weight gradients (in, out, input size, stride), and one whose images take
    // two chunks with a tail of pixels in the second.
    for (c, k, hw, s) in [
        (64, 256, 56, 1),
        (256, 1024, 14, 1),
        (2048, 512, 7, 1),
        (512, 2048, 7, 1),
        (64, 64, 47, 1),
        (512, 1024, 28, 2),
    ] {
        let mut g = Graph::new();
        let a = Conv2dAttrs::square(s, 0);
        let out = (hw - 1) / s + 1;
        let x = input(&mut g, "x", &[2, c, hw, hw]);
        let dy = input(&mut g, "dy", &[2, k, out, out]);
        let id = g.add_node(Op::Conv2dGradWeight { conv: a, kernel_hw: [1, 1] }, &[x, dy], Role::Backward).unwrap();
        let compiled = compile(&g, &[id], &CompileOptions::default()).unwrap();
        let code = compiled.kernel_for(id).unwrap();
        let spills = vector_spills(&code.vcode).into_iter().map(String::from).collect();
        for (what, lines) in
            [("spills", spills), ("copies registers for multiply-adds", copies_into_multiply_adds(&code.vcode))]
        {
            assert!(lines.is_empty(), "{c}->{k} {hw}x{hw} stride {s} ({}) {what}:\n{}", code.name, lines.join("\n"));
        }
    }
}
