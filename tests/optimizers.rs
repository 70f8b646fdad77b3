//! Optimizers recorded on the tape, checked three ways: AdamW's compiled update (fused, on the
//! JIT) against the reference interpreter, and both against a plain f64 transcription of PyTorch's
//! `torch.optim.AdamW` step, over several steps whose state feeds the next (so the bias
//! corrections' step count is checked too). SGD through the `Optimizer` trait records exactly
//! what `Sgd::update_at` records.

mod common;

use common::config;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::{RngExt, SeedableRng};
use skipgrad::fuse::{Pipeline, Program};
use skipgrad::jit::{CompileOptions, compile};
use skipgrad::prelude::*;
use std::collections::HashMap;

/// One parameter's state in f64: the parameter, its gradient, and the optimizer's two moments.
#[derive(Clone, Debug)]
struct AdamState {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
}

/// PyTorch's single-tensor AdamW step (torch/optim/adamw.py, `amsgrad=False`,
/// `maximize=False`), transcribed in f64 without reordering.
fn pytorch_adamw(s: &mut AdamState, g: &[f64], o: &AdamW, lr: f64, step: u64) {
    let bias_correction1 = 1.0 - o.beta1.powi(step as i32);
    let bias_correction2 = 1.0 - o.beta2.powi(step as i32);
    let step_size = lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.sqrt();
    for (((p, m), v), &g) in s.p.iter_mut().zip(&mut s.m).zip(&mut s.v).zip(g) {
        *p *= 1.0 - lr * o.weight_decay;
        *m += (g - *m) * (1.0 - o.beta1); // exp_avg.lerp_(grad, 1 - beta1)
        *v = *v * o.beta2 + (1.0 - o.beta2) * g * g;
        let denom = v.sqrt() / bias_correction2_sqrt + o.eps;
        *p += -step_size * *m / denom;
    }
}

/// The traced update of parameters of `sizes` by `optimizer`: the graph, its update outputs, and
/// the input each one replaces (by name).
fn traced_update(optimizer: &dyn Optimizer, sizes: &[usize]) -> (Graph, Vec<NodeId>, Vec<String>) {
    let tape = Tape::trace(DType::F32);
    let scalars: Vec<Var> = optimizer.scalars().iter().map(|s| tape.input_spec(s, DType::F32, &[]).unwrap()).collect();
    for (k, &n) in sizes.iter().enumerate() {
        let p = tape.parameter_spec(&format!("p{k}"), DType::F32, &[n]).unwrap();
        let g = tape.input_spec(&format!("g{k}"), DType::F32, &[n]).unwrap();
        let slots: Vec<Var> = optimizer
            .slots()
            .iter()
            .map(|s| tape.parameter_spec(&format!("p{k}.{s}"), DType::F32, &[n]).unwrap())
            .collect();
        optimizer.record(&scalars, &p, &g, &slots).unwrap();
    }
    let graph = tape.graph();
    let updates = tape.updates();
    let names = updates.iter().map(|(t, _)| graph.source_name(t.id()).unwrap().to_string()).collect();
    (graph, updates.iter().map(|(_, new)| new.id()).collect(), names)
}

fn f32_tensor(values: &[f64]) -> Tensor {
    Tensor::f32([values.len()], values.iter().map(|&v| v as f32).collect()).unwrap()
}

