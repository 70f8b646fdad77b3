//! Long-run health, alone in its test binary so that resident memory is this test's own: a
//! compiled training step replayed 10,000 times keeps resident memory flat and its loss finite,
//! and compiling the step anew over and over (after each restore) returns each dropped graph's
//! code and buffers.

use skipgrad_nn::Config;
use skipgrad_train::{Trainer, TrainerOptions};

/// Resident memory in bytes, from /proc/self/statm.
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux's /proc");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm's resident field");
    pages * 4096
}

/// How many memory mappings the process has (the JIT maps its code pages).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").expect("Linux's /proc").lines().count()
}

#[test]
fn ten_thousand_steps_and_sixty_compiles_keep_memory_flat() {
    // ResNet-8 on 4 images of 1x8x8: small enough to step 10,000 times in seconds.
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let options = TrainerOptions { threads: 1, ..TrainerOptions::paper(4, [1, 8, 8], 3) };
    let mut t = Trainer::new(&config, options).unwrap();
    let images: Vec<f32> = (0..4 * 64).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let labels = [0.0, 3.0, 7.0, 9.0];
    let step = |t: &mut Trainer, i: u64| {
        let stats = t.step(&images, &labels, 0.01, i).unwrap();
        assert!(stats.loss.is_finite(), "step {i}: loss {}", stats.loss);
    };
    for i in 0..500 {
        step(&mut t, i);
    }
    let warm = resident();
    for i in 500..10_000 {
        step(&mut t, i);
    }
    let grown = resident() as f64 - warm as f64;
    assert!(grown < 1e6, "9,500 more steps grew resident memory by {grown} bytes");

    // Each restore compiles the step anew and drops the old compiled graph: its code pages and
    // buffers must go back.
    let state = t.training_state();
    let recompile = |t: &mut Trainer| {
        t.restore(&state).unwrap();
        t.prepare().unwrap();
    };
    for _ in 0..10 {
        recompile(&mut t);
    }
    let (warm, maps) = (resident(), mappings());
    for _ in 0..60 {
        recompile(&mut t);
    }
    assert_eq!(t.step_compilations(), 71);
    let grown = resident() as f64 - warm as f64;
    assert!(grown < 4e6, "60 more compiled-and-dropped steps grew resident memory by {grown} bytes");
    assert!(mappings() <= maps + 8, "60 compiles left {} more memory mappings", mappings() - maps);
}
