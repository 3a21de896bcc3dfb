#!/usr/bin/env bash
# Runs the real backdoor instructions: boots a static `toolbox` as the init process of a tiny
# QEMU guest (TCG, no KVM needed) whose vmport device answers the VMware backdoor, and checks
#   vmport=on : `toolbox check` reports the backdoor version; opening an RPC channel fails
#               cleanly (QEMU does not emulate the message commands)
#   vmport=off: `toolbox check` fails cleanly (exit 1, one line), no fault
#
# QEMU, a kernel and busybox are unpacked from Debian packages into .cache/qemu (never installed
# system-wide: Debian's qemu-system-x86 conflicts with a newer qemu-utils). When that is not
# possible the script says so in one line and exits 0, unless QEMU_REQUIRED=1.
#
# usage: scripts/qemu-vmport.sh            (from the repository root)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${QEMU_CACHE:-$ROOT/.cache/qemu}
TIMEOUT=${QEMU_TIMEOUT:-120}
mkdir -p "$CACHE"

skip() {
    echo "qemu-vmport: SKIPPED: $*"
    [ "${QEMU_REQUIRED:-0}" = 1 ] && exit 1
    exit 0
}

# ---------------------------------------------------------------- private QEMU, kernel, busybox
unpack() { # unpack PKG... into $CACHE/root
    local dl=$CACHE/debs
    mkdir -p "$dl" "$CACHE/root"
    (cd "$dl" && apt-get download "$@" >/dev/null 2>&1) || return 1
    for deb in "$dl"/*.deb; do dpkg -x "$deb" "$CACHE/root"; done
    rm -f "$dl"/*.deb
}

QEMU=$CACHE/root/usr/bin/qemu-system-x86_64
if [ ! -x "$QEMU" ]; then
    echo "qemu-vmport: unpacking QEMU into $CACHE" >&2
    apt-get update -qq >/dev/null 2>&1 || true
    # The package and every dependency not already installed on this machine.
    deps=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances qemu-system-x86 2>/dev/null |
        grep -v '^ ' | grep -v '^<' | sort -u) || skip "apt-cache cannot resolve qemu-system-x86"
    want=()
    for p in $deps; do
        dpkg -s "$p" >/dev/null 2>&1 || want+=("$p")
    done
    unpack "${want[@]}" || skip "could not download QEMU packages"
fi
[ -x "$QEMU" ] || skip "qemu-system-x86_64 not found after unpacking"
export LD_LIBRARY_PATH=$CACHE/root/usr/lib/x86_64-linux-gnu:$CACHE/root/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
"$QEMU" --version >/dev/null 2>&1 || skip "unpacked QEMU does not run: $("$QEMU" --version 2>&1 | head -1)"

BUSYBOX=$CACHE/root/bin/busybox
[ -x "$BUSYBOX" ] || unpack busybox-static || skip "could not download busybox-static"

KERNEL=$CACHE/vmlinuz
if [ ! -f "$KERNEL" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download linux-image-amd64 >/dev/null 2>&1) || skip "could not download a kernel"
    dep=$(dpkg-deb -f "$tmp"/*.deb Depends | tr ',|' '\n\n' | sed 's/(.*//; s/[[:space:]]//g' |
        grep -m1 '^linux-image-[0-9]') || skip "no kernel package behind linux-image-amd64"
    (cd "$tmp" && apt-get download "$dep" >/dev/null 2>&1) || skip "could not download $dep"
    dpkg-deb --fsys-tarfile "$tmp/${dep}"_*.deb | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
    cp "$tmp"/boot/vmlinuz-* "$KERNEL"
    rm -rf "$tmp"
fi

# ---------------------------------------------------------------- static toolbox
echo "qemu-vmport: building a static toolbox" >&2
BIN=$("$ROOT/scripts/build-static.sh")

