//! The weight gradient of a 3x3 stride-1 convolution by Winograd F(m x m, 3x3): with the forward
//! pass `y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` per tile, the gradient of one filter is
//! `dg = Gᵀ [Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B)] G`: per position `ξ` of the n x n transform, a
//! product `S[ξ][k][c] = Σ_t DY[ξ][k][t] V[ξ][c][t]` over every tile of every image, 2.25x
//! (F(2x2, 3x3)) or 4x (F(4x4, 3x3)) fewer multiply-adds than the direct gradient. The
//! transforms are emitted from the tables of [`crate::conv::winograd::Transform`].
//!
//! Groups are fixed chunks of images (their number does not depend on the thread count; with lanes
//! across images, chunks of sets of 4). A group sums its images' products into its own partials;
//! the thread that finishes the last group (an atomic count, as for the batch statistics) adds the
//! groups' partials in order and transforms the sums back into `dw[k][c][r][s]`, so the result
//! does not depend on the thread count.

use crate::MulAdd;
use crate::codegen::shuffle32;
use crate::codegen::{elem_addr, entry_with_thread, for_loop, iconst, if_then, load_arg, thread_share};
use crate::codegen::{f32_vector, mul, mul_add_emit};
use crate::conv::factored::Factored;
use crate::conv::pack::PackSpec;
use crate::conv::transpose::deinterleave;
use crate::conv::winograd::{InputTransform, Winograd, WinogradTiles, tile_row};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AtomicRmwOp, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// Bytes of one chunk's partials from which a gradient may split its output channels instead of
/// its images (see [`WinogradGradSpec::new`]).
const LARGE_PARTIALS: usize = 1 << 20;

/// Bytes of one chunk's partials from which a gradient takes 2 chunks instead of 8 (see
/// [`WinogradGradSpec::blocking`]): 8 chunks' partials then outgrow the L2 cache.
const CHUNKED_PARTIALS: usize = 1 << 19;

/// Bytes of every image's transformed x (`V` of the whole batch, in each thread's scratch) up to
/// which a gradient with large partials splits its output channels instead of its images: each
/// part reads all of it again. ResNet-50's 28x28 stage (16.5 MB: 128 channels, F(4x4, 3x3))
/// took 67 ms split against 51 by images; its 14x14 (9.4 MB) and 7x7 (8.4 MB) stages gain
/// (profiled, batch 16, 2 threads).
const WHOLE_BATCH: usize = 12 << 20;

/// Output channels per register tile of the products.
const KB: usize = 2;
/// Input channels per register tile (one vector of sums).
const CB: usize = 4;

/// A Winograd F(m x m, 3x3) weight gradient of a 3x3 stride-1 convolution.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct WinogradGradSpec {
    /// Batch size.
    pub batch: usize,
    /// Input channels (a multiple of 4).
    pub in_channels: usize,
    /// Output channels (even).
    pub out_channels: usize,
    /// Output height and width (a cropped tiling covers the next multiples of its tile, dy read
    /// as zero past them: see [`WinogradGradSpec::applies`]).
    pub out_hw: [usize; 2],
    /// How each image of x is packed (zero-padded, m width phases).
    pub pack: PackSpec,
    /// Tile rows per block of an image, tiles per tile row, images across the lanes.
    pub tiling: Winograd,
    /// Groups: chunks of image sets.
    pub chunks: usize,
    /// Image sets (one image, or `tiling.images` across the lanes) whose tiles are multiplied
    /// together (several when one set has few tiles: each product then runs over at least 64
    /// slots).
    pub sets_per_block: usize,
    /// With `Some(p)`, the groups are instead `p` equal parts of the output channels, each over
    /// every image (one chunk, one block of all the sets, whole images): a thread transforms
    /// every image's x once, then for each of its parts the part's dy, sums the part's products
    /// over all the tiles, stores them once into its scratch and transforms them into the part's
    /// rows of dw. No partials are added across groups: where they are large (many channels,
    /// few tiles) that adding passes over memory.
    pub channel_parts: Option<usize>,
    /// f32 lanes of the products' accumulators: 4, or 8 (pairs of vectors of tiles, where the
    /// unrolled loop takes them in pairs; each f32x8's halves are added before the lane sums).
    pub lanes: usize,
}

