/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl's audit parts: times as a person types them, the Query filter as
 * it goes on the bus, events read back from the bus, and the ways they are
 * written out (CSV, JSON, the table's summary).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "audit.h"
#include "bus.h"
#include "mnctl-util.h"
#include "units.h"

#define SEC UINT64_C(1000000)

/* 2026-11-20T14:30:05Z, "now" for the relative forms. */
#define NOW (UINT64_C(1795185005) * SEC + 250000)
#define D_2026_11_20 UINT64_C(1795132800)

static void set_tz(const char *tz) {
        setenv("TZ", tz, 1);
        tzset();
}

static void time_ok_at(const char *s, bool end_of_day, uint64_t want_usec) {
        char reason[MNCTL_REASON_MAX] = "x";
        uint64_t v = 777;

        if (mnctl_parse_time(s, NOW, end_of_day, &v, reason, sizeof(reason)) != 0)
                fail_msg("time '%s' refused: %s", s, reason);
        if (v != want_usec)
                fail_msg("time '%s'%s gave %llu, expected %llu", s, end_of_day ? " (end of day)" : "",
                         (unsigned long long) v, (unsigned long long) want_usec);
        assert_string_equal(reason, "");
}

static void time_ok(const char *s, uint64_t want_sec) {
        time_ok_at(s, false, want_sec * SEC);
}

static void time_bad(const char *s, int want_r, const char *want_in_reason) {
        char reason[MNCTL_REASON_MAX] = "";
        uint64_t v = 777;
        int r = mnctl_parse_time(s, NOW, false, &v, reason, sizeof(reason));

        if (r != want_r)
                fail_msg("time '%s' returned %d, expected %d (%s)", s, r, want_r, reason);
        assert_int_equal(v, 777);               /* untouched on failure */
        if (!strstr(reason, want_in_reason))
                fail_msg("time '%s': reason '%s' lacks '%s'", s, reason, want_in_reason);
}

static void test_time_formats(void **state) {
        set_tz("UTC");

        /* Each format. */
        time_ok("2026-11-20", D_2026_11_20);
        time_ok("2026-11-20T14:30", D_2026_11_20 + 14 * 3600 + 30 * 60);
        time_ok("2026-11-20 14:30", D_2026_11_20 + 14 * 3600 + 30 * 60);
        time_ok("2026-11-20t14:30", D_2026_11_20 + 14 * 3600 + 30 * 60);
        time_ok("2026-11-20T14:30:05", D_2026_11_20 + 14 * 3600 + 30 * 60 + 5);
        time_ok("2026-11-20 14:30:05", D_2026_11_20 + 14 * 3600 + 30 * 60 + 5);
        time_ok_at("2026-11-20 14:30:05.25", false, (D_2026_11_20 + 52205) * SEC + 250000);
        time_ok_at("2026-11-20T14:30:05,123456Z", false, (D_2026_11_20 + 52205) * SEC + 123456);
        time_ok_at("2026-11-20T14:30:05.000001", false, (D_2026_11_20 + 52205) * SEC + 1);

        /* Z and offsets. */
        time_ok("2026-11-20T14:30Z", D_2026_11_20 + 52200);
        time_ok("2026-11-20T14:30z", D_2026_11_20 + 52200);
        time_ok("2026-11-20T14:30:05Z", D_2026_11_20 + 52205);
        time_ok("2026-11-20T14:30+01:00", D_2026_11_20 + 52200 - 3600);
        time_ok("2026-11-20T14:30+0100", D_2026_11_20 + 52200 - 3600);
        time_ok("2026-11-20T14:30+01", D_2026_11_20 + 52200 - 3600);
        time_ok("2026-11-20T14:30-05:30", D_2026_11_20 + 52200 + 5 * 3600 + 1800);
        time_ok("2026-11-20Z", D_2026_11_20);

        /* A date alone in --until: up to the end of that day. */
        time_ok_at("2026-11-20", true, (D_2026_11_20 + 86400) * SEC);
        time_ok_at("2026-11-20Z", true, (D_2026_11_20 + 86400) * SEC);
        time_ok_at("2026-11-20T14:30", true, (D_2026_11_20 + 52200) * SEC);     /* a time is exact */
        time_ok_at("2026-12-31", true, UINT64_C(1798761600) * SEC);            /* into the next year */

        /* Leap years. */
        time_ok("2024-02-29", 1709164800);
        time_ok("2000-02-29", 951782400);
        time_ok("1970-01-01", 0);
        time_ok("1970-01-01T00:00:00Z", 0);
        time_ok("9999-12-31T23:59:59Z", UINT64_C(253402300799));

        /* Relative, words and epoch seconds. */
        time_ok_at("now", false, NOW);
        time_ok_at("NOW", false, NOW);
        time_ok_at("-1h", false, NOW - 3600 * SEC);
        time_ok_at("-90s", false, NOW - 90 * SEC);
        time_ok_at("-30m", false, NOW - 1800 * SEC);
        time_ok_at("-30min", false, NOW - 1800 * SEC);
        time_ok_at("-1h30m", false, NOW - 5400 * SEC);
        time_ok_at("-7d", false, NOW - 7 * 86400 * SEC);
        time_ok_at("-2w", false, NOW - 14 * 86400 * SEC);
        time_ok_at("-0s", false, NOW);
        time_ok_at("today", false, D_2026_11_20 * SEC);
        time_ok_at("today", true, (D_2026_11_20 + 86400) * SEC);
        time_ok_at("yesterday", false, (D_2026_11_20 - 86400) * SEC);
        time_ok_at("yesterday", true, D_2026_11_20 * SEC);
        time_ok("@1763645405", 1763645405);
        time_ok("@0", 0);
}

static void test_time_local(void **state) {
        /* Central European time by its POSIX rule (no tzdata needed): +1, +2 in summer from the last
         * Sunday of March 02:00 to the last Sunday of October 03:00. */
        set_tz("CET-1CEST,M3.5.0,M10.5.0/3");

        time_ok("2026-11-20T14:30", D_2026_11_20 + 52200 - 3600);
        time_ok("2026-07-01 12:00", 1782900000);
        time_ok("2026-11-20T14:30Z", D_2026_11_20 + 52200);                    /* Z ignores TZ */
        time_ok("2026-11-20T14:30+05:00", D_2026_11_20 + 52200 - 5 * 3600);
        time_ok("2026-03-29", 1774738800);                                     /* 00:00 CET */
        /* That day has 23 hours: its end is 2026-03-30 00:00 CEST = 2026-03-29T22:00Z. */
        time_ok_at("2026-03-29", true, UINT64_C(1774821600) * SEC);
        time_ok("2026-03-29 01:59", 1774745940);
        time_ok("2026-03-29 03:00", 1774746000);
        /* The hour the clocks skip does not exist. */
        time_bad("2026-03-29 02:30", -EINVAL, "does not exist in local time");
        time_bad("2026-03-29T02:00:00", -EINVAL, "does not exist in local time");
        time_ok("2026-03-29T02:30Z", 1774751400);                              /* in UTC it is fine */
        /* Before 1970 in local time, though 1970-01-01 in UTC. */
        time_bad("1970-01-01", -ERANGE, "before 1970");
        time_ok("1970-01-01T01:00", 0);
        time_ok_at("today", false, (D_2026_11_20 - 3600) * SEC);               /* local midnight */

        set_tz("UTC");
}

static void test_time_bad(void **state) {
        set_tz("UTC");

        time_bad(NULL, -EINVAL, "empty time");
        time_bad("", -EINVAL, "empty time");
        time_bad("garbage", -EINVAL, "'garbage' is not understood");
        time_bad("2026/11/20", -EINVAL, "not understood");
        time_bad("20.11.2026", -EINVAL, "not understood");
        time_bad("26-11-20", -EINVAL, "not understood");
        time_bad("2026-11-2", -EINVAL, "not understood");
        time_bad("2026-1-20", -EINVAL, "not understood");
        time_bad("10000-01-01", -EINVAL, "not understood");
        time_bad(" 2026-11-20", -EINVAL, "not understood");
        time_bad("2026-11-20x", -EINVAL, "not understood at 'x'");
        time_bad("2026-11-20 ", -EINVAL, "the time of day is HH:MM");
        time_bad("2026-11-20T14", -EINVAL, "the time of day is HH:MM");
        time_bad("2026-11-20T1430", -EINVAL, "the time of day is HH:MM");
        time_bad("2026-11-20T14:3", -EINVAL, "the time of day is HH:MM");
        time_bad("2026-11-20T14:30:5", -EINVAL, "seconds are two digits");
        time_bad("2026-11-20T14:30:05.", -EINVAL, "no digits after the decimal point");
        time_bad("2026-11-20T14:30:05.1234567", -EINVAL, "at most 6 decimals");
        time_bad("2026-11-20T14:30 Z", -EINVAL, "not understood at ' Z'");
        time_bad("2026-11-20T14:30+1", -EINVAL, "offset that is not understood");
        time_bad("2026-11-20T14:30+01:0", -EINVAL, "offset that is not understood");
        time_bad("2026-11-20T14:30+24:00", -EINVAL, "offset beyond 23:59");
        time_bad("2026-11-20T14:30+01:60", -EINVAL, "offset beyond 23:59");
        time_bad("2026-11-20+01:00", -EINVAL, "not understood at '+01:00'");

        /* Dates and times that do not exist. */
        time_bad("2026-02-30", -EINVAL, "does not exist: February 2026 has 28 days");
        time_bad("2026-02-29", -EINVAL, "February 2026 has 28 days");
        time_bad("2100-02-29", -EINVAL, "February 2100 has 28 days");
        time_bad("1900-02-29", -EINVAL, "February 1900 has 28 days");
        time_bad("2026-04-31", -EINVAL, "April 2026 has 30 days");
        time_bad("2026-11-00", -EINVAL, "does not exist");
        time_bad("2026-13-01", -EINVAL, "no month 13");
        time_bad("2026-00-10", -EINVAL, "no month 00");
        time_bad("2026-11-20T24:00", -EINVAL, "00:00:00 to 23:59:59");
        time_bad("2026-11-20T14:60", -EINVAL, "00:00:00 to 23:59:59");
        time_bad("2026-11-20T23:59:60", -EINVAL, "00:00:00 to 23:59:59");

        /* Out of range. */
        time_bad("1969-12-31", -ERANGE, "before 1970");
        time_bad("1969-12-31T23:59:59Z", -ERANGE, "before 1970");
        time_bad("1970-01-01T00:30+01:00", -ERANGE, "before 1970");
        time_bad("0000-01-01", -ERANGE, "before 1970");
        time_bad("-100000w", -ERANGE, "reaches back before 1970");
        time_bad("-99999999999999999999h", -ERANGE, "before 1970");
        time_bad("@253402300800", -ERANGE, "beyond the year 9999");
        time_bad("@99999999999999999999999", -ERANGE, "beyond the year 9999");
        {
                char reason[MNCTL_REASON_MAX];
                uint64_t v = 777;

                /* The end of the last day there is. */
                assert_int_equal(mnctl_parse_time("9999-12-31", NOW, true, &v, reason, sizeof(reason)), -ERANGE);
                assert_non_null(strstr(reason, "beyond the year 9999"));
                assert_int_equal(v, 777);
        }

        /* Relative forms and words. */
        time_bad("-", -EINVAL, "relative time '-' is not understood");
        time_bad("-1", -EINVAL, "not understood");
        time_bad("-1y", -EINVAL, "not understood");
        time_bad("-1.5h", -EINVAL, "not understood");
        time_bad("-h", -EINVAL, "not understood");
        time_bad("+1h", -EINVAL, "not understood");
        time_bad("tomorrow", -EINVAL, "not understood");
        time_bad("@", -EINVAL, "after @ give seconds");
        time_bad("@12x", -EINVAL, "whole seconds");
        time_bad("@-1", -EINVAL, "after @ give seconds");

        /* A short reason buffer is cut and terminated; none at all is allowed. */
        {
                char small[8];
                uint64_t v;

                assert_int_equal(mnctl_parse_time("garbage", NOW, false, &v, small, sizeof(small)), -EINVAL);
                assert_int_equal(strlen(small), sizeof(small) - 1);
                assert_int_equal(mnctl_parse_time("garbage", NOW, false, &v, NULL, 0), -EINVAL);
                assert_int_equal(mnctl_parse_time("now", NOW, false, &v, NULL, 0), 0);
        }
}

static void test_time_format(void **state) {
        char buf[64];

        set_tz("UTC");
        assert_string_equal(mnctl_format_time(NOW, true, false, buf, sizeof(buf)), "2026-11-20 14:30:05");
        assert_string_equal(mnctl_format_time(NOW, true, true, buf, sizeof(buf)), "2026-11-20 14:30:05.250000 UTC");
        assert_string_equal(mnctl_format_time_rfc3339(NOW, buf, sizeof(buf)), "2026-11-20T14:30:05.250000Z");
        assert_string_equal(mnctl_format_time_rfc3339(0, buf, sizeof(buf)), "1970-01-01T00:00:00.000000Z");
        set_tz("CET-1CEST,M3.5.0,M10.5.0/3");
        assert_string_equal(mnctl_format_time(NOW, false, false, buf, sizeof(buf)), "2026-11-20 15:30:05");
        assert_string_equal(mnctl_format_time(NOW, false, true, buf, sizeof(buf)), "2026-11-20 15:30:05.250000 CET");
        assert_string_equal(mnctl_format_time(NOW, true, false, buf, sizeof(buf)), "2026-11-20 14:30:05");
        assert_string_equal(mnctl_format_time_rfc3339(NOW, buf, sizeof(buf)), "2026-11-20T14:30:05.250000Z");
        assert_string_equal(mnctl_format_time(NOW, false, false, NULL, 0), "");
        set_tz("UTC");
}

/* ---- messages without a daemon: a bus that never gets past authentication can still build them ---- */

static sd_bus *test_bus(void) {
        sd_bus *bus = NULL;
        int fds[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        assert_int_equal(sd_bus_new(&bus), 0);
        assert_int_equal(sd_bus_set_fd(bus, fds[0], fds[0]), 0);
        assert_int_equal(sd_bus_start(bus), 0);
        close(fds[1]);
        return bus;
}

static sd_bus_message *new_message(sd_bus *bus) {
        sd_bus_message *m = NULL;

        assert_int_equal(sd_bus_message_new_method_call(bus, &m, "org.microneedle.Mnd1", MND_AUDIT_PATH,
                                                        MND_AUDIT_IFACE, "Query"), 0);
        return m;
}

static void seal(sd_bus_message *m) {
        assert_int_equal(sd_bus_message_seal(m, 1, 0), 0);
        assert_true(sd_bus_message_rewind(m, true) >= 0);
}

/* Reads the next {sv} entry of an open a{sv}: its key and the variant's signature; false at the end. */
static bool next_entry(sd_bus_message *m, const char **ret_key, const char **ret_sig) {
        int r = sd_bus_message_enter_container(m, 'e', "sv");

        assert_true(r >= 0);
        if (r == 0)
                return false;
        assert_true(sd_bus_message_read_basic(m, 's', ret_key) > 0);
        assert_true(sd_bus_message_peek_type(m, NULL, ret_sig) > 0);
        return true;
}

static void test_filter(void **state) {
        sd_bus *bus = test_bus();
        sd_bus_message *m;
        const char *key, *sig, *s;
        uint64_t t;
        uint32_t u;

        /* Everything set: each key once, with the API's type, in a fixed order. */
        struct mnctl_audit_filter f = {
                .has_since = true, .since = 5, .has_until = true, .until = 6, .pen = "MNU-0001",
                .session = 7, .cartridge = "CART-1", .kind = "session-start", .after_seq = 1000, .limit = 1000,
        };
        static const struct {
                const char *key, *sig;
        } want[] = {
                { "since", "t" }, { "until", "t" }, { "pen", "s" }, { "session", "t" },
                { "cartridge", "s" }, { "kind", "s" }, { "after_seq", "t" }, { "limit", "u" },
        };

        m = new_message(bus);
        assert_int_equal(mnctl_audit_filter_append(m, &f), 0);
        seal(m);
        assert_string_equal(sd_bus_message_get_signature(m, true), "a{sv}");
        assert_int_equal(sd_bus_message_enter_container(m, 'a', "{sv}"), 1);
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                assert_true(next_entry(m, &key, &sig));
                assert_string_equal(key, want[i].key);
                assert_string_equal(sig, want[i].sig);
                if (streq(sig, "t")) {
                        assert_int_equal(sd_bus_message_read(m, "v", "t", &t), 1);
                        assert_int_equal(t, streq(key, "since") ? 5 : streq(key, "until") ? 6 :
                                            streq(key, "session") ? 7 : 1000);
                } else if (streq(sig, "u")) {
                        assert_int_equal(sd_bus_message_read(m, "v", "u", &u), 1);
                        assert_int_equal(u, 1000);
                } else {
                        assert_int_equal(sd_bus_message_read(m, "v", "s", &s), 1);
                        assert_string_equal(s, streq(key, "pen") ? "MNU-0001" :
                                               streq(key, "cartridge") ? "CART-1" : "session-start");
                }
                assert_int_equal(sd_bus_message_exit_container(m), 1);
        }
        assert_false(next_entry(m, &key, &sig));
        sd_bus_message_unref(m);

        /* Nothing set: an empty a{sv}; since 0 is sent when asked for (the start of 1970). */
        m = new_message(bus);
        assert_int_equal(mnctl_audit_filter_append(m, &(struct mnctl_audit_filter) {}), 0);
        seal(m);
        assert_int_equal(sd_bus_message_enter_container(m, 'a', "{sv}"), 1);
        assert_false(next_entry(m, &key, &sig));
        sd_bus_message_unref(m);

        m = new_message(bus);
        assert_int_equal(mnctl_audit_filter_append(m, &(struct mnctl_audit_filter) { .has_since = true, .limit = 2 }), 0);
        seal(m);
        assert_int_equal(sd_bus_message_enter_container(m, 'a', "{sv}"), 1);
        assert_true(next_entry(m, &key, &sig));
        assert_string_equal(key, "since");
        assert_int_equal(sd_bus_message_read(m, "v", "t", &t), 1);
        assert_int_equal(t, 0);
        assert_int_equal(sd_bus_message_exit_container(m), 1);
        assert_true(next_entry(m, &key, &sig));
        assert_string_equal(key, "limit");
        assert_string_equal(sig, "u");
        sd_bus_message_unref(m);

        sd_bus_unref(bus);
}

static void test_kind_valid(void **state) {
        assert_true(mnctl_audit_kind_valid("session-start"));
        assert_true(mnctl_audit_kind_valid("verify"));
        assert_true(mnctl_audit_kind_valid("a"));
        assert_true(mnctl_audit_kind_valid("kind-2"));
        assert_true(mnctl_audit_kind_valid("abcdefghijklmnopqrstuvwxyz012345"));       /* 32 */
        assert_false(mnctl_audit_kind_valid("abcdefghijklmnopqrstuvwxyz0123456"));     /* 33 */
        assert_false(mnctl_audit_kind_valid(""));
        assert_false(mnctl_audit_kind_valid(NULL));
        assert_false(mnctl_audit_kind_valid("Session-start"));
        assert_false(mnctl_audit_kind_valid("2fault"));
        assert_false(mnctl_audit_kind_valid("-fault"));
        assert_false(mnctl_audit_kind_valid("session_start"));
        assert_false(mnctl_audit_kind_valid("session start"));
}

/* ---- events ---- */

/* A reply as mnd sends it: two events, the second with every kind of awkward text. */
static sd_bus_message *event_reply(sd_bus *bus) {
        sd_bus_message *m = new_message(bus);

        assert_true(sd_bus_message_open_container(m, 'a', "a{sv}") >= 0);
        assert_true(sd_bus_message_append(m, "a{sv}", 9,
                                          "seq", "t", (uint64_t) 7,
                                          "time", "t", NOW,
                                          "kind", "s", "session-start",
                                          "pen", "s", "MNU-0001",
                                          "session", "t", (uint64_t) 3,
                                          "cartridge", "s", "CART-U1-0001",
                                          "area", "s", "forehead",
                                          "depth_um", "u", (uint32_t) 500,
                                          "hash", "s", "ab12") >= 0);
        assert_true(sd_bus_message_open_container(m, 'a', "{sv}") >= 0);
        assert_true(sd_bus_message_append(m, "{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}{sv}",
                                          "seq", "t", (uint64_t) 8,
                                          "time", "t", NOW + SEC,
                                          "kind", "s", "refusal",
                                          "speed_hz", "u", (uint32_t) 120,
                                          "duration_s", "u", (uint32_t) 5400,
                                          "operator", "s", "Dr. \xc3\x84rztin, M\xc3\xbcller",
                                          "patient_ref", "s", "P \"7\"",
                                          "message", "s", "line one,\nline \"two\"\r\ttab \xe2\x82\xac\x01",
                                          "uid", "u", (uint32_t) 0) >= 0);
        /* A type mnctl does not know is skipped; a newer daemon's signed and list fields are kept. */
        assert_true(sd_bus_message_append(m, "{sv}{sv}{sv}{sv}",
                                          "ratio", "d", 0.5,
                                          "offset", "x", (int64_t) -42,
                                          "tags", "as", 2, "a", "b,c",
                                          "flag", "b", 1) >= 0);
        assert_true(sd_bus_message_append(m, "{sv}", "details", "a{ss}", 2, "limit", "0.75 mm", "why", "a=b \"c\"") >= 0);
        assert_true(sd_bus_message_close_container(m) >= 0);
        assert_true(sd_bus_message_close_container(m) >= 0);
        seal(m);
        return m;
}

static void read_events(sd_bus *bus, struct mnctl_audit_event **ret, size_t *ret_n) {
        sd_bus_message *m = event_reply(bus);

        assert_int_equal(mnctl_audit_events_read(m, ret, ret_n), 0);
        assert_int_equal(*ret_n, 2);
        sd_bus_message_unref(m);
}

static void test_event_read(void **state) {
        sd_bus *bus = test_bus();
        struct mnctl_audit_event *e = NULL;
        const struct mnctl_field *f;
        size_t n = 0;
        uint64_t v;

        read_events(bus, &e, &n);
        assert_int_equal(e[0].seq, 7);
        assert_int_equal(e[0].time, NOW);
        assert_string_equal(mnctl_audit_event_string(&e[0], "kind"), "session-start");
        assert_true(mnctl_audit_event_uint(&e[0], "depth_um", &v));
        assert_int_equal(v, 500);
        assert_false(mnctl_audit_event_uint(&e[0], "speed_hz", &v));
        assert_null(mnctl_audit_event_string(&e[0], "message"));
        assert_null(mnctl_audit_event_string(&e[0], "depth_um"));       /* not a string */

        assert_int_equal(e[1].seq, 8);
        assert_null(mnctl_audit_event_field(&e[1], "ratio"));           /* skipped */
        f = mnctl_audit_event_field(&e[1], "offset");
        assert_non_null(f);
        assert_int_equal(f->type, FIELD_SIGNED);
        assert_int_equal((int64_t) f->num, -42);
        f = mnctl_audit_event_field(&e[1], "details");
        assert_non_null(f);
        assert_int_equal(f->type, FIELD_PAIRS);
        assert_string_equal(f->signature, "a{ss}");
        assert_string_equal(f->strv[0], "limit");
        assert_string_equal(f->strv[3], "a=b \"c\"");
        assert_null(f->strv[4]);
        /* Fields stay in the daemon's order, the skipped one left out. */
        assert_string_equal(e[1].fields[9].key, "offset");
        assert_string_equal(e[1].fields[e[1].n_fields - 1].key, "details");

        mnctl_audit_events_free(e, n);

        /* An empty reply. */
        {
                sd_bus_message *m = new_message(bus);

                assert_true(sd_bus_message_append(m, "aa{sv}", 0) >= 0);
                seal(m);
                e = (void *) 1;
                assert_int_equal(mnctl_audit_events_read(m, &e, &n), 0);
                assert_null(e);
                assert_int_equal(n, 0);
                sd_bus_message_unref(m);
        }
        /* Not an aa{sv}. */
        {
                sd_bus_message *m = new_message(bus);

                assert_true(sd_bus_message_append(m, "as", 1, "x") >= 0);
                seal(m);
                assert_true(mnctl_audit_events_read(m, &e, &n) < 0);
                sd_bus_message_unref(m);
        }
        sd_bus_unref(bus);
}

static char *memstream_of(void (*fn)(FILE *f, const void *userdata), const void *userdata) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        fn(f, userdata);
        assert_int_equal(fclose(f), 0);
        return buf;
}

