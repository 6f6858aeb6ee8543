#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) and runs each in turn for
# SECONDS (default 10) from the corpus kept in fuzz/corpus/. Exits non-zero when a target
# crashes, panics, hangs or runs out of memory; the input that did it is left in
# fuzz/artifacts/<target>/. New inputs found go to a temporary directory, so the kept corpus
# only changes on purpose (see docs/security.md, "Fuzzing").
#
#   bash scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain (only here: everything else builds on stable) and cargo-fuzz,
# both installed when missing. FUZZ_TARGETS="token whip_sdp" runs only those.
#
# The long run recorded in docs/security.md: FUZZ_RUNS=1000000 stops each target after that
# many executions (SECONDS is then only a cap), and FUZZ_KEEP=1 merges what it found into
# the kept corpus, keeping the smallest set of inputs that reaches every edge seen
# (libFuzzer's -set_cover_merge=1 without hit counts, so the corpus stays small).
set -euo pipefail

seconds="${1:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# No sanitizer: the targets drive safe Rust (and the C crypto of aws-lc and OpenSSL, which
# the inputs only reach through fixed keys), so AddressSanitizer would cost about half the
# executions for little. Debug assertions and overflow checks stay on (cargo-fuzz's default
# without -O): an overflow is a finding.
started=$(date +%s)
cargo +nightly fuzz build --sanitizer none
built=$(date +%s)
echo "fuzz: built in $((built - started)) s"

triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bin="$root/fuzz/target/$triple/release"
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in $targets; do
    mkdir -p "$scratch/$target" "artifacts/$target"
    # Kept (fuzz/artifacts/ is not in git) for the numbers docs/security.md records.
    log="artifacts/$target/run.log"
    # -timeout: one input taking 10 s is a hang. The first corpus directory is the one
    # libFuzzer adds to: the scratch one.
    limit=(-max_total_time="$seconds")
    if [[ -n "${FUZZ_RUNS:-}" ]]; then
        limit+=(-runs="$FUZZ_RUNS")
    fi
    if "$bin/$target" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$target/" \
        "$scratch/$target" "corpus/$target" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
        echo "fuzz: $target ok: $runs runs; $(echo "${line#*DONE}" | tr -s ' \t' ' ')"
        if [[ "${FUZZ_KEEP:-}" == 1 ]]; then
            # The smallest set of inputs (kept and new) that reaches every edge seen, plus
            # the seeds under their own names (tests/corpus.rs looks for them).
            minimized="$scratch/$target.min"
            mkdir -p "$minimized"
            "$bin/$target" -set_cover_merge=1 -use_counters=0 "$minimized" \
                "corpus/$target" "$scratch/$target" >"$log.merge" 2>&1
            cp corpus/"$target"/seed-* "$minimized"/
            rm -rf "corpus/$target"
            mv "$minimized" "corpus/$target"
            echo "fuzz: $target corpus: $(ls "corpus/$target" | wc -l) inputs," \
                "$(cat "corpus/$target"/* | wc -c) bytes"
        fi
    else
        echo "fuzz: $target FAILED; the end of its log:" >&2
        tail -40 "$log" >&2
        failed+=("$target")
    fi
done

echo "fuzz: $(($(date +%s) - started)) s in all"
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
