//! What the training driver trains: any network that declares its tensors through a [`Scope`]
//! and builds its forward pass on a [`Var`]. The zoo's nets are one implementer: their
//! [`Config`].

use crate::{Config, Mode, ResNet, Result, Scope};
use skipgrad_autodiff::Var;

/// A trainable network, as a description the driver builds again on every trace (the training
/// step, the evaluation graph). [`Model::forward`] declares the model's tensors in `scope`, which
/// names them and draws their initial values, and returns the logits of `images`: the same
/// tensors, in the same order, on every call.
///
/// ```
/// use skipgrad_autodiff::{Tape, Var};
/// use skipgrad_ir::DType;
/// use skipgrad_nn::{Conv2d, Linear, Mode, Model, Result, Scope, global_avg_pool};
///
/// /// One convolution, then the classifier.
/// #[derive(Clone)]
/// struct Tiny;
///
/// impl Model for Tiny {
///     fn name(&self) -> String {
///         "tiny".into()
///     }
///     fn forward(&self, scope: &Scope, images: &Var, _mode: Mode) -> Result<Var> {
///         let conv = Conv2d::new(&scope.sub("conv"), 1, 8, 3, 1, 1)?;
///         let fc = Linear::new(&scope.sub("fc"), 8, 10)?;
///         let h = conv.forward(images)?.relu();
///         fc.forward(&global_avg_pool(&scope.sub("avgpool"), &h)?)
///     }
/// }
///
/// let tape = Tape::trace(DType::F32);
/// let scope = Scope::new(&tape, 0);
/// let images = tape.input_spec("images", DType::F32, &[4, 1, 28, 28]).unwrap();
/// let logits = Tiny.forward(&scope, &images, Mode::Train).unwrap();
/// assert_eq!(logits.shape().dims(), &[4, 10]);
/// assert_eq!(scope.entries().len(), 3); // conv.weight, fc.weight, fc.bias
/// ```
pub trait Model {
    /// A short name for messages and logs (`resnet20`).
    fn name(&self) -> String;

    /// Declares the model's tensors in `scope` and returns the logits `[N, classes]` of `images`
    /// `[N, C, H, W]` in `mode`.
    fn forward(&self, scope: &Scope, images: &Var, mode: Mode) -> Result<Var>;

    /// The zoo configuration, when the model is one of the zoo's nets: checkpoints record it and
    /// rebuild the net from it. Other models are rebuilt by their own code, and their tensors are
    /// restored by name.
    fn config(&self) -> Option<&Config> {
        None
    }
}

impl Model for Config {
    fn name(&self) -> String {
        Config::name(self)
    }

    fn forward(&self, scope: &Scope, images: &Var, mode: Mode) -> Result<Var> {
        ResNet::new(scope, self)?.forward(images, mode)
    }

    fn config(&self) -> Option<&Config> {
        Some(self)
    }
}
