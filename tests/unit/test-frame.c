/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Framing and CRC-32C: golden vectors, every error path, every split point. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include <mnp/crc32c-internal.h>
#include <mnp/frame-internal.h>
#include <mnp/frame.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* Deterministic xorshift64*, so that a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint32_t rng(void) {
        rng_state ^= rng_state >> 12;
        rng_state ^= rng_state << 25;
        rng_state ^= rng_state >> 27;
        return (uint32_t) ((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}

/* Payload bytes with plenty of zeros and some 0xFF, like real messages. */
static void fill_payload(uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++) {
                uint32_t x = rng();
                p[i] = (x & 0x300) == 0 ? 0 : (x & 0xC00) == 0 ? 0xFF : (uint8_t) x;
        }
}

/* Bit-at-a-time CRC-32C: the reference both real paths must agree with. */
static uint32_t crc32c_ref(uint32_t crc, const void *data, size_t len) {
        const uint8_t *p = data;

        crc = ~crc;
        while (len-- > 0) {
                crc ^= *p++;
                for (int b = 0; b < 8; b++)
                        crc = (crc >> 1) ^ (crc & 1 ? 0x82F63B78u : 0);
        }
        return ~crc;
}

/* ---- CRC-32C ---- */

static void test_crc32c_check_values(void **state) {
        static const struct {
                const char *name;
                uint8_t data[32];
                size_t len;
                uint32_t crc;
        } vectors[] = {
                { "123456789", "123456789", 9, 0xE3069283 },
                /* RFC 3720, B.4 */
                { "32 x 0x00", { 0 }, 32, 0x8A9136AA },
                { "32 x 0xFF", { [0 ... 31] = 0xFF }, 32, 0x62A8AB43 },
                { "0..31", { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                             16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31 },
                  32, 0x46DD794E },
                { "31..0", { 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16,
                             15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0 },
                  32, 0x113FDB5C },
        };

        for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
                print_message("%s\n", vectors[i].name);
                assert_int_equal(mnp_crc32c(0, vectors[i].data, vectors[i].len), vectors[i].crc);
                assert_int_equal(mnp_crc32c_sw(0, vectors[i].data, vectors[i].len), vectors[i].crc);
                assert_int_equal(crc32c_ref(0, vectors[i].data, vectors[i].len), vectors[i].crc);
        }

        /* Nothing in, the running value out, also for a NULL pointer. */
        assert_int_equal(mnp_crc32c(0, NULL, 0), 0);
        assert_int_equal(mnp_crc32c_sw(0x12345678, NULL, 0), 0x12345678);
}

/* Varying one byte of an aligned 8-byte block over all 256 values while the others stay put
 * changes exactly one lookup of the slicing-by-8 step, so this checks every table entry. */
static void test_crc32c_sw_tables(void **state) {
        uint64_t block;
        uint8_t *b = (uint8_t *) &block;

        for (size_t pos = 0; pos < 8; pos++)
                for (unsigned v = 0; v < 256; v++) {
                        memcpy(b, "\x5a\xa5\x3c\xc3\x0f\xf0\x69\x96", 8);
                        b[pos] = (uint8_t) v;
                        assert_int_equal(mnp_crc32c_sw(0, b, 8), crc32c_ref(0, b, 8));
                }
}

static void test_crc32c_paths_agree(void **state) {
        static uint8_t buf[2048 + 16];

        print_message("hardware path %s\n", mnp_crc32c_hw_available() ? "available" : "not available");

        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t) rng();

        for (size_t align = 0; align < 16; align++)
                for (size_t len = 0; len <= 2048; len += len < 300 ? 1 : 37) {
                        uint32_t hw = mnp_crc32c(0, buf + align, len);

                        assert_int_equal(hw, mnp_crc32c_sw(0, buf + align, len));
                        if (len <= 300)
                                assert_int_equal(hw, crc32c_ref(0, buf + align, len));
                }
}

static void test_crc32c_incremental(void **state) {
        uint8_t buf[300];
        uint32_t whole;

        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t) rng();
        whole = crc32c_ref(0, buf, sizeof(buf));

        for (size_t split = 0; split <= sizeof(buf); split++) {
                assert_int_equal(mnp_crc32c(mnp_crc32c(0, buf, split), buf + split, sizeof(buf) - split), whole);
                assert_int_equal(mnp_crc32c_sw(mnp_crc32c_sw(0, buf, split), buf + split, sizeof(buf) - split), whole);
                /* The two paths can be mixed, too. */
                assert_int_equal(mnp_crc32c_sw(mnp_crc32c(0, buf, split), buf + split, sizeof(buf) - split), whole);
        }

        /* Three pieces, odd sizes. */
        assert_int_equal(mnp_crc32c(mnp_crc32c(mnp_crc32c(0, buf, 7), buf + 7, 13), buf + 20, 280), whole);
}

/* ---- COBS on its own ---- */

