/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's audit events (audit-events.c): the fields each builder records, the journal entry
 * (MESSAGE_ID per kind, no patient reference ever), the rate limit; and the legacy state files
 * (audit-legacy.c) imported into the audit log: single use, session numbering and the sessions
 * left running carry over, torn and malformed lines are skipped, a second start imports nothing.
 * These replace the unit tests of the former cartridge-store and session-store.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit-events.h"
#include "audit-legacy.h"
#include "audit-log.h"

static const char *detail(const struct mnd_audit_event *e, const char *key) {
        for (size_t i = 0; i < e->n_details; i++)
                if (strcmp(e->details[i].key, key) == 0)
                        return e->details[i].value;
        return NULL;
}

static bool has_field(char **l, const char *field) {
        for (char **p = l; p && *p; p++)
                if (strcmp(*p, field) == 0)
                        return true;
        return false;
}

static bool any_contains(char **l, const char *needle) {
        for (char **p = l; p && *p; p++)
                if (strstr(*p, needle))
                        return true;
        return false;
}

static const struct mnd_audit_caller caller = { .uid = 1000, .user = "alice", .sender = ":1.42" };

static void test_session_start(void **state) {
        struct mnd_audit_session_info s = {
                .id = 12, .pen = "MNU-0001", .area = "forehead", .cartridge = "CART-1",
                .operator_name = "Dr A", .patient_ref = "P-SECRET-77",
                .depth_um = 500, .speed_hz = 100, .planned_duration_s = 600,
        };
        struct mnd_audit_event_buf b;
        uint8_t h[MND_AUDIT_HASH_SIZE];
        char **f = NULL;

        mnd_audit_build_session_start(&b, &s, &caller);
        assert_string_equal(b.event.kind, MND_AUDIT_SESSION_START);
        assert_int_equal(b.event.session, 12);
        assert_string_equal(b.event.pen, "MNU-0001");
        assert_string_equal(b.event.area, "forehead");
        assert_string_equal(b.event.cartridge, "CART-1");
        assert_string_equal(b.event.operator, "Dr A");
        assert_string_equal(b.event.patient_ref, "P-SECRET-77");
        assert_int_equal(b.event.depth_um, 500);
        assert_int_equal(b.event.speed_hz, 100);
        assert_int_equal(b.event.duration_s, 600);
        assert_int_equal(b.event.uid, 1000);
        assert_string_equal(b.event.user, "alice");
        assert_string_equal(b.event.sender, ":1.42");
        /* Acceptable to the log as it is. */
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &b.event, h), 0);

        /* The journal: fixed id, seq, kind, the fields; the patient reference nowhere. */
        assert_int_equal(mnd_audit_journal_fields(&b.event, 7, "abc", &f), 0);
        assert_true(has_field(f, "MESSAGE_ID=eed2b695e78d403fb090c3035989ff31"));
        assert_true(has_field(f, "MND_AUDIT_SEQ=7"));
        assert_true(has_field(f, "MND_AUDIT_KIND=session-start"));
        assert_true(has_field(f, "MND_AUDIT_SESSION=12"));
        assert_true(has_field(f, "MND_AUDIT_DEPTH_UM=500"));
        assert_true(has_field(f, "MND_AUDIT_UID=1000"));
        assert_true(has_field(f, "MND_AUDIT_USER=alice"));
        assert_true(has_field(f, "MND_AUDIT_HASH=abc"));
        assert_true(has_field(f, "PRIORITY=6"));
        assert_true(any_contains(f, "MESSAGE=Audit event 7: session-start, session 12, pen MNU-0001"));
        assert_false(any_contains(f, "P-SECRET-77"));
        assert_false(any_contains(f, "PATIENT"));
        mnd_strv_free(f);
}

