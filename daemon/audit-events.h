/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The events of the audit trail, built from the daemon's state: which fields each kind carries,
 * how an event reads in the journal, and the journal MESSAGE_ID of each kind.  No D-Bus, no
 * database and (but for mnd_file_sha256_hex) no I/O here, so that the rules are unit-tested on
 * their own; audit.c appends what these build, bus-audit.c serves the log.
 *
 * Patient references are personal data: an event carries them into the audit database (which is
 * 0600 and served only to callers allowed org.microneedle.mnd.audit), never into the journal.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "audit-log.h"
#include "file-hash.h"

/* Kinds the daemon writes besides those audit-log.h names. */
#define MND_AUDIT_STOP          "stop"          /* Stop/StopAll: recorded right after the pen was told */
#define MND_AUDIT_FAULT_CLEARED "fault-cleared" /* ClearFault acknowledged by the pen */
#define MND_AUDIT_LEGACY_IMPORT "legacy-import" /* the old cartridges/sessions files were imported */

/* Who asked: the D-Bus caller of a method. */
struct mnd_audit_caller {
        uint32_t uid;                   /* MND_AUDIT_UNSET when unknown */
        char user[64];                  /* "" when unknown */
        char sender[128];               /* D-Bus unique name */
};

#define MND_AUDIT_EVENT_DETAILS_MAX 8
#define MND_AUDIT_EVENT_TEXT_MAX 96

/* An event and the storage its strings point into (details, numbers formatted as text, the
 * message).  Built in place by the mnd_audit_build_* functions; not movable once built (the
 * event points into it). */
struct mnd_audit_event_buf {
        struct mnd_audit_event event;
        struct mnd_audit_detail details[MND_AUDIT_EVENT_DETAILS_MAX];
        char text[MND_AUDIT_EVENT_DETAILS_MAX][MND_AUDIT_EVENT_TEXT_MAX];
        char message[1024];
};

/* Starts an event of this kind (time: stamped at append). */
void mnd_audit_build(struct mnd_audit_event_buf *b, const char *kind);
/* Adds a detail key=value (printf-style value); silently ignored beyond MND_AUDIT_EVENT_DETAILS_MAX
 * (a programming error: every builder stays below it). */
