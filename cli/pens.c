/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "pens.h"

#define PEN(field) offsetof(struct mnctl_pen, field)
const struct mnctl_prop mnctl_pen_props[] = {
        { "Serial",         "s",     PEN(serial) },
        { "Model",          "s",     PEN(model) },
        { "Firmware",       "s",     PEN(firmware) },
        { "Transport",      "s",     PEN(transport) },
        { "State",          "s",     PEN(state) },
        { "DepthUm",        "u",     PEN(depth_um) },
        { "SpeedHz",        "u",     PEN(speed_hz) },
        { "ActualDepthUm",  "u",     PEN(actual_depth_um) },
        { "ActualSpeedHz",  "u",     PEN(actual_speed_hz) },
        { "DepthRangeUm",   "(uuu)", PEN(depth_range) },
        { "SpeedRangeHz",   "(uu)",  PEN(speed_range) },
        { "Cartridge",      "s",     PEN(cartridge) },
        { "BatteryPercent", "y",     PEN(battery) },
        { "Session",        "o",     PEN(session) },
        { "Fault",          "s",     PEN(fault) },
        {}
};

#define SESSION(field) offsetof(struct mnctl_session, field)
const struct mnctl_prop mnctl_session_props[] = {
        { "Id",               "t", SESSION(id) },
        { "Pen",              "o", SESSION(pen) },
        { "PenSerial",        "s", SESSION(pen_serial) },
        { "Area",             "s", SESSION(area) },
        { "Operator",         "s", SESSION(operator_name) },
        { "PatientRef",       "s", SESSION(patient_ref) },
        { "Cartridge",        "s", SESSION(cartridge) },
        { "State",            "s", SESSION(state) },
        { "StartedAt",        "t", SESSION(started_at) },
        { "EndedAt",          "t", SESSION(ended_at) },
        { "PlannedDurationS", "u", SESSION(planned_duration_s) },
        { "ElapsedMs",        "t", SESSION(elapsed_ms) },
        { "DepthUm",          "u", SESSION(depth_um) },
        { "SpeedHz",          "u", SESSION(speed_hz) },
        { "EndReason",        "s", SESSION(end_reason) },
        {}
};

void mnctl_pen_clear(struct mnctl_pen *p) {
        mnctl_props_free(mnctl_pen_props, p);
        free(p->path);
        *p = (struct mnctl_pen) {};
}

void mnctl_session_clear(struct mnctl_session *s) {
        mnctl_props_free(mnctl_session_props, s);
        free(s->path);
        *s = (struct mnctl_session) {};
}

void mnctl_pen_range(const struct mnctl_pen *p, struct mnp_pen_range *ret) {
        *ret = (struct mnp_pen_range) {
                .depth_min_um = p->depth_range[0],
                .depth_max_um = p->depth_range[1],
                .depth_step_um = p->depth_range[2],
                .speed_min_hz = p->speed_range[0],
                .speed_max_hz = p->speed_range[1],
        };
}

bool mnctl_pen_has_session(const struct mnctl_pen *p) {
        return !isempty(p->session) && !streq(p->session, "/");
}

bool mnctl_pen_ranges_known(const struct mnctl_pen *p) {
        return !streq_ptr(p->state, "connecting") && p->depth_range[2] > 0 && p->speed_range[1] > 0;
}

int mnctl_check_setpoint(const struct mnp_limits *l, const struct mnctl_pen *p, const char *area, bool depth,
                         uint32_t value, char *reason, size_t size) {
        struct mnp_pen_range range;
        const struct mnp_pen_range *pen = NULL;

        if (area && !mnp_limits_area(l, area))
                area = NULL;
        if (mnctl_pen_ranges_known(p)) {
                mnctl_pen_range(p, &range);
                pen = &range;
        }
        return depth ? mnp_check_depth(l, pen, area, value, reason, size) :
                       mnp_check_speed(l, pen, area, value, reason, size);
}

