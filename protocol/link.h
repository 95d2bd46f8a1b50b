/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmnp link state: sequence numbers, acknowledgement, retransmission,
 * de-duplication, heartbeat and the motion lease.  Used by both ends (host
 * and pen).  No I/O and no clock: every call takes the current time in
 * microseconds of a monotonic clock, and whatever must be sent is written
 * into a caller buffer.  See PROTOCOL.md, "Link".
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"
#include "message.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MNP_LINK_DEFAULT_RTO_US        30000u   /* retransmission timeout */
#define MNP_LINK_DEFAULT_MAX_RETRIES   3u       /* retransmissions after the first send */
#define MNP_LINK_DEFAULT_HEARTBEAT_US  50000u   /* send something at least this often */
#define MNP_LINK_DEFAULT_PEER_TIMEOUT_US 250000u /* peer lost after this long without a good frame */

struct mnp_link_config {
        uint32_t rto_us;
        unsigned max_retries;
        uint32_t heartbeat_us;
        uint32_t peer_timeout_us;
};

/* One reliable frame awaiting its ACK/NAK (or HELLO_REPLY for a HELLO). */
struct mnp_link_pending {
        bool active;
        uint8_t type;
        uint16_t seq;
        unsigned sends;                 /* how many times sent so far */
        uint64_t deadline_us;           /* next retransmission */
        size_t len;
        uint8_t wire[MNP_MAX_WIRE_FRAME];
};

struct mnp_link {
        struct mnp_link_config cfg;
        uint16_t next_seq;
        /* Stop-and-wait: one ordinary reliable frame in flight, plus a STOP,
         * which may overtake it and has its own slot. */
        struct mnp_link_pending pending;
        struct mnp_link_pending stop;
        /* Receive side de-duplication: the last reliable frame acted on and
         * the reply sent for it, resent verbatim when the frame repeats. */
        bool have_rx;
        uint16_t last_rx_seq;
        size_t reply_len;
        uint8_t reply_wire[MNP_MAX_WIRE_FRAME];
        uint64_t last_rx_us;            /* last good frame from the peer */
        uint64_t last_tx_us;            /* last frame we sent */
        uint64_t rx_gaps;               /* frames the peer's seq says we missed */
        bool have_peer_seq;
        uint16_t last_peer_seq;
};

/* cfg may be NULL for the defaults; in a given cfg, a zero rto_us, heartbeat_us or
 * peer_timeout_us also means the default (max_retries is taken as given, 0 included).
 * The heartbeat and peer-loss timers start at now_us. */
void mnp_link_init(struct mnp_link *l, const struct mnp_link_config *cfg, uint64_t now_us);

/* Forget everything pending and received (after a new handshake). Keeps cfg and next_seq.
 * Counts as hearing from the peer at now_us (the handshake frame that prompted it). */
void mnp_link_reset(struct mnp_link *l, uint64_t now_us);

/*
 * Encodes m with the next sequence number into out.  Reliable types (and
 * HELLO) are remembered for retransmission.  Returns the wire length,
 * -EBUSY if a reliable frame other than STOP is already in flight (STOP never
 * gets -EBUSY: a new STOP replaces an older unacknowledged one), or the
 * errors of mnp_msg_encode.  If ret_seq is not NULL, the seq used is stored there.
 * Sending a STOP while a command is in flight ends that command's retransmissions:
 * it can still be answered, or times out at its next deadline (PROTOCOL.md 8.3).
 */
ssize_t mnp_link_send(struct mnp_link *l, uint64_t now_us, const struct mnp_msg *m,
                      uint8_t *out, size_t size, uint16_t *ret_seq);

enum mnp_link_rx {
        MNP_LINK_RX_NEW,        /* act on it; if reliable, answer with mnp_link_reply() */
        MNP_LINK_RX_DUPLICATE,  /* a repeat of the last reliable frame: do not act, send mnp_link_cached_reply() */
        MNP_LINK_RX_ANSWER,     /* ACK, NAK or HELLO_REPLY for a frame in flight; its slot is now free.
                                   *ret_answered is that frame's type */
        MNP_LINK_RX_STALE,      /* ACK/NAK/HELLO_REPLY for nothing in flight: ignore */
};

/* Classifies a decoded frame and its unpacked message, and notes the peer as alive.
 * m may be NULL when the payload did not unpack (unknown type, malformed): a
 * reliable frame is then still classified by its seq (so its NAK can be cached),
 * and an ACK/NAK/HELLO_REPLY without m is STALE.  ret_answered may be NULL; it
 * is set to 0 unless the result is MNP_LINK_RX_ANSWER. */
enum mnp_link_rx mnp_link_receive(struct mnp_link *l, uint64_t now_us, const struct mnp_frame *f,
                                  const struct mnp_msg *m, uint8_t *ret_answered);

/* Builds the ACK (reason 0) or NAK (reason != 0, with detail) for the reliable
 * frame with sequence number seq, caches it for duplicates, and returns its length. */
ssize_t mnp_link_reply(struct mnp_link *l, uint64_t now_us, uint16_t seq, uint8_t nak_reason,
                       uint32_t detail, uint8_t *out, size_t size);

/* Copies the cached reply to the last reliable frame; 0 if there is none. */
ssize_t mnp_link_cached_reply(struct mnp_link *l, uint8_t *out, size_t size);

/*
 * Retransmission.  When a frame in flight is due, copies it into out and
 * returns its length (> 0); returns 0 when nothing is due; returns -ETIMEDOUT
 * once a frame has been sent 1 + max_retries times without an answer (its
 * slot is then freed and its type stored in *ret_type).  Call until it returns 0.
 */
ssize_t mnp_link_poll(struct mnp_link *l, uint64_t now_us, uint8_t *out, size_t size, uint8_t *ret_type);

/* True when nothing was sent for heartbeat_us: send a HEARTBEAT. */
bool mnp_link_heartbeat_due(const struct mnp_link *l, uint64_t now_us);

/* True when no good frame came from the peer for peer_timeout_us. */
bool mnp_link_peer_lost(const struct mnp_link *l, uint64_t now_us);

/* The earliest time at which poll, heartbeat_due or peer_lost can change:
 * arm one timer for it.  UINT64_MAX if never.  Once heartbeat_due or peer_lost
 * is true the result stays in the past until something is sent or received, so
 * a caller that does not act on them must not re-arm with it unchanged. */
uint64_t mnp_link_next_deadline(const struct mnp_link *l);

/* The motion lease, as the pen keeps it. */
struct mnp_lease {
        bool active;
        uint64_t expires_us;
};

/* Grants (or renews) for ms milliseconds from now_us, capped at max_ms. ms == 0
 * (or max_ms == 0) revokes it. */
void mnp_lease_grant(struct mnp_lease *lease, uint64_t now_us, uint32_t ms, uint32_t max_ms);
void mnp_lease_revoke(struct mnp_lease *lease);
/* Active and not yet expired. */
bool mnp_lease_valid(const struct mnp_lease *lease, uint64_t now_us);
/* Rounded up: non-zero exactly while the lease is valid. */
uint32_t mnp_lease_remaining_ms(const struct mnp_lease *lease, uint64_t now_us);

#ifdef __cplusplus
}
#endif
