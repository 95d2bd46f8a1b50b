/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* CRC-32C internals, for the unit tests and benchmarks.  Not installed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The portable slicing-by-8 path; same contract as mnp_crc32c(). */
uint32_t mnp_crc32c_sw(uint32_t crc, const void *data, size_t len);

/* Whether mnp_crc32c() takes the SSE4.2 path on this CPU. */
bool mnp_crc32c_hw_available(void);
