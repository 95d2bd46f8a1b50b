/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A host for the simulated pen, built from libmnp alone: a link, a decoder, a
 * virtual clock.  The tests talk to the pen through it the way the daemon
 * does, byte for byte.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mnp/frame.h>
#include <mnp/link.h>
#include <mnp/message.h>
#include "pen.h"

#define H_T0 UINT64_C(1000000)          /* the clock starts at 1 s, not 0 */
#define H_MS UINT64_C(1000)

struct h_frame {
        struct mnp_frame f;
        struct mnp_msg m;               /* valid when unpack == 0 */
        int unpack;
        uint64_t at_us;
        enum mnp_link_rx rx;            /* as the host link classified it */
};

struct harness {
        struct sim_pen *pen;
        uint64_t now;
        struct mnp_link link;
        struct mnp_decoder dec;

        struct h_frame *frames;
        size_t n_frames, cap_frames;

        bool auto_ack;                  /* ACK the pen's FAULT and CARTRIDGE events */
        bool reading;                   /* calls sim_pen_transmit (a host that reads) */
        uint64_t bytes_in;
        uint64_t decode_errors[8];      /* by kind: see h_error_kind */

        uint64_t hb_period_us;          /* host heartbeats, 0: none */
        uint16_t hb_lease_ms;
        uint64_t next_hb_us;
        uint64_t last_hb_us;            /* when the harness last sent a HEARTBEAT */

        uint64_t stuck;                 /* next_deadline not in the future after a pump */
        bool pumping;

        uint8_t last_wire[MNP_MAX_WIRE_FRAME];  /* the last frame sent, for duplicates */
        size_t last_wire_len;
};

enum { H_ERR_CRC, H_ERR_COBS, H_ERR_SIZE, H_ERR_RUNT, H_ERR_VERSION, H_ERR_OTHER };

static inline int h_error_kind(int r) {
        switch (r) {
        case -EBADMSG:
                return H_ERR_CRC;
        case -EILSEQ:
                return H_ERR_COBS;
        case -EMSGSIZE:
                return H_ERR_SIZE;
        case -EPROTO:
                return H_ERR_RUNT;
        case -EPROTONOSUPPORT:
                return H_ERR_VERSION;
        default:
                return H_ERR_OTHER;
        }
}

static inline void h_init(struct harness *h, const struct sim_pen_config *cfg) {
        struct sim_pen_config def;

        if (!cfg) {
                sim_pen_config_default(&def);
                cfg = &def;
        }
        *h = (struct harness) {
                .now = H_T0,
                .auto_ack = true,
                .reading = true,
        };
        h->pen = sim_pen_new(cfg, h->now);
        mnp_link_init(&h->link, NULL, h->now);
        mnp_decoder_init(&h->dec);
}

static inline void h_done(struct harness *h) {
        h->pen = sim_pen_free(h->pen);
        free(h->frames);
        h->frames = NULL;
        h->n_frames = h->cap_frames = 0;
}

static inline void h_raw(struct harness *h, const uint8_t *data, size_t len);

static inline void h_record(struct harness *h, const struct mnp_frame *f) {
        struct h_frame *e;

        if (h->n_frames == h->cap_frames) {
                size_t cap = h->cap_frames ? 2 * h->cap_frames : 64;
                struct h_frame *n = realloc(h->frames, cap * sizeof *n);

                if (!n)
                        abort();
                h->frames = n;
                h->cap_frames = cap;
        }

        e = &h->frames[h->n_frames++];
        *e = (struct h_frame) { .f = *f, .at_us = h->now };
        e->unpack = mnp_msg_unpack(f->type, f->payload, f->payload_len, &e->m);
        if (e->unpack < 0)
                return;

        e->rx = mnp_link_receive(&h->link, h->now, f, &e->m, NULL);
        if (h->auto_ack && mnp_msg_type_is_reliable(f->type) && e->rx != MNP_LINK_RX_STALE) {
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                ssize_t n;

                if (e->rx == MNP_LINK_RX_DUPLICATE)
                        n = mnp_link_cached_reply(&h->link, wire, sizeof wire);
                else
                        n = mnp_link_reply(&h->link, h->now, f->seq, 0, 0, wire, sizeof wire);
                if (n > 0)
                        h_raw(h, wire, (size_t) n);
        }
}

