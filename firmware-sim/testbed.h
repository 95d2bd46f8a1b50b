/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The pens' USB identities as the kernel would show them: descriptors,
 * sysfs attributes and udev properties, in umockdev's description format.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mnsim.h"

#define MN_STRING_MANUFACTURER 1
#define MN_STRING_PRODUCT      2
#define MN_STRING_SERIAL       3

/* Device descriptor followed by the configuration descriptor (with its
 * interfaces and endpoints): what sysfs "descriptors" holds.  Returns the
 * length written (at most size). */
size_t mn_usb_descriptors(enum mn_pen_kind kind, uint8_t *buf, size_t size);
/* The 18-byte device descriptor and the whole configuration descriptor. */
size_t mn_usb_device_descriptor(enum mn_pen_kind kind, uint8_t *buf, size_t size);
size_t mn_usb_config_descriptor(enum mn_pen_kind kind, uint8_t *buf, size_t size);
/* String descriptor index (0: language ids); 0 if there is no such string. */
size_t mn_usb_string_descriptor(const struct mn_pen *p, unsigned index, uint8_t *buf, size_t size);

const char *mn_pen_product(const struct mn_pen *p);
uint16_t mn_pen_pid(const struct mn_pen *p);
const char *mn_pen_kind_name(enum mn_pen_kind kind);

/* Sets p->syspath (the USB device) and p->devnode (/dev/bus/usb/BBB/DDD, or
 * /dev/ttyACMn for p->acm) for the next plug. */
void mn_pen_set_paths(struct mn_pen *p);

/* The umockdev description of the pen's devices (USB device, interfaces and,
 * for a serial pen, the tty), parents first.  Also sets p->syspath and
 * p->devnode.  Free with g_free(). */
char *mn_pen_description(struct mn_pen *p);

/* What every Linux system has, pens or not: /sys/class/tty with a virtual
 * console in it (libserialport fails outright without the directory). */
int mn_testbed_add_base(struct mn_sim *sim, char **error);

/* Adds the pen's devices to the testbed ("add" uevents included, sent by
 * umockdev as each device is added): attach the ioctl emulation of
 * p->devnode before, or a client that reacts to the event at once finds none. */
int mn_testbed_add_pen(struct mn_sim *sim, struct mn_pen *p, char **error);
/* Sends "remove" uevents (children first) and removes the devices. */
void mn_testbed_remove_pen(struct mn_sim *sim, struct mn_pen *p);
