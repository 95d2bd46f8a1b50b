/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmnp messages: packing and unpacking of the typed payloads.
 *
 * Every layout is its struct's fields in declaration order, integers
 * little-endian, strings as a u8 length followed by that many printable ASCII
 * bytes.  Unpacking accepts trailing bytes (fields appended by later minor
 * revisions) and refuses short payloads.  See PROTOCOL.md.
 */
#include <errno.h>
#include <string.h>

#include "message.h"

/* Payload sizes without strings (a string counts as its length byte only). */
#define HELLO_SIZE        8
#define HELLO_REPLY_SIZE  32   /* 29 fixed bytes + 3 length bytes */
#define ACK_SIZE          2
#define NAK_SIZE          7
#define HEARTBEAT_SIZE    2
#define SET_DEPTH_SIZE    4
#define SET_SPEED_SIZE    2
#define START_SIZE        8
#define STOP_SIZE         0
#define CLEAR_FAULT_SIZE  0
#define STATUS_SIZE       27   /* 26 fixed bytes + 1 length byte */
#define FAULT_SIZE        5
#define CARTRIDGE_SIZE    2    /* 1 fixed byte + 1 length byte */

bool mnp_msg_type_is_reliable(uint8_t type) {
        /* 0x10-0x1F host commands, 0x21-0x2F pen events.  Link control
         * (0x01-0x0F), STATUS (0x20) and pen reports (0x30-0x3F) are not
         * acknowledged; neither is anything outside the defined ranges. */
        return (type >= 0x10 && type <= 0x1F) || (type >= 0x21 && type <= 0x2F);
}

/* ---- writer ---- */

struct writer {
        uint8_t *p;
        size_t len;
};

static void put_u8(struct writer *w, uint8_t v) {
        w->p[w->len++] = v;
}

static void put_u16(struct writer *w, uint16_t v) {
        put_u8(w, (uint8_t) v);
        put_u8(w, (uint8_t) (v >> 8));
}

static void put_u32(struct writer *w, uint32_t v) {
        put_u16(w, (uint16_t) v);
        put_u16(w, (uint16_t) (v >> 16));
}

static void put_str(struct writer *w, const char *s) {
        size_t n = strlen(s);   /* checked by str_valid() before */

        put_u8(w, (uint8_t) n);
        memcpy(w->p + w->len, s, n);
        w->len += n;
}

static bool char_printable(char c) {
        return (unsigned char) c >= 0x20 && (unsigned char) c <= 0x7E;
}

/* A NUL-terminated string of at most MNP_MAX_STR printable characters. */
static bool str_valid(const char *s, size_t field_size) {
        size_t n = strnlen(s, field_size);

        if (n > MNP_MAX_STR || n >= field_size)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!char_printable(s[i]))
                        return false;
        return true;
}

#define STR_OK(field) str_valid((field), sizeof(field))

/* ---- field domains, shared by pack and unpack ---- */

static bool hello_valid(const struct mnp_hello *h) {
        return h->min_version >= 1 && h->min_version <= h->max_version && h->heartbeat_ms > 0;
}

static bool hello_reply_valid(const struct mnp_hello_reply *r) {
        return r->version >= 1 &&
                r->depth_step_um > 0 &&
                r->depth_min_um <= r->depth_max_um &&
                r->speed_min_hz <= r->speed_max_hz &&
                r->max_lease_ms > 0 &&
                STR_OK(r->model) && STR_OK(r->serial) && STR_OK(r->firmware);
}

static bool nak_valid(const struct mnp_nak *n) {
        return n->reason >= 1 && n->reason <= MNP_NAK_MAX;
}

static bool start_valid(const struct mnp_start *s) {
        return s->lease_ms > 0;
}

/* The fault_flags bits that name a fault code. */
#define FAULT_FLAGS_KNOWN (MNP_FAULT_FLAG(MNP_FAULT_MAX) | (MNP_FAULT_FLAG(MNP_FAULT_MAX) - 1))

static bool status_valid(const struct mnp_status *s) {
        return s->state <= MNP_STATE_FAULT &&
                /* PROTOCOL.md 12.1: faults are active exactly in state fault. */
                (s->state == MNP_STATE_FAULT) == (s->fault_flags != 0) &&
                (s->fault_flags & ~FAULT_FLAGS_KNOWN) == 0 &&
                (s->battery_percent <= 100 || s->battery_percent == 255) &&
                STR_OK(s->cartridge_id);
}

static bool fault_valid(const struct mnp_fault_event *f) {
        return f->code >= 1 && f->code <= MNP_FAULT_MAX &&
                /* PROTOCOL.md 7.11: all active faults, including this one. */
                (f->fault_flags & MNP_FAULT_FLAG(f->code)) != 0 &&
                (f->fault_flags & ~FAULT_FLAGS_KNOWN) == 0;
}

