/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The used-cartridge record: persist, reload, torn line, duplicates refused. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cartridge-store.h"
#include "log.h"

static char dir[] = "/tmp/test-cartridge-store-XXXXXX";
static char file[sizeof(dir) + 32];

static int setup(void **state) {
        if (!mkdtemp(dir))
                return -1;
        snprintf(file, sizeof(file), "%s/cartridges", dir);
        log_set_max_level(LOG_ERR);
        return 0;
}

static int teardown(void **state) {
        unlink(file);
        rmdir(dir);
        return 0;
}

static int reset(void **state) {
        unlink(file);
        return 0;
}

static void write_file(const char *text) {
        FILE *f = fopen(file, "we");

        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static char *read_file(void) {
        static char buf[4096];
        FILE *f = fopen(file, "re");
        size_t n;

        assert_non_null(f);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        fclose(f);
        return buf;
}

static void test_empty_and_record(void **state) {
        struct mnd_cartridge_store *s = NULL;
        const struct mnd_cartridge_use *u;

        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 0);
        assert_int_equal(mnd_cartridge_store_max_session(s), 0);
        assert_null(mnd_cartridge_store_find(s, "CART-1"));

        assert_int_equal(mnd_cartridge_store_record(s, "CART-1", 7, 1000), 0);
        u = mnd_cartridge_store_find(s, "CART-1");
        assert_non_null(u);
        assert_int_equal(u->session_id, 7);
        assert_int_equal(u->time_usec, 1000);
        assert_int_equal(mnd_cartridge_store_max_session(s), 7);

        /* A cartridge serves one session. */
        assert_int_equal(mnd_cartridge_store_record(s, "CART-1", 8, 2000), -EEXIST);
        assert_int_equal(mnd_cartridge_store_count(s), 1);
        assert_string_equal(read_file(), "CART-1\t7\t1000\n");
        mnd_cartridge_store_free(s);
}

static void test_reload(void **state) {
        struct mnd_cartridge_store *s = NULL;

        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_record(s, "A", 1, 10), 0);
        assert_int_equal(mnd_cartridge_store_record(s, "B", 3, 30), 0);
        assert_int_equal(mnd_cartridge_store_record(s, "C", 2, 20), 0);
        s = mnd_cartridge_store_free(s);

        /* A restart: every use is still known. */
        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 3);
        assert_int_equal(mnd_cartridge_store_max_session(s), 3);
        assert_int_equal(mnd_cartridge_store_find(s, "B")->session_id, 3);
        assert_int_equal(mnd_cartridge_store_record(s, "B", 9, 90), -EEXIST);
        assert_int_equal(mnd_cartridge_store_record(s, "D", 4, 40), 0);
        s = mnd_cartridge_store_free(s);

        assert_string_equal(read_file(), "A\t1\t10\nB\t3\t30\nC\t2\t20\nD\t4\t40\n");
}

static void test_torn_line(void **state) {
        struct mnd_cartridge_store *s = NULL;

        /* The daemon died in the middle of writing the last line: its START was
         * never sent, the line is ignored and cut off. */
        write_file("A\t1\t10\nB\t2\t2");
        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 1);
        assert_non_null(mnd_cartridge_store_find(s, "A"));
        assert_null(mnd_cartridge_store_find(s, "B"));
        assert_string_equal(read_file(), "A\t1\t10\n");

        /* The next use goes on a line of its own. */
        assert_int_equal(mnd_cartridge_store_record(s, "B", 3, 30), 0);
        s = mnd_cartridge_store_free(s);
        assert_string_equal(read_file(), "A\t1\t10\nB\t3\t30\n");

        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 2);
        assert_int_equal(mnd_cartridge_store_find(s, "B")->session_id, 3);
        mnd_cartridge_store_free(s);

        /* Torn in the id itself, and a file that is nothing but a torn line. */
        write_file("CAR");
        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 0);
        assert_string_equal(read_file(), "");
        mnd_cartridge_store_free(s);
}

static void test_malformed_lines(void **state) {
        struct mnd_cartridge_store *s = NULL;

        /* Damaged complete lines are skipped (never fatal); good ones still count. */
        write_file("A\t1\t10\n"
                   "garbage\n"
                   "\n"
                   "B\tx\t20\n"
                   "C\t2\n"
                   "D E\t3\t30\n"
                   "E\t4\t40\n"
                   "A\t5\t50\n");
        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 2);
        assert_non_null(mnd_cartridge_store_find(s, "A"));
        assert_int_equal(mnd_cartridge_store_find(s, "A")->session_id, 1);     /* the first use */
        assert_non_null(mnd_cartridge_store_find(s, "E"));
        assert_null(mnd_cartridge_store_find(s, "B"));
        assert_int_equal(mnd_cartridge_store_max_session(s), 4);
        mnd_cartridge_store_free(s);
}

static void test_invalid_ids(void **state) {
        struct mnd_cartridge_store *s = NULL;

        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_record(s, "", 1, 1), -EINVAL);
        assert_int_equal(mnd_cartridge_store_record(s, "has space", 1, 1), -EINVAL);
        assert_int_equal(mnd_cartridge_store_record(s, "tab\there", 1, 1), -EINVAL);
        assert_int_equal(mnd_cartridge_store_record(s, "line\nbreak", 1, 1), -EINVAL);
        assert_int_equal(mnd_cartridge_store_record(s, "0123456789012345678901234567890123", 1, 1), -EINVAL);
        assert_int_equal(mnd_cartridge_store_record(s, "01234567890123456789012345678901", 1, 1), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 1);
        mnd_cartridge_store_free(s);

        assert_true(mnd_cartridge_id_is_valid("CART-U1-0001"));
        assert_false(mnd_cartridge_id_is_valid(NULL));
        assert_false(mnd_cartridge_id_is_valid("caf\xc3\xa9"));
}

static void test_many(void **state) {
        struct mnd_cartridge_store *s = NULL;
        char id[32];

        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        for (unsigned i = 1; i <= 300; i++) {
                snprintf(id, sizeof(id), "C%u", i);
                assert_int_equal(mnd_cartridge_store_record(s, id, i, i), 0);
        }
        s = mnd_cartridge_store_free(s);
        assert_int_equal(mnd_cartridge_store_open(dir, &s), 0);
        assert_int_equal(mnd_cartridge_store_count(s), 300);
        assert_int_equal(mnd_cartridge_store_max_session(s), 300);
        assert_int_equal(mnd_cartridge_store_record(s, "C150", 301, 1), -EEXIST);
        mnd_cartridge_store_free(s);
}

static void test_unwritable(void **state) {
        struct mnd_cartridge_store *s = NULL;

        assert_int_equal(mnd_cartridge_store_open("/nonexistent/dir", &s), -ENOENT);
        assert_null(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_empty_and_record, reset),
                cmocka_unit_test_setup(test_reload, reset),
                cmocka_unit_test_setup(test_torn_line, reset),
                cmocka_unit_test_setup(test_malformed_lines, reset),
                cmocka_unit_test_setup(test_invalid_ids, reset),
                cmocka_unit_test_setup(test_many, reset),
                cmocka_unit_test(test_unwritable),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