/* Reads everything the pen has for us now. */
static inline void h_pump(struct harness *h) {
        uint8_t buf[97];        /* an odd size: frames straddle reads */
        size_t n;

        if (!h->reading || h->pumping)
                return;

        h->pumping = true;  /* ACKs sent from h_record() must not read in between */
        while ((n = sim_pen_transmit(h->pen, h->now, buf, sizeof buf)) > 0) {
                size_t off = 0;

                h->bytes_in += n;
                while (off < n) {
                        struct mnp_frame f;
                        size_t consumed = 0;
                        int r;

                        r = mnp_decoder_feed(&h->dec, buf + off, n - off, &consumed, &f);
                        off += consumed;
                        if (r > 0)
                                h_record(h, &f);
                        else if (r < 0)
                                h->decode_errors[h_error_kind(r)]++;
                        else if (consumed == 0)
                                break;
                }
        }
        h->pumping = false;
}

/* Bytes to the pen at the current time, then whatever it answers. */
static inline void h_raw(struct harness *h, const uint8_t *data, size_t len) {
        sim_pen_receive(h->pen, h->now, data, len);
        h_pump(h);
}

/* Sends m with the host link's next sequence number (no stop-and-wait: the
 * tests decide what to send when).  Returns the seq. */
static inline uint16_t h_send(struct harness *h, const struct mnp_msg *m) {
        uint16_t seq = h->link.next_seq++;
        ssize_t n;

        n = mnp_msg_encode(m, seq, h->last_wire, sizeof h->last_wire);
        if (n < 0)
                abort();
        h->last_wire_len = (size_t) n;
        h->link.last_tx_us = h->now;
        h_raw(h, h->last_wire, h->last_wire_len);
        return seq;
}

/* The same frame once more: a retransmission. */
static inline void h_resend(struct harness *h) {
        h_raw(h, h->last_wire, h->last_wire_len);
}

/* A frame with an arbitrary type and payload (for malformed and unknown ones). */
static inline uint16_t h_send_raw(struct harness *h, uint8_t type, const void *payload, size_t len) {
        uint16_t seq = h->link.next_seq++;
        ssize_t n;

        n = mnp_frame_encode(type, seq, payload, len, h->last_wire, sizeof h->last_wire);
        if (n < 0)
                abort();
        h->last_wire_len = (size_t) n;
        h_raw(h, h->last_wire, h->last_wire_len);
        return seq;
}

static inline void h_heartbeat(struct harness *h, uint16_t lease_ms) {
        h->last_hb_us = h->now;
        (void) h_send(h, &(struct mnp_msg) { .type = MNP_MSG_HEARTBEAT, .heartbeat.lease_ms = lease_ms });
}

/* Host heartbeats every period_us, each renewing the lease for lease_ms; 0 stops them. */
static inline void h_heartbeats(struct harness *h, uint64_t period_us, uint16_t lease_ms) {
        h->hb_period_us = period_us;
        h->hb_lease_ms = lease_ms;
        h->next_hb_us = h->now + period_us;
}

/* Runs the virtual clock to until, stopping at every deadline the pen names,
 * as mnsim does, and reading what the pen sends. */
static inline void h_advance_to(struct harness *h, uint64_t until) {
        while (h->now < until) {
                uint64_t next = sim_pen_next_deadline(h->pen);

                if (next <= h->now) {
                        /* Work due now (e.g. after an unstall, which has no clock):
                         * do it; after that the deadline must lie ahead. */
                        sim_pen_advance(h->pen, h->now);
                        h_pump(h);
                        next = sim_pen_next_deadline(h->pen);
                        if (next <= h->now) {
                                h->stuck++;
                                next = h->now + 1;
                        }
                }
                if (h->hb_period_us > 0 && h->next_hb_us < next)
                        next = h->next_hb_us;
                if (next > until)
                        next = until;

                h->now = next;
                sim_pen_advance(h->pen, h->now);
                h_pump(h);
                if (h->hb_period_us > 0 && h->now >= h->next_hb_us) {
                        h_heartbeat(h, h->hb_lease_ms);
                        h->next_hb_us = h->now + h->hb_period_us;
                }
        }
}

static inline void h_advance(struct harness *h, uint64_t us) {
        h_advance_to(h, h->now + us);
}

