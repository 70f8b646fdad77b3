//! The training driver end to end: a small net trained for a few hundred iterations on
//! Fashion-MNIST learns (the loss falls well below its start and the test accuracy is far above
//! chance), and the schedule follows the paper's recipe.

use skipgrad_data::{Loader, LoaderConfig, Position, fashion_mnist, in_order};
use skipgrad_nn::Config;
use skipgrad_train::{Decay, Schedule, Trainer, TrainerOptions};
use std::sync::Arc;

#[test]
fn the_schedule_divides_by_ten_at_half_and_three_quarters() {
    let s = Schedule::paper(64_000);
    let rates: Vec<f64> = [0, 31_999, 32_000, 47_999, 48_000, 63_999].iter().map(|&i| s.lr(i, true)).collect();
    assert_eq!(rates, [0.1, 0.1, 0.1 * 0.1, 0.1 * 0.1, 0.1 * 0.1 * 0.1, 0.1 * 0.1 * 0.1]);
    let warm = Schedule { warmup: Some((0.01, 0.8)), ..Schedule::paper(100) };
    assert_eq!((warm.lr(0, false), warm.lr(0, true)), (0.01, 0.1));
    assert!(!warm.warms_up(0.85) && warm.warms_up(0.79));
}

#[test]
fn cosine_decay_and_a_linear_ramp() {
    let cosine = Schedule { decay: Decay::Cosine, ..Schedule::paper(100) };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    assert!(close(cosine.lr(0, true), 0.1) && close(cosine.lr(50, true), 0.05) && close(cosine.lr(100, true), 0.0));
    assert!(close(cosine.lr(25, true), 0.05 * (1.0 + std::f64::consts::FRAC_1_SQRT_2)));
    let ramped = Schedule { ramp: 10, ..Schedule::paper(100) };
    assert!(close(ramped.lr(0, true), 0.01) && close(ramped.lr(4, true), 0.05) && close(ramped.lr(10, true), 0.1));
}

#[test]
fn a_small_net_learns_fashion_mnist() {
    let (train, test) = match fashion_mnist(None) {
        Ok(d) => d,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let (batch, iterations) = (32, 200);
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let mut trainer = Trainer::new(&config, TrainerOptions::paper(batch, [1, 28, 28], 1)).unwrap();
    let mean = Arc::new(train.mean_image());
    let loader_config = LoaderConfig { batch, seed: 1, shuffle: true, augment: false, drop_last: true };
    let mut loader = Loader::new(Arc::new(train), mean.clone(), loader_config, Position::default()).unwrap();
    let schedule = Schedule::paper(iterations);
    let mut losses = vec![];
    for i in 0..iterations {
        let b = loader.next_batch();
        losses.push(trainer.step(&b.images, &b.labels, schedule.lr(i, true), i).unwrap().loss);
    }
    let mean_of = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean_of(&losses[..20]), mean_of(&losses[losses.len() - 20..]));
    eprintln!("loss {first} -> {last}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let subset = test.subset(&(0..2000).collect::<Vec<_>>());
    let eval = trainer.evaluate(&in_order(&subset, &mean, batch).unwrap()).unwrap();
    assert_eq!(eval.images, 2000);
    eprintln!("accuracy {}", eval.accuracy);
    assert!(eval.accuracy > 0.65, "test accuracy {:.3} after {iterations} iterations", eval.accuracy);

    // A checkpoint of the trained net evaluates identically in a new trainer.
    let checkpoint = trainer.checkpoint();
    let mut again = Trainer::from_checkpoint(&checkpoint, TrainerOptions::paper(batch, [1, 28, 28], 99)).unwrap();
    assert_eq!(again.evaluate(&in_order(&subset, &mean, batch).unwrap()).unwrap(), eval);
}

/// `Backend::Reference` runs the same step on the reference interpreter: a few steps of a small
/// net give the JIT's losses (f32 on both, different summation orders).
#[test]
fn the_reference_backend_trains_like_the_jit() {
    use skipgrad_train::Backend;
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let images: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    let labels = [1.0, 3.0, 3.0, 7.0];
    let losses = |backend| {
        let options = TrainerOptions { backend, ..TrainerOptions::paper(4, [1, 8, 8], 2) };
        let mut trainer = Trainer::new(&config, options).unwrap();
        (0..3).map(|i| trainer.step(&images, &labels, 0.1, i).unwrap().loss).collect::<Vec<f32>>()
    };
    let (jit, reference) = (losses(Backend::Jit), losses(Backend::Reference));
    for (a, b) in jit.iter().zip(&reference) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "jit {jit:?} vs reference {reference:?}");
    }
    assert!(jit[2] < jit[0], "the loss falls: {jit:?}");
}

