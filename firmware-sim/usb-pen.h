/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The vendor-class USB pen: an ioctl handler on the emulated usbfs node that
 * does what the kernel's devio.c does for a libusb program (URBs, claims,
 * control requests), with the pen model behind the bulk endpoints.
 */
#pragma once

#include "mnsim.h"

struct usb_pen *usb_pen_new(struct mn_pen *p);
void usb_pen_free(struct usb_pen *u);

/* Attaches a fresh handler to p->devnode.  Call before the device is added to
 * the testbed: a client may open the node as soon as the "add" event is out,
 * and umockdev's preload needs the ioctl socket then. */
int usb_pen_attach(struct usb_pen *u, char **error);
/* Surprise removal: URBs in flight complete with -ESHUTDOWN, everything
 * after that fails with ENODEV; open file descriptors stay dead, as with a
 * real device.  Call before the device is removed from the testbed. */
void usb_pen_disconnect(struct usb_pen *u);
/* Removes the ioctl socket (disconnecting first if that was not done).  Call
 * after the device was removed from the testbed, so that the node never
 * exists without its emulation. */
void usb_pen_detach(struct usb_pen *u);

/* With sim->lock held, main thread: hand waiting data to a client blocked in REAPURB. */
void usb_pen_deliver_locked(struct usb_pen *u, uint64_t now);
