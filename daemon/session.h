/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A treatment session: its parameters and the accounting of needling time.
 * No D-Bus and no I/O here (bus-session.c publishes it, manager.c drives it),
 * so that the rules below are unit-tested on their own.
 *
 * Rules:
 *  - A session starts "running" when the pen acknowledged START.
 *  - ElapsedMs is the pen's needling time (needles moving), not wall time: a
 *    pen that stalls or is stopped does not use up the plan.  Status values
 *    are taken only once the pen has reported RUNNING after the START (a
 *    status sent before the START was acted on still carries the previous
 *    session's counter).
 *  - When ElapsedMs reaches PlannedDurationS * 1000, the time is used up and
 *    the daemon sends STOP; the session ends "completed".
 *  - It ends once, with one of: "completed" (completed), "stopped" (stopped:
 *    Stop, StopAll, SIGTERM), "disconnected" (interrupted: the pen went away),
 *    "daemon-restart" (interrupted: found running in the state directory at
 *    start), "lease-expired" and "fault:CODE" (failed).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <mnp/limits.h>
#include <mnp/message.h>

enum mnd_session_state {
        MND_SESSION_RUNNING,
        MND_SESSION_COMPLETED,
        MND_SESSION_STOPPED,
        MND_SESSION_INTERRUPTED,
        MND_SESSION_FAILED,
        _MND_SESSION_STATE_MAX,
};

#define MND_SESSION_OPERATOR_MAX 128    /* bytes */
#define MND_SESSION_PATIENT_REF_MAX 64
#define MND_SESSION_REASON_MAX 48

/* Bits returned by the accounting functions: which properties changed. */
enum {
        MND_SESSION_CHANGED_STATE = 1u << 0,       /* State, EndedAt, EndReason */
        MND_SESSION_CHANGED_ELAPSED = 1u << 1,
        MND_SESSION_CHANGED_DEPTH = 1u << 2,
        MND_SESSION_CHANGED_SPEED = 1u << 3,
};

struct mnd_manager;
struct mnd_pen;
typedef struct sd_bus_slot sd_bus_slot;

struct mnd_session {
        uint64_t id;
        char *path;                     /* /org/microneedle/Mnd1/session/N */
        char *pen_path;
        char pen_serial[MNP_MAX_STR + 1];
        char area[MNP_AREA_ID_MAX];
        char *operator_name;
        char *patient_ref;              /* personal data: never logged at info or above */
        char cartridge[MNP_MAX_STR + 1];

        enum mnd_session_state state;
        uint64_t started_at, ended_at;  /* CLOCK_REALTIME usec; ended_at 0 while running */
        uint32_t planned_duration_s;
        uint64_t elapsed_ms;
        uint32_t depth_um, speed_hz;
        char end_reason[MND_SESSION_REASON_MAX];

        bool seen_running;              /* the pen reported RUNNING since the START */

        /* Owned by manager.c / bus-session.c. */
        struct mnd_manager *manager;
        struct mnd_pen *pen;            /* while running */
        sd_bus_slot *slot;
        struct mnd_session *next, *prev;
};

const char *mnd_session_state_name(enum mnd_session_state s);

struct mnd_session_params {
        uint64_t id;
        const char *pen_path;
        const char *pen_serial;
        const char *area;
        const char *operator_name;      /* NULL = "" */
        const char *patient_ref;        /* NULL = "" */
        const char *cartridge;
        uint32_t planned_duration_s;
        uint32_t depth_um, speed_hz;
        uint64_t started_at;
};

/* A running session.  -EINVAL for a missing or overlong field, -ENOMEM. */
int mnd_session_new(const struct mnd_session_params *p, struct mnd_session **ret);
/* Accepts NULL; returns NULL.  Does not unlink or unpublish. */
struct mnd_session *mnd_session_free(struct mnd_session *s);

/* Feeds one pen status.  pen_running: the pen reports RUNNING.  Returns the
 * MND_SESSION_CHANGED_* bits; nothing changes once the session ended. */
unsigned mnd_session_update(struct mnd_session *s, bool pen_running, uint32_t needling_ms,
                            uint32_t depth_um, uint32_t speed_hz);

/* Whether the planned needling time is used up (the daemon then stops the pen). */
bool mnd_session_time_used_up(const struct mnd_session *s);

/* Ends a running session: state must not be RUNNING, reason non-empty.
 * Returns MND_SESSION_CHANGED_STATE, -EALREADY if it ended before (the first
 * end wins), -EINVAL. */
int mnd_session_end(struct mnd_session *s, enum mnd_session_state state, const char *reason, uint64_t now);

/* The EndReason for a pen fault: "lease-expired" for MNP_FAULT_LEASE_EXPIRED,
 * else "fault:" + mnp_fault_name(code) ("fault:not-responding" etc. with
 * code_name when non-NULL). */
const char *mnd_session_fault_reason(uint8_t code, const char *code_name, char *buf, size_t size);

/* Options strings: valid text as the audit log takes it (text.h: strict UTF-8, no
 * control characters, C1 included), at most max bytes.  0, -E2BIG or -EINVAL. */
int mnd_session_check_text(const char *s, size_t max);
