//! The `skipgrad` command. `skipgrad train` trains a model with the paper's recipe;
//! `skipgrad summary <model>` prints a model's layers with their output
//! shapes, parameters and multiply-adds; `skipgrad responses <model>` the standard deviation of
//! each 3x3 layer's response (the paper's Fig. 7), computed by the JIT.

mod bench;
mod experiment;
mod plot;
mod train;

use clap::{Parser, Subcommand};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use skipgrad_autodiff::Tape;
use skipgrad_ir::DType;
use skipgrad_jit::{CompileOptions, compile};
use skipgrad_nn::{Checkpoint, Config, Mode, ResNet, Scope, Shortcut, response_std, summary};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// skipgrad: residual-network experiments on a from-scratch autodiff and JIT compiler.
#[derive(Parser)]
#[command(name = "skipgrad", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model with the paper's recipe (SGD, momentum 0.9, weight decay 1e-4, lr divided by
    /// 10 at 50% and 75% of the run, pad-crop-flip augmentation), printing the test accuracy after
    /// every epoch.
    Train(train::TrainArgs),
    /// Test loss and accuracy of a model saved by `train`.
    Eval(train::EvalArgs),
    /// Time a model's compiled training (or inference) step on random data.
    Bench(bench::BenchArgs),
    /// Training and test error curves of runs (the paper's Fig. 6), to SVG and PNG.
    Plot(plot::PlotArgs),
    /// The paper's experiments: degradation (plain against residual), shortcuts (A, B, C).
    #[command(subcommand)]
    Experiment(experiment::Experiment),
    /// Per-layer table of a model: name, type, output shape, parameters, multiply-adds; and totals.
    Summary {
        /// The model: resnet20, plain56, resnet1202 (CIFAR, any depth 6n+2), resnet18 ... resnet152,
        /// plain18, plain34 (ImageNet); cifar- or imagenet- picks the family of a depth both allow.
        model: String,
        /// Input channels x height x width (default: 3x32x32 for CIFAR nets, 3x224x224 for ImageNet).
        #[arg(long, value_parser = parse_input)]
        input: Option<[usize; 3]>,
        /// Classes of the classifier (default: 10 for CIFAR nets, 1000 for ImageNet).
        #[arg(long)]
        classes: Option<usize>,
        /// Shortcut option of a residual net where the shape changes: A, B or C.
        #[arg(long, value_parser = parse_shortcut)]
        shortcut: Option<Shortcut>,
    },
    /// Standard deviation of each 3x3 layer's response (after batch norm, before the addition and
    /// ReLU; the paper's Fig. 7) over a batch.
    Responses {
        /// The model, initialised from --seed (see `summary`); omit it with --checkpoint.
        #[arg(required_unless_present = "checkpoint")]
        model: Option<String>,
        /// A saved model (safetensors) to measure instead.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Images in the batch: standard-normal values (what per-pixel-normalised data looks like
        /// to the first layer), drawn from --seed.
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
        batch: u64,
        /// Input channels x height x width (default: the model's).
        #[arg(long, value_parser = parse_input)]
        input: Option<[usize; 3]>,
        /// Seed of the weights (without --checkpoint) and of the images.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Threads the JIT runs on (default: all cores).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
        threads: Option<u64>,
        /// Batch norm normalises with its running statistics (eval, as at test time) or with the
        /// batch's (train). An untrained net's running statistics are still 0 and 1, so its eval
        /// responses grow with depth.
        #[arg(long, value_enum, default_value_t = BnMode::Eval)]
        bn_mode: BnMode,
    },
}

/// How batch norm normalises.
#[derive(Clone, Copy, clap::ValueEnum)]
enum BnMode {
    /// With the running statistics.
    Eval,
    /// With the batch's statistics.
    Train,
}

/// `CxHxW` as three positive sizes.
fn parse_input(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = text.split(['x', 'X']).collect();
    let sizes: Vec<usize> = parts.iter().filter_map(|p| p.trim().parse().ok()).filter(|&n| n > 0).collect();
    match sizes[..] {
        [c, h, w] if parts.len() == 3 => Ok([c, h, w]),
        _ => Err(format!("expected CxHxW with three positive sizes, like 3x32x32 or 1x28x28; got {text:?}")),
    }
}