static size_t count(const char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

bool mnctl_pen_prefix_matches(const char *serial, const char *prefix, bool ignore_case) {
        size_t n = strlen(prefix);

        return ignore_case ? strncasecmp(serial, prefix, n) == 0 : strncmp(serial, prefix, n) == 0;
}

int mnctl_pen_resolve(const char *const *serials, const char *arg, size_t *ret_index) {
        return mnctl_pen_resolve_full(serials, arg, true, ret_index);
}

int mnctl_pen_resolve_full(const char *const *serials, const char *arg, bool ignore_case, size_t *ret_index) {
        size_t n = count(serials), found = SIZE_MAX, matches = 0;

        if (!arg) {
                if (n == 0)
                        return -ENODEV;
                if (n > 1)
                        return -ENOTUNIQ;
                *ret_index = 0;
                return 0;
        }
        if (isempty(arg))
                return -ENODEV;

        for (size_t i = 0; i < n; i++)
                if (streq(serials[i], arg)) {
                        *ret_index = i;
                        return 0;
                }
        for (size_t i = 0; i < n; i++)
                if (mnctl_pen_prefix_matches(serials[i], arg, ignore_case)) {
                        found = i;
                        matches++;
                }
        if (matches == 0)
                return -ENODEV;
        if (matches > 1)
                return -ENOTUNIQ;
        *ret_index = found;
        return 0;
}

/* "MNU-0001, MNS-0001" (the matching ones only when prefix is set). */
static void list_serials(FILE *f, const char *const *serials, const char *prefix, bool ignore_case) {
        bool first = true;

        for (const char *const *s = serials; s && *s; s++) {
                if (prefix && !mnctl_pen_prefix_matches(*s, prefix, ignore_case))
                        continue;
                fprintf(f, "%s%s", first ? "" : ", ", *s);
                first = false;
        }
}

char *mnctl_pen_resolve_message(int r, const char *arg, const char *const *serials) {
        return mnctl_pen_resolve_message_full(r, arg, serials, true);
}

char *mnctl_pen_resolve_message_full(int r, const char *arg, const char *const *serials, bool ignore_case) {
        _cleanup_(fclosep) FILE *f = NULL;
        char *buf = NULL;
        size_t size = 0, n = count(serials);

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;

        if (r == -ENOTUNIQ && !arg) {
                fprintf(f, "%zu pens are connected; name one by its serial number or a unique prefix of it (", n);
                list_serials(f, serials, NULL, ignore_case);
                fputs(")", f);
        } else if (r == -ENOTUNIQ) {
                fprintf(f, "'%s' matches more than one pen (", arg);
                list_serials(f, serials, arg, ignore_case);
                fputs("); give more of the serial number", f);
        } else if (n == 0 && !arg)
                fputs("no pen is connected", f);
        else if (n == 0)
                fprintf(f, "no pen '%s' is connected (no pens are connected)", arg);
        else {
                fprintf(f, "no connected pen matches '%s' (pens: ", arg);
                list_serials(f, serials, NULL, ignore_case);
                fputs(")", f);
        }

        if (fclose(TAKE_PTR(f)) < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

char *mnctl_pen_serial_from_path(const char *path) {
        char *label = NULL;

        if (sd_bus_path_decode(path, MND_PEN_PREFIX, &label) <= 0)
                return NULL;
        return label;
}

int mnctl_list_pens(struct mnctl *c, char ***ret_paths, char ***ret_serials) {
        _cleanup_(strv_freep) char **paths = NULL, **serials = NULL;
        size_t n;
        int r;

        r = mnctl_get_property_strv(c, MND_MANAGER_PATH, MND_MANAGER_IFACE, "Pens", "cannot list the pens", &paths);
        if (r < 0)
                return r;

        n = strv_length(paths);
        serials = calloc(n + 1, sizeof(char *));
        if (!serials)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        for (size_t i = 0; i < n; i++) {
                serials[i] = mnctl_pen_serial_from_path(paths[i]);
                /* Not a pen path (it should not happen): show the path rather than nothing. */
                if (!serials[i])
                        serials[i] = strdup(paths[i]);
                if (!serials[i])
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        }

        if (ret_paths)
                *ret_paths = TAKE_PTR(paths);
        if (ret_serials)
                *ret_serials = TAKE_PTR(serials);
        return 0;
}

int mnctl_find_pen(struct mnctl *c, const char *arg, char **ret_path, char **ret_serial) {
        _cleanup_(strv_freep) char **paths = NULL, **serials = NULL;
        _cleanup_(freep) char *message = NULL;
        size_t i;
        int r;

        r = mnctl_list_pens(c, &paths, &serials);
        if (r < 0)
                return r;

        r = mnctl_pen_resolve((const char *const *) serials, arg, &i);
        if (r < 0) {
                message = mnctl_pen_resolve_message(r, arg, (const char *const *) serials);
                if (r == -ENOTUNIQ)
                        return mnctl_fail(c, r, MNCTL_EXIT_USAGE, MNCTL_ERROR_AMBIGUOUS_PEN, "%s",
                                          message ?: "more than one pen matches");
                return mnctl_fail(c, r, MNCTL_EXIT_NO_PEN, MND_ERROR_PREFIX "NoSuchPen", "%s",
                                  message ?: "no such pen");
        }

        if (ret_path) {
                *ret_path = strdup(paths[i]);
                if (!*ret_path)
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        }
        if (ret_serial) {
                *ret_serial = strdup(serials[i]);
                if (!*ret_serial) {
                        if (ret_path)
                                *ret_path = mfree(*ret_path);
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                }
        }
        return 0;
}

int mnctl_load_pen(struct mnctl *c, const char *path, struct mnctl_pen *ret) {
        int r;

        *ret = (struct mnctl_pen) { .battery = 255 };
        ret->path = strdup(path);
        if (!ret->path)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        r = mnctl_get_all(c, path, MND_PEN_IFACE, mnctl_pen_props, ret);
        if (r < 0)
                mnctl_pen_clear(ret);
        return r;
}

int mnctl_load_session(struct mnctl *c, const char *path, struct mnctl_session *ret) {
        int r;

        *ret = (struct mnctl_session) {};
        ret->path = strdup(path);
        if (!ret->path)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        r = mnctl_get_all(c, path, MND_SESSION_IFACE, mnctl_session_props, ret);
        if (r < 0)
                mnctl_session_clear(ret);
        return r;
}
