//! Winograd F(m x m, 3x3) convolutions: a 3x3 stride-1 convolution computed on m x m output
//! tiles with (m + 2)² multiplies per tile and channel pair instead of 9 m²: F(2x2, 3x3) does
//! 2.25x fewer, F(4x4, 3x3) 4x fewer.
//!
//! With `n = m + 2`, for output tile `(ty, tx)` the n x n input patch `d` (padded rows
//! `m ty..m ty + n`, columns `m tx..m tx + n`) is transformed to `V = Bᵀ d B`, each filter `g` to
//! `U = G g Gᵀ`, and the output tile is `Y = Aᵀ M A` with `M[ξ] = Σ_c U[ξ][c] V[ξ][c]` for each of
//! the n² positions `ξ`: n² small matrix products over the channels, done with the direct
//! convolution's register tile. The matrices are tables ([`Transform`]); every transform is
//! emitted from them ([`Factored`]: shared subexpressions once, zeros skipped, ±1 free).
//!
//! A kernel of its own transforms the weights ([`WinogradWeightsSpec`]); the convolution kernel
//! then, per thread, for each group (an image's block of tile rows) packs the image
//! (when new) with m width phases, so that the patches of 4 consecutive tiles are contiguous
//! vectors, transforms those patches, multiplies, and transforms the products back, applying the
//! epilogue and accumulating the batch statistics while the outputs are in registers. The
//! transformed data of one group stays in cache.
//!
//! Where one tile row is too narrow to fill a vector (an 8x8 output has 2 tiles of 4 per row),
//! the lanes go across images instead ([`Winograd::images`]): a group is a block of tile rows of 4
//! consecutive images packed lane by lane, each vector holds the same tile of the 4 images, and
//! the output transform's 4x4 transpose turns a tile's columns into 4 pixels of each image. The
//! transforms and products are the same code; only where the vectors are differs.

use crate::MulAdd;
use crate::codegen::{elem_addr, entry, for_loop, iconst, if_then, load_arg};
use crate::codegen::{f32_vector, mul, mul_add_emit};
use crate::conv::factored::Factored;
use crate::conv::pack::PackSpec;
use crate::conv::transpose::interleave;
use crate::conv::{ConvArgs, ConvSpec, EpilogueAt, WeightLayout, apply_epilogue, sum_and_squares};
use crate::expr::Width;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Which 3x3 stride-1 convolutions a compilation computes by Winograd's minimal filtering, in
/// increasing order of what they allow.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub enum WinogradTiles {
    /// None: every convolution is direct.
    Off,
    /// F(2x2, 3x3) wherever it applies (even output sizes, 8 or more input channels).
    F2,
    /// Also F(4x4, 3x3), with each vector's lanes in one image's tile row only (what
    /// [`F4`](Self::F4) does where a tile row fills a vector): to compare lanes across images
    /// with the F(2x2, 3x3) tiles they replace at narrow outputs.
    F4Rows,
    /// Also F(4x4, 3x3), where it multiplies least (output sizes a multiple of 4, with few tiles
    /// wasted padding rows to whole vectors) and the convolution has 8 or more output channels;
    /// across 4 images' lanes where a tile row cannot fill a vector and the batch is a multiple
    /// of 4. The default.
    #[default]
    F4,
}

/// The matrices of Winograd F(m x m, 3x3) (rows of `Bᵀ`, `G` and `Aᵀ`), with `n = m + 2`.
#[derive(Debug)]
pub struct Transform {
    /// Output tile size m.
    pub m: usize,
    /// `Bᵀ`, n x n: input patch to transform domain.
    pub bt: &'static [&'static [f32]],
    /// `G`, n x 3: filter to transform domain.
    pub g: &'static [&'static [f32]],
    /// `Aᵀ`, m x n: products back to the output tile.
    pub at: &'static [&'static [f32]],
}

/// F(2x2, 3x3), interpolation points 0, 1, -1 and infinity.
pub const F2: Transform = Transform {
    m: 2,
    bt: &[&[1.0, 0.0, -1.0, 0.0], &[0.0, 1.0, 1.0, 0.0], &[0.0, -1.0, 1.0, 0.0], &[0.0, 1.0, 0.0, -1.0]],
    g: &[&[1.0, 0.0, 0.0], &[0.5, 0.5, 0.5], &[0.5, -0.5, 0.5], &[0.0, 0.0, 1.0]],
    at: &[&[1.0, 1.0, 1.0, 0.0], &[0.0, 1.0, -1.0, -1.0]],
};

/// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
pub const F4: Transform = Transform {
    m: 4,
    bt: &[
        &[4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        &[0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        &[0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        &[0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        &[0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        &[0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ],
    g: &[
        &[1.0 / 4.0, 0.0, 0.0],
        &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        &[0.0, 0.0, 1.0],
    ],
    at: &[
        &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        &[0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
        &[0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
        &[0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
    ],
};

/// The tiling of a Winograd F(m x m, 3x3) convolution's output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Winograd {
    /// Output tile size m: 2 or 4.
    pub m: usize,
    /// Tile rows (m output rows each) per group.
    pub tile_rows: usize,
    /// Tiles per tile row, padded up to whole vectors of 4 when `images` is 1.
    pub row_tiles: usize,
    /// Images across each vector's lanes: 1 (a vector holds 4 consecutive tiles of one tile row)
    /// or 4 (a vector holds the same tile of 4 consecutive images; a group covers its tile rows
    /// in all 4).
    pub images: usize,
    /// Parts of the output channels a convolution's block of tile rows is split into, one group
    /// each (more than 1 when the blocks alone are too few to share among threads, as at batch 1;
    /// the weight gradient has groups of its own and takes 1).
    pub channel_parts: usize,
}

impl Winograd {
    /// The tiling of an output of `out_hw` with tiles of `m` (2 or 4: the sizes with a
    /// [`Transform`]) in vectors of one image's consecutive tiles, or `None` when its sizes are not
    /// multiples of `m`. A group covers the fewest whole tile rows that give at least 16 tiles.
    pub fn with_tile(m: usize, out_hw: [usize; 2]) -> Option<Self> {
        Self::tiled(m, out_hw, 1)
    }

    /// The tiling of an output of `out_hw` with tiles of `m` in vectors across 4 images (the same
    /// tile of each), or `None` when its sizes are not multiples of `m`. A group covers the
    /// fewest whole tile rows that give at least 16 tiles in the 4 images.
    pub fn across_images(m: usize, out_hw: [usize; 2]) -> Option<Self> {
        Self::tiled(m, out_hw, 4)
    }

    fn tiled(m: usize, out_hw: [usize; 2], images: usize) -> Option<Self> {
        let [h, w] = out_hw;
        if !matches!(m, 2 | 4) || h == 0 || w == 0 || !h.is_multiple_of(m) || !w.is_multiple_of(m) {
            return None;
        }
        let (th, tw) = (h / m, w / m);
        let row_tiles = if images == 1 { tw.div_ceil(4) * 4 } else { tw };
        let tiling = Winograd { m, tile_rows: th, row_tiles, images, channel_parts: 1 };
        Some(tiling.with_block_slots(out_hw, 16))
    }

    /// This tiling with blocks of the fewest whole tile rows of an image (or set of 4) that
    /// hold at least `slots` tiles (the whole image, when it holds fewer).
    pub fn with_block_slots(self, out_hw: [usize; 2], slots: usize) -> Self {
        let th = self.tiled_hw(out_hw)[0] / self.m;
        let tile_rows = (1..=th).find(|r| th.is_multiple_of(*r) && r * self.row_slots() >= slots).unwrap_or(th);
        Winograd { tile_rows, ..self }
    }

    /// The tiling of an output of `out_hw` that is not a multiple of `m` in tiles of the next
    /// multiple, whose outputs past `out_hw` are not stored (the forward convolution and its input
    /// gradient; see [`Winograd::for_convolution`]), in vectors of one image's tiles (when
    /// `images` is 1) or of the same tile of 4 images (when it is 4): a block is the whole image
    /// (or set), so that its last tile row is the only partial one. `None` when `out_hw` is a
    /// multiple of `m`.
    pub fn cropped(m: usize, out_hw: [usize; 2], images: usize) -> Option<Self> {
        if out_hw.iter().all(|d| d.is_multiple_of(m)) {
            return None;
        }
        let w = Self::tiled(m, out_hw.map(|d| d.div_ceil(m) * m), images)?;
        Some(Winograd { tile_rows: out_hw[0].div_ceil(m), ..w })
    }

    /// The tile sizes `tiles` allows.
    fn sizes(tiles: WinogradTiles) -> &'static [usize] {
        match tiles {
            WinogradTiles::Off => &[],
            WinogradTiles::F2 => &[2],
            WinogradTiles::F4Rows | WinogradTiles::F4 => &[2, 4],
        }
    }

    /// Multiplies per output pixel of `out_hw` (padding tiles and lanes counted), per pair of
    /// channels: 9 for a direct convolution.
    pub fn multiplies(&self, out_hw: [usize; 2]) -> f64 {
        let n = self.m + 2;
        let per_image = self.row_slots() / self.images;
        (n * n * out_hw[0].div_ceil(self.m) * per_image) as f64 / (out_hw[0] * out_hw[1]) as f64
    }

    /// The tiling `tiles` chooses for a batch of `batch` outputs of `out_hw`: of the tile sizes it
    /// allows, the one with the fewest multiplies per output (padding tiles counted), or `None`
    /// when none applies. Lanes go across images only where one tile row cannot fill a vector
    /// (fewer than 4 tiles wide) and the batch divides into fours: elsewhere one image's tiles
    /// waste few lanes, and its packed copy is 4 times smaller.
    pub fn for_output(out_hw: [usize; 2], tiles: WinogradTiles, batch: usize) -> Option<Self> {
        let across = Self::lanes_across_images(out_hw, tiles, batch).then(|| Self::across_images(4, out_hw)).flatten();
        let rows = Self::sizes(tiles).iter().filter_map(|&m| Self::with_tile(m, out_hw));
        rows.chain(across).min_by(|a, b| a.multiplies(out_hw).total_cmp(&b.multiplies(out_hw)))
    }

    /// Whether F(4x4, 3x3) tiles of an output of `out_hw` may take lanes across 4 images: `tiles`
    /// allows F(4x4), the batch divides into fours, and a row holds fewer than 4 tiles.
    fn lanes_across_images(out_hw: [usize; 2], tiles: WinogradTiles, batch: usize) -> bool {
        tiles == WinogradTiles::F4 && out_hw[1].div_ceil(4) < 4 && batch > 0 && batch.is_multiple_of(4)
    }

    /// [`Winograd::for_output`], or a [`Winograd::cropped`] tiling where that multiplies less
    /// (and at most 6 times per output, against 9 for the direct kernel): ResNet-50's 14x14
    /// stage by F(4x4, 3x3) tiles of 16x16 (2.9 against F(2x2)'s 4.6), its 7x7 stage by
    /// F(4x4, 3x3) tiles of 8x8 with lanes across 4 images (2.9 against F(2x2)'s 5.2), as
    /// [`Winograd::for_output`] takes lanes across images: where the tiles of a row cannot fill
    /// a vector and the batch divides into fours. (At 8x8 with 512 channels, batch 16, F(4x4)
    /// across images ran the forward and input gradient 1.6-1.7x faster than F(2x2) tiles.)
    pub fn for_convolution(out_hw: [usize; 2], tiles: WinogradTiles, batch: usize) -> Option<Self> {
        let exact = Self::for_output(out_hw, tiles, batch);
        let in_rows = Self::sizes(tiles).iter().filter_map(|&m| Self::cropped(m, out_hw, 1));
        let across = Self::lanes_across_images(out_hw, tiles, batch).then(|| Self::cropped(4, out_hw, 4)).flatten();
        let cropped = in_rows.chain(across).filter(|w| w.multiplies(out_hw) <= 6.0);
        exact.into_iter().chain(cropped).min_by(|a, b| a.multiplies(out_hw).total_cmp(&b.multiplies(out_hw)))
    }

    /// What the tiles of an output of `out_hw` cover: its sizes rounded up to multiples of m
    /// (larger for a cropped tiling).
    pub fn tiled_hw(&self, out_hw: [usize; 2]) -> [usize; 2] {
        out_hw.map(|d| d.div_ceil(self.m) * self.m)
    }

    /// Lane slots per group of each transform position: its tiles (padding included) times the
    /// images across the lanes. Transformed inputs and products hold this many values per
    /// channel and position, 4 per vector.
    pub fn slots(&self) -> usize {
        self.tile_rows * self.row_slots()
    }

    /// Lane slots per tile row.
    pub(crate) fn row_slots(&self) -> usize {
        self.row_tiles * self.images
    }

    /// The transform's matrices.
    pub fn transform(&self) -> &'static Transform {
        table(self.m)
    }

    /// Input patch size n = m + 2.
    pub fn n(&self) -> usize {
        self.m + 2
    }

    /// Transform positions per tile, n².
    pub fn positions(&self) -> usize {
        self.n() * self.n()
    }

    /// Elements between consecutive positions of a transform buffer that holds `len` elements per
    /// position: `len` rounded up to an odd number of 64-byte lines. A transform writes (or
    /// reads) all n² positions of a tile at once; at a multiple of 4 KB apart, as `len` often
    /// is, those streams all fell into one set of the L1 cache (8 ways for F(4x4)'s 36).
    pub fn position_stride(len: usize) -> usize {
        (len.div_ceil(16) | 1) * 16
    }

    /// How this tiling packs each image (or 4, across lanes) of a convolution input with `planes`
    /// channels of `in_hw` and `pad_before` zero rows and columns, for an output of `out_hw`: m
    /// width phases so that 4 consecutive tiles' patches are contiguous, or one phase with the
    /// images in the lanes.
    pub fn pack(&self, planes: usize, in_hw: [usize; 2], pad_before: [isize; 2], out_hw: [usize; 2]) -> PackSpec {
        let (phases, row_len) = if self.images == 1 { (self.m, self.row_tiles + 1) } else { (1, out_hw[1] + 2) };
        let rows = out_hw[0] + 2;
        PackSpec { planes, in_hw, dilation: [1, 1], pad_before, rows, phases, row_len, images: self.images, step: 1 }
    }

    /// Byte offset, from a tile row's pixel `p`, of the vector `h` of pixels that a vector of
    /// slots turns into (the output transform's stores, the gradient's dy loads): the next 4
    /// pixels of the row, or with lanes across images, the same 4 pixels of image `h` (images
    /// `image_len` elements apart).
    pub(crate) fn pixel_vector(&self, h: usize, image_len: usize) -> i32 {
        (if self.images == 1 { 16 * h } else { 4 * h * image_len }) as i32
    }

    /// The kernel name's suffix for this tiling: `winograd` (F(2x2, 3x3)), `winograd4`, or
    /// `winograd4_images` (lanes across images).
    pub fn label(&self) -> &'static str {
        match (self.m, self.images) {
            (2, _) => "winograd",
            (_, 1) => "winograd4",
            _ => "winograd4_images",
        }
    }

    /// Pixels of a tile row per vector of slots: 4 tiles of m, or one tile (of 4 images).
    pub(crate) fn vector_pixels(&self) -> usize {
        4 * self.m / self.images
    }
}

/// Input channels per group of [`WinogradWeightsSpec`]. Groups of output channels instead (each
/// a block of 4 over every input channel) stored 16 bytes at a time into every row of each of
/// U's positions, so every group swept all of U's pages: ResNet-50's F(4x4, 3x3) transforms at
/// 7x7 (37.7 MB of U) ran at 7-9 GB/s.
const C_PER_GROUP: usize = 8;

/// The weights of a Winograd F(m x m, 3x3) convolution transformed: `U[ξ][c][k] = (G g Gᵀ)[ξ]`
/// for every filter `g` (output channel `k`, input channel `c`, read through the weight layout),
/// into the buffer the convolution kernel reads as its weights. A kernel of its own, so that it
/// runs once per run rather than once per thread, and not at all while the weights are not fed
/// again (its output is kept between runs: see [`crate::CompiledGraph::run`]).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct WinogradWeightsSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Where the weights are.
    pub weights: WeightLayout,
    /// Output tile size m: 2 or 4.
    pub m: usize,
}

impl WinogradWeightsSpec {
    /// Groups: one per `C_PER_GROUP` input channels (the last may hold fewer).
    pub fn groups(&self) -> usize {
        self.in_channels.div_ceil(C_PER_GROUP)
    }

    /// f32 elements of the transformed weights: `(m + 2)²` positions of every filter's value,
    /// [`Winograd::position_stride`] apart.
    pub fn len(&self) -> usize {
        (self.m + 2) * (self.m + 2) * Winograd::position_stride(self.in_channels * self.out_channels)
    }

    /// True when there are no weights.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Kernel body: args are the weights and U. For each of its input channels, a group
    /// transforms the filters of every block of 4 consecutive output channels at once, one per
    /// lane (`U[ξ][c][k..k + 4]` is a vector), so that its stores run along each position's
    /// row of U; a last block of fewer channels, one filter at a time.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end) = entry(b);
        let [w, u] = [0, 1].map(|k| load_arg(b, ptr, args, k));
        let (cn, kn) = (self.in_channels, self.out_channels);
        let (wl, n, g_matrix) = (self.weights, self.m + 2, Factored::new(table(self.m).g));
        let u_position = Winograd::position_stride(cn * kn);
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        // Filter (k0 + lane, c) from `g_at` (filter (k0, c)); U's element (c, k0) at `u_at`.
        let tap = |b: &mut FunctionBuilder, g_at: Value, lane: usize, r: isize, s: isize| {
            b.ins().load(types::F32, read, g_at, (lane as isize * wl.o + r * wl.r + s * wl.s) as i32 * 4)
        };
        let transform = |b: &mut FunctionBuilder, width: Width, g: &[Vec<Value>], u_at: Value| {
            // G g column by column (3 columns of n), then each row of it times Gᵀ.
            let gg: Vec<Vec<Value>> =
                (0..3).map(|s| g_matrix.emit(b, mul_add, width.ty(), &mut |_, r| g[r][s])).collect();
            let rows: Vec<Vec<Value>> = (0..n).map(|i| gg.iter().map(|column| column[i]).collect()).collect();
            for (i, row) in rows.iter().enumerate() {
                g_matrix.emit_each(b, mul_add, width.ty(), &mut |_, s| row[s], &mut |b, j, value| {
                    b.ins().store(write, value, u_at, ((n * i + j) * u_position * 4) as i32);
                });
            }
        };
        // Filter (k0, c) and U's element (c, k0).
        let at = |b: &mut FunctionBuilder, k0: Value, c: Value| {
            let g_at = {
                let ko = b.ins().imul_imm_s(k0, wl.o as i64);
                let ci = b.ins().imul_imm_s(c, wl.i as i64);
                let e = b.ins().iadd(ko, ci);
                let e = b.ins().iadd_imm_s(e, wl.base as i64);
                elem_addr(b, w, e)
            };
            let e = b.ins().imul_imm_s(c, kn as i64);
            let e = b.ins().iadd(e, k0);
            (g_at, elem_addr(b, u, e))
        };
        let (lo, full) = (iconst(b, 0), iconst(b, (kn / 4) as i64));
        let c_lo = b.ins().imul_imm_s(begin, C_PER_GROUP as i64);
        let c_hi = {
            let e = b.ins().imul_imm_s(end, C_PER_GROUP as i64);
            let channels = iconst(b, cn as i64);
            b.ins().umin(e, channels)
        };
        for_loop(b, c_lo, c_hi, 1, &[], &mut |b, c, _| {
            // Every block of 4 output channels of this input channel: their stores are
            // consecutive in each position of U.
            for_loop(b, lo, full, 1, &[], &mut |b, block, _| {
                let k0 = mul(b, block, 4);
                let (g_at, u_at) = at(b, k0, c);
                let zero = b.ins().f32const(0.0);
                let zero = b.ins().splat(types::F32X4, zero);
                let g: Vec<Vec<Value>> = (0..3)
                    .map(|r| {
                        (0..3)
                            .map(|s| {
                                (0..4).fold(zero, |v, lane| {
                                    let x = tap(b, g_at, lane, r, s);
                                    b.ins().insertlane(v, x, lane as u8)
                                })
                            })
                            .collect()
                    })
                    .collect();
                transform(b, Width::Vector, &g, u_at);
                vec![]
            });
            // A last block of fewer channels, one filter at a time.
            if kn % 4 != 0 {
                let k0 = iconst(b, (kn / 4 * 4) as i64);
                let (g_at, u_at) = at(b, k0, c);
                for lane in 0..kn % 4 {
                    let g: Vec<Vec<Value>> =
                        (0..3).map(|r| (0..3).map(|s| tap(b, g_at, lane, r, s)).collect()).collect();
                    let u_lane = b.ins().iadd_imm_s(u_at, 4 * lane as i64);
                    transform(b, Width::Scalar, &g, u_lane);
                }
            }
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }
}

/// Offsets (f32 elements, multiples of 4) of a Winograd kernel's areas in its per-thread
/// scratch: the packed image, the transformed inputs `V[ξ][c][t]` and the products `M[ξ][k][t]`,
/// and the total; and the elements between positions of `V` and of `M`.
struct Areas {
    v: usize,
    m: usize,
    len: usize,
    v_position: usize,
    m_position: usize,
}

impl ConvSpec {
    fn tiling(&self) -> Winograd {
        self.winograd.expect("a Winograd convolution")
    }

    fn areas(&self) -> Areas {
        let w = self.tiling();
        let (c, k, positions) = (self.shape.in_channels, self.shape.out_channels, w.positions());
        let (v_position, m_position) =
            (Winograd::position_stride(c * w.slots()), Winograd::position_stride(k * w.slots()));
        let v = self.pack.len().div_ceil(4) * 4;
        let m = v + positions * v_position;
        Areas { v, m, len: m + positions * m_position, v_position, m_position }
    }

    /// Blocks of tile rows per image (or per set of 4 images, with lanes across images) of a
    /// Winograd convolution; each is `channel_parts` groups.
    pub(crate) fn winograd_blocks_per_set(&self) -> usize {
        let tiling = self.tiling();
        tiling.tiled_hw(self.shape.out_hw)[0] / tiling.m / tiling.tile_rows
    }

    /// f32 elements of one thread's scratch for a Winograd convolution.
    pub(crate) fn winograd_scratch_len(&self) -> usize {
        self.areas().len
    }

    /// Emits groups `begin..end` of a Winograd convolution, whose weights argument holds the
    /// transformed weights `U[ξ][c][k]` ([`WinogradWeightsSpec`]).
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
        let (u, v, m) = (a.w, at(b, areas.v), at(b, areas.m));
        let tiling = self.tiling();
        let parts = tiling.channel_parts;
        let part_len = self.shape.out_channels / parts; // output channels per part
        let none = iconst(b, -1);
        // Carried: the image packed, and the block (of every set) whose inputs V holds.
        for_loop(b, begin, end, 1, &[none, none], &mut |b, g, done| {
            // The set's first image, the block of tile rows, the part of the output channels.
            let row = b.ins().udiv_imm_u(g, parts as i64);
            let part = b.ins().urem_imm_u(g, parts as i64);
            let [n, block] = self.block_at(b, row);
            let new_image = b.ins().icmp(IntCC::NotEqual, n, done[0]);
            if_then(b, new_image, &mut |b| {
                let first_plane = mul(b, n, self.shape.in_channels);
                self.pack.emit(b, a.x, a.packed, first_plane);
            });
            let new_block = b.ins().icmp(IntCC::NotEqual, row, done[1]);
            if_then(b, new_block, &mut |b| {
                let strides = [tiling.slots(), areas.v_position];
                InputTransform { pack: &self.pack, tiling, strides, lanes: self.lanes }
                    .emit(b, mul_add, a.packed, v, block);
            });
            let k0 = mul(b, part, part_len);
            let k_end = b.ins().iadd_imm_s(k0, part_len as i64);
            self.products(b, mul_add, u, v, m, [k0, k_end]);
            self.output_transform(b, mul_add, a, m, row, [k0, k_end]);
            vec![n, row]
        });
    }

    /// The first image and the block of tile rows of block `row` of all the sets' blocks (a
    /// set is one image, or 4 with lanes across images).
    fn block_at(&self, b: &mut FunctionBuilder, row: Value) -> [Value; 2] {
        let per_set = self.winograd_blocks_per_set() as i64;
        let set = b.ins().udiv_imm_u(row, per_set);
        [mul(b, set, self.tiling().images), b.ins().urem_imm_u(row, per_set)]
    }

    /// `M[ξ][k][t] = Σ_c U[ξ][c][k] V[ξ][c][t]` for the output channels `k0..k_end` (whole
    /// register tiles): per position, register tiles of `kb` output channels by `vb` vectors of
    /// 4 slots (with 8 lanes, each pair of them in one f32x8 accumulator).
    fn products(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        u: Value,
        v: Value,
        m: Value,
        [k0, k_end]: [Value; 2],
    ) {
        let (cn, kn, tiles) = (self.shape.in_channels, self.shape.out_channels, self.tiling().slots());
        let (kb, vb, positions) = (self.kb, self.vb, self.tiling().positions());
        // Slots per accumulator, its type, and accumulators per output channel.
        let (lanes, ty) = (self.lanes, f32_vector(self.lanes));
        let n = 4 * vb / lanes;
        let Areas { v_position, m_position, .. } = self.areas();
        let u_position = Winograd::position_stride(cn * kn);
        let unroll = (1..=4).rev().find(|d| cn.is_multiple_of(*d)).unwrap_or(1);
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let lo = iconst(b, 0);
        let hi = [positions, tiles / (4 * vb), cn].map(|n| iconst(b, n as i64));
        for_loop(b, lo, hi[0], 1, &[], &mut |b, xi, _| {
            let u_xi = mul(b, xi, u_position);
            let v_xi = mul(b, xi, v_position);
            let m_xi = mul(b, xi, m_position);
            for_loop(b, k0, k_end, kb as i64, &[], &mut |b, k0, _| {
                let u0 = b.ins().iadd(u_xi, k0);
                for_loop(b, lo, hi[1], 1, &[], &mut |b, tb, _| {
                    let t0 = mul(b, tb, 4 * vb);
                    let v0 = b.ins().iadd(v_xi, t0);
                    let zero = b.ins().f32const(0.0);
                    let zero = b.ins().splat(ty, zero);
                    let (_, acc) = for_loop(b, lo, hi[2], unroll as i64, &vec![zero; kb * n], &mut |b, c, acc| {
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
                            let xs: Vec<Value> = (0..n)
                                .map(|j| b.ins().load(ty, read, v_c, ((step * tiles + lanes * j) * 4) as i32))
                                .collect();
                            for k in 0..kb {
                                // One broadcast per weight, held for the tile's vectors: the
                                // multiply-add adds into the accumulator's register
                                // (vfmadd231ps), leaving the weight as it is.
                                let wk = b.ins().load(types::F32, read, u_c, ((step * kn + k) * 4) as i32);
                                let wv = b.ins().splat(ty, wk);
                                for (j, &x) in xs.iter().enumerate() {
                                    acc[k * n + j] = mul_add_emit(b, mul_add, wv, x, acc[k * n + j]);
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
                        for j in 0..n {
                            b.ins().store(write, acc[k * n + j], m_at, ((k * tiles + lanes * j) * 4) as i32);
                        }
                    }
                    vec![]
                });
                vec![]
            });
            vec![]
        });
    }

    /// `Y = Aᵀ M A` for output channels `k0..k_end` and every tile of block `row` of all the
    /// sets' blocks (see `block_at`): m output rows of 4m pixels per vector of 4 tiles,
    /// interleaved from the tiles' columns, through the epilogue into the output, with each
    /// channel's sum and sum of squares written to the block's statistics partials (when
    /// computing statistics).
    fn output_transform(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        m: Value,
        row: Value,
        [k0, k_end]: [Value; 2],
    ) {
        let [n, block] = self.block_at(b, row);
        // This block's statistics partials: 2 f32 per output channel.
        let partials = a.stats.map(|s| {
            let offset = b.ins().imul_imm_s(row, (self.shape.out_channels * 2 * 4) as i64);
            b.ins().iadd(s[0], offset)
        });
        let w = self.tiling();
        let kn = self.shape.out_channels;
        let [oh, ow] = self.shape.out_hw;
        // Whole vectors of slots per tile row, and the pixels of a last, partial one (a cropped
        // tiling's last tiles, or a row's last vector of fewer than 4 tiles).
        let full_vectors = ow / w.vector_pixels();
        let last_pixels = ow % w.vector_pixels();
        // The rows of the last tile row of a cropped tiling (its block is the whole image).
        let last_rows = oh % w.m;
        debug_assert!(last_rows == 0 || w.tile_rows == oh.div_ceil(w.m), "a cropped block: {w:?}");
        let write = MemFlagsData::new().with_notrap();
        let lo = iconst(b, 0);
        let whole_rows = w.tile_rows - usize::from(last_rows > 0);
        let (r_hi, tv_hi) = (iconst(b, whole_rows as i64), iconst(b, full_vectors as i64));
        let first_row = mul(b, block, w.m * w.tile_rows);
        for_loop(b, k0, k_end, 1, &[], &mut |b, k, _| {
            let channel: Vec<Value> = a.operands.iter().map(|&o| elem_addr(b, o, k)).collect();
            let table_at = a.table.map(|t| elem_addr(b, t, k));
            let plane = {
                let nk = mul(b, n, kn);
                let nk = b.ins().iadd(nk, k);
                mul(b, nk, oh * ow)
            };
            let m_k = mul(b, k, w.slots());
            let zero = b.ins().f32const(0.0);
            let zeros = b.ins().splat(types::F32X4, zero);
            let stats0 = [zeros, zeros, zero, zero];
            // Tile row `r`, `rows` of its m output rows stored.
            let tile_row_out = |b: &mut FunctionBuilder, r: Value, rows: usize, s: &[Value]| {
                let (y_row, m_row) = tile_row(b, w, [first_row, r], [plane, m_k], ow);
                let segment = |b: &mut FunctionBuilder, tv: Value, pixels: usize, s: [Value; 4]| {
                    let t = mul(b, tv, 4);
                    let e = b.ins().iadd(m_row, t);
                    let m_at = elem_addr(b, m, e);
                    let px = mul(b, tv, w.vector_pixels());
                    let y_at = b.ins().iadd(y_row, px);
                    let segment = Segment { m_at, y_at, rows, pixels };
                    self.output_segment(b, mul_add, a, (&channel, table_at), segment, s)
                };
                let (_, s) = for_loop(b, lo, tv_hi, 1, s, &mut |b, tv, s| {
                    segment(b, tv, 4 * w.m, [s[0], s[1], s[2], s[3]]).to_vec()
                });
                let s = [s[0], s[1], s[2], s[3]];
                let s = if last_pixels > 0 { segment(b, tv_hi, last_pixels, s) } else { s };
                s.to_vec()
            };
            let (_, stats) = for_loop(b, lo, r_hi, 1, &stats0, &mut |b, r, s| tile_row_out(b, r, w.m, s));
            let stats = if last_rows > 0 { tile_row_out(b, r_hi, last_rows, &stats) } else { stats };
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

    /// One vector of slots to its output pixels (`segment`), through the epilogue with output
    /// channel `k`'s operands and table, updating the statistics `[vector sum, vector squares,
    /// scalar sum, scalar squares]`.
    fn output_segment(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        a: &ConvArgs,
        (channel, table_at): (&[Value], Option<Value>),
        segment: Segment,
        mut stats: [Value; 4],
    ) -> [Value; 4] {
        let Segment { m_at, y_at, rows, pixels: valid } = segment;
        let w = self.tiling();
        let (at, n) = (Factored::new(w.transform().at), w.n());
        let (kn, [oh, ow]) = (self.shape.out_channels, self.shape.out_hw);
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let stride = self.areas().m_position * 4; // bytes between positions
        let with_stats = a.stats.is_some();
        // Output row `row` is row `row` of Aᵀ M (n values) times A. The rows of one group of Aᵀ
        // (computed together: see `Factored`) are computed column by column from the rows of M
        // they read, loaded again for each group, which keeps registers free for the epilogue.
        for g in 0..at.groups.len() {
            let z: Vec<Vec<Value>> = (0..n)
                .map(|j| {
                    at.emit_group(b, mul_add, types::F32X4, g, &mut |b, i| {
                        b.ins().load(types::F32X4, read, m_at, ((n * i + j) * stride) as i32)
                    })
                })
                .collect();
            for (k, &row) in at.groups[g].rows.iter().enumerate().filter(|(_, row)| **row < rows) {
                let columns = at.emit(b, mul_add, types::F32X4, &mut |_, j| z[j][k]);
                // Column c of the slots as one vector each, interleaved: vector h holds the row's
                // pixels 4h..4h + 4 (of 4 tiles), or with lanes across images, image h's 4 pixels.
                let pixels = interleave(b, &columns);
                let e = b.ins().iadd_imm_s(y_at, (row * ow) as i64);
                let y_base = elem_addr(b, a.y, e);
                let full: Vec<Value> = a.operands.iter().map(|&o| elem_addr(b, o, e)).collect();
                for (h, &v) in pixels.iter().enumerate() {
                    // The pixels of vector h inside the output: of the row's next 4, or of one
                    // tile of 4 in image h.
                    let lanes = if w.images == 1 { valid.saturating_sub(4 * h).min(4) } else { valid.min(4) };
                    let offset = w.pixel_vector(h, kn * oh * ow);
                    if lanes == 4 {
                        let at = EpilogueAt { full: &full, full_offset: offset, channel, channel_offset: 0 };
                        let parts = self.channel_values(b, table_at, 0, Width::Vector);
                        let v = apply_epilogue(b, self.epilogue.as_ref(), mul_add, &at, &parts, v, Width::Vector);
                        b.ins().store(write, v, y_base, offset);
                        if with_stats {
                            let [s, q] = sum_and_squares(b, mul_add, Some([stats[0], stats[1]]), v);
                            (stats[0], stats[1]) = (s, q);
                        }
                    } else {
                        for lane in 0..lanes {
                            let x = b.ins().extractlane(v, lane as u8);
                            let offset = offset + 4 * lane as i32;
                            let at = EpilogueAt { full: &full, full_offset: offset, channel, channel_offset: 0 };
                            let parts = self.channel_values(b, table_at, 0, Width::Scalar);
                            let x = apply_epilogue(b, self.epilogue.as_ref(), mul_add, &at, &parts, x, Width::Scalar);
                            b.ins().store(write, x, y_base, offset);
                            if with_stats {
                                let [s, q] = sum_and_squares(b, mul_add, Some([stats[2], stats[3]]), x);
                                (stats[2], stats[3]) = (s, q);
                            }
                        }
                    }
                }
            }
        }
        stats
    }
}

/// The matrices of F(m x m, 3x3).
fn table(m: usize) -> &'static Transform {
    match m {
        2 => &F2,
        4 => &F4,
        m => unreachable!("no Winograd F({m}x{m}, 3x3) table: tilings come from `with_tile`"),
    }
}

/// The input transform `V[ξ][c][t] = (Bᵀ d B)[ξ]` of tiling `tiling` over the channels of
/// images packed as `pack`: `V` has `strides[0]` elements per channel (at least
/// `tiling.slots()`: the gradient puts several images side by side) and `strides[1]` per position
/// ([`Winograd::position_stride`]). Its vectors hold four tiles, or eight where `lanes` allows 8
/// and a tile row has whole vectors of 8 tiles (CIFAR's 32x32 stage: its 16-channel convolutions
/// ran 8-13% faster in ResNet-20's step).
pub(crate) struct InputTransform<'a> {
    pub pack: &'a PackSpec,
    pub tiling: Winograd,
    pub strides: [usize; 2],
    pub lanes: usize,
}

impl InputTransform<'_> {
    /// Transforms each channel of packed image `xp` (m width phases, or 4 images in the lanes)
    /// for each slot of tile-row block `block`, into `v`.
    pub(crate) fn emit(&self, b: &mut FunctionBuilder, mul_add: MulAdd, xp: Value, v: Value, block: Value) {
        let InputTransform { pack, tiling: w, strides: [stride, position_stride], lanes } = *self;
        let cn = pack.planes;
        // Vectors of up to `lanes` consecutive tiles of a row (in the packed row of each width
        // phase, they are consecutive values).
        let lanes = match w.images {
            1 => [8, 4].into_iter().find(|&l| l <= lanes && w.row_slots().is_multiple_of(l)).unwrap_or(4),
            _ => 4,
        };
        let ty = f32_vector(lanes);
        debug_assert_eq!(
            (pack.images, pack.phases),
            (w.images, if w.images == 1 { w.m } else { 1 }),
            "packed as `w.pack`"
        );
        let (bt, n) = (Factored::new(w.transform().bt), w.n());
        let (rows, line) = (pack.rows, pack.line()); // packed rows, elements per packed row
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let first_row = mul(b, block, w.m * w.tile_rows); // padded row of the block's first tile
        let (lo, c_hi, r_hi, tv_hi) = (
            iconst(b, 0),
            iconst(b, cn as i64),
            iconst(b, w.tile_rows as i64),
            iconst(b, (w.row_slots() / lanes) as i64),
        );
        for_loop(b, lo, c_hi, 1, &[], &mut |b, c, _| {
            let plane = mul(b, c, rows * line);
            let v_plane = mul(b, c, stride);
            for_loop(b, lo, r_hi, 1, &[], &mut |b, r, _| {
                let (row, v_row) = tile_row(b, w, [first_row, r], [plane, v_plane], line);
                for_loop(b, lo, tv_hi, 1, &[], &mut |b, tv, _| {
                    let col = mul(b, tv, pack.column(w.vector_pixels() * lanes / 4));
                    let e = b.ins().iadd(row, col);
                    let d_at = elem_addr(b, xp, e);
                    let slot = mul(b, tv, lanes);
                    let e = b.ins().iadd(v_row, slot);
                    let v_at = elem_addr(b, v, e);
                    // The rows of Bᵀ d of one group of Bᵀ (rows computed together: see
                    // `Factored`), column by column from the rows of d they read (column m tx + j of
                    // the padded input is phase j % m, position tx + j / m, or with 4 images in the
                    // lanes, column m tx + j); then each row times B, stored. Loading d's rows again
                    // for each group keeps few vectors live.
                    for g in 0..bt.groups.len() {
                        let columns: Vec<Vec<Value>> = (0..n)
                            .map(|j| {
                                bt.emit_group(b, mul_add, ty, g, &mut |b, r| {
                                    let offset = (r * line + pack.column(j)) as i32 * 4;
                                    b.ins().load(ty, read, d_at, offset)
                                })
                            })
                            .collect();
                        for (k, &i) in bt.groups[g].rows.iter().enumerate() {
                            bt.emit_each(b, mul_add, ty, &mut |_, s| columns[s][k], &mut |b, j, value| {
                                let position = n * i + j;
                                b.ins().store(write, value, v_at, (position * position_stride * 4) as i32);
                            });
                        }
                    }
                    vec![]
                });
                vec![]
            });
            vec![]
        });
    }
}

/// One vector of a Winograd output's slots: its products at `m_at`, to `rows` x `pixels` output
/// pixels from element `y_at` of the output (`rows` of the tiles' m, each from `y_at` on; with
/// lanes across images, in each of the 4 images).
#[derive(Clone, Copy)]
struct Segment {
    m_at: Value,
    y_at: Value,
    rows: usize,
    pixels: usize,
}

/// Where tile row `r` of a block whose first tile row starts at image row `first_row` is: the
/// element of its first image row (`plane + (first_row + m r) * line`) and of its first slot in a
/// transform buffer (`tiles + r * row_slots`).
pub(crate) fn tile_row(
    b: &mut FunctionBuilder,
    w: Winograd,
    [first_row, r]: [Value; 2],
    [plane, tiles]: [Value; 2],
    line: usize,
) -> (Value, Value) {
    let rows = mul(b, r, w.m);
    let row = b.ins().iadd(first_row, rows);
    let e = mul(b, row, line);
    let t = mul(b, r, w.row_slots());
    (b.ins().iadd(plane, e), b.ins().iadd(tiles, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Aᵀ [(G g) ⊙ (Bᵀ d)]` is the valid correlation of `d` (n values) with `g` (3), in f64.
    fn check(t: &Transform) {
        let n = t.m + 2;
        let apply = |rows: &[&[f32]], x: &[f64]| -> Vec<f64> {
            rows.iter().map(|row| row.iter().zip(x).map(|(&c, &v)| c as f64 * v).sum()).collect()
        };
        for seed in 0..20u64 {
            let value = |i: u64| ((seed * 31 + i * 17) % 23) as f64 / 7.0 - 1.5;
            let d: Vec<f64> = (0..n as u64).map(value).collect();
            let g: Vec<f64> = (0..3u64).map(|i| value(i + 100)).collect();
            let product: Vec<f64> = apply(t.g, &g).iter().zip(apply(t.bt, &d)).map(|(u, v)| u * v).collect();
            let y = apply(t.at, &product);
            for (i, &y) in y.iter().enumerate() {
                let want: f64 = (0..3).map(|r| g[r] * d[i + r]).sum();
                assert!((y - want).abs() < 1e-6, "F({0}, 3) output {i}: {y} != {want}", t.m);
            }
        }
    }

    #[test]
    fn transforms_compute_the_correlation() {
        for t in [&F2, &F4] {
            assert_eq!((t.bt.len(), t.g.len(), t.at.len()), (t.m + 2, t.m + 2, t.m));
            check(t);
        }
    }

    #[test]
    fn tile_size_is_the_one_that_multiplies_least() {
        let m = |hw, tiles, batch| Winograd::for_output(hw, tiles, batch).map(|w| (w.m, w.images));
        assert_eq!(m([32, 32], WinogradTiles::F4, 128), Some((4, 1)));
        assert_eq!(m([16, 16], WinogradTiles::F4, 128), Some((4, 1)));
        // 8 wide: 2 tiles of 4 fill half a vector, the same tile of 4 images fills it; without
        // 4 images (or lanes across them), 4 tiles of 2 fill it.
        assert_eq!(m([8, 8], WinogradTiles::F4, 128), Some((4, 4)));
        assert_eq!(m([8, 8], WinogradTiles::F4, 6), Some((2, 1)));
        assert_eq!(m([8, 8], WinogradTiles::F4Rows, 128), Some((2, 1)));
        // 56 wide: 14 tiles of 4 waste 2 lanes in 16, and stay in one image's rows.
        assert_eq!(m([56, 56], WinogradTiles::F4, 128), Some((4, 1)));
        assert_eq!(m([14, 14], WinogradTiles::F4, 128), Some((2, 1)));
        assert_eq!(m([32, 32], WinogradTiles::F2, 128), Some((2, 1)));
        assert_eq!(m([32, 32], WinogradTiles::Off, 128), None);
        assert_eq!(m([7, 7], WinogradTiles::F4, 128), None);
        assert_eq!(Winograd::with_tile(3, [9, 9]), None);
        // Cropped tiles (an output not a multiple of 4): 7x7 by F(4x4) across 4 images where the
        // batch allows (by F(2x2) in one image's rows otherwise), 14x14 by F(4x4) in rows, 5x5
        // across images only (F(2x2) in rows multiplies 7.7 times per output, more than 6).
        let c = |hw, batch| Winograd::for_convolution(hw, WinogradTiles::F4, batch).map(|w| (w.m, w.images));
        assert_eq!(c([7, 7], 16), Some((4, 4)));
        assert_eq!(c([7, 7], 6), Some((2, 1)));
        assert_eq!(c([14, 14], 16), Some((4, 1)));
        assert_eq!(c([5, 5], 8), Some((4, 4)));
        assert_eq!(c([5, 5], 2), None);
        let cropped = Winograd::for_convolution([7, 7], WinogradTiles::F4, 16).unwrap();
        assert_eq!((cropped.tile_rows, cropped.row_tiles, cropped.slots()), (2, 2, 16));
        assert_eq!(Winograd::for_convolution([7, 7], WinogradTiles::F2, 16).map(|w| (w.m, w.images)), Some((2, 1)));
        // A group: at least 16 slots, in whole tile rows that divide the image.
        let w = Winograd::for_output([8, 8], WinogradTiles::F4, 128).unwrap();
        assert_eq!((w.tile_rows, w.row_tiles, w.slots()), (2, 2, 16));
    }

    #[test]
    fn positions_fall_into_distinct_cache_sets() {
        // An L1 set is a 64-byte line's address modulo 4 KB (64 sets): the 36 positions of
        // F(4x4) must not share one, whatever the elements per position (channels x slots).
        for len in (1..=4096).chain([16 * 64, 32 * 64, 64 * 64, 128 * 64, 256 * 256]) {
            let stride = Winograd::position_stride(len);
            assert!(stride >= len && stride < len + 32 && stride.is_multiple_of(16), "{len} -> {stride}");
            let sets: std::collections::HashSet<usize> = (0..36).map(|p| p * stride * 4 / 64 % 64).collect();
            assert_eq!(sets.len(), 36, "{len} elements per position -> stride {stride}");
        }
    }
}
