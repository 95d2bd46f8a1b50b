/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Link: sequence numbers, stop-and-wait with the STOP slot, answer matching,
 * retransmission timing, de-duplication, handshake resets, heartbeat and
 * peer-loss timing, gap counting and the motion lease.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <mnp/frame.h>
#include <mnp/link.h>
#include <mnp/message.h>

#define T0 1000000u                     /* an arbitrary start time */
#define RTO MNP_LINK_DEFAULT_RTO_US
#define HB MNP_LINK_DEFAULT_HEARTBEAT_US
#define PEER MNP_LINK_DEFAULT_PEER_TIMEOUT_US

/* ---- helpers ---- */

/* Decodes exactly one wire frame. */
static void decode(const uint8_t *wire, ssize_t n, struct mnp_frame *f) {
        struct mnp_decoder d;
        size_t consumed;

        assert_true(n > 0);
        mnp_decoder_init(&d);
        assert_int_equal(mnp_decoder_feed(&d, wire, (size_t) n, &consumed, f), 1);
        assert_int_equal(consumed, (size_t) n);
}

static void decode_msg(const uint8_t *wire, ssize_t n, struct mnp_frame *f, struct mnp_msg *m) {
        decode(wire, n, f);
        assert_int_equal(mnp_msg_unpack(f->type, f->payload, f->payload_len, m), 0);
}

/* A frame as it would arrive: type and seq, payload packed from m (if any). */
static struct mnp_frame frame_of(uint16_t seq, const struct mnp_msg *m) {
        struct mnp_frame f = { .version = MNP_FRAME_VERSION, .type = m->type, .seq = seq };
        ssize_t n;

        n = mnp_msg_pack(m, f.payload, sizeof(f.payload));
        assert_true(n >= 0);
        f.payload_len = (uint16_t) n;
        return f;
}

/* Receives message m with sequence number seq at now. */
static enum mnp_link_rx rx(struct mnp_link *l, uint64_t now, uint16_t seq, const struct mnp_msg *m,
                           uint8_t *answered) {
        struct mnp_frame f = frame_of(seq, m);

        return mnp_link_receive(l, now, &f, m, answered);
}

static struct mnp_msg msg_ack(uint16_t seq) {
        return (struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = seq };
}

static struct mnp_msg msg_nak(uint16_t seq, uint8_t reason, uint32_t detail) {
        return (struct mnp_msg) { .type = MNP_MSG_NAK, .nak = { .seq = seq, .reason = reason, .detail = detail } };
}

static struct mnp_msg msg_hello(void) {
        return (struct mnp_msg) { .type = MNP_MSG_HELLO,
                                  .hello = { .min_version = 1, .max_version = 1, .heartbeat_ms = 50 } };
}

static struct mnp_msg msg_hello_reply(uint16_t hello_seq) {
        return (struct mnp_msg) {
                .type = MNP_MSG_HELLO_REPLY,
                .hello_reply = {
                        .hello_seq = hello_seq, .version = 1, .boot_id = 0x1234,
                        .depth_min_um = 0, .depth_max_um = 3000, .depth_step_um = 50,
                        .speed_min_hz = 50, .speed_max_hz = 150, .max_lease_ms = 500,
                        .model = "MN-1", .serial = "S1", .firmware = "1",
                },
        };
}

static struct mnp_msg msg_depth(uint32_t um) {
        return (struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = um };
}

static struct mnp_msg msg_start(void) {
        return (struct mnp_msg) { .type = MNP_MSG_START,
                                  .start = { .depth_um = 500, .speed_hz = 100, .lease_ms = 200 } };
}

static const struct mnp_msg msg_stop = { .type = MNP_MSG_STOP };
static const struct mnp_msg msg_heartbeat = { .type = MNP_MSG_HEARTBEAT };

/* Sends m and returns its seq. */
static uint16_t send_ok(struct mnp_link *l, uint64_t now, const struct mnp_msg *m) {
        uint8_t out[MNP_MAX_WIRE_FRAME];
        uint16_t seq = 0xDEAD;
        ssize_t n;

        n = mnp_link_send(l, now, m, out, sizeof(out), &seq);
        assert_true(n > 0);
        return seq;
}

/* ---- sequence numbers ---- */

static void test_seq_increments_and_wraps(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME];
        struct mnp_link l;
        struct mnp_frame f;
        struct mnp_msg m;
        uint16_t seq;
        ssize_t n;

        mnp_link_init(&l, NULL, T0);
        assert_int_equal(l.next_seq, 0);

        /* Every frame counts, reliable or not, replies included. */
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 0);
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 1);
        m = msg_depth(100);
        assert_int_equal(send_ok(&l, T0, &m), 2);
        n = mnp_link_reply(&l, T0, 77, 0, 0, out, sizeof(out));
        decode_msg(out, n, &f, &m);
        assert_int_equal(f.seq, 3);
        assert_int_equal(m.type, MNP_MSG_ACK);
        assert_int_equal(m.ack.seq, 77);
        assert_int_equal(send_ok(&l, T0, &msg_stop), 4);

        /* ret_seq may be NULL; the frame still carries the seq. */
        n = mnp_link_send(&l, T0, &msg_heartbeat, out, sizeof(out), NULL);
        decode(out, n, &f);
        assert_int_equal(f.seq, 5);

        /* Wrap. */
        l.next_seq = 0xFFFE;
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 0xFFFE);
        n = mnp_link_send(&l, T0, &msg_heartbeat, out, sizeof(out), &seq);
        decode(out, n, &f);
        assert_int_equal(seq, 0xFFFF);
        assert_int_equal(f.seq, 0xFFFF);
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 0);
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 1);

        /* A reset keeps the counter. */
        mnp_link_reset(&l, T0);
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 2);
}

static void test_send_errors_consume_nothing(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME];
        struct mnp_link l;
        struct mnp_msg m;
        uint16_t seq = 0xBEEF;

        mnp_link_init(&l, NULL, T0);

        /* Too small: -ENOBUFS, no seq used, nothing pending, no send time. */
        m = msg_depth(100);
        assert_int_equal(mnp_link_send(&l, T0 + 5, &m, out, 5, &seq), -ENOBUFS);
        assert_int_equal(seq, 0xBEEF);
        assert_false(l.pending.active);
        assert_int_equal(l.last_tx_us, T0);
        assert_int_equal(l.next_seq, 0);

        /* Invalid and unknown messages. */
        m = msg_nak(1, 0, 0);
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), &seq), -EINVAL);
        m = (struct mnp_msg) { .type = 0x1F };
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), &seq), -ENOMSG);
        assert_false(l.pending.active);
        m = (struct mnp_msg) { .type = 0x3F };
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), &seq), -ENOMSG);
        assert_int_equal(l.next_seq, 0);

        /* Reply errors. */
        assert_int_equal(mnp_link_reply(&l, T0, 1, MNP_NAK_MAX + 1, 0, out, sizeof(out)), -EINVAL);
        assert_int_equal(mnp_link_reply(&l, T0, 1, 0, 0, out, 3), -ENOBUFS);
        assert_int_equal(l.next_seq, 0);
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 0);
}

