//! `skipgrad train --distributed` on 2 ranks under `mpirun` (cargo feature `mpi`; `.ci/run`
//! installs Open MPI and runs these): the ranks' state and losses are bit for bit those of one
//! process that runs the same compiled half-batch step on both halves and averages the
//! gradients; a run whose rank is killed resumes to the weights of an uninterrupted run; a rank
//! that fails, or a loss that goes non-finite, stops every rank within seconds, with the
//! message; a resume refuses a world of another size, and a batch that does not divide among
//! the ranks is refused.
#![cfg(feature = "mpi")]

mod common;

use common::tiny_cifar;
use skipgrad_data::{Loader, LoaderConfig, Position, cifar10};
use skipgrad_nn::{Checkpoint, Config};
use skipgrad_train::{Schedule, Trainer, TrainerOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test's own directory with the tiny CIFAR-10 (100 training images, 20 test images).
fn root(test: &str) -> (PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("skipgrad-mpi-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let data = tiny_cifar(&root);
    (root, data)
}

/// The arguments of a 1-thread resnet8 run on `data` into `out`, then `more`.
fn train_args(data: &Path, out: &Path, more: &[&str]) -> Vec<String> {
    let base = ["train", "--distributed", "--model", "resnet8", "--dataset", "cifar10", "--threads", "1"];
    let paths = ["--data".to_string(), data.display().to_string(), "--out".into(), out.display().to_string()];
    base.iter().map(|s| s.to_string()).chain(paths).chain(more.iter().map(|s| s.to_string())).collect()
}

/// `mpirun` with the settings a container needs (root, shared memory without a kernel module,
/// no core binding on 2 cores), running `programs`: one per rank group, each `(ranks, args)`.
fn mpirun(programs: &[(usize, Vec<String>)]) -> Command {
    let mut c = Command::new("mpirun");
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    c.env("OMPI_MCA_btl", "self,vader").env("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    c.args(["--oversubscribe", "--bind-to", "none"]);
    for (k, (ranks, args)) in programs.iter().enumerate() {
        if k > 0 {
            c.arg(":");
        }
        c.args(["-np", &ranks.to_string(), env!("CARGO_BIN_EXE_skipgrad")]).args(args);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// Waits for `child` at most `limit`, killing it (and failing) after that: a hung world fails
/// the test instead of hanging it.
fn finish(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("mpirun still ran after {limit:?}; stderr: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), start.elapsed())
}

/// Runs `ranks` ranks of `args` to the end: (success, stdout, stderr).
fn world(ranks: usize, args: Vec<String>) -> (bool, String, String) {
    let (out, _) = finish(mpirun(&[(ranks, args)]).spawn().expect("mpirun starts"), Duration::from_secs(300));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The losses of a run's metrics, by iteration.
fn losses(out: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap());
    lines.filter_map(|l| l["loss"].as_f64()).collect()
}

#[test]
fn two_ranks_train_as_one_process_averaging_two_half_batches() {
    let (root, data) = root("exact");
    let out = root.join("run");
    let (ok, stdout, err) =
        world(2, train_args(&data, &out, &["--batch", "8", "--iterations", "8", "--until-iteration", "5"]));
    assert!(ok, "{err}");
    assert!(stdout.contains("stopped after iteration 5 of 8"), "{stdout}");

    // One process: the same compiled batch-4 step on each half of every batch of 8, the two
    // gradient buffers summed, the update applied to the sum.
    let (train, _) = cifar10(&data).unwrap();
    let config = Config { in_channels: 3, classes: 10, ..Config::named("resnet8").unwrap() };
    let options = TrainerOptions { threads: 1, ..TrainerOptions::paper(4, train.shape, 0) };
    let mut trainer = Trainer::new(&config, options).unwrap();
    let mean = Arc::new(train.mean_image());
    let loader_config = LoaderConfig { batch: 8, seed: 0, shuffle: true, augment: true, drop_last: true };
    let mut loader = Loader::new(Arc::new(train), mean, loader_config, Position::default()).unwrap();
    let schedule = Schedule::paper(8);
    let (mut first, mut second, mut expected) = (vec![], vec![], vec![]);
    for i in 0..5 {
        let b = loader.next_batch();
        let half = b.images.len() / 2;
        trainer.gradients(&b.images[..half], &b.labels[..4], &mut first).unwrap();
        trainer.gradients(&b.images[half..], &b.labels[4..], &mut second).unwrap();
        let summed: Vec<f32> = first.iter().zip(&second).map(|(a, b)| a + b).collect();
        expected.push(trainer.apply_gradients(&summed, 2, schedule.lr(i, true), i).unwrap().loss as f64);
    }
    assert_eq!(losses(&out), expected, "the losses of every step");
    let saved = Checkpoint::load(&out.join("checkpoint.safetensors")).unwrap();
    let state = trainer.training_state();
    assert!(state.keys().any(|k| k.ends_with(".momentum")), "the velocities are compared too");
    for (name, tensor) in &state {
        assert_eq!(saved.tensors.get(name), Some(tensor), "{name} after 5 steps");
    }
    assert_eq!(saved.metadata.get("run.ranks").map(String::as_str), Some("2"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<i32> {
    let parent = |stat: &str| stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<u32>().ok();
    let entries = std::fs::read_dir("/proc").unwrap().flatten();
    let pids = entries.filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    pids.filter(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| parent(&s)) == Some(pid))
        .collect()
}

#[test]
fn a_killed_rank_stops_the_world_and_the_run_resumes_to_the_same_weights() {
    let (root, data) = root("kill");
    let args = |out: &Path, resume: bool| {
        let mut more = vec!["--batch", "8", "--epochs", "4"];
        if resume {
            more.push("--resume");
        }
        train_args(&data, out, &more)
    };
    let straight = root.join("straight");
    let (ok, _, err) = world(2, args(&straight, false));
    assert!(ok, "{err}");

    // 12 iterations per epoch: kill rank 1 once the first epoch's checkpoint is written.
    let killed = root.join("killed");
    let child = mpirun(&[(2, args(&killed, false))]).spawn().unwrap();
    let start = Instant::now();
    while losses_so_far(&killed) < 15 {
        assert!(start.elapsed() < Duration::from_secs(300), "the run did not get to iteration 15");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ranks = children(child.id());
    assert_eq!(ranks.len(), 2, "mpirun's children: {ranks:?}");
    unsafe { libc::kill(*ranks.iter().max().unwrap(), libc::SIGKILL) };
    let (out, took) = finish(child, Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(took < Duration::from_secs(10), "the other rank ran on for {took:?}");
    let done = losses_so_far(&killed);
    assert!(done < 48, "killed after {done} of 48 iterations");

    // A world of another size may not resume it.
    let (ok, _, err) = world(1, args(&killed, true));
    assert!(!ok && err.contains("run.ranks") && err.contains("\"2\""), "{err}");
    let (ok, _, err) = world(2, args(&killed, true));
    assert!(ok, "{err}");
    let weights = |run: &Path| Checkpoint::load(&run.join("model.safetensors")).unwrap().tensors;
    assert_eq!(weights(&killed), weights(&straight), "bit-identical weights after a kill at iteration {done}");
    assert_eq!(losses(&killed), losses(&straight));
    std::fs::remove_dir_all(&root).unwrap();
}

/// Iterations a run's metrics record (0 before the file exists).
fn losses_so_far(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |m| m.matches("\"loss\"").count())
}

#[test]
fn a_rank_that_fails_stops_the_other_with_its_message() {
    let (root, data) = root("fail");
    let limit = Duration::from_secs(20);
    // At the start: rank 1 is given another learning rate.
    let args = |out: &Path, more: &[&str]| train_args(&data, out, &[&["--batch", "8", "--epochs", "2"], more].concat());
    let run = root.join("mismatch");
    let child = mpirun(&[(1, args(&run, &[])), (1, args(&run, &["--lr", "0.2"]))]).spawn().unwrap();
    let (out, took) = finish(child, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && took < limit, "{took:?}: {err}");
    assert!(err.contains("(rank 1 of 2): this rank was started with other settings or data than rank 0"), "{err}");
    assert!(err.contains(": lr 0.2 (rank 0: lr 0.1)"), "{err}");

    // In the middle: rank 0 cannot write the first epoch's checkpoint (a directory has its
    // name), while rank 1 goes on to the next step.
    let run = root.join("unwritable");
    std::fs::create_dir_all(run.join("checkpoint.safetensors").join("blocked")).unwrap();
    let child = mpirun(&[(2, args(&run, &[]))]).spawn().unwrap();
    let (out, took) = finish(child, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && took < limit, "{took:?}: {err}");
    assert!(err.contains("(rank 0 of 2): cannot write the checkpoint of iteration 12"), "{err}");
    assert_eq!(losses_so_far(&run), 12, "{err}");

    // A loss that goes non-finite (on every rank at once: the ranks sum it) stops them all; each
    // replays its own slice of the step to name the first non-finite node.
    let run = root.join("diverging");
    let child = mpirun(&[(2, args(&run, &["--lr", "1e30", "--debug-nan"]))]).spawn().unwrap();
    let (out, took) = finish(child, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && took < limit, "{took:?}: {err}");
    assert!(err.contains("the loss is") && err.contains("the first non-finite value is"), "{err}");

    // A batch that does not divide among the ranks.
    let (ok, _, err) = world(2, train_args(&data, &root.join("odd"), &["--batch", "7"]));
    assert!(!ok && err.contains("--batch 7 does not divide among 2 ranks"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
