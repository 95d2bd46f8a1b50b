/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The manager: the set of pens and sessions, the glue between discovery,
 * pen-link and the bus objects, stopping (Stop, StopAll, SIGTERM) and the
 * state directory.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "audit-events.h"
#include "config.h"
#include "discovery.h"
#include "pen-link.h"
#include "session.h"

#define MND_BUS_NAME            "org.microneedle.Mnd1"
#define MND_MANAGER_PATH        "/org/microneedle/Mnd1"
#define MND_PEN_PATH_PREFIX     "/org/microneedle/Mnd1/pen"
#define MND_SESSION_PATH_PREFIX "/org/microneedle/Mnd1/session"
#define MND_AUDIT_PATH          "/org/microneedle/Mnd1/audit"
#define MND_MANAGER_INTERFACE   "org.microneedle.Mnd1.Manager"
#define MND_PEN_INTERFACE       "org.microneedle.Mnd1.Pen"
#define MND_SESSION_INTERFACE   "org.microneedle.Mnd1.Session"
#define MND_AUDIT_INTERFACE     "org.microneedle.Mnd1.Audit"

#define MND_ENDED_SESSIONS_KEPT 64              /* ended sessions whose objects stay */
#define MND_ACTUAL_PUBLISH_INTERVAL_USEC (100 * USEC_PER_MSEC)  /* at most 10 a second */
#define MND_SHUTDOWN_STOP_TIMEOUT_USEC USEC_PER_SEC
/* A pen that was just plugged in may not open at once (under umockdev: the first open can race
 * with the emulation being attached; on real hardware: udev still applying permissions).
 * Retried after 25, 50, 100, 200 and 400 ms: the same 0.8 s window as five tries 200 ms apart,
 * but a pen that opens on the second try is there 25 ms later, not 200. */
#define MND_OPEN_ATTEMPTS 6
#define MND_OPEN_RETRY_FIRST_USEC (25 * USEC_PER_MSEC)

/* Called once when a stop completed: 0 (acknowledged, or the pen is gone:
 * its lease stopped it) or a negative errno (-ETIMEDOUT ...). */
typedef void (*mnd_stop_fn)(struct mnd_pen *pen, int error, void *userdata);

struct mnd_stop_waiter {
        mnd_stop_fn fn;
        void *userdata;
        struct mnd_stop_waiter *next;
};

struct mnd_start_op;
struct mnd_polkit;

struct mnd_pen {
        struct mnd_manager *manager;
        struct mnd_pen *next, *prev;

        struct mnd_pen_device dev;
        struct mnd_pen_link *link;              /* owns the transport */

        bool ready;                             /* a handshake completed: identity is valid */
        bool gone;                              /* lost or unplugged: only freeing remains */
        bool duplicate;                         /* another connected pen has this serial */
        bool silent;                            /* stopped answering: unpublished, its link probes it */
        struct mnd_pen_identity identity;       /* copied at each handshake */
        char *path;                             /* while published */
        sd_bus_slot *slot;

        /* The setpoints as last acknowledged (commands) or reported (STATUS): a
         * STATUS lags behind an acknowledgement, so the pen's status alone is stale. */
        uint32_t depth_um, speed_hz;

        char fault_override[32];                /* "not-responding"; "" = use the pen's status */
        char audit_cartridge[MNP_MAX_STR + 1];  /* the cartridge the audit log last saw inserted */
        bool audit_connected;                   /* pen-connected recorded, pen-disconnected not yet */
        struct mnd_session *session;            /* the running session */
        struct mnd_start_op *starting;          /* a StartSession waiting for the pen */
        bool stop_in_flight;
        struct mnd_stop_waiter *stop_waiters;

        /* ActualDepthUm/ActualSpeedHz (and the session's ElapsedMs) at most 10 times a second */
        sd_event_source *throttle;
        uint64_t throttle_last;
        unsigned throttle_pending;              /* MND_PEN_CHANGED_ACTUAL_* | MND_PEN_CHANGED_NEEDLING */

        sd_event_source *free_later;
        sd_event_source *open_retry;            /* opening failed transiently: try again */
        unsigned open_attempts;
};

struct mnd_manager {
        sd_event *event;
        sd_bus *bus;
        const struct mnd_config *config;
        bool user_bus;
        uid_t owner_uid;                        /* the daemon's euid */

        struct mnd_discovery *discovery;

        /* The audit trail (audit-trail.c, bus-audit.c). */
        struct mnd_audit *audit;                /* NULL: unavailable, audit_error says why */
        int audit_error;
        uint64_t audit_session_max;             /* the highest session number handed out */
        struct mnd_ratelimit auth_failure_ratelimit;
        struct mnd_ratelimit idle_stop_ratelimit;       /* Stop/StopAll records that stopped nothing */
        sd_bus_slot *audit_slot;
        struct mnd_audit_verifier *verifier;

        struct mnd_polkit *polkit;              /* authorisation checks in flight (auth.c), system bus */

        struct mnd_pen *pens;
        struct mnd_session *sessions;           /* newest first */

        sd_bus_slot *manager_slot, *object_manager_slot;

        bool shutting_down;
        unsigned shutdown_pending;
        sd_event_source *shutdown_timer;
        char last_status[128];
};

