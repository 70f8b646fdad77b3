//! A whole training run of any model, as `skipgrad train` runs the zoo's nets: the data loader
//! (shuffled, augmented, resumable from any batch), the schedule, JSON lines of metrics, the test
//! (and validation) accuracy after every epoch, a resumable checkpoint after every epoch and when
//! stopped early, a stop with the last good checkpoint named when the loss goes non-finite, and
//! `resume`, which ends with the weights an uninterrupted run has, bit for bit. Every file is
//! written to a temporary name and renamed.
//!
//! [`run_distributed`] runs the same on a world of processes (data parallel, on MPI): every rank
//! draws the same batches and keeps its own slice of each; the ranks sum their gradients (and
//! running statistics, loss and accuracy) in one flat buffer per step and every rank applies the
//! same update, so their states stay equal. Rank 0 alone writes files.

use crate::{Error, Evaluation, Result, Schedule, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use skipgrad_data::{Batch, Dataset, Loader, LoaderConfig, Position, in_order};
use skipgrad_dist::{Collective, Single};
use skipgrad_ir::Tensor;
use skipgrad_nn::{Checkpoint, INPUT_MEAN};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The resumable checkpoint a run writes after every epoch: the model, the optimizer's slots,
/// the input mean, and where the run is.
pub const CHECKPOINT: &str = "checkpoint.safetensors";

/// The trained model a finished run writes: its tensors and the input mean.
pub const MODEL: &str = "model.safetensors";

/// The files a run writes; each goes through a temporary `.NAME.tmp-PID` first.
const RUN_FILES: [&str; 4] = [CHECKPOINT, MODEL, "metrics.jsonl", "config.json"];

/// How long a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// Whole passes over the training set (batches that would be partial are dropped).
    Epochs(u64),
    /// Steps.
    Iterations(u64),
}

/// The data of a run. Images are scaled to [0, 1] and the training set's per-pixel mean is
/// subtracted from every split (the paper's preprocessing).
#[derive(Clone, Debug)]
pub struct RunData {
    /// What the model trains on.
    pub train: Arc<Dataset>,
    /// What it is tested on after every epoch and at the end.
    pub test: Dataset,
    /// A held-out part of the training set, evaluated after every epoch (the paper's 5k of
    /// CIFAR-10's 50k).
    pub validation: Option<Dataset>,
}

impl RunData {
    /// A training and a test split, without validation.
    pub fn new(train: Dataset, test: Dataset) -> RunData {
        RunData { train: Arc::new(train), test, validation: None }
    }
}

/// How a run goes. `RunOptions::new(out, length)` gives the paper's: its step schedule, pad-crop-
/// flip augmentation, no resume, a progress bar on a terminal.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The run's directory: config.json, metrics.jsonl, the checkpoint and the final model.
    pub out: PathBuf,
    /// How long the run is.
    pub length: Length,
    /// The learning rate over the run; its `iterations` are set to the run's.
    pub schedule: Schedule,
    /// Pad 4, random crop, random horizontal flip.
    pub augment: bool,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Stop after this iteration, writing the checkpoint, as if interrupted (`resume`
    /// continues).
    pub until_iteration: Option<u64>,
    /// When the loss goes non-finite, replay the step unfused and name the first node that made
    /// a NaN or an infinity.
    pub debug_nan: bool,
    /// Draw a progress bar (on stderr, when it is a terminal).
    pub progress: bool,
    /// Further entries for config.json (the dataset's name, the command's choices).
    pub notes: BTreeMap<String, serde_json::Value>,
}

