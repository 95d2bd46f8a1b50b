/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mnp/pen-ids.h>
#include "testbed.h"

#define USB_PCI_ROOT "/devices/pci0000:00/0000:00:14.0"

const char *mn_pen_kind_name(enum mn_pen_kind kind) {
        return kind == MN_PEN_USB ? "usb" : "serial";
}

const char *mn_pen_product(const struct mn_pen *p) {
        return p->kind == MN_PEN_USB ? MNP_USB_PRODUCT_VENDOR : MNP_USB_PRODUCT_SERIAL;
}

uint16_t mn_pen_pid(const struct mn_pen *p) {
        return p->kind == MN_PEN_USB ? MNP_USB_PID_VENDOR_PEN : MNP_USB_PID_SERIAL_PEN;
}

static size_t put(uint8_t *buf, size_t size, size_t at, const uint8_t *d, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (at + i < size)
                        buf[at + i] = d[i];
        return at + n;
}

size_t mn_usb_device_descriptor(enum mn_pen_kind kind, uint8_t *buf, size_t size) {
        uint16_t pid = kind == MN_PEN_USB ? MNP_USB_PID_VENDOR_PEN : MNP_USB_PID_SERIAL_PEN;
        const uint8_t d[18] = {
                18, 0x01,                       /* bLength, DEVICE */
                0x00, 0x02,                     /* bcdUSB 2.00 */
                kind == MN_PEN_USB ? 0x00 : 0x02, 0x00, 0x00,  /* class: per interface, or CDC */
                64,                             /* bMaxPacketSize0 */
                MNP_USB_VID & 0xff, MNP_USB_VID >> 8,
                pid & 0xff, pid >> 8,
                0x00, 0x01,                     /* bcdDevice 1.00 */
                MN_STRING_MANUFACTURER, MN_STRING_PRODUCT, MN_STRING_SERIAL,
                1,                              /* bNumConfigurations */
        };
        put(buf, size, 0, d, sizeof d);
        return MIN(sizeof d, size);
}

size_t mn_usb_config_descriptor(enum mn_pen_kind kind, uint8_t *buf, size_t size) {
        static const uint8_t vendor[] = {
                9, 0x02, 32, 0, 1, 1, 0, 0x80, 50,            /* config: 32 bytes, 1 interface, 100 mA */
                9, 0x04, MNP_USB_INTERFACE, 0, 2, 0xff, 0x00, 0x00, 0,  /* interface 0: vendor class */
                7, 0x05, MNP_USB_EP_OUT, 0x02, MNP_USB_MAX_PACKET, 0, 0,  /* bulk OUT */
                7, 0x05, MNP_USB_EP_IN, 0x02, MNP_USB_MAX_PACKET, 0, 0,   /* bulk IN */
        };
        static const uint8_t cdc[] = {
                9, 0x02, 67, 0, 2, 1, 0, 0x80, 50,            /* config: 67 bytes, 2 interfaces */
                9, 0x04, 0, 0, 1, 0x02, 0x02, 0x01, 0,        /* interface 0: CDC ACM, AT commands */
                5, 0x24, 0x00, 0x10, 0x01,                    /* CDC header 1.10 */
                5, 0x24, 0x01, 0x00, 1,                       /* call management: data interface 1 */
                4, 0x24, 0x02, 0x02,                          /* ACM: line coding and serial state */
                5, 0x24, 0x06, 0, 1,                          /* union: master 0, slave 1 */
                7, 0x05, 0x83, 0x03, 8, 0, 16,                /* interrupt IN 0x83 */
                9, 0x04, 1, 0, 2, 0x0a, 0x00, 0x00, 0,        /* interface 1: CDC data */
                7, 0x05, 0x02, 0x02, 64, 0, 0,               /* bulk OUT 0x02 */
                7, 0x05, 0x82, 0x02, 64, 0, 0,               /* bulk IN 0x82 */
        };
        const uint8_t *d = kind == MN_PEN_USB ? vendor : cdc;
        size_t n = kind == MN_PEN_USB ? sizeof vendor : sizeof cdc;

        put(buf, size, 0, d, n);
        return MIN(n, size);
}