static inline void h_snap(struct harness *h, struct sim_pen_snapshot *s) {
        sim_pen_snapshot(h->pen, h->now, s);
}

/* The first frame of this type at or after index from; NULL if none. */
static inline const struct h_frame *h_find(const struct harness *h, uint8_t type, size_t from) {
        for (size_t i = from; i < h->n_frames; i++)
                if (h->frames[i].f.type == type && h->frames[i].unpack == 0)
                        return &h->frames[i];
        return NULL;
}

static inline size_t h_count(const struct harness *h, uint8_t type, size_t from) {
        size_t n = 0;

        for (size_t i = from; i < h->n_frames; i++)
                if (h->frames[i].f.type == type)
                        n++;
        return n;
}

/* The ACK or NAK that answers seq; NULL if none. */
static inline const struct h_frame *h_answer(const struct harness *h, uint16_t seq) {
        for (size_t i = 0; i < h->n_frames; i++) {
                const struct h_frame *e = &h->frames[i];

                if (e->unpack != 0)
                        continue;
                if (e->f.type == MNP_MSG_ACK && e->m.ack.seq == seq)
                        return e;
                if (e->f.type == MNP_MSG_NAK && e->m.nak.seq == seq)
                        return e;
        }
        return NULL;
}

/* The ACK or NAK that answers seq, at index from or later; NULL if none. */
static inline const struct h_frame *h_answer_from(const struct harness *h, uint16_t seq, size_t from) {
        for (size_t i = from; i < h->n_frames; i++) {
                const struct h_frame *e = &h->frames[i];

                if (e->unpack != 0)
                        continue;
                if (e->f.type == MNP_MSG_ACK && e->m.ack.seq == seq)
                        return e;
                if (e->f.type == MNP_MSG_NAK && e->m.nak.seq == seq)
                        return e;
        }
        return NULL;
}

/* A frame kept for sending again later (a retransmission that comes late). */
struct h_wire {
        uint8_t data[MNP_MAX_WIRE_FRAME];
        size_t len;
        uint16_t seq;
};

/* Keeps the last frame sent. */
static inline void h_save(const struct harness *h, struct h_wire *w, uint16_t seq) {
        memcpy(w->data, h->last_wire, h->last_wire_len);
        w->len = h->last_wire_len;
        w->seq = seq;
}

static inline void h_resend_wire(struct harness *h, const struct h_wire *w) {
        h_raw(h, w->data, w->len);
}

/* Sends m and returns 0 for an ACK, the NAK reason for a NAK (detail in
 * *ret_detail), -1 for no answer. */
static inline int h_command(struct harness *h, const struct mnp_msg *m, uint32_t *ret_detail) {
        const struct h_frame *a;
        uint16_t seq;

        seq = h_send(h, m);
        a = h_answer(h, seq);
        if (!a)
                return -1;
        if (a->f.type == MNP_MSG_ACK)
                return 0;
        if (ret_detail)
                *ret_detail = a->m.nak.detail;
        return a->m.nak.reason;
}

static inline int h_hello(struct harness *h, uint8_t min_version, uint8_t max_version, uint16_t heartbeat_ms) {
        return h_send(h, &(struct mnp_msg) {
                .type = MNP_MSG_HELLO,
                .hello = { .min_version = min_version, .max_version = max_version, .heartbeat_ms = heartbeat_ms },
        });
}

/* Boot, then a handshake with a 100 ms host heartbeat.  Returns the HELLO_REPLY. */
static inline const struct h_frame *h_connect(struct harness *h) {
        size_t from;

        h_advance(h, (uint64_t) sim_pen_config(h->pen)->boot_ms * H_MS);
        from = h->n_frames;
        (void) h_hello(h, 1, 1, 100);
        return h_find(h, MNP_MSG_HELLO_REPLY, from);
}

static inline int h_start(struct harness *h, uint32_t depth_um, uint16_t speed_hz, uint16_t lease_ms,
                          uint32_t *ret_detail) {
        return h_command(h, &(struct mnp_msg) {
                .type = MNP_MSG_START,
                .start = { .depth_um = depth_um, .speed_hz = speed_hz, .lease_ms = lease_ms },
        }, ret_detail);
}

static inline int h_simple(struct harness *h, uint8_t type) {
        return h_command(h, &(struct mnp_msg) { .type = type }, NULL);
}