fn parse_shortcut(text: &str) -> Result<Shortcut, String> {
    match text.to_ascii_uppercase().as_str() {
        "A" => Ok(Shortcut::A),
        "B" => Ok(Shortcut::B),
        "C" => Ok(Shortcut::C),
        _ => Err(format!("expected A, B or C; got {text:?}")),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(text) => {
            // A reader that stops early (`| head`) is not an error.
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("skipgrad: writing the output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(message) => {
            eprintln!("skipgrad: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command; returns what it prints.
fn run(cli: Cli) -> Result<String, String> {
    match cli.command {
        Command::Train(args) => train::train(args),
        Command::Eval(args) => train::eval(args),
        Command::Bench(args) => bench::bench(args),
        Command::Plot(args) => plot::plot(args),
        Command::Experiment(e) => experiment::experiment(e),
        Command::Summary { model, input, classes, shortcut } => {
            let mut config = Config::named(&model).map_err(|e| e.to_string())?;
            if let Some([c, _, _]) = input {
                config.in_channels = c;
            }
            config.classes = classes.unwrap_or(config.classes);
            config.shortcut = shortcut.unwrap_or(config.shortcut);
            if config.classes == 0 {
                return Err("--classes must be at least 1".into());
            }
            let input = input.unwrap_or_else(|| config.default_input());
            Ok(summary(&config, input).map_err(|e| e.to_string())?.to_string())
        }
        Command::Responses { model, checkpoint, batch, input, seed, threads, bn_mode } => {
            let mode = match bn_mode {
                BnMode::Eval => Mode::Eval,
                BnMode::Train => Mode::Train,
            };
            responses(model, checkpoint, batch as usize, input, seed, threads.map(|t| t as usize), mode)
        }
    }
}

/// Builds the model (seeded, or from a checkpoint), compiles its forward pass up to the layer
/// responses, runs it on a seeded batch and prints each response's standard deviation.
fn responses(
    model: Option<String>,
    checkpoint: Option<PathBuf>,
    batch: usize,
    input: Option<[usize; 3]>,
    seed: u64,
    threads: Option<usize>,
    mode: Mode,
) -> Result<String, String> {
    let tape = Tape::trace(DType::F32);
    let (scope, net) = match (&checkpoint, &model) {
        (Some(path), _) => Checkpoint::load(path).and_then(|c| c.build(&tape)).map_err(|e| e.to_string())?,
        (None, Some(name)) => {
            let config = Config::named(name).map_err(|e| e.to_string())?;
            let scope = Scope::new(&tape, seed);
            let net = ResNet::new(&scope, &config).map_err(|e| e.to_string())?;
            (scope, net)
        }
        (None, None) => return Err("give a model or --checkpoint".into()),
    };
    let [c, h, w] = input.unwrap_or_else(|| net.config.default_input());
    if c != net.config.in_channels {
        return Err(format!("--input has {c} channels; {} takes {}", net.config.name(), net.config.in_channels));
    }
    let x = tape.input_spec("images", DType::F32, &[batch, c, h, w]).map_err(|e| e.to_string())?;
    let (_, responses) = net.forward_responses(&x, mode).map_err(|e| e.to_string())?;
    let outputs: Vec<_> = responses.iter().map(|(_, v)| v.id()).collect();
    let mut options = CompileOptions::default();
    options.threads = threads.unwrap_or(options.threads);
    let mut step = compile(&tape.graph(), &outputs, &options).map_err(|e| e.to_string())?;
    for entry in scope.entries() {
        let values: Vec<f32> = entry.init.to_f64_vec().into_iter().map(|v| v as f32).collect();
        step.set_input(&entry.name, &values).map_err(|e| e.to_string())?;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(1));
    let images: Vec<f32> = (0..batch * c * h * w).map(|_| StandardNormal.sample(&mut rng)).collect();
    step.set_input("images", &images).map_err(|e| e.to_string())?;
    step.run();
    let source = match &checkpoint {
        Some(path) => path.display().to_string(),
        None => format!("seed {seed}"),
    };
    let name = net.config.name();
    let bn = if mode == Mode::Eval { "running statistics" } else { "batch statistics" };
    let mut out = format!(
        "{name} ({source}): responses of {} 3x3 layers on {batch} images of {c}x{h}x{w}, batch norm with its {bn}\n",
        responses.len()
    );
    let width = responses.iter().map(|(n, _)| n.len()).max().unwrap_or(5).max(5);
    out += &format!("{:<width$}  {:>10}\n", "layer", "std");
    for (k, (name, _)) in responses.iter().enumerate() {
        let values = step.output(k).ok_or("a response was not computed")?;
        out += &format!("{name:<width$}  {:>10.4}\n", response_std(values));
    }
    Ok(out)
}
