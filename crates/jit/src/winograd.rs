//! Winograd F(2x2, 3x3) convolutions: a 3x3 stride-1 convolution computed on 2x2 output tiles
//! with 16 multiplies per tile and channel pair instead of 36 (2.25x fewer).
//!
//! For output tile `(ty, tx)` the 4x4 input patch `d` (padded rows `2ty..2ty+4`, columns
//! `2tx..2tx+4`) is transformed to `V = Bᵀ d B`, each filter `g` to `U = G g Gᵀ`, and the output
//! tile is `Y = Aᵀ M A` with `M[ξ] = Σ_c U[ξ][c] V[ξ][c]` for each of the 16 positions `ξ`: 16
//! small matrix products over the channels, done with the direct convolution's register tile.
//!
//! One kernel does everything, per thread: it transforms the weights into its share of per-thread
//! scratch once per run, then for each group (an image's block of tile rows) packs the image
//! (when new) with two width phases, so that the patches of 4 consecutive tiles are contiguous
//! vectors, transforms those patches, multiplies, and transforms the products back, applying the
//! epilogue and accumulating the batch statistics while the outputs are in registers. The
//! transformed data of one group stays in cache.

use crate::MulAdd;
use crate::codegen::{elem_addr, for_loop, iconst, if_then};
use crate::conv::{ConvArgs, ConvSpec, EpilogueAt, apply_epilogue, mul, mul_add_emit, sum_and_squares};
use crate::expr::Width;
use crate::pack::PackSpec;
use crate::transpose::shuffle32;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The tiling of a Winograd F(2x2, 3x3) convolution's output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Winograd {
    /// Tile rows (pairs of output rows) per group.
    pub tile_rows: usize,
    /// Tiles per tile row, padded up to whole vectors of 4.
    pub row_tiles: usize,
}

/// Transform positions per tile (4 x 4).
const POSITIONS: usize = 16;

impl Winograd {
    /// The tiling of an output of `out_hw`, or `None` when F(2x2, 3x3) does not apply (odd
    /// sizes). A group covers the fewest whole tile rows that give at least 16 tiles.
    pub fn for_output(out_hw: [usize; 2]) -> Option<Self> {
        let [h, w] = out_hw;
        if h == 0 || w == 0 || !h.is_multiple_of(2) || !w.is_multiple_of(2) {
            return None;
        }
        let (th, tw) = (h / 2, w / 2);
        let row_tiles = tw.div_ceil(4) * 4;
        let tile_rows = (1..=th).find(|r| th.is_multiple_of(*r) && r * row_tiles >= 16).unwrap_or(th);
        Some(Winograd { tile_rows, row_tiles })
    }
    /// Tiles per group (padding included).
    pub fn tiles(&self) -> usize {
        self.tile_rows * self.row_tiles
    }
}

/// Offsets (f32 elements, multiples of 4) of a Winograd kernel's areas in its per-thread
/// scratch: the packed image, the transformed weights `U[ξ][c][k]`, the transformed inputs
/// `V[ξ][c][t]` and the products `M[ξ][k][t]`, and the total.
struct Areas {
    u: usize,
    v: usize,
    m: usize,
    len: usize,
}

impl ConvSpec {
    fn tiling(&self) -> Winograd {
        self.winograd.expect("a Winograd convolution")
    }

    fn areas(&self) -> Areas {
        let w = self.tiling();
        let (c, k) = (self.shape.in_channels, self.shape.out_channels);
        let round = |n: usize| n.div_ceil(4) * 4;
        let u = round(self.pack.len());
        let v = u + POSITIONS * c * k;
        let m = v + POSITIONS * c * w.tiles();
        Areas { u, v, m, len: m + POSITIONS * k * w.tiles() }
    }

    /// Groups per image of a Winograd convolution.
    pub(crate) fn winograd_groups_per_image(&self) -> usize {
        self.shape.out_hw[0] / 2 / self.tiling().tile_rows
    }

    /// f32 elements of one thread's scratch for a Winograd convolution.
    pub(crate) fn winograd_scratch_len(&self) -> usize {
        self.areas().len
    }

