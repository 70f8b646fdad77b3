//! `skipgrad train` end to end on a tiny CIFAR-10 directory (the 20-record sample as every
//! batch file): the run writes its configuration, metrics and a checkpoint that loads back.

mod common;

use common::{skipgrad, tiny_cifar};

use skipgrad_autodiff::Tape;
use skipgrad_ir::DType;
use skipgrad_nn::{Checkpoint, INPUT_MEAN};
use std::path::Path;

#[test]
fn a_short_run_writes_metrics_and_a_checkpoint() {
    let root = std::env::temp_dir().join(format!("skipgrad-train-{}", std::process::id()));
    let (data, out) = (tiny_cifar(&root), root.join("run"));
    let args = train_args(&data, &out, &["--batch", "16", "--threads", "1", "--validation", "4"]);
    let (ok, stdout, err) = skipgrad(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(stdout.starts_with("resnet8: 12 iterations in ") && stdout.contains("(20 images)"), "{stdout}");
    assert!(stdout.contains(" s waiting for data), test accuracy "), "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["iterations"].as_u64(), config["iterations_per_epoch"].as_u64()), (Some(12), Some(6)));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let epochs: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("test_accuracy").is_some()).collect();
    // 96 training images after holding out 4: 6 batches of 16 per epoch.
    assert_eq!((lines.len(), epochs.len()), (14, 2));
    assert!(epochs.iter().all(|e| e["validation_accuracy"].as_f64().is_some()), "{epochs:?}");
    // Every iteration's line records the time spent waiting for data so far.
    let waits: Vec<f64> = lines.iter().filter_map(|l| l["data_wait_seconds"].as_f64()).collect();
    assert!(waits.len() == 12 && waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");
    // The schedule: lr 0.1, divided by 10 at 50% and 75% of the 12 iterations.
    let rates: Vec<f64> = lines.iter().filter_map(|l| l["lr"].as_f64()).collect();
    assert_eq!((rates[5], rates[6], rates[9]), (0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1));
    let checkpoint = Checkpoint::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(checkpoint.tensors[INPUT_MEAN].shape().dims(), &[3, 32, 32]);
    assert_eq!(checkpoint.metadata["skipgrad.pixel_scale"], "1/255");
    checkpoint.build(&Tape::trace(DType::F32)).unwrap();

    // `eval` of the saved model reproduces the run's last test accuracy.
    let model = out.join("model.safetensors");
    let eval = [
        "eval",
        "--checkpoint",
        model.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data",
        data.to_str().unwrap(),
        "--batch",
        "16",
        "--json",
    ];
    let (ok, stdout, err) = skipgrad(&eval);
    assert!(ok, "{err}");
    let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["accuracy"], epochs[1]["test_accuracy"], "{stdout}");
    assert_eq!(result["images"].as_u64(), Some(20));
    // `plot` draws the run's curves to SVG and PNG; a directory without metrics is an error.
    let (ok, stdout, err) = skipgrad(&["plot", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    let svg = std::fs::read_to_string(out.join("errors.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("run") && stdout.contains("errors.png"), "{stdout}");
    assert!(std::fs::read(out.join("errors.png")).unwrap().starts_with(b"\x89PNG"));
    let (ok, _, err) = skipgrad(&["plot", root.to_str().unwrap()]);
    assert!(!ok && err.contains("metrics.jsonl"), "{err}");
    // A checkpoint without the input preprocessing cannot be evaluated faithfully: it says so.
    let mut bare = checkpoint.clone();
    bare.tensors.remove(INPUT_MEAN);
    let bare_path = root.join("bare.safetensors");
    bare.save(&bare_path).unwrap();
    let (ok, _, err) = skipgrad(&[
        "eval",
        "--checkpoint",
        bare_path.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("input_mean"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// `train` of resnet8 for 2 epochs on the tiny CIFAR-10 in `data`, into `out`, with `extra`.
fn train_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["train", "--model", "resnet8", "--dataset", "cifar10", "--epochs", "2"].map(String::from).to_vec();
    args.extend(["--data".into(), data.display().to_string(), "--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// `train` of resnet8 for 8 iterations of 4 images on the tiny CIFAR-10 in `data`, into `out`,
/// with `extra`: (success, stdout, stderr).
fn eight_steps(data: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = ["train", "--model", "resnet8", "--dataset", "cifar10", "--iterations", "8", "--batch", "4"]
        .map(String::from)
        .to_vec();
    args.extend(["--data".into(), data.display().to_string(), "--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    skipgrad(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The learning rate of each iteration in a run's metrics.
fn rates(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|m| m["lr"].as_f64())
        .collect()
}

/// The losses of a run's metrics, by iteration.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["iteration"].as_u64()?, v["loss"].as_f64()?)))
        .collect()
}

/// An interrupted run (stopped mid-epoch, then resumed) ends with exactly the weights, losses and
/// test accuracy of an uninterrupted one.
#[test]
fn a_resumed_run_ends_bit_identical() {
    let root = std::env::temp_dir().join(format!("skipgrad-resume-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = train_args(&data, out, &["--batch", "8", "--threads", "2", "--seed", "4"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let (ok, stdout, err) = skipgrad(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{err}");
        stdout
    };
    let (straight, interrupted) = (root.join("straight"), root.join("interrupted"));
    let whole = run(&straight, &[]);
    let stopped = run(&interrupted, &["--until-iteration", "15"]);
    assert!(stopped.contains("stopped after iteration 15 of 24"), "{stopped}");
    let resumed = run(&interrupted, &["--resume"]);
    let accuracy =
        |s: &str| s.split("test accuracy ").nth(1).map(|r| r.split(' ').next().unwrap_or_default().to_string());
    assert_eq!(accuracy(&resumed), accuracy(&whole), "{resumed} vs {whole}");
    assert_eq!(losses(&interrupted), losses(&straight));
    let [a, b] = [&straight, &interrupted].map(|r| Checkpoint::load(&r.join("model.safetensors")).unwrap());
    assert_eq!(a.tensors, b.tensors, "bit-identical weights");
    // Resuming with other settings is refused.
    let mut args = vec!["train", "--model", "resnet8", "--dataset", "cifar10", "--data", data.to_str().unwrap()];
    args.extend(["--epochs", "2", "--batch", "8", "--seed", "5", "--resume", "--out", interrupted.to_str().unwrap()]);
    let (ok, _, err) = skipgrad(&args);
    assert!(!ok && err.contains("run.seed"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// `--backend reference` runs the same recipe on the reference interpreter.
#[test]
fn the_reference_backend_runs_from_the_command_line() {
    let root = std::env::temp_dir().join(format!("skipgrad-reference-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let out = root.join("run");
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let args = ["train", "--model", "resnet8", "--dataset", "cifar10", "--data", data, "--out", out];
    let more = ["--iterations", "2", "--batch", "4", "--backend", "reference"];
    let (ok, stdout, err) = skipgrad(&[&args[..], &more[..]].concat());
    assert!(ok && stdout.starts_with("resnet8: 2 iterations"), "{stdout}{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_runs_say_what_was_wrong() {
    let missing = std::env::temp_dir().join("skipgrad-no-such-dir");
    for (args, says) in [
        (vec!["train", "--dataset", "cifar10"], "--data"),
        (vec!["train", "--dataset", "cifar10", "--data", missing.to_str().unwrap()], "data_batch_1.bin"),
        (vec!["train", "--lr=-1"], "--lr"),
        (vec!["train", "--epochs", "0"], "--epochs"),
        (vec!["train", "--epochs", "1", "--iterations", "5"], "--iterations"),
        (
            vec!["train", "--dataset", "fashion-mnist", "--data", missing.to_str().unwrap()],
            "apt-get install dataset-fashion-mnist",
        ),
    ] {
        let (ok, _, err) = skipgrad(&args);
        assert!(!ok && err.contains(says), "{args:?}: {err}");
    }
}

/// The experiments run end to end at a tiny budget: a table row per depth (or option) and the
/// figure.
#[test]
fn experiments_write_their_table_and_figure() {
    let root = std::env::temp_dir().join(format!("skipgrad-experiment-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let out = root.join("degradation");
    let recipe = [
        "--dataset",
        "cifar10",
        "--data",
        data.to_str().unwrap(),
        "--iterations",
        "3",
        "--batch",
        "8",
        "--threads",
        "1",
    ];
    let mut args = vec!["experiment", "degradation", "--depths", "8,14", "--out", out.to_str().unwrap()];
    args.extend(recipe);
    let (ok, stdout, err) = skipgrad(&args);
    assert!(ok, "{err}");
    let table = std::fs::read_to_string(out.join("degradation.md")).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(table.lines().nth(2).unwrap().starts_with("| 8 |") && table.lines().nth(3).unwrap().starts_with("| 14 |"));
    assert!(stdout.contains("degradation.png"), "{stdout}");
    for run in ["plain8", "resnet8", "plain14", "resnet14"] {
        assert!(out.join(run).join("model.safetensors").exists(), "{run}");
    }
    assert!(std::fs::read(out.join("degradation.png")).unwrap().starts_with(b"\x89PNG"));

    // --resume keeps finished runs and continues interrupted ones: plain8 stopped after its first
    // iteration, then the experiment resumed, ends with the same weights and the same table.
    let resumed = root.join("resumed");
    let plain8 = resumed.join("plain8");
    let mut args = vec!["train", "--model", "plain8", "--until-iteration", "1", "--out", plain8.to_str().unwrap()];
    args.extend(recipe);
    let (ok, stdout, err) = skipgrad(&args);
    assert!(ok && stdout.contains("stopped after iteration 1 of 3"), "{stdout}{err}");
    let mut args =
        vec!["experiment", "degradation", "--depths", "8,14", "--resume", "--out", resumed.to_str().unwrap()];
    args.extend(recipe);
    let (ok, _, err) = skipgrad(&args);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(resumed.join("degradation.md")).unwrap(), table);
    let weights = |dir: &Path| Checkpoint::load(&dir.join("plain8").join("model.safetensors")).unwrap().tensors;
    assert_eq!(weights(&resumed), weights(&out));
    // Resuming a finished experiment trains nothing and reproduces its table.
    let before = std::fs::metadata(plain8.join("checkpoint.safetensors")).unwrap().modified().unwrap();
    let (ok, _, err) = skipgrad(&args);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(resumed.join("degradation.md")).unwrap(), table);
    assert_eq!(std::fs::metadata(plain8.join("checkpoint.safetensors")).unwrap().modified().unwrap(), before);
    let out = root.join("shortcuts");
    let mut args = vec!["experiment", "shortcuts", "--model", "resnet8", "--out", out.to_str().unwrap()];
    args.extend(recipe);
    let (ok, _, err) = skipgrad(&args);
    assert!(ok, "{err}");
    let table = std::fs::read_to_string(out.join("shortcuts.md")).unwrap();
    let options: Vec<&str> = table.lines().skip(2).map(|l| &l[..5]).collect();
    assert_eq!(options, ["| A |", "| B |", "| C |"], "{table}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A diverging run stops on its first non-finite loss, naming the iteration and that no
/// checkpoint exists yet; with --debug-nan it also names the first graph node that produced a
/// non-finite value and its inputs.
#[test]
fn a_diverging_run_stops_and_debug_nan_names_the_node() {
    let root = std::env::temp_dir().join(format!("skipgrad-nan-{}", std::process::id()));
    let (data, out) = (tiny_cifar(&root), root.join("run"));
    let args = train_args(&data, &out, &["--batch", "16", "--threads", "1", "--lr", "1e30"]);
    let (ok, _, err) = skipgrad(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(err.contains("the run stops; no checkpoint was written yet") && err.contains("--debug-nan names"), "{err}");
    let mut debug = args.clone();
    debug.push("--debug-nan".into());
    let (ok, _, err) = skipgrad(&debug.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(err.contains("the first non-finite value is %") && err.contains("\n  input %"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

/// `--warmup on` trains at a tenth of --lr while the training error is above 80% (a fresh net's
/// on 10 classes), records it in config.json, and a resume must keep it; `off` starts at --lr.
#[test]
fn warmup_is_chosen_recorded_and_kept_on_resume() {
    let root = std::env::temp_dir().join(format!("skipgrad-warmup-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let run = |out: &Path, extra: &[&str]| {
        let mut args = ["train", "--model", "resnet8", "--dataset", "cifar10", "--iterations", "4", "--batch", "4"]
            .map(String::from)
            .to_vec();
        args.extend(["--data".into(), data.display().to_string(), "--out".into(), out.display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        skipgrad(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first_lr = |warmup: &str, out: &Path| {
        let (ok, _, err) = run(out, &["--warmup", warmup, "--until-iteration", "1"]);
        assert!(ok, "{err}");
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        (first["lr"].as_f64().unwrap(), config["warmup"].clone())
    };
    let (on, off) = (root.join("on"), root.join("off"));
    let (lr, recorded) = first_lr("on", &on);
    assert!((lr - 0.01).abs() < 1e-12, "warm-up lr {lr}");
    assert_eq!(recorded["until_train_error_below"], 0.8, "{recorded}");
    let (lr, recorded) = first_lr("off", &off);
    assert!((lr - 0.1).abs() < 1e-12, "lr {lr}");
    assert!(recorded.is_null(), "{recorded}");
    // Resuming the warm-up run without it is refused.
    let (ok, _, err) = run(&on, &["--warmup", "off", "--resume"]);
    assert!(!ok && err.contains("run.warmup"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// `--schedule cosine` anneals the rate from --lr to zero (the metrics show each iteration's),
/// records it in config.json, and a resume must keep it.
#[test]
fn a_cosine_schedule_is_followed_recorded_and_kept_on_resume() {
    let root = std::env::temp_dir().join(format!("skipgrad-cosine-{}", std::process::id()));
    let (data, out) = (tiny_cifar(&root), root.join("run"));
    let run = |extra: &[&str]| eight_steps(&data, &out, extra);
    let (ok, _, err) = run(&["--schedule", "cosine", "--threads", "1"]);
    assert!(ok, "{err}");
    let rates = rates(&out);
    let want: Vec<f64> = (0..8).map(|i| 0.05 * (1.0 + (std::f64::consts::PI * i as f64 / 8.0).cos())).collect();
    assert_eq!(rates.len(), 8, "{rates:?}");
    assert!(rates.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12), "{rates:?} vs {want:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["schedule"], "cosine");
    let (ok, _, err) = run(&["--schedule", "step", "--resume"]);
    assert!(!ok && err.contains("run.schedule"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// `--optimizer adamw` trains with AdamW (its moments in the checkpoint, the settings in
/// config.json), resumes to the weights of an uninterrupted run, and a resume with another
/// optimizer is refused.
#[test]
fn adamw_is_chosen_recorded_and_kept_on_resume() {
    let root = std::env::temp_dir().join(format!("skipgrad-adamw-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let run = |out: &Path, extra: &[&str]| {
        let mut args =
            train_args(&data, out, &["--batch", "8", "--threads", "1", "--optimizer", "adamw", "--lr", "0.002"]);
        args.extend(extra.iter().map(|a| a.to_string()));
        skipgrad(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (straight, interrupted) = (root.join("straight"), root.join("interrupted"));
    let (ok, _, err) = run(&straight, &[]);
    assert!(ok, "{err}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["optimizer"], "adamw");
    assert_eq!(config["optimizer_settings"]["beta2"], 0.999, "{config}");
    let (ok, _, err) = run(&interrupted, &["--until-iteration", "5"]);
    assert!(ok, "{err}");
    let saved = Checkpoint::load(&interrupted.join("checkpoint.safetensors")).unwrap();
    assert!(saved.tensors.contains_key("optimizer.fc.weight.exp_avg_sq"), "{:?}", saved.tensors.keys());
    assert!(!saved.tensors.contains_key("optimizer.fc.weight.momentum"), "no SGD state");
    let (ok, _, err) = skipgrad(
        &train_args(&data, &interrupted, &["--batch", "8", "--threads", "1", "--lr", "0.002", "--resume"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!ok && err.contains("run.optimizer"), "{err}");
    let (ok, _, err) = run(&interrupted, &["--resume"]);
    assert!(ok, "{err}");
    assert_eq!(losses(&interrupted), losses(&straight));
    let [a, b] = [&straight, &interrupted].map(|r| Checkpoint::load(&r.join("model.safetensors")).unwrap());
    assert_eq!(a.tensors, b.tensors, "bit-identical weights");
    std::fs::remove_dir_all(&root).unwrap();
}

/// `--ramp N` warms the rate up linearly over the first N iterations (iteration i at (i + 1) / N
/// of the schedule's rate), records it, and a resume must keep it.
#[test]
fn a_linear_ramp_is_followed_recorded_and_kept_on_resume() {
    let root = std::env::temp_dir().join(format!("skipgrad-ramp-{}", std::process::id()));
    let (data, out) = (tiny_cifar(&root), root.join("run"));
    let run = |extra: &[&str]| eight_steps(&data, &out, &[&["--threads", "1"], extra].concat());
    let (ok, _, err) = run(&["--ramp", "4", "--until-iteration", "6"]);
    assert!(ok, "{err}");
    let rates = rates(&out);
    // The step schedule's milestones at 4 and 6 of 8 iterations follow the ramp.
    let want = [0.025, 0.05, 0.075, 0.1, 0.01, 0.01];
    assert!(rates.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12) && rates.len() == 6, "{rates:?}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["ramp"], 4);
    let (ok, _, err) = run(&["--resume"]);
    assert!(!ok && err.contains("run.ramp"), "{err}");
    let (ok, _, err) = run(&["--ramp", "4", "--resume"]);
    assert!(ok, "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A build without the `mpi` feature says how to get data-parallel training.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_training_without_mpi_says_how_to_build_it() {
    let (ok, _, err) = skipgrad(&["train", "--distributed", "--model", "resnet8", "--iterations", "1"]);
    assert!(!ok && err.contains("rebuild with `cargo build --release -p skipgrad-cli --features mpi`"), "{err}");
}
