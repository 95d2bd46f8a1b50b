/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * CDC-ACM pens through libserialport: 115200 8N1, no flow control, the
 * port's fd watched by sd-event.  A hang-up shows as IN|ERR|HUP with read()
 * returning 0 (or EIO), which is reported as -ENODEV.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libserialport.h>

#include "transport-serial.h"
#include "usb-thread.h"     /* mnd_transport_debug() */

#define SERIAL_BAUDRATE  115200
#define SERIAL_READ_MAX  4096
#define SERIAL_QUEUE_MAX (64 * 1024)

struct serial_transport {
        struct mnd_transport base;
        struct sp_port *port;
        bool open;
        int fd;
        sd_event_source *io;
        sd_event_source *gone_source;   /* reports gone_error from the loop */
        int gone_error;
        bool dead;

        size_t queue_len;
        uint8_t *queue;                 /* SERIAL_QUEUE_MAX bytes */
};

static int serial_errno(enum sp_return r) {
        switch (r) {
        case SP_OK:
                return 0;
        case SP_ERR_ARG:
                return -EINVAL;
        case SP_ERR_MEM:
                return -ENOMEM;
        case SP_ERR_SUPP:
                return -EOPNOTSUPP;
        case SP_ERR_FAIL: {
                int e = sp_last_error_code();
                return e > 0 ? -e : -EIO;
        }
        default:
                return r < 0 ? -EIO : 0;
        }
}

static int serial_gone_dispatch(sd_event_source *s, void *userdata) {
        struct serial_transport *st = userdata;

        if (st->base.on_gone)
                st->base.on_gone(&st->base, st->gone_error, st->base.userdata);
        return 0;
}

/* Stops all I/O and reports the loss from a defer source, never from inside
 * the caller (write() may be what noticed it). */
static void serial_fail(struct serial_transport *st, int error) {
        sd_event *event;

        if (st->dead)
                return;
        mnd_transport_debug("serial transport %p: gone (%s)", (void *) st, strerror(-error));
        st->dead = true;
        st->gone_error = error;
        (void) sd_event_source_set_enabled(st->io, SD_EVENT_OFF);

        event = sd_event_source_get_event(st->io);
        if (sd_event_add_defer(event, &st->gone_source, serial_gone_dispatch, st) < 0) {
                /* Out of memory: report at once rather than never. */
                serial_gone_dispatch(NULL, st);
                return;
        }
        (void) sd_event_source_set_description(st->gone_source, "mnd-serial-gone");
}

/* A write or read error: a vanished tty is an unplug. */
static int serial_io_error(int e) {
        return e == EIO || e == ENXIO || e == ENODEV || e == EPIPE ? -ENODEV : -e;
}

/* Writes as much of the queue as fits. */
static int serial_flush(struct serial_transport *st) {
        while (st->queue_len > 0) {
                ssize_t n = write(st->fd, st->queue, st->queue_len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return serial_io_error(errno);
                }
                memmove(st->queue, st->queue + n, st->queue_len - (size_t) n);
                st->queue_len -= (size_t) n;
        }
        return sd_event_source_set_io_events(st->io, st->queue_len > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static int serial_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct serial_transport *st = userdata;
        uint8_t buf[SERIAL_READ_MAX];
        ssize_t n;
        int r;

        if (revents & EPOLLOUT) {
                r = serial_flush(st);
                if (r < 0) {
                        serial_fail(st, r);
                        return 0;
                }
        }

        if (!(revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                return 0;

        n = read(fd, buf, sizeof buf);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                        if (revents & (EPOLLHUP | EPOLLERR))
                                serial_fail(st, -ENODEV);
                        return 0;
                }
                serial_fail(st, serial_io_error(errno));
                return 0;
        }
        if (n == 0) {
                /* Hang-up: the device is gone. */
                serial_fail(st, -ENODEV);
                return 0;
        }
        /* Last: may free the transport.  What is left is read on the next
         * iteration (level-triggered), before any hang-up is reported. */
        if (st->base.on_data)
                st->base.on_data(&st->base, buf, (size_t) n, st->base.userdata);
        return 0;
}

static int serial_write(struct mnd_transport *t, const uint8_t *data, size_t len) {
        struct serial_transport *st = (struct serial_transport *) t;
        size_t done = 0;
        int r;

        if (st->dead)
                return -ENODEV;
        if (len == 0)
                return 0;
        if (len > SERIAL_QUEUE_MAX - st->queue_len)
                return -ENOBUFS;

        if (st->queue_len == 0)
                while (done < len) {
                        ssize_t n = write(st->fd, data + done, len - done);

                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno == EAGAIN)
                                        break;
                                r = serial_io_error(errno);
                                serial_fail(st, r);
                                return r;
                        }
                        done += (size_t) n;
                }

        if (done == len)
                return 0;

        memcpy(st->queue + st->queue_len, data + done, len - done);
        st->queue_len += len - done;
        r = sd_event_source_set_io_events(st->io, EPOLLIN | EPOLLOUT);
        if (r < 0) {
                serial_fail(st, r);
                return r;
        }
        return 0;
}

