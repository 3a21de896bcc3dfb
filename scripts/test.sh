#!/usr/bin/env bash
# The project's test command: lints, the real port instructions in a QEMU guest, a short fuzz
# run, what ships (both release builds, the .deb, the unit), then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
scripts/qemu-vmport.sh
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
scripts/check-shipping.sh
cargo nextest run --workspace --no-fail-fast
