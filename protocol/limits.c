/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The safety limits: one table of caps, checked by the CLI, the daemon and
 * the pen firmware.  Everything here is pure: no allocation, no I/O, no
 * global mutable state; every refusal is a sentence written with snprintf
 * into the caller's buffer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "limits.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define _printf_(a, b) __attribute__((__format__(printf, a, b)))

/* Large enough for "4294967.295 mm" and for "1193046 h 28 min 15 s". */
#define VALUE_STR_MAX 32

/* Caller-supplied strings (area ids, keys, values) are quoted with at most
 * this many characters, so that every reason fits in MNP_REASON_MAX. */
#define QUOTE_CHARS_MAX 24
#define QUOTE_STR_MAX (QUOTE_CHARS_MAX + sizeof("..."))

/* The shipped table of domain.md: depth cap and longest session per area. */
static const struct {
        const char *id;
        uint32_t max_depth_um;
        uint32_t max_duration_s;
} shipped_areas[MNP_AREA_COUNT] = {
        { "periorbital",  500, 15 * 60 },
        { "forehead",     750, 20 * 60 },
        { "nose",         500, 10 * 60 },
        { "upper-lip",    750, 10 * 60 },
        { "cheeks",      2000, 30 * 60 },
        { "chin",        2000, 15 * 60 },
        { "face",        2000, 45 * 60 },
        { "neck",        1000, 30 * 60 },
        { "decolletage", 1000, 30 * 60 },
        { "scalp",       1500, 30 * 60 },
        { "body",        2500, 60 * 60 },
};

/* Which cap a value ran into.  The order is also the preference on ties: the
 * more fundamental cap is named (the absolute cap rather than a clinic cap
 * that merely equals it). */
enum cap_kind {
        CAP_ABSOLUTE,
        CAP_PEN,
        CAP_AREA,
        CAP_CLINIC,
};

struct cap {
        enum cap_kind kind;
        uint32_t value;
};

enum quantity {
        Q_DEPTH,
        Q_SPEED,
        Q_DURATION,
};

static const struct {
        const char *key;
        const char *unit;       /* as in the key name */
        const char *unit_words; /* for people */
} quantities[] = {
        [Q_DEPTH]    = { "max_depth_um",   "um", "micrometres" },
        [Q_SPEED]    = { "max_speed_hz",   "Hz", "hertz" },
        [Q_DURATION] = { "max_duration_s", "s",  "seconds" },
};

static void reason_clear(char *reason, size_t size) {
        if (reason && size > 0)
                reason[0] = '\0';
}

_printf_(4, 0)
static void reason_vprintf(char *reason, size_t size, unsigned line, const char *fmt, va_list ap) {
        size_t n = 0;
        int r;

        if (!reason || size == 0)
                return;

        reason[0] = '\0';
        if (line > 0) {
                r = snprintf(reason, size, "line %u: ", line);
                if (r < 0)
                        return;
                n = (size_t) r;
                if (n >= size)
                        return; /* truncated, but NUL-terminated by snprintf */
        }

        if (vsnprintf(reason + n, size - n, fmt, ap) < 0)
                reason[n] = '\0';
}

_printf_(4, 5)
static int refuse(int error, char *reason, size_t size, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        reason_vprintf(reason, size, 0, fmt, ap);
        va_end(ap);
        return error;
}

_printf_(5, 6)
static int refuse_line(int error, char *reason, size_t size, unsigned line, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        reason_vprintf(reason, size, line, fmt, ap);
        va_end(ap);
        return error;
}

/* A caller-supplied string, safe to put in a sentence: at most
 * QUOTE_CHARS_MAX characters ("..." marks the cut), anything but printable
 * ASCII shown as '?'. */
static const char *quote_str(const char *s, char buf[static QUOTE_STR_MAX]) {
        size_t i;

        for (i = 0; s[i] != '\0' && i < QUOTE_CHARS_MAX; i++) {
                unsigned char c = (unsigned char) s[i];

                buf[i] = c >= 0x20 && c < 0x7f ? (char) c : '?';
        }
        buf[i] = '\0';
        if (s[i] != '\0')
                strcpy(buf + i, "...");

        return buf;
}

