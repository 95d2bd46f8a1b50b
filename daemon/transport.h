/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A transport carries bytes between mnd and one pen.  It is an ops struct
 * with one backend per kind: libusb bulk endpoints (transport-usb.c), a
 * CDC-ACM tty through libserialport (transport-serial.c) and an in-process
 * socketpair for unit tests (transport-memory.c).
 *
 * Threading: every callback runs on the sd-event loop the transport was
 * created with, never on a libusb thread.  write() never blocks: bytes are
 * queued and sent in order.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include <mnp/pen-ids.h>

struct mnd_transport;

/* Bytes from the pen, in whatever chunks the transport got them. */
typedef void (*mnd_transport_data_fn)(struct mnd_transport *t, const uint8_t *data, size_t len,
                                      void *userdata);
/* The pen is gone (unplugged, hung up, I/O error: error is a negative errno,
 * -ENODEV for an unplug).  Called at most once; no data follows.  The owner
 * still frees the transport. */
typedef void (*mnd_transport_gone_fn)(struct mnd_transport *t, int error, void *userdata);

struct mnd_transport_ops {
        enum mnp_transport kind;
        /* Queues len bytes for the pen.  0, or -ENODEV once the pen is gone,
         * -ENOBUFS if the queue is full (the pen is not reading). */
        int (*write)(struct mnd_transport *t, const uint8_t *data, size_t len);
        /* Cancels what is in flight, closes, frees. */
        void (*free)(struct mnd_transport *t);
};

/* Every backend embeds this as its first member. */
struct mnd_transport {
        const struct mnd_transport_ops *ops;
        mnd_transport_data_fn on_data;
        mnd_transport_gone_fn on_gone;
        void *userdata;
};

static inline void mnd_transport_set_callbacks(struct mnd_transport *t, mnd_transport_data_fn on_data,
                                               mnd_transport_gone_fn on_gone, void *userdata) {
        t->on_data = on_data;
        t->on_gone = on_gone;
        t->userdata = userdata;
}

static inline int mnd_transport_write(struct mnd_transport *t, const uint8_t *data, size_t len) {
        return t->ops->write(t, data, len);
}

/* Accepts NULL; returns NULL. */
static inline struct mnd_transport *mnd_transport_free(struct mnd_transport *t) {
        if (t)
                t->ops->free(t);
        return NULL;
}

/* In-process backend for tests: a socketpair; *ret_peer_fd is the pen's end
 * (non-blocking), owned by the caller. */
int mnd_transport_memory_new(sd_event *event, struct mnd_transport **ret, int *ret_peer_fd);
