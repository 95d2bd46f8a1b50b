/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <unistd.h>

#include "audit-trail.h"
#include "auth.h"
#include "log.h"
#include "manager.h"

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

        if (m->user_bus) {
                /* The session bus (demos and tests): the user who runs the daemon. */
                if (uid == m->owner_uid)
                        return 0;
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "only user %u, who runs this daemon, may %s (you are user %u)",
                                  (unsigned) m->owner_uid, what, (unsigned) uid);
                return -EACCES;
        }

        /*
         * The system bus: the polkit action (org.microneedle.mnd.operate)
         * arrives with the later polkit issue; until then only root may
         * operate.  This is deliberate, not a stub: without polkit there is
         * no policy that could let anyone else in safely.
         */
        if (uid == 0)
                return 0;
        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                          "only root may %s until polkit authorisation (%s) is available (you are user %u)",
                          what, action, (unsigned) uid);
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

int mnd_auth_operate(struct mnd_manager *m, sd_bus_message *message, sd_bus_error *error) {
        return check_uid(m, message, "org.microneedle.mnd.operate", "operate pens", error);
}

int mnd_auth_audit(struct mnd_manager *m, sd_bus_message *message, sd_bus_error *error) {
        /* Until polkit lands, the same rule as operate (see check_uid_internal). */
        return check_uid(m, message, "org.microneedle.mnd.audit", "read or verify the audit log", error);
}