void mnd_audit_build_detail(struct mnd_audit_event_buf *b, const char *key, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Sets the message (printf-style, truncated at the buffer). */
void mnd_audit_build_message(struct mnd_audit_event_buf *b, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/* Sets uid, user and sender from the caller (NULL: leaves them unset). */
void mnd_audit_build_caller(struct mnd_audit_event_buf *b, const struct mnd_audit_caller *c);

/* The builders, one per kind.  Strings may be NULL ("not recorded"). */
void mnd_audit_build_daemon_start(struct mnd_audit_event_buf *b, const char *version, const char *config_path,
                                  const char *config_hash);
void mnd_audit_build_daemon_stop(struct mnd_audit_event_buf *b, const char *version, const char *reason);
void mnd_audit_build_config_change(struct mnd_audit_event_buf *b, const char *config_path, const char *old_hash,
                                   const char *new_hash);
void mnd_audit_build_pen_connected(struct mnd_audit_event_buf *b, const char *serial, const char *model,
                                   const char *firmware, const char *transport);
void mnd_audit_build_pen_disconnected(struct mnd_audit_event_buf *b, const char *serial, const char *reason);
void mnd_audit_build_cartridge(struct mnd_audit_event_buf *b, bool inserted, const char *serial,
                               const char *cartridge, uint64_t session);

struct mnd_audit_session_info {
        uint64_t id;
        const char *pen;
        const char *area;
        const char *cartridge;
        const char *operator_name;
        const char *patient_ref;
        uint32_t depth_um, speed_hz, planned_duration_s;
};
void mnd_audit_build_session_start(struct mnd_audit_event_buf *b, const struct mnd_audit_session_info *s,
                                   const struct mnd_audit_caller *caller);
/* state: "completed", "stopped" ...; reason: the EndReason (the message). */
void mnd_audit_build_session_end(struct mnd_audit_event_buf *b, const struct mnd_audit_session_info *s,
                                 const char *state, const char *reason, uint64_t needling_ms);
/* A setpoint change: depth_um or speed_hz is MND_AUDIT_UNSET for the one not changed.
 * session 0 / area NULL outside a session. */
void mnd_audit_build_setpoint(struct mnd_audit_event_buf *b, const char *serial, uint64_t session,
                              const char *area, uint32_t depth_um, uint32_t speed_hz,
                              const struct mnd_audit_caller *caller);
/* A refusal: request is the method ("StartSession", "SetDepth" ...), error the D-Bus error name,
 * sentence what the caller was told; the values asked for go into depth/speed/duration/area. */
void mnd_audit_build_refusal(struct mnd_audit_event_buf *b, const char *serial, uint64_t session,
                             const char *request, const char *area, uint32_t depth_um, uint32_t speed_hz,
                             uint32_t duration_s, const char *error, const char *sentence,
                             const struct mnd_audit_caller *caller);
void mnd_audit_build_fault(struct mnd_audit_event_buf *b, const char *serial, uint64_t session, const char *code,
                           const char *sentence);
void mnd_audit_build_lease_expired(struct mnd_audit_event_buf *b, const char *serial, uint64_t session);
void mnd_audit_build_auth_failure(struct mnd_audit_event_buf *b, const char *action, const char *request,
                                  const char *sentence, unsigned suppressed, const struct mnd_audit_caller *caller);
void mnd_audit_build_stop(struct mnd_audit_event_buf *b, const char *serial, uint64_t session, const char *request,
                          const struct mnd_audit_caller *caller);
void mnd_audit_build_verify(struct mnd_audit_event_buf *b, const struct mnd_audit_verify_result *v,
                            const struct mnd_audit_caller *caller);

/* The journal MESSAGE_ID (32 hex digits) of a kind; a kind this daemon does not write gets the
 * id of "other". */
const char *mnd_audit_message_id(const char *kind);
/* The syslog priority of a kind's journal entry. */
int mnd_audit_journal_priority(const char *kind);

/*
 * The journal entry of an appended event: "MESSAGE_ID=", "PRIORITY=", "MESSAGE=" (a sentence),
 * "MND_AUDIT_SEQ=", "MND_AUDIT_KIND=", "MND_AUDIT_HASH=" and one MND_AUDIT_<FIELD>= per recorded
 * field and detail (details as MND_AUDIT_DETAIL_<KEY>, upper-cased, '-' and '.' as '_'); never the
 * patient reference.  *ret is a NULL-terminated array of malloc'd strings (free with
 * mnd_strv_free).  -ENOMEM.
 */
int mnd_audit_journal_fields(const struct mnd_audit_event *e, uint64_t seq, const char *hash, char ***ret);
char **mnd_strv_free(char **l);

/* A simple rate limit: at most burst events per interval. */
struct mnd_ratelimit {
        uint64_t interval_usec;
        unsigned burst;
        uint64_t begin;
        unsigned num;
        unsigned suppressed;            /* refused since the last allowed one */
};
/* true if one more is allowed now (and counts it); false (and counts it as suppressed) if not. */
bool mnd_ratelimit_below(struct mnd_ratelimit *rl, uint64_t now_usec);
/* The number suppressed since the last allowed one, and resets it. */
unsigned mnd_ratelimit_take_suppressed(struct mnd_ratelimit *rl);

/* Printable ASCII (0x21..0x7e; no spaces, tabs or line breaks), 1..32 characters: a cartridge id
 * as the daemon accepts it. */
#define MND_CARTRIDGE_ID_MAX 32
bool mnd_cartridge_id_is_valid(const char *id);
