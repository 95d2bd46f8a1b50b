/* SPDX-License-Identifier: GPL-2.0-or-later */
/* mnd.conf parsing: every key, every error with FILE:LINE, raises refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

static char conf_path[] = "/tmp/test-config-XXXXXX";

static int setup(void **state) {
        int fd = mkstemp(conf_path);

        if (fd < 0)
                return -1;
        close(fd);
        log_set_max_level(LOG_ERR);     /* the warnings are expected */
        return 0;
}

static int teardown(void **state) {
        unlink(conf_path);
        return 0;
}

static void write_conf(const char *text) {
        FILE *f = fopen(conf_path, "we");

        assert_non_null(f);
        assert_int_equal(fputs(text, f) >= 0, 1);
        assert_int_equal(fclose(f), 0);
}

/* Loads text; returns the error and the message (malloc'd) in *ret_error. */
static int load(const char *text, struct mnd_config *c, char **ret_error) {
        write_conf(text);
        assert_int_equal(mnd_config_init(c), 0);
        return mnd_config_load(c, conf_path, true, ret_error);
}

/* Expects a failure with error r whose message is "PATH:LINE: ..." containing needle. */
static void expect_error(const char *text, int r, unsigned line, const char *needle) {
        struct mnd_config c;
        char *error = NULL, prefix[128];

        assert_int_equal(load(text, &c, &error), r);
        assert_non_null(error);
        if (line > 0)
                snprintf(prefix, sizeof(prefix), "%s:%u: ", conf_path, line);
        else
                snprintf(prefix, sizeof(prefix), "%s: ", conf_path);
        if (strncmp(error, prefix, strlen(prefix)) != 0 || !strstr(error, needle))
                fail_msg("message '%s' is not '%s...%s...'", error, prefix, needle);
        free(error);
        mnd_config_done(&c);
}

static void test_defaults(void **state) {
        struct mnd_config c;
        struct mnd_link_settings d;
        char *error = NULL;

        assert_int_equal(mnd_config_init(&c), 0);
        assert_int_equal(mnd_config_load(&c, "/nonexistent/mnd.conf", false, &error), 0);
        assert_null(error);
        assert_string_equal(c.state_directory, MND_STATE_DIRECTORY_DEFAULT);
        mnd_link_settings_default(&d);
        assert_memory_equal(&c.link, &d, sizeof(d));
        assert_non_null(mnd_id_table_find(&c.ids, 0x1209, 0x0001));
        assert_int_equal(c.limits.max_depth_um, MNP_ABS_MAX_DEPTH_UM);
        mnd_config_done(&c);

        /* An empty file, comments only: the defaults too. */
        assert_int_equal(load("# nothing\n; still nothing\n\n", &c, &error), 0);
        assert_string_equal(c.state_directory, MND_STATE_DIRECTORY_DEFAULT);
        mnd_config_done(&c);
}

static void test_missing_explicit(void **state) {
        struct mnd_config c;
        char *error = NULL;

        assert_int_equal(mnd_config_init(&c), 0);
        assert_int_equal(mnd_config_load(&c, "/nonexistent/mnd.conf", true, &error), -ENOENT);
        assert_non_null(error);
        assert_non_null(strstr(error, "/nonexistent/mnd.conf: cannot open"));
        free(error);
        mnd_config_done(&c);
}

