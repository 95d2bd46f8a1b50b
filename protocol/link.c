/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmnp link state: sequence numbers, stop-and-wait acknowledgement with a
 * separate slot for STOP, retransmission, receive-side de-duplication,
 * heartbeat and peer-loss timing, and the motion lease.  See PROTOCOL.md,
 * "Link".
 */
#include <errno.h>
#include <string.h>

#include "link.h"

/*
 * When the peer's sequence number has moved this far past the last reliable
 * frame acted on, that record is forgotten: no retransmission can be that
 * old, and keeping it would eventually make a fresh frame look older than
 * the record once the distance passes half the sequence space.
 */
#define DEDUP_WINDOW 0x4000u

/* RFC 1982 serial number arithmetic on u16: a is after b when the forward
 * distance from b to a is 1..32767. */
static bool seq_after(uint16_t a, uint16_t b) {
        uint16_t d = (uint16_t) (a - b);

        return d != 0 && d < 0x8000u;
}

static void pending_clear(struct mnp_link_pending *p) {
        p->active = false;
        p->type = 0;
        p->seq = 0;
        p->sends = 0;
        p->deadline_us = 0;
        p->len = 0;
}

void mnp_link_init(struct mnp_link *l, const struct mnp_link_config *cfg, uint64_t now_us) {
        memset(l, 0, sizeof(*l));

        l->cfg = (struct mnp_link_config) {
                .rto_us = MNP_LINK_DEFAULT_RTO_US,
                .max_retries = MNP_LINK_DEFAULT_MAX_RETRIES,
                .heartbeat_us = MNP_LINK_DEFAULT_HEARTBEAT_US,
                .peer_timeout_us = MNP_LINK_DEFAULT_PEER_TIMEOUT_US,
        };
        if (cfg) {
                /* A zero time means "the default"; zero retries is a valid choice. */
                if (cfg->rto_us > 0)
                        l->cfg.rto_us = cfg->rto_us;
                if (cfg->heartbeat_us > 0)
                        l->cfg.heartbeat_us = cfg->heartbeat_us;
                if (cfg->peer_timeout_us > 0)
                        l->cfg.peer_timeout_us = cfg->peer_timeout_us;
                l->cfg.max_retries = cfg->max_retries;
        }

        l->last_rx_us = now_us;
        l->last_tx_us = now_us;
}

void mnp_link_reset(struct mnp_link *l, uint64_t now_us) {
        pending_clear(&l->pending);
        pending_clear(&l->stop);
        l->have_rx = false;
        l->last_rx_seq = 0;
        l->reply_len = 0;
        /* A reset follows a handshake frame from the peer: it is alive now. */
        l->last_rx_us = now_us;
        /* Kept: cfg, next_seq, last_tx_us, and the peer's sequence
         * bookkeeping (rx_gaps is a running diagnostic counter). */
}

ssize_t mnp_link_send(struct mnp_link *l, uint64_t now_us, const struct mnp_msg *m,
                      uint8_t *out, size_t size, uint16_t *ret_seq) {
        struct mnp_link_pending *slot = NULL;
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        uint16_t seq = l->next_seq;
        ssize_t n;

        if (!m || !out)
                return -EINVAL;

        if (m->type == MNP_MSG_STOP)
                slot = &l->stop;
        else if (m->type == MNP_MSG_HELLO || mnp_msg_type_is_reliable(m->type)) {
                slot = &l->pending;
                if (slot->active)
                        return -EBUSY;
        }

        n = mnp_msg_encode(m, seq, wire, sizeof(wire));
        if (n < 0)
                return n;
        if ((size_t) n > size)
                return -ENOBUFS;

        memcpy(out, wire, (size_t) n);
        l->next_seq = (uint16_t) (seq + 1);
        l->last_tx_us = now_us;

        if (slot) {
                /* A new STOP simply replaces an older unanswered one. */
                slot->active = true;
                slot->type = m->type;
                slot->seq = seq;
                slot->sends = 1;
                slot->deadline_us = now_us + l->cfg.rto_us;
                slot->len = (size_t) n;
                memcpy(slot->wire, wire, (size_t) n);

                /* A command in flight is never resent after a STOP: a resent
                 * START could reach the pen after the STOP and start it again,
                 * a resent SET_DEPTH would change a setpoint the caller has
                 * given up on.  It is still answered, or times out at its
                 * next deadline.  (A HELLO goes on: it stops the pen anyway.) */
                if (m->type == MNP_MSG_STOP && l->pending.active && l->pending.type != MNP_MSG_HELLO &&
                    l->pending.sends < 1 + l->cfg.max_retries)
                        l->pending.sends = 1 + l->cfg.max_retries;
        }

        if (ret_seq)
                *ret_seq = seq;
        return n;
}

