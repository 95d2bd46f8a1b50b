/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Vendor-class pens through libusb: interface 0, bulk OUT 0x01, bulk IN 0x81.
 *
 * Two IN transfers stay submitted; their completions (and those of the one
 * OUT transfer) come from the libusb event thread through the usb-thread
 * queue and are handled here on the loop thread.  Bytes written while the
 * OUT transfer is busy wait in a bounded queue.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "usb-thread.h"

#define USB_IN_XFERS    2
#define USB_IN_SIZE     (4 * MNP_USB_MAX_PACKET)
#define USB_OUT_SIZE    (16 * MNP_USB_MAX_PACKET)       /* most bytes per OUT transfer */
#define USB_QUEUE_MAX   (64 * 1024)                     /* bytes waiting for the OUT transfer */
#define USB_CANCEL_TIMEOUT_USEC (2 * 1000 * 1000)

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))

struct usb_transport {
        struct mnd_transport base;
        struct mnd_usb_thread *thread;
        libusb_device_handle *handle;
        bool claimed;

        struct mnd_usb_xfer in[USB_IN_XFERS];
        struct mnd_usb_xfer out;
        bool out_busy;

        struct mnd_usb_item gone_item;  /* reports gone_error on the loop */
        int gone_error;
        bool dead;                      /* no more I/O; gone is (being) reported */

        uint8_t in_buf[USB_IN_XFERS][USB_IN_SIZE];
        uint8_t out_buf[USB_OUT_SIZE];
        size_t queue_len;
        uint8_t queue[USB_QUEUE_MAX];
};

static void usb_fail(struct usb_transport *u, int error) {
        if (u->dead)
                return;
        mnd_transport_debug("usb transport %p: gone (%s)", (void *) u, strerror(-error));
        u->dead = true;
        u->gone_error = error;
        mnd_usb_thread_post(u->thread, &u->gone_item);
}

static void usb_gone_dispatch(struct mnd_usb_item *item) {
        struct usb_transport *u = container_of(item, struct usb_transport, gone_item);

        if (u->base.on_gone)
                u->base.on_gone(&u->base, u->gone_error, u->base.userdata);
}

static int usb_error_from_status(enum libusb_transfer_status status) {
        return status == LIBUSB_TRANSFER_NO_DEVICE ? -ENODEV : -EIO;
}

static int usb_submit_in(struct usb_transport *u, struct mnd_usb_xfer *x, unsigned i) {
        libusb_fill_bulk_transfer(x->transfer, u->handle, MNP_USB_EP_IN, u->in_buf[i], USB_IN_SIZE, NULL, NULL, 0);
        return mnd_usb_xfer_submit(x);
}

/* Starts the next OUT transfer if there are queued bytes and none is busy. */
static int usb_kick_out(struct usb_transport *u) {
        size_t n;
        int r;

        if (u->dead)
                return -ENODEV;
        if (u->out_busy || u->queue_len == 0)
                return 0;

        n = u->queue_len < USB_OUT_SIZE ? u->queue_len : USB_OUT_SIZE;
        memcpy(u->out_buf, u->queue, n);
        libusb_fill_bulk_transfer(u->out.transfer, u->handle, MNP_USB_EP_OUT, u->out_buf, (int) n, NULL, NULL, 0);
        r = mnd_usb_xfer_submit(&u->out);
        if (r < 0) {
                usb_fail(u, r == -ENODEV ? -ENODEV : -EIO);
                return r;
        }
        u->out_busy = true;
        memmove(u->queue, u->queue + n, u->queue_len - n);
        u->queue_len -= n;
        return 0;
}

static void usb_in_dispatch(struct mnd_usb_item *item) {
        struct mnd_usb_xfer *x = container_of(item, struct mnd_usb_xfer, item);
        struct usb_transport *u = x->owner;
        struct libusb_transfer *tr = x->transfer;
        uint8_t data[USB_IN_SIZE];
        size_t n;
        int r;

        if (u->dead)
                return;
        if (tr->status != LIBUSB_TRANSFER_COMPLETED) {
                usb_fail(u, usb_error_from_status(tr->status));
                return;
        }

        /* Resubmit at once, so a transfer is always waiting; the buffer is
         * reused, so hand a copy to the owner.  on_data is the last thing
         * done here: it may free the transport. */
        n = (size_t) tr->actual_length;
        memcpy(data, tr->buffer, n);
        r = usb_submit_in(u, x, (unsigned) (x - u->in));
        if (r < 0)
                usb_fail(u, r == -ENODEV ? -ENODEV : -EIO);
        if (n > 0 && u->base.on_data)
                u->base.on_data(&u->base, data, n, u->base.userdata);
}

