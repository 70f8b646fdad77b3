//! Where a model's tensors come from: a [`Scope`] records each parameter and buffer on a tape
//! under a hierarchical name (`layer1.0.conv1.weight`), draws its initial value from one seeded
//! generator, and logs each layer's output for summaries.

use crate::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use skipgrad_autodiff::{Mode, Tape, Var};
use skipgrad_ir::{DType, Tensor};
use std::cell::RefCell;
use std::rc::Rc;

/// Whether a tensor is trained (a parameter) or only updated by its layer (a buffer, like batch
/// norm's running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Trained by the optimizer.
    Parameter,
    /// State the layer updates itself.
    Buffer,
}

/// How a tensor's initial value is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Normal with mean 0 and this standard deviation (He initialisation: `sqrt(2 / fan)`).
    Normal(f64),
    /// Uniform in `[-bound, bound)` (PyTorch's `nn.Linear`: `1 / sqrt(fan_in)`).
    Uniform(f64),
}

/// One named tensor of a model.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Hierarchical name, PyTorch style.
    pub name: String,
    /// Parameter or buffer.
    pub kind: Kind,
    /// The tensor on the tape.
    pub var: Var,
    /// Its initial value.
    pub init: Tensor,
}

/// One layer's call, as summaries show it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCall {
    /// The layer's hierarchical name.
    pub name: String,
    /// The layer's type (`Conv2d`, `BatchNorm2d`, ...).
    pub kind: &'static str,
    /// Its output's dims.
    pub output: Vec<usize>,
    /// Parameters it owns (not buffers).
    pub parameters: usize,
    /// Multiply-adds per input image (convolutions and linear layers; 0 for the rest).
    pub multiply_adds: u64,
}

struct Store {
    entries: Vec<Entry>,
    calls: Vec<LayerCall>,
    rng: ChaCha8Rng,
}

/// A naming scope on a tape: `scope.sub("layer1").sub(0)` names tensors `layer1.0.*`. Clones and
/// sub-scopes share one store of tensors and one generator, so the tensors a model creates, in
/// order, depend only on the seed (ChaCha8: the same values on every machine).
#[derive(Clone)]
pub struct Scope {
    tape: Tape,
    prefix: String,
    store: Rc<RefCell<Store>>,
}

impl Scope {
    /// A root scope recording on `tape`, drawing initial values from `seed`.
    pub fn new(tape: &Tape, seed: u64) -> Scope {
        let store = Store { entries: vec![], calls: vec![], rng: ChaCha8Rng::seed_from_u64(seed) };
        Scope { tape: tape.clone(), prefix: String::new(), store: Rc::new(RefCell::new(store)) }
    }

    /// The scope `name` inside this one.
    pub fn sub(&self, name: impl std::fmt::Display) -> Scope {
        Scope { tape: self.tape.clone(), prefix: self.name(&name.to_string()), store: self.store.clone() }
    }

    /// The full name of `leaf` in this scope.
    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() { leaf.to_string() } else { format!("{}.{leaf}", self.prefix) }
    }

    /// This scope's own name (`layer1.0.conv1`).
    pub fn path(&self) -> &str {
        &self.prefix
    }

    /// The tape tensors are recorded on.
    pub fn tape(&self) -> &Tape {
        &self.tape
    }

    /// A trained tensor `leaf` of `dims`, initialised by `init`.
    pub fn parameter(&self, leaf: &str, dims: &[usize], init: Init) -> Result<Var> {
        self.tensor(leaf, dims, init, Kind::Parameter)
    }

    /// A buffer `leaf` of `dims` (state a layer updates itself), initialised by `init`.
    pub fn buffer(&self, leaf: &str, dims: &[usize], init: Init) -> Result<Var> {
        self.tensor(leaf, dims, init, Kind::Buffer)
    }

    fn tensor(&self, leaf: &str, dims: &[usize], init: Init, kind: Kind) -> Result<Var> {
        let name = self.name(leaf);
        let mut store = self.store.borrow_mut();
        if store.entries.iter().any(|e| e.name == name) {
            return Err(Error::Duplicate(name));
        }
        let n: usize = dims.iter().product();
        let values: Vec<f64> = match init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => {
                let normal = Normal::new(0.0, std).map_err(|e| self.config(&name, e.to_string()))?;
                (0..n).map(|_| normal.sample(&mut store.rng)).collect()
            }
            Init::Uniform(bound) => {
                let uniform = Uniform::new(-bound, bound).map_err(|e| self.config(&name, e.to_string()))?;
                (0..n).map(|_| uniform.sample(&mut store.rng)).collect()
            }
        };
        let dtype = self.tape.dtype();
        let tensor = match dtype {
            DType::F32 => Tensor::f32(dims, values.iter().map(|&v| v as f32).collect()),
            DType::F64 => Tensor::f64(dims, values),
        }
        .map_err(|e| self.layer_error(&name, skipgrad_autodiff::Error::from(e)))?;
        let var = match self.tape.mode() {
            Mode::Eager => self.tape.parameter(&name, tensor.clone()),
            Mode::Trace => self.tape.parameter_spec(&name, dtype, dims),
        }
        .map_err(|e| self.layer_error(&name, e))?;
        store.entries.push(Entry { name, kind, var: var.clone(), init: tensor });
        Ok(var)
    }

    /// Records a layer's call (for summaries).
    pub fn log(&self, kind: &'static str, output: &Var, parameters: usize, multiply_adds: u64) {
        let call = LayerCall {
            name: self.prefix.clone(),
            kind,
            output: output.shape().dims().to_vec(),
            parameters,
            multiply_adds,
        };
        self.store.borrow_mut().calls.push(call);
    }

    /// Every parameter and buffer created so far, in creation order.
    pub fn entries(&self) -> Vec<Entry> {
        self.store.borrow().entries.clone()
    }

    /// The trained tensors, in creation order.
    pub fn parameters(&self) -> Vec<Var> {
        self.store.borrow().entries.iter().filter(|e| e.kind == Kind::Parameter).map(|e| e.var.clone()).collect()
    }

    /// Every layer call logged so far, in order.
    pub fn calls(&self) -> Vec<LayerCall> {
        self.store.borrow().calls.clone()
    }

    /// The error of layer `name` from a tape error.
    pub fn layer_error(&self, name: &str, source: skipgrad_autodiff::Error) -> Error {
        Error::Layer { layer: name.to_string(), source: Box::new(source) }
    }

    fn config(&self, name: &str, message: String) -> Error {
        Error::Config { name: name.to_string(), message }
    }
}
