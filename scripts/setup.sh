#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine: iproute2 (network namespaces for the
# guest-info tests), libpam0g-dev and libclang-dev (the `pam` feature links libpam; its
# bindings are generated with bindgen), whois (mkpasswd, for tests/fixtures/auth/make.sh), and
# lintian and systemd (systemd-analyze) for the packaging checks (scripts/check-shipping.sh), and
# checks for cargo-nextest. Safe to run again.
set -euo pipefail
need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v mkpasswd >/dev/null 2>&1 || need+=(whois)
command -v lintian >/dev/null 2>&1 || need+=(lintian)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
for pkg in libpam0g-dev libclang-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "setup: installing ${need[*]}" >&2
    $SUDO apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi
