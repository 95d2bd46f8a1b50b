#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# mnd's polkit authorisation end to end, on a private system-style bus:
#   - a dbus-daemon with the system bus's default-deny rules and the project's D-Bus policy
#     (daemon/org.microneedle.Mnd1.conf), DBUS_SYSTEM_BUS_ADDRESS pointing at it;
#   - python3-dbusmock's polkitd template as org.freedesktop.PolicyKit1 (SetAllowed decides);
#   - mnd as root on that bus (not --user), with a pen simulated by mnsim;
#   - the clients as user nobody (uid 65534, setpriv), and mnctl.
# Checked: nobody reads properties, is refused SetDepth, SetSpeed, StartSession, ClearFault
# (AccessDenied naming org.microneedle.mnd.operate) and Audit.Query/Verify (naming
# org.microneedle.mnd.audit) until the mock allows the action, then succeeds; Stop and StopAll
# always work; a malformed call is InvalidArgument without asking polkit; the refusals are
# auth-failure events in the audit log; a caller that leaves while polkit thinks is dropped; a
# stopping daemon answers the calls still waiting (Busy); with polkit gone every check is refused
# (AccessDenied, "polkit is not running") but Stop still works and root still operates; mnctl
# as nobody exits 5 with the daemon's sentence.
#
#     test-polkit.sh MND MNSIM MNCTL POLICY WORKDIR
#
# Needs root (mnd on a system bus, clients as another uid), dbus-daemon, setpriv, python3-dbus
# and python3-dbusmock; without them it fails saying so, never skips.
set -euo pipefail

fail() { printf 'test-polkit: FAIL: %s\n' "$*" >&2; exit 1; }
. "$(dirname "$0")/system-bus.sh"

