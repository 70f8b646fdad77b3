//! Helpers shared by the cross-crate property tests.
#![allow(dead_code)]

/// The random training networks, and a strategy for their blocks.
pub mod net {
    use proptest::prelude::*;
    pub use skipgrad::testing::*;

    /// Any block, at the sizes the properties use.
    pub fn block() -> impl Strategy<Value = Block> {
        prop_oneof![
            (1..5usize, prop::sample::select(vec![1usize, 3]), 1..3usize)
                .prop_map(|(out, kernel, stride)| Block::Plain { out, kernel, stride }),
            (1..3usize).prop_map(|stride| Block::Residual { stride }),
            (1..3usize).prop_map(|stride| Block::Projection { stride }),
            (1..3usize).prop_map(|stride| Block::Bottleneck { stride }),
            (1..4usize).prop_map(|out| Block::Stem { out }),
        ]
    }
}

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use skipgrad::prelude::*;

/// Cases per property: moderate for CI, raised with `PROPTEST_CASES=N`.
pub fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    ProptestConfig { cases, max_global_rejects: 10 * cases.max(100), ..ProptestConfig::default() }
}

/// An f64 tensor of values uniform in [-1, 1), from a seed.
pub fn uniform(seed: u64, dims: &[usize]) -> Tensor {
    uniform_in(seed, dims, -1.0, 1.0)
}

/// An f64 tensor of values uniform in [lo, hi), from a seed.
pub fn uniform_in(seed: u64, dims: &[usize], lo: f64, hi: f64) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = dims.iter().product();
    Tensor::f64(dims, (0..n).map(|_| rng.random_range(lo..hi)).collect()).unwrap()
}

/// Class labels in 0..classes, from a seed, as an f64 tensor `[n]`.
pub fn labels(seed: u64, n: usize, classes: usize) -> Tensor {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::f64([n], (0..n).map(|_| rng.random_range(0..classes) as f64).collect()).unwrap()
}

/// Runs gradcheck: a near-kink sample is rejected (proptest draws another), any other error fails.
pub fn check<F>(f: F, inputs: &[Tensor]) -> Result<(), TestCaseError>
where
    F: Fn(&[Var]) -> skipgrad::Result<Var>,
{
    check_with(f, inputs, &GradcheckOptions::default())
}

/// [`check`] with explicit options.
pub fn check_with<F>(f: F, inputs: &[Tensor], opts: &GradcheckOptions) -> Result<(), TestCaseError>
where
    F: Fn(&[Var]) -> skipgrad::Result<Var>,
{
    match gradcheck(f, inputs, opts) {
        Ok(_) => Ok(()),
        Err(Error::NearKink { .. }) => Err(TestCaseError::reject("sample near a kink")),
        Err(e) => Err(TestCaseError::fail(e.to_string())),
    }
}

/// A constant on the tape of `like`.
pub fn constant(like: &Var, t: &Tensor) -> Var {
    like.tape().constant(t.clone())
}
