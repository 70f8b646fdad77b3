//! The examples are real programs: `cargo test` builds them, and this test runs them.

use std::path::PathBuf;
use std::process::Command;

/// The example binary cargo built beside this test (`target/<profile>/examples/<name>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is missing: run through `cargo test`, which builds the examples", path.display());
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(format!("{name}.rs"));
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    assert!(
        modified(&path) >= modified(&source),
        "{} is older than its source: `cargo test --test examples` does not rebuild examples; run `cargo test` without a target filter",
        path.display()
    );
    path
}

#[test]
fn residual_block_example_runs_and_its_gradients_check() {
    let out = Command::new(example("residual_block")).output().expect("example starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "example failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("# backward"), "the dump shows the appended gradient ops");
    assert!(stdout.contains("conv2d_grad_weight[stride=2, pad=1, kernel=3x3]"));
    assert_eq!(stdout.matches(": ok, 8 directions").count(), 2, "{stdout}");
    assert!(stdout.contains("input f32[4,16,8,8] has 16 channels, weight f32[8,32,3,3] expects 32"));
    assert!(stdout.contains("largest relative difference from the eager values:"), "{stdout}");
    assert!(stdout.contains("fusion rewrites: elementwise: "), "{stdout}");
}

/// The debugging switches work on any program: `SKIPGRAD_DUMP` fills a directory with numbered
/// stages, `SKIPGRAD_PROFILE` prints a per-kernel profile after each run.
#[test]
fn debugging_switches_work_on_the_example() {
    let dir = std::env::temp_dir().join(format!("skipgrad-example-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(example("residual_block"))
        .env("SKIPGRAD_DUMP", &dir)
        .env("SKIPGRAD_PROFILE", "1")
        .output()
        .expect("example starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "example failed:\n{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("kernel") && l.contains("calls") && l.contains("share")), "{stderr}");
    assert!(stderr.contains("GFLOP/s") && stderr.contains("GB/s"), "{stderr}");
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    for wanted in ["00-traced.dot", "01-gradients.json", "memory-plan.txt", "kernels"] {
        assert!(names.iter().any(|n| n.ends_with(wanted)), "no {wanted} in {names:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A new block, as the zoo writes its own, in a `Model` the training driver trains: stopped
/// halfway and resumed from its checkpoint, it learns Fashion-MNIST and reports a test accuracy.
#[test]
fn custom_block_example_trains() {
    if skipgrad::data::fashion_mnist(None).is_err() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
        return;
    }
    let out = Command::new(example("custom_block")).output().expect("example starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "example failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stopped after iteration 150, state in "), "{stdout}");
    let percent = |prefix: &str| -> f64 {
        let after = |l: &str| l.split(prefix).nth(1)?.split('%').next()?.parse().ok();
        stdout.lines().find_map(after).unwrap_or(f64::NAN)
    };
    assert!(percent("training error ") < 40.0, "{stdout}");
    assert!(percent("test accuracy ") > 60.0, "{stdout}");
}
