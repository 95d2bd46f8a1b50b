/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <glib-unix.h>

#include "serial-pen.h"

struct serial_pen {
        struct mn_pen *pen;
        int master;                     /* umockdev's pty master (not ours to close) */
        dev_t master_dev;
        ino_t master_ino;
        int slave;                      /* ours: keeps the master from polling HUP with no client */
        char *pts;                      /* the pty's slave path */
        guint in_watch, out_watch;
        UMockdevIoctlBase *handler;
        GPtrArray *handlers;            /* every handler ever attached (clients keep using theirs) */
        uint32_t modem;                 /* TIOCM_DTR|TIOCM_RTS as the host set them; under sim->lock */
};

static gboolean on_master_out(gint fd, GIOCondition cond, gpointer userdata) {
        struct serial_pen *s = userdata;

        s->out_watch = 0;
        serial_pen_flush(s);
        return G_SOURCE_REMOVE;
}

void serial_pen_flush(struct serial_pen *s) {
        struct mn_pen *p = s->pen;
        bool blocked = false;

        if (s->master < 0)
                return;
        g_mutex_lock(&p->sim->lock);
        while (p->fifo->len > 0) {
                ssize_t n = write(s->master, p->fifo->data, p->fifo->len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                blocked = true;
                        else {
                                /* Nobody can read it: a real device's bytes would be lost too. */
                                g_debug("pen %s: cannot write to the pty: %m", p->serial);
                                g_byte_array_set_size(p->fifo, 0);
                        }
                        break;
                }
                g_byte_array_remove_range(p->fifo, 0, (guint) n);
        }
        g_mutex_unlock(&p->sim->lock);

        if (blocked && s->out_watch == 0)
                s->out_watch = g_unix_fd_add(s->master, G_IO_OUT, on_master_out, s);
}

