/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Discovery: one libusb hotplug callback (LIBUSB_HOTPLUG_ENUMERATE, so pens
 * present at start take the same path as pens plugged in later) filters by
 * the VID/PID table on the libusb thread and queues the event; the loop then
 * reads the pen's identity (sysfs attributes, which the kernel fills from the
 * string descriptors, or the descriptors themselves), finds the tty of a
 * CDC-ACM pen with libserialport (retrying a few times while it is not there
 * yet) and reports it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <libserialport.h>

#include "discovery.h"
#include "transport-serial.h"
#include "usb-thread.h"

#define TTY_RETRY_FIRST_USEC (50 * 1000)
#define TTY_RETRIES          6          /* 50, 100 ... 1600 ms: about 3 s in all */
#define STRING_TIMEOUT_MS    500

#define container_of(ptr, type, member) ((type *) ((char *) (ptr) - offsetof(type, member)))

struct pen_entry {
        struct pen_entry *next;
        struct mnd_discovery *d;
        libusb_device *dev;             /* a reference */
        struct mnd_pen_device info;
        bool reported;                  /* "added" was called */
        unsigned tty_tries;
        sd_event_source *retry;
};

struct hotplug_item {
        struct mnd_usb_item item;
        struct mnd_discovery *d;
        libusb_device *dev;             /* a reference */
        bool arrived;
};

struct mnd_discovery {
        sd_event *event;
        struct mnd_id_table ids;        /* read by the libusb thread: never changed after new */
        mnd_discovery_fn added, removed;
        void *userdata;
        struct mnd_usb_thread *thread;
        libusb_hotplug_callback_handle hotplug;
        bool hotplug_registered;
        struct pen_entry *pens;
};

/* ---- the VID/PID table ---- */

void mnd_id_table_init(struct mnd_id_table *t) {
        t->n = 0;
        for (const struct mnp_pen_id *e = mnp_pen_ids; e->vid != 0 && t->n < MND_ID_TABLE_MAX; e++)
                t->ids[t->n++] = *e;
}

int mnd_id_table_add(struct mnd_id_table *t, uint16_t vid, uint16_t pid, enum mnp_transport kind) {
        if (kind != MNP_TRANSPORT_USB && kind != MNP_TRANSPORT_SERIAL)
                return -EINVAL;
        if (vid == 0)
                return -EINVAL;         /* 0 ends the built-in table; no device has it */
        if (mnd_id_table_find(t, vid, pid))
                return -EEXIST;
        if (t->n >= MND_ID_TABLE_MAX)
                return -E2BIG;
        t->ids[t->n++] = (struct mnp_pen_id) {
                .vid = vid,
                .pid = pid,
                .transport = kind,
                .model = "custom",
        };
        return 0;
}

const struct mnp_pen_id *mnd_id_table_find(const struct mnd_id_table *t, uint16_t vid, uint16_t pid) {
        for (unsigned i = 0; i < t->n && i < MND_ID_TABLE_MAX; i++)
                if (t->ids[i].vid == vid && t->ids[i].pid == pid)
                        return &t->ids[i];
        return NULL;
}

/* ---- a pen's identity ---- */

static void strscpy_printable(char *dst, size_t size, const char *src) {
        size_t n = 0;

        for (; *src && n + 1 < size; src++)
                if ((unsigned char) *src >= 0x20 && (unsigned char) *src < 0x7f)
                        dst[n++] = *src;
        dst[n] = '\0';
}

/* The device's sysfs folder: /sys/bus/usb/devices/BUS-PORT[.PORT...]. */
static int sysfs_dir(libusb_device *dev, char *buf, size_t size) {
        uint8_t ports[8];
        int n, k;
        size_t at;

        n = libusb_get_port_numbers(dev, ports, (int) sizeof ports);
        if (n <= 0)
                return -ENOENT;
        k = snprintf(buf, size, "/sys/bus/usb/devices/%u-%u", libusb_get_bus_number(dev), ports[0]);
        if (k < 0 || (size_t) k >= size)
                return -ENAMETOOLONG;
        at = (size_t) k;
        for (int i = 1; i < n; i++) {
                k = snprintf(buf + at, size - at, ".%u", ports[i]);
                if (k < 0 || (size_t) k >= size - at)
                        return -ENAMETOOLONG;
                at += (size_t) k;
        }
        return 0;
}

