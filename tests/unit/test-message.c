/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Messages: golden vectors (tests/vectors/vectors.txt, computed by an
 * independent Python implementation), round trips at the domain
 * boundaries, every malformed-input path, pack errors and names.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mnp/frame.h>
#include <mnp/message.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

static const uint8_t all_types[] = {
        MNP_MSG_HELLO, MNP_MSG_HELLO_REPLY, MNP_MSG_ACK, MNP_MSG_NAK, MNP_MSG_HEARTBEAT,
        MNP_MSG_SET_DEPTH, MNP_MSG_SET_SPEED, MNP_MSG_START, MNP_MSG_STOP, MNP_MSG_CLEAR_FAULT,
        MNP_MSG_STATUS, MNP_MSG_FAULT, MNP_MSG_CARTRIDGE,
};

/* ---- field-by-field comparison (padding and unused union bytes do not count) ---- */

static void assert_msg_equal(const struct mnp_msg *a, const struct mnp_msg *b) {
        assert_int_equal(a->type, b->type);

        switch (a->type) {
        case MNP_MSG_HELLO:
                assert_int_equal(a->hello.min_version, b->hello.min_version);
                assert_int_equal(a->hello.max_version, b->hello.max_version);
                assert_int_equal(a->hello.caps, b->hello.caps);
                assert_int_equal(a->hello.heartbeat_ms, b->hello.heartbeat_ms);
                break;
        case MNP_MSG_HELLO_REPLY:
                assert_int_equal(a->hello_reply.hello_seq, b->hello_reply.hello_seq);
                assert_int_equal(a->hello_reply.version, b->hello_reply.version);
                assert_int_equal(a->hello_reply.caps, b->hello_reply.caps);
                assert_int_equal(a->hello_reply.boot_id, b->hello_reply.boot_id);
                assert_int_equal(a->hello_reply.depth_min_um, b->hello_reply.depth_min_um);
                assert_int_equal(a->hello_reply.depth_max_um, b->hello_reply.depth_max_um);
                assert_int_equal(a->hello_reply.depth_step_um, b->hello_reply.depth_step_um);
                assert_int_equal(a->hello_reply.speed_min_hz, b->hello_reply.speed_min_hz);
                assert_int_equal(a->hello_reply.speed_max_hz, b->hello_reply.speed_max_hz);
                assert_int_equal(a->hello_reply.max_lease_ms, b->hello_reply.max_lease_ms);
                assert_string_equal(a->hello_reply.model, b->hello_reply.model);
                assert_string_equal(a->hello_reply.serial, b->hello_reply.serial);
                assert_string_equal(a->hello_reply.firmware, b->hello_reply.firmware);
                break;
        case MNP_MSG_ACK:
                assert_int_equal(a->ack.seq, b->ack.seq);
                break;
        case MNP_MSG_NAK:
                assert_int_equal(a->nak.seq, b->nak.seq);
                assert_int_equal(a->nak.reason, b->nak.reason);
                assert_int_equal(a->nak.detail, b->nak.detail);
                break;
        case MNP_MSG_HEARTBEAT:
                assert_int_equal(a->heartbeat.lease_ms, b->heartbeat.lease_ms);
                break;
        case MNP_MSG_SET_DEPTH:
                assert_int_equal(a->set_depth.depth_um, b->set_depth.depth_um);
                break;
        case MNP_MSG_SET_SPEED:
                assert_int_equal(a->set_speed.speed_hz, b->set_speed.speed_hz);
                break;
        case MNP_MSG_START:
                assert_int_equal(a->start.depth_um, b->start.depth_um);
                assert_int_equal(a->start.speed_hz, b->start.speed_hz);
                assert_int_equal(a->start.lease_ms, b->start.lease_ms);
                break;
        case MNP_MSG_STOP:
        case MNP_MSG_CLEAR_FAULT:
                break;
        case MNP_MSG_STATUS:
                assert_int_equal(a->status.state, b->status.state);
                assert_int_equal(a->status.fault_flags, b->status.fault_flags);
                assert_int_equal(a->status.depth_set_um, b->status.depth_set_um);
                assert_int_equal(a->status.depth_actual_um, b->status.depth_actual_um);
                assert_int_equal(a->status.speed_set_hz, b->status.speed_set_hz);
                assert_int_equal(a->status.speed_actual_hz, b->status.speed_actual_hz);
                assert_int_equal(a->status.battery_percent, b->status.battery_percent);
                assert_int_equal(a->status.temperature_dc, b->status.temperature_dc);
                assert_int_equal(a->status.needling_ms, b->status.needling_ms);
                assert_int_equal(a->status.lease_left_ms, b->status.lease_left_ms);
                assert_string_equal(a->status.cartridge_id, b->status.cartridge_id);
                break;
        case MNP_MSG_FAULT:
                assert_int_equal(a->fault.code, b->fault.code);
                assert_int_equal(a->fault.fault_flags, b->fault.fault_flags);
                break;
        case MNP_MSG_CARTRIDGE:
                assert_int_equal(a->cartridge.present, b->cartridge.present);
                assert_string_equal(a->cartridge.id, b->cartridge.id);
                break;
        default:
                fail_msg("unexpected type 0x%02x", a->type);
        }
}

/* ---- the golden vectors: the same messages make-vectors.py describes ---- */

struct golden {
        const char *name;
        struct mnp_msg msg;
};

