//! A network the zoo does not know, trained through the same driver as the zoo's nets: a
//! pre-activation residual net defined here as a [`Model`] trains, saves its whole state by
//! tensor name, and resumes to the weights an uninterrupted run has, bit for bit; its weights
//! alone load into a new trainer that evaluates identically; mismatched tensors are errors that
//! name them.

use skipgrad_autodiff::AdamW;
use skipgrad_autodiff::Var;
use skipgrad_data::Batch;
use skipgrad_nn::{BatchNorm2d, Checkpoint, Conv2d, Linear, Mode, Model, Result, Scope, global_avg_pool};
use skipgrad_train::{StateKind, Trainer, TrainerOptions};
use std::collections::BTreeMap;

/// A stem, `blocks` pre-activation blocks (batch norm and ReLU before each convolution, nothing
/// after the addition), the final batch norm and ReLU, the classifier.
#[derive(Clone)]
struct PreAct {
    width: usize,
    blocks: usize,
}

impl Model for PreAct {
    fn name(&self) -> String {
        format!("preact-{}x{}", self.blocks, self.width)
    }

    fn forward(&self, scope: &Scope, images: &Var, mode: Mode) -> Result<Var> {
        let c = images.shape().dims()[1];
        let mut h = Conv2d::new(&scope.sub("conv1"), c, self.width, 3, 1, 1)?.forward(images)?;
        for i in 0..self.blocks {
            let s = scope.sub("blocks").sub(i);
            let pre = BatchNorm2d::new(&s.sub("bn1"), self.width, false)?.forward(&h, mode)?.relu();
            let y = Conv2d::new(&s.sub("conv1"), self.width, self.width, 3, 1, 1)?.forward(&pre)?;
            let y = BatchNorm2d::new(&s.sub("bn2"), self.width, false)?.forward(&y, mode)?.relu();
            let y = Conv2d::new(&s.sub("conv2"), self.width, self.width, 3, 1, 1)?.forward(&y)?;
            h = (&y + &h).map_err(|e| s.layer_error(s.path(), e))?;
        }
        let h = BatchNorm2d::new(&scope.sub("bn"), self.width, false)?.forward(&h, mode)?.relu();
        Linear::new(&scope.sub("fc"), self.width, 10)?.forward(&global_avg_pool(&scope.sub("avgpool"), &h)?)
    }
}

const MODEL: PreAct = PreAct { width: 8, blocks: 2 };

fn options() -> TrainerOptions {
    TrainerOptions { threads: 2, ..TrainerOptions::paper(4, [1, 8, 8], 3) }
}

/// Batch `i` of a fixed synthetic stream.
fn batch(i: u64) -> (Vec<f32>, Vec<f32>) {
    let images = (0..4 * 8 * 8).map(|k| (((k as u64 * 7919 + i * 104_729) % 1000) as f32) / 500.0 - 1.0).collect();
    let labels = (0..4).map(|k| ((k as u64 * 3 + i) % 10) as f32).collect();
    (images, labels)
}

fn train(trainer: &mut Trainer, iterations: std::ops::Range<u64>) -> Vec<f32> {
    let lr = if trainer.optimizer().name() == "adamw" { 0.003 } else { 0.05 };
    iterations
        .map(|i| {
            let (images, labels) = batch(i);
            trainer.step(&images, &labels, lr, i).unwrap().loss
        })
        .collect()
}

#[test]
fn a_user_model_trains_and_resumes_bit_for_bit() {
    trains_and_resumes_bit_for_bit(options());
}

/// AdamW's moments are state like SGD's velocities, and its step count comes from the
/// iteration, so a resumed run continues its bias corrections where they were.
#[test]
fn a_user_model_trains_and_resumes_bit_for_bit_with_adamw() {
    let options = options().with_optimizer(AdamW::default());
    let trainer = Trainer::new(&MODEL, options.clone()).unwrap();
    let kinds: Vec<(&str, StateKind)> = trainer
        .state_tensors()
        .iter()
        .map(|t| (t.name.as_str(), t.kind))
        .filter(|(n, _)| n.starts_with("fc."))
        .collect();
    assert_eq!(
        kinds,
        [
            ("fc.weight", StateKind::Parameter),
            ("fc.bias", StateKind::Parameter),
            ("fc.weight.exp_avg", StateKind::Optimizer),
            ("fc.weight.exp_avg_sq", StateKind::Optimizer),
            ("fc.bias.exp_avg", StateKind::Optimizer),
            ("fc.bias.exp_avg_sq", StateKind::Optimizer),
        ]
    );
    trains_and_resumes_bit_for_bit(options);
}

fn trains_and_resumes_bit_for_bit(options: TrainerOptions) {
    let mut whole = Trainer::new(&MODEL, options.clone()).unwrap();
    let losses = train(&mut whole, 0..8);
    assert!(losses[7] < losses[0], "the loss falls: {losses:?}");

    let mut first = Trainer::new(&MODEL, options.clone()).unwrap();
    train(&mut first, 0..4);
    // The whole state by name, through a file's bytes: no zoo configuration in it.
    let saved = Checkpoint { config: None, tensors: first.training_state(), metadata: BTreeMap::new() };
    assert_eq!(first.model().config(), None);
    let loaded = Checkpoint::from_bytes("state.safetensors", &saved.to_bytes().unwrap()).unwrap();
    assert_eq!(loaded, saved);
    let mut resumed = Trainer::new(&MODEL, TrainerOptions { seed: 99, ..options }).unwrap();
    resumed.restore(&loaded.tensors).unwrap();
    assert_eq!(train(&mut resumed, 4..8), losses[4..]);
    assert_eq!(resumed.training_state(), whole.training_state());
}

