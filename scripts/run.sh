#!/usr/bin/env bash
# The quick start's run command: installs what is missing, builds, and runs the
# product on two simulated pens (one USB, one serial, each with a cartridge):
# mnsim emulates the pens, a private D-Bus bus carries the API, mnd drives the
# pens, and mnctl talks to mnd.
#
# On a terminal it opens a shell in which mnctl talks to that daemon; without
# one it runs a scripted tour and exits 0.  Every process it started is
# stopped when it ends, also on Ctrl-C.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=${MND_BUILD_DIR:-$top/build}/release

if [ "${1:-}" != "--inside" ]; then
        "$top/scripts/install-deps.sh"
        cmake -S "$top" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        ninja -C "$build" mnd mnctl mnsim
        # mnsim runs this script again inside the emulated environment and
        # tears the pens down when it returns.
        exec "$build/firmware-sim/mnsim" --usb 1 --serial 1 --cartridge -- "$0" --inside
fi

# ---- inside mnsim: the pens are visible from here on ----
work=$(mktemp -d "${TMPDIR:-/tmp}/mnd-run.XXXXXX")
bus_pid=
mnd_pid=
cleanup() {
        trap - EXIT INT TERM
        if [ -n "$mnd_pid" ] && kill -0 "$mnd_pid" 2>/dev/null; then
                kill -TERM "$mnd_pid" 2>/dev/null || true   # mnd stops every pen first
                wait "$mnd_pid" 2>/dev/null || true
        fi
        [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null || true
        rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

dbus-daemon --session --fork --print-address=3 --print-pid=4 \
        --address="unix:path=$work/bus.sock" 3>"$work/addr" 4>"$work/pid"
bus_pid=$(cat "$work/pid")
export DBUS_SESSION_BUS_ADDRESS
DBUS_SESSION_BUS_ADDRESS=$(cat "$work/addr")
export MNCTL_BUS=user
export PATH="$build/cli:$build/daemon:$build/firmware-sim:$PATH"

mnd --user --state-dir "$work/state" --config /dev/null 2>"$work/mnd.log" &
mnd_pid=$!
for _ in $(seq 100); do
        [ "$(mnctl list --serials 2>/dev/null | wc -l)" -ge 2 ] && break
        kill -0 "$mnd_pid" 2>/dev/null || { cat "$work/mnd.log" >&2; exit 1; }
        sleep 0.1
done
if [ "$(mnctl list --serials 2>/dev/null | wc -l)" -lt 2 ]; then
        echo "run: the daemon did not see both pens; its log:" >&2
        cat "$work/mnd.log" >&2
        exit 1
fi

tour() {
        cat <<'EOF'

mnd is running on two simulated pens (MNU-0001 over USB, MNS-0001 over serial).
Things to try:
  mnctl list                                   the pens
  mnctl limits                                 the caps per treatment area
  mnctl set-depth MNU 0.5mm                    a depth (checked against every cap)
  mnctl start MNU --area forehead --duration 30s --depth 0.8mm
                                               refused: 0.80 mm is over the forehead's 0.75 mm cap
  mnctl start MNU --area forehead --duration 30s --depth 0.5mm --wait
                                               a session, with a live view (Ctrl-C stops the pen)
  mnctl watch MNU / mnctl monitor              follow a session / every event
  mnctl stop --all                             stop every pen (never refused)
  mnctl audit list --session 1                 the audit log of session 1 (also: audit verify, audit export)
  mnsim ctl help                               the simulator: unplug, reboot, stall, faults...
  mnctl help, mnctl COMMAND --help             what each command takes
EOF
        echo "The daemon's log is $work/mnd.log.  Leave the shell (exit) to stop everything."
        echo
}

if [ -t 0 ] && [ -t 1 ]; then
        tour
        # A shell of the user's own; PS1 says where they are.
        PS1='(mnd demo) \w\$ ' bash --norc -i || true
        exit 0
fi

# No terminal: a scripted tour that checks what it shows.
step() { printf '\n$ %s\n' "$*"; "$@"; }
step mnctl list
step mnctl limits forehead
step mnctl set-depth MNU 0.5mm
step mnctl set-speed MNU 120
printf '\n$ mnctl start MNU --area forehead --duration 3s --depth 0.8mm   (over the cap)\n'
if mnctl start MNU --area forehead --duration 3s --depth 0.8mm; then
        echo "run: a depth over the forehead's cap was not refused" >&2
        exit 1
else
        status=$?
        [ "$status" -eq 4 ] || { echo "run: expected exit status 4 (refused by limits), got $status" >&2; exit 1; }
fi
step mnctl start MNU --area forehead --duration 3s --depth 0.5mm --operator demo --wait | tee "$work/start.txt"
session=$(sed -n 's/.*session \([0-9]*\) completed.*/\1/p' "$work/start.txt")
[ -n "$session" ] || { echo "run: the session's number is not in the output of start" >&2; exit 1; }
step mnctl status MNU
step mnctl list
# The session on the audit log, and the log's hash chain checked.
step mnctl audit list --session "$session" | tee "$work/audit.txt"
grep -q "session-start" "$work/audit.txt" || { echo "run: session $session is not on the audit log" >&2; exit 1; }
step mnctl audit verify
printf '\nThe tour is over; every process is stopped.\n'
