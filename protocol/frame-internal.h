/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Framing internals, for the unit tests and fuzzers.  Not installed. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* General COBS (Cheshire & Baker) over any length, without delimiters and without a trailing
 * code after a final full 254-byte block.  Frames themselves are too short to ever need a 0xFF
 * code; these exist so that the codec's block handling can be tested on its own.
 * Both return the output length, -ENOBUFS if dst_size is too small (dst is then left in an
 * unspecified state), and decoding returns -EILSEQ for a 0x00 code or a code that runs past
 * the end. */
ssize_t mnp_cobs_encode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_size);
ssize_t mnp_cobs_decode(const uint8_t *src, size_t n, uint8_t *dst, size_t dst_size);