impl RunOptions {
    /// The paper's recipe into `out`, for `length`.
    pub fn new(out: impl Into<PathBuf>, length: Length) -> RunOptions {
        RunOptions {
            out: out.into(),
            length,
            schedule: Schedule::paper(0),
            augment: true,
            resume: false,
            until_iteration: None,
            debug_nan: false,
            progress: true,
            notes: BTreeMap::new(),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The model's name.
    pub model: String,
    /// Iterations run (in all, counting those before a resume).
    pub iterations: u64,
    /// Stopped early by `until_iteration` (no final test accuracy: `test` is `None`).
    pub stopped: bool,
    /// The run's planned length in iterations.
    pub planned: u64,
    /// The final test loss and accuracy.
    pub test: Option<Evaluation>,
    /// Mean training error over the last tenth of the run.
    pub train_error: f64,
    /// Seconds this process ran.
    pub seconds: f64,
    /// Of those, seconds the step waited for the loader's next batch.
    pub data_wait: f64,
    /// Of those, seconds spent summing the ranks' gradients (0 in a world of one).
    pub communication: f64,
    /// Processes the run was divided among.
    pub ranks: usize,
    /// The checkpoint (stopped early) or the final model's file.
    pub saved: PathBuf,
}

/// Trains `trainer`'s model on `data` as `options` say. The trainer's batch size, seed and
/// optimizer are the run's; a resumed run must have the same, and the same schedule, length and
/// model (the checkpoint records them), or it is refused with the setting named.
pub fn run(trainer: &mut Trainer, data: &RunData, options: &RunOptions) -> Result<RunResult> {
    run_distributed(trainer, data, options, &Single)
}

/// [`run`] on every rank of `world`, data parallel: the batch is the trainer's batch times the
/// world's size, and each rank trains on its slice. Every rank must be given the same model,
/// trainer options (but threads), data and options, or the run is refused; rank 0's initial
/// state (or the checkpoint it resumes from, which only rank 0 reads) is broadcast to the others;
/// rank 0 alone writes the run's files; a resume refuses a checkpoint of another world size.
/// Batch norm keeps each rank's own batch statistics (as PyTorch's DDP does); the running
/// statistics are averaged over the ranks. An error on one rank returns on that rank only: call
/// [`Collective::abort`] then, or the others wait forever.
pub fn run_distributed(
    trainer: &mut Trainer,
    data: &RunData,
    options: &RunOptions,
    world: &dyn Collective,
) -> Result<RunResult> {
    let (ranks, rank) = (world.size(), world.rank());
    let writes = rank == 0;
    let (local, seed) = (trainer.options().batch, trainer.options().seed);
    let batch = local * ranks;
    if data.train.shape != trainer.options().input {
        return Err(Error::Batch(format!(
            "the model takes {:?} images, the training set has {:?}",
            trainer.options().input,
            data.train.shape
        )));
    }
    let loader_config = LoaderConfig { batch, seed, shuffle: true, augment: options.augment, drop_last: true };
    let per_epoch = loader_config.batches(data.train.len());
    if per_epoch == 0 {
        return Err(Error::Batch(format!(
            "the batch of {batch} is larger than the {} training images",
            data.train.len()
        )));
    }
    let iterations = match options.length {
        Length::Epochs(e) => e * per_epoch,
        Length::Iterations(i) => i,
    };
    let schedule = Schedule { iterations, ..options.schedule.clone() };
    let mean = Arc::new(data.train.mean_image());
    // Each rank evaluates its share of the batches, of the trainer's batch size.
    let test_batches = shard(in_order(&data.test, &mean, local)?, world);
    let validation_batches = data.validation.as_ref().map(|v| in_order(v, &mean, local)).transpose()?;
    let validation_batches = validation_batches.map(|b| shard(b, world));
    let out = &options.out;
    if writes {
        std::fs::create_dir_all(out).map_err(|e| io_error(out, "cannot create the run directory", e))?;
        remove_stale_temporaries(out)?;
    }

    let settings = settings(trainer, &schedule, ranks);
    agree(world, &settings, data, options)?;
    let (first, warmed_up) = if options.resume && writes {
        resume(trainer, &out.join(CHECKPOINT), &settings)?
    } else {
        (0, schedule.warmup.is_none())
    };
    let (first, mut warmed_up) = broadcast_state(world, trainer, first, warmed_up)?;
    let at = Position { epoch: first / per_epoch, batch: first % per_epoch };
    let mut loader = Loader::new(data.train.clone(), mean.clone(), loader_config, at)?;
    let (mut metrics, mut train_errors) = match writes {
        true => Metrics::open(&out.join("metrics.jsonl"), first)?,
        false => (Metrics::none(), vec![]),
    };
    let mut config = json!({
        "model": trainer.model().name(), "batch": batch, "ranks": ranks, "batch_per_rank": local,
        "iterations": iterations,
        "iterations_per_epoch": per_epoch, "lr": schedule.base, "schedule": schedule.decay.name(),
        "milestones": schedule.milestones, "ramp": schedule.ramp,
        "warmup": schedule.warmup.map(|(lr, below)| json!({"lr": lr, "until_train_error_below": below})),
        "optimizer": trainer.optimizer().name(),
        "optimizer_settings": trainer.optimizer().settings().into_iter().collect::<BTreeMap<_, _>>(),
        "seed": seed, "threads": trainer.options().threads, "input": data.train.shape,
        "augmentation": if options.augment { "pad 4, random crop, random horizontal flip" } else { "none" },
    });
    for (key, value) in &options.notes {
        config[key] = value.clone();
    }
    if writes {
        write_atomically(&out.join("config.json"), format!("{config:#}\n").as_bytes())?;
    }

    // A bar on stderr when it is a terminal; epoch lines go to stderr either way (rank 0's).
    let bar = if options.progress && writes { ProgressBar::new(iterations) } else { ProgressBar::hidden() };
    bar.set_position(first);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]");
    bar.set_style(style.expect("a valid template"));
    let say = |line: String| match (writes, bar.is_hidden()) {
        (false, _) => {}
        (true, true) => eprintln!("{line}"),
        (true, false) => bar.println(line),
    };
    let start = Instant::now();
    // Time the step spends waiting for the loader's background thread (the loader should keep up).
    let mut data_wait = 0.0;
    // Time the ranks spend summing their gradients, and the buffer they sum.
    let (mut communication, mut summed) = (0.0, vec![]);
    let mut last_eval = None;
    let stop = options.until_iteration.unwrap_or(iterations).min(iterations);
    let saver = Saver { out, mean: &mean, shape: data.train.shape, settings: &settings };
    // The iteration the checkpoint on disk holds (a failed write leaves it there).
    let mut saved_at = (first > 0).then_some(first);
    for i in first..stop {
        let waiting = Instant::now();
        let b = loader.next_batch();
        data_wait += waiting.elapsed().as_secs_f64();
        let lr = schedule.lr(i, warmed_up);
        // This rank's slice of the batch (all of it in a world of one).
        let image = b.images.len() / batch;
        let images = &b.images[rank * local * image..(rank + 1) * local * image];
        let labels = &b.labels[rank * local..(rank + 1) * local];
        let stepped = match ranks {
            1 => trainer.step(images, labels, lr, i),
            _ => {
                trainer.gradients(images, labels, &mut summed)?;
                let summing = Instant::now();
                world.allreduce_sum_f32(&mut summed);
                communication += summing.elapsed().as_secs_f64();
                trainer.apply_gradients(&summed, ranks, lr, i)
            }
        };
        let stats = match stepped {
            Ok(stats) => stats,
            Err(e @ Error::NonFinite { .. }) => {
                return Err(diverged(trainer, e, (images, labels), lr, i, saved_at, options));
            }
            Err(e) => return Err(e),
        };
        warmed_up = warmed_up || schedule.warms_up(stats.error as f64);
        train_errors.push(stats.error as f64);
        let seconds = start.elapsed().as_secs_f64();
        let mut line = json!({"iteration": i + 1, "epoch": b.position.epoch, "loss": stats.loss, "train_error": stats.error, "lr": lr, "seconds": seconds, "data_wait_seconds": data_wait});
        if ranks > 1 {
            line["communication_seconds"] = communication.into();
        }
        metrics.line(line)?;
        let images_per_second = (i + 1 - first) as f64 * batch as f64 / seconds;
        bar.set_message(format!(
            "loss {:.3} error {:.1}% {images_per_second:.0} img/s",
            stats.loss,
            100.0 * stats.error
        ));
        bar.inc(1);
        if (i + 1) % per_epoch == 0 || i + 1 == iterations {
            let eval = evaluate(trainer, &test_batches, world)?;
            let epoch = i / per_epoch + 1;
            let mut line = json!({"epoch": epoch, "iteration": i + 1, "test_loss": eval.loss, "test_accuracy": eval.accuracy, "seconds": start.elapsed().as_secs_f64()});
            if let Some(batches) = &validation_batches {
                let held = evaluate(trainer, batches, world)?;
                line["validation_loss"] = held.loss.into();
                line["validation_accuracy"] = held.accuracy.into();
            }
            metrics.line(line)?;
            say(format!("epoch {epoch}: test accuracy {:.2}%, test loss {:.4}", 100.0 * eval.accuracy, eval.loss));
            last_eval = Some(eval);
            if writes {
                saver.checkpoint(trainer, i + 1, warmed_up, &mut saved_at)?;
            }
        }
    }
    bar.finish_and_clear();
    let model = trainer.model().name();
    let result = |test, saved| RunResult {
        model: model.clone(),
        iterations: stop,
        stopped: stop < iterations,
        planned: iterations,
        test,
        train_error: mean_of_last_tenth(&train_errors),
        seconds: start.elapsed().as_secs_f64(),
        data_wait,
        communication,
        ranks,
        saved,
    };
    if stop < iterations {
        if writes {
            saver.checkpoint(trainer, stop, warmed_up, &mut saved_at)?;
        }
        return Ok(result(None, out.join(CHECKPOINT)));
    }
    let model_path = out.join(MODEL);
    if writes {
        saver.model(trainer, &model_path)?;
    }
    let eval = match last_eval {
        Some(e) => e,
        None => evaluate(trainer, &test_batches, world)?,
    };
    Ok(result(Some(eval), model_path))
}

/// The settings a checkpoint records as `run.<key>` and a resume must match: the model, the
/// seed, batch (over all ranks), length, warm-up, schedule, optimizer and world size.
fn settings(trainer: &Trainer, schedule: &Schedule, ranks: usize) -> Vec<(&'static str, String)> {
    vec![
        ("run.model", trainer.model().name()),
        ("run.seed", trainer.options().seed.to_string()),
        ("run.batch", (trainer.options().batch * ranks).to_string()),
        ("run.ranks", ranks.to_string()),
        ("run.iterations", schedule.iterations.to_string()),
        ("run.warmup", schedule.warmup.is_some().to_string()),
        ("run.schedule", schedule.decay.name().to_string()),
        ("run.ramp", schedule.ramp.to_string()),
        ("run.optimizer", trainer.optimizer().describe()),
    ]
}

/// What a checkpoint written before a setting was recorded ran with: the setting's only value
/// then (warm-up was chosen by the net's depth then, so it is not checked).
fn legacy_setting(key: &str) -> Option<String> {
    match key {
        "run.schedule" => Some("step".into()),
        "run.ramp" => Some("0".into()),
        "run.ranks" => Some("1".into()),
        "run.optimizer" => Some(skipgrad_autodiff::Optimizer::describe(&skipgrad_autodiff::Sgd::paper())),
        _ => None,
    }
}

/// Restores `trainer` from the checkpoint at `path` after checking that it was written by a run
/// with these `settings`; returns the iteration it holds and whether its warm-up had ended.
fn resume(trainer: &mut Trainer, path: &Path, settings: &[(&'static str, String)]) -> Result<(u64, bool)> {
    let refuse = |message: String| Error::Resume { path: path.to_path_buf(), message };
    let saved = Checkpoint::load(path).map_err(|e| refuse(e.to_string()))?;
    if let Some(config) = trainer.model().config()
        && saved.config.as_ref() != Some(config)
    {
        let holds = saved.config.as_ref().map_or("a model the zoo does not describe".into(), |c| c.to_string());
        return Err(refuse(format!("it holds {holds}, this run trains {config}")));
    }
    for (key, want) in settings {
        let recorded = saved.metadata.get(*key).cloned().or_else(|| legacy_setting(key));
        // Zoo checkpoints from before run.model record the net in their configuration, checked above.
        let unrecorded = recorded.is_none() && (*key == "run.warmup" || *key == "run.model");
        if !unrecorded && recorded.as_ref() != Some(want) {
            return Err(refuse(format!("it was run with {key} {recorded:?}, this run has {want:?}")));
        }
    }
    trainer.restore(&saved.tensors).map_err(|e| refuse(e.to_string()))?;
    let warmed_up = saved.metadata.get("run.warmed_up").is_some_and(|v| v == "true");
    let done = saved.metadata.get("run.iteration").and_then(|v| v.parse::<u64>().ok());
    Ok((done.ok_or_else(|| refuse("it has no run.iteration".into()))?, warmed_up))
}

/// Checks that every rank of `world` was given what rank 0 was: the settings, the learning
/// rate's schedule, the augmentation and the data's sizes (rank 0 sends its own); a rank that
/// differs fails, naming what differs.
fn agree(world: &dyn Collective, settings: &[(&str, String)], data: &RunData, options: &RunOptions) -> Result<()> {
    if world.size() == 1 {
        return Ok(());
    }
    let s = &options.schedule;
    let count = |d: Option<&Dataset>| d.map_or("none".into(), |d| format!("{} of {:?}", d.len(), d.shape));
    let mine: Vec<String> = settings
        .iter()
        .map(|(key, value)| format!("{} {value}", key.trim_start_matches("run.")))
        .chain([
            format!("lr {}", s.base),
            format!("milestones {:?}", s.milestones),
            format!("augmentation {}", options.augment),
            format!("training images {}", count(Some(&data.train))),
            format!("test images {}", count(Some(&data.test))),
            format!("validation images {}", count(data.validation.as_ref())),
        ])
        .collect();
    let mut first = mine.join("\n").into_bytes();
    world.broadcast_bytes(&mut first, 0);
    let first = String::from_utf8_lossy(&first);
    let differ: Vec<String> =
        mine.iter().zip(first.lines()).filter(|(a, b)| a != b).map(|(a, b)| format!("{a} (rank 0: {b})")).collect();
    if !differ.is_empty() {
        return Err(Error::Distributed(format!(
            "this rank was started with other settings or data than rank 0 (every rank must be given the same \
             command, but --threads): {}",
            differ.join(", ")
        )));
    }
    Ok(())
}

/// Gives every rank rank 0's state and where its run is (`first`, `warmed_up`, which rank 0 may
/// have read from a checkpoint): returns them.
fn broadcast_state(world: &dyn Collective, trainer: &mut Trainer, first: u64, warmed_up: bool) -> Result<(u64, bool)> {
    if world.size() == 1 {
        return Ok((first, warmed_up));
    }
    let mut place = [first, warmed_up as u64];
    world.broadcast_u64(&mut place, 0);
    let mut state = trainer.training_state();
    for tensor in state.values_mut() {
        let mut values: Vec<f32> = tensor.to_f64_vec().into_iter().map(|v| v as f32).collect();
        world.broadcast_f32(&mut values, 0);
        *tensor = Tensor::f32(tensor.shape().dims().to_vec(), values)?;
    }
    trainer.restore(&state)?;
    Ok((place[0], place[1] == 1))
}

/// This rank's share of `batches`: every `size`-th, from its rank.
fn shard(batches: Vec<Batch>, world: &dyn Collective) -> Vec<Batch> {
    let (size, rank) = (world.size(), world.rank());
    batches.into_iter().enumerate().filter(|(k, _)| k % size == rank).map(|(_, b)| b).collect()
}

/// Loss and accuracy over every rank's share of an evaluation set ([`shard`]).
fn evaluate(trainer: &mut Trainer, shard: &[Batch], world: &dyn Collective) -> Result<Evaluation> {
    let mine = trainer.evaluate(shard)?;
    if world.size() == 1 {
        return Ok(mine);
    }
    let n = mine.images as f64;
    let mut sums = [mine.loss * n, (mine.accuracy * n).round(), n];
    world.allreduce_sum_f64(&mut sums);
    let images = sums[2].max(1.0);
    Ok(Evaluation { loss: sums[0] / images, accuracy: sums[1] / images, images: sums[2] as usize })
}

/// The error that stops a run whose loss went non-finite: the last good checkpoint, and with
/// `debug_nan` the first node that produced a non-finite value.
fn diverged(
    trainer: &mut Trainer,
    error: Error,
    (images, labels): (&[f32], &[f32]),
    lr: f64,
    iteration: u64,
    saved_at: Option<u64>,
    options: &RunOptions,
) -> Error {
    let path = options.out.join(CHECKPOINT);
    let good = match saved_at {
        Some(at) => format!("the last good checkpoint is {} (iteration {at})", path.display()),
        None => "no checkpoint was written yet".into(),
    };
    let mut message = format!("{error}: the run stops; {good}");
    if options.debug_nan {
        message += &match trainer.first_non_finite(images, labels, lr, iteration) {
            Ok(Some(found)) => format!("\n{found}"),
            Ok(None) => "\nreplayed unfused, the step's values are all finite: the fused step differs from the \
                         unfused one (please report it with this run's config.json)"
                .into(),
            Err(e) => format!("\ndebug_nan could not replay the step: {e}"),
        };
    } else {
        message += " (--debug-nan names the first graph node that produced a non-finite value)";
    }
    Error::Diverged(message)
}

/// Writes a run's checkpoints and final model.
struct Saver<'a> {
    out: &'a Path,
    mean: &'a [f32],
    shape: [usize; 3],
    settings: &'a [(&'static str, String)],
}

