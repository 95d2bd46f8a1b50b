/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl's pure parts: unit parsing, PEN resolution, JSON escaping and
 * writing, tables, and the exit code of every D-Bus error name.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bus.h"
#include "output.h"
#include "pens.h"
#include "units.h"

/* ---- depths ---- */

static void depth_ok(const char *s, uint32_t want) {
        char reason[MNCTL_REASON_MAX] = "x";
        uint32_t v = 12345;

        if (mnctl_parse_depth(s, &v, reason, sizeof(reason)) != 0)
                fail_msg("depth '%s' refused: %s", s, reason);
        if (v != want)
                fail_msg("depth '%s' gave %u um, expected %u", s, v, want);
        assert_string_equal(reason, "");
}

static void depth_bad(const char *s, int want_r, const char *want_in_reason) {
        char reason[MNCTL_REASON_MAX] = "";
        uint32_t v = 777;
        int r = mnctl_parse_depth(s, &v, reason, sizeof(reason));

        if (r != want_r)
                fail_msg("depth '%s' returned %d, expected %d (%s)", s, r, want_r, reason);
        assert_int_equal(v, 777);       /* untouched on failure */
        if (!strstr(reason, want_in_reason))
                fail_msg("depth '%s': reason '%s' lacks '%s'", s, reason, want_in_reason);
}

static void test_depth(void **state) {
        depth_ok("0", 0);
        depth_ok("0mm", 0);
        depth_ok("0um", 0);
        depth_ok("0.5mm", 500);
        depth_ok("0.5", 500);
        depth_ok(".5mm", 500);
        depth_ok("500um", 500);
        depth_ok("500UM", 500);
        depth_ok("500\xc2\xb5m", 500);          /* µm, micro sign */
        depth_ok("500\xce\xbcm", 500);          /* μm, Greek mu */
        depth_ok("3.01mm", 3010);
        depth_ok("3.01", 3010);
        depth_ok("0.333mm", 333);
        depth_ok("0.3330mm", 333);              /* trailing zeros are still a whole micrometre */
        depth_ok("2", 2000);
        depth_ok("2MM", 2000);
        depth_ok("3000um", 3000);
        depth_ok("750.000um", 750);
        depth_ok("4294967295um", UINT32_MAX);   /* parses; the limits refuse it */
        depth_ok("4294967.295mm", UINT32_MAX);

        depth_bad("", -EINVAL, "empty");
        depth_bad(NULL, -EINVAL, "empty");
        depth_bad("-1", -EINVAL, "'-1' is negative");
        depth_bad("-0.5mm", -EINVAL, "negative");
        depth_bad("1e9", -EINVAL, "unknown unit 'e9'");
        depth_bad("0.3333mm", -EINVAL, "'0.3333mm' is not a whole number of micrometres");
        depth_bad("0.0005", -EINVAL, "not a whole number of micrometres");
        depth_bad("500.5um", -EINVAL, "'500.5um' is not a whole number of micrometres");
        depth_bad("abc", -EINVAL, "'abc' is not a number");
        depth_bad("mm", -EINVAL, "not a number");
        depth_bad(".", -EINVAL, "'.'");
        depth_bad("5.", -EINVAL, "no digits after the decimal point");
        depth_bad("0.5 mm", -EINVAL, "unknown unit ' mm'");
        depth_bad(" 0.5mm", -EINVAL, "not a number");
        depth_bad("+1", -EINVAL, "not a number");
        depth_bad("0.5cm", -EINVAL, "unknown unit 'cm'");
        depth_bad("1,5", -EINVAL, "unknown unit ',5'");
        depth_bad("0x10", -EINVAL, "unknown unit 'x10'");
        depth_bad("4294967296um", -ERANGE, "'4294967296um' is far too large");
        depth_bad("4294967.296mm", -ERANGE, "far too large");
        depth_bad("4294968mm", -ERANGE, "far too large");
        depth_bad("99999999999999999999999999", -ERANGE, "far too large");
}

/* ---- durations ---- */

static void duration_ok(const char *s, uint32_t want) {
        char reason[MNCTL_REASON_MAX] = "x";
        uint32_t v = 12345;

        if (mnctl_parse_duration(s, &v, reason, sizeof(reason)) != 0)
                fail_msg("duration '%s' refused: %s", s, reason);
        if (v != want)
                fail_msg("duration '%s' gave %u s, expected %u", s, v, want);
        assert_string_equal(reason, "");
}