static const char *format_duration(uint32_t s, char buf[static VALUE_STR_MAX]) {
        uint32_t h, m;
        size_t n = 0;

        /* A unit is used from two of it on: "90 s", "25 min 30 s", "90 min", "2 h 5 min". */
        if (s < 2 * 60) {
                snprintf(buf, VALUE_STR_MAX, "%" PRIu32 " s", s);
                return buf;
        }
        if (s < 2 * 3600) {
                m = s / 60;
                s %= 60;
                if (s == 0)
                        snprintf(buf, VALUE_STR_MAX, "%" PRIu32 " min", m);
                else
                        snprintf(buf, VALUE_STR_MAX, "%" PRIu32 " min %" PRIu32 " s", m, s);
                return buf;
        }

        h = s / 3600;
        m = s % 3600 / 60;
        s %= 60;
        n = (size_t) snprintf(buf, VALUE_STR_MAX, "%" PRIu32 " h", h);
        if (m > 0 && n < VALUE_STR_MAX)
                n += (size_t) snprintf(buf + n, VALUE_STR_MAX - n, " %" PRIu32 " min", m);
        if (s > 0 && n < VALUE_STR_MAX)
                snprintf(buf + n, VALUE_STR_MAX - n, " %" PRIu32 " s", s);
        return buf;
}

static const char *format_speed(uint32_t hz, char buf[static VALUE_STR_MAX]) {
        snprintf(buf, VALUE_STR_MAX, "%" PRIu32 " Hz", hz);
        return buf;
}

static const char *format_value(enum quantity q, uint32_t v, char buf[static VALUE_STR_MAX]) {
        switch (q) {
        case Q_DEPTH:
                return mnp_format_depth(v, buf, VALUE_STR_MAX);
        case Q_SPEED:
                return format_speed(v, buf);
        case Q_DURATION:
                return format_duration(v, buf);
        }
        buf[0] = '\0';
        return buf;
}

const char *mnp_format_depth(uint32_t depth_um, char *buf, size_t size) {
        uint32_t mm = depth_um / 1000, frac = depth_um % 1000;

        if (!buf || size == 0)
                return "";

        if (frac % 10 == 0)
                snprintf(buf, size, "%" PRIu32 ".%02" PRIu32 " mm", mm, frac / 10);
        else
                snprintf(buf, size, "%" PRIu32 ".%03" PRIu32 " mm", mm, frac);
        return buf;
}

void mnp_limits_init(struct mnp_limits *l) {
        if (!l)
                return;

        *l = (struct mnp_limits) {
                .max_depth_um = MNP_ABS_MAX_DEPTH_UM,
                .max_speed_hz = MNP_ABS_MAX_SPEED_HZ,
                .max_duration_s = MNP_ABS_MAX_DURATION_S,
        };

        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                struct mnp_area_limits *a = &l->areas[i];

                /* The ids are shorter than MNP_AREA_ID_MAX; the zeroed
                 * initialisation above provides the NUL. */
                memcpy(a->id, shipped_areas[i].id, strlen(shipped_areas[i].id));
                a->max_depth_um = shipped_areas[i].max_depth_um;
                a->max_speed_hz = MNP_ABS_MAX_SPEED_HZ;
                a->max_duration_s = shipped_areas[i].max_duration_s;
        }
}

static bool area_id_eq(const struct mnp_area_limits *a, const char *area) {
        /* Bounded: a hand-filled table need not NUL-terminate its ids. */
        size_t n = strnlen(a->id, MNP_AREA_ID_MAX);

        return n > 0 && strncmp(a->id, area, n) == 0 && area[n] == '\0';
}

static int area_index(const struct mnp_limits *l, const char *area) {
        for (size_t i = 0; i < MNP_AREA_COUNT; i++)
                if (area_id_eq(&l->areas[i], area))
                        return (int) i;
        return -1;
}

