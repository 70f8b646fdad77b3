//! A whole training step in f32 against the same step in f64: ResNet-20's forward pass, loss and
//! every parameter's gradient (random images and real Fashion-MNIST ones), and random small
//! residual nets, on the reference interpreter and on the fused JIT (Winograd F(4x4), F(2x2) and
//! direct convolutions; 1 and 2 threads, which must agree bit for bit). Each tensor's normwise
//! relative error against the reference interpreter's f64 result, held to the f32 run's side of
//! every ReLU (`skipgrad::testing::precision`), must stay within 1e-4. Single convolutions
//! measure each algorithm's own error (CONTRIBUTING.md quotes them).

mod common;

use common::config;
use common::net::{Block, build, degenerate_batch_norm};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use skipgrad::fuse::{Pipeline, Program};
use skipgrad::jit::{CompileOptions, WinogradTiles, compile};
use skipgrad::nn::{Config, Mode, ResNet, Scope};
use skipgrad::prelude::*;
use skipgrad::testing::precision::{Precision, kink_nodes, measure};

/// The bound every tensor of an f32 step meets: the norm of its difference from the f64 step over
/// the norm of the f64 step's value.
const BOUND: f64 = 1e-4;

/// Where a step runs.
#[derive(Clone, Copy, Debug)]
enum Backend {
    /// The reference interpreter in f32.
    Reference,
    /// The fused JIT with these Winograd tiles, on 1 and on 2 threads.
    Jit(WinogradTiles),
}

const BACKENDS: [Backend; 4] = [
    Backend::Reference,
    Backend::Jit(WinogradTiles::F4),
    Backend::Jit(WinogradTiles::F2),
    Backend::Jit(WinogradTiles::Off),
];

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Reference => write!(f, "reference f32"),
            Backend::Jit(WinogradTiles::F4) => write!(f, "jit F(4x4)"),
            Backend::Jit(WinogradTiles::F4Rows) => write!(f, "jit F(4x4), lanes in rows only"),
            Backend::Jit(WinogradTiles::F2) => write!(f, "jit F(2x2)"),
            Backend::Jit(WinogradTiles::Off) => write!(f, "jit direct"),
        }
    }
}

/// Values of `wanted` of `graph` on `feeds` on `backend`. The JIT fuses the graph, runs it on 1
/// and on 2 threads, and fails unless both agree bit for bit.
fn run(backend: Backend, graph: &Graph, feeds: &Feeds, wanted: &[NodeId]) -> Result<Vec<Tensor>, String> {
    let Backend::Jit(winograd) = backend else { return evaluate(graph, feeds, wanted).map_err(|e| e.to_string()) };
    let program = Program { graph: graph.clone(), outputs: wanted.to_vec() };
    let fused = Pipeline::training().run(program).map_err(|e| e.to_string())?.pop().expect("a stage").program;
    let on = |threads: usize| -> Result<Vec<Tensor>, String> {
        let options = CompileOptions { threads, winograd, ..CompileOptions::default() };
        let mut compiled = compile(&fused.graph, &fused.outputs, &options).map_err(|e| e.to_string())?;
        compiled.run_tensors(feeds).map_err(|e| e.to_string())
    };
    let (one, two) = (on(1)?, on(2)?);
    if one != two {
        return Err(format!("{backend}: 1 and 2 threads give different results"));
    }
    Ok(one)
}

/// `outputs` of `graph` on `feeds` run by `backend`, measured against f64.
fn precision(backend: Backend, graph: &Graph, feeds: &Feeds, outputs: &[NodeId]) -> Result<Precision, String> {
    let mut failed = None;
    let measured = measure(graph, feeds, outputs, |wanted| {
        run(backend, graph, feeds, wanted).map_err(|e| {
            failed = Some(e);
            skipgrad::Error::Argument { op: "run".into(), message: "see above".into() }
        })
    });
    match (measured, failed) {
        (_, Some(e)) => Err(e),
        (m, None) => m.map_err(|e| e.to_string()),
    }
}

