//! Running the `skipgrad` binary cargo built for these tests.

use std::process::Command;

/// Runs `skipgrad args`: (success, stdout, stderr).
pub fn skipgrad(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skipgrad")).args(args).output().expect("the binary starts");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}
