#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The daemon's manual pages keep up with the daemon:
#   - every option `mnd --help` lists (and its environment variables) is in mnd.8.scd;
#   - every configuration section and key mnd accepts is in mnd.conf.5.scd, and
#     every treatment area of libmnp's shipped table is in its table, with its caps.
# The sections and keys come from two places, and both must be documented:
#   - mnd itself: a configuration with an unknown section, or an unknown key in
#     each section, makes it name the ones it knows;
#   - the source: the names daemon/config.c compares sections and keys with
#     (streq(section, "..."), streq(key, "..."), rows { "...", offsetof(...) } of a
#     key table), and the key table and shipped areas of protocol/limits.c.
# Nothing is listed here by hand.
#
#     test-docs-daemon.sh MND DAEMON_SRC_DIR LIMITS_C
set -euo pipefail

if [ $# -ne 3 ]; then
        echo "usage: $0 MND DAEMON_SRC_DIR LIMITS_C" >&2
        exit 2
fi
mnd=$1 src=$2 limits_c=$3
man8=$src/mnd.8.scd man5=$src/mnd.conf.5.scd config_c=$src/config.c
for f in "$man8" "$man5" "$config_c" "$limits_c"; do
        [ -r "$f" ] || { echo "FAIL: cannot read $f" >&2; exit 1; }
done

failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test-docs-daemon.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# ---- mnd(8): options and environment from `mnd --help` ----

help=$("$mnd" --help) || { echo "FAIL: 'mnd --help' failed" >&2; exit 1; }
long_opts=$(printf '%s\n' "$help" | grep -o -- '--[a-z][a-z-]*' | sort -u)
short_opts=$(printf '%s\n' "$help" | sed -n 's/^ *\(-[a-zA-Z]\) --.*/\1/p' | sort -u)
env_vars=$(printf '%s\n' "$help" | sed -n 's/^Environment: *//p' | grep -o '[A-Z][A-Z0-9_]*_[A-Z0-9_]*' | sort -u || true)
[ -n "$long_opts" ] || fail "no options found in 'mnd --help'"
[ -n "$env_vars" ] || fail "no environment variables found in 'mnd --help' (an 'Environment:' line)"

n_opts=0
for opt in $long_opts $short_opts; do
        n_opts=$((n_opts + 1))
        # An entry in OPTIONS: a line starting with the option in bold, alone or among its other names.
        grep -q -- "^\*$opt\*\(\$\|,\| \)\|^\*-[a-zA-Z]\*, \*$opt\*" "$man8" ||
                fail "option '$opt' of 'mnd --help' has no entry in $(basename "$man8")"
done
for var in $env_vars; do
        grep -q "^\*$var\*" "$man8" || fail "environment variable $var of 'mnd --help' has no entry in $(basename "$man8")"
done

# ---- mnd.conf(5): sections and keys ----

# Runs mnd on a configuration and prints its first error line.  The private
# state directory and an unusable session bus make sure that a configuration
# mnd happens to accept gets no further than connecting to a bus.
mnd_config_error() {
        printf '%s\n' "$1" >"$tmp/probe.conf"
        DBUS_SESSION_BUS_ADDRESS=unix:path=$tmp/no-bus MND_LOG_LEVEL=err \
                timeout 10 "$mnd" --user --config "$tmp/probe.conf" --state-dir "$tmp/state" 2>&1 >/dev/null |
                sed -n 's/^<[0-9]>//p' | head -n 1 || true
}

probe=zz_docs_probe
# Names: what follows "known:" or "expected" in mnd's message, split into words.
names_in_message() {
        sed -n -e 's/.*known: *//p' -e 's/.*expected *//p' | tr -c 'a-z0-9_.<>[]-' '\n' |
                sed -e 's/^\[//' -e 's/\]$//' | grep -E '^[a-z][a-z0-9_.<>-]*$' | grep -vx -e or -e and || true
}

# Sections, as mnd names them for an unknown one, and as config.c compares them.
msg=$(mnd_config_error "[$probe]
x = 1")
from_mnd=$(printf '%s\n' "$msg" | names_in_message)
[ -n "$from_mnd" ] || fail "mnd named no known sections for an unknown one; it said: $msg"
from_src=$(grep -o 'streq(section, *"[^"]*")' "$config_c" | sed 's/.*"\(.*\)")/\1/' || true)
prefixes=$(grep -o 'strncmp(section, *"[^"]*\.",' "$config_c" | sed 's/.*"\(.*\)\.",/\1/' || true)
[ -n "$from_src" ] || fail "found no streq(section, \"...\") in $config_c: update this test"
sections=$(printf '%s\n' $from_mnd $from_src | grep -v '<' | sort -u)
prefixes=$(printf '%s\n' $prefixes $(printf '%s\n' $from_mnd | sed -n 's/^\([a-z][a-z0-9_-]*\)\.<id>$/\1/p') | sort -u)

# Shipped treatment areas (limits.c: the rows { "id", DEPTH, DURATION } of shipped_areas[]).
areas_rows=$(sed -n '/shipped_areas\[.*\] *= *{/,/^};/p' "$limits_c" |
        sed -n 's/^ *{ *"\([a-z][a-z0-9-]*\)", *\([0-9]*\), *\([0-9 *]*\) *},.*/\1 \2 \3/p')
[ -n "$areas_rows" ] || fail "found no shipped areas in $limits_c: update this test"
first_area=$(printf '%s\n' "$areas_rows" | head -n 1 | cut -d' ' -f1)

# Keys, section by section: as mnd names them for an unknown key, and as the source compares them.
keys_of_section() {     # SECTION-AS-WRITTEN
        local msg
        msg=$(mnd_config_error "[$1]
$probe = 1")
        case "$msg" in
                *"unknown key"*) printf '%s\n' "$msg" | names_in_message | grep -v '[.<]' || true ;;
                *) echo "FAIL: mnd does not answer an unknown key in [$1] with 'unknown key ...; known: KEYS'; it said: $msg" >&2 ;;
        esac
}
src_keys=$( { grep -o 'streq(key, *"[^"]*")' "$config_c" | sed 's/.*"\(.*\)")/\1/'
              grep -o '{ *"[a-z][a-z0-9_]*", *offsetof(' "$config_c" | sed 's/{ *"\(.*\)",.*/\1/'
              # limits.c: the key of each quantity, [Q_...] = { "key", ...
              grep -o '\[Q_[A-Z]*\] *= *{ *"[a-z][a-z0-9_]*"' "$limits_c" | sed 's/.*"\(.*\)"/\1/'
            } | sort -u)
[ -n "$src_keys" ] || fail "found no keys in $config_c and $limits_c: update this test"

check_key() {   # KEY SECTION-HEADING
        grep -q "^\*$1\* = " "$man5" || fail "configuration key '$1' ([$2]) has no entry '*$1* = ...' in $(basename "$man5")"
}
all_doc_keys=""
for section in $sections; do
        grep -qx "##* \[$section\]" "$man5" || fail "configuration section [$section] has no heading in $(basename "$man5")"
        keys=$(keys_of_section "$section")
        [ -n "$keys" ] || fail "mnd named no keys of section [$section] for an unknown one (it should list them after 'known:')"
        for key in $keys; do
                check_key "$key" "$section"
        done
        all_doc_keys="$all_doc_keys $(echo $keys)"
done
for prefix in $prefixes; do
        grep -qx "##* \[$prefix\.<id>\]" "$man5" || fail "configuration sections [$prefix.<id>] have no heading in $(basename "$man5")"
        if [ "$prefix" = area ]; then
                keys=$(keys_of_section "area.$first_area")
                [ -n "$keys" ] || fail "mnd named no keys of section [area.$first_area] for an unknown one (it should list them after 'known:' or 'expected')"
                all_doc_keys="$all_doc_keys $(echo $keys)"
                for key in $keys; do
                        check_key "$key" "area.<id>"
                done
        fi
done
# Keys the source knows that mnd did not name: documented too.
for key in $src_keys; do
        case " $all_doc_keys " in
                *" $key "*) ;;
                *) check_key "$key" "from the source" ;;
        esac