static const struct golden goldens[] = {
        { "hello", { .type = MNP_MSG_HELLO,
                     .hello = { .min_version = 1, .max_version = 1, .caps = 0xF, .heartbeat_ms = 50 } } },
        { "hello-reply", { .type = MNP_MSG_HELLO_REPLY,
                           .hello_reply = {
                                   .hello_seq = 0, .version = 1, .caps = 0x0B, .boot_id = 0x5EED1234,
                                   .depth_min_um = 0, .depth_max_um = 3000, .depth_step_um = 50,
                                   .speed_min_hz = 50, .speed_max_hz = 150, .max_lease_ms = 500,
                                   .model = "MN-1", .serial = "SN0001", .firmware = "1.0.0" } } },
        { "ack", { .type = MNP_MSG_ACK, .ack.seq = 3 } },
        { "nak-out-of-range", { .type = MNP_MSG_NAK,
                                .nak = { .seq = 4, .reason = MNP_NAK_OUT_OF_RANGE, .detail = 3000 } } },
        { "nak-unsupported-version", { .type = MNP_MSG_NAK,
                                       .nak = { .seq = 0, .reason = MNP_NAK_UNSUPPORTED_VERSION, .detail = 1 } } },
        { "heartbeat-host", { .type = MNP_MSG_HEARTBEAT, .heartbeat.lease_ms = 200 } },
        { "heartbeat-pen", { .type = MNP_MSG_HEARTBEAT, .heartbeat.lease_ms = 0 } },
        { "set-depth", { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 1500 } },
        { "set-speed", { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 120 } },
        { "start", { .type = MNP_MSG_START, .start = { .depth_um = 1500, .speed_hz = 120, .lease_ms = 200 } } },
        { "stop", { .type = MNP_MSG_STOP } },
        { "clear-fault", { .type = MNP_MSG_CLEAR_FAULT } },
        { "status-running", { .type = MNP_MSG_STATUS,
                              .status = {
                                      .state = MNP_STATE_RUNNING, .fault_flags = 0,
                                      .depth_set_um = 1500, .depth_actual_um = 1450,
                                      .speed_set_hz = 120, .speed_actual_hz = 118,
                                      .battery_percent = 87, .temperature_dc = 312,
                                      .needling_ms = 12345, .lease_left_ms = 180,
                                      .cartridge_id = "CART-0001" } } },
        { "status-fault", { .type = MNP_MSG_STATUS,
                            .status = {
                                    .state = MNP_STATE_FAULT,
                                    .fault_flags = MNP_FAULT_FLAG(MNP_FAULT_CARTRIDGE_REMOVED) |
                                                   MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED),
                                    .depth_set_um = 500, .depth_actual_um = 500,
                                    .speed_set_hz = 100, .speed_actual_hz = 0,
                                    .battery_percent = 255, .temperature_dc = -55,
                                    .needling_ms = 0, .lease_left_ms = 0, .cartridge_id = "" } } },
        { "fault", { .type = MNP_MSG_FAULT,
                     .fault = { .code = MNP_FAULT_LEASE_EXPIRED,
                                .fault_flags = MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED) } } },
        { "cartridge-inserted", { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 1, .id = "CART-0001" } } },
        { "cartridge-removed", { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 0, .id = "" } } },
};

static const struct golden *golden_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(goldens); i++)
                if (strcmp(goldens[i].name, name) == 0)
                        return &goldens[i];
        return NULL;
}

static const struct mnp_msg *golden_of_type(uint8_t type) {
        for (size_t i = 0; i < ELEMENTSOF(goldens); i++)
                if (goldens[i].msg.type == type)
                        return &goldens[i].msg;
        fail_msg("no golden message of type 0x%02x", type);
        abort();
}

static size_t unhex(const char *s, uint8_t *out, size_t size) {
        size_t n = 0;

        if (strcmp(s, "-") == 0)
                return 0;
        assert_int_equal(strlen(s) % 2, 0);
        for (; *s; s += 2) {
                unsigned v;

                assert_true(n < size);
                assert_int_equal(sscanf(s, "%2x", &v), 1);
                out[n++] = (uint8_t) v;
        }
        return n;
}

/* The vectors file sits next to this source: tests/unit/../vectors/. */
static FILE *open_vectors(void) {
        const char *env = getenv("MNP_VECTORS");
        char path[4096];
        const char *slash;
        FILE *f;

        if (env)
                return fopen(env, "re");

        slash = strrchr(__FILE__, '/');
        assert_non_null(slash);
        assert_true((size_t) snprintf(path, sizeof(path), "%.*s/../vectors/vectors.txt",
                                      (int) (slash - __FILE__), __FILE__) < sizeof(path));
        f = fopen(path, "re");
        if (!f)
                fail_msg("cannot open %s (set MNP_VECTORS)", path);
        return f;
}

