//! Checkpoints in safetensors, named as torchvision names a ResNet's tensors, so PyTorch loads
//! them with `load_state_dict(safetensors.torch.load_file(path))`. For a zoo net the file's
//! metadata records its configuration, so [`Checkpoint::build`] rebuilds the right net; any other
//! model is rebuilt by its own code, and its tensors are restored by name. Files are written
//! to a temporary name, synced and renamed: a crash leaves the old file or the new one, never half
//! of one.

use crate::resnet::{Config, Family, ResNet, Shortcut};
use crate::scope::{Entry, Scope};
use crate::{Error, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use skipgrad_autodiff::Tape;
use skipgrad_ir::{Data, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

/// The name of the tensor that holds the per-pixel mean image subtracted from the inputs (on the
/// `[0, 1]` pixel scale), so a checkpoint can be evaluated elsewhere exactly.
pub const INPUT_MEAN: &str = "input_mean";

/// The prefix of tensors that belong to a training run's state (the optimizer's), not to the net.
pub const TRAINING_STATE: &str = "optimizer.";

/// The metadata key of the format's name and version.
const FORMAT: &str = "skipgrad.format";
/// This format.
const FORMAT_V1: &str = "skipgrad-checkpoint-1";

/// A model's named tensors (parameters and buffers), its configuration when it is a zoo net, plus
/// free-form metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The zoo net the tensors belong to; `None` for a model the zoo does not describe.
    pub config: Option<Config>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// More metadata (strings), stored beside the configuration: the training driver records the
    /// input preprocessing here.
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensors of a model built in `scope`, each valued by `value` (its initial value, or the
    /// current one a training run holds).
    pub fn of_scope(config: &Config, scope: &Scope, mut value: impl FnMut(&Entry) -> Tensor) -> Checkpoint {
        let tensors = scope.entries().iter().map(|e| (e.name.clone(), value(e))).collect();
        Checkpoint { config: Some(config.clone()), tensors, metadata: BTreeMap::new() }
    }

    /// Builds the checkpoint's net on `tape` with its tensors' values. Every tensor must match
    /// (except [`INPUT_MEAN`], the preprocessing, and tensors under [`TRAINING_STATE`], which are
    /// not the net's): otherwise one error lists the missing, unexpected and mis-shaped ones. A
    /// checkpoint without a zoo configuration cannot be built here: its model's own code builds
    /// it (the training driver restores its tensors by name).
    pub fn build(&self, tape: &Tape) -> Result<(Scope, ResNet)> {
        let config = self.config.as_ref().ok_or_else(|| Error::Config {
            name: "checkpoint".into(),
            message: "it holds no zoo model's configuration: build the model with its own code and restore \
                      the tensors by name"
                .into(),
        })?;
        let mut values = self.tensors.clone();
        values.remove(INPUT_MEAN);
        values.retain(|name, _| !name.starts_with(TRAINING_STATE));
        let scope = Scope::with_values(tape, values);
        let net = ResNet::new(&scope, config)?;
        let mismatch = scope.mismatch();
        if !mismatch.is_empty() {
            return Err(Error::Mismatch { model: config.name(), mismatch });
        }
        Ok((scope, net))
    }

    /// Writes the checkpoint to `path` (f32 or f64 tensors, configuration in the metadata)
    /// atomically: to a temporary file, synced, then renamed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::Io { path: path.display().to_string(), message: e.to_string() };
        let data = self.to_bytes().map_err(|e| match e {
            Error::Io { message, .. } => Error::Io { path: path.display().to_string(), message },
            other => other,
        })?;
        write_atomically(path, &data).map_err(io)
    }

    /// The checkpoint as the bytes of a safetensors file (what [`Checkpoint::save`] writes).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let fail = |e: safetensors::SafeTensorError| Error::Io { path: "(in memory)".into(), message: e.to_string() };
        let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let (bytes, dtype) = match t.data() {
                    Data::F32(v) => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), Dtype::F32),
                    Data::F64(v) => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), Dtype::F64),
                };
                (name.clone(), bytes, dtype, t.shape().dims().to_vec())
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, data, dtype, dims)| Ok((name.as_str(), TensorView::new(*dtype, dims.clone(), data)?)))
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(fail)?;
        let mut metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert(FORMAT.into(), FORMAT_V1.into());
        metadata.extend(self.config.iter().flat_map(config_metadata));
        safetensors::serialize(views, Some(metadata)).map_err(fail)
    }

    /// Reads a checkpoint. A file that is not one (truncated, corrupt, another format, a tensor of
    /// another dtype) is an error naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Checkpoint> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::Io { path: name.clone(), message: e.to_string() })?;
        Self::from_bytes(&name, &bytes)
    }

    /// Reads a checkpoint from `bytes` (the contents of the file called `name`).
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Checkpoint> {
        let corrupt = |message: String| Error::Corrupt { path: name.to_string(), message };
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| corrupt(format!("not a safetensors file: {e}")))?;
        let mut metadata: BTreeMap<String, String> =
            header.metadata().clone().unwrap_or_default().into_iter().collect();
        let config = config_from(&mut metadata).map_err(corrupt)?;
        let file = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (tensor, view) in file.tensors() {
            let dims = view.shape().to_vec();
            let data = view.data();
            let values = match view.dtype() {
                Dtype::F32 => {
                    Data::F32(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
                }
                Dtype::F64 => Data::F64(
                    data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
                ),
                other => return Err(corrupt(format!("tensor {tensor} is {other:?}; checkpoints hold F32 or F64"))),
            };
            let t = Tensor::new(dims, values).map_err(|e| corrupt(format!("tensor {tensor}: {e}")))?;
            tensors.insert(tensor, t);
        }
        Ok(Checkpoint { config, tensors, metadata })
    }
}

