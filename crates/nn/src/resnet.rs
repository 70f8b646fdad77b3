//! The paper's nets as ordinary research-API code: CIFAR nets of depth 6n+2 and the ImageNet
//! ResNet-18 to -152, residual or plain, with shortcut options A, B and C. Tensors are named as
//! torchvision names them (`conv1.weight`, `layer1.0.bn2.running_var`, `layer2.0.downsample.0.weight`,
//! `fc.bias`), so checkpoints load into PyTorch.

use crate::layers::{BatchNorm2d, Conv2d, Linear, MaxPool2d, Mode, global_avg_pool};
use crate::scope::Scope;
use crate::{Error, Result};
use skipgrad_autodiff::Var;
use skipgrad_ir::ShortcutAttrs;
use std::fmt;

/// The shortcut where a block changes shape (the paper's section 3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortcut {
    /// Identity, subsampled, with zero channels added: no parameters (the CIFAR nets).
    A,
    /// A 1x1 convolution + batch norm projection where the shape changes, the identity elsewhere.
    B,
    /// A projection on every block.
    C,
}

/// Which of the paper's two families a net belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// 3x3 stem, three stages of 16, 32, 64 channels, basic blocks (section 4.2).
    Cifar,
    /// 7x7 stride-2 stem and max pool, four stages (Table 1).
    ImageNet,
}

/// A net's configuration: everything needed to rebuild it (checkpoints store it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// CIFAR or ImageNet layout.
    pub family: Family,
    /// Weighted layers: 6n+2 for CIFAR nets, 18, 34, 50, 101 or 152 for ImageNet nets.
    pub depth: usize,
    /// With shortcuts (a ResNet) or without (a plain net).
    pub residual: bool,
    /// The shortcut option of a residual net.
    pub shortcut: Shortcut,
    /// Input channels (3 for CIFAR-10 and ImageNet, 1 for Fashion-MNIST).
    pub in_channels: usize,
    /// Classes of the classifier.
    pub classes: usize,
    /// Start each residual block's last batch-norm scale at 0 (off in the paper).
    pub zero_init_residual: bool,
}

/// The deepest net [`Config::named`] builds: 10,000 layers, 8x the paper's ResNet-1202 (a deeper
/// name, from a command line or a checkpoint, is an error rather than a graph of millions of
/// nodes).
pub const MAX_DEPTH: usize = 10_000;

impl Config {
    /// The net called `name`: `resnet20`, `plain56`, `resnet1202`, any `resnet<6n+2>` (CIFAR,
    /// option A, 10 classes); `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`,
    /// `plain18`, `plain34` (ImageNet, option B, 1000 classes). A `cifar-` or `imagenet-` prefix
    /// picks the family of a depth both allow (`cifar-resnet50`). Dashes are optional:
    /// `ResNet-110` works too.
    pub fn named(name: &str) -> Result<Config> {
        let bad = |message: &str| Error::Config { name: name.to_string(), message: message.to_string() };
        let lower = name.to_ascii_lowercase();
        let (family, rest) = match lower.split_once('-') {
            Some(("cifar", rest)) => (Some(Family::Cifar), rest.to_string()),
            Some(("imagenet", rest)) => (Some(Family::ImageNet), rest.to_string()),
            _ => (None, lower.clone()),
        };
        let rest = rest.replace('-', "");
        let (residual, digits) = if let Some(d) = rest.strip_prefix("resnet") {
            (true, d)
        } else if let Some(d) = rest.strip_prefix("plain") {
            (false, d)
        } else {
            return Err(bad("expected resnet<depth> or plain<depth>, like resnet20, plain56 or resnet50"));
        };
        let depth: usize = digits.parse().map_err(|_| bad("the depth must be a number"))?;
        if depth > MAX_DEPTH {
            return Err(bad(&format!("depth {depth} is deeper than {MAX_DEPTH} layers")));
        }
        let imagenet = [18, 34, 50, 101, 152].contains(&depth);
        let cifar = depth >= 8 && (depth - 2).is_multiple_of(6);
        let family = match family {
            Some(f) => f,
            None if imagenet => Family::ImageNet,
            None if cifar => Family::Cifar,
            None => {
                return Err(bad(
                    "CIFAR nets have depth 6n+2 (20, 32, 44, 56, 110, 1202); ImageNet nets 18, 34, 50, 101 or 152",
                ));
            }
        };
        match family {
            Family::Cifar if !cifar => return Err(bad("CIFAR nets have depth 6n+2 with n >= 1")),
            Family::ImageNet if !imagenet => return Err(bad("ImageNet nets have depth 18, 34, 50, 101 or 152")),
            _ => {}
        }
        let (shortcut, classes) = match family {
            Family::Cifar => (Shortcut::A, 10),
            Family::ImageNet => (Shortcut::B, 1000),
        };
        Ok(Config { family, depth, residual, shortcut, in_channels: 3, classes, zero_init_residual: false })
    }

