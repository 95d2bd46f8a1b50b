/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libmnp messages: typed payloads, packed little-endian.  See PROTOCOL.md
 * for every layout.  Pure functions; errors are negative errno values.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "frame.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Protocol (message set) versions this library speaks; negotiated in HELLO. */
#define MNP_PROTOCOL_VERSION_MIN 1
#define MNP_PROTOCOL_VERSION_MAX 1

#define MNP_MAX_STR 32          /* model, serial, firmware, cartridge id: printable ASCII */

enum mnp_msg_type {
        MNP_MSG_HELLO = 0x01,           /* host -> pen, answered by HELLO_REPLY */
        MNP_MSG_HELLO_REPLY = 0x02,     /* pen -> host */
        MNP_MSG_ACK = 0x03,             /* both */
        MNP_MSG_NAK = 0x04,             /* both */
        MNP_MSG_HEARTBEAT = 0x05,       /* both; from the host it renews the motion lease */
        MNP_MSG_SET_DEPTH = 0x10,       /* host -> pen, reliable */
        MNP_MSG_SET_SPEED = 0x11,       /* host -> pen, reliable */
        MNP_MSG_START = 0x12,           /* host -> pen, reliable */
        MNP_MSG_STOP = 0x13,            /* host -> pen, reliable, may overtake */
        MNP_MSG_CLEAR_FAULT = 0x14,     /* host -> pen, reliable */
        MNP_MSG_STATUS = 0x20,          /* pen -> host, periodic, unacknowledged */
        MNP_MSG_FAULT = 0x21,           /* pen -> host, reliable */
        MNP_MSG_CARTRIDGE = 0x22,       /* pen -> host, reliable */
};

enum mnp_pen_state {
        MNP_STATE_BOOTING = 0,
        MNP_STATE_IDLE = 1,
        MNP_STATE_RUNNING = 2,
        MNP_STATE_FAULT = 3,
};

/* Fault codes; in fault_flags, code c is bit (c - 1). */
enum mnp_fault {
        MNP_FAULT_NONE = 0,
        MNP_FAULT_MOTOR = 1,              /* "motor" */
        MNP_FAULT_OVERHEAT = 2,           /* "overheat" */
        MNP_FAULT_LEASE_EXPIRED = 3,      /* "lease-expired" */
        MNP_FAULT_HOST_LOST = 4,          /* "host-lost": no frame from the host within the heartbeat timeout */
        MNP_FAULT_ACTUATOR = 5,           /* "actuator": depth not reached in time */
        MNP_FAULT_BATTERY = 6,            /* "battery-low" */
        MNP_FAULT_CARTRIDGE_REMOVED = 7,  /* "cartridge-removed" while running */
        MNP_FAULT_INTERNAL = 8,           /* "internal": firmware watchdog */
        MNP_FAULT_MAX = MNP_FAULT_INTERNAL,
};
#define MNP_FAULT_FLAG(code) (UINT32_C(1) << ((code) - 1))

enum mnp_nak_reason {
        MNP_NAK_MALFORMED = 1,            /* payload length or field encoding wrong */
        MNP_NAK_UNKNOWN_TYPE = 2,
        MNP_NAK_OUT_OF_RANGE = 3,         /* detail: the limit the pen applied */
        MNP_NAK_OFF_STEP = 4,             /* detail: the pen's depth step */
        MNP_NAK_BAD_STATE = 5,            /* e.g. START while running (detail: the pen state) */
        MNP_NAK_NO_CARTRIDGE = 6,
        MNP_NAK_FAULT_ACTIVE = 7,         /* detail: fault_flags */
        MNP_NAK_UNSUPPORTED_VERSION = 8,  /* detail: pen's max version */
        MNP_NAK_NOT_READY = 9,            /* no handshake on this link yet */
        MNP_NAK_MAX = MNP_NAK_NOT_READY,
};

enum mnp_capability {
        MNP_CAP_CARTRIDGE_ID = 1u << 0,
        MNP_CAP_BATTERY = 1u << 1,
        MNP_CAP_TEMPERATURE = 1u << 2,
        MNP_CAP_DEPTH_SENSOR = 1u << 3,
};

struct mnp_hello {
        uint8_t min_version;
        uint8_t max_version;
        uint32_t caps;
        uint16_t heartbeat_ms;          /* host's heartbeat interval; the pen's host-lost timeout is 4x */
};

