/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include <mnp/pen-ids.h>

#define READ_SLICE_MS 10

uint64_t now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void conn_init(struct pen_conn *c) {
        struct mnp_link_config cfg = {
                .rto_us = MNP_LINK_DEFAULT_RTO_US,
                .max_retries = MNP_LINK_DEFAULT_MAX_RETRIES,
                .heartbeat_us = 50000,
                .peer_timeout_us = 1000000,
        };

        mnp_decoder_init(&c->dec);
        mnp_link_init(&c->link, &cfg, now_us());
        c->hello_heartbeat_ms = 100;    /* the pen drops us after 4x this without a frame */
        c->heartbeats = true;
}

size_t find_usb_pens(libusb_context *ctx, struct pen_conn *conns, size_t max) {
        libusb_device **list;
        ssize_t n = libusb_get_device_list(ctx, &list);
        size_t found = 0;

        CHECK(n >= 0, "libusb_get_device_list: %s", libusb_strerror((int) n));
        for (ssize_t i = 0; i < n && found < max; i++) {
                struct libusb_device_descriptor dd;
                struct pen_conn *c = &conns[found];
                int r;

                r = libusb_get_device_descriptor(list[i], &dd);
                CHECK(r == 0, "libusb_get_device_descriptor: %s", libusb_strerror(r));
                if (dd.idVendor != MNP_USB_VID || dd.idProduct != MNP_USB_PID_VENDOR_PEN)
                        continue;

                memset(c, 0, sizeof *c);
                c->usb = true;
                r = libusb_open(list[i], &c->h);
                CHECK(r == 0, "libusb_open: %s", libusb_strerror(r));
                r = libusb_get_string_descriptor_ascii(c->h, dd.iSerialNumber, (unsigned char *) c->serial,
                                                       sizeof c->serial);
                CHECK(r > 0, "reading the serial number string: %s", libusb_strerror(r));
                r = libusb_claim_interface(c->h, MNP_USB_INTERFACE);
                CHECK(r == 0, "libusb_claim_interface: %s", libusb_strerror(r));
                conn_init(c);
                found++;
        }
        libusb_free_device_list(list, 1);
        return found;
}

size_t find_serial_pens(struct pen_conn *conns, size_t max) {
        struct sp_port **ports;
        size_t found = 0;
        enum sp_return r;

        r = sp_list_ports(&ports);
        CHECK(r == SP_OK, "sp_list_ports: %d", r);
        for (size_t i = 0; ports[i] && found < max; i++) {
                struct pen_conn *c = &conns[found];
                int vid, pid;
                const char *serial;

                if (sp_get_port_transport(ports[i]) != SP_TRANSPORT_USB)
                        continue;
                if (sp_get_port_usb_vid_pid(ports[i], &vid, &pid) != SP_OK ||
                    vid != MNP_USB_VID || pid != MNP_USB_PID_SERIAL_PEN)
                        continue;

                memset(c, 0, sizeof *c);
                serial = sp_get_port_usb_serial(ports[i]);
                CHECK(serial && *serial, "serial port %s has no USB serial number", sp_get_port_name(ports[i]));
                snprintf(c->serial, sizeof c->serial, "%s", serial);
                r = sp_copy_port(ports[i], &c->port);
                CHECK(r == SP_OK, "sp_copy_port: %d", r);
                r = sp_open(c->port, SP_MODE_READ_WRITE);
                CHECK(r == SP_OK, "sp_open %s: %s", sp_get_port_name(c->port), sp_last_error_message());
                CHECK(sp_set_baudrate(c->port, 115200) == SP_OK, "sp_set_baudrate: %s", sp_last_error_message());
                CHECK(sp_set_bits(c->port, 8) == SP_OK, "sp_set_bits");
                CHECK(sp_set_parity(c->port, SP_PARITY_NONE) == SP_OK, "sp_set_parity");
                CHECK(sp_set_stopbits(c->port, 1) == SP_OK, "sp_set_stopbits");
                CHECK(sp_set_flowcontrol(c->port, SP_FLOWCONTROL_NONE) == SP_OK, "sp_set_flowcontrol");
                conn_init(c);
                found++;
        }
        sp_free_port_list(ports);
        return found;
}

void pen_close(struct pen_conn *c) {
        if (c->h) {
                libusb_release_interface(c->h, MNP_USB_INTERFACE);
                libusb_close(c->h);
                c->h = NULL;
        }
        if (c->port) {
                sp_close(c->port);
                sp_free_port(c->port);
                c->port = NULL;
        }
}