    /// Emits a Winograd convolution: this thread's weight transform, then groups `begin..end`.
    pub(crate) fn emit_winograd(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        begin: Value,
        end: Value,
    ) {
        let areas = self.areas();
        let at = |b: &mut FunctionBuilder, offset: usize| b.ins().iadd_imm_s(a.packed, 4 * offset as i64);
        let (u, v, m) = (at(b, areas.u), at(b, areas.v), at(b, areas.m));
        self.weight_transform(b, a.w, u);
        let per_image = self.winograd_groups_per_image();
        let no_image = iconst(b, -1);
        for_loop(b, begin, end, 1, &[no_image], &mut |b, g, packed| {
            let n = b.ins().udiv_imm_u(g, per_image as i64);
            let block = b.ins().urem_imm_u(g, per_image as i64);
            let new_image = b.ins().icmp(IntCC::NotEqual, n, packed[0]);
            if_then(b, new_image, &mut |b| {
                let first_plane = mul(b, n, self.shape.in_channels);
                self.pack.emit(b, a.x, a.packed, first_plane);
            });
            let tiling = self.tiling();
            transform_inputs(b, &self.pack, tiling, a.packed, v, tiling.tiles(), block);
            self.products(b, mul_add, u, v, m);
            let partials = a.stats.map(|s| {
                let offset = b.ins().imul_imm_s(g, (self.shape.out_channels * 2 * 4) as i64);
                b.ins().iadd(s[0], offset)
            });
            self.output_transform(b, mul_add, a, m, partials, n, block);
            vec![n]
        });
    }

    /// `U[ξ][c][k] = (G g Gᵀ)[ξ]` for every filter `g` (output channel `k`, input channel `c`),
    /// read through the weight layout.
    fn weight_transform(&self, b: &mut FunctionBuilder, w: Value, u: Value) {
        let (cn, kn) = (self.shape.in_channels, self.shape.out_channels);
        let wl = self.weights;
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let (lo, k_hi, c_hi) = (iconst(b, 0), iconst(b, kn as i64), iconst(b, cn as i64));
        for_loop(b, lo, k_hi, 1, &[], &mut |b, k, _| {
            for_loop(b, lo, c_hi, 1, &[], &mut |b, c, _| {
                let ko = b.ins().imul_imm_s(k, wl.o as i64);
                let ci = b.ins().imul_imm_s(c, wl.i as i64);
                let e = b.ins().iadd(ko, ci);
                let e = b.ins().iadd_imm_s(e, wl.base as i64);
                let g_at = elem_addr(b, w, e);
                let g: Vec<Vec<Value>> = (0..3)
                    .map(|r: isize| {
                        (0..3)
                            .map(|s: isize| b.ins().load(types::F32, read, g_at, (r * wl.r + s * wl.s) as i32 * 4))
                            .collect()
                    })
                    .collect();
                // G g (4 x 3, by columns: columns[s][i]), then (G g) Gᵀ (4 x 4), row by row.
                let columns: Vec<[Value; 4]> = (0..3).map(|s| transform_g(b, [g[0][s], g[1][s], g[2][s]])).collect();
                let e = b.ins().imul_imm_s(c, kn as i64);
                let e = b.ins().iadd(e, k);
                let u_at = elem_addr(b, u, e);
                let gg: [[Value; 3]; 4] = std::array::from_fn(|i| [columns[0][i], columns[1][i], columns[2][i]]);
                for (i, &row) in gg.iter().enumerate() {
                    let out = transform_g(b, row);
                    for (j, &value) in out.iter().enumerate() {
                        let position = 4 * i + j;
                        b.ins().store(write, value, u_at, (position * cn * kn * 4) as i32);
                    }
                }
                vec![]
            });
            vec![]
        });
    }

