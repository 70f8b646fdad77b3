//! A new block, written the way the model zoo writes its own, and a net of them trained through
//! the same driver as the zoo's nets. The block is the pre-activation residual block (He et al.,
//! "Identity Mappings in Deep Residual Networks", 2016): `x + conv2(relu(bn2(conv1(relu(bn1(x))))))`,
//! with a 1x1 projection where the shape changes. The net trains on Fashion-MNIST for 300
//! iterations with the paper's recipe, saves its whole state by tensor name halfway, resumes
//! from that file in a new trainer to the same weights bit for bit, and reports its test
//! accuracy.
//!
//! Run: `cargo run --release --example custom_block` (needs `apt-get install dataset-fashion-mnist`).

use skipgrad::data::{Loader, LoaderConfig, Position, fashion_mnist, in_order};
use skipgrad::nn::{BatchNorm2d, Checkpoint, Conv2d, Linear, Mode, Model, Scope, global_avg_pool};
use skipgrad::prelude::*;
use skipgrad::train::{Schedule, Trainer, TrainerOptions};
use std::sync::Arc;

/// The pre-activation block: batch norm and ReLU come before each convolution, and nothing
/// follows the addition.
struct PreActBlock {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    /// A 1x1 projection where the block changes shape.
    shortcut: Option<Conv2d>,
}

impl PreActBlock {
    fn new(scope: &Scope, input: usize, width: usize, stride: usize) -> skipgrad::nn::Result<Self> {
        Ok(PreActBlock {
            bn1: BatchNorm2d::new(&scope.sub("bn1"), input, false)?,
            conv1: Conv2d::new(&scope.sub("conv1"), input, width, 3, stride, 1)?,
            bn2: BatchNorm2d::new(&scope.sub("bn2"), width, false)?,
            conv2: Conv2d::new(&scope.sub("conv2"), width, width, 3, 1, 1)?,
            shortcut: if stride != 1 || input != width {
                Some(Conv2d::new(&scope.sub("shortcut"), input, width, 1, stride, 0)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Var, mode: Mode) -> skipgrad::nn::Result<Var> {
        let pre = self.bn1.forward(x, mode)?.relu();
        let h = self.conv1.forward(&pre)?;
        let h = self.conv2.forward(&self.bn2.forward(&h, mode)?.relu())?;
        // The projection reads the pre-activated input, as in the paper's figure.
        let shortcut = match &self.shortcut {
            Some(conv) => conv.forward(&pre)?,
            None => x.clone(),
        };
        Ok((&h + &shortcut).expect("the branch and the shortcut have one shape"))
    }
}

/// A stem, one pre-activation block per width (each after the first halves the size), the final
/// batch norm and ReLU, the classifier: the description the driver builds on every trace.
#[derive(Clone)]
struct PreActNet {
    widths: Vec<usize>,
}

impl Model for PreActNet {
    fn name(&self) -> String {
        format!("preact-{:?}", self.widths)
    }

    fn forward(&self, scope: &Scope, images: &Var, mode: Mode) -> skipgrad::nn::Result<Var> {
        let mut h =
            Conv2d::new(&scope.sub("conv1"), images.shape().dims()[1], self.widths[0], 3, 1, 1)?.forward(images)?;
        let mut input = self.widths[0];
        for (i, &width) in self.widths.iter().enumerate() {
            let stride = if i == 0 { 1 } else { 2 };
            h = PreActBlock::new(&scope.sub("blocks").sub(i), input, width, stride)?.forward(&h, mode)?;
            input = width;
        }
        let h = BatchNorm2d::new(&scope.sub("bn"), input, false)?.forward(&h, mode)?.relu();
        Linear::new(&scope.sub("fc"), input, 10)?.forward(&global_avg_pool(&scope.sub("avgpool"), &h)?)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (train, test) = fashion_mnist(None)?;
    let model = PreActNet { widths: vec![16, 32] };
    let (batch, iterations, seed) = (64, 300, 7);
    let options = TrainerOptions::paper(batch, [1, 28, 28], seed);
    let mean = Arc::new(train.mean_image());
    let train = Arc::new(train);
    let loader_config = LoaderConfig { batch, seed, shuffle: true, augment: true, drop_last: true };
    let loader_at = |batch| Loader::new(train.clone(), mean.clone(), loader_config, Position { epoch: 0, batch });
    let schedule = Schedule::paper(iterations);
    let state_file = std::env::temp_dir().join(format!("preact-state-{}.safetensors", std::process::id()));

    // Train, saving the whole state (weights, running statistics, velocities) halfway.
    let mut trainer = Trainer::new(&model, options.clone())?;
    let (mut loader, mut losses) = (loader_at(0)?, vec![]);
    for i in 0..iterations {
        let b = loader.next_batch();
        losses.push(trainer.step(&b.images, &b.labels, schedule.lr(i, true), i)?.loss);
        if i == iterations / 2 - 1 {
            Checkpoint { config: None, tensors: trainer.training_state(), metadata: Default::default() }
                .save(&state_file)?;
        }
    }

    // Resume from the file in a new trainer: the second half reaches the same weights.
    let mut resumed = Trainer::new(&model, options)?;
    resumed.restore(&Checkpoint::load(&state_file)?.tensors)?;
    let mut loader = loader_at(iterations / 2)?;
    for i in iterations / 2..iterations {
        let b = loader.next_batch();
        resumed.step(&b.images, &b.labels, schedule.lr(i, true), i)?;
    }
    std::fs::remove_file(&state_file)?;
    println!(
        "{}: {} iterations; the resumed run's state is bit-identical: {}",
        model.name(),
        iterations,
        resumed.training_state() == trainer.training_state()
    );
    let eval = trainer.evaluate(&in_order(&test, &mean, batch)?)?;
    println!("test accuracy {:.2}% ({} images)", 100.0 * eval.accuracy, eval.images);
    let mean_of = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    println!("loss {:.4} -> {:.4}", mean_of(&losses[..20]), mean_of(&losses[losses.len() - 20..]));
    Ok(())
}