static void pen_write(struct pen_conn *c, const uint8_t *buf, size_t len) {
        if (c->dead)
                return;
        if (c->usb) {
                int sent = 0, r;

                r = libusb_bulk_transfer(c->h, MNP_USB_EP_OUT, (unsigned char *) buf, (int) len, &sent, 1000);
                if (r == LIBUSB_ERROR_NO_DEVICE || r == LIBUSB_ERROR_IO) {
                        c->dead = true;
                        c->last_error = r;
                        return;
                }
                CHECK(r == 0 && sent == (int) len, "bulk OUT to %s: %s (%d of %zu bytes)", c->serial,
                      libusb_strerror(r), sent, len);
        } else {
                int r = sp_blocking_write(c->port, buf, len, 1000);
                if (r < 0) {
                        c->dead = true;
                        c->last_error = r;
                        return;
                }
                CHECK(r == (int) len, "serial write to %s: %d of %zu bytes", c->serial, r, len);
        }
}

/* Up to size bytes within timeout_ms; -1 if the device is gone. */
static int pen_read(struct pen_conn *c, uint8_t *buf, size_t size, unsigned timeout_ms) {
        if (c->dead)
                return -1;
        if (c->usb) {
                int got = 0, r;

                r = libusb_bulk_transfer(c->h, MNP_USB_EP_IN, buf, (int) size, &got, timeout_ms);
                if (r == 0 || r == LIBUSB_ERROR_TIMEOUT)
                        return got;     /* a timed-out transfer may still carry bytes */
                if (r == LIBUSB_ERROR_NO_DEVICE || r == LIBUSB_ERROR_IO || r == LIBUSB_ERROR_PIPE) {
                        c->dead = true;
                        c->last_error = r;
                        return -1;
                }
                CHECK(false, "bulk IN from %s: %s", c->serial, libusb_strerror(r));
        } else {
                int r = sp_blocking_read_next(c->port, buf, size, timeout_ms);
                if (r < 0) {
                        c->dead = true;
                        c->last_error = r;
                        return -1;
                }
                return r;
        }
        return -1;
}

uint16_t pen_send(struct pen_conn *c, const struct mnp_msg *m) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        uint16_t seq = 0;
        ssize_t n;

        n = mnp_link_send(&c->link, now_us(), m, wire, sizeof wire, &seq);
        CHECK(n > 0, "mnp_link_send(%s): %zd", mnp_msg_type_name(m->type), n);
        pen_write(c, wire, (size_t) n);
        return seq;
}

static void service(struct pen_conn *c) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        uint8_t type;
        ssize_t n;

        while ((n = mnp_link_poll(&c->link, now_us(), wire, sizeof wire, &type)) != 0) {
                if (n > 0)
                        pen_write(c, wire, (size_t) n);
                /* -ETIMEDOUT: the frame's slot is free again; callers notice the missing answer. */
        }
        if (c->heartbeats && mnp_link_heartbeat_due(&c->link, now_us())) {
                struct mnp_msg hb = { .type = MNP_MSG_HEARTBEAT, .heartbeat.lease_ms = c->lease_ms };
                pen_send(c, &hb);
        }
}

int pen_next(struct pen_conn *c, uint64_t deadline_us, struct mnp_msg *m, enum mnp_link_rx *ret_rx,
             uint8_t *ret_answered) {
        uint8_t *buf = c->rbuf;
        size_t *len = &c->rlen, *off = &c->roff;

        for (;;) {
                while (*off < *len) {
                        struct mnp_frame f;
                        size_t used = 0;
                        int r = mnp_decoder_feed(&c->dec, buf + *off, *len - *off, &used, &f);

                        *off += used;
                        if (r != 1)
                                continue;
                        if (mnp_msg_unpack(f.type, f.payload, f.payload_len, m) < 0)
                                continue;

                        uint8_t answered = 0;
                        enum mnp_link_rx rx = mnp_link_receive(&c->link, now_us(), &f, m, &answered);
                        uint8_t wire[MNP_MAX_WIRE_FRAME];
                        ssize_t n;

                        if (rx == MNP_LINK_RX_DUPLICATE) {
                                n = mnp_link_cached_reply(&c->link, wire, sizeof wire);
                                if (n > 0)
                                        pen_write(c, wire, (size_t) n);
                                continue;
                        }
                        if (rx == MNP_LINK_RX_NEW && mnp_msg_type_is_reliable(f.type)) {
                                n = mnp_link_reply(&c->link, now_us(), f.seq, 0, 0, wire, sizeof wire);
                                CHECK(n > 0, "mnp_link_reply: %zd", n);
                                pen_write(c, wire, (size_t) n);
                        }
                        if (rx == MNP_LINK_RX_STALE)
                                continue;
                        if (f.type == MNP_MSG_STATUS) {
                                c->status = m->status;
                                c->statuses++;
                        }
                        if (f.type == MNP_MSG_FAULT && m->fault.code >= 1 && m->fault.code <= MNP_FAULT_MAX)
                                c->faults_seen |= MNP_FAULT_FLAG(m->fault.code);
                        if (ret_rx)
                                *ret_rx = rx;
                        if (ret_answered)
                                *ret_answered = answered;
                        return 1;
                }

                service(c);
                if (c->dead)
                        return -1;
                uint64_t t = now_us();
                if (t >= deadline_us)
                        return 0;
                unsigned slice = (unsigned) ((deadline_us - t + 999) / 1000);
                int r = pen_read(c, buf, sizeof c->rbuf, slice < READ_SLICE_MS ? slice : READ_SLICE_MS);
                if (r < 0)
                        return -1;
                *len = (size_t) r;
                *off = 0;
        }
}

