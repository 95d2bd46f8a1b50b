/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Session accounting (needling time, completion, end rules) and the session record. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "session.h"
#include "text.h"

static struct mnd_session *new_session(uint32_t planned_s) {
        struct mnd_session *s = NULL;
        const struct mnd_session_params p = {
                .id = 42,
                .pen_path = "/org/microneedle/Mnd1/pen/MNU_2d0001",
                .pen_serial = "MNU-0001",
                .area = "forehead",
                .operator_name = "Dr. Müller",
                .patient_ref = "P-123",
                .cartridge = "CART-1",
                .planned_duration_s = planned_s,
                .depth_um = 500,
                .speed_hz = 100,
                .started_at = 1000,
        };

        assert_int_equal(mnd_session_new(&p, &s), 0);
        return s;
}

static void test_new(void **state) {
        struct mnd_session *s = new_session(60);
        struct mnd_session *t = NULL;
        struct mnd_session_params p = {
                .id = 1, .pen_path = "/p", .pen_serial = "S", .area = "nose", .cartridge = "C",
                .planned_duration_s = 1,
        };

        assert_string_equal(s->path, "/org/microneedle/Mnd1/session/42");
        assert_int_equal(s->state, MND_SESSION_RUNNING);
        assert_string_equal(mnd_session_state_name(s->state), "running");
        assert_string_equal(s->operator_name, "Dr. Müller");
        assert_string_equal(s->patient_ref, "P-123");
        assert_string_equal(s->end_reason, "");
        assert_int_equal(s->ended_at, 0);
        assert_int_equal(s->elapsed_ms, 0);
        mnd_session_free(s);

        /* Optional strings default to "". */
        assert_int_equal(mnd_session_new(&p, &t), 0);
        assert_string_equal(t->operator_name, "");
        assert_string_equal(t->patient_ref, "");
        mnd_session_free(t);

        p.planned_duration_s = 0;
        assert_int_equal(mnd_session_new(&p, &t), -EINVAL);
        p.planned_duration_s = 1;
        p.area = "this-area-id-is-far-too-long";
        assert_int_equal(mnd_session_new(&p, &t), -EINVAL);
        p.area = "nose";
        p.patient_ref = "bad\nref";
        assert_int_equal(mnd_session_new(&p, &t), -EINVAL);
        p.patient_ref = NULL;
        p.id = 0;
        assert_int_equal(mnd_session_new(&p, &t), -EINVAL);
        assert_null(mnd_session_free(NULL));
}

static void test_needling_time(void **state) {
        struct mnd_session *s = new_session(2);
        unsigned c;

        /* A status from before the START was acted on still carries the previous
         * session's counter: ignored until the pen reports RUNNING. */
        c = mnd_session_update(s, false, 55000, 500, 100);
        assert_int_equal(c, 0);
        assert_int_equal(s->elapsed_ms, 0);
        assert_false(mnd_session_time_used_up(s));

        c = mnd_session_update(s, true, 100, 500, 100);
        assert_int_equal(c, MND_SESSION_CHANGED_ELAPSED);
        assert_int_equal(s->elapsed_ms, 100);

        /* A stalled pen: the counter does not move, nothing is used up. */
        for (int i = 0; i < 10; i++)
                assert_int_equal(mnd_session_update(s, true, 100, 500, 100), 0);
        assert_int_equal(s->elapsed_ms, 100);

        /* Setpoints changed during the session. */
        c = mnd_session_update(s, true, 1000, 450, 120);
        assert_int_equal(c, MND_SESSION_CHANGED_ELAPSED | MND_SESSION_CHANGED_DEPTH | MND_SESSION_CHANGED_SPEED);
        assert_int_equal(s->depth_um, 450);
        assert_int_equal(s->speed_hz, 120);

        /* Needles paused (pen idle after running): time does not go back. */
        c = mnd_session_update(s, false, 900, 450, 120);
        assert_int_equal(c, 0);
        assert_int_equal(s->elapsed_ms, 1000);

        c = mnd_session_update(s, true, 1999, 450, 120);
        assert_false(mnd_session_time_used_up(s));
        c = mnd_session_update(s, true, 2000, 450, 120);
        assert_true(mnd_session_time_used_up(s));
        mnd_session_free(s);
}

static void test_end(void **state) {
        struct mnd_session *s = new_session(60);

        assert_int_equal(mnd_session_end(s, MND_SESSION_RUNNING, "x", 2000), -EINVAL);
        assert_int_equal(mnd_session_end(s, MND_SESSION_STOPPED, "", 2000), -EINVAL);
        assert_int_equal(mnd_session_end(s, MND_SESSION_STOPPED, NULL, 2000), -EINVAL);
        assert_int_equal(mnd_session_end(s, MND_SESSION_STOPPED, "stopped", 2000), MND_SESSION_CHANGED_STATE);
        assert_string_equal(mnd_session_state_name(s->state), "stopped");
        assert_string_equal(s->end_reason, "stopped");
        assert_int_equal(s->ended_at, 2000);

        /* The first end wins; an ended session takes no more updates. */
        assert_int_equal(mnd_session_end(s, MND_SESSION_FAILED, "fault:motor", 3000), -EALREADY);
        assert_string_equal(s->end_reason, "stopped");
        assert_int_equal(mnd_session_update(s, true, 5000, 1, 1), 0);
        assert_false(mnd_session_time_used_up(s));
        mnd_session_free(s);

        /* A clock that went backwards never gives EndedAt < StartedAt. */
        s = new_session(60);
        assert_int_equal(mnd_session_end(s, MND_SESSION_INTERRUPTED, "disconnected", 10), MND_SESSION_CHANGED_STATE);
        assert_int_equal(s->ended_at, s->started_at);
        mnd_session_free(s);
}

