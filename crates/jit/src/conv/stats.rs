//! Batch-norm statistics from the partial sums a convolution wrote while its outputs were in
//! registers: per channel, the mean and the biased variance, summed in f64 in a fixed order (so
//! the result does not depend on the thread count). The convolution kernel's last thread to finish
//! emits this reduction, so the statistics cost no kernel of their own.

use crate::codegen::{for_loop, iconst};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Reduces a `stats` convolution's partials (sum and sum of squares per output channel of every
/// tile, laid out `[group][tile][channel in block][2]` with groups `(image, channel block, row)`;
/// a last block of fewer channels leaves its other entries unread)
/// to `mean = sum / count` and `var = squares / count - mean^2` (clamped at 0).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub(crate) struct StatsSpec {
    /// Output channels.
    pub channels: usize,
    /// Channels per block (the convolution's register tile).
    pub kb: usize,
    /// Images.
    pub batch: usize,
    /// Output rows per image.
    pub rows: usize,
    /// Tiles per output row.
    pub tiles: usize,
    /// Values per channel: images x output pixels.
    pub count: usize,
}

impl StatsSpec {
    /// Emits the reduction for every channel: reads `partials`, writes `mean` and `var`.
    pub(crate) fn emit(&self, b: &mut FunctionBuilder, partials: Value, mean: Value, var: Value) {
        let blocks = self.channels.div_ceil(self.kb);
        let flags = MemFlagsData::new().with_notrap();
        let (begin, end) = (iconst(b, 0), iconst(b, self.channels as i64));
        for_loop(b, begin, end, 1, &[], &mut |b, k, _| {
            let block = b.ins().udiv_imm_u(k, self.kb as i64);
            let within = b.ins().urem_imm_u(k, self.kb as i64);
            let zero = b.ins().f64const(0.0);
            let (n_lo, n_hi) = (iconst(b, 0), iconst(b, self.batch as i64));
            let (_, sums) = for_loop(b, n_lo, n_hi, 1, &[zero, zero], &mut |b, n, sums| {
                // Group (n, block, row 0), then consecutive rows.
                let g = b.ins().imul_imm_s(n, blocks as i64);
                let g = b.ins().iadd(g, block);
                let g = b.ins().imul_imm_s(g, self.rows as i64);
                let first = b.ins().imul_imm_s(g, (self.tiles * self.kb) as i64);
                let first = b.ins().iadd(first, within);
                let bytes = b.ins().ishl_imm_u(first, 3); // two f32 per entry
                let at = b.ins().iadd(partials, bytes);
                let (e_lo, e_hi) = (iconst(b, 0), iconst(b, (self.rows * self.tiles) as i64));
                let step = (self.kb * 8) as i64;
                let (_, out) = for_loop(b, e_lo, e_hi, 1, &[at, sums[0], sums[1]], &mut |b, _, c| {
                    let read = flags.with_readonly();
                    let s = b.ins().load(types::F32, read, c[0], 0);
                    let q = b.ins().load(types::F32, read, c[0], 4);
                    let (s, q) = (b.ins().fpromote(types::F64, s), b.ins().fpromote(types::F64, q));
                    vec![b.ins().iadd_imm_s(c[0], step), b.ins().fadd(c[1], s), b.ins().fadd(c[2], q)]
                });
                out[1..].to_vec()
            });
            let count = b.ins().f64const(self.count as f64);
            let m = b.ins().fdiv(sums[0], count);
            let squares = b.ins().fdiv(sums[1], count);
            let m2 = b.ins().fmul(m, m);
            let v = b.ins().fsub(squares, m2);
            let v = b.ins().fmax(v, zero);
            let (m, v) = (b.ins().fdemote(types::F32, m), b.ins().fdemote(types::F32, v));
            let offset = b.ins().ishl_imm_u(k, 2);
            let (mean_at, var_at) = (b.ins().iadd(mean, offset), b.ins().iadd(var, offset));
            b.ins().store(flags, m, mean_at, 0);
            b.ins().store(flags, v, var_at, 0);
            vec![]
        });
    }
}