impl Saver<'_> {
    /// The model's tensors with the input preprocessing.
    fn with_preprocessing(&self, mut c: Checkpoint) -> Result<Checkpoint> {
        c.tensors.insert(INPUT_MEAN.into(), Tensor::f32(self.shape, self.mean.to_vec())?);
        c.metadata.insert("skipgrad.pixel_scale".into(), "1/255".into());
        Ok(c)
    }

    /// The resumable checkpoint after iteration `done`; on failure the error says what the file
    /// on disk still holds.
    fn checkpoint(&self, trainer: &mut Trainer, done: u64, warmed_up: bool, saved_at: &mut Option<u64>) -> Result<()> {
        let mut c = trainer.checkpoint();
        c.tensors = trainer.training_state();
        let mut c = self.with_preprocessing(c)?;
        c.metadata.insert("run.warmed_up".into(), warmed_up.to_string());
        c.metadata.insert("run.iteration".into(), done.to_string());
        for (key, value) in self.settings {
            c.metadata.insert(key.to_string(), value.clone());
        }
        let path = self.out.join(CHECKPOINT);
        c.save(&path).map_err(|e| {
            let kept = match saved_at {
                Some(at) => format!("{} still holds iteration {at}; resuming continues from it", path.display()),
                None => "no checkpoint was written before".into(),
            };
            Error::Save { iteration: done, message: format!("{e}; the run stops ({kept})") }
        })?;
        *saved_at = Some(done);
        Ok(())
    }

    /// The trained model, with its input preprocessing.
    fn model(&self, trainer: &mut Trainer, path: &Path) -> Result<()> {
        let c = self.with_preprocessing(trainer.checkpoint())?;
        c.save(path).map_err(|e| Error::Io { path: path.to_path_buf(), message: e.to_string() })
    }
}

