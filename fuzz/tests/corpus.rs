//! The kept corpus, replayed through every target without libFuzzer (on stable too):
//! `cargo test --manifest-path fuzz/Cargo.toml`. A crash the fuzzer finds is also kept as a
//! regression test in the crate it concerns; this keeps the whole corpus passing.

use std::path::{Path, PathBuf};

use switchboard_fuzz::{seeds, TARGETS};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

#[test]
fn every_corpus_input_runs_through_its_target() {
    for (name, run) in TARGETS {
        let dir = corpus(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .collect::<Result<Vec<_>, _>>()
            .expect("a readable corpus directory");
        assert!(!entries.is_empty(), "{name} has a corpus");
        for entry in entries {
            let data = std::fs::read(entry.path()).expect("a readable corpus file");
            run(&data);
        }
    }
}

#[test]
fn the_seeds_are_in_the_corpus() {
    for (target, file, data) in seeds::all() {
        let path = corpus(target).join(format!("seed-{file}"));
        let kept = std::fs::read(&path).unwrap_or_default();
        assert!(!kept.is_empty(), "{} is missing", path.display());
        // Offers carry fresh ICE credentials and fingerprints each time: only the kind of
        // input must be the same, not every byte.
        assert_eq!(kept.first(), data.first(), "{}", path.display());
    }
}

/// Writes the seeds into `corpus/` (run once after changing them):
/// `cargo test --manifest-path fuzz/Cargo.toml -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    for (target, file, data) in seeds::all() {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory");
        std::fs::write(dir.join(format!("seed-{file}")), data).expect("a written seed");
    }
}
