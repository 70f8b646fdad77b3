//! The collective operations data-parallel training needs, behind one trait: [`Collective`]. A
//! world of processes (ranks) sums buffers across every rank, broadcasts one rank's buffer to
//! all, waits at a barrier, and stops every rank when one fails. [`Single`] is the world of one
//! process, always built; `Mpi` (cargo feature `mpi`) is a world launched by `mpirun`, on one
//! machine or many.
//!
//! Every operation is collective: every rank calls the same operations in the same order with
//! buffers of the same length, or the world hangs. [`Collective::abort`] is the way out of a rank
//! that cannot go on: it stops every rank, where returning would leave the others waiting.

#[cfg(feature = "mpi")]
mod mpi_world;

#[cfg(feature = "mpi")]
pub use mpi_world::Mpi;

/// A world of processes that compute together.
pub trait Collective {
    /// This process's rank: 0 to `size() - 1`.
    fn rank(&self) -> usize;
    /// Processes in the world.
    fn size(&self) -> usize;
    /// Processes of the world on this machine (this one included), which share its cores.
    fn local_size(&self) -> usize;
    /// Replaces `values` on every rank by their element-wise sum over the ranks.
    fn allreduce_sum_f32(&self, values: &mut [f32]);
    /// [`Collective::allreduce_sum_f32`] for f64.
    fn allreduce_sum_f64(&self, values: &mut [f64]);
    /// Replaces `values` on every rank by rank `root`'s.
    fn broadcast_f32(&self, values: &mut [f32], root: usize);
    /// [`Collective::broadcast_f32`] for u64.
    fn broadcast_u64(&self, values: &mut [u64], root: usize);
    /// Replaces `bytes` on every rank by rank `root`'s (of any length: the length goes first).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) {
        let mut len = [bytes.len() as u64];
        self.broadcast_u64(&mut len, root);
        let mut words: Vec<u64> = bytes.chunks(8).map(|c| c.iter().rev().fold(0, |w, &b| w << 8 | b as u64)).collect();
        words.resize(len[0].div_ceil(8) as usize, 0);
        self.broadcast_u64(&mut words, root);
        *bytes = words.iter().flat_map(|w| w.to_le_bytes()).take(len[0] as usize).collect();
    }
    /// Returns on each rank once every rank has called it.
    fn barrier(&self);
    /// Stops every rank of the world, this one with exit code `code`.
    fn abort(&self, code: i32) -> !;
    /// The world's name in messages: "rank 1 of 2" (empty for a world of one).
    fn describe(&self) -> String {
        match self.size() {
            1 => String::new(),
            n => format!("rank {} of {n}", self.rank()),
        }
    }
}

/// The world of one process: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn local_size(&self) -> usize {
        1
    }

    fn allreduce_sum_f32(&self, _: &mut [f32]) {}

    fn allreduce_sum_f64(&self, _: &mut [f64]) {}

    fn broadcast_f32(&self, _: &mut [f32], _: usize) {}

    fn broadcast_u64(&self, _: &mut [u64], _: usize) {}

    fn barrier(&self) {}

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_world_of_one_leaves_buffers_as_they_are() {
        let mut v = [1.5f32, -2.0];
        Single.allreduce_sum_f32(&mut v);
        Single.broadcast_f32(&mut v, 0);
        assert_eq!(v, [1.5, -2.0]);
        assert_eq!((Single.rank(), Single.size(), Single.describe()), (0, 1, String::new()));
    }

    #[test]
    fn bytes_travel_as_words() {
        for text in ["", "a", "run.model resnet20", "exactly8"] {
            let mut bytes = text.as_bytes().to_vec();
            Single.broadcast_bytes(&mut bytes, 0);
            assert_eq!(bytes, text.as_bytes());
        }
    }
}
