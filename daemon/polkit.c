/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-error.h"
#include "log.h"
#include "polkit.h"
#include "util.h"

struct polkit_check {
        struct mnd_polkit *polkit;
        struct polkit_check *prev, *next;

        char *sender, *action, *what;
        uid_t uid;
        bool interactive;

        sd_bus_slot *call_slot;                 /* CheckAuthorization in flight */
        sd_bus_slot *match_slot;                /* NameOwnerChanged of the caller */

        mnd_polkit_fn fn;
        void *userdata;
};

struct mnd_polkit {
        sd_bus *bus;
        struct polkit_check *checks;
        unsigned n_checks;
};

/* ---- without a bus ---- */

int mnd_polkit_append_check_args(sd_bus_message *call, const char *sender, const char *action, bool interactive) {
        int r;

        if (isempty(sender) || isempty(action))
                return -EINVAL;
        r = sd_bus_message_append(call, "(sa{sv})sa{ss}us",
                                  "system-bus-name", 1, "name", "s", sender,
                                  action,
                                  0,
                                  interactive ? MND_POLKIT_CHECK_ALLOW_USER_INTERACTION : UINT32_C(0),
                                  "");
        return r < 0 ? r : 0;
}

int mnd_polkit_read_result(sd_bus_message *reply, bool *ret_authorized, bool *ret_challenge) {
        int authorized, challenge, r;

        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r <= 0)
                return -EBADMSG;
        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r <= 0)
                return -EBADMSG;
        /* The details (polkit.retains_authorization_after_challenge, ...) decide nothing here. */
        r = sd_bus_message_skip(reply, "a{ss}");
        if (r < 0)
                return -EBADMSG;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return -EBADMSG;

        *ret_authorized = authorized;
        *ret_challenge = challenge;
        return 0;
}

static bool polkit_absent(const sd_bus_error *call_error, int call_r) {
        if (call_error && sd_bus_error_is_set(call_error))
                return sd_bus_error_has_names(call_error, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER,
                                              SD_BUS_ERROR_NO_SERVER, SD_BUS_ERROR_DISCONNECTED,
                                              "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
                                              "org.freedesktop.systemd1.NoSuchUnit");
        /* Our own connection to the bus is gone. */
        return call_r == -ENOTCONN || call_r == -ECONNRESET;
}

int mnd_polkit_decide(const sd_bus_error *call_error, int call_r, bool authorized, bool challenge,
                      const char *action, const char *what, uid_t uid, bool interactive, sd_bus_error *error) {
        char who[32];
        bool failed = (call_error && sd_bus_error_is_set(call_error)) || call_r < 0;

        if (uid == (uid_t) -1)
                snprintf(who, sizeof(who), "the caller");
        else
                snprintf(who, sizeof(who), "user %u", (unsigned) uid);

        if (failed) {
                /* Never allow on error: whoever cannot be checked is refused (Stop needs no check). */
                if (polkit_absent(call_error, call_r))
                        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                          "cannot check authorisation: polkit is not running, so %s may not %s "
                                          "(polkit action %s); Stop and StopAll still work", who, what, action);
                else if ((call_error && sd_bus_error_has_names(call_error, SD_BUS_ERROR_NO_REPLY,
                                                               SD_BUS_ERROR_TIMEOUT)) ||
                         (!(call_error && sd_bus_error_is_set(call_error)) && call_r == -ETIMEDOUT))
                        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                          "cannot check authorisation: polkit did not answer in time, so %s may "
                                          "not %s (polkit action %s); try again", who, what, action);
                else
                        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                          "cannot check authorisation: polkit failed (%s), so %s may not %s "
                                          "(polkit action %s)",
                                          call_error && sd_bus_error_is_set(call_error)
                                                  ? strempty(call_error->message ?: call_error->name)
                                                  : strerror(ERRNO_VALUE(call_r)),
                                          who, what, action);
                return -EACCES;
        }

        if (authorized)
                return 1;

        if (challenge && !interactive) {
                sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                  "%s must authenticate to %s (polkit action %s); run the command on a terminal "
                                  "to be asked for a password, or ask an administrator for a polkit rule",
                                  who, what, action);
                return -EACCES;
        }
        if (challenge)
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "%s did not authenticate to %s (polkit action %s): no authentication agent "
                                  "answered, or the password was not given", who, what, action);
        else
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "%s is not authorised to %s (polkit action %s); ask an administrator for it",
                                  who, what, action);
        return -EACCES;
}