static void csv_field_to(FILE *f, const void *s) {
        csv_write_field(f, s);
}

static void csv_is(const char *s, const char *want) {
        char *got = memstream_of(csv_field_to, s);

        if (strcmp(got, want) != 0)
                fail_msg("CSV field of '%s' is '%s', expected '%s'", s ?: "(null)", got, want);
        free(got);
}

static void test_csv_quoting(void **state) {
        csv_is("plain", "plain");
        csv_is("", "");
        csv_is(NULL, "");
        csv_is("with blank", "with blank");                     /* blanks need no quotes */
        csv_is("a,b", "\"a,b\"");
        csv_is("say \"hi\"", "\"say \"\"hi\"\"\"");
        csv_is("\"", "\"\"\"\"");
        csv_is("line1\nline2", "\"line1\nline2\"");
        csv_is("cr\r", "\"cr\r\"");
        csv_is("tab\there", "tab\there");
        csv_is("M\xc3\xbcller", "M\xc3\xbcller");               /* UTF-8 as it is */
        csv_is("\xc3\x84rztin, Dr.", "\"\xc3\x84rztin, Dr.\"");
        csv_is("=1+1", "=1+1");                                 /* data is never altered */
}

static void csv_header_to(FILE *f, const void *userdata) {
        mnctl_audit_csv_header(f);
}

