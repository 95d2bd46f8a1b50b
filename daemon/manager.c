/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "audit-trail.h"
#include "auth.h"
#include "bus-error.h"
#include "log.h"
#include "manager.h"

#define LIST_PREPEND(head, item)                        \
        do {                                            \
                (item)->prev = NULL;                    \
                (item)->next = (head);                  \
                if (head)                               \
                        (head)->prev = (item);          \
                (head) = (item);                        \
        } while (0)

#define LIST_REMOVE(head, item)                         \
        do {                                            \
                if ((item)->next)                       \
                        (item)->next->prev = (item)->prev;      \
                if ((item)->prev)                       \
                        (item)->prev->next = (item)->next;      \
                else                                    \
                        (head) = (item)->next;          \
                (item)->next = (item)->prev = NULL;     \
        } while (0)

/* ---- pens: small helpers ---- */

const struct mnd_pen_status *mnd_pen_status(const struct mnd_pen *pen) {
        if (!pen || !pen->link || !pen->ready)
                return NULL;
        return mnd_pen_link_status(pen->link);
}

const char *mnd_pen_state_string(const struct mnd_pen *pen) {
        const struct mnd_pen_status *st;

        if (!pen || pen->gone)
                return mnd_pen_state_name(MND_PEN_DISCONNECTED);
        st = mnd_pen_status(pen);
        return mnd_pen_state_name(st ? st->state : MND_PEN_CONNECTING);
}

const char *mnd_pen_fault_string(const struct mnd_pen *pen) {
        const struct mnd_pen_status *st;

        if (!isempty(pen->fault_override))
                return pen->fault_override;
        st = mnd_pen_status(pen);
        if (!st || st->fault_flags == 0 || st->fault == MNP_FAULT_NONE)
                return "";
        return mnp_fault_name(st->fault);
}

static const char *pen_name(const struct mnd_pen *pen) {
        return !isempty(pen->identity.serial) ? pen->identity.serial :
               !isempty(pen->dev.serial) ? pen->dev.serial : pen->dev.key;
}

struct mnd_pen *mnd_manager_find_pen_by_serial(struct mnd_manager *m, const char *serial) {
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                if (p->path && !p->gone && streq(p->identity.serial, serial))
                        return p;
        return NULL;
}

unsigned mnd_manager_count_pens(const struct mnd_manager *m) {
        unsigned n = 0;

        for (struct mnd_pen *p = m->pens; p; p = p->next)
                if (p->path)
                        n++;
        return n;
}

unsigned mnd_manager_count_running_sessions(const struct mnd_manager *m) {
        unsigned n = 0;

        for (struct mnd_session *s = m->sessions; s; s = s->next)
                if (s->state == MND_SESSION_RUNNING)
                        n++;
        return n;
}

void mnd_manager_notify_status(struct mnd_manager *m) {
        char status[sizeof(m->last_status)];
        unsigned pens = mnd_manager_count_pens(m), sessions = mnd_manager_count_running_sessions(m);

        snprintf(status, sizeof(status), "%s%u pen%s, %u session%s running",
                 m->shutting_down ? "Stopping pens: " : "", pens, pens == 1 ? "" : "s", sessions,
                 sessions == 1 ? "" : "s");
        if (streq(status, m->last_status))
                return;
        memcpy(m->last_status, status, sizeof(status));
        (void) sd_notifyf(false, "STATUS=%s", status);
}

/* ---- sessions ---- */

static void prune_sessions(struct mnd_manager *m) {
        unsigned ended = 0;
        struct mnd_session *s, *next;

        /* Newest first: keep the newest MND_ENDED_SESSIONS_KEPT ended ones. */
        for (s = m->sessions; s; s = next) {
                next = s->next;
                if (s->state == MND_SESSION_RUNNING)
                        continue;
                if (++ended <= MND_ENDED_SESSIONS_KEPT)
                        continue;
                LIST_REMOVE(m->sessions, s);
                mnd_bus_session_unpublish(s);
                mnd_session_free(s);
        }
}

int mnd_manager_add_session(struct mnd_manager *m, struct mnd_session *s) {
        int r;

        s->manager = m;
        r = mnd_bus_session_publish(m, s);
        if (r < 0)
                return r;
        LIST_PREPEND(m->sessions, s);
        prune_sessions(m);
        return 0;
}

static void pen_flush_throttled(struct mnd_pen *pen);

void mnd_manager_end_session(struct mnd_manager *m, struct mnd_session *s, enum mnd_session_state state,
                             const char *reason) {
        struct mnd_pen *pen = s->pen;
        int r;

        /* The last needling figures first, so that the end carries them. */
        if (pen)
                pen_flush_throttled(pen);

        r = mnd_session_end(s, state, reason, now_usec(CLOCK_REALTIME));
        if (r < 0)
                return; /* ended before: the first end wins */

        {
                struct mnd_audit_session_info info;
                struct mnd_audit_event_buf b;

                /* After the fact (the pen was told first) and never fatal: ending must not fail.  A
                 * failure is logged at error level; at the next start the session reads as running and
                 * is closed as "daemon-restart". */
                mnd_audit_session_info(s, &info);
                mnd_audit_build_session_end(&b, &info, mnd_session_state_name(state), reason, s->elapsed_ms);
                (void) mnd_audit_record(m, &b, false);
        }

        log_info("Session %" PRIu64 " on pen %s ended: %s (%s) after %" PRIu64 ".%03" PRIu64 " s of needling.",
                 s->id, s->pen_serial, mnd_session_state_name(state), reason, s->elapsed_ms / 1000,
                 s->elapsed_ms % 1000);
        mnd_bus_session_emit_changed(s, MND_SESSION_CHANGED_STATE | MND_SESSION_CHANGED_ELAPSED);

        if (pen) {
                s->pen = NULL;
                if (pen->session == s) {
                        pen->session = NULL;
                        mnd_bus_pen_emit_changed(pen, MND_BUS_PEN_CHANGED_SESSION);
                }
        }
        prune_sessions(m);
        mnd_manager_notify_status(m);
}

