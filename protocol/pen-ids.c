/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stddef.h>

#include "pen-ids.h"

const struct mnp_pen_id mnp_pen_ids[] = {
        { MNP_USB_VID, MNP_USB_PID_VENDOR_PEN, MNP_TRANSPORT_USB,    "MN-1" },
        { MNP_USB_VID, MNP_USB_PID_SERIAL_PEN, MNP_TRANSPORT_SERIAL, "MN-1S" },
        { 0, 0, 0, NULL },
};

const struct mnp_pen_id *mnp_pen_id_lookup(uint16_t vid, uint16_t pid) {
        for (const struct mnp_pen_id *e = mnp_pen_ids; e->vid != 0; e++)
                if (e->vid == vid && e->pid == pid)
                        return e;
        return NULL;
}

const char *mnp_transport_name(enum mnp_transport t) {
        switch (t) {
        case MNP_TRANSPORT_USB:
                return "usb";
        case MNP_TRANSPORT_SERIAL:
                return "serial";
        }
        return "unknown";
}
