/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * What every mnctl command shares: the global options, the bus connection,
 * and the one error that the run ends with.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "mnctl-util.h"

/* The documented exit codes (mnctl(1), EXIT STATUS). */
enum {
        MNCTL_EXIT_OK = 0,
        MNCTL_EXIT_USAGE = 2,
        MNCTL_EXIT_NO_PEN = 3,
        MNCTL_EXIT_REFUSED = 4,
        MNCTL_EXIT_DENIED = 5,
        MNCTL_EXIT_DEVICE = 6,
        MNCTL_EXIT_NO_DAEMON = 7,
        MNCTL_EXIT_AUDIT_BROKEN = 8,
};

/* Error names mnctl itself reports (besides the daemon's, which it passes on). */
#define MNCTL_ERROR_USAGE               "org.microneedle.mnctl.Error.Usage"
#define MNCTL_ERROR_AMBIGUOUS_PEN       "org.microneedle.mnctl.Error.AmbiguousPen"
#define MNCTL_ERROR_NO_DAEMON           "org.microneedle.mnctl.Error.NoDaemon"
#define MNCTL_ERROR_SESSION_NOT_COMPLETED "org.microneedle.mnctl.Error.SessionNotCompleted"
#define MNCTL_ERROR_FAILED              "org.microneedle.mnctl.Error.Failed"
#define MNCTL_ERROR_NO_SUCH_EVENT       "org.microneedle.mnctl.Error.NoSuchEvent"
#define MNCTL_ERROR_AUDIT_BROKEN        "org.microneedle.mnctl.Error.AuditChainBroken"

/* How long a quick call (struct mnctl.quick) waits for mnd. */
#define MNCTL_QUICK_TIMEOUT_USEC (1000 * UINT64_C(1000))

#define MND_BUS_NAME            "org.microneedle.Mnd1"
#define MND_MANAGER_PATH        "/org/microneedle/Mnd1"
#define MND_PEN_PREFIX          "/org/microneedle/Mnd1/pen"
#define MND_MANAGER_IFACE       "org.microneedle.Mnd1.Manager"
#define MND_PEN_IFACE           "org.microneedle.Mnd1.Pen"
#define MND_SESSION_IFACE       "org.microneedle.Mnd1.Session"
#define MND_ERROR_PREFIX        "org.microneedle.Mnd1.Error."

struct json;

struct mnctl {
        /* global options */
        bool json;
        bool user_bus;
        bool no_color;
        bool no_ask_password;   /* --no-ask-password: calls never allow interactive authorisation */
        bool color;             /* decided once: a terminal, no NO_COLOR, no --no-color, not --json */
        bool json_lines;        /* with --json, stdout is JSON Lines (watch, monitor): errors on one line */

        sd_bus *bus;            /* connected on first use */
        /* For the shell completion (list --serials, limits --areas): calls never start mnd by bus
         * activation and give up after MNCTL_QUICK_TIMEOUT_USEC. */
        bool quick;

        /* the error the run ends with (the first one reported wins) */
        int exit_code;
        char *error_name;
        char *error_message;
        /* With --json: members written before "error" in the error object (the result that failed). */
        void (*json_error_members)(struct json *j, const void *userdata);
        const void *json_error_userdata;
};

/*
 * Records the error the run ends with and returns r (a negative errno).
 * Only the first error counts; later ones are ignored.
 */
_printf_(5, 6)
int mnctl_fail(struct mnctl *c, int r, int exit_code, const char *name, const char *fmt, ...);
/* A usage error (exit 2). */
#define mnctl_usage(c, ...) mnctl_fail((c), -EINVAL, MNCTL_EXIT_USAGE, MNCTL_ERROR_USAGE, __VA_ARGS__)

/* Prints the recorded error: a line on stderr, or {"error": ...} on stdout with --json. */
void mnctl_report_error(const struct mnctl *c);
void mnctl_done(struct mnctl *c);