/* ---- stop-and-wait ---- */

static void test_busy(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME];
        struct mnp_link l;
        struct mnp_msg m, h = msg_hello();
        uint8_t answered;

        mnp_link_init(&l, NULL, T0);
        m = msg_depth(100);
        assert_int_equal(send_ok(&l, T0, &m), 0);

        /* A second ordinary reliable frame, or a HELLO: -EBUSY, no seq used. */
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), NULL), -EBUSY);
        m = msg_start();
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), NULL), -EBUSY);
        m = (struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT };
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), NULL), -EBUSY);
        m = (struct mnp_msg) { .type = MNP_MSG_FAULT, .fault = { .code = 1, .fault_flags = 1 } };
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), NULL), -EBUSY);
        assert_int_equal(mnp_link_send(&l, T0, &h, out, sizeof(out), NULL), -EBUSY);
        assert_int_equal(l.next_seq, 1);

        /* Unreliable frames and STOP still go. */
        assert_int_equal(send_ok(&l, T0, &msg_heartbeat), 1);
        assert_int_equal(send_ok(&l, T0, &msg_stop), 2);

        /* Once answered, the slot is free. */
        m = msg_ack(0);
        assert_int_equal(rx(&l, T0, 0, &m, &answered), MNP_LINK_RX_ANSWER);
        assert_int_equal(answered, MNP_MSG_SET_DEPTH);
        m = msg_depth(200);
        assert_int_equal(send_ok(&l, T0, &m), 3);

        /* A HELLO occupies the same slot. */
        mnp_link_reset(&l, T0);
        assert_int_equal(send_ok(&l, T0, &h), 4);
        m = msg_depth(200);
        assert_int_equal(mnp_link_send(&l, T0, &m, out, sizeof(out), NULL), -EBUSY);
}

static void test_stop_overtakes_and_replaces(void **state) {
        struct mnp_link l;
        struct mnp_msg m;
        uint8_t answered;

        mnp_link_init(&l, NULL, T0);
        m = msg_depth(100);
        assert_int_equal(send_ok(&l, T0, &m), 0);
        assert_int_equal(send_ok(&l, T0, &msg_stop), 1);
        assert_true(l.stop.active);
        assert_true(l.pending.active);

        /* A new STOP replaces the unanswered one. */
        assert_int_equal(send_ok(&l, T0 + 10, &msg_stop), 2);
        assert_int_equal(l.stop.seq, 2);
        assert_int_equal(l.stop.sends, 1);
        assert_int_equal(l.stop.deadline_us, T0 + 10 + RTO);

        /* The old STOP's answer is stale now. */
        m = msg_ack(1);
        assert_int_equal(rx(&l, T0, 10, &m, &answered), MNP_LINK_RX_STALE);
        assert_int_equal(answered, 0);

        /* Answers in any order. */
        m = msg_ack(2);
        assert_int_equal(rx(&l, T0, 11, &m, &answered), MNP_LINK_RX_ANSWER);
        assert_int_equal(answered, MNP_MSG_STOP);
        assert_false(l.stop.active);
        assert_true(l.pending.active);
        m = msg_nak(0, MNP_NAK_BAD_STATE, 0);
        assert_int_equal(rx(&l, T0, 12, &m, &answered), MNP_LINK_RX_ANSWER);
        assert_int_equal(answered, MNP_MSG_SET_DEPTH);
        assert_false(l.pending.active);

        /* Retransmission: STOP goes first; the overtaken command is not resent. */
        m = msg_depth(100);
        send_ok(&l, T0 + 100, &m);
        send_ok(&l, T0 + 100, &msg_stop);
        {
                uint8_t out[MNP_MAX_WIRE_FRAME], type = 0;
                struct mnp_frame f;
                ssize_t n;

                n = mnp_link_poll(&l, T0 + 100 + RTO, out, sizeof(out), NULL);
                decode(out, n, &f);
                assert_int_equal(f.type, MNP_MSG_STOP);
                n = mnp_link_poll(&l, T0 + 100 + RTO, out, sizeof(out), &type);
                assert_int_equal(n, -ETIMEDOUT);
                assert_int_equal(type, MNP_MSG_SET_DEPTH);
                assert_int_equal(mnp_link_poll(&l, T0 + 100 + RTO, out, sizeof(out), NULL), 0);
        }
}

static void test_stop_ends_command_retransmission(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME], type = 0;
        struct mnp_link l;
        struct mnp_msg m;
        struct mnp_frame f;
        ssize_t n;

        mnp_link_init(&l, NULL, T0);
        m = msg_start();
        assert_int_equal(send_ok(&l, T0, &m), 0);
        assert_int_equal(send_ok(&l, T0 + 5000, &msg_stop), 1);

        /* At the START's deadline only the START times out; it is never resent. */
        n = mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type);
        assert_int_equal(n, -ETIMEDOUT);
        assert_int_equal(type, MNP_MSG_START);
        assert_int_equal(mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type), 0);
        n = mnp_link_poll(&l, T0 + 5000 + RTO, out, sizeof(out), &type);
        decode(out, n, &f);
        assert_int_equal(f.type, MNP_MSG_STOP);

        /* Until then it can still be answered. */
        mnp_link_init(&l, NULL, T0);
        m = msg_start();
        send_ok(&l, T0, &m);
        send_ok(&l, T0, &msg_stop);
        m = msg_ack(0);
        assert_int_equal(rx(&l, T0 + 1, 5, &m, &type), MNP_LINK_RX_ANSWER);
        assert_int_equal(type, MNP_MSG_START);

        /* No other command is resent after a STOP either. */
        mnp_link_init(&l, NULL, T0);
        m = msg_depth(50);
        send_ok(&l, T0, &m);
        send_ok(&l, T0, &msg_stop);
        n = mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type);
        decode(out, n, &f);
        assert_int_equal(f.type, MNP_MSG_STOP);
        n = mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type);
        assert_int_equal(n, -ETIMEDOUT);
        assert_int_equal(type, MNP_MSG_SET_DEPTH);
        assert_int_equal(mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type), 0);

        /* A HELLO in flight goes on being resent: it stops the pen itself. */
        mnp_link_init(&l, NULL, T0);
        m = msg_hello();
        send_ok(&l, T0, &m);
        send_ok(&l, T0, &msg_stop);
        n = mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type);
        decode(out, n, &f);
        assert_int_equal(f.type, MNP_MSG_STOP);
        n = mnp_link_poll(&l, T0 + RTO, out, sizeof(out), &type);
        decode(out, n, &f);
        assert_int_equal(f.type, MNP_MSG_HELLO);
}

