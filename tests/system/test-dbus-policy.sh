#!/usr/bin/env bash
# The D-Bus system policy (org.microneedle.Mnd1.conf) on a private bus with
# the system bus's default-deny rules:
#   - only user mnd may own org.microneedle.Mnd1 (nobody is refused);
#   - any user may call Stop and StopAll, the other methods of mnd's
#     interfaces, Introspect and Properties (polkit decides later, in mnd);
#   - a method of an interface the policy does not name is refused, which
#     shows the bus really enforces a policy here.
#
#     test-dbus-policy.sh POLICY SYSUSERS WORKDIR
#
# Needs root (to run clients as other users) in a private mount namespace,
# where our sysusers file's user mnd is bind-mounted over /etc/passwd.
set -euo pipefail

fail() { printf 'test-dbus-policy: FAIL: %s\n' "$*" >&2; exit 1; }
. "$(dirname "$0")/system-bus.sh"

if [ $# -ne 3 ]; then
        echo "usage: $0 POLICY SYSUSERS WORKDIR" >&2
        exit 2
fi
policy=$(readlink -f "$1") sysusers=$2 workdir=$3
py=/usr/bin/python3

[ "$(id -u)" -eq 0 ] || fail "needs root, to run the bus clients as users mnd and nobody (CI runs as root)"
for tool in dbus-daemon systemd-sysusers setpriv unshare; do
        command -v "$tool" >/dev/null || fail "$tool is not installed (apt-get install dbus-daemon systemd util-linux)"
done
"$py" -c 'import dbus, dbus.service, dbus.mainloop.glib; from gi.repository import GLib' 2>/dev/null ||
        fail "$py lacks the dbus or gi module (apt-get install python3-dbus python3-gi)"

if [ "${MND_DBUS_TEST_IN_NAMESPACE:-}" != 1 ]; then
        if ! err=$(unshare --mount --propagation private true 2>&1); then
                fail "cannot create a private mount namespace: $err"
        fi
        MND_DBUS_TEST_IN_NAMESPACE=1 exec unshare --mount --propagation private "$0" "$@"
fi

mkdir -p "$workdir"
tmp=$(mktemp -d "$workdir/dbus.XXXXXX")
chmod 0755 "$tmp"
bus_pid=""
server_pid=""
cleanup() {
        [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
        [ -z "$bus_pid" ] || kill "$bus_pid" 2>/dev/null || true
        rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/root/etc"
cp /etc/passwd /etc/group "$tmp/root/etc/"
systemd-sysusers --root="$tmp/root" "$sysusers" >/dev/null 2>&1 || fail "systemd-sysusers rejected $sysusers"
mount --bind "$tmp/root/etc/passwd" /etc/passwd
mount --bind "$tmp/root/etc/group" /etc/group
mnd_uid=$(id -u mnd) || fail "user mnd does not resolve"

# The system bus's defaults (as in dbus's system.conf), then our file.
start_system_bus "$tmp" "$policy"
# (Raising the fd limit may be refused in a container: not about our file.)
if grep -i -E 'warn|error|unknown' "$tmp/bus.log" | grep -v 'fd limit'; then
        fail "dbus-daemon complained about the configuration (above)"
fi

cat >"$tmp/server.py" <<'EOF'
import sys, dbus, dbus.service, dbus.mainloop.glib
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SystemBus()
try:
    bus.request_name("org.microneedle.Mnd1", dbus.bus.NAME_FLAG_DO_NOT_QUEUE)
except dbus.exceptions.DBusException as e:
    print("OWN-FAILED", e.get_dbus_name(), flush=True)
    sys.exit(1)
if sys.argv[1:] == ["--probe"]:
    print("OWNED", flush=True)
    sys.exit(0)
class Obj(dbus.service.Object):
    @dbus.service.method("org.microneedle.Mnd1.Manager", in_signature="", out_signature="")
    def StopAll(self): pass
    @dbus.service.method("org.microneedle.Mnd1.Pen", in_signature="", out_signature="")
    def Stop(self): pass
    @dbus.service.method("org.microneedle.Mnd1.Pen", in_signature="u", out_signature="")
    def SetDepth(self, d): pass
    @dbus.service.method("org.microneedle.Mnd1.Audit", in_signature="a{sv}", out_signature="aa{sv}")
    def Query(self, f): return dbus.Array([], signature="a{sv}")
    @dbus.service.method("org.freedesktop.DBus.Properties", in_signature="s", out_signature="a{sv}")
    def GetAll(self, i): return dbus.Dictionary({}, signature="sv")
    @dbus.service.method("org.example.NotInThePolicy", in_signature="", out_signature="")
    def Frob(self): pass
Obj(bus, "/org/microneedle/Mnd1")
Obj(bus, "/org/microneedle/Mnd1/pen/MNU_2d0001")
print("READY", flush=True)
GLib.MainLoop().run()
EOF
cat >"$tmp/client.py" <<'EOF'
import sys, dbus
path, iface, method = sys.argv[1:4]
args = {"SetDepth": [dbus.UInt32(500)], "Query": [dbus.Dictionary({}, signature="sv")],
        "GetAll": ["org.microneedle.Mnd1.Manager"]}.get(method, [])
try:
    dbus.SystemBus().call_blocking("org.microneedle.Mnd1", path, iface, method,
                                   {"SetDepth": "u", "Query": "a{sv}", "GetAll": "s"}.get(method, ""), args)
    print("OK")
except dbus.exceptions.DBusException as e:
    print(e.get_dbus_name())
EOF
as_nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
as_mnd=(setpriv --reuid="$mnd_uid" --regid="$(id -g mnd)" --clear-groups)

# nobody may not own the name.
out=$(timeout 30 "${as_nobody[@]}" "$py" "$tmp/server.py" --probe 2>&1 || true)
[ "$out" = "OWN-FAILED org.freedesktop.DBus.Error.AccessDenied" ] ||
        fail "user nobody could own org.microneedle.Mnd1, or failed differently: $out"

# mnd may.
"${as_mnd[@]}" "$py" "$tmp/server.py" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q READY "$tmp/server.log" && break; sleep 0.05; done
grep -q READY "$tmp/server.log" || fail "user mnd could not own org.microneedle.Mnd1: $(cat "$tmp/server.log")"

call() { # EXPECTED PATH INTERFACE METHOD
        local got
        got=$(timeout 30 "${as_nobody[@]}" "$py" "$tmp/client.py" "$2" "$3" "$4" 2>&1)
        [ "$got" = "$1" ] || fail "user nobody calling $3.$4 on $2: got '$got', expected '$1'"
}
manager=/org/microneedle/Mnd1
pen=/org/microneedle/Mnd1/pen/MNU_2d0001
call OK "$manager" org.microneedle.Mnd1.Manager StopAll
call OK "$pen" org.microneedle.Mnd1.Pen Stop
call OK "$pen" org.microneedle.Mnd1.Pen SetDepth
call OK "$manager" org.microneedle.Mnd1.Audit Query
call OK "$manager" org.freedesktop.DBus.Properties GetAll
call OK "$manager" org.freedesktop.DBus.Introspectable Introspect
call org.freedesktop.DBus.Error.AccessDenied "$manager" org.example.NotInThePolicy Frob

echo "test-dbus-policy: only mnd owns the name; anyone reaches Stop, StopAll and the rest; other interfaces refused"
