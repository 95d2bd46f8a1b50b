/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The simulated pen's firmware: link handling, the state machine, watchdogs
 * and a simple physical model, all driven by the caller's clock.
 *
 * Time moves only in sim_pen_run(): it walks from the last time it saw to the
 * requested one, stopping at every internal deadline (lease expiry, host lost,
 * boot end, STATUS, retransmissions, delayed frames, a 10 ms physics tick while
 * something moves), so that a lease that runs out between two calls still
 * stops the motor at the exact microsecond it ran out.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mnp/limits.h>
#include <mnp/link.h>
#include <mnp/message.h>
#include "pen-wire.h"
#include "pen.h"

#define USEC_PER_SEC  UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)

#define PEN_TICK_US            (10 * USEC_PER_MSEC)  /* physics step while something moves */
#define PEN_EVENTS_MAX         16                    /* reliable events waiting for the link */
#define PEN_AMBIENT_DC         250                   /* 25.0 C */
#define PEN_RUNNING_DC         400                   /* running warms the pen towards 40.0 C */
#define PEN_WARM_DC_PER_S      1                     /* 0.1 C/s */
#define PEN_COOL_DC_PER_S      2                     /* 0.2 C/s */
#define PEN_BATTERY_FAULT_PCT  2                     /* at or below: BATTERY fault; clears above */
#define PEN_BATTERY_MAINS      255

struct sim_pen {
        struct sim_pen_config cfg;
        struct mnp_limits limits;
        struct mnp_pen_range range;
        uint64_t now_us;                /* the time the model has reached */

        /* Firmware */
        uint64_t boot_rng;
        uint32_t boot_id;
        uint8_t state;                  /* enum mnp_pen_state */
        uint64_t boot_end_us;
        uint32_t fault_flags;
        struct mnp_lease lease;

        /* Physics */
        uint32_t depth_set_um, depth_actual_um;
        uint64_t depth_acc;             /* um*us travelled but not yet a whole um */
        uint64_t depth_since_us;        /* setpoint last changed (actuator timeout) */
        bool actuator_jammed;
        uint16_t speed_set_hz, speed_actual_hz;
        uint64_t speed_acc;             /* Hz*us of ramp not yet a whole Hz */
        bool moving;
        uint64_t motion_changed_us;
        uint64_t needling_us;
        uint8_t battery_percent;
        uint64_t drain_us;              /* running time not yet a whole percent */
        int16_t temperature_dc;
        uint64_t temp_acc;
        char cartridge[MNP_MAX_STR + 1];

        /* Link to the host */
        struct mnp_link link;
        struct mnp_decoder decoder;
        bool host_connected;
        uint64_t host_last_rx_us;
        uint64_t host_timeout_us;
        uint64_t next_status_us;
        struct mnp_msg events[PEN_EVENTS_MAX];  /* FAULT/CARTRIDGE waiting for the slot */
        size_t n_events;

        /* Transport */
        bool stalled, connected;
        uint8_t rx_buf[MNP_MAX_COBS_FRAME];     /* bytes of the frame being received */
        size_t rx_len;
        bool rx_overflow;
        struct pen_faults faults;
        struct pen_wq rx_delayed;
        struct pen_wq tx;
        uint8_t tx_cur[MNP_MAX_WIRE_FRAME];     /* the frame being handed out */
        size_t tx_cur_len, tx_cur_off;

        /* Counters */
        uint64_t frames_received, frames_sent, commands_acted, duplicates_ignored, naks_sent, bad_frames;
};

void sim_pen_config_default(struct sim_pen_config *cfg) {
        *cfg = (struct sim_pen_config) {
                .model = "MN-1",
                .serial = "MN1-000001",
                .firmware = "1.0.0",
                .depth_min_um = 0,
                .depth_max_um = 3000,
                .depth_step_um = 50,
                .speed_min_hz = 50,
                .speed_max_hz = 150,
                .max_lease_ms = 1000,
                .boot_ms = 100,
                .status_period_ms = 100,
                .actuator_um_per_s = 5000,
                .actuator_timeout_ms = 1000,
                .motor_ramp_hz_per_s = 2000,
                .mains_powered = false,
                .battery_drain_ms_per_percent = 30000,
                .overheat_dc = 450,
                .seed = 1,
        };
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

static bool string_valid(const char *s, size_t size) {
        size_t n = strnlen(s, size);

        if (n == 0 || n > MNP_MAX_STR || n >= size)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] < 0x20 || s[i] > 0x7e)
                        return false;
        return true;
}

static bool config_valid(const struct sim_pen_config *c) {
        return c->depth_step_um > 0 &&
               c->depth_min_um <= c->depth_max_um &&
               c->speed_min_hz > 0 &&
               c->speed_min_hz <= c->speed_max_hz &&
               c->max_lease_ms > 0 &&
               c->status_period_ms > 0 &&
               c->battery_drain_ms_per_percent > 0 &&
               string_valid(c->model, sizeof c->model) &&
               string_valid(c->serial, sizeof c->serial) &&
               string_valid(c->firmware, sizeof c->firmware);
}

/* ---- Outgoing frames ------------------------------------------------------ */

/* Every frame the firmware sends passes here: the cable and the fault injection. */
static void pen_emit(struct sim_pen *p, uint64_t t, const uint8_t *wire, size_t len) {
        uint8_t frame[MNP_MAX_WIRE_FRAME];
        uint64_t delay_us;
        unsigned copies;

        if (len < 2 || len > sizeof frame)
                return;

        p->frames_sent++;
        if (!p->connected)
                return;

        memcpy(frame, wire, len);
        copies = pen_faults_apply(&p->faults, frame + 1, len - 2, &delay_us);
        for (unsigned i = 0; i < copies; i++)
                (void) pen_wq_push(&p->tx, t + delay_us, frame, len);
}

