//! Prints what the JIT generated for one node: the kernel spec, Cranelift IR, register-allocated
//! vcode and (with `--features disas`) the machine-code disassembly.
//!
//! `cargo run -p skipgrad-jit --example dump_kernel --features disas -- relu|conv|wgrad|bn`

use skipgrad_ir::{Conv2dAttrs, DType, Graph, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, compile};

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "conv".into());
    let mut g = Graph::new();
    let input = |g: &mut Graph, name: &str, dims: &[usize]| {
        g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).expect("input")
    };
    let x = input(&mut g, "x", &[8, 16, 16, 16]);
    let node = match which.as_str() {
        "relu" => g.add_node(Op::Relu, &[x], Role::Forward),
        "wgrad" => {
            let dy = input(&mut g, "dy", &[8, 16, 16, 16]);
            g.add_node(
                Op::Conv2dGradWeight { conv: Conv2dAttrs::square(1, 1), kernel_hw: [3, 3] },
                &[x, dy],
                Role::Backward,
            )
        }
        "bn" => {
            let p: Vec<_> = ["mean", "var", "gamma", "beta"].iter().map(|n| input(&mut g, n, &[16])).collect();
            g.add_node(Op::BatchNorm { eps: 1e-5, training: false }, &[x, p[0], p[1], p[2], p[3]], Role::Forward)
        }
        _ => {
            let w = input(&mut g, "w", &[16, 16, 3, 3]);
            g.add_node(Op::Conv2d(Conv2dAttrs::square(1, 1)), &[x, w], Role::Forward)
        }
    }
    .expect("a valid node");
    let compiled = match compile(&g, &[node], &CompileOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for (id, kernel) in compiled.schedule() {
        println!(
            "== {id}: {} ==\n{:?}\n\n-- Cranelift IR --\n{}\n-- vcode --\n{}",
            kernel.name, kernel.spec, kernel.ir, kernel.vcode
        );
        match &kernel.disassembly {
            Some(d) => println!("-- disassembly --\n{d}"),
            None => println!("-- disassembly: build with --features disas --"),
        }
    }
}
