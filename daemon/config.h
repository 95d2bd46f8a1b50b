/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnd.conf: the daemon's configuration, an INI file parsed with inih.
 *
 *   [daemon]  state_directory = PATH
 *   [link]    heartbeat_ms, lease_ms, retransmit_ms, retries, peer_timeout_ms
 *   [pens]    usb = VID:PID, serial = VID:PID (hex, repeatable)
 *   [limits] and [area.<id>]: max_depth_um, max_speed_hz, max_duration_s
 *             (handed to mnp_limits_apply: a configuration may only lower caps)
 *   [audit]   max_size_mb = N (1..1048576; unset: no cap but the disk's): the audit
 *             database may not grow beyond, appends then fail as on a full disk
 *
 * Any problem (unknown section or key, a malformed value, a raise) is fatal
 * and reported as "FILE:LINE: problem".
 */
#pragma once

#include <stdbool.h>

#include "discovery.h"
#include <mnp/limits.h>
#include "pen-link.h"

#define MND_CONFIG_DEFAULT_PATH "/etc/mnd/mnd.conf"
#define MND_STATE_DIRECTORY_DEFAULT "/var/lib/mnd"

/* Upper bounds for [link] values: a pen must stop within 300 ms of a dead host. */
#define MND_LINK_LEASE_MS_MAX 1000u
#define MND_LINK_SAFE_STOP_MS 300u

struct mnd_config {
        char *path;                     /* the file loaded; NULL: none (the defaults) */
        char *state_directory;
        uint64_t audit_max_size;        /* bytes; 0: no cap */
        struct mnd_link_settings link;
        struct mnd_id_table ids;
        struct mnp_limits limits;
};

/* The defaults: no file at all. */
int mnd_config_init(struct mnd_config *c);
void mnd_config_done(struct mnd_config *c);

/*
 * Parses path into c (which mnd_config_init() prepared).  A missing file is
 * fine when must_exist is false (the defaults stay).  On failure returns a
 * negative errno and, in *ret_error, a malloc'd "FILE:LINE: problem" (or
 * "FILE: problem") sentence; c may then be partly changed and is only good
 * for mnd_config_done().  Warnings (settings that work but are not
 * recommended) are logged.
 */
int mnd_config_load(struct mnd_config *c, const char *path, bool must_exist, char **ret_error);

/* Checks [link] values against each other; 0, or -EINVAL with a reason. */
int mnd_link_settings_check(const struct mnd_link_settings *s, char *reason, size_t size);