static void usb_out_dispatch(struct mnd_usb_item *item) {
        struct mnd_usb_xfer *x = container_of(item, struct mnd_usb_xfer, item);
        struct usb_transport *u = x->owner;

        u->out_busy = false;
        if (u->dead)
                return;
        if (x->transfer->status != LIBUSB_TRANSFER_COMPLETED) {
                usb_fail(u, usb_error_from_status(x->transfer->status));
                return;
        }
        (void) usb_kick_out(u);
}

static int usb_write(struct mnd_transport *t, const uint8_t *data, size_t len) {
        struct usb_transport *u = (struct usb_transport *) t;

        if (u->dead)
                return -ENODEV;
        if (len == 0)
                return 0;
        if (len > USB_QUEUE_MAX - u->queue_len)
                return -ENOBUFS;

        memcpy(u->queue + u->queue_len, data, len);
        u->queue_len += len;
        return usb_kick_out(u);
}

static void usb_free(struct mnd_transport *t) {
        struct usb_transport *u = (struct usb_transport *) t;
        struct mnd_usb_xfer *xs[USB_IN_XFERS + 1];
        int r;

        for (unsigned i = 0; i < USB_IN_XFERS; i++)
                xs[i] = &u->in[i];
        xs[USB_IN_XFERS] = &u->out;

        mnd_usb_thread_unpost(u->thread, &u->gone_item);
        r = mnd_usb_xfer_cancel_wait(xs, USB_IN_XFERS + 1, USB_CANCEL_TIMEOUT_USEC);
        if (r < 0) {
                /* libusb still owns a buffer of ours: leaking beats a use after free. */
                mnd_transport_debug("usb transport %p: transfers not given back, leaking it", (void *) u);
                return;
        }
        for (unsigned i = 0; i < USB_IN_XFERS + 1; i++)
                if (xs[i]->transfer)
                        mnd_usb_xfer_done(xs[i]);

        if (u->handle) {
                if (u->claimed)
                        (void) libusb_release_interface(u->handle, MNP_USB_INTERFACE);
                libusb_close(u->handle);
        }
        free(u);
}

static const struct mnd_transport_ops usb_ops = {
        .kind = MNP_TRANSPORT_USB,
        .write = usb_write,
        .free = usb_free,
};

int mnd_transport_usb_open(struct mnd_usb_thread *thread, libusb_device *dev, struct mnd_transport **ret) {
        struct usb_transport *u;
        int r;

        if (!thread || !dev || !ret)
                return -EINVAL;

        u = calloc(1, sizeof *u);
        if (!u)
                return -ENOMEM;
        u->base.ops = &usb_ops;
        u->thread = thread;
        u->gone_item.dispatch = usb_gone_dispatch;

        r = libusb_open(dev, &u->handle);
        if (r < 0) {
                u->handle = NULL;
                r = mnd_errno_from_libusb(r);
                goto fail;
        }

        /* Detach a kernel driver bound to the interface (reattached on release). */
        r = libusb_set_auto_detach_kernel_driver(u->handle, 1);
        if (r < 0 && r != LIBUSB_ERROR_NOT_SUPPORTED) {
                r = mnd_errno_from_libusb(r);
                goto fail;
        }
        r = libusb_claim_interface(u->handle, MNP_USB_INTERFACE);
        if (r < 0) {
                r = mnd_errno_from_libusb(r);
                goto fail;
        }
        u->claimed = true;

        for (unsigned i = 0; i < USB_IN_XFERS; i++) {
                r = mnd_usb_xfer_init(&u->in[i], thread, u, usb_in_dispatch);
                if (r < 0)
                        goto fail;
        }
        r = mnd_usb_xfer_init(&u->out, thread, u, usb_out_dispatch);
        if (r < 0)
                goto fail;

        for (unsigned i = 0; i < USB_IN_XFERS; i++) {
                r = usb_submit_in(u, &u->in[i], i);
                if (r < 0)
                        goto fail;
        }

        mnd_transport_debug("usb transport %p: opened %03u:%03u", (void *) u,
                            libusb_get_bus_number(dev), libusb_get_device_address(dev));
        *ret = &u->base;
        return 0;

fail:
        usb_free(&u->base);
        return r;
}
