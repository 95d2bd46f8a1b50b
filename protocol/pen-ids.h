/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The USB identities of the pens: the one place that names them.  The daemon's
 * built-in table, the simulator's descriptors and the udev rules all come from
 * here.
 *
 * These are pid.codes test IDs (vendor 0x1209, products 0x0001 and 0x0002),
 * which pid.codes reserves for in-house testing: a pen that is sold needs its
 * own registered product IDs, added here or in mnd.conf.
 */
#pragma once

#include <stdint.h>

#define MNP_USB_VID              0x1209
#define MNP_USB_PID_VENDOR_PEN   0x0001  /* vendor class: one interface, bulk OUT + bulk IN */
#define MNP_USB_PID_SERIAL_PEN   0x0002  /* CDC-ACM: the protocol runs over the tty */

#define MNP_USB_MANUFACTURER     "Microneedle Devices"
#define MNP_USB_PRODUCT_VENDOR   "MN-1 Microneedling Pen"
#define MNP_USB_PRODUCT_SERIAL   "MN-1S Microneedling Pen (serial)"

/* Vendor-class pen: interface 0, class 0xff, endpoints below, 64-byte packets. */
#define MNP_USB_INTERFACE        0
#define MNP_USB_EP_OUT           0x01
#define MNP_USB_EP_IN            0x81
#define MNP_USB_MAX_PACKET       64

enum mnp_transport {
        MNP_TRANSPORT_USB = 0,          /* "usb": libusb bulk endpoints */
        MNP_TRANSPORT_SERIAL = 1,       /* "serial": CDC-ACM tty */
};

struct mnp_pen_id {
        uint16_t vid, pid;
        enum mnp_transport transport;
        const char *model;
};

/* The built-in table, terminated by an entry with vid == 0. */
extern const struct mnp_pen_id mnp_pen_ids[];

/* The built-in entry for vid:pid, or NULL. */
const struct mnp_pen_id *mnp_pen_id_lookup(uint16_t vid, uint16_t pid);

const char *mnp_transport_name(enum mnp_transport t);  /* "usb", "serial" */
