#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# mnsim's command line: options, exit status of the child, signals, clean-up,
# the no-command mode and "mnsim ctl".
# Usage: test-mnsim-cli.sh MNSIM TMPDIR
set -u
MNSIM=$1
export TMPDIR=$2/cli
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
unset MNSIM_CONTROL

fail() { echo "FAIL: $*" >&2; exit 1; }
no_strays() {
        ls "$TMPDIR" | grep -q umockdev && fail "stray testbed left in $TMPDIR after $1: $(ls "$TMPDIR")"
        return 0
}
expect_status() {   # WANT DESCRIPTION COMMAND...
        want=$1 what=$2; shift 2
        "$@" >"$TMPDIR/out" 2>"$TMPDIR/err" </dev/null
        got=$?
        [ "$got" = "$want" ] || fail "$what: exit status $got, expected $want; stderr: $(cat "$TMPDIR/err")"
        echo "ok: $what (exit $got)"
}

expect_status 0 "--help" "$MNSIM" --help
grep -q "unplug SERIAL" "$TMPDIR/out" || fail "--help does not list the control commands"
expect_status 0 "--version" "$MNSIM" --version
grep -q "^mnsim " "$TMPDIR/out" || fail "--version printed: $(cat "$TMPDIR/out")"
expect_status 2 "bad --usb" "$MNSIM" --usb many -- true
grep -q "bad value 'many' for --usb" "$TMPDIR/err" || fail "bad --usb message: $(cat "$TMPDIR/err")"
expect_status 2 "unknown option" "$MNSIM" --frobnicate
expect_status 2 "no pens" "$MNSIM" --usb 0 -- true
expect_status 2 "ctl without a socket" "$MNSIM" ctl list
grep -q "MNSIM_CONTROL" "$TMPDIR/err" || fail "ctl without a socket: $(cat "$TMPDIR/err")"
expect_status 127 "missing program" "$MNSIM" -- /nonexistent/program
no_strays "a missing program"

# The child's exit status, and 128+signal when it is killed.
expect_status 0 "child exits 0" "$MNSIM" --usb 2 --serial 2 -- true
expect_status 7 "child exits 7" "$MNSIM" -- sh -c 'exit 7'
expect_status 143 "child killed by SIGTERM" "$MNSIM" -- sh -c 'kill -TERM $$'
no_strays "child runs"

# mnsim ctl inside: ok is 0, error is 1.
expect_status 0 "ctl ok" "$MNSIM" --usb 1 -- sh -c '"$0" ctl status MNU-0001 | grep -q "^ok serial=MNU-0001 "' "$MNSIM"
expect_status 1 "ctl error" "$MNSIM" --usb 1 -- "$MNSIM" ctl status MNU-0009
grep -q "^error: no pen with serial 'MNU-0009'" "$TMPDIR/out" || fail "ctl error printed: $(cat "$TMPDIR/out")"
expect_status 0 "environment" "$MNSIM" --usb 1 -- sh -c \
        'test -d "$UMOCKDEV_DIR" && test -S "$MNSIM_CONTROL" && case "$LD_PRELOAD" in *libumockdev-preload*) ;; *) exit 1;; esac'

# SIGTERM to mnsim goes to the child; mnsim exits with the child's status.
"$MNSIM" -- sh -c 'echo $$ > "$TMPDIR/child.pid"; exec sleep 30' &
pid=$!
for i in $(seq 50); do [ -s "$TMPDIR/child.pid" ] && break; sleep 0.1; done
[ -s "$TMPDIR/child.pid" ] || fail "the child did not start"
kill -TERM $pid
wait $pid
st=$?
[ $st = 143 ] || fail "mnsim exited $st after SIGTERM, expected 143"
kill -0 "$(cat "$TMPDIR/child.pid")" 2>/dev/null && fail "the child survived mnsim"
no_strays "SIGTERM"
echo "ok: SIGTERM forwarded to the child"

# Without a command: prints the environment, serves the control socket,
# stops cleanly on SIGINT.
"$MNSIM" --usb 1 --serial 1 --control "$TMPDIR/ctl.sock" >"$TMPDIR/env" 2>"$TMPDIR/err" &
pid=$!
for i in $(seq 50); do grep -q MNSIM_CONTROL "$TMPDIR/env" 2>/dev/null && break; sleep 0.1; done
grep -q "^export UMOCKDEV_DIR=" "$TMPDIR/env" || fail "no environment printed: $(cat "$TMPDIR/env" "$TMPDIR/err")"
grep -q "^export MNSIM_CONTROL=$TMPDIR/ctl.sock" "$TMPDIR/env" || fail "wrong control path: $(cat "$TMPDIR/env")"
MNSIM_CONTROL=$TMPDIR/ctl.sock "$MNSIM" ctl list >"$TMPDIR/out" || fail "ctl list failed: $(cat "$TMPDIR/out")"
grep -q "MNU-0001 usb plugged" "$TMPDIR/out" || fail "list: $(cat "$TMPDIR/out")"
"$MNSIM" ctl --control "$TMPDIR/ctl.sock" unplug MNS-0001 >/dev/null || fail "ctl unplug failed"
kill -INT $pid
wait $pid
st=$?
[ $st = 0 ] || fail "mnsim exited $st after SIGINT without a child"
[ -e "$TMPDIR/ctl.sock" ] && fail "control socket left behind"
no_strays "SIGINT"
echo "ok: no-command mode"

rm -rf "$TMPDIR"
echo PASS