fn mean_of_last_tenth(errors: &[f64]) -> f64 {
    let tail = (errors.len() / 10).max(1);
    let recent = &errors[errors.len().saturating_sub(tail)..];
    recent.iter().sum::<f64>() / recent.len().max(1) as f64
}

/// A JSON-lines file of metrics, appended line by line.
struct Metrics {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl Metrics {
    /// Metrics that go nowhere (the ranks but rank 0).
    fn none() -> Metrics {
        Metrics { path: PathBuf::new(), file: None }
    }

    /// The metrics file of a run starting at iteration `first`, and the training errors of the
    /// iterations before it: lines of later iterations (from an interrupted run) are dropped.
    fn open(path: &Path, first: u64) -> Result<(Metrics, Vec<f64>)> {
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
        let file = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| io_error(path, "", e))?;
        Ok((Metrics { path: path.to_path_buf(), file: Some(std::io::BufWriter::new(file)) }, errors))
    }

    fn line(&mut self, value: serde_json::Value) -> Result<()> {
        let Some(file) = &mut self.file else { return Ok(()) };
        writeln!(file, "{value}").and_then(|_| file.flush()).map_err(|e| io_error(&self.path, "", e))
    }
}

/// Writes `bytes` to `path` atomically ([`skipgrad_nn::write_atomically`]).
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    skipgrad_nn::write_atomically(path, bytes).map_err(|e| io_error(path, "", e))
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    let message = if what.is_empty() { e.to_string() } else { format!("{what}: {e}") };
    Error::Io { path: path.to_path_buf(), message }
}

/// Removes the temporary files a killed run left in `out` (a kill during a write leaves one; the
/// file it was replacing is intact).
fn remove_stale_temporaries(out: &Path) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(|e| io_error(out, "", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if RUN_FILES.iter().any(|f| name.starts_with(&format!(".{f}.tmp-"))) {
            std::fs::remove_file(entry.path()).map_err(|e| io_error(&entry.path(), "", e))?;
        }
    }
    Ok(())
}