static void test_golden_vectors(void **state) {
        bool seen_type[256] = {};
        bool seen_name[ELEMENTSOF(goldens)] = {};
        char line[2048];
        unsigned count = 0;
        FILE *f;

        f = open_vectors();
        assert_non_null(f);

        while (fgets(line, sizeof(line), f)) {
                char name[64], payload_hex[512], raw_hex[600], wire_hex[600];
                uint8_t payload[MNP_MAX_PAYLOAD], raw[MNP_MAX_RAW_FRAME], wire[MNP_MAX_WIRE_FRAME];
                uint8_t out[MNP_MAX_WIRE_FRAME];
                unsigned type, seq;
                size_t payload_len, raw_len, wire_len, consumed;
                const struct golden *g;
                struct mnp_decoder d;
                struct mnp_frame fr;
                struct mnp_msg m;
                ssize_t n;

                if (line[0] == '#' || line[0] == '\n')
                        continue;
                assert_int_equal(sscanf(line, "%63s %u %u %511s %599s %599s",
                                        name, &type, &seq, payload_hex, raw_hex, wire_hex), 6);
                g = golden_find(name);
                if (!g) {
                        fail_msg("vector %s has no expected message in this test", name);
                        return;
                }
                seen_name[g - goldens] = true;
                assert_int_equal(g->msg.type, type);
                seen_type[type] = true;

                payload_len = unhex(payload_hex, payload, sizeof(payload));
                raw_len = unhex(raw_hex, raw, sizeof(raw));
                wire_len = unhex(wire_hex, wire, sizeof(wire));
                assert_int_equal(raw_len, MNP_HEADER_SIZE + payload_len + MNP_CRC_SIZE);

                /* The C encoder produces exactly these bytes ... */
                n = mnp_msg_pack(&g->msg, out, sizeof(out));
                assert_int_equal(n, (ssize_t) payload_len);
                assert_memory_equal(out, payload, payload_len);

                n = mnp_msg_encode(&g->msg, (uint16_t) seq, out, sizeof(out));
                assert_int_equal(n, (ssize_t) wire_len);
                assert_memory_equal(out, wire, wire_len);

                /* ... and its CRC is that of the raw frame. */
                assert_int_equal(mnp_crc32c(0, raw, raw_len - MNP_CRC_SIZE),
                                 (uint32_t) raw[raw_len - 4] | (uint32_t) raw[raw_len - 3] << 8 |
                                 (uint32_t) raw[raw_len - 2] << 16 | (uint32_t) raw[raw_len - 1] << 24);

                /* Decoding the wire bytes yields the expected fields. */
                mnp_decoder_init(&d);
                assert_int_equal(mnp_decoder_feed(&d, wire, wire_len, &consumed, &fr), 1);
                assert_int_equal(consumed, wire_len);
                assert_int_equal(fr.version, MNP_FRAME_VERSION);
                assert_int_equal(fr.type, type);
                assert_int_equal(fr.seq, seq);
                assert_int_equal(fr.payload_len, payload_len);
                assert_memory_equal(fr.payload, payload, payload_len);
                assert_memory_equal(fr.payload, raw + MNP_HEADER_SIZE, payload_len);

                assert_int_equal(mnp_msg_unpack(fr.type, fr.payload, fr.payload_len, &m), 0);
                assert_msg_equal(&m, &g->msg);
                count++;
        }
        fclose(f);

        assert_int_equal(count, ELEMENTSOF(goldens));
        for (size_t i = 0; i < ELEMENTSOF(goldens); i++)
                if (!seen_name[i])
                        fail_msg("no vector for %s", goldens[i].name);
        for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                if (!seen_type[all_types[i]])
                        fail_msg("no vector for type 0x%02x", all_types[i]);
}

/* ---- round trips ---- */

static void round_trip(const struct mnp_msg *m) {
        uint8_t buf[MNP_MAX_PAYLOAD];
        struct mnp_msg back;
        ssize_t n;

        n = mnp_msg_pack(m, buf, sizeof(buf));
        assert_true(n >= 0);
        assert_int_equal(mnp_msg_unpack(m->type, buf, (size_t) n, &back), 0);
        assert_msg_equal(&back, m);

        /* Trailing bytes from a later revision are ignored. */
        assert_true((size_t) n + 9 <= sizeof(buf));
        memset(buf + n, 0xA5, 9);
        memset(&back, 0, sizeof(back));
        assert_int_equal(mnp_msg_unpack(m->type, buf, (size_t) n + 9, &back), 0);
        assert_msg_equal(&back, m);
}

static void fill_str(char *s, size_t len, char c) {
        memset(s, c, len);
        s[len] = '\0';
}

static void test_round_trip_goldens(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(goldens); i++)
                round_trip(&goldens[i].msg);
}

