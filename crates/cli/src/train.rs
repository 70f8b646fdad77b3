//! `skipgrad train`: the paper's recipe on Fashion-MNIST or CIFAR-10, with a progress bar, JSON
//! lines of metrics and the test accuracy after every epoch, and the trained model saved as a
//! checkpoint.

use indicatif::{ProgressBar, ProgressStyle};
use skipgrad_autodiff::{AdamW, Optimizer, Sgd};
use skipgrad_data::{Loader, LoaderConfig, Position, cifar10, fashion_mnist, in_order};
use skipgrad_ir::Tensor;
use skipgrad_nn::{Checkpoint, Config, Family, INPUT_MEAN};
use skipgrad_train::{Backend, Decay, Schedule, Trainer, TrainerOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where `train` runs its step.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BackendName {
    /// Generated kernels.
    Jit,
    /// The reference interpreter.
    Reference,
}

/// The datasets `train` reads.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DatasetName {
    /// Fashion-MNIST (Debian's dataset-fashion-mnist, or --data).
    FashionMnist,
    /// CIFAR-10's binary version in --data.
    Cifar10,
}

/// Whether a run warms up at a tenth of the learning rate until its training error falls below
/// 80%, as the paper does for ResNet-110.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Warmup {
    /// As the paper: CIFAR nets of 110 layers or more.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// How the learning rate decays over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleName {
    /// The paper's: divided by 10 at 50% and 75% of the run.
    Step,
    /// Cosine annealing from --lr to zero over the run.
    Cosine,
}

impl ScheduleName {
    fn decay(self) -> Decay {
        match self {
            ScheduleName::Step => Decay::Step,
            ScheduleName::Cosine => Decay::Cosine,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ScheduleName::Step => "step",
            ScheduleName::Cosine => "cosine",
        }
    }
}

/// The optimizers `train` offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerName {
    /// The paper's: SGD with momentum 0.9 and weight decay 1e-4.
    Sgd,
    /// AdamW (PyTorch's definition): betas 0.9 and 0.999, eps 1e-8, decoupled weight decay
    /// --weight-decay (default 0.01).
    Adamw,
}

impl OptimizerName {
    /// The optimizer, with `weight_decay` instead of its default when given.
    fn build(self, weight_decay: Option<f64>) -> Arc<dyn Optimizer + Send + Sync> {
        match self {
            OptimizerName::Sgd => {
                let sgd = Sgd::paper();
                Arc::new(Sgd { weight_decay: weight_decay.unwrap_or(sgd.weight_decay), ..sgd })
            }
            OptimizerName::Adamw => {
                let adamw = AdamW::default();
                Arc::new(AdamW { weight_decay: weight_decay.unwrap_or(adamw.weight_decay), ..adamw })
            }
        }
    }
}

/// Everything a training run is given.
#[derive(Clone, Debug, clap::Args)]
pub struct TrainArgs {
    /// The model (see `summary`); its input channels follow the dataset.
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// The dataset.
    #[arg(long, value_enum, default_value_t = DatasetName::FashionMnist)]
    dataset: DatasetName,
    /// The dataset's directory (Fashion-MNIST default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Epochs to train (default 1).
    #[arg(long, conflicts_with = "iterations", value_parser = clap::value_parser!(u64).range(1..))]
    epochs: Option<u64>,
    /// Iterations to train, instead of epochs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
    /// Images per step.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
    /// Base learning rate, divided by 10 at 50% and 75% of the run (AdamW is usually trained
    /// near 0.001).
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// The optimizer: sgd (the paper's, momentum 0.9) or adamw.
    #[arg(long, value_enum, default_value_t = OptimizerName::Sgd)]
    optimizer: OptimizerName,
    /// Weight decay (default: 1e-4 for sgd, the paper's; 0.01 for adamw, PyTorch's).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Seed of the weights, the data order and the augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads the kernels run on (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: Option<u64>,
    /// The run's directory: configuration, metrics (JSON lines), the checkpoint written after
    /// every epoch, and the final model.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint; it ends with the weights an
    /// uninterrupted run would have.
    #[arg(long)]
    resume: bool,
    /// Shortcut option of a residual net where the shape changes: A, B or C (default: the
    /// model's, A for CIFAR nets).
    #[arg(long, value_parser = crate::parse_shortcut)]
    shortcut: Option<skipgrad_nn::Shortcut>,
    /// Where the step runs: the JIT, or the reference interpreter (slow; for debugging a step).
    #[arg(long, value_enum, default_value_t = BackendName::Jit)]
    backend: BackendName,
    /// Hold out this many training images (chosen by --seed; the paper's 5000 of CIFAR-10's
    /// 50,000) and report their error after every epoch.
    #[arg(long)]
    validation: Option<u64>,
    /// Stop after this iteration (writing a checkpoint), as if interrupted; --resume continues.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    until_iteration: Option<u64>,
    /// When the loss stops being finite, replay that step unfused with every intermediate kept
    /// and name the first graph node that produced a NaN or an infinity, with its inputs.
    #[arg(long)]
    debug_nan: bool,
    /// Warm up at --lr / 10 until the training error is below 80%: auto (the paper's choice:
    /// CIFAR nets of 110 layers or more), on, or off.
    #[arg(long, value_enum, default_value_t = Warmup::Auto)]
    warmup: Warmup,
    /// How the learning rate decays: step (the paper's, divided by 10 at 50% and 75% of the run)
    /// or cosine (to zero at the end). The rate is fed to the compiled step each iteration, so
    /// neither recompiles it.
    #[arg(long, value_enum, default_value_t = ScheduleName::Step)]
    schedule: ScheduleName,
}

