//! The bodies of the fuzz targets, one function per target, each taking the fuzzer's bytes. The
//! cargo-fuzz binaries in `fuzz_targets/` call them, and the workspace's `tests/fuzz_corpora.rs`
//! replays every corpus and regression file through them in `cargo test`, so a bug a fuzzer once
//! found stays fixed. Each returns normally on any input; a panic is the bug report.
//!
//! - [`idx`] and [`cifar`]: the dataset readers on arbitrary bytes.
//! - [`checkpoint`]: the checkpoint loader on arbitrary bytes and on byte edits of a real
//!   checkpoint, then building its net.
//! - [`graph_builder`]: arbitrary sequences of research-API calls with arbitrary shapes and
//!   attributes; each call builds a valid node or returns an error, and the graph's dumps work.
//! - [`differential`]: small random training graphs (residual diamonds, stride 2, odd sizes, the
//!   Winograd sizes) on the reference interpreter against fusion and the JIT.

use arbitrary::{Arbitrary, Result as Parsed, Unstructured};
use skipgrad::fuse::{Pipeline, Program};
use skipgrad::jit::{CompileOptions, Target, WinogradTiles, compile};
use skipgrad::nn::Checkpoint;
use skipgrad::prelude::*;
use skipgrad::reference::kink_distance;
use skipgrad::testing::{Block, build, build_inference, degenerate_batch_norm};
use std::sync::OnceLock;

/// The IDX reader (gzip-compressed or not) on arbitrary bytes.
pub fn idx(data: &[u8]) {
    if let Ok(idx) = skipgrad::data::decode_idx("fuzz.idx", data) {
        assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>(), "{:?}", idx.dims);
    }
}

/// The CIFAR-10 reader on arbitrary bytes.
pub fn cifar(data: &[u8]) {
    if let Ok(set) = skipgrad::data::parse_cifar("fuzz.bin", data) {
        assert_eq!(set.images.len(), set.labels.len() * set.image_len());
        assert!(set.labels.iter().all(|&l| (l as usize) < set.classes));
    }
}

/// A real checkpoint (ResNet-8 on 1 channel, weights from seed 0), built once.
fn real_checkpoint() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut config = skipgrad::nn::Config::named("resnet8").expect("a model");
        config.in_channels = 1;
        let tape = Tape::trace(DType::F32);
        let scope = skipgrad::nn::Scope::new(&tape, 0);
        skipgrad::nn::ResNet::new(&scope, &config).expect("ResNet-8 builds");
        let c = Checkpoint::of_scope(&config, &scope, |e| e.init.clone());
        c.to_bytes().expect("serializes")
    })
}

/// The checkpoint loader, then building the loaded net on a tracing tape. An odd first byte
/// edits a real checkpoint: the rest are (position, byte) pairs, positions mostly in its header,
/// and a cut; an even first byte loads the rest as it is.
pub fn checkpoint(data: &[u8]) {
    let bytes = match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 => {
            let mut bytes = real_checkpoint().to_vec();
            let header = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
            let mut edits = rest.chunks_exact(4);
            for edit in edits.by_ref() {
                let at = u16::from_le_bytes([edit[0], edit[1]]) as usize;
                // Positions in the header unless the third byte says anywhere.
                let at = if edit[2] == 0xff { at * bytes.len() / 65536 } else { at % header };
                bytes[at] = edit[3];
            }
            if let [cut, ..] = edits.remainder() {
                bytes.truncate(bytes.len() * (*cut as usize) / 256);
            }
            bytes
        }
        Some((_, rest)) => rest.to_vec(),
        None => return,
    };
    if let Ok(c) = Checkpoint::from_bytes("fuzz.safetensors", &bytes) {
        let _ = c.build(&Tape::trace(DType::F32));
    }
}