const struct mnp_area_limits *mnp_limits_area(const struct mnp_limits *l, const char *area) {
        int i;

        if (!l || !area)
                return NULL;

        i = area_index(l, area);
        return i >= 0 ? &l->areas[i] : NULL;
}

static int refuse_unknown_area(const char *area, char *reason, size_t size) {
        char q[QUOTE_STR_MAX];

        return refuse(-ENOENT, reason, size, "unknown treatment area '%s'", quote_str(area, q));
}

static int refuse_no_limits(char *reason, size_t size) {
        return refuse(-EINVAL, reason, size, "no limits table was given; nothing can be allowed");
}

static uint32_t min_u32(uint32_t a, uint32_t b) {
        return a < b ? a : b;
}

int mnp_limits_effective(const struct mnp_limits *l, const char *area,
                         struct mnp_area_limits *ret, char *reason, size_t size) {
        const struct mnp_area_limits *a = NULL;
        struct mnp_area_limits e = {};

        if (!l || !ret)
                return refuse_no_limits(reason, size);

        if (area) {
                a = mnp_limits_area(l, area);
                if (!a)
                        return refuse_unknown_area(area, reason, size);
                memcpy(e.id, a->id, strnlen(a->id, MNP_AREA_ID_MAX - 1));
        }

        e.max_depth_um = min_u32(l->max_depth_um, MNP_ABS_MAX_DEPTH_UM);
        e.max_speed_hz = min_u32(l->max_speed_hz, MNP_ABS_MAX_SPEED_HZ);
        e.max_duration_s = min_u32(l->max_duration_s, MNP_ABS_MAX_DURATION_S);
        if (a) {
                e.max_depth_um = min_u32(e.max_depth_um, a->max_depth_um);
                e.max_speed_hz = min_u32(e.max_speed_hz, a->max_speed_hz);
                e.max_duration_s = min_u32(e.max_duration_s, a->max_duration_s);
        }

        *ret = e;
        reason_clear(reason, size);
        return 0;
}

/* Strict unsigned decimal: one or more digits and nothing else, at most
 * UINT32_MAX.  Returns 0, -EINVAL (not a number) or -ERANGE (too large). */