static void check_cobs_round_trip(const uint8_t *src, size_t n, size_t expect_len) {
        uint8_t enc[1100], dec[1100];
        ssize_t r;

        r = mnp_cobs_encode(src, n, enc, sizeof(enc));
        assert_int_equal(r, expect_len);
        assert_null(memchr(enc, 0, (size_t) r));
        assert_int_equal(mnp_cobs_decode(enc, (size_t) r, dec, sizeof(dec)), n);
        assert_memory_equal(dec, src, n);

        /* Every output size that is too small is refused. */
        for (size_t sz = 0; sz < (size_t) r; sz++)
                assert_int_equal(mnp_cobs_encode(src, n, enc, sz), -ENOBUFS);
        assert_int_equal(mnp_cobs_encode(src, n, enc, (size_t) r), r);
        for (size_t sz = 0; sz < n; sz++)
                assert_int_equal(mnp_cobs_decode(enc, (size_t) r, dec, sz), -ENOBUFS);
}

static void test_cobs_runs(void **state) {
        uint8_t src[1000], enc[1100];

        memset(src, 0x11, sizeof(src));

        /* 253 bytes without a zero: one block, code 0xFE. */
        check_cobs_round_trip(src, 253, 254);
        assert_int_equal(mnp_cobs_encode(src, 253, enc, sizeof(enc)), 254);
        assert_int_equal(enc[0], 0xFE);

        /* 254: one full block, code 0xFF, and no trailing code after it. */
        check_cobs_round_trip(src, 254, 255);
        assert_int_equal(mnp_cobs_encode(src, 254, enc, sizeof(enc)), 255);
        assert_int_equal(enc[0], 0xFF);

        /* 255: a full block, then a block of one byte. */
        check_cobs_round_trip(src, 255, 257);
        assert_int_equal(mnp_cobs_encode(src, 255, enc, sizeof(enc)), 257);
        assert_int_equal(enc[0], 0xFF);
        assert_int_equal(enc[255], 0x02);
        assert_int_equal(enc[256], 0x11);

        /* 508 = two full blocks; 509 one more. */
        check_cobs_round_trip(src, 508, 510);
        check_cobs_round_trip(src, 509, 512);

        /* A full block followed by a zero: the zero gets a block of its own. */
        src[254] = 0;
        check_cobs_round_trip(src, 255, 257);
        assert_int_equal(mnp_cobs_encode(src, 255, enc, sizeof(enc)), 257);
        assert_int_equal(enc[255], 0x01);
        assert_int_equal(enc[256], 0x01);
        src[254] = 0x11;

        /* Zeros only, and nothing. */
        memset(src, 0, 10);
        check_cobs_round_trip(src, 10, 11);
        check_cobs_round_trip(src, 0, 1);

        /* The textbook example. */
        assert_int_equal(mnp_cobs_encode((const uint8_t[]) { 0x11, 0x22, 0x00, 0x33 }, 4, enc, sizeof(enc)), 5);
        assert_memory_equal(enc, ((const uint8_t[]) { 0x03, 0x11, 0x22, 0x02, 0x33 }), 5);

        /* Random data with long zero-free stretches. */
        for (int i = 0; i < 200; i++) {
                size_t n = rng() % sizeof(src);

                for (size_t j = 0; j < n; j++)
                        src[j] = (rng() % 300 == 0) ? 0 : (uint8_t) (rng() | 1);
                check_cobs_round_trip(src, n, (size_t) mnp_cobs_encode(src, n, enc, sizeof(enc)));
        }
}

static void test_cobs_decode_errors(void **state) {
        uint8_t dec[300];

        /* A code byte of 0x00. */
        assert_int_equal(mnp_cobs_decode((const uint8_t[]) { 0x00 }, 1, dec, sizeof(dec)), -EILSEQ);
        assert_int_equal(mnp_cobs_decode((const uint8_t[]) { 0x03, 0x11, 0x22, 0x00, 0x33 }, 5, dec, sizeof(dec)), -EILSEQ);
        /* A code that runs past the end. */
        assert_int_equal(mnp_cobs_decode((const uint8_t[]) { 0x05, 0x11, 0x22 }, 3, dec, sizeof(dec)), -EILSEQ);
        assert_int_equal(mnp_cobs_decode((const uint8_t[]) { 0x02, 0x11, 0x03, 0x22 }, 4, dec, sizeof(dec)), -EILSEQ);
        assert_int_equal(mnp_cobs_decode((const uint8_t[]) { 0xFF, 0x11 }, 2, dec, sizeof(dec)), -EILSEQ);
        /* A code that ends exactly at the end is fine. */
        assert_int_equal(mnp_cobs_decode((const uint8_t[]) { 0x02, 0x11, 0x02, 0x22 }, 4, dec, sizeof(dec)), 3);
        assert_memory_equal(dec, ((const uint8_t[]) { 0x11, 0x00, 0x22 }), 3);
}

/* ---- Encoder ---- */

static void test_encode_vectors(void **state) {
        /* Worked by hand: raw = 01 10 01 00 | CRC 82 04 22 F6 (from the bit-at-a-time CRC),
         * COBS: [01 10 01] then a zero -> code 04; [82 04 22 F6] to the end -> code 05. */
        static const uint8_t expect1[] = {
                0x00, 0x04, 0x01, 0x10, 0x01, 0x05, 0x82, 0x04, 0x22, 0xF6, 0x00,
        };
        /* raw = 01 22 34 12 | 00 AB 00 00 CD | CRC 77 50 85 A2,
         * COBS: [01 22 34 12]0 -> 05; [AB]0 -> 02; []0 -> 01; [CD 77 50 85 A2] -> 06. */
        static const uint8_t payload2[] = { 0x00, 0xAB, 0x00, 0x00, 0xCD };
        static const uint8_t expect2[] = {
                0x00, 0x05, 0x01, 0x22, 0x34, 0x12, 0x02, 0xAB, 0x01, 0x06,
                0xCD, 0x77, 0x50, 0x85, 0xA2, 0x00,
        };
        uint8_t out[MNP_MAX_WIRE_FRAME];

        assert_int_equal(mnp_frame_encode(0x10, 0x0001, NULL, 0, out, sizeof(out)), sizeof(expect1));
        assert_memory_equal(out, expect1, sizeof(expect1));
        assert_int_equal(crc32c_ref(0, (const uint8_t[]) { 0x01, 0x10, 0x01, 0x00 }, 4), 0xF6220482);

        assert_int_equal(mnp_frame_encode(0x22, 0x1234, payload2, sizeof(payload2), out, sizeof(out)), sizeof(expect2));
        assert_memory_equal(out, expect2, sizeof(expect2));
}

