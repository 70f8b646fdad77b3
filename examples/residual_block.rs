//! A basic residual block (He et al. 2016, Fig. 2), its gradients, and a gradient check.
//!
//! `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, with the option-A shortcut when the
//! block downsamples. The program records one training step's forward and backward on an eager
//! tape, prints the graph dump (forward, then the appended gradient ops), checks the gradients of
//! the block against central differences in f64, fuses and compiles the same step with the JIT
//! and checks it against the eager values, and shows the error a shape mistake produces.
//! `SKIPGRAD_DUMP=dir` writes every stage, `SKIPGRAD_PROFILE=1` prints a kernel profile
//! (DEBUGGING.md).
//!
//! Run: `cargo run --release --example residual_block`

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use skipgrad::prelude::*;

/// The parameters of one basic block, named as torchvision names them.
struct Block {
    conv1: Var,
    bn1: (Var, Var),
    conv2: Var,
    bn2: (Var, Var),
    stride: usize,
}

impl Block {
    /// A block from `in_channels` to `out_channels`; `prefix` is e.g. `layer2.0`.
    fn new(
        tape: &Tape,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        rng: &mut StdRng,
    ) -> Result<Block> {
        let dtype = tape.dtype();
        let conv = |name: &str, c: usize, rng: &mut StdRng| {
            let w = he_uniform(rng, &[out_channels, c, 3, 3], dtype);
            tape.parameter(&format!("{prefix}.{name}.weight"), w)
        };
        let bn = |name: &str| -> Result<(Var, Var)> {
            let ones = Tensor::full([out_channels], dtype, 1.0)?;
            let zeros = Tensor::full([out_channels], dtype, 0.0)?;
            Ok((
                tape.parameter(&format!("{prefix}.{name}.weight"), ones)?,
                tape.parameter(&format!("{prefix}.{name}.bias"), zeros)?,
            ))
        };
        Ok(Block {
            conv1: conv("conv1", in_channels, rng)?,
            bn1: bn("bn1")?,
            conv2: conv("conv2", out_channels, rng)?,
            bn2: bn("bn2")?,
            stride,
        })
    }

    fn parameters(&self) -> Vec<&Var> {
        vec![&self.conv1, &self.bn1.0, &self.bn1.1, &self.conv2, &self.bn2.0, &self.bn2.1]
    }

    /// The block in training mode (batch statistics).
    fn forward(&self, x: &Var) -> Result<Var> {
        let out_channels = self.conv1.shape().dims()[0];
        let h = x.conv2d(&self.conv1, self.stride, 1)?.batch_norm_train(&self.bn1.0, &self.bn1.1, 1e-5)?.relu();
        let h = h.conv2d(&self.conv2, 1, 1)?.batch_norm_train(&self.bn2.0, &self.bn2.1, 1e-5)?;
        let shortcut = if self.stride == 1 && x.shape().dims()[1] == out_channels {
            x.clone()
        } else {
            x.shortcut_a(out_channels)?
        };
        Ok((&h + &shortcut)?.relu())
    }
}

/// He (Kaiming) uniform initialisation: bound sqrt(6 / fan_in).
fn he_uniform(rng: &mut StdRng, dims: &[usize], dtype: DType) -> Tensor {
    let fan_in: usize = dims[1..].iter().product();
    let bound = (6.0 / fan_in as f64).sqrt();
    let values: Vec<f64> = (0..dims.iter().product()).map(|_| rng.random_range(-bound..bound)).collect();
    Tensor::from_f64(dims, dtype, &values).expect("length matches")
}