/* ---- stopping ---- */

static void pen_complete_stop_waiters(struct mnd_pen *pen, int error) {
        struct mnd_stop_waiter *w;

        while ((w = pen->stop_waiters)) {
                pen->stop_waiters = w->next;
                if (w->fn)
                        w->fn(pen, error, w->userdata);
                free(w);
        }
}

static void pen_stop_done(struct mnd_pen_link *l, int error, const char *message, void *userdata) {
        struct mnd_pen *pen = userdata;

        pen->stop_in_flight = false;
        if (error < 0)
                log_warning("Pen %s: the stop was not acknowledged: %s", pen_name(pen),
                            message ?: strerror(ERRNO_VALUE(error)));
        else
                log_debug("Pen %s: stop acknowledged.", pen_name(pen));
        pen_complete_stop_waiters(pen, error);
}

void mnd_pen_stop_send(struct mnd_pen *pen) {
        int r;

        /* The STOP goes out at once, overtaking whatever is queued; nothing here touches the disk. */
        if (pen->stop_in_flight || !pen->link || pen->gone)
                return;
        r = mnd_pen_link_stop(pen->link, pen_stop_done, pen);
        if (r >= 0) {
                pen->stop_in_flight = true;
                log_debug("Pen %s: STOP sent.", pen_name(pen));
        } else if (r != -ENODEV && r != -ENOTCONN)
                log_error_errno(r, "Pen %s: cannot send STOP: %m", pen_name(pen));
}

bool mnd_pen_is_active(const struct mnd_pen *pen) {
        const struct mnd_pen_status *st = mnd_pen_status(pen);

        return pen->session || pen->starting || (st && st->state == MND_PEN_RUNNING);
}

void mnd_pen_stop_finish(struct mnd_pen *pen, enum mnd_session_state state, const char *reason, mnd_stop_fn fn,
                         void *userdata) {
        struct mnd_stop_waiter *w = NULL;

        if (pen->session)
                mnd_manager_end_session(pen->manager, pen->session, state, reason);

        if (!fn)
                return;
        if (!pen->stop_in_flight) {
                /* Nothing to wait for: the pen is gone (its lease stopped it) or never started. */
                fn(pen, 0, userdata);
                return;
        }
        w = calloc(1, sizeof(*w));
        if (!w) {
                /* The STOP is out; only the wait for its acknowledgement is lost. */
                fn(pen, 0, userdata);
                return;
        }
        w->fn = fn;
        w->userdata = userdata;
        w->next = pen->stop_waiters;
        pen->stop_waiters = w;
}

void mnd_pen_stop(struct mnd_pen *pen, enum mnd_session_state state, const char *reason, mnd_stop_fn fn,
                  void *userdata) {
        /* First what matters: the STOP; the session's end (an audit write) after it. */
        mnd_pen_stop_send(pen);
        mnd_pen_stop_finish(pen, state, reason, fn, userdata);
}

bool mnd_manager_send_stop_all(struct mnd_manager *m) {
        bool active = false;

        /* Every pen's STOP first; the callers end the sessions (and write their records) after,
         * so that on a slow disk no pen waits for another's audit write. */
        for (struct mnd_pen *p = m->pens; p; p = p->next) {
                if (mnd_pen_is_active(p))
                        active = true;
                mnd_pen_stop_send(p);
        }
        return active;
}

/* ---- throttled properties: ActualDepthUm, ActualSpeedHz, ElapsedMs ---- */

static void pen_flush_throttled(struct mnd_pen *pen) {
        unsigned pending = pen->throttle_pending;

        pen->throttle_pending = 0;
        if (pen->throttle)
                (void) sd_event_source_set_enabled(pen->throttle, SD_EVENT_OFF);
        if (pending == 0)
                return;
        pen->throttle_last = now_usec(CLOCK_MONOTONIC);
        mnd_bus_pen_emit_changed(pen, pending & (MND_PEN_CHANGED_ACTUAL_DEPTH | MND_PEN_CHANGED_ACTUAL_SPEED));
        if (pen->session && (pending & MND_PEN_CHANGED_NEEDLING))
                mnd_bus_session_emit_changed(pen->session, MND_SESSION_CHANGED_ELAPSED);
}

static int pen_throttle_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        pen_flush_throttled(userdata);
        return 0;
}

