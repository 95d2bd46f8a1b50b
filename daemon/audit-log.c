/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The audit log: SQLite storage, the hash chain and the checkpoint file.  See audit-log.h for
 * the guarantees and their limits.
 *
 * The canonical serialisation of an event (format 1), hashed after the previous hash:
 *
 *     u8  format (1)
 *     u64 seq
 *     u64 time_usec
 *     then for each field in the order of enum field (1 kind .. 15 details):
 *         u8 tag (the field number)
 *         u8 present (0 or 1)
 *         if present: string/blob fields: u32 length, then the bytes
 *                     numeric fields:     u64 value
 *
 * All integers big-endian.  The details blob is itself length-prefixed (u32 count, then per pair
 * u32 key length, key, u32 value length, value) and is stored in the database exactly as hashed,
 * so verification hashes the stored bytes without parsing them.  Every variable-length part has
 * its length in front and every optional part its presence byte, so the byte string determines
 * the event: no two different events serialise the same.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit-log.h"
#include "text.h"
#include "util.h"

#define _cleanup_free_ _cleanup_(freep)
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

static inline void sqlite3_finalizep(sqlite3_stmt **s) {
        if (*s)
                sqlite3_finalize(*s);
}

/* The fields after seq and time, in serialisation order; the table's columns are seq, time_usec,
 * then these (column = field + 1), then hash. */
enum field {
        F_KIND = 1,
        F_PEN,
        F_SESSION,
        F_CARTRIDGE,
        F_AREA,
        F_DEPTH_UM,
        F_SPEED_HZ,
        F_DURATION_S,
        F_OPERATOR,
        F_PATIENT_REF,
        F_UID,
        F_USER,
        F_SENDER,
        F_MESSAGE,
        F_DETAILS,
        _F_MAX,
};

#define COL_SEQ 0
#define COL_TIME 1
#define COL_HASH (_F_MAX + 1)
#define N_COLUMNS (_F_MAX + 2)

#define COLUMNS "seq, time_usec, kind, pen, session, cartridge, area, depth_um, speed_hz, duration_s, " \
        "operator, patient_ref, uid, user, sender, message, details, hash"

static const struct {
        const char *key;        /* a{sv} key */
        char type;              /* 's', 't', 'u', or 'b' (details blob) */
        size_t max;             /* strings: cap in bytes */
        bool multiline;         /* strings: TAB and LF allowed */
} field_info[_F_MAX] = {
        [F_KIND]        = { "kind",        's', MND_AUDIT_KIND_MAX,    false },
        [F_PEN]         = { "pen",         's', MND_AUDIT_ID_MAX,      false },
        [F_SESSION]     = { "session",     't', 0,                     false },
        [F_CARTRIDGE]   = { "cartridge",   's', MND_AUDIT_ID_MAX,      false },
        [F_AREA]        = { "area",        's', MND_AUDIT_ID_MAX,      false },
        [F_DEPTH_UM]    = { "depth_um",    'u', 0,                     false },
        [F_SPEED_HZ]    = { "speed_hz",    'u', 0,                     false },
        [F_DURATION_S]  = { "duration_s",  'u', 0,                     false },
        [F_OPERATOR]    = { "operator",    's', MND_AUDIT_NAME_MAX,    false },
        [F_PATIENT_REF] = { "patient_ref", 's', MND_AUDIT_NAME_MAX,    false },
        [F_UID]         = { "uid",         'u', 0,                     false },
        [F_USER]        = { "user",        's', MND_AUDIT_NAME_MAX,    false },
        [F_SENDER]      = { "sender",      's', MND_AUDIT_NAME_MAX,    false },
        [F_MESSAGE]     = { "message",     's', MND_AUDIT_MESSAGE_MAX, true },
        [F_DETAILS]     = { "details",     'b', 0,                     false },
};

/* One field's value, as appended or as read from a row. */
struct value {
        bool present;
        const void *data;       /* strings and the details blob */
        size_t len;
        uint64_t num;           /* numbers */
};

#define SERIAL_FORMAT 1
#define GENESIS_SEED "org.microneedle.Mnd1.Audit genesis v1"

/* Schema.  Version 1 (never shipped beyond development): no details column, and only the time
 * index.  Version 2 adds details and the indexes for the D-Bus filters, single-use cartridge
 * lookups and orphaned sessions. */
#define SCHEMA_V1_TABLE                                                                 \
        "CREATE TABLE events ("                                                         \
        " seq INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),"                            \
        " time_usec INTEGER NOT NULL,"                                                  \
        " kind TEXT NOT NULL,"                                                          \
        " pen TEXT, session INTEGER, cartridge TEXT, area TEXT,"                        \
        " depth_um INTEGER, speed_hz INTEGER, duration_s INTEGER,"                      \
        " operator TEXT, patient_ref TEXT, uid INTEGER, user TEXT, sender TEXT,"        \
        " message TEXT,"                                                                \
        " hash BLOB NOT NULL CHECK (length(hash) = 32));"                               \
        "CREATE INDEX events_time ON events (time_usec);"                               \
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"                       \
        " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"              \
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"                       \
        " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"

#define SCHEMA_V1_TO_V2                                                                 \
        "ALTER TABLE events ADD COLUMN details BLOB;"                                   \
        "CREATE INDEX events_pen ON events (pen, seq, time_usec);"                      \
        "CREATE INDEX events_session ON events (session, seq);"                         \
        "CREATE INDEX events_cartridge ON events (cartridge, seq);"                     \
        "CREATE INDEX events_kind ON events (kind, seq, time_usec);"                    \
        "CREATE INDEX events_session_end ON events (session) WHERE kind = 'session-end';"

/* The v2 table has hash as its last column (the column order the code relies on), so a fresh
 * database is not created as v1 + migration but directly. */
#define SCHEMA_V2                                                                       \
        "CREATE TABLE events ("                                                         \
        " seq INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),"                            \
        " time_usec INTEGER NOT NULL,"                                                  \
        " kind TEXT NOT NULL,"                                                          \
        " pen TEXT, session INTEGER, cartridge TEXT, area TEXT,"                        \
        " depth_um INTEGER, speed_hz INTEGER, duration_s INTEGER,"                      \
        " operator TEXT, patient_ref TEXT, uid INTEGER, user TEXT, sender TEXT,"        \
        " message TEXT, details BLOB,"                                                  \
        " hash BLOB NOT NULL CHECK (length(hash) = 32));"                               \
        "CREATE INDEX events_time ON events (time_usec);"                               \
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"                       \
        " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"              \
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"                       \
        " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"              \
        "CREATE INDEX events_pen ON events (pen, seq, time_usec);"                      \
        "CREATE INDEX events_session ON events (session, seq);"                         \
        "CREATE INDEX events_cartridge ON events (cartridge, seq);"                     \
        "CREATE INDEX events_kind ON events (kind, seq, time_usec);"                    \
        "CREATE INDEX events_session_end ON events (session) WHERE kind = 'session-end';"

enum stmt {
        STMT_BEGIN_WRITE,
        STMT_BEGIN_READ,
        STMT_COMMIT,
        STMT_ROLLBACK,
        STMT_LAST,
        STMT_INSERT,
        STMT_HASH_AT,
        STMT_ALL,
        STMT_CARTRIDGE_USED,
        STMT_MAX_SESSION,
        STMT_RUNNING,
        _STMT_MAX,
};

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_BEGIN_WRITE]    = "BEGIN IMMEDIATE",
        [STMT_BEGIN_READ]     = "BEGIN DEFERRED",
        [STMT_COMMIT]         = "COMMIT",
        [STMT_ROLLBACK]       = "ROLLBACK",
        [STMT_LAST]           = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1",
        [STMT_INSERT]         = "INSERT INTO events (" COLUMNS ") VALUES "
                                "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        [STMT_HASH_AT]        = "SELECT hash FROM events WHERE seq = ?1",
        [STMT_ALL]            = "SELECT " COLUMNS " FROM events ORDER BY seq",
        /* "+kind": the cartridge index, not the kind index (a kind matches a large share of all rows). */
        [STMT_CARTRIDGE_USED] = "SELECT session FROM events WHERE cartridge = ?1 AND +kind = 'session-start' "
                                "ORDER BY seq LIMIT 1",
        [STMT_MAX_SESSION]    = "SELECT max(session) FROM events",
        [STMT_RUNNING]        = "SELECT " COLUMNS " FROM events AS s "
                                "WHERE s.kind = 'session-start' AND s.session IS NOT NULL AND NOT EXISTS "
                                "(SELECT 1 FROM events AS e WHERE e.kind = 'session-end' "
                                " AND e.session = s.session AND e.seq > s.seq) "
                                "ORDER BY s.seq",
};

