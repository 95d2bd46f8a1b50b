/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * usbfs emulation for the vendor-class pen.
 *
 * umockdev forwards every ioctl a client makes on the emulated
 * /dev/bus/usb/BBB/DDD to the "handle-ioctl" signal of the handler attached
 * to it, in umockdev's worker thread.  The client stays blocked in its ioctl()
 * until umockdev_ioctl_client_complete(); memory of the client is read when
 * a pointer is resolved and written back (if it changed) on completion.
 *
 * As in the kernel, SUBMITURB only queues: OUT and control URBs complete at
 * once, IN URBs wait until the pen has bytes.  The client learns about
 * completions through REAPURBNDELAY (libusb polls the node, which umockdev
 * backs with a plain file that always polls ready, so libusb reaps as soon as
 * it waits for anything) or a blocking REAPURB, which is parked here and
 * completed from the main loop when data arrives.  A URB's fields are only
 * changed while its client is inside REAPURB(NDELAY) or DISCARDURB, so
 * nothing races with umockdev's write-back of the SUBMITURB.
 *
 * Clients that go away: the kernel releases a process's claims and URBs when
 * its file descriptor closes, whatever killed it.  umockdev 0.17 reports a
 * connection it saw close ("notify::connected") only if it was waiting for
 * the client's next request at the time.  A client killed inside an ioctl
 * (a libusb program nearly always is: it polls and reaps all the time) is
 * noticed only when the reply cannot be written, and then umockdev drops the
 * connection without a word.  So each client is held with a toggle
 * reference: umockdev keeps a reference of its own for as long as it serves
 * a connection (a read waiting for the next request, a reply on its way), so
 * ours being the last one means the client is gone (see client_abandoned()).
 * A claim that conflicts with a live-looking holder waits briefly before
 * EBUSY, in case umockdev has not yet seen that holder's connection go.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/usbdevice_fs.h>
#include <linux/usb/ch9.h>

#include <mnp/pen-ids.h>
#include "testbed.h"
#include "usb-pen.h"

#define URB_MAX_LENGTH (1024 * 1024)
/* How long a conflicting claim waits for the holder to turn out gone. */
#define CLAIM_GRACE_US (250 * 1000)
#define CLAIM_RECHECK_MS 2

struct usb_urb {
        UMockdevIoctlData *data;        /* the usbdevfs_urb as resolved at SUBMITURB */
        unsigned long addr;             /* its address in the client: DISCARDURB's key */
        uint8_t *buffer;                /* local copy of the transfer buffer (owned by data) */
        int length;
        int status, actual;             /* written into the URB when it is reaped */
};

struct usb_attach;

struct usb_client {
        struct usb_attach *att;
        UMockdevIoctlClient *client;    /* a toggle reference (on_client_toggle) */
        gulong notify_id;
        GQueue pending;                 /* IN URBs waiting for the pen */
        GQueue done;                    /* completed, not reaped yet */
        bool claimed;
        bool claim_waiting;             /* its CLAIMINTERFACE waits (see do_claim) */
        uint64_t claim_deadline;        /* ... until then, then EBUSY */
        UMockdevIoctlData *parked;      /* a blocking REAPURB waits: its pointer argument */
};

struct usb_attach {
        struct usb_pen *u;
        UMockdevIoctlBase *handler;
        char *devnode;
        bool gone;                      /* unplugged: this device is dead for good */
        bool detached;                  /* the ioctl socket is gone too */
        GHashTable *clients;            /* UMockdevIoctlClient* -> struct usb_client* */
        GSource *claim_timer;           /* main context: re-checks waiting claims */
};

struct usb_pen {
        struct mn_pen *pen;
        struct usb_attach *cur;         /* NULL while unplugged */
        GPtrArray *attaches;            /* every attachment ever made; freed at the end */
};

static void urb_free(struct usb_urb *urb) {
        if (!urb)
                return;
        g_clear_object(&urb->data);
        g_free(urb);
}

static void on_client_toggle(gpointer userdata, GObject *obj, gboolean is_last_ref);

/* Frees the client's URBs and drops our reference: with the claim gone (the
 * client is out of its attachment's table), this is what the kernel does
 * when the file descriptor closes.  Not under sim->lock: the reference may be
 * the last one. */
