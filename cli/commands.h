/* SPDX-License-Identifier: GPL-2.0-or-later */
/* mnctl's commands and their parsed arguments. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <mnp/limits.h>
#include "mnctl.h"
#include "output.h"
#include "pens.h"

enum mnctl_opt {
        OPT_HELP,
        OPT_VERSION,
        OPT_JSON,
        OPT_USER,
        OPT_NO_COLOR,
        OPT_NO_ASK_PASSWORD,
        OPT_AREA,
        OPT_DURATION,
        OPT_DEPTH,
        OPT_SPEED,
        OPT_OPERATOR,
        OPT_PATIENT,
        OPT_WAIT,
        OPT_ALL,
        OPT_SERIALS,
        OPT_AREAS,
        OPT_SINCE,
        OPT_UNTIL,
        OPT_PEN,
        OPT_SESSION,
        OPT_CARTRIDGE,
        OPT_KIND,
        OPT_UTC,
        OPT_FORMAT,
        OPT_OUTPUT,
        _OPT_MAX,
};

struct mnctl_args {
        const char *value[_OPT_MAX];    /* an option's argument ("" for a flag that is set) */
        bool set[_OPT_MAX];
        char **pos;                     /* positional arguments (pointers into argv) */
        size_t npos;
};

int cmd_list(struct mnctl *c, const struct mnctl_args *a);
int cmd_info(struct mnctl *c, const struct mnctl_args *a);
int cmd_status(struct mnctl *c, const struct mnctl_args *a);
int cmd_set_depth(struct mnctl *c, const struct mnctl_args *a);
int cmd_set_speed(struct mnctl *c, const struct mnctl_args *a);
int cmd_clear_fault(struct mnctl *c, const struct mnctl_args *a);
int cmd_stop(struct mnctl *c, const struct mnctl_args *a);
int cmd_start(struct mnctl *c, const struct mnctl_args *a);
int cmd_limits(struct mnctl *c, const struct mnctl_args *a);
int cmd_watch(struct mnctl *c, const struct mnctl_args *a);
int cmd_monitor(struct mnctl *c, const struct mnctl_args *a);
int cmd_audit_list(struct mnctl *c, const struct mnctl_args *a);
int cmd_audit_show(struct mnctl *c, const struct mnctl_args *a);
int cmd_audit_export(struct mnctl *c, const struct mnctl_args *a);
int cmd_audit_verify(struct mnctl *c, const struct mnctl_args *a);

/* ---- shared between the commands ---- */

/*
 * The limits mnctl checks against before calling: libmnp's shipped table
 * (mnp_limits_init), lowered by the daemon's effective caps from GetLimits
 * for "" (the global caps) and, when area is set, for the area.  An unknown
 * area gives the daemon's NoSuchArea (exit 4).
 */
int mnctl_load_limits(struct mnctl *c, const char *area, struct mnp_limits *ret);
/* Records a refusal by mnp_check_* (r, reason) as the daemon would name it; exit 4.  Returns r. */
int mnctl_fail_limit(struct mnctl *c, int r, const char *reason);

/* The pen as a JSON object (all properties). */
void mnctl_json_pen(struct json *j, const struct mnctl_pen *p);
/* The session as a JSON object. */
void mnctl_json_session(struct json *j, const struct mnctl_session *s);

/*
 * Ctrl-C and SIGTERM while mnctl waits: caught blocks them and installs a
 * handler (they are let in only while waiting for the bus), so that one that
 * comes at any moment in between is never lost; interrupted says whether one
 * came or is pending; restore takes any still pending and puts the old
 * handlers and mask back.
 */
struct mnctl_signals {
        sigset_t old_mask, wait_mask;
        struct sigaction old_int, old_term;
};
void mnctl_signals_catch(struct mnctl_signals *s);
bool mnctl_signals_interrupted(void);
void mnctl_signals_restore(struct mnctl_signals *s);

/*
 * Follows a pen (and its running session) from PropertiesChanged signals
 * until the session ends: the live view on a terminal, a line per change
 * otherwise, a JSON object per line with --json.
 *   session_path  the session to follow, or NULL: the pen's running
 *                 session, or the next one that starts (watch)
 *   start_wait    as "start --wait": Ctrl-C stops the pen, and no progress
 *                 is printed with --json (start prints the result alone)
 *   caught        signals the caller caught already (start --wait catches
 *                 them before StartSession), or NULL: caught while following
 * On success *ret_state (if not NULL) is the session's last state.
 */
int mnctl_follow(struct mnctl *c, const char *pen_path, const char *session_path, bool start_wait,
                 struct mnctl_signals *caught, char **ret_state);

/* The one-shot view of status: the same lines as the live view. */
void mnctl_print_view(FILE *f, const struct mnctl_pen *p, const struct mnctl_session *s, bool color);