    /// The canonical name (`resnet20`, `plain34`, `cifar-resnet50`), which [`Config::named`] reads
    /// back.
    pub fn name(&self) -> String {
        let kind = if self.residual { "resnet" } else { "plain" };
        let ambiguous = [18, 34, 50, 101, 152].contains(&self.depth) && (self.depth - 2).is_multiple_of(6);
        // An ambiguous depth means ImageNet unless prefixed.
        let prefix = if ambiguous && self.family == Family::Cifar { "cifar-" } else { "" };
        format!("{prefix}{kind}{}", self.depth)
    }

    /// Whether blocks are bottlenecks (ImageNet nets of depth 50 and up).
    pub fn bottleneck(&self) -> bool {
        self.family == Family::ImageNet && self.depth >= 50
    }

    /// Blocks per stage.
    pub fn blocks(&self) -> Vec<usize> {
        match (self.family, self.depth) {
            (Family::Cifar, d) => vec![(d - 2) / 6; 3],
            (Family::ImageNet, 18) => vec![2, 2, 2, 2],
            (Family::ImageNet, 34 | 50) => vec![3, 4, 6, 3],
            (Family::ImageNet, 101) => vec![3, 4, 23, 3],
            (Family::ImageNet, _) => vec![3, 8, 36, 3],
        }
    }

    /// Width (the 3x3 convolutions' channels) of each stage.
    pub fn widths(&self) -> Vec<usize> {
        match self.family {
            Family::Cifar => vec![16, 32, 64],
            Family::ImageNet => vec![64, 128, 256, 512],
        }
    }

    /// The input's (channels, height, width) the paper uses.
    pub fn default_input(&self) -> [usize; 3] {
        match self.family {
            Family::Cifar => [self.in_channels, 32, 32],
            Family::ImageNet => [self.in_channels, 224, 224],
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())
    }
}

/// The path a block's input takes to its addition.
#[derive(Clone)]
pub enum ShortcutPath {
    /// A plain net: no shortcut.
    None,
    /// The identity.
    Identity,
    /// Option A: subsample and add zero channels.
    Pad(ShortcutAttrs),
    /// A 1x1 convolution and batch norm (`downsample.0`, `downsample.1`).
    Projection(Conv2d, BatchNorm2d),
}

impl ShortcutPath {
    /// The shortcut for a block from `input` to `output` channels at `stride`.
    fn new(scope: &Scope, config: &Config, input: usize, output: usize, stride: usize) -> Result<ShortcutPath> {
        if !config.residual {
            return Ok(ShortcutPath::None);
        }
        let changes = stride != 1 || input != output;
        Ok(match config.shortcut {
            Shortcut::A | Shortcut::B if !changes => ShortcutPath::Identity,
            Shortcut::A => {
                let extra = output - input;
                ShortcutPath::Pad(ShortcutAttrs { stride, pad_before: extra / 2, pad_after: extra - extra / 2 })
            }
            Shortcut::B | Shortcut::C => {
                let s = scope.sub("downsample");
                let conv = Conv2d::new(&s.sub(0), input, output, 1, stride, 0)?;
                ShortcutPath::Projection(conv, BatchNorm2d::new(&s.sub(1), output, false)?)
            }
        })
    }