static void note_peer_seq(struct mnp_link *l, const struct mnp_frame *f) {
        /* A handshake frame may come from a peer that restarted its counter. */
        if (!l->have_peer_seq || f->type == MNP_MSG_HELLO || f->type == MNP_MSG_HELLO_REPLY) {
                l->have_peer_seq = true;
                l->last_peer_seq = f->seq;
                return;
        }

        if (seq_after(f->seq, l->last_peer_seq)) {
                l->rx_gaps += (uint16_t) (f->seq - l->last_peer_seq) - 1u;
                l->last_peer_seq = f->seq;
        }
        /* Equal or older: a retransmission or a delayed copy, no gap. */

        if (l->have_rx && (uint16_t) (l->last_peer_seq - l->last_rx_seq) >= DEDUP_WINDOW) {
                l->have_rx = false;
                l->reply_len = 0;
        }
}

static bool answers(const struct mnp_link_pending *p, uint16_t seq) {
        return p->active && p->seq == seq;
}

static enum mnp_link_rx take_answer(struct mnp_link_pending *p, uint8_t *ret_answered) {
        if (ret_answered)
                *ret_answered = p->type;
        pending_clear(p);
        return MNP_LINK_RX_ANSWER;
}

enum mnp_link_rx mnp_link_receive(struct mnp_link *l, uint64_t now_us, const struct mnp_frame *f,
                                  const struct mnp_msg *m, uint8_t *ret_answered) {
        /* m is only trusted if it was unpacked from this frame's type. */
        bool have_msg = m && m->type == f->type;

        if (ret_answered)
                *ret_answered = 0;

        l->last_rx_us = now_us;
        note_peer_seq(l, f);

        switch (f->type) {
        case MNP_MSG_ACK:
        case MNP_MSG_NAK: {
                uint16_t seq;

                if (!have_msg)
                        return MNP_LINK_RX_STALE;
                seq = f->type == MNP_MSG_ACK ? m->ack.seq : m->nak.seq;

                if (answers(&l->stop, seq))
                        return take_answer(&l->stop, ret_answered);
                /* A HELLO is answered by HELLO_REPLY or NAK, never by ACK. */
                if (answers(&l->pending, seq) &&
                    (l->pending.type != MNP_MSG_HELLO || f->type == MNP_MSG_NAK))
                        return take_answer(&l->pending, ret_answered);
                return MNP_LINK_RX_STALE;
        }

        case MNP_MSG_HELLO_REPLY:
                if (have_msg && answers(&l->pending, m->hello_reply.hello_seq) &&
                    l->pending.type == MNP_MSG_HELLO)
                        return take_answer(&l->pending, ret_answered);
                return MNP_LINK_RX_STALE;

        case MNP_MSG_HELLO:
        case MNP_MSG_STOP:
                /* Always acted on; they do not touch the de-duplication
                 * record, and the reply to a STOP is not cached. */
                return MNP_LINK_RX_NEW;

        default:
                break;
        }

        if (!mnp_msg_type_is_reliable(f->type))
                return MNP_LINK_RX_NEW;

        if (l->have_rx) {
                if (f->seq == l->last_rx_seq)
                        return MNP_LINK_RX_DUPLICATE;
                if (!seq_after(f->seq, l->last_rx_seq))
                        return MNP_LINK_RX_STALE;
        }

        l->have_rx = true;
        l->last_rx_seq = f->seq;
        l->reply_len = 0;       /* the reply to this one is not built yet */
        return MNP_LINK_RX_NEW;
}

