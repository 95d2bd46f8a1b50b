/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A simulated pen on the far end of a file descriptor, driven from an
 * sd-event loop in real time: bytes from the fd go into sim_pen_receive(),
 * what sim_pen_transmit() hands out goes back into the fd, and a
 * CLOCK_MONOTONIC timer wakes the model at sim_pen_next_deadline().  EOF on
 * the fd is the cable being pulled from the host's side: the pen model keeps
 * running (so its lease can run out), it just hears nothing any more.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <systemd/sd-event.h>
#include <time.h>
#include <unistd.h>

#include "pen.h"

#define PEN_LOOP_OUT_MAX 65536

struct pen_loop {
        sd_event *event;
        struct sim_pen *pen;
        int fd;                         /* the pen's end; closed by pen_loop_done() */
        sd_event_source *io, *timer;
        uint8_t out[PEN_LOOP_OUT_MAX];  /* bytes from the pen not yet taken by the socket */
        size_t out_len;
        bool eof;
        uint64_t bytes_to_pen, bytes_to_host;
};

static inline uint64_t pen_loop_now(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000) + (uint64_t) ts.tv_nsec / 1000u;
}

static inline void pen_loop_flush(struct pen_loop *pl) {
        while (pl->fd >= 0 && pl->out_len > 0) {
                ssize_t n = send(pl->fd, pl->out, pl->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                pl->out_len = 0;        /* the host is gone: nobody to tell */
                        break;
                }
                memmove(pl->out, pl->out + n, pl->out_len - (size_t) n);
                pl->out_len -= (size_t) n;
        }
        if (pl->io)
                (void) sd_event_source_set_io_events(pl->io, EPOLLIN | (pl->out_len > 0 ? EPOLLOUT : 0));
}

/* Moves what the pen has for the host into the socket, then re-arms the pen's timer. */
static inline void pen_loop_pump(struct pen_loop *pl) {
        uint64_t now = pen_loop_now(), next;

        for (;;) {
                size_t n;

                if (pl->out_len == sizeof pl->out)
                        break;          /* the host is not reading: the pen's own queue holds the rest */
                n = sim_pen_transmit(pl->pen, now, pl->out + pl->out_len, sizeof pl->out - pl->out_len);
                if (n == 0)
                        break;
                if (pl->eof)
                        continue;       /* the cable is gone: bytes fall on the floor */
                pl->out_len += n;
                pl->bytes_to_host += n;
        }
        pen_loop_flush(pl);

        next = sim_pen_next_deadline(pl->pen);
        if (next == UINT64_MAX) {
                (void) sd_event_source_set_enabled(pl->timer, SD_EVENT_OFF);
                return;
        }
        if (next <= now)
                next = now + 1;
        (void) sd_event_source_set_time(pl->timer, next);
        (void) sd_event_source_set_enabled(pl->timer, SD_EVENT_ONESHOT);
}

static inline int pen_loop_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct pen_loop *pl = userdata;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                for (;;) {
                        uint8_t buf[509];       /* an odd size: frames straddle reads */
                        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);

                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0 && errno == EAGAIN)
                                break;
                        if (n <= 0) {
                                pl->eof = true;
                                pl->out_len = 0;
                                pl->io = sd_event_source_disable_unref(pl->io);
                                break;
                        }
                        pl->bytes_to_pen += (uint64_t) n;
                        sim_pen_receive(pl->pen, pen_loop_now(), buf, (size_t) n);
                }
        }
        pen_loop_pump(pl);
        return 0;
}

static inline int pen_loop_on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct pen_loop *pl = userdata;

        sim_pen_advance(pl->pen, pen_loop_now());
        pen_loop_pump(pl);
        return 0;
}

/* Powers a pen on now (cfg NULL: the defaults), attached to fd, which it takes over. */
static inline int pen_loop_init(struct pen_loop *pl, sd_event *event, const struct sim_pen_config *cfg, int fd) {
        int r;

        memset(pl, 0, sizeof *pl);
        pl->event = event;
        pl->fd = fd;
        pl->pen = sim_pen_new(cfg, pen_loop_now());
        if (!pl->pen)
                return -ENOMEM;

        r = sd_event_add_io(event, &pl->io, fd, EPOLLIN, pen_loop_on_io, pl);
        if (r < 0)
                return r;
        r = sd_event_add_time(event, &pl->timer, CLOCK_MONOTONIC, pen_loop_now(), 1, pen_loop_on_timer, pl);
        if (r < 0)
                return r;
        pen_loop_pump(pl);
        return 0;
}

/* Call after poking the model directly (reboot, faults, cartridge ...). */
static inline void pen_loop_poke(struct pen_loop *pl) {
        pen_loop_pump(pl);
}

/* Pulls the cable from the pen's side: the host sees EOF. */
static inline void pen_loop_close(struct pen_loop *pl) {
        pl->io = sd_event_source_disable_unref(pl->io);
        if (pl->fd >= 0)
                (void) close(pl->fd);
        pl->fd = -1;
        pl->eof = true;
        pl->out_len = 0;
}

static inline void pen_loop_done(struct pen_loop *pl) {
        pen_loop_close(pl);
        pl->timer = sd_event_source_disable_unref(pl->timer);
        pl->pen = sim_pen_free(pl->pen);
}

static inline void pen_loop_snapshot(struct pen_loop *pl, struct sim_pen_snapshot *ret) {
        uint64_t now = pen_loop_now();

        sim_pen_advance(pl->pen, now);
        sim_pen_snapshot(pl->pen, now, ret);
        pen_loop_pump(pl);
}

/* Runs the loop until cond(userdata) holds or timeout_us passes.  Returns cond's last value. */
static inline bool pen_loop_run_until(sd_event *event, bool (*cond)(void *userdata), void *userdata,
                                      uint64_t timeout_us) {
        uint64_t end = pen_loop_now() + timeout_us;

        for (;;) {
                uint64_t now;

                if (cond && cond(userdata))
                        return true;
                now = pen_loop_now();
                if (now >= end)
                        return cond ? cond(userdata) : true;
                if (sd_event_run(event, end - now) < 0)
                        return false;
        }
}

/* Runs the loop for us microseconds. */
static inline void pen_loop_run_for(sd_event *event, uint64_t us) {
        (void) pen_loop_run_until(event, NULL, NULL, us);
}
