//! Replays the whole fuzz corpus (`testdata/fuzz/<target>/*`, the seeds plus every input the
//! fuzzers kept or crashed on) through the same entry points the cargo-fuzz targets call
//! (`cni_multi::fuzzing`). Deterministic, no root, runs in `make test`.

use std::path::Path;

fn corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let mut total = 0;
    for (target, run) in cni_multi::fuzzing::TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "no corpus for fuzz target {target}");
        for f in &files {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            let res = std::panic::catch_unwind(|| run(&data));
            assert!(res.is_ok(), "fuzz target {target} panics on {}", f.display());
        }
        total += files.len();
    }
    assert!(total > 100, "corpus unexpectedly small: {total} inputs");
}

#[test]
fn fuzz_entry_points_survive_truncation_and_bit_flips() {
    // cheap deterministic mutations of every seed: every prefix length of the small ones,
    // and a walking bit flip; all must return without panicking
    for (target, run) in cni_multi::fuzzing::TARGETS {
        for f in corpus(target).iter().take(40) {
            let data = std::fs::read(f).expect("read seed");
            let step = (data.len() / 64).max(1);
            for n in (0..data.len()).step_by(step) {
                let cut = data.get(..n).unwrap_or(&data);
                assert!(std::panic::catch_unwind(|| run(cut)).is_ok(), "{target} panics on {} cut at {n}", f.display());
                let mut flipped = data.clone();
                if let Some(b) = flipped.get_mut(n) {
                    *b ^= 1 << (n % 8);
                }
                assert!(
                    std::panic::catch_unwind(|| run(&flipped)).is_ok(),
                    "{target} panics on {} with bit {} of byte {n} flipped",
                    f.display(),
                    n % 8
                );
            }
        }
    }
}
