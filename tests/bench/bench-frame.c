/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * bench-frame: framing throughput, with baselines measured in the same run on the same buffer.
 *
 * Decoding: a stream of frames with 20-60 byte payloads (random bytes, about one in eight a
 * zero, like the little-endian integers of real messages) and injected noise, fed to
 * mnp_decoder_feed() in 512-byte chunks.
 *
 * Noise: exactly 10% of the frames, chosen at random, get one noise event each, one of three
 * kinds with equal odds:
 *   burst inside   1-16 random bytes (any value, 0x00 included) inserted at a random point
 *                  strictly between the frame's two delimiters
 *   flips          1-3 random bytes of the frame's wire form, delimiters included, XORed with a
 *                  random non-zero value
 *   burst between  1-16 random bytes inserted just before the frame's leading delimiter, that
 *                  is between two frames
 * The first two kinds hit the frame: it may be lost.  A burst between frames hits none, so that
 * frame must still decode.  "Frames lost beyond noise" counts frames that no noise hit and that
 * did not come out of the decoder intact and in order; it must be 0, and it is the only figure
 * that makes this program fail.  Speed targets are reported, never enforced.
 *
 * Encoding: frames with an 8-byte payload, written back to back into one buffer.
 *
 * Every figure is the best of several runs (CLOCK_MONOTONIC).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mnp/crc32c-internal.h>
#include <mnp/frame.h>

#define CHUNK 512
#define NOISE_PERCENT 10
#define DECODE_TARGET_MBS 1000.0
#define ENCODE_TARGET_FPS 30e6

enum noise {
        NOISE_NONE,
        NOISE_BURST_INSIDE,
        NOISE_FLIPS,
        NOISE_BURST_BETWEEN,
        _NOISE_MAX,
};

struct stream {
        uint8_t *data;
        size_t len, size;
        size_t n_frames;
        uint8_t *noise;                 /* enum noise, per frame */
        size_t noise_count[_NOISE_MAX];
        size_t hit;                     /* frames a burst inside or flips hit */
};

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t rng64(uint64_t *s) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * 0x2545F4914F6CDD1DULL;
}

static uint32_t rng(void) {
        return (uint32_t) (rng64(&rng_state) >> 32);
}

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void *xmalloc(size_t n) {
        void *p = malloc(n);

        if (!p) {
                fprintf(stderr, "Out of memory.\n");
                exit(EXIT_FAILURE);
        }
        return p;
}

/* The frame with index i, the same every time it is asked for: the first four payload bytes
 * are i (LE), the rest pseudo-random with about one byte in eight a zero. */
static void frame_content(size_t i, uint8_t *ret_type, uint16_t *ret_seq, uint8_t *payload, size_t *ret_len) {
        uint64_t s = 0x9E3779B97F4A7C15ULL * (i + 1);
        size_t len;

        rng64(&s);
        len = 20 + rng64(&s) % 41;
        for (size_t j = 4; j < len; j++) {
                uint64_t x = rng64(&s);

                payload[j] = (x & 0x700000000ULL) == 0 ? 0 : (uint8_t) (x >> 40);
        }
        payload[0] = (uint8_t) i;
        payload[1] = (uint8_t) (i >> 8);
        payload[2] = (uint8_t) (i >> 16);
        payload[3] = (uint8_t) (i >> 24);

        *ret_type = (uint8_t) (rng64(&s) >> 56);
        *ret_seq = (uint16_t) i;
        *ret_len = len;
}

static void put_burst(struct stream *s) {
        size_t n = 1 + rng() % 16;

        for (size_t j = 0; j < n; j++)
                s->data[s->len++] = (uint8_t) rng();
}

