/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A plain pen client for the integration tests: libusb-1.0 for the vendor
 * pen, libserialport for the CDC-ACM pen, libmnp for the protocol.  Nothing
 * here knows about umockdev; it would run the same against real pens.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libserialport.h>
#include <libusb.h>

#include <mnp/frame.h>
#include <mnp/link.h>
#include <mnp/message.h>

#define CHECK(cond, ...)                                                                \
        do {                                                                            \
                if (!(cond)) {                                                          \
                        fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
                        fprintf(stderr, __VA_ARGS__);                                   \
                        fputc('\n', stderr);                                            \
                        exit(1);                                                        \
                }                                                                       \
        } while (0)

struct pen_conn {
        char serial[64];                /* from the USB serial number string */
        bool usb;
        libusb_device_handle *h;
        struct sp_port *port;

        uint8_t rbuf[4096];             /* bytes read, not decoded yet */
        size_t rlen, roff;
        struct mnp_decoder dec;
        struct mnp_link link;
        uint16_t hello_heartbeat_ms;
        bool heartbeats;                /* send HEARTBEAT when due */
        uint16_t lease_ms;              /* lease the heartbeats renew (0: none) */

        struct mnp_hello_reply hello;   /* the last handshake */
        struct mnp_status status;       /* the last STATUS */
        unsigned statuses;              /* STATUS frames seen */
        uint32_t faults_seen;           /* codes of FAULT events, as flags */
        bool dead;                      /* the transport reported the device gone */
        int last_error;                 /* libusb or libserialport error of the dead transport */
};

uint64_t now_us(void);

/* Every vendor pen by VID/PID (opened, interface claimed) and every serial
 * pen by sp_list_ports() (opened, 115200 8N1).  Return how many were added
 * to conns (at most max). */
size_t find_usb_pens(libusb_context *ctx, struct pen_conn *conns, size_t max);
size_t find_serial_pens(struct pen_conn *conns, size_t max);
void pen_close(struct pen_conn *c);

/* Sends a message through the link; returns its seq. */
uint16_t pen_send(struct pen_conn *c, const struct mnp_msg *m);

/* Reads, decodes and services the link (ACKs the pen's reliable frames,
 * retransmits, heartbeats) until a message arrives or the deadline passes.
 * Returns 1 with *m (and *rx, *answered), 0 at the deadline, -1 if the
 * transport is dead. */
int pen_next(struct pen_conn *c, uint64_t deadline_us, struct mnp_msg *m, enum mnp_link_rx *rx,
             uint8_t *answered);

/* Sends m (reliable) and waits for its ACK or NAK; returns 0 for an ACK,
 * the NAK reason, or -1 on timeout. */
int pen_command(struct pen_conn *c, const struct mnp_msg *m, unsigned timeout_ms);

/* HELLO until a HELLO_REPLY comes (re-sent while the pen boots); 0 or -1. */
int pen_handshake(struct pen_conn *c, unsigned timeout_ms);

/* Services the link for ms milliseconds. */
void pen_idle(struct pen_conn *c, unsigned ms);

/* Waits for a STATUS with this state; 0 or -1. */
int pen_wait_state(struct pen_conn *c, uint8_t state, unsigned timeout_ms);

/* One command on the mnsim control socket ($MNSIM_CONTROL); the reply line
 * (malloc'ed, without newline). */
char *control(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The value of key in a "status" reply, or "" (static buffer). */
const char *status_field(const char *reply, const char *key);