    /// `M[ξ][k][t] = Σ_c U[ξ][c][k] V[ξ][c][t]`: per position, register tiles of `kb` output
    /// channels by `vb` vectors of tiles.
    fn products(&self, b: &mut FunctionBuilder, mul_add: MulAdd, u: Value, v: Value, m: Value) {
        let (cn, kn, tiles) = (self.shape.in_channels, self.shape.out_channels, self.tiling().tiles());
        let (kb, vb) = (self.kb, self.vb);
        let unroll = (1..=4).rev().find(|d| cn.is_multiple_of(*d)).unwrap_or(1);
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let lo = iconst(b, 0);
        let hi = [POSITIONS, kn / kb, tiles / (4 * vb), cn].map(|n| iconst(b, n as i64));
        for_loop(b, lo, hi[0], 1, &[], &mut |b, xi, _| {
            let u_xi = mul(b, xi, cn * kn);
            let v_xi = mul(b, xi, cn * tiles);
            let m_xi = mul(b, xi, kn * tiles);
            for_loop(b, lo, hi[1], 1, &[], &mut |b, kblock, _| {
                let k0 = mul(b, kblock, kb);
                let u0 = b.ins().iadd(u_xi, k0);
                for_loop(b, lo, hi[2], 1, &[], &mut |b, tb, _| {
                    let t0 = mul(b, tb, 4 * vb);
                    let v0 = b.ins().iadd(v_xi, t0);
                    let zero = b.ins().f32const(0.0);
                    let zero = b.ins().splat(types::F32X4, zero);
                    let (_, acc) = for_loop(b, lo, hi[3], unroll as i64, &vec![zero; kb * vb], &mut |b, c, acc| {
                        let u_c = {
                            let e = mul(b, c, kn);
                            let e = b.ins().iadd(u0, e);
                            elem_addr(b, u, e)
                        };
                        let v_c = {
                            let e = mul(b, c, tiles);
                            let e = b.ins().iadd(v0, e);
                            elem_addr(b, v, e)
                        };
                        let mut acc = acc.to_vec();
                        for step in 0..unroll {
                            let xs: Vec<Value> = (0..vb)
                                .map(|j| b.ins().load(types::F32X4, read, v_c, ((step * tiles + 4 * j) * 4) as i32))
                                .collect();
                            for k in 0..kb {
                                let wk = b.ins().load(types::F32, read, u_c, ((step * kn + k) * 4) as i32);
                                let wv = b.ins().splat(types::F32X4, wk);
                                for (j, &x) in xs.iter().enumerate() {
                                    acc[k * vb + j] = mul_add_emit(b, mul_add, wv, x, acc[k * vb + j]);
                                }
                            }
                        }
                        acc
                    });
                    let e = mul(b, k0, tiles);
                    let e = b.ins().iadd(m_xi, e);
                    let e = b.ins().iadd(e, t0);
                    let m_at = elem_addr(b, m, e);
                    for k in 0..kb {
                        for j in 0..vb {
                            b.ins().store(write, acc[k * vb + j], m_at, ((k * tiles + 4 * j) * 4) as i32);
                        }
                    }
                    vec![]
                });
                vec![]
            });
            vec![]
        });
    }

    /// `Y = Aᵀ M A` for every output channel and tile of group `block` of image `n`: two output
    /// rows of 8 pixels per vector of 4 tiles, zipped from the tiles' columns, through the
    /// epilogue into the output, with each channel's sum and sum of squares written to
    /// `partials` (when computing statistics).
    #[allow(clippy::too_many_arguments)]
    fn output_transform(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        m: Value,
        partials: Option<Value>,
        n: Value,
        block: Value,
    ) {
        let w = self.tiling();
        let kn = self.shape.out_channels;
        let [oh, ow] = self.shape.out_hw;
        let (full_vectors, last_tiles) = ((ow / 2) / 4, (ow / 2) % 4);
        let write = MemFlagsData::new().with_notrap();
        let lo = iconst(b, 0);
        let (k_hi, r_hi, tv_hi) = (iconst(b, kn as i64), iconst(b, w.tile_rows as i64), iconst(b, full_vectors as i64));
        let first_row = mul(b, block, 2 * w.tile_rows);
        for_loop(b, lo, k_hi, 1, &[], &mut |b, k, _| {
            let channel: Vec<Value> = a.operands.iter().map(|&o| elem_addr(b, o, k)).collect();
            let plane = {
                let nk = mul(b, n, kn);
                let nk = b.ins().iadd(nk, k);
                mul(b, nk, oh * ow)
            };
            let m_k = mul(b, k, w.tiles());
            let zero = b.ins().f32const(0.0);
            let zeros = b.ins().splat(types::F32X4, zero);
            let stats0 = [zeros, zeros, zero, zero];
            let (_, stats) = for_loop(b, lo, r_hi, 1, &stats0, &mut |b, r, s| {
                let (y_row, m_row) = tile_row(b, [first_row, r], [plane, m_k], ow, w.row_tiles);
                let segment = |b: &mut FunctionBuilder, tv: Value, valid: usize, s: [Value; 4]| {
                    let t = mul(b, tv, 4);
                    let e = b.ins().iadd(m_row, t);
                    let m_at = elem_addr(b, m, e);
                    let px = mul(b, tv, 8);
                    let y_at = b.ins().iadd(y_row, px);
                    self.output_segment(b, mul_add, a, &channel, m_at, y_at, valid, s)
                };
                let (_, s) =
                    for_loop(b, lo, tv_hi, 1, s, &mut |b, tv, s| segment(b, tv, 8, [s[0], s[1], s[2], s[3]]).to_vec());
                let s = [s[0], s[1], s[2], s[3]];
                let s = if last_tiles > 0 { segment(b, tv_hi, 2 * last_tiles, s) } else { s };
                s.to_vec()
            });
            if let Some(at) = partials {
                let [mut sum, mut squares] = [stats[2], stats[3]];
                for lane in 0..4 {
                    let (s, q) = (b.ins().extractlane(stats[0], lane), b.ins().extractlane(stats[1], lane));
                    sum = b.ins().fadd(sum, s);
                    squares = b.ins().fadd(squares, q);
                }
                let offset = mul(b, k, 8);
                let at = b.ins().iadd(at, offset);
                b.ins().store(write, sum, at, 0);
                b.ins().store(write, squares, at, 4);
            }
            vec![]
        });
    }

