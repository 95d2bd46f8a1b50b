/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl's unit syntax: depths, durations and speeds as a person types them,
 * parsed with exact integer arithmetic (a value is never rounded).
 *
 *   depth     0.5mm, 500um (also µm), 3.01mm; a bare number is millimetres.
 *             At most a whole micrometre: 0.333mm is 333 um, 0.3333mm is an error.
 *   duration  90s, 20m, 20min, 1h, 1h30m, 2m30s; a bare number is seconds.
 *             Whole numbers only (1.5h is an error: write 1h30m).
 *   speed     120, 120hz, 120Hz: strokes per second, whole numbers only.
 *
 * Each parser returns 0, or -EINVAL (malformed) / -ERANGE (does not fit
 * 32 bits) with a sentence naming the input in reason (NUL-terminated when
 * size > 0).  The values are not checked against any limit here; that is
 * libmnp's job (mnp_check_*).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define MNCTL_REASON_MAX 256

int mnctl_parse_depth(const char *s, uint32_t *ret_um, char *reason, size_t size);
int mnctl_parse_duration(const char *s, uint32_t *ret_s, char *reason, size_t size);
int mnctl_parse_speed(const char *s, uint32_t *ret_hz, char *reason, size_t size);

/* "1h 30m", "20m", "1m 30s", "45s", "0s".  32 bytes always suffice. */
const char *mnctl_format_duration(uint64_t seconds, char *buf, size_t size);
/* "m:ss", or "h:mm:ss" from an hour on.  32 bytes always suffice. */
const char *mnctl_format_clock(uint64_t seconds, char *buf, size_t size);
