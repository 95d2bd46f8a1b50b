/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The audit log: who needled with which pen and cartridge, where, how deep and how long, and what
 * the daemon refused; kept so that a clinic can show it years later (21 CFR 11.10(e): secure,
 * computer-generated, time-stamped, recording operator actions, never obscuring earlier entries).
 *
 * Storage: STATE_DIRECTORY/audit.sqlite (SQLite, WAL mode, schema version in PRAGMA user_version)
 * and STATE_DIRECTORY/audit.checkpoint (the last durable (count, head hash), see below).  Both are
 * created 0600: the log holds personal data (operator, patient reference).
 *
 * Append-only and tamper-evident:
 *   - Events are numbered seq = 1, 2, 3 ... without gaps.  Triggers in the database refuse UPDATE
 *     and DELETE of events (a barrier against mistakes, not against someone who drops them).
 *   - hash(seq) = SHA-256(hash(seq - 1) || serialisation(event)), hash(0) = the genesis value
 *     SHA-256("org.microneedle.Mnd1.Audit genesis v1").  The serialisation is canonical and
 *     unambiguous: a format byte, seq and time as fixed-width big-endian integers, then every field
 *     in a fixed order as tag byte + presence + big-endian length + bytes (strings) or fixed-width
 *     value (numbers), so no two different events serialise the same (see audit-log.c).
 *   - mnd_audit_verify() recomputes the whole chain and names the first bad seq.  Found: any edited
 *     field of any row (its hash no longer matches), an edited stored hash (the next row no longer
 *     chains), a deleted row or an inserted row (seq gap or duplicate position; an inserted row
 *     cannot carry a seq between two others), swapped/reordered rows (seq is hashed), and a
 *     truncated tail, as long as a checkpoint beyond the new end exists: the checkpoint file, or an
 *     externally published (count, head hash) passed to mnd_audit_verify_against().
 *   - NOT detectable without a secret or an external witness: someone with write access to the
 *     state directory who knows this (public) algorithm can rewrite the log from some seq onwards
 *     and recompute every later hash, or append forged events, and rewrite or delete the
 *     checkpoint file to match; a wholesale replacement of both files is just as undetectable
 *     locally.  Such a rewrite IS detected against any head hash published before it (printed by
 *     mnctl, kept by a clinic's records system, sent off-site): keep publishing HeadHash.
 *
 * The checkpoint file holds two 4 KiB-aligned slots, each (magic, count, head hash, SHA-256 of
 * the slot); a new checkpoint overwrites the older slot in place, so a torn write destroys at most
 * the slot being written and the other still holds the previous checkpoint.  It is written after
 * every durable commit and only then, so it never claims more than the database durably holds; it
 * is not fsync'd on the append path (a checkpoint lost to a power cut only makes the one that
 * survived older, never wrong).  If at open the database disagrees with the checkpoint (shorter, or
 * a different hash at the checkpoint's seq), the checkpoint file is never written again by that
 * handle, so the evidence stays and every verify keeps failing until an administrator has looked
 * and moved the file aside.  Deleting the checkpoint file loses truncation detection (a new one is
 * started); that is the same limit as above.
 *
 * Durability: each standalone append is one SQLite transaction.  durable = true commits with
 * synchronous=FULL (the WAL is fsync'd before the call returns): use it for every event that
 * precedes a pen action.  durable = false commits with synchronous=NORMAL: the database stays
 * consistent after a power cut but the newest non-durable events may be lost (never an earlier
 * durable one: the WAL is sequential, a durable commit makes all before it durable).  After a
 * crash or SIGKILL no committed event is lost and the chain verifies.
 *
 * Conventions: functions return negative errno; ret_ parameters are untouched on failure;
 * destructors accept NULL and return NULL; nothing logs.  SQLite errors map to: SQLITE_FULL ->
 * -ENOSPC, SQLITE_READONLY -> -EROFS, SQLITE_IOERR -> -EIO (or the OS errno SQLite saw),
 * SQLITE_CORRUPT/NOTADB -> -EBADMSG, SQLITE_BUSY/LOCKED -> -EBUSY, SQLITE_NOMEM -> -ENOMEM,
 * SQLITE_CANTOPEN -> the OS errno or -EIO.  A handle is not thread-safe: one thread uses it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MND_AUDIT_SCHEMA_VERSION 2

#define MND_AUDIT_DB_FILE         "audit.sqlite"
#define MND_AUDIT_CHECKPOINT_FILE "audit.checkpoint"

/* Event kinds the daemon writes.  A kind is 1..32 of [a-z0-9-], starting with a letter; others
 * than these are accepted (newer daemons may add kinds). */
#define MND_AUDIT_DAEMON_START       "daemon-start"
#define MND_AUDIT_DAEMON_STOP        "daemon-stop"
#define MND_AUDIT_PEN_CONNECTED      "pen-connected"
#define MND_AUDIT_PEN_DISCONNECTED   "pen-disconnected"
#define MND_AUDIT_CARTRIDGE_INSERTED "cartridge-inserted"
#define MND_AUDIT_CARTRIDGE_REMOVED  "cartridge-removed"
#define MND_AUDIT_SESSION_START      "session-start"    /* carries the cartridge: marks it used */
#define MND_AUDIT_SETPOINT_CHANGE    "setpoint-change"
#define MND_AUDIT_SESSION_END        "session-end"      /* message: the end reason */
#define MND_AUDIT_REFUSAL            "refusal"          /* message: the sentence the caller got */
#define MND_AUDIT_FAULT              "fault"
#define MND_AUDIT_LEASE_EXPIRED      "lease-expired"
#define MND_AUDIT_AUTH_FAILURE       "auth-failure"
#define MND_AUDIT_CONFIG_CHANGE      "config-change"
#define MND_AUDIT_VERIFY             "verify"

#define MND_AUDIT_KIND_MAX     32
/* Field caps, in bytes (UTF-8).  Longer strings are refused with -E2BIG, never truncated. */
#define MND_AUDIT_ID_MAX       64      /* pen, cartridge, area */
#define MND_AUDIT_NAME_MAX     256     /* operator, patient_ref, user, sender */
#define MND_AUDIT_MESSAGE_MAX  4096    /* message */
#define MND_AUDIT_DETAIL_KEY_MAX   64  /* details: key 1..64 of [a-zA-Z0-9_.-] */
#define MND_AUDIT_DETAIL_VALUE_MAX 1024
#define MND_AUDIT_DETAILS_MAX  32      /* pairs per event */

/* Query: at most this many events a call; a larger limit is refused with -EINVAL (not capped, so
 * that a caller never silently gets less than it asked for); limit 0 means this maximum. */
#define MND_AUDIT_QUERY_MAX    1000

/* "Not recorded" for the numeric fields (depth_um, speed_hz, duration_s, uid).  Session 0 and
 * time 0 have their own meaning (no session; now). */
#define MND_AUDIT_UNSET UINT32_MAX

#define MND_AUDIT_HASH_SIZE 32
#define MND_AUDIT_HASH_HEX_SIZE (2 * MND_AUDIT_HASH_SIZE + 1)

struct mnd_audit_detail {
        const char *key;
        const char *value;
};

/* One event.  Strings: NULL or "" = not recorded (the two are the same value).  UTF-8, no control
 * characters except TAB and LF in message and detail values.  Start from MND_AUDIT_EVENT_INIT so
 * that numeric fields you do not set stay "not recorded". */
struct mnd_audit_event {
        const char *kind;               /* required */
        uint64_t time_usec;             /* CLOCK_REALTIME us; 0 on append: stamped now */
        const char *pen;                /* serial */
        uint64_t session;               /* 0: none */
        const char *cartridge;
        const char *area;
        uint32_t depth_um;              /* MND_AUDIT_UNSET: none */
        uint32_t speed_hz;
        uint32_t duration_s;
        const char *operator;
        const char *patient_ref;
        uint32_t uid;                   /* caller uid; MND_AUDIT_UNSET: none */
        const char *user;               /* caller user name */
        const char *sender;             /* D-Bus unique name */
        const char *message;            /* reason / message */
        const struct mnd_audit_detail *details;  /* free key=value pairs, keys unique */
        size_t n_details;
};

#define MND_AUDIT_EVENT_INIT                                            \
        ((struct mnd_audit_event) {                                     \
                .depth_um = MND_AUDIT_UNSET,                            \
                .speed_hz = MND_AUDIT_UNSET,                            \
                .duration_s = MND_AUDIT_UNSET,                          \
                .uid = MND_AUDIT_UNSET,                                 \
        })

/* An event read back.  The strings and details point into storage the record owns. */
struct mnd_audit_record {
        uint64_t seq;
        struct mnd_audit_event event;
        char hash[MND_AUDIT_HASH_HEX_SIZE];     /* hex */
        void *storage;
};

/* Frees an array of n records (from query or running_sessions); accepts NULL, returns NULL. */
struct mnd_audit_record *mnd_audit_records_free(struct mnd_audit_record *records, size_t n);

/* The scalar fields of a record that are recorded, as D-Bus a{sv} entries: fn is called with
 * the key and a D-Bus type: 's' (value: const char *), 't' (const uint64_t *) or 'u'
 * (const uint32_t *).  Keys: seq t, time t, kind s, pen s, session t, cartridge s, area s,
 * depth_um u, speed_hz u, duration_s u, operator s, patient_ref s, uid u, user s, sender s,
 * message s, hash s.  The details (key "details", a{ss}) are not included: read
 * record->event.details.  Stops at and returns the first negative return of fn. */
int mnd_audit_record_foreach(const struct mnd_audit_record *r,
                             int (*fn)(const char *key, char type, const void *value, void *userdata),
                             void *userdata);

/* Query filter; zero fields do not filter.  Times are CLOCK_REALTIME us: since <= time < until. */
struct mnd_audit_filter {
        uint64_t since;
        uint64_t until;                 /* 0: no upper bound */
        const char *pen;
        uint64_t session;
        const char *cartridge;
        const char *kind;
        uint64_t after_seq;             /* paging: only seq > after_seq */
        unsigned limit;                 /* 0: MND_AUDIT_QUERY_MAX; more is -EINVAL */
};

/* A published head: the log had count events and the newest had this hash. */
struct mnd_audit_checkpoint {
        uint64_t count;
        char head[MND_AUDIT_HASH_HEX_SIZE];
};

struct mnd_audit_verify_result {
        bool ok;
        uint64_t count;                 /* rows found */
        uint64_t first_bad_seq;         /* 0 when ok */
        char head[MND_AUDIT_HASH_HEX_SIZE];     /* the stored hash of the newest row (genesis if none) */
};

struct mnd_audit;

enum {
        MND_AUDIT_OPEN_READ_ONLY = 1 << 0,      /* inspect only: no create, no migration, appends fail -EROFS */
};

/* Opens DIRECTORY/audit.sqlite, creating it or migrating it to MND_AUDIT_SCHEMA_VERSION, and
 * loads the checkpoint.  -EPROTONOSUPPORT for a schema newer than this code, -EBADMSG for a file
 * that is not an audit log.  The directory must exist. */
int mnd_audit_open(const char *directory, unsigned flags, struct mnd_audit **ret);
struct mnd_audit *mnd_audit_close(struct mnd_audit *a);

/* Caps the database size (rounded down to whole pages; 0: no cap): an append that would grow it
 * beyond fails with -ENOSPC, as on a full disk, and once the database fills the cap every append
 * does, however small. */
int mnd_audit_set_max_size(struct mnd_audit *a, uint64_t bytes);

/* Appends one event in its own transaction (or into the open batch, see below).  -EINVAL for a
 * missing or malformed kind, invalid UTF-8, control characters, or bad/duplicate detail keys;
 * -E2BIG for a field over its cap; the SQLite error mapped as above when the commit fails, and then
 * nothing of the event is stored and the log is as before.  On success ret_seq (optional) is the
 * new event's seq and ret_head (optional, MND_AUDIT_HASH_HEX_SIZE bytes) its hash in hex. */
int mnd_audit_append(struct mnd_audit *a, const struct mnd_audit_event *e, bool durable,
                     uint64_t *ret_seq, char *ret_head);

/* Batches: appends between begin and commit are one transaction (for bulk loads and for several
 * events that belong together, e.g. closing every orphaned session at start-up); the durable flag
 * of begin applies to the commit (SQLite cannot change it inside a transaction) and the appends'
 * own flags are ignored.  Nothing is stored until mnd_audit_batch_commit() succeeds; abort, close
 * or a failed append (which ends the batch: commit then returns -ENOENT) discards it all.  -EBUSY
 * if a batch is already open, -ENOENT if none is, -EROFS on a read-only log. */
int mnd_audit_batch_begin(struct mnd_audit *a, bool durable);
int mnd_audit_batch_commit(struct mnd_audit *a);
int mnd_audit_batch_abort(struct mnd_audit *a);

/* Events matching the filter, in seq order.  *ret_records is NULL when *ret_n is 0.  -EINVAL for
 * limit > MND_AUDIT_QUERY_MAX, until < since, or filter strings that could never match (too long,
 * invalid UTF-8). */
int mnd_audit_query(struct mnd_audit *a, const struct mnd_audit_filter *f,
                    struct mnd_audit_record **ret_records, size_t *ret_n);

/* The seq of the newest event: the number of events while the chain is intact. */
int mnd_audit_count(struct mnd_audit *a, uint64_t *ret);
/* The newest event's hash in hex (the genesis value for an empty log). */
int mnd_audit_head_hash(struct mnd_audit *a, char ret[MND_AUDIT_HASH_HEX_SIZE]);

/* Recomputes the whole chain in one read transaction and checks it against the checkpoint file
 * (mnd_audit_verify) or against a head published elsewhere (mnd_audit_verify_against).
 * first_bad_seq: the first seq whose row is missing, out of place or does not hash to its stored
 * hash; for a truncated tail, the first missing seq (count + 1); when the chain is intact but
 * disagrees with the checkpoint's hash (everything up to it was rewritten), the checkpoint's seq.
 * Returns < 0 only when the database cannot be read (-EBADMSG for a corrupt file). */
int mnd_audit_verify(struct mnd_audit *a, struct mnd_audit_verify_result *ret);
int mnd_audit_verify_against(struct mnd_audit *a, const struct mnd_audit_checkpoint *expected,
                             struct mnd_audit_verify_result *ret);

/* The checkpoint last loaded or written, in *ret: 1 if there is one, 2 if there is one and the
 * database disagreed with it at open (it is then frozen, see above: the daemon should say so
 * loudly), 0 if there is none (*ret untouched). */
int mnd_audit_checkpoint(struct mnd_audit *a, struct mnd_audit_checkpoint *ret);

/* Single-use cartridges: > 0 if a session-start event carries this cartridge id (and
 * *ret_session, optional, is the first such session), 0 if never used. */
int mnd_audit_cartridge_used(struct mnd_audit *a, const char *cartridge, uint64_t *ret_session);

/* The highest session number in the log (0 if none): new sessions are numbered above it. */
int mnd_audit_max_session(struct mnd_audit *a, uint64_t *ret);

/* Sessions left running: the session-start events (with session != 0) that no later
 * session-end event for the same session follows, oldest first.  The daemon ends each (appending
 * a session-end with message "daemon-restart") when it starts. */
int mnd_audit_running_sessions(struct mnd_audit *a, struct mnd_audit_record **ret_records, size_t *ret_n);

/* The chain function, public so that tests and external verifiers can recompute it:
 * ret = SHA-256(prev || serialisation(seq, e)).  prev NULL: the genesis value.  e is checked as by
 * append (time_usec 0 is hashed as 0). */
int mnd_audit_event_hash(const uint8_t prev[MND_AUDIT_HASH_SIZE], uint64_t seq, const struct mnd_audit_event *e,
                         uint8_t ret[MND_AUDIT_HASH_SIZE]);
void mnd_audit_hash_to_hex(const uint8_t hash[MND_AUDIT_HASH_SIZE], char ret[MND_AUDIT_HASH_HEX_SIZE]);
