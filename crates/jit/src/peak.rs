//! The calibration kernel: independent multiply-adds on register-resident f32x4 (or f32x8, f32x16)
//! accumulators, with no memory traffic. Its throughput is the ceiling the benchmark reports kernels against.

use crate::MulAdd;
use crate::codegen::{f32_vector, for_loop};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, types};
use cranelift_frontend::FunctionBuilder;

/// `accumulators` independent multiply-add chains of `lanes` f32 lanes run for `iterations` per
/// group.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PeakSpec {
    /// Independent accumulators (enough to cover the FMA latency times the ports: 8 to 12).
    pub accumulators: usize,
    /// Loop iterations per group.
    pub iterations: usize,
    /// Lanes per vector: 4 (128-bit registers), 8 (256-bit) or 16 (512-bit).
    pub lanes: usize,
}

impl PeakSpec {
    /// Floating-point operations per group (2 per lane per multiply-add).
    pub fn flops_per_group(&self) -> f64 {
        (self.iterations * self.accumulators * self.lanes * 2) as f64
    }

    /// Kernel body: args[0] receives the sum of the accumulators, `lanes` f32 (so nothing is dead
    /// code).
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let [args, begin, end] = [0, 1, 2].map(|i| b.block_params(entry)[i]);
        let out = b.ins().load(ptr, MemFlagsData::new().with_notrap(), args, 0);
        let (x, y) = (b.ins().f32const(0.999), b.ins().f32const(1e-3));
        let vector = f32_vector(self.lanes);
        let (xv, yv) = (b.ins().splat(vector, x), b.ins().splat(vector, y));
        for_loop(b, begin, end, 1, &[], &mut |b, _, _| {
            let init: Vec<_> = (0..self.accumulators).map(|_| yv).collect();
            let zero = b.ins().iconst(types::I64, 0);
            let n = b.ins().iconst(types::I64, self.iterations as i64);
            let (_, acc) = for_loop(b, zero, n, 1, &init, &mut |b, _, acc| {
                acc.iter()
                    .map(|&a| match mul_add {
                        MulAdd::Fused => b.ins().fma(a, xv, yv),
                        MulAdd::Separate => {
                            let p = b.ins().fmul(a, xv);
                            b.ins().fadd(p, yv)
                        }
                    })
                    .collect()
            });
            let mut sum = acc[0];
            for &a in &acc[1..] {
                sum = b.ins().fadd(sum, a);
            }
            b.ins().store(MemFlagsData::new().with_notrap(), sum, out, 0);
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}
