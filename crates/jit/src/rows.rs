//! Row-wise classifier kernels: softmax, cross-entropy and its gradient, argmax. `exp` and `ln`
//! are imported as the same Rust functions the reference interpreter uses, so results match.

use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{FuncRef, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Functions kernels may call.
pub(crate) struct Imports {
    pub exp: FuncRef,
    pub ln: FuncRef,
}

/// `exp` for kernels: Rust's `f32::exp`, as in the reference interpreter.
pub(crate) extern "C" fn skipgrad_expf(x: f32) -> f32 {
    x.exp()
}

/// `ln` for kernels: Rust's `f32::ln`, as in the reference interpreter.
pub(crate) extern "C" fn skipgrad_logf(x: f32) -> f32 {
    x.ln()
}

/// A row-wise op on `[rows, classes]` logits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum RowOp {
    /// `softmax(z)` per row. Args: z, y.
    Softmax,
    /// `mean(logsumexp(z) - z[label])` over rows (one group). Args: z, labels, loss.
    CrossEntropy,
    /// `(softmax(z) - onehot(label)) * dloss / rows`. Args: z, labels, dloss, dz.
    CrossEntropyGrad,
    /// Index of each row's first maximum. Args: z, y.
    ArgMax,
}

/// A row-wise classifier kernel. Labels are read as floats and clamped into `0..classes`, so a
/// bad label cannot make the kernel read out of bounds; the executor rejects such labels when
/// they are fed.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct RowSpec {
    /// The op.
    pub op: RowOp,
    /// Rows (the batch).
    pub rows: usize,
    /// Classes per row.
    pub classes: usize,
}

impl RowSpec {
    /// Groups: rows, except the cross-entropy mean, which is one group summing all rows in order.
    pub fn groups(&self) -> usize {
        if self.op == RowOp::CrossEntropy { 1 } else { self.rows }
    }

    /// Kernel body.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, imports: &Imports) {
        let (args, begin, end) = entry(b);
        let arity = match self.op {
            RowOp::Softmax | RowOp::ArgMax => 2,
            RowOp::CrossEntropy => 3,
            RowOp::CrossEntropyGrad => 4,
        };
        let p: Vec<Value> = (0..arity).map(|k| load_arg(b, ptr, args, k)).collect();
        let flags = MemFlagsData::new().with_notrap();
        let k = self.classes;
        let load = |b: &mut FunctionBuilder, base: Value, e: Value| {
            let a = elem_addr(b, base, e);
            b.ins().load(types::F32, flags, a, 0)
        };
        let store = |b: &mut FunctionBuilder, base: Value, e: Value, v: Value| {
            let a = elem_addr(b, base, e);
            b.ins().store(flags, v, a, 0);
        };
        // Row statistics: (max, index of the first max, sum of exp(z - max)).
        let row_stats = |b: &mut FunctionBuilder, row: Value| -> (Value, Value, Value, Value) {
            let start = b.ins().imul_imm_s(row, k as i64);
            let first = load(b, p[0], start);
            let zero_i = iconst(b, 0);
            let (one, hi) = (iconst(b, 1), iconst(b, k as i64));
            let (_, best) = for_loop(b, one, hi, 1, &[first, zero_i], &mut |b, j, acc| {
                let e = b.ins().iadd(start, j);
                let v = load(b, p[0], e);
                let greater = b.ins().fcmp(FloatCC::GreaterThan, v, acc[0]);
                vec![b.ins().select(greater, v, acc[0]), b.ins().select(greater, j, acc[1])]
            });
            let zero = b.ins().f32const(0.0);
            let lo = iconst(b, 0);
            let (_, sum) = for_loop(b, lo, hi, 1, &[zero], &mut |b, j, acc| {
                let e = b.ins().iadd(start, j);
                let v = load(b, p[0], e);
                let d = b.ins().fsub(v, best[0]);
                let call = b.ins().call(imports.exp, &[d]);
                let ex = b.inst_results(call)[0];
                vec![b.ins().fadd(acc[0], ex)]
            });
            (start, best[0], best[1], sum[0])
        };
        // The label of `row` as a class index clamped into 0..k.
        let label = |b: &mut FunctionBuilder, row: Value| -> Value {
            let v = load(b, p[1], row);
            let i = b.ins().fcvt_to_uint_sat(types::I64, v);
            let top = iconst(b, k as i64 - 1);
            b.ins().umin(i, top)
        };

        match self.op {
            RowOp::CrossEntropy => {
                let zero = b.ins().f32const(0.0);
                let (lo, hi) = (iconst(b, 0), iconst(b, self.rows as i64));
                let (_, total) = for_loop(b, lo, hi, 1, &[zero], &mut |b, row, acc| {
                    let (start, max, _, sum) = row_stats(b, row);
                    let call = b.ins().call(imports.ln, &[sum]);
                    let lse = b.inst_results(call)[0];
                    let lse = b.ins().fadd(max, lse);
                    let l = label(b, row);
                    let e = b.ins().iadd(start, l);
                    let zl = load(b, p[0], e);
                    let t = b.ins().fadd(acc[0], lse);
                    vec![b.ins().fsub(t, zl)]
                });
                let n = b.ins().f32const(self.rows as f32);
                let mean = b.ins().fdiv(total[0], n);
                let zero_i = iconst(b, 0);
                // Only the single group writes the loss.
                for_loop(b, begin, end, 1, &[], &mut |b, _, _| {
                    store(b, p[2], zero_i, mean);
                    vec![]
                });
            }
            RowOp::Softmax | RowOp::CrossEntropyGrad | RowOp::ArgMax => {
                for_loop(b, begin, end, 1, &[], &mut |b, row, _| {
                    let (start, max, arg, sum) = row_stats(b, row);
                    if self.op == RowOp::ArgMax {
                        let v = b.ins().fcvt_from_uint(types::F32, arg);
                        store(b, p[1], row, v);
                        return vec![];
                    }
                    let (scale, l) = if self.op == RowOp::CrossEntropyGrad {
                        let zero_i = iconst(b, 0);
                        let dloss = load(b, p[2], zero_i);
                        let n = b.ins().f32const(self.rows as f32);
                        (Some(b.ins().fdiv(dloss, n)), Some(label(b, row)))
                    } else {
                        (None, None)
                    };
                    let out = p[arity - 1];
                    let (lo, hi) = (iconst(b, 0), iconst(b, k as i64));
                    for_loop(b, lo, hi, 1, &[], &mut |b, j, _| {
                        let e = b.ins().iadd(start, j);
                        let v = load(b, p[0], e);
                        let d = b.ins().fsub(v, max);
                        let call = b.ins().call(imports.exp, &[d]);
                        let ex = b.inst_results(call)[0];
                        let prob = b.ins().fdiv(ex, sum);
                        let value = match (scale, l) {
                            (Some(scale), Some(l)) => {
                                let hit = b.ins().icmp(IntCC::Equal, j, l);
                                let one = b.ins().f32const(1.0);
                                let zero = b.ins().f32const(0.0);
                                let onehot = b.ins().select(hit, one, zero);
                                let diff = b.ins().fsub(prob, onehot);
                                b.ins().fmul(diff, scale)
                            }
                            _ => prob,
                        };
                        store(b, out, e, value);
                        vec![]
                    });
                    vec![]
                });
            }
        }
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
