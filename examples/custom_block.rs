//! A new block, written the way the model zoo writes its own, and a net of them trained through
//! the same driver as the zoo's nets. The block is the pre-activation residual block (He et al.,
//! "Identity Mappings in Deep Residual Networks", 2016): `x + conv2(relu(bn2(conv1(relu(bn1(x))))))`,
//! with a 1x1 projection where the shape changes. The net trains on Fashion-MNIST for 300
//! iterations with the paper's recipe through the driver `skipgrad train` uses (metrics, a
//! checkpoint, evaluation): stopped halfway as if interrupted, resumed by a new trainer from the
//! checkpoint (bit for bit as an uninterrupted run: `crates/train/tests/user_model.rs`), and
//! tested.
//!
//! Run: `cargo run --release --example custom_block` (needs `apt-get install dataset-fashion-mnist`).

use skipgrad::data::fashion_mnist;
use skipgrad::nn::{BatchNorm2d, Conv2d, Linear, Mode, Model, Scope, global_avg_pool};
use skipgrad::prelude::*;
use skipgrad::train::{Length, RunData, RunOptions, Trainer, TrainerOptions, run};

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
    let data = RunData::new(train, test);
    let model = PreActNet { widths: vec![16, 32] };
    let options = TrainerOptions::paper(64, [1, 28, 28], 7);
    let out = std::env::temp_dir().join(format!("preact-run-{}", std::process::id()));
    let plan = RunOptions { progress: false, ..RunOptions::new(&out, Length::Iterations(300)) };

    // Train until iteration 150, as if interrupted: the driver leaves a resumable checkpoint.
    let interrupted = RunOptions { until_iteration: Some(150), ..plan.clone() };
    let half = run(&mut Trainer::new(&model, options.clone())?, &data, &interrupted)?;
    println!("{}: stopped after iteration {}, state in {}", half.model, half.iterations, half.saved.display());

    // A new trainer resumes from the checkpoint and finishes the run.
    let mut trainer = Trainer::new(&model, options)?;
    let done = run(&mut trainer, &data, &RunOptions { resume: true, ..plan })?;
    let test = done.test.expect("a finished run is tested");
    println!(
        "resumed, {} iterations: training error {:.1}% over the last tenth",
        done.iterations,
        100.0 * done.train_error
    );
    println!("test accuracy {:.2}% ({} images), model in {}", 100.0 * test.accuracy, test.images, done.saved.display());
    std::fs::remove_dir_all(&out)?;
    Ok(())
}