/// Writes `bytes` to `path` atomically: to a temporary `.NAME.tmp-PID` beside it, synced, then
/// renamed over `path`. A failed write removes its temporary file; a killed one leaves it, and
/// `path` is intact either way.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&temporary)?;
    if let Err(e) = file.write_all(bytes).and_then(|_| file.sync_all()) {
        let _ = std::fs::remove_file(&temporary);
        return Err(e);
    }
    std::fs::rename(&temporary, path)
}

/// A zoo net's configuration as metadata strings (the format's name is written beside them for
/// every checkpoint).
fn config_metadata(config: &Config) -> Vec<(String, String)> {
    let shortcut = match config.shortcut {
        Shortcut::A => "A",
        Shortcut::B => "B",
        Shortcut::C => "C",
    };
    [
        ("skipgrad.model", config.name()),
        ("skipgrad.in_channels", config.in_channels.to_string()),
        ("skipgrad.classes", config.classes.to_string()),
        ("skipgrad.shortcut", shortcut.to_string()),
        ("skipgrad.zero_init_residual", config.zero_init_residual.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Reads (and removes) the format and the configuration from `metadata`: `None` when the file
/// holds no zoo net's configuration.
fn config_from(metadata: &mut BTreeMap<String, String>) -> std::result::Result<Option<Config>, String> {
    match metadata.remove(FORMAT).as_deref() {
        Some(FORMAT_V1) => {}
        Some(other) => return Err(format!("format {other:?}; this version reads {FORMAT_V1:?}")),
        None => return Err(format!("no {FORMAT:?} in the metadata: not a skipgrad checkpoint")),
    }
    if !metadata.contains_key("skipgrad.model") {
        return Ok(None);
    }
    let mut take = |key: &str| metadata.remove(key).ok_or_else(|| format!("the metadata has no {key:?}"));
    let model = take("skipgrad.model")?;
    let mut config = Config::named(&model).map_err(|e| e.to_string())?;
    let number = |key: &str, v: String| v.parse::<usize>().map_err(|_| format!("{key} is {v:?}, not a count"));
    config.in_channels = number("skipgrad.in_channels", take("skipgrad.in_channels")?)?;
    config.classes = number("skipgrad.classes", take("skipgrad.classes")?)?;
    config.shortcut = match take("skipgrad.shortcut")?.as_str() {
        "A" => Shortcut::A,
        "B" => Shortcut::B,
        "C" => Shortcut::C,
        other => return Err(format!("skipgrad.shortcut is {other:?}, not A, B or C")),
    };
    config.zero_init_residual = take("skipgrad.zero_init_residual")? == "true";
    if config.family == Family::Cifar && config.depth < 8 {
        return Err(format!("model {model:?} is not a net"));
    }
    Ok(Some(config))
}
