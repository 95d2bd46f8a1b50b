#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# mnctl's audit commands against the real daemon and simulated pens on a
# private session bus: list (text and JSON) with every filter, show, export
# (CSV and JSON, parsed back with Python), verify, and the exit codes:
# usage (2), no such event (3), not authorised (5), daemon not running (7) and
# a broken chain (8), made for real by editing the database while mnd is
# stopped.
#
# Usage: test-mnctl-audit.sh MNCTL MND MNSIM TMPDIR
set -u

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- the inner phase: inside mnsim, with the daemon ----
if [ "${1:-}" = inner ]; then
        MNCTL=$2 MND=$3 WORK=$4
        M() { env -u LD_PRELOAD "$MNCTL" --user "$@"; }
        pens() { [ "$(M list --serials | wc -l)" = "$1" ]; }
        count() { busctl --user get-property org.microneedle.Mnd1 /org/microneedle/Mnd1/audit org.microneedle.Mnd1.Audit Count | sed 's/^t //'; }
        mnd_pid=
        trap '[ -n "$mnd_pid" ] && kill "$mnd_pid" 2>/dev/null; wait' EXIT
        start_mnd() {
                "$MND" --user --state-dir "$WORK/state" --config /dev/null >>"$WORK/mnd.log" 2>&1 &
                mnd_pid=$!
                wait_for "mnd and both pens" pens 2
        }
        start_mnd

        # A session with awkward text for the records: a comma, quotes, non-ASCII.  The
        # daemon keeps appending events of its own (a simulated pen on a loaded machine may
        # stop answering and come back): every check below allows for events it did not cause.
        operator='Dr. Müller, "Ann"'
        patient='P-1042;Ärztin'
        M start MNU --area forehead --duration 2s --depth 0.5mm --operator "$operator" --patient "$patient" \
                --wait >"$WORK/start.txt" 2>&1 </dev/null
        st=$?
        # 6: ended other than "completed" (the pen dropped out): still a session on the log.
        [ $st = 0 ] || [ $st = 6 ] || fail "start --wait exited $st: $(cat "$WORK/start.txt")"
        session=$(sed -n 's|.*(/org/microneedle/Mnd1/session/\([0-9]*\)).*|\1|p' "$WORK/start.txt")
        [ -n "$session" ] || fail "no session number in: $(cat "$WORK/start.txt")"
        echo "ok: session $session to audit (exit $st)"
        # A refusal by the daemon itself (mnctl would refuse it before asking): audited.
        busctl --user call org.microneedle.Mnd1 /org/microneedle/Mnd1/pen/MNS_2d0001 org.microneedle.Mnd1.Pen \
                SetDepth u 3100 >/dev/null 2>&1 && fail "the daemon took a depth of 3.1 mm"

        # ---- list ----
        run 0 "audit list" M audit list
        has "^SEQ *TIME *KIND *PEN *SESSION *DETAILS"
        has "^[0-9]* *[0-9-]* [0-9:]* *session-start *MNU-0001 *$session *cartridge=CART-U1-0001 area=forehead depth=0.50mm"
        has "session-end *MNU-0001 *$session "
        has "refusal *MNS-0001"
        grep -q $'\033' <<<"$out" && fail "colour in piped output"
        n=$(count)
        json 0 "audit list" "[e['seq'] for e in d['events']] == list(range(1, len(d['events']) + 1)) and len(d['events']) >= $n and all('time_utc' in e and e['kind'] for e in d['events'])" M audit list --json
        cp "$WORK/out" "$WORK/all.json"
        run 0 "audit list --utc" M audit list --utc
        has "^SEQ *TIME (UTC) *KIND"

        # ---- each filter ----
        json 0 "--session" "len(d['events']) >= 2 and all(e['session'] == $session for e in d['events']) and {'session-start', 'session-end'} <= {e['kind'] for e in d['events']}" M audit list --json --session "$session"
        run 0 "--session, text" M audit list --session "$session"
        has "session-start"; has "session-end"
        json 0 "--kind" "len(d['events']) >= 1 and all(e['kind'] == 'session-start' for e in d['events']) and d['events'][0]['operator'] == '$operator'" M audit list --json --kind session-start
        json 0 "--kind refusal" "len(d['events']) == 1 and d['events'][0]['pen'] == 'MNS-0001' and '3.10 mm' in d['events'][0]['message']" M audit list --json --kind refusal
        json 0 "--kind of a kind mnd never wrote (passed on as it is)" "d['events'] == []" M audit list --json --kind no-such-kind
        wait_for "both pens" pens 2
        json 0 "--pen, a whole serial" "len(d['events']) >= 3 and all(e['pen'] == 'MNU-0001' for e in d['events'])" M audit list --json --pen MNU-0001
        # A prefix that no event has as its pen: the one connected pen it starts, said on stderr only.
        run 0 "--pen, a prefix of a connected pen [json]" M audit list --json --pen MNU
        has_err "^mnctl: --pen MNU taken as MNU-0001"
        py "--pen, a prefix of a connected pen: stdout is the events, as JSON" '
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["events"]) >= 3 and all(e["pen"] == "MNU-0001" for e in d["events"]), d
' "$WORK/out"
        # Serials are case-sensitive: another case is another (unknown) pen.
        json 0 "--pen, another case is not that pen" "d['events'] == []" M audit list --json --pen mns
        json 0 "--pen, a pen not connected is taken as given" "d['events'] == []" M audit list --json --pen GONE-0001
        run 0 "--pen, nothing matches" M audit list --pen GONE-0001
        has "^No audit events match."
        run 2 "--pen, an ambiguous prefix" M audit list --pen MN
        has_err "matches more than one pen"
        json 0 "--cartridge" "len(d['events']) >= 3 and all(e['cartridge'] == 'CART-U1-0001' for e in d['events']) and 'session-start' in [e['kind'] for e in d['events']]" M audit list --json --cartridge CART-U1-0001
        json 0 "--session and --kind together" "[e['kind'] for e in d['events']] == ['session-end'] and d['events'][0]['session'] == $session" M audit list --json --session "$session" --kind session-end
        # Times: the session's end, to the second (2 s after its start), in each format.
        t=$("$PY" -c 'import json,sys; print([e["time"] for e in json.load(open(sys.argv[1]))["events"] if e["kind"] == "session-end"][0] // 1000000)' "$WORK/all.json")
        iso=$("$PY" -c 'import datetime,sys; print(datetime.datetime.fromtimestamp(int(sys.argv[1]), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))' "$t")
        local_blank=$("$PY" -c 'import datetime,sys; print(datetime.datetime.fromtimestamp(int(sys.argv[1])).strftime("%Y-%m-%d %H:%M:%S"))' "$t")
        for since in "$iso" "$local_blank" "@$t"; do
                json 0 "--since '$since'" "all(e['time'] >= $t * 1000000 for e in d['events']) and 'session-end' in [e['kind'] for e in d['events']] and 'session-start' not in [e['kind'] for e in d['events']]" M audit list --json --since "$since"
                json 0 "--until '$since'" "all(e['time'] < $t * 1000000 for e in d['events']) and 'session-start' in [e['kind'] for e in d['events']] and 'session-end' not in [e['kind'] for e in d['events']]" M audit list --json --until "$since"
        done
        json 0 "--since -1h --until now" "len(d['events']) >= $n and d['events'][0]['seq'] == 1" M audit list --json --since -1h --until now
        json 0 "--since today (a date alone in --until: the whole day)" "len(d['events']) >= $n and d['events'][0]['seq'] == 1" M audit list --json --since "$(date +%F)" --until "$(date +%F)"
        json 0 "--until 2000-01-01" "d['events'] == []" M audit list --json --until 2000-01-01

        # ---- usage errors (exit 2), before the daemon is asked ----
        run 2 "--since 2026-02-30" M audit list --since 2026-02-30
        has_err "February 2026 has 28 days"
        json 2 "--since garbage" "d['error']['name'] == 'org.microneedle.mnctl.Error.Usage'" M audit list --json --since yesterdayish
        run 2 "--since 1969" M audit list --since 1969-12-31T23:59:59Z
        has_err "before 1970"
        run 2 "--until before --since" M audit list --since 2026-11-20 --until 2026-11-18
        has_err "is before --since"
        run 2 "--session 0" M audit list --session 0
        run 2 "--session x" M audit list --session x
        run 2 "--kind Bad_Kind" M audit list --kind Bad_Kind
        run 2 "audit show 0" M audit show 0
        run 2 "audit show, no N" M audit show
        run 2 "audit show two" M audit show 1 2
        run 2 "audit alone" M audit
        has_err "'mnctl audit' needs a command"
        run 2 "audit frobnicate" M audit frobnicate
        has_err "unknown command 'audit frobnicate'"
        run 2 "an option of another command" M audit list --format csv
        run 2 "export --format xml" M audit export --format xml
        json 2 "export --format csv to stdout with --json" "'--output' in d['error']['message']" M audit export --json --format csv

        # ---- show ----
        seq=$("$PY" -c 'import json,sys; print([e["seq"] for e in json.load(open(sys.argv[1]))["events"] if e["kind"] == "session-start"][0])' "$WORK/all.json")
        run 0 "audit show N" M audit show "$seq"
        has "^Seq: *$seq$"; has "^Kind: *session-start$"; has "^Session: *$session$"; has "^Operator: *$operator$"
        has "^Patient ref: *$patient$"; has "^Depth: *0.50 mm (500 um)$"; has "^Hash: *[0-9a-f]\{64\}$"; has "^Previous hash: *[0-9a-f]\{64\}$"
        has "^Time: "
        json 0 "audit show N" "d['event']['seq'] == $seq and d['event']['kind'] == 'session-start' and d['event']['operator'] == '$operator' and d['previous_hash'] == [e['hash'] for e in json.load(open('$WORK/all.json'))['events'] if e['seq'] == $seq - 1][0]" M audit show "$seq" --json
        json 0 "audit show 1: chained on the genesis value" "d['event']['kind'] == 'daemon-start' and d['previous_hash'] == 'f3e12237720b141decdb2347a72fa10bd25a094a3ce6d88f0314b871f5f538d2'" M --json audit show 1
        run 3 "audit show of an event not in the log" M audit show 1000000
        has_err "there is no audit event 1000000: the audit log has events 1 to "
        json 3 "audit show of an event not in the log" "d['error']['name'] == 'org.microneedle.mnctl.Error.NoSuchEvent'" M audit show 1000000 --json

        # ---- export ----
        # Unfiltered, an export has exactly the events the log had when it began: between
        # Count read before and after.
        n=$(count)
        run 0 "export csv to stdout" M audit export
        n2=$(count)
        cp "$WORK/out" "$WORK/export.csv"
        py "export csv: RFC 4180 with CRLF, a header and a row per event, text as recorded" '
