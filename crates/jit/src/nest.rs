//! A kernel as data: a loop nest over groups and segments, operands with their indexing, and the
//! passes run per group. [`NestSpec::build`] turns a spec into Cranelift IR.
//!
//! The generated function is `extern "C" fn(args: *const *mut f32, begin: u64, end: u64, thread:
//! u64)`: `args` holds the operand pointers then the output pointers, and the function runs groups
//! `begin..end`, so a thread pool can split the outer loop (`thread` selects per-thread scratch,
//! which nests do not use).

use crate::MulAdd;
use crate::codegen::shuffle32;
use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use crate::expr::{Env, Expr, Width};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;

/// How an operand is indexed at an element.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Operand {
    /// The element at the same flat index as the element being computed.
    Full,
    /// One value per group: index `group % channels` (per-channel parameters and statistics).
    Channel,
    /// The element at the same position within the segment (per-feature vectors of `[N,F]` tensors).
    Inner,
    /// Element 0.
    Scalar,
}

/// The iteration space. Group `g` covers `segments` runs of `inner` contiguous elements starting
/// at flat indices `g * group_stride + s * segment_stride`; elements at flat index `total` or
/// beyond are skipped (a partial last group).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Nest {
    /// Number of groups: the outer loop, split across threads.
    pub groups: usize,
    /// Flat distance between groups.
    pub group_stride: usize,
    /// Segments per group.
    pub segments: usize,
    /// Flat distance between a group's segments.
    pub segment_stride: usize,
    /// Contiguous elements per segment.
    pub inner: usize,
    /// One past the last flat index.
    pub total: usize,
    /// Channel operands read element `group % channels`.
    pub channels: usize,
}

impl Nest {
    /// An elementwise walk over `total` contiguous elements in groups of 1024.
    pub fn flat(total: usize) -> Nest {
        const BLOCK: usize = 1024;
        Nest {
            groups: total.div_ceil(BLOCK),
            group_stride: BLOCK,
            segments: 1,
            segment_stride: 0,
            inner: BLOCK,
            total,
            channels: 1,
        }
    }
}

impl NestSpec {
    /// SGD with momentum and weight decay over `len` parameters, PyTorch's rule, in one pass:
    /// `v' = momentum * v + (g + weight_decay * p)` and `p' = p - lr * v'`.
    /// Operands: parameters, gradients, velocities; outputs: new parameters, new velocities.
    pub fn sgd_momentum(len: usize, lr: f64, momentum: f64, weight_decay: f64) -> NestSpec {
        let (p, g, v) = (Expr::load(0), Expr::load(1), Expr::load(2));
        let velocity = v.mul(Expr::c(momentum)).add(g.add(p.clone().mul(Expr::c(weight_decay))));
        NestSpec {
            nest: Nest::flat(len),
            operands: vec![Operand::Full; 3],
            outputs: 2,
            passes: vec![
                Pass::Map { expr: p.sub(velocity.clone().mul(Expr::c(lr))), output: 0 },
                Pass::Map { expr: velocity, output: 1 },
            ],
        }
    }
}

/// One step of a group's work.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Pass {
    /// Sums `expr` over the group's elements; `finish` (which reads the sum as [`Expr::Acc`])
    /// becomes the next local.
    Reduce { expr: Expr, finish: Expr },
    /// Writes `expr` at every element of the group to output `output`. Consecutive maps share one
    /// walk over the elements, which evaluates every map's expression at an element before it
    /// stores any: so an output may share memory with a `Full` operand those maps read (an
    /// optimizer's state updated in place).
    Map { expr: Expr, output: usize },
    /// Writes the group-invariant `expr` to element `group` of output `output`.
    Store { expr: Expr, output: usize },
}

/// A whole kernel: what is iterated, what is read, and what is computed.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct NestSpec {
    /// The loop nest.
    pub nest: Nest,
    /// How each operand is indexed; `args[k]` is operand `k`.
    pub operands: Vec<Operand>,
    /// Number of outputs; `args[operands.len() + j]` is output `j`.
    pub outputs: usize,
    /// The passes, in order.
    pub passes: Vec<Pass>,
}

