/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit.h"
#include <mnp/limits.h>
#include "mnctl-util.h"
#include "units.h"

#define USEC_PER_SEC  UINT64_C(1000000)
#define SEC_PER_DAY   INT64_C(86400)
/* 9999-12-31 23:59:59 UTC: the last second a four-digit year can name. */
#define TIME_MAX_SEC  INT64_C(253402300799)

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

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

/* Exactly n digits at *p, advanced past them; false if there are not n. */
static bool fixed_digits(const char **p, size_t n, unsigned *ret) {
        unsigned v = 0;

        for (size_t i = 0; i < n; i++) {
                if (!is_digit((*p)[i]))
                        return false;
                v = v * 10 + (unsigned) ((*p)[i] - '0');
        }
        *p += n;
        *ret = v;
        return true;
}

static bool leap_year(unsigned y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m) {
        static const unsigned days[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

        return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

/* Days from 0001-01-01 to the first day of year y. */
static int64_t days_before_year(unsigned y) {
        int64_t p = (int64_t) y - 1;

        return 365 * p + p / 4 - p / 100 + p / 400;
}

/* Days since 1970-01-01 of a valid date (negative before it). */
static int64_t epoch_days(unsigned y, unsigned m, unsigned d) {
        int64_t days = days_before_year(y) - days_before_year(1970);

        for (unsigned i = 1; i < m; i++)
                days += days_in_month(y, i);
        return days + d - 1;
}

static const char *const month_names[] = {
        "January", "February", "March", "April", "May", "June",
        "July", "August", "September", "October", "November", "December",
};

/* Seconds since the epoch of a local date and time, or -EINVAL if the clocks skip it. */
static int local_seconds(unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s,
                         bool next_day, int64_t *ret) {
        struct tm tm = {
                .tm_year = (int) y - 1900, .tm_mon = (int) mo - 1, .tm_mday = (int) d + (next_day ? 1 : 0),
                .tm_hour = (int) h, .tm_min = (int) mi, .tm_sec = (int) s, .tm_isdst = -1,
        };
        struct tm want = tm;
        time_t t;

        t = mktime(&tm);
        if (t == (time_t) -1)
                return -ERANGE;         /* 1969-12-31 23:59:59 UTC, or not representable: before 1970 either way */
        /* mktime moves a time the clocks skip (spring forward) to one that exists: refuse it. */
        if (!next_day && (tm.tm_mday != want.tm_mday || tm.tm_hour != want.tm_hour || tm.tm_min != want.tm_min))
                return -EINVAL;
        *ret = (int64_t) t;
        return 0;
}

/* -1h30m, -2d, -1w: the span in seconds, or a negative errno. */
static int parse_span(const char *p, uint64_t *ret) {
        uint64_t total = 0;

        if (!*p)
                return -EINVAL;
        while (*p) {
                uint64_t v = 0, factor;
                const char *u;
                size_t n = 0;

                while (is_digit(*p)) {
                        if (v > TIME_MAX_SEC)
                                return -ERANGE;
                        v = v * 10 + (uint64_t) (*p - '0');
                        p++;
                        n++;
                }
                if (n == 0)
                        return -EINVAL;
                u = p;
                while (*p && !is_digit(*p))
                        p++;
                n = (size_t) (p - u);
                if (n == 1 && *u == 's')
                        factor = 1;
                else if ((n == 1 && *u == 'm') || (n == 3 && strncmp(u, "min", 3) == 0))
                        factor = 60;
                else if (n == 1 && *u == 'h')
                        factor = 3600;
                else if (n == 1 && *u == 'd')
                        factor = 86400;
                else if (n == 1 && *u == 'w')
                        factor = 7 * 86400;
                else
                        return -EINVAL;
                if (v > TIME_MAX_SEC / factor || total + v * factor > TIME_MAX_SEC)
                        return -ERANGE;
                total += v * factor;
        }
        *ret = total;
        return 0;
}

static int local_midnight(uint64_t now_usec, int day_offset, int64_t *ret) {
        time_t now = (time_t) (now_usec / USEC_PER_SEC);
        struct tm tm;

        if (!localtime_r(&now, &tm))
                return -ERANGE;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        tm.tm_mday += day_offset;
        tm.tm_isdst = -1;
        *ret = (int64_t) mktime(&tm);
        return 0;
}

static int seconds_to_usec(int64_t sec, unsigned frac_usec, const char *s, uint64_t *ret_usec,
                           char *reason, size_t size) {
        if (sec < 0)
                return refuse(-ERANGE, reason, size, "time '%s' is before 1970, where the audit log begins", s);
        if (sec > TIME_MAX_SEC)
                return refuse(-ERANGE, reason, size, "time '%s' is beyond the year 9999", s);
        *ret_usec = (uint64_t) sec * USEC_PER_SEC + frac_usec;
        return 0;
}

#define TIME_EXAMPLES "such as 2026-11-20, 2026-11-20T14:30, '2026-11-20 14:30:05', 2026-11-20T14:30Z, -1h or today"

int mnctl_parse_time(const char *s, uint64_t now_usec, bool end_of_day, uint64_t *ret_usec,
                     char *reason, size_t size) {
        unsigned y, mo, d, h = 0, mi = 0, sec = 0, frac = 0, oh = 0, om = 0;
        bool has_time = false, has_zone = false;
        int offset_sign = 0;
        const char *p = s;
        int64_t t;
        int r;

        if (isempty(s))
                return refuse(-EINVAL, reason, size, "empty time: give one " TIME_EXAMPLES);

        if (strcasecmp(s, "now") == 0) {
                *ret_usec = now_usec;
                goto ok;
        }
        if (strcasecmp(s, "today") == 0 || strcasecmp(s, "yesterday") == 0) {
                r = local_midnight(now_usec, (strcasecmp(s, "today") == 0 ? 0 : -1) + (end_of_day ? 1 : 0), &t);
                if (r < 0)
                        return refuse(r, reason, size, "time '%s' cannot be computed in local time", s);
                r = seconds_to_usec(t, 0, s, ret_usec, reason, size);
                if (r < 0)
                        return r;
                goto ok;
        }
        if (s[0] == '-') {
                uint64_t span;

                r = parse_span(s + 1, &span);
                if (r == -ERANGE || (r >= 0 && span * USEC_PER_SEC > now_usec))
                        return refuse(-ERANGE, reason, size, "time '%s' reaches back before 1970", s);
                if (r < 0)
                        return refuse(r, reason, size,
                                      "relative time '%s' is not understood: give a span before now "
                                      "in s, m, h, d or w, such as -30m, -1h, -1h30m or -7d", s);
                *ret_usec = now_usec - span * USEC_PER_SEC;
                goto ok;
        }
        if (s[0] == '@') {
                uint64_t v = 0;

                p = s + 1;
                if (!is_digit(*p))
                        return refuse(-EINVAL, reason, size,
                                      "time '%s' is not understood: after @ give seconds since 1970, such as @1763645405", s);
                for (; is_digit(*p); p++) {
                        v = v * 10 + (uint64_t) (*p - '0');
                        if (v > TIME_MAX_SEC)
                                return refuse(-ERANGE, reason, size, "time '%s' is beyond the year 9999", s);
                }
                if (*p)
                        return refuse(-EINVAL, reason, size,
                                      "time '%s' is not understood: after @ give whole seconds since 1970, such as @1763645405", s);
                *ret_usec = v * USEC_PER_SEC;
                goto ok;
        }

        /* YYYY-MM-DD */
        if (!fixed_digits(&p, 4, &y) || *p++ != '-' || !fixed_digits(&p, 2, &mo) || *p++ != '-' ||
            !fixed_digits(&p, 2, &d))
                return refuse(-EINVAL, reason, size, "time '%s' is not understood: give one " TIME_EXAMPLES, s);
        if (mo < 1 || mo > 12)
                return refuse(-EINVAL, reason, size, "time '%s' has no month %02u: months are 01 to 12", s, mo);
        if (d < 1 || d > days_in_month(y, mo))
                return refuse(-EINVAL, reason, size, "time '%s' names a day that does not exist: %s %04u has %u days",
                              s, month_names[mo - 1], y, days_in_month(y, mo));

        /* [T or blank]HH:MM[:SS[.ffffff]] */
        if (*p == 'T' || *p == 't' || *p == ' ') {
                p++;
                if (!fixed_digits(&p, 2, &h) || *p++ != ':' || !fixed_digits(&p, 2, &mi))
                        return refuse(-EINVAL, reason, size,
                                      "time '%s' is not understood: the time of day is HH:MM or HH:MM:SS, "
                                      "such as 2026-11-20T14:30 or '2026-11-20 14:30:05'", s);
                if (*p == ':') {
                        p++;
                        if (!fixed_digits(&p, 2, &sec))
                                return refuse(-EINVAL, reason, size,
                                              "time '%s' is not understood: seconds are two digits, such as 14:30:05", s);
                        if (*p == '.' || *p == ',') {
                                size_t n = 0;

                                p++;
                                for (; is_digit(*p); p++, n++) {
                                        if (n >= 6)
                                                return refuse(-EINVAL, reason, size,
                                                              "time '%s' is more precise than the log: "
                                                              "give at most 6 decimals (microseconds)", s);
                                        frac = frac * 10 + (unsigned) (*p - '0');
                                }
                                if (n == 0)
                                        return refuse(-EINVAL, reason, size,
                                                      "time '%s' has no digits after the decimal point", s);
                                for (; n < 6; n++)
                                        frac *= 10;
                        }
                }
                if (h > 23 || mi > 59 || sec > 59)
                        return refuse(-EINVAL, reason, size,
                                      "time '%s' names a time of day that does not exist: 00:00:00 to 23:59:59", s);
                has_time = true;
        }

        /* Z or +HH[:MM] / -HH[MM] */
        if (*p == 'Z' || *p == 'z') {
                p++;
                has_zone = true;
        } else if ((*p == '+' || *p == '-') && has_time) {
                offset_sign = *p == '+' ? 1 : -1;
                p++;
                if (!fixed_digits(&p, 2, &oh))
                        return refuse(-EINVAL, reason, size,
                                      "time '%s' has an offset that is not understood: use Z, +01:00, -0500 or +01", s);
                if (*p == ':')
                        p++;
                if (is_digit(*p) && !fixed_digits(&p, 2, &om))
                        return refuse(-EINVAL, reason, size,
                                      "time '%s' has an offset that is not understood: use Z, +01:00, -0500 or +01", s);
                if (oh > 23 || om > 59)
                        return refuse(-EINVAL, reason, size, "time '%s' has an offset beyond 23:59", s);
                has_zone = true;
        }
        if (*p)
                return refuse(-EINVAL, reason, size,
                              "time '%s' is not understood at '%s': give one " TIME_EXAMPLES, s, p);

        if (has_zone) {
                t = epoch_days(y, mo, d) * SEC_PER_DAY + (int64_t) h * 3600 + (int64_t) mi * 60 + sec;
                t -= offset_sign * ((int64_t) oh * 3600 + (int64_t) om * 60);
                if (end_of_day && !has_time)
                        t += SEC_PER_DAY;
        } else {
                if (y < 1900)
                        return refuse(-ERANGE, reason, size, "time '%s' is before 1970, where the audit log begins", s);
                r = local_seconds(y, mo, d, h, mi, sec, end_of_day && !has_time, &t);
                if (r == -EINVAL)
                        return refuse(r, reason, size,
                                      "time '%s' does not exist in local time (the clocks skip it): "
                                      "give another, or one in UTC with Z", s);
                if (r < 0)
                        return refuse(r, reason, size, "time '%s' is before 1970, where the audit log begins", s);
        }
        r = seconds_to_usec(t, frac, s, ret_usec, reason, size);
        if (r < 0)
                return r;
ok:
        if (reason && size > 0)
                reason[0] = '\0';
        return 0;
}

const char *mnctl_format_time(uint64_t usec, bool utc, bool micro, char *buf, size_t size) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        char date[48], zone[16] = "";
        struct tm tm;

        if (!buf || size == 0)
                return "";
        if (!(utc ? gmtime_r(&t, &tm) : localtime_r(&t, &tm)) ||
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm) == 0) {
                snprintf(buf, size, "@%" PRIu64, usec / USEC_PER_SEC);
                return buf;
        }
        if (micro) {
                if (utc)
                        strcpy(zone, "UTC");
                else if (strftime(zone, sizeof(zone), "%Z", &tm) == 0)
                        zone[0] = '\0';
                snprintf(buf, size, "%s.%06" PRIu64 "%s%s", date, usec % USEC_PER_SEC, zone[0] ? " " : "", zone);
        } else
                snprintf(buf, size, "%s", date);
        return buf;
}

