#!/usr/bin/env bash
# mnd.service: systemd-analyze verify (no warnings about our unit at all, so
# unknown keys fail too), the offline security score, and the settings the
# daemon cannot work without or that would break it.
#
#     test-unit.sh UNIT_IN MND MAX_SCORE WORKDIR
#
# UNIT_IN is daemon/mnd.service.in; @MND_SBINDIR@ becomes the directory of the
# built daemon MND, so that verify finds an executable.
set -euo pipefail

fail() { printf 'test-unit: FAIL: %s\n' "$*" >&2; exit 1; }

if [ $# -ne 4 ]; then
        echo "usage: $0 UNIT_IN MND MAX_SCORE WORKDIR" >&2
        exit 2
fi
unit_in=$1 mnd=$2 max_score=$3 workdir=$4

command -v systemd-analyze >/dev/null || fail "systemd-analyze is not installed (apt-get install systemd)"
[ -x "$mnd" ] || fail "$mnd is not an executable (build first)"

mkdir -p "$workdir"
tmp=$(mktemp -d "$workdir/unit.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
unit=$tmp/mnd.service
sed "s|@MND_SBINDIR@|$(dirname "$(readlink -f "$mnd")")|g" "$unit_in" >"$unit"
if grep -n '@[A-Z_]*@' "$unit"; then
        fail "$unit_in has @VARIABLES@ other than @MND_SBINDIR@ (above): nothing substitutes them"
fi

# ---- verify ----------------------------------------------------------------
status=0
out=$(SYSTEMD_LOG_LEVEL=info systemd-analyze verify --man=no "$unit" 2>&1) || status=$?
ours=$(grep -E "mnd\.service|Unknown|unknown|Invalid|invalid|Failed|failed" <<<"$out" || true)
if [ "$status" -ne 0 ] || [ -n "$ours" ]; then
        printf '%s\n' "$out" >&2
        fail "systemd-analyze verify: exit $status, and these complaints about the unit (unknown keys count):"$'\n'"$ours"
fi

# ---- security score ---------------------------------------------------------
status=0
out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || status=$?
score=$(sed -n 's/.*Overall exposure level for mnd\.service: \([0-9][0-9]*\.[0-9]*\) .*/\1/p' <<<"$out")
if [ -z "$score" ]; then
        printf '%s\n' "$out" >&2
        fail "no 'Overall exposure level' in systemd-analyze security's output (exit $status, above)"
fi
if ! awk -v s="$score" -v m="$max_score" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
        grep '✗' <<<"$out" >&2 || true
        fail "security exposure $score is above $max_score (the open items are above)"
fi

# ---- what the daemon needs, and what would break it -------------------------
has() { grep -qx "$1" "$unit" || fail "the unit lacks '$1': $2"; }
lacks() { ! grep -qE "$1" "$unit" || fail "the unit has '$(grep -E "$1" "$unit")': $2"; }
has 'Type=notify' "mnd sends READY=1"
has 'BusName=org.microneedle.Mnd1' "the D-Bus activation file's SystemdService= relies on it"
has 'User=mnd' "the udev rules give the pens to user/group mnd"
has 'Group=mnd' "the udev rules give the pens to group mnd"
has 'StateDirectory=mnd' "the audit log lives in /var/lib/mnd, which ProtectSystem=strict makes read-only otherwise"
has 'ProtectSystem=strict' "everything but the state directory read-only"
has 'DevicePolicy=closed' "only the pens' nodes besides the pseudo devices"
has 'DeviceAllow=char-usb_device rw' "libusb opens /dev/bus/usb/BBB/DDD"
has 'DeviceAllow=char-ttyACM rw' "libserialport opens /dev/ttyACM*"
has 'RestrictAddressFamilies=AF_UNIX AF_NETLINK' "AF_UNIX for the bus and sd_notify, AF_NETLINK for hotplug, nothing else"
grep -qE '^WatchdogSec=[1-9]' "$unit" || fail "the unit lacks WatchdogSec=: mnd pings the watchdog"
lacks '^PrivateNetwork=(yes|true|on|1)' "a private network namespace gets no udev netlink events: libusb hotplug would stop"
lacks '^PrivateDevices=(yes|true|on|1)' "a private /dev has no /dev/bus/usb or /dev/ttyACM*"
lacks '^DynamicUser=(yes|true|on|1)' "the udev rules need the static group mnd"

echo "test-unit: systemd-analyze verify clean; security exposure $score (at most $max_score)"