impl NestSpec {
    /// Whether pointer `written` (an output) may share memory with pointer `read` (an operand):
    /// `read` is `Full` and `written` is stored by the last run of maps, after which no pass
    /// reads (see [`Pass::Map`]).
    pub fn reads_before_writes(&self, read: usize, written: usize) -> bool {
        let n = self.operands.len();
        if self.operands.get(read) != Some(&Operand::Full) || written < n || written >= n + self.outputs {
            return false;
        }
        let maps = self.passes.iter().rev().take_while(|p| matches!(p, Pass::Map { .. })).count();
        let (before, last_maps) = self.passes.split_at(self.passes.len() - maps);
        let writes =
            |p: &Pass| matches!(p, Pass::Map { output, .. } | Pass::Store { output, .. } if *output == written - n);
        last_maps.iter().any(writes) && !before.iter().any(writes)
    }

    /// The passes as the walks over a group's elements run them, by index: consecutive maps
    /// share one walk (see [`Pass::Map`]), and so do consecutive reductions whose expressions
    /// read no local the others produce (batch-norm backward's sums of dy and dy * x-hat); a
    /// store is a walk of its own, over nothing.
    pub fn runs(&self) -> Vec<std::ops::Range<usize>> {
        let mut runs = vec![];
        let (mut first, mut locals) = (0, 0);
        while first < self.passes.len() {
            let rest = &self.passes[first..];
            let len = match &rest[0] {
                Pass::Map { .. } => rest.iter().take_while(|p| matches!(p, Pass::Map { .. })).count(),
                Pass::Reduce { .. } => rest
                    .iter()
                    .take_while(|p| matches!(p, Pass::Reduce { expr, .. } if !expr.reads_locals_from(locals)))
                    .count()
                    .max(1),
                Pass::Store { .. } => 1,
            };
            locals += rest[..len].iter().filter(|p| matches!(p, Pass::Reduce { .. })).count();
            runs.push(first..first + len);
            first += len;
        }
        runs
    }