static void serial_free(struct mnd_transport *t) {
        struct serial_transport *st = (struct serial_transport *) t;

        sd_event_source_disable_unref(st->gone_source);
        sd_event_source_disable_unref(st->io);
        if (st->port) {
                if (st->open)
                        (void) sp_close(st->port);
                sp_free_port(st->port);
        }
        free(st->queue);
        free(st);
}

static const struct mnd_transport_ops serial_ops = {
        .kind = MNP_TRANSPORT_SERIAL,
        .write = serial_write,
        .free = serial_free,
};

static int serial_configure(struct sp_port *port) {
        struct sp_port_config *config = NULL;
        enum sp_return r;

        r = sp_new_config(&config);
        if (r != SP_OK)
                return serial_errno(r);

        if ((r = sp_set_config_baudrate(config, SERIAL_BAUDRATE)) == SP_OK &&
            (r = sp_set_config_bits(config, 8)) == SP_OK &&
            (r = sp_set_config_parity(config, SP_PARITY_NONE)) == SP_OK &&
            (r = sp_set_config_stopbits(config, 1)) == SP_OK &&
            (r = sp_set_config_flowcontrol(config, SP_FLOWCONTROL_NONE)) == SP_OK &&
            /* A CDC-ACM device takes DTR as "a host has the port open". */
            (r = sp_set_config_dtr(config, SP_DTR_ON)) == SP_OK &&
            (r = sp_set_config_rts(config, SP_RTS_ON)) == SP_OK)
                r = sp_set_config(port, config);

        sp_free_config(config);
        return serial_errno(r);
}

int mnd_transport_serial_open(sd_event *event, const char *tty, struct mnd_transport **ret) {
        struct serial_transport *st;
        struct stat sb;
        char *path;
        int r, flags;

        if (!event || !tty || !ret)
                return -EINVAL;
        if (tty[0] == '\0')
                return -ENODEV;

        /* libserialport finds the port through /sys/class/tty/NAME: resolve
         * symlinks such as udev's /dev/serial/by-id links first.  Only those:
         * glibc's realpath() does not see umockdev's emulated /dev. */
        if (lstat(tty, &sb) < 0)
                return errno == ENOENT ? -ENODEV : -errno;
        path = S_ISLNK(sb.st_mode) ? realpath(tty, NULL) : strdup(tty);
        if (!path)
                return errno == ENOENT ? -ENODEV : -errno;

        st = calloc(1, sizeof *st);
        if (!st) {
                free(path);
                return -ENOMEM;
        }
        st->base.ops = &serial_ops;
        st->fd = -1;
        st->queue = malloc(SERIAL_QUEUE_MAX);
        if (!st->queue) {
                r = -ENOMEM;
                goto fail;
        }

        r = serial_errno(sp_get_port_by_name(path, &st->port));
        if (r < 0) {
                st->port = NULL;
                if (r == -EINVAL)
                        r = -ENODEV;    /* not a tty libserialport knows */
                goto fail;
        }
        r = serial_errno(sp_open(st->port, SP_MODE_READ_WRITE));
        if (r < 0)
                goto fail;
        st->open = true;

        r = serial_configure(st->port);
        if (r < 0)
                goto fail;
        r = serial_errno(sp_get_port_handle(st->port, &st->fd));
        if (r < 0)
                goto fail;

        flags = fcntl(st->fd, F_GETFL);
        if (flags < 0 || fcntl(st->fd, F_SETFL, flags | O_NONBLOCK) < 0) {
                r = -errno;
                goto fail;
        }
        /* Whatever the pen sent before we came is stale. */
        (void) sp_flush(st->port, SP_BUF_INPUT);

        r = sd_event_add_io(event, &st->io, st->fd, EPOLLIN, serial_on_io, st);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(st->io, "mnd-serial");

        mnd_transport_debug("serial transport %p: opened %s", (void *) st, path);
        free(path);
        *ret = &st->base;
        return 0;

fail:
        free(path);
        serial_free(&st->base);
        return r;
}