impl WinogradGradSpec {
    /// The gradient of a 3x3 stride-1 convolution over `batch` images of `in_hw` padded by `pad`,
    /// from `in_channels` to `out_channels`, whose output is `out_hw` (sizes
    /// [`applies`](Self::applies) accepts), with the tiles `tiles` allows: split by parts of the
    /// output channels where chunks of images would each add partials of 1 MB or more
    /// (`LARGE_PARTIALS`) and every image's transform fits `WHOLE_BATCH`, on the
    /// convolution's tiles ([`Winograd::for_convolution`]: at 7x7, F(4x4, 3x3) across 4
    /// images); by chunks of images otherwise ([`blocking`](Self::blocking)). Four parts
    /// (two a thread here) ran ResNet-50's 14x14 and 7x7 gradients in 99 and 76 ms, two parts in
    /// 99 and 79, eight in 104-113 and 78-84 (profiled, batch 16, 2 threads); on F(2x2, 3x3)
    /// tiles the 14x14 one ran slower split than by images (its `V` of every image, 14.7 MB,
    /// passes through memory for each part), on F(4x4, 3x3) tiles cropped to 16x16 faster; the
    /// 7x7 one split took 76 ms on F(2x2, 3x3) tiles in rows and 58 across images.
    pub fn new(
        batch: usize,
        [in_channels, out_channels]: [usize; 2],
        in_hw: [usize; 2],
        out_hw: [usize; 2],
        pad: [isize; 2],
        tiles: WinogradTiles,
    ) -> Self {
        let spec = |tiling: Winograd, chunks, sets_per_block, channel_parts| WinogradGradSpec {
            batch,
            in_channels,
            out_channels,
            out_hw,
            pack: tiling.pack(in_channels, in_hw, pad, tiling.tiled_hw(out_hw)),
            tiling,
            chunks,
            sets_per_block,
            channel_parts,
            lanes: 4,
        };
        // The convolution's tiles, in blocks of whole images (or sets of 4 across the lanes).
        let whole = Winograd::for_convolution(out_hw, tiles, batch)
            .map(|w| Winograd { tile_rows: w.tiled_hw(out_hw)[0] / w.m, ..w });
        if let Some(tiling) = whole {
            let sets = batch / tiling.images;
            let partial_bytes = 4 * tiling.positions() * in_channels * out_channels;
            let transform_bytes = 4 * tiling.positions() * in_channels * sets * tiling.slots();
            let parts = [4, 2, 1].into_iter().find(|p| out_channels.is_multiple_of(KB * p)).unwrap_or(1);
            if partial_bytes >= LARGE_PARTIALS && transform_bytes <= WHOLE_BATCH {
                return spec(tiling, 1, sets, Some(parts));
            }
        }
        let tiling = Self::tiling(out_hw, tiles, batch);
        let (chunks, sets_per_block) = Self::blocking(out_hw, tiling, batch, [in_channels, out_channels]);
        spec(tiling, chunks, sets_per_block, None)
    }

    /// Whether the Winograd weight gradient applies to a batch of `batch` outputs of `out_hw`
    /// with the tiles `tiles` allows: 3x3, stride 1, input channels a multiple of 4 (at least 8),
    /// even output channels, and a tiling (`WinogradGradSpec::convolution_tiling`): exact, or
    /// cropped (the last row and column of tiles partly outside, read as zeros of dy) where that
    /// multiplies at most 6 times per output against the direct gradient's 9 (7x7 by F(2x2):
    /// 5.2).
    pub fn applies(
        kernel: [usize; 2],
        stride: [usize; 2],
        out_hw: [usize; 2],
        [in_channels, out_channels]: [usize; 2],
        tiles: WinogradTiles,
        batch: usize,
    ) -> bool {
        kernel == [3, 3]
            && stride == [1, 1]
            && in_channels >= 8
            && in_channels.is_multiple_of(CB)
            && out_channels.is_multiple_of(KB)
            && Self::convolution_tiling(out_hw, tiles, batch).is_some()
    }

    /// The convolution's tiling the gradient takes: [`Winograd::for_output`] where the tiles fit
    /// the output, else [`Winograd::for_convolution`]'s cropped one. (ResNet-50's 14x14 stage
    /// by cropped F(4x4, 3x3) tiles read 125 and 185 ms against 142 and 151 by F(2x2), 2 pairs
    /// on a noisy machine: not a clear win, so exact tiles come first.)
    fn convolution_tiling(out_hw: [usize; 2], tiles: WinogradTiles, batch: usize) -> Option<Winograd> {
        // Cropped tiles in one image's rows (batch 1): by chunks of images, F(4x4, 3x3) across
        // images ran no faster than F(2x2, 3x3) at 8x8 with 512 channels (154-156% of the
        // ceiling against 149-153%, one thread), its partials passing over memory.
        Winograd::for_output(out_hw, tiles, batch).or_else(|| Winograd::for_convolution(out_hw, tiles, 1))
    }

    /// The tiling of a batch of `batch` outputs of `out_hw` (whose sizes
    /// [`applies`](Self::applies) accepts) for the gradient: the tiles and lanes `tiles` (not
    /// `Off`) chooses for the convolution, in blocks of whole tile rows with at least 64 slots
    /// (or the whole image).
    pub fn tiling(out_hw: [usize; 2], tiles: WinogradTiles, batch: usize) -> Winograd {
        let w = Self::convolution_tiling(out_hw, tiles, batch).expect("a tiling, where the gradient applies");
        w.with_block_slots(out_hw, 64)
    }