/* ---- answers ---- */

static void test_answer_matching(void **state) {
        struct mnp_link l;
        struct mnp_msg m, h = msg_hello();
        struct mnp_frame f;
        uint8_t answered;
        uint16_t seq;

        mnp_link_init(&l, NULL, T0);

        /* Nothing in flight: every answer is stale. */
        m = msg_ack(0);
        assert_int_equal(rx(&l, T0, 0, &m, &answered), MNP_LINK_RX_STALE);
        m = msg_nak(0, MNP_NAK_MALFORMED, 0);
        assert_int_equal(rx(&l, T0, 1, &m, &answered), MNP_LINK_RX_STALE);
        m = msg_hello_reply(0);
        assert_int_equal(rx(&l, T0, 2, &m, &answered), MNP_LINK_RX_STALE);

        /* ACK with the wrong seq, then the right one, then again. */
        m = msg_depth(100);
        seq = send_ok(&l, T0, &m);
        m = msg_ack((uint16_t) (seq + 1));
        assert_int_equal(rx(&l, T0, 3, &m, &answered), MNP_LINK_RX_STALE);
        m = msg_ack((uint16_t) (seq - 1));
        assert_int_equal(rx(&l, T0, 4, &m, &answered), MNP_LINK_RX_STALE);
        /* A HELLO_REPLY naming that seq does not answer a SET_DEPTH. */
        m = msg_hello_reply(seq);
        assert_int_equal(rx(&l, T0, 5, &m, &answered), MNP_LINK_RX_STALE);
        assert_true(l.pending.active);
        m = msg_ack(seq);
        assert_int_equal(rx(&l, T0, 6, &m, NULL), MNP_LINK_RX_ANSWER);  /* ret_answered may be NULL */
        assert_int_equal(rx(&l, T0, 7, &m, &answered), MNP_LINK_RX_STALE);

        /* HELLO: an ACK does not answer it; a wrong hello_seq neither; the right HELLO_REPLY does. */
        seq = send_ok(&l, T0, &h);
        m = msg_ack(seq);
        assert_int_equal(rx(&l, T0, 8, &m, &answered), MNP_LINK_RX_STALE);
        m = msg_hello_reply((uint16_t) (seq + 1));
        assert_int_equal(rx(&l, T0, 9, &m, &answered), MNP_LINK_RX_STALE);
        m = msg_hello_reply(seq);
        assert_int_equal(rx(&l, T0, 10, &m, &answered), MNP_LINK_RX_ANSWER);
        assert_int_equal(answered, MNP_MSG_HELLO);
        assert_int_equal(rx(&l, T0, 11, &m, &answered), MNP_LINK_RX_STALE);

        /* A NAK answers a HELLO. */
        seq = send_ok(&l, T0, &h);
        m = msg_nak(seq, MNP_NAK_UNSUPPORTED_VERSION, 1);
        assert_int_equal(rx(&l, T0, 12, &m, &answered), MNP_LINK_RX_ANSWER);
        assert_int_equal(answered, MNP_MSG_HELLO);

        /* An answer whose payload did not unpack (m == NULL) answers nothing. */
        m = msg_depth(1);
        seq = send_ok(&l, T0, &m);
        m = msg_ack(seq);
        f = frame_of(13, &m);
        assert_int_equal(mnp_link_receive(&l, T0, &f, NULL, &answered), MNP_LINK_RX_STALE);
        /* Nor does a message of another type than the frame. */
        m = msg_nak(seq, 1, 0);
        assert_int_equal(mnp_link_receive(&l, T0, &f, &m, &answered), MNP_LINK_RX_STALE);
        assert_true(l.pending.active);
        m = msg_ack(seq);
        assert_int_equal(mnp_link_receive(&l, T0, &f, &m, &answered), MNP_LINK_RX_ANSWER);
}

/* ---- retransmission ---- */

static void test_retransmission_timing(void **state) {
        uint8_t first[MNP_MAX_WIRE_FRAME], out[MNP_MAX_WIRE_FRAME], type = 0;
        struct mnp_link l;
        struct mnp_msg m = msg_depth(1500);
        ssize_t len, n;
        unsigned sends = 1;

        mnp_link_init(&l, NULL, T0);
        send_ok(&l, T0, &msg_heartbeat);                /* seq 0 */
        len = mnp_link_send(&l, T0, &m, first, sizeof(first), NULL);
        assert_true(len > 0);
        send_ok(&l, T0, &msg_heartbeat);                /* seq 2: resends keep seq 1 */

        for (unsigned k = 1; k <= MNP_LINK_DEFAULT_MAX_RETRIES; k++) {
                uint64_t due = T0 + (uint64_t) k * RTO;

                assert_int_equal(mnp_link_poll(&l, due - 1, out, sizeof(out), &type), 0);
                assert_int_equal(mnp_link_next_deadline(&l), due);
                n = mnp_link_poll(&l, due, out, sizeof(out), &type);
                assert_int_equal(n, len);
                assert_memory_equal(out, first, (size_t) len);    /* same seq, same bytes */
                assert_int_equal(l.last_tx_us, due);
                sends++;
                assert_int_equal(mnp_link_poll(&l, due, out, sizeof(out), &type), 0);
        }
        assert_int_equal(sends, 1 + MNP_LINK_DEFAULT_MAX_RETRIES);

        /* The last try's rto passes: -ETIMEDOUT once, slot free. */
        n = mnp_link_poll(&l, T0 + 4 * RTO - 1, out, sizeof(out), &type);
        assert_int_equal(n, 0);
        n = mnp_link_poll(&l, T0 + 4 * RTO, out, sizeof(out), &type);
        assert_int_equal(n, -ETIMEDOUT);
        assert_int_equal(type, MNP_MSG_SET_DEPTH);
        assert_int_equal(mnp_link_poll(&l, T0 + 4 * RTO, out, sizeof(out), &type), 0);
        assert_false(l.pending.active);
        assert_int_equal(send_ok(&l, T0 + 4 * RTO, &m), 3);
}