static void pen_throttled_changed(struct mnd_pen *pen, unsigned bits) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), due = pen->throttle_last + MND_ACTUAL_PUBLISH_INTERVAL_USEC;
        int enabled = SD_EVENT_OFF, r;

        pen->throttle_pending |= bits;
        if (now >= due) {
                pen_flush_throttled(pen);
                return;
        }
        if (pen->throttle)
                (void) sd_event_source_get_enabled(pen->throttle, &enabled);
        if (enabled != SD_EVENT_OFF)
                return; /* already armed */
        if (!pen->throttle) {
                r = sd_event_add_time(pen->manager->event, &pen->throttle, CLOCK_MONOTONIC, due, USEC_PER_MSEC,
                                      pen_throttle_handler, pen);
                if (r < 0) {
                        log_debug_errno(r, "Cannot arm the property timer, publishing now: %m");
                        pen_flush_throttled(pen);
                        return;
                }
                (void) sd_event_source_set_description(pen->throttle, "pen-throttle");
        } else
                (void) sd_event_source_set_time(pen->throttle, due);
        (void) sd_event_source_set_enabled(pen->throttle, SD_EVENT_ONESHOT);
}

void mnd_pen_set_setpoints(struct mnd_pen *pen, uint32_t depth_um, uint32_t speed_hz) {
        unsigned changes = 0, sc = 0;

        if (pen->depth_um != depth_um)
                changes |= MND_PEN_CHANGED_DEPTH;
        if (pen->speed_hz != speed_hz)
                changes |= MND_PEN_CHANGED_SPEED;
        pen->depth_um = depth_um;
        pen->speed_hz = speed_hz;
        mnd_bus_pen_emit_changed(pen, changes);
        if (pen->session && pen->session->state == MND_SESSION_RUNNING) {
                if (pen->session->depth_um != depth_um)
                        sc |= MND_SESSION_CHANGED_DEPTH;
                if (pen->session->speed_hz != speed_hz)
                        sc |= MND_SESSION_CHANGED_SPEED;
                pen->session->depth_um = depth_um;
                pen->session->speed_hz = speed_hz;
                mnd_bus_session_emit_changed(pen->session, sc);
        }
}

/* ---- the audit trail of a pen ---- */

/* Records cartridge-removed / cartridge-inserted when the pen's cartridge differs from the one
 * the log last saw. */
static void pen_audit_cartridge(struct mnd_pen *pen) {
        const struct mnd_pen_status *st = mnd_pen_status(pen);
        const char *now = st ? st->cartridge : "";
        uint64_t session = pen->session ? pen->session->id : 0;
        struct mnd_audit_event_buf b;

        if (streq(now, pen->audit_cartridge))
                return;
        if (!isempty(pen->audit_cartridge)) {
                mnd_audit_build_cartridge(&b, false, pen->identity.serial, pen->audit_cartridge, session);
                (void) mnd_audit_record(pen->manager, &b, false);
        }
        if (!isempty(now)) {
                mnd_audit_build_cartridge(&b, true, pen->identity.serial, now, session);
                (void) mnd_audit_record(pen->manager, &b, false);
        }
        (void) strcpy_bounded(pen->audit_cartridge, sizeof(pen->audit_cartridge), now);
}

static void pen_audit_fault(struct mnd_pen *pen, const char *code, const char *message) {
        struct mnd_audit_event_buf b;

        mnd_audit_build_fault(&b, pen->identity.serial, pen->session ? pen->session->id : 0, code, message);
        (void) mnd_audit_record(pen->manager, &b, false);
}

/* ---- pen-link callbacks ---- */

static void pen_publish(struct mnd_pen *pen);

/* The published pen with this serial left the bus: a pen held back as its duplicate takes its place. */
static void pen_publish_duplicate_of(struct mnd_manager *m, const struct mnd_pen *gone) {
        for (struct mnd_pen *p = m->pens; p; p = p->next) {
                if (p == gone || !p->duplicate || p->gone || p->silent || !p->ready || !p->link ||
                    !streq(p->identity.serial, gone->identity.serial))
                        continue;
                if (mnd_manager_find_pen_by_serial(m, p->identity.serial))
                        return;
                log_notice("Pen at %s (serial %s) is no longer a duplicate: publishing it.", p->dev.key,
                           p->identity.serial);
                p->duplicate = false;
                pen_publish(p);
                return;
        }
}