int mnd_polkit_verdict(int r, sd_bus_message *reply, const char *action, const char *what, uid_t uid,
                       bool interactive, sd_bus_error *error) {
        bool authorized = false, challenge = false;

        if (r < 0 || !reply)
                return mnd_polkit_decide(NULL, r < 0 ? r : -EIO, false, false, action, what, uid, interactive,
                                         error);
        if (sd_bus_message_is_method_error(reply, NULL))
                return mnd_polkit_decide(sd_bus_message_get_error(reply), -EIO, false, false, action, what, uid,
                                         interactive, error);

        r = mnd_polkit_read_result(reply, &authorized, &challenge);
        if (r < 0) {
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "cannot check authorisation: polkit's answer (signature '%s') could not be read, "
                                  "so %s is not allowed (polkit action %s)",
                                  strempty(sd_bus_message_get_signature(reply, true)), what, action);
                return -EACCES;
        }
        return mnd_polkit_decide(NULL, 0, authorized, challenge, action, what, uid, interactive, error);
}

/* ---- checks in flight ---- */

static void check_unlink(struct polkit_check *c) {
        struct mnd_polkit *p = c->polkit;

        if (!p)
                return;
        if (c->prev)
                c->prev->next = c->next;
        else
                p->checks = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        c->polkit = NULL;
        p->n_checks--;
}

static struct polkit_check *check_free(struct polkit_check *c) {
        if (!c)
                return NULL;
        check_unlink(c);
        sd_bus_slot_unref(c->call_slot);
        sd_bus_slot_unref(c->match_slot);
        free(c->sender);
        free(c->action);
        free(c->what);
        return mfree(c);
}

/* The end of a check: out of the list and its slots released first, so that the callback may
 * start new checks (or free the polkit object's owner's state), then the callback, then freed. */
static void check_end(struct polkit_check *c, int r, const sd_bus_error *error) {
        check_unlink(c);
        c->call_slot = sd_bus_slot_unref(c->call_slot);
        c->match_slot = sd_bus_slot_unref(c->match_slot);
        c->fn(r, error, c->userdata);
        check_free(c);
}

static int on_check_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        struct polkit_check *c = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = mnd_polkit_verdict(0, reply, c->action, c->what, c->uid, c->interactive, &error);
        if (r > 0)
                log_debug("polkit: %s (%s) may %s.", c->sender, c->action, c->what);
        else
                log_info("polkit: %s refused: %s", c->sender, error.message);
        check_end(c, r, r > 0 ? NULL : &error);
        return 0;
}

static int on_name_owner_changed(sd_bus_message *message, void *userdata, sd_bus_error *ret_error) {
        struct polkit_check *c = userdata;
        const char *name, *old_owner, *new_owner;
        int r;

        r = sd_bus_message_read(message, "sss", &name, &old_owner, &new_owner);
        if (r < 0 || !streq(name, c->sender) || !isempty(new_owner))
                return 0;
        /* Dropping the call slot drops polkit's answer when it comes; polkit gives up on a subject
         * that has gone by itself (its authentication agent session ends with the name). */
        log_debug("polkit: %s left the bus while its %s check was in flight; cancelled.", c->sender, c->action);
        check_end(c, -ECONNRESET, NULL);
        return 0;
}

int mnd_polkit_new(sd_bus *bus, struct mnd_polkit **ret) {
        struct mnd_polkit *p;

        if (!bus || !ret)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->bus = sd_bus_ref(bus);
        *ret = p;
        return 0;
}

void mnd_polkit_cancel_all(struct mnd_polkit *p) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;

        if (!p || !p->checks)
                return;
        sd_bus_error_set(&error, MND_ERROR_BUSY, "the daemon is shutting down; nothing was done");
        while (p->checks)
                check_end(p->checks, -ESHUTDOWN, &error);
}

struct mnd_polkit *mnd_polkit_free(struct mnd_polkit *p) {
        if (!p)
                return NULL;
        mnd_polkit_cancel_all(p);
        sd_bus_unref(p->bus);
        return mfree(p);
}

