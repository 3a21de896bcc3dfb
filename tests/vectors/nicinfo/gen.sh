#!/usr/bin/env bash
# Regenerates the NIC info XDR vectors with rpcgen's own encoder.
#
#   tests/vectors/nicinfo/gen.sh PATH/TO/open-vm-tools/lib/guestRpc/nicinfo.x
#
# Runs rpcgen on the given nicinfo.x, compiles gen_nicinfo.c against the generated xdr_*
# routines and libtirpc, and writes one .hex file per case beside this script. Installs rpcgen
# (rpcsvc-proto), libtirpc-dev and a C compiler when missing (Debian).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
x=${1:?usage: gen.sh PATH/TO/nicinfo.x}
[ -f "$x" ] || { echo "gen.sh: $x: no such file" >&2; exit 1; }

need=()
command -v rpcgen >/dev/null 2>&1 || need+=(rpcsvc-proto)
[ -f /usr/include/tirpc/rpc/rpc.h ] || need+=(libtirpc-dev)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "gen.sh: installing ${need[*]}" >&2
    $SUDO apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# rpcgen names its outputs after the input's path: run it in the work directory on a copy.
cp "$x" "$work/nicinfo.x"
(
    cd "$work"
    rpcgen -h nicinfo.x -o nicinfo.h
    rpcgen -c nicinfo.x -o nicinfo_xdr.c
    # As open-vm-tools' rpcgen wrapper does: the generated code includes the project's types
    # header instead of <rpc/rpc.h>.
    sed -i 's,<rpc/rpc\.h>,"xdr_types.h",' nicinfo.h
)
cc -std=gnu11 -O1 -Wall -Wno-unused -I"$work" -I"$here" -I/usr/include/tirpc \
    -o "$work/gen_nicinfo" "$here/gen_nicinfo.c" "$work/nicinfo_xdr.c" -ltirpc
"$work/gen_nicinfo" "$here"
