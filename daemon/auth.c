/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "audit-trail.h"
#include "auth.h"
#include "log.h"
#include "manager.h"
#include "polkit.h"

/* The caller's effective uid, as the bus daemon vouches for it. */
static int sender_euid(sd_bus_message *message, uid_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        int r;

        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID | SD_BUS_CREDS_AUGMENT, &creds);
        if (r < 0)
                return r;
        return sd_bus_creds_get_euid(creds, ret);
}

static int check_uid_internal(struct mnd_manager *m, sd_bus_message *message, const char *action, const char *what,
                              sd_bus_error *error) {
        uid_t uid;
        int r;

        r = sender_euid(message, &uid);
        if (r < 0) {
                log_warning_errno(r, "Cannot get the credentials of %s for %s: %m",
                                  strempty(sd_bus_message_get_sender(message)), action);
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "cannot tell who is asking to %s, so it is not allowed", what);
                return -EACCES;
        }

        /* The session bus (demos and tests): the user who runs the daemon.  (The system bus asks
         * polkit: auth_check().) */
        if (uid == m->owner_uid)
                return 0;
        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                          "only user %u, who runs this daemon, may %s (you are user %u)",
                          (unsigned) m->owner_uid, what, (unsigned) uid);
        return -EACCES;
}

/* Every refusal is on the audit trail (rate-limited: an unauthorised caller must not fill the disk). */
static int check_uid(struct mnd_manager *m, sd_bus_message *message, const char *action, const char *what,
                     sd_bus_error *error) {
        int r = check_uid_internal(m, message, action, what, error);

        if (r < 0)
                mnd_audit_record_auth_failure(m, message, action, error);
        return r;
}

/* The uid the bus daemon vouches for, for the decision on the system bus: from the bus only, never
 * guessed from /proc.  -ENODATA if the bus does not tell. */
static int sender_bus_euid(sd_bus_message *message, uid_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        int r;

        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        return sd_bus_creds_get_euid(creds, ret);
}

/* A call waiting for polkit. */
struct auth_pending {
        struct mnd_manager *manager;
        sd_bus_message *message;
        const char *action;                     /* static */
        mnd_auth_continue_fn fn;
        void *userdata;
};

/* Runs the continuation; answers its refusal the way sd-bus answers a method handler's. */
static void run_continuation(sd_bus_message *message, mnd_auth_continue_fn fn, void *userdata) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_message_rewind(message, true);
        if (r >= 0)
                r = fn(message, userdata, &error);
        if (r >= 0)
                return;
        if (sd_bus_error_is_set(&error))
                (void) sd_bus_reply_method_error(message, &error);
        else
                (void) sd_bus_reply_method_errno(message, r, NULL);
}

static bool is_auth_failure(const sd_bus_error *error) {
        return sd_bus_error_has_names(error, SD_BUS_ERROR_ACCESS_DENIED,
                                      SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED);
}

static void on_polkit_answer(int r, const sd_bus_error *error, void *userdata) {
        struct auth_pending *a = userdata;

        if (r > 0)
                run_continuation(a->message, a->fn, a->userdata);
        else if (error && sd_bus_error_is_set(error)) {
                if (is_auth_failure(error))
                        mnd_audit_record_auth_failure(a->manager, a->message, a->action, error);
                (void) sd_bus_reply_method_error(a->message, error);
        }
        /* else the caller left the bus: nobody to answer, nothing to record. */
        sd_bus_message_unref(a->message);
        free(a);
}

static int auth_check(struct mnd_manager *m, sd_bus_message *message, const char *action, const char *what,
                      mnd_auth_continue_fn fn, void *userdata, sd_bus_error *error) {
        struct auth_pending *a;
        uid_t uid = (uid_t) -1;
        int r;

        if (m->user_bus) {
                r = check_uid(m, message, action, what, error);
                if (r < 0)
                        return r;
                r = sd_bus_message_rewind(message, true);
                if (r < 0)
                        return r;
                return fn(message, userdata, error);
        }

        /* The system bus.  Root is authorised without polkit: polkitd answers yes for uid 0 in
         * any case, and root must not lose the pens when polkitd is down.  Everyone else: polkit. */
        r = sender_bus_euid(message, &uid);
        if (r < 0)
                uid = (uid_t) -1;
        else if (uid == 0) {
                r = sd_bus_message_rewind(message, true);
                if (r < 0)
                        return r;
                return fn(message, userdata, error);
        }

        if (!m->polkit) {
                r = mnd_polkit_new(sd_bus_message_get_bus(message), &m->polkit);
                if (r < 0)
                        return log_oom();
        }
        a = calloc(1, sizeof(*a));
        if (!a)
                return log_oom();
        *a = (struct auth_pending) {
                .manager = m,
                .message = sd_bus_message_ref(message),
                .action = action,
                .fn = fn,
                .userdata = userdata,
        };
        /* (The answer may come from inside this call: a refusal that needs no polkit.) */
        r = mnd_polkit_check(m->polkit, message, action, what, uid, on_polkit_answer, a);
        if (r < 0) {
                sd_bus_message_unref(a->message);
                free(a);
                /* Never allow on error. */
                (void) mnd_polkit_decide(NULL, r, false, false, action, what, uid, false, error);
                mnd_audit_record_auth_failure(m, message, action, error);
                return -EACCES;
        }
        return 1;
}

int mnd_auth_operate(struct mnd_manager *m, sd_bus_message *message, mnd_auth_continue_fn fn, void *userdata,
                     sd_bus_error *error) {
        return auth_check(m, message, "org.microneedle.mnd.operate", "operate pens", fn, userdata, error);
}

int mnd_auth_audit(struct mnd_manager *m, sd_bus_message *message, mnd_auth_continue_fn fn, void *userdata,
                   sd_bus_error *error) {
        return auth_check(m, message, "org.microneedle.mnd.audit", "read or verify the audit log", fn, userdata,
                          error);
}

void mnd_auth_cancel_all(struct mnd_manager *m) {
        mnd_polkit_cancel_all(m->polkit);
}

void mnd_auth_done(struct mnd_manager *m) {
        m->polkit = mnd_polkit_free(m->polkit);
}