import csv, json, sys
raw = open(sys.argv[1], "rb").read()
assert raw.endswith(b"\r\n") and b"\r\n" in raw, raw[:200]
rows = list(csv.DictReader(open(sys.argv[1], newline="", encoding="utf-8")))
n, n2 = int(sys.argv[2]), int(sys.argv[7])
assert n <= len(rows) <= n2, (len(rows), n, n2)
assert [int(r["seq"]) for r in rows] == list(range(1, len(rows) + 1))
assert list(rows[0].keys()) == ["seq", "time", "time_utc", "kind", "pen", "session", "cartridge", "area", "depth_um", "speed_hz", "duration_s", "operator", "patient_ref", "uid", "user", "sender", "message", "details", "hash", "other"], list(rows[0].keys())
start = [r for r in rows if r["kind"] == "session-start"][0]
assert start["operator"] == sys.argv[3] and start["patient_ref"] == sys.argv[4], start
assert start["session"] == sys.argv[5] and start["depth_um"] == "500" and start["area"] == "forehead", start
events = json.load(open(sys.argv[6]))["events"]
for r, e in zip(rows, events):
    assert int(r["time"]) == e["time"] and r["time_utc"] == e["time_utc"] and r["hash"] == e["hash"], (r, e)
    assert (json.loads(r["details"]) if r["details"] else {}) == e.get("details", {}), (r, e)
