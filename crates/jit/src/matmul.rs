//! Matrix multiply with either operand stored transposed: the classifier and its gradients.
//! Vectors run along whichever dimension is contiguous: the result's columns when B's rows are
//! (`y[i][j..j + 16] += A(i, p) B(p, j..j + 16)`), else the summed dimension when both operands
//! store it contiguously (dot products, lanes summed at the end); otherwise a scalar loop.

use crate::MulAdd;
use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg, mul_add_emit};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Vectors of result columns per block (independent accumulators, to cover the multiply-add's
/// latency).
const COLUMN_VECTORS: usize = 4;

/// Vectors of the summed dimension per step of a dot product.
const DOT_VECTORS: usize = 2;

/// `y[m][n] = sum_p A(m, p) * B(p, n)` with either operand stored transposed.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct MatMulSpec {
    /// Rows of the result.
    pub m: usize,
    /// Columns of the result.
    pub n: usize,
    /// The summed dimension.
    pub k: usize,
    /// A is stored `[k, m]`.
    pub transpose_a: bool,
    /// B is stored `[n, k]`.
    pub transpose_b: bool,
}

impl MatMulSpec {
    /// Kernel body: one group per result row; args are A, B, y.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let [a, bm, y] = [0, 1, 2].map(|k| load_arg(b, ptr, args, k));
        let flags = MemFlagsData::new().with_notrap();
        // Element strides of A along (m, p) and of B along (p, n).
        let (am, ap) = if self.transpose_a { (1, self.m) } else { (self.k, 1) };
        let (bp, bn) = if self.transpose_b { (1, self.k) } else { (self.n, 1) };
        let elem = |b: &mut FunctionBuilder, base: Value, at: Value, step: usize| {
            let e = b.ins().imul_imm_s(at, step as i64);
            elem_addr(b, base, e)
        };
        for_loop(b, begin, end, 1, &[], &mut |b, i, _| {
            let a_row = b.ins().imul_imm_s(i, am as i64);
            let y_row = elem(b, y, i, self.n);
            let zero = iconst(b, 0);
            // Columns `j..j + width` (width 1, or `vectors` vectors when B's rows are contiguous),
            // summed over p one element at a time.
            let columns = |b: &mut FunctionBuilder, j: Value, vectors: usize| {
                let b_col = b.ins().imul_imm_s(j, bn as i64);
                let ty = if vectors == 0 { types::F32 } else { types::F32X4 };
                let zero_s = b.ins().f32const(0.0);
                let init = if vectors == 0 { vec![zero_s] } else { vec![b.ins().splat(ty, zero_s); vectors] };
                let p_hi = iconst(b, self.k as i64);
                let (_, acc) = for_loop(b, zero, p_hi, 1, &init, &mut |b, p, acc| {
                    let pa = b.ins().imul_imm_s(p, ap as i64);
                    let ea = b.ins().iadd(a_row, pa);
                    let xa = elem_addr(b, a, ea);
                    let va = b.ins().load(types::F32, flags, xa, 0);
                    let va = if vectors == 0 { va } else { b.ins().splat(ty, va) };
                    let pb = b.ins().imul_imm_s(p, bp as i64);
                    let eb = b.ins().iadd(b_col, pb);
                    let xb = elem_addr(b, bm, eb);
                    acc.iter()
                        .enumerate()
                        .map(|(u, &acc)| {
                            let vb = b.ins().load(ty, flags, xb, (16 * u) as i32);
                            mul_add_emit(b, mul_add, va, vb, acc)
                        })
                        .collect()
                });
                let at = b.ins().imul_imm_s(j, 4);
                let at = b.ins().iadd(y_row, at);
                for (u, &v) in acc.iter().enumerate() {
                    b.ins().store(flags, v, at, (16 * u) as i32);
                }
            };
            let n_hi = iconst(b, self.n as i64);
            let first_scalar = if bn == 1 {
                let block = 4 * COLUMN_VECTORS as i64;
                let (j, _) = for_loop(b, zero, n_hi, block, &[], &mut |b, j, _| {
                    columns(b, j, COLUMN_VECTORS);
                    vec![]
                });
                let (j, _) = for_loop(b, j, n_hi, 4, &[], &mut |b, j, _| {
                    columns(b, j, 1);
                    vec![]
                });
                j
            } else if ap == 1 && bp == 1 {
                for_loop(b, zero, n_hi, 1, &[], &mut |b, j, _| {
                    let a_at = elem_addr(b, a, a_row);
                    let b_at = elem(b, bm, j, bn);
                    let dot = self.dot(b, mul_add, [a_at, b_at]);
                    let at = b.ins().imul_imm_s(j, 4);
                    let at = b.ins().iadd(y_row, at);
                    b.ins().store(flags, dot, at, 0);
                    vec![]
                });
                n_hi
            } else {
                zero
            };
            for_loop(b, first_scalar, n_hi, 1, &[], &mut |b, j, _| {
                columns(b, j, 0);
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// `sum_p a[p] * b[p]` over the summed dimension, both contiguous from `a_at` and `b_at`:
    /// [`DOT_VECTORS`] vector accumulators, their lanes summed, then the scalar tail.
    fn dot(&self, b: &mut FunctionBuilder, mul_add: MulAdd, [a_at, b_at]: [Value; 2]) -> Value {
        let flags = MemFlagsData::new().with_notrap();
        let zero_s = b.ins().f32const(0.0);
        let zero_v = b.ins().splat(types::F32X4, zero_s);
        let (lo, hi) = (iconst(b, 0), iconst(b, self.k as i64));
        let step = 4 * DOT_VECTORS as i64;
        let (p, acc) = for_loop(b, lo, hi, step, &[zero_v; DOT_VECTORS], &mut |b, p, acc| {
            let at = b.ins().imul_imm_s(p, 4);
            let (xa, xb) = (b.ins().iadd(a_at, at), b.ins().iadd(b_at, at));
            acc.iter()
                .enumerate()
                .map(|(u, &acc)| {
                    let va = b.ins().load(types::F32X4, flags, xa, (16 * u) as i32);
                    let vb = b.ins().load(types::F32X4, flags, xb, (16 * u) as i32);
                    mul_add_emit(b, mul_add, va, vb, acc)
                })
                .collect()
        });
        let mut sum = zero_s;
        for v in acc {
            for lane in 0..4 {
                let x = b.ins().extractlane(v, lane);
                sum = b.ins().fadd(sum, x);
            }
        }
        let (_, tail) = for_loop(b, p, hi, 1, &[sum], &mut |b, p, acc| {
            let at = b.ins().imul_imm_s(p, 4);
            let (xa, xb) = (b.ins().iadd(a_at, at), b.ins().iadd(b_at, at));
            let va = b.ins().load(types::F32, flags, xa, 0);
            let vb = b.ins().load(types::F32, flags, xb, 0);
            vec![mul_add_emit(b, mul_add, va, vb, acc[0])]
        });
        tail[0]
    }
}
