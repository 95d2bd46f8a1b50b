/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Discovery: finds pens by USB VID/PID and reports them as they come and go.
 * Pens present at start are reported through the same callback as pens
 * plugged in later (coldplug is a replay of hotplug).  Both kinds of pen are
 * USB devices: a vendor-class pen is opened through libusb, a CDC-ACM pen
 * through its tty with libserialport.
 *
 * A dedicated libusb event thread handles libusb events (libusb's pollfds do
 * not work in sd-event under umockdev, see platform-notes.md) and hands
 * hotplug events and transfer completions to the sd-event loop; every
 * callback here runs on that loop.
 */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include <mnp/message.h>
#include <mnp/pen-ids.h>
#include "transport.h"

#define MND_ID_TABLE_MAX 32

/* The VID/PID table: the built-in mnp_pen_ids plus additions from mnd.conf. */
struct mnd_id_table {
        unsigned n;
        struct mnp_pen_id ids[MND_ID_TABLE_MAX];
};

/* Fills the table with the built-in entries. */
void mnd_id_table_init(struct mnd_id_table *t);
/* Adds an entry; -EEXIST if vid:pid is already there, -E2BIG if full. */
int mnd_id_table_add(struct mnd_id_table *t, uint16_t vid, uint16_t pid, enum mnp_transport kind);
const struct mnp_pen_id *mnd_id_table_find(const struct mnd_id_table *t, uint16_t vid, uint16_t pid);

/* A pen as found on the bus, before any byte was exchanged. */
struct mnd_pen_device {
        char key[64];                   /* unique while plugged: "usb:BUS:ADDR" */
        enum mnp_transport kind;
        uint16_t vid, pid;
        uint8_t busnum, devaddr;
        char serial[MNP_MAX_STR + 1];   /* the USB serial string; the pen confirms it in HELLO_REPLY */
        char product[64];
        char tty[64];                   /* serial pens: "/dev/ttyACM0" (may be "" until the tty appears) */
};

struct mnd_discovery;

typedef void (*mnd_discovery_fn)(struct mnd_discovery *d, const struct mnd_pen_device *dev, void *userdata);

/* Starts the event thread and the hotplug watch; the added callback then
 * fires once per pen already present (from the loop, after this returns). */
int mnd_discovery_new(sd_event *event, const struct mnd_id_table *ids, mnd_discovery_fn added,
                      mnd_discovery_fn removed, void *userdata, struct mnd_discovery **ret);

/* Opens the pen's transport (claims the interface / opens the tty).
 * event may be NULL: the discovery's loop.  A USB pen's completions come
 * through the discovery's loop, so for one another loop gives -EXDEV.
 * -ENODEV if dev is not (or no longer) plugged in, -EBUSY if another
 * program or transport has the interface claimed. */
int mnd_discovery_open(struct mnd_discovery *d, const struct mnd_pen_device *dev,
                       sd_event *event, struct mnd_transport **ret);

/* Stops the thread, closes everything.  Accepts NULL; returns NULL.  Every
 * transport opened through d must have been freed before. */
struct mnd_discovery *mnd_discovery_free(struct mnd_discovery *d);