    /// `branch + shortcut(x)`, or `branch` alone in a plain net.
    fn add(&self, scope: &Scope, x: &Var, branch: &Var, mode: Mode) -> Result<Var> {
        let fail = |e| scope.layer_error(scope.path(), e);
        let shortcut = match self {
            ShortcutPath::None => return Ok(branch.clone()),
            ShortcutPath::Identity => x.clone(),
            ShortcutPath::Pad(a) => x.shortcut_a_with(*a).map_err(fail)?,
            ShortcutPath::Projection(conv, bn) => bn.forward(&conv.forward(x)?, mode)?,
        };
        (branch + &shortcut).map_err(fail)
    }
}

/// A basic block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Clone)]
pub struct BasicBlock {
    scope: Scope,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    shortcut: ShortcutPath,
}

impl BasicBlock {
    /// A block from `input` to `width` channels, the first convolution at `stride`.
    pub fn new(scope: &Scope, config: &Config, input: usize, width: usize, stride: usize) -> Result<BasicBlock> {
        Ok(BasicBlock {
            scope: scope.clone(),
            conv1: Conv2d::new(&scope.sub("conv1"), input, width, 3, stride, 1)?,
            bn1: BatchNorm2d::new(&scope.sub("bn1"), width, false)?,
            conv2: Conv2d::new(&scope.sub("conv2"), width, width, 3, 1, 1)?,
            bn2: BatchNorm2d::new(&scope.sub("bn2"), width, config.zero_init_residual && config.residual)?,
            shortcut: ShortcutPath::new(scope, config, input, width, stride)?,
        })
    }

    /// The block's output; `responses` receives each 3x3 layer's output after batch norm.
    pub fn forward(&self, x: &Var, mode: Mode, responses: &mut Vec<(String, Var)>) -> Result<Var> {
        let h = self.bn1.forward(&self.conv1.forward(x)?, mode)?;
        responses.push((self.scope.name("bn1"), h.clone()));
        let h = self.bn2.forward(&self.conv2.forward(&h.relu())?, mode)?;
        responses.push((self.scope.name("bn2"), h.clone()));
        Ok(self.shortcut.add(&self.scope, x, &h, mode)?.relu())
    }
}

/// A bottleneck block: 1x1 to `width`, 3x3, 1x1 to `4 width`, then the addition and ReLU. The
/// stride is on the first 1x1 convolution, as in the paper (torchvision's "v1.5" moves it to the
/// 3x3; the tensors and their names are the same).
#[derive(Clone)]
pub struct Bottleneck {
    scope: Scope,
    convs: [Conv2d; 3],
    bns: [BatchNorm2d; 3],
    shortcut: ShortcutPath,
}

impl Bottleneck {
    /// A block from `input` channels through `width` to `4 width`, at `stride`.
    pub fn new(scope: &Scope, config: &Config, input: usize, width: usize, stride: usize) -> Result<Bottleneck> {
        let out = 4 * width;
        let conv = |i: usize, from, to, k, s, p| Conv2d::new(&scope.sub(format!("conv{i}")), from, to, k, s, p);
        let bn = |i: usize, c, zero| BatchNorm2d::new(&scope.sub(format!("bn{i}")), c, zero);
        let c1 = conv(1, input, width, 1, stride, 0)?;
        let b1 = bn(1, width, false)?;
        let c2 = conv(2, width, width, 3, 1, 1)?;
        let b2 = bn(2, width, false)?;
        let c3 = conv(3, width, out, 1, 1, 0)?;
        let b3 = bn(3, out, config.zero_init_residual && config.residual)?;
        Ok(Bottleneck {
            scope: scope.clone(),
            convs: [c1, c2, c3],
            bns: [b1, b2, b3],
            shortcut: ShortcutPath::new(scope, config, input, out, stride)?,
        })
    }

    /// The block's output; `responses` receives the 3x3 layer's output after batch norm.
    pub fn forward(&self, x: &Var, mode: Mode, responses: &mut Vec<(String, Var)>) -> Result<Var> {
        let h = self.bns[0].forward(&self.convs[0].forward(x)?, mode)?.relu();
        let h = self.bns[1].forward(&self.convs[1].forward(&h)?, mode)?;
        responses.push((self.scope.name("bn2"), h.clone()));
        let h = self.bns[2].forward(&self.convs[2].forward(&h.relu())?, mode)?;
        Ok(self.shortcut.add(&self.scope, x, &h, mode)?.relu())
    }
}

