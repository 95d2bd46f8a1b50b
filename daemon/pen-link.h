/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * One pen's protocol engine inside mnd: drives libmnp over a transport on the
 * sd-event loop.  Handshake, command queue with acknowledgement and
 * retransmission, heartbeats, the motion lease (renewed automatically while
 * running), STATUS into properties, fault and cartridge events, reset (boot
 * id) detection and loss of the pen.  It enforces no clinical limits: the
 * caller checks those before asking (the pen checks its own as a last line).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include <mnp/limits.h>
#include <mnp/message.h>
#include <mnp/pen-ids.h>
#include "transport.h"

/* Link timing; defaults keep a dead host's pen stopped within 300 ms. */
struct mnd_link_settings {
        uint32_t heartbeat_ms;          /* default 50: host frame at least this often */
        uint32_t lease_ms;              /* default 200: lease granted by START and each heartbeat */
        uint32_t retransmit_ms;         /* default 30 */
        uint32_t retries;               /* default 3 */
        uint32_t peer_timeout_ms;       /* default 250: pen silent this long = not responding */
        uint32_t handshake_timeout_ms;  /* default 2000: pen still booting, HELLO retried until then */
        uint32_t reprobe_ms;            /* default 1000: a pen that stopped answering is probed with a
                                         * HELLO this often while its transport is open; 0 = never */
};

void mnd_link_settings_default(struct mnd_link_settings *s);

enum mnd_pen_state {
        MND_PEN_CONNECTING,             /* "connecting": handshake not done */
        MND_PEN_IDLE,                   /* "idle" */
        MND_PEN_RUNNING,                /* "running": the pen reports needles running */
        MND_PEN_FAULT,                  /* "fault" */
        MND_PEN_DISCONNECTED,           /* "disconnected": transport gone or pen not answering */
};

const char *mnd_pen_state_name(enum mnd_pen_state s);

/* What the pen said about itself in HELLO_REPLY. */
struct mnd_pen_identity {
        char serial[MNP_MAX_STR + 1];
        char model[MNP_MAX_STR + 1];
        char firmware[MNP_MAX_STR + 1];
        enum mnp_transport kind;
        struct mnp_pen_range range;
        uint32_t max_lease_ms;
        uint32_t caps;
        uint32_t boot_id;
        uint8_t version;
};

/* The pen's latest state, from STATUS frames and events. */
struct mnd_pen_status {
        enum mnd_pen_state state;
        uint32_t depth_set_um, depth_actual_um;
        uint32_t speed_set_hz, speed_actual_hz;
        char cartridge[MNP_MAX_STR + 1];        /* "" = none */
        uint8_t battery_percent;                /* 255 = mains or unknown */
        int16_t temperature_dc;
        uint32_t fault_flags;
        uint8_t fault;                          /* enum mnp_fault of the latest fault, 0 = none */
        uint32_t needling_ms;                   /* since the last START */
};

/* Bits for the changed callback. */
enum {
        MND_PEN_CHANGED_STATE = 1u << 0,
        MND_PEN_CHANGED_DEPTH = 1u << 1,         /* setpoint */
        MND_PEN_CHANGED_SPEED = 1u << 2,
        MND_PEN_CHANGED_ACTUAL_DEPTH = 1u << 3,
        MND_PEN_CHANGED_ACTUAL_SPEED = 1u << 4,
        MND_PEN_CHANGED_CARTRIDGE = 1u << 5,
        MND_PEN_CHANGED_BATTERY = 1u << 6,
        MND_PEN_CHANGED_TEMPERATURE = 1u << 7,
        MND_PEN_CHANGED_FAULT = 1u << 8,
        MND_PEN_CHANGED_NEEDLING = 1u << 9,
};

struct mnd_pen_link;

