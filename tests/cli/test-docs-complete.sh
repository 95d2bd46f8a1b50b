#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Every command and every option mnctl knows (as its own --help lists them)
# is in the man page and in the bash completion.
# Usage: test-docs-complete.sh MNCTL MAN.scd COMPLETION
set -u
MNCTL=$1 MAN=$2 COMPLETION=$3
failed=0

fail() { echo "FAIL: $*" >&2; failed=1; }

commands=$("$MNCTL" --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z][a-z-]*\).*/\1/p')
[ -n "$commands" ] || { echo "FAIL: no commands in 'mnctl --help'" >&2; exit 1; }

n=0
for cmd in $commands; do
        n=$((n + 1))
        # The man page has an entry "*cmd*" at the start of a line in COMMANDS.
        grep -q "^\*$cmd\*" "$MAN" || fail "command '$cmd' has no entry in $(basename "$MAN")"
        # The completion lists it among the commands and has an options entry for it.
        grep -q "^ *local commands=\".*\\b$cmd\\b" "$COMPLETION" || fail "command '$cmd' is not in the completion's command list"
        grep -q "\[$cmd\]=" "$COMPLETION" || fail "command '$cmd' has no options entry in the completion"
        "$MNCTL" "$cmd" --help >/dev/null || fail "'mnctl $cmd --help' failed"
        "$MNCTL" help "$cmd" >/dev/null || fail "'mnctl help $cmd' failed"

        for opt in $("$MNCTL" "$cmd" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
                grep -q -- "\*$opt\*" "$MAN" || fail "option '$opt' of '$cmd' is not in $(basename "$MAN")"
                case $opt in
                        --json|--user|--no-color|--help) continue ;;    # the completion's common options
                esac
                grep -q "\[$cmd\]=\".*$opt\\b" "$COMPLETION" || fail "option '$opt' of '$cmd' is not in the completion"
        done
done

# Global options.
for opt in $("$MNCTL" --help | sed -n '/^Options:/,/^$/p' | grep -o -- '--[a-z][a-z-]*' | sort -u); do
        grep -q -- "\*$opt\*" "$MAN" || fail "global option '$opt' is not in $(basename "$MAN")"
        grep -q -- "global_opts=\".*$opt\\b" "$COMPLETION" || fail "global option '$opt' is not in the completion"
done

# And the other way round: the completion offers no command mnctl does not have.
for cmd in $(sed -n 's/^ *local commands="\(.*\)"/\1/p' "$COMPLETION"); do
        echo "$commands" | grep -qx "$cmd" || fail "the completion offers '$cmd', which mnctl does not know"
done

# The exit codes and environment are documented.
for code in 0 2 3 4 5 6 7; do
        grep -q "^\*$code\*" "$MAN" || fail "exit status $code is not in the man page"
done
for var in MNCTL_BUS NO_COLOR; do
        grep -q "^\*$var\*" "$MAN" || fail "environment variable $var is not in the man page"
done

# The completion parses.
bash -n "$COMPLETION" || fail "the completion is not valid bash"

[ $failed = 0 ] && echo "ok: $n commands, their options, exit codes and environment are documented and completed"
exit $failed
