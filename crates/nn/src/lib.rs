//! Layers and the model zoo of skipgrad, written with the research API.
//!
//! A [`Scope`] names every parameter and buffer hierarchically and draws its initial value from
//! one seeded generator; the layers ([`Conv2d`], [`BatchNorm2d`], [`Linear`], [`MaxPool2d`]) are
//! small structs with a `forward`; [`ResNet`] builds the paper's CIFAR and ImageNet nets, plain or
//! residual, with shortcut options A, B and C, named as torchvision names them; [`summary`] lists
//! each layer's output shape, parameters and multiply-adds; a [`Checkpoint`] saves a net's tensors
//! (and a zoo net's configuration) as safetensors that PyTorch loads, and rebuilds a zoo net from
//! them. A [`Model`] is what the training driver trains: a zoo [`Config`], or any network a
//! researcher writes.
//!
//! ```
//! use skipgrad_autodiff::Tape;
//! use skipgrad_ir::DType;
//! use skipgrad_nn::{Config, Mode, ResNet, Scope};
//!
//! let tape = Tape::trace(DType::F32);
//! let scope = Scope::new(&tape, 42);
//! let net = ResNet::new(&scope, &Config::named("resnet20").unwrap()).unwrap();
//! let x = tape.input_spec("images", DType::F32, &[128, 3, 32, 32]).unwrap();
//! let logits = net.forward(&x, Mode::Train).unwrap();
//! assert_eq!(logits.shape().dims(), &[128, 10]);
//! assert_eq!(scope.parameters().iter().map(|p| p.shape().numel()).sum::<usize>(), 269_722);
//! ```

mod checkpoint;
mod error;
mod layers;
mod model;
mod resnet;
mod scope;
mod summary;

pub use checkpoint::{Checkpoint, INPUT_MEAN, TRAINING_STATE, write_atomically};
pub use error::Error;
pub use layers::{BatchNorm2d, Conv2d, Linear, MaxPool2d, Mode, global_avg_pool};
pub use model::Model;
pub use resnet::{
    BasicBlock, Block, Bottleneck, Config, Family, MAX_DEPTH, ResNet, Shortcut, ShortcutPath, response_std,
};
pub use scope::{Entry, Init, Kind, LayerCall, Mismatch, Scope};
pub use summary::{Summary, summary};

/// Result type of the layers and models.
pub type Result<T, E = Error> = std::result::Result<T, E>;