const char *mnctl_format_time_rfc3339(uint64_t usec, char *buf, size_t size) {
        time_t t = (time_t) (usec / USEC_PER_SEC);
        char date[32];
        struct tm tm;

        if (!buf || size == 0)
                return "";
        if (!gmtime_r(&t, &tm) || strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0)
                date[0] = '\0';
        snprintf(buf, size, "%s.%06" PRIu64 "Z", date, usec % USEC_PER_SEC);
        return buf;
}

/* ---- the filter ---- */

bool mnctl_audit_kind_valid(const char *kind) {
        size_t n;

        if (isempty(kind) || !(kind[0] >= 'a' && kind[0] <= 'z'))
                return false;
        n = strlen(kind);
        if (n > 32)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((kind[i] >= 'a' && kind[i] <= 'z') || is_digit(kind[i]) || kind[i] == '-'))
                        return false;
        return true;
}

/* One {sv} entry of the filter, if given. */
static int filter_append_t(sd_bus_message *m, bool given, const char *key, uint64_t value) {
        return given ? sd_bus_message_append(m, "{sv}", key, "t", value) : 0;
}

static int filter_append_s(sd_bus_message *m, const char *key, const char *value) {
        return value ? sd_bus_message_append(m, "{sv}", key, "s", value) : 0;
}

