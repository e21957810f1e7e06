#!/usr/bin/env bash
# Builds the fuzz targets in fuzz/ (libFuzzer, on stable Rust) and runs each
# for SECONDS (default 30) from its committed seeds; fails if a target
# crashes, leaks past its memory limit or times out on an input.
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default: every target)
# A crash leaves its input in fuzz/artifacts/TARGET/; replay it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-30}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=($(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^weir-fuzz$'))
fi

# What cargo-fuzz passes, on stable: sanitizer coverage (8-bit counters, the
# PC table and comparison tracing) for libFuzzer, and `--cfg fuzzing`. An
# explicit --target keeps these flags off build scripts and proc macros,
# which would not link against libFuzzer's coverage hooks.
host=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares"
cargo build --release --locked --target "$host" --bins

for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    corpus=corpus/$t
    mkdir -p "$corpus" "artifacts/$t"
    # Inputs are capped at 1 MiB; a frame may claim 16 MiB but memory must
    # follow what arrives, so 256 MB of RSS and of any one allocation is
    # plenty, and more is a finding.
    "target/$host/release/$t" "$corpus" "seeds/$t" \
        -max_total_time="$seconds" -max_len=1048576 \
        -rss_limit_mb=256 -malloc_limit_mb=256 -timeout=10 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1
done