static int parse_u32(const char *s, uint32_t *ret) {
        uint32_t v = 0;

        if (*s == '\0')
                return -EINVAL;

        for (; *s != '\0'; s++) {
                uint32_t d;

                if (*s < '0' || *s > '9')
                        return -EINVAL;
                d = (uint32_t) (*s - '0');
                if (v > (UINT32_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }

        *ret = v;
        return 0;
}

static uint32_t *limit_field(uint32_t *depth, uint32_t *speed, uint32_t *duration, enum quantity q) {
        switch (q) {
        case Q_DEPTH:
                return depth;
        case Q_SPEED:
                return speed;
        case Q_DURATION:
                return duration;
        }
        return NULL;
}

int mnp_limits_apply(struct mnp_limits *l, const char *section, const char *key, const char *value,
                     unsigned line, char *reason, size_t size) {
        char qs[QUOTE_STR_MAX], qk[QUOTE_STR_MAX], qv[QUOTE_STR_MAX];
        struct mnp_area_limits *a = NULL;
        const char *sect_name;
        uint32_t *field, v;
        size_t q;
        int r;

        if (!l)
                return refuse_no_limits(reason, size);
        if (!section || !key || !value)
                return refuse_line(-EINVAL, reason, size, line,
                                   "incomplete configuration entry (missing section, key or value)");

        if (strcmp(section, "limits") == 0) {
                sect_name = "limits";
        } else if (strncmp(section, "area.", 5) == 0) {
                int i = area_index(l, section + 5);

                if (i < 0)
                        return refuse_line(-ENOENT, reason, size, line,
                                           "unknown treatment area '%s' in section [area.%s]",
                                           quote_str(section + 5, qs), qs);
                a = &l->areas[i];
                sect_name = section;
        } else
                return refuse_line(-ENOENT, reason, size, line,
                                   "unknown section [%s]; the limits live in [limits] and [area.<id>]",
                                   quote_str(section, qs));

        for (q = 0; q < ELEMENTSOF(quantities); q++)
                if (strcmp(key, quantities[q].key) == 0)
                        break;
        if (q >= ELEMENTSOF(quantities))
                return refuse_line(-ENOENT, reason, size, line,
                                   "unknown key '%s' in [%s]; expected max_depth_um, max_speed_hz or max_duration_s",
                                   quote_str(key, qk), sect_name);

        r = parse_u32(value, &v);
        if (r == -ERANGE)
                return refuse_line(-EINVAL, reason, size, line,
                                   "%s = '%s' in [%s] is too large a number (at most 4294967295 %s)",
                                   quantities[q].key, quote_str(value, qv), sect_name, quantities[q].unit);
        if (r < 0)
                return refuse_line(-EINVAL, reason, size, line,
                                   "%s = '%s' in [%s] is not a whole number of %s (digits only)",
                                   quantities[q].key, quote_str(value, qv), sect_name, quantities[q].unit_words);

        if (v == 0 && q != Q_DEPTH)
                return refuse_line(-EINVAL, reason, size, line,
                                   "%s = 0 in [%s] would forbid every session; the lowest cap is 1 %s",
                                   quantities[q].key, sect_name, quantities[q].unit);

        /* The cap in force is the one this entry would replace: the global cap
         * for [limits], the area's own cap for [area.<id>] (so the order of
         * the sections does not matter; the global cap still lowers it). */
        if (a)
                field = limit_field(&a->max_depth_um, &a->max_speed_hz, &a->max_duration_s,
                                    (enum quantity) q);
        else
                field = limit_field(&l->max_depth_um, &l->max_speed_hz, &l->max_duration_s,
                                    (enum quantity) q);
        if (!field)
                return refuse_line(-EINVAL, reason, size, line, "internal error: no such limit");

        if (v > *field)
                return refuse_line(-ERANGE, reason, size, line,
                                   "%s = %" PRIu32 " in [%s] would raise the cap of %" PRIu32 " %s; "
                                   "the configuration may only lower caps",
                                   quantities[q].key, v, sect_name, *field, quantities[q].unit);

        *field = v;
        reason_clear(reason, size);
        return 0;
}

/* Names the cap a value exceeded, as the end of a sentence starting with the value. */
static int refuse_cap(enum quantity q, const char *what, uint32_t value, const struct cap *c,
                      const struct mnp_area_limits *a, char *reason, size_t size) {
        char vs[VALUE_STR_MAX], cs[VALUE_STR_MAX];
        const char *noun = q == Q_DURATION ? "limit" : "cap";

        format_value(q, value, vs);
        format_value(q, c->value, cs);

        switch (c->kind) {
        case CAP_ABSOLUTE:
                return refuse(-ERANGE, reason, size, "%s%s exceeds the absolute %s of %s",
                              what, vs, noun, cs);
        case CAP_PEN:
                return refuse(-ERANGE, reason, size, "%s%s exceeds the pen's maximum of %s", what, vs, cs);
        case CAP_AREA:
                return refuse(-ERANGE, reason, size, "%s%s exceeds the %s %s for area '%.*s'",
                              what, vs, cs, noun, MNP_AREA_ID_MAX - 1, a ? a->id : "");
        case CAP_CLINIC:
                return refuse(-ERANGE, reason, size, "%s%s exceeds the clinic's %s of %s",
                              what, vs, noun, cs);
        }
        return refuse(-ERANGE, reason, size, "%s%s exceeds a cap of %s", what, vs, cs);
}

/* The tightest of the caps; on a tie the earlier (more fundamental) one. */
static const struct cap *tightest(const struct cap *caps, size_t n) {
        const struct cap *best = NULL;

        for (size_t i = 0; i < n; i++)
                if (!best || caps[i].value < best->value)
                        best = &caps[i];
        return best;
}

/* The shared shape of the checks, after the area lookup and the step rule:
 * the tightest upper cap, then the pen's minimum. */
static int check_range(enum quantity q, const char *what, const struct mnp_area_limits *a,
                       bool have_pen, uint32_t pen_min, uint32_t pen_max,
                       uint32_t absolute, uint32_t global, uint32_t area_cap, uint32_t value,
                       char *reason, size_t size) {
        struct cap caps[4];
        const struct cap *c;
        size_t n = 0;

        caps[n++] = (struct cap) { CAP_ABSOLUTE, absolute };
        if (have_pen)
                caps[n++] = (struct cap) { CAP_PEN, pen_max };
        if (a)
                caps[n++] = (struct cap) { CAP_AREA, area_cap };
        caps[n++] = (struct cap) { CAP_CLINIC, global };

        c = tightest(caps, n);
        if (value > c->value)
                return refuse_cap(q, what, value, c, a, reason, size);

        if (have_pen && value < pen_min) {
                char vs[VALUE_STR_MAX], ms[VALUE_STR_MAX];

                return refuse(-ERANGE, reason, size, "%s%s is below the pen's minimum of %s",
                              what, format_value(q, value, vs), format_value(q, pen_min, ms));
        }

        reason_clear(reason, size);
        return 0;
}

int mnp_check_depth(const struct mnp_limits *l, const struct mnp_pen_range *pen, const char *area,
                    uint32_t depth_um, char *reason, size_t size) {
        const struct mnp_area_limits *a = NULL;

        if (!l)
                return refuse_no_limits(reason, size);
        if (area) {
                a = mnp_limits_area(l, area);
                if (!a)
                        return refuse_unknown_area(area, reason, size);
        }

        if (pen) {
                char vs[VALUE_STR_MAX], ss[VALUE_STR_MAX];

                if (pen->depth_step_um == 0)
                        return refuse(-EINVAL, reason, size,
                                      "the pen reports a depth step of 0 mm; no depth can be set on it");
                if (depth_um % pen->depth_step_um != 0)
                        return refuse(-EDOM, reason, size,
                                      "depth %s is not a multiple of the pen's %s step; it is refused, not rounded",
                                      mnp_format_depth(depth_um, vs, sizeof vs),
                                      mnp_format_depth(pen->depth_step_um, ss, sizeof ss));
        }

        return check_range(Q_DEPTH, "depth ", a, pen != NULL,
                           pen ? pen->depth_min_um : 0, pen ? pen->depth_max_um : 0,
                           MNP_ABS_MAX_DEPTH_UM, l->max_depth_um, a ? a->max_depth_um : 0,
                           depth_um, reason, size);
}

int mnp_check_speed(const struct mnp_limits *l, const struct mnp_pen_range *pen, const char *area,
                    uint32_t speed_hz, char *reason, size_t size) {
        const struct mnp_area_limits *a = NULL;

        if (!l)
                return refuse_no_limits(reason, size);
        if (area) {
                a = mnp_limits_area(l, area);
                if (!a)
                        return refuse_unknown_area(area, reason, size);
        }

        return check_range(Q_SPEED, "speed ", a, pen != NULL,
                           pen ? pen->speed_min_hz : 0, pen ? pen->speed_max_hz : 0,
                           MNP_ABS_MAX_SPEED_HZ, l->max_speed_hz, a ? a->max_speed_hz : 0,
                           speed_hz, reason, size);
}

int mnp_check_duration(const struct mnp_limits *l, const char *area, uint32_t duration_s,
                       char *reason, size_t size) {
        const struct mnp_area_limits *a = NULL;

        if (!l)
                return refuse_no_limits(reason, size);
        if (area) {
                a = mnp_limits_area(l, area);
                if (!a)
                        return refuse_unknown_area(area, reason, size);
        }

        if (duration_s == 0)
                return refuse(-EINVAL, reason, size, "a session time of 0 s is not a session");

        return check_range(Q_DURATION, "", a, false, 0, 0,
                           MNP_ABS_MAX_DURATION_S, l->max_duration_s, a ? a->max_duration_s : 0,
                           duration_s, reason, size);
}
