/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Framing: 0x00 | COBS(version | type | seq LE | payload | CRC-32C LE) | 0x00
 *
 * Both delimiters are sent, so a frame that noise has destroyed takes only itself down: the
 * next frame still starts after a 0x00 of its own.  Two delimiters in a row form an empty
 * frame, which the decoder skips.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "frame-internal.h"
#include "frame.h"

/* A raw frame is shorter than one full COBS block, so it never needs a 0xFF code and always
 * encodes to exactly one byte more than its length.  The encoder's length check and the
 * decoder's fast path both rely on this. */
static_assert(MNP_MAX_RAW_FRAME < 254, "raw frames must fit in one COBS block");
static_assert(MNP_MAX_COBS_FRAME == MNP_MAX_RAW_FRAME + 1, "COBS overhead is one byte");

static inline void store_le32(uint8_t *p, uint32_t v) {
        v = htole32(v);
        memcpy(p, &v, sizeof(v));
}

static inline uint32_t load_le32(const uint8_t *p) {
        uint32_t v;

        memcpy(&v, p, sizeof(v));
        return le32toh(v);
}

ssize_t mnp_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_size) {
        size_t code_at = 0, o = 1;
        uint8_t code = 1;

        if (dst_size < 1)
                return -ENOBUFS;

        for (size_t i = 0; i < n; i++) {
                if (src[i] != 0) {
                        if (o >= dst_size)
                                return -ENOBUFS;
                        dst[o++] = src[i];
                        code++;
                        /* A full block: close it, but open a new one only if data follows. */
                        if (code < 0xFF || i + 1 == n)
                                continue;
                }

                dst[code_at] = code;
                if (o >= dst_size)
                        return -ENOBUFS;
                code_at = o++;
                code = 1;
        }
        dst[code_at] = code;

        return (ssize_t) o;
}

ssize_t mnp_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_size) {
        size_t i = 0, o = 0;

        while (i < n) {
                size_t code = src[i], run;

                if (code == 0)
                        return -EILSEQ;
                run = code - 1;
                if (run > n - i - 1)
                        return -EILSEQ;
                if (run > dst_size - o)
                        return -ENOBUFS;
                memcpy(dst + o, src + i + 1, run);
                o += run;
                i += code;

                /* Each block but the last, and but a full one, stands for a zero. */
                if (i < n && code != 0xFF) {
                        if (o >= dst_size)
                                return -ENOBUFS;
                        dst[o++] = 0;
                }
        }

        return (ssize_t) o;
}

ssize_t mnp_frame_encode(uint8_t type, uint16_t seq, const void *payload, size_t payload_len,
                         uint8_t *out, size_t out_size) {
        size_t raw_len, wire_len, last;
        uint8_t *raw;

        if (payload_len > MNP_MAX_PAYLOAD)
                return -EMSGSIZE;
        if (!payload && payload_len > 0)
                return -EINVAL;

        raw_len = MNP_HEADER_SIZE + payload_len + MNP_CRC_SIZE;
        wire_len = 1 + 1 + raw_len + 1;         /* delimiter, COBS code, raw, delimiter */
        if (!out || out_size < wire_len)
                return -ENOBUFS;

        /* Build the raw frame in place, one byte in, behind the slot for the first COBS code. */
        raw = out + 2;
        raw[0] = MNP_FRAME_VERSION;
        raw[1] = type;
        raw[2] = seq & 0xFF;
        raw[3] = seq >> 8;
        if (payload_len > 0)
                memcpy(raw + MNP_HEADER_SIZE, payload, payload_len);
        store_le32(raw + MNP_HEADER_SIZE + payload_len,
                   mnp_crc32c(0, raw, MNP_HEADER_SIZE + payload_len));

        /* COBS in place: each zero (and the code slot before the data) becomes the distance to
         * the next zero, or to the end.  Fewer than 254 bytes, so no block is ever full. */
        last = 1;
        for (size_t i = 2; i < 2 + raw_len; i++)
                if (out[i] == 0) {
                        out[last] = (uint8_t) (i - last);
                        last = i;
                }
        out[last] = (uint8_t) (2 + raw_len - last);

        out[0] = 0;
        out[wire_len - 1] = 0;
        return (ssize_t) wire_len;
}

void mnp_decoder_init(struct mnp_decoder *d) {
        assert(d);

        *d = (struct mnp_decoder) {};
}

/* Room for a whole raw frame, plus the slack that the fast path's 8-byte stores may spill into. */
#define RAW_BUF_SIZE (MNP_MAX_RAW_FRAME + 8)

/* Zeroes the decoded frame's bytes that stand where the COBS codes after the first one are.
 * raw holds src minus its first byte (n - 1 bytes).  As a frame is shorter than a full COBS
 * block, that is all there is to decoding it.  Returns -EILSEQ if the chain of codes does not
 * end exactly at n, or meets a 0x00 code (which the stream, split at each 0x00, never has). */
static int cobs_patch_codes(const uint8_t *src, size_t n, uint8_t *raw) {
        size_t at = 0;

        for (;;) {
                if (src[at] == 0)
                        return -EILSEQ;
                at += src[at];          /* a 0xFF code always runs past a frame this short */
                if (at >= n)
                        break;
                raw[at - 1] = 0;
        }

        return at == n ? 0 : -EILSEQ;
}

