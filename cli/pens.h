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
 * Which pen a PEN argument means, among the connected pens' serial numbers
 * (NULL-terminated).  arg NULL: the only pen.  Otherwise an exact match
 * wins, then a unique prefix (ignoring ASCII case).
 * Returns 0 and the index, -ENODEV (no pen, or none matches) or -ENOTUNIQ
 * (arg NULL with several pens, or a prefix of several serials).
 */
int mnctl_pen_resolve(const char *const *serials, const char *arg, size_t *ret_index);
/* The sentence for a failed mnctl_pen_resolve (r is what it returned); NULL on OOM. */
char *mnctl_pen_resolve_message(int r, const char *arg, const char *const *serials);

/* The serial number in a pen's object path; NULL if it is not one (or OOM). */
char *mnctl_pen_serial_from_path(const char *path);

/* The connected pens: their object paths and serial numbers, in the daemon's order. */
int mnctl_list_pens(struct mnctl *c, char ***ret_paths, char ***ret_serials);
/* Resolves a PEN argument (NULL: the only pen) to its object path; records exit 3 or 2 on failure. */
int mnctl_find_pen(struct mnctl *c, const char *arg, char **ret_path, char **ret_serial);
int mnctl_load_pen(struct mnctl *c, const char *path, struct mnctl_pen *ret);
int mnctl_load_session(struct mnctl *c, const char *path, struct mnctl_session *ret);
