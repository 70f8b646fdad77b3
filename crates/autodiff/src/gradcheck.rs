//! `gradcheck`: compares reverse-mode gradients with central differences in f64.
//!
//! JAX's method: for random directions `u`, compare `<grad f(x), u>` with
//! `(f(x + eps u) - f(x - eps u)) / 2 eps`; non-scalar outputs are first reduced with a random
//! cotangent. For small functions the full Jacobian is compared entry by entry too. A failure
//! names the worst element and gives both values.

use crate::{Error, GradcheckFailure, Result, Tape, Var, vjp};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use skipgrad_ir::{DType, Shape, Tensor};

/// Settings of a gradient check.
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Finite-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Number of random directions.
    pub directions: usize,
    /// Compare the full Jacobian when (input elements) x (output elements) is at most this.
    pub jacobian_limit: usize,
    /// Reject samples this close to a ReLU or max kink with [`Error::NearKink`].
    pub kink_margin: f64,
    /// Seed of the random directions and cotangent.
    pub seed: u64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-6,
            rtol: 1e-5,
            directions: 3,
            jacobian_limit: 2048,
            kink_margin: 1e-3,
            seed: 0,
        }
    }
}

/// What a passing gradient check compared.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckReport {
    /// Random directions compared.
    pub directions: usize,
    /// Jacobian entries compared (0 when the function was too large).
    pub jacobian_entries: usize,
    /// Largest `|analytic - numeric|` seen.
    pub max_abs_error: f64,
}

/// Checks the gradients of `f` at `inputs` (converted to f64). `f` receives one Var per input on
/// a fresh eager f64 tape and may return a tensor of any shape; make labels and other
/// non-differentiable arguments constants inside `f`.
pub fn gradcheck<F>(f: F, inputs: &[Tensor], opts: &GradcheckOptions) -> Result<GradcheckReport>
where
    F: Fn(&[Var]) -> Result<Var>,
{
    let shapes: Vec<Shape> = inputs.iter().map(|t| t.shape().clone()).collect();
    let x: Vec<Vec<f64>> = inputs.iter().map(|t| t.to_f64_vec()).collect();
    let run = |values: &[Vec<f64>]| -> Result<(Vec<Var>, Var)> {
        let tape = Tape::eager(DType::F64);
        let vars = values
            .iter()
            .zip(&shapes)
            .enumerate()
            .map(|(i, (v, s))| tape.input(&format!("x{i}"), Tensor::f64(s.clone(), v.clone())?))
            .collect::<Result<Vec<_>>>()?;
        let y = f(&vars)?;
        Ok((vars, y))
    };
    let eval = |values: &[Vec<f64>]| -> Result<Vec<f64>> { Ok(run(values)?.1.value()?.to_f64_vec()) };

    let (vars, y) = run(&x)?;
    check_kinks(y.tape(), opts.kink_margin)?;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let y_len = y.shape().numel();
    let cotangent: Vec<f64> = if y.shape().rank() == 0 { vec![1.0] } else { random(&mut rng, y_len) };
    let refs: Vec<&Var> = vars.iter().collect();
    let v = y.tape().constant(Tensor::f64(y.shape(), cotangent.clone())?);
    let analytic: Vec<Vec<f64>> =
        vjp(&y, &v, &refs)?.iter().map(|g| g.value().map(|t| t.to_f64_vec())).collect::<Result<_>>()?;
    let scalar = |values: &[Vec<f64>]| -> Result<f64> { Ok(dot(&eval(values)?, &cotangent)) };

    let mut checker = Checker { opts, max_abs_error: 0.0 };
    for d in 0..opts.directions {
        let u: Vec<Vec<f64>> = x.iter().map(|xi| random(&mut rng, xi.len())).collect();
        let a: f64 = analytic.iter().zip(&u).map(|(g, u)| dot(g, u)).sum();
        let n = central(opts.eps, |s| scalar(&shift(&x, &u, s)))?;
        if let Err(mut failure) = checker.compare("directional derivative", a, n, || format!("direction {d}")) {
            if let Some(worst) = worst_element(&x, &shapes, &analytic, &scalar, &mut checker)? {
                failure.location = format!("{} (worst element {})", failure.location, worst);
            }
            return Err(Error::Gradcheck(Box::new(failure)));
        }
    }

    let in_len: usize = x.iter().map(Vec::len).sum();
    let mut entries = 0;
    if in_len * y_len <= opts.jacobian_limit {
        // Rows from reverse mode (one vjp per output element), columns from central differences.
        let mut rows = Vec::with_capacity(y_len);
        for o in 0..y_len {
            let mut onehot = vec![0.0; y_len];
            onehot[o] = 1.0;
            let e = y.tape().constant(Tensor::f64(y.shape(), onehot)?);
            let row: Vec<Vec<f64>> =
                vjp(&y, &e, &refs)?.iter().map(|g| g.value().map(|t| t.to_f64_vec())).collect::<Result<_>>()?;
            rows.push(row);
        }
        for (i, j) in elements(&x) {
            let unit = unit_vector(&x, i, j);
            let column = central_vec(opts.eps, |s| eval(&shift(&x, &unit, s)))?;
            for (o, &n) in column.iter().enumerate() {
                let where_ = || format!("d y{} / d x{i}{}", index(&y.shape(), o), index(&shapes[i], j));
                checker.compare("jacobian", rows[o][i][j], n, where_).map_err(|f| Error::Gradcheck(Box::new(f)))?;
                entries += 1;
            }
        }
    }
    Ok(GradcheckReport { directions: opts.directions, jacobian_entries: entries, max_abs_error: checker.max_abs_error })
}

