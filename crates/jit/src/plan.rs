//! Memory planning: values whose lifetimes do not overlap share one block of memory.
//!
//! A lifetime is the range of kernel calls (steps) from the first one that writes a value to the
//! last one that reads it. Values are placed in order of their first step: a value takes the
//! smallest free block that fits it, else grows the largest free block, else opens a new block.
//! Blocks are sized at the end, to their largest tenant.

/// One value to place: its length in f32s and the steps it lives across, inclusive.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lifetime {
    pub len: usize,
    pub first: usize,
    pub last: usize,
}

/// The block of every value (in input order) and the size of every block.
pub(crate) fn assign(values: &[Lifetime]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&v| (values[v].first, values[v].last));
    let mut block_of = vec![usize::MAX; values.len()];
    let mut sizes: Vec<usize> = vec![];
    // Blocks in use, with the last step of their tenant; and free blocks.
    let mut busy: Vec<(usize, usize)> = vec![];
    let mut free: Vec<usize> = vec![];
    for v in order {
        let Lifetime { len, first, .. } = values[v];
        busy.retain(|&(last, block)| {
            let done = last < first;
            if done {
                free.push(block);
            }
            !done
        });
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
        busy.push((values[v].last, block));
    }
    (block_of, sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: &Lifetime, b: &Lifetime) -> bool {
        a.first <= b.last && b.first <= a.last
    }

    /// Values sharing a block never live at once, every block fits its tenants, and a chain
    /// (each value read only by the next step) needs two blocks.
    #[test]
    fn shared_blocks_never_hold_two_live_values() {
        let mut seed = 7u64;
        let mut next = |m: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        for _ in 0..200 {
            let values: Vec<Lifetime> = (0..next(30) + 1)
                .map(|_| {
                    let first = next(50);
                    Lifetime { len: next(100) + 1, first, last: first + next(10) }
                })
                .collect();
            let (block_of, sizes) = assign(&values);
            for (i, a) in values.iter().enumerate() {
                assert!(sizes[block_of[i]] >= a.len);
                for (j, b) in values.iter().enumerate().skip(i + 1) {
                    assert!(block_of[i] != block_of[j] || !overlaps(a, b), "{a:?} and {b:?} share a block");
                }
            }
        }
        let chain: Vec<Lifetime> = (0..10).map(|i| Lifetime { len: 4, first: i, last: i + 1 }).collect();
        assert_eq!(assign(&chain).1.len(), 2);
    }
}