static void client_free(struct usb_client *c) {
        struct usb_urb *urb;

        while ((urb = g_queue_pop_head(&c->pending)))
                urb_free(urb);
        while ((urb = g_queue_pop_head(&c->done)))
                urb_free(urb);
        g_clear_object(&c->parked);
        if (c->notify_id)
                g_signal_handler_disconnect(c->client, c->notify_id);
        g_object_remove_toggle_ref(G_OBJECT(c->client), on_client_toggle, c->att);
        g_free(c);
}

static void attach_free(struct usb_attach *a) {
        if (!a)
                return;
        if (a->claim_timer) {
                g_source_destroy(a->claim_timer);
                g_source_unref(a->claim_timer);
        }
        g_hash_table_destroy(a->clients);
        g_clear_object(&a->handler);
        g_free(a->devnode);
        g_free(a);
}

/* ---- clients that went away ---- */

/* With sim->lock held.  umockdev holds a reference to a client while it
 * waits for its next request and while a reply is on its way; it drops them
 * when the connection closed or a reply could not be written (the process
 * died inside an ioctl).  A client whose ioctl we hold back (a parked
 * REAPURB, a waiting claim) is referenced by us alone but still there. */
static bool client_abandoned(struct usb_client *c) {
        if (c->parked || c->claim_waiting)
                return false;
        return g_atomic_int_get((gint *) &G_OBJECT(c->client)->ref_count) == 1;
}

/* With sim->lock held: takes every abandoned client out of the table (its
 * claim is released from here on) and adds it to gone, for client_free()
 * after the lock is dropped. */
static void sweep_locked(struct usb_attach *a, GPtrArray *gone) {
        GHashTableIter it;
        struct usb_client *c;

        g_hash_table_iter_init(&it, a->clients);
        while (g_hash_table_iter_next(&it, NULL, (gpointer *) &c))
                if (client_abandoned(c)) {
                        g_hash_table_iter_steal(&it);
                        g_ptr_array_add(gone, c);
                }
}

static void free_clients(GPtrArray *gone) {
        if (!gone)
                return;
        for (guint i = 0; i < gone->len; i++)
                client_free(gone->pdata[i]);
        g_ptr_array_unref(gone);
}

/* Main thread, or a thread that just took sim->lock: the attachment lives as
 * long as the program, and is only looked at when not closing. */
static gboolean on_sweep(gpointer userdata) {
        struct usb_attach *a = userdata;
        struct mn_sim *sim = mn_sim_get();
        GPtrArray *gone = g_ptr_array_new();

        g_mutex_lock(&sim->lock);
        if (!sim->closing)
                sweep_locked(a, gone);
        g_mutex_unlock(&sim->lock);
        free_clients(gone);
        return G_SOURCE_REMOVE;
}

/* Ours became the last reference to a client (any thread; in umockdev's
 * worker when it gives up on a connection). */
static void on_client_toggle(gpointer userdata, GObject *obj, gboolean is_last_ref) {
        struct mn_sim *sim = mn_sim_get();
        GSource *idle;

        if (!is_last_ref)
                return;
        /* umockdev drops its references outside our lock.  Should the lock be
         * busy all the same (or held by this very thread), sweep from the main
         * loop rather than wait for it. */
        if (g_mutex_trylock(&sim->lock)) {
                g_mutex_unlock(&sim->lock);
                on_sweep(userdata);
                return;
        }
        idle = g_idle_source_new();
        g_source_set_callback(idle, on_sweep, userdata, NULL);
        g_source_set_name(idle, "mnsim client sweep");
        g_source_attach(idle, sim->ctx);
        g_source_unref(idle);
}

/* ---- control requests on endpoint 0 ---- */

/* Answers a standard request: the bytes of an IN data stage go to data (at
 * most max).  Returns the data stage length or -EPIPE (a stall). */
