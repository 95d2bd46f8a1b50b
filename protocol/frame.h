/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmnp framing: 0x00 | COBS(header | payload | CRC-32C) | 0x00
 *
 * Pure functions over byte buffers: no I/O, no allocation, no global state,
 * no logging.  Errors are negative errno values.  See PROTOCOL.md.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Byte 0 of every frame: the frame format.  Changes only if the framing itself changes. */
#define MNP_FRAME_VERSION 1

#define MNP_HEADER_SIZE 4  /* version u8, type u8, seq u16 LE */
#define MNP_CRC_SIZE 4     /* CRC-32C of header and payload, LE */
#define MNP_MAX_PAYLOAD 200
#define MNP_MIN_RAW_FRAME (MNP_HEADER_SIZE + MNP_CRC_SIZE)
#define MNP_MAX_RAW_FRAME (MNP_HEADER_SIZE + MNP_MAX_PAYLOAD + MNP_CRC_SIZE)
/* COBS adds one byte per started 254-byte block; two 0x00 delimiters frame it. */
#define MNP_MAX_COBS_FRAME (MNP_MAX_RAW_FRAME + (MNP_MAX_RAW_FRAME + 253) / 254)
#define MNP_MAX_WIRE_FRAME (MNP_MAX_COBS_FRAME + 2)

struct mnp_frame {
        uint8_t version;
        uint8_t type;
        uint16_t seq;
        uint16_t payload_len;
        uint8_t payload[MNP_MAX_PAYLOAD];
};

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78).  Start with crc = 0;
 * the function applies the 0xFFFFFFFF pre- and post-inversion itself, so
 * mnp_crc32c(mnp_crc32c(0, a, n), b, m) == mnp_crc32c(0, ab, n + m). */
uint32_t mnp_crc32c(uint32_t crc, const void *data, size_t len);

/* Writes one whole wire frame (both delimiters included) into out.
 * Returns the number of bytes written, -EMSGSIZE if payload_len > MNP_MAX_PAYLOAD,
 * -ENOBUFS if out_size is too small (MNP_MAX_WIRE_FRAME always suffices). */
ssize_t mnp_frame_encode(uint8_t type, uint16_t seq, const void *payload, size_t payload_len,
                         uint8_t *out, size_t out_size);

struct mnp_decoder_stats {
        uint64_t frames;        /* good frames returned */
        uint64_t bad_crc;       /* -EBADMSG */
        uint64_t bad_cobs;      /* -EILSEQ */
        uint64_t oversize;      /* -EMSGSIZE */
        uint64_t runts;         /* -EPROTO: shorter than header + CRC */
        uint64_t bad_version;   /* -EPROTONOSUPPORT */
};

/* Streaming decoder.  Treat the members as private; only stats is for reading. */
struct mnp_decoder {
        uint8_t buf[MNP_MAX_COBS_FRAME];
        size_t len;
        bool overflow;          /* current frame ran past MNP_MAX_COBS_FRAME: discard until 0x00 */
        struct mnp_decoder_stats stats;
};

void mnp_decoder_init(struct mnp_decoder *d);

/*
 * Feeds up to len bytes.  Consumes input up to and including the delimiter
 * that ends a frame, and stores the number of bytes consumed in *ret_consumed
 * (always, also on error).  Returns:
 *   1                   a whole good frame is in *ret_frame
 *   0                   all input consumed, no frame complete yet
 *   -EBADMSG            a frame ended whose CRC did not match
 *   -EILSEQ             a frame ended that is not valid COBS
 *   -EMSGSIZE           a frame ended that was longer than MNP_MAX_COBS_FRAME
 *   -EPROTO             a frame ended that is shorter than header + CRC
 *   -EPROTONOSUPPORT    a frame ended whose version byte is not MNP_FRAME_VERSION
 * After an error the decoder is already resynchronised: keep feeding the rest.
 * Empty frames (two delimiters in a row) are skipped silently.
 * *ret_frame is written only when 1 is returned.
 */
int mnp_decoder_feed(struct mnp_decoder *d, const uint8_t *data, size_t len,
                     size_t *ret_consumed, struct mnp_frame *ret_frame);

#ifdef __cplusplus
}
#endif