size_t mn_usb_descriptors(enum mn_pen_kind kind, uint8_t *buf, size_t size) {
        size_t n = mn_usb_device_descriptor(kind, buf, size);
        return n + mn_usb_config_descriptor(kind, buf + n, size - n);
}

size_t mn_usb_string_descriptor(const struct mn_pen *p, unsigned index, uint8_t *buf, size_t size) {
        uint8_t d[2 + 2 * 126];
        const char *s;
        size_t n;

        switch (index) {
        case 0:
                d[0] = 4, d[1] = 0x03, d[2] = 0x09, d[3] = 0x04;  /* English (US) */
                put(buf, size, 0, d, 4);
                return MIN(size, 4u);
        case MN_STRING_MANUFACTURER:
                s = MNP_USB_MANUFACTURER;
                break;
        case MN_STRING_PRODUCT:
                s = mn_pen_product(p);
                break;
        case MN_STRING_SERIAL:
                s = p->serial;
                break;
        default:
                return 0;
        }

        n = MIN(strlen(s), 126u);
        d[0] = (uint8_t) (2 + 2 * n);
        d[1] = 0x03;
        for (size_t i = 0; i < n; i++) {
                d[2 + 2 * i] = (uint8_t) s[i];
                d[3 + 2 * i] = 0;
        }
        put(buf, size, 0, d, d[0]);
        return MIN(size, (size_t) d[0]);
}

static void append_hex(GString *s, const uint8_t *d, size_t n) {
        for (size_t i = 0; i < n; i++)
                g_string_append_printf(s, "%02X", d[i]);
}

/* udev's ID_SERIAL style: spaces become underscores. */
static char *udev_safe(const char *s) {
        char *r = g_strdup(s);
        for (char *c = r; *c; c++)
                if (!g_ascii_isalnum(*c) && !strchr("-_.", *c))
                        *c = '_';
        return r;
}

void mn_pen_set_paths(struct mn_pen *p) {
        g_free(p->syspath);
        p->syspath = g_strdup_printf("/sys" USB_PCI_ROOT "/usb%u/%u-%u", p->busnum, p->busnum, p->port);
        g_free(p->devnode);
        if (p->kind == MN_PEN_USB)
                p->devnode = g_strdup_printf("/dev/bus/usb/%03u/%03u", p->busnum, p->devnum);
        else
                p->devnode = g_strdup_printf("/dev/ttyACM%u", p->acm);
}