' "$WORK/export.csv" "$n" "$operator" "$patient" "$session" "$WORK/all.json" "$n2"
        n=$(count)
        run 0 "export json to stdout" M audit export --format json
        n2=$(count)
        py "export json: one array, the same events as audit list --json" '
import json, sys
d = json.load(open(sys.argv[1]))
l = json.load(open(sys.argv[2]))["events"]
assert isinstance(d, list) and int(sys.argv[3]) <= len(d) <= int(sys.argv[4]), len(d)
k = min(len(d), len(l))
assert k >= 1 and d[:k] == l[:k], "export and list differ"
' "$WORK/out" "$WORK/all.json" "$n" "$n2"
        json 0 "export with --json: JSON by default" "isinstance(d, list) and len(d) >= $n and [e['seq'] for e in d] == list(range(1, len(d) + 1))" M --json audit export
        # With --output it says what it exported and what the log held: the two are equal.
        json 0 "export csv --output FILE" "d['exported'] == d['count'] and d['count'] >= $n and d['format'] == 'csv' and len(d['head_hash']) == 64" M --json audit export --format csv --output "$WORK/records.csv"
        exported=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["exported"])' "$WORK/out")
        py "export csv --output FILE: the rows it said, the same as on stdout" '
import csv, sys
a = list(csv.reader(open(sys.argv[1], newline="", encoding="utf-8")))
b = list(csv.reader(open(sys.argv[2], newline="", encoding="utf-8")))
assert len(a) == int(sys.argv[3]) + 1, (len(a), sys.argv[3])
k = min(len(a), len(b))
assert a[:k] == b[:k], "export --output differs from the export to stdout"
' "$WORK/records.csv" "$WORK/export.csv" "$exported"
        run 0 "export csv --output FILE, text" M audit export --format csv --output "$WORK/records.csv"
        has "^Exported [0-9]* audit events to $WORK/records.csv (CSV).$"
        has "^The log held [0-9]* events; head hash [0-9a-f]\{64\}$"
        [ "$(stat -c %a "$WORK/records.csv")" = 600 ] || fail "the export is not 0600: $(stat -c %a "$WORK/records.csv")"
        ls "$WORK"/records.csv.* >/dev/null 2>&1 && fail "a temporary file was left behind"
        json 0 "export json --output FILE" "d['exported'] == d['count'] and d['count'] >= $n and d['format'] == 'json' and len(d['head_hash']) == 64" M --json audit export --format json --output "$WORK/records.json"
        exported=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["exported"])' "$WORK/out")
        py "export json --output FILE parses" 'import json, sys; assert len(json.load(open(sys.argv[1]))) == int(sys.argv[2])' "$WORK/records.json" "$exported"
        run 0 "export --session (filtered)" M audit export --session "$session"
        py "filtered export: the session's events only" '
