/* SPDX-License-Identifier: GPL-2.0-or-later */
/* /org/microneedle/Mnd1/session/N: org.microneedle.Mnd1.Session */
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "manager.h"

#define SESSION_OF(userdata) ((struct mnd_session *) (userdata))

static int property_get_id(sd_bus *bus, const char *path, const char *interface, const char *property,
                           sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "t", userdata ? SESSION_OF(userdata)->id : UINT64_C(0));
}

static int property_get_pen(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "o", userdata ? SESSION_OF(userdata)->pen_path : "/");
}

static int property_get_string(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_session *s = userdata;
        const char *v = "";

        if (s) {
                if (streq(property, "PenSerial"))
                        v = s->pen_serial;
                else if (streq(property, "Area"))
                        v = s->area;
                else if (streq(property, "Operator"))
                        v = s->operator_name;
                else if (streq(property, "PatientRef"))
                        v = s->patient_ref;
                else if (streq(property, "Cartridge"))
                        v = s->cartridge;
                else if (streq(property, "State"))
                        v = mnd_session_state_name(s->state);
                else if (streq(property, "EndReason"))
                        v = s->end_reason;
        }
        return sd_bus_message_append(reply, "s", v);
}

static int property_get_time(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_session *s = userdata;
        uint64_t v = 0;

        if (s) {
                if (streq(property, "StartedAt"))
                        v = s->started_at;
                else if (streq(property, "EndedAt"))
                        v = s->ended_at;
                else if (streq(property, "ElapsedMs"))
                        v = s->elapsed_ms;
        }
        return sd_bus_message_append(reply, "t", v);
}

static int property_get_u(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_session *s = userdata;
        uint32_t v = 0;

        if (s) {
                if (streq(property, "PlannedDurationS"))
                        v = s->planned_duration_s;
                else if (streq(property, "DepthUm"))
                        v = s->depth_um;
                else if (streq(property, "SpeedHz"))
                        v = s->speed_hz;
        }
        return sd_bus_message_append(reply, "u", v);
}

const sd_bus_vtable mnd_session_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "t", property_get_id, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Pen", "o", property_get_pen, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PenSerial", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Area", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Operator", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("PatientRef", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Cartridge", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StartedAt", "t", property_get_time, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("EndedAt", "t", property_get_time, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("PlannedDurationS", "u", property_get_u, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ElapsedMs", "t", property_get_time, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DepthUm", "u", property_get_u, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SpeedHz", "u", property_get_u, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("EndReason", "s", property_get_string, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_VTABLE_END
};

int mnd_bus_session_publish(struct mnd_manager *m, struct mnd_session *s) {
        int r;

        s->manager = m;
        if (!m->bus || s->slot)
                return 0;
        r = sd_bus_add_object_vtable(m->bus, &s->slot, s->path, MND_SESSION_INTERFACE, mnd_session_vtable, s);
        if (r < 0)
                return log_error_errno(r, "Cannot publish %s: %m", s->path);
        (void) sd_bus_emit_object_added(m->bus, s->path);
        return 0;
}

void mnd_bus_session_unpublish(struct mnd_session *s) {
        if (!s->slot)
                return;
        if (s->manager && s->manager->bus)
                (void) sd_bus_emit_object_removed(s->manager->bus, s->path);
        s->slot = sd_bus_slot_unref(s->slot);
}

void mnd_bus_session_emit_changed(struct mnd_session *s, unsigned changes) {
        const char *names[8];
        size_t n = 0;
        int r;

        if (!s->slot || !s->manager || !s->manager->bus)
                return;
        if (changes & MND_SESSION_CHANGED_STATE) {
                names[n++] = "State";
                names[n++] = "EndedAt";
                names[n++] = "EndReason";
        }
        if (changes & MND_SESSION_CHANGED_ELAPSED)
                names[n++] = "ElapsedMs";
        if (changes & MND_SESSION_CHANGED_DEPTH)
                names[n++] = "DepthUm";
        if (changes & MND_SESSION_CHANGED_SPEED)
                names[n++] = "SpeedHz";
        if (n == 0)
                return;
        names[n] = NULL;
        r = sd_bus_emit_properties_changed_strv(s->manager->bus, s->path, MND_SESSION_INTERFACE, (char **) names);
        if (r < 0)
                log_debug_errno(r, "Cannot emit PropertiesChanged for %s: %m", s->path);
}
