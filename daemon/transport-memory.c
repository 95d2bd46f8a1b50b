/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The in-process transport for tests: one end of a SOCK_STREAM socketpair,
 * watched on the sd-event loop.  The other end is handed to the caller, who
 * plays the pen on it (usually with the simulated pen model).
 *
 * write() sends what the socket takes at once and queues the rest (bounded),
 * arming EPOLLOUT until the queue is drained.  EOF or a hang-up on the socket
 * is the pen going away: on_gone(-ENODEV), once.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport.h"

#ifndef _cleanup_
#define _cleanup_(f) __attribute__((cleanup(f)))
#endif

#define MEMORY_QUEUE_MAX (64u * 1024u)  /* bytes waiting for the pen to read */
#define MEMORY_READ_CHUNK 4096u
#define MEMORY_READS_PER_DISPATCH 16u   /* then let other sources run */

struct memory_transport {
        struct mnd_transport base;
        sd_event_source *io;
        int fd;

        uint8_t *queue;
        size_t queue_len, queue_size;

        bool broken;            /* a write failed for good: nothing more is sent */
        bool gone;              /* on_gone was called */
        bool dispatching;       /* inside our I/O callback */
        bool free_requested;    /* free() was called while dispatching */
};

static void memory_destroy(struct memory_transport *m) {
        m->io = sd_event_source_disable_unref(m->io);
        if (m->fd >= 0)
                (void) close(m->fd);
        free(m->queue);
        free(m);
}

static void memory_report_gone(struct memory_transport *m, int error) {
        m->broken = true;
        (void) sd_event_source_set_enabled(m->io, SD_EVENT_OFF);
        if (m->gone)
                return;
        m->gone = true;
        if (m->base.on_gone)
                m->base.on_gone(&m->base, error, m->base.userdata);
}

static int errno_to_gone(int e) {
        /* The peer closed its end: for this backend, an unplug. */
        if (e == EPIPE || e == ECONNRESET)
                return -ENODEV;
        return -e;
}

static int memory_update_events(struct memory_transport *m) {
        return sd_event_source_set_io_events(m->io, EPOLLIN | (m->queue_len > 0 ? EPOLLOUT : 0));
}

/* Sends from the queue.  Returns 0 (possibly with bytes left), or a negative errno. */
static int memory_flush(struct memory_transport *m) {
        while (m->queue_len > 0) {
                ssize_t n = send(m->fd, m->queue, m->queue_len, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        return -errno;
                }
                memmove(m->queue, m->queue + n, m->queue_len - (size_t) n);
                m->queue_len -= (size_t) n;
        }
        return memory_update_events(m);
}

static int memory_enqueue(struct memory_transport *m, const uint8_t *data, size_t len) {
        size_t need = m->queue_len + len;

        if (need > MEMORY_QUEUE_MAX)
                return -ENOBUFS;
        if (need > m->queue_size) {
                size_t size = m->queue_size ? m->queue_size : 1024;
                uint8_t *q;

                while (size < need)
                        size *= 2;
                if (size > MEMORY_QUEUE_MAX)
                        size = MEMORY_QUEUE_MAX;
                q = realloc(m->queue, size);
                if (!q)
                        return -ENOMEM;
                m->queue = q;
                m->queue_size = size;
        }
        memcpy(m->queue + m->queue_len, data, len);
        m->queue_len += len;
        return 0;
}

static int memory_write(struct mnd_transport *t, const uint8_t *data, size_t len) {
        struct memory_transport *m = (struct memory_transport *) t;
        size_t off = 0;
        int r;

        if (m->broken || m->free_requested)
                return -ENODEV;
        if (len == 0)
                return 0;
        if (!data)
                return -EINVAL;

        /* Nothing queued: try to hand the bytes over at once. */
        while (m->queue_len == 0 && off < len) {
                ssize_t n = send(m->fd, data + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        /* The pen's end is closed.  Our I/O source sees the
                         * hang-up and reports it; here we only refuse. */
                        m->broken = true;
                        return -ENODEV;
                }
                off += (size_t) n;
        }
        if (off == len)
                return 0;

        r = memory_enqueue(m, data + off, len - off);
        if (r < 0)
                return r;
        return memory_update_events(m);
}

static void memory_free(struct mnd_transport *t) {
        struct memory_transport *m = (struct memory_transport *) t;

        if (!m)
                return;
        m->base.on_data = NULL;
        m->base.on_gone = NULL;
        if (m->dispatching) {
                /* Freed from inside one of our own callbacks: finish there. */
                m->free_requested = true;
                (void) sd_event_source_set_enabled(m->io, SD_EVENT_OFF);
                return;
        }
        memory_destroy(m);
}

static int memory_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct memory_transport *m = userdata;

        m->dispatching = true;

        if (revents & EPOLLOUT) {
                int r = memory_flush(m);

                if (r < 0)
                        memory_report_gone(m, errno_to_gone(-r));
        }

        if (!m->free_requested && !m->gone && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                for (unsigned i = 0; i < MEMORY_READS_PER_DISPATCH; i++) {
                        uint8_t buf[MEMORY_READ_CHUNK];
                        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);

                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno != EAGAIN)
                                        memory_report_gone(m, errno_to_gone(errno));
                                break;
                        }
                        if (n == 0) {
                                memory_report_gone(m, -ENODEV);
                                break;
                        }
                        if (m->base.on_data)
                                m->base.on_data(&m->base, buf, (size_t) n, m->base.userdata);
                        if (m->free_requested || m->gone)
                                break;
                }
        }

        m->dispatching = false;
        if (m->free_requested)
                memory_destroy(m);
        return 0;
}

static const struct mnd_transport_ops memory_ops = {
        /* The in-process pen stands in for the vendor-class USB pen. */
        .kind = MNP_TRANSPORT_USB,
        .write = memory_write,
        .free = memory_free,
};

static void memory_destroyp(struct memory_transport **m) {
        if (*m)
                memory_destroy(*m);
}

static void closep(int *fd) {
        if (*fd >= 0)
                (void) close(*fd);
}

int mnd_transport_memory_new(sd_event *event, struct mnd_transport **ret, int *ret_peer_fd) {
        _cleanup_(memory_destroyp) struct memory_transport *m = NULL;
        _cleanup_(closep) int peer = -1;
        int fds[2], r;

        if (!event || !ret || !ret_peer_fd)
                return -EINVAL;

        m = calloc(1, sizeof *m);
        if (!m)
                return -ENOMEM;
        m->base.ops = &memory_ops;
        m->fd = -1;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) < 0)
                return -errno;
        m->fd = fds[0];
        peer = fds[1];

        r = sd_event_add_io(event, &m->io, m->fd, EPOLLIN, memory_on_io, m);
        if (r < 0)
                return r;
        (void) sd_event_source_set_description(m->io, "mnd-transport-memory");

        *ret = &m->base;
        *ret_peer_fd = peer;
        m = NULL;
        peer = -1;
        return 0;
}