import csv, io, sys
rows = list(csv.DictReader(io.StringIO(open(sys.argv[1], newline="", encoding="utf-8").read())))
assert len(rows) >= 2 and all(r["session"] == sys.argv[2] for r in rows), rows
' "$WORK/out" "$session"
        run 0 "export, nothing matches: the header alone" M audit export --kind no-such-kind
        [ "$out" = "seq,time,time_utc,kind,pen,session,cartridge,area,depth_um,speed_hz,duration_s,operator,patient_ref,uid,user,sender,message,details,hash,other"$'\r' ] || fail "export of nothing: $out"
        run 0 "export json, nothing matches" M audit export --format json --kind no-such-kind
        [ "$out" = "[]" ] || fail "export json of nothing: $out"
        run 6 "export into a directory that does not exist" M audit export --output "$WORK/nonexistent/x.csv"
        run 2 "export --output a directory" M audit export --output "$WORK"

        # ---- verify ----
        run 0 "audit verify" M audit verify
        has "^Result: *ok$"; has "^Events: *[0-9]*$"; has "^Head hash: *[0-9a-f]\{64\}$"
        json 0 "audit verify" "d['ok'] is True and d['count'] >= $n and d['first_bad_seq'] is None and len(d['head_hash']) == 64" M --json audit verify

        # ---- not authorised: another uid (CI runs as root) ----
        [ "$(id -u)" = 0 ] || fail "exit status 5 (not authorised) needs root to act as another uid"
        N() { env -u LD_PRELOAD setpriv --reuid=65534 --regid=65534 --clear-groups "$MNCTL" --user "$@"; }
        run 5 "audit list as another user" N audit list
        json 5 "audit verify as another user" "d['error']['name'] == 'org.freedesktop.DBus.Error.AccessDenied'" N --json audit verify
        run 5 "audit export as another user" N audit export --output "$WORK/denied.csv"
        [ -e "$WORK/denied.csv" ] && fail "a refused export left a file"

        # ---- more than one page (1000 events) for an export that fails part way ----
        # Refusals by the daemon, each on the log; a call lost on a loaded machine is made up for.
        for round in $(seq 10); do
                [ "$(count)" -gt 1010 ] && break
                seq 300 | xargs -P 4 -I{} busctl --user call org.microneedle.Mnd1 /org/microneedle/Mnd1/pen/MNS_2d0001 \
                        org.microneedle.Mnd1.Pen SetDepth u 3100 >/dev/null 2>&1
        done
        [ "$(count)" -gt 1010 ] || fail "only $(count) events after many refusals"
        echo "ok: $(count) events in the log"

        # ---- a broken chain: edit an event while mnd is stopped ----
        kill -TERM "$mnd_pid"
        wait "$mnd_pid"
        mnd_pid=
        run 7 "audit verify without mnd" M audit verify
        json 7 "audit list without mnd" "d['error']['name'] == 'org.freedesktop.DBus.Error.ServiceUnknown'" M --json audit list
        command -v sqlite3 >/dev/null || fail "sqlite3 (the CLI) is missing"
        # The operator now holds terminal controls (ESC [2J, and CSI as U+009B); a refusal late in the
        # log names a pen "MNU-000" that is no longer connected (a prefix of MNU-0001); and one
        # event on the second page holds a message that is not UTF-8, which the daemon cannot send.
        sqlite3 "$WORK/state/audit.sqlite" "DROP TRIGGER events_no_update;
                UPDATE events SET operator = 'Someone' || char(27) || '[2J' || char(155) || ' Else' WHERE seq = $seq;
                UPDATE events SET pen = 'MNU-000' WHERE seq = (SELECT MAX(seq) FROM events WHERE kind = 'refusal');
                UPDATE events SET message = CAST(X'C328' AS TEXT) WHERE seq = (SELECT MIN(seq) FROM events WHERE kind = 'refusal' AND seq > 1000);" ||
                fail "cannot edit the audit database"
        start_mnd
        run 8 "audit verify of an altered log" M audit verify
        has "^Result: *BROKEN$"; has "^First bad seq: *$seq$"
        has_err "hash chain is broken at event $seq"
        json 8 "audit verify of an altered log" "d['ok'] is False and d['first_bad_seq'] == $seq and d['count'] > $seq and len(d['head_hash']) == 64 and d['error']['name'] == 'org.microneedle.mnctl.Error.AuditChainBroken'" M audit verify --json
        # The altered event still reads (as it now is): JSON as it is, text with the controls escaped.
        json 0 "audit show of the altered event" "d['event']['operator'] == 'Someone\x1b[2J\x9b Else'" M --json audit show "$seq"
        run 0 "audit show of an event with terminal controls" M audit show "$seq"
        has '^Operator: *Someone\\x1b\[2J\\u009b Else$'
        py "audit show: no control character reaches the terminal" '