/* Query filters, in the order of their bits and bound parameters (?2 .. ?7). */
enum {
        Q_PEN       = 1 << 0,
        Q_SESSION   = 1 << 1,
        Q_CARTRIDGE = 1 << 2,
        Q_KIND      = 1 << 3,
        Q_SINCE     = 1 << 4,
        Q_UNTIL     = 1 << 5,
        _Q_COMBINATIONS = 1 << 6,
};

/* With pen, session or cartridge given, kind is compared as "+kind" so that the planner uses
 * the far more selective index of the other (a kind matches a large share of all rows). */
#define QUERY_KIND_UNINDEXED " AND +kind = ?5"

static const char *const query_clause[] = {
        " AND pen = ?2",
        " AND session = ?3",
        " AND cartridge = ?4",
        " AND kind = ?5",             /* used when kind is the only equality filter */
        " AND time_usec >= ?6",
        " AND time_usec < ?7",
};

#define CHECKPOINT_MAGIC "MNDAUDCK"
#define CHECKPOINT_VERSION 1
#define CHECKPOINT_SLOT_SIZE 4096
#define CHECKPOINT_RECORD_SIZE (8 + 4 + 4 + 8 + MND_AUDIT_HASH_SIZE + MND_AUDIT_HASH_SIZE)

struct buffer {
        uint8_t *data;
        size_t len, allocated;
};

struct mnd_audit {
        sqlite3 *db;
        char *directory;
        bool read_only;

        sqlite3_stmt *stmt[_STMT_MAX];
        sqlite3_stmt *query[_Q_COMBINATIONS];
        bool synchronous_full;          /* PRAGMA synchronous is FULL (else NORMAL) */
        uint64_t max_pages;             /* mnd_audit_set_max_size(); 0: no cap */

        /* The newest event, valid inside a write transaction (and in a batch). */
        uint64_t last_seq;
        uint8_t last_hash[MND_AUDIT_HASH_SIZE];
        bool in_batch;

        int checkpoint_fd;              /* -1: none (read-only directory) */
        bool checkpoint_writable;
        bool have_checkpoint;
        bool checkpoint_frozen;         /* the database disagreed with it at open */
        uint64_t checkpoint_count;
        uint8_t checkpoint_head[MND_AUDIT_HASH_SIZE];

        struct buffer serial;           /* serialisation scratch */
        struct buffer details;          /* details blob scratch */
};

static uint8_t genesis[MND_AUDIT_HASH_SIZE];
static bool genesis_ready;

static int crypto_ready(void) {
        if (sodium_init() < 0)
                return -EIO;
        if (!genesis_ready) {
                crypto_hash_sha256(genesis, (const unsigned char *) GENESIS_SEED, strlen(GENESIS_SEED));
                genesis_ready = true;
        }
        return 0;
}

/* ---- errors ---- */

static int errno_from_sqlite(sqlite3 *db, int rc) {
        int e;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_IOERR:
                if (rc == SQLITE_IOERR_NOMEM)
                        return -ENOMEM;
                e = db ? sqlite3_system_errno(db) : 0;
                return e > 0 ? -e : -EIO;
        case SQLITE_CANTOPEN:
                e = db ? sqlite3_system_errno(db) : 0;
                return e > 0 ? -e : -EIO;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_RANGE:
        case SQLITE_MISUSE:
                return -EINVAL;
        default:
                return -EIO;
        }
}

/* ---- small helpers ---- */

static int buffer_reserve(struct buffer *b, size_t extra) {
        size_t need, a;
        uint8_t *p;

        if (extra > SIZE_MAX - b->len)
                return -ENOMEM;
        need = b->len + extra;
        if (need <= b->allocated)
                return 0;
        a = b->allocated ? b->allocated : 1024;
        while (a < need)
                a = a > SIZE_MAX / 2 ? need : a * 2;
        p = realloc(b->data, a);
        if (!p)
                return -ENOMEM;
        b->data = p;
        b->allocated = a;
        return 0;
}

