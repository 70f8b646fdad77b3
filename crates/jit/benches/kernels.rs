//! Kernel benchmarks against this machine's measured ceiling.
//!
//! `cargo bench -p skipgrad-jit --bench kernels` prints markdown tables:
//! 1. the multiply-add ceiling, from a JIT-emitted loop of independent multiply-adds, in f32x4
//!    vectors and (with AVX2) f32x8 ones; the kernels below are measured against the ceiling of
//!    the target's widest vectors;
//! 2. the copy bandwidth, from the JIT's own copy kernel on 64 MiB;
//! 3. every distinct convolution of CIFAR ResNet-20 and ResNet-56 at batch 128, forward,
//!    backward-data and backward-weight, on 1 and 2 threads, as GFLOP/s and fraction of ceiling
//!    (stride-1 passes also by Winograd: F(4x4, 3x3) and F(2x2, 3x3) where the default takes
//!    F(4x4, 3x3), and direct; GFLOP/s count the direct convolution's operations, so they
//!    compare times);
//!    Then the 1x1 convolutions of ResNet-50's bottlenecks at batch 16 (direct), the same way,
//!    and its 3x3 convolutions at 14x14 and 7x7 (by cropped Winograd tiles, and direct);
//! 4. memory-bound kernels (batch norm, ReLU, add) as GB/s and fraction of copy bandwidth.
//!
//! Times are medians of repeated runs: this thread's CPU time for 1-thread runs (robust to the
//! shared machine preempting us), wall time for 2 threads. Compare ratios measured in one run. `BENCH_QUICK=1` runs fewer repetitions;
//! `BENCH_LANES=4` measures the kernels with 4 lanes where the CPU's vectors have 8.
//! `BENCH_FILTER=text` runs only the convolution and memory-bound rows whose name contains `text`
//! (for example `BENCH_FILTER=backward-weight`). `BENCH_COLD=1` writes 64 MiB before each timed
//! run, so the kernels read their operands from memory as they do inside a training step (each
//! kernel's operands were written many kernels earlier) rather than from the caches.

use skipgrad_ir::{Conv2dAttrs, DType, Graph, NodeId, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, Kernel, KernelSpec, MulAdd, PeakSpec, Target, Winograd, WinogradTiles, compile};
use std::time::Instant;

/// Seconds of this thread's CPU time: unlike wall time, not inflated when the shared machine
/// preempts the benchmark (used for 1-thread runs, where all work happens on this thread).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median seconds per run: thread CPU time on 1 thread, wall time otherwise.
fn median_seconds(mut run: impl FnMut(), min_reps: usize, budget: f64, threads: usize) -> f64 {
    run(); // warm up: page in buffers, fill caches
    let mut evict = std::env::var_os("BENCH_COLD").map(|_| vec![0u8; 64 << 20]);
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < min_reps || (start.elapsed().as_secs_f64() < budget && times.len() < 50) {
        if let Some(junk) = &mut evict {
            // Every cache line of 64 MiB written (more than the last-level cache holds).
            junk.iter_mut().step_by(64).for_each(|b| *b = b.wrapping_add(1));
            std::hint::black_box(&junk);
        }
        let (wall, cpu) = (Instant::now(), thread_cpu_seconds());
        run();
        times.push(if threads == 1 { thread_cpu_seconds() - cpu } else { wall.elapsed().as_secs_f64() });
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn reps() -> (usize, f64) {
    if std::env::var("BENCH_QUICK").is_ok() { (3, 0.2) } else { (9, 2.0) }
}

/// A short calibration run (about a millisecond) to interleave with kernel runs, so that each
/// kernel is compared with the ceiling at the same moment's clock speed.
struct Calibration {
    kernel: Kernel,
    flops: f64,
}

impl Calibration {
    fn new(target: &Target) -> Self {
        let spec = PeakSpec { accumulators: 12, iterations: 100_000, lanes: target.lanes() };
        let flops = spec.flops_per_group();
        Calibration { kernel: Kernel::compile(&KernelSpec::Peak(spec), target).expect("peak kernel"), flops }
    }
    /// GFLOP/s of one calibration run on this thread.
    fn gflops(&self) -> f64 {
        let mut out = [0f32; 16];
        let args = [out.as_mut_ptr()];
        let t = thread_cpu_seconds();
        // SAFETY: the peak kernel writes one vector (at most 16 f32) to args[0].
        unsafe { self.kernel.run(&args, 0, 1) };
        self.flops / (thread_cpu_seconds() - t) / 1e9
    }
}

/// GFLOP/s of the calibration loop on one thread.
fn ceiling(target: &Target, lanes: usize) -> f64 {
    let spec = PeakSpec { accumulators: 12, iterations: 2_000_000, lanes };
    let kernel = Kernel::compile(&KernelSpec::Peak(spec.clone()), target).expect("peak kernel");
    let mut out = [0f32; 16];
    let args = [out.as_mut_ptr()];
    let (min, budget) = reps();
    // SAFETY: the peak kernel writes one vector (at most 16 f32) to args[0].
    let t = median_seconds(|| unsafe { kernel.run(&args, 0, 1) }, min, budget, 1);
    spec.flops_per_group() / t / 1e9
}

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// Median over repetitions of (kernel GFLOP/s on one thread) / (ceiling GFLOP/s measured just
/// before it): the fraction of ceiling, robust to the clock speed drifting during the run.
fn fraction_of_ceiling(
    g: &Graph,
    out: NodeId,
    flops: f64,
    target: &Target,
    calibration: &Calibration,
    winograd: WinogradTiles,
) -> f64 {
    let options = CompileOptions { threads: 1, target: Some(target.clone()), winograd, ..CompileOptions::default() };
    let mut c = compile(g, &[out], &options).expect("compiles");
    fill_inputs(g, &mut c);
    c.run();
    let mut ratios: Vec<f64> = (0..reps().0)
        .map(|_| {
            let peak = calibration.gflops();
            let t = thread_cpu_seconds();
            c.run();
            flops / (thread_cpu_seconds() - t) / 1e9 / peak
        })
        .collect();
    ratios.sort_by(|a, b| a.total_cmp(b));
    ratios[ratios.len() / 2]
}

fn fill_inputs(g: &Graph, c: &mut skipgrad_jit::CompiledGraph) {
    for id in g.ids() {
        let node = g.node(id).unwrap();
        if let Op::Input { name } = &node.op {
            let n = node.ty.shape.numel();
            let values: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1013) as f32) / 1013.0 + 0.1).collect();
            c.set_input(name, &values).unwrap();
        }
    }
}