static void test_round_trip_boundaries(void **state) {
        struct mnp_msg m;

        /* HELLO */
        m = (struct mnp_msg) { .type = MNP_MSG_HELLO,
                               .hello = { .min_version = 1, .max_version = 1, .caps = 0, .heartbeat_ms = 1 } };
        round_trip(&m);
        m.hello = (struct mnp_hello) { .min_version = 255, .max_version = 255, .caps = UINT32_MAX,
                                       .heartbeat_ms = UINT16_MAX };
        round_trip(&m);
        m.hello = (struct mnp_hello) { .min_version = 1, .max_version = 255, .caps = 0x80000001u,
                                       .heartbeat_ms = 50 };
        round_trip(&m);

        /* HELLO_REPLY: smallest and largest */
        memset(&m, 0, sizeof(m));
        m.type = MNP_MSG_HELLO_REPLY;
        m.hello_reply = (struct mnp_hello_reply) {
                .hello_seq = 0, .version = 1, .caps = 0, .boot_id = 0,
                .depth_min_um = 0, .depth_max_um = 0, .depth_step_um = 1,
                .speed_min_hz = 0, .speed_max_hz = 0, .max_lease_ms = 1,
        };
        round_trip(&m);
        m.hello_reply = (struct mnp_hello_reply) {
                .hello_seq = UINT16_MAX, .version = 255, .caps = UINT32_MAX, .boot_id = UINT32_MAX,
                .depth_min_um = UINT32_MAX, .depth_max_um = UINT32_MAX, .depth_step_um = UINT32_MAX,
                .speed_min_hz = UINT16_MAX, .speed_max_hz = UINT16_MAX, .max_lease_ms = UINT16_MAX,
        };
        fill_str(m.hello_reply.model, MNP_MAX_STR, '~');
        fill_str(m.hello_reply.serial, MNP_MAX_STR, ' ');
        fill_str(m.hello_reply.firmware, MNP_MAX_STR, 'z');
        round_trip(&m);
        {
                uint8_t buf[MNP_MAX_PAYLOAD];
                /* The largest payload of this protocol version. */
                assert_int_equal(mnp_msg_pack(&m, buf, sizeof(buf)), 29 + 3 * (1 + MNP_MAX_STR));
        }

        /* ACK */
        m = (struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = 0 };
        round_trip(&m);
        m.ack.seq = UINT16_MAX;
        round_trip(&m);

        /* NAK: every reason, extreme details */
        for (uint8_t r = 1; r <= MNP_NAK_MAX; r++) {
                m = (struct mnp_msg) { .type = MNP_MSG_NAK, .nak = { .seq = r, .reason = r, .detail = 0 } };
                round_trip(&m);
                m.nak.seq = UINT16_MAX;
                m.nak.detail = UINT32_MAX;
                round_trip(&m);
        }

        /* HEARTBEAT, SET_DEPTH, SET_SPEED: full ranges (limits are not this layer's job) */
        m = (struct mnp_msg) { .type = MNP_MSG_HEARTBEAT, .heartbeat.lease_ms = 0 };
        round_trip(&m);
        m.heartbeat.lease_ms = UINT16_MAX;
        round_trip(&m);
        m = (struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 0 };
        round_trip(&m);
        m.set_depth.depth_um = UINT32_MAX;
        round_trip(&m);
        m = (struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 0 };
        round_trip(&m);
        m.set_speed.speed_hz = UINT16_MAX;
        round_trip(&m);

        /* START */
        m = (struct mnp_msg) { .type = MNP_MSG_START, .start = { .depth_um = 0, .speed_hz = 0, .lease_ms = 1 } };
        round_trip(&m);
        m.start = (struct mnp_start) { .depth_um = UINT32_MAX, .speed_hz = UINT16_MAX, .lease_ms = UINT16_MAX };
        round_trip(&m);

        /* STOP, CLEAR_FAULT */
        m = (struct mnp_msg) { .type = MNP_MSG_STOP };
        round_trip(&m);
        m = (struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT };
        round_trip(&m);

        /* STATUS: every state (faults exactly in fault, every known flag), battery
         * 0/100/255, temperature extremes */
        for (uint8_t s = MNP_STATE_BOOTING; s <= MNP_STATE_FAULT; s++) {
                uint32_t flags = s == MNP_STATE_FAULT ? MNP_FAULT_FLAG(MNP_FAULT_MOTOR) : 0;

                memset(&m, 0, sizeof(m));
                m.type = MNP_MSG_STATUS;
                m.status.state = s;
                m.status.fault_flags = flags;
                m.status.battery_percent = 0;
                m.status.temperature_dc = INT16_MIN;
                round_trip(&m);
                m.status = (struct mnp_status) {
                        .state = s,
                        .fault_flags = s == MNP_STATE_FAULT ? MNP_FAULT_FLAG(MNP_FAULT_MAX + 1) - 1 : 0,
                        .depth_set_um = UINT32_MAX, .depth_actual_um = UINT32_MAX,
                        .speed_set_hz = UINT16_MAX, .speed_actual_hz = UINT16_MAX,
                        .battery_percent = 100, .temperature_dc = INT16_MAX,
                        .needling_ms = UINT32_MAX, .lease_left_ms = UINT16_MAX,
                };
                fill_str(m.status.cartridge_id, MNP_MAX_STR, 'C');
                round_trip(&m);
                m.status.battery_percent = 255;
                m.status.temperature_dc = -1;
                round_trip(&m);
        }

        /* FAULT: every code */
        for (uint8_t c = 1; c <= MNP_FAULT_MAX; c++) {
                m = (struct mnp_msg) { .type = MNP_MSG_FAULT,
                                       .fault = { .code = c, .fault_flags = MNP_FAULT_FLAG(c) } };
                round_trip(&m);
                m.fault.fault_flags = MNP_FAULT_FLAG(MNP_FAULT_MAX + 1) - 1;
                round_trip(&m);
        }

        /* CARTRIDGE: removed, shortest and longest id */
        m = (struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 0, .id = "" } };
        round_trip(&m);
        m.cartridge.present = 1;
        strcpy(m.cartridge.id, "x");
        round_trip(&m);
        fill_str(m.cartridge.id, MNP_MAX_STR, '!');
        round_trip(&m);
}

/* ---- malformed input ---- */

