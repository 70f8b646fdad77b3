//! `skipgrad train` and `skipgrad eval`: the command-line arguments of a run of the paper's
//! recipe on Fashion-MNIST or CIFAR-10, handed to the training driver
//! ([`skipgrad_train::run_distributed`]), which writes the metrics, checkpoints and the final
//! model; `train --distributed` runs it on every rank `mpirun` starts (cargo feature `mpi`).

use skipgrad_autodiff::{AdamW, Optimizer, Sgd};
use skipgrad_data::{cifar10, fashion_mnist, in_order};
use skipgrad_dist::{Collective, Single};
use skipgrad_nn::{Checkpoint, Config, Family, INPUT_MEAN};
use skipgrad_train::{Backend, Decay, Length, RunData, RunOptions, RunResult, Schedule, Trainer, TrainerOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    pub fn build(self, weight_decay: Option<f64>) -> Arc<dyn Optimizer + Send + Sync> {
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
    /// A linear warm-up: iteration i < N runs at (i + 1) / N of the scheduled rate (0: none).
    #[arg(long, default_value_t = 0)]
    ramp: u64,
    /// Data-parallel training on every rank `mpirun -np N` starts (needs a build with
    /// `--features mpi`): --batch is the batch over all ranks and must divide by N; each rank
    /// trains on its slice, the ranks sum their gradients every step, rank 0 writes the files.
    /// --threads defaults to this machine's cores divided among its ranks.
    #[arg(long)]
    distributed: bool,
}

/// Runs the training; returns the final summary line.
pub fn train(args: TrainArgs) -> Result<String, String> {
    if args.distributed {
        return distributed(args);
    }
    summarize(&run(args, &Single)?)
}

/// Runs the training on the ranks `mpirun` started: rank 0 returns the summary line, the
/// others an empty one. An error on any rank is printed there and stops every rank.
#[cfg(feature = "mpi")]
fn distributed(args: TrainArgs) -> Result<String, String> {
    let world = skipgrad_dist::Mpi::initialize().ok_or("--distributed: MPI was already initialized")?;
    let result = run(args, &world).and_then(|r| summarize(&r));
    match result {
        Ok(line) if world.rank() == 0 => Ok(line),
        Ok(_) => Ok(String::new()),
        Err(message) => {
            // One write: mpirun prints its abort notice between the pieces of a formatted line.
            let line = format!("skipgrad ({}): {message}; stopping every rank\n", world.describe());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            world.abort(1)
        }
    }
}

/// Without MPI, `--distributed` says how to get it.
#[cfg(not(feature = "mpi"))]
fn distributed(_: TrainArgs) -> Result<String, String> {
    Err("--distributed needs MPI, which this build left out: install Open MPI (or MPICH) and libclang, \
         rebuild with `cargo build --release -p skipgrad-cli --features mpi`, and start the run with \
         `mpirun -np N target/release/skipgrad train --distributed ...` (README: Training on several processes)"
        .into())
}

/// The final line of a run.
fn summarize(r: &RunResult) -> Result<String, String> {
    let Some(test) = r.test.filter(|_| !r.stopped) else {
        return Ok(format!(
            "{}: stopped after iteration {} of {}; --resume continues\n",
            r.model, r.iterations, r.planned
        ));
    };
    let ranks = match r.ranks {
        1 => String::new(),
        n => format!(" on {n} ranks ({:.1} s summing gradients)", r.communication),
    };
    Ok(format!(
        "{}: {} iterations in {:.0} s{ranks} ({:.1} s waiting for data), test accuracy {:.2}% ({} images), model in {}\n",
        r.model,
        r.iterations,
        r.seconds,
        r.data_wait,
        100.0 * test.accuracy,
        test.images,
        r.saved.display()
    ))
}

/// Runs the training through the driver ([`skipgrad_train::run_distributed`]) on `world`:
/// builds the zoo net, the trainer, the data and the schedule from the arguments.
pub fn run(args: TrainArgs, world: &dyn Collective) -> Result<RunResult, String> {
    let ranks = world.size() as u64;
    if !args.batch.is_multiple_of(ranks) {
        return Err(format!(
            "--batch {} does not divide among {ranks} ranks: give a multiple of {ranks} (it is the batch over all ranks)",
            args.batch
        ));
    }
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
    // The paper warms ResNet-110 and -1202 up at lr 0.01 until the training error is below 80%.
    let warms_up = match args.warmup {
        Warmup::Auto => config.family == Family::Cifar && config.depth >= 110,
        Warmup::On => true,
        Warmup::Off => false,
    };
    let mut options = TrainerOptions::paper((args.batch / ranks) as usize, train.shape, args.seed);
    options.optimizer = args.optimizer.build(args.weight_decay);
    // The ranks on this machine share its cores.
    options.threads = match args.threads {
        Some(t) => t as usize,
        None => (options.threads / world.local_size()).max(1),
    };
    options.backend = match args.backend {
        BackendName::Jit => Backend::Jit,
        BackendName::Reference => Backend::Reference,
    };
    let length = match (args.iterations, args.epochs) {
        (Some(i), _) => Length::Iterations(i),
        (None, e) => Length::Epochs(e.unwrap_or(1)),
    };
    let out =
        args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-seed{}", config.name(), args.seed)));
    let mut run_options = RunOptions::new(out, length);
    run_options.schedule = Schedule {
        base: args.lr,
        warmup: warms_up.then_some((args.lr / 10.0, 0.8)),
        decay: args.schedule.decay(),
        ramp: args.ramp,
        ..Schedule::paper(0)
    };
    run_options.resume = args.resume;
    run_options.until_iteration = args.until_iteration;
    run_options.debug_nan = args.debug_nan;
    run_options.notes.insert("dataset".into(), format!("{:?}", args.dataset).into());
    let data = RunData { train: Arc::new(train), test, validation };
    let mut trainer = Trainer::new(&config, options).map_err(|e| e.to_string())?;
    skipgrad_train::run_distributed(&mut trainer, &data, &run_options, world).map_err(|e| match e {
        // The driver names the setting; the command names its flag.
        skipgrad_train::Error::Resume { .. } => format!("--resume: {e}"),
        e => e.to_string(),
    })
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
            resume: recipe.resume && out.join(skipgrad_train::CHECKPOINT).exists(),
            out: Some(out),
            shortcut,
            backend: BackendName::Jit,
            validation: None,
            until_iteration: None,
            // A diverging run (a deep plain net) says where it first went non-finite.
            debug_nan: true,
            warmup: recipe.warmup,
            schedule: ScheduleName::Step,
            ramp: 0,
            distributed: false,
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