static void stream_build(struct stream *s, size_t n_frames) {
        size_t *order;

        *s = (struct stream) {
                .n_frames = n_frames,
                .size = n_frames * (MNP_MAX_WIRE_FRAME + 16),
        };
        s->data = xmalloc(s->size);
        s->noise = xmalloc(n_frames);
        memset(s->noise, NOISE_NONE, n_frames);

        /* Pick exactly 10% of the frames: the first tenth of a shuffled index. */
        order = xmalloc(n_frames * sizeof(size_t));
        for (size_t i = 0; i < n_frames; i++)
                order[i] = i;
        for (size_t i = n_frames - 1; i > 0; i--) {
                size_t j = rng() % (i + 1), t = order[i];

                order[i] = order[j];
                order[j] = t;
        }
        for (size_t i = 0; i < n_frames * NOISE_PERCENT / 100; i++)
                s->noise[order[i]] = (uint8_t) (NOISE_BURST_INSIDE + rng() % 3);
        free(order);

        for (size_t i = 0; i < n_frames; i++) {
                uint8_t wire[MNP_MAX_WIRE_FRAME], payload[MNP_MAX_PAYLOAD], type;
                uint16_t seq;
                size_t plen, at;
                ssize_t w;

                frame_content(i, &type, &seq, payload, &plen);
                w = mnp_frame_encode(type, seq, payload, plen, wire, sizeof(wire));
                if (w < 0) {
                        fprintf(stderr, "mnp_frame_encode() failed: %s\n", strerror((int) -w));
                        exit(EXIT_FAILURE);
                }

                s->noise_count[s->noise[i]]++;
                switch (s->noise[i]) {

                case NOISE_BURST_INSIDE:
                        at = 1 + rng() % (size_t) (w - 1);
                        memcpy(s->data + s->len, wire, at);
                        s->len += at;
                        put_burst(s);
                        memcpy(s->data + s->len, wire + at, (size_t) w - at);
                        s->len += (size_t) w - at;
                        s->hit++;
                        break;

                case NOISE_FLIPS:
                        for (size_t k = 1 + rng() % 3; k > 0; k--)
                                wire[rng() % (size_t) w] ^= (uint8_t) (1 + rng() % 255);
                        memcpy(s->data + s->len, wire, (size_t) w);
                        s->len += (size_t) w;
                        s->hit++;
                        break;

                case NOISE_BURST_BETWEEN:
                        put_burst(s);
                        __attribute__((fallthrough));
                default:
                        memcpy(s->data + s->len, wire, (size_t) w);
                        s->len += (size_t) w;
                }
        }
}

/* The timed loop: what a caller reading a serial port would write. */
static size_t decode_fast(const uint8_t *data, size_t len, uint64_t *ret_sum) {
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t frames = 0;
        uint64_t sum = 0;

        mnp_decoder_init(&d);
        for (size_t pos = 0; pos < len; pos += CHUNK) {
                size_t c = len - pos < CHUNK ? len - pos : CHUNK;

                for (size_t off = 0, consumed; off < c; off += consumed)
                        if (mnp_decoder_feed(&d, data + pos + off, c - off, &consumed, &f) == 1) {
                                frames++;
                                sum += f.seq + f.payload_len;
                        }
        }
        *ret_sum = sum;
        return frames;
}

/* The naive reference: one byte at a time through a COBS state machine into a frame buffer,
 * then a byte-at-a-time table CRC. */
static uint32_t naive_crc_table[256];

static void naive_crc_init(void) {
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;

                for (int b = 0; b < 8; b++)
                        c = (c >> 1) ^ (c & 1 ? 0x82F63B78u : 0);
                naive_crc_table[i] = c;
        }
}