static void test_too_short(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(goldens); i++) {
                const struct mnp_msg *g = &goldens[i].msg;
                uint8_t buf[MNP_MAX_PAYLOAD];
                struct mnp_msg m;
                ssize_t n;

                n = mnp_msg_pack(g, buf, sizeof(buf));
                assert_true(n >= 0);

                /* Every prefix is too short, one byte short in particular. */
                for (ssize_t len = 0; len < n; len++) {
                        m.type = 0xEE;
                        assert_int_equal(mnp_msg_unpack(g->type, buf, (size_t) len, &m), -EBADMSG);
                        assert_int_equal(m.type, 0xEE);        /* untouched */
                }
        }

        /* The fixed minimum of each type, from an all-zero-but-valid payload. */
        {
                static const struct { uint8_t type; size_t min; } mins[] = {
                        { MNP_MSG_HELLO, 8 }, { MNP_MSG_HELLO_REPLY, 32 }, { MNP_MSG_ACK, 2 },
                        { MNP_MSG_NAK, 7 }, { MNP_MSG_HEARTBEAT, 2 }, { MNP_MSG_SET_DEPTH, 4 },
                        { MNP_MSG_SET_SPEED, 2 }, { MNP_MSG_START, 8 }, { MNP_MSG_STOP, 0 },
                        { MNP_MSG_CLEAR_FAULT, 0 }, { MNP_MSG_STATUS, 27 }, { MNP_MSG_FAULT, 5 },
                        { MNP_MSG_CARTRIDGE, 2 },
                };
                assert_int_equal(ELEMENTSOF(mins), ELEMENTSOF(all_types));
                for (size_t i = 0; i < ELEMENTSOF(mins); i++) {
                        const struct mnp_msg *g = golden_of_type(mins[i].type);
                        uint8_t buf[MNP_MAX_PAYLOAD];
                        struct mnp_msg m = {}, empty = {};
                        ssize_t n;

                        /* The golden message with its strings emptied packs to the minimum. */
                        m = *g;
                        if (m.type == MNP_MSG_HELLO_REPLY) {
                                m.hello_reply.model[0] = m.hello_reply.serial[0] = m.hello_reply.firmware[0] = '\0';
                        } else if (m.type == MNP_MSG_STATUS)
                                m.status.cartridge_id[0] = '\0';
                        else if (m.type == MNP_MSG_CARTRIDGE)
                                m.cartridge = (struct mnp_cartridge_event) { .present = 0 };
                        n = mnp_msg_pack(&m, buf, sizeof(buf));
                        assert_int_equal(n, (ssize_t) mins[i].min);
                        assert_int_equal(mnp_msg_unpack(m.type, buf, mins[i].min, &empty), 0);
                        if (mins[i].min > 0)
                                assert_int_equal(mnp_msg_unpack(m.type, buf, mins[i].min - 1, &empty), -EBADMSG);
                }
        }

        /* Empty payloads need no buffer at all. */
        assert_int_equal(mnp_msg_unpack(MNP_MSG_STOP, NULL, 0, NULL), 0);
        assert_int_equal(mnp_msg_unpack(MNP_MSG_CLEAR_FAULT, NULL, 0, NULL), 0);
        assert_int_equal(mnp_msg_unpack(MNP_MSG_ACK, NULL, 0, NULL), -EBADMSG);
}

/* A macro, so that a failure names the caller's line. */
#define expect_unpack(t_, p_, len_, want_)                                             \
        do {                                                                            \
                struct mnp_msg _m = { .type = 0xEE };                                   \
                int _want = (want_);                                                    \
                                                                                        \
                assert_int_equal(mnp_msg_unpack((t_), (p_), (len_), &_m), _want);    \
                if (_want < 0)                                                          \
                        assert_int_equal(_m.type, 0xEE);                                \
        } while (0)

static void test_out_of_domain_unpack(void **state) {
        uint8_t b[MNP_MAX_PAYLOAD];
        ssize_t n;

        /* HELLO: min 0, min > max, heartbeat 0 */
        n = mnp_msg_pack(golden_of_type(MNP_MSG_HELLO), b, sizeof(b));
        assert_int_equal(n, 8);
        b[0] = 0; expect_unpack(MNP_MSG_HELLO, b, 8, -EINVAL);
        b[0] = 2; b[1] = 1; expect_unpack(MNP_MSG_HELLO, b, 8, -EINVAL);
        b[0] = 1; b[1] = 2; expect_unpack(MNP_MSG_HELLO, b, 8, 0);
        b[6] = 0; b[7] = 0; expect_unpack(MNP_MSG_HELLO, b, 8, -EINVAL);
        b[6] = 1; expect_unpack(MNP_MSG_HELLO, b, 8, 0);

        /* HELLO_REPLY: version 0, step 0, depth min > max, speed min > max, lease 0 */
#define RESET_HR() assert_int_equal(mnp_msg_pack(golden_of_type(MNP_MSG_HELLO_REPLY), b, sizeof(b)), n)
        n = mnp_msg_pack(golden_of_type(MNP_MSG_HELLO_REPLY), b, sizeof(b));
        assert_true(n > 32);
        expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, 0);
        b[2] = 0; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, -EINVAL);
        RESET_HR();
        memset(b + 19, 0, 4); expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, -EINVAL);       /* step */
        RESET_HR();
        b[11] = 0xB9; b[12] = 0x0B; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, -EINVAL); /* min 3001 > max 3000 */
        b[11] = 0xB8; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, 0);                     /* min == max */
        RESET_HR();
        b[23] = 151; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, -EINVAL);                /* speed min 151 > 150 */
        b[23] = 150; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, 0);
        RESET_HR();
        b[27] = 0; b[28] = 0; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) n, -EINVAL);       /* lease 0 */
        RESET_HR();