/* Checks the shape of a wire frame and returns its raw frame's length. */
static size_t check_wire(const uint8_t *wire, size_t len, uint8_t raw[static MNP_MAX_RAW_FRAME]) {
        ssize_t r;

        assert_true(len >= MNP_MIN_RAW_FRAME + 3 && len <= MNP_MAX_WIRE_FRAME);
        assert_int_equal(wire[0], 0);
        assert_int_equal(wire[len - 1], 0);
        assert_null(memchr(wire + 1, 0, len - 2));
        r = mnp_cobs_decode(wire + 1, len - 2, raw, MNP_MAX_RAW_FRAME);
        assert_int_equal(r, len - 3);
        assert_int_equal(crc32c_ref(0, raw, (size_t) r - 4),
                         raw[r - 4] | raw[r - 3] << 8 | raw[r - 2] << 16 | (uint32_t) raw[r - 1] << 24);
        return (size_t) r;
}

static void test_encode_zero_payload(void **state) {
        uint8_t payload[64] = {}, out[MNP_MAX_WIRE_FRAME], raw[MNP_MAX_RAW_FRAME];
        ssize_t r;

        /* All zeros: every payload byte becomes a code 01. */
        r = mnp_frame_encode(0x00, 0x0000, payload, sizeof(payload), out, sizeof(out));
        assert_int_equal(r, sizeof(payload) + 11);
        assert_int_equal(check_wire(out, (size_t) r, raw), sizeof(payload) + 8);
        assert_memory_equal(raw + 4, payload, sizeof(payload));
        assert_int_equal(raw[0], MNP_FRAME_VERSION);
        assert_int_equal(raw[1], 0);
        assert_int_equal(raw[2], 0);
        assert_int_equal(raw[3], 0);
        /* version 01, then a zero: code 02 01; type and seq: 01 01; then one 01 per payload zero. */
        assert_memory_equal(out, ((const uint8_t[]) { 0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0x01 }), 7);
        for (size_t i = 0; i < sizeof(payload); i++)
                assert_int_equal(out[5 + i], 0x01);

        /* Zeros at the start, at the end and in a row. */
        payload[1] = 0x40;
        payload[2] = 0x41;
        payload[5] = 0x42;
        r = mnp_frame_encode(0x7F, 0xFFFF, payload, 7, out, sizeof(out));
        assert_int_equal(r, 7 + 11);
        assert_int_equal(check_wire(out, (size_t) r, raw), 7 + 8);
        assert_memory_equal(raw + 4, payload, 7);
        assert_int_equal(raw[1], 0x7F);
        assert_int_equal(raw[2], 0xFF);
        assert_int_equal(raw[3], 0xFF);
}

static void test_encode_max_payload(void **state) {
        uint8_t payload[MNP_MAX_PAYLOAD], out[MNP_MAX_WIRE_FRAME], raw[MNP_MAX_RAW_FRAME];
        ssize_t r;

        /* Every byte non-zero, and a CRC without a zero byte: the longest zero-free run a frame
         * can have (208 bytes, one code of 209). */
        memset(payload, 0x5A, sizeof(payload));
        for (unsigned v = 1;; v++) {
                payload[0] = (uint8_t) v;
                r = mnp_frame_encode(0x33, 0x4455, payload, sizeof(payload), out, sizeof(out));
                assert_int_equal(r, MNP_MAX_WIRE_FRAME);
                if (out[1] == MNP_MAX_RAW_FRAME + 1)
                        break;
                assert_true(v < 255);
        }
        assert_int_equal(check_wire(out, (size_t) r, raw), MNP_MAX_RAW_FRAME);
        assert_memory_equal(raw + 4, payload, sizeof(payload));

        /* Random payloads of the maximum length. */
        for (int i = 0; i < 50; i++) {
                fill_payload(payload, sizeof(payload));
                r = mnp_frame_encode((uint8_t) rng(), (uint16_t) rng(), payload, sizeof(payload), out, sizeof(out));
                assert_int_equal(r, MNP_MAX_WIRE_FRAME);
                assert_int_equal(check_wire(out, (size_t) r, raw), MNP_MAX_RAW_FRAME);
                assert_memory_equal(raw + 4, payload, sizeof(payload));
        }
}