if [ $# -ne 5 ]; then
        echo "usage: $0 MND MNSIM MNCTL POLICY WORKDIR" >&2
        exit 2
fi
mnd=$(readlink -f "$1") mnsim=$(readlink -f "$2") mnctl=$(readlink -f "$3") policy=$(readlink -f "$4")
workdir=$5
py=/usr/bin/python3

[ "$(id -u)" -eq 0 ] || fail "needs root, to run mnd on a system bus and clients as user nobody (CI runs as root)"
for tool in dbus-daemon dbus-monitor busctl setpriv script; do
        command -v "$tool" >/dev/null ||
                fail "$tool is not installed (apt-get install dbus-daemon dbus-bin systemd util-linux bsdutils)"
done
"$py" -c 'import dbus, dbusmock' 2>/dev/null ||
        fail "$py lacks the dbus or dbusmock module (apt-get install python3-dbus python3-dbusmock)"

mkdir -p "$workdir"
tmp=$(mktemp -d "$workdir/polkit.XXXXXX")
chmod 0755 "$tmp"
bus_pid="" polkit_pid=""
cleanup() {
        [ -z "$polkit_pid" ] || kill "$polkit_pid" 2>/dev/null || true
        [ -z "$bus_pid" ] || kill "$bus_pid" 2>/dev/null || true
        wait 2>/dev/null || true
        rm -rf "$tmp"
}
trap cleanup EXIT

# The system bus's defaults (as in dbus's system.conf), polkit's own policy file's rules, then
# mnd's file.  Test only: root owns mnd's name here (the pens under mnsim belong to root; in
# production the name is user mnd's) and the mock's; root may monitor (as in system.conf).
start_system_bus "$tmp" "$policy" '    <allow send_destination="org.freedesktop.PolicyKit1"/>' '  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
    <allow own="org.freedesktop.PolicyKit1"/>
    <allow own="org.microneedle.Mnd1"/>
  </policy>'

# The client: one line per call, "OK ..." or "ERROR-NAME<TAB>message".
cat >"$tmp/client.py" <<'EOF'
import sys, dbus
op, args = sys.argv[1], sys.argv[2:]
bus = dbus.SystemBus()
MND = "org.microneedle.Mnd1"
PEN_IF, MGR_IF, AUDIT_IF = MND + ".Pen", MND + ".Manager", MND + ".Audit"
MGR, AUDIT = "/org/microneedle/Mnd1", "/org/microneedle/Mnd1/audit"
PK = ("org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.DBus.Mock")
timeout = float(dict(a.split("=", 1) for a in args if a.startswith("timeout=")).get("timeout", "10"))
args = [a for a in args if not a.startswith("timeout=")]
def call(dest, path, iface, method, sig, *a):
    return bus.call_blocking(dest, path, iface, method, sig, list(a), timeout=timeout)
def start_options(area, duration, extra=None):
    o = {"area": dbus.String(area, variant_level=1), "duration_s": dbus.UInt32(int(duration), variant_level=1)}
    if extra:
        o[extra] = dbus.String("red", variant_level=1)
    return dbus.Dictionary(o, signature="sv")
try:
    if op == "pens":
        r = call(MND, MGR, "org.freedesktop.DBus.Properties", "Get", "ss", MGR_IF, "Pens")
        r = " ".join(str(p) for p in r)
    elif op == "getall":
        r = call(MND, args[0], "org.freedesktop.DBus.Properties", "GetAll", "s", PEN_IF)
        r = "Serial=%s State=%s DepthUm=%d" % (r["Serial"], r["State"], r["DepthUm"])
    elif op in ("SetDepth", "SetSpeed"):
        r = call(MND, args[0], PEN_IF, op, "u", dbus.UInt32(int(args[1])))
    elif op == "StartSession":
        r = call(MND, args[0], PEN_IF, op, "a{sv}", start_options(*args[1:]))
    elif op in ("Stop", "ClearFault"):
        r = call(MND, args[0], PEN_IF, op, "")
    elif op == "StopAll":
        r = call(MND, MGR, MGR_IF, op, "")
    elif op == "Query":
        f = {"kind": dbus.String(args[0], variant_level=1)} if args else {}
        if args[1:]:
            f["bogus"] = dbus.String("x", variant_level=1)
        events = call(MND, AUDIT, AUDIT_IF, op, "a{sv}", dbus.Dictionary(f, signature="sv"))
        r = "%d %s" % (len(events), " | ".join(
            "%s %s" % (e.get("kind"), {str(k): str(v) for k, v in e.get("details", {}).items()})
            for e in events))
    elif op == "Verify":
        ok, count, _, _ = call(MND, AUDIT, AUDIT_IF, op, "")
        r = "ok=%s count=%d" % (bool(ok), int(count))
    elif op == "SetAllowed":
        r = call(*PK, op, "as", dbus.Array(args, signature="s"))
    elif op == "SimulateHang":
        r = call(*PK, op, "b", args[0] == "true")
    elif op == "ReleaseHangingCalls":
        r = call(*PK, op, "")
    else:
        sys.exit("unknown op " + op)
    print("OK", r if r is not None else "")
except dbus.exceptions.DBusException as e:
    print("%s\t%s" % (e.get_dbus_name(), e.get_dbus_message()))
EOF

"$py" -m dbusmock --system --template polkitd >"$tmp/polkit.log" 2>&1 &
polkit_pid=$!
for _ in $(seq 100); do
        "$py" "$tmp/client.py" SetAllowed 2>/dev/null | grep -q '^OK' && break
        sleep 0.05
done
"$py" "$tmp/client.py" SetAllowed | grep -q '^OK' || fail "the polkitd mock did not start: $(cat "$tmp/polkit.log")"

export MND PY=$py CLIENT=$tmp/client.py DIR=$tmp MNCTL=$mnctl POLKIT_PID=$polkit_pid
MND=$mnd
# mnsim: one USB pen with a cartridge; mnd and the clients run under it.  (The polkit mock is
# stopped from inside, by pid, for the last part.)
"$mnsim" --usb 1 --serial 0 --cartridge --seed 31 -- bash -euo pipefail -c '
mnd_pid=
fail() {
        echo "test-polkit: FAIL: $*" >&2
        [ -z "$mnd_pid" ] || kill -KILL "$mnd_pid" 2>/dev/null || true
        echo "--- mnd log:" >&2
        tail -n 40 "$DIR/mnd.log" >&2 || true
        exit 1
}
ok() { echo "ok: $*"; }
as_root() { timeout 20 "$PY" "$CLIENT" "$@" 2>&1; }
as_nobody() { env -u LD_PRELOAD timeout 20 setpriv --reuid=65534 --regid=65534 --clear-groups "$PY" "$CLIENT" "$@" 2>&1; }
expect() {      # expect WHAT PATTERN OUTPUT: OUTPUT must match the extended regex PATTERN
        printf "%s\n" "$3" | grep -E -q -- "$2" || fail "$1: expected /$2/, got: $3"
        ok "$1"
}
P=/org/microneedle/Mnd1/pen/MNU_2d0001
DENIED="^org\.freedesktop\.DBus\.Error\.AccessDenied"

MND_LOG_LEVEL=debug "$MND" --state-dir "$DIR/state" --config /dev/null >/dev/null 2>"$DIR/mnd.log" &
mnd_pid=$!
for _ in $(seq 100); do
        as_root pens | grep -q MNU_2d0001 && break
        kill -0 $mnd_pid 2>/dev/null || fail "mnd exited"
        sleep 0.05
done
expect "mnd serves the pen on the system bus" "MNU_2d0001" "$(as_root pens)"

# Reading: anyone the bus lets in.
expect "nobody reads the pen (GetAll)" "^OK Serial=MNU-0001 State=idle" "$(as_nobody getall $P)"
depth_before=$(as_root getall $P | sed "s/.*DepthUm=//")
[ "$depth_before" != 500 ] || fail "the pen starts at 500 um: pick another depth for this test"

# Not allowed: refused with the action named; nothing happened.
out=$(as_nobody SetDepth $P 500)
expect "nobody: SetDepth refused" "$DENIED" "$out"
expect "the refusal names the user and the action" "user 65534 is not authorised to operate pens \(polkit action org\.microneedle\.mnd\.operate\)" "$out"
expect "nobody: SetSpeed refused" "$DENIED.*org\.microneedle\.mnd\.operate" "$(as_nobody SetSpeed $P 100)"
expect "nobody: StartSession refused" "$DENIED.*org\.microneedle\.mnd\.operate" "$(as_nobody StartSession $P forehead 1)"
expect "nobody: ClearFault refused" "$DENIED.*org\.microneedle\.mnd\.operate" "$(as_nobody ClearFault $P)"
expect "nobody: Audit.Query refused" "$DENIED.*org\.microneedle\.mnd\.audit" "$(as_nobody Query)"
expect "nobody: Audit.Verify refused" "$DENIED.*org\.microneedle\.mnd\.audit" "$(as_nobody Verify)"
expect "the pen was not touched" "DepthUm=$depth_before$" "$(as_root getall $P)"

# Never gated.
expect "nobody: Stop" "^OK" "$(as_nobody Stop $P)"
expect "nobody: StopAll" "^OK" "$(as_nobody StopAll)"

# mnctl as nobody: exit status 5 and the sentence.
set +e
msg=$(env -u LD_PRELOAD setpriv --reuid=65534 --regid=65534 --clear-groups "$MNCTL" set-depth 0.5mm 2>&1 </dev/null)
rc=$?
set -e
[ $rc -eq 5 ] || fail "mnctl set-depth as nobody: exit status $rc, expected 5: $msg"
expect "mnctl as nobody: exit 5 with the reason" "not authorised to operate pens.*org\.microneedle\.mnd\.operate" "$msg"
env -u LD_PRELOAD setpriv --reuid=65534 --regid=65534 --clear-groups "$MNCTL" stop </dev/null >/dev/null 2>&1 ||
        fail "mnctl stop as nobody failed"
ok "mnctl stop as nobody"

# The interactive flag reaches polkit as AllowUserInteraction (the flags of CheckAuthorization), from
# busctl with and without it, and from mnctl: on a terminal (script(1) gives it one) it allows
# interaction unless --no-ask-password; without a terminal never.
env -u LD_PRELOAD dbus-monitor --system \
        "type=method_call,interface=org.freedesktop.PolicyKit1.Authority,member=CheckAuthorization" \
        >"$DIR/monitor.log" 2>&1 &
monitor=$!
for _ in $(seq 100); do grep -q NameLost "$DIR/monitor.log" && break; sleep 0.05; done
grep -q NameLost "$DIR/monitor.log" || fail "dbus-monitor did not start: $(cat "$DIR/monitor.log")"
nobody() { env -u LD_PRELOAD timeout 20 setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
nobody busctl --system --allow-interactive-authorization=yes call org.microneedle.Mnd1 $P \
        org.microneedle.Mnd1.Pen SetDepth u 500 >/dev/null 2>&1 || true
nobody busctl --system --allow-interactive-authorization=no call org.microneedle.Mnd1 $P \
        org.microneedle.Mnd1.Pen SetDepth u 500 >/dev/null 2>&1 || true
nobody script -qec "$MNCTL set-depth 0.5mm" /dev/null >"$DIR/mnctl-tty.out" 2>&1 </dev/null || true
nobody script -qec "$MNCTL --no-ask-password set-depth 0.5mm" /dev/null >>"$DIR/mnctl-tty.out" 2>&1 </dev/null || true
nobody "$MNCTL" set-depth 0.5mm </dev/null >>"$DIR/mnctl-tty.out" 2>&1 || true
for _ in $(seq 100); do [ "$(grep -c "^ *uint32 " "$DIR/monitor.log")" -ge 5 ] && break; sleep 0.05; done
kill $monitor 2>/dev/null || true
flags=$(grep "^ *uint32 " "$DIR/monitor.log" | awk "{print \$2}" | tr "\n" " ")
[ "$flags" = "1 0 1 0 0 " ] ||
        fail "AllowUserInteraction of busctl yes/no, mnctl on a terminal, with --no-ask-password, without a terminal: got \"$flags\", expected \"1 0 1 0 0\" ($(cat "$DIR/mnctl-tty.out"))"
ok "the interactive flag reaches polkit (busctl, mnctl on a terminal, --no-ask-password, no terminal)"

# A malformed call is refused without asking polkit: with polkit hanging, it still answers at once.
as_root SimulateHang true >/dev/null
expect "bad option: InvalidArgument, polkit not asked" "^org\.microneedle\.Mnd1\.Error\.InvalidArgument.*colour" \
        "$(as_nobody StartSession $P forehead 1 colour timeout=3)"
expect "bad filter: InvalidArgument, polkit not asked" "^org\.microneedle\.Mnd1\.Error\.InvalidArgument.*bogus" \
        "$(as_nobody Query refusal bogus timeout=3)"
# Stop does not wait for polkit either.
expect "Stop while polkit hangs" "^OK" "$(as_nobody Stop $P timeout=3)"

# A caller that leaves while polkit thinks: its check is dropped (and mnd carries on).
expect "a caller gives up waiting" "NoReply" "$(as_nobody SetDepth $P 500 timeout=1)"
for _ in $(seq 50); do grep -q "left the bus while its org.microneedle.mnd.operate check was in flight" "$DIR/mnd.log" && break; sleep 0.05; done
grep -q "left the bus while its org.microneedle.mnd.operate check was in flight" "$DIR/mnd.log" ||
        fail "mnd did not drop the check of a caller that left"
ok "the check of a caller that left is dropped"
as_root ReleaseHangingCalls >/dev/null
as_root SimulateHang false >/dev/null
expect "mnd still answers" "^OK Serial=MNU-0001" "$(as_nobody getall $P)"

# Allowed: operate.
as_root SetAllowed org.microneedle.mnd.operate >/dev/null
expect "nobody (operate allowed): SetDepth" "^OK" "$(as_nobody SetDepth $P 500)"
expect "the depth is set" "DepthUm=500$" "$(as_root getall $P)"
expect "nobody (operate allowed): SetSpeed" "^OK" "$(as_nobody SetSpeed $P 100)"
expect "nobody (operate allowed): limits still apply" "LimitExceeded" "$(as_nobody SetDepth $P 5000)"
expect "nobody (operate allowed): StartSession" "^OK /org/microneedle/Mnd1/session/[0-9]+" \
        "$(as_nobody StartSession $P forehead 30)"
expect "nobody: Stop ends it" "^OK" "$(as_nobody Stop $P)"
expect "nobody (operate allowed): ClearFault answered by the pen, not refused" "^OK|Mnd1\.Error" \
        "$(as_nobody ClearFault $P)"
expect "nobody (operate allowed): Audit.Query still refused" "$DENIED.*org\.microneedle\.mnd\.audit" "$(as_nobody Query)"

# Allowed: audit.  The refusals above are in the log.
as_root SetAllowed org.microneedle.mnd.operate org.microneedle.mnd.audit >/dev/null
expect "nobody (audit allowed): Verify" "^OK ok=True" "$(as_nobody Verify)"
out=$(as_nobody Query auth-failure)
n=$(printf "%s\n" "$out" | sed -n "s/^OK \([0-9]*\).*/\1/p")
[ -n "$n" ] && [ "$n" -ge 7 ] || fail "expected at least 7 auth-failure events, got: $out"
for what in "SetDepth" "SetSpeed" "StartSession" "ClearFault" "Query" "Verify"; do
        printf "%s\n" "$out" | grep -q "request.: .$what" || fail "no auth-failure event for $what: $out"
done
expect "refusals name the audit action" "org\.microneedle\.mnd\.audit" "$out"
ok "the $n refusals are auth-failure events in the audit log"

# polkit gone: refused, never allowed; Stop works; root still operates.
kill "$POLKIT_PID"
for _ in $(seq 50); do as_root SetAllowed 2>&1 | grep -q ServiceUnknown && break; sleep 0.05; done
out=$(as_nobody SetDepth $P 400)
expect "polkit not running: SetDepth refused" "$DENIED" "$out"
expect "polkit not running: said so" "cannot check authorisation: polkit is not running" "$out"
expect "polkit not running: Audit.Query refused" "$DENIED.*polkit is not running" "$(as_nobody Query)"
expect "polkit not running: Stop works" "^OK" "$(as_nobody Stop $P)"
expect "polkit not running: StopAll works" "^OK" "$(as_nobody StopAll)"
expect "polkit not running: root operates (uid 0 needs no polkit)" "^OK" "$(as_root SetDepth $P 400)"
expect "polkit not running: root reads the audit log" "^OK [0-9]+" "$(as_root Query auth-failure)"

# A stopping daemon answers the calls still waiting for polkit (Busy), whose checks never end.
env -u LD_PRELOAD "$PY" -m dbusmock --system --template polkitd >"$DIR/polkit2.log" 2>&1 &
polkit2=$!
trap "kill $polkit2 2>/dev/null || true" EXIT
for _ in $(seq 100); do as_root SetAllowed 2>/dev/null | grep -q "^OK" && break; sleep 0.05; done
as_root SimulateHang true >/dev/null
n_asked=$(grep -c "asking whether" "$DIR/mnd.log" || true)
as_nobody SetDepth $P 450 timeout=10 >"$DIR/pending.out" &
client=$!
for _ in $(seq 100); do [ "$(grep -c "asking whether" "$DIR/mnd.log" || true)" -gt "$n_asked" ] && break; sleep 0.05; done
[ "$(grep -c "asking whether" "$DIR/mnd.log" || true)" -gt "$n_asked" ] || fail "mnd did not ask polkit"
kill -TERM $mnd_pid
wait $mnd_pid || fail "mnd exited with $? on SIGTERM"
mnd_pid=
wait $client || true
expect "a call waiting for polkit at SIGTERM: Busy" "^org\.microneedle\.Mnd1\.Error\.Busy.*shutting down" \
        "$(cat "$DIR/pending.out")"
grep -E -q "ERROR: AddressSanitizer|runtime error:" "$DIR/mnd.log" && fail "sanitizer reports in the mnd log"
ok "mnd exited 0 on SIGTERM"
kill $polkit2 2>/dev/null || true
' || fail "see above"
polkit_pid=""
echo "test-polkit: reading open; operate and audit as polkit says, never on error; Stop always; refusals audited"