/// ResNet-20's traced training step on `batch` images of `input`: the graph, its outputs (the
/// loss, then each parameter's gradient), their names, and the initial weights of seed 0 as feeds.
fn resnet20_step(batch: usize, input: [usize; 3]) -> (Graph, Vec<NodeId>, Vec<String>, Feeds) {
    let config = Config { in_channels: input[0], ..Config::named("resnet20").unwrap() };
    let tape = Tape::trace(DType::F32);
    let scope = Scope::new(&tape, 0);
    let net = ResNet::new(&scope, &config).unwrap();
    let [c, h, w] = input;
    let images = tape.input_spec("images", DType::F32, &[batch, c, h, w]).unwrap();
    let labels = tape.input_spec("labels", DType::F32, &[batch]).unwrap();
    let loss = net.forward(&images, Mode::Train).unwrap().cross_entropy(&labels).unwrap();
    let params = scope.parameters();
    let grads = grad(&loss, &params.iter().collect::<Vec<_>>()).unwrap();
    let graph = tape.graph();
    let mut names = vec!["loss".to_string()];
    names.extend(params.iter().map(|p| graph.source_name(p.id()).unwrap().to_string()));
    let outputs = std::iter::once(loss.id()).chain(grads.iter().map(|g| g.id())).collect();
    let feeds = scope.entries().into_iter().map(|e| (e.name, e.init)).collect();
    (graph, outputs, names, feeds)
}

/// ResNet-20's step on `images` and `labels` (f32 values, `batch` of them) on `backends`: prints
/// each one's worst tensors and requires every tensor within [`BOUND`].
fn check_resnet20(input: [usize; 3], batch: usize, images: Vec<f32>, labels: Vec<f32>, backends: &[Backend]) {
    let (graph, outputs, names, mut feeds) = resnet20_step(batch, input);
    let [c, h, w] = input;
    feeds.insert("images".into(), Tensor::f32([batch, c, h, w], images).unwrap());
    feeds.insert("labels".into(), Tensor::f32([batch], labels).unwrap());
    let mut failures = vec![];
    for &backend in backends {
        let p = precision(backend, &graph, &feeds, &outputs).unwrap();
        let mut order: Vec<usize> = (0..p.errors.len()).collect();
        order.sort_by(|&a, &b| p.errors[b].total_cmp(&p.errors[a]));
        let worst: Vec<String> = order.iter().take(3).map(|&i| format!("{} {:.2e}", names[i], p.errors[i])).collect();
        println!("{backend:<14} worst: {} (ReLU elements flipped: {} of {})", worst.join(", "), p.flipped, p.kinks);
        if p.errors[order[0]] > BOUND {
            failures.push(format!("{backend}: {} at {:.2e}", names[order[0]], p.errors[order[0]]));
        }
    }
    assert!(failures.is_empty(), "tensors beyond {BOUND:e}: {}", failures.join("; "));
}

/// Random images in [-1, 1] and random labels, as a new user would try first.
#[test]
fn resnet20_step_on_random_images_is_within_1e_4_of_f64() {
    let batch = 32;
    let images = common::uniform(1, &[batch, 3, 32, 32]).to_f64_vec().into_iter().map(|v| v as f32).collect();
    let labels = common::labels(2, batch, 10).to_f64_vec().into_iter().map(|v| v as f32).collect();
    check_resnet20([3, 32, 32], batch, images, labels, &BACKENDS);
}

/// The first 32 Fashion-MNIST training images, as the README's main job feeds them.
#[test]
fn resnet20_step_on_fashion_mnist_is_within_1e_4_of_f64() {
    let (train, _) = match skipgrad::data::fashion_mnist(None) {
        Ok(d) => d,
        Err(skipgrad::data::Error::Missing { .. }) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let batch = 32;
    let first = train.subset(&(0..batch).collect::<Vec<_>>());
    let b = skipgrad::data::in_order(&first, &train.mean_image(), batch).unwrap().remove(0);
    check_resnet20([1, 28, 28], batch, b.images, b.labels, &[Backend::Reference, Backend::Jit(WinogradTiles::F4)]);
}

/// Residual blocks of the random nets (no max pool: its ties are not held to one side).
fn residual_block() -> impl Strategy<Value = Block> {
    prop_oneof![
        (1..3usize).prop_map(|stride| Block::Residual { stride }),
        (1..3usize).prop_map(|stride| Block::Projection { stride }),
        (1..3usize).prop_map(|stride| Block::Bottleneck { stride }),
        (4..17usize).prop_map(|out| Block::Plain { out, kernel: 3, stride: 1 }),
    ]
}

proptest! {
    #![proptest_config(config(6))]

    /// Every output of a random residual net's training step (loss, gradients, running
    /// statistics, SGD updates) is within the bound of f64, on every backend.
    #[test]
    fn random_residual_nets_are_within_1e_4_of_f64(blocks in prop::collection::vec(residual_block(), 1..4), batch in 4..9usize, channels in prop::sample::select(vec![3usize, 8, 16]), hw in 8..13usize, seed: u64) {
        let net = build(&blocks, batch, channels, hw, seed, DType::F32).unwrap();
        let graph = net.tape.graph();
        prop_assume!(!degenerate_batch_norm(&graph), "a batch norm over fewer than 4 values per channel");
        let outputs: Vec<NodeId> = net.outputs.iter().map(|v| v.id()).collect();
        for backend in BACKENDS {
            let p = precision(backend, &graph, &net.feeds, &outputs).map_err(TestCaseError::fail)?;
            for (k, e) in p.errors.iter().enumerate() {
                prop_assert!(*e <= BOUND, "{backend}: output {k} ({}) at {e:.2e}, blocks {blocks:?}", graph.node(outputs[k]).unwrap().op);
            }
        }
    }
}

/// The worst normwise errors of a 3x3 convolution's three products (forward, input gradient,
/// weight gradient) on the JIT with `winograd`, against the f64 reference, over sizes where every
/// algorithm applies: 16 to 64 channels, 32x32 to 8x8, batch 8.
fn convolution_errors(winograd: WinogradTiles) -> [f64; 3] {
    let mut worst = [0.0f64; 3];
    for (seed, (channels, hw)) in [(16, 32), (32, 16), (64, 8)].into_iter().enumerate() {
        let seed = seed as u64;
        let tape = Tape::trace(DType::F32);
        let x = tape.input_spec("x", DType::F32, &[8, channels, hw, hw]).unwrap();
        let w = tape.parameter_spec("w", DType::F32, &[channels, channels, 3, 3]).unwrap();
        let dy = tape.input_spec("dy", DType::F32, &[8, channels, hw, hw]).unwrap();
        let y = x.conv2d(&w, 1, 1).unwrap();
        let [dx, dw] = vjp(&y, &dy, &[&x, &w]).unwrap().try_into().unwrap();
        let graph = tape.graph();
        let bound = (3.0 / (channels * 9) as f64).sqrt();
        let feeds: Feeds = [
            ("x".to_string(), common::uniform(seed, &[8, channels, hw, hw])),
            ("w".to_string(), common::uniform_in(seed + 10, &[channels, channels, 3, 3], -bound, bound)),
            ("dy".to_string(), common::uniform(seed + 20, &[8, channels, hw, hw])),
        ]
        .into_iter()
        .map(|(k, v)| (k, v.cast(DType::F32)))
        .collect();
        let ids = [y.id(), dx.id(), dw.id()];
        let p = precision(Backend::Jit(winograd), &graph, &feeds, &ids).unwrap();
        for (w, e) in worst.iter_mut().zip(&p.errors) {
            *w = w.max(*e);
        }
    }
    worst
}

/// Each convolution algorithm's own error, as CONTRIBUTING.md quotes it: direct and F(2x2)
/// within 1e-6, F(4x4) within 1e-5.
#[test]
fn each_convolution_algorithm_meets_its_error_bound() {
    for (winograd, bound) in [(WinogradTiles::Off, 1e-6), (WinogradTiles::F2, 1e-6), (WinogradTiles::F4, 1e-5)] {
        let [y, dx, dw] = convolution_errors(winograd);
        let backend = Backend::Jit(winograd);
        println!("{backend}: forward {y:.2e}, input gradient {dx:.2e}, weight gradient {dw:.2e}");
        assert!(y.max(dx).max(dw) <= bound, "{backend}: beyond {bound:e}");
    }
}

/// Asking the fused step for its ReLU values (the sides `measure` holds) changes nothing: the
/// program measured is the one training runs, kernel for kernel.
#[test]
fn the_measured_program_is_the_training_program() {
    let (graph, outputs, _, _) = resnet20_step(8, [3, 32, 32]);
    let with_sides: Vec<NodeId> = outputs.iter().chain(&kink_nodes(&graph)).copied().collect();
    let fused = |outputs: Vec<NodeId>| {
        let program =
            Pipeline::training().run(Program { graph: graph.clone(), outputs }).unwrap().pop().unwrap().program;
        let compiled = compile(&program.graph, &program.outputs, &CompileOptions::default()).unwrap();
        (program.graph.nodes().iter().map(|n| n.op.clone()).collect::<Vec<_>>(), compiled.steps())
    };
    assert_eq!(fused(outputs), fused(with_sides));
}

/// The per-channel sums of a training step over a whole first-stage batch (32 x 32 x 32 =
/// 32,768 values per channel, a mean far from zero, terms that cancel): the batch mean and
/// variance, and batch-norm backward's input, gamma and beta gradients, each within 1e-6 of f64.
#[test]
fn long_per_channel_sums_are_as_accurate_as_f32_allows() {
    let dims = [32, 16, 32, 32];
    let tape = Tape::trace(DType::F32);
    let x = tape.input_spec("x", DType::F32, &dims).unwrap();
    let dy = tape.input_spec("dy", DType::F32, &dims).unwrap();
    let gamma = tape.parameter_spec("gamma", DType::F32, &[16]).unwrap();
    let beta = tape.parameter_spec("beta", DType::F32, &[16]).unwrap();
    let y = x.batch_norm_train(&gamma, &beta, 1e-5).unwrap();
    let [dx, dgamma, dbeta] = vjp(&y, &dy, &[&x, &gamma, &beta]).unwrap().try_into().unwrap();
    let graph = tape.graph();
    let mean = graph.nodes().iter().position(|n| n.op == Op::BatchMean).unwrap();
    let var = graph.nodes().iter().position(|n| n.op == Op::BatchVar).unwrap();
    let ids: Vec<NodeId> = graph.ids().collect();
    let outputs = [ids[mean], ids[var], dx.id(), dgamma.id(), dbeta.id()];
    let shifted = |t: Tensor, by: f64| {
        Tensor::from_f64(dims, DType::F32, &t.to_f64_vec().iter().map(|v| v + by).collect::<Vec<_>>()).unwrap()
    };
    let feeds: Feeds = [
        ("x".to_string(), shifted(common::uniform(3, &dims), 4.0)),
        ("dy".to_string(), shifted(common::uniform(4, &dims), 0.01)),
        ("gamma".to_string(), common::uniform_in(5, &[16], 0.5, 1.5).cast(DType::F32)),
        ("beta".to_string(), common::uniform(6, &[16]).cast(DType::F32)),
    ]
    .into_iter()
    .collect();
    for backend in BACKENDS {
        let p = precision(backend, &graph, &feeds, &outputs).unwrap();
        println!("{backend}: {:?}", p.errors.iter().map(|e| format!("{e:.1e}")).collect::<Vec<_>>());
        assert!(p.errors.iter().all(|&e| e <= 1e-6), "{backend}: {:?}", p.errors);
    }
}