static int usb_control(struct mn_pen *p, const uint8_t setup[8], uint8_t *data, size_t max) {
        uint8_t type = setup[0], req = setup[1];
        uint16_t value = (uint16_t) (setup[2] | setup[3] << 8);
        uint16_t index = (uint16_t) (setup[4] | setup[5] << 8);
        uint16_t length = (uint16_t) (setup[6] | setup[7] << 8);
        size_t n = MIN((size_t) length, max);

        switch (type << 8 | req) {
        case 0x8000 | USB_REQ_GET_DESCRIPTOR:
                switch (value >> 8) {
                case USB_DT_DEVICE:
                        return (int) mn_usb_device_descriptor(p->kind, data, n);
                case USB_DT_CONFIG:
                        if ((value & 0xff) != 0)
                                return -EPIPE;
                        return (int) mn_usb_config_descriptor(p->kind, data, n);
                case USB_DT_STRING: {
                        size_t r = mn_usb_string_descriptor(p, value & 0xff, data, n);
                        return r > 0 || n == 0 ? (int) r : -EPIPE;
                }
                default:        /* device qualifier, BOS, ...: a full-speed USB 2.0 device stalls */
                        return -EPIPE;
                }
        case 0x8000 | USB_REQ_GET_STATUS:
        case 0x8100 | USB_REQ_GET_STATUS:
        case 0x8200 | USB_REQ_GET_STATUS:
                if (n >= 1)
                        data[0] = type == 0x80 ? 0x00 : 0x00;   /* bus powered, no remote wakeup, not halted */
                if (n >= 2)
                        data[1] = 0;
                return (int) MIN(n, 2u);
        case 0x8000 | USB_REQ_GET_CONFIGURATION:
                if (n >= 1)
                        data[0] = 1;
                return (int) MIN(n, 1u);
        case 0x8100 | USB_REQ_GET_INTERFACE:
                if (index != MNP_USB_INTERFACE)
                        return -EPIPE;
                if (n >= 1)
                        data[0] = 0;
                return (int) MIN(n, 1u);
        case 0x0000 | USB_REQ_SET_CONFIGURATION:
                return value <= 1 ? 0 : -EPIPE;
        case 0x0100 | USB_REQ_SET_INTERFACE:
                return index == MNP_USB_INTERFACE && value == 0 ? 0 : -EPIPE;
        case 0x0000 | USB_REQ_CLEAR_FEATURE:
        case 0x0000 | USB_REQ_SET_FEATURE:
        case 0x0200 | USB_REQ_CLEAR_FEATURE:
        case 0x0200 | USB_REQ_SET_FEATURE:
                return 0;
        default:
                return -EPIPE;
        }
}

/* ---- URB queues ---- */

static void fill_from_fifo(struct mn_pen *p, struct usb_client *c) {
        struct usb_urb *urb;

        while (p->fifo->len > 0 && (urb = g_queue_peek_head(&c->pending))) {
                size_t n = MIN((size_t) urb->length, (size_t) p->fifo->len);

                memcpy(urb->buffer, p->fifo->data, n);
                g_byte_array_remove_range(p->fifo, 0, (guint) n);
                urb->actual = (int) n;
                urb->status = 0;
                g_queue_push_tail(&c->done, g_queue_pop_head(&c->pending));
        }
}

static void kill_pending(struct usb_client *c) {
        struct usb_urb *urb;

        while ((urb = g_queue_pop_head(&c->pending))) {
                urb->status = -ESHUTDOWN;
                urb->actual = 0;
                g_queue_push_tail(&c->done, urb);
        }
}

/* Hands the oldest completed URB to a REAPURB whose pointer argument is ptr. */
static void reap_one(struct usb_client *c, UMockdevIoctlData *ptr) {
        struct usb_urb *urb = g_queue_pop_head(&c->done);
        struct usbdevfs_urb *k = (struct usbdevfs_urb *) urb->data->data;

        k->status = urb->status;
        k->actual_length = urb->actual;
        umockdev_ioctl_data_set_ptr(ptr, 0, urb->data);
        urb_free(urb);
}

/* Main thread or worker, lock held: completes a parked REAPURB if it can. */
static void try_unpark(struct usb_client *c, uint64_t now) {
        struct mn_pen *p = c->att->u->pen;

        if (!c->parked)
                return;
        if (c->att->gone)
                kill_pending(c);
        else
                fill_from_fifo(p, c);
        if (!g_queue_is_empty(&c->done)) {
                reap_one(c, c->parked);
                g_clear_object(&c->parked);
                umockdev_ioctl_client_complete(c->client, 0, 0);
        } else if (c->att->gone) {
                g_clear_object(&c->parked);
                umockdev_ioctl_client_complete(c->client, -1, ENODEV);
        }
}