int pen_command(struct pen_conn *c, const struct mnp_msg *m, unsigned timeout_ms) {
        uint64_t deadline = now_us() + (uint64_t) timeout_ms * 1000;
        uint16_t seq = pen_send(c, m);
        struct mnp_msg r;
        enum mnp_link_rx rx;

        while (pen_next(c, deadline, &r, &rx, NULL) == 1) {
                if (r.type == MNP_MSG_ACK && r.ack.seq == seq)
                        return 0;
                if (r.type == MNP_MSG_NAK && r.nak.seq == seq)
                        return r.nak.reason;
        }
        return -1;
}

int pen_handshake(struct pen_conn *c, unsigned timeout_ms) {
        uint64_t deadline = now_us() + (uint64_t) timeout_ms * 1000;

        mnp_link_reset(&c->link, now_us());
        while (now_us() < deadline) {
                struct mnp_msg hello = {
                        .type = MNP_MSG_HELLO,
                        .hello = { .min_version = 1, .max_version = 1, .heartbeat_ms = c->hello_heartbeat_ms },
                };
                uint64_t try_until = now_us() + 200000;
                uint16_t seq;
                struct mnp_msg r;

                /* A HELLO still in flight from an earlier try: start over. */
                mnp_link_reset(&c->link, now_us());
                seq = pen_send(c, &hello);
                while (pen_next(c, try_until < deadline ? try_until : deadline, &r, NULL, NULL) == 1)
                        if (r.type == MNP_MSG_HELLO_REPLY && r.hello_reply.hello_seq == seq) {
                                c->hello = r.hello_reply;
                                return 0;
                        }
                if (c->dead)
                        return -1;
        }
        return -1;
}

void pen_idle(struct pen_conn *c, unsigned ms) {
        uint64_t deadline = now_us() + (uint64_t) ms * 1000;
        struct mnp_msg m;

        while (pen_next(c, deadline, &m, NULL, NULL) == 1)
                ;
}

int pen_wait_state(struct pen_conn *c, uint8_t state, unsigned timeout_ms) {
        uint64_t deadline = now_us() + (uint64_t) timeout_ms * 1000;
        struct mnp_msg m;

        while (pen_next(c, deadline, &m, NULL, NULL) == 1)
                if (m.type == MNP_MSG_STATUS && m.status.state == state)
                        return 0;
        return -1;
}

char *control(const char *fmt, ...) {
        const char *path = getenv("MNSIM_CONTROL");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char line[1024], reply[8192];
        size_t got = 0;
        va_list ap;
        int fd;

        CHECK(path && *path, "MNSIM_CONTROL is not set: run me under mnsim");
        CHECK(strlen(path) < sizeof sa.sun_path, "MNSIM_CONTROL too long");
        strcpy(sa.sun_path, path);

        va_start(ap, fmt);
        vsnprintf(line, sizeof line - 1, fmt, ap);
        va_end(ap);
        strcat(line, "\n");

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0, "socket: %s", strerror(errno));
        CHECK(connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0, "connect %s: %s", path, strerror(errno));
        CHECK(write(fd, line, strlen(line)) == (ssize_t) strlen(line), "write to control socket: %s",
              strerror(errno));
        while (got < sizeof reply - 1) {
                ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
                CHECK(n >= 0, "read from control socket: %s", strerror(errno));
                if (n == 0)
                        break;
                got += (size_t) n;
                if (memchr(reply, '\n', got))
                        break;
        }
        close(fd);
        reply[got] = 0;
        CHECK(strchr(reply, '\n'), "no reply line from mnsim for '%s'", fmt);
        *strchr(reply, '\n') = 0;
        return strdup(reply);
}

const char *status_field(const char *reply, const char *key) {
        static char value[128];
        size_t klen = strlen(key);
        const char *p = reply;

        value[0] = 0;
        while ((p = strstr(p, key))) {
                if ((p == reply || p[-1] == ' ') && p[klen] == '=') {
                        size_t n = strcspn(p + klen + 1, " ");
                        if (n >= sizeof value)
                                n = sizeof value - 1;
                        memcpy(value, p + klen + 1, n);
                        value[n] = 0;
                        break;
                }
                p += klen;
        }
        return value;
}
