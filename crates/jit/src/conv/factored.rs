//! A small constant matrix `A` applied to vectors (`y = A x`) with its shared subexpressions, as
//! the Winograd transforms are: read from the table, not written by hand per matrix.
//!
//! Two shapes of sharing are found:
//! - **column pairs**: columns `j1`, `j2` whose coefficients are equal or opposite in every row
//!   (Aᵀ's columns for the points 1 and -1, 2 and -2) are read through `x_j1 + x_j2` and
//!   `x_j1 - x_j2`, each computed once;
//! - **row pairs**: rows equal on some operands and opposite on the others (Bᵀ's rows for ±1 and
//!   ±2) are `e + k o` and `e - k o`, the even and odd parts computed once.
//!
//! Rows that share a column pair's operand are evaluated together, so a caller that loads its
//! inputs per group ([`Factored::emit_group`]) loads each once per group, and keeps only the
//! group's rows live.

use crate::MulAdd;
use crate::codegen::mul_add_emit;
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// What a coefficient multiplies: an input, or the sum or difference of a column pair.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Operand {
    Input(usize),
    Sum(usize, usize),
    Difference(usize, usize),
}

/// A row as a sum of coefficient times operand, without zero coefficients.
type Terms = Vec<(f32, Operand)>;

/// How a group's rows are computed.
#[derive(Clone, PartialEq, Debug)]
enum Form {
    /// Each row on its own (sharing the group's operands).
    Rows(Vec<Terms>),
    /// Two rows: `even + k odd` and `even - k odd`.
    Pair { even: Terms, odd: Terms, k: f32 },
}

/// Rows of the matrix computed together.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Group {
    /// The rows, in the order [`Factored::emit_group`] returns them.
    pub(crate) rows: Vec<usize>,
    form: Form,
}

/// A matrix, factored into groups of rows.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Factored {
    /// Every row in exactly one group.
    pub(crate) groups: Vec<Group>,
    rows: usize,
}

impl Factored {
    /// Factors the matrix whose rows are `a`.
    pub(crate) fn new(a: &[&[f32]]) -> Factored {
        let columns = a.first().map_or(0, |r| r.len());
        // Column pairs: equal or opposite in every row, and not zero in all.
        let mut partner: Vec<Option<usize>> = vec![None; columns];
        for j1 in 0..columns {
            for j2 in j1 + 1..columns {
                let paired = partner[j1].is_some() || partner[j2].is_some();
                let matches = a.iter().all(|r| r[j1].abs() == r[j2].abs()) && a.iter().any(|r| r[j1] != 0.0);
                if !paired && matches {
                    (partner[j1], partner[j2]) = (Some(j2), Some(j1));
                }
            }
        }
        let terms: Vec<Terms> = a
            .iter()
            .map(|r| {
                let mut t = vec![];
                for j in (0..columns).filter(|&j| r[j] != 0.0) {
                    match partner[j] {
                        None => t.push((r[j], Operand::Input(j))),
                        Some(p) if p > j && r[p] == r[j] => t.push((r[j], Operand::Sum(j, p))),
                        Some(p) if p > j => t.push((r[j], Operand::Difference(j, p))),
                        Some(_) => {} // the second of a pair: read through the first
                    }
                }
                t
            })
            .collect();
        let mut groups: Vec<Group> = vec![];
        let mut done = vec![false; a.len()];
        // Row pairs: the same operands, each coefficient equal or opposite, some opposite.
        for r1 in 0..a.len() {
            for r2 in r1 + 1..a.len() {
                if done[r1] || done[r2] {
                    continue;
                }
                if let Some(form) = pair(&terms[r1], &terms[r2]) {
                    groups.push(Group { rows: vec![r1, r2], form });
                    (done[r1], done[r2]) = (true, true);
                }
            }
        }
        // The other rows, together with the rows that share a column pair's operand with them.
        for r in 0..a.len() {
            if done[r] {
                continue;
            }
            let derived = |t: &Terms| -> Vec<Operand> {
                t.iter().map(|x| x.1).filter(|o| !matches!(o, Operand::Input(_))).collect()
            };
            let mine = derived(&terms[r]);
            let rows: Vec<usize> = (r..a.len())
                .filter(|&s| !done[s] && (s == r || derived(&terms[s]).iter().any(|o| mine.contains(o))))
                .collect();
            for &s in &rows {
                done[s] = true;
            }
            let form = Form::Rows(rows.iter().map(|&s| terms[s].clone()).collect());
            groups.push(Group { rows, form });
        }
        Factored { groups, rows: a.len() }
    }