static void test_session_end_and_setpoint(void **state) {
        struct mnd_audit_session_info s = {
                .id = 3, .pen = "MNS-0001", .area = "cheeks", .cartridge = "C9", .operator_name = "op",
                .patient_ref = "P1", .depth_um = 1000, .speed_hz = 120, .planned_duration_s = 60,
        };
        struct mnd_audit_event_buf b;
        uint8_t h[MND_AUDIT_HASH_SIZE];
        char **f = NULL;

        mnd_audit_build_session_end(&b, &s, "completed", "completed", 60012);
        assert_string_equal(b.event.kind, MND_AUDIT_SESSION_END);
        assert_string_equal(b.event.message, "completed");
        assert_string_equal(detail(&b.event, "state"), "completed");
        assert_string_equal(detail(&b.event, "needling_ms"), "60012");
        assert_int_equal(b.event.depth_um, 1000);
        assert_int_equal(b.event.speed_hz, 120);
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &b.event, h), 0);
        assert_int_equal(mnd_audit_journal_fields(&b.event, 1, NULL, &f), 0);
        assert_true(has_field(f, "MND_AUDIT_DETAIL_NEEDLING_MS=60012"));
        assert_false(any_contains(f, "P1"));
        f = mnd_strv_free(f);

        mnd_audit_build_setpoint(&b, "MNU-0001", 0, NULL, 250, MND_AUDIT_UNSET, &caller);
        assert_string_equal(b.event.kind, MND_AUDIT_SETPOINT_CHANGE);
        assert_int_equal(b.event.depth_um, 250);
        assert_int_equal(b.event.speed_hz, MND_AUDIT_UNSET);
        assert_int_equal(b.event.session, 0);
        assert_int_equal(mnd_audit_journal_fields(&b.event, 2, NULL, &f), 0);
        assert_true(has_field(f, "MESSAGE_ID=2db1f8fef117480ba9b6894d1670820c"));
        assert_false(any_contains(f, "MND_AUDIT_SPEED_HZ"));
        mnd_strv_free(f);
}

static void test_refusal_and_others(void **state) {
        struct mnd_audit_verify_result v = { .ok = false, .count = 9, .first_bad_seq = 4, .head = "ff" };
        struct mnd_audit_event_buf b;
        uint8_t h[MND_AUDIT_HASH_SIZE];

        mnd_audit_build_refusal(&b, "MNU-0001", 0, "StartSession", "forehead", 800, 100, 60,
                                "org.microneedle.Mnd1.Error.LimitExceeded",
                                "depth 0.80 mm exceeds the 0.75 mm cap for area 'forehead'", &caller);
        assert_string_equal(b.event.kind, MND_AUDIT_REFUSAL);
        assert_string_equal(b.event.message, "depth 0.80 mm exceeds the 0.75 mm cap for area 'forehead'");
        assert_string_equal(detail(&b.event, "request"), "StartSession");
        assert_string_equal(detail(&b.event, "error"), "org.microneedle.Mnd1.Error.LimitExceeded");
        assert_int_equal(b.event.depth_um, 800);
        assert_int_equal(b.event.uid, 1000);
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &b.event, h), 0);
        assert_int_equal(mnd_audit_journal_priority(b.event.kind), LOG_NOTICE);

        mnd_audit_build_verify(&b, &v, &caller);
        assert_string_equal(detail(&b.event, "ok"), "false");
        assert_string_equal(detail(&b.event, "first_bad_seq"), "4");
        assert_non_null(strstr(b.event.message, "NOT"));

        mnd_audit_build_pen_connected(&b, "MNU-0001", "MN-1", "1.2.3", "usb");
        assert_string_equal(detail(&b.event, "transport"), "usb");
        assert_string_equal(detail(&b.event, "firmware"), "1.2.3");
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &b.event, h), 0);

        mnd_audit_build_daemon_start(&b, "0.1.0", NULL, "");
        assert_string_equal(detail(&b.event, "config"), "(none)");
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &b.event, h), 0);

        mnd_audit_build_auth_failure(&b, "org.microneedle.mnd.operate", "SetDepth", "no", 5, &caller);
        assert_string_equal(detail(&b.event, "suppressed_before"), "5");
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &b.event, h), 0);
}

static void test_message_ids(void **state) {
        static const char *const kinds[] = {
                MND_AUDIT_DAEMON_START, MND_AUDIT_DAEMON_STOP, MND_AUDIT_PEN_CONNECTED, MND_AUDIT_PEN_DISCONNECTED,
                MND_AUDIT_CARTRIDGE_INSERTED, MND_AUDIT_CARTRIDGE_REMOVED, MND_AUDIT_SESSION_START,
                MND_AUDIT_SETPOINT_CHANGE, MND_AUDIT_SESSION_END, MND_AUDIT_REFUSAL, MND_AUDIT_FAULT,
                MND_AUDIT_LEASE_EXPIRED, MND_AUDIT_AUTH_FAILURE, MND_AUDIT_CONFIG_CHANGE, MND_AUDIT_VERIFY,
                MND_AUDIT_STOP, MND_AUDIT_FAULT_CLEARED, MND_AUDIT_LEGACY_IMPORT,
        };
        const char *other = mnd_audit_message_id("some-future-kind");

        /* One id per kind, all different, 32 lower-case hex digits. */
        for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
                const char *id = mnd_audit_message_id(kinds[i]);

                assert_int_equal(strlen(id), 32);
                assert_int_equal(strspn(id, "0123456789abcdef"), 32);
                assert_string_not_equal(id, other);
                for (size_t k = 0; k < i; k++)
                        assert_string_not_equal(id, mnd_audit_message_id(kinds[k]));
        }
}