struct mnd_pen_link_callbacks {
        /* Handshake done and the pen's first STATUS after it arrived: identity and status (state,
         * setpoints, cartridge ...) are known.  Again after every later handshake: after a pen
         * reset, and after a pen that was lost as not answering answered a probe. */
        void (*ready)(struct mnd_pen_link *l, void *userdata);
        /* Some of the status changed (MND_PEN_CHANGED_* bits). */
        void (*changed)(struct mnd_pen_link *l, unsigned changes, void *userdata);
        /* A FAULT event (or a fault seen in STATUS): code is enum mnp_fault. */
        void (*fault)(struct mnd_pen_link *l, uint8_t code, void *userdata);
        /* The pen rebooted (new boot id): whatever ran is gone; a new handshake follows. */
        void (*reset)(struct mnd_pen_link *l, void *userdata);
        /* The pen is lost: -ENODEV unplugged, -ETIMEDOUT not answering, -EIO transport error.
         * State is DISCONNECTED; commands fail with -ENOTCONN.  After -ETIMEDOUT with
         * mnd_pen_link_may_recover() true, the link keeps probing the pen (settings.reprobe_ms)
         * and calls ready() if it answers, or lost() once more (-ENODEV, -EIO) if the
         * transport goes away; otherwise only free() remains. */
        void (*lost)(struct mnd_pen_link *l, int error, void *userdata);
};

/*
 * Completion of a command.  error: 0 the pen acknowledged; from a NAK:
 * -ERANGE (out of range), -EDOM (off step), -EBUSY (bad state), -ENOMEDIUM (no
 * cartridge), -EIO (fault active), -EPROTO (malformed/unknown), -ENOTCONN (not
 * ready); -ETIMEDOUT no answer after the retries; -ECANCELED overtaken by a
 * stop before it was acknowledged; -ENODEV the pen went away.  message is a
 * sentence for people (NULL when error is 0).
 */
typedef void (*mnd_pen_done_fn)(struct mnd_pen_link *l, int error, const char *message, void *userdata);

/* Takes ownership of t (freed with the link, also on failure) and starts the handshake. */
int mnd_pen_link_new(sd_event *event, struct mnd_transport *t, const struct mnd_link_settings *s,
                     const struct mnd_pen_link_callbacks *cb, void *userdata, struct mnd_pen_link **ret);
/* Accepts NULL; returns NULL.  Pending commands complete with -ECANCELED first. */
struct mnd_pen_link *mnd_pen_link_free(struct mnd_pen_link *l);

/* NULL until the first handshake completes. */
const struct mnd_pen_identity *mnd_pen_link_identity(const struct mnd_pen_link *l);
const struct mnd_pen_status *mnd_pen_link_status(const struct mnd_pen_link *l);
/* Whether a lost link keeps probing its pen (it was lost as not answering, the transport is open). */
bool mnd_pen_link_may_recover(const struct mnd_pen_link *l);
/* Diagnostics: frames from the pen that were discarded (bad CRC, COBS, size, version). */
const struct mnp_decoder_stats *mnd_pen_link_decoder_stats(const struct mnd_pen_link *l);

/*
 * Commands are queued in order, one in flight at a time.  They return 0 (done
 * is called later, exactly once, never from inside this call), -ENOTCONN (not
 * connected or handshake not done), -EBUSY (queue full); also -ENOMEM, and
 * -ERANGE for a speed that does not fit the wire's u16.
 */
int mnd_pen_link_set_depth(struct mnd_pen_link *l, uint32_t depth_um, mnd_pen_done_fn done, void *userdata);
int mnd_pen_link_set_speed(struct mnd_pen_link *l, uint32_t speed_hz, mnd_pen_done_fn done, void *userdata);
/* Starts needling at these setpoints with a lease the link then renews with every heartbeat. */
int mnd_pen_link_start(struct mnd_pen_link *l, uint32_t depth_um, uint32_t speed_hz,
                       mnd_pen_done_fn done, void *userdata);
int mnd_pen_link_clear_fault(struct mnd_pen_link *l, mnd_pen_done_fn done, void *userdata);
/*
 * Never refused while a transport exists: the STOP goes out at once, overtaking
 * the queue; every queued or in-flight command completes with -ECANCELED and
 * lease renewal ends at once.  done may be NULL.  Returns 0, or -ENODEV if the
 * pen is gone (then it cannot be running anyway: its lease stops it).
 */
int mnd_pen_link_stop(struct mnd_pen_link *l, mnd_pen_done_fn done, void *userdata);
