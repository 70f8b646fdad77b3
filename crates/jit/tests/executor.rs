//! The compiled executor: identical layers share kernels, results do not depend on the thread
//! count and repeat bit for bit, and bad feeds are typed errors.

use skipgrad_ir::{DType, Graph, NodeId, Op, Role, TensorType};
use skipgrad_jit::{CompileOptions, compile};

fn input(g: &mut Graph, name: &str, dims: &[usize]) -> NodeId {
    g.add_source(Op::Input { name: name.into() }, TensorType::new(DType::F32, dims), Role::Forward).unwrap()
}

/// Ten identical "BN, ReLU, add" layers on `[4, 8, 9, 9]`.
fn deep_graph() -> (Graph, NodeId) {
    let mut g = Graph::new();
    let mut h = input(&mut g, "x", &[4, 8, 9, 9]);
    for layer in 0..10 {
        let gamma = input(&mut g, &format!("l{layer}.gamma"), &[8]);
        let beta = input(&mut g, &format!("l{layer}.beta"), &[8]);
        let mean = g.add_node(Op::BatchMean, &[h], Role::Forward).unwrap();
        let var = g.add_node(Op::BatchVar, &[h], Role::Forward).unwrap();
        let y = g
            .add_node(Op::BatchNorm { eps: 1e-5, training: true }, &[h, mean, var, gamma, beta], Role::Forward)
            .unwrap();
        let r = g.add_node(Op::Relu, &[y], Role::Forward).unwrap();
        h = g.add_node(Op::Add, &[r, h], Role::Forward).unwrap();
    }
    let out = g.add_node(Op::ReduceSum { axes: [0, 2, 3].as_slice().into() }, &[h], Role::Forward).unwrap();
    (g, out)
}

fn feed(c: &mut skipgrad_jit::CompiledGraph) {
    let x: Vec<f32> = (0..4 * 8 * 81).map(|i| ((i * 7919 % 1000) as f32) / 500.0 - 1.0).collect();
    c.set_input("x", &x).unwrap();
    for layer in 0..10 {
        c.set_input(&format!("l{layer}.gamma"), &[1.0, 0.5, 2.0, 1.0, 1.5, 0.7, 1.0, 1.2]).unwrap();
        c.set_input(&format!("l{layer}.beta"), &[0.1; 8]).unwrap();
    }
}

#[test]
fn identical_layers_share_kernels() {
    let (g, out) = deep_graph();
    let c = compile(&g, &[out], &CompileOptions::default()).unwrap();
    // batch_mean, batch_var, batch_norm, relu, add, and the final reduce_sum.
    assert_eq!(c.stats().kernels_compiled, 6, "{:?}", c.stats());
    assert_eq!(c.stats().kernels_reused, 45);
    assert_eq!(c.steps(), 51);
    assert!(c.kernels().iter().all(|k| !k.ir.is_empty() && !k.vcode.is_empty()));
}

#[test]
fn results_are_independent_of_threads_and_repeat_bit_for_bit() {
    let (g, out) = deep_graph();
    let mut results = vec![];
    for threads in [1, 2, 3] {
        let mut c = compile(&g, &[out], &CompileOptions { threads, ..CompileOptions::default() }).unwrap();
        assert_eq!(c.threads(), threads);
        feed(&mut c);
        c.run();
        let first = c.output(0).unwrap().to_vec();
        c.run();
        assert_eq!(c.output(0).unwrap(), first.as_slice(), "replay is deterministic");
        results.push(first);
    }
    // Every group is computed by one thread in a fixed order, so even reductions agree exactly.
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0], results[2]);
}

#[test]
fn bad_feeds_are_typed_errors() {
    let (g, out) = deep_graph();
    let mut c = compile(&g, &[out], &CompileOptions::default()).unwrap();
    let err = c.set_input("nope", &[1.0]).unwrap_err();
    assert_eq!(err.to_string(), "jit run: the graph has no input or parameter \"nope\"");
    let err = c.set_input("x", &[1.0; 3]).unwrap_err();
    assert_eq!(err.to_string(), "jit run: \"x\" is f32[4,8,9,9], got 3 values");
}

#[test]
fn profile_and_schedule_account_for_every_kernel_call() {
    let (g, out) = deep_graph();
    let mut c = compile(&g, &[out], &CompileOptions::default()).unwrap();
    feed(&mut c);
    let profile = c.profile();
    assert_eq!(profile.iter().map(|r| r.calls).sum::<usize>(), c.steps());
    assert!(profile.windows(2).all(|w| w[0].seconds >= w[1].seconds), "slowest first");
    assert!(profile.iter().all(|r| r.bytes > 0.0 && !r.nodes.is_empty()));
    let table = skipgrad_jit::profile_table(&profile);
    assert_eq!(table.lines().count(), profile.len() + 2, "{table}");
    assert_eq!(c.schedule().count(), c.steps());
    let first = c.schedule().next().unwrap().1;
    assert!(first.name.starts_with("k0_batch_mean"), "{}", first.name);
}