done

# The shipped area table: each area's row, with its depth cap and longest session.
n_areas=0
while read -r id depth duration; do
        n_areas=$((n_areas + 1))
        seconds=$(( duration ))
        row=$(sed -n "/^|  $id\$/,/^|/p" "$man5" | sed '1d;$d' | tr '\n' ' ')
        [ -n "$row" ] || { fail "area '$id' has no row '|  $id' in the table of $(basename "$man5")"; continue; }
        case "$row" in *":] $depth um"*) ;; *) fail "area '$id': the table does not give its depth cap $depth um" ;; esac
        case "$row" in *":] $seconds s"*) ;; *) fail "area '$id': the table does not give its longest session $seconds s" ;; esac
done <<EOF
$areas_rows
EOF
documented_areas=$(sed -n 's/^|  \([a-z][a-z0-9-]*\)$/\1/p' "$man5")
for id in $documented_areas; do
        printf '%s\n' "$areas_rows" | grep -q "^$id " || fail "the table in $(basename "$man5") has area '$id', which limits.c does not ship"
done

n_keys=$(printf '%s\n' $all_doc_keys $src_keys | sort -u | wc -l)
[ $failed = 0 ] && echo "ok: $n_opts options, $(echo $sections $prefixes | wc -w) sections, $n_keys keys and $n_areas areas are documented"
exit $failed
