/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl's side of the audit log (org.microneedle.Mnd1.Audit): times as a
 * person types them, the Query filter, events read from the bus, and the
 * ways they are written out (table summary, JSON, CSV).  Pure apart from
 * the sd-bus message calls, so that the unit tests reach all of it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "output.h"

#define MND_AUDIT_PATH          "/org/microneedle/Mnd1/audit"
#define MND_AUDIT_IFACE         "org.microneedle.Mnd1.Audit"

/* The most events one Query returns (the API's cap). */
#define MNCTL_AUDIT_PAGE        1000u

/* ---- times ---- */

/*
 * Parses a point in time into microseconds since the epoch:
 *   2026-11-20                     midnight at the start of that day (with
 *                                  end_of_day: midnight at its end, so that
 *                                  "--until 2026-11-20" includes the day)
 *   2026-11-20T14:30, 2026-11-20 14:30
 *   2026-11-20T14:30:05, 2026-11-20 14:30:05, 2026-11-20 14:30:05.25
 *   each optionally followed by Z (UTC) or an offset +01:00, -0500, +01;
 *   without one, local time (TZ).  A local time that does not exist (the
 *   hour skipped when the clocks go forward) is refused.
 *   now, today, yesterday          (today/yesterday: local midnight; with
 *                                  end_of_day: the midnight after)
 *   -90s, -30m, -1h, -2d, -1w, -1h30m   that long before now
 *   @1763645405                    seconds since the epoch
 * now_usec is "now" (a parameter so that tests are reproducible).
 * Returns 0, -EINVAL (malformed, or a date that does not exist such as
 * 2026-02-30) or -ERANGE (before 1970 or beyond 9999), with a sentence
 * naming the input in reason.  *ret_usec is untouched on failure.
 */
int mnctl_parse_time(const char *s, uint64_t now_usec, bool end_of_day, uint64_t *ret_usec,
                     char *reason, size_t size);

/*
 * "2026-11-20 14:30:05" in local time, or in UTC when utc is set
 * (micro: with ".123456" after the seconds).  64 bytes always suffice.
 */
const char *mnctl_format_time(uint64_t usec, bool utc, bool micro, char *buf, size_t size);
/* RFC 3339 in UTC with microseconds: "2026-11-20T13:30:05.000000Z".  32 bytes always suffice. */
const char *mnctl_format_time_rfc3339(uint64_t usec, char *buf, size_t size);

/* ---- the Query filter ---- */

struct mnctl_audit_filter {
        bool has_since, has_until;
        uint64_t since, until;          /* us since the epoch: since <= time < until */
        const char *pen;                /* NULL: any */
        uint64_t session;               /* 0: any */
        const char *cartridge;
        const char *kind;
        uint64_t after_seq;             /* paging: seq > after_seq (0: from the start) */
        uint32_t limit;                 /* 0: not sent (the daemon's maximum) */
};

/* True if kind is 1..32 of [a-z0-9-] starting with a letter (the daemon's rule). */
bool mnctl_audit_kind_valid(const char *kind);

/*
 * Appends the filter to m as the a{sv} argument of Query: since t, until t,
 * pen s, session t, cartridge s, kind s, after_seq t, limit u, each only
 * when set.
 */
int mnctl_audit_filter_append(sd_bus_message *m, const struct mnctl_audit_filter *f);

/* ---- events ---- */

enum mnctl_field_type {
        FIELD_STRING,           /* s, o, g */
        FIELD_UNSIGNED,         /* y, q, u, t */
        FIELD_SIGNED,           /* n, i, x */
        FIELD_BOOL,             /* b */
        FIELD_PAIRS,            /* a{ss}: strv of key, value, key, value ... */
        FIELD_STRV,             /* as */
};

struct mnctl_field {
        char *key;
        char signature[8];      /* as on the bus */
        enum mnctl_field_type type;
        char *str;
        uint64_t num;           /* FIELD_UNSIGNED; FIELD_SIGNED as int64_t; FIELD_BOOL 0/1 */
        char **strv;            /* FIELD_PAIRS, FIELD_STRV */
};

/* One event: its fields in the daemon's order.  Values of a type mnctl does not know are skipped. */
struct mnctl_audit_event {
        struct mnctl_field *fields;
        size_t n_fields;
        uint64_t seq;           /* 0 if missing */
        uint64_t time;          /* us since the epoch, 0 if missing */
};

void mnctl_audit_event_clear(struct mnctl_audit_event *e);
void mnctl_audit_events_free(struct mnctl_audit_event *events, size_t n);

/* Reads one a{sv} event at the current position of m. */
int mnctl_audit_event_read(sd_bus_message *m, struct mnctl_audit_event *ret);
/* Reads an aa{sv}: *ret_events is NULL when *ret_n is 0. */
int mnctl_audit_events_read(sd_bus_message *m, struct mnctl_audit_event **ret_events, size_t *ret_n);

const struct mnctl_field *mnctl_audit_event_field(const struct mnctl_audit_event *e, const char *key);
/* The string field key, or NULL if missing, empty or not a string. */
const char *mnctl_audit_event_string(const struct mnctl_audit_event *e, const char *key);
/* The unsigned field key: true and *ret if present. */
bool mnctl_audit_event_uint(const struct mnctl_audit_event *e, const char *key, uint64_t *ret);

/* A field's value as text, on one line (pairs as key=value, separated by spaces).  NULL on OOM. */
char *mnctl_field_text(const struct mnctl_field *f);

/*
 * The one-line summary of an event for the table: every field but seq,
 * time, kind, pen, session, hash and sender, as key=value in the daemon's
 * order (depth and durations in mnctl's units, values with blanks quoted,
 * control characters shown as spaces, each value at most max_value
 * characters with "..." when cut; 0: no cut).  NULL on OOM.
 */
char *mnctl_audit_summary(const struct mnctl_audit_event *e, size_t max_value);

/*
 * The event as a JSON object: every field under its D-Bus key, in the
 * daemon's order (numbers as numbers, a{ss} as an object, as as an array),
 * plus "time_utc" (RFC 3339) after "time".
 */
void mnctl_audit_event_json(struct json *j, const struct mnctl_audit_event *e);

/* ---- CSV (RFC 4180) ---- */

/* Writes one field, quoted when it holds a comma, a double quote, CR or LF (quotes doubled). */
void csv_write_field(FILE *f, const char *s);
/* The export's header row, CRLF-terminated. */
void mnctl_audit_csv_header(FILE *f);
/*
 * The event as one row under that header.  Missing fields are empty;
 * details are a JSON object; fields outside the fixed columns (from a
 * newer daemon) go into the last column, "other", as a JSON object.
 */
int mnctl_audit_csv_row(FILE *f, const struct mnctl_audit_event *e);      /* -ENOMEM */