/// A block of either kind.
#[derive(Clone)]
pub enum Block {
    /// Two 3x3 convolutions.
    Basic(BasicBlock),
    /// 1x1, 3x3, 1x1.
    Bottleneck(Bottleneck),
}

impl Block {
    fn forward(&self, x: &Var, mode: Mode, responses: &mut Vec<(String, Var)>) -> Result<Var> {
        match self {
            Block::Basic(b) => b.forward(x, mode, responses),
            Block::Bottleneck(b) => b.forward(x, mode, responses),
        }
    }
}

/// A plain or residual net of the paper.
#[derive(Clone)]
pub struct ResNet {
    /// What it is.
    pub config: Config,
    scope: Scope,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    maxpool: Option<MaxPool2d>,
    /// Stages of blocks (`layer1`, `layer2`, ...).
    pub layers: Vec<Vec<Block>>,
    fc: Linear,
}

impl ResNet {
    /// Builds the net's tensors in `scope` (torchvision's order: stem, stages, classifier).
    pub fn new(scope: &Scope, config: &Config) -> Result<ResNet> {
        let imagenet = config.family == Family::ImageNet;
        let stem = if imagenet { 64 } else { 16 };
        let (k, stride, pad) = if imagenet { (7, 2, 3) } else { (3, 1, 1) };
        let conv1 = Conv2d::new(&scope.sub("conv1"), config.in_channels, stem, k, stride, pad)?;
        let bn1 = BatchNorm2d::new(&scope.sub("bn1"), stem, false)?;
        let maxpool = imagenet.then(|| MaxPool2d::new(&scope.sub("maxpool"), 3, 2, 1));
        let mut channels = stem;
        let mut layers = vec![];
        for (s, (&blocks, &width)) in config.blocks().iter().zip(&config.widths()).enumerate() {
            let stage = scope.sub(format!("layer{}", s + 1));
            let mut built = vec![];
            for b in 0..blocks {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let at = stage.sub(b);
                if config.bottleneck() {
                    built.push(Block::Bottleneck(Bottleneck::new(&at, config, channels, width, stride)?));
                    channels = 4 * width;
                } else {
                    built.push(Block::Basic(BasicBlock::new(&at, config, channels, width, stride)?));
                    channels = width;
                }
            }
            layers.push(built);
        }
        let fc = Linear::new(&scope.sub("fc"), channels, config.classes)?;
        Ok(ResNet { config: config.clone(), scope: scope.clone(), conv1, bn1, maxpool, layers, fc })
    }

    /// The logits for images `x` of `[N, C, H, W]`.
    pub fn forward(&self, x: &Var, mode: Mode) -> Result<Var> {
        Ok(self.forward_responses(x, mode)?.0)
    }

    /// The logits, and each 3x3 layer's output after batch norm (before the addition and ReLU),
    /// named by its batch norm: the layer responses of the paper's Fig. 7.
    pub fn forward_responses(&self, x: &Var, mode: Mode) -> Result<(Var, Vec<(String, Var)>)> {
        let mut responses = vec![];
        let h = self.bn1.forward(&self.conv1.forward(x)?, mode)?;
        if self.maxpool.is_none() {
            responses.push((self.scope.name("bn1"), h.clone()));
        }
        let mut h = h.relu();
        if let Some(pool) = &self.maxpool {
            h = pool.forward(&h)?;
        }
        for stage in &self.layers {
            for block in stage {
                h = block.forward(&h, mode, &mut responses)?;
            }
        }
        let pooled = global_avg_pool(&self.scope.sub("avgpool"), &h)?;
        Ok((self.fc.forward(&pooled)?, responses))
    }
}

/// The standard deviation (population, computed in f64 in two passes) of a layer's response
/// values: the statistic of the paper's Fig. 7.
pub fn response_std(values: &[f32]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
    (values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
}