#undef RESET_HR

        /* NAK: reason 0 and MAX + 1 */
        n = mnp_msg_pack(golden_of_type(MNP_MSG_NAK), b, sizeof(b));
        assert_int_equal(n, 7);
        b[2] = 0; expect_unpack(MNP_MSG_NAK, b, 7, -EINVAL);
        b[2] = MNP_NAK_MAX + 1; expect_unpack(MNP_MSG_NAK, b, 7, -EINVAL);
        b[2] = 255; expect_unpack(MNP_MSG_NAK, b, 7, -EINVAL);
        b[2] = MNP_NAK_MAX; expect_unpack(MNP_MSG_NAK, b, 7, 0);

        /* START: lease 0 */
        n = mnp_msg_pack(golden_of_type(MNP_MSG_START), b, sizeof(b));
        assert_int_equal(n, 8);
        b[6] = 0; b[7] = 0; expect_unpack(MNP_MSG_START, b, 8, -EINVAL);
        b[7] = 1; expect_unpack(MNP_MSG_START, b, 8, 0);

        /* STATUS: state 4, battery 101 and 254 */
        n = mnp_msg_pack(golden_of_type(MNP_MSG_STATUS), b, sizeof(b));
        assert_true(n > 27);
        b[0] = 4; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);
        b[0] = 255; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);
        b[0] = 3; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);       /* fault, no flags */
        b[1] = 0x01; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, 0);           /* fault, motor */
        b[0] = 2; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);        /* running with a fault */
        b[0] = 3; b[2] = 0x01; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);  /* unknown flag 0x100 */
        b[2] = 0; b[4] = 0x80; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);  /* unknown flag 1 << 31 */
        b[4] = 0; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, 0);
        b[17] = 101; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);
        b[17] = 254; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, -EINVAL);
        b[17] = 255; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, 0);
        b[17] = 100; expect_unpack(MNP_MSG_STATUS, b, (size_t) n, 0);

        /* FAULT: code 0 and MAX + 1 */
        n = mnp_msg_pack(golden_of_type(MNP_MSG_FAULT), b, sizeof(b));
        assert_int_equal(n, 5);
        b[0] = 0; expect_unpack(MNP_MSG_FAULT, b, 5, -EINVAL);
        b[0] = MNP_FAULT_MAX + 1; expect_unpack(MNP_MSG_FAULT, b, 5, -EINVAL);
        b[0] = MNP_FAULT_MAX; expect_unpack(MNP_MSG_FAULT, b, 5, -EINVAL);     /* flags lack code 8 */
        b[1] |= 0x80; expect_unpack(MNP_MSG_FAULT, b, 5, 0);
        b[2] = 0x01; expect_unpack(MNP_MSG_FAULT, b, 5, -EINVAL);               /* unknown flag 0x100 */

        /* CARTRIDGE: present 2; present without id; removed with id */
        b[0] = 2; b[1] = 1; b[2] = 'A'; expect_unpack(MNP_MSG_CARTRIDGE, b, 3, -EINVAL);
        b[0] = 1; b[1] = 0; expect_unpack(MNP_MSG_CARTRIDGE, b, 2, -EINVAL);
        b[0] = 0; b[1] = 1; b[2] = 'A'; expect_unpack(MNP_MSG_CARTRIDGE, b, 3, -EINVAL);
        b[0] = 1; expect_unpack(MNP_MSG_CARTRIDGE, b, 3, 0);
        b[0] = 0; b[1] = 0; expect_unpack(MNP_MSG_CARTRIDGE, b, 2, 0);
}

/* A CARTRIDGE payload with the given string bytes (length byte from len). */
static size_t cartridge_payload(uint8_t *b, uint8_t len, const uint8_t *s, size_t n) {
        b[0] = 1;
        b[1] = len;
        memcpy(b + 2, s, n);
        return 2 + n;
}

static void test_bad_strings_unpack(void **state) {
        uint8_t s[64], b[MNP_MAX_PAYLOAD];
        size_t n;

        memset(s, 'A', sizeof(s));

        /* Longest allowed, one too long (with and without the bytes to back it). */
        n = cartridge_payload(b, MNP_MAX_STR, s, MNP_MAX_STR);
        expect_unpack(MNP_MSG_CARTRIDGE, b, n, 0);
        n = cartridge_payload(b, MNP_MAX_STR + 1, s, MNP_MAX_STR + 1);
        expect_unpack(MNP_MSG_CARTRIDGE, b, n, -EINVAL);
        n = cartridge_payload(b, 255, s, 60);
        expect_unpack(MNP_MSG_CARTRIDGE, b, n, -EINVAL);
        /* A length that runs past the payload. */
        n = cartridge_payload(b, 10, s, 9);
        expect_unpack(MNP_MSG_CARTRIDGE, b, n, -EBADMSG);

        /* Every byte outside 0x20..0x7E, at the start, middle and end. */
        for (unsigned c = 0; c < 256; c++) {
                bool printable = c >= 0x20 && c <= 0x7E;

                for (size_t at = 0; at < 5; at += 2) {
                        memset(s, 'A', 5);
                        s[at] = (uint8_t) c;
                        n = cartridge_payload(b, 5, s, 5);
                        expect_unpack(MNP_MSG_CARTRIDGE, b, n, printable ? 0 : -EINVAL);
                }
        }

        /* NUL in each string of HELLO_REPLY and in STATUS. */
        {
                const struct mnp_msg *g = golden_of_type(MNP_MSG_HELLO_REPLY);
                ssize_t len = mnp_msg_pack(g, b, sizeof(b));
                size_t model = 32 - 3 + 1;                      /* first byte of the model */
                size_t serial = model + strlen(g->hello_reply.model) + 1;
                size_t firmware = serial + strlen(g->hello_reply.serial) + 1;

                assert_true(len > 0);
                b[model] = 0; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) len, -EINVAL);
                mnp_msg_pack(g, b, sizeof(b));
                b[serial + 1] = 0; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) len, -EINVAL);
                mnp_msg_pack(g, b, sizeof(b));
                b[firmware + 2] = 0x7F; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) len, -EINVAL);
                mnp_msg_pack(g, b, sizeof(b));
                b[firmware - 1] = MNP_MAX_STR + 1; expect_unpack(MNP_MSG_HELLO_REPLY, b, (size_t) len, -EINVAL);
        }
        {
                const struct mnp_msg *g = golden_of_type(MNP_MSG_STATUS);
                ssize_t len = mnp_msg_pack(g, b, sizeof(b));

                assert_true(len > 27);
                b[27] = 0; expect_unpack(MNP_MSG_STATUS, b, (size_t) len, -EINVAL);
                mnp_msg_pack(g, b, sizeof(b));
                b[26] = MNP_MAX_STR + 1; expect_unpack(MNP_MSG_STATUS, b, (size_t) len, -EINVAL);
        }
}