    /// One vector of 4 tiles (products at `m_at`) to the 2 x `valid` output pixels starting at
    /// element `y_at` of the output (and the next row), updating the statistics
    /// `[vector sum, vector squares, scalar sum, scalar squares]`.
    #[allow(clippy::too_many_arguments)]
    fn output_segment(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        channel: &[Value],
        m_at: Value,
        y_at: Value,
        valid: usize,
        mut stats: [Value; 4],
    ) -> [Value; 4] {
        let w = self.tiling();
        let (kn, ow) = (self.shape.out_channels, self.shape.out_hw[1]);
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let stride = kn * w.tiles() * 4; // bytes between positions
        let with_stats = a.stats.is_some();
        // Output row `row` is row `row` of Aᵀ M (m0 + m1 + m2, or m1 - m2 - m3) times A; M is
        // loaded again for the second row, which keeps registers free for the epilogue.
        for row in 0..2 {
            let z = [0, 1, 2, 3].map(|j| {
                let m = [0, 1, 2, 3].map(|i| b.ins().load(types::F32X4, read, m_at, ((4 * i + j) * stride) as i32));
                transform_a(b, m)[row]
            });
            let [y0, y1] = transform_a(b, z);
            // Columns 2tx and 2tx + 1 of 4 tiles, zipped into 8 consecutive pixels.
            let pixels = [shuffle32(b, y0, y1, [0, 4, 1, 5]), shuffle32(b, y0, y1, [2, 6, 3, 7])];
            let e = b.ins().iadd_imm_s(y_at, (row * ow) as i64);
            let y_base = elem_addr(b, a.y, e);
            let full: Vec<Value> = a.operands.iter().map(|&o| elem_addr(b, o, e)).collect();
            for (half, &v) in pixels.iter().enumerate() {
                let lanes = valid.saturating_sub(4 * half).min(4);
                if lanes == 4 {
                    let at = EpilogueAt { full: &full, full_offset: 16 * half as i32, channel, channel_offset: 0 };
                    let v = apply_epilogue(b, self.epilogue.as_ref(), mul_add, &at, v, Width::Vector);
                    b.ins().store(write, v, y_base, 16 * half as i32);
                    if with_stats {
                        let [s, q] = sum_and_squares(b, mul_add, Some([stats[0], stats[1]]), v);
                        (stats[0], stats[1]) = (s, q);
                    }
                } else {
                    for lane in 0..lanes {
                        let x = b.ins().extractlane(v, lane as u8);
                        let offset = (16 * half + 4 * lane) as i32;
                        let at = EpilogueAt { full: &full, full_offset: offset, channel, channel_offset: 0 };
                        let x = apply_epilogue(b, self.epilogue.as_ref(), mul_add, &at, x, Width::Scalar);
                        b.ins().store(write, x, y_base, offset);
                        if with_stats {
                            let [s, q] = sum_and_squares(b, mul_add, Some([stats[2], stats[3]]), x);
                            (stats[2], stats[3]) = (s, q);
                        }
                    }
                }
            }
        }
        stats
    }
}

/// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for each channel `c` of a packed image `xp` (two width phases) and
/// each tile `t` of tile-row block `block` of `w`, four tiles per vector; `V` has `stride`
/// elements per channel (at least `w.tiles()`: the gradient puts several images side by side).
pub(crate) fn transform_inputs(
    b: &mut FunctionBuilder,
    pack: &PackSpec,
    w: Winograd,
    xp: Value,
    v: Value,
    stride: usize,
    block: Value,
) {
    let cn = pack.planes;
    let [rows, phases, row_len] = [pack.rows, pack.phases, pack.row_len];
    let line = phases * row_len; // elements per packed row
    let read = MemFlagsData::new().with_notrap().with_readonly();
    let write = MemFlagsData::new().with_notrap();
    let first_row = mul(b, block, 2 * w.tile_rows); // padded row of the block's first tile
    let (lo, c_hi, r_hi, tv_hi) =
        (iconst(b, 0), iconst(b, cn as i64), iconst(b, w.tile_rows as i64), iconst(b, (w.row_tiles / 4) as i64));
    for_loop(b, lo, c_hi, 1, &[], &mut |b, c, _| {
        let plane = mul(b, c, rows * line);
        let v_plane = mul(b, c, stride);
        for_loop(b, lo, r_hi, 1, &[], &mut |b, r, _| {
            let (row, v_row) = tile_row(b, [first_row, r], [plane, v_plane], line, w.row_tiles);
            for_loop(b, lo, tv_hi, 1, &[], &mut |b, tv, _| {
                let col = mul(b, tv, 4);
                let e = b.ins().iadd(row, col);
                let d_at = elem_addr(b, xp, e);
                // Column 2tx + j of the padded input is phase j % 2, position tx + j / 2.
                let d = |b: &mut FunctionBuilder, i: usize, j: usize| {
                    let offset = (i * line + (j % 2) * row_len + j / 2) as i32 * 4;
                    b.ins().load(types::F32X4, read, d_at, offset)
                };
                let e = b.ins().iadd(v_row, col);
                let v_at = elem_addr(b, v, e);
                // Row i of Bᵀ d combines two rows of d (d0 - d2, d1 + d2, d2 - d1, d1 - d3);
                // each is then transformed by B and stored. Loading rows again for each pair
                // keeps at most 12 vectors live (no spills).
                let store_row = |b: &mut FunctionBuilder, i: usize, row: [Value; 4]| {
                    for (j, value) in transform_b(b, row).into_iter().enumerate() {
                        let position = 4 * i + j;
                        b.ins().store(write, value, v_at, (position * cn * stride * 4) as i32);
                    }
                };
                let row_of = |b: &mut FunctionBuilder, i: usize| [0, 1, 2, 3].map(|j| d(b, i, j));
                let [d0, d2] = [row_of(b, 0), row_of(b, 2)];
                let t0 = [0, 1, 2, 3].map(|j| b.ins().fsub(d0[j], d2[j]));
                store_row(b, 0, t0);
                let [d1, d2] = [row_of(b, 1), row_of(b, 2)];
                let t1 = [0, 1, 2, 3].map(|j| b.ins().fadd(d1[j], d2[j]));
                let t2 = [0, 1, 2, 3].map(|j| b.ins().fsub(d2[j], d1[j]));
                store_row(b, 1, t1);
                store_row(b, 2, t2);
                let [d1, d3] = [row_of(b, 1), row_of(b, 3)];
                let t3 = [0, 1, 2, 3].map(|j| b.ins().fsub(d1[j], d3[j]));
                store_row(b, 3, t3);
                vec![]
            });
            vec![]
        });
        vec![]
    });
}

/// Where tile row `r` of a block whose first tile row starts at image row `first_row` is: the
/// element of its first image row (`plane + (first_row + 2 r) * line`) and of its first tile in a
/// transform buffer (`tiles + r * row_tiles`).
pub(crate) fn tile_row(
    b: &mut FunctionBuilder,
    [first_row, r]: [Value; 2],
    [plane, tiles]: [Value; 2],
    line: usize,
    row_tiles: usize,
) -> (Value, Value) {
    let twice = mul(b, r, 2);
    let row = b.ins().iadd(first_row, twice);
    let e = mul(b, row, line);
    let t = mul(b, r, row_tiles);
    (b.ins().iadd(plane, e), b.ins().iadd(tiles, t))
}

/// `G g` for one column `g` of a 3x3 filter: `[g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2]`.
fn transform_g(b: &mut FunctionBuilder, [g0, g1, g2]: [Value; 3]) -> [Value; 4] {
    let half = b.ins().f32const(0.5);
    let outer = b.ins().fadd(g0, g2);
    let plus = b.ins().fadd(outer, g1);
    let minus = b.ins().fsub(outer, g1);
    [g0, b.ins().fmul(plus, half), b.ins().fmul(minus, half), g2]
}

/// `Bᵀ d` for one column `d` of a 4x4 patch: `[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`.
fn transform_b(b: &mut FunctionBuilder, [d0, d1, d2, d3]: [Value; 4]) -> [Value; 4] {
    [b.ins().fsub(d0, d2), b.ins().fadd(d1, d2), b.ins().fsub(d2, d1), b.ins().fsub(d1, d3)]
}

/// `Aᵀ m` for one column `m` of a 4x4 product: `[m0 + m1 + m2, m1 - m2 - m3]`.
fn transform_a(b: &mut FunctionBuilder, [m0, m1, m2, m3]: [Value; 4]) -> [Value; 2] {
    let first = b.ins().fadd(m0, m1);
    let first = b.ins().fadd(first, m2);
    let second = b.ins().fsub(m1, m2);
    let second = b.ins().fsub(second, m3);
    [first, second]
}
