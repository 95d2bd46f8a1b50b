/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmnp safety limits: the one table of caps that the CLI, the daemon and the
 * pen firmware all check against.  Pure functions, no allocation, no I/O.
 * Every check returns 0 or a negative errno and, on refusal, a sentence a
 * person can act on in reason (always NUL-terminated when size > 0).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Absolute caps, whatever any table or configuration says (domain.md). */
#define MNP_ABS_MAX_DEPTH_UM     3000u
#define MNP_ABS_MAX_SPEED_HZ     300u
#define MNP_ABS_MAX_DURATION_S   3600u

#define MNP_AREA_COUNT 11
#define MNP_AREA_ID_MAX 16     /* longest area id including NUL */
#define MNP_REASON_MAX 160     /* a reason buffer of this size is never truncated */

struct mnp_area_limits {
        char id[MNP_AREA_ID_MAX];       /* "forehead" */
        uint32_t max_depth_um;
        uint32_t max_speed_hz;
        uint32_t max_duration_s;
};

struct mnp_limits {
        /* Global caps (start at the absolute caps, may only be lowered). */
        uint32_t max_depth_um;
        uint32_t max_speed_hz;
        uint32_t max_duration_s;
        struct mnp_area_limits areas[MNP_AREA_COUNT];
};

/* The pen's own ranges as it reports them in its HELLO_REPLY. */
struct mnp_pen_range {
        uint32_t depth_min_um, depth_max_um, depth_step_um;
        uint32_t speed_min_hz, speed_max_hz;
};

/* The shipped table of domain.md. */
void mnp_limits_init(struct mnp_limits *l);

/* NULL if the area id is unknown. */
const struct mnp_area_limits *mnp_limits_area(const struct mnp_limits *l, const char *area);

/*
 * The effective caps for an area: the area's caps, lowered further by the
 * global caps.  Returns 0, or -ENOENT (with reason) for an unknown area.
 * area == NULL gives the global caps (id ""), as outside a session.
 */
int mnp_limits_effective(const struct mnp_limits *l, const char *area,
                         struct mnp_area_limits *ret, char *reason, size_t size);

/*
 * Applies one configuration entry, as an INI parser hands it over:
 *   section "limits":      keys max_depth_um, max_speed_hz, max_duration_s (global caps)
 *   section "area.<id>":   the same keys for one area
 * Values are unsigned decimal integers in the unit the key names.
 * A value above the cap in force is refused (a configuration may only lower
 * caps); so are unknown sections, areas and keys and malformed numbers.
 * Returns 0 or -EINVAL/-ERANGE/-ENOENT; reason starts with "line N: " when
 * line > 0.  On error *l is unchanged.
 *   -ENOENT   unknown section, unknown area in "area.<id>", unknown key
 *             (names and ids are matched exactly, case-sensitively)
 *   -EINVAL   malformed value (anything but 1+ digits: empty, sign, spaces,
 *             hex, exponent, trailing garbage) or a value above UINT32_MAX;
 *             a zero max_speed_hz or max_duration_s (it would forbid every
 *             session; a zero max_depth_um is allowed); NULL arguments
 *   -ERANGE   a raise: the value is above the cap it would replace (the
 *             global cap for [limits], the area's own cap for [area.<id>],
 *             so the order of the sections does not matter)
 */
int mnp_limits_apply(struct mnp_limits *l, const char *section, const char *key, const char *value,
                     unsigned line, char *reason, size_t size);

/*
 * The checks.  pen may be NULL (no pen ranges known, e.g. in the CLI), area
 * may be NULL (outside a session: only the global caps and the pen apply).
 * Return values:
 *   0         allowed
 *   -ERANGE   above (or below) a cap; reason names the value and the cap
 *   -EDOM     depth not a multiple of the pen's step (refused, never rounded)
 *   -ENOENT   unknown area
 *   -EINVAL   a zero duration or a zero step reported by the pen (or l == NULL)
 * Order: unknown area first, then (depth) a zero step and the step rule,
 * then the caps.  Of the caps that apply (absolute, pen maximum, area,
 * clinic/global) the tightest is named; on a tie the more fundamental one
 * (absolute, then pen, then area, then clinic).  Below the pen's minimum is
 * checked after the upper caps.  Without a pen, a speed of 0 Hz passes.
 * On success reason is set to "" (when size > 0).
 */
int mnp_check_depth(const struct mnp_limits *l, const struct mnp_pen_range *pen, const char *area,
                    uint32_t depth_um, char *reason, size_t size);
int mnp_check_speed(const struct mnp_limits *l, const struct mnp_pen_range *pen, const char *area,
                    uint32_t speed_hz, char *reason, size_t size);
int mnp_check_duration(const struct mnp_limits *l, const char *area, uint32_t duration_s,
                       char *reason, size_t size);

/* Formats micrometres as millimetres with two decimals ("0.75 mm"), or three when needed ("0.333 mm").
 * Returns buf ("" when buf is NULL or size is 0); 16 bytes always suffice. */
const char *mnp_format_depth(uint32_t depth_um, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