static void test_unknown_types(void **state) {
        uint8_t b[MNP_MAX_PAYLOAD] = {};
        unsigned known = 0;

        for (unsigned t = 0; t < 256; t++) {
                bool is_known = false;
                struct mnp_msg m = { .type = (uint8_t) t };
                int r;

                for (size_t i = 0; i < ELEMENTSOF(all_types); i++)
                        if (all_types[i] == t)
                                is_known = true;

                r = mnp_msg_unpack((uint8_t) t, b, sizeof(b), NULL);
                if (is_known) {
                        known++;
                        assert_int_not_equal(r, -ENOMSG);
                        assert_string_not_equal(mnp_msg_type_name((uint8_t) t), "unknown");
                } else {
                        assert_int_equal(r, -ENOMSG);
                        assert_int_equal(mnp_msg_pack(&m, b, sizeof(b)), -ENOMSG);
                        assert_int_equal(mnp_msg_encode(&m, 0, b, sizeof(b)), -ENOMSG);
                        assert_string_equal(mnp_msg_type_name((uint8_t) t), "unknown");
                }
        }
        assert_int_equal(known, ELEMENTSOF(all_types));
}

static void test_reliable_ranges(void **state) {
        for (unsigned t = 0; t < 256; t++) {
                bool want = (t >= 0x10 && t <= 0x1F) || (t >= 0x21 && t <= 0x2F);

                assert_int_equal(mnp_msg_type_is_reliable((uint8_t) t), want);
        }
        assert_false(mnp_msg_type_is_reliable(MNP_MSG_HELLO));
        assert_false(mnp_msg_type_is_reliable(MNP_MSG_HELLO_REPLY));
        assert_false(mnp_msg_type_is_reliable(MNP_MSG_ACK));
        assert_false(mnp_msg_type_is_reliable(MNP_MSG_NAK));
        assert_false(mnp_msg_type_is_reliable(MNP_MSG_HEARTBEAT));
        assert_false(mnp_msg_type_is_reliable(MNP_MSG_STATUS));
        assert_true(mnp_msg_type_is_reliable(MNP_MSG_STOP));
        assert_true(mnp_msg_type_is_reliable(MNP_MSG_FAULT));
        assert_true(mnp_msg_type_is_reliable(MNP_MSG_CARTRIDGE));
}

/* ---- pack errors ---- */

static void test_pack_nobufs(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(goldens); i++) {
                const struct mnp_msg *g = &goldens[i].msg;
                uint8_t buf[MNP_MAX_PAYLOAD], canary[MNP_MAX_PAYLOAD];
                ssize_t n;

                n = mnp_msg_pack(g, buf, sizeof(buf));
                assert_true(n >= 0);
                for (ssize_t size = 0; size < n; size++) {
                        memset(canary, 0x5A, sizeof(canary));
                        assert_int_equal(mnp_msg_pack(g, canary, (size_t) size), -ENOBUFS);
                        for (size_t k = 0; k < sizeof(canary); k++)
                                assert_int_equal(canary[k], 0x5A);
                }
                assert_int_equal(mnp_msg_pack(g, buf, (size_t) n), n);

                /* Encode: every short wire buffer too. */
                {
                        uint8_t wire[MNP_MAX_WIRE_FRAME];
                        ssize_t w = mnp_msg_encode(g, 0x1234, wire, sizeof(wire));

                        assert_true(w > 0);
                        assert_int_equal(w, n + MNP_HEADER_SIZE + MNP_CRC_SIZE + 3);
                        for (ssize_t size = 0; size < w; size++)
                                assert_int_equal(mnp_msg_encode(g, 0x1234, wire, (size_t) size), -ENOBUFS);
                }
        }
}

static void expect_pack_einval(const struct mnp_msg *m) {
        uint8_t b[MNP_MAX_PAYLOAD], w[MNP_MAX_WIRE_FRAME];

        assert_int_equal(mnp_msg_pack(m, b, sizeof(b)), -EINVAL);
        /* -EINVAL comes before -ENOBUFS. */
        assert_int_equal(mnp_msg_pack(m, b, 0), -EINVAL);
        assert_int_equal(mnp_msg_encode(m, 1, w, sizeof(w)), -EINVAL);
}

