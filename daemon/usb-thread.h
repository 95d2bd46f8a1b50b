/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The libusb event thread (internal to discovery and the USB transport).
 *
 * One libusb context, one thread blocked in libusb_handle_events_timeout_completed().
 * Whatever libusb reports on that thread (transfer completions, hotplug
 * events) is turned into an item, queued under a mutex and handed to the
 * sd-event loop through an eventfd; items are dispatched one at a time on
 * the loop thread, so every user-visible callback runs there.
 *
 * Transfers: mnd_usb_xfer wraps a libusb_transfer.  Its completion is queued
 * as an item unless the owner is tearing it down (mnd_usb_xfer_cancel_wait),
 * in which case the event thread only marks it idle and wakes the waiter.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <libusb.h>
#include <systemd/sd-event.h>

#include "transport.h"

struct mnd_usb_thread;
struct mnd_usb_item;

typedef void (*mnd_usb_item_fn)(struct mnd_usb_item *item);

/* Something to run on the loop thread.  Embed it; guarded by the thread's lock. */
struct mnd_usb_item {
        struct mnd_usb_item *prev, *next;
        bool queued;
        mnd_usb_item_fn dispatch;
};

/* A libusb transfer whose completion is dispatched on the loop. */
struct mnd_usb_xfer {
        struct mnd_usb_item item;       /* dispatch: the owner's completion handler */
        struct mnd_usb_thread *thread;
        struct libusb_transfer *transfer;
        void *owner;
        /* Guarded by the thread's lock. */
        bool in_flight;                 /* submitted, callback not run yet */
        bool discard;                   /* owner is going away: do not queue the completion */
};

/* Creates the libusb context and the eventfd source on event; the thread
 * itself starts with mnd_usb_thread_start(). */
int mnd_usb_thread_new(sd_event *event, struct mnd_usb_thread **ret);
int mnd_usb_thread_start(struct mnd_usb_thread *u);
/* Stops the thread (if running), drops queued items (calling drop on each,
 * if given, on the calling thread), exits libusb.  Accepts NULL. */
struct mnd_usb_thread *mnd_usb_thread_free(struct mnd_usb_thread *u, mnd_usb_item_fn drop);

libusb_context *mnd_usb_thread_context(struct mnd_usb_thread *u);
sd_event *mnd_usb_thread_event(struct mnd_usb_thread *u);

/* Any thread: queue item (no-op if already queued) and wake the loop. */
void mnd_usb_thread_post(struct mnd_usb_thread *u, struct mnd_usb_item *item);
/* Loop thread: take item off the queue if it is on it. */
void mnd_usb_thread_unpost(struct mnd_usb_thread *u, struct mnd_usb_item *item);

/* Allocates the libusb_transfer; x is zeroed first.  -ENOMEM. */
int mnd_usb_xfer_init(struct mnd_usb_xfer *x, struct mnd_usb_thread *u, void *owner, mnd_usb_item_fn done);
/* Submits x->transfer (filled in by the caller, except callback and user_data). */
int mnd_usb_xfer_submit(struct mnd_usb_xfer *x);
/* Loop thread: cancels every transfer in xs that is in flight, drops their
 * queued completions and waits (up to timeout_usec) until libusb has given
 * every one back (n <= 32).  -ETIMEDOUT if some are still in flight: their buffers
 * must then be leaked, not freed. */
int mnd_usb_xfer_cancel_wait(struct mnd_usb_xfer *const *xs, size_t n, uint64_t timeout_usec);
/* Frees the libusb_transfer (not in flight any more). */
void mnd_usb_xfer_done(struct mnd_usb_xfer *x);

/* libusb error code to negative errno. */
int mnd_errno_from_libusb(int r);

/* Debug output on stderr when $MND_DEBUG_TRANSPORT is set; nothing otherwise. */
void mnd_transport_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The libusb backend (transport-usb.c): claims interface 0 of dev; its
 * callbacks run on u's loop. */
int mnd_transport_usb_open(struct mnd_usb_thread *u, libusb_device *dev, struct mnd_transport **ret);