static int pen_send(struct sim_pen *p, uint64_t t, const struct mnp_msg *m) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        n = mnp_link_send(&p->link, t, m, wire, sizeof wire, NULL);
        if (n < 0)
                return (int) n;
        pen_emit(p, t, wire, (size_t) n);
        return 0;
}

static int pen_reply(struct sim_pen *p, uint64_t t, uint16_t seq, uint8_t nak_reason, uint32_t detail) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        n = mnp_link_reply(&p->link, t, seq, nak_reason, detail, wire, sizeof wire);
        if (n < 0)
                return (int) n;
        if (nak_reason != 0)
                p->naks_sent++;
        pen_emit(p, t, wire, (size_t) n);
        return 0;
}

static int pen_ack(struct sim_pen *p, uint64_t t, uint16_t seq) {
        p->commands_acted++;
        return pen_reply(p, t, seq, 0, 0);
}

/* Sends queued FAULT/CARTRIDGE events while the link has room for them. */
static void pen_flush_events(struct sim_pen *p, uint64_t t) {
        if (p->stalled || !p->host_connected)
                return;

        while (p->n_events > 0) {
                int r = pen_send(p, t, &p->events[0]);

                if (r == -EBUSY)
                        return;  /* stop-and-wait: the next one goes when this is answered */
                /* Sent, or impossible to send: either way it leaves the queue. */
                memmove(p->events, p->events + 1, (p->n_events - 1) * sizeof p->events[0]);
                p->n_events--;
        }
}

static void pen_queue_event(struct sim_pen *p, uint64_t t, const struct mnp_msg *m) {
        if (!p->host_connected)
                return;  /* nobody to tell; the next host reads the state from STATUS */

        if (p->n_events == PEN_EVENTS_MAX) {
                memmove(p->events, p->events + 1, (PEN_EVENTS_MAX - 1) * sizeof p->events[0]);
                p->n_events--;
        }
        p->events[p->n_events++] = *m;
        pen_flush_events(p, t);
}

/* ---- Motor, faults and host ------------------------------------------------ */

static void motor_stop(struct sim_pen *p, uint64_t t) {
        if (p->moving) {
                p->moving = false;
                p->motion_changed_us = t;
        }
        p->speed_actual_hz = 0;
        p->speed_acc = 0;
}

static void pen_raise_fault(struct sim_pen *p, uint64_t t, enum mnp_fault code) {
        uint32_t flag = MNP_FAULT_FLAG(code);

        if (p->fault_flags & flag)
                return;
        p->fault_flags |= flag;
        if (code == MNP_FAULT_ACTUATOR)
                p->actuator_jammed = true;

        if (p->state == MNP_STATE_BOOTING)
                return;  /* boot ends in FAULT */

        motor_stop(p, t);
        mnp_lease_revoke(&p->lease);
        p->state = MNP_STATE_FAULT;

        pen_queue_event(p, t, &(struct mnp_msg) {
                .type = MNP_MSG_FAULT,
                .fault = { .code = (uint8_t) code, .fault_flags = p->fault_flags },
        });
}

/* The host is lost (PROTOCOL.md 10): the session ends, whatever was in flight
 * or queued is dropped.  The de-duplication record stays: only a handshake or a
 * reset clears it (8.5), so a late copy of a command that was acted on still
 * gets its recorded answer, not a NOT_READY that would say it was not. */
static void pen_drop_host(struct sim_pen *p) {
        p->host_connected = false;
        p->n_events = 0;
        p->link.pending = (struct mnp_link_pending) {};
        p->link.stop = (struct mnp_link_pending) {};
}

static void pen_rx_reset(struct sim_pen *p) {
        p->rx_len = 0;
        p->rx_overflow = false;
        mnp_decoder_init(&p->decoder);
}

static uint32_t pen_new_boot_id(struct sim_pen *p) {
        uint32_t id;

        do
                id = (uint32_t) (pen_rand_next(&p->boot_rng) >> 32);
        while (id == 0 || id == p->boot_id);
        return id;
}

static void pen_boot(struct sim_pen *p, uint64_t t) {
        motor_stop(p, t);
        mnp_lease_revoke(&p->lease);
        p->boot_id = pen_new_boot_id(p);
        p->state = MNP_STATE_BOOTING;
        p->boot_end_us = t + (uint64_t) p->cfg.boot_ms * USEC_PER_MSEC;
        p->fault_flags = 0;
        p->actuator_jammed = false;

        /* Fresh RAM: setpoints at rest, the actuator retracts to the minimum. */
        p->depth_set_um = p->cfg.depth_min_um;
        p->depth_since_us = t;
        p->depth_acc = 0;
        p->speed_set_hz = p->cfg.speed_min_hz;
        p->needling_us = 0;

        p->host_connected = false;
        p->n_events = 0;
        p->stalled = false;
        mnp_link_init(&p->link, NULL, t);
        pen_rx_reset(p);
        pen_wq_clear(&p->rx_delayed);
        pen_wq_clear(&p->tx);
        p->tx_cur_len = p->tx_cur_off = 0;
}

/* ---- Physics ---------------------------------------------------------------- */

static int16_t temperature_target(const struct sim_pen *p) {
        return p->state == MNP_STATE_RUNNING ? PEN_RUNNING_DC : PEN_AMBIENT_DC;
}

static bool actuator_travelling(const struct sim_pen *p) {
        return p->depth_actual_um != p->depth_set_um && !p->actuator_jammed;
}

