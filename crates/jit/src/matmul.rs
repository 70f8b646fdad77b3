//! Matrix multiply with either operand stored transposed: the classifier and its gradients. The
//! matrices are small in the paper's nets, so this is a plain loop.

use crate::MulAdd;
use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, types};
use cranelift_frontend::FunctionBuilder;

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
        for_loop(b, begin, end, 1, &[], &mut |b, i, _| {
            let a_row = b.ins().imul_imm_s(i, am as i64);
            let (j_lo, j_hi) = (iconst(b, 0), iconst(b, self.n as i64));
            for_loop(b, j_lo, j_hi, 1, &[], &mut |b, j, _| {
                let b_col = b.ins().imul_imm_s(j, bn as i64);
                let zero = b.ins().f32const(0.0);
                let (p_lo, p_hi) = (iconst(b, 0), iconst(b, self.k as i64));
                let (_, acc) = for_loop(b, p_lo, p_hi, 1, &[zero], &mut |b, p, acc| {
                    let pa = b.ins().imul_imm_s(p, ap as i64);
                    let ea = b.ins().iadd(a_row, pa);
                    let pb = b.ins().imul_imm_s(p, bp as i64);
                    let eb = b.ins().iadd(b_col, pb);
                    let (xa, xb) = (elem_addr(b, a, ea), elem_addr(b, bm, eb));
                    let (va, vb) = (b.ins().load(types::F32, flags, xa, 0), b.ins().load(types::F32, flags, xb, 0));
                    vec![match mul_add {
                        MulAdd::Fused => b.ins().fma(va, vb, acc[0]),
                        MulAdd::Separate => {
                            let prod = b.ins().fmul(va, vb);
                            b.ins().fadd(acc[0], prod)
                        }
                    }]
                });
                let row = b.ins().imul_imm_s(i, self.n as i64);
                let e = b.ins().iadd(row, j);
                let ya = elem_addr(b, y, e);
                b.ins().store(flags, acc[0], ya, 0);
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
