/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The libserialport backend (internal; discovery.c opens serial pens with it). */
#pragma once

#include <systemd/sd-event.h>

#include "transport.h"

/* Opens tty (a symlink is resolved) at 115200 8N1, no flow control, DTR and
 * RTS on; the callbacks run on event.  -ENODEV if there is no such tty. */
int mnd_transport_serial_open(sd_event *event, const char *tty, struct mnd_transport **ret);