/* Whether the physical state changes with time, so that a tick is needed. */
static bool physics_active(const struct sim_pen *p) {
        return actuator_travelling(p) ||
               p->state == MNP_STATE_RUNNING ||
               p->temperature_dc != temperature_target(p);
}

/* Moves *value toward target by rate units per second over dt; acc keeps the
 * fraction.  Returns the time (offset into dt) at which *value first changed,
 * or UINT64_MAX if it did not. */
static uint64_t ramp_u32(uint32_t *value, uint32_t target, uint64_t rate, uint64_t *acc, uint64_t dt) {
        uint64_t first = UINT64_MAX, steps, gap;

        if (*value == target || rate == 0) {
                *acc = 0;
                return UINT64_MAX;
        }

        gap = *value < target ? target - *value : *value - target;
        /* Time until the first whole unit: (1e6 - acc) / rate, rounded up. */
        if (*acc < USEC_PER_SEC) {
                uint64_t need = (USEC_PER_SEC - *acc + rate - 1) / rate;

                if (need <= dt)
                        first = need;
        }

        /* dt is at most a tick while anything moves; cap anyway against overflow. */
        if (dt > gap * USEC_PER_SEC / rate + 1) {
                steps = gap;
        } else {
                *acc += rate * dt;
                steps = *acc / USEC_PER_SEC;
                *acc %= USEC_PER_SEC;
        }

        if (steps >= gap) {
                *value = target;
                *acc = 0;
        } else if (*value < target)
                *value += (uint32_t) steps;
        else
                *value -= (uint32_t) steps;
        return first;
}

static void physics_step(struct sim_pen *p, uint64_t t0, uint64_t t1) {
        uint64_t dt = t1 - t0;
        bool running = p->state == MNP_STATE_RUNNING;

        if (dt == 0)
                return;

        /* Depth actuator */
        if (!p->actuator_jammed)
                (void) ramp_u32(&p->depth_actual_um, p->depth_set_um, p->cfg.actuator_um_per_s,
                                &p->depth_acc, dt);

        /* Motor: ramps up while running, braking is immediate (done where it happens). */
        if (running) {
                uint64_t moving_from = UINT64_MAX;

                if (p->speed_actual_hz > p->speed_set_hz) {
                        p->speed_actual_hz = p->speed_set_hz;
                        p->speed_acc = 0;
                }
                if (p->speed_actual_hz > 0)
                        moving_from = t0;

                if (p->speed_actual_hz < p->speed_set_hz) {
                        uint32_t v = p->speed_actual_hz;
                        uint64_t first;

                        if (p->cfg.motor_ramp_hz_per_s == 0) {
                                /* No ramp configured: the motor is at speed at once. */
                                v = p->speed_set_hz;
                                first = 0;
                        } else
                                first = ramp_u32(&v, p->speed_set_hz, p->cfg.motor_ramp_hz_per_s,
                                                 &p->speed_acc, dt);
                        if (p->speed_actual_hz == 0 && first != UINT64_MAX)
                                moving_from = t0 + first;
                        p->speed_actual_hz = (uint16_t) v;
                }

                if (moving_from != UINT64_MAX && moving_from <= t1) {
                        if (!p->moving) {
                                p->moving = true;
                                p->motion_changed_us = moving_from;
                        }
                        p->needling_us += t1 - moving_from;
                }

                /* Battery */
                if (!p->cfg.mains_powered) {
                        uint64_t per = (uint64_t) p->cfg.battery_drain_ms_per_percent * USEC_PER_MSEC;

                        p->drain_us += dt;
                        while (p->drain_us >= per) {
                                p->drain_us -= per;
                                if (p->battery_percent > 0)
                                        p->battery_percent--;
                        }
                }
        }

        /* Temperature */
        {
                int16_t target = temperature_target(p);
                uint32_t v = (uint32_t) ((int32_t) p->temperature_dc + 32768);
                uint32_t tv = (uint32_t) ((int32_t) target + 32768);

                (void) ramp_u32(&v, tv, p->temperature_dc < target ? PEN_WARM_DC_PER_S : PEN_COOL_DC_PER_S,
                                &p->temp_acc, dt);
                p->temperature_dc = (int16_t) ((int32_t) v - 32768);
        }
}

/* Faults that follow from the physical state. */
static void check_conditions(struct sim_pen *p, uint64_t t) {
        if (p->state == MNP_STATE_BOOTING)
                return;

        if (!p->cfg.mains_powered && p->battery_percent <= PEN_BATTERY_FAULT_PCT)
                pen_raise_fault(p, t, MNP_FAULT_BATTERY);
        if (p->temperature_dc >= p->cfg.overheat_dc)
                pen_raise_fault(p, t, MNP_FAULT_OVERHEAT);
        if (p->depth_actual_um != p->depth_set_um &&
            t >= p->depth_since_us + (uint64_t) p->cfg.actuator_timeout_ms * USEC_PER_MSEC)
                pen_raise_fault(p, t, MNP_FAULT_ACTUATOR);
}

static void set_depth_setpoint(struct sim_pen *p, uint64_t t, uint32_t depth_um) {
        if (depth_um != p->depth_set_um) {
                p->depth_set_um = depth_um;
                p->depth_acc = 0;
                p->depth_since_us = t;
        }
}

static void set_speed_setpoint(struct sim_pen *p, uint16_t speed_hz) {
        p->speed_set_hz = speed_hz;
        if (p->speed_actual_hz > speed_hz) {
                /* Braking is immediate; the needles still move at the lower speed. */
                p->speed_actual_hz = speed_hz;
                p->speed_acc = 0;
        }
}

/* ---- Commands --------------------------------------------------------------- */

