/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Text from callers: one set of rules for what the daemon accepts and records (the audit log's),
 * and the one safe way to quote caller text inside a message.
 *
 * Valid text is strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), no NUL,
 * no C0 control characters, no DEL and no C1 control characters (U+0080..U+009F, terminal escapes
 * too); TAB and LF are allowed only in multi-line text.  Every string a method accepts into a
 * session or the audit log is checked with these rules, so that what the daemon takes is never
 * refused later by the audit log.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Whether the n bytes at s are valid text (above). */
bool mnd_text_is_valid(const char *s, size_t n, bool multiline);

/* A single-line option string: 0, -E2BIG (longer than max bytes) or -EINVAL (not valid text). */
int mnd_text_check(const char *s, size_t max);

/* The size of a buffer for mnd_text_quote() of at most max bytes: the text, "..." and NUL. */
#define MND_TEXT_QUOTE_SIZE(max) ((max) + 4)

/*
 * Caller text made safe for a D-Bus error message, a log line and the audit log, whatever it
 * contains: valid characters are copied, each control character and each byte that is not part
 * of valid UTF-8 becomes "\xNN", and the result is cut after at most max bytes, only at a
 * character boundary, with "..." when something was left out.  Writes into buf (size at least
 * MND_TEXT_QUOTE_SIZE(max)) and returns it; s NULL reads as "".
 */
const char *mnd_text_quote(const char *s, size_t max, char *buf, size_t size);
