//! The epilogue language: an elementwise expression over a kernel's operands, evaluated on values
//! while they are in registers, emitted as f32x4 code for the main loop and scalar code for tails.

use crate::MulAdd;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;

/// A comparison for [`Expr::Select`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Cond {
    /// `a > b` (false for NaN, so `relu(NaN) = 0` as in the reference).
    Greater,
    /// `a == b`.
    Equal,
}

/// An f32 expression. Build it with the helper functions ([`Expr::load`], [`Expr::c`], `+`, `*`...).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Expr {
    /// Operand `k` at the current element (how it is indexed is the operand's [`crate::Operand`]).
    Load(usize),
    /// Per-group value `k` produced by an earlier reduce pass.
    Local(usize),
    /// The current accumulated sum, inside a reduce pass's `finish` expression.
    Acc,
    /// A constant, stored as its f32 bits so expressions can be hashed.
    Const(u32),
    /// `a + b`.
    Add(Box<Expr>, Box<Expr>),
    /// `a - b`.
    Sub(Box<Expr>, Box<Expr>),
    /// `a * b`.
    Mul(Box<Expr>, Box<Expr>),
    /// `a / b`.
    Div(Box<Expr>, Box<Expr>),
    /// `sqrt(a)`.
    Sqrt(Box<Expr>),
    /// `if cond(a, b) { then } else { otherwise }`.
    Select { cond: Cond, a: Box<Expr>, b: Box<Expr>, then: Box<Expr>, otherwise: Box<Expr> },
}

#[allow(clippy::should_implement_trait)]
impl Expr {
    /// Operand `k`.
    pub fn load(k: usize) -> Expr {
        Expr::Load(k)
    }
    /// A constant.
    pub fn c(v: f64) -> Expr {
        Expr::Const((v as f32).to_bits())
    }
    /// `self + o`.
    pub fn add(self, o: Expr) -> Expr {
        Expr::Add(Box::new(self), Box::new(o))
    }
    /// `self - o`.
    pub fn sub(self, o: Expr) -> Expr {
        Expr::Sub(Box::new(self), Box::new(o))
    }
    /// `self * o`.
    pub fn mul(self, o: Expr) -> Expr {
        Expr::Mul(Box::new(self), Box::new(o))
    }
    /// `self / o`.
    pub fn div(self, o: Expr) -> Expr {
        Expr::Div(Box::new(self), Box::new(o))
    }
    /// `sqrt(self)`.
    pub fn sqrt(self) -> Expr {
        Expr::Sqrt(Box::new(self))
    }
    /// `if cond(a, b) { then } else { otherwise }`.
    pub fn select(cond: Cond, a: Expr, b: Expr, then: Expr, otherwise: Expr) -> Expr {
        Expr::Select { cond, a: Box::new(a), b: Box::new(b), then: Box::new(then), otherwise: Box::new(otherwise) }
    }

    /// This expression with every `Load(k)` replaced by `operand(k)`: how fused kernels compose
    /// the expressions of their nodes.
    pub fn substitute(&self, operand: &mut dyn FnMut(usize) -> Expr) -> Expr {
        let mut sub = |e: &Expr| Box::new(e.substitute(operand));
        match self {
            Expr::Load(k) => operand(*k),
            Expr::Local(_) | Expr::Acc | Expr::Const(_) => self.clone(),
            Expr::Add(a, b) => Expr::Add(sub(a), sub(b)),
            Expr::Sub(a, b) => Expr::Sub(sub(a), sub(b)),
            Expr::Mul(a, b) => Expr::Mul(sub(a), sub(b)),
            Expr::Div(a, b) => Expr::Div(sub(a), sub(b)),
            Expr::Sqrt(a) => Expr::Sqrt(sub(a)),
            Expr::Select { cond, a, b, then, otherwise } => {
                Expr::Select { cond: *cond, a: sub(a), b: sub(b), then: sub(then), otherwise: sub(otherwise) }
            }
        }
    }