    /// Chunks of image sets (the groups) and image sets per block of products, for a batch of
    /// `batch` outputs of `out_hw` tiled as `tiling`, from `in_channels` to `out_channels`.
    /// Chunks: enough for the threads to share, few enough that their partials stay in cache and
    /// adding them stays small; a constant, so that the result does not depend on the thread
    /// count. Blocks: at least 64 slots, one set when a set has several blocks of tile rows.
    ///
    /// Partials of `CHUNKED_PARTIALS` bytes or more a chunk take 2 chunks: ResNet-50's 14x14
    /// stage (256 channels, 4 MB a chunk) took 224 ms in 8 chunks and 130-134 in 2 (6 calls), the
    /// 28x28 stage (128 channels, 2.4 MB) 88 ms in 8, 62 in 4, 56-60 in 2, and 71-80 in 3 (one
    /// thread then has twice the other's work); the 56x56 stage (0.6 MB) 44-46 ms either way
    /// (profiled, batch 16, 2 threads). CIFAR's 64-channel 8x8 stage (0.6 MB, one block of 64
    /// slots a chunk) ran 100-102 GFLOP/s in 8 chunks, 176-178 in 2 (kernels bench, batch 128,
    /// 2 threads, Intel Xeon).
    ///
    /// Cropped tilings (ResNet-50's 7x7 stage, 512 channels) take blocks of 128 slots or more, at most
    /// half the sets each, and a chunk per block: with many channels, the partials a block adds
    /// into (16 MB a chunk) pass over memory. At batch 16, 8 chunks of 2 images took 380 ms, 2 of
    /// 8 images 94 ms, the direct gradient 230 ms (profiled, 2 threads).
    pub fn blocking(
        out_hw: [usize; 2],
        tiling: Winograd,
        batch: usize,
        [in_channels, out_channels]: [usize; 2],
    ) -> (usize, usize) {
        let sets = batch / tiling.images;
        let tiled = tiling.tiled_hw(out_hw);
        if tiled != out_hw {
            let per_block = sets.div_ceil(2).min(128usize.div_ceil(tiling.slots()));
            return (sets.div_ceil(per_block).min(8), per_block);
        }
        let whole_images = tiling.tile_rows == tiled[0] / tiling.m;
        let partial_bytes = 4 * tiling.positions() * in_channels * out_channels;
        let chunks = if partial_bytes >= CHUNKED_PARTIALS { 2 } else { 8 };
        (sets.min(chunks), if whole_images { 64usize.div_ceil(tiling.slots()) } else { 1 })
    }

    /// Slots per block of products (`V` and `DY` have this many per channel).
    fn block_slots(&self) -> usize {
        self.sets_per_block * self.tiling.slots()
    }

    /// Groups: chunks of images, or parts of the output channels.
    pub fn groups(&self) -> usize {
        self.channel_parts.unwrap_or(self.chunks)
    }

    /// Output channels whose dy a group transforms and whose sums it computes: all of them, or
    /// its part's.
    fn group_channels(&self) -> usize {
        self.out_channels / self.channel_parts.unwrap_or(1)
    }

    /// Floating-point operations of the direct weight gradient (2 per multiply-add), which this
    /// computes with fewer.
    pub fn flops(&self) -> f64 {
        let [oh, ow] = self.out_hw;
        2.0 * (self.batch * self.out_channels * self.in_channels * oh * ow * 9) as f64
    }

    /// f32 elements of the partials scratch: `S[ξ][k][c]` per chunk of images (none when the
    /// groups are parts of the output channels).
    pub fn partials_len(&self) -> usize {
        if self.channel_parts.is_some() { 0 } else { self.chunks * self.partial_len() }
    }

    fn partial_len(&self) -> usize {
        self.tiling.positions() * self.out_channels * self.in_channels
    }

    /// f32 elements of one thread's scratch: a packed image, `V[ξ][c][t]` and `DY[ξ][k][t]` of
    /// one block (of a group's output channels), room for the m x n vectors of one dy tile
    /// transformed along its rows (and for the 3 x n of `Gᵀ S` at the end), and with parts of
    /// the output channels, a part's sums `S[ξ][k][c]`.
    pub fn thread_scratch_len(&self) -> usize {
        let [.., sums] = self.areas();
        let part_sums = self.tiling.positions() * self.group_channels() * self.in_channels;
        sums + if self.channel_parts.is_some() { part_sums } else { 0 }
    }

    /// Elements between positions of `V` and of `DY`.
    fn position_strides(&self) -> [usize; 2] {
        [self.in_channels, self.group_channels()].map(|c| Winograd::position_stride(c * self.block_slots()))
    }

