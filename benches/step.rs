//! End-to-end: one CIFAR ResNet training step (forward, loss, backward, batch-norm running
//! statistics, and the SGD update with momentum and weight decay) traced with the research API,
//! JIT-compiled, and replayed.
//!
//! `cargo bench --bench step` reports, for ResNet-20, -56 and -110 at batch 128, five variants
//! of the step: the unfused graph, the graph after the training fusion pipeline with direct
//! convolutions ("fused-direct"), the same with Winograd F(2x2, 3x3) convolutions where they
//! apply ("fused-f2"), with F(4x4, 3x3) tiles where they multiply less in one image's tile rows
//! ("fused-f4rows"), and also across 4 images' lanes at the 8x8 stage ("fused", the default):
//! nodes, kernel calls, tensor traffic (bytes each kernel call reads
//! and writes, each tensor once), kernels compiled and reused, compile time, the memory the
//! compiled step holds (planned, and without planning), and the step time on 1 and 2 threads with
//! the achieved GFLOP/s (3 x 2 x the paper's forward multiply-adds per image x batch, whatever
//! the algorithm). The variants are compiled side by side and run in alternation, one step of each
//! per round, so the machine's load changes affect them alike: the times are medians over the
//! rounds, and each variant's ratio to the one before it is the median of the per-round ratios,
//! with its quartiles.
//!
//! Environment: `BENCH_QUICK=1` runs fewer rounds; `BENCH_ROUNDS=N` sets them; `BENCH_THREADS=2`
//! runs only that thread count; `BENCH_PROFILE=1` prints the slowest kernels; `BENCH_NET=ResNet-110`
//! runs only the matching nets and `BENCH_GRAPH=fused-direct,fused` only those variants. The last
//! line is the process's peak resident memory (VmHWM), which is the step's own peak when one net
//! and one graph run.