static void csv_rows_to(FILE *f, const void *userdata) {
        const struct mnctl_audit_event *e = userdata;

        assert_int_equal(mnctl_audit_csv_row(f, &e[0]), 0);
        assert_int_equal(mnctl_audit_csv_row(f, &e[1]), 0);
}

static void test_csv_rows(void **state) {
        sd_bus *bus = test_bus();
        struct mnctl_audit_event *e = NULL;
        size_t n = 0;
        char *got;

        set_tz("UTC");
        got = memstream_of(csv_header_to, NULL);
        assert_string_equal(got, "seq,time,time_utc,kind,pen,session,cartridge,area,depth_um,speed_hz,duration_s,"
                                 "operator,patient_ref,uid,user,sender,message,details,hash,other\r\n");
        free(got);

        read_events(bus, &e, &n);
        got = memstream_of(csv_rows_to, e);
        assert_string_equal(got,
                "7,1795185005250000,2026-11-20T14:30:05.250000Z,session-start,MNU-0001,3,CART-U1-0001,forehead,500,,,"
                ",,,,,,,ab12,\r\n"
                "8,1795185006250000,2026-11-20T14:30:06.250000Z,refusal,,,,,,120,5400,"
                "\"Dr. \xc3\x84rztin, M\xc3\xbcller\",\"P \"\"7\"\"\",0,,,"
                "\"line one,\nline \"\"two\"\"\r\ttab \xe2\x82\xac\x01\","
                "\"{\"\"limit\"\":\"\"0.75 mm\"\",\"\"why\"\":\"\"a=b \\\"\"c\\\"\"\"\"}\",,"
                "\"{\"\"offset\"\":-42,\"\"tags\"\":[\"\"a\"\",\"\"b,c\"\"],\"\"flag\"\":true}\"\r\n");
        free(got);
        mnctl_audit_events_free(e, n);
        sd_bus_unref(bus);
}