static void pen_ready(struct mnd_pen_link *l, void *userdata) {
        struct mnd_pen *pen = userdata;
        struct mnd_manager *m = pen->manager;
        const struct mnd_pen_identity *id = mnd_pen_link_identity(l);
        struct mnd_pen *other;

        if (!id)
                return;
        if (pen->ready && pen->path) {
                /* A new handshake (after a reset, or after the pen lost us): same pen, same object. */
                if (!streq(id->serial, pen->identity.serial))
                        log_warning("Pen %s now reports serial number %s; keeping the first.",
                                    pen->identity.serial, id->serial);
                else
                        pen->identity = *id;
                if (pen->session) {
                        /* A handshake stops the needles (the pen is at rest after a HELLO) and the
                         * link forgot the lease: whatever ran or was starting is over.  Not a reboot
                         * (that is pen_reset()): the link itself was reset, after a NOT_READY or a
                         * probe of a pen that fell silent. */
                        log_warning("Pen %s: the link was set up again during session %" PRIu64
                                    "; the pen stopped.", pen->identity.serial, pen->session->id);
                        pen_audit_fault(pen, "link-reset", "the link to the pen was set up again (a new handshake, "
                                        "no reboot); its needles are stopped");
                        mnd_manager_end_session(m, pen->session, MND_SESSION_FAILED, "fault:link-reset");
                }
                if (mnd_pen_link_status(l))
                        mnd_pen_set_setpoints(pen, mnd_pen_link_status(l)->depth_set_um,
                                              mnd_pen_link_status(l)->speed_set_hz);
                mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_STATE |
                                         MND_PEN_CHANGED_CARTRIDGE | MND_PEN_CHANGED_BATTERY | MND_PEN_CHANGED_FAULT);
                log_info("Pen %s: handshake done again.", pen->identity.serial);
                pen_audit_cartridge(pen);
                return;
        }

        if (pen->ready) {
                /* It was not answering (or had a duplicate's serial) and answers now: publish it
                 * again, under the same object path.  Its session ended when it went silent. */
                if (!streq(id->serial, pen->identity.serial))
                        log_warning("Pen %s now reports serial number %s; keeping the first.",
                                    pen->identity.serial, id->serial);
                else
                        pen->identity = *id;
                if (pen->silent)
                        log_notice("Pen %s answers again.", pen->identity.serial);
        } else {
                pen->identity = *id;
                if (isempty(pen->identity.serial))
                        /* The pen told us nothing: fall back on the USB serial string. */
                        strcpy_bounded(pen->identity.serial, sizeof(pen->identity.serial),
                                       isempty(pen->dev.serial) ? pen->dev.key : pen->dev.serial);
                if (!isempty(pen->dev.serial) && !streq(pen->dev.serial, id->serial))
                        log_warning("Pen at %s: USB serial '%s' differs from the serial '%s' the pen reports; "
                                    "using the latter.", pen->dev.key, pen->dev.serial, pen->identity.serial);
                pen->ready = true;
        }
        pen->silent = false;
        pen->duplicate = false;
        pen->fault_override[0] = '\0';
        if (mnd_pen_link_status(l)) {
                /* From the pen's first STATUS: pen-link calls ready() only once it came. */
                pen->depth_um = mnd_pen_link_status(l)->depth_set_um;
                pen->speed_hz = mnd_pen_link_status(l)->speed_set_hz;
        }

        other = mnd_manager_find_pen_by_serial(m, pen->identity.serial);
        if (other && other != pen) {
                log_error("Pen at %s reports serial %s, which pen at %s already has; ignoring it until one is "
                          "unplugged.", pen->dev.key, pen->identity.serial, other->dev.key);
                pen->duplicate = true;
                /* It must not run unattended either. */
                (void) mnd_pen_link_stop(l, NULL, NULL);
                return;
        }

        pen_publish(pen);
}

/* Puts a ready pen on the bus (and on the trail as connected). */
static void pen_publish(struct mnd_pen *pen) {
        struct mnd_manager *m = pen->manager;
        const struct mnd_pen_identity *id = &pen->identity;
        int r;

        r = mnd_bus_pen_publish(pen);
        if (r < 0) {
                log_error_errno(r, "Pen %s: cannot publish it on the bus: %m", pen->identity.serial);
                return;
        }
        log_info("Pen %s connected: %s, firmware %s, %s, depth %" PRIu32 "-%" PRIu32 " um in %" PRIu32
                 " um steps, speed %" PRIu32 "-%" PRIu32 " Hz, as %s.", pen->identity.serial, pen->identity.model,
                 pen->identity.firmware, mnp_transport_name(pen->identity.kind), id->range.depth_min_um,
                 id->range.depth_max_um, id->range.depth_step_um, id->range.speed_min_hz, id->range.speed_max_hz,
                 pen->path);
        if (!pen->audit_connected) {
                struct mnd_audit_event_buf b;

                mnd_audit_build_pen_connected(&b, pen->identity.serial, pen->identity.model, pen->identity.firmware,
                                              mnp_transport_name(pen->identity.kind));
                (void) mnd_audit_record(m, &b, false);
                pen->audit_connected = true;
        }
        pen_audit_cartridge(pen);
        mnd_manager_notify_status(m);
}