/* 0 if allowed, else the NAK reason with *ret_detail. */
static uint8_t check_depth(const struct sim_pen *p, uint32_t depth_um, uint32_t *ret_detail) {
        char reason[MNP_REASON_MAX];
        uint32_t max;
        int r;

        r = mnp_check_depth(&p->limits, &p->range, NULL, depth_um, reason, sizeof reason);
        if (r == 0)
                return 0;
        if (r == -EDOM) {
                *ret_detail = p->range.depth_step_um;
                return MNP_NAK_OFF_STEP;
        }
        /* PROTOCOL.md 12.3: above the tighter maximum is checked before below the minimum. */
        max = (uint32_t) min_u64(p->range.depth_max_um, p->limits.max_depth_um);
        *ret_detail = depth_um > max ? max : p->range.depth_min_um;
        return MNP_NAK_OUT_OF_RANGE;
}

static uint8_t check_speed(const struct sim_pen *p, uint32_t speed_hz, uint32_t *ret_detail) {
        char reason[MNP_REASON_MAX];
        uint32_t max;
        int r;

        r = mnp_check_speed(&p->limits, &p->range, NULL, speed_hz, reason, sizeof reason);
        if (r == 0)
                return 0;
        max = (uint32_t) min_u64(p->range.speed_max_hz, p->limits.max_speed_hz);
        *ret_detail = speed_hz > max ? max : p->range.speed_min_hz;
        return MNP_NAK_OUT_OF_RANGE;
}

static int handle_hello(struct sim_pen *p, uint64_t t, const struct mnp_frame *f, const struct mnp_hello *h) {
        struct mnp_msg reply;
        uint8_t version;

        /* The steps of PROTOCOL.md 9, in order.  (A HELLO outside its field
         * domains, heartbeat_ms = 0 included, did not unpack: NAK MALFORMED
         * before this, with nothing changed.)  1: a new host starts from rest;
         * a pen in fault stays in fault. */
        if (p->state == MNP_STATE_RUNNING) {
                motor_stop(p, t);
                p->state = MNP_STATE_IDLE;
        }
        mnp_lease_revoke(&p->lease);

        /* 2: the old session's link state and events are gone (the seq counter goes on). */
        mnp_link_reset(&p->link, t);
        p->n_events = 0;
        p->host_connected = false;

        /* 3: the highest version both speak; none: no session. */
        if (h->min_version > MNP_PROTOCOL_VERSION_MAX || h->max_version < MNP_PROTOCOL_VERSION_MIN)
                return pen_reply(p, t, f->seq, MNP_NAK_UNSUPPORTED_VERSION, MNP_PROTOCOL_VERSION_MAX);
        version = h->max_version < MNP_PROTOCOL_VERSION_MAX ? h->max_version : MNP_PROTOCOL_VERSION_MAX;

        /* 4: the session begins. */
        p->host_connected = true;
        p->host_last_rx_us = t;
        p->host_timeout_us = 4 * (uint64_t) h->heartbeat_ms * USEC_PER_MSEC;
        p->next_status_us = t + (uint64_t) p->cfg.status_period_ms * USEC_PER_MSEC;
        p->commands_acted++;

        reply = (struct mnp_msg) {
                .type = MNP_MSG_HELLO_REPLY,
                .hello_reply = {
                        .hello_seq = f->seq,
                        .version = version,
                        .caps = MNP_CAP_CARTRIDGE_ID | MNP_CAP_BATTERY | MNP_CAP_TEMPERATURE |
                                MNP_CAP_DEPTH_SENSOR,
                        .boot_id = p->boot_id,
                        .depth_min_um = p->cfg.depth_min_um,
                        .depth_max_um = p->cfg.depth_max_um,
                        .depth_step_um = p->cfg.depth_step_um,
                        .speed_min_hz = p->cfg.speed_min_hz,
                        .speed_max_hz = p->cfg.speed_max_hz,
                        .max_lease_ms = p->cfg.max_lease_ms,
                },
        };
        memcpy(reply.hello_reply.model, p->cfg.model, sizeof reply.hello_reply.model);
        memcpy(reply.hello_reply.serial, p->cfg.serial, sizeof reply.hello_reply.serial);
        memcpy(reply.hello_reply.firmware, p->cfg.firmware, sizeof reply.hello_reply.firmware);
        return pen_send(p, t, &reply);
}

static int handle_stop(struct sim_pen *p, uint64_t t, uint16_t seq) {
        motor_stop(p, t);
        if (p->state == MNP_STATE_RUNNING)
                p->state = MNP_STATE_IDLE;
        mnp_lease_revoke(&p->lease);
        return pen_ack(p, t, seq);
}

static int handle_set_depth(struct sim_pen *p, uint64_t t, uint16_t seq, uint32_t depth_um) {
        uint32_t detail = 0;
        uint8_t nak;

        if (p->state == MNP_STATE_FAULT)
                return pen_reply(p, t, seq, MNP_NAK_FAULT_ACTIVE, p->fault_flags);
        nak = check_depth(p, depth_um, &detail);
        if (nak != 0)
                return pen_reply(p, t, seq, nak, detail);

        set_depth_setpoint(p, t, depth_um);
        return pen_ack(p, t, seq);
}

static int handle_set_speed(struct sim_pen *p, uint64_t t, uint16_t seq, uint16_t speed_hz) {
        uint32_t detail = 0;
        uint8_t nak;

        if (p->state == MNP_STATE_FAULT)
                return pen_reply(p, t, seq, MNP_NAK_FAULT_ACTIVE, p->fault_flags);
        nak = check_speed(p, speed_hz, &detail);
        if (nak != 0)
                return pen_reply(p, t, seq, nak, detail);

        set_speed_setpoint(p, speed_hz);
        return pen_ack(p, t, seq);
}

