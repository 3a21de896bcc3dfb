#!/usr/bin/env bash
# Builds the dynamic release `toolbox` for distributions: PAM authentication (links libpam), the
# system's glibc and NSS. What the .deb carries (scripts/build-deb.sh). Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --no-default-features --features pam,generate --bin toolbox
echo "$PWD/target/release/toolbox"