    /// The values of group `g`'s rows (in `groups[g].rows` order) of inputs of type `ty` (f32 or
    /// a vector of them): `x(b, j)` emits input `j`, at most once per call.
    pub(crate) fn emit_group(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        ty: Type,
        g: usize,
        x: &mut dyn FnMut(&mut FunctionBuilder, usize) -> Value,
    ) -> Vec<Value> {
        let mut inputs: Vec<(usize, Value)> = vec![];
        let mut derived: Vec<(Operand, Value)> = vec![];
        let mut operand = |b: &mut FunctionBuilder, o: Operand| -> Value {
            let mut input = |b: &mut FunctionBuilder, j: usize| match inputs.iter().find(|(i, _)| *i == j) {
                Some(&(_, v)) => v,
                None => {
                    let v = x(b, j);
                    inputs.push((j, v));
                    v
                }
            };
            match o {
                Operand::Input(j) => input(b, j),
                Operand::Sum(j1, j2) | Operand::Difference(j1, j2) => {
                    if let Some(&(_, v)) = derived.iter().find(|(d, _)| *d == o) {
                        return v;
                    }
                    let (v1, v2) = (input(b, j1), input(b, j2));
                    let v = match o {
                        Operand::Sum(..) => b.ins().fadd(v1, v2),
                        _ => b.ins().fsub(v1, v2),
                    };
                    derived.push((o, v));
                    v
                }
            }
        };
        match &self.groups[g].form {
            Form::Rows(rows) => rows.iter().map(|t| sum(b, mul_add, ty, t, &mut operand)).collect(),
            Form::Pair { even, odd, k } => {
                let o = sum(b, mul_add, ty, odd, &mut operand);
                if even.is_empty() {
                    let first = scale(b, ty, *k, o);
                    return vec![first, negate(b, ty, first)];
                }
                let e = sum(b, mul_add, ty, even, &mut operand);
                if *k == 1.0 {
                    return vec![b.ins().fadd(e, o), b.ins().fsub(e, o)];
                }
                let (plus, minus) = (constant(b, ty, *k), constant(b, ty, -*k));
                vec![mul_add_emit(b, mul_add, plus, o, e), mul_add_emit(b, mul_add, minus, o, e)]
            }
        }
    }

    /// Every row's value, in row order (`x(b, j)` is called once per input and group that reads
    /// it: give it values already computed).
    pub(crate) fn emit(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        ty: Type,
        x: &mut dyn FnMut(&mut FunctionBuilder, usize) -> Value,
    ) -> Vec<Value> {
        let mut y: Vec<Option<Value>> = vec![None; self.rows];
        self.emit_each(b, mul_add, ty, x, &mut |_, r, v| y[r] = Some(v));
        y.into_iter().map(|v| v.expect("every row is in a group")).collect()
    }

    /// Every row's value handed to `row(b, r, value)` as soon as its group is computed (a store
    /// there keeps fewer values live than [`Factored::emit`]).
    pub(crate) fn emit_each(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        ty: Type,
        x: &mut dyn FnMut(&mut FunctionBuilder, usize) -> Value,
        row: &mut dyn FnMut(&mut FunctionBuilder, usize, Value),
    ) {
        for (g, group) in self.groups.iter().enumerate() {
            for (&r, v) in group.rows.iter().zip(self.emit_group(b, mul_add, ty, g, x)) {
                row(b, r, v);
            }
        }
    }
}

/// Rows `t1` and `t2` as `even ± k odd`, when they read the same operands with coefficients equal
/// or opposite, some opposite.
fn pair(t1: &Terms, t2: &Terms) -> Option<Form> {
    if t1.len() != t2.len() {
        return None;
    }
    let (mut even, mut odd) = (vec![], vec![]);
    for &(c, o) in t1 {
        let &(c2, _) = t2.iter().find(|x| x.1 == o)?;
        match () {
            _ if c2 == c => even.push((c, o)),
            _ if c2 == -c => odd.push((c, o)),
            _ => return None,
        }
    }
    // A magnitude all the odd coefficients share is factored out (2(x3 - x1) is one subtraction
    // and, in each row, one multiply-add).
    let first = odd.first()?.0.abs();
    let k = if odd.iter().all(|x| x.0.abs() == first) { first } else { 1.0 };
    let odd = odd.into_iter().map(|(c, o)| (c / k, o)).collect();
    Some(Form::Pair { even, odd, k })
}

/// `Σ c operand(o)`: starts from a term of coefficient 1 when there is one (free); ±1 are an
/// addition or subtraction, others a multiply-add.
fn sum(
    b: &mut FunctionBuilder,
    mul_add: MulAdd,
    ty: Type,
    terms: &Terms,
    operand: &mut dyn FnMut(&mut FunctionBuilder, Operand) -> Value,
) -> Value {
    let first = terms.iter().position(|t| t.0 == 1.0).unwrap_or(0);
    let Some(&(c, o)) = terms.get(first) else { return constant(b, ty, 0.0) };
    let x0 = operand(b, o);
    let mut acc = scale(b, ty, c, x0);
    for (_, &(c, o)) in terms.iter().enumerate().filter(|(k, _)| *k != first) {
        let x = operand(b, o);
        acc = match c {
            1.0 => b.ins().fadd(acc, x),
            -1.0 => b.ins().fsub(acc, x),
            _ => {
                let c = constant(b, ty, c);
                mul_add_emit(b, mul_add, c, x, acc)
            }
        };
    }
    acc
}