ssize_t mnp_link_reply(struct mnp_link *l, uint64_t now_us, uint16_t seq, uint8_t nak_reason,
                       uint32_t detail, uint8_t *out, size_t size) {
        struct mnp_msg m;
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        if (!out)
                return -EINVAL;

        if (nak_reason == 0)
                m = (struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = seq };
        else
                m = (struct mnp_msg) {
                        .type = MNP_MSG_NAK,
                        .nak = { .seq = seq, .reason = nak_reason, .detail = detail },
                };

        n = mnp_msg_encode(&m, l->next_seq, wire, sizeof(wire));
        if (n < 0)
                return n;
        if ((size_t) n > size)
                return -ENOBUFS;

        memcpy(out, wire, (size_t) n);
        l->next_seq++;
        l->last_tx_us = now_us;

        /* Cached only for the reliable frame the record names: never for a
         * STOP or a HELLO, which do not move the record. */
        if (l->have_rx && seq == l->last_rx_seq) {
                memcpy(l->reply_wire, wire, (size_t) n);
                l->reply_len = (size_t) n;
        }
        return n;
}

ssize_t mnp_link_cached_reply(struct mnp_link *l, uint8_t *out, size_t size) {
        if (!l->have_rx || l->reply_len == 0)
                return 0;
        if (!out || l->reply_len > size)
                return -ENOBUFS;

        memcpy(out, l->reply_wire, l->reply_len);
        /* This call has no clock: it answers the duplicate just received,
         * so the time of that reception is the time of this send. */
        if (l->last_rx_us > l->last_tx_us)
                l->last_tx_us = l->last_rx_us;
        return (ssize_t) l->reply_len;
}

static ssize_t poll_slot(struct mnp_link *l, struct mnp_link_pending *p, uint64_t now_us,
                         uint8_t *out, size_t size, uint8_t *ret_type) {
        if (!p->active || now_us < p->deadline_us)
                return 0;

        if (p->sends >= 1 + l->cfg.max_retries) {
                if (ret_type)
                        *ret_type = p->type;
                pending_clear(p);
                return -ETIMEDOUT;
        }

        if (!out || p->len > size)
                return -ENOBUFS;

        memcpy(out, p->wire, p->len);
        p->sends++;
        p->deadline_us = now_us + l->cfg.rto_us;
        l->last_tx_us = now_us;
        return (ssize_t) p->len;
}

ssize_t mnp_link_poll(struct mnp_link *l, uint64_t now_us, uint8_t *out, size_t size, uint8_t *ret_type) {
        ssize_t n;

        /* STOP first: it is the frame that matters most. */
        n = poll_slot(l, &l->stop, now_us, out, size, ret_type);
        if (n != 0)
                return n;
        return poll_slot(l, &l->pending, now_us, out, size, ret_type);
}

bool mnp_link_heartbeat_due(const struct mnp_link *l, uint64_t now_us) {
        return now_us >= l->last_tx_us && now_us - l->last_tx_us >= l->cfg.heartbeat_us;
}

bool mnp_link_peer_lost(const struct mnp_link *l, uint64_t now_us) {
        return now_us >= l->last_rx_us && now_us - l->last_rx_us >= l->cfg.peer_timeout_us;
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

uint64_t mnp_link_next_deadline(const struct mnp_link *l) {
        uint64_t t;

        t = min_u64(l->last_tx_us + l->cfg.heartbeat_us, l->last_rx_us + l->cfg.peer_timeout_us);
        if (l->pending.active)
                t = min_u64(t, l->pending.deadline_us);
        if (l->stop.active)
                t = min_u64(t, l->stop.deadline_us);
        return t;
}

void mnp_lease_grant(struct mnp_lease *lease, uint64_t now_us, uint32_t ms, uint32_t max_ms) {
        if (ms > max_ms)
                ms = max_ms;
        if (ms == 0) {
                mnp_lease_revoke(lease);
                return;
        }
        lease->active = true;
        lease->expires_us = now_us + (uint64_t) ms * 1000u;
}

void mnp_lease_revoke(struct mnp_lease *lease) {
        lease->active = false;
        lease->expires_us = 0;
}

bool mnp_lease_valid(const struct mnp_lease *lease, uint64_t now_us) {
        return lease->active && now_us < lease->expires_us;
}

uint32_t mnp_lease_remaining_ms(const struct mnp_lease *lease, uint64_t now_us) {
        uint64_t left;

        if (!mnp_lease_valid(lease, now_us))
                return 0;
        /* Rounded up: non-zero exactly while the lease is valid. */
        left = (lease->expires_us - now_us + 999u) / 1000u;
        return left > UINT32_MAX ? UINT32_MAX : (uint32_t) left;
}