static void duration_bad(const char *s, int want_r, const char *want_in_reason) {
        char reason[MNCTL_REASON_MAX] = "";
        uint32_t v = 777;
        int r = mnctl_parse_duration(s, &v, reason, sizeof(reason));

        if (r != want_r)
                fail_msg("duration '%s' returned %d, expected %d (%s)", s, r, want_r, reason);
        assert_int_equal(v, 777);
        if (!strstr(reason, want_in_reason))
                fail_msg("duration '%s': reason '%s' lacks '%s'", s, reason, want_in_reason);
}

static void test_duration(void **state) {
        duration_ok("0", 0);                    /* parses; mnp_check_duration refuses it */
        duration_ok("90", 90);                  /* a bare number is seconds */
        duration_ok("90s", 90);
        duration_ok("90sec", 90);
        duration_ok("20m", 1200);
        duration_ok("20min", 1200);
        duration_ok("20M", 1200);
        duration_ok("1h", 3600);
        duration_ok("1H", 3600);
        duration_ok("1h30m", 5400);
        duration_ok("2m30s", 150);
        duration_ok("1h0m1s", 3601);
        duration_ok("4294967295", UINT32_MAX);
        duration_ok("4294967295s", UINT32_MAX);

        duration_bad("", -EINVAL, "empty");
        duration_bad(NULL, -EINVAL, "empty");
        duration_bad("-1", -EINVAL, "'-1' is negative");
        duration_bad("-20m", -EINVAL, "negative");
        duration_bad("1e9", -EINVAL, "unknown unit 'e'");
        duration_bad("1.5h", -EINVAL, "'1.5h' is not a whole number");
        duration_bad("1h30", -EINVAL, "needs a unit after each number");
        duration_bad("20 m", -EINVAL, "unknown unit ' m'");
        duration_bad("abc", -EINVAL, "'abc' is not understood");
        duration_bad("m", -EINVAL, "not understood");
        duration_bad("20d", -EINVAL, "unknown unit 'd'");
        duration_bad("20minutesandmore", -EINVAL, "unknown unit 'minutesandmore'");
        duration_bad("4294967296", -ERANGE, "far too long");
        duration_bad("4294967296s", -ERANGE, "far too long");
        duration_bad("1193047h", -ERANGE, "far too long");
        duration_bad("1193046h1000m", -ERANGE, "far too long");
        duration_bad("99999999999999999999999h", -ERANGE, "far too long");
}

/* ---- speeds ---- */

static void speed_ok(const char *s, uint32_t want) {
        char reason[MNCTL_REASON_MAX] = "x";
        uint32_t v = 12345;

        if (mnctl_parse_speed(s, &v, reason, sizeof(reason)) != 0)
                fail_msg("speed '%s' refused: %s", s, reason);
        if (v != want)
                fail_msg("speed '%s' gave %u Hz, expected %u", s, v, want);
        assert_string_equal(reason, "");
}

static void speed_bad(const char *s, int want_r, const char *want_in_reason) {
        char reason[MNCTL_REASON_MAX] = "";
        uint32_t v = 777;
        int r = mnctl_parse_speed(s, &v, reason, sizeof(reason));

        if (r != want_r)
                fail_msg("speed '%s' returned %d, expected %d (%s)", s, r, want_r, reason);
        assert_int_equal(v, 777);
        if (!strstr(reason, want_in_reason))
                fail_msg("speed '%s': reason '%s' lacks '%s'", s, reason, want_in_reason);
}

static void test_speed(void **state) {
        speed_ok("0", 0);
        speed_ok("120", 120);
        speed_ok("120hz", 120);
        speed_ok("120Hz", 120);
        speed_ok("120HZ", 120);
        speed_ok("4294967295", UINT32_MAX);

        speed_bad("", -EINVAL, "empty");
        speed_bad(NULL, -EINVAL, "empty");
        speed_bad("-1", -EINVAL, "'-1' is negative");
        speed_bad("1e9", -EINVAL, "unknown unit 'e9'");
        speed_bad("120.5", -EINVAL, "'120.5' is not a whole number");
        speed_bad("120 hz", -EINVAL, "unknown unit ' hz'");
        speed_bad("120rpm", -EINVAL, "unknown unit 'rpm'");
        speed_bad("hz", -EINVAL, "'hz' is not a number");
        speed_bad("fast", -EINVAL, "not a number");
        speed_bad("4294967296", -ERANGE, "far too large");
        speed_bad("99999999999999999999", -ERANGE, "far too large");
}