    /// Emits the kernel's body into `b`, whose function has the signature described above.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let pointers: Vec<Value> = (0..self.operands.len() + self.outputs).map(|k| load_arg(b, ptr, args, k)).collect();
        self.emit(b, &pointers, begin, end, mul_add);
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Emits groups `begin..end` of this nest over `pointers` (operands, then outputs).
    pub(crate) fn emit(&self, b: &mut FunctionBuilder, pointers: &[Value], begin: Value, end: Value, mul_add: MulAdd) {
        let flags = MemFlagsData::new().with_notrap();
        let (operands, outputs) = pointers.split_at(self.operands.len());
        let n = &self.nest;
        let partial = n.groups * n.group_stride > n.total && n.segments == 1;

        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let group_base = imul(b, g, n.group_stride);
            let channel = if n.channels > 1 { b.ins().urem_imm_u(g, n.channels as i64) } else { iconst(b, 0) };
            // Per-group scalars of channel and scalar operands.
            let group_values: Vec<Option<Value>> = self
                .operands
                .iter()
                .zip(operands)
                .map(|(mode, &p)| match mode {
                    Operand::Channel => Some(load_at(b, types::F32, p, channel)),
                    Operand::Scalar => Some(b.ins().load(types::F32, flags, p, 0)),
                    Operand::Full | Operand::Inner => None,
                })
                .collect();
            let mut locals: Vec<(Value, Value)> = Vec::new();
            for run in self.runs() {
                let now = &self.passes[run];
                let pass = &now[0];
                // Hoisted: the invariant parts of the elementwise expressions (a reduction's
                // `finish` may read the locals the run's earlier reductions produce).
                let exprs: Vec<&Expr> = now
                    .iter()
                    .map(|p| match p {
                        Pass::Reduce { expr, .. } | Pass::Map { expr, .. } | Pass::Store { expr, .. } => expr,
                    })
                    .collect();
                let invariants = self.hoist(b, &exprs, &group_values, &locals, mul_add);
                let scalars: Vec<Value> = locals.iter().map(|l| l.0).collect();
                let vectors: Vec<Value> = locals.iter().map(|l| l.1).collect();
                match pass {
                    Pass::Reduce { .. } => {
                        let sums = self.sums(b, group_base, partial, exprs.len(), &mut |b, w, at| {
                            let mut load = |b: &mut FunctionBuilder, k: usize| self.load(b, w, operands, at, k);
                            let mut env = element_env(w, mul_add, &mut load, &invariants, &scalars, &vectors);
                            exprs.iter().map(|e| e.emit(b, &mut env)).collect()
                        });
                        for (reduce, sum) in now.iter().zip(sums) {
                            let Pass::Reduce { finish, .. } = reduce else { unreachable!("a run of reductions") };
                            let scalars: Vec<Value> = locals.iter().map(|l| l.0).collect();
                            let local = group_scalar(b, finish, mul_add, &invariants.0, &scalars, Some(sum));
                            let splat = b.ins().splat(types::F32X4, local);
                            locals.push((local, splat));
                        }
                    }
                    Pass::Map { .. } => {
                        self.for_elements(b, group_base, partial, &mut |b, w, at| {
                            let mut load = |b: &mut FunctionBuilder, k: usize| self.load(b, w, operands, at, k);
                            let mut env = element_env(w, mul_add, &mut load, &invariants, &scalars, &vectors);
                            // Every value first, then every store.
                            let values: Vec<Value> = exprs.iter().map(|e| e.emit(b, &mut env)).collect();
                            for (map, v) in now.iter().zip(values) {
                                let Pass::Map { output, .. } = map else { unreachable!("a run of maps") };
                                let addr = elem_addr(b, outputs[*output], at.flat);
                                b.ins().store(flags, v, addr, 0);
                            }
                        });
                    }
                    Pass::Store { expr, output } => {
                        let v = group_scalar(b, expr, mul_add, &invariants.0, &scalars, None);
                        let addr = elem_addr(b, outputs[*output], g);
                        b.ins().store(flags, v, addr, 0);
                    }
                }
            }
            vec![]
        });
    }

    /// Computes the group-invariant sub-expressions of `exprs` once: (scalar, vector) maps.
    fn hoist(
        &self,
        b: &mut FunctionBuilder,
        exprs: &[&Expr],
        group_values: &[Option<Value>],
        locals: &[(Value, Value)],
        mul_add: MulAdd,
    ) -> (HashMap<Expr, Value>, HashMap<Expr, Value>) {
        let per_element = |k: usize| group_values.get(k).is_none_or(|v| v.is_none());
        let mut found = Vec::new();
        for e in exprs {
            e.invariant_parts(&per_element, &mut found);
        }
        let scalars: Vec<Value> = locals.iter().map(|l| l.0).collect();
        let (mut s_map, mut v_map) = (HashMap::new(), HashMap::new());
        for e in found {
            if s_map.contains_key(&e) {
                continue;
            }
            let mut load = |_: &mut FunctionBuilder, k: usize| group_values[k].expect("invariant loads are per group");
            let empty = HashMap::new();
            let mut env = Env {
                width: Width::Scalar,
                mul_add,
                load: &mut load,
                invariants: &empty,
                locals: &scalars,
                acc: None,
                loaded: HashMap::new(),
            };
            let s = e.emit(b, &mut env);
            let v = b.ins().splat(types::F32X4, s);
            s_map.insert(e.clone(), s);
            v_map.insert(e, v);
        }
        (s_map, v_map)
    }

    /// Sums each of the `n` values `value` gives (f32x4s or f32s at each element) over the
    /// group's elements, returned rounded to f32: each segment in chunks of [`CHUNK`] elements
    /// summed in f32, [`UNROLL`] vectors at a time into as many f32x4 accumulators per value (so
    /// that the adds do not wait on one another), whose lanes are then added in f64; so a sum of
    /// 32,768 values is about as accurate as its f32 rounding (one f32 accumulator per lane lost
    /// up to 1e-5 of a batch-norm gradient: `tests/numerics.rs`). The order is fixed, so results
    /// do not depend on threads.
    fn sums(
        &self,
        b: &mut FunctionBuilder,
        group_base: Value,
        partial: bool,
        n: usize,
        value: &mut dyn FnMut(&mut FunctionBuilder, Width, At) -> Vec<Value>,
    ) -> Vec<Value> {
        let zero = b.ins().f64const(0.0);
        let zeros = b.ins().splat(types::F64X2, zero);
        // Per value: its f64 totals (two f64x2 of the f32x4 lanes, and the scalar tail's f64).
        let totals: Vec<Value> = (0..n).flat_map(|_| [zeros, zeros, zero]).collect();
        let totals = self.for_segments(b, group_base, partial, &totals, &mut |b, base, len, totals| {
            let zero = iconst(b, 0);
            let last = b.ins().iadd_imm_s(len, CHUNK as i64 - 1);
            let (_, totals) = for_loop(b, zero, last, CHUNK as i64, totals, &mut |b, first, totals| {
                let end = b.ins().iadd_imm_s(first, CHUNK as i64);
                let end = b.ins().umin(end, len);
                let zero = b.ins().f32const(0.0);
                let zero = b.ins().splat(types::F32X4, zero);
                // Accumulator u of value e at index e * UNROLL + u; a vector past the unrolled
                // steps goes into accumulator 0.
                let chunk = vec![zero; n * UNROLL];
                let mut add = |b: &mut FunctionBuilder, i: Value, u: usize, chunk: &mut [Value]| {
                    let i = b.ins().iadd_imm_s(i, 4 * u as i64);
                    let at = At { flat: b.ins().iadd(base, i), inner: i };
                    for (e, v) in value(b, Width::Vector, at).into_iter().enumerate() {
                        chunk[e * UNROLL + u] = b.ins().fadd(chunk[e * UNROLL + u], v);
                    }
                };
                let (rest, chunk) = for_loop(b, first, end, 4 * UNROLL as i64, &chunk, &mut |b, i, chunk| {
                    let mut chunk = chunk.to_vec();
                    for u in 0..UNROLL {
                        add(b, i, u, &mut chunk);
                    }
                    chunk
                });
                let (tail, chunk) = for_loop(b, rest, end, 4, &chunk, &mut |b, i, chunk| {
                    let mut chunk = chunk.to_vec();
                    add(b, i, 0, &mut chunk);
                    chunk
                });
                let mut totals = totals.to_vec();
                for (e, parts) in chunk.chunks(UNROLL).enumerate() {
                    let (a, z) = (b.ins().fadd(parts[0], parts[1]), b.ins().fadd(parts[2], parts[3]));
                    let sum = b.ins().fadd(a, z);
                    let high = shuffle32(b, sum, sum, [2, 3, 6, 7]);
                    let (lo, hi) = (b.ins().fvpromote_low(sum), b.ins().fvpromote_low(high));
                    totals[3 * e] = b.ins().fadd(totals[3 * e], lo);
                    totals[3 * e + 1] = b.ins().fadd(totals[3 * e + 1], hi);
                }
                // The scalar tail: only the segment's last chunk can have one (CHUNK is a multiple of 4).
                let scalars: Vec<Value> = (0..n).map(|e| totals[3 * e + 2]).collect();
                let (_, scalars) = for_loop(b, tail, end, 1, &scalars, &mut |b, i, s| {
                    let at = At { flat: b.ins().iadd(base, i), inner: i };
                    let values = value(b, Width::Scalar, at);
                    s.iter()
                        .zip(values)
                        .map(|(&s, v)| {
                            let v = b.ins().fpromote(types::F64, v);
                            b.ins().fadd(s, v)
                        })
                        .collect()
                });
                for (e, s) in scalars.into_iter().enumerate() {
                    totals[3 * e + 2] = s;
                }
                totals
            });
            totals
        });
        totals
            .chunks(3)
            .map(|t| {
                let pairs = b.ins().fadd(t[0], t[1]);
                let mut sum = t[2];
                for lane in 0..2 {
                    let l = b.ins().extractlane(pairs, lane);
                    sum = b.ins().fadd(sum, l);
                }
                b.ins().fdemote(types::F32, sum)
            })
            .collect()
    }

    /// Loads operand `k` at element `at`, `width` lanes wide.
    fn load(&self, b: &mut FunctionBuilder, width: Width, operands: &[Value], at: At, k: usize) -> Value {
        let index = match self.operands[k] {
            Operand::Full => at.flat,
            Operand::Inner => at.inner,
            Operand::Channel | Operand::Scalar => unreachable!("per-group operands are hoisted as invariants"),
        };
        load_at(b, width.ty(), operands[k], index)
    }

    /// Loops over the group's segments: `body(b, base, len, carried)` gets each segment's first
    /// flat index and length and returns the new carried values.
    fn for_segments(
        &self,
        b: &mut FunctionBuilder,
        group_base: Value,
        partial: bool,
        carried: &[Value],
        body: &mut SegmentBody,
    ) -> Vec<Value> {
        let n = &self.nest;
        let zero = iconst(b, 0);
        let segs = iconst(b, n.segments as i64);
        let (_, out) = for_loop(b, zero, segs, 1, carried, &mut |b, s, carried| {
            let offset = imul(b, s, n.segment_stride);
            let base = b.ins().iadd(group_base, offset);
            let len = if partial {
                let total = iconst(b, n.total as i64);
                let left = b.ins().isub(total, base);
                let inner = iconst(b, n.inner as i64);
                b.ins().umin(left, inner)
            } else {
                iconst(b, n.inner as i64)
            };
            body(b, base, len, carried)
        });
        out
    }

    /// Runs `body(b, width, at)` at every element of the group: per segment a vector loop, then
    /// a scalar tail.
    fn for_elements(&self, b: &mut FunctionBuilder, group_base: Value, partial: bool, body: &mut ElementBody) {
        self.for_segments(b, group_base, partial, &[], &mut |b, base, len, _| {
            let zero = iconst(b, 0);
            let (tail_start, _) = for_loop(b, zero, len, 4, &[], &mut |b, i, _| {
                let at = At { flat: b.ins().iadd(base, i), inner: i };
                body(b, Width::Vector, at);
                vec![]
            });
            for_loop(b, tail_start, len, 1, &[], &mut |b, i, _| {
                let at = At { flat: b.ins().iadd(base, i), inner: i };
                body(b, Width::Scalar, at);
                vec![]
            });
            vec![]
        });
    }
}