struct mnp_hello_reply {
        uint16_t hello_seq;             /* seq of the HELLO this answers */
        uint8_t version;                /* chosen protocol version */
        uint32_t caps;
        uint32_t boot_id;               /* random per pen boot; a change means the pen reset */
        uint32_t depth_min_um, depth_max_um, depth_step_um;
        uint16_t speed_min_hz, speed_max_hz;
        uint16_t max_lease_ms;          /* longest lease the pen grants */
        char model[MNP_MAX_STR + 1];
        char serial[MNP_MAX_STR + 1];
        char firmware[MNP_MAX_STR + 1];
};

struct mnp_ack {
        uint16_t seq;
};

struct mnp_nak {
        uint16_t seq;
        uint8_t reason;                 /* enum mnp_nak_reason */
        uint32_t detail;
};

struct mnp_heartbeat {
        uint16_t lease_ms;              /* host -> pen: renew the motion lease for this long; 0: none */
};

struct mnp_set_depth {
        uint32_t depth_um;
};

struct mnp_set_speed {
        uint16_t speed_hz;
};

struct mnp_start {
        uint32_t depth_um;
        uint16_t speed_hz;
        uint16_t lease_ms;              /* > 0 */
};

struct mnp_status {
        uint8_t state;                  /* enum mnp_pen_state */
        uint32_t fault_flags;
        uint32_t depth_set_um, depth_actual_um;
        uint16_t speed_set_hz, speed_actual_hz;
        uint8_t battery_percent;        /* 0..100, 255 = mains or unknown */
        int16_t temperature_dc;         /* tenths of a degree Celsius */
        uint32_t needling_ms;           /* needles moving since the last START */
        uint16_t lease_left_ms;
        char cartridge_id[MNP_MAX_STR + 1];  /* "" = none */
};

struct mnp_fault_event {
        uint8_t code;                   /* enum mnp_fault, the fault that just arose */
        uint32_t fault_flags;           /* all active faults */
};

struct mnp_cartridge_event {
        uint8_t present;                /* 0 removed, 1 inserted */
        char id[MNP_MAX_STR + 1];
};

struct mnp_msg {
        uint8_t type;                   /* enum mnp_msg_type */
        union {
                struct mnp_hello hello;
                struct mnp_hello_reply hello_reply;
                struct mnp_ack ack;
                struct mnp_nak nak;
                struct mnp_heartbeat heartbeat;
                struct mnp_set_depth set_depth;
                struct mnp_set_speed set_speed;
                struct mnp_start start;
                struct mnp_status status;
                struct mnp_fault_event fault;
                struct mnp_cartridge_event cartridge;
        };
};

/* Whether frames of this type are acknowledged (ACK/NAK) and retransmitted. */
bool mnp_msg_type_is_reliable(uint8_t type);

/* Packs m's payload.  Returns its length, -EINVAL if a field is outside its
 * domain (see PROTOCOL.md), -ENOMSG for an unknown type, -ENOBUFS if size is short. */
ssize_t mnp_msg_pack(const struct mnp_msg *m, uint8_t *payload, size_t size);

/* Unpacks a payload of the given type into *ret (written only on success).
 * A payload longer than the layout is accepted and the rest ignored (see
 * versioning rules).  Returns 0, -ENOMSG for an unknown type, -EBADMSG if
 * too short, -EINVAL if a field is outside its domain. */
int mnp_msg_unpack(uint8_t type, const uint8_t *payload, size_t len, struct mnp_msg *ret);

/* mnp_msg_pack + mnp_frame_encode. */
ssize_t mnp_msg_encode(const struct mnp_msg *m, uint16_t seq, uint8_t *out, size_t size);

/* Names for logs and the D-Bus API; "unknown" for values outside the enums. */
const char *mnp_msg_type_name(uint8_t type);
const char *mnp_state_name(uint8_t state);       /* "booting", "idle", "running", "fault" */
const char *mnp_fault_name(uint8_t code);        /* as in enum mnp_fault's comments */
const char *mnp_nak_reason_name(uint8_t reason); /* "malformed", "unknown-type", "out-of-range", "off-step",
                                                    "bad-state", "no-cartridge", "fault-active",
                                                    "unsupported-version", "not-ready" */

#ifdef __cplusplus
}
#endif