void usb_pen_deliver_locked(struct usb_pen *u, uint64_t now) {
        GHashTableIter it;
        struct usb_client *c;

        if (!u->cur)
                return;
        g_hash_table_iter_init(&it, u->cur->clients);
        while (g_hash_table_iter_next(&it, NULL, (gpointer *) &c))
                try_unpark(c, now);
}

/* ---- the ioctls ---- */

static UMockdevIoctlData *resolve(UMockdevIoctlData *d, size_t offset, size_t len) {
        g_autoptr(GError) error = NULL;
        UMockdevIoctlData *r = umockdev_ioctl_data_resolve(d, offset, len, &error);

        if (!r && error)
                g_debug("cannot read client memory: %s", error->message);
        return r;
}

/* Reads a small argument struct; returns its local copy or NULL. */
#define RESOLVE_ARG(arg, type, ret_data) \
        ((ret_data) = resolve((arg), 0, sizeof(type)), (ret_data) ? (type *) (ret_data)->data : NULL)

static int do_submit(struct usb_client *c, UMockdevIoctlData *arg, uint64_t now) {
        struct usb_attach *a = c->att;
        struct mn_pen *p = a->u->pen;
        g_autoptr(UMockdevIoctlData) bd = NULL;
        struct usb_urb *urb;
        struct usbdevfs_urb *k;

        urb = g_new0(struct usb_urb, 1);
        urb->data = resolve(arg, 0, sizeof(struct usbdevfs_urb));
        if (!urb->data) {
                urb_free(urb);
                return -EFAULT;
        }
        k = (struct usbdevfs_urb *) urb->data->data;
        urb->addr = urb->data->client_addr;
        urb->length = k->buffer_length;

        if (a->gone) {
                urb_free(urb);
                return -ENODEV;
        }
        if (k->buffer_length < 0 || k->buffer_length > URB_MAX_LENGTH) {
                urb_free(urb);
                return -EINVAL;
        }
        if (k->buffer_length > 0) {
                bd = resolve(urb->data, offsetof(struct usbdevfs_urb, buffer), (size_t) k->buffer_length);
                if (!bd) {
                        urb_free(urb);
                        return -EFAULT;
                }
                urb->buffer = bd->data;
        }

        switch (k->type) {
        case USBDEVFS_URB_TYPE_CONTROL: {
                int r;

                if ((k->endpoint & 0x7f) != 0 || urb->length < 8) {
                        urb_free(urb);
                        return -EINVAL;
                }
                r = usb_control(p, urb->buffer, urb->buffer + 8, (size_t) urb->length - 8);
                urb->status = r < 0 ? r : 0;
                urb->actual = r < 0 ? 0 : r;
                g_queue_push_tail(&c->done, urb);
                return 0;
        }
        case USBDEVFS_URB_TYPE_BULK:
                if (k->endpoint == MNP_USB_EP_OUT) {
                        if (urb->length > 0)
                                sim_pen_receive(p->model, now, urb->buffer, (size_t) urb->length);
                        urb->actual = urb->length;
                        g_queue_push_tail(&c->done, urb);
                        mn_pen_rearm_locked(p);
                        return 0;
                }
                if (k->endpoint == MNP_USB_EP_IN) {
                        if (urb->length == 0)
                                g_queue_push_tail(&c->done, urb);
                        else
                                g_queue_push_tail(&c->pending, urb);
                        return 0;
                }
                urb_free(urb);
                return -ENOENT;
        case USBDEVFS_URB_TYPE_INTERRUPT:
        case USBDEVFS_URB_TYPE_ISO:
                urb_free(urb);
                return -ENOENT;         /* no such endpoint */
        default:
                urb_free(urb);
                return -EINVAL;
        }
}

static int do_reap(struct usb_client *c, UMockdevIoctlData *arg, bool block, bool *ret_deferred, uint64_t now) {
        struct usb_attach *a = c->att;
        UMockdevIoctlData *ptr;

        if (c->parked)
                return -EBUSY;          /* cannot happen: the client is blocked in that REAPURB */

        ptr = resolve(arg, 0, sizeof(void *));
        if (!ptr)
                return -EFAULT;

        if (a->gone)
                kill_pending(c);
        else if (!g_queue_is_empty(&c->pending) && g_queue_is_empty(&c->done)) {
                mn_pen_pump_locked(a->u->pen, now);
                fill_from_fifo(a->u->pen, c);
        }

        if (!g_queue_is_empty(&c->done)) {
                reap_one(c, ptr);
                g_object_unref(ptr);
                return 0;
        }
        if (a->gone || !block) {
                g_object_unref(ptr);
                return a->gone ? -ENODEV : -EAGAIN;
        }
        c->parked = ptr;
        *ret_deferred = true;
        return 0;
}

