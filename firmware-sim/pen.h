/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The simulated pen: firmware behaviour and physics, with no clock and no I/O
 * of its own.  Every call takes the current time in microseconds; a test
 * drives it with a virtual clock, mnsim with CLOCK_MONOTONIC.  Bytes from the
 * host go in through sim_pen_receive(), bytes to the host come out of
 * sim_pen_transmit(), in whatever chunks the transport likes.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mnp/message.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sim_pen_config {
        char model[MNP_MAX_STR + 1];
        char serial[MNP_MAX_STR + 1];
        char firmware[MNP_MAX_STR + 1];
        uint32_t depth_min_um, depth_max_um, depth_step_um;
        uint16_t speed_min_hz, speed_max_hz;
        uint16_t max_lease_ms;
        uint32_t boot_ms;               /* time spent in BOOTING after power-on or reboot */
        uint32_t status_period_ms;      /* STATUS frames while a host is connected */
        uint32_t actuator_um_per_s;     /* depth actuator travel speed */
        uint32_t actuator_timeout_ms;   /* setpoint not reached in this time: ACTUATOR fault */
        uint32_t motor_ramp_hz_per_s;   /* motor acceleration; braking is immediate */
        bool mains_powered;             /* battery reported as 255 */
        uint32_t battery_drain_ms_per_percent;  /* while running */
        int16_t overheat_dc;            /* OVERHEAT fault at or above this temperature */
        uint64_t seed;                  /* boot ids and fault injection draw from this */
};

/* The defaults: a 0-3.00 mm pen in 0.05 mm steps, 50-150 Hz, leases up to 1000 ms. */
void sim_pen_config_default(struct sim_pen_config *cfg);

struct sim_pen;

/* Powers the pen on at now_us (state BOOTING).  NULL on allocation failure. */
struct sim_pen *sim_pen_new(const struct sim_pen_config *cfg, uint64_t now_us);
/* Accepts NULL; returns NULL. */
struct sim_pen *sim_pen_free(struct sim_pen *p);

/* Bytes from the host, any chunking. */
void sim_pen_receive(struct sim_pen *p, uint64_t now_us, const uint8_t *data, size_t len);

/* Runs firmware and physics up to now_us: actuator and motor, lease and
 * heartbeat watchdogs, retransmissions, periodic STATUS. */
void sim_pen_advance(struct sim_pen *p, uint64_t now_us);

/* Copies up to size bytes that are due for the host by now_us; returns how many. */
size_t sim_pen_transmit(struct sim_pen *p, uint64_t now_us, uint8_t *buf, size_t size);

/* When sim_pen_advance() or sim_pen_transmit() next has work; UINT64_MAX if never.
 * Bytes that are already due are not counted: call sim_pen_transmit() after
 * every sim_pen_receive()/sim_pen_advance() and whenever the host can take
 * more.  The transmit queue holds at most 64 frames; when the host does not
 * read, the oldest frame is dropped (counted in snapshot.tx_dropped). */
uint64_t sim_pen_next_deadline(const struct sim_pen *p);

/* The physical world. */
int sim_pen_insert_cartridge(struct sim_pen *p, uint64_t now_us, const char *id); /* -EEXIST, -EINVAL */
int sim_pen_remove_cartridge(struct sim_pen *p, uint64_t now_us);                 /* -ENOENT */
void sim_pen_set_temperature(struct sim_pen *p, uint64_t now_us, int16_t temperature_dc);
void sim_pen_set_battery(struct sim_pen *p, uint64_t now_us, uint8_t percent);

/* Fault injection. */
struct sim_link_faults {
        double drop;            /* probability that a frame is dropped */
        double corrupt;         /* ... has one byte flipped */
        double duplicate;       /* ... is sent twice */
        double delay;           /* ... is held back by delay_ms */
        uint32_t delay_ms;
};
/* Applied to frames in both directions, each drawn independently. */
void sim_pen_set_link_faults(struct sim_pen *p, const struct sim_link_faults *f);
/* A stalled pen neither processes nor sends anything, but its watchdogs and
 * physics go on (so the lease still stops the motor). */
void sim_pen_set_stalled(struct sim_pen *p, bool stalled);
/* New boot id, motor off, link state lost, back to BOOTING. */
void sim_pen_reboot(struct sim_pen *p, uint64_t now_us);
/* Raises MOTOR, OVERHEAT, ACTUATOR, BATTERY or INTERNAL: motor stops, state FAULT, FAULT event. */
/* INTERNAL is never cleared by CLEAR_FAULT, only by sim_pen_reboot() (PROTOCOL.md 13). */
int sim_pen_inject_fault(struct sim_pen *p, uint64_t now_us, enum mnp_fault code);
/* Cable: while disconnected nothing is received or sent (the lease runs out). */
void sim_pen_set_connected(struct sim_pen *p, uint64_t now_us, bool connected);

struct sim_pen_snapshot {
        uint8_t state;                  /* enum mnp_pen_state */
        uint32_t fault_flags;
        uint32_t depth_set_um, depth_actual_um;
        uint16_t speed_set_hz, speed_actual_hz;
        bool needles_moving;            /* speed_actual_hz > 0 */
        uint64_t motion_changed_us;     /* when needles_moving last changed */
        char cartridge_id[MNP_MAX_STR + 1];
        uint8_t battery_percent;
        int16_t temperature_dc;
        uint32_t needling_ms;
        uint32_t boot_id;
        bool host_connected;            /* a handshake is in force */
        bool stalled, connected;
        uint32_t lease_left_ms;
        uint64_t frames_received, frames_sent, commands_acted, duplicates_ignored, naks_sent, bad_frames;
        uint64_t tx_dropped;            /* frames dropped because the host did not read them */
};

void sim_pen_snapshot(const struct sim_pen *p, uint64_t now_us, struct sim_pen_snapshot *ret);

/* The config the pen was created with. */
const struct sim_pen_config *sim_pen_config(const struct sim_pen *p);

#ifdef __cplusplus
}
#endif