static void test_every_key(void **state) {
        struct mnd_config c;
        char *error = NULL;
        const struct mnp_area_limits *a;
        const struct mnp_pen_id *id;

        assert_int_equal(load("[daemon]\n"
                              "state_directory = /srv/mnd\n"
                              "[link]\n"
                              "heartbeat_ms = 40\n"
                              "lease_ms = 160\n"
                              "retransmit_ms = 20\n"
                              "retries = 5\n"
                              "peer_timeout_ms = 300\n"
                              "[pens]\n"
                              "usb = 1234:abcd\n"
                              "usb = 1234:ABCE\n"
                              "serial = 4321:0001\n"
                              "[limits]\n"
                              "max_depth_um = 2000\n"
                              "max_speed_hz = 150\n"
                              "max_duration_s = 1800\n"
                              "[area.forehead]\n"
                              "max_depth_um = 500\n"
                              "max_duration_s = 600\n"
                              "max_speed_hz = 120\n", &c, &error), 0);
        assert_null(error);
        assert_string_equal(c.state_directory, "/srv/mnd");
        assert_int_equal(c.link.heartbeat_ms, 40);
        assert_int_equal(c.link.lease_ms, 160);
        assert_int_equal(c.link.retransmit_ms, 20);
        assert_int_equal(c.link.retries, 5);
        assert_int_equal(c.link.peer_timeout_ms, 300);
        id = mnd_id_table_find(&c.ids, 0x1234, 0xabcd);
        assert_non_null(id);
        assert_int_equal(id->transport, MNP_TRANSPORT_USB);
        assert_non_null(mnd_id_table_find(&c.ids, 0x1234, 0xabce));
        id = mnd_id_table_find(&c.ids, 0x4321, 0x0001);
        assert_non_null(id);
        assert_int_equal(id->transport, MNP_TRANSPORT_SERIAL);
        assert_int_equal(c.limits.max_depth_um, 2000);
        assert_int_equal(c.limits.max_speed_hz, 150);
        assert_int_equal(c.limits.max_duration_s, 1800);
        a = mnp_limits_area(&c.limits, "forehead");
        assert_non_null(a);
        assert_int_equal(a->max_depth_um, 500);
        assert_int_equal(a->max_duration_s, 600);
        assert_int_equal(a->max_speed_hz, 120);
        mnd_config_done(&c);
}

static void test_example_file(void **state) {
        /* The example shipped in daemon/ must load as it is. */
        char path[4096], *slash, *error = NULL;
        struct mnd_config c;

        snprintf(path, sizeof(path), "%s", __FILE__);
        slash = strstr(path, "/tests/unit/");
        if (!slash)
                skip();
        strcpy(slash, "/daemon/mnd.conf");
        assert_int_equal(mnd_config_init(&c), 0);
        assert_int_equal(mnd_config_load(&c, path, true, &error), 0);
        assert_null(error);
        mnd_config_done(&c);
}

static void test_errors(void **state) {
        expect_error("[daemon]\nstate_directory = /x\n[bogus]\nkey = 1\n", -ENOENT, 4, "unknown section [bogus]");
        expect_error("top = 1\n", -ENOENT, 1, "outside any section");
        expect_error("\n[daemon]\nstate_dir = /x\n", -ENOENT, 3, "unknown key 'state_dir' in section [daemon]");
        expect_error("[daemon]\nstate_directory = relative/path\n", -EINVAL, 2, "absolute path");
        expect_error("[link]\nheartbeat = 5\n", -ENOENT, 2, "unknown key 'heartbeat' in section [link]");
        expect_error("[link]\nlease_ms = 20x\n", -EINVAL, 2, "lease_ms must be an unsigned decimal integer");
        expect_error("[link]\nlease_ms = -1\n", -EINVAL, 2, "not '-1'");
        expect_error("[link]\nlease_ms = 99999999999\n", -EINVAL, 2, "unsigned decimal");
        expect_error("[link]\nretries = 70000\n", -ERANGE, 2, "retries 70000 is above 60000");
        expect_error("[pens]\nhid = 1234:5678\n", -ENOENT, 2, "unknown key 'hid' in section [pens]");
        expect_error("[pens]\nusb = 12345:1\n", -EINVAL, 2, "VENDOR:PRODUCT");
        expect_error("[pens]\nusb = 1234\n", -EINVAL, 2, "VENDOR:PRODUCT");
        expect_error("[pens]\nusb = 0000:0001\n", -EINVAL, 2, "VENDOR:PRODUCT");
        expect_error("[pens]\nusb = 12g4:0001\n", -EINVAL, 2, "VENDOR:PRODUCT");
        expect_error("[pens]\nusb = 1209:0001\n", -EEXIST, 2, "1209:0001 is already in the pen table");
        expect_error("[pens]\nserial = 1234:0001\nusb = 1234:0001\n", -EEXIST, 3, "already in the pen table");
        /* [limits] and [area.<id>]: libmnp's sentences, with our FILE:LINE. */
        expect_error("[limits]\nmax_depth_um = 3001\n", -ERANGE, 2, "max_depth_um");
        expect_error("[limits]\nmax_speed_hz = 301\n", -ERANGE, 2, "max_speed_hz");
        expect_error("[limits]\nmax_duration_s = 3601\n", -ERANGE, 2, "max_duration_s");
        expect_error("[area.forehead]\nmax_depth_um = 751\n", -ERANGE, 2, "max_depth_um");
        expect_error("[area.nose]\nmax_duration_s = 601\n", -ERANGE, 2, "max_duration_s");
        expect_error("[area.elbow]\nmax_depth_um = 100\n", -ENOENT, 2, "elbow");
        expect_error("[limits]\nmax_depth = 100\n", -ENOENT, 2, "max_depth");
        expect_error("[limits]\nmax_depth_um = 1.5\n", -EINVAL, 2, "1.5");
        expect_error("[limits]\nmax_speed_hz = 0\n", -EINVAL, 2, "max_speed_hz");
        /* Syntax errors inih finds. */
        expect_error("[daemon\n", -EINVAL, 1, "syntax error");
        expect_error("[link]\n\nheartbeat_ms\n", -EINVAL, 3, "syntax error");
        /* The first problem is the one reported. */
        expect_error("[link]\nbad = 1\n[worse]\n", -ENOENT, 2, "unknown key 'bad'");
}