char *mn_pen_description(struct mn_pen *p) {
        g_autoptr(GString) s = g_string_new(NULL);
        g_autofree char *vendor = udev_safe(MNP_USB_MANUFACTURER);
        g_autofree char *model = udev_safe(mn_pen_product(p));
        g_autofree char *usbdir = g_strdup_printf("%u-%u", p->busnum, p->port);
        g_autofree char *devpath = g_strdup_printf(USB_PCI_ROOT "/usb%u/%s", p->busnum, usbdir);
        uint8_t desc[128];
        size_t dlen = mn_usb_descriptors(p->kind, desc, sizeof desc);
        bool usb = p->kind == MN_PEN_USB;
        unsigned minor = (p->busnum - 1) * 128 + (p->devnum - 1);

        mn_pen_set_paths(p);

        /* The USB device. */
        g_string_append_printf(s, "P: %s\n", devpath);
        g_string_append_printf(s, "N: bus/usb/%03u/%03u\n", p->busnum, p->devnum);
        g_string_append_printf(s, "E: DEVNAME=/dev/bus/usb/%03u/%03u\n", p->busnum, p->devnum);
        g_string_append(s, "E: DEVTYPE=usb_device\nE: DRIVER=usb\nE: SUBSYSTEM=usb\n");
        g_string_append_printf(s, "E: PRODUCT=%x/%x/100\n", MNP_USB_VID, mn_pen_pid(p));
        g_string_append_printf(s, "E: TYPE=%u/0/0\n", usb ? 0 : 2);
        g_string_append_printf(s, "E: BUSNUM=%03u\nE: DEVNUM=%03u\n", p->busnum, p->devnum);
        g_string_append_printf(s, "E: MAJOR=189\nE: MINOR=%u\n", minor);
        g_string_append_printf(s, "E: ID_VENDOR=%s\nE: ID_VENDOR_ID=%04x\n", vendor, MNP_USB_VID);
        g_string_append_printf(s, "E: ID_MODEL=%s\nE: ID_MODEL_ID=%04x\n", model, mn_pen_pid(p));
        g_string_append_printf(s, "E: ID_SERIAL=%s_%s_%s\nE: ID_SERIAL_SHORT=%s\n",
                               vendor, model, p->serial, p->serial);
        g_string_append_printf(s, "E: ID_REVISION=0100\nE: ID_BUS=usb\nE: ID_USB_INTERFACES=%s\n",
                               usb ? ":ff0000:" : ":020201:0a0000:");
        g_string_append_printf(s, "A: bConfigurationValue=1\nA: bDeviceClass=%s\n", usb ? "00" : "02");
        g_string_append(s, "A: bDeviceProtocol=00\nA: bDeviceSubClass=00\nA: bMaxPacketSize0=64\n"
                           "A: bMaxPower=100mA\nA: bNumConfigurations=1\n");
        g_string_append_printf(s, "A: bNumInterfaces= %u\n", usb ? 1 : 2);
        g_string_append(s, "A: bcdDevice=0100\nA: bmAttributes=80\n");
        g_string_append_printf(s, "A: busnum=%u\nA: devnum=%u\nA: devpath=%u\n", p->busnum, p->devnum, p->port);
        g_string_append_printf(s, "A: dev=189:%u\n", minor);
        g_string_append_printf(s, "A: idVendor=%04x\nA: idProduct=%04x\n", MNP_USB_VID, mn_pen_pid(p));
        g_string_append_printf(s, "A: manufacturer=%s\nA: product=%s\nA: serial=%s\n",
                               MNP_USB_MANUFACTURER, mn_pen_product(p), p->serial);
        g_string_append(s, "A: maxchild=0\nA: quirks=0x0\nA: removable=removable\nA: speed=12\n"
                           "A: version= 2.00\nA: configuration=\nA: authorized=1\n");
        g_string_append(s, "H: descriptors=");
        append_hex(s, desc, dlen);
        g_string_append(s, "\n\n");

        /* Its interfaces. */
        for (unsigned i = 0; i < (usb ? 1u : 2u); i++) {
                const char *cls = usb ? "ff" : (i == 0 ? "02" : "0a");
                const char *sub = usb ? "00" : (i == 0 ? "02" : "00");
                const char *proto = usb ? "00" : (i == 0 ? "01" : "00");

                g_string_append_printf(s, "P: %s/%s:1.%u\n", devpath, usbdir, i);
                g_string_append(s, "E: DEVTYPE=usb_interface\nE: SUBSYSTEM=usb\n");
                if (!usb)
                        g_string_append(s, "E: DRIVER=cdc_acm\n");
                g_string_append_printf(s, "E: PRODUCT=%x/%x/100\n", MNP_USB_VID, mn_pen_pid(p));
                g_string_append_printf(s, "E: INTERFACE=%u/%u/%u\n",
                                       (unsigned) strtoul(cls, NULL, 16), (unsigned) strtoul(sub, NULL, 16),
                                       (unsigned) strtoul(proto, NULL, 16));
                g_string_append_printf(s, "E: MODALIAS=usb:v%04Xp%04Xd0100dc%sdsc00dp00ic%sisc%sip%sin%02u\n",
                                       MNP_USB_VID, mn_pen_pid(p), usb ? "00" : "02", cls, sub, proto, i);
                g_string_append_printf(s, "A: bInterfaceClass=%s\nA: bInterfaceSubClass=%s\n"
                                          "A: bInterfaceProtocol=%s\nA: bInterfaceNumber=%02u\n"
                                          "A: bAlternateSetting= 0\nA: bNumEndpoints=%02u\n\n",
                                       cls, sub, proto, i, usb ? 2 : (i == 0 ? 1 : 2));
        }

        /* The CDC-ACM tty, below the communication interface. */
        if (!usb) {
                unsigned n = p->acm;

                g_string_append_printf(s, "P: %s/%s:1.0/tty/ttyACM%u\n", devpath, usbdir, n);
                g_string_append_printf(s, "N: ttyACM%u\n", n);
                g_string_append_printf(s, "E: DEVNAME=/dev/ttyACM%u\nE: SUBSYSTEM=tty\n", n);
                g_string_append_printf(s, "E: MAJOR=166\nE: MINOR=%u\n", n);
                g_string_append_printf(s, "E: ID_VENDOR=%s\nE: ID_VENDOR_ID=%04x\n", vendor, MNP_USB_VID);
                g_string_append_printf(s, "E: ID_MODEL=%s\nE: ID_MODEL_ID=%04x\n", model, mn_pen_pid(p));
                g_string_append_printf(s, "E: ID_SERIAL=%s_%s_%s\nE: ID_SERIAL_SHORT=%s\n",
                                       vendor, model, p->serial, p->serial);
                g_string_append(s, "E: ID_BUS=usb\nE: ID_USB_INTERFACE_NUM=00\nE: ID_USB_DRIVER=cdc_acm\n");
                g_string_append_printf(s, "A: dev=166:%u\n", n);
                g_string_append_printf(s, "L: device=../../../%s:1.0\n\n", usbdir);
        }

        return g_string_free(g_steal_pointer(&s), false);
}

