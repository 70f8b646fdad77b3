//! The MPI world on 2 ranks (cargo feature `mpi`): this test starts itself under `mpirun -np 2`,
//! and each rank checks the collectives against what the other contributed.
#![cfg(feature = "mpi")]

use skipgrad_dist::{Collective, Mpi};
use std::process::Command;

/// Set in the ranks `mpirun` starts.
const RANK_ENV: &str = "SKIPGRAD_DIST_TEST_RANK";

#[test]
fn two_ranks_sum_broadcast_and_share_a_machine() {
    if std::env::var_os(RANK_ENV).is_some() {
        return rank();
    }
    let out = Command::new("mpirun")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,vader")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env(RANK_ENV, "1")
        .args(["--oversubscribe", "--bind-to", "none", "-np", "2"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "two_ranks_sum_broadcast_and_share_a_machine", "--nocapture"])
        .output()
        .expect("mpirun starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("rank 0 of 2 checked") && stdout.contains("rank 1 of 2 checked"), "{stdout}");
}

/// One rank's checks: what it sums and receives depends on the other rank's contribution.
fn rank() {
    let world = Mpi::initialize().expect("MPI initializes once");
    let (rank, size) = (world.rank(), world.size());
    assert_eq!((size, world.local_size()), (2, 2));
    // Rank r contributes r + 1 and r + 0.25: the sums are 3 and 1.5 on both.
    let mut values = vec![rank as f32 + 1.0, rank as f32 + 0.25];
    world.allreduce_sum_f32(&mut values);
    assert_eq!(values, [3.0, 1.5]);
    let mut wide = [rank as f64 * 1e-20 + 1.0];
    world.allreduce_sum_f64(&mut wide);
    assert_eq!(wide, [2.0 + 1e-20]);
    // Rank 1 broadcasts.
    let mut floats = [rank as f32; 3];
    world.broadcast_f32(&mut floats, 1);
    assert_eq!(floats, [1.0; 3]);
    let mut words = [if rank == 0 { u64::MAX } else { 0 }];
    world.broadcast_u64(&mut words, 0);
    assert_eq!(words, [u64::MAX]);
    // Rank 0's text, longer than rank 1's and not a whole number of words.
    let mut bytes = if rank == 0 { b"lr 0.1, batch 128".to_vec() } else { b"lr".to_vec() };
    world.broadcast_bytes(&mut bytes, 0);
    assert_eq!(bytes, b"lr 0.1, batch 128");
    world.barrier();
    println!("{} checked", world.describe());
}