/// Seconds per run of `g`'s `out` on `threads`, with every input filled with small values.
fn time_graph(g: &Graph, out: NodeId, threads: usize, target: &Target) -> f64 {
    time_graph_with(g, out, threads, target, WinogradTiles::default())
}

/// [`time_graph`], choosing which 3x3 stride-1 convolutions use Winograd tiles.
fn time_graph_with(g: &Graph, out: NodeId, threads: usize, target: &Target, winograd: WinogradTiles) -> f64 {
    let options = CompileOptions { threads, target: Some(target.clone()), winograd, ..CompileOptions::default() };
    let mut c = compile(g, &[out], &options).expect("compiles");
    fill_inputs(g, &mut c);
    let (min, budget) = reps();
    median_seconds(|| c.run(), min, budget, threads)
}

/// `BENCH_PROFILE=1`: the share of each kernel of `g` (1 thread, wall time, 10 runs).
fn print_profile(g: &Graph, out: NodeId, target: &Target, winograd: WinogradTiles) {
    let options = CompileOptions { threads: 1, target: Some(target.clone()), winograd, ..CompileOptions::default() };
    let mut c = compile(g, &[out], &options).expect("compiles");
    fill_inputs(g, &mut c);
    c.run();
    let mut totals: Vec<(String, f64)> = vec![];
    for _ in 0..10 {
        for skipgrad_jit::KernelProfile { name, seconds, .. } in c.profile() {
            match totals.iter_mut().find(|t| t.0 == name) {
                Some(t) => t.1 += seconds,
                None => totals.push((name, seconds)),
            }
        }
    }
    let all: f64 = totals.iter().map(|t| t.1).sum();
    for (name, seconds) in totals {
        println!("|   | {name} | {:.2} ms | {:.0}% of the pass | | |", seconds * 100.0, 100.0 * seconds / all);
    }
}

struct ConvCase {
    name: &'static str,
    c: usize,
    k: usize,
    hw: usize,
    stride: usize,
}

/// Whether a row is selected by `BENCH_FILTER` (a substring of "conv pass" or the kernel name).
fn selected(row: &str) -> bool {
    std::env::var("BENCH_FILTER").map_or(true, |f| row.contains(&f))
}