static void json_events_to(FILE *f, const void *userdata) {
        const struct mnctl_audit_event *e = userdata;
        struct json j;

        json_init(&j, f, false);
        json_array_begin(&j);
        mnctl_audit_event_json(&j, &e[0]);
        mnctl_audit_event_json(&j, &e[1]);
        json_array_end(&j);
        json_finish(&j);
}

static void test_json_export(void **state) {
        sd_bus *bus = test_bus();
        struct mnctl_audit_event *e = NULL;
        size_t n = 0;
        char *got;

        set_tz("UTC");
        read_events(bus, &e, &n);
        got = memstream_of(json_events_to, e);
        assert_string_equal(got,
                "[{\"seq\":7,\"time\":1795185005250000,\"time_utc\":\"2026-11-20T14:30:05.250000Z\","
                "\"kind\":\"session-start\",\"pen\":\"MNU-0001\",\"session\":3,\"cartridge\":\"CART-U1-0001\","
                "\"area\":\"forehead\",\"depth_um\":500,\"hash\":\"ab12\"},"
                "{\"seq\":8,\"time\":1795185006250000,\"time_utc\":\"2026-11-20T14:30:06.250000Z\","
                "\"kind\":\"refusal\",\"speed_hz\":120,\"duration_s\":5400,"
                "\"operator\":\"Dr. \xc3\x84rztin, M\xc3\xbcller\",\"patient_ref\":\"P \\\"7\\\"\","
                "\"message\":\"line one,\\nline \\\"two\\\"\\r\\ttab \xe2\x82\xac\\u0001\",\"uid\":0,"
                "\"offset\":-42,\"tags\":[\"a\",\"b,c\"],\"flag\":true,"
                "\"details\":{\"limit\":\"0.75 mm\",\"why\":\"a=b \\\"c\\\"\"}}]\n");
        free(got);
        mnctl_audit_events_free(e, n);
        sd_bus_unref(bus);
}

