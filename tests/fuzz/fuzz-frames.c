/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the receive path as a pen or host runs it: wire bytes
 * -> mnp_decoder_feed -> mnp_msg_unpack -> mnp_link_receive -> replies and
 * retransmissions.
 *
 * The input describes raw frames rather than wire bytes, so that mutations
 * are not all caught by the CRC:
 *
 *   byte 0          options: bits 0-5 feed chunk size - 1, bit 6 keep the CRC
 *                   wrong for frames whose first body byte has bit 7 set,
 *                   bit 7 put junk (0x7E 0x00) between frames
 *   then records    [len u8][len bytes of version|type|seq|payload]
 *
 * This target computes the CRC-32C for each body, COBS-encodes it itself,
 * adds the delimiters and feeds the stream in chunks.  Every decoded frame
 * goes through unpack and a link (which has a command and a STOP of its own
 * in flight, so answers can match), and the link's invariants are checked.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mnp/frame.h>
#include <mnp/link.h>
#include <mnp/message.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define STREAM_MAX 16384

/* assert() that stays on with NDEBUG and names the line. */
#define check(ok)                                                                       \
        do {                                                                            \
                if (!(ok)) {                                                            \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #ok); \
                        abort();                                                        \
                }                                                                       \
        } while (0)

static size_t cobs_encode(const uint8_t *src, size_t n, uint8_t *dst) {
        size_t code_at = 0, o = 1;
        uint8_t code = 1;

        for (size_t i = 0; i < n; i++) {
                if (src[i] != 0) {
                        dst[o++] = src[i];
                        if (++code < 0xFF)
                                continue;
                }
                dst[code_at] = code;
                code_at = o++;
                code = 1;
        }
        dst[code_at] = code;
        return o;
}

/* A reply we built must decode as an ACK or NAK for seq. */
static void check_reply(const uint8_t *wire, ssize_t n, uint16_t seq) {
        struct mnp_decoder d;
        struct mnp_frame f;
        struct mnp_msg m;
        size_t consumed;

        check(n > 0);
        mnp_decoder_init(&d);
        check(mnp_decoder_feed(&d, wire, (size_t) n, &consumed, &f) == 1);
        check(mnp_msg_unpack(f.type, f.payload, f.payload_len, &m) == 0);
        check(m.type == MNP_MSG_ACK || m.type == MNP_MSG_NAK);
        check((m.type == MNP_MSG_ACK ? m.ack.seq : m.nak.seq) == seq);
}

static void send_own(struct mnp_link *l, uint64_t now, uint32_t v) {
        uint8_t out[MNP_MAX_WIRE_FRAME];
        struct mnp_msg m = { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = v };
        ssize_t n;

        n = mnp_link_send(l, now, &m, out, sizeof(out), NULL);
        check(n > 0 || n == -EBUSY);
        if (!l->stop.active) {
                m = (struct mnp_msg) { .type = MNP_MSG_STOP };
                check(mnp_link_send(l, now, &m, out, sizeof(out), NULL) > 0);
        }
}