use skipgrad::fuse::{Pipeline, Program, counts};
use skipgrad::jit::{CompileOptions, CompiledGraph, WinogradTiles, compile};
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
    let grads = grad(&loss, &refs).unwrap();
    // The paper's optimizer: each parameter's new value and velocity are updates of the step.
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    for (p, g) in b.trainable.clone().iter().zip(&grads) {
        let name = format!("{}.momentum", b.tape.graph().source_name(p.id()).expect("a parameter"));
        let v = b.tape.parameter_spec(&name, DType::F32, p.shape().dims()).unwrap();
        b.params.push((name, p.shape().dims().to_vec()));
        sgd.update(p, g, &v).unwrap();
    }
    let mut outputs = vec![loss.clone()];
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
    println!("# one CIFAR ResNet training step, batch {batch} (forward, backward, BN statistics, SGD)\n");
    println!(
        "The unfused graph, the fused graph with direct convolutions, and the fused graph with Winograd F(2x2) and F(4x4) convolutions run in alternation, one step each per round; medians over the rounds.\n"
    );
    println!(
        "| net | graph | nodes | kernel calls | traffic MB | kernels compiled | reused | compile ms | memory MB (unplanned) | 1 thread s/step | GFLOP/s | 2 threads s/step | GFLOP/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut ratios = vec![];
    let thread_counts: Vec<usize> = match std::env::var("BENCH_THREADS").ok().and_then(|t| t.parse().ok()) {
        Some(t) => vec![t],
        None => vec![1, 2],
    };
    // Forward multiply-adds per image from PAPER.md.
    for (name, n, macs) in
        [("ResNet-20", 3, 40_551_040f64), ("ResNet-56", 9, 125_485_696.0), ("ResNet-110", 18, 252_887_680.0)]
    {
        if std::env::var("BENCH_NET").is_ok_and(|only| !name.contains(&only)) {
            continue;
        }
        let (tape, outputs, params) = resnet(n, batch);
        let unfused = Program { graph: tape.graph(), outputs: outputs.iter().map(|v| v.id()).collect() };
        let stages = Pipeline::training().run(unfused.clone()).unwrap();
        eprintln!("{name}: fusion rewrites {}", counts(&stages));
        let fused = stages.last().expect("the input stage and one per pass").program.clone();
        // (name, graph, Winograd convolutions): each is compared with the one before it.
        let variants: Vec<(&str, &Program, WinogradTiles)> = [
            ("unfused", &unfused, WinogradTiles::Off),
            ("fused-direct", &fused, WinogradTiles::Off),
            ("fused-f2", &fused, WinogradTiles::F2),
            ("fused-f4rows", &fused, WinogradTiles::F4Rows),
            ("fused", &fused, WinogradTiles::F4),
        ]
        .into_iter()
        .filter(|(variant, _, _)| {
            std::env::var("BENCH_GRAPH").map_or(true, |only| only.split(',').any(|o| o == *variant))
        })
        .collect();
        let default_rounds = if quick {
            2
        } else if n > 9 {
            3
        } else {
            7
        };
        let rounds = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(default_rounds);
        let rows: Vec<String> =
            variants.iter().map(|(v, p, _)| format!("| {name} | {v} | {} ", p.graph.len())).collect();
        // Per variant: the compiled step's figures, then the time columns of each thread count.
        let mut figures: Vec<String> = vec![String::new(); variants.len()];
        let mut timings: Vec<String> = vec![String::new(); variants.len()];
        let flops = 3.0 * 2.0 * macs * batch as f64;
        for threads in [1, 2] {
            if !thread_counts.contains(&threads) {
                for t in &mut timings {
                    *t += "| | ";
                }
                continue;
            }
            let mut steps = vec![];
            for ((_, program, winograd), row) in variants.iter().zip(&mut figures) {
                let start = Instant::now();
                let options = CompileOptions { threads, winograd: *winograd, ..CompileOptions::default() };
                let step = compile(&program.graph, &program.outputs, &options).unwrap();
                let compile_ms = start.elapsed().as_secs_f64() * 1e3;
                if threads == thread_counts[0] {
                    let s = step.stats();
                    let m = step.memory();
                    *row += &format!(
                        "| {} | {:.0} | {} | {} | {compile_ms:.0} | {:.0} ({:.0}) ",
                        step.steps(),
                        step.traffic() as f64 / 1e6,
                        s.kernels_compiled,
                        s.kernels_reused,
                        m.total() as f64 / 1e6,
                        (m.dedicated + m.unplanned) as f64 / 1e6
                    );
                }
                steps.push(feed(step, &params, batch));
            }
            for step in &mut steps {
                step.run(); // warm up
            }
            let mut times: Vec<Vec<f64>> = vec![vec![]; steps.len()];
            for _ in 0..rounds {
                for (step, t) in steps.iter_mut().zip(&mut times) {
                    let start = Instant::now();
                    step.run();
                    t.push(start.elapsed().as_secs_f64());
                }
            }
            for ((step, t), row) in steps.iter().zip(&times).zip(&mut timings) {
                let loss = step.output(0).unwrap()[0];
                assert!(loss.is_finite(), "{name}: loss {loss}");
                let t = quantile(t, 0.5);
                *row += &format!("| {t:.3} | {:.1} ", flops / t / 1e9);
            }
            for i in 1..times.len() {
                let per_round: Vec<f64> = times[i].iter().zip(&times[i - 1]).map(|(a, b)| a / b).collect();
                let q = |p: f64| quantile(&per_round, p);
                ratios.push(format!(
                    "| {name} | {} / {} | {threads} | {rounds} | {:.3} | {:.3} - {:.3} |",
                    variants[i].0,
                    variants[i - 1].0,
                    q(0.5),
                    q(0.25),
                    q(0.75)
                ));
            }
            if threads == 2 && std::env::var("BENCH_PROFILE").is_ok() {
                for ((variant, _, _), step) in variants.iter().zip(&mut steps) {
                    eprintln!("\n{name} ({variant}), 2 threads:\n{}", skipgrad::jit::profile_table(&step.profile()));
                }
            }
        }
        for ((row, f), t) in rows.iter().zip(&figures).zip(&timings) {
            println!("{row}{f}{t}|");
        }
    }
    if !ratios.is_empty() {
        println!("\n| net | step time ratio | threads | rounds | median of the rounds' ratios | quartiles |");
        println!("|---|---|---|---|---|---|");
        for r in ratios {
            println!("{r}");
        }
    }
    if let Some(bytes) = peak_rss() {
        println!("\npeak resident memory of this process (VmHWM): {:.0} MB", bytes as f64 / 1e6);
    }
}

/// The `p`-quantile of `values` (nearest rank).
fn quantile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Feeds a compiled step: images and labels, He-scaled weights, BN scale 1 and shift 0, running
/// variance 1, zero running means and velocities.
fn feed(mut step: CompiledGraph, params: &[(String, Vec<usize>)], batch: usize) -> CompiledGraph {
    let images: Vec<f32> = (0..batch * 3 * 32 * 32).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    step.set_input("images", &images).unwrap();
    step.set_input("labels", &(0..batch).map(|i| (i % 10) as f32).collect::<Vec<_>>()).unwrap();
    for (pname, dims) in params {
        let len: usize = dims.iter().product();
        let weight = !pname.ends_with(".momentum") && (pname.contains("conv") || pname.starts_with("fc.weight"));
        let values: Vec<f32> = if weight {
            let fan_in: usize = dims[1..].iter().product();
            let bound = (6.0 / fan_in as f32).sqrt();
            (0..len).map(|i| ((i * 2654435761usize % 2001) as f32 / 1000.0 - 1.0) * bound).collect()
        } else {
            let one = pname.ends_with("running_var") || pname.contains("bn") && pname.ends_with("weight");
            vec![if one { 1.0 } else { 0.0 }; len]
        };
        step.set_input(pname, &values).unwrap();
    }
    step
}