static size_t decode_naive(const uint8_t *data, size_t len, uint64_t *ret_sum) {
        uint8_t raw[MNP_MAX_RAW_FRAME];
        size_t raw_len = 0, cobs_len = 0, frames = 0;
        unsigned code = 0, left = 0;
        bool bad = false;
        uint64_t sum = 0;

        for (size_t i = 0; i < len; i++) {
                uint8_t b = data[i];

                if (b == 0) {
                        if (cobs_len > 0 && !bad && left == 0 && raw_len >= MNP_MIN_RAW_FRAME) {
                                uint32_t crc = 0xFFFFFFFF, stored;
                                size_t body = raw_len - MNP_CRC_SIZE;

                                for (size_t j = 0; j < body; j++)
                                        crc = naive_crc_table[(crc ^ raw[j]) & 0xFF] ^ (crc >> 8);
                                stored = raw[body] | raw[body + 1] << 8 | raw[body + 2] << 16 |
                                         (uint32_t) raw[body + 3] << 24;
                                if (~crc == stored && raw[0] == MNP_FRAME_VERSION) {
                                        frames++;
                                        sum += (uint16_t) (raw[2] | raw[3] << 8) + body - MNP_HEADER_SIZE;
                                }
                        }
                        raw_len = cobs_len = 0;
                        code = left = 0;
                        bad = false;
                        continue;
                }

                if (bad)
                        continue;
                if (++cobs_len > MNP_MAX_COBS_FRAME) {
                        bad = true;
                        continue;
                }
                if (left == 0) {
                        /* A code byte: the block before it stood for a zero, unless it was full. */
                        if (cobs_len > 1 && code != 0xFF) {
                                if (raw_len >= sizeof(raw)) {
                                        bad = true;
                                        continue;
                                }
                                raw[raw_len++] = 0;
                        }
                        code = b;
                        left = b - 1u;
                } else {
                        if (raw_len >= sizeof(raw)) {
                                bad = true;
                                continue;
                        }
                        raw[raw_len++] = b;
                        left--;
                }
        }
        *ret_sum = sum;
        return frames;
}

