/* SPDX-License-Identifier: GPL-2.0-or-later */
/* /org/microneedle/Mnd1: org.microneedle.Mnd1.Manager */
#include <errno.h>
#include <stdlib.h>

#include "audit-trail.h"
#include "bus-error.h"
#include "log.h"
#include "manager.h"
#include "text.h"

#ifndef MND_VERSION
#define MND_VERSION "unknown"
#endif

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", MND_VERSION);
}

static int property_get_pens(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        for (struct mnd_pen *p = m ? m->pens : NULL; p; p = p->next) {
                if (!p->path)
                        continue;
                r = sd_bus_message_append(reply, "o", p->path);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int property_get_areas(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "s");
        if (r < 0)
                return r;
        for (size_t i = 0; m && i < MNP_AREA_COUNT; i++) {
                r = sd_bus_message_append(reply, "s", m->config->limits.areas[i].id);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

static int method_get_limits(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        struct mnd_manager *m = userdata;
        struct mnp_area_limits a;
        char reason[MNP_REASON_MAX];
        const char *area;
        int r;

        r = sd_bus_message_read(message, "s", &area);
        if (r < 0)
                return r;

        /* "" asks for the global caps, which apply outside a session. */
        r = mnp_limits_effective(&m->config->limits, isempty(area) ? NULL : area, &a, reason, sizeof(reason));
        if (r < 0)
                return mnd_bus_error_set_limit(error, r, reason);

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "a{sv}", 3,
                                  "MaxDepthUm", "u", a.max_depth_um,
                                  "MaxDurationS", "u", a.max_duration_s,
                                  "MaxSpeedHz", "u", a.max_speed_hz);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_pen_by_serial(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        struct mnd_pen *pen;
        const char *serial;
        int r;

        r = sd_bus_message_read(message, "s", &serial);
        if (r < 0)
                return r;
        pen = mnd_manager_find_pen_by_serial(m, serial);
        if (!pen || !pen->path) {
                char q[MND_TEXT_QUOTE_SIZE(64)];

                return sd_bus_error_setf(error, MND_ERROR_NO_SUCH_PEN, "no pen with serial number '%s' is connected",
                                         mnd_text_quote(serial, 64, q, sizeof(q)));
        }
        return sd_bus_reply_method_return(message, "o", pen->path);
}

int mnd_bus_stop_result(sd_bus_error *error, int r, struct mnd_pen *pen) {
        switch (r) {
        case 0:
        case -ENODEV:
        case -ENOTCONN:
        case -ECANCELED:
                /* Acknowledged, or the pen is gone: a pen without its host stops when its lease runs out. */
                return 0;
        case -ETIMEDOUT:
                sd_bus_error_setf(error, MND_ERROR_TIMEOUT,
                                  "pen %s did not acknowledge the stop; lease renewal has ended, so it stops by "
                                  "itself within %u ms", pen->identity.serial,
                                  (unsigned) pen->manager->config->link.lease_ms);
                return r;
        default:
                sd_bus_error_setf(error, MND_ERROR_DEVICE_ERROR,
                                  "pen %s answered the stop with an error (%s); lease renewal has ended, so it "
                                  "stops by itself within %u ms", pen->identity.serial, strerror(ERRNO_VALUE(r)),
                                  (unsigned) pen->manager->config->link.lease_ms);
                return r;
        }
}

struct stop_all {
        sd_bus_message *message;
        unsigned pending;
        sd_bus_error error;     /* the first failure */
};

static void stop_all_unref(struct stop_all *sa) {
        if (--sa->pending > 0)
                return;
        if (sd_bus_error_is_set(&sa->error))
                (void) sd_bus_reply_method_error(sa->message, &sa->error);
        else
                (void) sd_bus_reply_method_return(sa->message, NULL);
        sd_bus_error_free(&sa->error);
        sd_bus_message_unref(sa->message);
        free(sa);
}

static void stop_all_pen_done(struct mnd_pen *pen, int error, void *userdata) {
        struct stop_all *sa = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        if (mnd_bus_stop_result(&e, error, pen) < 0 && !sd_bus_error_is_set(&sa->error))
                sd_bus_error_move(&sa->error, &e);
        stop_all_unref(sa);
}

/* Never refused: no authorisation, no busy check; acts on every pen at once.  Every pen's STOP goes
 * out first, then the sessions end (their records), then the StopAll record (never before: stopping
 * does not wait for the log). */
static int method_stop_all(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        struct stop_all *sa;
        bool active;

        active = mnd_manager_send_stop_all(m);
        log_info("StopAll from %s.", strempty(sd_bus_message_get_sender(message)));

        sa = calloc(1, sizeof(*sa));
        if (!sa) {
                /* Everything is stopped; only the wait for the acknowledgements is lost. */
                for (struct mnd_pen *p = m->pens; p; p = p->next)
                        mnd_pen_stop_finish(p, MND_SESSION_STOPPED, "stopped", NULL, NULL);
                mnd_audit_record_stop(m, message, NULL, 0, "StopAll", active);
                return sd_bus_reply_method_return(message, NULL);
        }
        sa->message = sd_bus_message_ref(message);
        sa->error = SD_BUS_ERROR_NULL;
        sa->pending = 1;
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                sa->pending++;
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                mnd_pen_stop_finish(p, MND_SESSION_STOPPED, "stopped", stop_all_pen_done, sa);
        mnd_audit_record_stop(m, message, NULL, 0, "StopAll", active);
        stop_all_unref(sa);
        return 1;
}

const sd_bus_vtable mnd_manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Pens", "ao", property_get_pens, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Areas", "as", property_get_areas, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("GetLimits",
                                SD_BUS_ARGS("s", area),
                                SD_BUS_RESULT("a{sv}", limits),
                                method_get_limits, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetPenBySerial",
                                SD_BUS_ARGS("s", serial),
                                SD_BUS_RESULT("o", pen),
                                method_get_pen_by_serial, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StopAll",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_stop_all, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("PenAdded", SD_BUS_ARGS("o", pen), 0),
        SD_BUS_SIGNAL_WITH_ARGS("PenRemoved", SD_BUS_ARGS("o", pen), 0),
        SD_BUS_VTABLE_END
};

int mnd_bus_manager_emit_pen_added(struct mnd_manager *m, const char *path) {
        if (!m->bus)
                return 0;
        return sd_bus_emit_signal(m->bus, MND_MANAGER_PATH, MND_MANAGER_INTERFACE, "PenAdded", "o", path);
}

int mnd_bus_manager_emit_pen_removed(struct mnd_manager *m, const char *path) {
        if (!m->bus)
                return 0;
        return sd_bus_emit_signal(m->bus, MND_MANAGER_PATH, MND_MANAGER_INTERFACE, "PenRemoved", "o", path);
}

int mnd_bus_manager_emit_pens_changed(struct mnd_manager *m) {
        if (!m->bus)
                return 0;
        return sd_bus_emit_properties_changed(m->bus, MND_MANAGER_PATH, MND_MANAGER_INTERFACE, "Pens", NULL);
}