/// The graph of one pass ("forward", "backward-data" or "backward-weight") of `case`'s
/// convolution with a square `kernel` (padded to keep the size at stride 1), at `batch`.
fn conv_graph(case: &ConvCase, kernel: usize, batch: usize, pass: &str) -> (Graph, NodeId) {
    let a = Conv2dAttrs::square(case.stride, kernel / 2);
    let out_hw = (case.hw + 2 * (kernel / 2) - kernel) / case.stride + 1;
    let mut g = Graph::new();
    let out = match pass {
        "forward" => {
            let x = input(&mut g, "x", &[batch, case.c, case.hw, case.hw]);
            let w = input(&mut g, "w", &[case.k, case.c, kernel, kernel]);
            g.add_node(Op::Conv2d(a), &[x, w], Role::Forward).unwrap()
        }
        "backward-data" => {
            let dy = input(&mut g, "dy", &[batch, case.k, out_hw, out_hw]);
            let w = input(&mut g, "w", &[case.k, case.c, kernel, kernel]);
            g.add_node(Op::Conv2dGradInput { conv: a, input_hw: [case.hw, case.hw] }, &[dy, w], Role::Backward).unwrap()
        }
        _ => {
            let x = input(&mut g, "x", &[batch, case.c, case.hw, case.hw]);
            let dy = input(&mut g, "dy", &[batch, case.k, out_hw, out_hw]);
            g.add_node(Op::Conv2dGradWeight { conv: a, kernel_hw: [kernel, kernel] }, &[x, dy], Role::Backward).unwrap()
        }
    };
    (g, out)
}

/// The header of a table of [`conv_row`]s.
fn print_conv_header() {
    println!("| conv | pass | 1 thread GFLOP/s | % ceiling (interleaved) | 2 threads GFLOP/s | 2T / 1T |");
    println!("|---|---|---|---|---|---|");
}

/// Times `graph` (its output and direct operation count) on 1 and 2 threads and prints its row.
fn conv_row(
    name: &str,
    pass: &str,
    (g, out, flops): (&Graph, NodeId, f64),
    target: &Target,
    calibration: &Calibration,
    winograd: WinogradTiles,
) {
    let t1 = time_graph_with(g, out, 1, target, winograd);
    let t2 = time_graph_with(g, out, 2, target, winograd);
    let fraction = fraction_of_ceiling(g, out, flops, target, calibration, winograd);
    let (g1, g2) = (flops / t1 / 1e9, flops / t2 / 1e9);
    println!("| {name} | {pass} | {g1:.1} | {:.0}% | {g2:.1} | {:.2} |", 100.0 * fraction, t1 / t2);
    if std::env::var_os("BENCH_PROFILE").is_some() {
        print_profile(g, out, target, winograd);
    }
}