int mn_testbed_add_base(struct mn_sim *sim, char **error) {
        static const char desc[] =
                "P: /devices/virtual/tty/tty\n"
                "E: DEVNAME=/dev/tty\nE: SUBSYSTEM=tty\nE: MAJOR=5\nE: MINOR=0\n"
                "A: dev=5:0\n\n";
        g_autoptr(GError) err = NULL;

        if (!umockdev_testbed_add_from_string(sim->testbed, desc, &err)) {
                *error = g_strdup_printf("cannot set up the umockdev testbed: %s", err->message);
                return -EINVAL;
        }
        return 0;
}

int mn_testbed_add_pen(struct mn_sim *sim, struct mn_pen *p, char **error) {
        g_autofree char *desc = mn_pen_description(p);
        g_autoptr(GError) err = NULL;

        if (!umockdev_testbed_add_from_string(sim->testbed, desc, &err)) {
                *error = g_strdup_printf("cannot add pen %s to the umockdev testbed: %s", p->serial, err->message);
                return -EINVAL;
        }
        return 0;
}

void mn_testbed_remove_pen(struct mn_sim *sim, struct mn_pen *p) {
        g_autofree char *usbdir = g_strdup_printf("%u-%u", p->busnum, p->port);
        GPtrArray *paths = g_ptr_array_new_with_free_func(g_free);

        /* Children first, as the kernel sends them. */
        if (p->kind == MN_PEN_SERIAL) {
                g_ptr_array_add(paths, g_strdup_printf("%s/%s:1.0/tty/ttyACM%u", p->syspath, usbdir, p->acm));
                g_ptr_array_add(paths, g_strdup_printf("%s/%s:1.1", p->syspath, usbdir));
        }
        g_ptr_array_add(paths, g_strdup_printf("%s/%s:1.0", p->syspath, usbdir));
        g_ptr_array_add(paths, g_strdup(p->syspath));

        for (guint i = 0; i < paths->len; i++)
                umockdev_testbed_uevent(sim->testbed, paths->pdata[i], "remove");
        for (guint i = 0; i < paths->len; i++)
                umockdev_testbed_remove_device(sim->testbed, paths->pdata[i]);
        g_ptr_array_unref(paths);
}