static void test_summary(void **state) {
        sd_bus *bus = test_bus();
        struct mnctl_audit_event *e = NULL;
        size_t n = 0;
        char *s;

        read_events(bus, &e, &n);
        s = mnctl_audit_summary(&e[0], 0);
        assert_non_null(s);
        assert_string_equal(s, "cartridge=CART-U1-0001 area=forehead depth=0.50mm");
        free(s);

        s = mnctl_audit_summary(&e[1], 0);
        assert_non_null(s);
        assert_string_equal(s, "speed=120Hz duration=1h30m operator=\"Dr. \xc3\x84rztin, M\xc3\xbcller\" "
                               "patient_ref=\"P \\\"7\\\"\" message=\"line one, line \\\"two\\\"  tab \xe2\x82\xac \" "
                               "uid=0 offset=-42 tags=\"a b,c\" flag=yes limit=\"0.75 mm\" why=\"a=b \\\"c\\\"\"");
        free(s);

        /* Values cut at a number of characters (not bytes). */
        s = mnctl_audit_summary(&e[1], 4);
        assert_non_null(s);
        assert_non_null(strstr(s, "operator=\"Dr. ...\""));
        assert_non_null(strstr(s, "speed=120Hz"));             /* units are never cut */
        free(s);
        s = mnctl_audit_summary(&e[1], 12);
        assert_non_null(s);
        assert_non_null(strstr(s, "operator=\"Dr. \xc3\x84rztin, ...\""));
        free(s);

        mnctl_audit_events_free(e, n);
        sd_bus_unref(bus);
}

static void test_exit_codes(void **state) {
        assert_int_equal(mnctl_exit_code_for_error(MNCTL_ERROR_AUDIT_BROKEN, -EBADMSG), 8);
        assert_int_equal(mnctl_exit_code_for_error(MNCTL_ERROR_NO_SUCH_EVENT, -ENOENT), 3);
        assert_int_equal(mnctl_exit_code_for_error("org.microneedle.Mnd1.Error.AuditFailure", -EIO), 6);
        assert_int_equal(mnctl_exit_code_for_error("org.freedesktop.DBus.Error.AccessDenied", -EACCES), 5);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_time_formats),
                cmocka_unit_test(test_time_local),
                cmocka_unit_test(test_time_bad),
                cmocka_unit_test(test_time_format),
                cmocka_unit_test(test_filter),
                cmocka_unit_test(test_kind_valid),
                cmocka_unit_test(test_event_read),
                cmocka_unit_test(test_csv_quoting),
                cmocka_unit_test(test_csv_rows),
                cmocka_unit_test(test_json_export),
                cmocka_unit_test(test_summary),
                cmocka_unit_test(test_exit_codes),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