static int do_discard(struct usb_client *c, UMockdevIoctlData *arg) {
        unsigned long addr;

        if (arg->data_len < (int) sizeof(addr))
                return -EINVAL;
        memcpy(&addr, arg->data, sizeof(addr));
        for (GList *l = c->pending.head; l; l = l->next) {
                struct usb_urb *urb = l->data;

                if (urb->addr != addr)
                        continue;
                g_queue_delete_link(&c->pending, l);
                urb->status = -ENOENT;
                urb->actual = 0;
                g_queue_push_tail(&c->done, urb);
                return 0;
        }
        return -EINVAL;                 /* not in flight (any more): libusb then reaps it */
}

static bool claimed_by_other(struct usb_client *c) {
        GHashTableIter it;
        struct usb_client *o;

        g_hash_table_iter_init(&it, c->att->clients);
        while (g_hash_table_iter_next(&it, NULL, (gpointer *) &o))
                if (o != c && o->claimed)
                        return true;
        return false;
}

static void grant_claim(struct usb_client *c) {
        if (!c->claimed) {
                /* A new session: nothing stale from an earlier one. */
                g_byte_array_set_size(c->att->u->pen->fifo, 0);
                c->claimed = true;
        }
}

/* Main thread: completes the claims waiting in do_claim() once the holder
 * is gone, with EBUSY at their deadline, or ENODEV after an unplug. */
