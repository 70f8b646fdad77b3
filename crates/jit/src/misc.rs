//! The small kernels around the convolutions: the option-A shortcut and its gradient (strided
//! channel-offset copies), matrix multiply, and the row-wise classifier ops (softmax,
//! cross-entropy and its gradient, argmax). They move little data, so they are plain scalar
//! loops; `exp` and `ln` are the same Rust functions the reference interpreter uses.

use crate::MulAdd;
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

/// A copy between NCHW tensors with channel offsets, spatial steps and a destination offset,
/// optionally zeroing the destination first:
/// `dst[n][dst_c0 + c][i * dst_step + off_h][j * dst_step + off_w] = src[n][src_c0 + c][i * src_step][j * src_step]`
/// for `i, j` over `extent`. The option-A shortcut (src_step 2, dst channel offset), its gradient
/// (dst_step 2, src channel offset) and the interleaving of sub-pixel convolution phases are all
/// this.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CopySpec {
    /// Batch size.
    pub batch: usize,
    /// Channels copied.
    pub channels: usize,
    /// Source (channels, height, width), first channel read, spatial step.
    pub src: ([usize; 3], usize, usize),
    /// Destination (channels, height, width), first channel written, spatial step.
    pub dst: ([usize; 3], usize, usize),
    /// Copied rows and columns.
    pub extent: [usize; 2],
    /// Destination position of source (0, 0), in destination pixels.
    pub dst_offset: [usize; 2],
    /// Zero the whole destination first (the first of several copies into one tensor).
    pub zero_first: bool,
}

