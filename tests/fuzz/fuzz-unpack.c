/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for mnp_msg_unpack.  Input: one type byte, then the
 * payload.  Whatever unpacks must pack again to exactly the bytes it came
 * from (the layout is canonical; trailing bytes are ignored), and that
 * packing must unpack once more to the same message.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mnp/frame.h>
#include <mnp/message.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* assert() that stays on with NDEBUG and names the line. */
#define check(ok)                                                                       \
        do {                                                                            \
                if (!(ok)) {                                                            \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #ok); \
                        abort();                                                        \
                }                                                                       \
        } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        uint8_t packed[MNP_MAX_PAYLOAD], again[MNP_MAX_PAYLOAD];
        struct mnp_msg m, m2;
        ssize_t n, n2;
        int r;

        if (size < 1)
                return 0;

        memset(&m, 0xA5, sizeof(m));
        r = mnp_msg_unpack(data[0], data + 1, size - 1, &m);
        if (r < 0) {
                check(r == -ENOMSG || r == -EBADMSG || r == -EINVAL);
                check(r != -ENOMSG || strcmp(mnp_msg_type_name(data[0]), "unknown") == 0);
                return 0;
        }
        check(m.type == data[0]);
        check(strcmp(mnp_msg_type_name(m.type), "unknown") != 0);

        /* Pack: the very bytes that were read, a prefix of the input. */
        n = mnp_msg_pack(&m, packed, sizeof(packed));
        check(n >= 0);
        check((size_t) n <= size - 1);
        check(memcmp(packed, data + 1, (size_t) n) == 0);

        /* Every shorter buffer is refused, the exact one accepted. */
        if (n > 0)
                check(mnp_msg_pack(&m, again, (size_t) n - 1) == -ENOBUFS);

        /* Unpack again: the same message (packing is injective, so equal bytes
         * mean equal fields). */
        memset(&m2, 0x5A, sizeof(m2));
        check(mnp_msg_unpack(m.type, packed, (size_t) n, &m2) == 0);
        n2 = mnp_msg_pack(&m2, again, sizeof(again));
        check(n2 == n);
        check(memcmp(again, packed, (size_t) n) == 0);

        /* One byte short is too short. */
        if (n > 0)
                check(mnp_msg_unpack(m.type, packed, (size_t) n - 1, &m2) == -EBADMSG);

        /* And the whole frame round-trips through the encoder and decoder. */
        {
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                struct mnp_decoder d;
                struct mnp_frame f;
                size_t consumed;
                ssize_t w;

                w = mnp_msg_encode(&m, 0x1234, wire, sizeof(wire));
                check(w > 0);
                mnp_decoder_init(&d);
                check(mnp_decoder_feed(&d, wire, (size_t) w, &consumed, &f) == 1);
                check(f.type == m.type && f.seq == 0x1234 && f.payload_len == n);
                check(memcmp(f.payload, packed, (size_t) n) == 0);
        }

        return 0;
}
