/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One pen's protocol engine: libmnp's link over a transport, on sd-event.
 *
 * Phases:
 *   HANDSHAKE  HELLO is sent and retried (a new HELLO as soon as one times
 *              out) until a HELLO_REPLY answers it or handshake_timeout_ms
 *              passes.  Used for the first handshake and for every
 *              re-handshake after the pen said NOT_READY.
 *   UP         a session is in force: commands, heartbeats, the lease, STATUS.
 *   LOST       the pen is lost (lost() was called).  If it was lost as not
 *              answering while its transport stays open, a HELLO probes it
 *              every reprobe_ms (each probe retransmitted like any HELLO) and
 *              a HELLO_REPLY starts a new session; otherwise only free()
 *              remains.
 *
 * ready() is called once a handshake is done AND the pen's first STATUS after
 * it has arrived (PROTOCOL.md 9: the first STATUS comes within one period of
 * the HELLO_REPLY), so that the owner never sees a pen whose state, setpoints
 * and cartridge are not known yet.  A pen that sends no STATUS within the
 * peer timeout after its HELLO_REPLY is treated as not answering.
 *
 * Timing: a single CLOCK_MONOTONIC timer (accuracy 1 us), re-armed after
 * every event at the earliest of the link's own deadline
 * (mnp_link_next_deadline: retransmission, heartbeat, peer loss), the next
 * lease renewal, the silence probe and a coalesced changed() emission.
 *
 * Reboot detection (PROTOCOL.md 9.3, 10): a pen that reset is booting (it
 * ignores everything), then without a session: it sends nothing and NAKs
 * every command but STOP with NOT_READY.  So:
 *   1. a NOT_READY NAK to a command means the pen has no session with us
 *      (it rebooted, or it dropped us as a lost host): re-handshake;
 *   2. a pen that has been silent for half the peer timeout is probed with a
 *      HELLO (the only frame a pen without a session answers with anything
 *      but NOT_READY); a pen that rebooted answers it once booted;
 *   3. a HELLO_REPLY (to either) whose boot id differs from the one of the
 *      previous handshake is the proof: reset() is called, every queued
 *      command fails with -ENOTCONN (nothing is resumed, 9.3), then the new
 *      identity is taken and ready() is called.  A stale HELLO_REPLY with a
 *      different boot id also triggers a re-handshake.
 * A pen that says nothing within the peer timeout, probe or not, is lost.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mnp/link.h>
#include "pen-link.h"

#ifndef _cleanup_
#define _cleanup_(f) __attribute__((cleanup(f)))
#endif

#define QUEUE_MAX 16                            /* commands waiting behind the one in flight */
#define ACTUAL_INTERVAL_US UINT64_C(100000)     /* ActualDepth/ActualSpeed: at most 10 changes/s */
#define MESSAGE_MAX 256
#define USEC_PER_MSEC UINT64_C(1000)

enum phase {
        PHASE_HANDSHAKE,
        PHASE_UP,
        PHASE_LOST,
};

/* A command (or a STOP's caller) waiting for its answer, then for its done(). */
struct cmd {
        struct cmd *next;
        struct mnp_msg msg;
        mnd_pen_done_fn done;
        void *userdata;
        bool lease_before;              /* START: whether the lease was renewed before it */
        int error;
        char message[MESSAGE_MAX];
};

struct cmd_list {
        struct cmd *head, *tail;
        size_t n;
};

struct mnd_pen_link {
        unsigned n_ref;
        bool freed;                     /* the owner called free(); memory lives until the last dispatch ends */

        sd_event *event;
        sd_event_source *timer;
        sd_event_source *defer;         /* completions and deferred transport errors */
        struct mnd_transport *transport;
        bool transport_gone;
        int write_error;                /* a failed write, handled from the defer source */

        struct mnd_link_settings settings;
        struct mnd_pen_link_callbacks cb;
        void *userdata;

        struct mnp_link link;
        struct mnp_decoder decoder;

        enum phase phase;
        uint64_t handshake_deadline_us;
        bool probing;                   /* a HELLO sent because the pen went quiet */
        bool awaiting_status;           /* handshake done, ready() waits for the first STATUS */
        uint64_t status_deadline_us;    /* ... which must come by then */
        bool reprobe;                   /* LOST as not answering: probe with a HELLO now and then */
        uint64_t next_probe_us;
        bool have_identity;
        struct mnd_pen_identity identity;
        struct mnd_pen_status status;

        struct cmd_list queue;          /* not sent yet */
        struct cmd *inflight;           /* sent, not answered; NULL also when a STOP cancelled it */
        struct cmd_list stop_waiters;
        bool stop_outstanding;          /* a STOP was sent and not answered yet */
        struct cmd_list completed;      /* waiting for their done() from the defer source */

        bool lease_wanted;              /* renew the lease with every heartbeat */
        uint64_t last_renew_us;

        uint64_t actual_emitted_us;
        uint32_t reported_depth_actual, reported_speed_actual;
        unsigned actual_pending;

        uint64_t unexpected_frames;
        uint64_t tx_dropped;
};

/* ---- small helpers ---------------------------------------------------------- */

static uint64_t now_us(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000) + (uint64_t) ts.tv_nsec / 1000u;
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

static void cmd_list_push(struct cmd_list *list, struct cmd *c) {
        c->next = NULL;
        if (list->tail)
                list->tail->next = c;
        else
                list->head = c;
        list->tail = c;
        list->n++;
}

static struct cmd *cmd_list_pop(struct cmd_list *list) {
        struct cmd *c = list->head;

        if (!c)
                return NULL;
        list->head = c->next;
        if (!list->head)
                list->tail = NULL;
        list->n--;
        c->next = NULL;
        return c;
}

static void cmd_list_free(struct cmd_list *list) {
        struct cmd *c;

        while ((c = cmd_list_pop(list)))
                free(c);
}

void mnd_link_settings_default(struct mnd_link_settings *s) {
        if (!s)
                return;
        *s = (struct mnd_link_settings) {
                .heartbeat_ms = 50,
                .lease_ms = 200,
                .retransmit_ms = 30,
                .retries = 3,
                .peer_timeout_ms = 250,
                .handshake_timeout_ms = 2000,
                .reprobe_ms = 1000,
        };
}

const char *mnd_pen_state_name(enum mnd_pen_state s) {
        switch (s) {
        case MND_PEN_CONNECTING:
                return "connecting";
        case MND_PEN_IDLE:
                return "idle";
        case MND_PEN_RUNNING:
                return "running";
        case MND_PEN_FAULT:
                return "fault";
        case MND_PEN_DISCONNECTED:
                return "disconnected";
        }
        return "unknown";
}