static void test_retransmission_config(void **state) {
        const struct mnp_link_config cfg = {
                .rto_us = 1000, .max_retries = 0, .heartbeat_us = 7000, .peer_timeout_us = 9000,
        };
        uint8_t out[MNP_MAX_WIRE_FRAME], type = 0;
        struct mnp_link l;
        struct mnp_msg m = msg_depth(1);
        ssize_t n;

        /* No retries: one send, then -ETIMEDOUT at rto. */
        mnp_link_init(&l, &cfg, 0);
        assert_int_equal(l.cfg.rto_us, 1000);
        assert_int_equal(l.cfg.max_retries, 0);
        send_ok(&l, 0, &m);
        assert_int_equal(mnp_link_poll(&l, 999, out, sizeof(out), &type), 0);
        assert_int_equal(mnp_link_poll(&l, 1000, out, sizeof(out), &type), -ETIMEDOUT);
        assert_int_equal(type, MNP_MSG_SET_DEPTH);

        /* A late poll: the next resend is one rto after the actual resend. */
        mnp_link_init(&l, &(struct mnp_link_config) { .rto_us = 1000, .max_retries = 2 }, 0);
        assert_int_equal(l.cfg.heartbeat_us, HB);               /* zero times: the defaults */
        assert_int_equal(l.cfg.peer_timeout_us, PEER);
        send_ok(&l, 0, &m);
        n = mnp_link_poll(&l, 1700, out, sizeof(out), &type);
        assert_true(n > 0);
        assert_int_equal(mnp_link_poll(&l, 2699, out, sizeof(out), &type), 0);
        /* Short buffer: -ENOBUFS and nothing changes. */
        assert_int_equal(mnp_link_poll(&l, 2700, out, 4, &type), -ENOBUFS);
        assert_int_equal(l.pending.sends, 2);
        assert_true(mnp_link_poll(&l, 2700, out, sizeof(out), &type) > 0);
        assert_int_equal(l.pending.sends, 3);
        assert_int_equal(mnp_link_poll(&l, 3699, out, sizeof(out), &type), 0);
        assert_int_equal(mnp_link_poll(&l, 3700, out, sizeof(out), &type), -ETIMEDOUT);

        /* Defaults. */
        mnp_link_init(&l, NULL, 0);
        assert_int_equal(l.cfg.rto_us, 30000);
        assert_int_equal(l.cfg.max_retries, 3);
        assert_int_equal(l.cfg.heartbeat_us, 50000);
        assert_int_equal(l.cfg.peer_timeout_us, 250000);
}

static void test_stop_retransmission_and_timeout(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME], type = 0;
        struct mnp_link l;
        unsigned sends = 1;
        ssize_t n;

        mnp_link_init(&l, NULL, T0);
        send_ok(&l, T0, &msg_stop);
        for (uint64_t t = T0; t <= T0 + 10 * RTO; t += 1000) {
                n = mnp_link_poll(&l, t, out, sizeof(out), &type);
                if (n > 0)
                        sends++;
                else if (n == -ETIMEDOUT) {
                        assert_int_equal(t, T0 + 4 * RTO);
                        break;
                } else
                        assert_int_equal(n, 0);
        }
        assert_int_equal(sends, 1 + MNP_LINK_DEFAULT_MAX_RETRIES);
        assert_int_equal(type, MNP_MSG_STOP);
        assert_false(l.stop.active);
}

/* ---- de-duplication ---- */

/* A pen receiving a command and replying to it. */
static enum mnp_link_rx pen_rx(struct mnp_link *pen, uint64_t now, uint16_t seq, const struct mnp_msg *m,
                               uint8_t *reply, ssize_t *reply_len) {
        enum mnp_link_rx r = rx(pen, now, seq, m, NULL);

        if (r == MNP_LINK_RX_NEW && mnp_msg_type_is_reliable(m->type))
                *reply_len = mnp_link_reply(pen, now, seq, 0, 0, reply, MNP_MAX_WIRE_FRAME);
        else if (r == MNP_LINK_RX_DUPLICATE)
                *reply_len = mnp_link_cached_reply(pen, reply, MNP_MAX_WIRE_FRAME);
        else
                *reply_len = 0;
        return r;
}

