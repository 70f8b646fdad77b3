//! End-to-end: one CIFAR ResNet training step (forward, loss, backward, batch-norm running
//! statistics) traced with the research API, JIT-compiled, and replayed.
//!
//! `cargo bench --bench step` reports, for ResNet-20, -56 and -110 at batch 128, unfused and after
//! the training fusion pipeline: nodes, kernel calls, tensor traffic (bytes each kernel call reads
//! and writes, each tensor once), kernels compiled and reused, compile time,
//! the memory the compiled step holds (planned, and without planning), and the median step time
//! on 1 and 2 threads with the achieved GFLOP/s (3 x 2 x the paper's forward multiply-adds per
//! image x batch). No optimizer update yet: the training issue adds it.
//!
//! Environment: `BENCH_QUICK=1` times fewer steps; `BENCH_PROFILE=1` prints the slowest kernels;
//! `BENCH_NET=ResNet-110` and `BENCH_GRAPH=fused` run only the matching nets and graphs. The last
//! line is the process's peak resident memory (VmHWM), which is the step's own peak when one net
//! and one graph run.

use skipgrad::fuse::{Pipeline, Program};
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;
use std::time::Instant;

struct Builder {
    tape: Tape,
    params: ParamList,
    trainable: Vec<Var>,
}

impl Builder {
    fn param(&mut self, name: String, dims: &[usize]) -> Var {
        let v = self.tape.parameter_spec(&name, DType::F32, dims).unwrap();
        if !name.contains("running") {
            self.trainable.push(v.clone());
        }
        self.params.push((name, dims.to_vec()));
        v
    }
    fn conv_bn(&mut self, x: &Var, name: &str, bn: &str, out: usize, stride: usize) -> Var {
        let c = x.shape().dims()[1];
        let w = self.param(format!("{name}.weight"), &[out, c, 3, 3]);
        let bn = BatchNorm {
            gamma: self.param(format!("{bn}.weight"), &[out]),
            beta: self.param(format!("{bn}.bias"), &[out]),
            running_mean: self.param(format!("{bn}.running_mean"), &[out]),
            running_var: self.param(format!("{bn}.running_var"), &[out]),
            momentum: 0.1,
            eps: 1e-5,
        };
        x.conv2d(&w, stride, 1).unwrap().batch_norm(&bn, true).unwrap()
    }
}

/// Parameter names and shapes, in recording order.
type ParamList = Vec<(String, Vec<usize>)>;

/// The CIFAR ResNet of depth 6n+2 (option A shortcuts), its loss and all gradients.
fn resnet(n: usize, batch: usize) -> (Tape, Vec<Var>, ParamList) {
    let mut b = Builder { tape: Tape::trace(DType::F32), params: vec![], trainable: vec![] };
    let x = b.tape.input_spec("images", DType::F32, &[batch, 3, 32, 32]).unwrap();
    let labels = b.tape.input_spec("labels", DType::F32, &[batch]).unwrap();
    let mut h = b.conv_bn(&x, "conv1", "bn1", 16, 1).relu();
    for (stage, width) in [16, 32, 64].into_iter().enumerate() {
        for block in 0..n {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let p = format!("layer{}.{block}", stage + 1);
            let y = b.conv_bn(&h, &format!("{p}.conv1"), &format!("{p}.bn1"), width, stride).relu();
            let y = b.conv_bn(&y, &format!("{p}.conv2"), &format!("{p}.bn2"), width, 1);
            let shortcut = if stride == 2 { h.shortcut_a(width).unwrap() } else { h.clone() };
            h = (&y + &shortcut).unwrap().relu();
        }
    }
    let fc_w = b.param("fc.weight".into(), &[10, 64]);
    let fc_b = b.param("fc.bias".into(), &[10]);
    let loss = h.global_avg_pool().unwrap().linear(&fc_w, &fc_b).unwrap().cross_entropy(&labels).unwrap();
    let refs: Vec<&Var> = b.trainable.iter().collect();
    let mut outputs = vec![loss.clone()];
    outputs.extend(grad(&loss, &refs).unwrap());
    outputs.extend(b.tape.updates().into_iter().map(|(_, new)| new));
    (b.tape, outputs, b.params)
}

