//! A new block, written the way the model zoo writes its own: the pre-activation residual block
//! (He et al., "Identity Mappings in Deep Residual Networks", 2016): `x + conv2(relu(bn2(conv1(
//! relu(bn1(x))))))`, with a 1x1 projection where the shape changes. A small net of these blocks is
//! traced once, fused, compiled, and trained for a few SGD steps on one random batch, which it
//! learns by heart: the loss falls.
//!
//! Run: `cargo run --release --example custom_block`.

use skipgrad::fuse::{Pipeline, Program, counts};
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::nn::{BatchNorm2d, Conv2d, Linear, Mode, Scope, global_avg_pool};
use skipgrad::prelude::*;

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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (batch, classes) = (32, 10);
    let tape = Tape::trace(DType::F32);
    let scope = Scope::new(&tape, 7);
    // A stem, two pre-activation blocks (the second halves the size), the final BN-ReLU, the
    // classifier.
    let stem = Conv2d::new(&scope.sub("conv1"), 3, 16, 3, 1, 1)?;
    let blocks =
        [PreActBlock::new(&scope.sub("block1"), 16, 16, 1)?, PreActBlock::new(&scope.sub("block2"), 16, 32, 2)?];
    let bn = BatchNorm2d::new(&scope.sub("bn"), 32, false)?;
    let fc = Linear::new(&scope.sub("fc"), 32, classes)?;

    let images = tape.input_spec("images", DType::F32, &[batch, 3, 16, 16])?;
    let labels = tape.input_spec("labels", DType::F32, &[batch])?;
    let mut h = stem.forward(&images)?;
    for block in &blocks {
        h = block.forward(&h, Mode::Train)?;
    }
    let h = bn.forward(&h, Mode::Train)?.relu();
    let loss = fc.forward(&global_avg_pool(&scope.sub("avgpool"), &h)?)?.cross_entropy(&labels)?;

    // Gradients of every trained tensor, then the SGD step (momentum 0.9, weight decay 1e-4): the
    // step's new parameters and velocities are updates, like the running statistics.
    let params = scope.parameters();
    let grads = grad(&loss, &params.iter().collect::<Vec<_>>())?;
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 };
    let mut velocities = vec![];
    for (p, g) in params.iter().zip(&grads) {
        let name = format!("{}.momentum", name_of(&tape, p));
        let v = tape.parameter_spec(&name, DType::F32, p.shape().dims())?;
        velocities.push((name, p.shape().numel()));
        sgd.update(p, g, &v)?;
    }
    let updates = tape.updates();
    let outputs: Vec<NodeId> = std::iter::once(loss.id()).chain(updates.iter().map(|(_, new)| new.id())).collect();
    let stages = Pipeline::training().run(Program { graph: tape.graph(), outputs })?;
    println!("fusion rewrites: {}", counts(&stages));
    let step = &stages[stages.len() - 1].program;
    let mut compiled = compile(&step.graph, &step.outputs, &CompileOptions::default())?;
    println!("{} nodes traced, {} kernel calls per step", tape.graph().len(), compiled.steps());

    // Initial values from the scope, zero velocities, one random batch.
    for entry in scope.entries() {
        let values: Vec<f32> = entry.init.to_f64_vec().into_iter().map(|v| v as f32).collect();
        compiled.set_input(&entry.name, &values)?;
    }
    for (name, len) in &velocities {
        compiled.set_input(name, &vec![0.0; *len])?;
    }
    let pixels: Vec<f32> = (0..batch * 3 * 16 * 16).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    compiled.set_input("images", &pixels)?;
    compiled.set_input("labels", &(0..batch).map(|i| (i * 7 % classes) as f32).collect::<Vec<_>>())?;

    // Train: run the step, then feed each update back into the tensor it updates.
    let mut losses = vec![];
    for step in 0..60 {
        compiled.run();
        let loss = compiled.output(0).expect("the loss")[0];
        losses.push(loss);
        if step % 10 == 0 {
            println!("step {step:2}: loss {loss:.4}");
        }
        let new_values: Vec<Vec<f32>> =
            (1..=updates.len()).map(|k| compiled.output(k).expect("an update").to_vec()).collect();
        for ((target, _), values) in updates.iter().zip(new_values) {
            compiled.set_input(&name_of(&tape, target), &values)?;
        }
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    println!("loss {first:.4} -> {last:.4}");
    assert!(last < 0.5 * first, "training on one batch should drive the loss down");
    Ok(())
}

/// The name of a parameter (or buffer).
fn name_of(tape: &Tape, v: &Var) -> String {
    tape.graph().source_name(v.id()).expect("a parameter").to_string()
}
