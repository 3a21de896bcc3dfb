#!/usr/bin/env bash
# CI for what ships: builds the static and the dynamic binaries and the .deb, checks the .deb's
# contents, maintainer scripts and lintian, verifies the systemd unit, installs the package into
# a throw-away root (dpkg --root, never onto this machine) and runs it there, runs the static
# binary and its drop-in names against vmx-sim with only CAP_SYS_BOOT, and prints the figures.
set -euo pipefail
# `grep -c >/dev/null`, never `grep -q`, after a pipe: -q stops reading at the first match, and
# under pipefail the writer's broken pipe then fails the check that matched.
cd "$(dirname "$0")/.."
say() { printf 'shipping: %s\n' "$*"; }
fail() { printf 'shipping: FAILED: %s\n' "$*" >&2; exit 1; }

static=$(scripts/build-static.sh | tail -n1)
deb=$(scripts/build-deb.sh | tail -n1)
dynamic=target/release/toolbox

# The static binary: no interpreter, no shared libraries, within the size budget.
if readelf -l "$static" | grep -c 'INTERP' >/dev/null || readelf -d "$static" | grep -c 'NEEDED' >/dev/null; then
    fail "$static is not static"
fi
static_size=$(stat -c %s "$static")
max_static=$((3 * 1000 * 1000))
[ "$static_size" -le "$max_static" ] || fail "static binary $static_size bytes > $max_static"
if readelf -d "$dynamic" | grep -c 'libpam' >/dev/null; then
    grep -q '^Depends:.*libpam0g' <(dpkg-deb -f "$deb") || fail "links libpam, no Depends on libpam0g"
else
    say "note: $dynamic does not link libpam (nothing in the agent reaches the PAM backend yet)"
fi

# The package's files and scripts.
contents=$(dpkg-deb -c "$deb" | awk '{print $6}')
for f in ./usr/bin/toolbox ./usr/bin/vmware-rpctool ./usr/bin/vmware-checkvm ./usr/bin/vmtoolsd \
    ./lib/systemd/system/toolbox.service ./etc/toolbox/toolbox.toml ./etc/pam.d/toolbox \
    ./etc/vmware-tools/ ./usr/share/man/man1/toolbox.1.gz ./usr/share/man/man1/vmware-rpctool.1.gz \
    ./usr/share/bash-completion/completions/toolbox ./usr/share/zsh/vendor-completions/_toolbox \
    ./usr/share/fish/vendor_completions.d/toolbox.fish ./usr/share/doc/toolbox/copyright; do
    grep -qxF "$f" <<<"$contents" || fail "$deb lacks $f"
done
control=$(mktemp -d)
root=$(mktemp -d)
vmx=$(mktemp -d)
sim_pid=""
agent_pid=""
share=""
cleanup() {
    [ -n "$agent_pid" ] && kill "$agent_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    rm -rf "$control" "$root" "$vmx" ${share:+"$share"}
}
trap cleanup EXIT
dpkg-deb -e "$deb" "$control"
for s in postinst prerm postrm; do
    sh -n "$control/$s" || fail "$s: syntax"
    grep -q 'DPKG_ROOT' "$control/$s" || fail "$s ignores DPKG_ROOT"
done
for k in 'Conflicts: open-vm-tools' 'Replaces: open-vm-tools' 'Provides: open-vm-tools'; do
    grep -qxF "$k" "$control/control" || fail "control lacks $k"
done
grep -qxF /etc/toolbox/toolbox.toml "$control/conffiles" || fail "config is no conffile"

if command -v lintian >/dev/null 2>&1; then
    lintian --fail-on error --suppress-tags-from-file /dev/null "$deb" || fail "lintian errors"
    say "lintian: no errors"
else
    say "SKIPPED: lintian not installed (scripts/setup.sh installs it)"
fi

# Into a throw-away root. The maintainer scripts run outside a chroot (the root has no shell)
# and, seeing DPKG_ROOT, touch nothing of this machine.
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/log"
touch "$root/var/lib/dpkg/status"
# The root holds no other package, so dependencies are forced (and dpkg's note on them dropped).
dpkg --root="$root" --log="$root/var/log/dpkg.log" --force-script-chrootless --force-depends \
    --install "$deb" >"$root/dpkg.out" 2>&1 || { cat "$root/dpkg.out" >&2; fail "dpkg --root --install"; }
dpkg --root="$root" -s toolbox | grep -c '^Status: install ok installed' >/dev/null || fail "not installed"
for f in usr/bin/toolbox etc/toolbox/toolbox.toml etc/pam.d/toolbox lib/systemd/system/toolbox.service; do
    [ -e "$root/$f" ] || fail "$f missing after install"
done
[ "$(readlink "$root/usr/bin/vmware-rpctool")" = toolbox ] || fail "vmware-rpctool link"
version=$("$root/usr/bin/toolbox" --version)
[ "$version" = "toolbox $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)" ] || fail "--version: $version"
"$root/usr/bin/toolbox" config check "$root/etc/toolbox/toolbox.toml" >/dev/null || fail "config check"
zcat "$root/usr/share/man/man1/toolbox.1.gz" | grep -c '^\.TH toolbox 1' >/dev/null || fail "man page"
say "installed into a throw-away root: $version, config valid"

# The unit, against the installed tree (its ExecStart must exist there).
if systemd-analyze --version >/dev/null 2>&1; then
    # verify resolves ExecStart on this machine: point it at the installed copy.
    unitdir=$root/unit-check
    mkdir -p "$unitdir"
    sed "s|^ExecStart=/usr/bin/toolbox|ExecStart=$root/usr/bin/toolbox|" \
        "$root/lib/systemd/system/toolbox.service" >"$unitdir/toolbox.service"
    systemd-analyze verify --man=no "$unitdir/toolbox.service" || fail "systemd-analyze verify"
    say "systemd-analyze verify: ok"