/// The checkpoint a run writes after every epoch: the model, the optimizer's velocities, the
/// input mean, and where the run is.
const CHECKPOINT: &str = "checkpoint.safetensors";

/// What a finished run measured.
pub struct RunResult {
    /// The model's name.
    pub model: String,
    /// Iterations run.
    pub iterations: u64,
    /// Stopped early by --until-iteration (`iterations` is where; no test accuracy).
    pub stopped: bool,
    /// The run's planned length.
    pub planned: u64,
    /// Test images evaluated.
    pub test_images: usize,
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Mean training error over the last tenth of the run.
    pub train_error: f64,
    /// Seconds the run took.
    pub seconds: f64,
    /// Of those, seconds the step waited for the loader's next batch.
    pub data_wait: f64,
    /// The final model's file.
    pub model_path: PathBuf,
}

/// Runs the training; returns the final summary line.
pub fn train(args: TrainArgs) -> Result<String, String> {
    let r = run(args)?;
    if r.stopped {
        return Ok(format!(
            "{}: stopped after iteration {} of {}; --resume continues\n",
            r.model, r.iterations, r.planned
        ));
    }
    Ok(format!(
        "{}: {} iterations in {:.0} s ({:.1} s waiting for data), test accuracy {:.2}% ({} images), model in {}\n",
        r.model,
        r.iterations,
        r.seconds,
        r.data_wait,
        100.0 * r.test_accuracy,
        r.test_images,
        r.model_path.display()
    ))
}