static void pen_changed(struct mnd_pen_link *l, unsigned changes, void *userdata) {
        struct mnd_pen *pen = userdata;
        const struct mnd_pen_status *st = mnd_pen_link_status(l);
        struct mnd_session *s = pen->session;
        unsigned sc;

        if (!pen->ready || !st)
                return;

        mnd_bus_pen_emit_changed(pen, changes & (MND_PEN_CHANGED_STATE | MND_PEN_CHANGED_CARTRIDGE |
                                                 MND_PEN_CHANGED_BATTERY | MND_PEN_CHANGED_FAULT));
        if ((changes & MND_PEN_CHANGED_CARTRIDGE) && pen->path)
                pen_audit_cartridge(pen);
        if (changes & (MND_PEN_CHANGED_DEPTH | MND_PEN_CHANGED_SPEED))
                mnd_pen_set_setpoints(pen, changes & MND_PEN_CHANGED_DEPTH ? st->depth_set_um : pen->depth_um,
                                      changes & MND_PEN_CHANGED_SPEED ? st->speed_set_hz : pen->speed_hz);
        if (changes & (MND_PEN_CHANGED_ACTUAL_DEPTH | MND_PEN_CHANGED_ACTUAL_SPEED))
                pen_throttled_changed(pen, changes & (MND_PEN_CHANGED_ACTUAL_DEPTH | MND_PEN_CHANGED_ACTUAL_SPEED));

        if (!s)
                return;

        bool was_running = s->seen_running;
        sc = mnd_session_update(s, st->state == MND_PEN_RUNNING, st->needling_ms, pen->depth_um, pen->speed_hz);
        mnd_bus_session_emit_changed(s, sc & (MND_SESSION_CHANGED_DEPTH | MND_SESSION_CHANGED_SPEED));
        if (sc & MND_SESSION_CHANGED_ELAPSED)
                pen_throttled_changed(pen, MND_PEN_CHANGED_NEEDLING);

        if (mnd_session_time_used_up(s)) {
                /* The planned needling time is used up: stop now. */
                log_info("Pen %s: session %" PRIu64 " used up its %" PRIu32 " s; stopping.", pen->identity.serial,
                         s->id, s->planned_duration_s);
                mnd_pen_stop(pen, MND_SESSION_COMPLETED, "completed", NULL, NULL);
                return;
        }

        /* Needles stopped without us asking and without a fault (a fault ends the session in pen_fault). */
        if (was_running && st->state == MND_PEN_IDLE && !pen->stop_in_flight) {
                log_warning("Pen %s stopped by itself during session %" PRIu64 ".", pen->identity.serial, s->id);
                /* Its session is over: the lease is no longer renewed (a STOP ends the renewal, and
                 * an idle pen takes it as a no-op), so that the pen cannot start again on its own. */
                mnd_pen_stop(pen, MND_SESSION_INTERRUPTED, "stopped", NULL, NULL);
        }
}

static void pen_fault(struct mnd_pen_link *l, uint8_t code, void *userdata) {
        struct mnd_pen *pen = userdata;
        char reason[MND_SESSION_REASON_MAX], message[256];

        snprintf(message, sizeof(message), "pen %s reports fault '%s'; its needles are stopped. Remove the cause, "
                 "then call ClearFault", pen_name(pen), mnp_fault_name(code));
        log_warning("%s.", message);
        mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_FAULT | MND_PEN_CHANGED_STATE);
        mnd_bus_pen_emit_fault(pen, mnp_fault_name(code), message);
        if (code == MNP_FAULT_LEASE_EXPIRED) {
                struct mnd_audit_event_buf b;

                mnd_audit_build_lease_expired(&b, pen->identity.serial, pen->session ? pen->session->id : 0);
                (void) mnd_audit_record(pen->manager, &b, false);
        } else
                pen_audit_fault(pen, mnp_fault_name(code), message);
        if (pen->session)
                mnd_manager_end_session(pen->manager, pen->session, MND_SESSION_FAILED,
                                        mnd_session_fault_reason(code, NULL, reason, sizeof(reason)));
}

static void pen_reset(struct mnd_pen_link *l, void *userdata) {
        struct mnd_pen *pen = userdata;

        log_warning("Pen %s rebooted (new boot id); whatever ran on it has stopped.", pen_name(pen));
        pen_audit_fault(pen, "pen-reset", "the pen rebooted (new boot id); whatever ran on it has stopped");
        if (pen->session)
                mnd_manager_end_session(pen->manager, pen->session, MND_SESSION_FAILED, "fault:pen-reset");
        mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_STATE);
}

static struct mnd_pen *pen_free(struct mnd_pen *pen);

static int pen_free_later_handler(sd_event_source *s, void *userdata) {
        struct mnd_pen *pen = userdata;

        pen_free(pen);
        return 0;
}

/* The pen is gone (error: -ENODEV unplugged, -ETIMEDOUT not answering, -EIO; 0 the daemon closes it). */
static void pen_gone(struct mnd_pen *pen, int error) {
        struct mnd_manager *m = pen->manager;

        if (pen->gone)
                return;
        pen->gone = true;

        if (error == -ETIMEDOUT) {
                char message[256];

                strcpy_bounded(pen->fault_override, sizeof(pen->fault_override), "not-responding");
                snprintf(message, sizeof(message), "pen %s stopped answering; its lease stops its needles. "
                         "Check the cable, then unplug and replug it", pen_name(pen));
                log_error("%s.", message);
                mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_FAULT);
                mnd_bus_pen_emit_fault(pen, "not-responding", message);
                pen_audit_fault(pen, "not-responding", message);
                if (pen->session)
                        mnd_manager_end_session(m, pen->session, MND_SESSION_FAILED, "fault:not-responding");
        } else {
                if (error == 0)
                        log_debug("Pen %s: closing.", pen_name(pen));
                else
                        log_info("Pen %s disconnected (%s).", pen_name(pen), strerror(ERRNO_VALUE(error)));
                if (pen->session)
                        mnd_manager_end_session(m, pen->session, MND_SESSION_INTERRUPTED, "disconnected");
        }
        if (pen->audit_connected) {
                struct mnd_audit_event_buf b;

                mnd_audit_build_pen_disconnected(&b, pen->identity.serial,
                                                 error == 0 ? "closed by the daemon" :
                                                 error == -ENODEV ? "unplugged" :
                                                 error == -ETIMEDOUT ? "not responding" : strerror(ERRNO_VALUE(error)));
                (void) mnd_audit_record(m, &b, false);
                pen->audit_connected = false;
        }

        pen_flush_throttled(pen);
        mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_STATE);
        if (pen->path) {
                mnd_bus_pen_unpublish(pen);
                if (!m->shutting_down)
                        pen_publish_duplicate_of(m, pen);
        }
        mnd_manager_notify_status(m);
}

