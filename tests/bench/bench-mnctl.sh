#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The wall time of one "mnctl list" process against the equivalent busctl
# process, in the same run, against a running mnd with two simulated pens:
# the median of N runs each, interleaved.  Target: mnctl within 1.2x of busctl.
#
# Usage: bench-mnctl.sh MNCTL MND MNSIM [--quick] [N]
# Fails only if a command fails; the figures are for people.
set -u
fail() { echo "bench-mnctl: $*" >&2; exit 1; }

if [ "${1:-}" = inner ]; then
        MNCTL=$2 MND=$3 N=$4 WORK=$5
        "$MND" --user --state-dir "$WORK/state" >"$WORK/mnd.log" 2>&1 &
        mnd=$!
        trap 'kill $mnd 2>/dev/null; wait' EXIT
        # The clients run as any program would, without the device emulation.
        unset LD_PRELOAD
        for i in $(seq 150); do
                [ "$("$MNCTL" --user list --serials 2>/dev/null | wc -l)" = 2 ] && break
                sleep 0.1
        done
        [ "$("$MNCTL" --user list --serials | wc -l)" = 2 ] || fail "mnd did not show two pens"

        pen=$(busctl --user get-property org.microneedle.Mnd1 /org/microneedle/Mnd1 org.microneedle.Mnd1.Manager Pens | awk '{gsub(/"/, "", $3); print $3}')
        names=("mnctl list" "busctl get-property Pens" "mnctl list --serials" "busctl call GetAll (one pen)")
        cmds=(
                "$MNCTL --user list"
                "busctl --user get-property org.microneedle.Mnd1 /org/microneedle/Mnd1 org.microneedle.Mnd1.Manager Pens"
                "$MNCTL --user list --serials"
                "busctl --user call org.microneedle.Mnd1 $pen org.freedesktop.DBus.Properties GetAll s org.microneedle.Mnd1.Pen"
        )
        for c in "${cmds[@]}"; do
                $c >/dev/null || fail "'$c' failed"
                $c >/dev/null   # warm the page cache
        done

        declare -a times
        for ((run = 0; run < N; run++)); do
                for k in "${!cmds[@]}"; do
                        t0=$EPOCHREALTIME
                        ${cmds[k]} >/dev/null
                        t1=$EPOCHREALTIME
                        times[k]+="$(( (${t1/./} - ${t0/./}) )) "
                done
        done

        median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
        declare -a med
        echo "wall time of one process, median of $N runs each (interleaved), against mnd with 2 pens:"
        for k in "${!cmds[@]}"; do
                med[k]=$(median "${times[k]}")
                printf '  %-32s %6d us\n' "${names[k]}" "${med[k]}"
        done
        ratio=$(awk -v a="${med[0]}" -v b="${med[1]}" 'BEGIN {printf "%.2f", a / b}')
        verdict=$(awk -v r="$ratio" 'BEGIN {print (r <= 1.2) ? "within the 1.2x target" : "OVER the 1.2x target"}')
        echo "  mnctl list / busctl get-property = ${ratio}x ($verdict)"
        exit 0
fi

[ $# -ge 3 ] || { echo "usage: $0 MNCTL MND MNSIM [--quick] [N]" >&2; exit 2; }
MNCTL=$1 MND=$2 MNSIM=$3
shift 3
N=101
if [ "${1:-}" = --quick ]; then N=21; shift; fi
[ -n "${1:-}" ] && N=$1
command -v busctl >/dev/null || fail "busctl is not installed"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-mnctl.XXXXXX") || fail "mktemp"
mkdir "$WORK/state"
bus_pid=""
trap '[ -n "$bus_pid" ] && kill $bus_pid 2>/dev/null; rm -rf "$WORK"' EXIT
dbus-daemon --session --fork --print-address=3 --print-pid=4 --address=unix:path="$WORK/bus.sock" \
        3>"$WORK/addr" 4>"$WORK/pid" || fail "cannot start dbus-daemon"
bus_pid=$(cat "$WORK/pid")
export DBUS_SESSION_BUS_ADDRESS=$(cat "$WORK/addr")
export TMPDIR=$WORK
"$MNSIM" --usb 1 --serial 1 --cartridge --seed 11 -- bash "$0" inner "$MNCTL" "$MND" "$N" "$WORK"
