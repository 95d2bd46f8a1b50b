/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "session.h"
#include "text.h"
#include "util.h"

static const char *const state_names[_MND_SESSION_STATE_MAX] = {
        [MND_SESSION_RUNNING] = "running",
        [MND_SESSION_COMPLETED] = "completed",
        [MND_SESSION_STOPPED] = "stopped",
        [MND_SESSION_INTERRUPTED] = "interrupted",
        [MND_SESSION_FAILED] = "failed",
};

const char *mnd_session_state_name(enum mnd_session_state s) {
        if ((unsigned) s >= _MND_SESSION_STATE_MAX)
                return "unknown";
        return state_names[s];
}

int mnd_session_check_text(const char *s, size_t max) {
        /* The audit log's rules: what a session takes, the log records (C1 controls are refused too). */
        return mnd_text_check(s, max);
}

struct mnd_session *mnd_session_free(struct mnd_session *s) {
        if (!s)
                return NULL;
        free(s->path);
        free(s->pen_path);
        free(s->operator_name);
        if (s->patient_ref) {
                explicit_bzero(s->patient_ref, strlen(s->patient_ref));
                free(s->patient_ref);
        }
        return mfree(s);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct mnd_session *, mnd_session_free);

int mnd_session_new(const struct mnd_session_params *p, struct mnd_session **ret) {
        _cleanup_(mnd_session_freep) struct mnd_session *s = NULL;

        if (!p || p->id == 0 || isempty(p->pen_path) || isempty(p->pen_serial) || isempty(p->area) ||
            !p->cartridge || p->planned_duration_s == 0)
                return -EINVAL;
        if (mnd_session_check_text(strempty(p->operator_name), MND_SESSION_OPERATOR_MAX) < 0 ||
            mnd_session_check_text(strempty(p->patient_ref), MND_SESSION_PATIENT_REF_MAX) < 0)
                return -EINVAL;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->id = p->id;
        if (strcpy_bounded(s->pen_serial, sizeof(s->pen_serial), p->pen_serial) < 0 ||
            strcpy_bounded(s->area, sizeof(s->area), p->area) < 0 ||
            strcpy_bounded(s->cartridge, sizeof(s->cartridge), p->cartridge) < 0)
                return -EINVAL;
        if (asprintf(&s->path, "/org/microneedle/Mnd1/session/%" PRIu64, p->id) < 0) {
                s->path = NULL;
                return -ENOMEM;
        }
        s->pen_path = strdup(p->pen_path);
        s->operator_name = strdup(strempty(p->operator_name));
        s->patient_ref = strdup(strempty(p->patient_ref));
        if (!s->pen_path || !s->operator_name || !s->patient_ref)
                return -ENOMEM;
        s->state = MND_SESSION_RUNNING;
        s->started_at = p->started_at;
        s->planned_duration_s = p->planned_duration_s;
        s->depth_um = p->depth_um;
        s->speed_hz = p->speed_hz;

        *ret = TAKE_PTR(s);
        return 0;
}

unsigned mnd_session_update(struct mnd_session *s, bool pen_running, uint32_t needling_ms,
                            uint32_t depth_um, uint32_t speed_hz) {
        unsigned changes = 0;

        if (s->state != MND_SESSION_RUNNING)
                return 0;
        if (s->depth_um != depth_um) {
                s->depth_um = depth_um;
                changes |= MND_SESSION_CHANGED_DEPTH;
        }
        if (s->speed_hz != speed_hz) {
                s->speed_hz = speed_hz;
                changes |= MND_SESSION_CHANGED_SPEED;
        }
        if (pen_running)
                s->seen_running = true;
        /* Before the pen reported RUNNING, its counter may be the previous START's. */
        if (s->seen_running && needling_ms > s->elapsed_ms) {
                s->elapsed_ms = needling_ms;
                changes |= MND_SESSION_CHANGED_ELAPSED;
        }
        return changes;
}

bool mnd_session_time_used_up(const struct mnd_session *s) {
        return s->state == MND_SESSION_RUNNING &&
               s->elapsed_ms >= (uint64_t) s->planned_duration_s * 1000;
}

int mnd_session_end(struct mnd_session *s, enum mnd_session_state state, const char *reason, uint64_t now) {
        if (state == MND_SESSION_RUNNING || (unsigned) state >= _MND_SESSION_STATE_MAX || isempty(reason))
                return -EINVAL;
        if (s->state != MND_SESSION_RUNNING)
                return -EALREADY;
        if (strcpy_bounded(s->end_reason, sizeof(s->end_reason), reason) < 0)
                return -EINVAL;
        s->state = state;
        s->ended_at = now > s->started_at ? now : s->started_at;
        return MND_SESSION_CHANGED_STATE;
}

const char *mnd_session_fault_reason(uint8_t code, const char *code_name, char *buf, size_t size) {
        if (!code_name && code == MNP_FAULT_LEASE_EXPIRED)
                snprintf(buf, size, "lease-expired");
        else
                snprintf(buf, size, "fault:%s", code_name ?: mnp_fault_name(code));
        return buf;
}