/// Runs the training; returns what it measured (a run stopped by --until-iteration returns an
/// error-free early summary through `train`).
pub fn run(args: TrainArgs) -> Result<RunResult, String> {
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(format!("--lr must be a positive number, got {}", args.lr));
    }
    if let Some(decay) = args.weight_decay
        && !(decay.is_finite() && decay >= 0.0)
    {
        return Err(format!("--weight-decay must be a number at least 0, got {decay}"));
    }
    let (train, test) = load(args.dataset, args.data.as_deref())?;
    // The paper's held-out split: train on the rest, report the held-out error after each epoch.
    let (train, validation) = match args.validation {
        Some(n) => {
            let (kept, held) = train.split(n as usize, args.seed).map_err(|e| format!("--validation: {e}"))?;
            (kept, Some(held))
        }
        None => (train, None),
    };
    let mut config = Config::named(&args.model).map_err(|e| e.to_string())?;
    config.in_channels = train.shape[0];
    config.shortcut = args.shortcut.unwrap_or(config.shortcut);
    config.classes = train.classes;
    let batch = args.batch as usize;
    let mean = Arc::new(train.mean_image());
    let loader_config = LoaderConfig { batch, seed: args.seed, shuffle: true, augment: true, drop_last: true };
    let train = Arc::new(train);
    let per_epoch = loader_config.batches(train.len());
    if per_epoch == 0 {
        return Err(format!("--batch {batch} is larger than the {} training images", train.len()));
    }
    let iterations = args.iterations.unwrap_or(args.epochs.unwrap_or(1) * per_epoch);
    // The paper warms ResNet-110 and -1202 up at lr 0.01 until the training error is below 80%.
    let warms_up = match args.warmup {
        Warmup::Auto => config.family == Family::Cifar && config.depth >= 110,
        Warmup::On => true,
        Warmup::Off => false,
    };
    let warmup = warms_up.then_some((args.lr / 10.0, 0.8));
    let schedule = Schedule { base: args.lr, warmup, decay: args.schedule.decay(), ..Schedule::paper(iterations) };
    let mut options = TrainerOptions::paper(batch, train.shape, args.seed);
    options.optimizer = args.optimizer.build(args.weight_decay);
    let optimizer = options.optimizer.clone();
    if let Some(t) = args.threads {
        options.threads = t as usize;
    }
    options.backend = match args.backend {
        BackendName::Jit => Backend::Jit,
        BackendName::Reference => Backend::Reference,
    };
    let test_batches = in_order(&test, &mean, batch).map_err(|e| e.to_string())?;
    let validation_batches = validation.map(|v| in_order(&v, &mean, batch)).transpose().map_err(|e| e.to_string())?;
    let mut trainer = Trainer::new(&config, options).map_err(|e| e.to_string())?;
    let out =
        args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-seed{}", config.name(), args.seed)));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create the run directory {}: {e}", out.display()))?;
    remove_stale_temporaries(&out)?;
    // Where the run starts: 0, or the resumed checkpoint's iteration (and whether it had warmed up).
    let mut warmed_up = schedule.warmup.is_none();
    let first = if args.resume {
        let path = out.join(CHECKPOINT);
        let saved = Checkpoint::load(&path).map_err(|e| format!("--resume: {e}"))?;
        let expect = |key: &str, want: String| match saved.metadata.get(key) {
            Some(v) if *v == want => Ok(()),
            other => Err(format!("--resume: {} was run with {key} {other:?}, this run has {want:?}", path.display())),
        };
        expect("run.seed", args.seed.to_string())?;
        expect("run.batch", batch.to_string())?;
        expect("run.iterations", iterations.to_string())?;
        // Checkpoints from before --warmup warmed up as `auto` does.
        if saved.metadata.contains_key("run.warmup") || args.warmup != Warmup::Auto {
            expect("run.warmup", warms_up.to_string())?;
        }
        // Checkpoints from before --schedule used the step schedule, and before --optimizer SGD.
        if saved.metadata.contains_key("run.schedule") || args.schedule != ScheduleName::Step {
            expect("run.schedule", args.schedule.name().to_string())?;
        }
        if saved.metadata.contains_key("run.optimizer") || args.optimizer != OptimizerName::Sgd {
            expect("run.optimizer", optimizer.describe())?;
        }
        if saved.config.as_ref() != Some(&config) {
            let holds = saved.config.as_ref().map_or("a model the zoo does not describe".into(), |c| c.to_string());
            return Err(format!("--resume: {} holds {holds}, this run trains {config}", path.display()));
        }
        trainer.restore(&saved.tensors).map_err(|e| format!("--resume: {}: {e}", path.display()))?;
        warmed_up = saved.metadata.get("run.warmed_up").is_some_and(|v| v == "true");
        let done = saved.metadata.get("run.iteration").and_then(|v| v.parse::<u64>().ok());
        done.ok_or_else(|| format!("--resume: {} has no run.iteration", path.display()))?
    } else {
        0
    };
    let at = Position { epoch: first / per_epoch, batch: first % per_epoch };
    let mut loader = Loader::new(train.clone(), mean.clone(), loader_config, at).map_err(|e| e.to_string())?;
    let (mut metrics, mut train_errors) = Metrics::open(&out.join("metrics.jsonl"), first)?;
    let run_config = serde_json::json!({
        "model": config.name(), "dataset": format!("{:?}", args.dataset), "batch": batch, "iterations": iterations,
        "iterations_per_epoch": per_epoch, "lr": args.lr, "schedule": args.schedule.name(),
        "milestones": schedule.milestones, "optimizer": optimizer.name(),
        "optimizer_settings": optimizer.settings().into_iter().collect::<BTreeMap<_, _>>(),
        "seed": args.seed, "threads": trainer_threads(&args),
        "warmup": warmup.map(|(lr, below)| serde_json::json!({"lr": lr, "until_train_error_below": below})),
        "augmentation": "pad 4, random crop, random horizontal flip", "input": train.shape,
    });
    write_atomically(&out.join("config.json"), format!("{run_config:#}\n").as_bytes())?;

    let bar = ProgressBar::new(iterations);
    bar.set_position(first);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .map_err(|e| e.to_string())?,
    );
    let start = Instant::now();
    // Time the step spends waiting for the loader's background thread (the loader should keep up).
    let mut data_wait = 0.0;
    let mut last_eval = None;
    let stop = args.until_iteration.unwrap_or(iterations).min(iterations);
    // The iteration the checkpoint on disk holds (a failed write leaves it there).
    let mut saved_at = (first > 0).then_some(first);
    let save = |trainer: &mut Trainer, done: u64, warmed_up: bool, saved_at: &mut Option<u64>| -> Result<(), String> {
        let mut c = trainer.checkpoint();
        c.tensors = trainer.training_state();
        c.tensors.insert(INPUT_MEAN.into(), Tensor::f32(train.shape, mean.to_vec()).map_err(|e| e.to_string())?);
        c.metadata.insert("skipgrad.pixel_scale".into(), "1/255".into());
        c.metadata.insert("run.warmed_up".into(), warmed_up.to_string());
        c.metadata.insert("run.warmup".into(), warms_up.to_string());
        c.metadata.insert("run.schedule".into(), args.schedule.name().to_string());
        c.metadata.insert("run.optimizer".into(), optimizer.describe());
        for (key, value) in [
            ("run.iteration", done),
            ("run.seed", args.seed),
            ("run.batch", batch as u64),
            ("run.iterations", iterations),
        ] {
            c.metadata.insert(key.into(), value.to_string());
        }
        let path = out.join(CHECKPOINT);
        c.save(&path).map_err(|e| {
            let kept = match saved_at {
                Some(at) => format!("{} still holds iteration {at}; --resume continues from it", path.display()),
                None => "no checkpoint was written before".into(),
            };
            format!("cannot write the checkpoint of iteration {done}: {e}; the run stops ({kept})")
        })?;
        *saved_at = Some(done);
        Ok(())
    };
    for i in first..stop {
        let waiting = Instant::now();
        let b = loader.next_batch();
        data_wait += waiting.elapsed().as_secs_f64();
        let lr = schedule.lr(i, warmed_up);
        let stats = trainer.step(&b.images, &b.labels, lr, i).map_err(|e| match e {
            skipgrad_train::Error::NonFinite { .. } => {
                let last = out.join(CHECKPOINT);
                let good = if last.exists() {
                    format!("the last good checkpoint is {}", last.display())
                } else {
                    "no checkpoint was written yet".into()
                };
                let mut message = format!("{e}: the run stops; {good}");
                if args.debug_nan {
                    message += &match trainer.first_non_finite(&b.images, &b.labels, lr, i) {
                        Ok(Some(found)) => format!("\n{found}"),
                        Ok(None) => {
                            "\nreplayed unfused, the step's values are all finite: the fused step differs from \
                                     the unfused one (please report it with this run's config.json)"
                                .into()
                        }
                        Err(e) => format!("\n--debug-nan could not replay the step: {e}"),
                    };
                } else {
                    message += " (--debug-nan names the first graph node that produced a non-finite value)";
                }
                message
            }
            other => other.to_string(),
        })?;
        warmed_up = warmed_up || schedule.warms_up(stats.error as f64);
        train_errors.push(stats.error as f64);
        let seconds = start.elapsed().as_secs_f64();
        metrics.line(serde_json::json!({"iteration": i + 1, "epoch": b.position.epoch, "loss": stats.loss, "train_error": stats.error, "lr": lr, "seconds": seconds, "data_wait_seconds": data_wait}))?;
        let images_per_second = (i + 1 - first) as f64 * batch as f64 / seconds;
        bar.set_message(format!(
            "loss {:.3} error {:.1}% {images_per_second:.0} img/s",
            stats.loss,
            100.0 * stats.error
        ));
        bar.inc(1);
        let epoch_done = (i + 1) % per_epoch == 0 || i + 1 == iterations;
        if epoch_done {
            let eval = trainer.evaluate(&test_batches).map_err(|e| e.to_string())?;
            let epoch = i / per_epoch + 1;
            let mut line = serde_json::json!({"epoch": epoch, "iteration": i + 1, "test_loss": eval.loss, "test_accuracy": eval.accuracy, "seconds": start.elapsed().as_secs_f64()});
            if let Some(batches) = &validation_batches {
                let held = trainer.evaluate(batches).map_err(|e| e.to_string())?;
                line["validation_loss"] = held.loss.into();
                line["validation_accuracy"] = held.accuracy.into();
            }
            metrics.line(line)?;
            let line =
                format!("epoch {epoch}: test accuracy {:.2}%, test loss {:.4}", 100.0 * eval.accuracy, eval.loss);
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            last_eval = Some(eval);
            save(&mut trainer, i + 1, warmed_up, &mut saved_at)?;
        }
    }
    bar.finish_and_clear();
    if stop < iterations {
        save(&mut trainer, stop, warmed_up, &mut saved_at)?;
        let (model, seconds) = (config.name(), start.elapsed().as_secs_f64());
        let (test_accuracy, train_error) = (f64::NAN, f64::NAN);
        return Ok(RunResult {
            model,
            iterations: stop,
            stopped: true,
            planned: iterations,
            test_images: 0,
            test_accuracy,
            train_error,
            seconds,
            data_wait,
            model_path: out.join(CHECKPOINT),
        });
    }
    let mut checkpoint = trainer.checkpoint();
    checkpoint.tensors.insert(INPUT_MEAN.into(), Tensor::f32(train.shape, mean.to_vec()).map_err(|e| e.to_string())?);
    checkpoint.metadata.insert("skipgrad.pixel_scale".into(), "1/255".into());
    let model_path = out.join("model.safetensors");
    checkpoint.save(&model_path).map_err(|e| e.to_string())?;
    let eval = match last_eval {
        Some(e) => e,
        None => trainer.evaluate(&test_batches).map_err(|e| e.to_string())?,
    };
    let tail = (train_errors.len() / 10).max(1);
    let recent = &train_errors[train_errors.len().saturating_sub(tail)..];
    Ok(RunResult {
        model: config.name(),
        iterations,
        stopped: false,
        planned: iterations,
        test_images: eval.images,
        test_accuracy: eval.accuracy,
        train_error: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
        data_wait,
        model_path,
    })
}