static void test_reason_buffer(void **state) {
        char small[8];
        uint32_t v;

        /* A short buffer is truncated and terminated; NULL or 0 is allowed. */
        assert_int_equal(mnctl_parse_depth("garbage", &v, small, sizeof(small)), -EINVAL);
        assert_int_equal(strlen(small), sizeof(small) - 1);
        assert_int_equal(mnctl_parse_depth("garbage", &v, NULL, 0), -EINVAL);
        assert_int_equal(mnctl_parse_speed("1", &v, NULL, 0), 0);
        assert_int_equal(v, 1);
}

static void test_format(void **state) {
        char buf[32];

        assert_string_equal(mnctl_format_duration(0, buf, sizeof(buf)), "0s");
        assert_string_equal(mnctl_format_duration(45, buf, sizeof(buf)), "45s");
        assert_string_equal(mnctl_format_duration(90, buf, sizeof(buf)), "1m 30s");
        assert_string_equal(mnctl_format_duration(1200, buf, sizeof(buf)), "20m");
        assert_string_equal(mnctl_format_duration(3600, buf, sizeof(buf)), "1h");
        assert_string_equal(mnctl_format_duration(5400, buf, sizeof(buf)), "1h 30m");
        assert_string_equal(mnctl_format_duration(3601, buf, sizeof(buf)), "1h 0m 1s");
        assert_string_equal(mnctl_format_clock(0, buf, sizeof(buf)), "0:00");
        assert_string_equal(mnctl_format_clock(444, buf, sizeof(buf)), "7:24");
        assert_string_equal(mnctl_format_clock(3600, buf, sizeof(buf)), "1:00:00");
        assert_string_equal(mnctl_format_clock(UINT32_MAX, buf, sizeof(buf)), "1193046:28:15");
        assert_string_equal(mnctl_format_duration(5, NULL, 0), "");
}

/* ---- PEN resolution ---- */

static void test_pen_resolve(void **state) {
        const char *two[] = { "MNU-0001", "MNS-0001", NULL };
        const char *one[] = { "MNU-0001", NULL };
        const char *none[] = { NULL };
        const char *nested[] = { "MNU-1", "MNU-10", NULL };
        size_t i = 99;

        /* Single-pen default. */
        assert_int_equal(mnctl_pen_resolve(one, NULL, &i), 0);
        assert_int_equal(i, 0);
        /* No PEN with several pens, or none. */
        i = 99;
        assert_int_equal(mnctl_pen_resolve(two, NULL, &i), -ENOTUNIQ);
        assert_int_equal(mnctl_pen_resolve(none, NULL, &i), -ENODEV);
        assert_int_equal(mnctl_pen_resolve(NULL, NULL, &i), -ENODEV);
        assert_int_equal(i, 99);
        /* Exact. */
        assert_int_equal(mnctl_pen_resolve(two, "MNS-0001", &i), 0);
        assert_int_equal(i, 1);
        /* Unique prefix, ignoring case. */
        assert_int_equal(mnctl_pen_resolve(two, "MNU", &i), 0);
        assert_int_equal(i, 0);
        assert_int_equal(mnctl_pen_resolve(two, "mns", &i), 0);
        assert_int_equal(i, 1);
        /* Ambiguous prefix. */
        assert_int_equal(mnctl_pen_resolve(two, "MN", &i), -ENOTUNIQ);
        /* An exact match wins over being a prefix of another. */
        assert_int_equal(mnctl_pen_resolve(nested, "MNU-1", &i), 0);
        assert_int_equal(i, 0);
        assert_int_equal(mnctl_pen_resolve(nested, "MNU-10", &i), 0);
        assert_int_equal(i, 1);
        /* None. */
        assert_int_equal(mnctl_pen_resolve(two, "XYZ", &i), -ENODEV);
        assert_int_equal(mnctl_pen_resolve(two, "MNU-00011", &i), -ENODEV);
        assert_int_equal(mnctl_pen_resolve(two, "", &i), -ENODEV);
        assert_int_equal(mnctl_pen_resolve(none, "MNU", &i), -ENODEV);
}