unsigned mnd_polkit_pending(const struct mnd_polkit *p) {
        return p ? p->n_checks : 0;
}

static unsigned checks_of(const struct mnd_polkit *p, const char *sender) {
        unsigned n = 0;

        for (const struct polkit_check *c = p->checks; c; c = c->next)
                if (streq(c->sender, sender))
                        n++;
        return n;
}

/* Ends a check that never reached polkit, from inside mnd_polkit_check(). */
static int refuse_now(mnd_polkit_fn fn, void *userdata, const char *name, const char *fmt, ...) _printf_(4, 5);
static int refuse_now(mnd_polkit_fn fn, void *userdata, const char *name, const char *fmt, ...) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        va_list ap;

        va_start(ap, fmt);
        (void) sd_bus_error_setfv(&error, name, fmt, ap);
        va_end(ap);
        fn(-EACCES, &error, userdata);
        return 0;
}

int mnd_polkit_check(struct mnd_polkit *p, sd_bus_message *message, const char *action, const char *what,
                     uid_t uid, mnd_polkit_fn fn, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *call = NULL;
        struct polkit_check *c;
        const char *sender;
        char match[256];
        int r;

        if (!p || !message || isempty(action) || isempty(what) || !fn)
                return -EINVAL;

        sender = sd_bus_message_get_sender(message);
        if (isempty(sender))
                /* A direct connection: no bus daemon vouches for a name polkit could look up. */
                return refuse_now(fn, userdata, SD_BUS_ERROR_ACCESS_DENIED,
                                  "cannot check authorisation without a bus name, so %s is not allowed "
                                  "(polkit action %s)", what, action);
        if (p->n_checks >= MND_POLKIT_CHECKS_MAX)
                return refuse_now(fn, userdata, MND_ERROR_BUSY,
                                  "%u authorisation checks are waiting for polkit already; try again shortly",
                                  p->n_checks);
        if (checks_of(p, sender) >= MND_POLKIT_CHECKS_PER_CALLER_MAX)
                return refuse_now(fn, userdata, MND_ERROR_BUSY,
                                  "%u of your calls are waiting for polkit already; wait for their answers",
                                  MND_POLKIT_CHECKS_PER_CALLER_MAX);

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->sender = strdup(sender);
        c->action = strdup(action);
        c->what = strdup(what);
        c->uid = uid;
        c->interactive = sd_bus_message_get_allow_interactive_authorization(message) > 0;
        c->fn = fn;
        c->userdata = userdata;
        if (!c->sender || !c->action || !c->what) {
                check_free(c);
                return -ENOMEM;
        }

        /* Watch the caller first: if it leaves, its check is dropped.  (Should it leave before the
         * match is installed, polkit refuses a subject that is gone, and the refusal goes nowhere.) */
        snprintf(match, sizeof(match),
                 "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                 "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'", sender);
        r = sd_bus_add_match_async(p->bus, &c->match_slot, match, on_name_owner_changed, NULL, c);
        if (r < 0)
                goto fail;

        r = sd_bus_message_new_method_call(p->bus, &call, MND_POLKIT_BUS_NAME, MND_POLKIT_PATH, MND_POLKIT_INTERFACE,
                                           "CheckAuthorization");
        if (r < 0)
                goto fail;
        r = mnd_polkit_append_check_args(call, sender, action, c->interactive);
        if (r < 0)
                goto fail;
        /* polkit may itself need to ask a person (its agent): let it. */
        (void) sd_bus_message_set_allow_interactive_authorization(call, c->interactive);
        r = sd_bus_call_async(p->bus, &c->call_slot, call, on_check_reply, c,
                              c->interactive ? MND_POLKIT_INTERACTIVE_TIMEOUT_USEC : MND_POLKIT_TIMEOUT_USEC);
        if (r < 0)
                goto fail;

        c->polkit = p;
        c->next = p->checks;
        if (p->checks)
                p->checks->prev = c;
        p->checks = c;
        p->n_checks++;
        log_debug("polkit: asking whether %s may %s (%s%s).", sender, what, action,
                  c->interactive ? ", interactive" : "");
        return 0;

fail:
        log_warning_errno(r, "Cannot ask polkit whether %s may %s: %m", sender, what);
        check_free(c);
        return r;
}