/* Untimed: checks every decoded frame against what was sent, in order. */
static bool verify(const struct stream *s, size_t *ret_decoded, size_t *ret_decoded_hit,
                   size_t *ret_lost, size_t *ret_wrong, size_t *ret_errors) {
        struct mnp_decoder d;
        struct mnp_frame f;
        size_t next = 0, decoded = 0, decoded_hit = 0, lost = 0, wrong = 0, errors = 0;

        mnp_decoder_init(&d);
        for (size_t pos = 0; pos < s->len; pos += CHUNK) {
                size_t c = s->len - pos < CHUNK ? s->len - pos : CHUNK;

                for (size_t off = 0, consumed; off < c; off += consumed) {
                        uint8_t payload[MNP_MAX_PAYLOAD], type;
                        uint16_t seq;
                        size_t i, plen;
                        int r;

                        r = mnp_decoder_feed(&d, s->data + pos + off, c - off, &consumed, &f);
                        if (r < 0)
                                errors++;
                        if (r != 1)
                                continue;

                        if (f.payload_len < 4) {
                                wrong++;
                                continue;
                        }
                        i = f.payload[0] | f.payload[1] << 8 | f.payload[2] << 16 | (size_t) f.payload[3] << 24;
                        if (i < next || i >= s->n_frames) {
                                wrong++;
                                continue;
                        }
                        frame_content(i, &type, &seq, payload, &plen);
                        if (f.type != type || f.seq != seq || f.payload_len != plen ||
                            memcmp(f.payload, payload, plen) != 0) {
                                wrong++;
                                continue;
                        }

                        /* Frames skipped over: lost, and it counts against us unless noise hit them. */
                        for (; next < i; next++)
                                if (s->noise[next] != NOISE_BURST_INSIDE && s->noise[next] != NOISE_FLIPS)
                                        lost++;
                        if (s->noise[i] == NOISE_BURST_INSIDE || s->noise[i] == NOISE_FLIPS)
                                decoded_hit++;
                        decoded++;
                        next = i + 1;
                }
        }
        for (; next < s->n_frames; next++)
                if (s->noise[next] != NOISE_BURST_INSIDE && s->noise[next] != NOISE_FLIPS)
                        lost++;

        *ret_decoded = decoded;
        *ret_decoded_hit = decoded_hit;
        *ret_lost = lost;
        *ret_wrong = wrong;
        *ret_errors = errors;
        return lost == 0 && wrong == 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Best and median of the runs' times, in seconds. */
struct timing {
        double best, median;
};

static struct timing timing_of(uint64_t *ns, unsigned runs) {
        qsort(ns, runs, sizeof(uint64_t), cmp_u64);
        return (struct timing) { ns[0] / 1e9, ns[runs / 2] / 1e9 };
}

static void print_row(const char *name, double bytes, double frames, struct timing t, double ref_mbs) {
        double mbs = bytes / t.best / 1e6;

        printf("  %-30s %10.1f", name, mbs);
        if (frames > 0)
                printf(" %10.1f", frames / t.best / 1e6);
        else
                printf(" %10s", "-");
        printf(" %10.1f", bytes / t.median / 1e6);
        if (ref_mbs > 0)
                printf(" %9.2fx", mbs / ref_mbs);
        printf("\n");
}

static const char *yes_no(bool b) {
        return b ? "yes" : "no";
}

int main(int argc, char *argv[]) {
        size_t n_frames = 1000000, n_encode = 1000000;
        unsigned runs = 7;
        struct stream s;
        uint64_t ns[16], sum_fast = 0, sum_naive = 0;
        size_t frames_fast = 0, frames_naive = 0, decoded, decoded_hit, lost, wrong, errors;
        struct timing t_fast, t_naive, t_memcpy, t_crc_hw, t_crc_sw, t_enc;
        uint8_t *copy, *enc;
        size_t enc_bytes = 0;
        uint32_t crc_sink = 0;
        bool ok;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--quick") == 0) {
                        n_frames = 100000;
                        n_encode = 200000;
                        runs = 3;
                } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        printf("%s [--quick]\n\nMeasures libmnp framing throughput.\n"
                               "Exits non-zero only if frames are lost beyond those noise hit.\n", argv[0]);
                        return EXIT_SUCCESS;
                } else {
                        fprintf(stderr, "Unknown argument: %s (try --help)\n", argv[i]);
                        return EXIT_FAILURE;
                }
        }

        naive_crc_init();
        stream_build(&s, n_frames);
        copy = xmalloc(s.len);

        ok = verify(&s, &decoded, &decoded_hit, &lost, &wrong, &errors);

        /* Decoding, the naive reference and memcpy, interleaved so that they share conditions. */
        uint64_t ns_fast[16], ns_naive[16], ns_memcpy[16], ns_hw[16], ns_sw[16];
        for (unsigned r = 0; r < runs; r++) {
                uint64_t t0;

                t0 = now_ns();
                frames_fast = decode_fast(s.data, s.len, &sum_fast);
                ns_fast[r] = now_ns() - t0;

                t0 = now_ns();
                frames_naive = decode_naive(s.data, s.len, &sum_naive);
                ns_naive[r] = now_ns() - t0;

                t0 = now_ns();
                memcpy(copy, s.data, s.len);
                ns_memcpy[r] = now_ns() - t0;
                crc_sink ^= copy[r % s.len];

                t0 = now_ns();
                crc_sink ^= mnp_crc32c(0, s.data, s.len);
                ns_hw[r] = now_ns() - t0;

                t0 = now_ns();
                crc_sink ^= mnp_crc32c_sw(0, s.data, s.len);
                ns_sw[r] = now_ns() - t0;
        }
        t_fast = timing_of(ns_fast, runs);
        t_naive = timing_of(ns_naive, runs);
        t_memcpy = timing_of(ns_memcpy, runs);
        t_crc_hw = timing_of(ns_hw, runs);
        t_crc_sw = timing_of(ns_sw, runs);

        /* Encoding: 8-byte payloads, back to back. */
        enc = xmalloc(n_encode * (8 + 11));
        for (unsigned r = 0; r < runs; r++) {
                static const uint8_t payloads[4][8] = {
                        { 0x01, 0x00, 0x20, 0x03, 0x00, 0x00, 0x10, 0x27 },
                        { 0xFF, 0xFF, 0x00, 0x00, 0x7F, 0x80, 0x01, 0x00 },
                        { 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0 },
                        { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00 },
                };
                uint8_t *p = enc, *end = enc + n_encode * (8 + 11);
                uint64_t t0 = now_ns();

                for (size_t i = 0; i < n_encode; i++) {
                        ssize_t w = mnp_frame_encode((uint8_t) (i >> 3), (uint16_t) i, payloads[i & 3], 8,
                                                     p, (size_t) (end - p));
                        if (w < 0) {
                                fprintf(stderr, "mnp_frame_encode() failed: %s\n", strerror((int) -w));
                                return EXIT_FAILURE;
                        }
                        p += w;
                }
                ns[r] = now_ns() - t0;
                enc_bytes = (size_t) (p - enc);
        }
        t_enc = timing_of(ns, runs);

        printf("libmnp framing benchmark: %zu frames, %d-byte chunks, best of %u runs (median in its own column)\n",
               n_frames, CHUNK, runs);
        printf("CRC-32C path: %s\n\n", mnp_crc32c_hw_available() ? "SSE4.2" : "software (slicing-by-8)");

        printf("Stream (payloads 20-60 bytes; noise: see the top of bench-frame.c)\n");
        printf("  %-30s %10zu\n", "frames sent", s.n_frames);
        printf("  %-30s %10.2f MB\n", "stream size", s.len / 1e6);
        printf("  %-30s %10zu  (%d%% of frames)\n", "noise events",
               s.n_frames - s.noise_count[NOISE_NONE], NOISE_PERCENT);
        printf("  %-30s %10zu\n", "  burst inside a frame", s.noise_count[NOISE_BURST_INSIDE]);
        printf("  %-30s %10zu\n", "  1-3 bytes flipped", s.noise_count[NOISE_FLIPS]);
        printf("  %-30s %10zu\n", "  burst between frames", s.noise_count[NOISE_BURST_BETWEEN]);
        printf("  %-30s %10zu\n", "frames hit by noise", s.hit);
        printf("  %-30s %10zu\n", "frames decoded", decoded);
        printf("  %-30s %10zu\n", "  of them hit by noise", decoded_hit);
        printf("  %-30s %10zu\n", "errors reported", errors);
        printf("  %-30s %10zu\n", "frames decoded wrongly", wrong);
        printf("  %-30s %10zu  %s\n", "frames lost beyond noise", lost, lost == 0 ? "OK" : "FAIL");
        if (frames_fast != decoded || frames_naive != decoded) {
                printf("  decoders disagree: timed %zu, naive %zu, checked %zu  FAIL\n",
                       frames_fast, frames_naive, decoded);
                ok = false;
        }

        printf("\n%-32s %10s %10s %10s %10s\n", "Decode", "MB/s", "M frames/s", "MB/s med.", "vs naive");
        print_row("mnp_decoder_feed", (double) s.len, (double) frames_fast, t_fast, s.len / t_naive.best / 1e6);
        print_row("naive byte-at-a-time", (double) s.len, (double) frames_naive, t_naive, s.len / t_naive.best / 1e6);
        print_row("memcpy of the stream", (double) s.len, 0, t_memcpy, s.len / t_naive.best / 1e6);
        print_row("CRC-32C, SSE4.2 if available", (double) s.len, 0, t_crc_hw, s.len / t_naive.best / 1e6);
        print_row("CRC-32C, slicing-by-8", (double) s.len, 0, t_crc_sw, s.len / t_naive.best / 1e6);
        printf("  target >= %.0f MB/s met: %s\n", DECODE_TARGET_MBS,
               yes_no(s.len / t_fast.best / 1e6 >= DECODE_TARGET_MBS));

        printf("\n%-32s %10s %10s %10s\n", "Encode (8-byte payload)", "MB/s", "M frames/s", "MB/s med.");
        print_row("mnp_frame_encode", (double) enc_bytes, (double) n_encode, t_enc, 0);
        printf("  target >= %.0f M frames/s met: %s\n", ENCODE_TARGET_FPS / 1e6,
               yes_no(n_encode / t_enc.best >= ENCODE_TARGET_FPS));

        /* Keeps the compiler from dropping work whose result is otherwise unused. */
        if (sum_fast != sum_naive || crc_sink == 0x5EED)
                printf("\n(checksums differ: %" PRIu64 " vs %" PRIu64 ")\n", sum_fast, sum_naive);

        printf("\nResult: %s\n", ok ? "OK (no frame lost beyond noise)" : "FAIL");

        free(enc);
        free(copy);
        free(s.data);
        free(s.noise);
        return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