static void test_encode_errors(void **state) {
        uint8_t payload[MNP_MAX_PAYLOAD + 1] = {}, out[MNP_MAX_WIRE_FRAME + 16], copy[sizeof(out)];
        static const size_t lens[] = { 0, 1, 8, 57, MNP_MAX_PAYLOAD };

        memset(out, 0xAA, sizeof(out));
        memcpy(copy, out, sizeof(out));

        assert_int_equal(mnp_frame_encode(1, 2, payload, MNP_MAX_PAYLOAD + 1, out, sizeof(out)), -EMSGSIZE);
        assert_int_equal(mnp_frame_encode(1, 2, payload, SIZE_MAX, out, sizeof(out)), -EMSGSIZE);
        assert_int_equal(mnp_frame_encode(1, 2, NULL, 1, out, sizeof(out)), -EINVAL);
        assert_memory_equal(out, copy, sizeof(out));

        /* -ENOBUFS at every size that is too short, and out left untouched. */
        for (size_t i = 0; i < ELEMENTSOF(lens); i++) {
                size_t wire_len = lens[i] + 11;

                fill_payload(payload, lens[i]);
                for (size_t sz = 0; sz < wire_len; sz++) {
                        assert_int_equal(mnp_frame_encode(9, 9, payload, lens[i], out, sz), -ENOBUFS);
                        assert_memory_equal(out, copy, sizeof(out));
                }
                assert_int_equal(mnp_frame_encode(9, 9, payload, lens[i], out, wire_len), wire_len);
                /* Nothing written past the frame. */
                assert_memory_equal(out + wire_len, copy + wire_len, sizeof(out) - wire_len);
                memset(out, 0xAA, sizeof(out));
        }
        assert_int_equal(mnp_frame_encode(9, 9, NULL, 0, NULL, 0), -ENOBUFS);
}

/* ---- Decoder ---- */

/* Feeds data, checks the consumed contract, returns what the decoder returned. */
static int feed(struct mnp_decoder *d, const uint8_t *data, size_t len, size_t *ret_consumed,
                struct mnp_frame *ret_frame) {
        size_t consumed = SIZE_MAX;
        int r;

        r = mnp_decoder_feed(d, data, len, &consumed, ret_frame);
        assert_true(consumed <= len);
        if (r == 0)
                assert_int_equal(consumed, len);
        else {
                /* A frame ended, so input up to and including a delimiter went in. */
                assert_true(consumed >= 1);
                assert_int_equal(data[consumed - 1], 0);
        }
        *ret_consumed = consumed;
        return r;
}

/* Feeds data in chunks of chunk bytes (0: random 1..600) and records every non-zero result and
 * every frame.  Returns the number of results. */
static size_t feed_all(struct mnp_decoder *d, const uint8_t *data, size_t len, size_t chunk,
                       int *results, struct mnp_frame *frames, size_t max) {
        size_t n = 0, pos = 0;

        while (pos < len) {
                size_t c = chunk > 0 ? chunk : 1 + rng() % 600, off = 0;

                if (c > len - pos)
                        c = len - pos;
                while (off < c) {
                        struct mnp_frame f;
                        size_t consumed;
                        int r;

                        memset(&f, 0xEE, sizeof(f));
                        r = feed(d, data + pos + off, c - off, &consumed, &f);
                        off += consumed;
                        if (r != 0) {
                                assert_true(n < max);
                                results[n] = r;
                                if (frames)
                                        frames[n] = f;
                                n++;
                        }
                }
                pos += c;
        }
        return n;
}

static void assert_frame(const struct mnp_frame *f, uint8_t type, uint16_t seq, const void *payload, size_t len) {
        assert_int_equal(f->version, MNP_FRAME_VERSION);
        assert_int_equal(f->type, type);
        assert_int_equal(f->seq, seq);
        assert_int_equal(f->payload_len, len);
        if (len > 0)
                assert_memory_equal(f->payload, payload, len);
}

static const uint8_t wire2[] = {
        0x00, 0x05, 0x01, 0x22, 0x34, 0x12, 0x02, 0xAB, 0x01, 0x06,
        0xCD, 0x77, 0x50, 0x85, 0xA2, 0x00,
};
static const uint8_t payload2[] = { 0x00, 0xAB, 0x00, 0x00, 0xCD };

static void test_decode_vector(void **state) {
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t consumed;

        mnp_decoder_init(&d);
        assert_int_equal(feed(&d, wire2, sizeof(wire2), &consumed, &f), 1);
        assert_int_equal(consumed, sizeof(wire2));
        assert_frame(&f, 0x22, 0x1234, payload2, sizeof(payload2));
        assert_int_equal(d.stats.frames, 1);

        /* Without the leading delimiter, right after init, the frame is still good. */
        mnp_decoder_init(&d);
        assert_int_equal(feed(&d, wire2 + 1, sizeof(wire2) - 1, &consumed, &f), 1);
        assert_int_equal(consumed, sizeof(wire2) - 1);

        /* Nothing in, nothing out. */
        assert_int_equal(feed(&d, NULL, 0, &consumed, &f), 0);
        assert_int_equal(consumed, 0);
}

static void test_decode_init(void **state) {
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t consumed;

        memset(&d, 0x5C, sizeof(d));
        mnp_decoder_init(&d);
        assert_int_equal(d.len, 0);
        assert_false(d.overflow);
        assert_int_equal(d.stats.frames + d.stats.bad_crc + d.stats.bad_cobs + d.stats.oversize +
                         d.stats.runts + d.stats.bad_version, 0);
        assert_int_equal(feed(&d, wire2, sizeof(wire2), &consumed, &f), 1);
}