static void test_pack_einval(void **state) {
        struct mnp_msg m;

        m = *golden_of_type(MNP_MSG_HELLO);
        m.hello.min_version = 0; expect_pack_einval(&m);
        m.hello.min_version = 2; m.hello.max_version = 1; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO);
        m.hello.heartbeat_ms = 0; expect_pack_einval(&m);

        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.version = 0; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.depth_step_um = 0; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.depth_min_um = m.hello_reply.depth_max_um + 1; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.speed_min_hz = (uint16_t) (m.hello_reply.speed_max_hz + 1); expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.max_lease_ms = 0; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        memset(m.hello_reply.model, 'M', sizeof(m.hello_reply.model));   /* no NUL: too long */
        expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.serial[1] = '\n'; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_HELLO_REPLY);
        m.hello_reply.firmware[0] = (char) 0xC3; expect_pack_einval(&m);

        m = *golden_of_type(MNP_MSG_NAK);
        m.nak.reason = 0; expect_pack_einval(&m);
        m.nak.reason = MNP_NAK_MAX + 1; expect_pack_einval(&m);

        m = *golden_of_type(MNP_MSG_START);
        m.start.lease_ms = 0; expect_pack_einval(&m);

        m = *golden_of_type(MNP_MSG_STATUS);
        m.status.state = MNP_STATE_FAULT + 1; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_STATUS);
        m.status.battery_percent = 101; expect_pack_einval(&m);
        m.status.battery_percent = 254; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_STATUS);
        m.status.cartridge_id[2] = 0x7F; expect_pack_einval(&m);
        m = *golden_of_type(MNP_MSG_STATUS);
        memset(m.status.cartridge_id, 'c', sizeof(m.status.cartridge_id));
        expect_pack_einval(&m);

        m = *golden_of_type(MNP_MSG_FAULT);
        m.fault.code = 0; expect_pack_einval(&m);
        m.fault.code = MNP_FAULT_MAX + 1; expect_pack_einval(&m);

        m = (struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 2, .id = "A" } };
        expect_pack_einval(&m);
        m = (struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 1, .id = "" } };
        expect_pack_einval(&m);
        m = (struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 0, .id = "A" } };
        expect_pack_einval(&m);
        m = (struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 1, .id = "A\tB" } };
        expect_pack_einval(&m);

        /* No message at all. */
        {
                uint8_t b[8];
                assert_int_equal(mnp_msg_pack(NULL, b, sizeof(b)), -EINVAL);
        }
}

/* ---- names ---- */

static void test_names(void **state) {
        static const struct { uint8_t type; const char *name; } types[] = {
                { MNP_MSG_HELLO, "hello" }, { MNP_MSG_HELLO_REPLY, "hello-reply" },
                { MNP_MSG_ACK, "ack" }, { MNP_MSG_NAK, "nak" }, { MNP_MSG_HEARTBEAT, "heartbeat" },
                { MNP_MSG_SET_DEPTH, "set-depth" }, { MNP_MSG_SET_SPEED, "set-speed" },
                { MNP_MSG_START, "start" }, { MNP_MSG_STOP, "stop" },
                { MNP_MSG_CLEAR_FAULT, "clear-fault" }, { MNP_MSG_STATUS, "status" },
                { MNP_MSG_FAULT, "fault" }, { MNP_MSG_CARTRIDGE, "cartridge" },
        };
        static const char *const states[] = { "booting", "idle", "running", "fault" };
        static const char *const faults[] = {
                "none", "motor", "overheat", "lease-expired", "host-lost", "actuator",
                "battery-low", "cartridge-removed", "internal",
        };
        static const char *const naks[] = {
                "unknown", "malformed", "unknown-type", "out-of-range", "off-step", "bad-state",
                "no-cartridge", "fault-active", "unsupported-version", "not-ready",
        };

        for (size_t i = 0; i < ELEMENTSOF(types); i++)
                assert_string_equal(mnp_msg_type_name(types[i].type), types[i].name);
        assert_string_equal(mnp_msg_type_name(0), "unknown");
        assert_string_equal(mnp_msg_type_name(0xFF), "unknown");

        for (size_t i = 0; i < ELEMENTSOF(states); i++)
                assert_string_equal(mnp_state_name((uint8_t) i), states[i]);
        assert_string_equal(mnp_state_name(4), "unknown");
        assert_string_equal(mnp_state_name(255), "unknown");

        assert_int_equal(ELEMENTSOF(faults), MNP_FAULT_MAX + 1);
        for (size_t i = 0; i < ELEMENTSOF(faults); i++)
                assert_string_equal(mnp_fault_name((uint8_t) i), faults[i]);
        assert_string_equal(mnp_fault_name(MNP_FAULT_MAX + 1), "unknown");
        assert_string_equal(mnp_fault_name(255), "unknown");

        assert_int_equal(ELEMENTSOF(naks), MNP_NAK_MAX + 1);
        for (size_t i = 0; i < ELEMENTSOF(naks); i++)
                assert_string_equal(mnp_nak_reason_name((uint8_t) i), naks[i]);
        assert_string_equal(mnp_nak_reason_name(MNP_NAK_MAX + 1), "unknown");
        assert_string_equal(mnp_nak_reason_name(255), "unknown");
}

static void test_fault_flags(void **state) {
        assert_int_equal(MNP_FAULT_FLAG(MNP_FAULT_MOTOR), 0x01);
        assert_int_equal(MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED), 0x04);
        assert_int_equal(MNP_FAULT_FLAG(MNP_FAULT_INTERNAL), 0x80);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_golden_vectors),
                cmocka_unit_test(test_round_trip_goldens),
                cmocka_unit_test(test_round_trip_boundaries),
                cmocka_unit_test(test_too_short),
                cmocka_unit_test(test_out_of_domain_unpack),
                cmocka_unit_test(test_bad_strings_unpack),
                cmocka_unit_test(test_unknown_types),
                cmocka_unit_test(test_reliable_ranges),
                cmocka_unit_test(test_pack_nobufs),
                cmocka_unit_test(test_pack_einval),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_fault_flags),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
