/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mnctl-util.h"
#include "units.h"

_printf_(4, 5)
static int refuse(int r, char *reason, size_t size, const char *fmt, ...) {
        va_list ap;

        if (reason && size > 0) {
                va_start(ap, fmt);
                vsnprintf(reason, size, fmt, ap);
                va_end(ap);
        }
        return r;
}

static void accept_reason(char *reason, size_t size) {
        if (reason && size > 0)
                reason[0] = '\0';
}

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

/*
 * Reads a run of decimal digits at *p into *value, saturating above
 * UINT32_MAX (*overflow is set then).  Returns the number of digits.
 */
static size_t read_digits(const char **p, uint64_t *value, bool *overflow) {
        size_t n = 0;

        *value = 0;
        while (is_digit(**p)) {
                if (*value <= UINT32_MAX)
                        *value = *value * 10 + (uint64_t) (**p - '0');
                if (*value > UINT32_MAX)
                        *overflow = true;
                (*p)++;
                n++;
        }
        return n;
}

/* True if s spells one of the NULL-terminated names, ignoring ASCII case. */
static bool unit_is(const char *s, const char *const *names) {
        for (; *names; names++)
                if (strcasecmp(s, *names) == 0)
                        return true;
        return false;
}

int mnctl_parse_depth(const char *s, uint32_t *ret_um, char *reason, size_t size) {
        static const char *const mm[] = { "", "mm", NULL };
        static const char *const um[] = { "um", "\xc2\xb5m" /* µm */, "\xce\xbcm" /* μm */, NULL };
        const char *p = s, *frac = NULL;
        size_t int_digits, frac_digits = 0;
        uint64_t whole, um_value;
        bool overflow = false, in_mm;

        if (isempty(s))
                return refuse(-EINVAL, reason, size, "empty depth: give one such as 0.5mm or 500um");
        if (*s == '-')
                return refuse(-EINVAL, reason, size, "depth '%s' is negative: a depth is 0 or more, such as 0.5mm", s);

        int_digits = read_digits(&p, &whole, &overflow);
        if (*p == '.') {
                p++;
                frac = p;
                while (is_digit(*p))
                        p++;
                frac_digits = (size_t) (p - frac);
                if (frac_digits == 0)
                        return refuse(-EINVAL, reason, size,
                                      "depth '%s' has no digits after the decimal point: write 0.5mm, not 0.mm", s);
        }
        if (int_digits == 0 && frac_digits == 0)
                return refuse(-EINVAL, reason, size,
                              "depth '%s' is not a number: give one such as 0.5mm or 500um", s);

        if (unit_is(p, mm))
                in_mm = true;
        else if (unit_is(p, um))
                in_mm = false;
        else
                return refuse(-EINVAL, reason, size,
                              "depth '%s' has an unknown unit '%s': use mm or um, such as 0.5mm or 500um", s, p);

        /* The fraction must end on a whole micrometre: at most 3 significant places in mm, none in um. */
        um_value = 0;
        for (size_t i = 0; i < frac_digits; i++) {
                unsigned d = (unsigned) (frac[i] - '0');

                if (in_mm && i < 3)
                        um_value = um_value * 10 + d;
                else if (d != 0)
                        return refuse(-EINVAL, reason, size,
                                      "depth '%s' is not a whole number of micrometres (0.001 mm): "
                                      "depths are never rounded", s);
        }
        if (in_mm)
                for (size_t i = frac_digits; i < 3; i++)
                        um_value *= 10;

        if (!overflow)
                um_value += in_mm ? whole * 1000 : whole;
        if (overflow || um_value > UINT32_MAX)
                return refuse(-ERANGE, reason, size,
                              "depth '%s' is far too large: no pen goes beyond a few millimetres", s);

        *ret_um = (uint32_t) um_value;
        accept_reason(reason, size);
        return 0;
}

