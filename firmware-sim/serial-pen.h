/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The CDC-ACM pen: umockdev backs the emulated /dev/ttyACMn with a pty; the
 * pen talks through its master end.  umockdev 0.17 answers the modem-line
 * ioctls on emulated ttys with ENOTTY (libserialport's sp_open() needs
 * TIOCMGET), so an ioctl handler fakes TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC
 * and runs every other ioctl on the client's real pty.
 */
#pragma once

#include "mnsim.h"

struct serial_pen *serial_pen_new(struct mn_pen *p);
void serial_pen_free(struct serial_pen *s);

/* Before the tty is added to the testbed: attach the ioctl handler to
 * p->devnode (a client may open the tty as soon as its "add" event is out). */
int serial_pen_attach(struct serial_pen *s, char **error);
/* After the tty was added: take its pty and start serving it. */
int serial_pen_connect(struct serial_pen *s, char **error);
/* After the tty was removed from the testbed: stop using its pty, remove the
 * ioctl socket (clients that have the tty open keep their handler). */
void serial_pen_detach(struct serial_pen *s);
/* After it was removed: make sure the pty master is gone, so that clients
 * holding the tty open see a hang-up (POLLHUP, read() returning 0). */
void serial_pen_hangup(struct serial_pen *s);

/* Main thread: write what the pen has queued to the pty. */
void serial_pen_flush(struct serial_pen *s);