    /// The input transform into `V`: a block's slots per channel, [`Self::position_strides`]'s.
    fn input_transform(&self) -> InputTransform<'_> {
        let strides = [self.block_slots(), self.position_strides()[0]];
        InputTransform { pack: &self.pack, tiling: self.tiling, strides, lanes: self.lanes }
    }

    /// Offsets of `V`, `DY`, the row-transformed dy tile and a part's sums in a thread's scratch.
    fn areas(&self) -> [usize; 4] {
        let positions = self.tiling.positions();
        let [v_position, d_position] = self.position_strides();
        let v = self.pack.len().div_ceil(4) * 4;
        let d = v + positions * v_position;
        let rows = d + positions * d_position;
        [v, d, rows, rows + 4 * self.tiling.m.max(3) * self.tiling.n()]
    }

    /// Kernel body: args are x, dy (both NCHW), the partials scratch, a counter scratch (2 f32
    /// holding an i64), the per-thread scratch, dw.
    pub(crate) fn build(&self, b: &mut FunctionBuilder, ptr: Type, mul_add: MulAdd) {
        let (args, begin, end, thread) = entry_with_thread(b);
        let [x, dy, partials, counter, scratch, dw] = [0, 1, 2, 3, 4, 5].map(|k| load_arg(b, ptr, args, k));
        let xp = thread_share(b, scratch, thread, self.thread_scratch_len());
        let [v, d, rows, sums] = self.areas().map(|at| b.ins().iadd_imm_s(xp, 4 * at as i64));
        if self.channel_parts.is_some() {
            self.build_by_channels(b, mul_add, [x, dy, dw], [xp, v, d, rows, sums], [begin, end]);
            return;
        }
        let flags = MemFlagsData::new().with_notrap();
        let blocks = self.tiling.tiled_hw(self.out_hw)[0] / self.tiling.m / self.tiling.tile_rows;
        let zero_k = iconst(b, 0); // every output channel's dy
        for_loop(b, begin, end, 1, &[], &mut |b, g, _| {
            let part = {
                let offset = mul(b, g, 4 * self.partial_len());
                b.ins().iadd(partials, offset)
            };
            let zero = b.ins().f32const(0.0);
            let zero = b.ins().splat(types::F32X4, zero);
            let (lo, hi) = (iconst(b, 0), iconst(b, (self.partial_len() / 4) as i64));
            for_loop(b, lo, hi, 1, &[], &mut |b, i, _| {
                let e = mul(b, i, 4);
                let at = elem_addr(b, part, e);
                b.ins().store(flags, zero, at, 0);
                vec![]
            });
            // Image sets g * sets / chunks up to (g + 1) * sets / chunks.
            let (images, sets) = (self.tiling.images, self.batch / self.tiling.images);
            let first = {
                let e = mul(b, g, sets);
                b.ins().udiv_imm_u(e, self.chunks as i64)
            };
            let last = {
                let next = b.ins().iadd_imm_s(g, 1);
                let e = mul(b, next, sets);
                b.ins().udiv_imm_u(e, self.chunks as i64)
            };
            let (lo, per_set) = (iconst(b, 0), iconst(b, (self.tiling.slots() / 4) as i64));
            let inputs = self.input_transform();
            if blocks > 1 {
                // Each set in blocks of tile rows (one set per block).
                for_loop(b, first, last, 1, &[], &mut |b, set, _| {
                    let n = mul(b, set, images);
                    let first_plane = mul(b, n, self.in_channels);
                    self.pack.emit(b, x, xp, first_plane);
                    let hi = iconst(b, blocks as i64);
                    for_loop(b, lo, hi, 1, &[], &mut |b, block, _| {
                        inputs.emit(b, mul_add, xp, v, block);
                        self.transform_dy(b, mul_add, [dy, d, rows], n, block, zero_k);
                        self.products(b, mul_add, [v, d, rows], part, per_set);
                        vec![]
                    });
                    vec![]
                });
            } else {
                // Blocks of up to `sets_per_block` whole image sets, side by side in V and DY (the
                // last block of the chunk may hold fewer).
                let per_block = self.sets_per_block as i64;
                let count = b.ins().isub(last, first);
                let steps = {
                    let e = b.ins().iadd_imm_s(count, per_block - 1);
                    b.ins().udiv_imm_u(e, per_block)
                };
                for_loop(b, lo, steps, 1, &[], &mut |b, step, _| {
                    let set0 = {
                        let e = b.ins().imul_imm_s(step, per_block);
                        b.ins().iadd(first, e)
                    };
                    let left = b.ins().isub(last, set0);
                    let count = {
                        let most = iconst(b, per_block);
                        b.ins().umin(left, most)
                    };
                    for_loop(b, lo, count, 1, &[], &mut |b, i, _| {
                        let set = b.ins().iadd(set0, i);
                        let n = mul(b, set, images);
                        let first_plane = mul(b, n, self.in_channels);
                        self.pack.emit(b, x, xp, first_plane);
                        let offset = mul(b, i, 4 * self.tiling.slots());
                        let (v_i, d_i) = (b.ins().iadd(v, offset), b.ins().iadd(d, offset));
                        inputs.emit(b, mul_add, xp, v_i, lo);
                        self.transform_dy(b, mul_add, [dy, d_i, rows], n, lo, zero_k);
                        vec![]
                    });
                    let vectors = b.ins().imul(count, per_set);
                    self.products(b, mul_add, [v, d, rows], part, vectors);
                    vec![]
                });
            }
            vec![]
        });
        // The thread that completes the count adds every group's partials and writes dw.
        let done = b.ins().isub(end, begin);
        let before = b.ins().atomic_rmw(types::I64, flags, AtomicRmwOp::Add, counter, done);
        let after = b.ins().iadd(before, done);
        let finished = b.ins().icmp_imm_s(IntCC::Equal, after, self.chunks as i64);
        if_then(b, finished, &mut |b| {
            let zero = iconst(b, 0);
            b.ins().store(flags, zero, counter, 0);
            let zero_k = iconst(b, 0);
            self.finish(b, mul_add, [partials, rows, dw], self.chunks, zero_k);
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// Kernel body with groups that are parts of the output channels (see
    /// [`WinogradGradSpec::channel_parts`]): every image set's x packed and transformed into `V`
    /// once, before the thread's first part; then per part, every set's dy into `DY`, the
    /// products over all the slots into `sums`, and the part's rows of dw.
    fn build_by_channels(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [x, dy, dw]: [Value; 3],
        [xp, v, d, rows, sums]: [Value; 5],
        [begin, end]: [Value; 2],
    ) {
        let (images, slots) = (self.tiling.images, self.tiling.slots());
        let sets = self.batch / images;
        debug_assert!(
            self.sets_per_block == sets
                && self.tiling.tile_rows == self.tiling.tiled_hw(self.out_hw)[0] / self.tiling.m
        );
        let (lo, sets_hi) = (iconst(b, 0), iconst(b, sets as i64));
        let inputs = self.input_transform();
        // Set `set`'s first image, and its slots' offset (bytes) in V and DY.
        let set_at = |b: &mut FunctionBuilder, set: Value| (mul(b, set, images), mul(b, set, 4 * slots));
        let any = b.ins().icmp(IntCC::UnsignedLessThan, begin, end);
        if_then(b, any, &mut |b| {
            for_loop(b, lo, sets_hi, 1, &[], &mut |b, set, _| {
                let (n, offset) = set_at(b, set);
                let first_plane = mul(b, n, self.in_channels);
                self.pack.emit(b, x, xp, first_plane);
                let v_set = b.ins().iadd(v, offset);
                inputs.emit(b, mul_add, xp, v_set, lo);
                vec![]
            });
        });
        let vectors = iconst(b, (sets * slots / 4) as i64);
        for_loop(b, begin, end, 1, &[], &mut |b, part, _| {
            let k_first = mul(b, part, self.group_channels());
            for_loop(b, lo, sets_hi, 1, &[], &mut |b, set, _| {
                let (n, offset) = set_at(b, set);
                let d_set = b.ins().iadd(d, offset);
                self.transform_dy(b, mul_add, [dy, d_set, rows], n, lo, k_first);
                vec![]
            });
            self.products(b, mul_add, [v, d, rows], sums, vectors);
            self.finish(b, mul_add, [sums, rows, dw], 1, k_first);
            vec![]
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
    }

    /// `DY[ξ][k][t] = (A dy Aᵀ)[ξ]` into `d` for each of the group's output channels `k` (from
    /// `k_first`; `DY` holds them from 0) and slot `t` of block `block` of image `n` (and the next
    /// 3, with lanes across images), four slots per vector: each of the tiles' m rows is 4m
    /// consecutive pixels (or the same m = 4 pixels of 4 images), split into its m columns (the
    /// tiles past the width, in the last vector, are zero), transformed by Aᵀ on the right into
    /// `rows` (m x n vectors of scratch), then by A on the left.
    fn transform_dy(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [dy, d, rows]: [Value; 3],
        n: Value,
        block: Value,
        k_first: Value,
    ) {
        let w = self.tiling;
        let (m, size) = (w.m, w.n());
        let (kn, [oh, ow], tiles) = (self.out_channels, self.out_hw, self.block_slots());
        let d_position = self.position_strides()[1];
        // A (Aᵀ's transpose: row j holds column j of Aᵀ), factored.
        let a_rows: Vec<Vec<f32>> = (0..size).map(|j| w.transform().at.iter().map(|row| row[j]).collect()).collect();
        let a_matrix = Factored::new(&a_rows.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let first_row = mul(b, block, m * w.tile_rows);
        let lo = iconst(b, 0);
        // Whole vectors of slots, then a partial one padded with zeros: of 4 tiles (the pixels
        // of its tiles inside the width), or with lanes across images, of one tile (its pixels
        // inside the width, in each image). `whole`: the pixels of a whole vector's tile row.
        let (whole, full, last) = match w.images {
            1 => (4 * m, ow / (4 * m), ow % (4 * m)),
            _ => (m, ow / m, ow % m),
        };
        let hi = [self.group_channels(), w.tile_rows, full].map(|n| iconst(b, n as i64));
        for_loop(b, lo, hi[0], 1, &[], &mut |b, k, _| {
            let plane = {
                let nk = mul(b, n, kn);
                let nk = b.ins().iadd(nk, k_first);
                let nk = b.ins().iadd(nk, k);
                mul(b, nk, oh * ow)
            };
            let d_k = mul(b, k, tiles);
            for_loop(b, lo, hi[1], 1, &[], &mut |b, r, _| {
                let (row, d_row) = tile_row(b, w, [first_row, r], [plane, d_k], ow);
                let segment = |b: &mut FunctionBuilder, tv: Value, valid: usize| {
                    let px = mul(b, tv, w.vector_pixels());
                    let e = b.ins().iadd(row, px);
                    let at = elem_addr(b, dy, e);
                    // Row i of the tiles: column c of the slots per vector; past `valid` pixels,
                    // zeros.
                    let columns = |b: &mut FunctionBuilder, i: usize| -> Vec<Value> {
                        let offset = (i * ow * 4) as i32;
                        let image_len = kn * oh * ow;
                        if valid == whole {
                            let v: Vec<Value> = (0..m)
                                .map(|h| b.ins().load(types::F32X4, read, at, offset + w.pixel_vector(h, image_len)))
                                .collect();
                            return deinterleave(b, &v);
                        }
                        if w.images > 1 {
                            // Each image's `valid` pixels of the tile, then its columns.
                            let v: Vec<Value> = (0..m)
                                .map(|h| {
                                    let zero = b.ins().f32const(0.0);
                                    let mut v = b.ins().splat(types::F32X4, zero);
                                    for lane in 0..valid {
                                        let at_lane = offset + w.pixel_vector(h, image_len) + 4 * lane as i32;
                                        let x = b.ins().load(types::F32, read, at, at_lane);
                                        v = b.ins().insertlane(v, x, lane as u8);
                                    }
                                    v
                                })
                                .collect();
                            return deinterleave(b, &v);
                        }
                        (0..m)
                            .map(|column| {
                                let zero = b.ins().f32const(0.0);
                                let mut v = b.ins().splat(types::F32X4, zero);
                                for lane in (0..4).filter(|l| m * l + column < valid) {
                                    let x =
                                        b.ins().load(types::F32, read, at, offset + (4 * (m * lane + column)) as i32);
                                    v = b.ins().insertlane(v, x, lane as u8);
                                }
                                v
                            })
                            .collect()
                    };
                    // Rows times Aᵀ: W[i][j] = Σ_c dy[i][c] Aᵀ[c][j], kept in `rows`. A row of the
                    // last tile row may lie past an odd height: zeros there.
                    for i in 0..m {
                        let cols = if oh.is_multiple_of(m) || i < oh % m {
                            columns(b, i)
                        } else {
                            let image_row = {
                                let e = mul(b, r, m);
                                let e = b.ins().iadd(first_row, e);
                                b.ins().iadd_imm_s(e, i as i64)
                            };
                            let inside = b.ins().icmp_imm_u(IntCC::UnsignedLessThan, image_row, oh as i64);
                            let (load, done) = (b.create_block(), b.create_block());
                            let zero = b.ins().f32const(0.0);
                            let zero = b.ins().splat(types::F32X4, zero);
                            for _ in 0..m {
                                b.append_block_param(done, types::F32X4);
                            }
                            let zeros = vec![zero.into(); m];
                            b.ins().brif(inside, load, &[], done, &zeros);
                            b.switch_to_block(load);
                            let loaded: Vec<_> = columns(b, i).into_iter().map(Into::into).collect();
                            b.ins().jump(done, &loaded);
                            b.switch_to_block(done);
                            b.block_params(done).to_vec()
                        };
                        a_matrix.emit_each(b, mul_add, types::F32X4, &mut |_, c| cols[c], &mut |b, j, value| {
                            b.ins().store(write, value, rows, ((i * size + j) * 16) as i32);
                        });
                    }
                    // A W: DY[i][j] = Σ_r A[i][r] W[r][j].
                    let t = mul(b, tv, 4); // 4 slots per vector
                    let e = b.ins().iadd(d_row, t);
                    let out = elem_addr(b, d, e);
                    for j in 0..size {
                        let load = &mut |b: &mut FunctionBuilder, r: usize| {
                            b.ins().load(types::F32X4, read, rows, ((r * size + j) * 16) as i32)
                        };
                        a_matrix.emit_each(b, mul_add, types::F32X4, load, &mut |b, i, value| {
                            let position = size * i + j;
                            b.ins().store(write, value, out, (position * d_position * 4) as i32);
                        });
                    }
                };
                for_loop(b, lo, hi[2], 1, &[], &mut |b, tv, _| {
                    segment(b, tv, whole);
                    vec![]
                });
                if last > 0 {
                    segment(b, hi[2], last);
                }
                vec![]
            });
            vec![]
        });
    }

    /// `S[ξ][k][c] += Σ_t DY[ξ][k][t] V[ξ][c][t]` over the block's `vectors` vectors of tiles, for
    /// the group's output channels: register tiles of 2 output channels by 4 input channels, each
    /// a vector over 4 tiles, summed across lanes at the end (4 sums per vector) and added to the
    /// group's partials (or with parts of the output channels, stored: one block holds every
    /// slot). With 8 lanes, each accumulator is an f32x8 over 8 tiles, whose halves are added
    /// through the first 8 f32 of `rows` before the lane sums.
    fn products(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [v, d, rows]: [Value; 3],
        part: Value,
        vectors: Value,
    ) {
        let (cn, kn, tiles) = (self.in_channels, self.group_channels(), self.block_slots());
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let flags = MemFlagsData::new().with_notrap();
        let lo = iconst(b, 0);
        let hi = [self.tiling.positions(), kn / KB, cn / CB].map(|n| iconst(b, n as i64));
        let unroll = [4, 2, 1].into_iter().find(|u| (self.tiling.slots() / 4).is_multiple_of(*u)).unwrap_or(1);
        // Vectors of 4 tiles per accumulator, and its type.
        let lanes = if unroll >= 2 { self.lanes } else { 4 };
        let (pair, ty) = (lanes / 4, f32_vector(lanes));
        let [v_position, d_position] = self.position_strides();
        for_loop(b, lo, hi[0], 1, &[], &mut |b, xi, _| {
            let v_xi = mul(b, xi, v_position);
            let d_xi = mul(b, xi, d_position);
            let p_xi = mul(b, xi, kn * cn);
            // Input channels outer: their 4 rows of V stay in the L1 cache while the group's
            // rows of DY pass (with parts of the output channels, V of every image outgrows
            // the L2 cache; a part's DY does not).
            for_loop(b, lo, hi[2], 1, &[], &mut |b, cblock, _| {
                let c0 = mul(b, cblock, CB);
                let v0 = {
                    let e = mul(b, c0, tiles);
                    let e = b.ins().iadd(v_xi, e);
                    elem_addr(b, v, e)
                };
                for_loop(b, lo, hi[1], 1, &[], &mut |b, kblock, _| {
                    let k0 = mul(b, kblock, KB);
                    let d0 = {
                        let e = mul(b, k0, tiles);
                        let e = b.ins().iadd(d_xi, e);
                        elem_addr(b, d, e)
                    };
                    let zero = b.ins().f32const(0.0);
                    let zero = b.ins().splat(ty, zero);
                    // Unrolled: the loop's own instructions paid once per `unroll` vectors of tiles.
                    let (_, acc) = for_loop(b, lo, vectors, unroll as i64, &[zero; KB * CB], &mut |b, tv, acc| {
                        let offset = mul(b, tv, 16);
                        let (d_t, v_t) = (b.ins().iadd(d0, offset), b.ins().iadd(v0, offset));
                        let mut acc = acc.to_vec();
                        for u in (0..unroll).step_by(pair) {
                            let at = |k: usize| ((k * tiles + 4 * u) * 4) as i32;
                            let dys: Vec<Value> = (0..KB).map(|k| b.ins().load(ty, read, d_t, at(k))).collect();
                            for c in 0..CB {
                                let x = b.ins().load(ty, read, v_t, at(c));
                                for (k, &dy) in dys.iter().enumerate() {
                                    acc[k * CB + c] = mul_add_emit(b, mul_add, dy, x, acc[k * CB + c]);
                                }
                            }
                        }
                        acc
                    });
                    let at = {
                        let e = mul(b, k0, cn);
                        let e = b.ins().iadd(e, c0);
                        let e = b.ins().iadd(p_xi, e);
                        elem_addr(b, part, e)
                    };
                    let acc: Vec<Value> = acc
                        .iter()
                        .map(|&a| {
                            if ty == types::F32X4 {
                                return a;
                            }
                            b.ins().store(flags, a, rows, 0);
                            let [low, high] = [0, 16].map(|at| b.ins().load(types::F32X4, flags, rows, at));
                            b.ins().fadd(low, high)
                        })
                        .collect();
                    for k in 0..KB {
                        let sums = lane_sums(b, [acc[k * CB], acc[k * CB + 1], acc[k * CB + 2], acc[k * CB + 3]]);
                        let offset = (k * cn * 4) as i32;
                        let new = match self.channel_parts {
                            Some(_) => sums, // every slot's products at once
                            None => {
                                let old = b.ins().load(types::F32X4, flags, at, offset);
                                b.ins().fadd(old, sums)
                            }
                        };
                        b.ins().store(flags, new, at, offset);
                    }
                    vec![]
                });
                vec![]
            });
            vec![]
        });
    }

    /// Adds `chunks` partials in order and writes `dw[k][c] = Gᵀ S G` for the group's output
    /// channels (from `k_first`), four input channels at a time (`rows`: this thread's scratch
    /// for 3 x n vectors).
    fn finish(
        &self,
        b: &mut FunctionBuilder,
        mul_add: MulAdd,
        [partials, rows, dw]: [Value; 3],
        chunks: usize,
        k_first: Value,
    ) {
        let (cn, kn, size) = (self.in_channels, self.group_channels(), self.tiling.n());
        // Gᵀ (row r holds column r of G), factored.
        let gt: Vec<Vec<f32>> = (0..3).map(|r| self.tiling.transform().g.iter().map(|row| row[r]).collect()).collect();
        let gt = Factored::new(&gt.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let read = MemFlagsData::new().with_notrap().with_readonly();
        let write = MemFlagsData::new().with_notrap();
        let lo = iconst(b, 0);
        let (k_hi, c_hi, g_hi) = (iconst(b, kn as i64), iconst(b, (cn / 4) as i64), iconst(b, chunks as i64));
        for_loop(b, lo, k_hi, 1, &[], &mut |b, k, _| {
            for_loop(b, lo, c_hi, 1, &[], &mut |b, cv, _| {
                let c0 = mul(b, cv, 4);
                let first = {
                    let e = mul(b, k, cn);
                    let e = b.ins().iadd(e, c0);
                    elem_addr(b, partials, e)
                };
                let sum = |b: &mut FunctionBuilder, position: usize| {
                    let zero = b.ins().f32const(0.0);
                    let zero = b.ins().splat(types::F32X4, zero);
                    let (_, total) = for_loop(b, lo, g_hi, 1, &[zero], &mut |b, g, total| {
                        let offset = mul(b, g, 4 * self.partial_len());
                        let at = b.ins().iadd(first, offset);
                        let value = b.ins().load(types::F32X4, read, at, (position * kn * cn * 4) as i32);
                        vec![b.ins().fadd(total[0], value)]
                    });
                    total[0]
                };
                // Gᵀ S, column by column (3 x n, kept in `rows`), then times G, row by row (3 x 3).
                for j in 0..size {
                    let s: Vec<Value> = (0..size).map(|i| sum(b, size * i + j)).collect();
                    gt.emit_each(b, mul_add, types::F32X4, &mut |_, i| s[i], &mut |b, r, value| {
                        b.ins().store(write, value, rows, ((r * size + j) * 16) as i32);
                    });
                }
                let out = {
                    let k = b.ins().iadd(k_first, k);
                    let e = mul(b, k, cn);
                    let e = b.ins().iadd(e, c0);
                    let e = mul(b, e, 9);
                    elem_addr(b, dw, e)
                };
                for r in 0..3 {
                    let row = gt.emit(b, mul_add, types::F32X4, &mut |b, j| {
                        b.ins().load(types::F32X4, read, rows, ((r * size + j) * 16) as i32)
                    });
                    for (s, value) in row.into_iter().enumerate() {
                        for lane in 0..4 {
                            let x = b.ins().extractlane(value, lane as u8);
                            b.ins().store(write, x, out, ((lane * 9 + 3 * r + s) * 4) as i32);
                        }
                    }
                }
                vec![]
            });
            vec![]
        });
    }
}

/// `[sum(a0), sum(a1), sum(a2), sum(a3)]`: the lanes of four vectors summed, by two rounds of
/// interleaving.
fn lane_sums(b: &mut FunctionBuilder, [a0, a1, a2, a3]: [Value; 4]) -> Value {
    let pair = |b: &mut FunctionBuilder, x: Value, y: Value| {
        let low = shuffle32(b, x, y, [0, 4, 1, 5]);
        let high = shuffle32(b, x, y, [2, 6, 3, 7]);
        b.ins().fadd(low, high) // [x0 + x2, y0 + y2, x1 + x3, y1 + y3]
    };
    let (t0, t1) = (pair(b, a0, a1), pair(b, a2, a3));
    let low = shuffle32(b, t0, t1, [0, 1, 4, 5]);
    let high = shuffle32(b, t0, t1, [2, 3, 6, 7]);
    b.ins().fadd(low, high)
}