static bool cartridge_valid(const struct mnp_cartridge_event *c) {
        if (c->present > 1 || !STR_OK(c->id))
                return false;
        /* An id exactly when a cartridge is present. */
        return (c->present == 1) == (c->id[0] != '\0');
}

/* The packed size of m, or a negative errno if m cannot be packed. */
static ssize_t packed_size(const struct mnp_msg *m) {
        switch (m->type) {
        case MNP_MSG_HELLO:
                return hello_valid(&m->hello) ? HELLO_SIZE : -EINVAL;
        case MNP_MSG_HELLO_REPLY:
                if (!hello_reply_valid(&m->hello_reply))
                        return -EINVAL;
                return HELLO_REPLY_SIZE + strlen(m->hello_reply.model) +
                        strlen(m->hello_reply.serial) + strlen(m->hello_reply.firmware);
        case MNP_MSG_ACK:
                return ACK_SIZE;
        case MNP_MSG_NAK:
                return nak_valid(&m->nak) ? NAK_SIZE : -EINVAL;
        case MNP_MSG_HEARTBEAT:
                return HEARTBEAT_SIZE;
        case MNP_MSG_SET_DEPTH:
                return SET_DEPTH_SIZE;
        case MNP_MSG_SET_SPEED:
                return SET_SPEED_SIZE;
        case MNP_MSG_START:
                return start_valid(&m->start) ? START_SIZE : -EINVAL;
        case MNP_MSG_STOP:
                return STOP_SIZE;
        case MNP_MSG_CLEAR_FAULT:
                return CLEAR_FAULT_SIZE;
        case MNP_MSG_STATUS:
                if (!status_valid(&m->status))
                        return -EINVAL;
                return STATUS_SIZE + strlen(m->status.cartridge_id);
        case MNP_MSG_FAULT:
                return fault_valid(&m->fault) ? FAULT_SIZE : -EINVAL;
        case MNP_MSG_CARTRIDGE:
                if (!cartridge_valid(&m->cartridge))
                        return -EINVAL;
                return CARTRIDGE_SIZE + strlen(m->cartridge.id);
        default:
                return -ENOMSG;
        }
}

ssize_t mnp_msg_pack(const struct mnp_msg *m, uint8_t *payload, size_t size) {
        struct writer w = { .p = payload };
        ssize_t n;

        if (!m)
                return -EINVAL;

        n = packed_size(m);
        if (n < 0)
                return n;
        if ((size_t) n > size)
                return -ENOBUFS;
        if (n > 0 && !payload)
                return -EINVAL;

        switch (m->type) {
        case MNP_MSG_HELLO:
                put_u8(&w, m->hello.min_version);
                put_u8(&w, m->hello.max_version);
                put_u32(&w, m->hello.caps);
                put_u16(&w, m->hello.heartbeat_ms);
                break;
        case MNP_MSG_HELLO_REPLY: {
                const struct mnp_hello_reply *r = &m->hello_reply;

                put_u16(&w, r->hello_seq);
                put_u8(&w, r->version);
                put_u32(&w, r->caps);
                put_u32(&w, r->boot_id);
                put_u32(&w, r->depth_min_um);
                put_u32(&w, r->depth_max_um);
                put_u32(&w, r->depth_step_um);
                put_u16(&w, r->speed_min_hz);
                put_u16(&w, r->speed_max_hz);
                put_u16(&w, r->max_lease_ms);
                put_str(&w, r->model);
                put_str(&w, r->serial);
                put_str(&w, r->firmware);
                break;
        }
        case MNP_MSG_ACK:
                put_u16(&w, m->ack.seq);
                break;
        case MNP_MSG_NAK:
                put_u16(&w, m->nak.seq);
                put_u8(&w, m->nak.reason);
                put_u32(&w, m->nak.detail);
                break;
        case MNP_MSG_HEARTBEAT:
                put_u16(&w, m->heartbeat.lease_ms);
                break;
        case MNP_MSG_SET_DEPTH:
                put_u32(&w, m->set_depth.depth_um);
                break;
        case MNP_MSG_SET_SPEED:
                put_u16(&w, m->set_speed.speed_hz);
                break;
        case MNP_MSG_START:
                put_u32(&w, m->start.depth_um);
                put_u16(&w, m->start.speed_hz);
                put_u16(&w, m->start.lease_ms);
                break;
        case MNP_MSG_STOP:
        case MNP_MSG_CLEAR_FAULT:
                break;
        case MNP_MSG_STATUS: {
                const struct mnp_status *s = &m->status;

                put_u8(&w, s->state);
                put_u32(&w, s->fault_flags);
                put_u32(&w, s->depth_set_um);
                put_u32(&w, s->depth_actual_um);
                put_u16(&w, s->speed_set_hz);
                put_u16(&w, s->speed_actual_hz);
                put_u8(&w, s->battery_percent);
                put_u16(&w, (uint16_t) s->temperature_dc);
                put_u32(&w, s->needling_ms);
                put_u16(&w, s->lease_left_ms);
                put_str(&w, s->cartridge_id);
                break;
        }
        case MNP_MSG_FAULT:
                put_u8(&w, m->fault.code);
                put_u32(&w, m->fault.fault_flags);
                break;
        case MNP_MSG_CARTRIDGE:
                put_u8(&w, m->cartridge.present);
                put_str(&w, m->cartridge.id);
                break;
        }

        return (ssize_t) w.len;
}

