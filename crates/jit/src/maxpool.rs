//! Max pooling and its gradient (the ImageNet stem), four outputs of a row at a time.

use crate::codegen::{elem_addr, entry_with_thread, fill, for_loop, iconst, load_arg, mul, thread_share};
use crate::conv::pack::PackSpec;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{ConstantData, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Max pooling over `[planes][h][w]`, or its gradient: `dx[argmax] += dy` per window, with the
/// first maximum in scan order (as the reference): a later tap wins only when greater, so NaN
/// never does. A window with no value above negative infinity takes the plane's element 0, as the
/// reference does.
///
/// Each plane is first packed into the thread's share of a scratch, the convolutions' layout
/// ([`PackSpec`]: padded rows, width split into stride phases) whose padding holds negative
/// infinity, so a tap reads 4 consecutive outputs' inputs as one vector, with no bounds checks.
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
    /// The gradient (args: x, dy, scratch, dx) instead of the forward (args: x, scratch, y).
    pub grad: bool,
}

impl PoolSpec {
    /// How a plane is packed: the rows and columns the windows reach, in stride phases, each row
    /// long enough for whole vectors of outputs.
    fn pack(&self) -> PackSpec {
        let a = self.attrs;
        let [oh, ow] = self.out_hw;
        PackSpec {
            planes: 1,
            in_hw: self.in_hw,
            dilation: [1, 1],
            pad_before: [a.pad[0] as isize, a.pad[1] as isize],
            rows: (oh - 1) * a.stride[0] + a.kernel[0],
            phases: a.stride[1],
            row_len: ow.div_ceil(4) * 4 + (a.kernel[1] - 1) / a.stride[1],
            images: 1,
            step: 1,
        }
    }

    /// f32 elements of one thread's scratch: one packed plane.
    pub fn scratch_len(&self) -> usize {
        self.pack().len()
    }