int mnctl_audit_filter_append(sd_bus_message *m, const struct mnctl_audit_filter *f) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = filter_append_t(m, f->has_since, "since", f->since);
        if (r >= 0)
                r = filter_append_t(m, f->has_until, "until", f->until);
        if (r >= 0)
                r = filter_append_s(m, "pen", f->pen);
        if (r >= 0)
                r = filter_append_t(m, f->session > 0, "session", f->session);
        if (r >= 0)
                r = filter_append_s(m, "cartridge", f->cartridge);
        if (r >= 0)
                r = filter_append_s(m, "kind", f->kind);
        if (r >= 0)
                r = filter_append_t(m, f->after_seq > 0, "after_seq", f->after_seq);
        if (r >= 0 && f->limit > 0)
                r = sd_bus_message_append(m, "{sv}", "limit", "u", f->limit);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* ---- events ---- */

static void field_clear(struct mnctl_field *f) {
        free(f->key);
        free(f->str);
        strv_free(f->strv);
        *f = (struct mnctl_field) {};
}

void mnctl_audit_event_clear(struct mnctl_audit_event *e) {
        if (!e)
                return;
        for (size_t i = 0; i < e->n_fields; i++)
                field_clear(&e->fields[i]);
        free(e->fields);
        *e = (struct mnctl_audit_event) {};
}

