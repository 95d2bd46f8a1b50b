/* SPDX-License-Identifier: GPL-2.0-or-later */
/* limits, and the limits every other command checks against before it calls. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "units.h"

struct caps {
        uint32_t depth_um, speed_hz, duration_s;
};

static const struct mnctl_prop caps_props[] = {
        { "MaxDepthUm",   "u", offsetof(struct caps, depth_um) },
        { "MaxSpeedHz",   "u", offsetof(struct caps, speed_hz) },
        { "MaxDurationS", "u", offsetof(struct caps, duration_s) },
        {}
};

static int get_caps(struct mnctl *c, const char *area, struct caps *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = mnctl_call(c, MND_MANAGER_PATH, MND_MANAGER_IFACE, "GetLimits", "cannot read the limits",
                       &reply, "s", area);
        if (r < 0)
                return r;
        /* A cap the daemon leaves out stays at the absolute cap. */
        *ret = (struct caps) { MNP_ABS_MAX_DEPTH_UM, MNP_ABS_MAX_SPEED_HZ, MNP_ABS_MAX_DURATION_S };
        r = mnctl_read_props(reply, caps_props, ret);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "cannot read the limits mnd sent for '%s': %s", area, strerror(-r));
        return 0;
}

/* Lowers the caps of a section ("limits" or "area.<id>") with libmnp's own rules. */
static void apply_caps(struct mnp_limits *l, const char *section, const struct caps *caps) {
        static const char *const keys[] = { "max_depth_um", "max_speed_hz", "max_duration_s" };
        const uint32_t values[] = { caps->depth_um, caps->speed_hz, caps->duration_s };
        char value[16], reason[MNP_REASON_MAX];

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                snprintf(value, sizeof(value), "%u", values[i]);
                /* A refusal means the daemon allows more than this table: keep the stricter value. */
                (void) mnp_limits_apply(l, section, keys[i], value, 0, reason, sizeof(reason));
        }
}

int mnctl_load_limits(struct mnctl *c, const char *area, struct mnp_limits *ret) {
        struct caps global, caps;
        int r;

        mnp_limits_init(ret);
        r = get_caps(c, "", &global);
        if (r < 0)
                return r;
        apply_caps(ret, "limits", &global);

        if (!area)
                return 0;
        r = get_caps(c, area, &caps);
        if (r < 0)
                return r;
        if (mnp_limits_area(ret, area)) {
                _cleanup_(freep) char *section = NULL;
                struct caps own = caps;

                /*
                 * GetLimits gives the area's effective caps, already lowered by the clinic's global
                 * ones.  Only a cap below the global one is the area's own: one that equals it is the
                 * clinic's, and lowering the area's entry to it would make the two tie, so that
                 * libmnp names the area where the daemon names the clinic ("exceeds the clinic's
                 * cap").  Such a cap is left at libmnp's table here (a raise, which apply_caps
                 * ignores).  The one case this cannot tell apart: a configuration that lowers an
                 * area to exactly the global cap (the daemon then names the area, mnctl the clinic).
                 */
                if (own.depth_um >= global.depth_um)
                        own.depth_um = UINT32_MAX;
                if (own.speed_hz >= global.speed_hz)
                        own.speed_hz = UINT32_MAX;
                if (own.duration_s >= global.duration_s)
                        own.duration_s = UINT32_MAX;
                if (asprintf(&section, "area.%s", area) < 0)
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                apply_caps(ret, section, &own);
        } else
                /* An area this libmnp does not know (a newer daemon): its caps still bind, as global ones. */
                apply_caps(ret, "limits", &caps);
        return 0;
}

int mnctl_fail_limit(struct mnctl *c, int r, const char *reason) {
        const char *name = r == -ERANGE ? MND_ERROR_PREFIX "LimitExceeded" :
                           r == -ENOENT ? MND_ERROR_PREFIX "NoSuchArea" :
                                          MND_ERROR_PREFIX "InvalidArgument";

        return mnctl_fail(c, r, MNCTL_EXIT_REFUSED, name, "%s", reason);
}

static void json_caps(struct json *j, const char *area, const struct caps *caps) {
        json_object_begin(j);
        if (area)
                json_kv_string(j, "area", area);
        json_kv_uint(j, "max_depth_um", caps->depth_um);
        json_kv_uint(j, "max_speed_hz", caps->speed_hz);
        json_kv_uint(j, "max_duration_s", caps->duration_s);
        json_object_end(j);
}

static int add_caps_row(struct table *t, const char *area, const struct caps *caps) {
        char depth[16], speed[16], duration[32];

        snprintf(speed, sizeof(speed), "%u Hz", caps->speed_hz);
        return table_add_row(t, (const char *const[]) {
                area, mnp_format_depth(caps->depth_um, depth, sizeof(depth)), speed,
                mnctl_format_duration(caps->duration_s, duration, sizeof(duration)) });
}

int cmd_limits(struct mnctl *c, const struct mnctl_args *a) {
        static const char *const headers[] = { "AREA", "MAX DEPTH", "MAX SPEED", "MAX DURATION", NULL };
        _cleanup_(strv_freep) char **areas = NULL;
        _cleanup_(table_freep) struct table *t = NULL;
        _cleanup_(freep) struct caps *caps = NULL;
        char *const *list;
        struct caps global;
        size_t n;
        int r;

        /* --areas is what the shell completion asks: it never starts mnd, nor waits long for it. */
        c->quick = a->set[OPT_AREAS];
        r = mnctl_get_property_strv(c, MND_MANAGER_PATH, MND_MANAGER_IFACE, "Areas", "cannot read the treatment areas",
                                    &areas);
        if (r < 0)
                return r;

        if (a->set[OPT_AREAS]) {
                if (c->json) {
                        struct json j;

                        json_init(&j, stdout, true);
                        json_object_begin(&j);
                        json_key(&j, "areas");
                        json_array_begin(&j);
                        for (char **s = areas; s && *s; s++)
                                json_string(&j, *s);
                        json_array_end(&j);
                        json_object_end(&j);
                        json_finish(&j);
                } else
                        for (char **s = areas; s && *s; s++)
                                printf("%s\n", *s);
                return 0;
        }

        /* One area: the daemon names the problem if it does not know it (NoSuchArea, exit 4). */
        list = a->npos > 0 ? (char *const[]) { a->pos[0], NULL } : areas;
        n = strv_length(list);

        r = get_caps(c, "", &global);
        if (r < 0)
                return r;
        caps = calloc(n + 1, sizeof(struct caps));
        if (!caps)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        for (size_t i = 0; i < n; i++) {
                r = get_caps(c, list[i], &caps[i]);
                if (r < 0)
                        return r;
        }

        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_key(&j, "global");
                json_caps(&j, NULL, &global);
                json_key(&j, "areas");
                json_array_begin(&j);
                for (size_t i = 0; i < n; i++)
                        json_caps(&j, list[i], &caps[i]);
                json_array_end(&j);
                json_object_end(&j);
                json_finish(&j);
                return 0;
        }

        t = table_new(headers);
        if (!t)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        r = add_caps_row(t, "(no area)", &global);
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = add_caps_row(t, list[i], &caps[i]);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        table_print(t, stdout, c->color);
        return 0;
}
