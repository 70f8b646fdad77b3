//! `skipgrad train` end to end on a tiny CIFAR-10 directory (the 20-record sample as every
//! batch file): the run writes its configuration, metrics and a checkpoint that loads back.

use skipgrad_autodiff::Tape;
use skipgrad_ir::DType;
use skipgrad_nn::{Checkpoint, INPUT_MEAN};
use std::path::Path;
use std::process::Command;

fn skipgrad(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skipgrad")).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_short_run_writes_metrics_and_a_checkpoint() {
    let root = std::env::temp_dir().join(format!("skipgrad-train-{}", std::process::id()));
    let (data, out) = (root.join("cifar"), root.join("run"));
    std::fs::create_dir_all(&data).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/data/cifar10_test_first20.bin");
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        std::fs::copy(&sample, data.join(format!("{name}.bin"))).unwrap();
    }
    let args = [
        "train",
        "--model",
        "resnet8",
        "--dataset",
        "cifar10",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch",
        "16",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, stdout, err) = skipgrad(&args);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("resnet8: 12 iterations in ") && stdout.contains("(20 images)"), "{stdout}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["iterations"].as_u64(), config["iterations_per_epoch"].as_u64()), (Some(12), Some(6)));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let epochs: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("test_accuracy").is_some()).collect();
    assert_eq!((lines.len(), epochs.len()), (14, 2));
    // The schedule: lr 0.1, divided by 10 at 50% and 75% of the 12 iterations.
    let rates: Vec<f64> = lines.iter().filter_map(|l| l["lr"].as_f64()).collect();
    assert_eq!((rates[5], rates[6], rates[9]), (0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1));
    let checkpoint = Checkpoint::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(checkpoint.tensors[INPUT_MEAN].shape().dims(), &[3, 32, 32]);
    assert_eq!(checkpoint.metadata["skipgrad.pixel_scale"], "1/255");
    checkpoint.build(&Tape::trace(DType::F32)).unwrap();
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