static void put_be32(uint8_t *p, uint32_t v) {
        for (int i = 3; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static void put_be64(uint8_t *p, uint64_t v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p) {
        return (uint64_t) get_be32(p) << 32 | get_be32(p + 4);
}

static int buffer_put_bytes(struct buffer *b, const void *data, size_t len) {
        int r = buffer_reserve(b, len);

        if (r < 0)
                return r;
        if (len > 0)
                memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

static int buffer_put_be32(struct buffer *b, uint32_t v) {
        uint8_t p[4];

        put_be32(p, v);
        return buffer_put_bytes(b, p, sizeof p);
}

static int check_string(const char *s, size_t max, bool multiline) {
        size_t n;

        if (isempty(s))
                return 0;
        n = strlen(s);
        if (n > max)
                return -E2BIG;
        if (!mnd_text_is_valid(s, n, multiline))
                return -EINVAL;
        return 0;
}

static bool kind_is_valid(const char *k) {
        size_t n;

        if (isempty(k))
                return false;
        n = strlen(k);
        if (n > MND_AUDIT_KIND_MAX || !(k[0] >= 'a' && k[0] <= 'z'))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '-'))
                        return false;
        return true;
}

static bool detail_key_is_valid(const char *k) {
        size_t n;

        if (isempty(k))
                return false;
        n = strlen(k);
        if (n > MND_AUDIT_DETAIL_KEY_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((k[i] >= 'a' && k[i] <= 'z') || (k[i] >= 'A' && k[i] <= 'Z') ||
                      (k[i] >= '0' && k[i] <= '9') || k[i] == '_' || k[i] == '.' || k[i] == '-'))
                        return false;
        return true;
}

static int event_check(const struct mnd_audit_event *e) {
        const char *strings[_F_MAX] = {
                [F_PEN] = e->pen, [F_CARTRIDGE] = e->cartridge, [F_AREA] = e->area,
                [F_OPERATOR] = e->operator, [F_PATIENT_REF] = e->patient_ref, [F_USER] = e->user,
                [F_SENDER] = e->sender, [F_MESSAGE] = e->message,
        };
        int r;

        if (isempty(e->kind))
                return -EINVAL;
        if (strlen(e->kind) > MND_AUDIT_KIND_MAX)
                return -E2BIG;
        if (!kind_is_valid(e->kind))
                return -EINVAL;
        for (int f = F_PEN; f < _F_MAX; f++) {
                if (field_info[f].type != 's')
                        continue;
                r = check_string(strings[f], field_info[f].max, field_info[f].multiline);
                if (r < 0)
                        return r;
        }
        if (e->n_details > MND_AUDIT_DETAILS_MAX)
                return -E2BIG;
        if (e->n_details > 0 && !e->details)
                return -EINVAL;
        for (size_t i = 0; i < e->n_details; i++) {
                if (!e->details[i].key)
                        return -EINVAL;
                if (strlen(e->details[i].key) > MND_AUDIT_DETAIL_KEY_MAX)
                        return -E2BIG;
                if (!detail_key_is_valid(e->details[i].key))
                        return -EINVAL;
                r = check_string(e->details[i].value, MND_AUDIT_DETAIL_VALUE_MAX, true);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (streq(e->details[i].key, e->details[j].key))
                                return -EINVAL;
        }
        return 0;
}

static int details_encode(const struct mnd_audit_event *e, struct buffer *b) {
        int r;

        b->len = 0;
        if (e->n_details == 0)
                return 0;
        r = buffer_put_be32(b, (uint32_t) e->n_details);
        for (size_t i = 0; r >= 0 && i < e->n_details; i++) {
                const char *v = strempty(e->details[i].value);

                r = buffer_put_be32(b, (uint32_t) strlen(e->details[i].key));
                if (r >= 0)
                        r = buffer_put_bytes(b, e->details[i].key, strlen(e->details[i].key));
                if (r >= 0)
                        r = buffer_put_be32(b, (uint32_t) strlen(v));
                if (r >= 0)
                        r = buffer_put_bytes(b, v, strlen(v));
        }
        return r;
}

static void string_value(struct value *v, const char *s) {
        *v = isempty(s) ? (struct value) {} : (struct value) { .present = true, .data = s, .len = strlen(s) };
}

static void u32_value(struct value *v, uint32_t n) {
        *v = n == MND_AUDIT_UNSET ? (struct value) {} : (struct value) { .present = true, .num = n };
}

/* The field values of an event being appended; details_blob is its encoded details. */
static void event_values(const struct mnd_audit_event *e, const struct buffer *details_blob,
                         struct value v[_F_MAX]) {
        string_value(&v[F_KIND], e->kind);
        string_value(&v[F_PEN], e->pen);
        v[F_SESSION] = e->session == 0 ? (struct value) {} : (struct value) { .present = true, .num = e->session };
        string_value(&v[F_CARTRIDGE], e->cartridge);
        string_value(&v[F_AREA], e->area);
        u32_value(&v[F_DEPTH_UM], e->depth_um);
        u32_value(&v[F_SPEED_HZ], e->speed_hz);
        u32_value(&v[F_DURATION_S], e->duration_s);
        string_value(&v[F_OPERATOR], e->operator);
        string_value(&v[F_PATIENT_REF], e->patient_ref);
        u32_value(&v[F_UID], e->uid);
        string_value(&v[F_USER], e->user);
        string_value(&v[F_SENDER], e->sender);
        string_value(&v[F_MESSAGE], e->message);
        v[F_DETAILS] = details_blob->len == 0 ? (struct value) {} :
                (struct value) { .present = true, .data = details_blob->data, .len = details_blob->len };
}

/* The field values of a row of an "SELECT " COLUMNS statement.  -EBADMSG if a column has a type
 * the code never writes there. */
static int row_values(sqlite3_stmt *s, struct value v[_F_MAX]) {
        for (int f = F_KIND; f < _F_MAX; f++) {
                int col = f + 1, type = sqlite3_column_type(s, col);

                v[f] = (struct value) {};
                if (type == SQLITE_NULL)
                        continue;
                if (field_info[f].type == 's' || field_info[f].type == 'b') {
                        if (type != SQLITE_TEXT && type != SQLITE_BLOB)
                                return -EBADMSG;
                        v[f].data = sqlite3_column_blob(s, col);
                        v[f].len = (size_t) sqlite3_column_bytes(s, col);
                        if (!v[f].data && v[f].len > 0)
                                return -ENOMEM;
                        v[f].present = true;
                } else {
                        if (type != SQLITE_INTEGER)
                                return -EBADMSG;
                        v[f].num = (uint64_t) sqlite3_column_int64(s, col);
                        v[f].present = true;
                }
        }
        return 0;
}

static int serialise(struct buffer *b, const uint8_t prev[MND_AUDIT_HASH_SIZE], uint64_t seq, uint64_t time_usec,
                     const struct value v[_F_MAX]) {
        size_t size = MND_AUDIT_HASH_SIZE + 1 + 8 + 8;
        uint8_t *p;
        int r;

        for (int f = F_KIND; f < _F_MAX; f++) {
                size += 2;
                if (!v[f].present)
                        continue;
                if (field_info[f].type == 's' || field_info[f].type == 'b') {
                        if (v[f].len > UINT32_MAX || v[f].len > SIZE_MAX / 2)
                                return -E2BIG;
                        size += 4 + v[f].len;
                } else
                        size += 8;
        }
        b->len = 0;
        r = buffer_reserve(b, size);
        if (r < 0)
                return r;

        p = b->data;
        memcpy(p, prev, MND_AUDIT_HASH_SIZE);
        p += MND_AUDIT_HASH_SIZE;
        *p++ = SERIAL_FORMAT;
        put_be64(p, seq);
        p += 8;
        put_be64(p, time_usec);
        p += 8;
        for (int f = F_KIND; f < _F_MAX; f++) {
                *p++ = (uint8_t) f;
                *p++ = v[f].present;
                if (!v[f].present)
                        continue;
                if (field_info[f].type == 's' || field_info[f].type == 'b') {
                        put_be32(p, (uint32_t) v[f].len);
                        p += 4;
                        if (v[f].len > 0)
                                memcpy(p, v[f].data, v[f].len);
                        p += v[f].len;
                } else {
                        put_be64(p, v[f].num);
                        p += 8;
                }
        }
        assert((size_t) (p - b->data) == size);
        b->len = size;
        return 0;
}

static int hash_values(struct buffer *b, const uint8_t prev[MND_AUDIT_HASH_SIZE], uint64_t seq, uint64_t time_usec,
                       const struct value v[_F_MAX], uint8_t ret[MND_AUDIT_HASH_SIZE]) {
        int r = serialise(b, prev, seq, time_usec, v);

        if (r < 0)
                return r;
        crypto_hash_sha256(ret, b->data, b->len);
        return 0;
}

void mnd_audit_hash_to_hex(const uint8_t hash[MND_AUDIT_HASH_SIZE], char ret[MND_AUDIT_HASH_HEX_SIZE]) {
        sodium_bin2hex(ret, MND_AUDIT_HASH_HEX_SIZE, hash, MND_AUDIT_HASH_SIZE);
}

static int hash_from_hex(const char *hex, uint8_t ret[MND_AUDIT_HASH_SIZE]) {
        uint8_t h[MND_AUDIT_HASH_SIZE];
        size_t n;

        if (!hex || strlen(hex) != 2 * MND_AUDIT_HASH_SIZE)
                return -EINVAL;
        if (sodium_hex2bin(h, sizeof h, hex, strlen(hex), NULL, &n, NULL) < 0 || n != sizeof h)
                return -EINVAL;
        memcpy(ret, h, sizeof h);
        return 0;
}

int mnd_audit_event_hash(const uint8_t prev[MND_AUDIT_HASH_SIZE], uint64_t seq, const struct mnd_audit_event *e,
                         uint8_t ret[MND_AUDIT_HASH_SIZE]) {
        struct buffer serial = {}, details = {};
        struct value v[_F_MAX];
        uint8_t h[MND_AUDIT_HASH_SIZE];
        int r;

        if (!e || !ret || seq == 0)
                return -EINVAL;
        r = crypto_ready();
        if (r < 0)
                return r;
        r = event_check(e);
        if (r < 0)
                return r;
        r = details_encode(e, &details);
        if (r >= 0) {
                event_values(e, &details, v);
                r = hash_values(&serial, prev ?: genesis, seq, e->time_usec, v, h);
        }
        free(serial.data);
        free(details.data);
        if (r < 0)
                return r;
        memcpy(ret, h, sizeof h);
        return 0;
}

/* ---- statements and transactions ---- */

static int prepare(struct mnd_audit *a, const char *sql, sqlite3_stmt **ret) {
        int rc = sqlite3_prepare_v3(a->db, sql, -1, SQLITE_PREPARE_PERSISTENT, ret, NULL);

        return rc == SQLITE_OK ? 0 : errno_from_sqlite(a->db, rc);
}

/* Runs a statement without results (or ignoring them) and resets it. */
static int run(struct mnd_audit *a, enum stmt which) {
        sqlite3_stmt *s = a->stmt[which];
        int rc;

        do
                rc = sqlite3_step(s);
        while (rc == SQLITE_ROW);
        sqlite3_reset(s);
        return rc == SQLITE_DONE ? 0 : errno_from_sqlite(a->db, rc);
}

static void rollback(struct mnd_audit *a) {
        if (!sqlite3_get_autocommit(a->db))
                (void) run(a, STMT_ROLLBACK);
}

static int exec(struct mnd_audit *a, const char *sql) {
        int rc = sqlite3_exec(a->db, sql, NULL, NULL, NULL);

        return rc == SQLITE_OK ? 0 : errno_from_sqlite(a->db, rc);
}

/* Not a cached statement: some PRAGMAs, synchronous among them, act when they are prepared. */
static int set_synchronous(struct mnd_audit *a, bool durable) {
        int r;

        if (a->synchronous_full == durable)
                return 0;
        r = exec(a, durable ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
        if (r < 0)
                return r;
        a->synchronous_full = durable;
        return 0;
}

/* Reads the newest event into last_seq/last_hash. */
static int load_last(struct mnd_audit *a) {
        sqlite3_stmt *s = a->stmt[STMT_LAST];
        int rc, r = 0;

        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                const void *h = sqlite3_column_blob(s, 1);
                sqlite3_int64 seq = sqlite3_column_int64(s, 0);

                if (seq <= 0 || !h || sqlite3_column_bytes(s, 1) != MND_AUDIT_HASH_SIZE)
                        r = -EBADMSG;
                else {
                        a->last_seq = (uint64_t) seq;
                        memcpy(a->last_hash, h, MND_AUDIT_HASH_SIZE);
                }
        } else if (rc == SQLITE_DONE) {
                a->last_seq = 0;
                memcpy(a->last_hash, genesis, MND_AUDIT_HASH_SIZE);
        } else
                r = errno_from_sqlite(a->db, rc);
        sqlite3_reset(s);
        return r;
}

/* The stored hash of event seq: 1 found, 0 no such row. */
static int hash_at(struct mnd_audit *a, uint64_t seq, uint8_t ret[MND_AUDIT_HASH_SIZE]) {
        sqlite3_stmt *s = a->stmt[STMT_HASH_AT];
        int rc, r;

        if (seq > INT64_MAX)
                return 0;
        sqlite3_bind_int64(s, 1, (sqlite3_int64) seq);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                const void *h = sqlite3_column_blob(s, 0);

                if (h && sqlite3_column_bytes(s, 0) == MND_AUDIT_HASH_SIZE) {
                        memcpy(ret, h, MND_AUDIT_HASH_SIZE);
                        r = 1;
                } else
                        r = -EBADMSG;
        } else if (rc == SQLITE_DONE)
                r = 0;
        else
                r = errno_from_sqlite(a->db, rc);
        sqlite3_reset(s);
        return r;
}

