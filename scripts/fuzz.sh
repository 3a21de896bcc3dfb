#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 20), starting from fuzz/seeds.
# cargo-fuzz is installed when missing; the toolchain here is stable, so RUSTC_BOOTSTRAP lets it
# pass the sanitizer flags. When cargo-fuzz cannot be had the script says so in one line; a
# target that does not build or that crashes fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked >/dev/null 2>&1 || {
        echo "fuzz: SKIPPED: cargo-fuzz could not be installed"
        exit 0
    }
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build >/dev/null
for target in $(cargo fuzz list); do
    corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    echo "fuzz: $target for ${secs}s" >&2
    set +e
    cargo fuzz run "$target" "$corpus" "fuzz/seeds/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=512 -max_len=65536 >"fuzz/$target.log" 2>&1
    rc=$?
    set -e
    grep -E '^Done' "fuzz/$target.log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "fuzz/$target.log"
        echo "fuzz: $target failed (artifacts in fuzz/artifacts/$target)"
        exit 1
    fi
    rm -f "fuzz/$target.log"
done