static void test_raise_after_lower(void **state) {
        /* Each entry may only lower the cap in force, including one the same
         * file lowered before: caps only ever go down. */
        struct mnd_config c;
        char *error = NULL;

        assert_int_equal(load("[area.cheeks]\nmax_depth_um = 1500\n[area.cheeks]\nmax_depth_um = 1000\n", &c, &error), 0);
        assert_int_equal(mnp_limits_area(&c.limits, "cheeks")->max_depth_um, 1000);
        mnd_config_done(&c);
        expect_error("[area.cheeks]\nmax_depth_um = 1000\n\n[area.cheeks]\nmax_depth_um = 1500\n", -ERANGE, 5,
                     "max_depth_um");
        /* A global cap lowers what every area allows, whatever the order. */
        assert_int_equal(load("[limits]\nmax_depth_um = 600\n[area.forehead]\nmax_depth_um = 700\n", &c, &error), 0);
        mnd_config_done(&c);
}

static void test_link_consistency(void **state) {
        struct mnd_config c;
        char *error = NULL;

        /* Not tied to one line: "FILE: [link] ..." */
        expect_error("[link]\nheartbeat_ms = 100\nlease_ms = 150\n", -EINVAL, 0, "at least twice heartbeat_ms");
        expect_error("[link]\nlease_ms = 2000\n", -EINVAL, 0, "above 1000");
        expect_error("[link]\nheartbeat_ms = 0\n", -EINVAL, 0, "above 0");
        expect_error("[link]\nretries = 11\n", -EINVAL, 0, "retries 11 is above 10");
        expect_error("[link]\nretransmit_ms = 300\n", -EINVAL, 0, "below peer_timeout_ms");
        expect_error("[link]\npeer_timeout_ms = 40\nretransmit_ms = 30\n", -EINVAL, 0, "above heartbeat_ms");

        /* Above the recommended 300 ms: a warning, not an error. */
        assert_int_equal(load("[link]\nheartbeat_ms = 100\nlease_ms = 400\npeer_timeout_ms = 500\n", &c, &error), 0);
        assert_null(error);
        mnd_config_done(&c);
}

static void test_long_line(void **state) {
        char text[1024];

        snprintf(text, sizeof(text), "[daemon]\n# fine\nstate_directory = /%0400d\n", 0);
        expect_error(text, -EINVAL, 3, "line is longer than");
}

static void test_inline_comment_and_spaces(void **state) {
        struct mnd_config c;
        char *error = NULL;

        assert_int_equal(load("  [link]  \n  heartbeat_ms=40 ; forty\nlease_ms   =   120\n", &c, &error), 0);
        assert_int_equal(c.link.heartbeat_ms, 40);
        assert_int_equal(c.link.lease_ms, 120);
        mnd_config_done(&c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults),
                cmocka_unit_test(test_missing_explicit),
                cmocka_unit_test(test_every_key),
                cmocka_unit_test(test_example_file),
                cmocka_unit_test(test_errors),
                cmocka_unit_test(test_raise_after_lower),
                cmocka_unit_test(test_link_consistency),
                cmocka_unit_test(test_long_line),
                cmocka_unit_test(test_inline_comment_and_spaces),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