/* Serials are case-sensitive where it matters (the audit filter --pen). */
static void test_pen_resolve_case(void **state) {
        const char *two[] = { "MNU-0001", "MNS-0001", NULL };
        const char *nested[] = { "MNU-1", "MNU-10", NULL };
        size_t i = 99;
        char *m;

        assert_int_equal(mnctl_pen_resolve_full(two, "mns", false, &i), -ENODEV);
        assert_int_equal(i, 99);
        assert_int_equal(mnctl_pen_resolve_full(two, "mns", true, &i), 0);
        assert_int_equal(i, 1);
        assert_int_equal(mnctl_pen_resolve_full(two, "MNS", false, &i), 0);
        assert_int_equal(i, 1);
        assert_int_equal(mnctl_pen_resolve_full(two, "MN", false, &i), -ENOTUNIQ);
        assert_int_equal(mnctl_pen_resolve_full(two, "mn", false, &i), -ENODEV);
        assert_int_equal(mnctl_pen_resolve_full(nested, "MNU-1", false, &i), 0);
        assert_int_equal(i, 0);
        assert_true(mnctl_pen_prefix_matches("MNU-10", "mnu", true));
        assert_false(mnctl_pen_prefix_matches("MNU-10", "mnu", false));
        assert_true(mnctl_pen_prefix_matches("MNU-10", "", false));

        m = mnctl_pen_resolve_message_full(-ENOTUNIQ, "MNU", (const char *[]) { "MNU-1", "mnu-2", "MNU-3", NULL }, false);
        assert_non_null(m);
        assert_string_equal(m, "'MNU' matches more than one pen (MNU-1, MNU-3); give more of the serial number");
        free(m);
}

/* ---- set-depth and set-speed's check before the call ---- */

static void pen_with(struct mnctl_pen *p, const char *state, uint32_t step, uint32_t speed_max) {
        *p = (struct mnctl_pen) {
                .state = (char *) state,
                .depth_range = { 0, 2500, step },
                .speed_range = { 50, speed_max },
        };
}

static void test_check_setpoint(void **state) {
        char reason[MNP_REASON_MAX];
        struct mnp_limits l;
        struct mnctl_pen p;

        mnp_limits_init(&l);

        /* A pen still connecting reports no ranges yet (zeros): only the caps are checked. */
        pen_with(&p, "connecting", 0, 0);
        assert_false(mnctl_pen_ranges_known(&p));
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 600, reason, sizeof(reason)), 0);
        assert_string_equal(reason, "");
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, false, 120, reason, sizeof(reason)), 0);
        /* ... the caps still bind: the absolute one, and the area's. */
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 3100, reason, sizeof(reason)), -ERANGE);
        assert_int_equal(mnctl_check_setpoint(&l, &p, "forehead", true, 800, reason, sizeof(reason)), -ERANGE);
        assert_non_null(strstr(reason, "forehead"));
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, false, 301, reason, sizeof(reason)), -ERANGE);
        /* A state that says nothing, but a zero step: not known either (never "a step of 0 mm"). */
        pen_with(&p, "idle", 0, 200);
        assert_false(mnctl_pen_ranges_known(&p));
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 600, reason, sizeof(reason)), 0);
        assert_null(strstr(reason, "step"));
        /* Connecting, even with numbers: the pen's part waits for the daemon. */
        pen_with(&p, "connecting", 50, 200);
        assert_false(mnctl_pen_ranges_known(&p));
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 525, reason, sizeof(reason)), 0);

        /* Once known, the pen's range and step count. */
        pen_with(&p, "idle", 50, 200);
        assert_true(mnctl_pen_ranges_known(&p));
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 600, reason, sizeof(reason)), 0);
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 525, reason, sizeof(reason)), -EDOM);
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, true, 2550, reason, sizeof(reason)), -ERANGE);
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, false, 201, reason, sizeof(reason)), -ERANGE);
        assert_int_equal(mnctl_check_setpoint(&l, &p, NULL, false, 40, reason, sizeof(reason)), -ERANGE);
        /* An area libmnp does not know is left to the caps (the daemon names it). */
        assert_int_equal(mnctl_check_setpoint(&l, &p, "elbow", true, 600, reason, sizeof(reason)), 0);
}