/* The pen stopped answering but is still connected: its link probes it once in a while and
 * ready() publishes it again if it answers.  Until then it is not on the bus. */
static void pen_silent(struct mnd_pen *pen) {
        struct mnd_manager *m = pen->manager;
        char message[256];

        if (pen->silent)
                return;
        pen->silent = true;
        if (!pen->path) {
                log_warning("Pen at %s does not answer; probing it again once a second.", pen->dev.key);
                return;
        }

        strcpy_bounded(pen->fault_override, sizeof(pen->fault_override), "not-responding");
        snprintf(message, sizeof(message), "pen %s stopped answering; its lease stops its needles. It is "
                 "probed once a second and comes back when it answers; check the cable", pen_name(pen));
        log_error("%s.", message);
        mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_FAULT);
        mnd_bus_pen_emit_fault(pen, "not-responding", message);
        pen_audit_fault(pen, "not-responding", message);
        if (pen->session)
                mnd_manager_end_session(m, pen->session, MND_SESSION_FAILED, "fault:not-responding");

        pen_flush_throttled(pen);
        mnd_bus_pen_emit_changed(pen, MND_PEN_CHANGED_STATE);
        if (pen->path) {
                mnd_bus_pen_unpublish(pen);
                if (!m->shutting_down)
                        pen_publish_duplicate_of(m, pen);
        }
        mnd_manager_notify_status(m);
}

static void pen_lost(struct mnd_pen_link *l, int error, void *userdata) {
        struct mnd_pen *pen = userdata;
        int r;

        if (error == -ETIMEDOUT && mnd_pen_link_may_recover(l) && !pen->manager->shutting_down) {
                pen_silent(pen);
                return;
        }
        pen_gone(pen, error);
        /* Not from inside the link's own callback: free it from the loop. */
        if (!pen->free_later) {
                r = sd_event_add_defer(pen->manager->event, &pen->free_later, pen_free_later_handler, pen);
                if (r < 0)
                        log_error_errno(r, "Cannot schedule freeing pen %s: %m", pen_name(pen));
        }
}

static const struct mnd_pen_link_callbacks pen_callbacks = {
        .ready = pen_ready,
        .changed = pen_changed,
        .fault = pen_fault,
        .reset = pen_reset,
        .lost = pen_lost,
};

static struct mnd_pen *pen_free(struct mnd_pen *pen) {
        struct mnd_manager *m;

        if (!pen)
                return NULL;
        m = pen->manager;
        pen_gone(pen, 0);
        /* Completes what is pending (with -ECANCELED: replies go out) and closes the transport. */
        pen->link = mnd_pen_link_free(pen->link);
        /* Nothing may point at a freed pen: a session that is still attached (pen_gone() ended the
         * one it saw) ends here, and is detached even if it had ended before. */
        if (pen->session) {
                struct mnd_session *s = pen->session;

                mnd_manager_end_session(m, s, MND_SESSION_INTERRUPTED, "disconnected");
                s->pen = NULL;
                pen->session = NULL;
        }
        pen->stop_in_flight = false;
        pen_complete_stop_waiters(pen, 0);
        pen->throttle = sd_event_source_disable_unref(pen->throttle);
        pen->free_later = sd_event_source_disable_unref(pen->free_later);
        pen->open_retry = sd_event_source_disable_unref(pen->open_retry);
        LIST_REMOVE(m->pens, pen);
        free(pen->path);
        return mfree(pen);
}

/* ---- discovery ---- */

static struct mnd_pen *find_pen_by_key(struct mnd_manager *m, const char *key) {
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                if (streq(p->dev.key, key))
                        return p;
        return NULL;
}

static int pen_open_retry_handler(sd_event_source *s, uint64_t usec, void *userdata);

/* Opens the transport and starts the link; a failure that may pass is retried a few times. */
static void pen_open(struct mnd_pen *pen) {
        struct mnd_manager *m = pen->manager;
        struct mnd_transport *t = NULL;
        int r;

        pen->open_attempts++;
        r = mnd_discovery_open(m->discovery, &pen->dev, m->event, &t);
        if (r >= 0) {
                r = mnd_pen_link_new(m->event, t, &m->config->link, &pen_callbacks, pen, &pen->link);
                if (r < 0) {
                        log_error_errno(r, "Cannot start talking to the pen at %s: %m", pen->dev.key);
                        pen->gone = true;
                        pen_free(pen);
                }
                return;
        }
        if (r != -ENODEV && pen->open_attempts < MND_OPEN_ATTEMPTS) {
                uint64_t delay = MND_OPEN_RETRY_FIRST_USEC << (pen->open_attempts - 1);

                log_debug_errno(r, "Cannot open the pen at %s yet (attempt %u), trying again in %" PRIu64 " ms: %m",
                                pen->dev.key, pen->open_attempts, delay / USEC_PER_MSEC);
                if (!pen->open_retry)
                        r = sd_event_add_time_relative(m->event, &pen->open_retry, CLOCK_MONOTONIC,
                                                       delay, USEC_PER_MSEC, pen_open_retry_handler, pen);
                else {
                        r = sd_event_source_set_time_relative(pen->open_retry, delay);
                        if (r >= 0)
                                r = sd_event_source_set_enabled(pen->open_retry, SD_EVENT_ONESHOT);
                }
                if (r >= 0)
                        return;
        }
        log_error_errno(r, "Cannot open the pen at %s: %m", pen->dev.key);
        pen->gone = true;
        pen_free(pen);
}