/* Feeds bad, expecting err for it, then a good frame, expecting it to decode: in one piece and
 * one byte at a time. */
static void check_error_then_good(const uint8_t *bad, size_t bad_len, int err) {
        uint8_t buf[1024];
        int results[8];
        struct mnp_frame frames[8];
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t consumed, n;

        assert_true(bad_len + sizeof(wire2) <= sizeof(buf));
        memcpy(buf, bad, bad_len);
        memcpy(buf + bad_len, wire2, sizeof(wire2));

        /* The bad frame alone, and then followed by more: the decoder has different paths for
         * a frame at the very end of the input and for one with more input behind it. */
        mnp_decoder_init(&d);
        assert_int_equal(feed(&d, bad, bad_len, &consumed, &f), err);
        assert_int_equal(consumed, bad_len);

        /* First call ends at the bad frame's delimiter. */
        mnp_decoder_init(&d);
        memset(&f, 0xEE, sizeof(f));
        assert_int_equal(feed(&d, buf, bad_len + sizeof(wire2), &consumed, &f), err);
        assert_int_equal(consumed, bad_len);
        assert_int_equal(f.version, 0xEE);      /* untouched */
        assert_int_equal(feed(&d, buf + consumed, sizeof(wire2), &consumed, &f), 1);
        assert_int_equal(consumed, sizeof(wire2));
        assert_frame(&f, 0x22, 0x1234, payload2, sizeof(payload2));

        for (size_t chunk = 1; chunk <= 3; chunk++) {
                mnp_decoder_init(&d);
                n = feed_all(&d, buf, bad_len + sizeof(wire2), chunk, results, frames, ELEMENTSOF(results));
                assert_int_equal(n, 2);
                assert_int_equal(results[0], err);
                assert_int_equal(results[1], 1);
                assert_frame(&frames[1], 0x22, 0x1234, payload2, sizeof(payload2));
        }
}

/* Wraps raw bytes into a wire frame, valid COBS or not. */
static size_t wrap(const uint8_t *cobs, size_t n, uint8_t *out) {
        out[0] = 0;
        memcpy(out + 1, cobs, n);
        out[n + 1] = 0;
        return n + 2;
}

static size_t make_raw_wire(const uint8_t *raw, size_t raw_len, uint8_t *out, size_t out_size) {
        ssize_t r;

        assert_true(out_size >= 2);
        r = mnp_cobs_encode(raw, raw_len, out + 1, out_size - 2);
        assert_true(r > 0);
        out[0] = 0;
        out[r + 1] = 0;
        return (size_t) r + 2;
}

static void test_decode_bad_crc(void **state) {
        uint8_t bad[sizeof(wire2)];
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t consumed;

        /* Every single-bit flip of a non-delimiter byte that keeps it non-zero is caught
         * (by the CRC, or as bad COBS when it hits a code byte). */
        for (size_t i = 1; i < sizeof(wire2) - 1; i++)
                for (int b = 0; b < 8; b++) {
                        int r;

                        memcpy(bad, wire2, sizeof(wire2));
                        bad[i] ^= (uint8_t) (1u << b);
                        if (bad[i] == 0)
                                continue;
                        mnp_decoder_init(&d);
                        r = feed(&d, bad, sizeof(bad), &consumed, &f);
                        assert_true(r == -EBADMSG || r == -EILSEQ || r == -EPROTO);
                        assert_int_equal(consumed, sizeof(bad));
                }

        /* A payload byte changed: exactly -EBADMSG. */
        memcpy(bad, wire2, sizeof(wire2));
        bad[7] = 0xAC;
        mnp_decoder_init(&d);
        assert_int_equal(feed(&d, bad, sizeof(bad), &consumed, &f), -EBADMSG);
        assert_int_equal(d.stats.bad_crc, 1);
        assert_int_equal(d.stats.frames, 0);
        check_error_then_good(bad, sizeof(bad), -EBADMSG);

        /* The CRC itself changed. */
        memcpy(bad, wire2, sizeof(wire2));
        bad[14] = 0xA3;
        check_error_then_good(bad, sizeof(bad), -EBADMSG);
}

static void test_decode_bad_cobs(void **state) {
        uint8_t bad[64];
        size_t n;

        /* A code that runs past the end of the frame. */
        n = wrap((const uint8_t[]) { 0x05, 0x11, 0x22 }, 3, bad);
        check_error_then_good(bad, n, -EILSEQ);

        /* The last code one too long, in an otherwise good frame. */
        memcpy(bad, wire2, sizeof(wire2));
        bad[9] = 0x07;
        check_error_then_good(bad, sizeof(wire2), -EILSEQ);

        /* 0xFF always runs past the end of a frame, which is shorter than a full block. */
        n = wrap((const uint8_t[]) { 0xFF, 0x01, 0x22, 0x34, 0x12, 0x11, 0x22, 0x33, 0x44, 0x55 }, 10, bad);
        check_error_then_good(bad, n, -EILSEQ);

        /* A code byte of 0x00 inside a frame: on the wire a 0x00 is always a delimiter, so this
         * shows as a frame cut short and a tail whose first byte, read as a code, runs past the
         * end.  wire2 with its second code (02 at offset 6) zeroed: [05 01 22 34 12] is a good
         * COBS runt of 4 bytes, [AB 01 06 CD 77 50 85 A2] is bad COBS. */
        memcpy(bad, wire2, sizeof(wire2));
        bad[6] = 0x00;
        {
                int results[8];
                struct mnp_decoder d;
                uint8_t buf[64];

                memcpy(buf, bad, sizeof(wire2));
                memcpy(buf + sizeof(wire2), wire2, sizeof(wire2));
                mnp_decoder_init(&d);
                n = feed_all(&d, buf, 2 * sizeof(wire2), 0, results, NULL, ELEMENTSOF(results));
                assert_int_equal(n, 3);
                assert_int_equal(results[0], -EPROTO);
                assert_int_equal(results[1], -EILSEQ);
                assert_int_equal(results[2], 1);
                assert_int_equal(d.stats.bad_cobs, 1);
                assert_int_equal(d.stats.runts, 1);
                assert_int_equal(d.stats.frames, 1);
        }
}

