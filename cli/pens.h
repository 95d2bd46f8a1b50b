/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Pens and sessions as mnctl sees them on the bus, and PEN arguments. */
#pragma once

#include <stdint.h>

#include "bus.h"
#include <mnp/limits.h>

struct mnctl_pen {
        char *path;
        char *serial, *model, *firmware, *transport, *state, *cartridge, *session, *fault;
        uint32_t depth_um, speed_hz, actual_depth_um, actual_speed_hz;
        uint32_t depth_range[3];        /* min, max, step */
        uint32_t speed_range[2];        /* min, max */
        uint8_t battery;                /* 255: mains powered or unknown */
};

struct mnctl_session {
        char *path;
        uint64_t id;
        char *pen, *pen_serial, *area, *operator_name, *patient_ref, *cartridge, *state, *end_reason;
        uint64_t started_at, ended_at, elapsed_ms;
        uint32_t planned_duration_s, depth_um, speed_hz;
};

extern const struct mnctl_prop mnctl_pen_props[];
extern const struct mnctl_prop mnctl_session_props[];

void mnctl_pen_clear(struct mnctl_pen *p);
void mnctl_session_clear(struct mnctl_session *s);
static inline void mnctl_pen_clearp(struct mnctl_pen *p) {
        mnctl_pen_clear(p);
}
static inline void mnctl_session_clearp(struct mnctl_session *s) {
        mnctl_session_clear(s);
}

/* The pen's ranges in libmnp's form, for mnp_check_depth/speed. */
void mnctl_pen_range(const struct mnctl_pen *p, struct mnp_pen_range *ret);

/* True while a session is running on the pen (Session is not "/"). */
bool mnctl_pen_has_session(const struct mnctl_pen *p);

/*
 * Whether the pen's ranges are known: it is past "connecting" and has
 * reported a depth step and a speed maximum (until then they read as zeros).
 */
bool mnctl_pen_ranges_known(const struct mnctl_pen *p);

/*
 * mnctl's check of a depth (depth true) or a speed before it asks the
 * daemon: mnp_check_depth or mnp_check_speed with the pen's ranges, in the
 * area's caps (area NULL, or an area libmnp does not know: the global caps
 * only).  While the pen's ranges are not known (mnctl_pen_ranges_known),
 * the pen's part is left out: only the caps are checked, and the daemon
 * answers for the pen (NotConnected, Busy), as it is the one that knows.
 * Returns what mnp_check_* returns, with its sentence in reason.
 */
int mnctl_check_setpoint(const struct mnp_limits *l, const struct mnctl_pen *p, const char *area, bool depth,
                         uint32_t value, char *reason, size_t size);

/*
 * Which pen a PEN argument means, among the connected pens' serial numbers
 * (NULL-terminated).  arg NULL: the only pen.  Otherwise an exact match
 * wins, then a unique prefix (ignoring ASCII case).
 * Returns 0 and the index, -ENODEV (no pen, or none matches) or -ENOTUNIQ
 * (arg NULL with several pens, or a prefix of several serials).
 */
int mnctl_pen_resolve(const char *const *serials, const char *arg, size_t *ret_index);
/* The same, with the prefix matched case-sensitively unless ignore_case (serials are case-sensitive). */
int mnctl_pen_resolve_full(const char *const *serials, const char *arg, bool ignore_case, size_t *ret_index);
/* Whether serial starts with prefix (ignoring ASCII case if ignore_case). */
bool mnctl_pen_prefix_matches(const char *serial, const char *prefix, bool ignore_case);
/* The sentence for a failed mnctl_pen_resolve (r is what it returned); NULL on OOM. */
char *mnctl_pen_resolve_message(int r, const char *arg, const char *const *serials);
/* The same for mnctl_pen_resolve_full. */
char *mnctl_pen_resolve_message_full(int r, const char *arg, const char *const *serials, bool ignore_case);

/* The serial number in a pen's object path; NULL if it is not one (or OOM). */
char *mnctl_pen_serial_from_path(const char *path);

/* The connected pens: their object paths and serial numbers, in the daemon's order. */
int mnctl_list_pens(struct mnctl *c, char ***ret_paths, char ***ret_serials);
/* Resolves a PEN argument (NULL: the only pen) to its object path; records exit 3 or 2 on failure. */
int mnctl_find_pen(struct mnctl *c, const char *arg, char **ret_path, char **ret_serial);
int mnctl_load_pen(struct mnctl *c, const char *path, struct mnctl_pen *ret);
int mnctl_load_session(struct mnctl *c, const char *path, struct mnctl_session *ret);