static gboolean on_claim_timer(gpointer userdata) {
        struct usb_attach *a = userdata;
        struct mn_sim *sim = mn_sim_get();
        GPtrArray *gone = g_ptr_array_new();
        uint64_t now = mn_now_us();
        bool waiting = false;
        GHashTableIter it;
        struct usb_client *c;

        g_mutex_lock(&sim->lock);
        if (!sim->closing)
                sweep_locked(a, gone);
        g_hash_table_iter_init(&it, a->clients);
        while (g_hash_table_iter_next(&it, NULL, (gpointer *) &c)) {
                int r;

                if (!c->claim_waiting)
                        continue;
                if (a->gone || sim->closing)
                        r = -ENODEV;
                else if (!claimed_by_other(c)) {
                        grant_claim(c);
                        r = 0;
                } else if (now >= c->claim_deadline)
                        r = -EBUSY;
                else {
                        waiting = true;
                        continue;
                }
                c->claim_waiting = false;
                umockdev_ioctl_client_complete(c->client, r < 0 ? -1 : 0, r < 0 ? -r : 0);
        }
        if (!waiting)
                g_clear_pointer(&a->claim_timer, g_source_unref);
        g_mutex_unlock(&sim->lock);
        free_clients(gone);
        return waiting ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* *gone: clients found abandoned, for free_clients() once sim->lock is dropped. */
static int do_claim(struct usb_client *c, unsigned iface, bool *ret_deferred, GPtrArray **gone, uint64_t now) {
        struct usb_attach *a = c->att;

        if (iface != MNP_USB_INTERFACE)
                return -ENOENT;
        if (c->claimed || !claimed_by_other(c)) {
                grant_claim(c);
                return 0;
        }

        /* Another client has it.  If that one is gone already, its claim
         * goes now. */
        if (!*gone)
                *gone = g_ptr_array_new();
        sweep_locked(a, *gone);
        if (!claimed_by_other(c)) {
                grant_claim(c);
                return 0;
        }

        /* It may have died and umockdev not noticed yet (a close is seen
         * one main loop iteration or so later): wait a little, as EBUSY would
         * be for good for this open. */
        c->claim_waiting = true;
        c->claim_deadline = now + CLAIM_GRACE_US;
        if (!a->claim_timer) {
                a->claim_timer = g_timeout_source_new(CLAIM_RECHECK_MS);
                g_source_set_callback(a->claim_timer, on_claim_timer, a, NULL);
                g_source_set_name(a->claim_timer, "mnsim claim wait");
                g_source_attach(a->claim_timer, a->u->pen->sim->ctx);
        }
        *ret_deferred = true;
        return 0;
}

static int do_ioctl(struct usb_client *c, UMockdevIoctlData *arg, gulong req, bool *ret_deferred, GPtrArray **gone,
                    uint64_t now) {
        struct usb_attach *a = c->att;
        struct mn_pen *p = a->u->pen;
        g_autoptr(UMockdevIoctlData) d = NULL;

        /* After an unplug, only the URBs in flight can still be reaped. */
        if (a->gone && req != USBDEVFS_REAPURB && req != USBDEVFS_REAPURBNDELAY && req != USBDEVFS_DISCARDURB)
                return -ENODEV;

        switch (req) {
        case USBDEVFS_SUBMITURB:
                return do_submit(c, arg, now);
        case USBDEVFS_REAPURB:
        case USBDEVFS_REAPURBNDELAY:
                return do_reap(c, arg, req == USBDEVFS_REAPURB, ret_deferred, now);
        case USBDEVFS_DISCARDURB:
                return do_discard(c, arg);

        case USBDEVFS_GET_CAPABILITIES: {
                uint32_t *caps = RESOLVE_ARG(arg, uint32_t, d);
                if (!caps)
                        return -EFAULT;
                *caps = USBDEVFS_CAP_ZERO_PACKET | USBDEVFS_CAP_BULK_CONTINUATION | USBDEVFS_CAP_NO_PACKET_SIZE_LIM;
                return 0;
        }
        case USBDEVFS_CLAIMINTERFACE:
        case USBDEVFS_RELEASEINTERFACE: {
                unsigned *iface = RESOLVE_ARG(arg, unsigned, d);
                if (!iface)
                        return -EFAULT;
                if (req == USBDEVFS_CLAIMINTERFACE)
                        return do_claim(c, *iface, ret_deferred, gone, now);
                if (*iface != MNP_USB_INTERFACE || !c->claimed)
                        return -EINVAL;
                c->claimed = false;
                return 0;
        }
        case USBDEVFS_DISCONNECT_CLAIM: {
                struct usbdevfs_disconnect_claim *dc = RESOLVE_ARG(arg, struct usbdevfs_disconnect_claim, d);
                if (!dc)
                        return -EFAULT;
                return do_claim(c, dc->interface, ret_deferred, gone, now);
        }
        case USBDEVFS_SETINTERFACE: {
                struct usbdevfs_setinterface *si = RESOLVE_ARG(arg, struct usbdevfs_setinterface, d);
                if (!si)
                        return -EFAULT;
                return si->interface == MNP_USB_INTERFACE && si->altsetting == 0 ? 0 : -EINVAL;
        }
        case USBDEVFS_SETCONFIGURATION: {
                int *cfg = RESOLVE_ARG(arg, int, d);
                if (!cfg)
                        return -EFAULT;
                return *cfg == 1 || *cfg == 0 || *cfg == -1 ? 0 : -EINVAL;
        }
        case USBDEVFS_CLEAR_HALT:
        case USBDEVFS_RESETEP: {
                unsigned *ep = RESOLVE_ARG(arg, unsigned, d);
                if (!ep)
                        return -EFAULT;
                return *ep == MNP_USB_EP_OUT || *ep == MNP_USB_EP_IN || *ep == 0 ? 0 : -ENOENT;
        }
        case USBDEVFS_GETDRIVER:
        case USBDEVFS_IOCTL:            /* e.g. disconnect the kernel driver: there is none */
                return -ENODATA;
        case USBDEVFS_CONNECTINFO: {
                struct usbdevfs_connectinfo *ci = RESOLVE_ARG(arg, struct usbdevfs_connectinfo, d);
                if (!ci)
                        return -EFAULT;
                ci->devnum = p->devnum;
                ci->slow = 0;
                return 0;
        }
        case USBDEVFS_GET_SPEED:
                return USB_SPEED_FULL;
        case USBDEVFS_RESET:
        case USBDEVFS_DROP_PRIVILEGES:
        case USBDEVFS_FORBID_SUSPEND:
        case USBDEVFS_ALLOW_SUSPEND:
                return 0;
        case USBDEVFS_CONTROL: {
                struct usbdevfs_ctrltransfer *ct = RESOLVE_ARG(arg, struct usbdevfs_ctrltransfer, d);
                g_autoptr(UMockdevIoctlData) buf = NULL;
                uint8_t setup[8];
                int r;

                if (!ct)
                        return -EFAULT;
                setup[0] = ct->bRequestType, setup[1] = ct->bRequest;
                setup[2] = ct->wValue & 0xff, setup[3] = ct->wValue >> 8;
                setup[4] = ct->wIndex & 0xff, setup[5] = ct->wIndex >> 8;
                setup[6] = ct->wLength & 0xff, setup[7] = ct->wLength >> 8;
                if (ct->wLength > 0) {
                        buf = resolve(d, offsetof(struct usbdevfs_ctrltransfer, data), ct->wLength);
                        if (!buf)
                                return -EFAULT;
                }
                r = usb_control(p, setup, buf ? buf->data : NULL, buf ? ct->wLength : 0);
                return r;
        }
        case USBDEVFS_BULK: {
                struct usbdevfs_bulktransfer *bt = RESOLVE_ARG(arg, struct usbdevfs_bulktransfer, d);
                g_autoptr(UMockdevIoctlData) buf = NULL;
                size_t n;

                if (!bt)
                        return -EFAULT;
                if (bt->ep != MNP_USB_EP_OUT && bt->ep != MNP_USB_EP_IN)
                        return -ENOENT;
                if (bt->len > URB_MAX_LENGTH)
                        return -EINVAL;
                if (bt->len > 0) {
                        buf = resolve(d, offsetof(struct usbdevfs_bulktransfer, data), bt->len);
                        if (!buf)
                                return -EFAULT;
                }
                if (bt->ep == MNP_USB_EP_OUT) {
                        if (bt->len > 0)
                                sim_pen_receive(p->model, now, buf->data, bt->len);
                        mn_pen_rearm_locked(p);
                        return (int) bt->len;
                }
                /* Synchronous IN: what the pen has queued now, else a timeout at once. */
                mn_pen_pump_locked(p, now);
                n = MIN((size_t) bt->len, (size_t) p->fifo->len);
                if (n == 0)
                        return -ETIMEDOUT;
                memcpy(buf->data, p->fifo->data, n);
                g_byte_array_remove_range(p->fifo, 0, (guint) n);
                return (int) n;
        }
        default:
                if (_IOC_TYPE(req) == 'U' && _IOC_NR(req) == _IOC_NR(USBDEVFS_CONNINFO_EX(0))) {
                        struct usbdevfs_conninfo_ex ci = {
                                .size = sizeof(ci),
                                .busnum = p->busnum,
                                .devnum = p->devnum,
                                .speed = USB_SPEED_FULL,
                                .num_ports = 1,
                                .ports = { (uint8_t) p->port },
                        };
                        size_t n = MIN((size_t) _IOC_SIZE(req), sizeof(ci));
                        uint8_t *dst;

                        d = resolve(arg, 0, n);
                        if (!d)
                                return -EFAULT;
                        dst = d->data;
                        memcpy(dst, &ci, n);
                        return 0;
                }
                return -ENOTTY;
        }
}

/* umockdev saw the connection close (the client closed the node, or died
 * while umockdev waited for its next request). */
static void on_client_notify(GObject *obj, GParamSpec *pspec, gpointer userdata) {
        struct usb_attach *a = userdata;
        UMockdevIoctlClient *client = UMOCKDEV_IOCTL_CLIENT(obj);
        struct mn_sim *sim = mn_sim_get();
        struct usb_client *c = NULL;

        if (umockdev_ioctl_client_get_connected(client))
                return;
        g_mutex_lock(&sim->lock);
        if (!sim->closing) {
                c = g_hash_table_lookup(a->clients, client);
                if (c)
                        g_hash_table_steal(a->clients, client);         /* its claim goes */
        }
        g_mutex_unlock(&sim->lock);
        if (c)
                client_free(c);                                         /* and its URBs */
}

static gboolean on_handle_ioctl(UMockdevIoctlBase *handler, UMockdevIoctlClient *client, gpointer userdata) {
        struct usb_attach *a = userdata;
        struct mn_sim *sim = mn_sim_get();
        UMockdevIoctlData *arg = umockdev_ioctl_client_get_arg(client);
        gulong req = umockdev_ioctl_client_get_request(client);
        GPtrArray *gone = NULL;
        struct usb_client *c;
        bool deferred = false;
        int r;

        g_mutex_lock(&sim->lock);
        if (sim->closing) {
                g_mutex_unlock(&sim->lock);
                umockdev_ioctl_client_complete(client, -1, ENODEV);
                return true;
        }
        c = g_hash_table_lookup(a->clients, client);
        if (!c) {
                c = g_new0(struct usb_client, 1);
                c->att = a;
                c->client = client;
                g_object_add_toggle_ref(G_OBJECT(client), on_client_toggle, a);
                g_queue_init(&c->pending);
                g_queue_init(&c->done);
                c->notify_id = g_signal_connect(client, "notify::connected", G_CALLBACK(on_client_notify), a);
                g_hash_table_insert(a->clients, client, c);
        }
        r = do_ioctl(c, arg, req, &deferred, &gone, mn_now_us());
        g_mutex_unlock(&sim->lock);
        free_clients(gone);

        if (!deferred)
                umockdev_ioctl_client_complete(client, r < 0 ? -1 : r, r < 0 ? -r : 0);
        return true;
}

struct usb_pen *usb_pen_new(struct mn_pen *p) {
        struct usb_pen *u = g_new0(struct usb_pen, 1);

        u->pen = p;
        u->attaches = g_ptr_array_new_with_free_func((GDestroyNotify) attach_free);
        return u;
}

void usb_pen_free(struct usb_pen *u) {
        if (!u)
                return;
        g_ptr_array_unref(u->attaches);
        g_free(u);
}

int usb_pen_attach(struct usb_pen *u, char **error) {
        struct usb_attach *a = g_new0(struct usb_attach, 1);
        g_autoptr(GError) err = NULL;

        a->u = u;
        a->devnode = g_strdup(u->pen->devnode);
        a->clients = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, (GDestroyNotify) client_free);
        a->handler = umockdev_ioctl_base_new();
        g_signal_connect(a->handler, "handle-ioctl", G_CALLBACK(on_handle_ioctl), a);
        g_ptr_array_add(u->attaches, a);

        /* The node does not exist yet: nobody can connect before u->cur is set. */
        if (!umockdev_testbed_attach_ioctl(u->pen->sim->testbed, a->devnode, a->handler, &err)) {
                *error = g_strdup_printf("cannot attach the usbfs emulation to %s: %s", a->devnode, err->message);
                a->gone = a->detached = true;
                return -EIO;
        }
        g_mutex_lock(&u->pen->sim->lock);
        u->cur = a;
        g_mutex_unlock(&u->pen->sim->lock);
        return 0;
}