static void test_duplicate_gets_cached_reply(void **state) {
        uint8_t reply[MNP_MAX_WIRE_FRAME], again[MNP_MAX_WIRE_FRAME];
        struct mnp_link pen;
        struct mnp_msg m = msg_depth(500), a;
        struct mnp_frame f;
        ssize_t n, n2;

        mnp_link_init(&pen, NULL, T0);

        /* No reply cached yet. */
        assert_int_equal(mnp_link_cached_reply(&pen, again, sizeof(again)), 0);

        assert_int_equal(pen_rx(&pen, T0, 5, &m, reply, &n), MNP_LINK_RX_NEW);
        decode_msg(reply, n, &f, &a);
        assert_int_equal(a.type, MNP_MSG_ACK);
        assert_int_equal(a.ack.seq, 5);

        /* The retransmission, many times: never NEW again, always the same reply. */
        for (int i = 0; i < 10; i++) {
                assert_int_equal(pen_rx(&pen, T0 + 1000 * (i + 1), 5, &m, again, &n2), MNP_LINK_RX_DUPLICATE);
                assert_int_equal(n2, n);
                assert_memory_equal(again, reply, (size_t) n);
        }
        assert_int_equal(mnp_link_cached_reply(&pen, again, (size_t) n - 1), -ENOBUFS);

        /* The next command is NEW and its NAK is what gets cached now. */
        m = msg_depth(9999);
        assert_int_equal(rx(&pen, T0, 6, &m, NULL), MNP_LINK_RX_NEW);
        /* A duplicate before the reply is built: nothing to resend yet. */
        assert_int_equal(rx(&pen, T0, 6, &m, NULL), MNP_LINK_RX_DUPLICATE);
        assert_int_equal(mnp_link_cached_reply(&pen, again, sizeof(again)), 0);
        n = mnp_link_reply(&pen, T0, 6, MNP_NAK_OUT_OF_RANGE, 3000, reply, sizeof(reply));
        assert_true(n > 0);
        assert_int_equal(rx(&pen, T0, 6, &m, NULL), MNP_LINK_RX_DUPLICATE);
        n2 = mnp_link_cached_reply(&pen, again, sizeof(again));
        assert_int_equal(n2, n);
        assert_memory_equal(again, reply, (size_t) n);
        decode_msg(again, n2, &f, &a);
        assert_int_equal(a.type, MNP_MSG_NAK);
        assert_int_equal(a.nak.seq, 6);
        assert_int_equal(a.nak.reason, MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(a.nak.detail, 3000);

        /* A reply to another seq does not replace the cache. */
        assert_true(mnp_link_reply(&pen, T0, 99, 0, 0, reply, sizeof(reply)) > 0);
        n2 = mnp_link_cached_reply(&pen, reply, sizeof(reply));
        assert_memory_equal(again, reply, (size_t) n2);
}

static void test_delayed_old_copy_is_stale(void **state) {
        uint8_t reply[MNP_MAX_WIRE_FRAME];
        struct mnp_link pen;
        struct mnp_msg a = msg_depth(100), b = msg_depth(200);
        ssize_t n;

        mnp_link_init(&pen, NULL, T0);
        assert_int_equal(pen_rx(&pen, T0, 10, &a, reply, &n), MNP_LINK_RX_NEW);
        assert_int_equal(pen_rx(&pen, T0, 12, &b, reply, &n), MNP_LINK_RX_NEW);
        /* A delayed copy of the older command: ignored, no reply. */
        assert_int_equal(pen_rx(&pen, T0, 10, &a, reply, &n), MNP_LINK_RX_STALE);
        assert_int_equal(n, 0);
        assert_int_equal(pen_rx(&pen, T0, 11, &a, reply, &n), MNP_LINK_RX_STALE);
        /* The newer one is still a duplicate. */
        assert_int_equal(pen_rx(&pen, T0, 12, &b, reply, &n), MNP_LINK_RX_DUPLICATE);
        assert_true(n > 0);

        /* Serial arithmetic across the wrap: 65535 is before 0, 0 is after 65535. */
        mnp_link_init(&pen, NULL, T0);
        assert_int_equal(pen_rx(&pen, T0, 65535, &a, reply, &n), MNP_LINK_RX_NEW);
        assert_int_equal(pen_rx(&pen, T0, 0, &b, reply, &n), MNP_LINK_RX_NEW);
        assert_int_equal(pen_rx(&pen, T0, 65535, &a, reply, &n), MNP_LINK_RX_STALE);
        assert_int_equal(pen_rx(&pen, T0, 0, &b, reply, &n), MNP_LINK_RX_DUPLICATE);
        assert_int_equal(pen_rx(&pen, T0, 0x7FFF, &b, reply, &n), MNP_LINK_RX_NEW);   /* 32767 after */
        assert_int_equal(pen_rx(&pen, T0, 0, &a, reply, &n), MNP_LINK_RX_STALE);      /* 32767 before */
}

static void test_first_reliable_is_new(void **state) {
        struct mnp_link pen;
        struct mnp_msg m = msg_depth(100);

        /* Whatever its seq, the first reliable frame since init or reset is NEW. */
        for (unsigned s = 0; s < 65536; s += 4099) {
                mnp_link_init(&pen, NULL, T0);
                assert_int_equal(rx(&pen, T0, (uint16_t) s, &m, NULL), MNP_LINK_RX_NEW);
                mnp_link_reset(&pen, T0);
                assert_int_equal(rx(&pen, T0, (uint16_t) (s + 40000), &m, NULL), MNP_LINK_RX_NEW);
        }
}

static void test_stop_exempt_from_dedup(void **state) {
        uint8_t reply[MNP_MAX_WIRE_FRAME], cached[MNP_MAX_WIRE_FRAME], stop_reply[MNP_MAX_WIRE_FRAME];
        struct mnp_link pen;
        struct mnp_msg m = msg_depth(100), a;
        struct mnp_frame f;
        ssize_t n, ns, nc;

        mnp_link_init(&pen, NULL, T0);
        assert_int_equal(pen_rx(&pen, T0, 5, &m, reply, &n), MNP_LINK_RX_NEW);

        /* STOP between the command and the command's retransmission. */
        assert_int_equal(pen_rx(&pen, T0, 6, &msg_stop, stop_reply, &ns), MNP_LINK_RX_NEW);
        decode_msg(stop_reply, ns, &f, &a);
        assert_int_equal(a.ack.seq, 6);
        assert_int_equal(pen.last_rx_seq, 5);

        /* The retransmission is still a duplicate, answered with the command's reply. */
        assert_int_equal(pen_rx(&pen, T0, 5, &m, cached, &nc), MNP_LINK_RX_DUPLICATE);
        assert_int_equal(nc, n);
        assert_memory_equal(cached, reply, (size_t) n);

        /* A repeated STOP is acted on again (stopping twice is harmless). */
        assert_int_equal(pen_rx(&pen, T0, 6, &msg_stop, stop_reply, &ns), MNP_LINK_RX_NEW);
        assert_true(ns > 0);
        /* Even a STOP that looks old. */
        assert_int_equal(rx(&pen, T0, 1, &msg_stop, NULL), MNP_LINK_RX_NEW);
        assert_int_equal(pen_rx(&pen, T0, 5, &m, cached, &nc), MNP_LINK_RX_DUPLICATE);
        assert_memory_equal(cached, reply, (size_t) n);

        /* STOP before any command: still no record. */
        mnp_link_init(&pen, NULL, T0);
        assert_int_equal(rx(&pen, T0, 100, &msg_stop, NULL), MNP_LINK_RX_NEW);
        assert_true(mnp_link_reply(&pen, T0, 100, 0, 0, reply, sizeof(reply)) > 0);
        assert_false(pen.have_rx);
        assert_int_equal(mnp_link_cached_reply(&pen, reply, sizeof(reply)), 0);
        assert_int_equal(rx(&pen, T0, 50, &m, NULL), MNP_LINK_RX_NEW);
}

static void test_unreliable_always_new(void **state) {
        struct mnp_link l;
        struct mnp_msg st = { .type = MNP_MSG_STATUS, .status.state = MNP_STATE_IDLE };
        struct mnp_frame f = { .version = 1, .type = 0x30, .seq = 3 };

        mnp_link_init(&l, NULL, T0);
        for (int i = 0; i < 3; i++) {
                assert_int_equal(rx(&l, T0, 7, &msg_heartbeat, NULL), MNP_LINK_RX_NEW);
                assert_int_equal(rx(&l, T0, 7, &st, NULL), MNP_LINK_RX_NEW);
                /* An unknown unreliable type (no message): NEW, for the caller to ignore. */
                assert_int_equal(mnp_link_receive(&l, T0, &f, NULL, NULL), MNP_LINK_RX_NEW);
        }
        assert_false(l.have_rx);
}

static void test_unknown_reliable_type_deduplicated(void **state) {
        uint8_t reply[MNP_MAX_WIRE_FRAME], again[MNP_MAX_WIRE_FRAME];
        struct mnp_link pen;
        struct mnp_frame f = { .version = 1, .type = 0x1A, .seq = 40 };
        struct mnp_msg a;
        ssize_t n;

        mnp_link_init(&pen, NULL, T0);
        /* Unknown type in a reliable range, or a malformed payload: m is NULL. */
        assert_int_equal(mnp_link_receive(&pen, T0, &f, NULL, NULL), MNP_LINK_RX_NEW);
        n = mnp_link_reply(&pen, T0, f.seq, MNP_NAK_UNKNOWN_TYPE, f.type, reply, sizeof(reply));
        assert_true(n > 0);
        assert_int_equal(mnp_link_receive(&pen, T0, &f, NULL, NULL), MNP_LINK_RX_DUPLICATE);
        assert_int_equal(mnp_link_cached_reply(&pen, again, sizeof(again)), n);
        assert_memory_equal(again, reply, (size_t) n);
        decode_msg(again, n, &f, &a);
        assert_int_equal(a.nak.reason, MNP_NAK_UNKNOWN_TYPE);
        assert_int_equal(a.nak.seq, 40);
}

static void test_dedup_record_ages_out(void **state) {
        struct mnp_link pen;
        struct mnp_msg m = msg_depth(100);
        uint16_t seq = 10;

        mnp_link_init(&pen, NULL, T0);
        assert_int_equal(rx(&pen, T0, seq, &m, NULL), MNP_LINK_RX_NEW);

        /* A long idle time: only heartbeats, 40000 of them (more than half the space). */
        for (unsigned i = 0; i < 40000; i++)
                assert_int_equal(rx(&pen, T0, ++seq, &msg_heartbeat, NULL), MNP_LINK_RX_NEW);
        assert_int_equal(pen.rx_gaps, 0);
        /* 40011 looks "before" 10 in serial arithmetic; the record is gone, so it is NEW. */
        ++seq;
        assert_int_equal(rx(&pen, T0, seq, &m, NULL), MNP_LINK_RX_NEW);
        assert_int_equal(rx(&pen, T0, seq, &m, NULL), MNP_LINK_RX_DUPLICATE);

        /* Within the window the record stays. */
        mnp_link_init(&pen, NULL, T0);
        seq = 10;
        assert_int_equal(rx(&pen, T0, seq, &m, NULL), MNP_LINK_RX_NEW);
        for (unsigned i = 0; i < 0x3FFF; i++)
                rx(&pen, T0, ++seq, &msg_heartbeat, NULL);
        assert_true(pen.have_rx);
        assert_int_equal(rx(&pen, T0, 10, &m, NULL), MNP_LINK_RX_DUPLICATE);
        rx(&pen, T0, ++seq, &msg_heartbeat, NULL);              /* 0x4000 past the record */
        assert_false(pen.have_rx);
}

/* ---- handshake ---- */

static void test_reset_at_handshake(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME], answered;
        struct mnp_link host, pen;
        struct mnp_msg m, h = msg_hello(), hr;
        struct mnp_frame f;
        uint16_t hello_seq;
        ssize_t n;

        mnp_link_init(&host, NULL, T0);
        mnp_link_init(&pen, NULL, T0);

        /* An old session left the pen's record at seq 500 and a FAULT in flight. */
        m = msg_depth(100);
        assert_int_equal(rx(&pen, T0, 500, &m, NULL), MNP_LINK_RX_NEW);
        assert_true(mnp_link_reply(&pen, T0, 500, 0, 0, out, sizeof(out)) > 0);
        m = (struct mnp_msg) { .type = MNP_MSG_FAULT, .fault = { .code = 1, .fault_flags = 1 } };
        send_ok(&pen, T0, &m);

        /* A new host starts at seq 0 with HELLO: always NEW, even repeated. */
        n = mnp_link_send(&host, T0, &h, out, sizeof(out), &hello_seq);
        decode_msg(out, n, &f, &m);
        assert_int_equal(mnp_link_receive(&pen, T0 + 10, &f, &m, NULL), MNP_LINK_RX_NEW);
        assert_int_equal(mnp_link_receive(&pen, T0 + 10, &f, &m, NULL), MNP_LINK_RX_NEW);
        mnp_link_reset(&pen, T0 + 10);
        assert_false(pen.pending.active);
        assert_false(pen.have_rx);
        assert_int_equal(mnp_link_cached_reply(&pen, out, sizeof(out)), 0);
        assert_int_equal(pen.last_rx_us, T0 + 10);

        hr = msg_hello_reply(hello_seq);
        n = mnp_link_send(&pen, T0 + 10, &hr, out, sizeof(out), NULL);
        assert_true(n > 0);
        assert_false(pen.pending.active);               /* HELLO_REPLY is not retransmitted */

        decode_msg(out, n, &f, &m);
        assert_int_equal(mnp_link_receive(&host, T0 + 20, &f, &m, &answered), MNP_LINK_RX_ANSWER);
        assert_int_equal(answered, MNP_MSG_HELLO);
        mnp_link_reset(&host, T0 + 20);

        /* The new host's first command (seq 1, "before" 500) is NEW. */
        m = msg_depth(300);
        n = mnp_link_send(&host, T0 + 30, &m, out, sizeof(out), NULL);
        decode_msg(out, n, &f, &m);
        assert_int_equal(f.seq, 1);
        assert_int_equal(mnp_link_receive(&pen, T0 + 40, &f, &m, NULL), MNP_LINK_RX_NEW);

        /* And the pen's events after the handshake are NEW for the host. */
        m = (struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 0 } };
        n = mnp_link_send(&pen, T0 + 50, &m, out, sizeof(out), NULL);
        decode_msg(out, n, &f, &m);
        assert_int_equal(mnp_link_receive(&host, T0 + 60, &f, &m, NULL), MNP_LINK_RX_NEW);
}