static int read_attr(const char *dir, const char *name, char *ret, size_t size) {
        char path[256], buf[256];
        ssize_t n;
        int fd;

        if ((size_t) snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
                return -ENAMETOOLONG;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof buf - 1);
        if (n < 0)
                n = -errno;
        close(fd);
        if (n < 0)
                return (int) n;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
                n--;
        buf[n] = '\0';
        strscpy_printable(ret, size, buf);
        return 0;
}

/* Fallback when sysfs has no strings: ask the device (vendor pens only;
 * a CDC-ACM pen's usbfs node may not be ours to open). */
static void read_string_descriptors(libusb_device *dev, struct mnd_pen_device *info) {
        struct libusb_device_descriptor desc;
        libusb_device_handle *h;
        unsigned char buf[128];
        int r;

        if (libusb_get_device_descriptor(dev, &desc) < 0)
                return;
        r = libusb_open(dev, &h);
        if (r < 0) {
                mnd_transport_debug("%s: cannot open to read strings: %s", info->key, libusb_error_name(r));
                return;
        }
        if (info->serial[0] == '\0' && desc.iSerialNumber != 0 &&
            libusb_get_string_descriptor_ascii(h, desc.iSerialNumber, buf, sizeof buf) > 0)
                strscpy_printable(info->serial, sizeof info->serial, (const char *) buf);
        if (info->product[0] == '\0' && desc.iProduct != 0 &&
            libusb_get_string_descriptor_ascii(h, desc.iProduct, buf, sizeof buf) > 0)
                strscpy_printable(info->product, sizeof info->product, (const char *) buf);
        libusb_close(h);
}

/* The tty of a CDC-ACM pen: a libserialport USB port with the pen's
 * bus/address (or, if the port does not say, VID/PID and serial). */
static int find_tty(struct mnd_pen_device *info) {
        struct sp_port **list = NULL;
        int r = -ENOENT;

        if (sp_list_ports(&list) != SP_OK)
                return -ENOENT;         /* no /sys/class/tty at all, say */

        for (struct sp_port **p = list; *p; p++) {
                const char *serial;
                int vid, pid, bus, addr;

                if (sp_get_port_transport(*p) != SP_TRANSPORT_USB)
                        continue;
                if (sp_get_port_usb_vid_pid(*p, &vid, &pid) != SP_OK || vid != info->vid || pid != info->pid)
                        continue;
                if (sp_get_port_usb_bus_address(*p, &bus, &addr) == SP_OK &&
                    (bus != info->busnum || addr != info->devaddr))
                        continue;
                serial = sp_get_port_usb_serial(*p);
                if (serial && info->serial[0] != '\0' && strcmp(serial, info->serial) != 0)
                        continue;

                if ((size_t) snprintf(info->tty, sizeof info->tty, "%s", sp_get_port_name(*p)) >= sizeof info->tty) {
                        info->tty[0] = '\0';
                        r = -ENAMETOOLONG;
                        continue;
                }
                if (info->serial[0] == '\0' && serial)
                        strscpy_printable(info->serial, sizeof info->serial, serial);
                if (info->product[0] == '\0' && sp_get_port_usb_product(*p))
                        strscpy_printable(info->product, sizeof info->product, sp_get_port_usb_product(*p));
                r = 0;
                break;
        }

        sp_free_port_list(list);
        return r;
}

/* ---- the list of pens ---- */

static struct pen_entry *pen_entry_free(struct pen_entry *e) {
        if (!e)
                return NULL;
        sd_event_source_disable_unref(e->retry);
        libusb_unref_device(e->dev);
        free(e);
        return NULL;
}

static void pen_unlink(struct mnd_discovery *d, struct pen_entry *e) {
        for (struct pen_entry **p = &d->pens; *p; p = &(*p)->next)
                if (*p == e) {
                        *p = e->next;
                        e->next = NULL;
                        return;
                }
}

static struct pen_entry *pen_by_dev(struct mnd_discovery *d, libusb_device *dev) {
        for (struct pen_entry *e = d->pens; e; e = e->next)
                if (e->dev == dev)
                        return e;
        return NULL;
}

