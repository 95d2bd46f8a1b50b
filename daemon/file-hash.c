/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdint.h>
#include <unistd.h>

#include "file-hash.h"
#include "util.h"

#define FILE_HASH_MAX (16u * 1024 * 1024)

int mnd_file_sha256_hex(const char *path, char ret[MND_AUDIT_HASH_HEX_SIZE]) {
        _cleanup_(closep) int fd = -1;
        crypto_hash_sha256_state st;
        uint8_t buf[16384], h[crypto_hash_sha256_BYTES];
        uint64_t total = 0;

        if (sodium_init() < 0)
                return -EIO;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        crypto_hash_sha256_init(&st);
        for (;;) {
                ssize_t k = read(fd, buf, sizeof(buf));

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                total += (uint64_t) k;
                if (total > FILE_HASH_MAX)
                        return -EFBIG;
                crypto_hash_sha256_update(&st, buf, (unsigned long long) k);
        }
        crypto_hash_sha256_final(&st, h);
        mnd_audit_hash_to_hex(h, ret);
        return 0;
}