#[test]
fn a_user_models_weights_load_into_a_new_trainer() {
    let mut trained = Trainer::new(&MODEL, options()).unwrap();
    train(&mut trained, 0..3);
    let checkpoint = trained.checkpoint();
    assert!(checkpoint.config.is_none() && checkpoint.tensors.contains_key("blocks.1.conv2.weight"));
    let (images, labels) = batch(100);
    let batches = [Batch { images, labels, valid: 4, position: Default::default() }];
    let mut again =
        Trainer::with_weights(&MODEL, &checkpoint.tensors, TrainerOptions { seed: 5, ..options() }).unwrap();
    assert_eq!(again.evaluate(&batches).unwrap(), trained.evaluate(&batches).unwrap());

    // A zoo checkpoint's `build` cannot rebuild it, and says why.
    let error = checkpoint.build(&skipgrad_autodiff::Tape::trace(skipgrad_ir::DType::F32)).err().unwrap().to_string();
    assert!(error.contains("no zoo model's configuration"), "{error}");
}

#[test]
fn mismatched_tensors_are_named() {
    let wider = PreAct { width: 16, ..MODEL };
    let checkpoint = Trainer::new(&wider, options()).unwrap().checkpoint();
    let error = Trainer::with_weights(&MODEL, &checkpoint.tensors, options()).err().unwrap().to_string();
    assert_eq!(error, "conv1.weight is [16, 1, 3, 3] in the checkpoint, [8, 1, 3, 3] in the model");
    let mut tensors = checkpoint.tensors;
    tensors.remove("fc.bias");
    let error = Trainer::with_weights(&wider, &tensors, options()).err().unwrap().to_string();
    assert_eq!(error, "the checkpoint has no fc.bias");
}

/// A synthetic dataset of `n` 1x8x8 images of 10 classes.
fn dataset(n: usize, salt: usize) -> skipgrad_data::Dataset {
    let images = (0..n * 64).map(|k| ((k * 7919 + salt * 104_729) % 251) as u8).collect();
    let labels = (0..n).map(|k| ((k * 3 + salt) % 10) as u8).collect();
    skipgrad_data::Dataset { images, labels, shape: [1, 8, 8], classes: 10 }
}

/// The run driver trains a user model as `skipgrad train` trains the zoo's: a run stopped after
/// iteration 20 of 32 and resumed by a new trainer ends with the weights, optimizer state, losses
/// and test result of an uninterrupted run, bit for bit; it writes its configuration, metrics,
/// checkpoint and model; and it refuses to resume a run of another model or optimizer.
#[test]
fn the_run_driver_resumes_a_user_model_bit_for_bit() {
    use skipgrad_train::{Length, RunData, RunOptions, run};
    let root = std::env::temp_dir().join(format!("skipgrad-driver-{}", std::process::id()));
    let data = RunData::new(dataset(64, 1), dataset(10, 2));
    let plan = |dir: &str| RunOptions { progress: false, ..RunOptions::new(root.join(dir), Length::Epochs(2)) };
    let mut straight = Trainer::new(&MODEL, options()).unwrap();
    let whole = run(&mut straight, &data, &plan("straight")).unwrap();
    assert_eq!((whole.iterations, whole.stopped, whole.test.map(|t| t.images)), (32, false, Some(10)));

    let interrupted = RunOptions { until_iteration: Some(20), ..plan("interrupted") };
    let half = run(&mut Trainer::new(&MODEL, options()).unwrap(), &data, &interrupted).unwrap();
    assert_eq!((half.iterations, half.stopped, half.test), (20, true, None));
    let mut resumed = Trainer::new(&MODEL, options()).unwrap();
    let rest = run(&mut resumed, &data, &RunOptions { resume: true, ..plan("interrupted") }).unwrap();
    assert_eq!(rest.test, whole.test);
    assert_eq!(resumed.training_state(), straight.training_state());
    let losses = |dir: &str| -> Vec<String> {
        let text = std::fs::read_to_string(root.join(dir).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].to_string()).collect()
    };
    assert_eq!(losses("interrupted"), losses("straight"));
    for file in ["config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors"] {
        assert!(root.join("straight").join(file).exists(), "{file}");
    }

    // Another model, or another optimizer, cannot resume this run.
    let wider = PreAct { width: 16, ..MODEL };
    let error =
        run(&mut Trainer::new(&wider, options()).unwrap(), &data, &RunOptions { resume: true, ..plan("straight") });
    assert!(error.unwrap_err().to_string().contains("run.model"));
    let adamw = Trainer::new(&MODEL, options().with_optimizer(AdamW::default()));
    let error = run(&mut adamw.unwrap(), &data, &RunOptions { resume: true, ..plan("straight") });
    assert!(error.unwrap_err().to_string().contains("run.optimizer"));
    std::fs::remove_dir_all(&root).unwrap();
}