static struct pen_entry *pen_by_key(struct mnd_discovery *d, const char *key) {
        for (struct pen_entry *e = d->pens; e; e = e->next)
                if (strcmp(e->info.key, key) == 0)
                        return e;
        return NULL;
}

/* Last thing its callers do: the callback may free d. */
static void pen_report(struct pen_entry *e) {
        struct mnd_discovery *d = e->d;

        e->reported = true;
        mnd_transport_debug("%s: added (%s %04x:%04x serial \"%s\" tty \"%s\")", e->info.key,
                            mnp_transport_name(e->info.kind), e->info.vid, e->info.pid, e->info.serial, e->info.tty);
        if (d->added)
                d->added(d, &e->info, d->userdata);
}

static int on_tty_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct pen_entry *e = userdata;

        e->retry = sd_event_source_disable_unref(e->retry);
        if (find_tty(&e->info) < 0 && ++e->tty_tries < TTY_RETRIES) {
                uint64_t delay = TTY_RETRY_FIRST_USEC << e->tty_tries;

                if (sd_event_add_time_relative(e->d->event, &e->retry, CLOCK_MONOTONIC, delay, 1000,
                                               on_tty_retry, e) >= 0)
                        return 0;
        }
        /* Found, out of retries (reported with tty "") or out of memory. */
        pen_report(e);
        return 0;
}

static void pen_arrived(struct mnd_discovery *d, libusb_device *dev) {
        struct libusb_device_descriptor desc;
        const struct mnp_pen_id *id;
        struct pen_entry *e;
        char dir[128];

        if (pen_by_dev(d, dev) ||       /* enumeration and a hotplug event raced */
            libusb_get_device_descriptor(dev, &desc) < 0 ||
            !(id = mnd_id_table_find(&d->ids, desc.idVendor, desc.idProduct))) {
                libusb_unref_device(dev);
                return;
        }

        e = calloc(1, sizeof *e);
        if (!e) {
                libusb_unref_device(dev);
                return;
        }
        e->d = d;
        e->dev = dev;
        e->info.kind = id->transport;
        e->info.vid = desc.idVendor;
        e->info.pid = desc.idProduct;
        e->info.busnum = libusb_get_bus_number(dev);
        e->info.devaddr = libusb_get_device_address(dev);
        snprintf(e->info.key, sizeof e->info.key, "usb:%03u:%03u", e->info.busnum, e->info.devaddr);

        if (sysfs_dir(dev, dir, sizeof dir) >= 0) {
                (void) read_attr(dir, "serial", e->info.serial, sizeof e->info.serial);
                (void) read_attr(dir, "product", e->info.product, sizeof e->info.product);
        }
        if (e->info.kind == MNP_TRANSPORT_USB && (e->info.serial[0] == '\0' || e->info.product[0] == '\0'))
                read_string_descriptors(dev, &e->info);

        e->next = d->pens;
        d->pens = e;

        if (e->info.kind == MNP_TRANSPORT_SERIAL && find_tty(&e->info) < 0) {
                /* cdc_acm registers the tty a moment after the USB device. */
                if (sd_event_add_time_relative(d->event, &e->retry, CLOCK_MONOTONIC, TTY_RETRY_FIRST_USEC, 1000,
                                               on_tty_retry, e) >= 0)
                        return;
        }
        pen_report(e);
}

static void pen_left(struct mnd_discovery *d, libusb_device *dev) {
        struct pen_entry *e = pen_by_dev(d, dev);
        struct mnd_pen_device info;
        bool reported;

        libusb_unref_device(dev);
        if (!e)
                return;
        pen_unlink(d, e);
        info = e->info;
        reported = e->reported;
        pen_entry_free(e);

        mnd_transport_debug("%s: removed", info.key);
        if (reported && d->removed)
                d->removed(d, &info, d->userdata);
}

/* ---- hotplug ---- */

static void hotplug_dispatch(struct mnd_usb_item *item) {
        struct hotplug_item *h = container_of(item, struct hotplug_item, item);
        struct mnd_discovery *d = h->d;
        libusb_device *dev = h->dev;
        bool arrived = h->arrived;

        free(h);
        if (arrived)
                pen_arrived(d, dev);
        else
                pen_left(d, dev);
}