static int pen_open_retry_handler(sd_event_source *s, uint64_t usec, void *userdata) {
        pen_open(userdata);
        return 0;
}

static void discovery_added(struct mnd_discovery *d, const struct mnd_pen_device *dev, void *userdata) {
        struct mnd_manager *m = userdata;
        struct mnd_pen *pen;

        if (m->shutting_down)
                return;
        pen = find_pen_by_key(m, dev->key);
        if (pen) {
                if (!pen->gone)
                        return;
                pen_free(pen);  /* a stale entry for the same port */
        }

        log_info("Found a %s pen at %s (serial '%s').", mnp_transport_name(dev->kind), dev->key, dev->serial);
        pen = calloc(1, sizeof(*pen));
        if (!pen) {
                log_oom();
                return;
        }
        pen->manager = m;
        pen->dev = *dev;
        LIST_PREPEND(m->pens, pen);
        pen_open(pen);
}

static void discovery_removed(struct mnd_discovery *d, const struct mnd_pen_device *dev, void *userdata) {
        struct mnd_manager *m = userdata;
        struct mnd_pen *pen = find_pen_by_key(m, dev->key);

        if (!pen)
                return;
        pen_gone(pen, -ENODEV);
        pen_free(pen);
}

int mnd_manager_start_discovery(struct mnd_manager *m) {
        int r;

        r = mnd_discovery_new(m->event, &m->config->ids, discovery_added, discovery_removed, m, &m->discovery);
        if (r < 0)
                return log_error_errno(r, "Cannot start pen discovery: %m");
        return 0;
}

/* ---- shutdown ---- */

static void shutdown_exit(struct mnd_manager *m) {
        m->shutdown_timer = sd_event_source_disable_unref(m->shutdown_timer);
        log_info("Every pen is stopped; exiting.");
        (void) sd_event_exit(m->event, 0);
}

static void shutdown_pen_done(struct mnd_pen *pen, int error, void *userdata) {
        struct mnd_manager *m = userdata;

        if (m->shutdown_pending > 0 && --m->shutdown_pending == 0)
                shutdown_exit(m);
}

static int shutdown_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mnd_manager *m = userdata;

        log_warning("%u pen(s) did not acknowledge the stop in time; their leases stop them. Exiting.",
                    m->shutdown_pending);
        m->shutdown_pending = 0;
        m->shutdown_timer = sd_event_source_disable_unref(m->shutdown_timer);
        (void) sd_event_exit(m->event, 0);
        return 0;
}

void mnd_manager_shutdown(struct mnd_manager *m) {
        int r;

        if (m->shutting_down)
                return;
        m->shutting_down = true;
        /* Calls still waiting for polkit are answered now (Busy): nothing new starts. */
        mnd_auth_cancel_all(m);
        (void) sd_notify(false, "STOPPING=1");
        log_info("Stopping every pen before exiting.");

        m->shutdown_pending = 1;        /* held until every stop was issued */
        /* Every STOP out before the first session's end is written. */
        (void) mnd_manager_send_stop_all(m);
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                m->shutdown_pending++;
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                mnd_pen_stop_finish(p, MND_SESSION_STOPPED, "stopped", shutdown_pen_done, m);
        /* Sessions without a pen cannot be running, but make sure. */
        for (struct mnd_session *s = m->sessions; s; s = s->next)
                if (s->state == MND_SESSION_RUNNING)
                        mnd_manager_end_session(m, s, MND_SESSION_STOPPED, "stopped");
        mnd_manager_notify_status(m);

        if (m->shutdown_pending > 1) {
                r = sd_event_add_time_relative(m->event, &m->shutdown_timer, CLOCK_MONOTONIC,
                                               MND_SHUTDOWN_STOP_TIMEOUT_USEC, USEC_PER_MSEC, shutdown_timeout, m);
                if (r < 0)
                        log_warning_errno(r, "Cannot arm the shutdown timer: %m");
        }
        shutdown_pen_done(NULL, 0, m);
}

/* ---- lifetime ---- */

/* Sessions the audit log shows running: the daemon stopped (or died) while they ran, and the pen's
 * lease has stopped each since.  Each is closed with a session-end "daemon-restart" and published
 * as an ended session. */