/// Emits a group-invariant expression (a reduction's `finish`, a store) as one scalar; it reads
/// no operand at an element, only hoisted invariants, locals and the accumulator `acc`.
fn group_scalar(
    b: &mut FunctionBuilder,
    expr: &Expr,
    mul_add: MulAdd,
    invariants: &HashMap<Expr, Value>,
    locals: &[Value],
    acc: Option<Value>,
) -> Value {
    let mut no_loads =
        |_: &mut FunctionBuilder, _: usize| -> Value { unreachable!("group-invariant expressions read no element") };
    let mut env =
        Env { width: Width::Scalar, mul_add, load: &mut no_loads, invariants, locals, acc, loaded: HashMap::new() };
    expr.emit(b, &mut env)
}

/// The environment of an expression emitted at one element, `width` lanes wide.
fn element_env<'a>(
    width: Width,
    mul_add: MulAdd,
    load: &'a mut dyn FnMut(&mut FunctionBuilder, usize) -> Value,
    invariants: &'a (HashMap<Expr, Value>, HashMap<Expr, Value>),
    scalars: &'a [Value],
    vectors: &'a [Value],
) -> Env<'a> {
    let vector = width == Width::Vector;
    Env {
        width,
        mul_add,
        load,
        invariants: if vector { &invariants.1 } else { &invariants.0 },
        locals: if vector { vectors } else { scalars },
        acc: None,
        loaded: HashMap::new(),
    }
}

/// The body run per segment: (builder, first flat index, length, carried values) -> new carried
/// values.
type SegmentBody<'a> = dyn FnMut(&mut FunctionBuilder, Value, Value, &[Value]) -> Vec<Value> + 'a;

/// The body run at each element: (builder, width, position).
type ElementBody<'a> = dyn FnMut(&mut FunctionBuilder, Width, At) + 'a;

/// Elements a reduction sums in f32 before adding them in f64: 16 vectors, so 4 terms per lane
/// of each of its [`UNROLL`] accumulators.
const CHUNK: usize = 64;

/// f32x4 accumulators per reduced value (the vectors a reduction's loop adds per step).
const UNROLL: usize = 4;

/// Where an element is: its flat index and its position within the segment.
#[derive(Clone, Copy)]
struct At {
    flat: Value,
    inner: Value,
}

fn imul(b: &mut FunctionBuilder, v: Value, c: usize) -> Value {
    let c = iconst(b, c as i64);
    b.ins().imul(v, c)
}

fn load_at(b: &mut FunctionBuilder, ty: Type, base: Value, index: Value) -> Value {
    let addr = elem_addr(b, base, index);
    b.ins().load(ty, MemFlagsData::new().with_notrap(), addr, 0)
}