static gboolean on_master_in(gint fd, GIOCondition cond, gpointer userdata) {
        struct serial_pen *s = userdata;
        struct mn_pen *p = s->pen;
        uint8_t buf[4096];
        ssize_t n;

        n = read(fd, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return G_SOURCE_CONTINUE;
        if (n <= 0) {
                /* Cannot happen while we hold the slave open; do not spin if it does. */
                fprintf(stderr, "mnsim: pen %s: pty read failed: %s\n", p->serial,
                        n < 0 ? strerror(errno) : "end of file");
                s->in_watch = 0;
                return G_SOURCE_REMOVE;
        }

        g_mutex_lock(&p->sim->lock);
        {
                uint64_t now = mn_now_us();
                sim_pen_receive(p->model, now, buf, (size_t) n);
                mn_pen_pump_locked(p, now);
        }
        g_mutex_unlock(&p->sim->lock);
        serial_pen_flush(s);
        return G_SOURCE_CONTINUE;
}

/* ---- the tty ioctls (umockdev's worker thread) ---- */

static gboolean on_tty_ioctl(UMockdevIoctlBase *handler, UMockdevIoctlClient *client, gpointer userdata) {
        struct serial_pen *s = userdata;
        struct mn_sim *sim = mn_sim_get();
        gulong req = umockdev_ioctl_client_get_request(client);
        UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
        g_autoptr(UMockdevIoctlData) d = NULL;
        g_autoptr(GError) error = NULL;
        int r, e = 0;

        g_mutex_lock(&sim->lock);
        if (sim->closing) {
                g_mutex_unlock(&sim->lock);
                umockdev_ioctl_client_complete(client, -1, EIO);
                return true;
        }
        g_mutex_unlock(&sim->lock);

        if (!g_object_get_data(G_OBJECT(client), "mnsim-seen")) {
                /* A new client: what the pen said to an earlier one is stale.  Its
                 * first ioctl comes from its open(), before it can write. */
                g_object_set_data(G_OBJECT(client), "mnsim-seen", GINT_TO_POINTER(1));
                g_mutex_lock(&sim->lock);
                if (s->slave >= 0)
                        (void) tcflush(s->slave, TCIFLUSH);
                g_byte_array_set_size(s->pen->fifo, 0);
                g_mutex_unlock(&sim->lock);
        }

        switch (req) {
        case TIOCMGET:
        case TIOCMSET:
        case TIOCMBIS:
        case TIOCMBIC: {
                int *bits;

                d = umockdev_ioctl_data_resolve(arg, 0, sizeof(int), &error);
                if (!d) {
                        umockdev_ioctl_client_complete(client, -1, EFAULT);
                        return true;
                }
                bits = (int *) d->data;
                g_mutex_lock(&sim->lock);
                if (req == TIOCMGET)
                        *bits = (int) (s->modem | TIOCM_CTS | TIOCM_DSR | TIOCM_CAR);
                else if (req == TIOCMSET)
                        s->modem = (uint32_t) *bits & (TIOCM_DTR | TIOCM_RTS);
                else if (req == TIOCMBIS)
                        s->modem |= (uint32_t) *bits & (TIOCM_DTR | TIOCM_RTS);
                else
                        s->modem &= ~((uint32_t) *bits & (TIOCM_DTR | TIOCM_RTS));
                g_mutex_unlock(&sim->lock);
                umockdev_ioctl_client_complete(client, 0, 0);
                return true;
        }
        default:
                /* Everything else is a real pty ioctl: run it in the client. */
                r = umockdev_ioctl_client_execute(client, &e, &error);
                if (error) {
                        umockdev_ioctl_client_complete(client, -1, EIO);
                        return true;
                }
                umockdev_ioctl_client_complete(client, r, r < 0 ? e : 0);
                return true;
        }
}

struct serial_pen *serial_pen_new(struct mn_pen *p) {
        struct serial_pen *s = g_new0(struct serial_pen, 1);

        s->pen = p;
        s->master = -1;
        s->slave = -1;
        s->handlers = g_ptr_array_new_with_free_func(g_object_unref);
        return s;
}

void serial_pen_free(struct serial_pen *s) {
        if (!s)
                return;
        serial_pen_detach(s);
        g_ptr_array_unref(s->handlers);
        g_free(s->pts);
        g_free(s);
}

int serial_pen_attach(struct serial_pen *s, char **error) {
        struct mn_pen *p = s->pen;
        g_autoptr(GError) err = NULL;

        g_mutex_lock(&p->sim->lock);
        s->modem = 0;
        g_mutex_unlock(&p->sim->lock);

        /* Before the tty exists: a client that opens it on the "add" event
         * must find the ioctl socket. */
        s->handler = umockdev_ioctl_base_new();
        g_signal_connect(s->handler, "handle-ioctl", G_CALLBACK(on_tty_ioctl), s);
        g_ptr_array_add(s->handlers, s->handler);
        if (!umockdev_testbed_attach_ioctl(p->sim->testbed, p->devnode, s->handler, &err)) {
                *error = g_strdup_printf("cannot attach the tty emulation to %s: %s", p->devnode, err->message);
                s->handler = NULL;
                return -EIO;
        }
        return 0;
}

int serial_pen_connect(struct serial_pen *s, char **error) {
        struct mn_pen *p = s->pen;
        struct stat st;
        const char *pts;
        int fd, flags, slave;

        fd = umockdev_testbed_get_dev_fd(p->sim->testbed, p->devnode);
        if (fd < 0) {
                *error = g_strdup_printf("umockdev has no pty for %s", p->devnode);
                return -ENODEV;
        }
        if (fstat(fd, &st) < 0 || !(pts = ptsname(fd))) {
                *error = g_strdup_printf("cannot inspect the pty of %s: %s", p->devnode, g_strerror(errno));
                return -errno;
        }
        /* The child must not inherit it (a hang-up needs the last reference gone). */
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                *error = g_strdup_printf("cannot configure the pty of %s: %s", p->devnode, g_strerror(errno));
                return -errno;
        }
        slave = open(pts, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (slave < 0) {
                *error = g_strdup_printf("cannot open %s: %s", pts, g_strerror(errno));
                return -errno;
        }
        s->master = fd;
        g_free(s->pts);
        s->pts = g_strdup(pts);
        s->master_dev = st.st_dev;
        s->master_ino = st.st_ino;
        g_mutex_lock(&p->sim->lock);
        s->slave = slave;               /* the ioctl handler may already be flushing it */
        g_mutex_unlock(&p->sim->lock);

        s->in_watch = g_unix_fd_add(s->master, G_IO_IN | G_IO_HUP | G_IO_ERR, on_master_in, s);
        return 0;
}

void serial_pen_detach(struct serial_pen *s) {
        if (s->in_watch)
                g_source_remove(s->in_watch);
        if (s->out_watch)
                g_source_remove(s->out_watch);
        s->in_watch = s->out_watch = 0;
        if (s->handler) {
                umockdev_testbed_detach_ioctl(s->pen->sim->testbed, s->pen->devnode, NULL);
                s->handler = NULL;
        }
        g_mutex_lock(&s->pen->sim->lock);
        if (s->slave >= 0)
                close(s->slave);
        s->slave = -1;
        g_mutex_unlock(&s->pen->sim->lock);
}

void serial_pen_hangup(struct serial_pen *s) {
        struct stat st;

        if (s->master < 0)
                return;
        /* If umockdev still holds the master, put /dev/null in its place: the
         * pty goes away (hang-up for the clients) and umockdev's later close()
         * closes /dev/null instead of some unrelated descriptor. */
        if (fstat(s->master, &st) == 0 && st.st_dev == s->master_dev && st.st_ino == s->master_ino) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0) {
                        (void) dup3(null, s->master, O_CLOEXEC);
                        close(null);
                }
        }
        s->master = -1;

        /* umockdev 0.17 leaves its pty-to-device map entry behind; a later
         * plug that gets the same pty number would trip over it. */
        if (s->pts) {
                g_autofree char *key = g_strdelimit(g_strdup(s->pts), "/", '_');
                g_autofree char *map = g_build_filename(s->pen->sim->root_dir, "dev", ".ptymap", key, NULL);
                (void) unlink(map);
        }
}