int mnd_manager_new(sd_event *event, const struct mnd_config *config, bool user_bus, struct mnd_manager **ret);
struct mnd_manager *mnd_manager_free(struct mnd_manager *m);

/* Serves the objects on bus (before the name is requested). */
int mnd_manager_attach_bus(struct mnd_manager *m, sd_bus *bus);
/* Starts discovery: pens appear from here on. */
int mnd_manager_start_discovery(struct mnd_manager *m);

/* SIGTERM/SIGINT: stops every pen, waits for the acknowledgements (at most
 * MND_SHUTDOWN_STOP_TIMEOUT_USEC), ends every session "stopped", then exits the
 * event loop with 0. */
void mnd_manager_shutdown(struct mnd_manager *m);

/*
 * Stops a pen at once (overtaking its queue) and ends its running session with
 * state/reason.  Never refused.  fn (may be NULL) runs once when the stop
 * completed: later, or from inside this call when there is nothing to wait for
 * (the pen is gone or never finished its handshake).
 */
void mnd_pen_stop(struct mnd_pen *pen, enum mnd_session_state state, const char *reason, mnd_stop_fn fn,
                  void *userdata);

/* The two halves of mnd_pen_stop(), for stopping several pens: every pen's STOP first
 * (mnd_pen_stop_send: the frame only, nothing touches the disk), then each pen's
 * mnd_pen_stop_finish (ends the running session, which writes its record; fn as above). */
void mnd_pen_stop_send(struct mnd_pen *pen);
void mnd_pen_stop_finish(struct mnd_pen *pen, enum mnd_session_state state, const char *reason, mnd_stop_fn fn,
                         void *userdata);
/* mnd_pen_stop_send() on every pen; returns whether any was active (mnd_pen_is_active). */
bool mnd_manager_send_stop_all(struct mnd_manager *m);
/* Whether a Stop has something to stop: a running or starting session, or needles running. */
bool mnd_pen_is_active(const struct mnd_pen *pen);

/* Ends a running session: persists the end, publishes it, detaches it from its pen. */
void mnd_manager_end_session(struct mnd_manager *m, struct mnd_session *s, enum mnd_session_state state,
                             const char *reason);

/* After a START acknowledgement: records and publishes a running session. */
int mnd_manager_add_session(struct mnd_manager *m, struct mnd_session *s);

struct mnd_pen *mnd_manager_find_pen_by_serial(struct mnd_manager *m, const char *serial);
unsigned mnd_manager_count_pens(const struct mnd_manager *m);
unsigned mnd_manager_count_running_sessions(const struct mnd_manager *m);
/* sd_notify STATUS= when the counts changed. */
void mnd_manager_notify_status(struct mnd_manager *m);

/* The pen acknowledged new setpoints (or reported them): publishes them on
 * the pen and its running session. */
void mnd_pen_set_setpoints(struct mnd_pen *pen, uint32_t depth_um, uint32_t speed_hz);

/* Pen helpers for the bus code. */
const char *mnd_pen_state_string(const struct mnd_pen *pen);
const char *mnd_pen_fault_string(const struct mnd_pen *pen);
/* The pen's status, or NULL before the first handshake and once it is gone. */
const struct mnd_pen_status *mnd_pen_status(const struct mnd_pen *pen);
/* The area whose caps apply to SetDepth/SetSpeed now: the running (or
 * starting) session's, NULL outside a session. */
const char *mnd_pen_current_area(const struct mnd_pen *pen);

/* bus-manager.c */
extern const sd_bus_vtable mnd_manager_vtable[];
int mnd_bus_manager_emit_pen_added(struct mnd_manager *m, const char *path);
int mnd_bus_manager_emit_pen_removed(struct mnd_manager *m, const char *path);
int mnd_bus_manager_emit_pens_changed(struct mnd_manager *m);
/* The Stop and StopAll replies: 0 or a D-Bus error for a stop that failed. */
int mnd_bus_stop_result(sd_bus_error *error, int r, struct mnd_pen *pen);

/* bus-pen.c */
extern const sd_bus_vtable mnd_pen_vtable[];
int mnd_bus_pen_publish(struct mnd_pen *pen);
void mnd_bus_pen_unpublish(struct mnd_pen *pen);
/* Emits PropertiesChanged for MND_PEN_CHANGED_* bits (and "Session" with MND_BUS_PEN_CHANGED_SESSION). */
#define MND_BUS_PEN_CHANGED_SESSION (1u << 16)
void mnd_bus_pen_emit_changed(struct mnd_pen *pen, unsigned changes);
void mnd_bus_pen_emit_fault(struct mnd_pen *pen, const char *code, const char *message);

/* bus-session.c */
extern const sd_bus_vtable mnd_session_vtable[];
int mnd_bus_session_publish(struct mnd_manager *m, struct mnd_session *s);
void mnd_bus_session_unpublish(struct mnd_session *s);
void mnd_bus_session_emit_changed(struct mnd_session *s, unsigned changes);

/* bus-audit.c */
extern const sd_bus_vtable mnd_audit_vtable[];
int mnd_bus_audit_attach(struct mnd_manager *m);
/* Unpublishes it; answers the Verify calls still waiting. */
void mnd_bus_audit_done(struct mnd_manager *m);

/* bus-introspect.c: the introspection XML of the interfaces, from the vtables. */
int mnd_bus_introspect_print(void);