/// `first_non_finite` replays a failed step and names where it went wrong: a weight holding a
/// NaN is itself the first non-finite value (a state tensor, named); with finite weights but
/// images near f32's limit, the first is a computed node whose inputs are all finite; a healthy
/// step has none.
#[test]
fn a_non_finite_step_names_its_first_non_finite_node() {
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let images: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    let labels = [1.0, 3.0, 3.0, 7.0];
    let trainer = || Trainer::new(&config, TrainerOptions::paper(4, [1, 8, 8], 2)).unwrap();

    let mut poisoned = trainer();
    let mut state = poisoned.training_state();
    // The classifier's weight: a NaN before a ReLU would vanish (max(NaN, 0) is 0 here, as in
    // Rust's f32::max), while the classifier's reaches the loss.
    let name = "fc.weight";
    let mut values = state[name].to_f64_vec();
    values[5] = f64::NAN;
    state.insert(
        name.into(),
        skipgrad_ir::Tensor::f32(state[name].shape().dims().to_vec(), values.iter().map(|&v| v as f32).collect())
            .unwrap(),
    );
    poisoned.restore(&state).unwrap();
    let error = poisoned.step(&images, &labels, 0.1, 0).unwrap_err();
    assert!(matches!(error, skipgrad_train::Error::NonFinite { iteration: 0, .. }), "{error}");
    let found = poisoned.first_non_finite(&images, &labels, 0.1, 0).unwrap().expect("a non-finite value");
    assert_eq!((found.parameter.as_deref(), found.non_finite), (Some(name), 1), "{found}");

    // (Its loss may stay finite: batch norm maps an infinite variance to zeros.)
    let mut overflowing = trainer();
    let huge: Vec<f32> = images.iter().map(|v| v * 3e37).collect();
    let found = overflowing.first_non_finite(&huge, &labels, 0.1, 0).unwrap().expect("a non-finite value");
    assert_eq!(found.parameter, None, "{found}");
    assert!(found.inputs.iter().all(|i| i.contains(": 0 of ")), "its inputs are finite: {found}");
    let text = found.to_string();
    assert!(text.starts_with(&format!("the first non-finite value is {}: f32[", found.node)), "{text}");

    // A healthy step has none.
    let mut healthy = trainer();
    assert_eq!(healthy.first_non_finite(&images, &labels, 0.1, 0).unwrap(), None);
}

/// The learning rate is an input of the compiled step: 100 steps through a changing (cosine)
/// schedule compile it once, and a step at rate 0 leaves every parameter as it was.
#[test]
fn a_changing_schedule_compiles_the_step_once() {
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let images: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    let labels = [1.0, 3.0, 3.0, 7.0];
    let mut trainer = Trainer::new(&config, TrainerOptions::paper(4, [1, 8, 8], 2)).unwrap();
    for i in 0..100u64 {
        let lr = 0.05 * (1.0 + (std::f64::consts::PI * i as f64 / 100.0).cos());
        assert!(trainer.step(&images, &labels, lr, i).unwrap().loss.is_finite());
    }
    assert_eq!(trainer.step_compilations(), 1);
    let before = trainer.checkpoint().tensors;
    trainer.step(&images, &labels, 0.0, 100).unwrap();
    let after = trainer.checkpoint().tensors;
    let parameter = |name: &String| !name.contains("running") && !name.contains("num_batches");
    let changed: Vec<&String> = before.keys().filter(|n| parameter(n) && before[*n] != after[*n]).collect();
    assert!(changed.is_empty(), "a step at rate 0 changed {changed:?}");
    assert_ne!(before["bn1.running_mean"], after["bn1.running_mean"], "the step ran");
    assert_eq!(trainer.step_compilations(), 1);

    // AdamW's bias corrections change every step too, as inputs.
    let options = TrainerOptions::paper(4, [1, 8, 8], 2).with_optimizer(skipgrad_autodiff::AdamW::default());
    let mut trainer = Trainer::new(&config, options).unwrap();
    let losses: Vec<f32> = (0..100u64)
        .map(|i| {
            let lr = 0.0005 * (1.0 + (std::f64::consts::PI * i as f64 / 100.0).cos());
            trainer.step(&images, &labels, lr, i).unwrap().loss
        })
        .collect();
    assert!(losses[99] < 0.5 * losses[0], "AdamW fits the batch: {} -> {}", losses[0], losses[99]);
    assert_eq!(trainer.step_compilations(), 1);
}

/// The compiled step writes every new parameter, optimizer slot and running statistic into its
/// own buffer (nothing is copied back), with the results of copying them back, bit for bit, for
/// SGD and AdamW.
#[test]
fn the_step_updates_its_state_in_place() {
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let images: Vec<f32> = (0..4 * 8 * 8).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    let labels = [1.0, 3.0, 3.0, 7.0];
    let sgd = TrainerOptions::paper(4, [1, 8, 8], 2);
    let adamw = sgd.clone().with_optimizer(skipgrad_autodiff::AdamW::default());
    for options in [sgd, adamw] {
        let train = |in_place: bool| {
            let mut trainer =
                Trainer::new(&config, TrainerOptions { update_in_place: in_place, ..options.clone() }).unwrap();
            let losses: Vec<f32> = (0..4).map(|i| trainer.step(&images, &labels, 0.01, i).unwrap().loss).collect();
            (losses, trainer.training_state(), trainer.updates_in_place().unwrap())
        };
        let (losses, state, (in_place, updates)) = train(true);
        assert_eq!(in_place, updates, "{}: every update in place", options.optimizer.name());
        // Each parameter and slot, and two running statistics per batch norm.
        assert!(updates > 2 * state.len() / 3, "{updates} updates of {} state tensors", state.len());
        let (copied_losses, copied_state, (none, _)) = train(false);
        assert_eq!(none, 0);
        assert_eq!((losses, state), (copied_losses, copied_state));
    }
}