/// One research-API call, on values picked from those made so far.
#[derive(Arbitrary, Debug)]
enum Call {
    Input(Vec<u16>),
    Parameter(Vec<u16>),
    Absurd(Vec<u64>),
    Conv2d { x: u8, w: u8, stride: [u8; 2], pad: [u8; 2] },
    Conv2dGradInput { dy: u8, w: u8, stride: [u8; 2], pad: [u8; 2], hw: [u16; 2] },
    Conv2dGradWeight { x: u8, dy: u8, stride: [u8; 2], pad: [u8; 2], hw: [u16; 2] },
    BiasAdd(u8, u8),
    BatchNormTrain { x: u8, gamma: u8, beta: u8, eps: f64 },
    BatchNormEval { x: u8, mean: u8, var: u8, gamma: u8, beta: u8, eps: f64 },
    Relu(u8),
    ReluGrad(u8, u8),
    Add(u8, u8),
    Sub(u8, u8),
    Mul(u8, u8),
    Scale(u8, f64),
    AddScalar(u8, f64),
    Equal(u8, u8),
    ShortcutA { x: u8, stride: u8, before: u16, after: u16 },
    MaxPool { x: u8, kernel: u8, stride: u8, pad: u8 },
    GlobalAvgPool(u8),
    Matmul { a: u8, b: u8, ta: bool, tb: bool },
    Linear(u8, u8, u8),
    Reshape(u8, Vec<u16>),
    Flatten(u8),
    SumAxes(u8, Vec<u8>),
    MeanAxes(u8, Vec<u8>),
    Broadcast(u8, Vec<u8>, Vec<u16>),
    Softmax(u8),
    CrossEntropy(u8, u8),
    Argmax(u8),
    Accuracy(u8, u8),
    Grad(u8, u8),
}

/// Arbitrary research-API calls on a tracing tape (shapes only, so even absurd sizes cost
/// nothing): each either adds a node whose type the graph checks again, or returns an error.
/// The finished graph dumps as text, DOT and JSON, and its JSON reads back to the same dump.
pub fn graph_builder(data: &[u8]) {
    let Ok(calls) = Vec::<Call>::arbitrary_take_rest(Unstructured::new(data)) else { return };
    let dtype = if data.first().is_some_and(|b| b % 2 == 1) { DType::F64 } else { DType::F32 };
    let tape = Tape::trace(dtype);
    let mut vars: Vec<Var> = vec![];
    for (i, call) in calls.into_iter().enumerate() {
        let made = apply(&tape, &vars, i, call);
        if let Some(Ok(v)) = made {
            let graph = tape.graph();
            let node = graph.node(v.id()).expect("the new node is in the graph");
            // Sources (inputs, parameters, constants) carry their type; every other op's is inferred.
            if !node.inputs.is_empty() {
                assert_eq!(graph.check_node(&node.op, &node.inputs).ok(), Some(node.ty.clone()), "{}", graph.dump());
            }
            vars.push(v);
        }
    }
    let graph = tape.graph();
    let (text, _) = (graph.dump(), graph.to_dot());
    let back = Graph::from_json_str(&graph.to_json_string()).expect("a graph's JSON reads back");
    assert_eq!(back.dump(), text);
}

