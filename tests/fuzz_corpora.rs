//! Every file of the fuzz corpora (`fuzz/corpus/<target>/`) and of the kept regressions
//! (`fuzz/regressions/<target>/`: inputs that once crashed a target or found a miscompile) runs
//! through its target's body, so `cargo test` replays what the fuzzers found without cargo-fuzz.
//! Then each target runs briefly on random bytes (proptest, which shrinks a failing input):
//! a short, unguided fuzz in every CI run; `fuzz/run.sh` is the long, coverage-guided one.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod targets;

mod common;

use common::config;
use proptest::prelude::*;
use std::path::Path;

/// Runs `target` on every file under `fuzz/corpus/<name>` and `fuzz/regressions/<name>`;
/// returns how many there were.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = 0;
    for dir in [root.join("corpus").join(name), root.join("regressions").join(name)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.expect("a directory entry").path()).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let run = std::panic::catch_unwind(|| target(&bytes));
            assert!(run.is_ok(), "{name} fails on {}", path.display());
            files += 1;
        }
    }
    files
}

#[test]
fn the_idx_corpus_replays() {
    assert!(replay("idx", targets::idx) > 0, "no corpus for idx");
}

#[test]
fn the_cifar_corpus_replays() {
    assert!(replay("cifar", targets::cifar) > 0, "no corpus for cifar");
}

#[test]
fn the_checkpoint_corpus_replays() {
    assert!(replay("checkpoint", targets::checkpoint) > 0, "no corpus for checkpoint");
}

#[test]
fn the_graph_builder_corpus_replays() {
    assert!(replay("graph_builder", targets::graph_builder) > 0, "no corpus for graph_builder");
}

#[test]
fn the_differential_corpus_replays() {
    assert!(replay("differential", targets::differential) > 0, "no corpus for differential");
}

/// The differential check on 32x32 images, whose Winograd rows of 8 tiles transform in f32x8
/// and, with 16 lanes, multiply in f32x16 over blocks of 32 tiles (the corpus's random cases are
/// rarely that large): a residual block's training step at 8 and 16 lanes and its inference
/// pass, each compared (none skipped for a ReLU input at the kink).
#[test]
fn winograd_rows_of_8_tiles_compile_to_what_the_reference_computes() {
    for (lanes, inference) in [(8, false), (16, false), (16, true)] {
        let case = targets::Case {
            blocks: vec![skipgrad::testing::Block::Residual { stride: 1 }],
            batch: 2,
            channels: 8,
            hw: 32,
            seed: 0,
            threads: 2,
            winograd: skipgrad::jit::WinogradTiles::F4,
            inference,
            wide: false,
            lanes: Some(lanes),
        };
        assert!(targets::differential_case(&case), "skipped: {case:?}");
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn readers_and_the_checkpoint_loader_survive_random_bytes(data in prop::collection::vec(any::<u8>(), 0..600)) {
        targets::idx(&data);
        targets::cifar(&data);
        targets::checkpoint(&data);
    }

    #[test]
    fn the_graph_builder_survives_random_calls(data in prop::collection::vec(any::<u8>(), 0..400)) {
        targets::graph_builder(&data);
    }
}

proptest! {
    #![proptest_config(config(8))]

    #[test]
    fn random_graphs_compile_to_what_the_reference_computes(data in prop::collection::vec(any::<u8>(), 16..40)) {
        targets::differential(&data);
    }
}