fn trainer_threads(args: &TrainArgs) -> usize {
    args.threads
        .map(|t| t as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// A JSON-lines file of metrics, appended line by line.
struct Metrics {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl Metrics {
    /// The metrics file of a run starting at iteration `first`, and the training errors of the
    /// iterations before it: lines of later iterations (from an interrupted run) are dropped.
    fn open(path: &Path, first: u64) -> Result<(Metrics, Vec<f64>), String> {
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let kept: String = match std::fs::read_to_string(path) {
            Ok(text) if first > 0 => text
                .lines()
                .filter(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                    v["iteration"].as_u64().is_some_and(|i| i <= first)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            _ => String::new(),
        };
        let errors =
            kept.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["train_error"].as_f64());
        let errors = errors.collect();
        write_atomically(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(fail)?;
        Ok((Metrics { path: path.to_path_buf(), file: std::io::BufWriter::new(file) }, errors))
    }

    fn line(&mut self, value: serde_json::Value) -> Result<(), String> {
        writeln!(self.file, "{value}")
            .and_then(|_| self.file.flush())
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

/// Writes `bytes` to `path` atomically ([`skipgrad_nn::write_atomically`]), naming the file in
/// an error.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    skipgrad_nn::write_atomically(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The files a run writes; each goes through a temporary `.NAME.tmp-PID` first.
const RUN_FILES: [&str; 4] = [CHECKPOINT, "model.safetensors", "metrics.jsonl", "config.json"];

/// Removes the temporary files a killed run left in `out` (a kill during a write leaves one; the
/// file it was replacing is intact).
fn remove_stale_temporaries(out: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(out).map_err(|e| format!("{}: {e}", out.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if RUN_FILES.iter().any(|f| name.starts_with(&format!(".{f}.tmp-"))) {
            std::fs::remove_file(entry.path()).map_err(|e| format!("{}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The training and test splits of `dataset` (from `data`, or its default place).
fn load(dataset: DatasetName, data: Option<&Path>) -> Result<(skipgrad_data::Dataset, skipgrad_data::Dataset), String> {
    match dataset {
        DatasetName::FashionMnist => fashion_mnist(data),
        DatasetName::Cifar10 => match data {
            Some(dir) => cifar10(dir),
            None => Err(skipgrad_data::Error::Missing {
                path: "--data".into(),
                hint: "CIFAR-10 cannot be downloaded here: give --data DIR with data_batch_1.bin .. test_batch.bin"
                    .into(),
            }),
        },
    }
    .map_err(|e| e.to_string())
}

/// What `eval` is given.
#[derive(Clone, Debug, clap::Args)]
pub struct EvalArgs {
    /// A model saved by `train` (its checkpoint holds the input mean it was trained with).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The dataset whose test split is evaluated.
    #[arg(long, value_enum, default_value_t = DatasetName::FashionMnist)]
    dataset: DatasetName,
    /// The dataset's directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Images per batch.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
    /// Threads the kernels run on (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: Option<u64>,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// Test loss and accuracy of a saved model.
pub fn eval(args: EvalArgs) -> Result<String, String> {
    let checkpoint = Checkpoint::load(&args.checkpoint).map_err(|e| e.to_string())?;
    let (_, test) = load(args.dataset, args.data.as_deref())?;
    let path = args.checkpoint.display();
    let mean = checkpoint.tensors.get(INPUT_MEAN).ok_or_else(|| {
        format!("{path}: no {INPUT_MEAN} tensor: it was not saved by `skipgrad train`, which records the input preprocessing")
    })?;
    if mean.shape().dims() != test.shape {
        return Err(format!(
            "{path}: the model takes {:?} images, the dataset has {:?}",
            mean.shape().dims(),
            test.shape
        ));
    }
    let mean: Vec<f32> = mean.to_f64_vec().into_iter().map(|v| v as f32).collect();
    let batch = args.batch as usize;
    let mut options = TrainerOptions::paper(batch, test.shape, 0);
    if let Some(t) = args.threads {
        options.threads = t as usize;
    }
    let mut trainer = Trainer::from_checkpoint(&checkpoint, options).map_err(|e| format!("{path}: {e}"))?;
    let batches = in_order(&test, &mean, batch).map_err(|e| e.to_string())?;
    let eval = trainer.evaluate(&batches).map_err(|e| e.to_string())?;
    let model = trainer.model().name();
    Ok(if args.json {
        let value = serde_json::json!({
            "checkpoint": path.to_string(), "model": model, "dataset": format!("{:?}", args.dataset),
            "images": eval.images, "loss": eval.loss, "accuracy": eval.accuracy,
        });
        format!("{value}\n")
    } else {
        let accuracy = 100.0 * eval.accuracy;
        format!(
            "{model} on the {:?} test split: accuracy {accuracy:.2}%, loss {:.4} ({} images)\n",
            args.dataset, eval.loss, eval.images
        )
    })
}

impl TrainArgs {
    /// The arguments of one run of an experiment: `model` with `recipe`'s settings, into `out`.
    pub fn for_run(recipe: &Recipe, model: &str, shortcut: Option<skipgrad_nn::Shortcut>, out: PathBuf) -> TrainArgs {
        TrainArgs {
            model: model.to_string(),
            dataset: recipe.dataset,
            data: recipe.data.clone(),
            epochs: recipe.epochs,
            iterations: recipe.iterations,
            batch: recipe.batch,
            lr: recipe.lr,
            optimizer: OptimizerName::Sgd,
            weight_decay: None,
            seed: recipe.seed,
            threads: recipe.threads,
            resume: recipe.resume && out.join(CHECKPOINT).exists(),
            out: Some(out),
            shortcut,
            backend: BackendName::Jit,
            validation: None,
            until_iteration: None,
            // A diverging run (a deep plain net) says where it first went non-finite.
            debug_nan: true,
            warmup: recipe.warmup,
            schedule: ScheduleName::Step,
        }
    }
}

/// The recipe every run of an experiment shares.
#[derive(Clone, Debug, clap::Args)]
pub struct Recipe {
    /// The dataset.
    #[arg(long, value_enum, default_value_t = DatasetName::FashionMnist)]
    pub dataset: DatasetName,
    /// The dataset's directory.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Epochs per run (default 1).
    #[arg(long, conflicts_with = "iterations", value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Iterations per run, instead of epochs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: Option<u64>,
    /// Images per step.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Seed of every run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads the kernels run on (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: Option<u64>,
    /// Keep the runs already finished in --out and continue interrupted ones from their last
    /// checkpoint (each ends with the weights an uninterrupted run would have).
    #[arg(long)]
    pub resume: bool,
    /// Warm up at --lr / 10 until the training error is below 80%: auto (CIFAR nets of 110
    /// layers or more, as the paper), on (every net, plain and residual alike), or off.
    #[arg(long, value_enum, default_value_t = Warmup::Auto)]
    pub warmup: Warmup,
}