# ---------------------------------------------------------------- guest
# The guest's init runs each check and prints "CASE <name> rc=<status>" after its output.
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/root/bin" "$WORK/root/proc" "$WORK/root/dev" "$WORK/root/etc"
echo 'nobody:x:65534:65534:nobody:/:/bin/false' >"$WORK/root/etc/passwd"
echo 'nogroup:x:65534:' >"$WORK/root/etc/group"
cp "$BUSYBOX" "$WORK/root/bin/busybox"
ln -s busybox "$WORK/root/bin/sh"
cp "$BIN" "$WORK/root/bin/toolbox"
ln -s toolbox "$WORK/root/bin/vmware-checkvm"
ln -s toolbox "$WORK/root/bin/vmware-rpctool"
cat >"$WORK/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
run() { name=$1; shift; "$@" 2>&1; echo "CASE $name rc=$?"; }
run check /bin/toolbox --assume-vmware check
run product /bin/toolbox --assume-vmware check --product
run env-override env TOOLBOX_ASSUME_VMWARE=1 /bin/toolbox check
run no-override /bin/toolbox check
run rpc /bin/toolbox --assume-vmware --transport backdoor rpc ping
run noperm /bin/busybox su -s /bin/sh nobody -c '/bin/toolbox --assume-vmware check'
run dropin-checkvm env TOOLBOX_ASSUME_VMWARE=1 /bin/vmware-checkvm
run dropin-checkvm-p env TOOLBOX_ASSUME_VMWARE=1 /bin/vmware-checkvm -p
run dropin-checkvm-off /bin/vmware-checkvm
run dropin-rpctool env TOOLBOX_ASSUME_VMWARE=1 TOOLBOX_TRANSPORT=backdoor /bin/vmware-rpctool ping
echo "GUEST DONE"
/bin/busybox poweroff -f
INIT
chmod 0755 "$WORK/root/init"
python3 "$ROOT/scripts/mkinitramfs.py" "$WORK/root" "$WORK/initrd.gz"

boot() { # boot MACHINE LOG
    timeout -k 5 "$TIMEOUT" "$QEMU" -L "$CACHE/root/usr/share/qemu" -L "$CACHE/root/usr/share/seabios" \
        -L "$CACHE/root/usr/lib/ipxe/qemu" \
        -machine "$1" -accel tcg -m 256 -smp 1 -nodefaults -no-user-config -display none \
        -serial stdio -no-reboot -kernel "$KERNEL" -initrd "$WORK/initrd.gz" \
        -append "console=ttyS0 panic=-1 quiet" </dev/null 2>&1 | tr -d '\r' >"$2" || true
    cp "$2" "$CACHE/last-$(basename "$2")"
    grep -q "GUEST DONE" "$2" || { cat "$2"; echo "qemu-vmport: guest did not finish ($1)"; exit 1; }
}

failures=0
expect() { # expect LOG CASE RC PATTERN
    local out rc
    out=$(awk -v c="CASE $2 " 'index($0, c) == 1 { exit } { buf = buf $0 "\n" } /^CASE / { buf = "" } END { printf "%s", buf }' "$1" | grep -v '^\[' | grep -v '^$' | tail -n 3)
    rc=$(sed -n "s/^CASE $2 rc=\([0-9]*\)$/\1/p" "$1")
    if [ "$rc" = "$3" ] && grep -qE "$4" <<<"$out"; then
        echo "ok   $(basename "$1" .log) $2: rc=$rc: $out"
    else
        echo "FAIL $(basename "$1" .log) $2: rc=$rc (want $3), output: $out (want /$4/)"
        failures=$((failures + 1))
    fi
}

boot pc,vmport=on "$WORK/vmport-on.log"
expect "$WORK/vmport-on.log" check 0 '^VMware software version 6 \(good\)$'
expect "$WORK/vmport-on.log" product 0 '^ESX Server$'
expect "$WORK/vmport-on.log" env-override 0 '^VMware software version 6 \(good\)$'
expect "$WORK/vmport-on.log" no-override 1 '^toolbox: not running on VMware: the hypervisor is "TCGTCGTCGTCG"'
expect "$WORK/vmport-on.log" rpc 1 '^toolbox: backdoor rpci channel: open refused by the VMX'
# Unprivileged on a non-VMware hypervisor: refused before the instruction could fault.
expect "$WORK/vmport-on.log" noperm 1 '^toolbox: not running on VMware, and without I/O permission'
# The drop-in names, as open-vm-tools' checkvm.c and rpctool.c answer.
expect "$WORK/vmport-on.log" dropin-checkvm 0 '^VMware software version 6 \(good\)$'
expect "$WORK/vmport-on.log" dropin-checkvm-p 0 '^ESX Server$'
expect "$WORK/vmport-on.log" dropin-checkvm-off 1 '^Error: vmware-checkvm must be run inside a virtual machine on a VMware hypervisor product\.$'
expect "$WORK/vmport-on.log" dropin-rpctool 1 'open refused by the VMX'

boot pc,vmport=off "$WORK/vmport-off.log"
expect "$WORK/vmport-off.log" check 1 '^toolbox: the backdoor did not answer GETVERSION'
expect "$WORK/vmport-off.log" rpc 1 '^toolbox: backdoor rpci channel: open refused by the VMX'
expect "$WORK/vmport-off.log" dropin-checkvm 1 "^vmware-checkvm: Couldn't get version$"

if [ "$failures" -ne 0 ]; then
    echo "qemu-vmport: $failures check(s) failed"
    exit 1
fi
echo "qemu-vmport: all checks passed"