fn random_images(rng: &mut StdRng, dims: &[usize], dtype: DType) -> Tensor {
    let values: Vec<f64> = (0..dims.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_f64(dims, dtype, &values).expect("length matches")
}

/// Block, global average pool, a 10-way classifier and softmax cross-entropy.
fn loss(block: &Block, fc: (&Var, &Var), x: &Var, labels: &Var) -> Result<Var> {
    block.forward(x)?.global_avg_pool()?.linear(fc.0, fc.1)?.cross_entropy(labels)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut rng = StdRng::seed_from_u64(2016);

    // 1. One step of a downsampling block (16 -> 32 channels, stride 2) on an eager f32 tape.
    let tape = Tape::eager(DType::F32);
    let x = tape.input("images", random_images(&mut rng, &[4, 16, 8, 8], DType::F32))?;
    let labels = tape.input("labels", Tensor::f32([4], vec![3.0, 1.0, 4.0, 1.0]).expect("4 labels"))?;
    let block = Block::new(&tape, "layer2.0", 16, 32, 2, &mut rng)?;
    let fc_w = tape.parameter("fc.weight", he_uniform(&mut rng, &[10, 32], DType::F32))?;
    let fc_b = tape.parameter("fc.bias", Tensor::full([10], DType::F32, 0.0)?)?;
    let l = loss(&block, (&fc_w, &fc_b), &x, &labels)?;
    let mut params = block.parameters();
    params.extend([&fc_w, &fc_b]);
    let grads = grad(&l, &params)?;

    println!("== graph: forward, then the gradient ops reverse mode appended ==");
    print!("{}", tape.dump());
    println!("\n== values (eager mode) ==");
    println!("loss = {:.6} (ln 10 = {:.6} for a uniform guess)", l.value()?.item().unwrap_or(f64::NAN), 10f64.ln());
    for (p, g) in params.iter().zip(&grads) {
        let norm = g.value()?.to_f64_vec().iter().map(|v| v * v).sum::<f64>().sqrt();
        println!("|d loss / d {}| = {norm:.6}  ({})", name_of(&tape, p), g.ty());
    }

    // 2. Gradient check of the same code in f64: identity and downsampling blocks.
    println!("\n== gradcheck (f64, central differences along random directions) ==");
    for (cin, cout, stride) in [(4, 4, 1), (4, 8, 2)] {
        // Finite differences are meaningless across a ReLU kink, so gradcheck refuses samples with a
        // pre-activation within 1e-3 of zero; draw new values when that happens.
        for attempt in 1.. {
            match check_block(&mut rng, cin, cout, stride) {
                Err(Error::NearKink { op, distance, .. }) if attempt < 20 => {
                    println!(
                        "block {cin}->{cout} stride {stride}: sample {attempt} has a {op} input {distance:.1e} from its kink; redrawing"
                    );
                }
                Ok(r) => {
                    println!(
                        "block {cin}->{cout} stride {stride}: ok, {} directions, max |error| {:.2e}",
                        r.directions, r.max_abs_error
                    );
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }

    // 3. The same step fused and compiled to Cranelift kernels, checked against the eager
    //    (reference) values.
    println!("\n== the same step, fused and JIT-compiled ==");
    let mut outputs = vec![l.id()];
    outputs.extend(grads.iter().map(|g| g.id()));
    let jit_error = |e: &dyn std::fmt::Display| Error::Argument { op: "jit".into(), message: e.to_string() };
    let unfused = skipgrad::fuse::Program { graph: tape.graph(), outputs };
    let stages = skipgrad::fuse::Pipeline::training().run(unfused.clone()).map_err(|e| jit_error(&e))?;
    let fused = &stages[stages.len() - 1].program;
    println!("fusion rewrites: {}", skipgrad::fuse::counts(&stages));
    let options = skipgrad::jit::CompileOptions::default();
    let unfused_calls =
        skipgrad::jit::compile(&unfused.graph, &unfused.outputs, &options).map_err(|e| jit_error(&e))?.steps();
    let started = std::time::Instant::now();
    let mut step = skipgrad::jit::compile(&fused.graph, &fused.outputs, &options).map_err(|e| jit_error(&e))?;
    let compile_ms = started.elapsed().as_secs_f64() * 1e3;
    let mut feeds = Feeds::new();
    for v in [&x, &labels].into_iter().chain(params.iter().copied()) {
        feeds.insert(name_of(&tape, v), v.value()?);
    }
    let compiled = step.run_tensors(&feeds).map_err(|e| jit_error(&e))?;
    let mut worst = 0.0f64;
    for (got, var) in compiled.iter().zip(std::iter::once(&l).chain(&grads)) {
        for (a, b) in got.to_f64_vec().iter().zip(var.value()?.to_f64_vec()) {
            worst = worst.max((a - b).abs() / b.abs().max(1.0));
        }
    }
    let stats = step.stats();
    println!(
        "{} kernel calls ({unfused_calls} unfused), {} distinct kernels ({} reused), compiled in {compile_ms:.0} ms on {} threads",
        step.steps(),
        stats.kernels_compiled,
        stats.kernels_reused,
        step.threads()
    );
    println!("largest relative difference from the eager values: {worst:.1e}");
    if worst > 1e-4 {
        return Err(Error::Argument { op: "jit".into(), message: format!("compiled step differs by {worst:e}") });
    }

    // 4. What a shape mistake looks like.
    println!("\n== a shape error ==");
    let wrong = tape.parameter("wrong.weight", Tensor::full([8, 32, 3, 3], DType::F32, 0.0)?)?;
    match x.conv2d(&wrong, 1, 1) {
        Err(e) => println!("{e}"),
        Ok(_) => unreachable!("16 input channels cannot meet a 32-channel weight"),
    }
    Ok(())
}

fn name_of(tape: &Tape, v: &Var) -> String {
    match &tape.graph().node(v.id()).map(|n| n.op.clone()) {
        Ok(Op::Parameter { name } | Op::Input { name }) => name.clone(),
        _ => v.id().to_string(),
    }
}

/// Gradient check of block + classifier + loss at random f64 values.
fn check_block(rng: &mut StdRng, cin: usize, cout: usize, stride: usize) -> Result<GradcheckReport> {
    let inputs = [
        random_images(rng, &[2, cin, 6, 6], DType::F64),
        he_uniform(rng, &[cout, cin, 3, 3], DType::F64),
        random_images(rng, &[cout], DType::F64),
        random_images(rng, &[cout], DType::F64),
        he_uniform(rng, &[cout, cout, 3, 3], DType::F64),
        random_images(rng, &[cout], DType::F64),
        random_images(rng, &[cout], DType::F64),
        he_uniform(rng, &[10, cout], DType::F64),
        random_images(rng, &[10], DType::F64),
    ];
    let labels = Tensor::f64([2], vec![7.0, 2.0]).expect("2 labels");
    let f = |v: &[Var]| {
        let (bn1, bn2) = ((v[2].clone(), v[3].clone()), (v[5].clone(), v[6].clone()));
        let block = Block { conv1: v[1].clone(), bn1, conv2: v[4].clone(), bn2, stride };
        loss(&block, (&v[7], &v[8]), &v[0], &v[0].tape().constant(labels.clone()))
    };
    gradcheck(f, &inputs, &GradcheckOptions { directions: 8, ..GradcheckOptions::default() })
}