static int handle_start(struct sim_pen *p, uint64_t t, uint16_t seq, const struct mnp_start *s) {
        uint32_t detail = 0;
        uint8_t nak;

        if (p->state == MNP_STATE_FAULT)
                return pen_reply(p, t, seq, MNP_NAK_FAULT_ACTIVE, p->fault_flags);
        if (p->state != MNP_STATE_IDLE)
                return pen_reply(p, t, seq, MNP_NAK_BAD_STATE, p->state);
        if (p->cartridge[0] == 0)
                return pen_reply(p, t, seq, MNP_NAK_NO_CARTRIDGE, 0);
        nak = check_depth(p, s->depth_um, &detail);
        if (nak == 0)
                nak = check_speed(p, s->speed_hz, &detail);
        if (nak != 0)
                return pen_reply(p, t, seq, nak, detail);
        /* lease_ms = 0 is outside the field's domain: MALFORMED before this. */
        if (s->lease_ms > p->cfg.max_lease_ms)
                return pen_reply(p, t, seq, MNP_NAK_OUT_OF_RANGE, p->cfg.max_lease_ms);

        set_depth_setpoint(p, t, s->depth_um);
        set_speed_setpoint(p, s->speed_hz);
        mnp_lease_grant(&p->lease, t, s->lease_ms, p->cfg.max_lease_ms);
        p->needling_us = 0;
        p->speed_actual_hz = 0;
        p->speed_acc = 0;
        p->state = MNP_STATE_RUNNING;
        return pen_ack(p, t, seq);
}

static int handle_clear_fault(struct sim_pen *p, uint64_t t, uint16_t seq) {
        uint32_t remaining;

        if (p->state != MNP_STATE_FAULT)
                return pen_ack(p, t, seq);

        /* Each fault whose cause is gone is cleared (PROTOCOL.md 13).  INTERNAL
         * never is: only a reset clears it.  MOTOR, LEASE_EXPIRED, HOST_LOST,
         * ACTUATOR and CARTRIDGE_REMOVED have no lasting cause in this model. */
        remaining = p->fault_flags & MNP_FAULT_FLAG(MNP_FAULT_INTERNAL);
        if ((p->fault_flags & MNP_FAULT_FLAG(MNP_FAULT_OVERHEAT)) &&
            p->temperature_dc >= p->cfg.overheat_dc)
                remaining |= MNP_FAULT_FLAG(MNP_FAULT_OVERHEAT);
        if ((p->fault_flags & MNP_FAULT_FLAG(MNP_FAULT_BATTERY)) &&
            !p->cfg.mains_powered && p->battery_percent <= PEN_BATTERY_FAULT_PCT)
                remaining |= MNP_FAULT_FLAG(MNP_FAULT_BATTERY);

        p->fault_flags = remaining;
        if (!(remaining & MNP_FAULT_FLAG(MNP_FAULT_ACTUATOR)) && p->actuator_jammed) {
                p->actuator_jammed = false;
                p->depth_since_us = t;  /* the actuator gets a fresh timeout */
        }
        if (remaining != 0)
                return pen_reply(p, t, seq, MNP_NAK_FAULT_ACTIVE, remaining);

        p->state = MNP_STATE_IDLE;
        return pen_ack(p, t, seq);
}

static int handle_heartbeat(struct sim_pen *p, uint64_t t, const struct mnp_heartbeat *hb) {
        if (hb->lease_ms > 0 && p->state == MNP_STATE_RUNNING && mnp_lease_valid(&p->lease, t))
                mnp_lease_grant(&p->lease, t, hb->lease_ms, p->cfg.max_lease_ms);
        return 0;
}

/* A good frame from the host (PROTOCOL.md 4.3).  De-duplication comes first
 * (8.5): a DUPLICATE gets the recorded reply and is not acted on again, a STALE
 * one nothing; STOP and HELLO are always NEW.  Only NEW frames reach the table
 * of 12.2, whose rows are checked in order. */