static void hotplug_drop(struct mnd_usb_item *item) {
        struct hotplug_item *h = container_of(item, struct hotplug_item, item);

        libusb_unref_device(h->dev);
        free(h);
}

/* libusb's event thread (or, for the enumeration, the thread registering):
 * only the device descriptor may be looked at here. */
static int LIBUSB_CALL on_hotplug(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event,
                                  void *userdata) {
        struct mnd_discovery *d = userdata;
        struct libusb_device_descriptor desc;
        struct hotplug_item *h;

        if (libusb_get_device_descriptor(dev, &desc) < 0 ||
            !mnd_id_table_find(&d->ids, desc.idVendor, desc.idProduct))
                return 0;

        h = calloc(1, sizeof *h);
        if (!h) {
                mnd_transport_debug("out of memory: hotplug event lost");
                return 0;
        }
        h->item.dispatch = hotplug_dispatch;
        h->d = d;
        h->dev = libusb_ref_device(dev);
        h->arrived = event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED;
        mnd_usb_thread_post(d->thread, &h->item);
        return 0;
}

/* ---- the API ---- */

int mnd_discovery_new(sd_event *event, const struct mnd_id_table *ids, mnd_discovery_fn added,
                      mnd_discovery_fn removed, void *userdata, struct mnd_discovery **ret) {
        struct mnd_discovery *d;
        int r;

        if (!event || !ret)
                return -EINVAL;
        if (!libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG))
                return -EOPNOTSUPP;

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        d->event = sd_event_ref(event);
        if (ids)
                d->ids = *ids;
        else
                mnd_id_table_init(&d->ids);
        if (d->ids.n > MND_ID_TABLE_MAX)
                d->ids.n = MND_ID_TABLE_MAX;
        d->added = added;
        d->removed = removed;
        d->userdata = userdata;

        r = mnd_usb_thread_new(event, &d->thread);
        if (r < 0)
                goto fail;
        r = mnd_usb_thread_start(d->thread);
        if (r < 0)
                goto fail;

        /* Every device; the callback filters by the table.  ENUMERATE replays
         * the devices present now through the same callback and queue. */
        r = libusb_hotplug_register_callback(mnd_usb_thread_context(d->thread),
                                             LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
                                             LIBUSB_HOTPLUG_ENUMERATE, LIBUSB_HOTPLUG_MATCH_ANY,
                                             LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY,
                                             on_hotplug, d, &d->hotplug);
        if (r < 0) {
                r = mnd_errno_from_libusb(r);
                goto fail;
        }
        d->hotplug_registered = true;

        *ret = d;
        return 0;

fail:
        mnd_discovery_free(d);
        return r;
}

int mnd_discovery_open(struct mnd_discovery *d, const struct mnd_pen_device *dev, sd_event *event,
                       struct mnd_transport **ret) {
        struct pen_entry *e;

        if (!d || !dev || !ret)
                return -EINVAL;

        e = pen_by_key(d, dev->key);
        if (!e || !e->reported)
                return -ENODEV;

        switch (e->info.kind) {
        case MNP_TRANSPORT_USB:
                /* Completions come through the discovery's loop. */
                if (event && event != d->event)
                        return -EXDEV;
                return mnd_transport_usb_open(d->thread, e->dev, ret);
        case MNP_TRANSPORT_SERIAL:
                if (e->info.tty[0] == '\0' && find_tty(&e->info) < 0)
                        return -ENODEV;
                return mnd_transport_serial_open(event ?: d->event, e->info.tty, ret);
        }
        return -EINVAL;
}

struct mnd_discovery *mnd_discovery_free(struct mnd_discovery *d) {
        if (!d)
                return NULL;

        if (d->hotplug_registered)
                libusb_hotplug_deregister_callback(mnd_usb_thread_context(d->thread), d->hotplug);
        while (d->pens) {
                struct pen_entry *e = d->pens;

                d->pens = e->next;
                pen_entry_free(e);
        }
        /* Stops the thread, then drops hotplug events not dispatched yet. */
        mnd_usb_thread_free(d->thread, hotplug_drop);
        sd_event_unref(d->event);
        free(d);
        return NULL;
}