    /// Kernel body: one group per plane; args as [`PoolSpec::grad`] says, the scratch
    /// [`PoolSpec::scratch_len`] per thread.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let arity = if self.grad { 4 } else { 3 };
        let p: Vec<Value> = (0..arity).map(|k| load_arg(b, ptr, args, k)).collect();
        let (x, scratch, out) = (p[0], p[arity - 2], p[arity - 1]);
        let pack = self.pack();
        let packed = thread_share(b, scratch, thread, pack.len());
        // Negative infinity where the packing never writes (the padding).
        let minus_inf = b.ins().f32const(f32::NEG_INFINITY);
        fill(b, packed, pack.len(), minus_inf);
        let ([h, w], [oh_n, ow_n]) = (self.in_hw, self.out_hw);
        let vectors = ow_n.div_ceil(4);
        for_loop(b, begin, end, 1, &[], &mut |b, plane, _| {
            pack.emit(b, x, packed, plane);
            let x_plane = mul(b, plane, h * w);
            let y_plane = mul(b, plane, oh_n * ow_n);
            if self.grad {
                // dx starts at zero: windows may overlap, so contributions accumulate.
                let zero = b.ins().f32const(0.0);
                let at = elem_addr(b, out, x_plane);
                fill(b, at, h * w, zero);
            }
            let (lo, hi) = (iconst(b, 0), iconst(b, oh_n as i64));
            for_loop(b, lo, hi, 1, &[], &mut |b, oh, _| {
                let (lo, whole) = (iconst(b, 0), iconst(b, (ow_n / 4) as i64));
                let row = Row { x_plane, y_plane, oh };
                for_loop(b, lo, whole, 1, &[], &mut |b, v, _| {
                    self.emit_vector(b, &p, packed, &row, v, 4);
                    vec![]
                });
                if vectors > ow_n / 4 {
                    let v = iconst(b, (ow_n / 4) as i64);
                    self.emit_vector(b, &p, packed, &row, v, ow_n % 4);
                }
                vec![]
            });
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Outputs `4 v .. 4 v + lanes` of output row `row.oh`: their maxima stored into y, or dy
    /// added at their argmax positions of dx, lane by lane in output order.
    fn emit_vector(&self, b: &mut FunctionBuilder, p: &[Value], packed: Value, row: &Row, v: Value, lanes: usize) {
        let flags = MemFlagsData::new().with_notrap();
        let a = self.attrs;
        let pack = self.pack();
        let ([_, w], [_, ow_n]) = (self.in_hw, self.out_hw);
        // Packed element of (tap row 0, phase 0) for output column 4 v.
        let first = {
            let r = mul(b, row.oh, a.stride[0] * pack.line());
            let c = mul(b, v, 4);
            b.ins().iadd(r, c)
        };
        let at = elem_addr(b, packed, first);
        let minus_inf = b.ins().f32const(f32::NEG_INFINITY);
        let mut best = b.ins().splat(types::F32X4, minus_inf);
        // For the gradient: each lane's input index (in the plane) of tap (0, 0) (it may lie in
        // the padding: only taps inside are ever taken), and of its best tap so far (0 first).
        let splat_i32 = |b: &mut FunctionBuilder, v: Value| {
            let v = b.ins().ireduce(types::I32, v);
            b.ins().splat(types::I32X4, v)
        };
        let mut argmax = self.grad.then(|| {
            let r = mul(b, row.oh, a.stride[0] * w);
            let c = mul(b, v, 4 * a.stride[1]);
            let e = b.ins().iadd(r, c);
            let e = b.ins().iadd_imm_s(e, -((a.pad[0] * w + a.pad[1]) as i64));
            let e = splat_i32(b, e);
            let steps: Vec<u8> = (0..4u32).flat_map(|l| (l * a.stride[1] as u32).to_le_bytes()).collect();
            let steps = b.func.dfg.constants.insert(ConstantData::from(steps));
            let steps = b.ins().vconst(types::I32X4, steps);
            let zero = iconst(b, 0);
            (b.ins().iadd(e, steps), splat_i32(b, zero))
        });
        for r in 0..a.kernel[0] {
            for s in 0..a.kernel[1] {
                let offset = (r * pack.line() + (s % a.stride[1]) * pack.row_len + s / a.stride[1]) * 4;
                let x = b.ins().load(types::F32X4, flags.with_readonly(), at, offset as i32);
                let greater = b.ins().fcmp(FloatCC::GreaterThan, x, best);
                let mask = b.ins().bitcast(types::F32X4, MemFlagsData::new(), greater);
                best = b.ins().bitselect(mask, x, best);
                if let Some((base, index)) = argmax {
                    let tap = iconst(b, (r * w + s) as i64);
                    let tap = splat_i32(b, tap);
                    let here = b.ins().iadd(base, tap);
                    argmax = Some((base, b.ins().bitselect(greater, here, index)));
                }
            }
        }
        let out = *p.last().unwrap();
        let y_at = {
            let r = mul(b, row.oh, ow_n);
            let c = mul(b, v, 4);
            let e = b.ins().iadd(r, c);
            let e = b.ins().iadd(row.y_plane, e);
            elem_addr(b, if self.grad { p[1] } else { out }, e)
        };
        match argmax.map(|(_, index)| index) {
            None if lanes == 4 => {
                b.ins().store(flags, best, y_at, 0);
            }
            None => {
                for l in 0..lanes {
                    let e = b.ins().extractlane(best, l as u8);
                    b.ins().store(flags, e, y_at, 4 * l as i32);
                }
            }
            Some(index) => {
                for l in 0..lanes {
                    let g = b.ins().load(types::F32, flags.with_readonly(), y_at, 4 * l as i32);
                    let i = b.ins().extractlane(index, l as u8);
                    let i = b.ins().sextend(types::I64, i);
                    let e = b.ins().iadd(row.x_plane, i);
                    let dx = elem_addr(b, out, e);
                    let old = b.ins().load(types::F32, flags, dx, 0);
                    let new = b.ins().fadd(old, g);
                    b.ins().store(flags, new, dx, 0);
                }
            }
        }
    }
}

/// Where one output row's values are: the plane's first input element, its first output
/// element, and the row.
struct Row {
    x_plane: Value,
    y_plane: Value,
    oh: Value,
}