static void handle(struct mnp_link *l, uint64_t now, const struct mnp_frame *f) {
        uint8_t out[MNP_MAX_WIRE_FRAME], answered = 0xEE;
        struct mnp_msg m;
        enum mnp_link_rx r;
        bool have_msg;
        uint16_t before_rx_seq = l->last_rx_seq;
        bool before_have_rx = l->have_rx;
        ssize_t n;
        int u;

        check(f->version == MNP_FRAME_VERSION);
        check(f->payload_len <= MNP_MAX_PAYLOAD);

        u = mnp_msg_unpack(f->type, f->payload, f->payload_len, &m);
        check(u == 0 || u == -ENOMSG || u == -EBADMSG || u == -EINVAL);
        have_msg = u == 0;

        r = mnp_link_receive(l, now, f, have_msg ? &m : NULL, &answered);
        check(l->last_rx_us == now);

        switch (r) {
        case MNP_LINK_RX_NEW:
                check(answered == 0);
                if (f->type == MNP_MSG_HELLO) {
                        mnp_link_reset(l, now);
                        check(!l->have_rx && !l->pending.active && !l->stop.active);
                        send_own(l, now, 3);
                } else if (mnp_msg_type_is_reliable(f->type)) {
                        if (f->type == MNP_MSG_STOP)
                                /* STOP never moves the record (which may age out, though). */
                                check(!l->have_rx || (before_have_rx && l->last_rx_seq == before_rx_seq));
                        else
                                check(l->have_rx && l->last_rx_seq == f->seq);
                        n = mnp_link_reply(l, now, f->seq,
                                           !have_msg ? (u == -ENOMSG ? MNP_NAK_UNKNOWN_TYPE : MNP_NAK_MALFORMED) : 0,
                                           f->type, out, sizeof(out));
                        check_reply(out, n, f->seq);
                }
                break;
        case MNP_LINK_RX_DUPLICATE:
                check(mnp_msg_type_is_reliable(f->type) && f->type != MNP_MSG_STOP);
                check(l->have_rx && l->last_rx_seq == f->seq);
                n = mnp_link_cached_reply(l, out, sizeof(out));
                check(n >= 0);
                if (n > 0)
                        check_reply(out, n, f->seq);
                break;
        case MNP_LINK_RX_ANSWER:
                check(f->type == MNP_MSG_ACK || f->type == MNP_MSG_NAK || f->type == MNP_MSG_HELLO_REPLY);
                check(have_msg);
                check(answered == MNP_MSG_SET_DEPTH || answered == MNP_MSG_STOP);
                if (f->type == MNP_MSG_HELLO_REPLY)
                        mnp_link_reset(l, now);
                send_own(l, now, f->seq);
                break;
        case MNP_LINK_RX_STALE:
                check(answered == 0);
                check(f->type != MNP_MSG_HELLO && f->type != MNP_MSG_STOP);
                break;
        default:
                check(false);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static uint8_t stream[STREAM_MAX];
        struct mnp_decoder d;
        struct mnp_link l;
        size_t len = 0, pos = 1, chunk;
        uint64_t now = 1000;
        uint8_t opt;
        unsigned expected = 0, good = 0;

        if (size < 1)
                return 0;
        opt = data[0];
        chunk = (size_t) (opt & 0x3F) + 1;

        /* Build the wire stream. */
        while (pos < size) {
                uint8_t raw[MNP_MAX_RAW_FRAME];
                size_t body = data[pos++];
                uint32_t crc;

                if (body > size - pos)
                        body = size - pos;
                if (body > MNP_MAX_RAW_FRAME - MNP_CRC_SIZE)
                        body = MNP_MAX_RAW_FRAME - MNP_CRC_SIZE;
                if (len + 2 * MNP_MAX_WIRE_FRAME + 2 > sizeof(stream))
                        break;

                memcpy(raw, data + pos, body);
                pos += body;
                crc = mnp_crc32c(0, raw, body);
                if ((opt & 0x40) && body > 0 && (raw[0] & 0x80))
                        crc ^= 1;
                else if (body >= MNP_HEADER_SIZE && raw[0] == MNP_FRAME_VERSION)
                        expected++;
                for (int i = 0; i < 4; i++)
                        raw[body + i] = (uint8_t) (crc >> (8 * i));

                stream[len++] = 0;
                len += cobs_encode(raw, body + MNP_CRC_SIZE, stream + len);
                stream[len++] = 0;
                if (opt & 0x80) {
                        stream[len++] = 0x7E;
                        stream[len++] = 0;
                }
        }

        mnp_link_init(&l, NULL, now);
        send_own(&l, now, 1);
        mnp_decoder_init(&d);

        for (size_t at = 0; at < len;) {
                size_t n = len - at < chunk ? len - at : chunk;

                while (n > 0) {
                        struct mnp_frame f;
                        size_t consumed = 0;
                        int r;

                        r = mnp_decoder_feed(&d, stream + at, n, &consumed, &f);
                        check(consumed <= n);
                        check(consumed > 0 || n == 0);
                        at += consumed;
                        n -= consumed;
                        if (r == 1) {
                                good++;
                                handle(&l, now, &f);
                        } else
                                check(r == 0 || r == -EBADMSG || r == -EILSEQ || r == -EMSGSIZE ||
                                      r == -EPROTO || r == -EPROTONOSUPPORT);
                }

                /* Time passes; retransmissions and timeouts happen. */
                now += 7000;
                for (;;) {
                        uint8_t out[MNP_MAX_WIRE_FRAME], type;
                        ssize_t p = mnp_link_poll(&l, now, out, sizeof(out), &type);

                        if (p == 0)
                                break;
                        check(p > 0 || (p == -ETIMEDOUT && (type == MNP_MSG_SET_DEPTH || type == MNP_MSG_STOP)));
                        if (p == -ETIMEDOUT)
                                send_own(&l, now, 2);
                }
                check(mnp_link_next_deadline(&l) > now || mnp_link_heartbeat_due(&l, now) ||
                      mnp_link_peer_lost(&l, now));
                if (mnp_link_heartbeat_due(&l, now)) {
                        uint8_t out[MNP_MAX_WIRE_FRAME];
                        struct mnp_msg hb = { .type = MNP_MSG_HEARTBEAT };

                        check(mnp_link_send(&l, now, &hb, out, sizeof(out), NULL) > 0);
                }
        }

        /* Every frame with a right CRC and version came through. */
        check(good == expected);
        check(d.stats.frames == good);
        return 0;
}
