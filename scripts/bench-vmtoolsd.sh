#!/usr/bin/env bash
# Guest file transfer figures of toolbox and of open-vm-tools' vmtoolsd in the same run, both
# through unix:DIR against the VMX simulator (benches/guestfiles.rs prints them).
#
# vmtoolsd comes from the distribution's open-vm-tools package, fetched with `apt-get download`
# and unpacked into a scratch directory with `dpkg -x` (with whichever of its library
# dependencies the machine lacks); nothing is installed. It speaks vsock to the VMX, so an
# LD_PRELOAD shim (scripts/vsock-unix-shim.c, compiled here) maps its AF_VSOCK sockets onto the
# simulator's Unix sockets. It runs as a child of the benchmark, only against the simulator,
# with no plugin but vix and hgfsServer (so nothing can touch power state), inside a mount
# namespace of its own where /etc/passwd, /etc/group, /etc/shadow, the PAM service and /var/log
# are the benchmark's, and it is killed when the benchmark ends.
#
# Needs root (the namespace, the logins). Not part of scripts/test.sh: it downloads packages and
# moves gigabytes.
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/vmtoolsd-bench
mkdir -p "$work"
work=$(cd "$work" && pwd)
root="$work/root"

if [ ! -x "$root/usr/bin/vmtoolsd" ]; then
    echo "fetching open-vm-tools (unpacked into $work, not installed)" >&2
    (
        cd "$work"
        apt-get download open-vm-tools
        # Only the library packages this machine does not have.
        for dep in $(apt-cache depends open-vm-tools | awk '$1 == "Depends:" && $2 ~ /^lib/ { print $2 }'); do
            if ! dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q 'ok installed'; then
                apt-get download "$dep"
            fi
        done
        for deb in ./*.deb; do dpkg -x "$deb" "$root"; done
    )
fi
libs="$root/usr/lib/x86_64-linux-gnu"
missing=$(LD_LIBRARY_PATH="$libs" ldd "$root/usr/bin/vmtoolsd" "$libs"/open-vm-tools/plugins/common/*.so | grep 'not found' || true)
if [ -n "$missing" ]; then
    echo "vmtoolsd cannot run here, libraries missing:" >&2
    echo "$missing" >&2
    exit 1
fi

cc -O2 -Wall -shared -fPIC -o "$work/vsock-unix-shim.so" scripts/vsock-unix-shim.c -ldl

# Only the guest-operations plugins: no powerOps, no timeSync, no guestInfo.
rm -rf "$work/plugins"
mkdir -p "$work/plugins/common" "$work/plugins/vmsvc"
cp "$libs/open-vm-tools/plugins/common/libvix.so" "$libs/open-vm-tools/plugins/common/libhgfsServer.so" "$work/plugins/common/"

cat > "$work/tools.conf" <<'CONF'
[guestoperations]
# Name/password logins through PAM (Auth_AuthenticateUser), not the VGAuth service.
useVGAuth = false
[logging]
log = true
vmtoolsd.level = warning
vmtoolsd.handler = std
vmsvc.level = warning
vmsvc.handler = std
CONF

# The wrapper the benchmark starts as `run-vmtoolsd.sh ETC VMX_DIR`; every step execs, so the
# benchmark's child is vmtoolsd itself.
cat > "$work/run-vmtoolsd.sh" <<WRAPPER
#!/bin/sh
set -e
if [ "\${1:-}" != --inside ]; then
    exec unshare --mount --propagation private "\$0" --inside "\$@"
fi
etc=\$2 vmx=\$3
mount -t tmpfs tmpfs /var/log
for f in passwd group shadow; do mount --bind "\$etc/\$f" "/etc/\$f"; done
mount -t tmpfs tmpfs /etc/pam.d
printf 'auth required pam_unix.so\naccount required pam_unix.so\n' > /etc/pam.d/vmtoolsd
VSOCK_SHIM_DIR="\$vmx" LD_PRELOAD="$work/vsock-unix-shim.so" LD_LIBRARY_PATH="$libs" \\
    exec "$root/usr/bin/vmtoolsd" -n vmsvc -c "$work/tools.conf" \\
    --common-path "$work/plugins/common" --plugin-path "$work/plugins/vmsvc"
WRAPPER
chmod +x "$work/run-vmtoolsd.sh"

LD_LIBRARY_PATH="$libs" "$root/usr/bin/vmtoolsd" --version 2>/dev/null | head -1 || true
VMTOOLSD_CMD="$work/run-vmtoolsd.sh" cargo bench --bench guestfiles