static int pen_handle_frame(struct sim_pen *p, uint64_t t, const struct mnp_frame *f) {
        struct mnp_msg m = {};
        enum mnp_link_rx rx;
        bool reliable;
        int r;

        p->frames_received++;
        if (p->state == MNP_STATE_BOOTING)
                return 0;  /* the firmware is not listening yet: every frame, STOP too */

        if (p->host_connected)
                p->host_last_rx_us = t;  /* any good frame: the host is alive */

        reliable = mnp_msg_type_is_reliable(f->type);
        r = mnp_msg_unpack(f->type, f->payload, f->payload_len, &m);

        /* A frame that did not unpack (unknown type, malformed) is classified
         * by its seq alone; its seq still counts as the host's newest. */
        rx = mnp_link_receive(&p->link, t, f, r >= 0 ? &m : NULL, NULL);
        switch (rx) {
        case MNP_LINK_RX_DUPLICATE: {
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                ssize_t n;

                p->duplicates_ignored++;
                n = mnp_link_cached_reply(&p->link, wire, sizeof wire);
                if (n > 0)
                        pen_emit(p, t, wire, (size_t) n);
                return 0;
        }
        case MNP_LINK_RX_ANSWER:
                pen_flush_events(p, t);  /* the slot is free: the next event */
                return 0;
        case MNP_LINK_RX_STALE:
                return 0;
        case MNP_LINK_RX_NEW:
                break;
        }

        switch (f->type) {
        case MNP_MSG_HELLO:
                if (r < 0)
                        /* Malformed: answered, nothing else changes (PROTOCOL.md 9). */
                        return pen_reply(p, t, f->seq, MNP_NAK_MALFORMED, 0);
                return handle_hello(p, t, f, &m.hello);
        case MNP_MSG_STOP:
                /* Stopping is never refused, handshake or not. */
                return handle_stop(p, t, f->seq);
        }

        if (!reliable) {
                /* Unknown, malformed, or not for the pen: ignored.  Only a
                 * HEARTBEAT during a session means anything. */
                if (r < 0 || !p->host_connected || f->type != MNP_MSG_HEARTBEAT)
                        return 0;
                return handle_heartbeat(p, t, &m.heartbeat);
        }

        /* Every other reliable type, known or not, well-formed or not. */
        if (!p->host_connected)
                return pen_reply(p, t, f->seq, MNP_NAK_NOT_READY, 0);

        switch (f->type) {
        case MNP_MSG_SET_DEPTH:
        case MNP_MSG_SET_SPEED:
        case MNP_MSG_START:
        case MNP_MSG_CLEAR_FAULT:
                break;
        default:
                /* Unknown, or a pen event sent by the host: this row comes
                 * before the payload is looked at. */
                return pen_reply(p, t, f->seq, MNP_NAK_UNKNOWN_TYPE, 0);
        }
        if (r < 0)
                return pen_reply(p, t, f->seq, MNP_NAK_MALFORMED, 0);

        switch (f->type) {
        case MNP_MSG_SET_DEPTH:
                return handle_set_depth(p, t, f->seq, m.set_depth.depth_um);
        case MNP_MSG_SET_SPEED:
                return handle_set_speed(p, t, f->seq, m.set_speed.speed_hz);
        case MNP_MSG_START:
                return handle_start(p, t, f->seq, &m.start);
        default:
                return handle_clear_fault(p, t, f->seq);
        }
}

/* One frame body (COBS, without delimiters) that made it across the wire. */
static void pen_process_body(struct sim_pen *p, uint64_t t, const uint8_t *body, size_t len) {
        uint8_t buf[MNP_MAX_COBS_FRAME + 2];
        size_t off = 0, n;

        if (len > MNP_MAX_COBS_FRAME) {
                p->bad_frames++;
                return;
        }

        buf[0] = 0;
        memcpy(buf + 1, body, len);
        buf[len + 1] = 0;
        n = len + 2;

        while (off < n) {
                struct mnp_frame f;
                size_t consumed = 0;
                int r;

                r = mnp_decoder_feed(&p->decoder, buf + off, n - off, &consumed, &f);
                off += consumed;
                if (r > 0)
                        (void) pen_handle_frame(p, t, &f);
                else if (r < 0)
                        p->bad_frames++;
                else if (consumed == 0)
                        break;
        }
}

/* A frame from the host reached the end of the cable: apply the injected faults. */
static void pen_rx_frame(struct sim_pen *p, uint64_t t, uint8_t *body, size_t len) {
        uint64_t delay_us;
        unsigned copies;

        copies = pen_faults_apply(&p->faults, body, len, &delay_us);
        for (unsigned i = 0; i < copies; i++) {
                if (delay_us > 0)
                        (void) pen_wq_push(&p->rx_delayed, t + delay_us, body, len);
                else
                        pen_process_body(p, t, body, len);
        }
}

/* ---- Time ----------------------------------------------------------------------- */

static uint64_t heartbeat_deadline(const struct sim_pen *p) {
        return p->link.last_tx_us + p->link.cfg.heartbeat_us;
}

/* The next time something happens inside the pen (not counting frames already
 * waiting for the host to read them). */
static uint64_t pen_next_internal(const struct sim_pen *p) {
        uint64_t d = UINT64_MAX;

        if (p->state == MNP_STATE_BOOTING)
                d = min_u64(d, p->boot_end_us);
        if (p->state == MNP_STATE_RUNNING && p->lease.active)
                d = min_u64(d, p->lease.expires_us);
        if (p->host_connected)
                d = min_u64(d, p->host_last_rx_us + p->host_timeout_us);
        if (!p->stalled) {
                if (p->host_connected) {
                        d = min_u64(d, p->next_status_us);
                        d = min_u64(d, heartbeat_deadline(p));
                }
                if (p->link.pending.active)
                        d = min_u64(d, p->link.pending.deadline_us);
                if (p->link.stop.active)
                        d = min_u64(d, p->link.stop.deadline_us);
        }
        d = min_u64(d, pen_wq_next_due(&p->rx_delayed));
        if (p->state != MNP_STATE_BOOTING && actuator_travelling(p) &&
            !(p->fault_flags & MNP_FAULT_FLAG(MNP_FAULT_ACTUATOR)))
                d = min_u64(d, p->depth_since_us + (uint64_t) p->cfg.actuator_timeout_ms * USEC_PER_MSEC);
        if (physics_active(p))
                d = min_u64(d, p->now_us + PEN_TICK_US);
        return d;
}