else
    say "SKIPPED: systemd-analyze cannot run here; the unit is unverified"
fi

# The static binary against the simulator, with only CAP_SYS_BOOT (what LinuxKit grants).
cargo build -q --bin vmx-sim
target/debug/vmx-sim serve "$vmx" >/dev/null 2>&1 &
sim_pid=$!
for _ in $(seq 100); do [ -S "$vmx/ctl.sock" ] && break; sleep 0.05; done
links=$root/static-links
mkdir -p "$links"
for name in vmware-rpctool vmware-checkvm vmtoolsd; do ln -s "$static" "$links/$name"; done
export TOOLBOX_TRANSPORT="unix:$vmx"
target/debug/vmx-sim -d "$vmx" info set guestinfo.ci value-from-vmx >/dev/null
only_boot=(setpriv --inh-caps=-all,+sys_boot --ambient-caps=-all,+sys_boot --bounding-set=-all,+sys_boot)
"${only_boot[@]}" "$links/vmtoolsd" -c linuxkit/toolbox.toml >"$vmx/agent.log" 2>&1 &
agent_pid=$!
ip=$(target/debug/vmx-sim -d "$vmx" vm.ip --timeout 20) || fail "no IP from the agent: $(tail -n5 "$vmx/agent.log")"
target/debug/vmx-sim -d "$vmx" guest.info | grep -ci 'tools' >/dev/null || fail "guest.info"
[ "$("${only_boot[@]}" "$links/vmware-rpctool" 'info-get guestinfo.ci')" = value-from-vmx ] || fail "vmware-rpctool"
[ "$("${only_boot[@]}" "$links/vmtoolsd" --cmd 'info-get guestinfo.ci')" = value-from-vmx ] || fail "vmtoolsd --cmd"
[ "$("$root/usr/bin/vmware-rpctool" 'info-get guestinfo.ci')" = value-from-vmx ] || fail "the installed vmware-rpctool"
set +e
"${only_boot[@]}" "$links/vmware-rpctool" 'info-get guestinfo.none' 2>/dev/null
rc=$?
set -e
[ "$rc" = 1 ] || fail "a refused request exits $rc, not 1"
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "the agent did not stop cleanly on SIGTERM: $(tail -n3 "$vmx/agent.log")"
say "static binary with only CAP_SYS_BOOT: tools running, IP $ip, drop-in names answer"

# Guest operations through the static binary, as root (a helper needs CAP_SETUID/CAP_SETGID to
# become the user): a file up and down and a program run as the test accounts' bob (uid 2002,
# shadow backend over tests/fixtures/auth, never the machine's own accounts).
fixtures=$PWD/tests/fixtures/auth
share=$(mktemp -d)
chmod 0777 "$share"
printf '[power]\nmethod = "none"\nscripts_dir = "/nonexistent"\n[auth]\nbackend = "shadow"\npasswd_file = "%s/passwd"\ngroup_file = "%s/group"\nshadow_file = "%s/shadow"\nshells_file = "%s/shells"\n' \
    "$fixtures" "$fixtures" "$fixtures" "$fixtures" >"$vmx/ops.toml"
"$static" -c "$vmx/ops.toml" run >"$vmx/ops.log" 2>&1 &
agent_pid=$!
export GOVC_GUEST_LOGIN=bob:bob-pw-2
guest() { target/debug/vmx-sim -d "$vmx" "$@"; }
guest vm.ip --timeout 20 >/dev/null || fail "no IP from the agent: $(tail -n5 "$vmx/ops.log")"
head -c 3000000 /dev/urandom >"$vmx/payload"
guest guest.upload "$vmx/payload" "$share/up.bin" || fail "guest.upload: $(tail -n3 "$vmx/ops.log")"
[ "$(stat -c %u "$share/up.bin")" = 2002 ] || fail "the upload is not bob's"
guest guest.download "$share/up.bin" "$vmx/back" || fail "guest.download"
cmp -s "$vmx/payload" "$vmx/back" || fail "downloaded bytes differ from uploaded"
[ "$(guest guest.run /usr/bin/id -u)" = 2002 ] || fail "guest.run does not run as bob"
set +e
guest guest.run /bin/sh -c "'exit 7'" 2>/dev/null
rc=$?
set -e
[ "$rc" = 7 ] || fail "guest.run exits $rc, not the program's 7"
unset GOVC_GUEST_LOGIN
kill -TERM "$agent_pid"
wait "$agent_pid" || fail "the agent did not stop cleanly on SIGTERM: $(tail -n3 "$vmx/ops.log")"
agent_pid=""
say "static binary: 3 MB up and down and program runs as a test user through vmx-sim"

# Figures: one-shot vmware-rpctool beside /bin/true, paired in the same loop.
runs=200
# $EPOCHREALTIME (bash 5, microseconds) reads the clock without a fork of its own.
t_tool=0 t_true=0
for _ in $(seq $runs); do
    a=${EPOCHREALTIME/[.,]/}; "$links/vmware-rpctool" 'info-get guestinfo.ci' >/dev/null
    b=${EPOCHREALTIME/[.,]/}; /bin/true
    c=${EPOCHREALTIME/[.,]/}
    t_tool=$((t_tool + 10#$b - 10#$a)) t_true=$((t_true + 10#$c - 10#$b))
done
unset TOOLBOX_TRANSPORT
say "figures: static $(stat -c %s "$static") B, dynamic $(stat -c %s "$dynamic") B, .deb $(stat -c %s "$deb") B"
say "figures: vmware-rpctool 'info-get guestinfo.ci' $((t_tool / runs)) us, /bin/true $((t_true / runs)) us (mean of $runs, paired)"