static void message_is(int r, const char *arg, const char **serials, const char *want) {
        char *m = mnctl_pen_resolve_message(r, arg, serials);

        assert_non_null(m);
        assert_string_equal(m, want);
        free(m);
}

static void test_pen_messages(void **state) {
        const char *two[] = { "MNU-0001", "MNS-0001", "ABC-1", NULL };
        const char *none[] = { NULL };

        message_is(-ENOTUNIQ, NULL, two,
                   "3 pens are connected; name one by its serial number or a unique prefix of it "
                   "(MNU-0001, MNS-0001, ABC-1)");
        message_is(-ENOTUNIQ, "mn", two,
                   "'mn' matches more than one pen (MNU-0001, MNS-0001); give more of the serial number");
        message_is(-ENODEV, "XYZ", two, "no connected pen matches 'XYZ' (pens: MNU-0001, MNS-0001, ABC-1)");
        message_is(-ENODEV, NULL, none, "no pen is connected");
        message_is(-ENODEV, "MNU", none, "no pen 'MNU' is connected (no pens are connected)");
}

static void test_pen_path(void **state) {
        char *s;

        s = mnctl_pen_serial_from_path("/org/microneedle/Mnd1/pen/MNU_2d0001");
        assert_non_null(s);
        assert_string_equal(s, "MNU-0001");
        free(s);
        assert_null(mnctl_pen_serial_from_path("/org/microneedle/Mnd1/session/3"));
        assert_null(mnctl_pen_serial_from_path("/org/microneedle/Mnd1"));
}

/* ---- JSON ---- */

static char *escaped(const char *s) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        assert_non_null(f);
        json_write_string(f, s);
        assert_int_equal(fclose(f), 0);
        return buf;
}

static void escape_is(const char *s, const char *want) {
        char *got = escaped(s);

        if (strcmp(got, want) != 0)
                fail_msg("escaping gave %s, expected %s", got, want);
        free(got);
}

