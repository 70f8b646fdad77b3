//! `skipgrad bench`: the compiled training (or inference) step of a model timed on random data:
//! median, min and max step time, images per second, GFLOP/s, compile time and peak memory.

use crate::train::OptimizerName;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use skipgrad_jit::{MulAdd, WinogradTiles};
use skipgrad_nn::{Config, summary};
use skipgrad_train::{Trainer, TrainerOptions};
use std::time::Instant;

/// What a benchmark runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// Forward, loss, backward, SGD and running statistics.
    Train,
    /// The eval-mode forward pass.
    Infer,
}

/// What `bench` is given.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// The model (see `summary`).
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// Images per step.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
    /// Channels x height x width of an image (default: the model's).
    #[arg(long, value_parser = crate::parse_input)]
    input: Option<[usize; 3]>,
    /// Timed steps, after the warm-up ones.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100000))]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Threads the kernels run on (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: Option<u64>,
    /// Train or infer.
    #[arg(long, value_enum, default_value_t = BenchMode::Train)]
    mode: BenchMode,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The optimizer of the training step.
    #[arg(long, value_enum, default_value_t = OptimizerName::Sgd)]
    optimizer: OptimizerName,
    /// Copy every updated state tensor back after each step instead of writing it in place
    /// (what the step did before in-place updates; to measure the difference).
    #[arg(long)]
    copy_state: bool,
    /// Which 3x3 stride-1 convolutions use Winograd tiles (to compare whole processes).
    #[arg(long, value_enum, default_value_t = Winograd::F4)]
    winograd: Winograd,
    /// f32 lanes of the JIT's widest vectors: 4 (128-bit registers), 8 (256-bit, with AVX2) or
    /// 16 (512-bit, with AVX-512F); the default is the CPU's. To compare whole processes.
    #[arg(long)]
    lanes: Option<usize>,
    /// The kernels' multiply-add form; the default is the one the CPU prefers (separate on AMD
    /// cores without AVX-512, fused elsewhere). With `--lanes 8 --mul-add separate` an AMD Zen 4
    /// runs the code an earlier Zen would.
    #[arg(long, value_enum)]
    mul_add: Option<MulAddForm>,
}

/// `--mul-add`: the JIT's [`MulAdd`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MulAddForm {
    /// One fused multiply-add instruction (needs FMA).
    Fused,
    /// A multiply, then an add.
    Separate,
}

impl MulAddForm {
    fn form(self) -> MulAdd {
        match self {
            MulAddForm::Fused => MulAdd::Fused,
            MulAddForm::Separate => MulAdd::Separate,
        }
    }
}

/// `--winograd`: the JIT's [`WinogradTiles`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Winograd {
    /// Every convolution direct.
    Off,
    /// F(2x2, 3x3) only.
    F2,
    /// F(4x4, 3x3) where it multiplies least, with each vector in one image's tile rows.
    F4Rows,
    /// The default: also F(4x4, 3x3) across 4 images' lanes where a tile row is too narrow.
    F4,
}

impl Winograd {
    fn tiles(self) -> WinogradTiles {
        match self {
            Winograd::Off => WinogradTiles::Off,
            Winograd::F2 => WinogradTiles::F2,
            Winograd::F4Rows => WinogradTiles::F4Rows,
            Winograd::F4 => WinogradTiles::F4,
        }
    }
}

/// Runs the benchmark; returns its report.
pub fn bench(args: BenchArgs) -> Result<String, String> {
    let mut config = Config::named(&args.model).map_err(|e| e.to_string())?;
    let input = args.input.unwrap_or_else(|| config.default_input());
    config.in_channels = input[0];
    let batch = args.batch as usize;
    let macs = summary(&config, input).map_err(|e| e.to_string())?.multiply_adds as f64;
    let mut options = TrainerOptions::paper(batch, input, 0);
    options.optimizer = args.optimizer.build(None);
    options.update_in_place = !args.copy_state;
    options.winograd = args.winograd.tiles();
    options.lanes = args.lanes;
    options.mul_add = args.mul_add.map(MulAddForm::form);
    if let Some(t) = args.threads {
        options.threads = t as usize;
    }
    let threads = options.threads;
    let mut trainer = Trainer::new(&config, options).map_err(|e| e.to_string())?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let images: Vec<f32> =
        (0..batch * input.iter().product::<usize>()).map(|_| StandardNormal.sample(&mut rng)).collect();
    let labels: Vec<f32> = (0..batch).map(|i| (i % config.classes) as f32).collect();
    let lr = 0.1;
    let compile_start = Instant::now();
    let run = |trainer: &mut Trainer, i: u64| -> Result<(), String> {
        match args.mode {
            BenchMode::Train => trainer.step(&images, &labels, lr, i).map(|_| ()),
            BenchMode::Infer => trainer.infer(&images).map(|_| ()),
        }
        .map_err(|e| e.to_string())
    };
    match args.mode {
        BenchMode::Train => trainer.prepare().map_err(|e| e.to_string())?,
        BenchMode::Infer => {
            // The first inference compiles the graph: time it apart.
            trainer.infer(&images).map_err(|e| e.to_string())?;
        }
    }
    let compile = compile_start.elapsed().as_secs_f64();
    for i in 0..args.warmup {
        run(&mut trainer, i)?;
    }
    let mut times: Vec<f64> = (0..args.steps)
        .map(|i| {
            let t = Instant::now();
            run(&mut trainer, args.warmup + i).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<Result<_, _>>()?;
    times.sort_by(|a, b| a.total_cmp(b));
    let (median, min, max) = (times[times.len() / 2], times[0], times[times.len() - 1]);
    let passes = if args.mode == BenchMode::Train { 3.0 } else { 1.0 };
    let gflops = passes * 2.0 * macs * batch as f64 / median / 1e9;
    let peak = peak_rss().unwrap_or(0) as f64 / 1e6;
    let [c, h, w] = input;
    let mode = match args.mode {
        BenchMode::Train => "train",
        BenchMode::Infer => "infer",
    };
    Ok(if args.json {
        let value = serde_json::json!({
            "model": config.name(), "mode": mode, "batch": batch, "input": input,
            "threads": threads, "steps": args.steps, "median_s": median, "min_s": min, "max_s": max,
            "images_per_s": batch as f64 / median, "gflops": gflops, "compile_s": compile, "peak_rss_mb": peak,
            "optimizer": args.optimizer.build(None).describe(), "updates_in_place": trainer.updates_in_place().map(|(k, _)| k),
            "winograd": clap::ValueEnum::to_possible_value(&args.winograd).map(|v| v.get_name().to_string()),
            "lanes": args.lanes,
            "mul_add": args.mul_add.and_then(|m| clap::ValueEnum::to_possible_value(&m)).map(|v| v.get_name().to_string()),
        });
        format!("{value}\n")
    } else {
        format!(
            "{} {mode}, batch {batch} of {c}x{h}x{w}, {threads} threads: median {} s (min {}, max {}) over {} steps, {:.0} images/s, {gflops:.1} GFLOP/s; compiled in {compile:.2} s; peak memory {peak:.0} MB\n",
            config.name(),
            significant(median),
            significant(min),
            significant(max),
            args.steps,
            batch as f64 / median
        )
    })
}

/// `seconds` to 4 significant digits (a batch-1 inference step takes milliseconds).
fn significant(seconds: f64) -> String {
    let decimals = (3.0 - seconds.max(1e-9).log10().floor()).clamp(0.0, 9.0) as usize;
    format!("{seconds:.decimals$}")
}

/// The process's peak resident set size in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}