/// `c x`: `x` itself for 1, a negation for -1.
fn scale(b: &mut FunctionBuilder, ty: Type, c: f32, x: Value) -> Value {
    match c {
        1.0 => x,
        -1.0 => negate(b, ty, x),
        _ => {
            let c = constant(b, ty, c);
            b.ins().fmul(c, x)
        }
    }
}

/// The constant `c`, splatted for vectors.
fn constant(b: &mut FunctionBuilder, ty: Type, c: f32) -> Value {
    let c = b.ins().f32const(c);
    if ty.is_vector() { b.ins().splat(ty, c) } else { c }
}

/// `-x`: a negation, or for the vectors wider than 128 bits (which have no negation on x64 here),
/// `0 - x` (the same but for the sign of a zero).
fn negate(b: &mut FunctionBuilder, ty: Type, x: Value) -> Value {
    if ty.bits() <= 128 {
        return b.ins().fneg(x);
    }
    let zero = constant(b, ty, 0.0);
    b.ins().fsub(zero, x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::winograd::{F2, F4, Transform};

    /// `y = A x` evaluated through the factoring, in f64.
    fn apply(f: &Factored, x: &[f64]) -> Vec<f64> {
        let operand = |o: Operand| match o {
            Operand::Input(j) => x[j],
            Operand::Sum(i, j) => x[i] + x[j],
            Operand::Difference(i, j) => x[i] - x[j],
        };
        let total = |t: &Terms| t.iter().map(|&(c, o)| c as f64 * operand(o)).sum::<f64>();
        let mut y = vec![f64::NAN; f.rows];
        for g in &f.groups {
            let values = match &g.form {
                Form::Rows(rows) => rows.iter().map(total).collect(),
                Form::Pair { even, odd, k } => {
                    let (e, o) = (total(even), *k as f64 * total(odd));
                    vec![e + o, e - o]
                }
            };
            for (&r, v) in g.rows.iter().zip(values) {
                y[r] = v;
            }
        }
        y
    }

    /// Every matrix of both transforms, and A (Aᵀ's transpose, the weight gradient's).
    fn matrices(t: &Transform) -> Vec<Vec<Vec<f32>>> {
        let rows = |m: &[&[f32]]| m.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let a = (0..t.m + 2).map(|j| t.at.iter().map(|r| r[j]).collect()).collect();
        vec![rows(t.bt), rows(t.g), rows(t.at), a]
    }

    #[test]
    fn factoring_keeps_every_winograd_matrix_exact() {
        for t in [&F2, &F4] {
            for m in matrices(t) {
                let refs: Vec<&[f32]> = m.iter().map(|r| r.as_slice()).collect();
                let f = Factored::new(&refs);
                let mut seen: Vec<usize> = f.groups.iter().flat_map(|g| g.rows.clone()).collect();
                seen.sort();
                assert_eq!(seen, (0..m.len()).collect::<Vec<_>>(), "every row once");
                for seed in 0..10u64 {
                    let x: Vec<f64> =
                        (0..m[0].len()).map(|j| ((seed * 37 + j as u64 * 11) % 19) as f64 - 9.0).collect();
                    let want: Vec<f64> = m.iter().map(|r| r.iter().zip(&x).map(|(&c, v)| c as f64 * v).sum()).collect();
                    assert_eq!(apply(&f, &x), want, "{m:?}");
                }
            }
        }
    }

    #[test]
    fn f4_shares_what_its_points_pair() {
        // Bᵀ: the rows for 1 and -1 (1, 2) and for 2 and -2 (3, 4) pair as e ± k o.
        let bt = Factored::new(F4.bt);
        let pairs: Vec<&[usize]> =
            bt.groups.iter().filter(|g| matches!(g.form, Form::Pair { .. })).map(|g| g.rows.as_slice()).collect();
        assert_eq!(pairs, [&[1, 2], &[3, 4]]);
        // Aᵀ: its columns pair instead, and the rows that read the sums (0, 2) and the
        // differences (1, 3) are computed together.
        let at = Factored::new(F4.at);
        let rows: Vec<&[usize]> = at.groups.iter().map(|g| g.rows.as_slice()).collect();
        assert_eq!(rows, [&[0, 2], &[1, 3]]);
    }
}
