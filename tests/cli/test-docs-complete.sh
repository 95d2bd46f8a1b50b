#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Every command and every option mnctl knows (as its own --help lists them)
# is in the man page and in the bash completion.
# Usage: test-docs-complete.sh MNCTL MAN.scd COMPLETION
set -u
MNCTL=$1 MAN=$2 COMPLETION=$3
failed=0

fail() { echo "FAIL: $*" >&2; failed=1; }

# A command is one word ("list") or a group and a word ("audit list").
commands=$("$MNCTL" --help | sed -n '/^Commands:/,/^$/p' |
           sed -n 's/^  \([a-z][a-z-]*\( [a-z][a-z-]*\)\{0,1\}\)\( .*\)\{0,1\}$/\1/p')
[ -n "$commands" ] || { echo "FAIL: no commands in 'mnctl --help'" >&2; exit 1; }

n=0
while read -r cmd; do
        n=$((n + 1))
        first=${cmd%% *}
        # The man page has an entry "*cmd*" at the start of a line in COMMANDS.
        grep -q "^\*$cmd\*" "$MAN" || fail "command '$cmd' has no entry in $(basename "$MAN")"
        # The completion lists it (a group's commands in GROUP_commands) and has an
        # options entry for it: [cmd]= or ["group cmd"]=.
        grep -q "^ *local commands=\".*\\b$first\\b" "$COMPLETION" || fail "command '$first' is not in the completion's command list"
        if [ "$first" != "$cmd" ]; then
                grep -q "^ *local ${first}_commands=\".*\\b${cmd#* }\\b" "$COMPLETION" ||
                        fail "command '$cmd' is not in the completion's ${first}_commands"
        fi
        grep -q "\[\"\{0,1\}$cmd\"\{0,1\}\]=" "$COMPLETION" || fail "command '$cmd' has no options entry in the completion"
        # $cmd unquoted: a group's command is two words.
        "$MNCTL" $cmd --help >/dev/null || fail "'mnctl $cmd --help' failed"
        "$MNCTL" help $cmd >/dev/null || fail "'mnctl help $cmd' failed"

        for opt in $("$MNCTL" $cmd --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
                grep -q -- "\*$opt\*" "$MAN" || fail "option '$opt' of '$cmd' is not in $(basename "$MAN")"
                case $opt in
                        --json|--user|--no-color|--no-ask-password|--help) continue ;;  # the completion's common options
                esac
                grep -q "\[\"\{0,1\}$cmd\"\{0,1\}\]=\".*$opt\\b" "$COMPLETION" || fail "option '$opt' of '$cmd' is not in the completion"
        done
done <<EOF
$commands
EOF

# Global options.
for opt in $("$MNCTL" --help | sed -n '/^Options:/,/^$/p' | grep -o -- '--[a-z][a-z-]*' | sort -u); do
        grep -q -- "\*$opt\*" "$MAN" || fail "global option '$opt' is not in $(basename "$MAN")"
        grep -q -- "global_opts=\".*$opt\\b" "$COMPLETION" || fail "global option '$opt' is not in the completion"
done

# And the other way round: the completion offers no command mnctl does not have.
for cmd in $(sed -n 's/^ *local commands="\(.*\)"/\1/p' "$COMPLETION"); do
        echo "$commands" | sed 's/ .*//' | grep -qx "$cmd" || fail "the completion offers '$cmd', which mnctl does not know"
done
for group in $(sed -n 's/^ *local \([a-z]*\)_commands=.*/\1/p' "$COMPLETION"); do
        for cmd in $(sed -n "s/^ *local ${group}_commands=\"\(.*\)\"/\1/p" "$COMPLETION"); do
                echo "$commands" | grep -qx "$group $cmd" || fail "the completion offers '$group $cmd', which mnctl does not know"
        done
done

# The exit codes and environment are documented.
for code in 0 2 3 4 5 6 7 8; do
        grep -q "^\*$code\*" "$MAN" || fail "exit status $code is not in the man page"
done
for var in MNCTL_BUS NO_COLOR TZ; do
        grep -q "^\*$var\*" "$MAN" || fail "environment variable $var is not in the man page"
done

# The completion parses.
bash -n "$COMPLETION" || fail "the completion is not valid bash"

[ $failed = 0 ] && echo "ok: $n commands, their options, exit codes and environment are documented and completed"
exit $failed