void mnctl_audit_events_free(struct mnctl_audit_event *events, size_t n) {
        if (!events)
                return;
        for (size_t i = 0; i < n; i++)
                mnctl_audit_event_clear(&events[i]);
        free(events);
}

/* a{ss} into key, value, key, value ... */
static int read_pairs(sd_bus_message *m, char ***ret) {
        _cleanup_(strv_freep) char **l = NULL;
        size_t n = 0;
        const char *k, *v;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        l = calloc(1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        while ((r = sd_bus_message_enter_container(m, 'e', "ss")) > 0) {
                char **nl;

                r = sd_bus_message_read(m, "ss", &k, &v);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
                nl = realloc(l, (n + 3) * sizeof(char *));
                if (!nl)
                        return -ENOMEM;
                l = nl;
                l[n] = strdup(k);
                l[n + 1] = l[n] ? strdup(v) : NULL;
                l[n + 2] = NULL;
                if (!l[n] || !l[n + 1]) {
                        free(l[n]);
                        l[n] = NULL;
                        return -ENOMEM;
                }
                n += 2;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(l);
        return 0;
}

/* The value of the variant at m into f; 0 if read, 1 if its type is not one mnctl knows (skipped). */
static int read_value(sd_bus_message *m, const char *contents, struct mnctl_field *f) {
        union {
                const char *s;
                uint8_t y;
                uint16_t q;
                int16_t n;
                uint32_t u;
                int32_t i;
                uint64_t t;
                int64_t x;
                int b;
        } v;
        char type = contents[0];
        int r;

        if (strlen(contents) == 1 && strchr("sogyqunixtb", type)) {
                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                switch (type) {
                case 's': case 'o': case 'g':
                        f->type = FIELD_STRING;
                        f->str = strdup(v.s);
                        return f->str ? 0 : -ENOMEM;
                case 'y': f->type = FIELD_UNSIGNED; f->num = v.y; break;
                case 'q': f->type = FIELD_UNSIGNED; f->num = v.q; break;
                case 'u': f->type = FIELD_UNSIGNED; f->num = v.u; break;
                case 't': f->type = FIELD_UNSIGNED; f->num = v.t; break;
                case 'n': f->type = FIELD_SIGNED; f->num = (uint64_t) (int64_t) v.n; break;
                case 'i': f->type = FIELD_SIGNED; f->num = (uint64_t) (int64_t) v.i; break;
                case 'x': f->type = FIELD_SIGNED; f->num = (uint64_t) v.x; break;
                case 'b': f->type = FIELD_BOOL; f->num = !!v.b; break;
                }
                return 0;
        }
        if (streq(contents, "a{ss}")) {
                f->type = FIELD_PAIRS;
                return read_pairs(m, &f->strv);
        }
        if (streq(contents, "as")) {
                f->type = FIELD_STRV;
                r = sd_bus_message_read_strv(m, &f->strv);
                return r < 0 ? r : 0;
        }
        return 1;
}

int mnctl_audit_event_read(sd_bus_message *m, struct mnctl_audit_event *ret) {
        struct mnctl_audit_event e = {};
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                struct mnctl_field f = {};
                const char *key, *contents;

                r = sd_bus_message_read_basic(m, 's', &key);
                if (r < 0)
                        goto fail;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        goto fail;
                r = sd_bus_message_enter_container(m, 'v', contents);
                if (r < 0)
                        goto fail;
                r = read_value(m, contents, &f);
                if (r == 1) {
                        r = sd_bus_message_skip(m, contents);
                        if (r >= 0)
                                r = 1;
                }
                if (r < 0) {
                        field_clear(&f);
                        goto fail;
                }
                if (r == 0) {
                        struct mnctl_field *nf;

                        snprintf(f.signature, sizeof(f.signature), "%s", contents);
                        f.key = strdup(key);
                        nf = f.key ? realloc(e.fields, (e.n_fields + 1) * sizeof(struct mnctl_field)) : NULL;
                        if (!nf) {
                                field_clear(&f);
                                r = -ENOMEM;
                                goto fail;
                        }
                        e.fields = nf;
                        e.fields[e.n_fields++] = f;
                        if (f.type == FIELD_UNSIGNED && streq(key, "seq"))
                                e.seq = f.num;
                        else if (f.type == FIELD_UNSIGNED && streq(key, "time"))
                                e.time = f.num;
                }
                r = sd_bus_message_exit_container(m);   /* v */
                if (r < 0)
                        goto fail;
                r = sd_bus_message_exit_container(m);   /* e */
                if (r < 0)
                        goto fail;
        }
        if (r < 0)
                goto fail;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                goto fail;
        *ret = e;
        return 0;
fail:
        mnctl_audit_event_clear(&e);
        return r;
}

int mnctl_audit_events_read(sd_bus_message *m, struct mnctl_audit_event **ret_events, size_t *ret_n) {
        struct mnctl_audit_event *events = NULL;
        size_t n = 0;
        int r;

        r = sd_bus_message_enter_container(m, 'a', "a{sv}");
        if (r < 0)
                return r;
        for (;;) {
                struct mnctl_audit_event *ne;

                r = sd_bus_message_at_end(m, false);
                if (r < 0)
                        goto fail;
                if (r > 0)
                        break;
                ne = realloc(events, (n + 1) * sizeof(struct mnctl_audit_event));
                if (!ne) {
                        r = -ENOMEM;
                        goto fail;
                }
                events = ne;
                r = mnctl_audit_event_read(m, &events[n]);
                if (r < 0)
                        goto fail;
                n++;
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                goto fail;
        *ret_events = n > 0 ? events : mfree(events);
        *ret_n = n;
        return 0;
fail:
        mnctl_audit_events_free(events, n);
        return r;
}

const struct mnctl_field *mnctl_audit_event_field(const struct mnctl_audit_event *e, const char *key) {
        for (size_t i = 0; i < e->n_fields; i++)
                if (streq(e->fields[i].key, key))
                        return &e->fields[i];
        return NULL;
}

const char *mnctl_audit_event_string(const struct mnctl_audit_event *e, const char *key) {
        const struct mnctl_field *f = mnctl_audit_event_field(e, key);

        return f && f->type == FIELD_STRING && !isempty(f->str) ? f->str : NULL;
}

bool mnctl_audit_event_uint(const struct mnctl_audit_event *e, const char *key, uint64_t *ret) {
        const struct mnctl_field *f = mnctl_audit_event_field(e, key);

        if (!f || f->type != FIELD_UNSIGNED)
                return false;
        *ret = f->num;
        return true;
}

char *mnctl_field_text(const struct mnctl_field *f) {
        char *buf = NULL;
        size_t size = 0;
        FILE *m;

        m = open_memstream(&buf, &size);
        if (!m)
                return NULL;
        switch (f->type) {
        case FIELD_STRING:
                fputs(strempty(f->str), m);
                break;
        case FIELD_UNSIGNED:
                fprintf(m, "%" PRIu64, f->num);
                break;
        case FIELD_SIGNED:
                fprintf(m, "%" PRId64, (int64_t) f->num);
                break;
        case FIELD_BOOL:
                fputs(f->num ? "yes" : "no", m);
                break;
        case FIELD_PAIRS:
                for (size_t i = 0; f->strv && f->strv[i] && f->strv[i + 1]; i += 2)
                        fprintf(m, "%s%s=%s", i > 0 ? " " : "", f->strv[i], f->strv[i + 1]);
                break;
        case FIELD_STRV:
                for (size_t i = 0; f->strv && f->strv[i]; i++)
                        fprintf(m, "%s%s", i > 0 ? " " : "", f->strv[i]);
                break;
        }
        if (fclose(m) < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- the table's summary ---- */

/* value for key=value on one line: control characters as blanks, quoted when it has blanks, quotes or '=', cut. */
static void summary_value(FILE *m, const char *v, size_t max_value) {
        bool quote = v[0] == '\0' || strpbrk(v, " \t\n\r\"=") != NULL;
        size_t chars = 0;

        if (quote)
                fputc('"', m);
        for (const unsigned char *p = (const unsigned char *) v; *p; p++) {
                if ((*p & 0xC0) != 0x80) {
                        if (max_value > 0 && chars == max_value) {
                                fputs("...", m);
                                break;
                        }
                        chars++;
                }
                if (*p < 0x20 || *p == 0x7f)
                        fputc(' ', m);
                else if (*p == '"' && quote)
                        fputs("\\\"", m);
                else
                        fputc(*p, m);
        }
        if (quote)
                fputc('"', m);
}

/* Removes the blanks from s in place ("1h 30m" -> "1h30m"). */
static char *strip_blanks(char *s) {
        char *o = s;

        for (const char *c = s; *c; c++)
                if (*c != ' ')
                        *o++ = *c;
        *o = '\0';
        return s;
}

static void summary_item(FILE *m, bool *first, const char *key, const char *value, size_t max_value) {
        if (!*first)
                fputc(' ', m);
        *first = false;
        fprintf(m, "%s=", key);
        summary_value(m, value, max_value);
}

char *mnctl_audit_summary(const struct mnctl_audit_event *e, size_t max_value) {
        static const char *const skip[] = { "seq", "time", "kind", "pen", "session", "hash", "prev_hash", "sender", NULL };
        bool first = true, has_user = mnctl_audit_event_string(e, "user") != NULL;
        char *buf = NULL;
        size_t size = 0;
        FILE *m;

        m = open_memstream(&buf, &size);
        if (!m)
                return NULL;
        for (size_t i = 0; i < e->n_fields; i++) {
                const struct mnctl_field *f = &e->fields[i];
                char value[64];
                bool skipped = false;

                for (const char *const *k = skip; *k; k++)
                        if (streq(f->key, *k))
                                skipped = true;
                if (skipped || (f->type == FIELD_STRING && isempty(f->str)))
                        continue;

                if (f->type == FIELD_UNSIGNED && f->num <= UINT32_MAX && streq(f->key, "depth_um")) {
                        /* "0.50 mm" -> "0.50mm" */
                        mnp_format_depth((uint32_t) f->num, value, sizeof(value));
                        summary_item(m, &first, "depth", strip_blanks(value), 0);
                } else if (f->type == FIELD_UNSIGNED && streq(f->key, "speed_hz")) {
                        snprintf(value, sizeof(value), "%" PRIu64 "Hz", f->num);
                        summary_item(m, &first, "speed", value, 0);
                } else if (f->type == FIELD_UNSIGNED && f->num <= UINT32_MAX && streq(f->key, "duration_s")) {
                        mnctl_format_duration(f->num, value, sizeof(value));
                        summary_item(m, &first, "duration", strip_blanks(value), 0);
                } else if (f->type == FIELD_UNSIGNED && streq(f->key, "uid") && has_user)
                        continue;       /* the user name says it */
                else if (f->type == FIELD_PAIRS) {
                        for (size_t k = 0; f->strv && f->strv[k] && f->strv[k + 1]; k += 2)
                                summary_item(m, &first, f->strv[k], f->strv[k + 1], max_value);
                } else {
                        _cleanup_(freep) char *text = mnctl_field_text(f);

                        if (!text) {
                                fclose(m);
                                free(buf);
                                return NULL;
                        }
                        summary_item(m, &first, f->key, text, max_value);
                }
        }
        if (fclose(m) < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- JSON ---- */

static void field_json(struct json *j, const struct mnctl_field *f) {
        switch (f->type) {
        case FIELD_STRING:
                json_string(j, f->str);
                break;
        case FIELD_UNSIGNED:
                json_uint(j, f->num);
                break;
        case FIELD_SIGNED:
                json_int(j, (int64_t) f->num);
                break;
        case FIELD_BOOL:
                json_bool(j, f->num);
                break;
        case FIELD_PAIRS:
                json_object_begin(j);
                for (size_t i = 0; f->strv && f->strv[i] && f->strv[i + 1]; i += 2)
                        json_kv_string(j, f->strv[i], f->strv[i + 1]);
                json_object_end(j);
                break;
        case FIELD_STRV:
                json_array_begin(j);
                for (size_t i = 0; f->strv && f->strv[i]; i++)
                        json_string(j, f->strv[i]);
                json_array_end(j);
                break;
        }
}

void mnctl_audit_event_json(struct json *j, const struct mnctl_audit_event *e) {
        json_object_begin(j);
        for (size_t i = 0; i < e->n_fields; i++) {
                const struct mnctl_field *f = &e->fields[i];

                json_key(j, f->key);
                field_json(j, f);
                if (streq(f->key, "time") && f->type == FIELD_UNSIGNED) {
                        char t[32];

                        json_kv_string(j, "time_utc", mnctl_format_time_rfc3339(f->num, t, sizeof(t)));
                }
        }
        json_object_end(j);
}

/* ---- CSV ---- */

/* The export's columns: the API's keys in its order, time_utc after time, and "other" last. */
static const char *const csv_columns[] = {
        "seq", "time", "time_utc", "kind", "pen", "session", "cartridge", "area", "depth_um", "speed_hz",
        "duration_s", "operator", "patient_ref", "uid", "user", "sender", "message", "details", "hash",
        "other", NULL,
};

void csv_write_field(FILE *f, const char *s) {
        if (!s)
                return;
        if (!strpbrk(s, ",\"\r\n")) {
                fputs(s, f);
                return;
        }
        fputc('"', f);
        for (const char *p = s; *p; p++) {
                if (*p == '"')
                        fputc('"', f);
                fputc(*p, f);
        }
        fputc('"', f);
}

void mnctl_audit_csv_header(FILE *f) {
        for (size_t i = 0; csv_columns[i]; i++) {
                if (i > 0)
                        fputc(',', f);
                csv_write_field(f, csv_columns[i]);
        }
        fputs("\r\n", f);
}

static bool is_csv_column(const char *key) {
        for (size_t i = 0; csv_columns[i]; i++)
                if (streq(csv_columns[i], key))
                        return !streq(key, "time_utc") && !streq(key, "other");
        return false;
}

/* The value of f for a cell: text for scalars, compact JSON for pairs and lists. */
static char *csv_cell(const struct mnctl_field *f) {
        char *buf = NULL;
        size_t size = 0;
        struct json j;
        FILE *m;

        if (f->type != FIELD_PAIRS && f->type != FIELD_STRV) {
                if (f->type == FIELD_BOOL)
                        return strdup(f->num ? "true" : "false");
                return mnctl_field_text(f);
        }
        m = open_memstream(&buf, &size);
        if (!m)
                return NULL;
        json_init(&j, m, false);
        field_json(&j, f);
        if (fclose(m) < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

int mnctl_audit_csv_row(FILE *f, const struct mnctl_audit_event *e) {
        bool has_other = false;

        for (size_t i = 0; csv_columns[i]; i++) {
                const char *col = csv_columns[i];

                if (i > 0)
                        fputc(',', f);
                if (streq(col, "time_utc")) {
                        char t[32];

                        if (mnctl_audit_event_field(e, "time"))
                                csv_write_field(f, mnctl_format_time_rfc3339(e->time, t, sizeof(t)));
                } else if (streq(col, "other")) {
                        for (size_t k = 0; k < e->n_fields; k++)
                                if (!is_csv_column(e->fields[k].key))
                                        has_other = true;
                        if (has_other) {
                                _cleanup_(freep) char *buf = NULL;
                                size_t size = 0;
                                struct json j;
                                FILE *m = open_memstream(&buf, &size);

                                if (!m)
                                        return -ENOMEM;
                                json_init(&j, m, false);
                                json_object_begin(&j);
                                for (size_t k = 0; k < e->n_fields; k++)
                                        if (!is_csv_column(e->fields[k].key)) {
                                                json_key(&j, e->fields[k].key);
                                                field_json(&j, &e->fields[k]);
                                        }
                                json_object_end(&j);
                                if (fclose(m) < 0)
                                        return -ENOMEM;
                                csv_write_field(f, buf);
                        }
                } else {
                        const struct mnctl_field *fl = mnctl_audit_event_field(e, col);
                        _cleanup_(freep) char *cell = NULL;

                        if (fl) {
                                cell = csv_cell(fl);
                                if (!cell)
                                        return -ENOMEM;
                        }
                        csv_write_field(f, cell);
                }
        }
        fputs("\r\n", f);
        return 0;
}
