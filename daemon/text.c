/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "text.h"

/* The length of the valid character at p (at most end - p bytes), 0 if there is none there.
 * Control characters count as characters here; the callers decide about them. */
static size_t utf8_char(const uint8_t *p, const uint8_t *end, uint32_t *ret) {
        uint8_t c = *p;
        uint32_t cp;
        size_t len;

        if (c < 0x80) {
                *ret = c;
                return 1;
        }
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
        } else
                return 0;
        if ((size_t) (end - p) < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret = cp;
        return len;
}

static bool is_control(uint32_t cp) {
        /* C0, DEL, and C1 (U+0080..U+009F): terminal escapes all. */
        return cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
}

bool mnd_text_is_valid(const char *s, size_t n, bool multiline) {
        const uint8_t *p = (const uint8_t *) s, *end = p + n;

        while (p < end) {
                uint32_t cp;
                size_t len = utf8_char(p, end, &cp);

                if (len == 0 || cp == 0)
                        return false;
                if (is_control(cp) && !(multiline && (cp == '\t' || cp == '\n')))
                        return false;
                p += len;
        }
        return true;
}

int mnd_text_check(const char *s, size_t max) {
        size_t n;

        if (!s)
                return -EINVAL;
        n = strlen(s);
        if (n > max)
                return -E2BIG;
        return mnd_text_is_valid(s, n, false) ? 0 : -EINVAL;
}

const char *mnd_text_quote(const char *s, size_t max, char *buf, size_t size) {
        const uint8_t *p = (const uint8_t *) (s ?: ""), *end = p + strlen((const char *) p);
        size_t o = 0;

        if (size == 0)
                return buf;
        if (size < 4) {
                buf[0] = '\0';
                return buf;
        }
        if (max > size - 4)
                max = size - 4;         /* room for "..." and the NUL */

        while (p < end) {
                char esc[5];
                const char *piece;
                uint32_t cp;
                size_t len = utf8_char(p, end, &cp), plen;

                if (len == 0 || is_control(cp)) {
                        /* One byte at a time: a control character or a byte of no valid character. */
                        snprintf(esc, sizeof esc, "\\x%02x", *p);
                        piece = esc;
                        plen = 4;
                        len = 1;
                } else {
                        piece = (const char *) p;
                        plen = len;
                }
                if (o + plen > max)
                        break;
                memcpy(buf + o, piece, plen);
                o += plen;
                p += len;
        }
        if (p < end) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o] = '\0';
        return buf;
}
