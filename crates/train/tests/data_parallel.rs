//! The data-parallel step, in one process: its two graphs (gradients, then the update of their
//! sum) give a world of one rank exactly the state the whole step gives; summed over two halves
//! of a batch they average the halves' gradients (the full batch's gradient, for a net without
//! batch norm); the trainer switches between the two forms keeping its state; a sum of the wrong
//! length and a non-finite loss are refused, leaving the state as it was.

use skipgrad_autodiff::Var;
use skipgrad_nn::{Config, Conv2d, Linear, Mode, Model, Result, Scope, global_avg_pool};
use skipgrad_train::{Error, Trainer, TrainerOptions};

/// Images and labels of batch `i` of a synthetic stream, `n` images of 1x8x8.
fn batch(i: u64, n: usize) -> (Vec<f32>, Vec<f32>) {
    let images = (0..n * 64).map(|k| (((k as u64 * 7919 + i * 104_729) % 1000) as f32) / 500.0 - 1.0).collect();
    let labels = (0..n).map(|k| ((k as u64 * 3 + i) % 10) as f32).collect();
    (images, labels)
}

fn options(batch: usize) -> TrainerOptions {
    TrainerOptions { threads: 1, ..TrainerOptions::paper(batch, [1, 8, 8], 5) }
}

/// Every state tensor's values, by name.
fn state(trainer: &mut Trainer) -> Vec<(String, Vec<f32>)> {
    let names: Vec<String> = trainer.state_tensors().iter().map(|t| t.name.clone()).collect();
    names.into_iter().map(|n| (n.clone(), trainer.value(&n).unwrap().to_vec())).collect()
}

#[test]
fn one_rank_of_the_split_step_is_the_whole_step_bit_for_bit() {
    let config = Config { in_channels: 1, ..Config::named("resnet8").unwrap() };
    let mut whole = Trainer::new(&config, options(4)).unwrap();
    let mut split = Trainer::new(&config, options(4)).unwrap();
    let mut buffer = vec![];
    for i in 0..4 {
        let (images, labels) = batch(i, 4);
        let a = whole.step(&images, &labels, 0.05, i).unwrap();
        // Iteration 2 runs the whole step on the split trainer: the state carries across forms.
        let b = if i == 2 {
            split.step(&images, &labels, 0.05, i).unwrap()
        } else {
            split.gradients(&images, &labels, &mut buffer).unwrap();
            split.apply_gradients(&buffer, 1, 0.05, i).unwrap()
        };
        assert_eq!(a, b, "iteration {i}");
    }
    assert_eq!(state(&mut whole), state(&mut split));
    let (images, labels) = batch(9, 4);
    split.gradients(&images, &labels, &mut buffer).unwrap();
    let (in_place, updates) = split.updates_in_place().unwrap();
    assert_eq!(in_place, updates, "the update graph writes every parameter and slot in place");
}

/// A net without batch norm: its gradient over a batch is the mean of its halves'.
#[derive(Clone)]
struct NoNorm;

impl Model for NoNorm {
    fn name(&self) -> String {
        "no-norm".into()
    }

    fn forward(&self, scope: &Scope, images: &Var, _: Mode) -> Result<Var> {
        let h = Conv2d::new(&scope.sub("conv"), 1, 8, 3, 1, 1)?.forward(images)?.relu();
        Linear::new(&scope.sub("fc"), 8, 10)?.forward(&global_avg_pool(&scope.sub("avgpool"), &h)?)
    }
}

#[test]
fn two_halves_summed_train_as_the_whole_batch_without_batch_norm() {
    let mut whole = Trainer::new(&NoNorm, options(8)).unwrap();
    let mut halves = Trainer::new(&NoNorm, options(4)).unwrap();
    let (mut a, mut b) = (vec![], vec![]);
    for i in 0..3 {
        let (images, labels) = batch(i, 8);
        let expected = whole.step(&images, &labels, 0.1, i).unwrap();
        halves.gradients(&images[..4 * 64], &labels[..4], &mut a).unwrap();
        halves.gradients(&images[4 * 64..], &labels[4..], &mut b).unwrap();
        let summed: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        let got = halves.apply_gradients(&summed, 2, 0.1, i).unwrap();
        assert!((got.loss - expected.loss).abs() < 1e-6, "iteration {i}: {got:?} against {expected:?}");
        assert_eq!(got.error, expected.error);
    }
    for ((name, x), (_, y)) in state(&mut whole).iter().zip(state(&mut halves)) {
        let worst = x.iter().zip(&y).map(|(p, q)| (p - q).abs() / p.abs().max(1e-3)).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{name}: relative difference {worst}");
    }
}

#[test]
fn a_wrong_sum_or_a_non_finite_loss_leaves_the_state_as_it_was() {
    let mut trainer = Trainer::new(&NoNorm, options(4)).unwrap();
    let before = state(&mut trainer);
    let (images, labels) = batch(0, 4);
    let mut buffer = vec![];
    trainer.gradients(&images, &labels, &mut buffer).unwrap();
    let short = trainer.apply_gradients(&buffer[1..], 1, 0.1, 0).unwrap_err().to_string();
    assert!(
        short.contains(&format!("holds {} values, the step's holds {}", buffer.len() - 1, buffer.len())),
        "{short}"
    );
    let n = buffer.len();
    buffer[n - 2] = f32::NAN;
    assert!(matches!(trainer.apply_gradients(&buffer, 2, 0.1, 7), Err(Error::NonFinite { iteration: 7, .. })));
    assert!(trainer.apply_gradients(&buffer, 0, 0.1, 0).is_err(), "0 ranks");
    assert_eq!(state(&mut trainer), before);
}