static bool settings_valid(const struct mnd_link_settings *s) {
        return s->heartbeat_ms > 0 && s->heartbeat_ms <= UINT16_MAX &&
               s->lease_ms > s->heartbeat_ms && s->lease_ms <= UINT16_MAX &&
               s->retransmit_ms > 0 &&
               s->peer_timeout_ms > 0 &&
               s->handshake_timeout_ms > 0 &&
               /* keeps the microsecond arithmetic far from overflow */
               s->retransmit_ms <= 3600000u && s->peer_timeout_ms <= 3600000u &&
               s->handshake_timeout_ms <= 3600000u && s->retries <= 1000u && s->reprobe_ms <= 3600000u;
}

static uint64_t probe_after_us(const struct mnd_pen_link *l) {
        return (uint64_t) l->settings.peer_timeout_ms * USEC_PER_MSEC / 2;
}

/* The lease granted by START and renewed by heartbeats: ours, capped by the pen's. */
static uint16_t lease_ms(const struct mnd_pen_link *l) {
        uint32_t ms = l->settings.lease_ms;

        if (l->have_identity && l->identity.max_lease_ms > 0 && ms > l->identity.max_lease_ms)
                ms = l->identity.max_lease_ms;
        return (uint16_t) ms;
}

static void link_ref(struct mnd_pen_link *l) {
        l->n_ref++;
}

static void link_unref(struct mnd_pen_link *l) {
        if (--l->n_ref > 0)
                return;
        cmd_list_free(&l->queue);
        cmd_list_free(&l->stop_waiters);
        cmd_list_free(&l->completed);
        free(l->inflight);
        sd_event_source_disable_unref(l->timer);
        sd_event_source_disable_unref(l->defer);
        mnd_transport_free(l->transport);
        sd_event_unref(l->event);
        free(l);
}

/* For constructors: drops a half-built link (and the transport it owns). */
static void link_unrefp(struct mnd_pen_link **l) {
        if (*l) {
                (*l)->freed = true;
                link_unref(*l);
        }
}

static void kick(struct mnd_pen_link *l) {
        if (l->defer)
                (void) sd_event_source_set_enabled(l->defer, SD_EVENT_ONESHOT);
}

/* ---- human sentences ----------------------------------------------------------- */

static const char *fmt_depth(uint32_t um, char buf[static 16]) {
        return mnp_format_depth(um, buf, 16);
}

/* "set the depth to 1.00 mm" */
static void describe(const struct cmd *c, char *buf, size_t size) {
        char d[16];

        switch (c->msg.type) {
        case MNP_MSG_SET_DEPTH:
                snprintf(buf, size, "set the depth to %s", fmt_depth(c->msg.set_depth.depth_um, d));
                break;
        case MNP_MSG_SET_SPEED:
                snprintf(buf, size, "set the speed to %u Hz", (unsigned) c->msg.set_speed.speed_hz);
                break;
        case MNP_MSG_START:
                snprintf(buf, size, "start at %s and %u Hz", fmt_depth(c->msg.start.depth_um, d),
                         (unsigned) c->msg.start.speed_hz);
                break;
        case MNP_MSG_CLEAR_FAULT:
                snprintf(buf, size, "clear the fault");
                break;
        case MNP_MSG_STOP:
                snprintf(buf, size, "stop");
                break;
        default:
                snprintf(buf, size, "%s", mnp_msg_type_name(c->msg.type));
                break;
        }
}

static void fault_names(uint32_t flags, char *buf, size_t size) {
        size_t n = 0;

        buf[0] = '\0';
        for (unsigned code = 1; code <= MNP_FAULT_MAX; code++) {
                int k;

                if (!(flags & MNP_FAULT_FLAG(code)))
                        continue;
                k = snprintf(buf + n, size - n, "%s%s", n > 0 ? ", " : "", mnp_fault_name((uint8_t) code));
                if (k < 0 || (size_t) k >= size - n)
                        break;
                n += (size_t) k;
        }
        if (n == 0)
                snprintf(buf, size, "unknown");
}

static int nak_errno(uint8_t reason) {
        switch (reason) {
        case MNP_NAK_OUT_OF_RANGE:
                return -ERANGE;
        case MNP_NAK_OFF_STEP:
                return -EDOM;
        case MNP_NAK_BAD_STATE:
                return -EBUSY;
        case MNP_NAK_NO_CARTRIDGE:
                return -ENOMEDIUM;
        case MNP_NAK_FAULT_ACTIVE:
                return -EIO;
        case MNP_NAK_NOT_READY:
                return -ENOTCONN;
        default:
                return -EPROTO;
        }
}

static const char *bound_word(uint32_t value, uint32_t limit) {
        return value < limit ? "below its minimum of" : "above its maximum of";
}

/* Names the value a refused START was refused for, in the pen's order (12.4). */
static void range_sentence(const struct mnd_pen_link *l, const struct cmd *c, uint32_t limit,
                           char *buf, size_t size) {
        const struct mnp_pen_range *r = &l->identity.range;
        char v[16], lim[16];
        uint32_t depth, speed;

        switch (c->msg.type) {
        case MNP_MSG_SET_DEPTH:
                depth = c->msg.set_depth.depth_um;
                snprintf(buf, size, "the pen refused depth %s: %s %s", fmt_depth(depth, v),
                         bound_word(depth, limit), fmt_depth(limit, lim));
                return;
        case MNP_MSG_SET_SPEED:
                speed = c->msg.set_speed.speed_hz;
                snprintf(buf, size, "the pen refused speed %u Hz: %s %u Hz", speed, bound_word(speed, limit), limit);
                return;
        case MNP_MSG_START:
                depth = c->msg.start.depth_um;
                speed = c->msg.start.speed_hz;
                if (l->have_identity && c->msg.start.lease_ms > l->identity.max_lease_ms)
                        snprintf(buf, size, "the pen refused a lease of %u ms: above its maximum of %u ms",
                                 (unsigned) c->msg.start.lease_ms, limit);
                else if (!l->have_identity || depth < r->depth_min_um || depth > r->depth_max_um ||
                         depth > MNP_ABS_MAX_DEPTH_UM)
                        snprintf(buf, size, "the pen refused depth %s: %s %s", fmt_depth(depth, v),
                                 bound_word(depth, limit), fmt_depth(limit, lim));
                else
                        snprintf(buf, size, "the pen refused speed %u Hz: %s %u Hz", speed,
                                 bound_word(speed, limit), limit);
                return;
        default:
                snprintf(buf, size, "the pen refused a value out of its range (limit %u)", limit);
                return;
        }
}

