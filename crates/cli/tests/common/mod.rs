//! Running the `skipgrad` binary cargo built for these tests, on a tiny CIFAR-10 directory.
// Each test file uses a part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `skipgrad args`: (success, stdout, stderr).
pub fn skipgrad(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skipgrad")).args(args).output().expect("the binary starts");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// A tiny CIFAR-10 directory: the 20-record sample as every batch file.
pub fn tiny_cifar(root: &Path) -> PathBuf {
    let data = root.join("cifar");
    std::fs::create_dir_all(&data).unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/data/cifar10_test_first20.bin");
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
        std::fs::copy(&sample, data.join(format!("{name}.bin"))).unwrap();
    }
    data
}
