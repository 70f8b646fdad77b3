//! The dump switch end to end, on a ResNet-20-shaped training step (stem, 9 basic blocks with two
//! option-A downsamplings, pool, classifier, loss, gradients, running statistics): every stage is
//! written as numbered files, the DOT dump of the fused step renders with Graphviz (CI installs
//! it), and its JSON dump round-trips into an equal graph.

mod common;

use common::net::{Block, build};
use skipgrad::fuse::{Pipeline, Program};
use skipgrad::ir::debug::set_dump_dir;
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;

#[test]
fn every_stage_of_a_resnet20_step_is_dumped() {
    let dir = std::env::temp_dir().join(format!("skipgrad-dumps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    set_dump_dir(Some(dir.clone()));
    let mut blocks = vec![Block::Plain { out: 16, kernel: 3, stride: 1 }];
    for stage in 0..3 {
        for b in 0..3 {
            blocks.push(Block::Residual { stride: if stage > 0 && b == 0 { 2 } else { 1 } });
        }
    }
    let net = build(&blocks, 2, 3, 8, 1, DType::F32).unwrap(); // traces, then takes gradients: 2 stages
    let program = Program { graph: net.tape.graph(), outputs: net.outputs.iter().map(|v| v.id()).collect() };
    let fused = Pipeline::training().run(program).unwrap().pop().unwrap().program; // 2 stages
    let mut step = compile(&fused.graph, &fused.outputs, &CompileOptions::default()).unwrap(); // 2 stages
    step.run_tensors(&net.feeds).unwrap();
    set_dump_dir(None);

    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let stage = |n: usize, name: &str| format!("{n:02}-{name}");
    for (n, name) in [(0, "traced"), (1, "gradients"), (2, "fuse"), (3, "foreach")] {
        for ext in ["txt", "dot", "json"] {
            assert!(names.contains(&format!("{}.{ext}", stage(n, name))), "{names:?}");
        }
    }
    assert!(names.contains(&stage(4, "memory-plan.txt")), "{names:?}");
    assert!(names.contains(&stage(5, "kernels")), "{names:?}");
    let plan = std::fs::read_to_string(dir.join(stage(4, "memory-plan.txt"))).unwrap();
    assert!(plan.starts_with("# memory plan: "), "{plan}");
    assert_eq!(plan.lines().count(), 2 + step.steps(), "one line per kernel call");
    let kernels: Vec<String> = std::fs::read_dir(dir.join(stage(5, "kernels")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kernels.iter().filter(|k| k.ends_with(".clif")).count(), step.kernels().len());
    assert!(kernels.iter().any(|k| k.contains("fused_conv_epilogue") && k.ends_with(".vcode")), "{kernels:?}");

    // The fused step's JSON dump round-trips; its DOT dump renders.
    let json = std::fs::read_to_string(dir.join(stage(3, "foreach.json"))).unwrap();
    let back = Graph::from_json_str(&json).unwrap();
    assert_eq!(back.dump(), fused.graph.dump());
    assert!(back == fused.graph, "the graphs print alike but differ");
    let dot = dir.join(stage(3, "foreach.dot"));
    match std::process::Command::new("dot").arg("-Tsvg").arg(&dot).output() {
        Ok(out) => {
            assert!(out.status.success(), "dot rejected {}: {}", dot.display(), String::from_utf8_lossy(&out.stderr));
            assert!(String::from_utf8_lossy(&out.stdout).contains("<svg"));
        }
        Err(e) => assert!(std::env::var_os("CI").is_none(), "CI installs graphviz, but `dot` did not run: {e}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