static void pen_comms(struct sim_pen *p, uint64_t t) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];

        if (p->stalled)
                return;

        /* Retransmissions of our own reliable frames. */
        for (unsigned i = 0; i < 16; i++) {
                uint8_t type = 0;
                ssize_t n = mnp_link_poll(&p->link, t, wire, sizeof wire, &type);

                if (n == 0)
                        break;
                if (n > 0)
                        pen_emit(p, t, wire, (size_t) n);
                /* -ETIMEDOUT: the host never answered; the event is given up. */
        }
        pen_flush_events(p, t);

        if (!p->host_connected)
                return;

        if (t >= p->next_status_us) {
                struct mnp_msg m = {
                        .type = MNP_MSG_STATUS,
                        .status = {
                                .state = p->state,
                                .fault_flags = p->fault_flags,
                                .depth_set_um = p->depth_set_um,
                                .depth_actual_um = p->depth_actual_um,
                                .speed_set_hz = p->speed_set_hz,
                                .speed_actual_hz = p->speed_actual_hz,
                                .battery_percent = p->cfg.mains_powered ? PEN_BATTERY_MAINS : p->battery_percent,
                                .temperature_dc = p->temperature_dc,
                                .needling_ms = (uint32_t) (p->needling_us / USEC_PER_MSEC),
                                .lease_left_ms = (uint16_t) min_u64(mnp_lease_remaining_ms(&p->lease, t), UINT16_MAX),
                        },
                };

                memcpy(m.status.cartridge_id, p->cartridge, sizeof m.status.cartridge_id);
                (void) pen_send(p, t, &m);

                p->next_status_us += (uint64_t) p->cfg.status_period_ms * USEC_PER_MSEC;
                if (p->next_status_us <= t)
                        p->next_status_us = t + (uint64_t) p->cfg.status_period_ms * USEC_PER_MSEC;
        }

        if (mnp_link_heartbeat_due(&p->link, t))
                (void) pen_send(p, t, &(struct mnp_msg) { .type = MNP_MSG_HEARTBEAT });
}

static void pen_timers(struct sim_pen *p, uint64_t t) {
        struct pen_wq_entry e;

        if (p->state == MNP_STATE_BOOTING && t >= p->boot_end_us)
                p->state = p->fault_flags != 0 ? MNP_STATE_FAULT : MNP_STATE_IDLE;

        check_conditions(p, t);

        if (p->state == MNP_STATE_RUNNING && !mnp_lease_valid(&p->lease, t))
                pen_raise_fault(p, t, MNP_FAULT_LEASE_EXPIRED);

        if (p->host_connected && t >= p->host_last_rx_us + p->host_timeout_us) {
                if (p->state == MNP_STATE_RUNNING)
                        pen_raise_fault(p, t, MNP_FAULT_HOST_LOST);
                pen_drop_host(p);
        }

        while (pen_wq_pop_due(&p->rx_delayed, t, &e))
                if (!p->stalled && p->connected)
                        pen_process_body(p, t, e.data, e.len);

        pen_comms(p, t);
}

static void sim_pen_run(struct sim_pen *p, uint64_t now_us) {
        if (now_us < p->now_us)
                now_us = p->now_us;  /* time never runs backwards */

        for (;;) {
                uint64_t t = pen_next_internal(p);

                if (t <= p->now_us)
                        t = p->now_us + 1;  /* whatever was due then has been handled */
                if (t > now_us)
                        t = now_us;

                physics_step(p, p->now_us, t);
                p->now_us = t;
                pen_timers(p, t);
                if (t >= now_us)
                        break;
        }
}

/* ---- Public API ------------------------------------------------------------------- */

struct sim_pen *sim_pen_new(const struct sim_pen_config *cfg, uint64_t now_us) {
        struct sim_pen_config def;
        struct sim_pen *p;

        if (!cfg) {
                sim_pen_config_default(&def);
                cfg = &def;
        }
        if (!config_valid(cfg)) {
                errno = EINVAL;
                return NULL;
        }

        p = calloc(1, sizeof *p);
        if (!p)
                return NULL;

        p->cfg = *cfg;
        mnp_limits_init(&p->limits);
        p->range = (struct mnp_pen_range) {
                .depth_min_um = cfg->depth_min_um,
                .depth_max_um = cfg->depth_max_um,
                .depth_step_um = cfg->depth_step_um,
                .speed_min_hz = cfg->speed_min_hz,
                .speed_max_hz = cfg->speed_max_hz,
        };
        p->now_us = now_us;
        p->boot_rng = cfg->seed;
        pen_faults_init(&p->faults, cfg->seed);
        p->connected = true;
        p->battery_percent = 100;
        p->temperature_dc = PEN_AMBIENT_DC;
        p->depth_actual_um = cfg->depth_min_um;
        p->motion_changed_us = now_us;

        pen_boot(p, now_us);
        return p;
}

struct sim_pen *sim_pen_free(struct sim_pen *p) {
        free(p);
        return NULL;
}

const struct sim_pen_config *sim_pen_config(const struct sim_pen *p) {
        return &p->cfg;
}

void sim_pen_receive(struct sim_pen *p, uint64_t now_us, const uint8_t *data, size_t len) {
        sim_pen_run(p, now_us);
        now_us = p->now_us;

        if (!p->connected || p->stalled)
                return;  /* nobody is listening: the bytes are lost */

        for (size_t i = 0; i < len; i++) {
                uint8_t b = data[i];

                if (b != 0) {
                        if (p->rx_len < sizeof p->rx_buf)
                                p->rx_buf[p->rx_len++] = b;
                        else
                                p->rx_overflow = true;
                        continue;
                }

                if (p->rx_overflow)
                        p->bad_frames++;
                else if (p->rx_len > 0)
                        pen_rx_frame(p, now_us, p->rx_buf, p->rx_len);
                p->rx_len = 0;
                p->rx_overflow = false;
        }
}

void sim_pen_advance(struct sim_pen *p, uint64_t now_us) {
        sim_pen_run(p, now_us);
}

size_t sim_pen_transmit(struct sim_pen *p, uint64_t now_us, uint8_t *buf, size_t size) {
        size_t done = 0;

        sim_pen_run(p, now_us);
        if (p->stalled || !p->connected)
                return 0;

        while (done < size) {
                size_t n;

                if (p->tx_cur_off == p->tx_cur_len) {
                        struct pen_wq_entry e;

                        if (!pen_wq_pop_due(&p->tx, p->now_us, &e))
                                break;
                        memcpy(p->tx_cur, e.data, e.len);
                        p->tx_cur_len = e.len;
                        p->tx_cur_off = 0;
                }

                n = min_u64(size - done, p->tx_cur_len - p->tx_cur_off);
                memcpy(buf + done, p->tx_cur + p->tx_cur_off, n);
                p->tx_cur_off += n;
                done += n;
        }
        return done;
}