/// Applies `call`; `None` when it names no value yet.
fn apply(tape: &Tape, vars: &[Var], i: usize, call: Call) -> Option<Result<Var>> {
    let v = |k: u8| vars.get(k as usize % vars.len().max(1));
    let dims = |d: &[u16]| d.iter().take(6).map(|&x| x as usize).collect::<Vec<usize>>();
    let conv =
        |stride: [u8; 2], pad: [u8; 2]| Conv2dAttrs { stride: stride.map(usize::from), pad: pad.map(usize::from) };
    let hw = |hw: [u16; 2]| hw.map(usize::from);
    Some(match call {
        Call::Input(d) => tape.input_spec(&format!("x{i}"), tape.dtype(), &dims(&d)),
        Call::Parameter(d) => tape.parameter_spec(&format!("p{i}"), tape.dtype(), &dims(&d)),
        Call::Absurd(d) => {
            let d: Vec<usize> = d.iter().take(6).map(|&x| x as usize).collect();
            tape.input_spec(&format!("huge{i}"), tape.dtype(), &d)
        }
        Call::Conv2d { x, w, stride, pad } => v(x)?.conv2d_with(v(w)?, conv(stride, pad)),
        Call::Conv2dGradInput { dy, w, stride, pad, hw: size } => {
            v(dy)?.conv2d_grad_input(v(w)?, conv(stride, pad), hw(size))
        }
        Call::Conv2dGradWeight { x, dy, stride, pad, hw: size } => {
            v(x)?.conv2d_grad_weight(v(dy)?, conv(stride, pad), hw(size))
        }
        Call::BiasAdd(x, b) => v(x)?.bias_add(v(b)?),
        Call::BatchNormTrain { x, gamma, beta, eps } => v(x)?.batch_norm_train(v(gamma)?, v(beta)?, eps),
        Call::BatchNormEval { x, mean, var, gamma, beta, eps } => {
            v(x)?.batch_norm_eval(v(mean)?, v(var)?, v(gamma)?, v(beta)?, eps)
        }
        Call::Relu(x) => Ok(v(x)?.relu()),
        Call::ReluGrad(x, dy) => v(x)?.relu_grad(v(dy)?),
        Call::Add(a, b) => v(a)?.add(v(b)?),
        Call::Sub(a, b) => v(a)?.sub(v(b)?),
        Call::Mul(a, b) => v(a)?.mul(v(b)?),
        Call::Scale(x, c) => Ok(v(x)?.scale(c)),
        Call::AddScalar(x, c) => Ok(v(x)?.add_scalar(c)),
        Call::Equal(a, b) => v(a)?.equal(v(b)?),
        Call::ShortcutA { x, stride, before, after } => v(x)?.shortcut_a_with(ShortcutAttrs {
            stride: stride as usize,
            pad_before: before as usize,
            pad_after: after as usize,
        }),
        Call::MaxPool { x, kernel, stride, pad } => v(x)?.max_pool(kernel as usize, stride as usize, pad as usize),
        Call::GlobalAvgPool(x) => v(x)?.global_avg_pool(),
        Call::Matmul { a, b, ta, tb } => v(a)?.matmul_t(v(b)?, ta, tb),
        Call::Linear(x, w, b) => v(x)?.linear(v(w)?, v(b)?),
        Call::Reshape(x, d) => v(x)?.reshape(&dims(&d)),
        Call::Flatten(x) => v(x)?.flatten(),
        Call::SumAxes(x, axes) => v(x)?.sum_axes(&axes.iter().map(|&a| a as usize).collect::<Vec<_>>()),
        Call::MeanAxes(x, axes) => v(x)?.mean_axes(&axes.iter().map(|&a| a as usize).collect::<Vec<_>>()),
        Call::Broadcast(x, axes, d) => {
            v(x)?.broadcast(&axes.iter().map(|&a| a as usize).collect::<Vec<_>>(), &dims(&d))
        }
        Call::Softmax(x) => v(x)?.softmax(),
        Call::CrossEntropy(x, y) => v(x)?.cross_entropy(v(y)?),
        Call::Argmax(x) => v(x)?.argmax(),
        Call::Accuracy(x, y) => v(x)?.accuracy(v(y)?),
        Call::Grad(loss, wrt) => grad(v(loss)?, &[v(wrt)?]).map(|mut g| g.remove(0)),
    })
}

/// A small random training graph, decoded from bytes.
#[derive(Debug)]
pub(crate) struct Case {
    pub(crate) blocks: Vec<Block>,
    pub(crate) batch: usize,
    pub(crate) channels: usize,
    /// Image height and width: 3 to 12, or 32 (see below).
    pub(crate) hw: usize,
    pub(crate) seed: u64,
    pub(crate) threads: usize,
    pub(crate) winograd: WinogradTiles,
    /// The network's inference pass (batch norms in the convolutions' epilogues) instead of its
    /// training step.
    pub(crate) inference: bool,
    /// Eight times the channels (8 to 128): Winograd weight gradients with 128 channels each
    /// way split their output channels, which smaller nets never reach. One case in 8; drawn
    /// last, so earlier corpora decode as before.
    pub(crate) wide: bool,
    /// f32 lanes of the JIT's widest vectors (4, 8 or 16), when the CPU has them (else the
    /// host's); drawn after `wide`, so earlier corpora decode as before (at the host's).
    pub(crate) lanes: Option<usize>,
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> Parsed<Self> {
        let mut blocks = vec![];
        for _ in 0..u.int_in_range(1..=3)? {
            let stride = u.int_in_range(1..=2)?;
            blocks.push(match u.int_in_range(0..=4)? {
                0 => Block::Plain { out: u.int_in_range(1..=9)?, kernel: *u.choose(&[1, 3])?, stride },
                1 => Block::Residual { stride },
                2 => Block::Projection { stride },
                3 => Block::Bottleneck { stride },
                _ => Block::Stem { out: u.int_in_range(1..=4)? },
            });
        }
        let mut case = Case {
            blocks,
            batch: u.int_in_range(2..=4)?,
            channels: *u.choose(&[1, 2, 3, 4, 8, 12, 16])?,
            hw: u.int_in_range(3..=12)?,
            seed: u.arbitrary()?,
            threads: u.int_in_range(1..=2)?,
            winograd: *u.choose(&[WinogradTiles::Off, WinogradTiles::F2, WinogradTiles::F4])?,
            inference: u.arbitrary()?,
            wide: u.ratio(1u8, 8u8)?,
            lanes: if u.is_empty() { None } else { Some(*u.choose(&[4, 8, 16])?) },
        };
        // One case in 8 on 32x32 images, whose Winograd rows of 8 tiles transform in f32x8 and,
        // with 16 lanes, multiply in f32x16 over blocks of 32 tiles. Drawn last: a corpus file
        // that ends before it decodes as before (one with bytes left may now take 32x32: the
        // differential corpus replayed in 23 s instead of 19, release build).
        if !u.is_empty() && u.ratio(1u8, 8u8)? {
            case.hw = 32;
        }
        Ok(case)
    }
}