#[test]
fn sgd_momentum_updates_parameters_and_velocities_in_one_kernel() {
    use skipgrad_jit::{Kernel, KernelSpec, NestSpec, Target};
    let (lr, momentum, wd) = (0.1, 0.9, 1e-4);
    let n = 1031; // not a multiple of the vector width or the group size
    let p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
    let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
    let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.01).collect();
    let (mut new_p, mut new_v) = (vec![0f32; n], vec![0f32; n]);
    let spec = KernelSpec::Nest(NestSpec::sgd_momentum(n, lr, momentum, wd));
    let kernel = Kernel::compile(&spec, &Target::host().unwrap()).unwrap();
    let args = [
        p.as_ptr() as *mut f32,
        g.as_ptr() as *mut f32,
        v.as_ptr() as *mut f32,
        new_p.as_mut_ptr(),
        new_v.as_mut_ptr(),
    ];
    // SAFETY: five buffers of n elements, as the spec's flat nest addresses.
    unsafe { kernel.run(&args, 0, spec.groups()) };
    for i in 0..n {
        let (lr, m, wd) = (lr as f32, momentum as f32, wd as f32);
        let vel = m * v[i] + (g[i] + wd * p[i]);
        assert!((new_v[i] - vel).abs() <= 1e-6 * vel.abs().max(1.0), "velocity {i}");
        assert!((new_p[i] - (p[i] - lr * vel)).abs() <= 1e-6, "parameter {i}");
    }
}

#[test]
fn zero_sized_batches_compile_and_run() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[0, 3, 8, 8]);
    let w = input(&mut g, "w", &[4, 3, 3, 3]);
    let y = g.add_node(Op::Conv2d(skipgrad_ir::Conv2dAttrs::square(2, 1)), &[x, w], Role::Forward).unwrap();
    let r = g.add_node(Op::Relu, &[y], Role::Forward).unwrap();
    let s = g
        .add_node(
            Op::ShortcutA(skipgrad_ir::ShortcutAttrs { stride: 2, pad_before: 0, pad_after: 1 }),
            &[x],
            Role::Forward,
        )
        .unwrap();
    let flat = g.add_node(Op::Reshape { shape: [0, 64].into() }, &[r], Role::Forward).unwrap();
    let fc = input(&mut g, "fc", &[5, 64]);
    let z = g.add_node(Op::MatMul { transpose_a: false, transpose_b: true }, &[flat, fc], Role::Forward).unwrap();
    let mut c = compile(&g, &[r, s, z], &CompileOptions::default()).unwrap();
    c.set_input("x", &[]).unwrap();
    c.run();
    assert_eq!(c.output(0).unwrap().len(), 0);
    assert_eq!(c.output(2).unwrap().len(), 0);
}

#[cfg(feature = "disas")]
#[test]
fn kernels_carry_their_disassembly_with_the_disas_feature() {
    let (g, out) = deep_graph();
    let c = compile(&g, &[out], &CompileOptions::default()).unwrap();
    for kernel in c.kernels() {
        let text = kernel.disassembly.as_deref().expect("disassembly with the disas feature");
        assert!(text.contains("ret"), "{}:\n{text}", kernel.name);
    }
}

/// Fused nodes the JIT has no kernel for are typed errors naming why, not panics or silently
/// different results.
#[test]
fn malformed_fused_nodes_are_typed_errors() {
    use skipgrad_ir::{Conv2dAttrs, Fused};
    let ty = |dims: &[usize]| TensorType::new(DType::F32, dims);
    let mut body = Graph::new();
    let x = body.add_source(Op::Input { name: Fused::placeholder(0) }, ty(&[1, 2, 4, 4]), Role::Forward).unwrap();
    let w = body.add_source(Op::Input { name: Fused::placeholder(1) }, ty(&[2, 2, 3, 3]), Role::Forward).unwrap();
    let y = body.add_node(Op::Conv2d(Conv2dAttrs::square(1, 1)), &[x, w], Role::Forward).unwrap();
    body.add_node(Op::Relu, &[y], Role::Forward).unwrap();
    // Two outputs, but not convolution + batch statistics.
    let fused = Fused { rule: "test".into(), body: std::sync::Arc::new(body), covers: vec![], outputs: vec![2, 3] };
    let mut g = Graph::new();
    let xs = g.add_source(Op::Input { name: "x".into() }, ty(&[1, 2, 4, 4]), Role::Forward).unwrap();
    let ws = g.add_source(Op::Input { name: "w".into() }, ty(&[2, 2, 3, 3]), Role::Forward).unwrap();
    let f = g.add_node(Op::Fused(fused), &[xs, ws], Role::Forward).unwrap();
    let out = g.add_node(Op::Output { index: 1 }, &[f], Role::Forward).unwrap();
    let err = compile(&g, &[f, out], &CompileOptions::default()).err().expect("no kernel for this").to_string();
    assert!(err.contains("only convolution + batch statistics have several"), "{err}");
}