static void nak_sentence(const struct mnd_pen_link *l, const struct cmd *c, const struct mnp_nak *nak,
                         char *buf, size_t size) {
        char what[96], names[96], d[16];

        describe(c, what, sizeof what);

        switch (nak->reason) {
        case MNP_NAK_OUT_OF_RANGE:
                range_sentence(l, c, nak->detail, buf, size);
                break;
        case MNP_NAK_OFF_STEP: {
                uint32_t depth = c->msg.type == MNP_MSG_START ? c->msg.start.depth_um : c->msg.set_depth.depth_um;
                char step[16];

                snprintf(buf, size, "the pen refused depth %s: not a multiple of its %s step",
                         fmt_depth(depth, d), fmt_depth(nak->detail, step));
                break;
        }
        case MNP_NAK_BAD_STATE:
                if (nak->detail <= MNP_STATE_FAULT)
                        snprintf(buf, size, "the pen refused to %s: not possible while it is %s", what,
                                 mnp_state_name((uint8_t) nak->detail));
                else
                        snprintf(buf, size, "the pen refused to %s: not possible in its current state", what);
                break;
        case MNP_NAK_NO_CARTRIDGE:
                snprintf(buf, size, "the pen refused to %s: no cartridge is inserted", what);
                break;
        case MNP_NAK_FAULT_ACTIVE:
                fault_names(nak->detail, names, sizeof names);
                if (c->msg.type == MNP_MSG_CLEAR_FAULT)
                        snprintf(buf, size, "the pen could not clear the fault: still active (%s)", names);
                else
                        snprintf(buf, size, "the pen refused to %s: a fault is active (%s)", what, names);
                break;
        case MNP_NAK_NOT_READY:
                snprintf(buf, size, "the pen refused to %s: it has no session with the host "
                         "(it restarted or lost the connection); reconnecting", what);
                break;
        default:
                snprintf(buf, size, "the pen refused to %s: %s (%u)", what,
                         mnp_nak_reason_name(nak->reason), (unsigned) nak->detail);
                break;
        }
}

/* ---- completions ------------------------------------------------------------------ */

static void complete(struct mnd_pen_link *l, struct cmd *c, int error, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

static void complete(struct mnd_pen_link *l, struct cmd *c, int error, const char *fmt, ...) {
        c->error = error;
        c->message[0] = '\0';
        if (fmt) {
                va_list ap;

                va_start(ap, fmt);
                vsnprintf(c->message, sizeof c->message, fmt, ap);
                va_end(ap);
        }
        cmd_list_push(&l->completed, c);
        kick(l);
}

static void complete_described(struct mnd_pen_link *l, struct cmd *c, int error) {
        char what[96];

        describe(c, what, sizeof what);
        switch (error) {
        case -ECANCELED:
                if (l->freed)
                        complete(l, c, error, "the request to %s was cancelled: the pen link was closed", what);
                else
                        complete(l, c, error, "the request to %s was cancelled by a stop", what);
                break;
        case -ETIMEDOUT:
                complete(l, c, error, "the pen did not answer the request to %s", what);
                break;
        case -ENODEV:
                complete(l, c, error, "the pen went away before it answered the request to %s", what);
                break;
        case -ENOTCONN:
                complete(l, c, error, "the pen lost its session (it restarted or lost the connection) "
                         "before the request to %s was carried out", what);
                break;
        default:
                complete(l, c, error, "the request to %s failed: %s", what, strerror(-error));
                break;
        }
}

static void fail_queue(struct mnd_pen_link *l, int error) {
        struct cmd *c;

        while ((c = cmd_list_pop(&l->queue)))
                complete_described(l, c, error);
}

static void fail_inflight(struct mnd_pen_link *l, int error) {
        struct cmd *c = l->inflight;

        l->inflight = NULL;
        if (c)
                complete_described(l, c, error);
}

static void fail_stop_waiters(struct mnd_pen_link *l, int error, const char *message) {
        struct cmd *c;

        while ((c = cmd_list_pop(&l->stop_waiters)))
                complete(l, c, error, "%s", message);
}

static void dispatch_completions(struct mnd_pen_link *l) {
        struct cmd *c;

        /* Each one is off the list before its done() runs, so that done() may
         * free the link (which dispatches the rest) or queue more. */
        while ((c = cmd_list_pop(&l->completed))) {
                if (c->done)
                        c->done(l, c->error, c->error == 0 ? NULL : c->message, c->userdata);
                free(c);
        }
}

/* ---- sending -------------------------------------------------------------------------- */

static void link_write(struct mnd_pen_link *l, const uint8_t *wire, size_t n) {
        int r;

        if (l->transport_gone || l->write_error < 0 || !l->transport)
                return;
        r = mnd_transport_write(l->transport, wire, n);
        if (r == -ENOBUFS || r == -ENOMEM) {
                /* The pen is not reading: this frame is lost like any other,
                 * retransmission and peer loss take care of it. */
                l->tx_dropped++;
                return;
        }
        if (r < 0) {
                l->write_error = r;
                kick(l);
        }
}

static int send_msg(struct mnd_pen_link *l, uint64_t now, const struct mnp_msg *m, uint16_t *ret_seq) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        n = mnp_link_send(&l->link, now, m, wire, sizeof wire, ret_seq);
        if (n < 0)
                return (int) n;
        link_write(l, wire, (size_t) n);
        return 0;
}

static void send_reply(struct mnd_pen_link *l, uint64_t now, uint16_t seq, uint8_t reason, uint32_t detail) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        n = mnp_link_reply(&l->link, now, seq, reason, detail, wire, sizeof wire);
        if (n > 0)
                link_write(l, wire, (size_t) n);
}

static void send_cached_reply(struct mnd_pen_link *l) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        n = mnp_link_cached_reply(&l->link, wire, sizeof wire);
        if (n > 0)
                link_write(l, wire, (size_t) n);
}

static int send_hello(struct mnd_pen_link *l, uint64_t now) {
        struct mnp_msg m = {
                .type = MNP_MSG_HELLO,
                .hello = {
                        .min_version = MNP_PROTOCOL_VERSION_MIN,
                        .max_version = MNP_PROTOCOL_VERSION_MAX,
                        .caps = MNP_CAP_CARTRIDGE_ID | MNP_CAP_BATTERY | MNP_CAP_TEMPERATURE |
                                MNP_CAP_DEPTH_SENSOR,
                        .heartbeat_ms = (uint16_t) l->settings.heartbeat_ms,
                },
        };

        return send_msg(l, now, &m, NULL);
}

static void send_stop_frame(struct mnd_pen_link *l, uint64_t now) {
        /* STOP has its own slot: never -EBUSY; a new one replaces an unanswered one. */
        if (send_msg(l, now, &(struct mnp_msg) { .type = MNP_MSG_STOP }, NULL) >= 0)
                l->stop_outstanding = true;
}

/* Called after every mnp_link_reset(): the STOP slot was cleared with the rest. */
static void resend_stop_if_needed(struct mnd_pen_link *l, uint64_t now) {
        if (l->stop_outstanding)
                send_stop_frame(l, now);
}

