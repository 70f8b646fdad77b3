//! The MPI world (cargo feature `mpi`): rsmpi over the MPI library the program was built with,
//! launched by `mpirun -np N` on one machine or, with a hostfile, many.

use crate::Collective;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::cell::RefCell;

/// The world `mpirun` started (a world of one when the program was started without it).
/// Dropping it finalizes MPI; only the thread that made it calls MPI.
pub struct Mpi {
    world: SimpleCommunicator,
    local_size: usize,
    /// The send side of an all-reduce (rsmpi has no in-place form).
    scratch_f32: RefCell<Vec<f32>>,
    scratch_f64: RefCell<Vec<f64>>,
    /// Declared last: finalizes MPI after the communicators are gone.
    _universe: Universe,
}

impl Mpi {
    /// Initializes MPI; `None` when it was already initialized in this process.
    pub fn initialize() -> Option<Mpi> {
        // The kernels' worker threads never call MPI: only the main thread does.
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)?;
        let world = universe.world();
        let local_size = world.split_shared(0).size() as usize;
        Some(Mpi {
            world,
            local_size,
            scratch_f32: RefCell::new(vec![]),
            scratch_f64: RefCell::new(vec![]),
            _universe: universe,
        })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn local_size(&self) -> usize {
        self.local_size
    }

    fn allreduce_sum_f32(&self, values: &mut [f32]) {
        let mut send = self.scratch_f32.borrow_mut();
        send.clear();
        send.extend_from_slice(values);
        self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn allreduce_sum_f64(&self, values: &mut [f64]) {
        let mut send = self.scratch_f64.borrow_mut();
        send.clear();
        send.extend_from_slice(values);
        self.world.all_reduce_into(&send[..], values, SystemOperation::sum());
    }

    fn broadcast_f32(&self, values: &mut [f32], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(values);
    }

    fn broadcast_u64(&self, values: &mut [u64], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(values);
    }

    fn barrier(&self) {
        self.world.barrier();
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