    /// Appends to `out` the largest sub-expressions that are the same for every element of a
    /// group (see [`Expr::is_invariant`]): what a kernel can compute once per group.
    pub(crate) fn invariant_parts(&self, per_element: &dyn Fn(usize) -> bool, out: &mut Vec<Expr>) {
        if self.is_invariant(per_element) {
            out.push(self.clone());
            return;
        }
        match self {
            Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) => {
                a.invariant_parts(per_element, out);
                b.invariant_parts(per_element, out);
            }
            Expr::Sqrt(a) => a.invariant_parts(per_element, out),
            Expr::Select { a, b, then, otherwise, .. } => {
                for x in [a, b, then, otherwise] {
                    x.invariant_parts(per_element, out);
                }
            }
            Expr::Load(_) | Expr::Local(_) | Expr::Const(_) | Expr::Acc => {}
        }
    }

    /// Whether the expression reads a per-group local numbered `first` or above.
    pub(crate) fn reads_locals_from(&self, first: usize) -> bool {
        match self {
            Expr::Local(k) => *k >= first,
            Expr::Load(_) | Expr::Const(_) | Expr::Acc => false,
            Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) => {
                a.reads_locals_from(first) || b.reads_locals_from(first)
            }
            Expr::Sqrt(a) => a.reads_locals_from(first),
            Expr::Select { a, b, then, otherwise, .. } => {
                [a, b, then, otherwise].iter().any(|e| e.reads_locals_from(first))
            }
        }
    }

    /// True when the value is the same for every element of a group (no per-element loads).
    pub(crate) fn is_invariant(&self, per_element: &dyn Fn(usize) -> bool) -> bool {
        match self {
            Expr::Load(k) => !per_element(*k),
            Expr::Local(_) | Expr::Const(_) => true,
            Expr::Acc => false,
            Expr::Add(a, b) | Expr::Sub(a, b) | Expr::Mul(a, b) | Expr::Div(a, b) => {
                a.is_invariant(per_element) && b.is_invariant(per_element)
            }
            Expr::Sqrt(a) => a.is_invariant(per_element),
            Expr::Select { a, b, then, otherwise, .. } => {
                [a, b, then, otherwise].iter().all(|e| e.is_invariant(per_element))
            }
        }
    }
}

/// Lane count of emitted code.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Width {
    Scalar,
    Vector,
}

impl Width {
    pub(crate) fn ty(self) -> types::Type {
        match self {
            Width::Scalar => types::F32,
            Width::Vector => types::F32X4,
        }
    }
}

/// What an expression reads while it is emitted at one element.
pub(crate) struct Env<'a> {
    pub width: Width,
    pub mul_add: MulAdd,
    /// Emits the load of operand `k` at the current element (called at most once per operand).
    pub load: &'a mut dyn FnMut(&mut FunctionBuilder, usize) -> Value,
    /// Values computed once per group, by sub-expression (already of this width).
    pub invariants: &'a HashMap<Expr, Value>,
    /// Per-group locals (already of this width).
    pub locals: &'a [Value],
    /// The accumulator inside a `finish` expression.
    pub acc: Option<Value>,
    /// Loads already emitted at this element.
    pub loaded: HashMap<usize, Value>,
}

impl Expr {
    /// Emits this expression at the current element.
    pub(crate) fn emit(&self, b: &mut FunctionBuilder, env: &mut Env) -> Value {
        if let Some(&v) = env.invariants.get(self) {
            return v;
        }
        let ty = env.width.ty();
        match self {
            Expr::Load(k) => {
                if let Some(&v) = env.loaded.get(k) {
                    return v;
                }
                let v = (env.load)(b, *k);
                env.loaded.insert(*k, v);
                v
            }
            Expr::Local(k) => env.locals[*k],
            Expr::Acc => env.acc.expect("Acc only appears in finish expressions"),
            Expr::Const(bits) => {
                let s = b.ins().f32const(f32::from_bits(*bits));
                if env.width == Width::Vector { b.ins().splat(ty, s) } else { s }
            }
            Expr::Add(x, y) => {
                if env.mul_add == MulAdd::Fused
                    && let Some((p, q, r)) = as_mul_add(x, y)
                {
                    let (p, q, r) = (p.emit(b, env), q.emit(b, env), r.emit(b, env));
                    return b.ins().fma(p, q, r);
                }
                let (x, y) = (x.emit(b, env), y.emit(b, env));
                b.ins().fadd(x, y)
            }
            Expr::Sub(x, y) => {
                let (x, y) = (x.emit(b, env), y.emit(b, env));
                b.ins().fsub(x, y)
            }
            Expr::Mul(x, y) => {
                let (x, y) = (x.emit(b, env), y.emit(b, env));
                b.ins().fmul(x, y)
            }
            Expr::Div(x, y) => {
                let (x, y) = (x.emit(b, env), y.emit(b, env));
                b.ins().fdiv(x, y)
            }
            Expr::Sqrt(x) => {
                let x = x.emit(b, env);
                b.ins().sqrt(x)
            }
            Expr::Select { cond, a, b: rhs, then, otherwise } => {
                let cc = match cond {
                    Cond::Greater => FloatCC::GreaterThan,
                    Cond::Equal => FloatCC::Equal,
                };
                let (x, y) = (a.emit(b, env), rhs.emit(b, env));
                let (t, o) = (then.emit(b, env), otherwise.emit(b, env));
                let mask = b.ins().fcmp(cc, x, y);
                match env.width {
                    Width::Scalar => b.ins().select(mask, t, o),
                    Width::Vector => {
                        let mask = b.ins().bitcast(ty, MemFlagsData::new(), mask);
                        b.ins().bitselect(mask, t, o)
                    }
                }
            }
        }
    }
}

/// `x + y` as `p * q + r` when one side is a product.
fn as_mul_add<'e>(x: &'e Expr, y: &'e Expr) -> Option<(&'e Expr, &'e Expr, &'e Expr)> {
    match (x, y) {
        (Expr::Mul(p, q), r) | (r, Expr::Mul(p, q)) => Some((p, q, r)),
        _ => None,
    }
}