static void test_ratelimit(void **state) {
        struct mnd_ratelimit rl = { .interval_usec = 1000, .burst = 3 };

        assert_true(mnd_ratelimit_below(&rl, 10));
        assert_true(mnd_ratelimit_below(&rl, 11));
        assert_true(mnd_ratelimit_below(&rl, 12));
        assert_false(mnd_ratelimit_below(&rl, 13));
        assert_false(mnd_ratelimit_below(&rl, 500));
        assert_true(mnd_ratelimit_below(&rl, 1010));
        assert_int_equal(mnd_ratelimit_take_suppressed(&rl), 2);
        assert_int_equal(mnd_ratelimit_take_suppressed(&rl), 0);
}

static void test_cartridge_id(void **state) {
        assert_true(mnd_cartridge_id_is_valid("CART-1"));
        assert_true(mnd_cartridge_id_is_valid("01234567890123456789012345678901"));
        assert_false(mnd_cartridge_id_is_valid("012345678901234567890123456789012"));
        assert_false(mnd_cartridge_id_is_valid(""));
        assert_false(mnd_cartridge_id_is_valid("has space"));
        assert_false(mnd_cartridge_id_is_valid("tab\there"));
        assert_false(mnd_cartridge_id_is_valid(NULL));
}

/* ---- the legacy state files ---- */