/// The relative gap of `got` from `want`, elementwise, at its worst (against 1 for small values).
fn worst_gap(got: &[f64], want: &[f64]) -> f64 {
    got.iter().zip(want).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(config(24))]

    /// Three steps of AdamW on a few parameters (one longer than a vector loop, one shorter),
    /// from random moments, gradients and hyperparameters, at a rate that changes every step and
    /// from a step count that may be late in a run: the fused JIT kernel, the reference
    /// interpreter (both in f32) and PyTorch's formula in f64 agree to f32 rounding.
    #[test]
    fn adamw_matches_the_reference_and_pytorchs_formula(
        sizes in prop::collection::vec(1..300usize, 1..4),
        beta1 in 0.5..0.99f64,
        beta2 in 0.9..0.9999f64,
        eps in prop::sample::select(vec![1e-8, 1e-6, 1e-3]),
        weight_decay in prop::sample::select(vec![0.0, 1e-4, 1e-2, 0.1]),
        lr in 1e-4..0.1f64,
        first_step in prop::sample::select(vec![1u64, 2, 10, 1000]),
        seed: u64,
    ) {
        let adamw = AdamW { beta1, beta2, eps, weight_decay };
        let (graph, outputs, targets) = traced_update(&adamw, &sizes);
        let fused = Pipeline::training().run(Program { graph: graph.clone(), outputs: outputs.clone() }).unwrap();
        let fused = fused.last().unwrap().program.clone();
        let mut compiled = compile(&fused.graph, &fused.outputs, &CompileOptions::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(compiled.steps(), 1, "every parameter's update in one fused kernel");

        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut uniform = |n: usize, lo: f64, hi: f64| -> Vec<f64> {
            (0..n).map(|_| (rng.random_range(lo..hi) as f32) as f64).collect()
        };
        // f32 values from the start, so the three computations begin from the same numbers.
        let mut exact: Vec<AdamState> = sizes
            .iter()
            .map(|&n| AdamState { p: uniform(n, -1.0, 1.0), m: uniform(n, -0.1, 0.1), v: uniform(n, 0.0, 0.01) })
            .collect();
        let mut jit_state: HashMap<String, Vec<f64>> = HashMap::new();
        for (k, s) in exact.iter().enumerate() {
            jit_state.insert(format!("p{k}"), s.p.clone());
            jit_state.insert(format!("p{k}.exp_avg"), s.m.clone());
            jit_state.insert(format!("p{k}.exp_avg_sq"), s.v.clone());
        }
        let mut reference_state = jit_state.clone();
        for t in 0..3u64 {
            let step = first_step + t;
            let rate = lr * (1.0 - 0.3 * t as f64);
            let grads: Vec<Vec<f64>> = sizes.iter().map(|&n| uniform(n, -1.0, 1.0)).collect();
            let feeds_of = |state: &HashMap<String, Vec<f64>>| {
                let mut feeds = Feeds::new();
                for (name, values) in state {
                    feeds.insert(name.clone(), f32_tensor(values));
                }
                for (k, g) in grads.iter().enumerate() {
                    feeds.insert(format!("g{k}"), f32_tensor(g));
                }
                for (name, value) in adamw.scalars().iter().zip(adamw.scalar_values(rate, step)) {
                    feeds.insert(name.to_string(), Tensor::f32([], vec![value as f32]).unwrap());
                }
                feeds
            };
            let jit = compiled.run_tensors(&feeds_of(&jit_state)).unwrap();
            let reference = evaluate(&graph, &feeds_of(&reference_state), &outputs).unwrap();
            for (k, name) in targets.iter().enumerate() {
                jit_state.insert(name.clone(), jit[k].to_f64_vec());
                reference_state.insert(name.clone(), reference[k].to_f64_vec());
            }
            for (s, g) in exact.iter_mut().zip(&grads) {
                pytorch_adamw(s, g, &adamw, rate, step);
            }
            for (k, s) in exact.iter().enumerate() {
                for (slot, want) in [("", &s.p), (".exp_avg", &s.m), (".exp_avg_sq", &s.v)] {
                    let name = format!("p{k}{slot}");
                    let (j, r) = (&jit_state[&name], &reference_state[&name]);
                    let (jit_gap, reference_gap, between) = (worst_gap(j, want), worst_gap(r, want), worst_gap(j, r));
                    prop_assert!(
                        jit_gap < 1e-5 && reference_gap < 1e-5 && between < 1e-5,
                        "step {step}, {name}: JIT {jit_gap:e}, reference {reference_gap:e} from PyTorch's formula, {between:e} apart"
                    );
                }
            }
        }
    }
}

/// The trait's SGD is `Sgd::update_at`: the same graph, node for node.
#[test]
fn sgd_through_the_trait_records_update_at() {
    let sgd = Sgd::paper();
    let by_trait = traced_update(&sgd, &[5, 7]).0;
    let tape = Tape::trace(DType::F32);
    let lr = tape.input_spec("lr", DType::F32, &[]).unwrap();
    for (k, n) in [5, 7].into_iter().enumerate() {
        let p = tape.parameter_spec(&format!("p{k}"), DType::F32, &[n]).unwrap();
        let g = tape.input_spec(&format!("g{k}"), DType::F32, &[n]).unwrap();
        let v = tape.parameter_spec(&format!("p{k}.momentum"), DType::F32, &[n]).unwrap();
        sgd.update_at(&lr, &p, &g, &v).unwrap();
    }
    assert_eq!(by_trait.to_string(), tape.graph().to_string());
}

/// AdamW's scalars at step t: the decoupled decay, the step size with the first moment's bias
/// correction, and the reciprocal square root of the second's.
#[test]
fn adamw_scalars_follow_the_step_count() {
    let adamw = AdamW::default();
    let [decay, step_size, inv_sqrt_bias2] = adamw.scalar_values(0.001, 1)[..] else { panic!("three scalars") };
    assert!((decay - (1.0 - 0.001 * 0.01)).abs() < 1e-15);
    assert!((step_size - 0.001 / 0.1).abs() < 1e-15);
    assert!((inv_sqrt_bias2 - 1.0 / 0.001f64.sqrt()).abs() < 1e-9);
    let late = adamw.scalar_values(0.001, 100_000);
    assert!((late[1] - 0.001).abs() < 1e-12 && (late[2] - 1.0).abs() < 1e-12, "{late:?}");
    assert_eq!(adamw.describe(), "adamw beta1=0.9 beta2=0.999 eps=0.00000001 weight_decay=0.01");
}