static void send_next_command(struct mnd_pen_link *l, uint64_t now) {
        struct cmd *c = l->queue.head;
        int r;

        if (l->phase != PHASE_UP || !c || l->link.pending.active || l->inflight)
                return;
        /* PROTOCOL.md 8.3: no START while a STOP of ours is unanswered. */
        if (c->msg.type == MNP_MSG_START && l->stop_outstanding)
                return;

        (void) cmd_list_pop(&l->queue);
        if (c->msg.type == MNP_MSG_START) {
                c->msg.start.lease_ms = lease_ms(l);
                c->lease_before = l->lease_wanted;
        }

        r = send_msg(l, now, &c->msg, NULL);
        if (r < 0) {
                complete_described(l, c, r);
                return;
        }
        l->inflight = c;

        if (c->msg.type == MNP_MSG_START) {
                /* Renewing is harmless if the pen refuses: it renews only while running. */
                l->lease_wanted = true;
                l->last_renew_us = now;
        }
}

static void send_heartbeat_if_due(struct mnd_pen_link *l, uint64_t now) {
        bool renew = l->lease_wanted && now >= l->last_renew_us + (uint64_t) l->settings.heartbeat_ms * USEC_PER_MSEC;
        struct mnp_msg m = { .type = MNP_MSG_HEARTBEAT };

        if (!renew && !mnp_link_heartbeat_due(&l->link, now))
                return;
        if (l->lease_wanted) {
                m.heartbeat.lease_ms = lease_ms(l);
                l->last_renew_us = now;
        }
        (void) send_msg(l, now, &m, NULL);
}

/* ---- state and callbacks ------------------------------------------------------------------ */

static bool emit_changed(struct mnd_pen_link *l, unsigned changes) {
        if (changes != 0 && l->cb.changed && !l->freed)
                l->cb.changed(l, changes, l->userdata);
        return !l->freed;
}

static unsigned set_state(struct mnd_pen_link *l, enum mnd_pen_state s) {
        if (l->status.state == s)
                return 0;
        l->status.state = s;
        return MND_PEN_CHANGED_STATE;
}

/* ActualDepth/ActualSpeed: the bits to report now, at most every ACTUAL_INTERVAL_US. */
static unsigned take_actual(struct mnd_pen_link *l, uint64_t now) {
        unsigned bits = 0;

        if (l->status.depth_actual_um != l->reported_depth_actual)
                bits |= MND_PEN_CHANGED_ACTUAL_DEPTH;
        if (l->status.speed_actual_hz != l->reported_speed_actual)
                bits |= MND_PEN_CHANGED_ACTUAL_SPEED;
        l->actual_pending = bits;
        if (bits == 0)
                return 0;
        if (l->actual_emitted_us != 0 && now < l->actual_emitted_us + ACTUAL_INTERVAL_US)
                return 0;

        l->reported_depth_actual = l->status.depth_actual_um;
        l->reported_speed_actual = l->status.speed_actual_hz;
        l->actual_emitted_us = now;
        l->actual_pending = 0;
        return bits;
}

static void arm_timer(struct mnd_pen_link *l);

static void link_lost(struct mnd_pen_link *l, int error) {
        int cerr = error == -ETIMEDOUT ? -ETIMEDOUT : -ENODEV;
        unsigned changes;

        if (l->phase == PHASE_LOST)
                return;
        l->phase = PHASE_LOST;
        l->lease_wanted = false;
        l->probing = false;
        l->awaiting_status = false;
        l->actual_pending = 0;
        (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);

        /* Not answering, but still connected: it may come back (a firmware hang that ends, a
         * pen that was busy).  Probe it now and then; nothing of the old session survives. */
        l->reprobe = error == -ETIMEDOUT && l->settings.reprobe_ms > 0 && l->transport &&
                     !l->transport_gone && l->write_error >= 0;
        if (l->reprobe) {
                uint64_t now = now_us();

                mnp_link_reset(&l->link, now);
                l->next_probe_us = now + (uint64_t) l->settings.reprobe_ms * USEC_PER_MSEC;
        }

        fail_inflight(l, cerr);
        fail_queue(l, cerr);
        fail_stop_waiters(l, cerr, cerr == -ETIMEDOUT ? "the pen did not acknowledge the stop: it is not answering"
                                                     : "the pen went away before it acknowledged the stop");
        l->stop_outstanding = false;

        changes = set_state(l, MND_PEN_DISCONNECTED);
        if (!emit_changed(l, changes))
                return;
        if (l->cb.lost) {
                l->cb.lost(l, error, l->userdata);
                if (l->freed)
                        return;
        }
        if (l->reprobe)
                arm_timer(l);
}