/* ---- reader ---- */

struct reader {
        const uint8_t *p;
        size_t len, pos;
        int error;              /* first error met: -EBADMSG or -EINVAL */
};

static bool take(struct reader *r, size_t n) {
        if (r->error < 0)
                return false;
        if (r->len - r->pos < n) {
                r->error = -EBADMSG;
                return false;
        }
        return true;
}

static uint8_t get_u8(struct reader *r) {
        if (!take(r, 1))
                return 0;
        return r->p[r->pos++];
}

static uint16_t get_u16(struct reader *r) {
        uint16_t v;

        if (!take(r, 2))
                return 0;
        v = (uint16_t) (r->p[r->pos] | (r->p[r->pos + 1] << 8));
        r->pos += 2;
        return v;
}

static uint32_t get_u32(struct reader *r) {
        uint32_t v;

        if (!take(r, 4))
                return 0;
        v = (uint32_t) r->p[r->pos] |
                (uint32_t) r->p[r->pos + 1] << 8 |
                (uint32_t) r->p[r->pos + 2] << 16 |
                (uint32_t) r->p[r->pos + 3] << 24;
        r->pos += 4;
        return v;
}

/* Reads a length-prefixed string into out (MNP_MAX_STR + 1 bytes). */
static void get_str(struct reader *r, char out[static MNP_MAX_STR + 1]) {
        uint8_t n = get_u8(r);

        out[0] = '\0';
        if (r->error < 0)
                return;
        if (n > MNP_MAX_STR) {
                r->error = -EINVAL;
                return;
        }
        if (!take(r, n))
                return;
        for (size_t i = 0; i < n; i++)
                if (!char_printable((char) r->p[r->pos + i])) {
                        r->error = -EINVAL;
                        return;
                }
        memcpy(out, r->p + r->pos, n);
        out[n] = '\0';
        r->pos += n;
}

int mnp_msg_unpack(uint8_t type, const uint8_t *payload, size_t len, struct mnp_msg *ret) {
        struct reader r = { .p = payload, .len = len };
        struct mnp_msg m = { .type = type };
        bool valid = true;

        if (!payload && len > 0)
                return -EINVAL;

        switch (type) {
        case MNP_MSG_HELLO:
                m.hello.min_version = get_u8(&r);
                m.hello.max_version = get_u8(&r);
                m.hello.caps = get_u32(&r);
                m.hello.heartbeat_ms = get_u16(&r);
                valid = hello_valid(&m.hello);
                break;
        case MNP_MSG_HELLO_REPLY: {
                struct mnp_hello_reply *h = &m.hello_reply;

                h->hello_seq = get_u16(&r);
                h->version = get_u8(&r);
                h->caps = get_u32(&r);
                h->boot_id = get_u32(&r);
                h->depth_min_um = get_u32(&r);
                h->depth_max_um = get_u32(&r);
                h->depth_step_um = get_u32(&r);
                h->speed_min_hz = get_u16(&r);
                h->speed_max_hz = get_u16(&r);
                h->max_lease_ms = get_u16(&r);
                get_str(&r, h->model);
                get_str(&r, h->serial);
                get_str(&r, h->firmware);
                valid = hello_reply_valid(h);
                break;
        }
        case MNP_MSG_ACK:
                m.ack.seq = get_u16(&r);
                break;
        case MNP_MSG_NAK:
                m.nak.seq = get_u16(&r);
                m.nak.reason = get_u8(&r);
                m.nak.detail = get_u32(&r);
                valid = nak_valid(&m.nak);
                break;
        case MNP_MSG_HEARTBEAT:
                m.heartbeat.lease_ms = get_u16(&r);
                break;
        case MNP_MSG_SET_DEPTH:
                m.set_depth.depth_um = get_u32(&r);
                break;
        case MNP_MSG_SET_SPEED:
                m.set_speed.speed_hz = get_u16(&r);
                break;
        case MNP_MSG_START:
                m.start.depth_um = get_u32(&r);
                m.start.speed_hz = get_u16(&r);
                m.start.lease_ms = get_u16(&r);
                valid = start_valid(&m.start);
                break;
        case MNP_MSG_STOP:
        case MNP_MSG_CLEAR_FAULT:
                break;
        case MNP_MSG_STATUS: {
                struct mnp_status *s = &m.status;

                s->state = get_u8(&r);
                s->fault_flags = get_u32(&r);
                s->depth_set_um = get_u32(&r);
                s->depth_actual_um = get_u32(&r);
                s->speed_set_hz = get_u16(&r);
                s->speed_actual_hz = get_u16(&r);
                s->battery_percent = get_u8(&r);
                s->temperature_dc = (int16_t) get_u16(&r);
                s->needling_ms = get_u32(&r);
                s->lease_left_ms = get_u16(&r);
                get_str(&r, s->cartridge_id);
                valid = status_valid(s);
                break;
        }
        case MNP_MSG_FAULT:
                m.fault.code = get_u8(&r);
                m.fault.fault_flags = get_u32(&r);
                valid = fault_valid(&m.fault);
                break;
        case MNP_MSG_CARTRIDGE:
                m.cartridge.present = get_u8(&r);
                get_str(&r, m.cartridge.id);
                valid = cartridge_valid(&m.cartridge);
                break;
        default:
                return -ENOMSG;
        }

        if (r.error < 0)
                return r.error;
        if (!valid)
                return -EINVAL;
        /* Bytes beyond the known layout belong to later revisions: ignored. */

        if (ret)
                *ret = m;
        return 0;
}