/* Checks a COBS-decoded frame of raw_len bytes and, if it is good, fills *ret_frame. */
static int frame_check(struct mnp_decoder *d, const uint8_t *raw, size_t raw_len,
                       struct mnp_frame *ret_frame) {
        size_t body_len, payload_len;

        if (raw_len < MNP_MIN_RAW_FRAME) {
                d->stats.runts++;
                return -EPROTO;
        }

        /* CRC before version: the version byte of a damaged frame tells us nothing. */
        body_len = raw_len - MNP_CRC_SIZE;
        if (mnp_crc32c(0, raw, body_len) != load_le32(raw + body_len)) {
                d->stats.bad_crc++;
                return -EBADMSG;
        }
        if (raw[0] != MNP_FRAME_VERSION) {
                d->stats.bad_version++;
                return -EPROTONOSUPPORT;
        }

        payload_len = body_len - MNP_HEADER_SIZE;
        ret_frame->version = raw[0];
        ret_frame->type = raw[1];
        ret_frame->seq = (uint16_t) (raw[2] | raw[3] << 8);
        ret_frame->payload_len = (uint16_t) payload_len;
        /* Hide the length's bound from the compiler: knowing it, gcc inlines this copy as
         * "rep movsq", which costs more than the rest of the frame on some CPUs. */
        __asm__("" : "+r" (payload_len));
        memcpy(ret_frame->payload, raw + MNP_HEADER_SIZE, payload_len);
        d->stats.frames++;
        return 1;
}

/* Checks one ended frame of n > 0 COBS bytes without 0x00 and, if it is good, fills *ret_frame. */
static int frame_finish(struct mnp_decoder *d, const uint8_t *src, size_t n,
                        struct mnp_frame *ret_frame) {
        uint8_t raw[RAW_BUF_SIZE];

        if (n > MNP_MAX_COBS_FRAME) {
                d->stats.oversize++;
                return -EMSGSIZE;
        }

        memcpy(raw, src + 1, n - 1);
        if (cobs_patch_codes(src, n, raw) < 0) {
                d->stats.bad_cobs++;
                return -EILSEQ;
        }

        return frame_check(d, raw, n - 1, ret_frame);
}

/* A mask with the top bit set in each byte of x that is zero, and perhaps in bytes above the
 * lowest zero byte; the lowest one flagged is always right. */
static inline uint64_t zero_bytes(uint64_t x) {
        return (x - UINT64_C(0x0101010101010101)) & ~x & UINT64_C(0x8080808080808080);
}

/* The fast path, for a frame that starts at p (p[0] != 0): one pass of 8-byte words both copies
 * the frame to raw and finds its closing delimiter, instead of memchr() and memcpy() each going
 * over it.  Returns the result and stores the delimiter in *ret_delim, or returns 0 if there is
 * no delimiter within reach, for the general path to sort out. */
static int frame_fast(struct mnp_decoder *d, const uint8_t *p, const uint8_t *end,
                      const uint8_t **ret_delim, struct mnp_frame *ret_frame) {
        uint8_t raw[RAW_BUF_SIZE];
        size_t avail = (size_t) (end - p), n = 0;

        /* Word i covers p[i..i+8) and goes to raw[i-1..i+7): at most up to the delimiter of
         * the longest frame, p[MNP_MAX_COBS_FRAME], plus 7, which RAW_BUF_SIZE allows for. */
        for (size_t i = 1; i + 8 <= avail && i <= MNP_MAX_COBS_FRAME; i += 8) {
                uint64_t w, z;

                memcpy(&w, p + i, sizeof(w));
                memcpy(raw + i - 1, &w, sizeof(w));
                z = zero_bytes(le64toh(w));
                if (z != 0) {
                        n = i + (size_t) __builtin_ctzll(z) / 8;
                        break;
                }
        }
        if (n == 0)
                return 0;

        *ret_delim = p + n;
        if (n > MNP_MAX_COBS_FRAME) {
                d->stats.oversize++;
                return -EMSGSIZE;
        }
        if (cobs_patch_codes(p, n, raw) < 0) {
                d->stats.bad_cobs++;
                return -EILSEQ;
        }

        return frame_check(d, raw, n - 1, ret_frame);
}

/* Keeps the bytes of a frame that has not ended yet; past the limit only remembers that. */
static void buffer_append(struct mnp_decoder *d, const uint8_t *p, size_t n) {
        if (d->overflow || n == 0)
                return;
        if (n > MNP_MAX_COBS_FRAME - d->len) {
                d->overflow = true;
                return;
        }
        memcpy(d->buf + d->len, p, n);
        d->len += n;
}

int mnp_decoder_feed(struct mnp_decoder *d, const uint8_t *data, size_t len,
                     size_t *ret_consumed, struct mnp_frame *ret_frame) {
        const uint8_t *p = data, *end = data + len, *delim;
        bool in_frame;
        int r;

        assert(d);
        assert(data || len == 0);
        assert(ret_consumed);
        assert(ret_frame);

        in_frame = d->len > 0 || d->overflow;
        if (!in_frame) {
                /* Between frames: skip empty frames. */
                while (p < end && *p == 0)
                        p++;

                r = p < end ? frame_fast(d, p, end, &delim, ret_frame) : 0;
                if (r != 0) {
                        *ret_consumed = (size_t) (delim + 1 - data);
                        return r;
                }
        }

        delim = p < end ? memchr(p, 0, (size_t) (end - p)) : NULL;
        if (!delim) {
                buffer_append(d, p, (size_t) (end - p));
                *ret_consumed = len;
                return 0;
        }

        if (!in_frame)
                /* The whole frame lies in the input (the fast path passed): decode it from there. */
                r = frame_finish(d, p, (size_t) (delim - p), ret_frame);
        else {
                buffer_append(d, p, (size_t) (delim - p));
                if (d->overflow) {
                        d->stats.oversize++;
                        r = -EMSGSIZE;
                } else
                        r = frame_finish(d, d->buf, d->len, ret_frame);

                d->len = 0;
                d->overflow = false;
        }

        *ret_consumed = (size_t) (delim + 1 - data);
        return r;
}