static void test_decode_oversize(void **state) {
        uint8_t bad[MNP_MAX_COBS_FRAME + 100];
        struct mnp_decoder d;
        size_t n;

        /* One byte too long. */
        memset(bad, 0x11, sizeof(bad));
        n = wrap(bad + 1, MNP_MAX_COBS_FRAME + 1, bad);
        check_error_then_good(bad, n, -EMSGSIZE);

        /* Much too long. */
        memset(bad, 0x22, sizeof(bad));
        n = wrap(bad + 1, sizeof(bad) - 2, bad);
        check_error_then_good(bad, n, -EMSGSIZE);
        mnp_decoder_init(&d);
        {
                int results[4];

                /* In pieces that straddle the limit, then one byte at a time. */
                for (size_t chunk = 1; chunk < sizeof(bad); chunk += 50) {
                        mnp_decoder_init(&d);
                        assert_int_equal(feed_all(&d, bad, n, chunk, results, NULL, ELEMENTSOF(results)), 1);
                        assert_int_equal(results[0], -EMSGSIZE);
                        assert_int_equal(d.stats.oversize, 1);
                        assert_int_equal(d.len, 0);
                        assert_false(d.overflow);
                }
        }

        /* Exactly MNP_MAX_COBS_FRAME bytes is not oversize (here it is bad COBS). */
        memset(bad, 0x11, sizeof(bad));
        n = wrap(bad + 1, MNP_MAX_COBS_FRAME, bad);
        check_error_then_good(bad, n, -EILSEQ);
}

static void test_decode_runt(void **state) {
        uint8_t raw[16], bad[32];
        size_t n;

        /* COBS of nothing. */
        n = wrap((const uint8_t[]) { 0x01 }, 1, bad);
        check_error_then_good(bad, n, -EPROTO);

        /* One byte short of header + CRC, and a valid CRC over what there is. */
        raw[0] = MNP_FRAME_VERSION;
        raw[1] = 0x10;
        raw[2] = 0x20;
        {
                uint32_t crc = mnp_crc32c(0, raw, 3);

                raw[3] = (uint8_t) crc;
                raw[4] = (uint8_t) (crc >> 8);
                raw[5] = (uint8_t) (crc >> 16);
                raw[6] = (uint8_t) (crc >> 24);
        }
        n = make_raw_wire(raw, 7, bad, sizeof(bad));
        check_error_then_good(bad, n, -EPROTO);

        /* Eight bytes is long enough to be looked at: here the CRC is wrong. */
        memset(raw, 0x33, 8);
        n = make_raw_wire(raw, 8, bad, sizeof(bad));
        check_error_then_good(bad, n, -EBADMSG);
}

static void test_decode_version(void **state) {
        uint8_t raw[16], bad[32];
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t n, consumed;
        uint32_t crc;

        memcpy(raw, (const uint8_t[]) { MNP_FRAME_VERSION + 1, 0x22, 0x34, 0x12, 0xAA, 0xBB }, 6);
        crc = mnp_crc32c(0, raw, 6);
        for (int i = 0; i < 4; i++)
                raw[6 + i] = (uint8_t) (crc >> (8 * i));
        n = make_raw_wire(raw, 10, bad, sizeof(bad));
        check_error_then_good(bad, n, -EPROTONOSUPPORT);

        mnp_decoder_init(&d);
        assert_int_equal(feed(&d, bad, n, &consumed, &f), -EPROTONOSUPPORT);
        assert_int_equal(d.stats.bad_version, 1);
        assert_int_equal(d.stats.bad_crc, 0);

        /* Version 0 too. */
        raw[0] = 0;
        crc = mnp_crc32c(0, raw, 6);
        for (int i = 0; i < 4; i++)
                raw[6 + i] = (uint8_t) (crc >> (8 * i));
        n = make_raw_wire(raw, 10, bad, sizeof(bad));
        check_error_then_good(bad, n, -EPROTONOSUPPORT);
}

static void test_decode_empty_frames(void **state) {
        uint8_t buf[64] = {};
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t consumed;

        /* Four delimiters, the frame, three more. */
        memcpy(buf + 4, wire2, sizeof(wire2));
        mnp_decoder_init(&d);
        assert_int_equal(feed(&d, buf, 4 + sizeof(wire2) + 3, &consumed, &f), 1);
        assert_int_equal(consumed, 4 + sizeof(wire2));
        assert_int_equal(feed(&d, buf + consumed, 3, &consumed, &f), 0);
        assert_int_equal(consumed, 3);

        /* Only delimiters. */
        assert_int_equal(feed(&d, buf + 40, 20, &consumed, &f), 0);
        assert_int_equal(consumed, 20);
        assert_int_equal(d.stats.frames, 1);
        assert_int_equal(d.stats.bad_crc + d.stats.bad_cobs + d.stats.oversize + d.stats.runts + d.stats.bad_version, 0);
}