/* A whole exchange with the ACK lost: the command acts once. */
static void test_lost_ack_end_to_end(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME], reply[MNP_MAX_WIRE_FRAME], type = 0;
        struct mnp_link host, pen;
        struct mnp_msg m = msg_depth(800), pm;
        struct mnp_frame f;
        unsigned acted = 0;
        ssize_t n;
        uint64_t t = T0;

        mnp_link_init(&host, NULL, t);
        mnp_link_init(&pen, NULL, t);

        n = mnp_link_send(&host, t, &m, out, sizeof(out), NULL);
        for (int round = 0; round < 3; round++) {
                enum mnp_link_rx r;
                ssize_t rn;

                decode_msg(out, n, &f, &pm);
                r = mnp_link_receive(&pen, t + 100, &f, &pm, NULL);
                if (r == MNP_LINK_RX_NEW) {
                        acted++;
                        rn = mnp_link_reply(&pen, t + 100, f.seq, 0, 0, reply, sizeof(reply));
                } else {
                        assert_int_equal(r, MNP_LINK_RX_DUPLICATE);
                        rn = mnp_link_cached_reply(&pen, reply, sizeof(reply));
                }
                assert_true(rn > 0);

                if (round < 2) {
                        /* The reply is lost; the host resends at its rto. */
                        t += RTO;
                        n = mnp_link_poll(&host, t, out, sizeof(out), &type);
                        assert_true(n > 0);
                } else {
                        decode_msg(reply, rn, &f, &pm);
                        assert_int_equal(mnp_link_receive(&host, t + 200, &f, &pm, &type), MNP_LINK_RX_ANSWER);
                        assert_int_equal(type, MNP_MSG_SET_DEPTH);
                }
        }
        assert_int_equal(acted, 1);
}