fn main() {
    let target = Target::host().expect("host target");
    let lanes = std::env::var("BENCH_LANES").ok().and_then(|l| l.parse().ok()).unwrap_or(target.lanes());
    let target = target.with_lanes(lanes).expect("BENCH_LANES: 4, 8 with AVX2, or 16 with AVX-512F");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!("# skipgrad-jit kernel benchmark\n");
    println!(
        "machine: {cpu}, {} threads available; target: {target}\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    // 1. Ceiling.
    println!("## multiply-add ceiling (JIT-emitted, 12 independent accumulators, 1 thread)\n");
    println!("| form | GFLOP/s |\n|---|---|");
    let mut ceilings = vec![];
    for form in [MulAdd::Fused, MulAdd::Separate] {
        if let Ok(t) = Target::host_with(form) {
            let g = ceiling(&t, 4);
            println!("| {form:?}, f32x4 | {g:.1} |");
            ceilings.push((form, 4, g));
        }
    }
    for (lanes, registers) in [(8, "256-bit"), (16, "512-bit")] {
        if let Ok(t) = target.clone().with_lanes(lanes) {
            let g = ceiling(&t, lanes);
            println!("| {:?}, f32x{lanes} ({registers} registers) | {g:.1} |", target.mul_add());
            ceilings.push((target.mul_add(), lanes, g));
        }
    }
    let peak = ceilings.iter().find(|c| (c.0, c.1) == (target.mul_add(), target.lanes())).map_or(1.0, |c| c.2);
    println!(
        "\nceiling used below: {peak:.1} GFLOP/s per core ({:?}, {} lanes: the host's default form and widest vectors)\n",
        target.mul_add(),
        target.lanes()
    );

    // 2. Copy bandwidth, from DRAM (64 MiB) and at the activation size the memory-bound kernels use.
    let batch = 128;
    let activation = batch * 16 * 32 * 32;
    println!("## copy bandwidth (the JIT's copy kernel; bytes read + written)\n");
    println!("| size | 1 thread GB/s | 2 threads GB/s |\n|---|---|---|");
    let mut copy = [0.0; 3];
    for (label, n) in [("64 MiB", 16usize << 20), ("8 MiB (= f32[128,16,32,32])", activation)] {
        let mut g = Graph::new();
        let x = input(&mut g, "x", &[n]);
        let y = g.add_node(Op::StopGradient, &[x], Role::Forward).unwrap();
        let (c1, c2) = (
            (8 * n) as f64 / time_graph(&g, y, 1, &target) / 1e9,
            (8 * n) as f64 / time_graph(&g, y, 2, &target) / 1e9,
        );
        println!("| {label} | {c1:.1} | {c2:.1} |");
        copy = [0.0, c1, c2]; // the last row (activation size) is the reference below
    }

    // 3. Convolutions of ResNet-20/56 (option A: no 1x1 projections), batch 128.
    let cases = [
        ConvCase { name: "stem 3->16 32x32", c: 3, k: 16, hw: 32, stride: 1 },
        ConvCase { name: "16->16 32x32", c: 16, k: 16, hw: 32, stride: 1 },
        ConvCase { name: "16->32 32x32 s2", c: 16, k: 32, hw: 32, stride: 2 },
        ConvCase { name: "32->32 16x16", c: 32, k: 32, hw: 16, stride: 1 },
        ConvCase { name: "32->64 16x16 s2", c: 32, k: 64, hw: 16, stride: 2 },
        ConvCase { name: "64->64 8x8", c: 64, k: 64, hw: 8, stride: 1 },
    ];
    let calibration = Calibration::new(&target);
    println!("\n## 3x3 convolutions, batch {batch}\n");
    println!("GFLOP/s are medians; \"% ceiling\" is the median of (kernel / ceiling) over runs interleaved with a");
    println!("short calibration run, so it does not move with the clock speed.\n");
    print_conv_header();
    for case in &cases {
        let out_hw = (case.hw + 2 - 3) / case.stride + 1;
        let flops = 2.0 * (batch * case.k * out_hw * out_hw * case.c * 9) as f64;
        // Stride-1 passes run by Winograd (the default where it applies: at least 8 input
        // channels), by F(2x2, 3x3) where the default takes F(4x4, 3x3), and direct, side by side.
        let winograd_applies = |pass: &str| {
            case.stride == 1 && (pass != "backward-data" && case.c >= 8 || pass == "backward-data" && case.k >= 8)
        };
        // As the lowering chooses: F(4x4, 3x3) where it multiplies least, for convolutions with 8
        // or more output channels (the input gradient's are the forward's input channels).
        let f4 = |pass: &str| {
            let outputs = if pass == "backward-data" { case.c } else { case.k };
            (pass == "backward-weight" || outputs >= 8)
                && Winograd::for_output([out_hw, out_hw], WinogradTiles::F4, batch).is_some_and(|w| w.m == 4)
        };
        let passes = ["forward", "backward-data", "backward-weight"].into_iter().flat_map(|pass| {
            if !winograd_applies(pass) {
                return vec![(pass, "", WinogradTiles::F4)];
            }
            let mut algorithms = vec![(pass, " (Winograd)", WinogradTiles::F4)];
            if f4(pass) {
                algorithms =
                    vec![(pass, " (Winograd F4)", WinogradTiles::F4), (pass, " (Winograd F2)", WinogradTiles::F2)];
            }
            algorithms.push((pass, " (direct)", WinogradTiles::Off));
            algorithms
        });
        for (pass, algorithm, winograd) in passes {
            if !selected(&format!("{} {pass}{algorithm}", case.name)) {
                continue;
            }
            let (g, out) = conv_graph(case, 3, batch, pass);
            conv_row(case.name, &format!("{pass}{algorithm}"), (&g, out, flops), &target, &calibration, winograd);
        }
    }

    // 3b. The pointwise (1x1) convolutions of ResNet-50's bottlenecks, batch 16, direct.
    let batch = 16;
    let pointwise = [
        ConvCase { name: "64->256 56x56", c: 64, k: 256, hw: 56, stride: 1 },
        ConvCase { name: "256->64 56x56", c: 256, k: 64, hw: 56, stride: 1 },
        ConvCase { name: "512->128 28x28", c: 512, k: 128, hw: 28, stride: 1 },
        ConvCase { name: "1024->256 14x14", c: 1024, k: 256, hw: 14, stride: 1 },
        ConvCase { name: "256->1024 14x14", c: 256, k: 1024, hw: 14, stride: 1 },
        ConvCase { name: "2048->512 7x7", c: 2048, k: 512, hw: 7, stride: 1 },
        ConvCase { name: "512->2048 7x7", c: 512, k: 2048, hw: 7, stride: 1 },
        ConvCase { name: "512->1024 28x28 s2", c: 512, k: 1024, hw: 28, stride: 2 },
    ];
    println!("\n## 1x1 convolutions of ResNet-50, batch {batch}\n");
    print_conv_header();
    for case in &pointwise {
        for pass in ["forward", "backward-data", "backward-weight"] {
            if !selected(&format!("{} {pass}", case.name)) {
                continue;
            }
            let (g, out) = conv_graph(case, 1, batch, pass);
            let out_hw = (case.hw - 1) / case.stride + 1;
            let flops = 2.0 * (batch * case.k * out_hw * out_hw * case.c) as f64;
            conv_row(case.name, pass, (&g, out, flops), &target, &calibration, WinogradTiles::Off);
        }
    }

    // 3c. ResNet-50's 3x3 convolutions whose outputs are not a multiple of F(4x4, 3x3)'s tile,
    // batch 16: by cropped Winograd tiles (the default: F(4x4) tiles of 16x16 at 14x14, F(2x2)
    // tiles of 8x8 at 7x7; the weight gradient takes exact F(2x2) tiles at 14x14) and direct.
    let cropped = [
        ConvCase { name: "256->256 14x14", c: 256, k: 256, hw: 14, stride: 1 },
        ConvCase { name: "512->512 7x7", c: 512, k: 512, hw: 7, stride: 1 },
    ];
    println!("\n## 3x3 convolutions of ResNet-50 at 14x14 and 7x7, batch {batch}\n");
    print_conv_header();
    for case in &cropped {
        let flops = 2.0 * (batch * case.k * case.hw * case.hw * case.c * 9) as f64;
        for pass in ["forward", "backward-data", "backward-weight"] {
            for (algorithm, winograd) in [(" (Winograd)", WinogradTiles::F4), (" (direct)", WinogradTiles::Off)] {
                let row = format!("{pass}{algorithm}");
                if !selected(&format!("{} {row}", case.name)) {
                    continue;
                }
                let (g, out) = conv_graph(case, 3, batch, pass);
                conv_row(case.name, &row, (&g, out, flops), &target, &calibration, winograd);
            }
        }
    }

    // 4. Memory-bound kernels on a ResNet-20 stage-1 activation.
    let dims = [batch, 16, 32, 32];
    let numel: usize = dims.iter().product();
    println!("\n## memory-bound kernels on f32{dims:?} (GB/s of tensor traffic; % of the same-size copy)\n");
    println!("| kernel | tensors moved | 1 thread | % copy | 2 threads | % copy |\n|---|---|---|---|---|---|");
    type Build = fn(&mut Graph, &[NodeId; 2], &[NodeId; 4]) -> NodeId;
    let kernels: [(&str, usize, Build); 5] = [
        ("relu", 2, |g, x, _| g.add_node(Op::Relu, &[x[0]], Role::Forward).unwrap()),
        ("add", 3, |g, x, _| g.add_node(Op::Add, &[x[0], x[1]], Role::Forward).unwrap()),
        ("relu_grad", 3, |g, x, _| g.add_node(Op::ReluGrad, &[x[0], x[1]], Role::Forward).unwrap()),
        ("batch_norm apply", 2, |g, x, p| {
            g.add_node(Op::BatchNorm { eps: 1e-5, training: false }, &[x[0], p[0], p[1], p[2], p[3]], Role::Forward)
                .unwrap()
        }),
        ("batch_norm_grad_input (training: 2 reductions + map)", 5, |g, x, p| {
            let m = g.add_node(Op::BatchMean, &[x[0]], Role::Forward).unwrap();
            let v = g.add_node(Op::BatchVar, &[x[0]], Role::Forward).unwrap();
            g.add_node(Op::BatchNormGradInput { eps: 1e-5, training: true }, &[x[0], m, v, p[2], x[1]], Role::Backward)
                .unwrap()
        }),
    ];
    for (name, tensors, build) in kernels {
        if !selected(name) {
            continue;
        }
        let mut g = Graph::new();
        let x = [input(&mut g, "x", &dims), input(&mut g, "y", &dims)];
        let p = [0, 1, 2, 3].map(|i| input(&mut g, ["p0", "p1", "p2", "p3"][i], &[16]));
        let out = build(&mut g, &x, &p);
        let bytes = (tensors * numel * 4) as f64;
        let (b1, b2) = (bytes / time_graph(&g, out, 1, &target) / 1e9, bytes / time_graph(&g, out, 2, &target) / 1e9);
        println!(
            "| {name} | {tensors} | {b1:.1} | {:.0}% | {b2:.1} | {:.0}% |",
            100.0 * b1 / copy[1],
            100.0 * b2 / copy[2]
        );
    }
    println!("\n(the batch_norm_grad_input row times batch_mean and batch_var too: they are part of the graph)");
}