/* A stream of frames with known contents. */
struct stream {
        uint8_t wire[64 * 1024];
        size_t len;
        size_t n;
        uint8_t type[256];
        uint16_t seq[256];
        uint8_t payload[256][MNP_MAX_PAYLOAD];
        size_t payload_len[256];
        size_t end[256];        /* offset just past each frame */
};

static void stream_add(struct stream *s, size_t payload_len) {
        ssize_t r;
        size_t i = s->n++;

        assert_true(i < ELEMENTSOF(s->type));
        s->type[i] = (uint8_t) rng();
        s->seq[i] = (uint16_t) rng();
        s->payload_len[i] = payload_len;
        fill_payload(s->payload[i], payload_len);
        r = mnp_frame_encode(s->type[i], s->seq[i], s->payload[i], payload_len,
                             s->wire + s->len, sizeof(s->wire) - s->len);
        assert_true(r > 0);
        s->len += (size_t) r;
        s->end[i] = s->len;
}

static void stream_check(const struct stream *s, const int *results, const struct mnp_frame *frames, size_t n) {
        assert_int_equal(n, s->n);
        for (size_t i = 0; i < n; i++) {
                assert_int_equal(results[i], 1);
                assert_frame(&frames[i], s->type[i], s->seq[i], s->payload[i], s->payload_len[i]);
        }
}

static void test_decode_several_in_chunk(void **state) {
        static struct stream s;
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t pos = 0, consumed;

        s.len = s.n = 0;
        for (size_t i = 0; i < 6; i++)
                stream_add(&s, i * 7);

        /* One call per frame, each consuming exactly that frame. */
        mnp_decoder_init(&d);
        for (size_t i = 0; i < s.n; i++) {
                assert_int_equal(feed(&d, s.wire + pos, s.len - pos, &consumed, &f), 1);
                pos += consumed;
                assert_int_equal(pos, s.end[i]);
                assert_frame(&f, s.type[i], s.seq[i], s.payload[i], s.payload_len[i]);
        }
        assert_int_equal(feed(&d, s.wire + pos, s.len - pos, &consumed, &f), 0);
        assert_int_equal(d.stats.frames, s.n);
}

/* Every split point of a two-frame stream, and one byte at a time. */
static void test_decode_split_everywhere(void **state) {
        static const size_t lens[][2] = { { 0, 0 }, { 5, 40 }, { MNP_MAX_PAYLOAD, 1 }, { 33, MNP_MAX_PAYLOAD } };
        static struct stream s;
        int results[4];
        struct mnp_frame frames[4];

        for (size_t t = 0; t < ELEMENTSOF(lens); t++) {
                struct mnp_decoder d;

                s.len = s.n = 0;
                stream_add(&s, lens[t][0]);
                stream_add(&s, lens[t][1]);

                for (size_t split = 0; split <= s.len; split++) {
                        size_t n;

                        mnp_decoder_init(&d);
                        n = feed_all(&d, s.wire, split, split, results, frames, ELEMENTSOF(results));
                        n += feed_all(&d, s.wire + split, s.len - split, s.len - split,
                                      results + n, frames + n, ELEMENTSOF(results) - n);
                        stream_check(&s, results, frames, n);
                        assert_int_equal(d.len, 0);
                }

                /* One byte at a time: each call consumes exactly one byte, and returns 1 exactly on
                 * the byte that ends a frame. */
                mnp_decoder_init(&d);
                for (size_t pos = 0, i = 0; pos < s.len; pos++) {
                        struct mnp_frame f;
                        size_t consumed;
                        int r;

                        r = feed(&d, s.wire + pos, 1, &consumed, &f);
                        assert_int_equal(consumed, 1);
                        if (pos + 1 == s.end[i]) {
                                assert_int_equal(r, 1);
                                assert_frame(&f, s.type[i], s.seq[i], s.payload[i], s.payload_len[i]);
                                i++;
                        } else
                                assert_int_equal(r, 0);
                }
        }
}

static void test_decode_resync(void **state) {
        static struct stream s;
        static uint8_t buf[sizeof(s.wire) + 64 * 1024];
        static int results[4096];
        static struct mnp_frame frames[4096];
        size_t len = 0;

        /* Good frames with random garbage (zeros included, sometimes a lot) between them. */
        s.len = s.n = 0;
        for (size_t i = 0; i < 100; i++)
                stream_add(&s, rng() % (MNP_MAX_PAYLOAD + 1));

        for (size_t i = 0, from = 0; i < s.n; i++) {
                size_t garbage = rng() % 4 == 0 ? rng() % 700 : rng() % 20;

                for (size_t j = 0; j < garbage; j++)
                        buf[len++] = rng() % 8 == 0 ? 0 : (uint8_t) rng();
                memcpy(buf + len, s.wire + from, s.end[i] - from);
                len += s.end[i] - from;
                from = s.end[i];
        }

        for (size_t chunk = 0; chunk <= 512; chunk += 64) {
                struct mnp_decoder d;
                size_t n, k = 0;

                mnp_decoder_init(&d);
                n = feed_all(&d, buf, len, chunk == 0 ? 1 : chunk, results, frames, ELEMENTSOF(results));
                for (size_t i = 0; i < n; i++) {
                        if (results[i] != 1)
                                continue;
                        assert_true(k < s.n);
                        assert_frame(&frames[i], s.type[k], s.seq[k], s.payload[k], s.payload_len[k]);
                        k++;
                }
                assert_int_equal(k, s.n);
                assert_int_equal(d.stats.frames, s.n);
                assert_int_equal(n, d.stats.frames + d.stats.bad_crc + d.stats.bad_cobs +
                                    d.stats.oversize + d.stats.runts + d.stats.bad_version);
        }
}