/* ---- timing: heartbeat, peer loss, next deadline ---- */

static void test_heartbeat_due(void **state) {
        uint8_t out[MNP_MAX_WIRE_FRAME];
        struct mnp_link l;
        struct mnp_msg m = msg_depth(1);
        uint64_t t;

        mnp_link_init(&l, NULL, T0);
        assert_false(mnp_link_heartbeat_due(&l, T0));
        assert_false(mnp_link_heartbeat_due(&l, T0 + HB - 1));
        assert_true(mnp_link_heartbeat_due(&l, T0 + HB));
        assert_false(mnp_link_heartbeat_due(&l, T0 - 1));       /* a clock before the last send */

        /* Every send counts ... */
        t = T0 + HB;
        send_ok(&l, t, &msg_heartbeat);
        assert_false(mnp_link_heartbeat_due(&l, t + HB - 1));
        assert_true(mnp_link_heartbeat_due(&l, t + HB));

        /* ... a reply ... */
        t += HB;
        assert_true(mnp_link_reply(&l, t, 3, 0, 0, out, sizeof(out)) > 0);
        assert_false(mnp_link_heartbeat_due(&l, t + HB - 1));

        /* ... a retransmission ... */
        t += HB;
        send_ok(&l, t, &m);
        assert_true(mnp_link_poll(&l, t + RTO, out, sizeof(out), NULL) > 0);
        assert_false(mnp_link_heartbeat_due(&l, t + RTO + HB - 1));
        assert_true(mnp_link_heartbeat_due(&l, t + RTO + HB));

        /* ... and a cached reply (sent at the time its duplicate arrived). */
        mnp_link_init(&l, NULL, T0);
        assert_int_equal(rx(&l, T0, 9, &m, NULL), MNP_LINK_RX_NEW);
        assert_true(mnp_link_reply(&l, T0, 9, 0, 0, out, sizeof(out)) > 0);
        assert_int_equal(rx(&l, T0 + 3 * HB, 9, &m, NULL), MNP_LINK_RX_DUPLICATE);
        assert_true(mnp_link_heartbeat_due(&l, T0 + 3 * HB));
        assert_true(mnp_link_cached_reply(&l, out, sizeof(out)) > 0);
        assert_false(mnp_link_heartbeat_due(&l, T0 + 3 * HB));
        assert_false(mnp_link_heartbeat_due(&l, T0 + 4 * HB - 1));
        assert_true(mnp_link_heartbeat_due(&l, T0 + 4 * HB));

        /* Receiving does not count. */
        mnp_link_init(&l, NULL, T0);
        rx(&l, T0 + HB - 1, 1, &msg_heartbeat, NULL);
        assert_true(mnp_link_heartbeat_due(&l, T0 + HB));
}

static void test_peer_lost(void **state) {
        struct mnp_link l;
        struct mnp_msg st = { .type = MNP_MSG_STATUS, .status.state = MNP_STATE_IDLE }, bad = msg_ack(1234);
        struct mnp_frame f;

        mnp_link_init(&l, NULL, T0);
        assert_false(mnp_link_peer_lost(&l, T0 + PEER - 1));
        assert_true(mnp_link_peer_lost(&l, T0 + PEER));

        /* Any good frame is a sign of life: STATUS, a stale ACK, an unknown type. */
        rx(&l, T0 + PEER, 0, &st, NULL);
        assert_false(mnp_link_peer_lost(&l, T0 + 2 * PEER - 1));
        assert_true(mnp_link_peer_lost(&l, T0 + 2 * PEER));
        assert_int_equal(rx(&l, T0 + 2 * PEER, 1, &bad, NULL), MNP_LINK_RX_STALE);
        assert_false(mnp_link_peer_lost(&l, T0 + 3 * PEER - 1));
        f = (struct mnp_frame) { .version = 1, .type = 0x3A, .seq = 2 };
        mnp_link_receive(&l, T0 + 3 * PEER, &f, NULL, NULL);
        assert_false(mnp_link_peer_lost(&l, T0 + 4 * PEER - 1));
        assert_true(mnp_link_peer_lost(&l, T0 + 4 * PEER));

        /* Sending does not. */
        send_ok(&l, T0 + 4 * PEER, &msg_heartbeat);
        assert_true(mnp_link_peer_lost(&l, T0 + 4 * PEER));

        /* A reset (at a handshake) counts as hearing from the peer. */
        mnp_link_reset(&l, T0 + 5 * PEER);
        assert_false(mnp_link_peer_lost(&l, T0 + 6 * PEER - 1));
        assert_true(mnp_link_peer_lost(&l, T0 + 6 * PEER));
}

