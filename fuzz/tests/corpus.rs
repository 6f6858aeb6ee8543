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

/// The TURN scripts get past the long-term credential check (a NONCE from the 401, a valid
/// MESSAGE-INTEGRITY): without that the fuzzer would only ever see the 401.
#[test]
fn the_turn_seeds_reach_the_authenticated_state_machine() {
    let run = |file: &str| {
        let (_, _, data) = seeds::all()
            .into_iter()
            .find(|(target, name, _)| *target == "turn_core" && *name == file)
            .expect("a TURN seed");
        switchboard_fuzz::turn_core::run(&data)
    };
    for file in ["send", "channel"] {
        let r = run(file);
        assert_eq!((r.allocated, r.permitted), (1, 1), "{file}: {r:?}");
        assert_eq!((r.to_peer, r.to_client), (1, 1), "{file}: {r:?}");
    }
    let r = run("refresh_zero");
    assert_eq!((r.allocated, r.deleted), (1, 1), "{r:?}");
    let r = run("quota_expiry");
    assert_eq!(r.allocated, 2, "{r:?}");
    let r = run("stale_nonce");
    assert_eq!((r.refreshed, r.permitted, r.to_peer), (1, 1, 1), "{r:?}");
}

/// How far a corpus gets into the TURN core, summed over its inputs:
/// `TURN_CORPUS=dir cargo test --manifest-path fuzz/Cargo.toml -- --ignored --nocapture turn_reach`.
#[test]
#[ignore]
fn turn_reach() {
    let dir = std::env::var("TURN_CORPUS").map_or_else(|_| corpus("turn_core"), PathBuf::from);
    let (mut inputs, mut sum) = (0, switchboard_fuzz::turn_core::Reached::default());
    for entry in std::fs::read_dir(&dir).expect("a corpus directory") {
        let data = std::fs::read(entry.expect("an entry").path()).expect("a readable input");
        let r = switchboard_fuzz::turn_core::run(&data);
        inputs += 1;
        sum.allocated += r.allocated;
        sum.permitted += r.permitted;
        sum.refreshed += r.refreshed;
        sum.deleted += r.deleted;
        sum.to_peer += r.to_peer;
        sum.to_client += r.to_client;
    }
    println!("{inputs} inputs in {}: {sum:?}", dir.display());
}
