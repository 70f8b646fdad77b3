//! Crash safety of `skipgrad train`: a run killed with SIGKILL after random numbers of iterations
//! and while a checkpoint is being written, and resumed each time, ends with the weights of an
//! uninterrupted run, and a full disk stops a run with a clear message, leaving the last
//! checkpoint intact.

mod common;

use common::tiny_cifar;
use rand::{RngExt, SeedableRng};
use skipgrad_nn::Checkpoint;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `skipgrad train` of resnet8 for 4 epochs of 12 steps into `out`, resuming when a checkpoint
/// is there.
fn train(data: &Path, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skipgrad"));
    c.args(["train", "--model", "resnet8", "--dataset", "cifar10", "--epochs", "4", "--batch", "8", "--threads", "1"]);
    c.arg("--data").arg(data).arg("--out").arg(out);
    if out.join("checkpoint.safetensors").exists() {
        c.arg("--resume");
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// True while a file of the run whose name starts with `prefix` exists (a file being written
/// goes to a temporary name first).
fn exists_like(out: &Path, prefix: &str) -> bool {
    std::fs::read_dir(out).is_ok_and(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(prefix)))
}

#[test]
fn killed_runs_resume_to_the_weights_of_an_uninterrupted_run() {
    let root = std::env::temp_dir().join(format!("skipgrad-kill-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let straight = root.join("straight");
    let start = Instant::now();
    let done = train(&data, &straight).output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let whole = start.elapsed();

    let killed = root.join("killed");
    let iterations_done =
        || std::fs::read_to_string(killed.join("metrics.jsonl")).map_or(0, |m| m.matches("\"iteration\"").count());
    let mut rng = rand::rngs::StdRng::seed_from_u64(std::process::id() as u64);
    let (mut kills, mut during_writes, mut resumed) = (0, 0, 0);
    for round in 0..16 {
        resumed += usize::from(killed.join("checkpoint.safetensors").exists());
        let done_before = iterations_done();
        let mut child = train(&data, &killed).spawn().unwrap();
        let started = Instant::now();
        // Odd rounds kill as soon as a checkpoint's temporary file is seen (how many land inside
        // a write depends on timing; the full-disk test below checks deterministically that a
        // failed write leaves the last checkpoint intact); even rounds kill after a random number
        // of iterations (0 to 2 epochs of 12; counted in the metrics, so a busy machine does not
        // skew where the kills fall). Both give up waiting after twice an uninterrupted run.
        let after = rng.random_range(0..24);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let write_seen = round % 2 == 1 && exists_like(&killed, ".checkpoint.safetensors.tmp");
            let progressed = round % 2 == 0 && iterations_done() >= done_before + after;
            if write_seen || progressed || started.elapsed() >= whole * 2 {
                child.kill().unwrap();
                kills += 1;
                during_writes += usize::from(write_seen);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = child.wait().unwrap();
        if status.success() {
            if kills >= 3 && resumed >= 2 {
                break;
            }
            // The run finished before the test interrupted it enough. Start over.
            std::fs::remove_dir_all(&killed).unwrap();
            (kills, during_writes, resumed) = (0, 0, 0);
        }
    }
    // However the kills fell, resuming from what is on disk finishes the run.
    let last = train(&data, &killed).output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    eprintln!("{kills} kills ({during_writes} during a checkpoint write), {resumed} resumes");
    assert!(!exists_like(&killed, "."), "the temporary files of killed writes are cleaned up");
    assert!(kills >= 3 && resumed >= 2, "{kills} kills, {resumed} resumes: the test did not interrupt enough");
    let weights = |run: &Path| Checkpoint::load(&run.join("model.safetensors")).unwrap().tensors;
    assert_eq!(weights(&killed), weights(&straight), "bit-identical weights after {kills} kills");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A disk that fills up (simulated with a file-size limit) stops the run with an error naming the
/// checkpoint; the checkpoint written before is untouched and the run resumes from it, removing
/// the temporary files that killed writes leave.
#[test]
fn a_full_disk_stops_the_run_and_keeps_the_last_checkpoint() {
    let root = std::env::temp_dir().join(format!("skipgrad-full-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let out = root.join("run");
    let first = train(&data, &out).args(["--until-iteration", "12"]).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let checkpoint = out.join("checkpoint.safetensors");
    let before = std::fs::read(&checkpoint).unwrap();
    let mut full = train(&data, &out);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        full.pre_exec(|| {
            // Files may not grow past 64 KiB (a checkpoint is larger); writes past it fail with
            // EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let failed = full.output().unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success(), "the run cannot have written its checkpoint");
    assert!(err.contains("cannot write the checkpoint of iteration 24") && err.contains("too large"), "{err}");
    assert!(err.contains("checkpoint.safetensors still holds iteration 12; resuming continues from it"), "{err}");
    assert_eq!(std::fs::read(&checkpoint).unwrap(), before, "the last checkpoint is intact");
    assert!(!exists_like(&out, ".checkpoint.safetensors.tmp"), "no temporary file is left behind");
    // What a kill during writes leaves behind is removed when the run resumes; other files stay.
    for stale in [".checkpoint.safetensors.tmp-99999", ".metrics.jsonl.tmp-1", ".notes.tmp-1"] {
        std::fs::write(out.join(stale), b"partial").unwrap();
    }
    let resumed = train(&data, &out).output().unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(!exists_like(&out, ".checkpoint.safetensors.tmp") && !exists_like(&out, ".metrics.jsonl.tmp"));
    assert!(out.join(".notes.tmp-1").exists(), "only the run's own temporaries are removed");
    std::fs::remove_dir_all(&root).unwrap();
}

/// An output path that cannot be a directory stops the run before training, naming it.
#[test]
fn an_impossible_run_directory_is_named() {
    let root = std::env::temp_dir().join(format!("skipgrad-nodir-{}", std::process::id()));
    let data = tiny_cifar(&root);
    let file = root.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let out = train(&data, &file.join("run")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot create the run directory"), "{err}");
    assert!(err.contains("a-file/run"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}