void usb_pen_disconnect(struct usb_pen *u) {
        struct mn_sim *sim = u->pen->sim;
        struct usb_attach *a = u->cur;
        GHashTableIter it;
        struct usb_client *c;

        if (!a)
                return;
        g_mutex_lock(&sim->lock);
        a->gone = true;
        u->cur = NULL;
        g_byte_array_set_size(u->pen->fifo, 0);
        g_hash_table_iter_init(&it, a->clients);
        while (g_hash_table_iter_next(&it, NULL, (gpointer *) &c)) {
                try_unpark(c, 0);
                if (c->claim_waiting) {
                        c->claim_waiting = false;
                        umockdev_ioctl_client_complete(c->client, -1, ENODEV);
                }
        }
        if (a->claim_timer) {
                g_source_destroy(a->claim_timer);
                g_clear_pointer(&a->claim_timer, g_source_unref);
        }
        g_mutex_unlock(&sim->lock);
}

void usb_pen_detach(struct usb_pen *u) {
        struct usb_attach *a;

        usb_pen_disconnect(u);
        if (u->attaches->len == 0)
                return;
        a = u->attaches->pdata[u->attaches->len - 1];
        if (a->detached)
                return;
        a->detached = true;
        /* Clients that have the node open keep talking to a->handler (their
         * connection holds it) and get ENODEV. */
        umockdev_testbed_detach_ioctl(u->pen->sim->testbed, a->devnode, NULL);
}
