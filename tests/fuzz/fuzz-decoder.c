/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzzes the stream decoder.
 *
 * Input: the first 8 bytes are chunk sizes (byte + 1, used in turn); the rest is the stream.
 * The stream is fed in those chunks, and also in one piece to a second decoder, and checks:
 *   - *ret_consumed <= len, all of it when 0 is returned, at least one byte otherwise, and
 *     the last byte consumed on a non-zero return is the delimiter;
 *   - both decoders return the same results at the same stream offsets: chunking changes
 *     nothing;
 *   - a good frame has the right version and payload_len <= MNP_MAX_PAYLOAD, re-encodes to a
 *     frame of the expected length, and that decodes to the same frame;
 *   - the stats add up to the results seen.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mnp/frame.h>

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static bool frames_equal(const struct mnp_frame *a, const struct mnp_frame *b) {
        return a->version == b->version && a->type == b->type && a->seq == b->seq &&
               a->payload_len == b->payload_len &&
               memcmp(a->payload, b->payload, a->payload_len) == 0;
}

static void check_frame(const struct mnp_frame *f) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        struct mnp_decoder d;
        struct mnp_frame g;
        size_t consumed;
        ssize_t n;

        CHECK(f->version == MNP_FRAME_VERSION);
        CHECK(f->payload_len <= MNP_MAX_PAYLOAD);

        n = mnp_frame_encode(f->type, f->seq, f->payload, f->payload_len, wire, sizeof(wire));
        CHECK(n == (ssize_t) f->payload_len + MNP_MIN_RAW_FRAME + 3);

        mnp_decoder_init(&d);
        CHECK(mnp_decoder_feed(&d, wire, (size_t) n, &consumed, &g) == 1);
        CHECK(consumed == (size_t) n);
        CHECK(frames_equal(f, &g));
}

static int check_result(int r, const uint8_t *data, size_t len, size_t consumed) {
        CHECK(consumed <= len);
        switch (r) {
        case 0:
                CHECK(consumed == len);
                break;
        case 1:
        case -EBADMSG:
        case -EILSEQ:
        case -EMSGSIZE:
        case -EPROTO:
        case -EPROTONOSUPPORT:
                CHECK(consumed >= 1);
                CHECK(data[consumed - 1] == 0);
                break;
        default:
                abort();
        }
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct mnp_decoder chunked, whole;
        const uint8_t *stream;
        uint8_t sizes[8];
        size_t len, pos = 0, whole_pos = 0, results = 0;
        unsigned k = 0;

        if (size < sizeof(sizes))
                return 0;
        memcpy(sizes, data, sizeof(sizes));
        stream = data + sizeof(sizes);
        len = size - sizeof(sizes);

        mnp_decoder_init(&chunked);
        mnp_decoder_init(&whole);

        while (pos < len) {
                size_t c = (size_t) sizes[k++ % sizeof(sizes)] + 1, off = 0;

                if (c > len - pos)
                        c = len - pos;

                while (off < c) {
                        struct mnp_frame f, g;
                        size_t consumed, whole_consumed;
                        int r, s;

                        r = check_result(mnp_decoder_feed(&chunked, stream + pos + off, c - off, &consumed, &f),
                                         stream + pos + off, c - off, consumed);
                        off += consumed;
                        if (r == 0)
                                continue;
                        results++;

                        /* The decoder fed all that is left in one piece ends at the same place. */
                        s = check_result(mnp_decoder_feed(&whole, stream + whole_pos, len - whole_pos,
                                                          &whole_consumed, &g),
                                         stream + whole_pos, len - whole_pos, whole_consumed);
                        whole_pos += whole_consumed;
                        CHECK(s == r);
                        CHECK(whole_pos == pos + off);

                        if (r == 1) {
                                check_frame(&f);
                                CHECK(frames_equal(&f, &g));
                        }
                }
                pos += c;
        }

        /* Nothing left for the other decoder either. */
        if (whole_pos < len) {
                struct mnp_frame g;
                size_t whole_consumed;

                CHECK(mnp_decoder_feed(&whole, stream + whole_pos, len - whole_pos, &whole_consumed, &g) == 0);
        }

        CHECK(chunked.stats.frames + chunked.stats.bad_crc + chunked.stats.bad_cobs +
              chunked.stats.oversize + chunked.stats.runts + chunked.stats.bad_version == results);
        CHECK(memcmp(&chunked.stats, &whole.stats, sizeof(chunked.stats)) == 0);
        return 0;
}
