# SPDX-License-Identifier: GPL-2.0-or-later
# Helpers shared by mnctl's shell tests (sourced; both phases of each test use them).
# run, json and has/has_err work on $WORK/out and $WORK/err; start_private_bus needs $WORK.

fail() { echo "FAIL: $*" >&2; exit 1; }
PY=${PYTHON:-python3}

# run WANT DESCRIPTION COMMAND...: runs it, output in $out/$err, checks the exit status.
run() {
        local want=$1 what=$2
        shift 2
        "$@" >"$WORK/out" 2>"$WORK/err" </dev/null
        local got=$?
        out=$(cat "$WORK/out")
        err=$(cat "$WORK/err")
        [ "$got" = "$want" ] || fail "$what: exit status $got, expected $want
--- stdout:
$out
--- stderr:
$err"
        echo "ok: $what (exit $got)"
}

# json WANT DESCRIPTION PYTHON-CONDITION COMMAND...: as run; stdout must be one JSON
# document (nothing else, stderr empty), the condition true of it (d), and an error's
# exit_code the exit status.
json() {
        local want=$1 what=$2 cond=$3
        shift 3
        run "$want" "$what [json]" "$@"
        [ -z "$err" ] || fail "$what [json]: stderr is not empty: $err"
        "$PY" -c '
import json, sys
want, cond = int(sys.argv[1]), sys.argv[2]
d = json.load(open(sys.argv[3]))
if want != 0:
    e = d["error"]
    assert set(e) == {"name", "message", "exit_code"}, e
    assert e["exit_code"] == want, e
    assert e["message"], e
if not eval(cond):
    sys.exit("condition failed: " + cond + " on " + json.dumps(d)[:2000])
' "$want" "$cond" "$WORK/out" || fail "$what [json]: stdout: $out"
}

# jsonl DESCRIPTION FILE PYTHON-CONDITION: every line of FILE is a JSON object; the
# condition holds of the list of them (l).
jsonl() {
        "$PY" -c '
import json, sys
l = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
if not eval(sys.argv[2]):
    sys.exit("condition failed: " + sys.argv[2])
' "$2" "$3" || fail "$1: $(cat "$2")"
        echo "ok: $1"
}

# py DESCRIPTION PYTHON-CODE ARGS...: runs a check in Python (sys.argv[1:] are ARGS).
py() {
        local what=$1 code=$2
        shift 2
        "$PY" -c "$code" "$@" || fail "$what"
        echo "ok: $what"
}

# wait_for DESCRIPTION COMMAND...: up to 15 s for the command to succeed.
wait_for() {
        local what=$1 i
        shift
        for i in $(seq 150); do
                "$@" >/dev/null 2>&1 && return 0
                sleep 0.1
        done
        fail "timed out waiting for $what"
}

has() { grep -q -- "$1" <<<"$out" || fail "output lacks '$1': $out"; }
has_err() { grep -q -- "$1" <<<"$err" || fail "stderr lacks '$1': $err"; }

# start_private_bus: a private session bus in $WORK that lets any uid connect (the
# not-authorised checks run as nobody); sets bus_pid and DBUS_SESSION_BUS_ADDRESS.
start_private_bus() {
        cat >"$WORK/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=$WORK/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
        dbus-daemon --config-file="$WORK/bus.conf" --fork --print-address=3 --print-pid=4 3>"$WORK/addr" 4>"$WORK/pid" \
                || fail "cannot start dbus-daemon"
        bus_pid=$(cat "$WORK/pid")
        chmod 777 "$WORK/bus.sock" 2>/dev/null
        export DBUS_SESSION_BUS_ADDRESS=$(cat "$WORK/addr")
}