static void test_names(void **state) {
        char buf[MND_SESSION_REASON_MAX];

        assert_string_equal(mnd_session_state_name(MND_SESSION_COMPLETED), "completed");
        assert_string_equal(mnd_session_state_name(MND_SESSION_INTERRUPTED), "interrupted");
        assert_string_equal(mnd_session_state_name(MND_SESSION_FAILED), "failed");
        assert_string_equal(mnd_session_state_name(_MND_SESSION_STATE_MAX), "unknown");

        assert_string_equal(mnd_session_fault_reason(MNP_FAULT_LEASE_EXPIRED, NULL, buf, sizeof(buf)),
                            "lease-expired");
        assert_string_equal(mnd_session_fault_reason(MNP_FAULT_MOTOR, NULL, buf, sizeof(buf)), "fault:motor");
        assert_string_equal(mnd_session_fault_reason(MNP_FAULT_CARTRIDGE_REMOVED, NULL, buf, sizeof(buf)),
                            "fault:cartridge-removed");
        assert_string_equal(mnd_session_fault_reason(0, "not-responding", buf, sizeof(buf)),
                            "fault:not-responding");
}

static void test_check_text(void **state) {
        assert_int_equal(mnd_session_check_text("Dr. Müller", 128), 0);
        assert_int_equal(mnd_session_check_text("", 4), 0);
        assert_int_equal(mnd_session_check_text("abcde", 4), -E2BIG);
        assert_int_equal(mnd_session_check_text("a\tb", 4), -EINVAL);
        assert_int_equal(mnd_session_check_text("a\x7f", 4), -EINVAL);
        assert_int_equal(mnd_session_check_text(NULL, 4), -EINVAL);
        /* The audit log's rules: C1 controls (U+0080..U+009F) and invalid UTF-8 are refused too. */
        assert_int_equal(mnd_session_check_text("Dr\xc2\x85X", 128), -EINVAL);
        assert_int_equal(mnd_session_check_text("\xc2\x9f", 128), -EINVAL);
        assert_int_equal(mnd_session_check_text("\xc2\xa0", 128), 0);
        assert_int_equal(mnd_session_check_text("\xc3", 128), -EINVAL);
        assert_int_equal(mnd_session_check_text("\xed\xa0\x80", 128), -EINVAL);   /* a surrogate */
        assert_true(mnd_text_is_valid("a\tb\nc", 5, true));
        assert_false(mnd_text_is_valid("a\tb", 3, false));
}

static void test_text_quote(void **state) {
        char buf[MND_TEXT_QUOTE_SIZE(32)], small[MND_TEXT_QUOTE_SIZE(4)];
        char key[40];

        /* 31 'k' and a two-byte character: cut before it, never inside. */
        memset(key, 'k', 31);
        strcpy(key + 31, "\xc3\xa9");
        mnd_text_quote(key, 32, buf, sizeof(buf));
        assert_int_equal(strlen(buf), 34);
        assert_memory_equal(buf + 31, "...", 4);
        assert_true(mnd_text_is_valid(buf, strlen(buf), false));

        assert_string_equal(mnd_text_quote("h\xc3\xa9", 32, buf, sizeof(buf)), "h\xc3\xa9");
        assert_string_equal(mnd_text_quote(NULL, 32, buf, sizeof(buf)), "");
        /* Controls, C1 included, and stray bytes are escaped. */
        assert_string_equal(mnd_text_quote("a\nb\xc2\x85\xff", 32, buf, sizeof(buf)), "a\\x0ab\\xc2\\x85\\xff");
        assert_string_equal(mnd_text_quote("a\nb", 4, small, sizeof(small)), "a...");
        assert_string_equal(mnd_text_quote("abcd", 4, small, sizeof(small)), "abcd");
        assert_string_equal(mnd_text_quote("abcde", 4, small, sizeof(small)), "abcd...");
        /* max larger than the buffer allows: the buffer wins. */
        assert_string_equal(mnd_text_quote("abcdefgh", 100, small, sizeof(small)), "abcd...");
}

/* The session record (numbers, sessions left running, torn lines) is the audit log's now:
 * tests/unit/test-audit-events.c. */

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_new),
                cmocka_unit_test(test_needling_time),
                cmocka_unit_test(test_end),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_check_text),
                cmocka_unit_test(test_text_quote),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