static void test_next_deadline(void **state) {
        const struct mnp_link_config cfg = {
                .rto_us = 30000, .max_retries = 1, .heartbeat_us = 50000, .peer_timeout_us = 40000,
        };
        uint8_t out[MNP_MAX_WIRE_FRAME];
        struct mnp_link l;
        struct mnp_msg m = msg_depth(1);

        mnp_link_init(&l, NULL, T0);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + HB);

        /* The peer timeout when it comes first. */
        mnp_link_init(&l, &cfg, T0);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 40000);
        rx(&l, T0 + 30000, 0, &msg_heartbeat, NULL);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 50000);
        send_ok(&l, T0 + 20000, &msg_heartbeat);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 70000);

        /* A retransmission deadline. */
        send_ok(&l, T0 + 30000, &m);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 60000);
        send_ok(&l, T0 + 35000, &msg_stop);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 60000);
        /* The SET_DEPTH, overtaken by the STOP, times out at its first deadline. */
        assert_int_equal(mnp_link_poll(&l, T0 + 60000, out, sizeof(out), NULL), -ETIMEDOUT);
        /* Now the STOP (65000) is next. */
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 65000);
        assert_true(mnp_link_poll(&l, T0 + 65000, out, sizeof(out), NULL) > 0);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 70000);       /* peer timeout: rx at 30000 */

        /* At each deadline something is due or changes. */
        assert_true(mnp_link_peer_lost(&l, T0 + 70000));
        assert_false(mnp_link_peer_lost(&l, T0 + 69999));

        /* Nothing pending, nothing wrong: heartbeat. */
        mnp_link_reset(&l, T0 + 100000);
        assert_int_equal(mnp_link_next_deadline(&l), T0 + 65000 + 50000);
}

/* ---- gaps ---- */

static void test_rx_gaps(void **state) {
        struct mnp_link l;
        struct mnp_msg m = msg_depth(1), h = msg_hello();

        mnp_link_init(&l, NULL, T0);
        rx(&l, T0, 0, &msg_heartbeat, NULL);
        rx(&l, T0, 1, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 0);
        rx(&l, T0, 4, &msg_heartbeat, NULL);            /* 2 and 3 missing */
        assert_int_equal(l.rx_gaps, 2);
        rx(&l, T0, 3, &m, NULL);                        /* a late copy fills nothing, counts nothing */
        rx(&l, T0, 4, &msg_heartbeat, NULL);            /* a repeat */
        assert_int_equal(l.rx_gaps, 2);
        rx(&l, T0, 5, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 2);

        /* Across the wrap. */
        l.last_peer_seq = 0xFFFE;
        rx(&l, T0, 0xFFFF, &msg_heartbeat, NULL);
        rx(&l, T0, 0, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 2);
        rx(&l, T0, 2, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 3);

        /* A HELLO (a restarted host) starts counting afresh. */
        rx(&l, T0, 0, &h, NULL);
        rx(&l, T0, 1, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 3);

        /* The first frame ever counts no gap. */
        mnp_link_init(&l, NULL, T0);
        rx(&l, T0, 30000, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 0);
        rx(&l, T0, 30010, &msg_heartbeat, NULL);
        assert_int_equal(l.rx_gaps, 9);
}

/* ---- lease ---- */

static void test_lease(void **state) {
        struct mnp_lease lease = {};

        assert_false(mnp_lease_valid(&lease, 0));
        assert_int_equal(mnp_lease_remaining_ms(&lease, 0), 0);

        /* Grant. */
        mnp_lease_grant(&lease, T0, 200, 500);
        assert_true(lease.active);
        assert_int_equal(lease.expires_us, T0 + 200000);
        assert_true(mnp_lease_valid(&lease, T0));
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0), 200);
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0 + 1), 200);     /* rounded up */
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0 + 1000), 199);
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0 + 199999), 1);
        assert_true(mnp_lease_valid(&lease, T0 + 199999));

        /* Expiry: exactly at expires_us. */
        assert_false(mnp_lease_valid(&lease, T0 + 200000));
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0 + 200000), 0);
        assert_false(mnp_lease_valid(&lease, T0 + 10000000));

        /* Renew before expiry: from now, not from the old expiry. */
        mnp_lease_grant(&lease, T0, 200, 500);
        mnp_lease_grant(&lease, T0 + 150000, 200, 500);
        assert_int_equal(lease.expires_us, T0 + 350000);
        assert_true(mnp_lease_valid(&lease, T0 + 349999));
        assert_false(mnp_lease_valid(&lease, T0 + 350000));
        /* A shorter renewal shortens it. */
        mnp_lease_grant(&lease, T0 + 200000, 10, 500);
        assert_false(mnp_lease_valid(&lease, T0 + 210000));

        /* Cap. */
        mnp_lease_grant(&lease, T0, 60000, 500);
        assert_int_equal(lease.expires_us, T0 + 500000);
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0), 500);
        mnp_lease_grant(&lease, T0, UINT32_MAX, UINT32_MAX);
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0), UINT32_MAX);
        mnp_lease_grant(&lease, T0, 500, 500);
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0), 500);

        /* ms == 0 revokes; so does a zero cap. */
        mnp_lease_grant(&lease, T0, 0, 500);
        assert_false(lease.active);
        assert_false(mnp_lease_valid(&lease, T0));
        mnp_lease_grant(&lease, T0, 200, 0);
        assert_false(mnp_lease_valid(&lease, T0));

        /* Revoke. */
        mnp_lease_grant(&lease, T0, 200, 500);
        mnp_lease_revoke(&lease);
        assert_false(mnp_lease_valid(&lease, T0));
        assert_int_equal(mnp_lease_remaining_ms(&lease, T0), 0);
        mnp_lease_revoke(&lease);
        assert_false(lease.active);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_seq_increments_and_wraps),
                cmocka_unit_test(test_send_errors_consume_nothing),
                cmocka_unit_test(test_busy),
                cmocka_unit_test(test_stop_overtakes_and_replaces),
                cmocka_unit_test(test_stop_ends_command_retransmission),
                cmocka_unit_test(test_answer_matching),
                cmocka_unit_test(test_retransmission_timing),
                cmocka_unit_test(test_retransmission_config),
                cmocka_unit_test(test_stop_retransmission_and_timeout),
                cmocka_unit_test(test_duplicate_gets_cached_reply),
                cmocka_unit_test(test_delayed_old_copy_is_stale),
                cmocka_unit_test(test_first_reliable_is_new),
                cmocka_unit_test(test_stop_exempt_from_dedup),
                cmocka_unit_test(test_unreliable_always_new),
                cmocka_unit_test(test_unknown_reliable_type_deduplicated),
                cmocka_unit_test(test_dedup_record_ages_out),
                cmocka_unit_test(test_reset_at_handshake),
                cmocka_unit_test(test_lost_ack_end_to_end),
                cmocka_unit_test(test_heartbeat_due),
                cmocka_unit_test(test_peer_lost),
                cmocka_unit_test(test_next_deadline),
                cmocka_unit_test(test_rx_gaps),
                cmocka_unit_test(test_lease),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