/// A random training step (loss, every gradient, the running statistics and the SGD update), or
/// inference pass (the logits), evaluated by the reference interpreter and, fused, by the JIT:
/// every output agrees within
/// 2e-4 (relative, or absolute below 1). Graphs where f32 rounding alone can change the answer
/// are skipped: batch norms over fewer than 4 values, and ReLU inputs within 1e-5 of the kink.
pub fn differential(data: &[u8]) {
    if let Ok(case) = Case::arbitrary_take_rest(Unstructured::new(data)) {
        differential_case(&case);
    }
}

/// [`differential`] on one decoded case: false when the case was skipped (a net that does not
/// build, or a graph where f32 rounding alone can change the answer), true when every output
/// agreed.
pub(crate) fn differential_case(case: &Case) -> bool {
    let build_net = if case.inference { build_inference } else { build };
    let channels = if case.wide { 8 * case.channels } else { case.channels };
    let Ok(net) = build_net(&case.blocks, case.batch, channels, case.hw, case.seed, DType::F32) else { return false };
    let program = Program { graph: net.tape.graph(), outputs: net.outputs.iter().map(|v| v.id()).collect() };
    if degenerate_batch_norm(&program.graph) {
        return false;
    }
    let all: Vec<NodeId> = program.graph.ids().collect();
    let values = evaluate(&program.graph, &net.feeds, &all).expect("the reference runs a valid graph");
    for node in program.graph.nodes() {
        let inputs: Vec<&Tensor> = node.inputs.iter().map(|i| &values[i.index()]).collect();
        if kink_distance(&node.op, &inputs).is_some_and(|d| d <= 1e-5) {
            return false;
        }
    }
    let fused = Pipeline::training().run(program.clone()).expect("fusion of a valid graph").pop().expect("a stage");
    let host = Target::host().expect("the host target");
    let target = case.lanes.and_then(|lanes| host.clone().with_lanes(lanes).ok()).unwrap_or(host);
    let options = CompileOptions {
        threads: case.threads,
        winograd: case.winograd,
        target: Some(target),
        ..CompileOptions::default()
    };
    let mut compiled = compile(&fused.program.graph, &fused.program.outputs, &options)
        .unwrap_or_else(|e| panic!("the fused graph does not compile: {e}\n{case:?}"));
    let got = compiled.run_tensors(&net.feeds).expect("the compiled step runs");
    for (k, (g, id)) in got.iter().zip(&program.outputs).enumerate() {
        for (j, (a, b)) in g.to_f64_vec().iter().zip(values[id.index()].to_f64_vec()).enumerate() {
            let op = &program.graph.node(*id).expect("an output").op;
            assert!(
                (a - b).abs() <= 2e-4 * b.abs().max(1.0),
                "miscompile: output {k} ({op}) element {j}: jit {a}, reference {b}\n{case:?}"
            );
        }
    }
    true
}