/// The process's peak resident set size in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let batch = 128;
    println!("# one CIFAR ResNet training step, batch {batch} (forward + backward + BN statistics)\n");
    println!("Each net runs unfused, then after the training fusion pipeline, one after the other.\n");
    println!(
        "| net | graph | nodes | kernel calls | traffic MB | kernels compiled | reused | compile ms | memory MB (unplanned) | 1 thread s/step | GFLOP/s | 2 threads s/step | GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    // Forward multiply-adds per image from PAPER.md.
    for (name, n, macs) in
        [("ResNet-20", 3, 40_551_040f64), ("ResNet-56", 9, 125_485_696.0), ("ResNet-110", 18, 252_887_680.0)]
    {
        if std::env::var("BENCH_NET").is_ok_and(|only| !name.contains(&only)) {
            continue;
        }
        let (tape, outputs, params) = resnet(n, batch);
        let unfused = Program { graph: tape.graph(), outputs: outputs.iter().map(|v| v.id()).collect() };
        let fused = Pipeline::training().run(unfused.clone()).unwrap().pop().unwrap().program;
        for (variant, program) in [("unfused", &unfused), ("fused", &fused)] {
            if std::env::var("BENCH_GRAPH").is_ok_and(|only| only != variant) {
                continue;
            }
            let (graph, ids) = (&program.graph, &program.outputs);
            run_step(name, variant, graph, ids, &params, n, macs, batch, quick);
        }
    }
    if let Some(bytes) = peak_rss() {
        println!("\npeak resident memory of this process (VmHWM): {:.0} MB", bytes as f64 / 1e6);
    }
}

/// Compiles and times one step; prints its table row.
#[allow(clippy::too_many_arguments)]
fn run_step(
    name: &str,
    variant: &str,
    graph: &Graph,
    ids: &[NodeId],
    params: &[(String, Vec<usize>)],
    n: usize,
    macs: f64,
    batch: usize,
    quick: bool,
) {
    {
        let flops = 3.0 * 2.0 * macs * batch as f64;
        let mut row = format!("| {name} | {variant} | {} ", graph.len());
        for threads in [1, 2] {
            let start = Instant::now();
            let mut step = compile(graph, ids, &CompileOptions { threads, ..CompileOptions::default() }).unwrap();
            let compile_ms = start.elapsed().as_secs_f64() * 1e3;
            if threads == 1 {
                let s = step.stats();
                let calls = step.schedule().count();
                let m = step.memory();
                let unplanned = m.dedicated + m.unplanned;
                row += &format!(
                    "| {calls} | {:.0} | {} | {} | {compile_ms:.0} | {:.0} ({:.0}) ",
                    step.traffic() as f64 / 1e6,
                    s.kernels_compiled,
                    s.kernels_reused,
                    m.total() as f64 / 1e6,
                    unplanned as f64 / 1e6
                );
            }
            let images: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
            step.set_input("images", &images).unwrap();
            step.set_input("labels", &(0..batch).map(|i| (i % 10) as f32).collect::<Vec<_>>()).unwrap();
            for (pname, dims) in params {
                let len: usize = dims.iter().product();
                let fill = if pname.ends_with("running_var") || pname.contains("bn") && pname.ends_with("weight") {
                    1.0
                } else {
                    0.0
                };
                let values: Vec<f32> = if pname.contains("conv") || pname.starts_with("fc.weight") {
                    let fan_in: usize = dims[1..].iter().product();
                    let bound = (6.0 / fan_in as f32).sqrt();
                    (0..len).map(|i| ((i * 2654435761usize % 2001) as f32 / 1000.0 - 1.0) * bound).collect()
                } else {
                    vec![fill; len]
                };
                step.set_input(pname, &values).unwrap();
            }
            step.run(); // warm up
            let reps = if quick || n > 9 { 2 } else { 3 };
            let mut times: Vec<f64> = (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    step.run();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(|a, b| a.total_cmp(b));
            let t = times[times.len() / 2];
            let loss = step.output(0).unwrap()[0];
            assert!(loss.is_finite(), "{name}: loss {loss}");
            row += &format!("| {t:.3} | {:.1} ", flops / t / 1e9);
            if threads == 2 && std::env::var("BENCH_PROFILE").is_ok() {
                eprintln!("\n{name} ({variant}), 2 threads:\n{}", skipgrad::jit::profile_table(&step.profile()));
            }
        }
        println!("{row}|");
    }
}
