#!/usr/bin/env bash
# The agent without VMware: starts the VMX simulator and `toolbox run` on a temporary unix:DIR,
# waits for the guest's IP, prints what the guest reported, asks for a reboot, then stops both.
# Nothing of this machine runs: power method "none" halts nothing, and the power scripts are
# looked up in the demo's own directory, whose poweroff-vm-default only notes that it ran.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin toolbox --bin vmx-sim
BIN=$PWD/target/release
DIR=$(mktemp -d)
cleanup() {
    [ -n "${AGENT:-}" ] && kill "$AGENT" 2>/dev/null || true
    [ -n "${SIM:-}" ] && kill "$SIM" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
mkdir "$DIR/scripts"
cat >"$DIR/scripts/poweroff-vm-default" <<'SCRIPT'
#!/bin/sh
echo "demo poweroff-vm-default ran (pid $$)" >>"$(dirname "$0")/ran.log"
SCRIPT
chmod +x "$DIR/scripts/poweroff-vm-default"
cat >"$DIR/toolbox.toml" <<CONF
log_level = "info"
[power]
method = "none"
scripts_dir = "$DIR/scripts"
CONF
"$BIN/vmx-sim" serve "$DIR/vmx" 2>"$DIR/sim.log" &
SIM=$!
for _ in $(seq 50); do [ -S "$DIR/vmx/ctl.sock" ] && break; sleep 0.1; done
# -s: standalone mode, every RPC traced on stderr.
"$BIN/toolbox" -s -c "$DIR/toolbox.toml" --transport "unix:$DIR/vmx" 2>"$DIR/agent.log" &
AGENT=$!
echo "== vmx-sim vm.ip"
"$BIN/vmx-sim" -d "$DIR/vmx" vm.ip --timeout 10
sleep 0.5
echo "== vmx-sim guest.info"
"$BIN/vmx-sim" -d "$DIR/vmx" guest.info
echo "== vmx-sim vm.power -r"
"$BIN/vmx-sim" -d "$DIR/vmx" vm.power -r
for _ in $(seq 50); do [ -s "$DIR/scripts/ran.log" ] && break; sleep 0.1; done
echo "== the demo's own power script"
cat "$DIR/scripts/ran.log" 2>/dev/null || echo "(poweroff-vm-default did not run)"
echo "== the agent's trace (toolbox -s)"
kill -TERM "$AGENT"
wait "$AGENT" 2>/dev/null || true
AGENT=
sed -n '1,40p' "$DIR/agent.log"
