//! Memory planning: values whose lifetimes do not overlap share one block of memory.
//!
//! A lifetime is the range of kernel calls (steps) from the first one that writes a value to the
//! last one that reads it. Values are placed in order of their first step: a value takes the
//! block of an operand it may overwrite in place (one its kernel reads for the last time, at the
//! same elements it writes), else the smallest free block that fits it, else grows the largest
//! free block, else opens a new block. Blocks are sized at the end, to their largest tenant.

/// One value to place: its length in f32s and the steps it lives across, inclusive.
#[derive(Clone, Debug)]
pub(crate) struct Lifetime {
    pub len: usize,
    pub first: usize,
    pub last: usize,
    /// Values (indices into the same list) that this value's first kernel may overwrite in place:
    /// it reads them for the last time at the elements it writes.
    pub in_place: Vec<usize>,
}

impl Lifetime {
    /// A value with no in-place candidates.
    pub fn new(len: usize, first: usize, last: usize) -> Self {
        Lifetime { len, first, last, in_place: vec![] }
    }
}

/// The block of every value (in input order) and the size of every block.
pub(crate) fn assign(values: &[Lifetime]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&v| (values[v].first, values[v].last));
    let mut block_of = vec![usize::MAX; values.len()];
    let mut sizes: Vec<usize> = vec![];
    // Blocks in use, with the last step and the index of their tenant; and free blocks.
    let mut busy: Vec<(usize, usize, usize)> = vec![];
    let mut free: Vec<usize> = vec![];
    for v in order {
        let Lifetime { len, first, .. } = values[v];
        busy.retain(|&(last, block, _)| {
            let done = last < first;
            if done {
                free.push(block);
            }
            !done
        });
        // In place: an operand of the same length whose last read is this value's first write.
        let operand = busy.iter().position(|&(last, _, tenant)| {
            last == first && values[tenant].len == len && values[v].in_place.contains(&tenant)
        });
        if let Some(i) = operand {
            let block = busy[i].1;
            busy[i] = (values[v].last, block, v);
            block_of[v] = block;
            continue;
        }
        let fits = free.iter().enumerate().filter(|(_, b)| sizes[**b] >= len).min_by_key(|(_, b)| sizes[**b]);
        let largest = free.iter().enumerate().max_by_key(|(_, b)| sizes[**b]);
        let block = match (fits, largest) {
            (Some((i, _)), _) | (None, Some((i, _))) => free.swap_remove(i),
            (None, None) => {
                sizes.push(0);
                sizes.len() - 1
            }
        };
        sizes[block] = sizes[block].max(len);
        block_of[v] = block;
        busy.push((values[v].last, block, v));
    }
    (block_of, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether two values are live at once, apart from an in-place handover (`b` written, in place
    /// of `a`, by the step that reads `a` last).
    fn overlaps(a: &Lifetime, ai: usize, b: &Lifetime, bi: usize) -> bool {
        let handover =
            (a.last == b.first && b.in_place.contains(&ai)) || (b.last == a.first && a.in_place.contains(&bi));
        a.first <= b.last && b.first <= a.last && !handover
    }

    /// Values sharing a block never live at once (except in-place handovers), every block fits its
    /// tenants, and a chain (each value read only by the next step) needs two blocks, or one when
    /// each step may work in place.
    #[test]
    fn shared_blocks_never_hold_two_live_values() {
        let mut seed = 7u64;
        let mut next = |m: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        for _ in 0..200 {
            let count = next(30) + 1;
            let values: Vec<Lifetime> = (0..count)
                .map(|_| {
                    let first = next(50);
                    let mut l = Lifetime::new(next(4) * 25 + 1, first, first + next(10));
                    l.in_place = (0..next(3)).map(|_| next(count)).collect();
                    l
                })
                .collect();
            let (block_of, sizes) = assign(&values);
            for (i, a) in values.iter().enumerate() {
                assert!(sizes[block_of[i]] >= a.len);
                for (j, b) in values.iter().enumerate().skip(i + 1) {
                    assert!(block_of[i] != block_of[j] || !overlaps(a, i, b, j), "{a:?} and {b:?} share a block");
                }
            }
        }
        let chain: Vec<Lifetime> = (0..10).map(|i| Lifetime::new(4, i, i + 1)).collect();
        assert_eq!(assign(&chain).1.len(), 2);
        let in_place: Vec<Lifetime> = (0..10)
            .map(|i| Lifetime { in_place: if i > 0 { vec![i - 1] } else { vec![] }, ..Lifetime::new(4, i, i + 1) })
            .collect();
        assert_eq!(assign(&in_place).1.len(), 1);
    }
}