/* ---- the checkpoint file ---- */

static void checkpoint_encode(uint64_t count, const uint8_t head[MND_AUDIT_HASH_SIZE],
                              uint8_t buf[CHECKPOINT_RECORD_SIZE]) {
        memcpy(buf, CHECKPOINT_MAGIC, 8);
        put_be32(buf + 8, CHECKPOINT_VERSION);
        put_be32(buf + 12, 0);
        put_be64(buf + 16, count);
        memcpy(buf + 24, head, MND_AUDIT_HASH_SIZE);
        crypto_hash_sha256(buf + 24 + MND_AUDIT_HASH_SIZE, buf, 24 + MND_AUDIT_HASH_SIZE);
}

static bool checkpoint_decode(const uint8_t buf[CHECKPOINT_RECORD_SIZE], uint64_t *ret_count,
                              uint8_t ret_head[MND_AUDIT_HASH_SIZE]) {
        uint8_t check[MND_AUDIT_HASH_SIZE];

        if (memcmp(buf, CHECKPOINT_MAGIC, 8) != 0 || get_be32(buf + 8) != CHECKPOINT_VERSION)
                return false;
        crypto_hash_sha256(check, buf, 24 + MND_AUDIT_HASH_SIZE);
        if (sodium_memcmp(check, buf + 24 + MND_AUDIT_HASH_SIZE, sizeof check) != 0)
                return false;
        if (get_be64(buf + 16) == 0)
                return false;
        *ret_count = get_be64(buf + 16);
        memcpy(ret_head, buf + 24, MND_AUDIT_HASH_SIZE);
        return true;
}