impl CopySpec {
    /// Kernel body: one group per image; args are source, destination.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end) = entry(b);
        let [src, dst] = [0, 1].map(|k| load_arg(b, ptr, args, k));
        let (([sc, sh, sw], s0, ss), ([dc, dh, dw], d0, ds)) = (self.src, self.dst);
        let flags = MemFlagsData::new().with_notrap();
        for_loop(b, begin, end, 1, &[], &mut |b, n, _| {
            let image = dc * dh * dw;
            let dst_image = b.ins().imul_imm_s(n, image as i64);
            // Zero the destination image, four lanes at a time, then the tail.
            let zero_s = b.ins().f32const(0.0);
            let image = if self.zero_first { image } else { 0 };
            let zero_v = b.ins().splat(types::F32X4, zero_s);
            let (lo, hi) = (iconst(b, 0), iconst(b, image as i64));
            let (tail, _) = for_loop(b, lo, hi, 4, &[], &mut |b, i, _| {
                let e = b.ins().iadd(dst_image, i);
                let a = elem_addr(b, dst, e);
                b.ins().store(flags, zero_v, a, 0);
                vec![]
            });
            for_loop(b, tail, hi, 1, &[], &mut |b, i, _| {
                let e = b.ins().iadd(dst_image, i);
                let a = elem_addr(b, dst, e);
                b.ins().store(flags, zero_s, a, 0);
                vec![]
            });
            let (c_lo, c_hi) = (iconst(b, 0), iconst(b, self.channels as i64));
            for_loop(b, c_lo, c_hi, 1, &[], &mut |b, c, _| {
                let plane = |b: &mut FunctionBuilder, channels: usize, first: usize, hw: usize| {
                    let nc = b.ins().imul_imm_s(n, channels as i64);
                    let nc = b.ins().iadd(nc, c);
                    let nc = b.ins().iadd_imm_s(nc, first as i64);
                    b.ins().imul_imm_s(nc, hw as i64)
                };
                let sp = plane(b, sc, s0, sh * sw);
                let dp = plane(b, dc, d0, dh * dw);
                let dp = b.ins().iadd_imm_s(dp, (self.dst_offset[0] * dw + self.dst_offset[1]) as i64);
                let (i_lo, i_hi) = (iconst(b, 0), iconst(b, self.extent[0] as i64));
                for_loop(b, i_lo, i_hi, 1, &[], &mut |b, i, _| {
                    let srow = b.ins().imul_imm_s(i, (ss * sw) as i64);
                    let srow = b.ins().iadd(sp, srow);
                    let drow = b.ins().imul_imm_s(i, (ds * dw) as i64);
                    let drow = b.ins().iadd(dp, drow);
                    let (j_lo, j_hi) = (iconst(b, 0), iconst(b, self.extent[1] as i64));
                    for_loop(b, j_lo, j_hi, 1, &[], &mut |b, j, _| {
                        let sj = b.ins().imul_imm_s(j, ss as i64);
                        let se = b.ins().iadd(srow, sj);
                        let dj = b.ins().imul_imm_s(j, ds as i64);
                        let de = b.ins().iadd(drow, dj);
                        let (sa, da) = (elem_addr(b, src, se), elem_addr(b, dst, de));
                        let v = b.ins().load(types::F32, flags, sa, 0);
                        b.ins().store(flags, v, da, 0);
                        vec![]
                    });
                    vec![]
                });
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}

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

/// Max pooling over `[planes][h][w]`, or its gradient: `dx[argmax] += dy` per window, with the
/// first maximum in scan order (as the reference). Out-of-range window positions read a clamped,
/// always-valid index and count as negative infinity.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PoolSpec {
    /// N * C.
    pub planes: usize,
    /// Input height and width.
    pub in_hw: [usize; 2],
    /// Output height and width.
    pub out_hw: [usize; 2],
    /// Window, stride and padding.
    pub attrs: skipgrad_ir::PoolAttrs,
    /// The gradient (args: x, dy, dx) instead of the forward (args: x, y).
    pub grad: bool,
}

impl PoolSpec {
    /// Kernel body: one group per plane.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end) = entry(b);
        let p: Vec<Value> = (0..if self.grad { 3 } else { 2 }).map(|k| load_arg(b, ptr, args, k)).collect();
        let flags = MemFlagsData::new().with_notrap();
        let ([h, w], [oh_n, ow_n]) = (self.in_hw, self.out_hw);
        let a = self.attrs;
        for_loop(b, begin, end, 1, &[], &mut |b, plane, _| {
            let x_plane = b.ins().imul_imm_s(plane, (h * w) as i64);
            let y_plane = b.ins().imul_imm_s(plane, (oh_n * ow_n) as i64);
            if self.grad {
                // dx starts at zero: windows may overlap, so contributions accumulate.
                let zero = b.ins().f32const(0.0);
                let (lo, hi) = (iconst(b, 0), iconst(b, (h * w) as i64));
                for_loop(b, lo, hi, 1, &[], &mut |b, i, _| {
                    let e = b.ins().iadd(x_plane, i);
                    let addr = elem_addr(b, p[2], e);
                    b.ins().store(flags, zero, addr, 0);
                    vec![]
                });
            }
            let (o_lo, o_hi) = (iconst(b, 0), iconst(b, (oh_n * ow_n) as i64));
            for_loop(b, o_lo, o_hi, 1, &[], &mut |b, o, _| {
                let oh = b.ins().udiv_imm_u(o, ow_n as i64);
                let ow = b.ins().urem_imm_u(o, ow_n as i64);
                let ih0 = b.ins().imul_imm_s(oh, a.stride[0] as i64);
                let ih0 = b.ins().iadd_imm_s(ih0, -(a.pad[0] as i64));
                let iw0 = b.ins().imul_imm_s(ow, a.stride[1] as i64);
                let iw0 = b.ins().iadd_imm_s(iw0, -(a.pad[1] as i64));
                let mut best = b.ins().f32const(f32::NEG_INFINITY);
                let mut best_index = iconst(b, 0);
                for r in 0..a.kernel[0] {
                    for s in 0..a.kernel[1] {
                        let ih = b.ins().iadd_imm_s(ih0, r as i64);
                        let iw = b.ins().iadd_imm_s(iw0, s as i64);
                        let valid = {
                            let (zero, hh, ww) = (iconst(b, 0), iconst(b, h as i64), iconst(b, w as i64));
                            let a0 = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, ih, zero);
                            let a1 = b.ins().icmp(IntCC::SignedLessThan, ih, hh);
                            let a2 = b.ins().icmp(IntCC::SignedGreaterThanOrEqual, iw, zero);
                            let a3 = b.ins().icmp(IntCC::SignedLessThan, iw, ww);
                            let x = b.ins().band(a0, a1);
                            let y = b.ins().band(a2, a3);
                            b.ins().band(x, y)
                        };
                        let (zero, hm, wm) = (iconst(b, 0), iconst(b, h as i64 - 1), iconst(b, w as i64 - 1));
                        let ihc = b.ins().smax(ih, zero);
                        let ihc = b.ins().smin(ihc, hm);
                        let iwc = b.ins().smax(iw, zero);
                        let iwc = b.ins().smin(iwc, wm);
                        let index = b.ins().imul_imm_s(ihc, w as i64);
                        let index = b.ins().iadd(index, iwc);
                        let e = b.ins().iadd(x_plane, index);
                        let addr = elem_addr(b, p[0], e);
                        let v = b.ins().load(types::F32, flags, addr, 0);
                        let greater = b.ins().fcmp(FloatCC::GreaterThan, v, best);
                        let take = b.ins().band(greater, valid);
                        best = b.ins().select(take, v, best);
                        best_index = b.ins().select(take, index, best_index);
                    }
                }
                let ye = b.ins().iadd(y_plane, o);
                if self.grad {
                    let dy_addr = elem_addr(b, p[1], ye);
                    let g = b.ins().load(types::F32, flags, dy_addr, 0);
                    let e = b.ins().iadd(x_plane, best_index);
                    let dx_addr = elem_addr(b, p[2], e);
                    let old = b.ins().load(types::F32, flags, dx_addr, 0);
                    let new = b.ins().fadd(old, g);
                    b.ins().store(flags, new, dx_addr, 0);
                } else {
                    let y_addr = elem_addr(b, p[1], ye);
                    b.ins().store(flags, best, y_addr, 0);
                }
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
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
