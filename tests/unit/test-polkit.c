/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The polkit client's parts without polkit: the CheckAuthorization arguments, reading its answer,
 * and the verdict for every outcome (refused, challenge with and without interaction, polkit not
 * running, timed out, failed, malformed answer). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus-error.h"
#include "polkit.h"
#include "util.h"

#define OPERATE "org.microneedle.mnd.operate"

/* A bus object good enough to build and seal messages: one end of a socket pair, never connected. */
static sd_bus *new_bus(int *ret_peer) {
        sd_bus *bus = NULL;
        int fds[2];

        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
        assert_int_equal(sd_bus_new(&bus), 0);
        assert_int_equal(sd_bus_set_fd(bus, fds[0], fds[0]), 0);
        assert_true(sd_bus_start(bus) >= 0);
        *ret_peer = fds[1];
        return bus;
}

static sd_bus_message *new_call(sd_bus *bus) {
        sd_bus_message *m = NULL;

        assert_int_equal(sd_bus_message_new_method_call(bus, &m, MND_POLKIT_BUS_NAME, MND_POLKIT_PATH,
                                                        MND_POLKIT_INTERFACE, "CheckAuthorization"), 0);
        return m;
}

static void seal(sd_bus_message *m) {
        static uint64_t cookie = 1;

        assert_int_equal(sd_bus_message_seal(m, cookie++, 0), 0);
        assert_true(sd_bus_message_rewind(m, true) >= 0);
}

static void check_args(bool interactive) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        sd_bus *bus;
        const char *kind, *key, *name, *action, *cancel;
        uint32_t flags;
        int peer;

        bus = new_bus(&peer);
        m = new_call(bus);
        assert_int_equal(mnd_polkit_append_check_args(m, ":1.42", OPERATE, interactive), 0);
        seal(m);
        assert_string_equal(sd_bus_message_get_signature(m, true), "(sa{sv})sa{ss}us");

        assert_true(sd_bus_message_enter_container(m, 'r', "sa{sv}") > 0);
        assert_true(sd_bus_message_read(m, "s", &kind) > 0);
        assert_string_equal(kind, "system-bus-name");
        assert_true(sd_bus_message_enter_container(m, 'a', "{sv}") > 0);
        assert_true(sd_bus_message_read(m, "{sv}", &key, "s", &name) > 0);
        assert_string_equal(key, "name");
        assert_string_equal(name, ":1.42");
        assert_int_equal(sd_bus_message_enter_container(m, 'e', "sv"), 0);     /* one entry only */
        assert_true(sd_bus_message_exit_container(m) >= 0);
        assert_true(sd_bus_message_exit_container(m) >= 0);
        assert_true(sd_bus_message_read(m, "s", &action) > 0);
        assert_string_equal(action, OPERATE);
        assert_true(sd_bus_message_enter_container(m, 'a', "{ss}") > 0);
        assert_int_equal(sd_bus_message_enter_container(m, 'e', "ss"), 0);     /* no details */
        assert_true(sd_bus_message_exit_container(m) >= 0);
        assert_true(sd_bus_message_read(m, "us", &flags, &cancel) > 0);
        assert_int_equal(flags, interactive ? MND_POLKIT_CHECK_ALLOW_USER_INTERACTION : 0);
        assert_string_equal(cancel, "");

        m = sd_bus_message_unref(m);
        sd_bus_close_unref(bus);
        close(peer);
}

static void test_args(void **state) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        sd_bus *bus;
        int peer;

        check_args(false);
        check_args(true);

        bus = new_bus(&peer);
        m = new_call(bus);
        assert_int_equal(mnd_polkit_append_check_args(m, NULL, OPERATE, false), -EINVAL);
        assert_int_equal(mnd_polkit_append_check_args(m, ":1.1", "", false), -EINVAL);
        m = sd_bus_message_unref(m);
        sd_bus_close_unref(bus);
        close(peer);
}

