/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mnsim: simulated pens as umockdev USB and CDC-ACM devices.
 *
 * Threads: the GLib main loop (main thread) runs the pens' timers, the serial
 * ptys and the control socket; umockdev runs the ioctl handlers of the
 * emulated usbfs and tty nodes in a worker thread of its own.  Everything
 * the two share (the pen models, the USB URB queues, the modem lines) is
 * guarded by mn_sim.lock.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <umockdev.h>

#include "pen.h"

#define MNSIM_FIFO_MAX 16384    /* bytes the pen may have queued for the host */

enum mn_pen_kind {
        MN_PEN_USB,
        MN_PEN_SERIAL,
};

struct usb_pen;
struct serial_pen;
struct mn_sim;

struct mn_pen {
        struct mn_sim *sim;
        enum mn_pen_kind kind;
        unsigned index;                 /* 1-based within its kind */
        char serial[MNP_MAX_STR + 1];
        unsigned busnum, devnum, port;
        unsigned acm;                   /* serial pen: ttyACM number of the current plug */

        /* Guarded by sim->lock. */
        struct sim_pen *model;
        struct sim_link_faults faults;
        GByteArray *fifo;               /* bytes the pen transmitted, not yet taken by the host */
        uint64_t fifo_dropped;
        bool plugged;
        int64_t armed;                  /* ready time the timer is armed for, -1 none */

        GSource *timer;                 /* main context; ready time = sim_pen_next_deadline() */

        char *syspath;                  /* USB device in the testbed, while plugged */
        char *devnode;                  /* /dev/bus/usb/BBB/DDD or /dev/ttyACMn */

        struct usb_pen *usb;
        struct serial_pen *tty;
};

struct mn_sim {
        GMutex lock;
        bool closing;                   /* under lock: ioctl handlers must not touch pens any more */
        GMainContext *ctx;
        UMockdevTestbed *testbed;
        char *root_dir;
        GPtrArray *pens;                /* struct mn_pen* */
        unsigned next_acm;              /* umockdev 0.17 cannot re-add a tty name: each plug takes a new one */
};

/* CLOCK_MONOTONIC in microseconds. */
static inline uint64_t mn_now_us(void) {
        return (uint64_t) g_get_monotonic_time();
}

/* The one simulator of this process; never freed, so that umockdev's worker
 * thread can always take its lock and check closing first. */
struct mn_sim *mn_sim_get(void);

struct mn_pen *mn_sim_find_pen(struct mn_sim *sim, const char *serial);

/* With sim->lock held: advance the model to now, move what it transmits into
 * the FIFO, re-arm the timer.  Returns the number of bytes now in the FIFO. */
size_t mn_pen_pump_locked(struct mn_pen *p, uint64_t now);
/* With sim->lock held: re-arm the timer for the model's next deadline (thread-safe). */
void mn_pen_rearm_locked(struct mn_pen *p);

int mn_pen_plug(struct mn_pen *p, char **error);
int mn_pen_unplug(struct mn_pen *p, char **error);