static int reconcile_orphans(struct mnd_manager *m) {
        struct mnd_audit_record *recs = NULL;
        size_t n = 0;
        int r;

        if (!m->audit)
                return 0;
        r = mnd_audit_running_sessions(m->audit, &recs, &n);
        if (r < 0) {
                log_error_errno(r, "Cannot read the sessions left running from the audit log: %m");
                return 0;
        }
        for (size_t i = 0; i < n; i++) {
                const struct mnd_audit_event *e = &recs[i].event;
                _cleanup_(freep) char *pen_path = NULL;
                struct mnd_session *s = NULL;

                log_notice("Session %" PRIu64 " on pen %s was running when the daemon stopped; recording it as "
                           "ended (daemon-restart).", e->session, strempty(e->pen));
                r = 0;
                for (struct mnd_session *o = m->sessions; o; o = o->next)
                        if (o->id == e->session)
                                r = -EEXIST;    /* a log with a number twice: publish it once */
                if (r >= 0)
                        r = sd_bus_path_encode(MND_PEN_PATH_PREFIX, isempty(e->pen) ? "unknown" : e->pen, &pen_path);
                if (r >= 0)
                        r = mnd_session_new(&(struct mnd_session_params) {
                                        .id = e->session,
                                        .pen_path = pen_path,
                                        .pen_serial = isempty(e->pen) ? "unknown" : e->pen,
                                        .area = isempty(e->area) ? "unknown" : e->area,
                                        .operator_name = e->operator,
                                        .patient_ref = e->patient_ref,
                                        .cartridge = isempty(e->cartridge) ? "unknown" : e->cartridge,
                                        .planned_duration_s = e->duration_s == MND_AUDIT_UNSET ? 1 : e->duration_s,
                                        .depth_um = e->depth_um == MND_AUDIT_UNSET ? 0 : e->depth_um,
                                        .speed_hz = e->speed_hz == MND_AUDIT_UNSET ? 0 : e->speed_hz,
                                        .started_at = e->time_usec,
                                }, &s);
                if (r >= 0) {
                        s->manager = m;
                        /* Records the session-end. */
                        mnd_manager_end_session(m, s, MND_SESSION_INTERRUPTED, "daemon-restart");
                        /* Oldest first, so prepending keeps newest first. */
                        LIST_PREPEND(m->sessions, s);
                } else {
                        struct mnd_audit_session_info info = {
                                .id = e->session,
                                .pen = e->pen,
                                .area = e->area,
                                .cartridge = e->cartridge,
                                .depth_um = e->depth_um,
                                .speed_hz = e->speed_hz,
                                .planned_duration_s = e->duration_s,
                        };
                        struct mnd_audit_event_buf b;

                        log_warning_errno(r, "Cannot publish session %" PRIu64 " again: %m", e->session);
                        mnd_audit_build_session_end(&b, &info, mnd_session_state_name(MND_SESSION_INTERRUPTED),
                                                    "daemon-restart", 0);
                        (void) mnd_audit_record(m, &b, false);
                }
        }
        mnd_audit_records_free(recs, n);
        prune_sessions(m);
        return 0;
}

int mnd_manager_new(sd_event *event, const struct mnd_config *config, bool user_bus, struct mnd_manager **ret) {
        struct mnd_manager *m;
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(event);
        m->config = config;
        m->user_bus = user_bus;
        m->owner_uid = geteuid();

        /* Never fatal for a broken database (see audit-trail.h): Stop must keep working. */
        r = mnd_audit_trail_open(m);
        if (r < 0)
                goto fail;
        r = reconcile_orphans(m);
        if (r < 0)
                goto fail;

        *ret = m;
        return 0;

fail:
        mnd_manager_free(m);
        return r;
}

int mnd_manager_attach_bus(struct mnd_manager *m, sd_bus *bus) {
        int r;

        m->bus = sd_bus_ref(bus);
        r = sd_bus_add_object_vtable(bus, &m->manager_slot, MND_MANAGER_PATH, MND_MANAGER_INTERFACE,
                                     mnd_manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Cannot serve %s: %m", MND_MANAGER_PATH);
        r = sd_bus_add_object_manager(bus, &m->object_manager_slot, MND_MANAGER_PATH);
        if (r < 0)
                return log_error_errno(r, "Cannot serve the object manager: %m");
        r = mnd_bus_audit_attach(m);
        if (r < 0)
                return r;
        for (struct mnd_session *s = m->sessions; s; s = s->next) {
                r = mnd_bus_session_publish(m, s);
                if (r < 0)
                        return r;
        }
        return 0;
}

struct mnd_manager *mnd_manager_free(struct mnd_manager *m) {
        struct mnd_session *s;

        if (!m)
                return NULL;
        /* Normally every pen was stopped by the shutdown; on an error path, stop them now (best effort:
         * the transports close right after, and the leases stop the pens in any case). */
        for (struct mnd_pen *p = m->pens; p; p = p->next)
                if (!p->gone && p->link && !p->stop_in_flight && (!m->shutting_down || p->session))
                        (void) mnd_pen_link_stop(p->link, NULL, NULL);

        /* Calls waiting for polkit first (answered Busy; their continuations never run), then the
         * pens: their pending calls complete (and are answered) while the bus is still there. */
        mnd_auth_done(m);
        while (m->pens)
                pen_free(m->pens);
        m->discovery = mnd_discovery_free(m->discovery);

        while ((s = m->sessions)) {
                if (s->state == MND_SESSION_RUNNING)
                        mnd_manager_end_session(m, s, MND_SESSION_INTERRUPTED, "disconnected");
                LIST_REMOVE(m->sessions, s);
                mnd_bus_session_unpublish(s);
                mnd_session_free(s);
        }
        m->manager_slot = sd_bus_slot_unref(m->manager_slot);
        m->object_manager_slot = sd_bus_slot_unref(m->object_manager_slot);
        m->shutdown_timer = sd_event_source_disable_unref(m->shutdown_timer);
        mnd_bus_audit_done(m);
        mnd_audit_trail_close(m, m->shutting_down ? "stopped by a signal" : "exiting after an error");
        if (m->bus)
                (void) sd_bus_flush(m->bus);
        m->bus = sd_bus_unref(m->bus);
        m->event = sd_event_unref(m->event);
        return mfree(m);
}
