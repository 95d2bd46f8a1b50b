#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# mnctl against the real daemon and simulated pens on a private session bus:
# every command in text and JSON mode, and every exit code provoked for real.
#
# Usage: test-mnctl.sh MNCTL MND MNSIM TMPDIR COMPLETION
#
# Layout: a private dbus-daemon (its own configuration, so that another uid
# may connect for the "not authorised" check); first the checks with no
# daemon; then mnsim with two pens (MNU-0001 on USB, MNS-0001 serial, both
# with a cartridge) runs this script again as "inner", which starts mnd and
# runs the rest.  Every process is cleaned up on exit.
set -u

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- the inner phase: inside mnsim, with the daemon ----
if [ "${1:-}" = inner ]; then
        MNCTL=$2 MND=$3 MNSIM=$4 WORK=$5 COMPLETION=$6
        # mnctl needs no device emulation; run it as any other program would.
        M() { env -u LD_PRELOAD "$MNCTL" --user "$@"; }
        ctl() { env -u LD_PRELOAD "$MNSIM" ctl "$@" >/dev/null || fail "mnsim ctl $*"; }
        pens() { [ "$(M list --serials | wc -l)" = "$1" ]; }
        info_has() { M info "$1" | grep -q -- "$2"; }
        bg=()
        trap 'for p in "${bg[@]}"; do kill "$p" 2>/dev/null; done; wait' EXIT

        "$MND" --user --state-dir "$WORK/state" >"$WORK/mnd.log" 2>&1 &
        mnd_pid=$!
        bg+=($mnd_pid)
        wait_for "mnd and both pens" pens 2

        # Events from here on.
        env -u LD_PRELOAD "$MNCTL" --user monitor >"$WORK/monitor.txt" 2>&1 &
        mon=$!
        env -u LD_PRELOAD "$MNCTL" --user --json monitor >"$WORK/monitor.json" 2>&1 &
        monj=$!
        bg+=($mon $monj)
        sleep 0.5

        # list
        run 0 "list" M list
        has "^SERIAL *MODEL *TRANSPORT *STATE *DEPTH *SPEED *CARTRIDGE *BATTERY"
        has "^MNU-0001 *MN-1 *usb *idle"
        has "^MNS-0001 *MN-1S *serial"
        grep -q $'\033' <<<"$out" && fail "colour in piped output"
        json 0 "list" 'len(d["pens"]) == 2 and {p["serial"] for p in d["pens"]} == {"MNU-0001", "MNS-0001"} and d["pens"][0]["depth_range_um"]["step"] > 0' M --json list
        run 0 "list --serials" M list --serials
        [ "$(echo "$out" | sort | tr '\n' ' ')" = "MNS-0001 MNU-0001 " ] || fail "list --serials: $out"
        json 0 "list --serials" 'sorted(d["serials"]) == ["MNS-0001", "MNU-0001"]' M list --serials --json

        # info and PEN resolution
        run 0 "info by exact serial" M info MNU-0001
        has "^Serial: *MNU-0001"; has "^Transport: *usb"; has "^Cartridge: *CART-U1-0001"
        run 0 "info by unique prefix, any case" M info mns
        has "^Serial: *MNS-0001"
        json 0 "info" 'd["pen"]["serial"] == "MNU-0001" and d["session"] is None' M info MNU --json
        run 2 "info without PEN, two pens" M info
        has_err "2 pens are connected"; has_err "MNU-0001"; has_err "MNS-0001"
        json 2 "info without PEN, two pens" 'd["error"]["name"].endswith("AmbiguousPen")' M --json info
        run 2 "info with an ambiguous prefix" M info MN
        has_err "'MN' matches more than one pen"
        run 3 "info of an unknown pen" M info NOPE-1
        has_err "no connected pen matches 'NOPE-1' (pens: "
        json 3 "info of an unknown pen" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.NoSuchPen"' M --json info NOPE-1

        # status
        run 0 "status" M status MNS
        has "MNS-0001  idle, no session running"; has "^Depth "; has "^Speed "
        json 0 "status" 'd["pen"]["state"] == "idle" and d["session"] is None' M status MNS --json

        # limits
        run 0 "limits" M limits
        has "^AREA *MAX DEPTH *MAX SPEED *MAX DURATION"; has "^forehead *0.75 mm *300 Hz *20m"; has "^(no area) *3.00 mm"
        json 0 "limits" 'd["global"]["max_depth_um"] == 3000 and len(d["areas"]) == 11 and {"area": "forehead", "max_depth_um": 750, "max_speed_hz": 300, "max_duration_s": 1200} in d["areas"]' M limits --json
        run 0 "limits AREA" M limits cheeks
        has "^cheeks *2.00 mm"
        [ "$(echo "$out" | wc -l)" = 3 ] || fail "limits cheeks: $out"
        json 0 "limits AREA" '[a["area"] for a in d["areas"]] == ["cheeks"]' M --json limits cheeks
        run 0 "limits --areas" M limits --areas
        has "^forehead$"; has "^body$"
        json 0 "limits --areas" '"forehead" in d["areas"]' M limits --areas --json
        run 4 "limits of an unknown area" M limits elbow
        has_err "elbow"
        json 4 "limits of an unknown area" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.NoSuchArea"' M --json limits elbow

        # set-depth, set-speed; busctl confirms what the daemon has.
        run 0 "set-depth" M set-depth MNU 0.5mm
        has "MNU-0001: depth set to 0.50 mm"
        [ "$(busctl --user get-property org.microneedle.Mnd1 /org/microneedle/Mnd1/pen/MNU_2d0001 org.microneedle.Mnd1.Pen DepthUm)" = "u 500" ] || fail "DepthUm is not 500"
        json 0 "set-depth" 'd == {"pen": "MNU-0001", "depth_um": 450}' M --json set-depth MNU 450um
        run 0 "set-depth, bare number is mm" M set-depth MNU 0.5
        run 4 "set-depth 1 um over the absolute cap" M set-depth MNU 3001um
        has_err "3.001 mm"
        json 4 "set-depth 1 um over the absolute cap" 'd["error"]["name"].startswith("org.microneedle.Mnd1.Error.")' M --json set-depth MNU 3001um
        run 4 "set-depth 1 step over the absolute cap" M set-depth MNU 3.05mm
        has_err "3.05 mm"
        run 2 "set-depth 0.3333mm" M set-depth MNU 0.3333mm
        has_err "'0.3333mm' is not a whole number of micrometres"
        json 2 "set-depth 0.3333mm" 'd["error"]["name"] == "org.microneedle.mnctl.Error.Usage"' M --json set-depth MNU 0.3333mm
        run 2 "set-depth -1" M set-depth MNU -1
        has_err "'-1' is negative"
        run 2 "set-depth 1e9" M set-depth MNU 1e9
        has_err "'1e9'"
        run 2 "set-depth empty" M set-depth MNU ""
        run 2 "set-depth garbage" M set-depth MNU deep
        run 2 "set-depth overflow" M set-depth MNU 99999999999mm
        has_err "far too large"
        run 2 "set-depth, too many arguments" M set-depth MNU 1 2
        [ "$(busctl --user get-property org.microneedle.Mnd1 /org/microneedle/Mnd1/pen/MNU_2d0001 org.microneedle.Mnd1.Pen DepthUm)" = "u 500" ] || fail "a refused depth changed DepthUm"
        run 0 "set-speed" M set-speed MNU 120hz
        has "MNU-0001: speed set to 120 Hz"
        json 0 "set-speed" 'd == {"pen": "MNU-0001", "speed_hz": 100}' M set-speed MNU 100 --json
        M set-speed MNU 120 >/dev/null
        max=$(M --json info MNU | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["pen"]["speed_range_hz"]["max"])')
        run 4 "set-speed 1 Hz over the pen's maximum" M set-speed MNU $((max + 1))
        json 4 "set-speed 1 Hz over the pen's maximum" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.LimitExceeded"' M --json set-speed MNU $((max + 1))
        run 2 "set-speed 120.5" M set-speed MNU 120.5

        # start: refusals before anything runs
        run 2 "start without --duration" M start MNU --area forehead
        run 2 "start without --area" M start MNU --duration 20m
        run 2 "start with a bad duration" M start MNU --area forehead --duration 1.5h
        has_err "'1.5h' is not a whole number"
        run 4 "start 1 s over the area's longest session" M start MNU --area forehead --duration 1201s
        has_err "exceeds the 20 min limit for area 'forehead'"
        json 4 "start 1 s over the area's longest session" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.LimitExceeded"' M --json start MNU --area forehead --duration 1201s
        run 4 "start 1 step over the area's depth cap" M start MNU --area forehead --duration 20m --depth 0.8mm
        has_err "0.80 mm exceeds the 0.75 mm cap for area 'forehead'"
        run 4 "start in an unknown area" M start MNU --area elbow --duration 1m
        json 4 "start in an unknown area" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.NoSuchArea"' M --json start MNU --area elbow --duration 1m
        run 4 "start with a zero duration" M start MNU --area forehead --duration 0

        # start, and follow it with watch (text and JSON, not a terminal: a line per change)
        run 0 "start" M start MNU --area forehead --duration 10m --depth 0.5mm --speed 120 --operator "A. Nurse" --patient P-1
        has "MNU-0001: session [0-9]* started: forehead, 0.50 mm at 120 Hz for 10m (cartridge CART-U1-0001)"
        env -u LD_PRELOAD "$MNCTL" --user watch MNU >"$WORK/watch.txt" 2>&1 &
        watch=$!
        env -u LD_PRELOAD "$MNCTL" --user --json watch MNU >"$WORK/watch.json" 2>&1 &
        watchj=$!
        bg+=($watch $watchj)
        run 0 "status with a session" M status MNU
        has "MNU-0001  session [0-9]*, forehead, running"; has "needled"
        json 0 "status with a session" 'd["session"]["state"] == "running" and d["session"]["area"] == "forehead" and d["session"]["operator"] == "A. Nurse" and d["session"]["patient_ref"] == "P-1" and d["session"]["planned_duration_s"] == 600' M --json status MNU
        json 0 "info with a session" 'd["pen"]["state"] == "running" and d["session"]["depth_um"] == 500' M --json info MNU
        # During the session the area's cap binds set-depth too.
        run 4 "set-depth over the session area's cap" M set-depth MNU 0.8mm
        has_err "0.80 mm exceeds the 0.75 mm cap for area 'forehead'"
        json 4 "set-depth 1 um over the session area's cap" 'd["error"]["name"].startswith("org.microneedle.Mnd1.Error.")' M --json set-depth MNU 751um
        run 0 "set-depth within the session area's cap" M set-depth MNU 0.75mm
        sleep 2
        run 0 "stop PEN" M stop MNU
        has "MNU-0001: stopped"
        wait_for "watch to end with the session" sh -c "! kill -0 $watch 2>/dev/null"
        wait $watch; st=$?
        [ $st = 0 ] || fail "watch exited $st: $(cat "$WORK/watch.txt")"
        grep -q "MNU-0001 session [0-9]* forehead running: " "$WORK/watch.txt" || fail "watch printed: $(cat "$WORK/watch.txt")"
        grep -q "MNU-0001 session [0-9]* forehead stopped" "$WORK/watch.txt" || fail "watch did not show the end: $(cat "$WORK/watch.txt")"
        grep -q $'\033' "$WORK/watch.txt" && fail "watch wrote escape sequences to a file"
        echo "ok: watch followed the session to its end ($(wc -l <"$WORK/watch.txt") lines)"
        wait $watchj; st=$?
        [ $st = 0 ] || fail "watch --json exited $st"
        jsonl "watch --json: JSON lines from running to stopped" "$WORK/watch.json" \
                'len(l) >= 2 and l[0]["session"]["state"] == "running" and l[-1]["session"]["state"] == "stopped" and all(x["pen"]["serial"] == "MNU-0001" for x in l)'
        json 0 "stop PEN" 'd == {"all": False, "stopped": ["MNU-0001"]}' M --json stop MNU-0001

        # The daemon's own refusal, shown as it sent it: a used cartridge.
        run 4 "start with a used cartridge" M start MNU --area forehead --duration 1m
        has_err "cartridge 'CART-U1-0001' was used by session"
        json 4 "start with a used cartridge" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.CartridgeUsed"' M --json start MNU --area forehead --duration 1m
        ctl remove-cartridge MNS-0001
        wait_for "MNS-0001 without a cartridge" info_has MNS "^Cartridge: *none"
        run 4 "start without a cartridge" M start MNS --area cheeks --duration 1m
        json 4 "start without a cartridge" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.CartridgeMissing"' M --json start MNS --area cheeks --duration 1m

        # start --wait: to completion (exit 0), text and JSON
        ctl cartridge MNS-0001 CART-T-0002
        wait_for "MNS-0001 with the new cartridge" info_has MNS CART-T-0002
        run 0 "start --wait" M start MNS --area cheeks --duration 2s --depth 1mm --wait
        has "MNS-0001: session [0-9]* completed: 2s of needling"
        ctl remove-cartridge MNU-0001
        ctl cartridge MNU-0001 CART-T-0003
        wait_for "MNU-0001 with the new cartridge" info_has MNU CART-T-0003
        json 0 "start --wait" 'd["session"]["state"] == "completed" and d["session"]["elapsed_ms"] >= 2000' M --json start MNU --area nose --duration 2s --depth 0.5mm --wait
        # start --wait that does not complete: stopped by someone else (exit 6)
        ctl remove-cartridge MNU-0001
        ctl cartridge MNU-0001 CART-T-0004
        wait_for "MNU-0001 with the new cartridge" info_has MNU CART-T-0004
        (sleep 2; env -u LD_PRELOAD "$MNCTL" --user stop MNU >/dev/null) &
        json 6 "start --wait, stopped before completion" 'd["error"]["name"] == "org.microneedle.mnctl.Error.SessionNotCompleted" and "stopped" in d["error"]["message"]' M --json start MNU --area nose --duration 5m --depth 0.5mm --wait

        # A device error: a pen fault refuses commands (exit 6); clear-fault.
        ctl fault MNU-0001 motor
        wait_for "MNU-0001 in fault" info_has MNU "^State: *fault"
        run 6 "set-depth on a pen with a fault" M set-depth MNU 0.5mm
        has_err "fault"
        json 6 "set-depth on a pen with a fault" 'd["error"]["name"] == "org.microneedle.Mnd1.Error.DeviceError"' M --json set-depth MNU 0.5mm
        run 0 "clear-fault" M clear-fault MNU
        has "MNU-0001: fault cleared"
        ctl fault MNU-0001 motor
        wait_for "MNU-0001 in fault" info_has MNU "^State: *fault"
        json 0 "clear-fault" 'd == {"pen": "MNU-0001", "fault_cleared": True}' M --json clear-fault MNU
        wait_for "MNU-0001 idle" info_has MNU "^State: *idle"

        # stop without PEN and with several pens stops every pen; --all too.
        run 0 "stop, several pens" M stop
        has "Stopped every pen (2)."
        json 0 "stop --all" 'd["all"] is True and sorted(d["stopped"]) == ["MNS-0001", "MNU-0001"]' M --json stop --all
        run 2 "stop PEN --all" M stop MNU --all
        # A PEN prefix of several pens stops each of them (stopping is never made harder), exit 0.
        ctl remove-cartridge MNU-0001
        ctl cartridge MNU-0001 CART-T-0005
        wait_for "MNU-0001 with the new cartridge" info_has MNU CART-T-0005
        M start MNU --area nose --duration 5m --depth 0.5mm >/dev/null || fail "start before stop MN"
        run 0 "stop with a prefix of several pens" M stop MN
        has "^MNU-0001: stopped$"; has "^MNS-0001: stopped$"
        has_err "'MN' matches 2 pens: stopped each of them"
        wait_for "MNU-0001 idle after stop MN" info_has MNU "^State: *idle"
        json 0 "stop, the running pen has stopped" 'd["pen"]["state"] == "idle" and d["session"] is None' M --json info MNU
        json 0 "stop with a prefix of several pens" 'd["all"] is False and sorted(d["stopped"]) == ["MNS-0001", "MNU-0001"]' M --json stop mn
        run 3 "stop with a prefix of no pen" M stop XYZ

        # Not authorised: another uid may read but not operate.  Acting as
        # another uid needs root (CI runs as root): anything else is a failure.
        [ "$(id -u)" = 0 ] || fail "exit status 5 (not authorised) needs root to act as another uid"
        command -v setpriv >/dev/null || fail "setpriv (util-linux) is missing"
        {
                N() { env -u LD_PRELOAD setpriv --reuid=65534 --regid=65534 --clear-groups "$MNCTL" --user "$@"; }
                run 0 "list as another user" N list
                run 5 "set-depth as another user" N set-depth MNU 0.5mm
                has_err "only user 0"
                json 5 "set-depth as another user" 'd["error"]["name"] == "org.freedesktop.DBus.Error.AccessDenied"' N --json set-depth MNU 0.5mm
                run 0 "stop as another user (never refused)" N stop MNU
        }

        # Colour only on a terminal, never with NO_COLOR or --no-color.
        command -v script >/dev/null || fail "script(1) (bsdutils) is missing"
        {
                script -qec "env -u LD_PRELOAD TERM=xterm $MNCTL --user list" /dev/null >"$WORK/tty.txt" 2>&1
                grep -q $'\033\\[' "$WORK/tty.txt" || fail "no colour on a terminal: $(cat -v "$WORK/tty.txt")"
                script -qec "env -u LD_PRELOAD TERM=xterm NO_COLOR=1 $MNCTL --user list" /dev/null >"$WORK/tty.txt" 2>&1
                grep -q $'\033' "$WORK/tty.txt" && fail "colour with NO_COLOR: $(cat -v "$WORK/tty.txt")"
                script -qec "env -u LD_PRELOAD TERM=xterm $MNCTL --user --no-color list" /dev/null >"$WORK/tty.txt" 2>&1
                grep -q $'\033' "$WORK/tty.txt" && fail "colour with --no-color: $(cat -v "$WORK/tty.txt")"
                echo "ok: colour on a terminal only, never with NO_COLOR or --no-color"
        }

        # The completion offers the connected pens and the areas, through mnctl.
        got=$(PATH=$(dirname "$MNCTL"):$PATH bash -c '
                . /usr/share/bash-completion/bash_completion 2>/dev/null || _init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
                . "$1"
                t() { COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; read -r -a COMP_WORDS <<<"$COMP_LINE"; [[ $COMP_LINE == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _mnctl; echo "${COMPREPLY[*]}"; }
                t "mnctl --user info "; t "mnctl --user start MNU --area fore"; t "mnctl set-d"' _ "$COMPLETION")
        [ "$got" = "MNU-0001 MNS-0001
forehead
set-depth" ] || fail "completion gave: $got"
        echo "ok: the completion offers pens, areas and commands"

        # Unplug and plug: monitor sees it; a gone pen is "not found" (exit 3).  A watch --json of
        # the pen (waiting for a session) ends with the error as one more JSON line.
        env -u LD_PRELOAD "$MNCTL" --user --json watch MNS >"$WORK/watch-gone.json" 2>&1 &
        watchg=$!
        bg+=($watchg)
        wait_for "watch --json to print its first line" test -s "$WORK/watch-gone.json"
        ctl unplug MNS-0001
        wait_for "MNS-0001 to go" pens 1
        wait $watchg; st=$?
        [ $st = 3 ] || fail "watch --json of an unplugged pen exited $st: $(cat "$WORK/watch-gone.json")"
        jsonl "watch --json: the error is one more JSON line" "$WORK/watch-gone.json" \
                'len(l) >= 2 and "pen" in l[0] and l[-1]["error"]["exit_code"] == 3 and "disconnected" in l[-1]["error"]["message"] and all("error" not in x for x in l[:-1])'
        run 3 "info of an unplugged pen" M info MNS-0001
        run 0 "info without PEN, one pen" M info
        has "^Serial: *MNU-0001"
        ctl plug MNS-0001
        wait_for "MNS-0001 to come back" pens 2

        # monitor: stop it with SIGINT; it exits 0 and saw it all.
        sleep 0.5
        kill -INT $mon $monj
        wait $mon; st=$?
        [ $st = 0 ] || fail "monitor exited $st after SIGINT"
        wait $monj; st=$?
        [ $st = 0 ] || fail "monitor --json exited $st after SIGINT"
        for ev in "session-started *MNU-0001 session [0-9]* (forehead)" "session-ended *MNU-0001 session [0-9]* (forehead) stopped" \
                  "pen-state *MNU-0001 running" "fault *MNU-0001 motor: " "pen-removed *MNS-0001" "pen-added *MNS-0001" \
                  "session-ended *MNS-0001 session [0-9]* (cheeks) completed"; do
                grep -q "$ev" "$WORK/monitor.txt" || fail "monitor lacks '$ev': $(cat "$WORK/monitor.txt")"
        done
        echo "ok: monitor reported pens, states, faults and sessions"
        jsonl "monitor --json: JSON lines" "$WORK/monitor.json" \
                '{"pen-added", "pen-removed", "pen-state", "fault", "session-started", "session-ended"} <= {x["event"] for x in l} and all("time_us" in x for x in l)'

        # The daemon goes: exit 7.
        kill -TERM $mnd_pid
        wait $mnd_pid
        run 7 "list after mnd exited" M list
        has_err "mnd is not running"
        json 7 "list after mnd exited" 'd["error"]["name"] == "org.freedesktop.DBus.Error.ServiceUnknown"' M --json list

        # A clinic that lowers the global depth cap below an area's: mnctl names the cap the
        # daemon names, word for word (the clinic's, not the area's); an area lowered further
        # is named by both.  A fresh state directory: the cartridges are new to it.
        printf '[limits]\nmax_depth_um = 500\n[area.nose]\nmax_depth_um = 400\n' >"$WORK/clinic.conf"
        "$MND" --user --state-dir "$WORK/state2" --config "$WORK/clinic.conf" >>"$WORK/mnd.log" 2>&1 &
        mnd_pid=$!
        bg+=($mnd_pid)
        wait_for "mnd with the clinic's caps and both pens" pens 2
        wait_for "MNU-0001 idle" info_has MNU "^State: *idle"
        pen_call() { env -u LD_PRELOAD busctl --user call org.microneedle.Mnd1 /org/microneedle/Mnd1/pen/MNU_2d0001 org.microneedle.Mnd1.Pen "$@" 2>&1; }
        # same_refusal DESCRIPTION DAEMON-OUTPUT WANT: mnctl's refusal ($err) is the daemon's.
        same_refusal() {
                local mine=${err#mnctl: } theirs=${2#Call failed: }
                [ "$mine" = "$theirs" ] || fail "$1: mnctl says '$mine', the daemon '$theirs'"
                grep -q -- "$3" <<<"$mine" || fail "$1: '$mine' lacks '$3'"
                echo "ok: $1: mnctl and the daemon both say '$mine'"
        }
        run 4 "set-depth over the clinic's cap, no session" M set-depth MNU 0.6mm
        same_refusal "set-depth over the clinic's cap" "$(pen_call SetDepth u 600)" "exceeds the clinic's cap of 0.50 mm"
        run 4 "start over the clinic's cap in an area with a higher cap" M start MNU --area forehead --duration 1m --depth 0.6mm
        same_refusal "start over the clinic's cap" "$(pen_call StartSession 'a{sv}' 3 area s forehead duration_s u 60 depth_um u 600)" \
                "exceeds the clinic's cap of 0.50 mm"
        run 4 "start over an area's cap below the clinic's" M start MNU --area nose --duration 1m --depth 0.45mm
        same_refusal "start over an area's own cap" "$(pen_call StartSession 'a{sv}' 3 area s nose duration_s u 60 depth_um u 450)" \
                "exceeds the 0.40 mm cap for area 'nose'"
        M start MNU --area forehead --duration 5m --depth 0.5mm >/dev/null || fail "start in forehead at 0.5 mm"
        run 4 "set-depth over the clinic's cap in a forehead session" M set-depth MNU 0.6mm
        same_refusal "set-depth in a session over the clinic's cap" "$(pen_call SetDepth u 600)" "exceeds the clinic's cap of 0.50 mm"
        json 0 "limits with the clinic's caps" '{"area": "forehead", "max_depth_um": 500, "max_speed_hz": 300, "max_duration_s": 1200} in d["areas"] and {"area": "nose", "max_depth_um": 400, "max_speed_hz": 300, "max_duration_s": 600} in d["areas"]' M --json limits
        run 0 "stop the forehead session" M stop MNU

        # start --wait: an interrupt that comes while StartSession is under way, or right after it
        # returned (before mnctl has set up following the session), still stops the pen.  strace
        # slows every read of mnctl's, so that SIGINT comes in that window.
        command -v strace >/dev/null || fail "strace is missing (scripts/install-deps.sh installs it)"
        env -u LD_PRELOAD strace -o /dev/null true 2>/dev/null || fail "strace cannot trace here (ptrace refused?)"
        {
                # (LeakSanitizer cannot run under ptrace: in a sanitizer build it is off here.)
                env -u LD_PRELOAD ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
                        strace -o /dev/null -e trace=recvmsg -e inject=recvmsg:delay_enter=150000 \
                        "$MNCTL" --user start MNS --area cheeks --duration 5m --depth 0.5mm --wait \
                        >"$WORK/start-int.txt" 2>&1 </dev/null &
                tracer=$!
                bg+=($tracer)
                session_of() { busctl --user get-property org.microneedle.Mnd1 /org/microneedle/Mnd1/pen/MNS_2d0001 org.microneedle.Mnd1.Pen Session; }
                for i in $(seq 1000); do
                        session_of 2>/dev/null | grep -q 'session/' && break
                        sleep 0.01
                done
                session_of | grep -q 'session/' || fail "start --wait under strace started no session: $(cat "$WORK/start-int.txt")"
                kill -INT "$(pgrep -P "$tracer" | head -1)" || fail "no mnctl under strace"
                wait "$tracer"; st=$?
                [ $st = 6 ] || fail "start --wait interrupted right after StartSession exited $st (killed?): $(cat "$WORK/start-int.txt")"
                grep -q "Interrupted: pen MNS-0001 stopped." "$WORK/start-int.txt" || fail "start --wait did not say it stopped the pen: $(cat "$WORK/start-int.txt")"
                wait_for "MNS-0001 idle after the interrupt" info_has MNS "^State: *idle"
                json 0 "the interrupted session was stopped" 'd["session"] is None and d["pen"]["state"] == "idle"' M --json status MNS
                echo "ok: Ctrl-C right after StartSession stopped the pen"
        }
        kill -TERM $mnd_pid
        wait $mnd_pid
        echo "inner: all passed"
        exit 0
fi

# ---- the outer phase ----
[ $# = 5 ] || { echo "usage: $0 MNCTL MND MNSIM TMPDIR COMPLETION" >&2; exit 2; }
MNCTL=$1 MND=$2 MNSIM=$3 COMPLETION=$5
mkdir -p "$4"
WORK=$(mktemp -d "$4/run.XXXXXX") || fail "mktemp"
chmod 755 "$WORK"       # another uid connects to the bus socket in here
mkdir "$WORK/state"
bus_pid=""
abus_pid=""
cleanup() {
        [ -n "$bus_pid" ] && kill "$bus_pid" 2>/dev/null
        [ -n "$abus_pid" ] && kill "$abus_pid" 2>/dev/null
        rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Checks that need no bus at all.
unset MNCTL_BUS NO_COLOR
run 0 "--help" "$MNCTL" --help
has "^Commands:"
run 0 "--version" "$MNCTL" --version
has "^mnctl [0-9]"
json 0 "--version" '"version" in d' "$MNCTL" --version --json
run 0 "help CMD" "$MNCTL" help start
has "^mnctl start"
json 0 "help CMD" 'd["help"].startswith("mnctl start")' "$MNCTL" --json help start
run 0 "CMD --help" "$MNCTL" set-depth --help
has "^mnctl set-depth \[PEN\] DEPTH"
run 2 "no command" "$MNCTL"
run 2 "unknown command" "$MNCTL" frobnicate
has_err "unknown command 'frobnicate'"
json 2 "unknown command" 'd["error"]["name"] == "org.microneedle.mnctl.Error.Usage"' "$MNCTL" --json frobnicate
run 2 "unknown option" "$MNCTL" list --frobnicate
run 2 "option of another command" "$MNCTL" list --all
run 2 "MNCTL_BUS garbage" env MNCTL_BUS=bogus "$MNCTL" list
run 2 "usage errors come before the bus" env DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent "$MNCTL" --user set-depth MNU 0.3333mm

# No bus at all: exit 7.
run 7 "no session bus" env DBUS_SESSION_BUS_ADDRESS=unix:path="$WORK/none.sock" "$MNCTL" --user list
json 7 "no session bus" 'd["error"]["name"] == "org.microneedle.mnctl.Error.NoDaemon"' env DBUS_SESSION_BUS_ADDRESS=unix:path="$WORK/none.sock" "$MNCTL" --user --json list
run 7 "no session bus, MNCTL_BUS=user" env MNCTL_BUS=user DBUS_SESSION_BUS_ADDRESS=unix:path="$WORK/none.sock" "$MNCTL" list

# A private bus that lets any uid connect (the not-authorised check runs as nobody).
start_private_bus

# A bus without mnd: exit 7, with a sentence.
run 7 "bus without mnd" "$MNCTL" --user list
has_err "mnd is not running: nobody owns org.microneedle.Mnd1 on the session bus"
json 7 "bus without mnd" 'd["error"]["name"] == "org.freedesktop.DBus.Error.ServiceUnknown"' "$MNCTL" --user --json status
run 7 "monitor without mnd" "$MNCTL" --user monitor
json 7 "monitor without mnd" 'd["error"]["exit_code"] == 7' "$MNCTL" --user --json monitor
[ "$(wc -l <"$WORK/out")" = 1 ] || fail "monitor --json: the error is not one line (JSON Lines): $out"
json 7 "watch without mnd" 'd["error"]["exit_code"] == 7' "$MNCTL" --user --json watch
[ "$(wc -l <"$WORK/out")" = 1 ] || fail "watch --json: the error is not one line (JSON Lines): $out"

# The completion's helpers never start mnd by bus activation, nor wait long: a bus where
# org.microneedle.Mnd1 is activatable (its Exec only leaves a mark) but not running.
mkdir "$WORK/services"
cat >"$WORK/services/org.microneedle.Mnd1.service" <<SERVICE
[D-BUS Service]
Name=org.microneedle.Mnd1
Exec=/bin/sh -c 'touch $WORK/activated'
SERVICE
sed -e "s|<listen>unix:path=$WORK/bus.sock</listen>|<listen>unix:path=$WORK/abus.sock</listen><servicedir>$WORK/services</servicedir>|" \
        "$WORK/bus.conf" >"$WORK/abus.conf"
dbus-daemon --config-file="$WORK/abus.conf" --fork --print-address=3 --print-pid=4 3>"$WORK/aaddr" 4>"$WORK/apid" \
        || fail "cannot start the activating dbus-daemon"
abus_pid=$(cat "$WORK/apid")
A() { env DBUS_SESSION_BUS_ADDRESS="$(cat "$WORK/aaddr")" "$@"; }
for cmd in "list --serials" "limits --areas"; do
        t0=$(date +%s%N)
        run 7 "$cmd with mnd activatable but not running" A "$MNCTL" --user $cmd
        t1=$(date +%s%N)
        [ $(( (t1 - t0) / 1000000 )) -lt 1500 ] || fail "$cmd took $(( (t1 - t0) / 1000000 )) ms"
        has_err "mnd is not running"
done
got=$(A bash -c '
        . /usr/share/bash-completion/bash_completion 2>/dev/null || _init_completion() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }
        . "$1"
        t() { COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; read -r -a COMP_WORDS <<<"$COMP_LINE"; [[ $COMP_LINE == *" " ]] && COMP_WORDS+=(""); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _mnctl; echo "${COMPREPLY[*]}"; }
        PATH=$2:$PATH
        t "mnctl --user info "; t "mnctl --user start --area "' _ "$COMPLETION" "$(dirname "$MNCTL")")
[ -z "$(echo $got)" ] || fail "the completion offered '$got' without mnd"
sleep 0.5
[ -e "$WORK/activated" ] && fail "the completion's calls started mnd by bus activation"
echo "ok: list --serials, limits --areas and the completion did not activate mnd"
# The bus does activate on an ordinary call: the check above means something.
A busctl --user --timeout=5 call org.microneedle.Mnd1 /org/microneedle/Mnd1 org.freedesktop.DBus.Peer Ping >/dev/null 2>&1
wait_for "activation by an ordinary call" test -e "$WORK/activated"
echo "ok: an ordinary call does activate mnd on that bus"
kill "$abus_pid" 2>/dev/null
abus_pid=""

# The rest inside mnsim, with the daemon.
export TMPDIR=$WORK
"$MNSIM" --usb 1 --serial 1 --cartridge --seed 7 -- bash "$0" inner "$MNCTL" "$MND" "$MNSIM" "$WORK" "$COMPLETION"
st=$?
if [ $st != 0 ]; then
        echo "--- mnd log:" >&2
        cat "$WORK/mnd.log" >&2 2>/dev/null
        fail "the checks with the daemon failed (exit $st)"
fi
echo "all mnctl integration checks passed"