import sys
t = open(sys.argv[1], encoding="utf-8").read()
bad = [c for c in t if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f]
assert not bad, bad
' "$WORK/out"
        run 0 "audit list of an event with terminal controls" M audit list --session "$session"
        py "audit list: no control character reaches the terminal" '
import sys
t = open(sys.argv[1], encoding="utf-8").read()
assert not [c for c in t if (ord(c) < 32 and c != "\n") or 0x7f <= ord(c) <= 0x9f]
assert "Someone" in t
' "$WORK/out"

        # --pen of a pen no longer connected whose serial is a prefix of a connected one's: that
        # pen, exactly (an event in the log has it), not the connected MNU-0001.
        json 0 "--pen, a gone pen that is a prefix of a connected pen's serial" "len(d['events']) == 1 and d['events'][0]['pen'] == 'MNU-000'" M audit list --json --pen MNU-000
        run 0 "--pen, a gone pen, text" M audit list --pen MNU-000
        has "refusal *MNU-000 "
        [ -z "$err" ] || fail "--pen of a pen in the log said: $err"

        # An export to standard output that fails part way (the second page cannot be read)
        # leaves nothing there but the error: never a part of an array.
        run 6 "export json to stdout, failing on the second page" M audit export --format json
        [ -z "$out" ] || fail "a failed export left on stdout: $(head -c 300 <<<"$out")"
        has_err "cannot read the audit log"
        json 6 "export json to stdout, failing on the second page" "d['error']['exit_code'] == 6" M --json audit export
        run 6 "export csv to stdout, failing on the second page" M audit export
        [ -z "$out" ] || fail "a failed csv export left on stdout: $(head -c 300 <<<"$out")"
        run 6 "export to a file, failing on the second page" M audit export --format json --output "$WORK/partial.json"
        [ -e "$WORK/partial.json" ] && fail "a failed export left a file"

        kill -TERM "$mnd_pid"
        wait "$mnd_pid"
        mnd_pid=
        echo "inner: all passed"
        exit 0