static void test_json_escape(void **state) {
        escape_is("", "\"\"");
        escape_is("plain", "\"plain\"");
        escape_is("a\"b", "\"a\\\"b\"");
        escape_is("a\\b", "\"a\\\\b\"");
        escape_is("/", "\"/\"");
        escape_is("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
        escape_is("\x01\x1f", "\"\\u0001\\u001f\"");
        escape_is("\x7f", "\"\x7f\"");                         /* DEL is allowed in JSON */
        escape_is("0.50 \xc2\xb5m", "\"0.50 \xc2\xb5m\"");     /* valid UTF-8 as it is */
        escape_is("\xe2\x82\xac", "\"\xe2\x82\xac\"");         /* U+20AC */
        escape_is("\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""); /* U+1F600 */
        escape_is("\xff", "\"\\ufffd\"");                       /* never valid */
        escape_is("a\xc3", "\"a\\ufffd\"");                     /* truncated */
        escape_is("\xc3(", "\"\\ufffd(\"");                     /* bad continuation */
        escape_is("\xc0\xaf", "\"\\ufffd\\ufffd\"");            /* overlong '/' */
        escape_is("\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""); /* overlong, 3 bytes */
        escape_is("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""); /* a UTF-16 surrogate */
        escape_is("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""); /* above U+10FFFF */
        escape_is("\x80", "\"\\ufffd\"");                       /* a lone continuation byte */
}

static void test_json_every_byte(void **state) {
        /* Every single byte value in a string gives output with no raw control character or invalid byte. */
        for (int b = 1; b < 256; b++) {
                char s[2] = { (char) b, 0 };
                char *out = escaped(s);

                for (const unsigned char *p = (const unsigned char *) out; *p; p++) {
                        assert_true(*p >= 0x20);
                        assert_true(*p < 0x80);
                }
                free(out);
        }
}

static void test_json_writer(void **state) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        struct json j;

        assert_non_null(f);
        json_init(&j, f, false);
        json_object_begin(&j);
        json_kv_string(&j, "name", "x\"y");
        json_kv_uint(&j, "n", 18446744073709551615ull);
        json_kv_bool(&j, "b", false);
        json_key(&j, "nothing");
        json_null(&j);
        json_kv_string(&j, "null_string", NULL);
        json_key(&j, "list");
        json_array_begin(&j);
        json_uint(&j, 1);
        json_object_begin(&j);
        json_object_end(&j);
        json_array_begin(&j);
        json_array_end(&j);
        json_string(&j, "s");
        json_array_end(&j);
        json_object_end(&j);
        json_finish(&j);
        assert_int_equal(fclose(f), 0);
        assert_string_equal(buf, "{\"name\":\"x\\\"y\",\"n\":18446744073709551615,\"b\":false,\"nothing\":null,"
                                 "\"null_string\":null,\"list\":[1,{},[],\"s\"]}\n");
        free(buf);

        buf = NULL;
        f = open_memstream(&buf, &size);
        assert_non_null(f);
        json_init(&j, f, true);
        json_object_begin(&j);
        json_key(&j, "a");
        json_array_begin(&j);
        json_uint(&j, 1);
        json_uint(&j, 2);
        json_array_end(&j);
        json_key(&j, "e");
        json_object_begin(&j);
        json_object_end(&j);
        json_object_end(&j);
        json_finish(&j);
        assert_int_equal(fclose(f), 0);
        assert_string_equal(buf, "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": {}\n}\n");
        free(buf);
}

/* ---- text for a terminal ---- */

static void text_is(const char *s, bool keep_newline, const char *want) {
        char buf[256];
        char *d;
        size_t n;

        n = mnctl_escape_text(s, keep_newline, buf, sizeof(buf));
        assert_string_equal(buf, want);
        assert_int_equal(n, strlen(want));
        d = mnctl_text_dup(s, keep_newline);
        assert_non_null(d);
        assert_string_equal(d, want);
        free(d);
}

static void test_escape_text(void **state) {
        char buf[256], small[8];
        char *out = NULL;
        size_t size = 0;
        FILE *f;

        /* Printable text, ASCII and UTF-8, as it is. */
        text_is("MNU-0001", false, "MNU-0001");
        text_is("Dr. M\xc3\xbcller, \"Ann\" \xe2\x82\xac \xf0\x9f\x98\x80", false,
                "Dr. M\xc3\xbcller, \"Ann\" \xe2\x82\xac \xf0\x9f\x98\x80");
        text_is("", false, "");
        text_is(NULL, false, "");
        /* C0 and DEL. */
        text_is("a\x1b[2Jb", false, "a\\x1b[2Jb");
        text_is("\a\b\x7f", false, "\\x07\\x08\\x7f");
        text_is("l1\nl2\r\tx", false, "l1\\nl2\\r\\tx");
        text_is("l1\nl2\r", true, "l1\nl2\\r");
        /* C1: CSI (U+009B), NEL (U+0085), U+0080 and U+009F; U+00A0 is printable. */
        text_is("x\xc2\x9b" "31my", false, "x\\u009b31my");
        text_is("\xc2\x85\xc2\x80\xc2\x9f\xc2\xa0", false, "\\u0085\\u0080\\u009f\xc2\xa0");
        /* Bidirectional controls: RLO, LRI, PDI, LRM, ALM. */
        text_is("a\xe2\x80\xae" "b\xe2\x81\xa6" "c\xe2\x81\xa9\xe2\x80\x8e\xd8\x9c", false,
                "a\\u202eb\\u2066c\\u2069\\u200e\\u061c");
        /* Invalid UTF-8: each byte of no valid character; an overlong form; a surrogate; a lone continuation. */
        text_is("\xff\xfe", false, "\\xff\\xfe");
        text_is("\xc0\xaf", false, "\\xc0\\xaf");
        text_is("\xed\xa0\x80", false, "\\xed\\xa0\\x80");
        text_is("a\x80" "b\xc3", false, "a\\x80b\\xc3");
        /* A backslash, so that the result is unambiguous. */
        text_is("C:\\x1b", false, "C:\\\\x1b");

        /* Cut only between pieces, NUL-terminated; the return value is the whole length. */
        assert_int_equal(mnctl_escape_text("ab\x1b", false, small, 6), 6);
        assert_string_equal(small, "ab");
        assert_int_equal(mnctl_escape_text("abc", false, small, 3), 3);
        assert_string_equal(small, "ab");
        assert_int_equal(mnctl_escape_text("abc", false, NULL, 0), 3);
        assert_string_equal(mnctl_escape("\xc2\x9b", buf, sizeof(buf)), "\\u009b");

        /* The same through a FILE, and every byte value in a row: nothing but printable text comes out. */
        f = open_memstream(&out, &size);
        assert_non_null(f);
        for (unsigned b = 1; b < 256; b++) {
                char one[2] = { (char) b, 0 };

                mnctl_fputs_text(f, one, false);
        }
        mnctl_fputs_text(f, "\xc2\x9b", false);
        assert_int_equal(fclose(f), 0);
        for (const unsigned char *p = (const unsigned char *) out; *p; p++)
                assert_true(*p >= 0x20 && *p < 0x7f);
        assert_non_null(strstr(out, "\\u009b"));
        free(out);
}

/* ---- tables ---- */

static void test_table(void **state) {
        static const char *const headers[] = { "SERIAL", "DEPTH", "CARTRIDGE", NULL };
        struct table *t = table_new(headers);
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        assert_non_null(t);
        assert_int_equal(table_add_row(t, (const char *const[]) { "MNU-0001", "0.50 mm", "CART-1" }), 0);
        table_set_color(t, 0, ANSI_GREEN);
        assert_int_equal(table_add_row(t, (const char *const[]) { "X", "\xc2\xb5", NULL }), 0);

        f = open_memstream(&buf, &size);
        assert_non_null(f);
        table_print(t, f, false);
        assert_int_equal(fclose(f), 0);
        /* Aligned by characters (µ is one), two spaces apart, no trailing blanks, no colour. */
        assert_string_equal(buf,
                            "SERIAL    DEPTH    CARTRIDGE\n"
                            "MNU-0001  0.50 mm  CART-1\n"
                            "X         \xc2\xb5        \n");
        free(buf);

        buf = NULL;
        f = open_memstream(&buf, &size);
        assert_non_null(f);
        table_print(t, f, true);
        assert_int_equal(fclose(f), 0);
        assert_non_null(strstr(buf, ANSI_GREEN "MNU-0001" ANSI_NORMAL "  0.50 mm"));
        free(buf);
        table_free(t);
        assert_int_equal(mnctl_utf8_width("a\xc2\xb5\xe2\x82\xac"), 3);
}

/* A table (list, limits, audit list) shows its cells escaped, aligned by what is shown. */
static void test_table_escapes(void **state) {
        static const char *const headers[] = { "SERIAL", "CARTRIDGE", NULL };
        struct table *t = table_new(headers);
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        assert_non_null(t);
        assert_int_equal(table_add_row(t, (const char *const[]) { "MNU-0001", "C\xc2\x9b" "2J\x1b]0;x\a" }), 0);
        assert_int_equal(table_add_row(t, (const char *const[]) { "MNS\xff", "-" }), 0);
        f = open_memstream(&buf, &size);
        assert_non_null(f);
        table_print(t, f, false);
        assert_int_equal(fclose(f), 0);
        assert_string_equal(buf,
                            "SERIAL    CARTRIDGE\n"
                            "MNU-0001  C\\u009b2J\\x1b]0;x\\x07\n"
                            "MNS\\xff   -\n");
        free(buf);
        table_free(t);
}

static void test_color(void **state) {
        /* Never on a non-terminal, never with NO_COLOR or --no-color. */
        setenv("TERM", "xterm", 1);
        unsetenv("NO_COLOR");
        assert_false(mnctl_use_color(-1, false));
        assert_false(mnctl_use_color(-1, true));
        setenv("NO_COLOR", "1", 1);
        assert_false(mnctl_use_color(-1, false));
        unsetenv("NO_COLOR");
        assert_string_equal(mnctl_state_color("running"), ANSI_GREEN);
        assert_string_equal(mnctl_state_color("fault"), ANSI_RED);
        assert_string_equal(mnctl_state_color("idle"), "");
        assert_string_equal(mnctl_state_color(NULL), "");
}

/* ---- exit codes ---- */

static void test_exit_codes(void **state) {
        static const struct {
                const char *name;
                int code;
        } table[] = {
                { "org.microneedle.Mnd1.Error.LimitExceeded",    4 },
                { "org.microneedle.Mnd1.Error.InvalidArgument",  4 },
                { "org.microneedle.Mnd1.Error.NoSuchArea",       4 },
                { "org.microneedle.Mnd1.Error.CartridgeUsed",    4 },
                { "org.microneedle.Mnd1.Error.CartridgeMissing", 4 },
                { "org.microneedle.Mnd1.Error.NoSuchPen",        3 },
                { "org.freedesktop.DBus.Error.UnknownObject",    3 },
                { "org.freedesktop.DBus.Error.AccessDenied",     5 },
                { "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", 5 },
                { "org.freedesktop.DBus.Error.AuthFailed",       5 },
                { "org.microneedle.Mnd1.Error.Timeout",          6 },
                { "org.microneedle.Mnd1.Error.DeviceError",      6 },
                { "org.microneedle.Mnd1.Error.NotConnected",     6 },
                { "org.microneedle.Mnd1.Error.Busy",             6 },
                { "org.microneedle.Mnd1.Error.AuditFailure",     6 },
                { "org.freedesktop.DBus.Error.NoReply",          6 },
                { "org.freedesktop.DBus.Error.UnknownMethod",    6 },
                { "org.example.Something.Unheard.Of",            6 },
                { "org.freedesktop.DBus.Error.ServiceUnknown",   7 },
                { "org.freedesktop.DBus.Error.NameHasNoOwner",   7 },
                { "org.freedesktop.DBus.Error.Disconnected",     7 },
                { "org.freedesktop.DBus.Error.NoServer",         7 },
                { "org.freedesktop.DBus.Error.FileNotFound",     7 },
                { MNCTL_ERROR_USAGE,                             2 },
                { MNCTL_ERROR_AMBIGUOUS_PEN,                     2 },
                { MNCTL_ERROR_NO_DAEMON,                         7 },
                { MNCTL_ERROR_SESSION_NOT_COMPLETED,             6 },
                { MNCTL_ERROR_FAILED,                            6 },
        };

        for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
                if (mnctl_exit_code_for_error(table[i].name, -EIO) != table[i].code)
                        fail_msg("%s: exit code %d, expected %d", table[i].name,
                                 mnctl_exit_code_for_error(table[i].name, -EIO), table[i].code);

        /* Without a name: a connection that failed or broke is "daemon not running". */
        assert_int_equal(mnctl_exit_code_for_error(NULL, -ENOENT), 7);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -ECONNREFUSED), 7);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -ECONNRESET), 7);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -ENOTCONN), 7);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -ENOMEDIUM), 7);
        assert_int_equal(mnctl_exit_code_for_error("", -EPIPE), 7);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -EACCES), 5);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -ETIMEDOUT), 6);
        assert_int_equal(mnctl_exit_code_for_error(NULL, -EIO), 6);
}

