//! Model summaries: each layer's output shape, parameters and multiply-adds per image, and the
//! totals, from one traced forward pass.

use crate::Result;
use crate::layers::Mode;
use crate::resnet::{Config, ResNet};
use crate::scope::{Kind, LayerCall, Scope};
use skipgrad_autodiff::Tape;
use skipgrad_ir::DType;
use std::fmt;

/// A model's layers and totals.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The model's name.
    pub model: String,
    /// Input (channels, height, width).
    pub input: [usize; 3],
    /// Every layer call of one forward pass, in order.
    pub layers: Vec<LayerCall>,
    /// Trained parameters.
    pub parameters: usize,
    /// Buffer elements (batch norm's running statistics).
    pub buffers: usize,
    /// Multiply-adds of one image's forward pass (convolutions and the classifier).
    pub multiply_adds: u64,
}

/// The summary of `config` for one image of `input` (channels, height, width).
pub fn summary(config: &Config, input: [usize; 3]) -> Result<Summary> {
    let tape = Tape::trace(DType::F32);
    let scope = Scope::new(&tape, 0);
    let net = ResNet::new(&scope, config)?;
    let [c, h, w] = input;
    let x = tape.input_spec("images", DType::F32, &[1, c, h, w]).map_err(|e| scope.layer_error("input", e))?;
    net.forward(&x, Mode::Eval)?;
    let entries = scope.entries();
    let count = |kind: Kind| entries.iter().filter(|e| e.kind == kind).map(|e| e.var.shape().numel()).sum();
    let layers = scope.calls();
    Ok(Summary {
        model: config.name(),
        input,
        parameters: count(Kind::Parameter),
        buffers: count(Kind::Buffer),
        multiply_adds: layers.iter().map(|l| l.multiply_adds).sum(),
        layers,
    })
}

/// `1234567` as `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c, h, w] = self.input;
        writeln!(f, "{} on {c}x{h}x{w}", self.model)?;
        let width = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(5).max(5);
        writeln!(
            f,
            "{:<width$}  {:<11}  {:>14}  {:>10}  {:>14}",
            "layer", "type", "output", "parameters", "multiply-adds"
        )?;
        for l in &self.layers {
            let shape = l.output[1..].iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
            let params = if l.parameters > 0 { grouped(l.parameters as u64) } else { "-".into() };
            let macs = if l.multiply_adds > 0 { grouped(l.multiply_adds) } else { "-".into() };
            writeln!(f, "{:<width$}  {:<11}  {:>14}  {:>10}  {:>14}", l.name, l.kind, shape, params, macs)?;
        }
        writeln!(
            f,
            "total: {} parameters ({} buffer values), {} multiply-adds per image",
            grouped(self.parameters as u64),
            grouped(self.buffers as u64),
            grouped(self.multiply_adds)
        )
    }
}