fi

# ---- the outer phase ----
[ $# = 4 ] || { echo "usage: $0 MNCTL MND MNSIM TMPDIR" >&2; exit 2; }
MNCTL=$1 MND=$2 MNSIM=$3
mkdir -p "$4"
WORK=$(mktemp -d "$4/audit.XXXXXX") || fail "mktemp"
chmod 755 "$WORK"       # another uid connects to the bus socket in here
mkdir "$WORK/state"
bus_pid=""
cleanup() {
        [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
        rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
unset MNCTL_BUS NO_COLOR

# Help and usage, with no bus at all.
run 0 "audit --help" "$MNCTL" audit --help
has "^mnctl audit COMMAND"; has "^  list "; has "^  verify "
run 0 "help audit" "$MNCTL" help audit
has "^  export "
run 0 "help audit export" "$MNCTL" help audit export
has "^mnctl audit export"; has "--output FILE"
json 0 "audit list --help" 'd["help"].startswith("mnctl audit list")' "$MNCTL" audit list --help --json
run 2 "help audit frobnicate" "$MNCTL" help audit frobnicate
run 2 "usage errors come before the bus" env DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent "$MNCTL" --user audit list --since 2026-13-01
run 7 "no session bus" env DBUS_SESSION_BUS_ADDRESS=unix:path="$WORK/none.sock" "$MNCTL" --user audit verify

# A private bus that lets any uid connect (the not-authorised check runs as nobody).
start_private_bus

run 7 "audit list, bus without mnd" "$MNCTL" --user audit list
has_err "mnd is not running"

export TMPDIR=$WORK
"$MNSIM" --usb 1 --serial 1 --cartridge --seed 7 -- bash "$0" inner "$MNCTL" "$MND" "$WORK"
st=$?
if [ $st != 0 ]; then
        echo "--- mnd log:" >&2
        cat "$WORK/mnd.log" >&2 2>/dev/null
        fail "the checks with the daemon failed (exit $st)"
fi
echo "all mnctl audit checks passed"