static int fsync_directory(const char *directory) {
        _cleanup_(closep) int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

/* Opens (creates) the checkpoint file and loads the newer valid slot.  A directory we cannot
 * write leaves a read-only (or no) checkpoint. */
static int checkpoint_open(struct mnd_audit *a) {
        _cleanup_free_ char *path = NULL;
        uint8_t buf[CHECKPOINT_RECORD_SIZE];
        struct stat st;
        int fd = -1;

        if (asprintf(&path, "%s/" MND_AUDIT_CHECKPOINT_FILE, a->directory) < 0)
                return -ENOMEM;

        if (!a->read_only) {
                fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
                if (fd >= 0)
                        a->checkpoint_writable = true;
                else if (!(errno == EROFS || errno == EACCES || errno == EPERM))
                        return -errno;
        }
        if (fd < 0) {
                fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
                if (fd < 0)
                        return errno == ENOENT ? 0 : -errno;
        }
        a->checkpoint_fd = fd;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        if (st.st_size == 0 && a->checkpoint_writable) {
                /* New: give it both slots now, so later writes never change its size, and make
                 * its existence durable. */
                if (ftruncate(fd, 2 * CHECKPOINT_SLOT_SIZE) < 0 || fsync(fd) < 0)
                        return -errno;
                return fsync_directory(a->directory);
        }

        for (unsigned slot = 0; slot < 2; slot++) {
                uint8_t head[MND_AUDIT_HASH_SIZE];
                uint64_t count;
                ssize_t n = pread(fd, buf, sizeof buf, (off_t) slot * CHECKPOINT_SLOT_SIZE);

                if (n < 0)
                        return -errno;
                if ((size_t) n != sizeof buf || !checkpoint_decode(buf, &count, head))
                        continue;
                if (!a->have_checkpoint || count > a->checkpoint_count) {
                        a->have_checkpoint = true;
                        a->checkpoint_count = count;
                        memcpy(a->checkpoint_head, head, sizeof head);
                }
        }
        return 0;
}

/* After a durable commit: record (last_seq, last_hash).  A failure here does not undo the
 * commit (the event is stored); the checkpoint simply stays older. */
static void checkpoint_write(struct mnd_audit *a) {
        uint8_t buf[CHECKPOINT_RECORD_SIZE];

        if (!a->checkpoint_writable || a->checkpoint_frozen || a->last_seq == 0)
                return;
        if (a->have_checkpoint && a->checkpoint_count == a->last_seq)
                return;
        checkpoint_encode(a->last_seq, a->last_hash, buf);
        if (pwrite(a->checkpoint_fd, buf, sizeof buf, (off_t) (a->last_seq % 2) * CHECKPOINT_SLOT_SIZE) !=
            (ssize_t) sizeof buf)
                return;
        a->have_checkpoint = true;
        a->checkpoint_count = a->last_seq;
        memcpy(a->checkpoint_head, a->last_hash, MND_AUDIT_HASH_SIZE);
}

/* At open: does the database hold the checkpointed event with the checkpointed hash? */
static int checkpoint_check(struct mnd_audit *a) {
        uint8_t h[MND_AUDIT_HASH_SIZE];
        int r;

        if (!a->have_checkpoint)
                return 0;
        r = hash_at(a, a->checkpoint_count, h);
        if (r < 0)
                return r;
        if (r == 0 || sodium_memcmp(h, a->checkpoint_head, sizeof h) != 0)
                a->checkpoint_frozen = true;
        return 0;
}

int mnd_audit_checkpoint(struct mnd_audit *a, struct mnd_audit_checkpoint *ret) {
        if (!a || !ret)
                return -EINVAL;
        if (!a->have_checkpoint)
                return 0;
        ret->count = a->checkpoint_count;
        mnd_audit_hash_to_hex(a->checkpoint_head, ret->head);
        return a->checkpoint_frozen ? 2 : 1;
}

/* ---- open, migrate, close ---- */

/* The one integer a statement without parameters answers (a PRAGMA, a count).
 * Prepared afresh each time: a cached PRAGMA statement may answer from prepare time. */
static int query_int(struct mnd_audit *a, const char *sql, int64_t *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *s = NULL;
        int r, rc;

        r = prepare(a, sql, &s);
        if (r < 0)
                return r;
        rc = sqlite3_step(s);
        if (rc != SQLITE_ROW)
                return errno_from_sqlite(a->db, rc) ?: -EBADMSG;
        *ret = sqlite3_column_int64(s, 0);
        return 0;
}

static int schema_version(struct mnd_audit *a, int *ret) {
        int64_t v;
        int r;

        r = query_int(a, "PRAGMA user_version", &v);
        if (r < 0)
                return r;
        *ret = (int) v;
        return 0;
}

static int schema_is_empty(struct mnd_audit *a) {
        int64_t n;
        int r;

        r = query_int(a, "SELECT count(*) FROM sqlite_schema", &n);
        if (r < 0)
                return r;
        return n == 0;
}

/* Creates or migrates the schema in one transaction. */
static int schema_setup(struct mnd_audit *a) {
        int version, r;

        r = schema_version(a, &version);
        if (r < 0)
                return r;
        if (version == MND_AUDIT_SCHEMA_VERSION)
                return 0;
        if (version > MND_AUDIT_SCHEMA_VERSION)
                return -EPROTONOSUPPORT;
        if (version < 0)
                return -EBADMSG;
        if (a->read_only)
                return -EROFS;

        r = exec(a, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        /* Again, now that we hold the write lock. */
        r = schema_version(a, &version);
        if (r < 0)
                goto fail;
        switch (version) {
        case 0:
                r = schema_is_empty(a);
                if (r < 0)
                        goto fail;
                if (r == 0) {
                        r = -EBADMSG;   /* some other database */
                        goto fail;
                }
                r = exec(a, SCHEMA_V2);
                break;
        case 1:
                r = exec(a, SCHEMA_V1_TO_V2);
                break;
        case MND_AUDIT_SCHEMA_VERSION:
                r = 0;
                break;
        default:
                r = version > MND_AUDIT_SCHEMA_VERSION ? -EPROTONOSUPPORT : -EBADMSG;
                break;
        }
        if (r < 0)
                goto fail;
        r = exec(a, "PRAGMA user_version = " STRINGIFY(MND_AUDIT_SCHEMA_VERSION));
        if (r < 0)
                goto fail;
        r = exec(a, "COMMIT");
        if (r < 0)
                goto fail;
        return 0;

fail:
        if (!sqlite3_get_autocommit(a->db))
                (void) exec(a, "ROLLBACK");
        return r;
}

struct mnd_audit *mnd_audit_close(struct mnd_audit *a) {
        if (!a)
                return NULL;
        if (a->db) {
                if (a->in_batch)
                        rollback(a);
                for (size_t i = 0; i < ELEMENTSOF(a->stmt); i++)
                        sqlite3_finalize(a->stmt[i]);
                for (size_t i = 0; i < ELEMENTSOF(a->query); i++)
                        sqlite3_finalize(a->query[i]);
                sqlite3_close(a->db);
        }
        if (a->checkpoint_fd >= 0)
                close(a->checkpoint_fd);
        free(a->serial.data);
        free(a->details.data);
        free(a->directory);
        return mfree(a);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct mnd_audit *, mnd_audit_close);

int mnd_audit_open(const char *directory, unsigned flags, struct mnd_audit **ret) {
        _cleanup_(mnd_audit_closep) struct mnd_audit *a = NULL;
        _cleanup_free_ char *path = NULL;
        int r, rc, open_flags;

        if (isempty(directory) || !ret || (flags & ~MND_AUDIT_OPEN_READ_ONLY))
                return -EINVAL;
        r = crypto_ready();
        if (r < 0)
                return r;

        a = calloc(1, sizeof *a);
        if (!a)
                return -ENOMEM;
        a->checkpoint_fd = -1;
        a->read_only = flags & MND_AUDIT_OPEN_READ_ONLY;
        a->directory = strdup(directory);
        if (!a->directory)
                return -ENOMEM;
        if (asprintf(&path, "%s/" MND_AUDIT_DB_FILE, directory) < 0)
                return -ENOMEM;

        if (!a->read_only) {
                /* Create it ourselves so that it is 0600 whatever the umask: it holds personal
                 * data.  SQLite gives the -wal and -shm files the database's mode. */
                int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);

                if (fd >= 0)
                        close(fd);
                else if (errno == ENOENT || errno == ENOTDIR)
                        return -errno;
        }

        open_flags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW | SQLITE_OPEN_EXRESCODE |
                (a->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE);
        rc = sqlite3_open_v2(path, &a->db, open_flags, NULL);
        if (rc != SQLITE_OK)
                return a->db ? errno_from_sqlite(a->db, rc) : -ENOMEM;
        sqlite3_extended_result_codes(a->db, 1);
        sqlite3_busy_timeout(a->db, 250);
        /* A database file is data, not code: no writable schema tricks, no functions with side
         * effects called from a schema someone edited. */
        sqlite3_db_config(a->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
        sqlite3_db_config(a->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);

        if (!a->read_only) {
                _cleanup_(sqlite3_finalizep) sqlite3_stmt *s = NULL;

                r = prepare(a, "PRAGMA journal_mode = WAL", &s);
                if (r < 0)
                        return r;
                rc = sqlite3_step(s);
                if (rc != SQLITE_ROW)
                        return errno_from_sqlite(a->db, rc) ?: -EIO;
                if (strcasecmp((const char *) sqlite3_column_text(s, 0) ?: "", "wal") != 0)
                        return -EROFS;  /* a read-only file in rollback mode: cannot switch */
        }
        r = exec(a, "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864;");
        if (r < 0)
                return r;
        a->synchronous_full = true;

        r = schema_setup(a);
        if (r < 0)
                return r;

        for (size_t i = 0; i < ELEMENTSOF(a->stmt); i++) {
                r = prepare(a, stmt_sql[i], &a->stmt[i]);
                if (r < 0)
                        return r;
        }

        r = checkpoint_open(a);
        if (r < 0)
                return r;
        r = checkpoint_check(a);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(a);
        return 0;
}

int mnd_audit_set_max_size(struct mnd_audit *a, uint64_t bytes) {
        int64_t page_size, pages, ignored;
        char sql[64];
        int r;

        if (!a)
                return -EINVAL;
        r = query_int(a, "PRAGMA page_size", &page_size);
        if (r < 0)
                return r;
        if (page_size <= 0)
                return -EIO;

        /* 0: SQLite's own maximum.  A cap below one page is one page (SQLite
         * raises it to the current size anyway). */
        pages = bytes == 0 ? 0xfffffffe : (int64_t) MIN(bytes / (uint64_t) page_size, (uint64_t) 0xfffffffe);
        if (pages == 0)
                pages = 1;
        a->max_pages = bytes == 0 ? 0 : (uint64_t) pages;
        /* PRAGMA takes no bound parameters; the number is ours, formatted, not user text. */
        snprintf(sql, sizeof sql, "PRAGMA max_page_count = %" PRIi64, pages);
        return query_int(a, sql, &ignored);
}

/* ---- append ---- */

/* A capped log is full once it fills its pages: from then on nothing is
 * appended, not even an event small enough for the slack left in some page,
 * so what is refused does not depend on how full the last pages happen to be. */
static int check_room(struct mnd_audit *a) {
        int64_t pages;
        int r;

        if (a->max_pages == 0)
                return 0;
        r = query_int(a, "PRAGMA page_count", &pages);
        if (r < 0)
                return r;
        return (uint64_t) pages >= a->max_pages ? -ENOSPC : 0;
}

static int insert(struct mnd_audit *a, const struct mnd_audit_event *e, uint64_t time_usec,
                  uint8_t ret_hash[MND_AUDIT_HASH_SIZE]) {
        sqlite3_stmt *s = a->stmt[STMT_INSERT];
        struct value v[_F_MAX];
        uint64_t seq = a->last_seq + 1;
        int r, rc;

        if (seq > INT64_MAX || time_usec > INT64_MAX)
                return -EOVERFLOW;
        r = check_room(a);
        if (r < 0)
                return r;
        r = details_encode(e, &a->details);
        if (r < 0)
                return r;
        event_values(e, &a->details, v);
        r = hash_values(&a->serial, a->last_hash, seq, time_usec, v, ret_hash);
        if (r < 0)
                return r;

        sqlite3_bind_int64(s, 1 + COL_SEQ, (sqlite3_int64) seq);
        sqlite3_bind_int64(s, 1 + COL_TIME, (sqlite3_int64) time_usec);
        for (int f = F_KIND; f < _F_MAX; f++) {
                int p = f + 2;  /* column f + 1, parameters count from 1 */

                if (!v[f].present)
                        sqlite3_bind_null(s, p);
                else if (field_info[f].type == 's')
                        sqlite3_bind_text(s, p, v[f].data, (int) v[f].len, SQLITE_STATIC);
                else if (field_info[f].type == 'b')
                        sqlite3_bind_blob(s, p, v[f].data, (int) v[f].len, SQLITE_STATIC);
                else
                        sqlite3_bind_int64(s, p, (sqlite3_int64) v[f].num);
        }
        sqlite3_bind_blob(s, 1 + COL_HASH, ret_hash, MND_AUDIT_HASH_SIZE, SQLITE_STATIC);

        rc = sqlite3_step(s);
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (rc != SQLITE_DONE)
                return errno_from_sqlite(a->db, rc) ?: -EIO;
        return 0;
}

int mnd_audit_append(struct mnd_audit *a, const struct mnd_audit_event *e, bool durable,
                     uint64_t *ret_seq, char *ret_head) {
        uint8_t hash[MND_AUDIT_HASH_SIZE];
        uint64_t time_usec;
        int r;

        if (!a || !e)
                return -EINVAL;
        r = event_check(e);
        if (r < 0)
                return r;
        time_usec = e->time_usec ?: now_usec(CLOCK_REALTIME);
        if (time_usec == 0)
                return -EIO;

        if (a->in_batch) {
                r = insert(a, e, time_usec, hash);
                if (r < 0) {
                        /* SQLite may have rolled back the whole transaction on some errors
                         * (disk full, I/O): make that certain, so a batch is all or nothing. */
                        rollback(a);
                        a->in_batch = false;
                        return r;
                }
        } else {
                r = set_synchronous(a, durable);
                if (r < 0)
                        return r;
                r = run(a, STMT_BEGIN_WRITE);
                if (r < 0)
                        return r;
                r = load_last(a);
                if (r >= 0)
                        r = insert(a, e, time_usec, hash);
                if (r >= 0)
                        r = run(a, STMT_COMMIT);
                if (r < 0) {
                        rollback(a);
                        return r;
                }
        }

        a->last_seq++;
        memcpy(a->last_hash, hash, sizeof hash);
        if (!a->in_batch && durable)
                checkpoint_write(a);

        if (ret_seq)
                *ret_seq = a->last_seq;
        if (ret_head)
                mnd_audit_hash_to_hex(hash, ret_head);
        return 0;
}

int mnd_audit_batch_begin(struct mnd_audit *a, bool durable) {
        int r;

        if (!a)
                return -EINVAL;
        if (a->in_batch)
                return -EBUSY;
        /* BEGIN IMMEDIATE succeeds on a read-only connection; say so now rather than at the
         * first append. */
        if (sqlite3_db_readonly(a->db, "main") > 0)
                return -EROFS;
        /* The safety level cannot change inside a transaction: it is set for the commit now. */
        r = set_synchronous(a, durable);
        if (r < 0)
                return r;
        r = run(a, STMT_BEGIN_WRITE);
        if (r < 0)
                return r;
        r = load_last(a);
        if (r < 0) {
                rollback(a);
                return r;
        }
        a->in_batch = true;
        return 0;
}

int mnd_audit_batch_commit(struct mnd_audit *a) {
        int r;

        if (!a)
                return -EINVAL;
        if (!a->in_batch)
                return -ENOENT;
        a->in_batch = false;
        r = run(a, STMT_COMMIT);
        if (r < 0) {
                rollback(a);
                return r;
        }
        if (a->synchronous_full)
                checkpoint_write(a);
        return 0;
}

int mnd_audit_batch_abort(struct mnd_audit *a) {
        if (!a)
                return -EINVAL;
        if (!a->in_batch)
                return -ENOENT;
        a->in_batch = false;
        rollback(a);
        return 0;
}

/* ---- reading ---- */

static void record_clear(struct mnd_audit_record *r) {
        free(r->storage);
        *r = (struct mnd_audit_record) {};
}

struct mnd_audit_record *mnd_audit_records_free(struct mnd_audit_record *records, size_t n) {
        if (!records)
                return NULL;
        for (size_t i = 0; i < n; i++)
                record_clear(&records[i]);
        return mfree(records);
}

/* Details blob -> pairs, leniently: a malformed blob (only a tampered row has one, and verify
 * names it) reads as no details. */
static size_t details_parse(const uint8_t *p, size_t len, struct mnd_audit_detail *pairs, char *strings) {
        size_t n, off = 4;

        if (!p || len < 4)
                return 0;
        n = get_be32(p);
        if (n > MND_AUDIT_DETAILS_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                for (unsigned k = 0; k < 2; k++) {
                        size_t l;

                        if (len - off < 4)
                                return 0;
                        l = get_be32(p + off);
                        off += 4;
                        if (len - off < l)
                                return 0;
                        if (pairs) {
                                memcpy(strings, p + off, l);
                                strings[l] = '\0';
                                if (k == 0)
                                        pairs[i].key = strings;
                                else
                                        pairs[i].value = strings;
                                strings += l + 1;
                        }
                        off += l;
                }
        return off == len ? n : 0;
}

/* One row of an "SELECT " COLUMNS statement -> a record owning its strings. */
static int record_from_row(sqlite3_stmt *s, struct mnd_audit_record *ret) {
        const char **strings[_F_MAX] = {};
        struct mnd_audit_record rec = {
                .event = MND_AUDIT_EVENT_INIT,
        };
        struct mnd_audit_event *e = &rec.event;
        const uint8_t *details;
        size_t size = 0, details_len, n_details;
        const void *hash;
        char *p;
        uint8_t *storage;

        strings[F_KIND] = &e->kind;
        strings[F_PEN] = &e->pen;
        strings[F_CARTRIDGE] = &e->cartridge;
        strings[F_AREA] = &e->area;
        strings[F_OPERATOR] = &e->operator;
        strings[F_PATIENT_REF] = &e->patient_ref;
        strings[F_USER] = &e->user;
        strings[F_SENDER] = &e->sender;
        strings[F_MESSAGE] = &e->message;

        for (int f = F_KIND; f < _F_MAX; f++)
                if (strings[f] && sqlite3_column_type(s, f + 1) != SQLITE_NULL)
                        size += (size_t) sqlite3_column_bytes(s, f + 1) + 1;
        details = sqlite3_column_blob(s, F_DETAILS + 1);
        details_len = (size_t) sqlite3_column_bytes(s, F_DETAILS + 1);
        n_details = details_parse(details, details_len, NULL, NULL);
        if (n_details > 0)
                size += n_details * sizeof(struct mnd_audit_detail) + details_len;   /* bigger than needed */

        storage = malloc(size ?: 1);
        if (!storage)
                return -ENOMEM;
        p = (char *) storage;
        if (n_details > 0) {
                struct mnd_audit_detail *pairs = (struct mnd_audit_detail *) (void *) storage;

                p = (char *) (pairs + n_details);
                details_parse(details, details_len, pairs, p);
                p += details_len;
                e->details = pairs;
                e->n_details = n_details;
        }
        for (int f = F_KIND; f < _F_MAX; f++) {
                const void *t;
                size_t l;

                if (!strings[f] || sqlite3_column_type(s, f + 1) == SQLITE_NULL)
                        continue;
                t = sqlite3_column_text(s, f + 1);
                l = (size_t) sqlite3_column_bytes(s, f + 1);
                if (t)
                        memcpy(p, t, l);
                p[l] = '\0';
                *strings[f] = p;
                p += l + 1;
        }

        rec.seq = (uint64_t) sqlite3_column_int64(s, COL_SEQ);
        e->time_usec = (uint64_t) sqlite3_column_int64(s, COL_TIME);
        if (sqlite3_column_type(s, F_SESSION + 1) != SQLITE_NULL)
                e->session = (uint64_t) sqlite3_column_int64(s, F_SESSION + 1);
        if (sqlite3_column_type(s, F_DEPTH_UM + 1) != SQLITE_NULL)
                e->depth_um = (uint32_t) sqlite3_column_int64(s, F_DEPTH_UM + 1);
        if (sqlite3_column_type(s, F_SPEED_HZ + 1) != SQLITE_NULL)
                e->speed_hz = (uint32_t) sqlite3_column_int64(s, F_SPEED_HZ + 1);
        if (sqlite3_column_type(s, F_DURATION_S + 1) != SQLITE_NULL)
                e->duration_s = (uint32_t) sqlite3_column_int64(s, F_DURATION_S + 1);
        if (sqlite3_column_type(s, F_UID + 1) != SQLITE_NULL)
                e->uid = (uint32_t) sqlite3_column_int64(s, F_UID + 1);
        hash = sqlite3_column_blob(s, COL_HASH);
        if (hash && sqlite3_column_bytes(s, COL_HASH) == MND_AUDIT_HASH_SIZE)
                mnd_audit_hash_to_hex(hash, rec.hash);
        rec.storage = storage;
        *ret = rec;
        return 0;
}

/* Steps s to the end, collecting at most max records. */
static int collect(struct mnd_audit *a, sqlite3_stmt *s, size_t max, struct mnd_audit_record **ret_records,
                   size_t *ret_n) {
        struct mnd_audit_record *records = NULL;
        size_t n = 0, allocated = 0;
        int rc, r = 0;

        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                if (n >= max)
                        break;
                if (n == allocated) {
                        size_t na = allocated ? allocated * 2 : 16;
                        struct mnd_audit_record *nr = reallocarray(records, na, sizeof *nr);

                        if (!nr) {
                                r = -ENOMEM;
                                break;
                        }
                        records = nr;
                        allocated = na;
                }
                r = record_from_row(s, &records[n]);
                if (r < 0)
                        break;
                n++;
        }
        if (r >= 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = errno_from_sqlite(a->db, rc) ?: -EIO;
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        if (r < 0) {
                mnd_audit_records_free(records, n);
                return r;
        }
        if (n == 0)
                records = mfree(records);
        *ret_records = records;
        *ret_n = n;
        return 0;
}

static int query_statement(struct mnd_audit *a, unsigned mask, sqlite3_stmt **ret) {
        char sql[512];
        size_t len;
        int r;

        assert(mask < _Q_COMBINATIONS);
        if (!a->query[mask]) {
                /* Built only from the constant fragments above: user data is always bound. */
                len = (size_t) snprintf(sql, sizeof sql, "SELECT " COLUMNS " FROM events WHERE seq > ?1");
                for (unsigned i = 0; i < ELEMENTSOF(query_clause); i++) {
                        const char *clause = query_clause[i];

                        if (!(mask & (1u << i)))
                                continue;
                        if ((1u << i) == Q_KIND && (mask & (Q_PEN | Q_SESSION | Q_CARTRIDGE)))
                                clause = QUERY_KIND_UNINDEXED;
                        len += (size_t) snprintf(sql + len, sizeof sql - len, "%s", clause);
                }
                len += (size_t) snprintf(sql + len, sizeof sql - len, " ORDER BY seq LIMIT ?8");
                if (len >= sizeof sql)
                        return -ENOBUFS;
                r = prepare(a, sql, &a->query[mask]);
                if (r < 0)
                        return r;
        }
        *ret = a->query[mask];
        return 0;
}

static int check_filter_string(const char *s, size_t max) {
        int r = check_string(s, max, false);

        return r < 0 ? -EINVAL : 0;
}

int mnd_audit_query(struct mnd_audit *a, const struct mnd_audit_filter *f,
                    struct mnd_audit_record **ret_records, size_t *ret_n) {
        sqlite3_stmt *s;
        unsigned mask = 0, limit;
        int r;

        if (!a || !f || !ret_records || !ret_n)
                return -EINVAL;
        if (f->limit > MND_AUDIT_QUERY_MAX)
                return -EINVAL;
        limit = f->limit ?: MND_AUDIT_QUERY_MAX;
        if (f->until != 0 && f->until < f->since)
                return -EINVAL;
        if (f->since > INT64_MAX || f->until > INT64_MAX || f->session > INT64_MAX)
                return -EINVAL;
        if (check_filter_string(f->pen, MND_AUDIT_ID_MAX) < 0 ||
            check_filter_string(f->cartridge, MND_AUDIT_ID_MAX) < 0)
                return -EINVAL;
        if (!isempty(f->kind) && !kind_is_valid(f->kind))
                return -EINVAL;

        if (!isempty(f->pen))
                mask |= Q_PEN;
        if (f->session != 0)
                mask |= Q_SESSION;
        if (!isempty(f->cartridge))
                mask |= Q_CARTRIDGE;
        if (!isempty(f->kind))
                mask |= Q_KIND;
        if (f->since != 0)
                mask |= Q_SINCE;
        if (f->until != 0)
                mask |= Q_UNTIL;

        r = query_statement(a, mask, &s);
        if (r < 0)
                return r;
        sqlite3_bind_int64(s, 1, (sqlite3_int64) MIN(f->after_seq, (uint64_t) INT64_MAX));
        if (mask & Q_PEN)
                sqlite3_bind_text(s, 2, f->pen, -1, SQLITE_STATIC);
        if (mask & Q_SESSION)
                sqlite3_bind_int64(s, 3, (sqlite3_int64) f->session);
        if (mask & Q_CARTRIDGE)
                sqlite3_bind_text(s, 4, f->cartridge, -1, SQLITE_STATIC);
        if (mask & Q_KIND)
                sqlite3_bind_text(s, 5, f->kind, -1, SQLITE_STATIC);
        if (mask & Q_SINCE)
                sqlite3_bind_int64(s, 6, (sqlite3_int64) f->since);
        if (mask & Q_UNTIL)
                sqlite3_bind_int64(s, 7, (sqlite3_int64) f->until);
        sqlite3_bind_int64(s, 8, limit);

        return collect(a, s, limit, ret_records, ret_n);
}

int mnd_audit_count(struct mnd_audit *a, uint64_t *ret) {
        int r;

        if (!a || !ret)
                return -EINVAL;
        if (!a->in_batch) {
                r = load_last(a);
                if (r < 0)
                        return r;
        }
        *ret = a->last_seq;
        return 0;
}

int mnd_audit_head_hash(struct mnd_audit *a, char ret[MND_AUDIT_HASH_HEX_SIZE]) {
        int r;

        if (!a || !ret)
                return -EINVAL;
        if (!a->in_batch) {
                r = load_last(a);
                if (r < 0)
                        return r;
        }
        mnd_audit_hash_to_hex(a->last_hash, ret);
        return 0;
}

int mnd_audit_verify_against(struct mnd_audit *a, const struct mnd_audit_checkpoint *expected,
                             struct mnd_audit_verify_result *ret) {
        sqlite3_stmt *s;
        struct value v[_F_MAX];
        uint8_t prev[MND_AUDIT_HASH_SIZE], h[MND_AUDIT_HASH_SIZE], head[MND_AUDIT_HASH_SIZE];
        uint8_t expected_head[MND_AUDIT_HASH_SIZE], at_expected[MND_AUDIT_HASH_SIZE];
        uint64_t count = 0, bad = 0, last = 0;
        bool have_at_expected = false, own_txn = false;
        int rc, r = 0;

        if (!a || !ret)
                return -EINVAL;
        if (expected) {
                r = hash_from_hex(expected->head, expected_head);
                if (r < 0)
                        return r;
        }
        if (!a->in_batch) {
                r = run(a, STMT_BEGIN_READ);
                if (r < 0)
                        return r;
                own_txn = true;
        }

        memcpy(prev, genesis, sizeof prev);
        memcpy(head, genesis, sizeof head);
        s = a->stmt[STMT_ALL];
        while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
                sqlite3_int64 seq = sqlite3_column_int64(s, COL_SEQ);
                const void *stored = sqlite3_column_blob(s, COL_HASH);
                bool stored_ok = stored && sqlite3_column_bytes(s, COL_HASH) == MND_AUDIT_HASH_SIZE;

                count++;
                if (stored_ok)
                        memcpy(head, stored, sizeof head);
                else
                        memset(head, 0, sizeof head);
                last = seq > 0 ? (uint64_t) seq : 0;
                if (bad != 0)
                        continue;       /* still count the rows */

                if (seq <= 0 || (uint64_t) seq != count) {
                        /* A row missing before this one, or one that is not where it belongs:
                         * the chain breaks at the position we expected next. */
                        bad = count;
                        continue;
                }
                r = row_values(s, v);
                if (r == -EBADMSG || sqlite3_column_type(s, COL_TIME) != SQLITE_INTEGER || !stored_ok) {
                        bad = count;
                        r = 0;
                        continue;
                }
                if (r < 0)
                        break;
                r = hash_values(&a->serial, prev, (uint64_t) seq, (uint64_t) sqlite3_column_int64(s, COL_TIME), v, h);
                if (r < 0)
                        break;
                if (memcmp(h, stored, sizeof h) != 0) {
                        bad = count;
                        continue;
                }
                memcpy(prev, h, sizeof prev);
                if (expected && (uint64_t) seq == expected->count) {
                        memcpy(at_expected, h, sizeof at_expected);
                        have_at_expected = true;
                }
        }
        if (r >= 0 && rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = errno_from_sqlite(a->db, rc) ?: -EIO;
        sqlite3_reset(s);
        if (own_txn)
                (void) run(a, STMT_COMMIT);
        if (r < 0)
                return r;

        if (bad == 0 && expected && expected->count > 0) {
                if (expected->count > last)
                        bad = last + 1;         /* the tail is gone */
                else if (!have_at_expected || sodium_memcmp(at_expected, expected_head, sizeof at_expected) != 0)
                        bad = expected->count;  /* rewritten up to there */
        }

        *ret = (struct mnd_audit_verify_result) {
                .ok = bad == 0,
                .count = count,
                .first_bad_seq = bad,
        };
        mnd_audit_hash_to_hex(head, ret->head);
        return 0;
}

int mnd_audit_verify(struct mnd_audit *a, struct mnd_audit_verify_result *ret) {
        struct mnd_audit_checkpoint cp;

        if (!a || !ret)
                return -EINVAL;
        if (!a->have_checkpoint)
                return mnd_audit_verify_against(a, NULL, ret);
        cp.count = a->checkpoint_count;
        mnd_audit_hash_to_hex(a->checkpoint_head, cp.head);
        return mnd_audit_verify_against(a, &cp, ret);
}

int mnd_audit_cartridge_used(struct mnd_audit *a, const char *cartridge, uint64_t *ret_session) {
        sqlite3_stmt *s;
        int rc, r;

        if (!a || isempty(cartridge))
                return -EINVAL;
        if (check_filter_string(cartridge, MND_AUDIT_ID_MAX) < 0)
                return -EINVAL;
        s = a->stmt[STMT_CARTRIDGE_USED];
        sqlite3_bind_text(s, 1, cartridge, -1, SQLITE_STATIC);
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                if (ret_session)
                        *ret_session = (uint64_t) sqlite3_column_int64(s, 0);
                r = 1;
        } else if (rc == SQLITE_DONE)
                r = 0;
        else
                r = errno_from_sqlite(a->db, rc) ?: -EIO;
        sqlite3_reset(s);
        sqlite3_clear_bindings(s);
        return r;
}

int mnd_audit_max_session(struct mnd_audit *a, uint64_t *ret) {
        sqlite3_stmt *s;
        int rc, r = 0;

        if (!a || !ret)
                return -EINVAL;
        s = a->stmt[STMT_MAX_SESSION];
        rc = sqlite3_step(s);
        if (rc == SQLITE_ROW) {
                sqlite3_int64 v = sqlite3_column_int64(s, 0);

                *ret = v > 0 ? (uint64_t) v : 0;
        } else
                r = errno_from_sqlite(a->db, rc) ?: -EIO;
        sqlite3_reset(s);
        return r;
}

int mnd_audit_running_sessions(struct mnd_audit *a, struct mnd_audit_record **ret_records, size_t *ret_n) {
        if (!a || !ret_records || !ret_n)
                return -EINVAL;
        return collect(a, a->stmt[STMT_RUNNING], SIZE_MAX, ret_records, ret_n);
}

int mnd_audit_record_foreach(const struct mnd_audit_record *rec,
                             int (*fn)(const char *key, char type, const void *value, void *userdata),
                             void *userdata) {
        const struct mnd_audit_event *e;
        int r;

        if (!rec || !fn)
                return -EINVAL;
        e = &rec->event;

#define EMIT(key, type, ptr)                            \
        do {                                            \
                r = fn(key, type, ptr, userdata);       \
                if (r < 0)                              \
                        return r;                       \
        } while (0)
#define EMIT_STR(key, s)                                \
        do {                                            \
                if (!isempty(s))                        \
                        EMIT(key, 's', s);              \
        } while (0)
#define EMIT_U32(key, n)                                \
        do {                                            \
                if ((n) != MND_AUDIT_UNSET)             \
                        EMIT(key, 'u', &(n));           \
        } while (0)

        EMIT("seq", 't', &rec->seq);
        EMIT("time", 't', &e->time_usec);
        EMIT_STR("kind", e->kind);
        EMIT_STR("pen", e->pen);
        if (e->session != 0)
                EMIT("session", 't', &e->session);
        EMIT_STR("cartridge", e->cartridge);
        EMIT_STR("area", e->area);
        EMIT_U32("depth_um", e->depth_um);
        EMIT_U32("speed_hz", e->speed_hz);
        EMIT_U32("duration_s", e->duration_s);
        EMIT_STR("operator", e->operator);
        EMIT_STR("patient_ref", e->patient_ref);
        EMIT_U32("uid", e->uid);
        EMIT_STR("user", e->user);
        EMIT_STR("sender", e->sender);
        EMIT_STR("message", e->message);
        EMIT_STR("hash", rec->hash);
        return 0;

#undef EMIT_U32
#undef EMIT_STR
#undef EMIT
}