/// A chain of elementwise maps, each reading its operand for the last time, runs in place: the
/// three intermediates share one block, and the result equals the unplanned compile's.
#[test]
fn elementwise_chains_run_in_place() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[1030]);
    let a = g.add_node(Op::Relu, &[x], Role::Forward).unwrap();
    let b = g.add_node(Op::Scale { c: 3.0 }, &[a], Role::Forward).unwrap();
    let c = g.add_node(Op::Mul, &[b, b], Role::Forward).unwrap();
    let out = g.add_node(Op::AddScalar { c: 1.0 }, &[c], Role::Forward).unwrap();
    let values: Vec<f32> = (0..1030).map(|i| (i as f32 - 500.0) / 100.0).collect();
    let mut results = vec![];
    for plan_memory in [true, false] {
        let mut compiled = compile(&g, &[out], &CompileOptions { plan_memory, ..CompileOptions::default() }).unwrap();
        compiled.set_input("x", &values).unwrap();
        compiled.run();
        let shared = compiled.memory().shared;
        assert_eq!(shared, if plan_memory { 4 * 1030 } else { 3 * 4 * 1030 }, "plan_memory {plan_memory}");
        results.push(compiled.output(0).unwrap().to_vec());
    }
    assert_eq!(results[0], results[1]);
    let want: Vec<f32> = values.iter().map(|v| (3.0 * v.max(0.0)) * (3.0 * v.max(0.0)) + 1.0).collect();
    assert_eq!(results[0], want);
}

/// A Winograd convolution's weight transform is a kernel of its own whose result is kept between
/// runs: it runs again only after its weights are fed again, and the convolution always equals the
/// reference for the weights it was last fed. A graph that updates its weights in place
/// transforms them on every run.
#[test]
fn winograd_weight_transforms_run_again_only_when_their_weights_are_fed() {
    use skipgrad_ir::{Conv2dAttrs, Tensor};
    use skipgrad_reference::{Feeds, evaluate};
    let mut g = Graph::new();
    let x = input(&mut g, "x", &[4, 16, 8, 8]);
    let w = input(&mut g, "w", &[16, 16, 3, 3]);
    let y = g.add_node(Op::Conv2d(Conv2dAttrs::square(1, 1)), &[x, w], Role::Forward).unwrap();
    let values = |seed: usize, n: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed) % 997) as f32 / 498.5 - 1.0).collect()
    };
    let reference = |xv: &[f32], wv: &[f32]| -> Vec<f32> {
        let mut feeds = Feeds::new();
        feeds.insert("x".into(), Tensor::f32([4, 16, 8, 8], xv.to_vec()).unwrap());
        feeds.insert("w".into(), Tensor::f32([16, 16, 3, 3], wv.to_vec()).unwrap());
        evaluate(&g, &feeds, &[y]).unwrap()[0].to_f64_vec().into_iter().map(|v| v as f32).collect()
    };
    let close = |got: &[f32], want: &[f32]| got.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0));
    let transforms = |c: &mut skipgrad_jit::CompiledGraph| {
        c.profile().iter().filter(|k| k.name.ends_with("_weights")).map(|k| k.calls).sum::<usize>()
    };
    let mut c = compile(&g, &[y], &CompileOptions::default()).unwrap();
    assert!(c.kernel_for(y).unwrap().name.contains("winograd"), "{}", c.kernel_for(y).unwrap().name);
    let (x1, w1, w2) = (values(1, 4 * 16 * 64), values(2, 16 * 16 * 9), values(3, 16 * 16 * 9));
    c.set_input("x", &x1).unwrap();
    c.set_input("w", &w1).unwrap();
    assert_eq!(transforms(&mut c), 1, "the first run transforms the weights");
    assert!(close(c.output(0).unwrap(), &reference(&x1, &w1)));
    let x2 = values(4, 4 * 16 * 64);
    c.set_input("x", &x2).unwrap();
    assert_eq!(transforms(&mut c), 0, "new images alone reuse the transformed weights");
    assert!(close(c.output(0).unwrap(), &reference(&x2, &w1)));
    c.set_input("w", &w2).unwrap();
    assert_eq!(transforms(&mut c), 1, "weights fed again are transformed again");
    assert!(close(c.output(0).unwrap(), &reference(&x2, &w2)));
    c.run();
    assert!(close(c.output(0).unwrap(), &reference(&x2, &w2)));

    // Output 1, the weights halved, is written into the weights in place: every run transforms.
    let mut updating = g.clone();
    let half = updating.add_node(Op::Scale { c: 0.5 }, &[w], Role::Forward).unwrap();
    let options = CompileOptions { updates: vec![("w".into(), 1)], ..CompileOptions::default() };
    let mut c = compile(&updating, &[y, half], &options).unwrap();
    assert!(c.in_place(1));
    c.set_input("x", &x1).unwrap();
    c.set_input("w", &w1).unwrap();
    let mut w_now = w1.clone();
    for _ in 0..3 {
        assert_eq!(transforms(&mut c), 1);
        assert!(close(c.output(0).unwrap(), &reference(&x1, &w_now)));
        w_now.iter_mut().for_each(|v| *v *= 0.5);
    }
}
