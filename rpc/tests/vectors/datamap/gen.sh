#!/usr/bin/env bash
# Regenerates the DataMap vectors with open-vm-tools' own dataMap.c and hashMap.c.
#
#   rpc/tests/vectors/datamap/gen.sh PATH/TO/open-vm-tools    (the directory holding lib/)
#
# 1. compiles lib/dataMap/dataMap.c and lib/hashMap/hashMap.c from that tree with the small
#    headers in shim/ (standing in for vm_basic_types.h, util.h, str.h, ...) and gen_datamap.c;
# 2. `gen_datamap gen` writes theirs/<case>.hex and theirs/verdicts.txt;
# 3. the crate's test writes ours/<case>.hex, our encoder's bytes for the same cases;
# 4. `gen_datamap check` decodes those with DataMap_Deserialize and writes ours/checked.txt.
# Installs a C compiler when missing (Debian).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ovt=${1:?usage: gen.sh PATH/TO/open-vm-tools}
for f in lib/dataMap/dataMap.c lib/hashMap/hashMap.c lib/include/dataMap.h lib/include/hashMap.h; do
    [ -f "$ovt/$f" ] || { echo "gen.sh: $ovt/$f: no such file" >&2; exit 1; }
done
if ! command -v cc >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "gen.sh: installing gcc" >&2
    $SUDO apt-get update -qq >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shim/ first, so its headers stand in for open-vm-tools' own; dataMap.h and hashMap.h come
# from the tree. VMX86_DEBUG turns on hashMap.c's own consistency checks.
cflags=(-std=gnu11 -O1 -DVMX86_DEBUG -I"$here/shim" -I"$ovt/lib/include")
cc "${cflags[@]}" -Wno-pointer-sign -c "$ovt/lib/dataMap/dataMap.c" -o "$work/dataMap.o"
cc "${cflags[@]}" -c "$ovt/lib/hashMap/hashMap.c" -o "$work/hashMap.o"
cc "${cflags[@]}" -Wall -c "$here/gen_datamap.c" -o "$work/gen_datamap.o"
cc -o "$work/gen_datamap" "$work/gen_datamap.o" "$work/dataMap.o" "$work/hashMap.o"

mkdir -p "$here/theirs" "$here/ours"
"$work/gen_datamap" gen "$here"
(cd "$here/../../.." && TOOLBOX_WRITE_OUR_VECTORS=1 cargo test -q -p toolbox-rpc --test datamap our_encodings)
"$work/gen_datamap" check "$here"
