//! Max pooling and its gradient (the ImageNet stem).

use crate::codegen::{elem_addr, entry, for_loop, iconst, load_arg};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

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