static char dir[] = "/tmp/test-audit-events-XXXXXX";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int setup(void **state) {
        return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
        return nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Empties the directory between tests. */
static int reset(void **state) {
        (void) nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
        return mkdir(dir, 0700);
}

static void write_file(const char *name, const char *text) {
        char path[256];
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        f = fopen(path, "we");
        assert_non_null(f);
        fputs(text, f);
        assert_int_equal(fclose(f), 0);
}

static bool exists(const char *name) {
        char path[256];

        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return access(path, F_OK) == 0;
}

static void test_legacy_import(void **state) {
        struct mnd_legacy_import_result res;
        struct mnd_audit_record *recs = NULL;
        struct mnd_audit_verify_result v;
        struct mnd_audit *a = NULL;
        uint64_t session = 0, max = 0;
        size_t n = 0;

        write_file("cartridges", "C1\t1\t100\n"
                                 "C2\t2\t110\n"
                                 "C3\t3\t300\n"
                                 "C7\t7\t700\n"             /* only here: died before the sessions line */
                                 "bad line\n"
                                 "C9\t9\t9");               /* torn: never acted on */
        write_file("sessions", "B\t1\t100\t60\tMNU-0001\tforehead\tC1\n"
                               "B\t2\t110\t30\tMNS-0001\tcheeks\tC2\n"
                               "E\t1\t200\t60000\tcompleted\tcompleted\n"
                               "B\t3\t300\t90\tMNU-0001\tchin\tC3\n"
                               "E\t3\t310\t0\tfailed\tnot-started\n"
                               "E\t1\t200\t60000\tcompleted\n"      /* a field short */
                               "B\t5\t500\t60\tMNU-0001\tnose\tC5\n"); /* C5 not in cartridges */

        assert_int_equal(mnd_audit_open(dir, 0, &a), 0);
        assert_int_equal(mnd_audit_import_legacy(a, dir, &res), 0);
        assert_true(res.found);
        assert_int_equal(res.sessions, 5);      /* 1, 2, 3, 5, 7 */
        assert_int_equal(res.ended, 2);         /* 1, 3 */
        assert_int_equal(res.skipped, 3);
        assert_false(exists("cartridges"));
        assert_false(exists("sessions"));
        assert_true(exists("cartridges.imported"));
        assert_true(exists("sessions.imported"));

        /* Single use: every cartridge either file names. */
        assert_int_equal(mnd_audit_cartridge_used(a, "C1", &session), 1);
        assert_int_equal(session, 1);
        assert_int_equal(mnd_audit_cartridge_used(a, "C5", &session), 1);
        assert_int_equal(session, 5);
        assert_int_equal(mnd_audit_cartridge_used(a, "C7", &session), 1);
        assert_int_equal(session, 7);
        assert_int_equal(mnd_audit_cartridge_used(a, "C9", NULL), 0);
        /* Numbering continues above. */
        assert_int_equal(mnd_audit_max_session(a, &max), 0);
        assert_int_equal(max, 7);

        /* Running when the old daemon stopped: 2, 5 (and 7, whose start was never sent). */
        assert_int_equal(mnd_audit_running_sessions(a, &recs, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(recs[0].event.session, 2);
        assert_string_equal(recs[0].event.pen, "MNS-0001");
        assert_string_equal(recs[0].event.area, "cheeks");
        assert_int_equal(recs[0].event.duration_s, 30);
        assert_int_equal(recs[0].event.time_usec, 110);
        assert_int_equal(recs[1].event.session, 5);
        assert_int_equal(recs[2].event.session, 7);
        recs = mnd_audit_records_free(recs, n);

        /* The end as recorded. */
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .session = 3,
                                                 .kind = MND_AUDIT_SESSION_END }, &recs, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(recs[0].event.message, "not-started");
        assert_string_equal(detail(&recs[0].event, "state"), "failed");
        recs = mnd_audit_records_free(recs, n);

        assert_int_equal(mnd_audit_verify(a, &v), 0);
        assert_true(v.ok);
        assert_int_equal(v.count, 8);           /* 5 starts, 2 ends, 1 legacy-import */

        /* Nothing more to do: the files are gone. */
        assert_int_equal(mnd_audit_import_legacy(a, dir, &res), 0);
        assert_false(res.found);
        mnd_audit_close(a);
}

static void test_legacy_import_once(void **state) {
        struct mnd_legacy_import_result res;
        struct mnd_audit *a = NULL;
        uint64_t count = 0;

        write_file("cartridges", "C1\t1\t100\n");
        assert_int_equal(mnd_audit_open(dir, 0, &a), 0);
        assert_int_equal(mnd_audit_import_legacy(a, dir, &res), 0);
        assert_int_equal(res.sessions, 1);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 2);

        /* As if the daemon died between the commit and the renames: imported once only. */
        {
                char from[256], to[256];

                snprintf(from, sizeof(from), "%s/cartridges.imported", dir);
                snprintf(to, sizeof(to), "%s/cartridges", dir);
                assert_int_equal(rename(from, to), 0);
        }
        assert_int_equal(mnd_audit_import_legacy(a, dir, &res), 0);
        assert_true(res.found);
        assert_int_equal(res.sessions, 0);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 2);
        assert_false(exists("cartridges"));
        mnd_audit_close(a);
}

static void test_legacy_none(void **state) {
        struct mnd_legacy_import_result res;
        struct mnd_audit *a = NULL;
        uint64_t count = 1;

        assert_int_equal(mnd_audit_open(dir, 0, &a), 0);
        assert_int_equal(mnd_audit_import_legacy(a, dir, &res), 0);
        assert_false(res.found);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 0);
        mnd_audit_close(a);
}

static void test_file_hash(void **state) {
        char hex[MND_AUDIT_HASH_HEX_SIZE], path[256];

        write_file("conf", "abc");
        snprintf(path, sizeof(path), "%s/conf", dir);
        assert_int_equal(mnd_file_sha256_hex(path, hex), 0);
        assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        snprintf(path, sizeof(path), "%s/missing", dir);
        assert_int_equal(mnd_file_sha256_hex(path, hex), -ENOENT);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_session_start),
                cmocka_unit_test(test_session_end_and_setpoint),
                cmocka_unit_test(test_refusal_and_others),
                cmocka_unit_test(test_message_ids),
                cmocka_unit_test(test_ratelimit),
                cmocka_unit_test(test_cartridge_id),
                cmocka_unit_test_setup(test_legacy_import, reset),
                cmocka_unit_test_setup(test_legacy_import_once, reset),
                cmocka_unit_test_setup(test_legacy_none, reset),
                cmocka_unit_test_setup(test_file_hash, reset),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