/* A message whose body is an answer: (bba{ss}) or something else. */
static sd_bus_message *answer(sd_bus *bus, const char *signature, bool authorized, bool challenge) {
        sd_bus_message *m = new_call(bus);

        if (streq(signature, "(bba{ss})"))
                assert_true(sd_bus_message_append(m, "(bba{ss})", authorized, challenge, 2,
                                                  "polkit.retains_authorization_after_challenge", "1",
                                                  "x", "y") >= 0);
        else if (streq(signature, "(bb)"))
                assert_true(sd_bus_message_append(m, "(bb)", authorized, challenge) >= 0);
        else if (streq(signature, "s"))
                assert_true(sd_bus_message_append(m, "s", "yes") >= 0);
        seal(m);
        return m;
}

static void test_read_result(void **state) {
        sd_bus_message *m;
        sd_bus *bus;
        bool a, c;
        int peer;

        bus = new_bus(&peer);
        for (unsigned i = 0; i < 4; i++) {
                m = answer(bus, "(bba{ss})", i & 1, i & 2);
                a = !(i & 1), c = !(i & 2);
                assert_int_equal(mnd_polkit_read_result(m, &a, &c), 0);
                assert_int_equal(a, !!(i & 1));
                assert_int_equal(c, !!(i & 2));
                sd_bus_message_unref(m);
        }

        a = c = true;
        m = answer(bus, "(bb)", true, false);
        assert_int_equal(mnd_polkit_read_result(m, &a, &c), -EBADMSG);
        sd_bus_message_unref(m);
        m = answer(bus, "s", true, false);
        assert_int_equal(mnd_polkit_read_result(m, &a, &c), -EBADMSG);
        sd_bus_message_unref(m);
        m = answer(bus, "", true, false);
        assert_int_equal(mnd_polkit_read_result(m, &a, &c), -EBADMSG);
        sd_bus_message_unref(m);
        assert_true(a && c);    /* untouched on failure */

        sd_bus_close_unref(bus);
        close(peer);
}

/* The verdict's error must be name, and its message contain every one of the strings. */
static void expect_refusal(int r, const sd_bus_error *e, const char *name, ...) {
        va_list ap;

        assert_int_equal(r, -EACCES);
        assert_true(sd_bus_error_is_set(e));
        assert_string_equal(e->name, name);
        va_start(ap, name);
        for (const char *s; (s = va_arg(ap, const char *));)
                if (!strstr(e->message, s))
                        fail_msg("'%s' lacks '%s'", e->message, s);
        va_end(ap);
}

static void test_decide(void **state) {
        static const char *const absent[] = {
                SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER, SD_BUS_ERROR_NO_SERVER,
                SD_BUS_ERROR_DISCONNECTED,
        };
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        /* Authorised, with or without interaction, challenge or not. */
        assert_int_equal(mnd_polkit_decide(NULL, 0, true, false, OPERATE, "operate pens", 65534, false, &e), 1);
        assert_int_equal(mnd_polkit_decide(NULL, 0, true, true, OPERATE, "operate pens", 65534, true, &e), 1);
        assert_false(sd_bus_error_is_set(&e));

        /* Not authorised: the user, what and the action are named. */
        r = mnd_polkit_decide(NULL, 0, false, false, OPERATE, "operate pens", 65534, true, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "user 65534", "operate pens", OPERATE, NULL);
        sd_bus_error_free(&e);
        r = mnd_polkit_decide(NULL, 0, false, false, OPERATE, "operate pens", (uid_t) -1, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "the caller", OPERATE, NULL);
        sd_bus_error_free(&e);

        /* A challenge: the caller did not allow interaction, or it was allowed but nobody answered. */
        r = mnd_polkit_decide(NULL, 0, false, true, OPERATE, "operate pens", 1000, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, "user 1000", "authenticate",
                       OPERATE, NULL);
        sd_bus_error_free(&e);
        r = mnd_polkit_decide(NULL, 0, false, true, OPERATE, "operate pens", 1000, true, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "did not authenticate", OPERATE, NULL);
        sd_bus_error_free(&e);

        /* polkit cannot be asked: refused, never allowed, whatever its result fields say. */
        for (size_t i = 0; i < ELEMENTSOF(absent); i++) {
                sd_bus_error call = SD_BUS_ERROR_MAKE_CONST(absent[i], "gone");

                r = mnd_polkit_decide(&call, -EIO, true, false, OPERATE, "operate pens", 65534, false, &e);
                expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "cannot check authorisation",
                               "polkit is not running", OPERATE, NULL);
                sd_bus_error_free(&e);
        }
        r = mnd_polkit_decide(NULL, -ENOTCONN, true, false, OPERATE, "operate pens", 65534, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "polkit is not running", NULL);
        sd_bus_error_free(&e);

        {
                sd_bus_error call = SD_BUS_ERROR_MAKE_CONST(SD_BUS_ERROR_NO_REPLY, "Method call timed out");

                r = mnd_polkit_decide(&call, -EIO, true, false, OPERATE, "operate pens", 65534, false, &e);
                expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "did not answer in time", NULL);
                sd_bus_error_free(&e);
        }
        r = mnd_polkit_decide(NULL, -ETIMEDOUT, false, false, OPERATE, "operate pens", 65534, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "did not answer in time", NULL);
        sd_bus_error_free(&e);
        {
                sd_bus_error call = SD_BUS_ERROR_MAKE_CONST("org.freedesktop.PolicyKit1.Error.Failed",
                                                            "Action org.microneedle.mnd.operate is not registered");

                r = mnd_polkit_decide(&call, -EIO, true, false, OPERATE, "operate pens", 65534, false, &e);
                expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "polkit failed", "is not registered", NULL);
                sd_bus_error_free(&e);
        }
}