struct Checker<'a> {
    opts: &'a GradcheckOptions,
    max_abs_error: f64,
}

impl Checker<'_> {
    /// Passes when `|a - n| <= atol + rtol * max(|a|, |n|)`.
    fn compare(&mut self, check: &str, a: f64, n: f64, location: impl Fn() -> String) -> Result<(), GradcheckFailure> {
        let abs_error = (a - n).abs();
        let tolerance = self.opts.atol + self.opts.rtol * a.abs().max(n.abs());
        self.max_abs_error = self.max_abs_error.max(abs_error);
        if abs_error <= tolerance {
            return Ok(());
        }
        Err(GradcheckFailure {
            check: check.into(),
            location: location(),
            analytic: a,
            numeric: n,
            abs_error: if abs_error.is_nan() { f64::INFINITY } else { abs_error },
            tolerance,
        })
    }
}

/// After a directional failure: the input element whose gradient is furthest off, for inputs
/// small enough to difference element by element.
fn worst_element(
    x: &[Vec<f64>],
    shapes: &[Shape],
    analytic: &[Vec<f64>],
    scalar: &dyn Fn(&[Vec<f64>]) -> Result<f64>,
    checker: &mut Checker,
) -> Result<Option<String>> {
    if x.iter().map(Vec::len).sum::<usize>() > 4096 {
        return Ok(None);
    }
    let mut worst: Option<(f64, String)> = None;
    for (i, j) in elements(x) {
        let n = central(checker.opts.eps, |s| scalar(&shift(x, &unit_vector(x, i, j), s)))?;
        let a = analytic[i][j];
        let err = (a - n).abs() / (checker.opts.atol + checker.opts.rtol * a.abs().max(n.abs()));
        if worst.as_ref().is_none_or(|(w, _)| err > *w) {
            let text = format!("x{i}{}: analytic {a:.10e}, numeric {n:.10e}", index(&shapes[i], j));
            worst = Some((err, text));
        }
    }
    Ok(worst.map(|(_, t)| t))
}

/// Fails with [`Error::NearKink`] when any differentiated op sits within `margin` of a kink.
fn check_kinks(tape: &Tape, margin: f64) -> Result<()> {
    let graph = tape.graph();
    for (id, node) in graph.ids().zip(graph.nodes()) {
        if !tape.0.borrow().tracked[id.index()] {
            continue;
        }
        let inputs: Vec<Tensor> = node.inputs.iter().map(|&i| tape.value_of(i)).collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = inputs.iter().collect();
        if let Some(distance) = skipgrad_reference::kink_distance(&node.op, &refs)
            && distance < margin
        {
            return Err(Error::NearKink { op: node.op.to_string(), node: id.index(), distance, margin });
        }
    }
    Ok(())
}

fn central(eps: f64, f: impl Fn(f64) -> Result<f64>) -> Result<f64> {
    Ok((f(eps)? - f(-eps)?) / (2.0 * eps))
}

fn central_vec(eps: f64, f: impl Fn(f64) -> Result<Vec<f64>>) -> Result<Vec<f64>> {
    let (plus, minus) = (f(eps)?, f(-eps)?);
    Ok(plus.iter().zip(&minus).map(|(p, m)| (p - m) / (2.0 * eps)).collect())
}

/// Every (input, element) pair, input by input.
fn elements(x: &[Vec<f64>]) -> impl Iterator<Item = (usize, usize)> + '_ {
    x.iter().enumerate().flat_map(|(i, xi)| (0..xi.len()).map(move |j| (i, j)))
}

fn shift(x: &[Vec<f64>], u: &[Vec<f64>], s: f64) -> Vec<Vec<f64>> {
    x.iter().zip(u).map(|(xi, ui)| xi.iter().zip(ui).map(|(a, b)| a + s * b).collect()).collect()
}

fn unit_vector(x: &[Vec<f64>], i: usize, j: usize) -> Vec<Vec<f64>> {
    let mut u: Vec<Vec<f64>> = x.iter().map(|xi| vec![0.0; xi.len()]).collect();
    u[i][j] = 1.0;
    u
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `[i,j,k]` for a flat index into `shape` (empty for scalars).
fn index(shape: &Shape, mut flat: usize) -> String {
    if shape.rank() == 0 {
        return String::new();
    }
    let mut coords = vec![0; shape.rank()];
    for a in (0..shape.rank()).rev() {
        coords[a] = flat % shape.dims()[a];
        flat /= shape.dims()[a];
    }
    format!("{coords:?}")
}