int mnctl_parse_duration(const char *s, uint32_t *ret_s, char *reason, size_t size) {
        static const char *const seconds[] = { "s", "sec", NULL };
        static const char *const minutes[] = { "m", "min", NULL };
        static const char *const hours[] = { "h", NULL };
        const char *p = s;
        uint64_t total = 0;

        if (isempty(s))
                return refuse(-EINVAL, reason, size, "empty duration: give one such as 90s, 20m or 1h");
        if (*s == '-')
                return refuse(-EINVAL, reason, size, "duration '%s' is negative: give one such as 20m", s);

        /* A bare number is seconds. */
        if (strspn(s, "0123456789") == strlen(s)) {
                bool overflow = false;
                uint64_t v;

                read_digits(&p, &v, &overflow);
                if (overflow)
                        return refuse(-ERANGE, reason, size,
                                      "duration '%s' is far too long: no session lasts more than an hour", s);
                total = v;
        }

        while (*p) {
                const char *u;
                uint64_t v, factor;
                bool overflow = false;
                char unit[8];
                size_t n;

                if (read_digits(&p, &v, &overflow) == 0)
                        return refuse(-EINVAL, reason, size,
                                      "duration '%s' is not understood: give one such as 90s, 20m, 1h or 1h30m", s);
                if (*p == '.' || *p == ',')
                        return refuse(-EINVAL, reason, size,
                                      "duration '%s' is not a whole number: write 1h30m rather than 1.5h, "
                                      "or give seconds", s);

                u = p;
                while (*p && !is_digit(*p))
                        p++;
                n = (size_t) (p - u);
                if (n == 0)
                        return refuse(-EINVAL, reason, size,
                                      "duration '%s' needs a unit after each number: s, m or h, such as 1h30m", s);
                if (n >= sizeof(unit))
                        n = sizeof(unit) - 1;
                memcpy(unit, u, n);
                unit[n] = '\0';
                if (unit_is(unit, seconds))
                        factor = 1;
                else if (unit_is(unit, minutes))
                        factor = 60;
                else if (unit_is(unit, hours))
                        factor = 3600;
                else
                        return refuse(-EINVAL, reason, size,
                                      "duration '%s' has an unknown unit '%.*s': use s, m or h, such as 90s, 20m or 1h",
                                      s, (int) (p - u), u);

                if (overflow || total + v * factor > UINT32_MAX)
                        return refuse(-ERANGE, reason, size,
                                      "duration '%s' is far too long: no session lasts more than an hour", s);
                total += v * factor;
        }

        *ret_s = (uint32_t) total;
        accept_reason(reason, size);
        return 0;
}

int mnctl_parse_speed(const char *s, uint32_t *ret_hz, char *reason, size_t size) {
        static const char *const hz[] = { "", "hz", NULL };
        const char *p = s;
        uint64_t v;
        bool overflow = false;

        if (isempty(s))
                return refuse(-EINVAL, reason, size, "empty speed: give strokes per second, such as 120 or 120hz");
        if (*s == '-')
                return refuse(-EINVAL, reason, size, "speed '%s' is negative: give strokes per second, such as 120", s);
        if (read_digits(&p, &v, &overflow) == 0)
                return refuse(-EINVAL, reason, size,
                              "speed '%s' is not a number: give strokes per second, such as 120 or 120hz", s);
        if (*p == '.' || *p == ',')
                return refuse(-EINVAL, reason, size,
                              "speed '%s' is not a whole number of strokes per second", s);
        if (!unit_is(p, hz))
                return refuse(-EINVAL, reason, size,
                              "speed '%s' has an unknown unit '%s': speeds are in Hz (strokes per second), "
                              "such as 120 or 120hz", s, p);
        if (overflow)
                return refuse(-ERANGE, reason, size, "speed '%s' is far too large: no pen goes beyond a few hundred Hz", s);

        *ret_hz = (uint32_t) v;
        accept_reason(reason, size);
        return 0;
}

const char *mnctl_format_duration(uint64_t seconds, char *buf, size_t size) {
        uint64_t h = seconds / 3600, m = seconds / 60 % 60, s = seconds % 60;

        if (!buf || size == 0)
                return "";
        if (h > 0 && s == 0)
                snprintf(buf, size, m > 0 ? "%" PRIu64 "h %" PRIu64 "m" : "%" PRIu64 "h", h, m);
        else if (h > 0)
                snprintf(buf, size, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", h, m, s);
        else if (m > 0)
                snprintf(buf, size, s > 0 ? "%" PRIu64 "m %" PRIu64 "s" : "%" PRIu64 "m", m, s);
        else
                snprintf(buf, size, "%" PRIu64 "s", s);
        return buf;
}

const char *mnctl_format_clock(uint64_t seconds, char *buf, size_t size) {
        if (!buf || size == 0)
                return "";
        if (seconds >= 3600)
                snprintf(buf, size, "%" PRIu64 ":%02" PRIu64 ":%02" PRIu64,
                         seconds / 3600, seconds / 60 % 60, seconds % 60);
        else
                snprintf(buf, size, "%" PRIu64 ":%02" PRIu64, seconds / 60, seconds % 60);
        return buf;
}