static void test_verdict(void **state) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *m;
        sd_bus *bus;
        int peer, r;

        bus = new_bus(&peer);

        m = answer(bus, "(bba{ss})", true, false);
        assert_int_equal(mnd_polkit_verdict(0, m, OPERATE, "operate pens", 65534, false, &e), 1);
        sd_bus_message_unref(m);

        m = answer(bus, "(bba{ss})", false, false);
        r = mnd_polkit_verdict(0, m, OPERATE, "operate pens", 65534, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "not authorised", NULL);
        sd_bus_error_free(&e);
        sd_bus_message_unref(m);

        m = answer(bus, "s", true, false);
        r = mnd_polkit_verdict(0, m, OPERATE, "operate pens", 65534, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "could not be read", NULL);
        sd_bus_error_free(&e);
        sd_bus_message_unref(m);

        r = mnd_polkit_verdict(-ETIMEDOUT, NULL, OPERATE, "operate pens", 65534, false, &e);
        expect_refusal(r, &e, SD_BUS_ERROR_ACCESS_DENIED, "did not answer in time", NULL);
        sd_bus_error_free(&e);

        sd_bus_close_unref(bus);
        close(peer);
}

static int called, called_r;
static char called_name[128];

static void record(int r, const sd_bus_error *error, void *userdata) {
        called++;
        called_r = r;
        snprintf(called_name, sizeof(called_name), "%s", error && error->name ? error->name : "");
        assert_ptr_equal(userdata, &called);
}

/* A call without a sender (a direct connection) is refused at once, without polkit. */
static void test_check_without_sender(void **state) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        struct mnd_polkit *p = NULL;
        sd_bus *bus;
        int peer;

        bus = new_bus(&peer);
        assert_int_equal(mnd_polkit_new(bus, &p), 0);
        m = new_call(bus);
        seal(m);
        assert_int_equal(mnd_polkit_check(p, m, OPERATE, "operate pens", 65534, record, &called), 0);
        assert_int_equal(called, 1);
        assert_int_equal(called_r, -EACCES);
        assert_string_equal(called_name, SD_BUS_ERROR_ACCESS_DENIED);
        assert_int_equal(mnd_polkit_pending(p), 0);
        assert_int_equal(mnd_polkit_check(p, m, "", "operate pens", 65534, record, &called), -EINVAL);
        assert_int_equal(called, 1);

        mnd_polkit_cancel_all(p);
        assert_null(mnd_polkit_free(p));
        assert_null(mnd_polkit_free(NULL));
        m = sd_bus_message_unref(m);
        sd_bus_close_unref(bus);
        close(peer);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_args),
                cmocka_unit_test(test_read_result),
                cmocka_unit_test(test_decide),
                cmocka_unit_test(test_verdict),
                cmocka_unit_test(test_check_without_sender),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