static void test_decode_stats(void **state) {
        uint8_t buf[1024], raw[16];
        int results[16];
        struct mnp_decoder d;
        size_t len = 0, n;
        uint32_t crc;

        /* good, bad CRC, bad COBS, oversize, runt, bad version, good, good */
        memcpy(buf + len, wire2, sizeof(wire2));
        len += sizeof(wire2);
        memcpy(buf + len, wire2, sizeof(wire2));
        buf[len + 7] ^= 0x01;
        len += sizeof(wire2);
        len += wrap((const uint8_t[]) { 0x05, 0x11, 0x22 }, 3, buf + len);
        memset(buf + len + 1, 0x77, MNP_MAX_COBS_FRAME + 1);
        len += wrap(buf + len + 1, MNP_MAX_COBS_FRAME + 1, buf + len);
        len += wrap((const uint8_t[]) { 0x03, 0x01, 0x02 }, 3, buf + len);
        memcpy(raw, (const uint8_t[]) { 7, 1, 2, 3 }, 4);
        crc = mnp_crc32c(0, raw, 4);
        for (int i = 0; i < 4; i++)
                raw[4 + i] = (uint8_t) (crc >> (8 * i));
        len += make_raw_wire(raw, 8, buf + len, sizeof(buf) - len);
        memcpy(buf + len, wire2, sizeof(wire2));
        len += sizeof(wire2);
        memcpy(buf + len, wire2, sizeof(wire2));
        len += sizeof(wire2);

        for (size_t chunk = 1; chunk <= len; chunk = chunk * 2 + 1) {
                mnp_decoder_init(&d);
                n = feed_all(&d, buf, len, chunk, results, NULL, ELEMENTSOF(results));
                assert_int_equal(n, 8);
                assert_int_equal(results[0], 1);
                assert_int_equal(results[1], -EBADMSG);
                assert_int_equal(results[2], -EILSEQ);
                assert_int_equal(results[3], -EMSGSIZE);
                assert_int_equal(results[4], -EPROTO);
                assert_int_equal(results[5], -EPROTONOSUPPORT);
                assert_int_equal(results[6], 1);
                assert_int_equal(results[7], 1);
                assert_int_equal(d.stats.frames, 3);
                assert_int_equal(d.stats.bad_crc, 1);
                assert_int_equal(d.stats.bad_cobs, 1);
                assert_int_equal(d.stats.oversize, 1);
                assert_int_equal(d.stats.runts, 1);
                assert_int_equal(d.stats.bad_version, 1);
        }
}

static void test_round_trip_random(void **state) {
        static struct stream s;
        static int results[256];
        static struct mnp_frame frames[256];

        for (int round = 0; round < 20; round++) {
                struct mnp_decoder d;
                size_t n;

                s.len = s.n = 0;
                while (s.n < 200 && s.len + MNP_MAX_WIRE_FRAME <= sizeof(s.wire))
                        stream_add(&s, rng() % 4 == 0 ? MNP_MAX_PAYLOAD - rng() % 3 : rng() % (MNP_MAX_PAYLOAD + 1));

                mnp_decoder_init(&d);
                n = feed_all(&d, s.wire, s.len, round == 0 ? 1 : 0, results, frames, ELEMENTSOF(results));
                stream_check(&s, results, frames, n);
                assert_int_equal(d.stats.frames, s.n);
        }
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_crc32c_check_values),
                cmocka_unit_test(test_crc32c_sw_tables),
                cmocka_unit_test(test_crc32c_paths_agree),
                cmocka_unit_test(test_crc32c_incremental),
                cmocka_unit_test(test_cobs_runs),
                cmocka_unit_test(test_cobs_decode_errors),
                cmocka_unit_test(test_encode_vectors),
                cmocka_unit_test(test_encode_zero_payload),
                cmocka_unit_test(test_encode_max_payload),
                cmocka_unit_test(test_encode_errors),
                cmocka_unit_test(test_decode_vector),
                cmocka_unit_test(test_decode_init),
                cmocka_unit_test(test_decode_bad_crc),
                cmocka_unit_test(test_decode_bad_cobs),
                cmocka_unit_test(test_decode_oversize),
                cmocka_unit_test(test_decode_runt),
                cmocka_unit_test(test_decode_version),
                cmocka_unit_test(test_decode_empty_frames),
                cmocka_unit_test(test_decode_several_in_chunk),
                cmocka_unit_test(test_decode_split_everywhere),
                cmocka_unit_test(test_decode_resync),
                cmocka_unit_test(test_decode_stats),
                cmocka_unit_test(test_round_trip_random),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
