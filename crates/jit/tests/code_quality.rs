//! The hot 3x3 convolution kernels, the 1x1 convolutions and the 1x1 weight gradients keep every
//! floating-point value in registers: their generated code (Cranelift's register-allocated vcode)
//! never moves an xmm register to or from the stack, never copies a register only for a
//! multiply-add to overwrite it (the multiply-adds add into their accumulators), and broadcasts
//! each weight straight from memory, not through a register and a shuffle
//! (vendor/cranelift-codegen/PATCH.md has both patches); and where the CPU has AVX2 they compute
//! in 256-bit registers, the direct ones in 512-bit registers at 16 lanes (AVX-512F).

use skipgrad_ir::{Conv2dAttrs, DType, Graph, NodeId, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, Target, compile};

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

/// Lines that broadcast a lane of a register (a load, then a shuffle on the floating-point
/// pipes) where a broadcast from memory (a load alone) would do.
fn register_broadcasts(vcode: &str) -> Vec<String> {
    vcode.lines().map(str::trim).filter(|l| l.starts_with("vbroadcastss %xmm")).map(String::from).collect()
}

/// Every way `vcode` falls short of the above, by name.
fn shortfalls(vcode: &str) -> [(&'static str, Vec<String>); 3] {
    [
        ("spills", vector_spills(vcode).into_iter().map(String::from).collect()),
        ("copies registers for multiply-adds", copies_into_multiply_adds(vcode)),
        ("broadcasts through a register", register_broadcasts(vcode)),
    ]
}

#[test]
fn the_broadcast_finder_tells_registers_from_memory() {
    let vcode = "  vbroadcastss 0x400(%r9, %r15, 4), %xmm10\n  vbroadcastss %xmm14, %xmm14";
    assert_eq!(register_broadcasts(vcode), ["vbroadcastss %xmm14, %xmm14"]);
}

#[test]
fn the_copy_finder_sees_a_copy_before_a_multiply_add() {
    let vcode =
        "  movdqa %xmm0, %xmm1\n  vfmadd213ps %xmm3, %xmm8, %xmm1\n  movdqa %xmm5, %xmm2\n  vaddps %xmm2, %xmm1, %xmm1";
    assert_eq!(copies_into_multiply_adds(vcode).len(), 1);
    assert!(copies_into_multiply_adds("  vfmadd231ps %xmm8, %xmm10, %xmm5").is_empty());
}

/// The forward, input-gradient and weight-gradient nodes of a `kernel` x `kernel` convolution from
/// `c` to `k` channels on `hw` x `hw` images (batch 2) with stride `s`, padded to keep the size.
fn convolution_passes(g: &mut Graph, [c, k, hw, s]: [usize; 4], kernel: usize) -> [(&'static str, NodeId); 3] {
    let a = Conv2dAttrs::square(s, kernel / 2);
    let out = (hw + 2 * (kernel / 2) - kernel) / s + 1;
    let x = input(g, "x", &[2, c, hw, hw]);
    let w = input(g, "w", &[k, c, kernel, kernel]);
    let dy = input(g, "dy", &[2, k, out, out]);
    let node = |g: &mut Graph, op: Op, inputs: &[NodeId], role: Role| g.add_node(op, inputs, role).unwrap();
    [
        ("forward", node(g, Op::Conv2d(a), &[x, w], Role::Forward)),
        ("backward-data", node(g, Op::Conv2dGradInput { conv: a, input_hw: [hw, hw] }, &[dy, w], Role::Backward)),
        (
            "backward-weight",
            node(g, Op::Conv2dGradWeight { conv: a, kernel_hw: [kernel; 2] }, &[x, dy], Role::Backward),
        ),
    ]
}

/// Compiles every pass of each convolution `[in, out, size, stride]` and checks its kernel's
/// code, at the host's vectors and at every other width of 8 lanes or more the CPU has.
fn check_convolutions(shapes: &[[usize; 4]], kernel: usize) {
    let host = Target::host().unwrap();
    let mut targets = vec![host.clone()];
    targets.extend([8, 16].into_iter().filter(|&l| l != host.lanes()).filter_map(|l| host.clone().with_lanes(l).ok()));
    for (&shape, target) in shapes.iter().flat_map(|s| targets.iter().map(move |t| (s, t))) {
        let mut g = Graph::new();
        let nodes = convolution_passes(&mut g, shape, kernel);
        let options = CompileOptions { target: Some(target.clone()), ..CompileOptions::default() };
        let compiled = compile(&g, &nodes.map(|n| n.1), &options).unwrap();
        for (pass, id) in nodes {
            let code = compiled.kernel_for(id).unwrap();
            for (what, lines) in shortfalls(&code.vcode) {
                let [c, k, hw, s] = shape;
                assert!(
                    lines.is_empty(),
                    "{kernel}x{kernel} {c}->{k} {hw}x{hw} stride {s} {pass} ({}) {what}:\n{}",
                    code.name,
                    lines.join("\n")
                );
            }
        }
    }
}

#[test]
fn resnet_3x3_convolutions_keep_values_in_registers() {
    // Every distinct 3x3 convolution of CIFAR ResNet-20/56: [in, out, size, stride].
    check_convolutions(
        &[[3, 16, 32, 1], [16, 16, 32, 1], [16, 32, 32, 2], [32, 32, 16, 1], [32, 64, 16, 2], [64, 64, 8, 1]],
        3,
    );
}

#[test]
fn pointwise_convolutions_keep_values_in_registers() {
    // ResNet-50's 1x1 convolutions, and one whose weight gradient takes two chunks per image with
    // a tail of pixels in the second.
    check_convolutions(
        &[
            [64, 256, 56, 1],
            [256, 1024, 14, 1],
            [2048, 512, 7, 1],
            [512, 2048, 7, 1],
            [64, 64, 47, 1],
            [512, 1024, 28, 2],
        ],
        1,
    );
}

/// Whether disassembly multiplies or adds in ymm registers (register moves and spills may be
/// ymm in any kernel that holds an f32x8: vendor/cranelift-codegen/PATCH.md).
fn arithmetic_on_ymm(asm: &str) -> bool {
    arithmetic_on(asm, "ymm")
}

/// Whether disassembly multiplies or adds in `registers` ("ymm", "zmm").
fn arithmetic_on(asm: &str, registers: &str) -> bool {
    let arithmetic = ["vfmadd", "vmulps", "vaddps"];
    asm.lines().any(|l| l.contains(registers) && arithmetic.iter().any(|op| l.contains(op)))
}

#[test]
fn the_ymm_finder_tells_arithmetic_from_moves() {
    assert!(!arithmetic_on_ymm("vmovaps ymm1, ymm2\nvfmadd231ps xmm0, xmm1, xmm2"));
    assert!(arithmetic_on_ymm("vmovaps ymm1, ymm2\nvfmadd231ps ymm0, ymm1, ymmword ptr [rax]"));
}

/// The convolutions these tests compile: ResNet-50's first pointwise shapes (stride 1 and 2) and
/// CIFAR's 3x3 ones (Winograd at stride 1, direct and sub-pixel at stride 2).
const WIDE_CASES: [([usize; 4], usize); 4] =
    [([64, 256, 56, 1], 1), ([512, 1024, 28, 2], 1), ([16, 16, 32, 1], 3), ([16, 32, 32, 2], 3)];

/// The kernels of every pass of [`WIDE_CASES`] at `target`, each with its description.
fn wide_case_kernels(target: &Target) -> Vec<(String, skipgrad_jit::KernelCode)> {
    let mut out = vec![];
    for (shape, kernel) in WIDE_CASES {
        let mut g = Graph::new();
        let nodes = convolution_passes(&mut g, shape, kernel);
        let options = CompileOptions { target: Some(target.clone()), ..CompileOptions::default() };
        let compiled = compile(&g, &nodes.map(|n| n.1), &options).unwrap();
        for (pass, id) in nodes {
            let code = compiled.kernel_for(id).unwrap().clone();
            let [c, k, hw, s] = shape;
            out.push((format!("{kernel}x{kernel} {c}->{k} {hw}x{hw} stride {s} {pass} ({})", code.name), code));
        }
    }
    out
}

/// Where the CPU has AVX2, every pass of these convolutions (direct, Winograd, sub-pixel,
/// pointwise and direct weight gradients) computes in f32x8 vectors, in 256-bit registers (its
/// disassembly multiplies and adds in ymm registers, with the `disas` feature); at
/// `Target::with_lanes(4)` none does.
#[test]
fn convolutions_compute_in_256_bit_vectors_where_the_cpu_has_them() {
    let host = Target::host().unwrap();
    let Ok(eight) = host.clone().with_lanes(8) else {
        eprintln!("skipped: this CPU has no AVX2, so its vectors have 4 lanes");
        return;
    };
    for (target, wide) in [(eight, true), (host.with_lanes(4).unwrap(), false)] {
        for (what, code) in wide_case_kernels(&target) {
            assert_eq!(code.ir.contains("f32x8"), wide, "{what}: f32x8 in its IR");
            if let Some(asm) = &code.disassembly {
                assert_eq!(arithmetic_on_ymm(asm), wide, "{what}: arithmetic on ymm registers");
            }
        }
    }
}

/// Where the CPU has AVX-512F, at 16 lanes the direct convolutions whose output rows hold two
/// vectors of 16 (here the pointwise ones, each image's pixels one row) and the Winograd ones
/// whose blocks hold 32 tiles or more (3x3 at 32x32: 4 rows of 8 tiles) compute in f32x16
/// vectors, in 512-bit registers, and every other convolution kernel (the 3x3 stride-2 forward
/// pass's rows are 16 wide) in f32x8 ones only.
#[test]
fn convolutions_compute_in_512_bit_vectors_where_the_cpu_has_them() {
    let Ok(sixteen) = Target::host().unwrap().with_lanes(16) else {
        eprintln!("skipped: this CPU has no AVX-512F");
        return;
    };
    let (mut direct, mut winograd) = (0, 0);
    for (what, code) in wide_case_kernels(&sixteen) {
        let (is_direct, is_winograd) = match &code.spec {
            skipgrad_jit::KernelSpec::Conv(c) => match c.winograd {
                None => (c.shape.out_hw[1] >= 32, false),
                Some(w) => (false, w.slots() >= 32),
            },
            _ => (false, false),
        };
        let wide = is_direct || is_winograd;
        (direct, winograd) = (direct + usize::from(is_direct), winograd + usize::from(is_winograd));
        assert_eq!(code.ir.contains("f32x16"), wide, "{what}: f32x16 in its IR");
        assert!(wide || code.ir.contains("f32x8"), "{what}: f32x8 in its IR");
        if let Some(asm) = &code.disassembly {
            assert_eq!(arithmetic_on(asm, "zmm"), wide, "{what}: arithmetic on zmm registers");
        }
    }
    assert_eq!(direct, 3, "1x1 forward and input gradient at stride 1, forward at stride 2");
    assert_eq!(winograd, 2, "3x3 forward and input gradient at 32x32");
}