/* A lost link that was probing its pen gives up: the transport is gone. */
static void reprobe_give_up(struct mnd_pen_link *l, int error) {
        if (l->phase != PHASE_LOST || !l->reprobe)
                return;
        l->reprobe = false;
        (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        if (l->cb.lost)
                l->cb.lost(l, error, l->userdata);
}

/* The pen has no session with us (NOT_READY) or may have reset: a new handshake. */
static void start_rehandshake(struct mnd_pen_link *l, uint64_t now) {
        if (l->phase != PHASE_UP)
                return;

        l->phase = PHASE_HANDSHAKE;
        l->handshake_deadline_us = now + (uint64_t) l->settings.handshake_timeout_ms * USEC_PER_MSEC;
        l->probing = false;
        l->awaiting_status = false;
        l->lease_wanted = false;
        l->actual_pending = 0;

        /* PROTOCOL.md 9, step 1: forget what is pending. */
        mnp_link_reset(&l->link, now);
        fail_inflight(l, -ENOTCONN);
        fail_queue(l, -ENOTCONN);
        resend_stop_if_needed(l, now);

        (void) emit_changed(l, set_state(l, MND_PEN_CONNECTING));
}

static void handshake_done(struct mnd_pen_link *l, uint64_t now, const struct mnp_hello_reply *r) {
        bool reset;
        unsigned changes;

        if (r->version < MNP_PROTOCOL_VERSION_MIN || r->version > MNP_PROTOCOL_VERSION_MAX ||
            r->depth_step_um == 0 || r->depth_min_um > r->depth_max_um ||
            r->speed_min_hz > r->speed_max_hz || r->max_lease_ms == 0) {
                if (l->phase == PHASE_LOST) {
                        reprobe_give_up(l, -EPROTO);
                        return;
                }
                link_lost(l, r->version < MNP_PROTOCOL_VERSION_MIN || r->version > MNP_PROTOCOL_VERSION_MAX ?
                          -EPROTONOSUPPORT : -EPROTO);
                return;
        }

        reset = l->have_identity && r->boot_id != l->identity.boot_id;

        /* PROTOCOL.md 9, step 3.  The pen is at rest after a HELLO. */
        mnp_link_reset(&l->link, now);
        l->probing = false;
        l->reprobe = false;
        l->lease_wanted = false;
        fail_inflight(l, -ENOTCONN);    /* nothing but the HELLO can be in flight; be safe */

        if (reset) {
                /* 9.3: everything of the old boot is gone; nothing is resumed. */
                fail_queue(l, -ENOTCONN);
                if (!emit_changed(l, set_state(l, MND_PEN_CONNECTING)))
                        return;
                if (l->cb.reset) {
                        l->cb.reset(l, l->userdata);
                        if (l->freed)
                                return;
                }
        }

        l->identity = (struct mnd_pen_identity) {
                .kind = l->transport ? l->transport->ops->kind : MNP_TRANSPORT_USB,
                .range = {
                        .depth_min_um = r->depth_min_um,
                        .depth_max_um = r->depth_max_um,
                        .depth_step_um = r->depth_step_um,
                        .speed_min_hz = r->speed_min_hz,
                        .speed_max_hz = r->speed_max_hz,
                },
                .max_lease_ms = r->max_lease_ms,
                .caps = r->caps,
                .boot_id = r->boot_id,
                .version = r->version,
        };
        memcpy(l->identity.serial, r->serial, sizeof l->identity.serial);
        memcpy(l->identity.model, r->model, sizeof l->identity.model);
        memcpy(l->identity.firmware, r->firmware, sizeof l->identity.firmware);
        l->identity.serial[MNP_MAX_STR] = l->identity.model[MNP_MAX_STR] = l->identity.firmware[MNP_MAX_STR] = '\0';
        l->have_identity = true;
        l->phase = PHASE_UP;

        resend_stop_if_needed(l, now);

        /* State, setpoints and cartridge are the pen's first STATUS's to say: ready() waits for it. */
        changes = set_state(l, MND_PEN_CONNECTING);
        l->awaiting_status = true;
        l->status_deadline_us = now + (uint64_t) l->settings.peer_timeout_ms * USEC_PER_MSEC;
        (void) emit_changed(l, changes);
}

static void handle_status(struct mnd_pen_link *l, uint64_t now, const struct mnp_status *s) {
        struct mnd_pen_status *st = &l->status;
        unsigned changes = 0;
        uint32_t new_flags;
        enum mnd_pen_state state;

        switch (s->state) {
        case MNP_STATE_IDLE:
                state = MND_PEN_IDLE;
                break;
        case MNP_STATE_RUNNING:
                state = MND_PEN_RUNNING;
                break;
        case MNP_STATE_FAULT:
                state = MND_PEN_FAULT;
                break;
        default:
                /* A booting pen sends nothing; one that says so has reset. */
                start_rehandshake(l, now);
                return;
        }

        changes |= set_state(l, state);
        if (state == MND_PEN_FAULT)
                l->lease_wanted = false;

        if (st->depth_set_um != s->depth_set_um) {
                st->depth_set_um = s->depth_set_um;
                changes |= MND_PEN_CHANGED_DEPTH;
        }
        if (st->speed_set_hz != s->speed_set_hz) {
                st->speed_set_hz = s->speed_set_hz;
                changes |= MND_PEN_CHANGED_SPEED;
        }
        st->depth_actual_um = s->depth_actual_um;
        st->speed_actual_hz = s->speed_actual_hz;
        changes |= take_actual(l, now);

        if (strncmp(st->cartridge, s->cartridge_id, sizeof st->cartridge) != 0) {
                memcpy(st->cartridge, s->cartridge_id, sizeof st->cartridge);
                st->cartridge[MNP_MAX_STR] = '\0';
                changes |= MND_PEN_CHANGED_CARTRIDGE;
        }
        if (st->battery_percent != s->battery_percent) {
                st->battery_percent = s->battery_percent;
                changes |= MND_PEN_CHANGED_BATTERY;
        }
        if (st->temperature_dc != s->temperature_dc) {
                st->temperature_dc = s->temperature_dc;
                changes |= MND_PEN_CHANGED_TEMPERATURE;
        }
        if (st->needling_ms != s->needling_ms) {
                st->needling_ms = s->needling_ms;
                changes |= MND_PEN_CHANGED_NEEDLING;
        }

        new_flags = s->fault_flags & ~st->fault_flags;
        if (st->fault_flags != s->fault_flags) {
                uint8_t fault = st->fault;

                st->fault_flags = s->fault_flags;
                if (s->fault_flags == 0)
                        fault = 0;
                else if (new_flags != 0)
                        fault = (uint8_t) (__builtin_ctz(new_flags) + 1);
                st->fault = fault;
                changes |= MND_PEN_CHANGED_FAULT;
        }

        if (l->awaiting_status) {
                /* The first STATUS of this session: now the pen is known. */
                l->awaiting_status = false;
                if (l->cb.ready) {
                        l->cb.ready(l, l->userdata);
                        if (l->freed || l->phase != PHASE_UP)
                                return;
                }
        }

        if (!emit_changed(l, changes))
                return;

        /* Faults first seen in STATUS (their event was lost or came before our session). */
        for (unsigned code = 1; code <= 32 && new_flags != 0; code++) {
                if (!(new_flags & (UINT32_C(1) << (code - 1))))
                        continue;
                new_flags &= ~(UINT32_C(1) << (code - 1));
                if (l->cb.fault) {
                        l->cb.fault(l, (uint8_t) code, l->userdata);
                        if (l->freed)
                                return;
                }
        }
}

static void handle_fault_event(struct mnd_pen_link *l, const struct mnp_fault_event *ev) {
        struct mnd_pen_status *st = &l->status;
        bool is_new = !(st->fault_flags & MNP_FAULT_FLAG(ev->code));
        unsigned changes = 0;

        l->lease_wanted = false;        /* the pen stopped and revoked the lease */
        changes |= set_state(l, MND_PEN_FAULT);
        if (st->fault_flags != ev->fault_flags || st->fault != ev->code) {
                st->fault_flags = ev->fault_flags | MNP_FAULT_FLAG(ev->code);
                st->fault = ev->code;
                changes |= MND_PEN_CHANGED_FAULT;
        }
        if (!emit_changed(l, changes))
                return;
        if (is_new && l->cb.fault)
                l->cb.fault(l, ev->code, l->userdata);
}

static void handle_cartridge_event(struct mnd_pen_link *l, const struct mnp_cartridge_event *ev) {
        char id[MNP_MAX_STR + 1] = "";

        if (ev->present)
                memcpy(id, ev->id, sizeof id);
        id[MNP_MAX_STR] = '\0';
        if (strcmp(id, l->status.cartridge) == 0)
                return;
        memcpy(l->status.cartridge, id, sizeof id);
        (void) emit_changed(l, MND_PEN_CHANGED_CARTRIDGE);
}

static void stop_answered(struct mnd_pen_link *l, const struct mnp_nak *nak) {
        struct cmd *c;

        l->stop_outstanding = false;
        if (!nak) {
                /* The pen is not running any more, whatever the last STATUS said. */
                while ((c = cmd_list_pop(&l->stop_waiters)))
                        complete(l, c, 0, NULL);
                (void) emit_changed(l, l->status.state == MND_PEN_RUNNING ? set_state(l, MND_PEN_IDLE) : 0);
                return;
        }

        while ((c = cmd_list_pop(&l->stop_waiters))) {
                char sentence[MESSAGE_MAX];

                nak_sentence(l, c, nak, sentence, sizeof sentence);
                complete(l, c, nak_errno(nak->reason), "%s", sentence);
        }
}

static void command_answered(struct mnd_pen_link *l, uint64_t now, uint8_t type, const struct mnp_nak *nak) {
        struct cmd *c = l->inflight;
        char sentence[MESSAGE_MAX];

        l->inflight = NULL;

        if (c && c->msg.type != type) {
                /* Cannot happen with one frame in flight; never leave a caller hanging. */
                complete(l, c, -EPROTO, "the pen answered a different request than the one in flight");
                c = NULL;
        }

        if (c && !nak) {
                if (c->msg.type == MNP_MSG_CLEAR_FAULT && l->status.state == MND_PEN_FAULT) {
                        /* 12.5: an ACK means no fault is left and the pen is idle. */
                        unsigned changes = set_state(l, MND_PEN_IDLE);

                        if (l->status.fault_flags != 0 || l->status.fault != 0)
                                changes |= MND_PEN_CHANGED_FAULT;
                        l->status.fault_flags = 0;
                        l->status.fault = 0;
                        complete(l, c, 0, NULL);
                        (void) emit_changed(l, changes);
                        return;
                }
                complete(l, c, 0, NULL);
                return;
        }

        if (c) {
                nak_sentence(l, c, nak, sentence, sizeof sentence);
                if (c->msg.type == MNP_MSG_START)
                        /* Keep renewing only a session that was already running. */
                        l->lease_wanted = c->lease_before && l->status.state == MND_PEN_RUNNING;
                complete(l, c, nak_errno(nak->reason), "%s", sentence);
        }
        /* c == NULL: a command a STOP cancelled; its caller already has -ECANCELED. */

        if (nak && nak->reason == MNP_NAK_NOT_READY)
                start_rehandshake(l, now);
}

static void handle_answer(struct mnd_pen_link *l, uint64_t now, const struct mnp_frame *f,
                          const struct mnp_msg *m, uint8_t answered) {
        const struct mnp_nak *nak = f->type == MNP_MSG_NAK ? &m->nak : NULL;

        if (answered == MNP_MSG_STOP) {
                stop_answered(l, nak);
                return;
        }

        if (answered == MNP_MSG_HELLO) {
                l->probing = false;
                if (f->type == MNP_MSG_HELLO_REPLY)
                        handshake_done(l, now, &m->hello_reply);
                else if (l->phase == PHASE_LOST)
                        /* A pen that refuses our HELLO will refuse it again: stop probing it. */
                        reprobe_give_up(l, nak && nak->reason == MNP_NAK_UNSUPPORTED_VERSION ?
                                        -EPROTONOSUPPORT : -EPROTO);
                else
                        link_lost(l, nak && nak->reason == MNP_NAK_UNSUPPORTED_VERSION ? -EPROTONOSUPPORT : -EPROTO);
                return;
        }

        command_answered(l, now, answered, nak);
}

static void handle_frame(struct mnd_pen_link *l, uint64_t now, const struct mnp_frame *f) {
        struct mnp_msg m;
        uint8_t answered = 0;
        enum mnp_link_rx rx;
        bool reliable = mnp_msg_type_is_reliable(f->type);
        int r;

        r = mnp_msg_unpack(f->type, f->payload, f->payload_len, &m);
        rx = mnp_link_receive(&l->link, now, f, r >= 0 ? &m : NULL, &answered);

        if (r < 0) {
                /* 7.14, 15: NAK what we cannot read if it expects an answer. */
                l->unexpected_frames++;
                if (reliable && rx == MNP_LINK_RX_NEW)
                        send_reply(l, now, f->seq, r == -ENOMSG ? MNP_NAK_UNKNOWN_TYPE : MNP_NAK_MALFORMED,
                                   r == -ENOMSG ? f->type : 0);
                else if (reliable && rx == MNP_LINK_RX_DUPLICATE)
                        send_cached_reply(l);
                return;
        }

        switch (rx) {
        case MNP_LINK_RX_ANSWER:
                handle_answer(l, now, f, &m, answered);
                return;

        case MNP_LINK_RX_STALE:
                /* A HELLO_REPLY nobody asked for, from another boot: the pen reset. */
                if (f->type == MNP_MSG_HELLO_REPLY && l->phase == PHASE_UP && l->have_identity &&
                    m.hello_reply.boot_id != l->identity.boot_id)
                        start_rehandshake(l, now);
                return;

        case MNP_LINK_RX_DUPLICATE:
                send_cached_reply(l);
                return;

        case MNP_LINK_RX_NEW:
                break;
        }

        switch (f->type) {
        case MNP_MSG_STATUS:
                if (l->phase == PHASE_UP)
                        handle_status(l, now, &m.status);
                return;

        case MNP_MSG_FAULT:
                send_reply(l, now, f->seq, 0, 0);
                if (l->phase == PHASE_UP)
                        handle_fault_event(l, &m.fault);
                return;

        case MNP_MSG_CARTRIDGE:
                send_reply(l, now, f->seq, 0, 0);
                if (l->phase == PHASE_UP)
                        handle_cartridge_event(l, &m.cartridge);
                return;

        case MNP_MSG_HEARTBEAT:
                return;         /* alive: mnp_link_receive() noted it */

        default:
                /* Well-formed but not for a host: HELLO, a host command... */
                l->unexpected_frames++;
                if (reliable)
                        send_reply(l, now, f->seq, MNP_NAK_UNKNOWN_TYPE, f->type);
                return;
        }
}

/* ---- the clock ------------------------------------------------------------------------------ */

static void arm_timer(struct mnd_pen_link *l) {
        uint64_t d;

        if (l->freed || (l->phase == PHASE_LOST && !l->reprobe)) {
                (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
                return;
        }

        if (l->phase == PHASE_LOST) {
                /* The next probe, and the retransmissions of the current one. */
                d = l->next_probe_us;
                if (l->link.pending.active)
                        d = min_u64(d, l->link.pending.deadline_us);
        } else if (l->phase == PHASE_HANDSHAKE) {
                /* No heartbeats and no peer timeout before a session: HELLO
                 * retries and the handshake deadline are all there is. */
                d = l->handshake_deadline_us;
                if (l->link.pending.active)
                        d = min_u64(d, l->link.pending.deadline_us);
                if (l->link.stop.active)
                        d = min_u64(d, l->link.stop.deadline_us);
        } else {
                d = mnp_link_next_deadline(&l->link);
                if (l->lease_wanted)
                        d = min_u64(d, l->last_renew_us + (uint64_t) l->settings.heartbeat_ms * USEC_PER_MSEC);
                if (!l->link.pending.active)
                        d = min_u64(d, l->link.last_rx_us + probe_after_us(l));
                if (l->actual_pending)
                        d = min_u64(d, l->actual_emitted_us + ACTUAL_INTERVAL_US);
                if (l->awaiting_status)
                        d = min_u64(d, l->status_deadline_us);
        }

        if (d == UINT64_MAX) {
                (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_set_time(l->timer, d);
        (void) sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

static void on_poll_timeout(struct mnd_pen_link *l, uint8_t type) {
        struct cmd *c;

        if (type == MNP_MSG_STOP) {
                l->stop_outstanding = false;
                fail_stop_waiters(l, -ETIMEDOUT, "the pen did not acknowledge the stop: it is not answering");
                if (l->phase == PHASE_UP)
                        link_lost(l, -ETIMEDOUT);
                return;
        }
        if (type == MNP_MSG_HELLO) {
                /* Handshake: the next HELLO goes at once.  Probe: likewise,
                 * until the peer timeout decides. */
                l->probing = false;
                return;
        }

        c = l->inflight;
        l->inflight = NULL;
        if (!c)
                return;         /* cancelled by a STOP: its slot is simply free again */
        complete_described(l, c, -ETIMEDOUT);
        if (l->phase == PHASE_UP)
                link_lost(l, -ETIMEDOUT);
}

/* A lost pen that may come back: retransmit the probe, send the next one when due. */
static void reprobe_run(struct mnd_pen_link *l) {
        uint64_t now = now_us();

        if (l->write_error < 0) {
                reprobe_give_up(l, l->write_error);
                return;
        }
        for (unsigned i = 0; i < 8; i++) {
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                uint8_t type = 0;
                ssize_t n;

                n = mnp_link_poll(&l->link, now, wire, sizeof wire, &type);
                if (n > 0) {
                        link_write(l, wire, (size_t) n);
                        continue;
                }
                break;  /* nothing due, or the probe timed out: the next one comes at its time */
        }
        if (!l->link.pending.active && now >= l->next_probe_us) {
                mnp_link_reset(&l->link, now);
                (void) send_hello(l, now);
                l->next_probe_us = now + (uint64_t) l->settings.reprobe_ms * USEC_PER_MSEC;
        }
        arm_timer(l);
}

/* Everything time-driven, then re-arms the timer.  Runs from event sources only. */
static void link_run(struct mnd_pen_link *l) {
        uint64_t now;

        if (l->freed)
                return;
        if (l->phase == PHASE_LOST) {
                if (l->reprobe)
                        reprobe_run(l);
                return;
        }

        if (l->write_error < 0) {
                link_lost(l, l->write_error);
                return;
        }

        now = now_us();

        for (unsigned i = 0; i < 8; i++) {
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                uint8_t type = 0;
                ssize_t n;

                n = mnp_link_poll(&l->link, now, wire, sizeof wire, &type);
                if (n == 0)
                        break;
                if (n > 0) {
                        link_write(l, wire, (size_t) n);
                        continue;
                }
                if (n != -ETIMEDOUT)
                        break;
                on_poll_timeout(l, type);
                if (l->freed || l->phase == PHASE_LOST)
                        return;
        }

        if (l->phase == PHASE_HANDSHAKE) {
                if (now >= l->handshake_deadline_us) {
                        link_lost(l, -ETIMEDOUT);
                        return;
                }
                if (!l->link.pending.active)
                        (void) send_hello(l, now);
        } else {
                unsigned changes;

                if (mnp_link_peer_lost(&l->link, now) ||
                    (l->awaiting_status && now >= l->status_deadline_us)) {
                        /* Silent, or answering the handshake but sending no STATUS: not answering. */
                        link_lost(l, -ETIMEDOUT);
                        return;
                }
                if (!l->link.pending.active && now >= l->link.last_rx_us + probe_after_us(l)) {
                        if (send_hello(l, now) >= 0)
                                l->probing = true;
                }
                send_next_command(l, now);
                send_heartbeat_if_due(l, now);

                changes = take_actual(l, now);
                if (!emit_changed(l, changes))
                        return;
                if (l->phase != PHASE_UP && l->phase != PHASE_HANDSHAKE)
                        return;
        }

        arm_timer(l);
}

/* ---- event sources -------------------------------------------------------------------------- */

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct mnd_pen_link *l = userdata;

        link_ref(l);
        link_run(l);
        link_unref(l);
        return 0;
}

static int on_defer(sd_event_source *s, void *userdata) {
        struct mnd_pen_link *l = userdata;

        link_ref(l);
        link_run(l);
        if (!l->freed)
                dispatch_completions(l);
        link_unref(l);
        return 0;
}

static void on_transport_data(struct mnd_transport *t, const uint8_t *data, size_t len, void *userdata) {
        struct mnd_pen_link *l = userdata;
        uint64_t now = now_us();
        size_t off = 0;

        link_ref(l);
        while (off < len && !l->freed && (l->phase != PHASE_LOST || l->reprobe)) {
                struct mnp_frame f;
                size_t consumed = 0;
                int r;

                /* Errors are counted in the decoder's stats and the decoder resynchronises. */
                r = mnp_decoder_feed(&l->decoder, data + off, len - off, &consumed, &f);
                off += consumed;
                if (r > 0)
                        handle_frame(l, now, &f);
                else if (r == 0 && consumed == 0)
                        break;
        }
        link_run(l);
        link_unref(l);
}

static void on_transport_gone(struct mnd_transport *t, int error, void *userdata) {
        struct mnd_pen_link *l = userdata;

        link_ref(l);
        l->transport_gone = true;
        if (!l->freed) {
                if (l->phase == PHASE_LOST)
                        reprobe_give_up(l, error < 0 ? error : -ENODEV);
                else
                        link_lost(l, error < 0 ? error : -ENODEV);
        }
        link_unref(l);
}

/* ---- public API ------------------------------------------------------------------------------ */

int mnd_pen_link_new(sd_event *event, struct mnd_transport *t, const struct mnd_link_settings *s,
                     const struct mnd_pen_link_callbacks *cb, void *userdata, struct mnd_pen_link **ret) {
        _cleanup_(link_unrefp) struct mnd_pen_link *l = NULL;
        struct mnd_link_settings def;
        uint64_t now;
        int r;

        if (!s) {
                mnd_link_settings_default(&def);
                s = &def;
        }
        if (!event || !t || !ret || !settings_valid(s)) {
                mnd_transport_free(t);
                return -EINVAL;
        }

        l = calloc(1, sizeof *l);
        if (!l) {
                mnd_transport_free(t);
                return -ENOMEM;
        }
        /* From here on the link owns the transport, also on failure. */
        l->n_ref = 1;
        l->event = sd_event_ref(event);
        l->transport = t;
        l->settings = *s;
        if (cb)
                l->cb = *cb;
        l->userdata = userdata;
        l->status = (struct mnd_pen_status) {
                .state = MND_PEN_CONNECTING,
                .battery_percent = 255,
        };

        now = now_us();
        mnp_link_init(&l->link, &(struct mnp_link_config) {
                .rto_us = s->retransmit_ms * 1000u,
                .max_retries = s->retries,
                .heartbeat_us = s->heartbeat_ms * 1000u,
                .peer_timeout_us = s->peer_timeout_ms * 1000u,
        }, now);
        mnp_decoder_init(&l->decoder);

        r = sd_event_add_time(event, &l->timer, CLOCK_MONOTONIC, now, 1, on_timer, l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(l->timer, "mnd-pen-link-timer");

        r = sd_event_add_defer(event, &l->defer, on_defer, l);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(l->defer, SD_EVENT_OFF);
        (void) sd_event_source_set_description(l->defer, "mnd-pen-link-defer");

        mnd_transport_set_callbacks(t, on_transport_data, on_transport_gone, l);

        l->phase = PHASE_HANDSHAKE;
        l->handshake_deadline_us = now + (uint64_t) s->handshake_timeout_ms * USEC_PER_MSEC;
        (void) send_hello(l, now);
        arm_timer(l);

        *ret = l;
        l = NULL;
        return 0;
}

struct mnd_pen_link *mnd_pen_link_free(struct mnd_pen_link *l) {
        if (!l || l->freed)
                return NULL;

        l->freed = true;
        l->lease_wanted = false;

        /* Like a host that vanished: no STOP is sent; the lease stops the pen. */
        fail_inflight(l, -ECANCELED);
        fail_queue(l, -ECANCELED);
        fail_stop_waiters(l, -ECANCELED, "the stop was not acknowledged before the pen link was closed");
        dispatch_completions(l);

        l->timer = sd_event_source_disable_unref(l->timer);
        l->defer = sd_event_source_disable_unref(l->defer);
        l->transport = mnd_transport_free(l->transport);

        link_unref(l);
        return NULL;
}

const struct mnd_pen_identity *mnd_pen_link_identity(const struct mnd_pen_link *l) {
        if (!l || !l->have_identity)
                return NULL;
        return &l->identity;
}

const struct mnd_pen_status *mnd_pen_link_status(const struct mnd_pen_link *l) {
        if (!l)
                return NULL;
        return &l->status;
}

bool mnd_pen_link_may_recover(const struct mnd_pen_link *l) {
        return l && !l->freed && l->phase == PHASE_LOST && l->reprobe;
}

const struct mnp_decoder_stats *mnd_pen_link_decoder_stats(const struct mnd_pen_link *l) {
        if (!l)
                return NULL;
        return &l->decoder.stats;
}

static int queue_command(struct mnd_pen_link *l, const struct mnp_msg *m, mnd_pen_done_fn done, void *userdata) {
        struct cmd *c;

        if (!l)
                return -EINVAL;
        if (l->freed || l->phase != PHASE_UP)
                return -ENOTCONN;
        if (l->queue.n >= QUEUE_MAX)
                return -EBUSY;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->msg = *m;
        c->done = done;
        c->userdata = userdata;
        cmd_list_push(&l->queue, c);

        /* Straight out if nothing is in flight; done() always comes later. */
        send_next_command(l, now_us());
        arm_timer(l);
        return 0;
}

int mnd_pen_link_set_depth(struct mnd_pen_link *l, uint32_t depth_um, mnd_pen_done_fn done, void *userdata) {
        return queue_command(l, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = depth_um },
                             done, userdata);
}

int mnd_pen_link_set_speed(struct mnd_pen_link *l, uint32_t speed_hz, mnd_pen_done_fn done, void *userdata) {
        if (speed_hz > UINT16_MAX)
                return -ERANGE;         /* cannot be said on the wire (and no pen runs that fast) */
        return queue_command(l, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = (uint16_t) speed_hz },
                             done, userdata);
}

int mnd_pen_link_start(struct mnd_pen_link *l, uint32_t depth_um, uint32_t speed_hz,
                       mnd_pen_done_fn done, void *userdata) {
        if (speed_hz > UINT16_MAX)
                return -ERANGE;
        return queue_command(l, &(struct mnp_msg) {
                .type = MNP_MSG_START,
                .start = { .depth_um = depth_um, .speed_hz = (uint16_t) speed_hz, .lease_ms = 1 /* set when sent */ },
        }, done, userdata);
}

int mnd_pen_link_clear_fault(struct mnd_pen_link *l, mnd_pen_done_fn done, void *userdata) {
        return queue_command(l, &(struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT }, done, userdata);
}

int mnd_pen_link_stop(struct mnd_pen_link *l, mnd_pen_done_fn done, void *userdata) {
        struct cmd *waiter = NULL;
        uint64_t now;

        if (!l)
                return -EINVAL;
        if (l->freed)
                return -ENODEV;

        now = now_us();

        if (l->phase == PHASE_LOST) {
                /* Not answering, or unplugged: its lease stops it.  If the
                 * transport is still there, one last STOP costs nothing. */
                (void) send_msg(l, now, &(struct mnp_msg) { .type = MNP_MSG_STOP }, NULL);
                return -ENODEV;
        }

        /* Lease renewal ends now: heartbeats carry lease_ms 0 from here on. */
        l->lease_wanted = false;

        /* Everything queued or in flight is overtaken.  The one in flight is
         * never sent again once the STOP is sent (mnp_link_send sees to it,
         * PROTOCOL.md 8.3): it keeps its slot until its answer or its next
         * retransmission time. */
        fail_inflight(l, -ECANCELED);
        fail_queue(l, -ECANCELED);

        if (done) {
                waiter = calloc(1, sizeof *waiter);
                if (waiter) {
                        waiter->msg.type = MNP_MSG_STOP;
                        waiter->done = done;
                        waiter->userdata = userdata;
                        cmd_list_push(&l->stop_waiters, waiter);
                }
        }

        send_stop_frame(l, now);
        arm_timer(l);

        /* The STOP is out either way; without memory its caller cannot be told the outcome. */
        return done && !waiter ? -ENOMEM : 0;
}