static void test_fail_first_wins(void **state) {
        struct mnctl c = {};

        assert_int_equal(mnctl_usage(&c, "first %d", 1), -EINVAL);
        assert_int_equal(mnctl_fail(&c, -EIO, 6, MNCTL_ERROR_FAILED, "second"), -EIO);
        assert_int_equal(c.exit_code, 2);
        assert_string_equal(c.error_name, MNCTL_ERROR_USAGE);
        assert_string_equal(c.error_message, "first 1");
        mnctl_done(&c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_depth),
                cmocka_unit_test(test_duration),
                cmocka_unit_test(test_speed),
                cmocka_unit_test(test_reason_buffer),
                cmocka_unit_test(test_format),
                cmocka_unit_test(test_pen_resolve),
                cmocka_unit_test(test_pen_resolve_case),
                cmocka_unit_test(test_check_setpoint),
                cmocka_unit_test(test_pen_messages),
                cmocka_unit_test(test_pen_path),
                cmocka_unit_test(test_json_escape),
                cmocka_unit_test(test_json_every_byte),
                cmocka_unit_test(test_json_writer),
                cmocka_unit_test(test_escape_text),
                cmocka_unit_test(test_table),
                cmocka_unit_test(test_table_escapes),
                cmocka_unit_test(test_color),
                cmocka_unit_test(test_exit_codes),
                cmocka_unit_test(test_fail_first_wins),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
