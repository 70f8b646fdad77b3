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
use std::collections::{BTreeMap, BTreeSet};
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
    /// Given values (a loaded checkpoint): used instead of drawing, with what did not fit.
    given: Option<Given>,
}

/// Values given by name, and how the model's tensors matched them.
#[derive(Default)]
struct Given {
    values: BTreeMap<String, Tensor>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

/// How a model's tensors failed to match given values: names missing from them, names they have
/// that the model does not, and (name, the model's dims, the given dims) of tensors of another
/// shape.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mismatch {
    /// Tensors the model needs that are not given.
    pub missing: Vec<String>,
    /// Given tensors the model does not have.
    pub unexpected: Vec<String>,
    /// (name, the model's dims, the given dims).
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Mismatch {
    /// True when everything matched.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.misshaped.is_empty()
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = vec![];
        if !self.missing.is_empty() {
            parts.push(format!("missing {}", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected {}", self.unexpected.join(", ")));
        }
        if !self.misshaped.is_empty() {
            let shapes: Vec<String> =
                self.misshaped.iter().map(|(n, want, got)| format!("{n} (model {want:?}, file {got:?})")).collect();
            parts.push(format!("mis-shaped {}", shapes.join(", ")));
        }
        write!(f, "{}", parts.join("; "))
    }
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
        let store = Store { entries: vec![], calls: vec![], rng: ChaCha8Rng::seed_from_u64(seed), given: None };
        Scope { tape: tape.clone(), prefix: String::new(), store: Rc::new(RefCell::new(store)) }
    }

    /// A root scope whose tensors take the `values` of their names (a loaded checkpoint) instead
    /// of drawing them. Tensors without a value of their shape start at zero and are reported by
    /// [`Scope::mismatch`].
    pub fn with_values(tape: &Tape, values: BTreeMap<String, Tensor>) -> Scope {
        let scope = Scope::new(tape, 0);
        scope.store.borrow_mut().given = Some(Given { values, ..Given::default() });
        scope
    }

    /// With given values: how the tensors created so far matched them (empty when all did).
    pub fn mismatch(&self) -> Mismatch {
        let store = self.store.borrow();
        let Some(given) = &store.given else { return Mismatch::default() };
        Mismatch {
            missing: given.missing.clone(),
            unexpected: given.values.keys().filter(|k| !given.used.contains(*k)).cloned().collect(),
            misshaped: given.misshaped.clone(),
        }
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
        let dtype = self.tape.dtype();
        let given = store.given.as_mut().map(|g| {
            let found = g.values.get(&name).cloned();
            match found {
                Some(t) if t.shape().dims() == dims => {
                    g.used.insert(name.clone());
                    Some(t.cast(dtype))
                }
                Some(t) => {
                    g.used.insert(name.clone());
                    g.misshaped.push((name.clone(), dims.to_vec(), t.shape().dims().to_vec()));
                    None
                }
                None => {
                    g.missing.push(name.clone());
                    None
                }
            }
        });
        let init = if given.is_some() { Init::Zeros } else { init };
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
        let drawn = match dtype {
            DType::F32 => Tensor::f32(dims, values.iter().map(|&v| v as f32).collect()),
            DType::F64 => Tensor::f64(dims, values),
        }
        .map_err(|e| self.layer_error(&name, skipgrad_autodiff::Error::from(e)))?;
        let tensor = given.flatten().unwrap_or(drawn);
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