ssize_t mnp_msg_encode(const struct mnp_msg *m, uint16_t seq, uint8_t *out, size_t size) {
        uint8_t payload[MNP_MAX_PAYLOAD];
        ssize_t n;

        n = mnp_msg_pack(m, payload, sizeof(payload));
        if (n < 0)
                return n;
        return mnp_frame_encode(m->type, seq, payload, (size_t) n, out, size);
}

const char *mnp_msg_type_name(uint8_t type) {
        switch (type) {
        case MNP_MSG_HELLO:
                return "hello";
        case MNP_MSG_HELLO_REPLY:
                return "hello-reply";
        case MNP_MSG_ACK:
                return "ack";
        case MNP_MSG_NAK:
                return "nak";
        case MNP_MSG_HEARTBEAT:
                return "heartbeat";
        case MNP_MSG_SET_DEPTH:
                return "set-depth";
        case MNP_MSG_SET_SPEED:
                return "set-speed";
        case MNP_MSG_START:
                return "start";
        case MNP_MSG_STOP:
                return "stop";
        case MNP_MSG_CLEAR_FAULT:
                return "clear-fault";
        case MNP_MSG_STATUS:
                return "status";
        case MNP_MSG_FAULT:
                return "fault";
        case MNP_MSG_CARTRIDGE:
                return "cartridge";
        default:
                return "unknown";
        }
}

const char *mnp_state_name(uint8_t state) {
        switch (state) {
        case MNP_STATE_BOOTING:
                return "booting";
        case MNP_STATE_IDLE:
                return "idle";
        case MNP_STATE_RUNNING:
                return "running";
        case MNP_STATE_FAULT:
                return "fault";
        default:
                return "unknown";
        }
}

const char *mnp_fault_name(uint8_t code) {
        switch (code) {
        case MNP_FAULT_NONE:
                return "none";
        case MNP_FAULT_MOTOR:
                return "motor";
        case MNP_FAULT_OVERHEAT:
                return "overheat";
        case MNP_FAULT_LEASE_EXPIRED:
                return "lease-expired";
        case MNP_FAULT_HOST_LOST:
                return "host-lost";
        case MNP_FAULT_ACTUATOR:
                return "actuator";
        case MNP_FAULT_BATTERY:
                return "battery-low";
        case MNP_FAULT_CARTRIDGE_REMOVED:
                return "cartridge-removed";
        case MNP_FAULT_INTERNAL:
                return "internal";
        default:
                return "unknown";
        }
}

const char *mnp_nak_reason_name(uint8_t reason) {
        switch (reason) {
        case MNP_NAK_MALFORMED:
                return "malformed";
        case MNP_NAK_UNKNOWN_TYPE:
                return "unknown-type";
        case MNP_NAK_OUT_OF_RANGE:
                return "out-of-range";
        case MNP_NAK_OFF_STEP:
                return "off-step";
        case MNP_NAK_BAD_STATE:
                return "bad-state";
        case MNP_NAK_NO_CARTRIDGE:
                return "no-cartridge";
        case MNP_NAK_FAULT_ACTIVE:
                return "fault-active";
        case MNP_NAK_UNSUPPORTED_VERSION:
                return "unsupported-version";
        case MNP_NAK_NOT_READY:
                return "not-ready";
        default:
                return "unknown";
        }
}