uint64_t sim_pen_next_deadline(const struct sim_pen *p) {
        uint64_t d = pen_next_internal(p);

        /* Frames held back by the delay fault become due later. */
        if (!p->stalled && p->connected) {
                uint64_t due = pen_wq_next_due(&p->tx);

                if (due > p->now_us)
                        d = min_u64(d, due);
        }
        return d;
}

int sim_pen_insert_cartridge(struct sim_pen *p, uint64_t now_us, const char *id) {
        struct mnp_msg m = { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 1 } };

        if (!id || !string_valid(id, MNP_MAX_STR + 1))
                return -EINVAL;
        sim_pen_run(p, now_us);
        if (p->cartridge[0] != 0)
                return -EEXIST;

        strncpy(p->cartridge, id, sizeof p->cartridge - 1);
        memcpy(m.cartridge.id, p->cartridge, sizeof m.cartridge.id);
        pen_queue_event(p, p->now_us, &m);
        return 0;
}

int sim_pen_remove_cartridge(struct sim_pen *p, uint64_t now_us) {
        struct mnp_msg m = { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 0 } };

        sim_pen_run(p, now_us);
        if (p->cartridge[0] == 0)
                return -ENOENT;

        /* The removal event carries no id (PROTOCOL.md: an id exactly when present). */
        memset(p->cartridge, 0, sizeof p->cartridge);
        /* While running: stop at once, and the FAULT event goes before the
         * CARTRIDGE event (PROTOCOL.md 12.6). */
        if (p->state == MNP_STATE_RUNNING)
                pen_raise_fault(p, p->now_us, MNP_FAULT_CARTRIDGE_REMOVED);
        pen_queue_event(p, p->now_us, &m);
        return 0;
}

void sim_pen_set_temperature(struct sim_pen *p, uint64_t now_us, int16_t temperature_dc) {
        sim_pen_run(p, now_us);
        p->temperature_dc = temperature_dc;
        p->temp_acc = 0;
        check_conditions(p, p->now_us);
}

void sim_pen_set_battery(struct sim_pen *p, uint64_t now_us, uint8_t percent) {
        sim_pen_run(p, now_us);
        p->battery_percent = percent > 100 ? 100 : percent;
        p->drain_us = 0;
        check_conditions(p, p->now_us);
}

void sim_pen_set_link_faults(struct sim_pen *p, const struct sim_link_faults *f) {
        pen_faults_set(&p->faults, f);
}

void sim_pen_set_stalled(struct sim_pen *p, bool stalled) {
        if (p->stalled == stalled)
                return;
        p->stalled = stalled;
        /* Whatever was half received when the firmware hung is lost. */
        pen_rx_reset(p);
}

void sim_pen_reboot(struct sim_pen *p, uint64_t now_us) {
        sim_pen_run(p, now_us);
        pen_boot(p, p->now_us);
}

int sim_pen_inject_fault(struct sim_pen *p, uint64_t now_us, enum mnp_fault code) {
        switch (code) {
        case MNP_FAULT_MOTOR:
        case MNP_FAULT_OVERHEAT:
        case MNP_FAULT_ACTUATOR:
        case MNP_FAULT_BATTERY:
        case MNP_FAULT_INTERNAL:
                break;
        default:
                return -EINVAL;
        }

        sim_pen_run(p, now_us);
        pen_raise_fault(p, p->now_us, code);
        return 0;
}

void sim_pen_set_connected(struct sim_pen *p, uint64_t now_us, bool connected) {
        sim_pen_run(p, now_us);
        if (p->connected == connected)
                return;
        p->connected = connected;
        pen_rx_reset(p);
        pen_wq_clear(&p->rx_delayed);
        pen_wq_clear(&p->tx);
        p->tx_cur_len = p->tx_cur_off = 0;
}

void sim_pen_snapshot(const struct sim_pen *p, uint64_t now_us, struct sim_pen_snapshot *ret) {
        *ret = (struct sim_pen_snapshot) {
                .state = p->state,
                .fault_flags = p->fault_flags,
                .depth_set_um = p->depth_set_um,
                .depth_actual_um = p->depth_actual_um,
                .speed_set_hz = p->speed_set_hz,
                .speed_actual_hz = p->speed_actual_hz,
                .needles_moving = p->speed_actual_hz > 0,
                .motion_changed_us = p->motion_changed_us,
                .battery_percent = p->cfg.mains_powered ? PEN_BATTERY_MAINS : p->battery_percent,
                .temperature_dc = p->temperature_dc,
                .needling_ms = (uint32_t) (p->needling_us / USEC_PER_MSEC),
                .boot_id = p->boot_id,
                .host_connected = p->host_connected,
                .stalled = p->stalled,
                .connected = p->connected,
                .lease_left_ms = p->state == MNP_STATE_RUNNING ? mnp_lease_remaining_ms(&p->lease, now_us) : 0,
                .frames_received = p->frames_received,
                .frames_sent = p->frames_sent,
                .commands_acted = p->commands_acted,
                .duplicates_ignored = p->duplicates_ignored,
                .naks_sent = p->naks_sent,
                .bad_frames = p->bad_frames,
                .tx_dropped = p->tx.dropped,
        };
        memcpy(ret->cartridge_id, p->cartridge, sizeof ret->cartridge_id);
}
