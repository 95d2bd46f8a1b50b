/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The audit log (daemon/audit-log.c): append, read back, filters and paging, the hash chain and
 * every kind of tampering made behind its back with raw SQL, the checkpoint file, crashes
 * (SIGKILL of a writer), a full and a read-only database, migration from schema version 1, and
 * hostile strings.  Big databases are the benchmark's business (tests/bench/bench-audit.c).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>
#include <sqlite3.h>

#include "audit-log.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define streq(a, b) (strcmp((a), (b)) == 0)
#define T0 UINT64_C(1700000000000000)  /* 2023-11-14, an arbitrary start time */

/* ---- helpers ---- */

static uint64_t realtime_usec(void) {
        struct timespec ts;

        assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts), 0);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static char *make_dir(void) {
        const char *tmp = getenv("TMPDIR");
        char *p;

        assert_true(asprintf(&p, "%s/test-audit-XXXXXX", tmp && *tmp ? tmp : "/tmp") > 0);
        assert_non_null(mkdtemp(p));
        return p;
}

static void remove_dir(char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        assert_non_null(d);
        while ((de = readdir(d))) {
                char *p;

                if (de->d_name[0] == '.')
                        continue;
                assert_true(asprintf(&p, "%s/%s", dir, de->d_name) > 0);
                assert_int_equal(unlink(p), 0);
                free(p);
        }
        closedir(d);
        assert_int_equal(rmdir(dir), 0);
        free(dir);
}

static char *path_in(const char *dir, const char *name) {
        char *p;

        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static void copy_file(const char *from_dir, const char *to_dir, const char *name) {
        char *from = path_in(from_dir, name), *to = path_in(to_dir, name), buf[65536];
        int in = open(from, O_RDONLY | O_CLOEXEC), out;
        ssize_t n;

        assert_true(in >= 0);
        out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(out >= 0);
        while ((n = read(in, buf, sizeof buf)) > 0)
                assert_int_equal(write(out, buf, (size_t) n), n);
        assert_int_equal(n, 0);
        close(in);
        close(out);
        free(from);
        free(to);
}

static bool file_exists(const char *dir, const char *name) {
        char *p = path_in(dir, name);
        bool r = access(p, F_OK) == 0;

        free(p);
        return r;
}

static sqlite3 *raw_open(const char *dir) {
        char *p = path_in(dir, MND_AUDIT_DB_FILE);
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
        free(p);
        return db;
}

static void raw_exec(sqlite3 *db, const char *sql) {
        char *err = NULL;
        int rc = sqlite3_exec(db, sql, NULL, NULL, &err);

        if (rc != SQLITE_OK)
                fail_msg("%s: %s", sql, err ?: "?");
}

static int64_t raw_int(sqlite3 *db, const char *sql) {
        sqlite3_stmt *s;
        int64_t v;

        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &s, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        return v;
}

/* A raw connection with the append-only triggers dropped, as a tamperer would. */
static sqlite3 *tamper_open(const char *dir) {
        sqlite3 *db = raw_open(dir);

        raw_exec(db, "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;");
        return db;
}

static struct mnd_audit *open_log(const char *dir) {
        struct mnd_audit *a = NULL;

        assert_int_equal(mnd_audit_open(dir, 0, &a), 0);
        assert_non_null(a);
        return a;
}

static void verify(struct mnd_audit *a, bool ok, uint64_t count, uint64_t first_bad) {
        struct mnd_audit_verify_result v;

        memset(&v, 0x55, sizeof v);
        assert_int_equal(mnd_audit_verify(a, &v), 0);
        if (v.ok != ok || v.count != count || v.first_bad_seq != first_bad)
                fail_msg("verify: ok %d count %" PRIu64 " first_bad %" PRIu64 ", expected %d %" PRIu64 " %" PRIu64,
                         v.ok, v.count, v.first_bad_seq, ok, count, first_bad);
}

static void verify_dir(const char *dir, bool ok, uint64_t count, uint64_t first_bad) {
        struct mnd_audit *a = open_log(dir);

        verify(a, ok, count, first_bad);
        mnd_audit_close(a);
}

static const struct mnd_audit_detail some_details[] = {
        { "firmware", "2.1.0" },
        { "note", "line one\nline two" },
};

/* Event i of a standard, fully populated log: every field set, so that every column of every
 * row can be edited. */
static struct mnd_audit_event full_event(unsigned i) {
        static char pen[8][16], cart[8][16], msg[8][32];
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        unsigned k = i % 8;

        snprintf(pen[k], sizeof pen[k], "PEN-%u", i % 3);
        snprintf(cart[k], sizeof cart[k], "CART-%u", i);
        snprintf(msg[k], sizeof msg[k], "event %u", i);
        e.kind = MND_AUDIT_SETPOINT_CHANGE;
        e.time_usec = T0 + i * 1000;
        e.pen = pen[k];
        e.session = 1 + i / 4;
        e.cartridge = cart[k];
        e.area = "forehead";
        e.depth_um = 250 + 10 * i;
        e.speed_hz = 100 + i;
        e.duration_s = 600;
        e.operator = "Dr. O'Brien";
        e.patient_ref = "P-0042";
        e.uid = 1000 + i;
        e.user = "clinic";
        e.sender = ":1.42";
        e.message = msg[k];
        e.details = some_details;
        e.n_details = ELEMENTSOF(some_details);
        return e;
}

/* A durable log of n full events in a new directory. */
static char *make_full_log(unsigned n) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);

        for (unsigned i = 1; i <= n; i++) {
                struct mnd_audit_event e = full_event(i);
                uint64_t seq = 0;

                assert_int_equal(mnd_audit_append(a, &e, true, &seq, NULL), 0);
                assert_int_equal(seq, i);
        }
        mnd_audit_close(a);
        return dir;
}

static char *clone_log(const char *from) {
        char *dir = make_dir();

        copy_file(from, dir, MND_AUDIT_DB_FILE);
        copy_file(from, dir, MND_AUDIT_CHECKPOINT_FILE);
        return dir;
}

static void assert_events_equal(const struct mnd_audit_event *a, const struct mnd_audit_event *b) {
#define STR_EQ(f) assert_string_equal(a->f ?: "", b->f ?: "")
        STR_EQ(kind);
        STR_EQ(pen);
        STR_EQ(cartridge);
        STR_EQ(area);
        STR_EQ(operator);
        STR_EQ(patient_ref);
        STR_EQ(user);
        STR_EQ(sender);
        STR_EQ(message);
#undef STR_EQ
        assert_int_equal(a->time_usec, b->time_usec);
        assert_int_equal(a->session, b->session);
        assert_int_equal(a->depth_um, b->depth_um);
        assert_int_equal(a->speed_hz, b->speed_hz);
        assert_int_equal(a->duration_s, b->duration_s);
        assert_int_equal(a->uid, b->uid);
        assert_int_equal(a->n_details, b->n_details);
        for (size_t i = 0; i < a->n_details; i++) {
                assert_string_equal(a->details[i].key, b->details[i].key);
                assert_string_equal(a->details[i].value ?: "", b->details[i].value ?: "");
        }
}

/* ---- append, read back, count, head ---- */

struct seen {
        char keys[512];
};

static int collect_key(const char *key, char type, const void *value, void *userdata) {
        struct seen *s = userdata;
        size_t n = strlen(s->keys);

        assert_true(type == 's' || type == 't' || type == 'u');
        assert_non_null(value);
        snprintf(s->keys + n, sizeof s->keys - n, "%s%s:%c", n ? " " : "", key, type);
        return 0;
}

static void test_append_query(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_record *recs = NULL;
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        char head[MND_AUDIT_HASH_HEX_SIZE], head2[MND_AUDIT_HASH_HEX_SIZE], genesis_hex[MND_AUDIT_HASH_HEX_SIZE];
        uint8_t genesis[32], h[32];
        uint64_t count = 99, seq = 0, before, after;
        size_t n = 99;
        struct seen seen = {};

        /* Empty: count 0, head is the genesis value, verify ok. */
        crypto_hash_sha256(genesis, (const unsigned char *) "org.microneedle.Mnd1.Audit genesis v1",
                           strlen("org.microneedle.Mnd1.Audit genesis v1"));
        mnd_audit_hash_to_hex(genesis, genesis_hex);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 0);
        assert_int_equal(mnd_audit_head_hash(a, head), 0);
        assert_string_equal(head, genesis_hex);
        verify(a, true, 0, 0);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {}, &recs, &n), 0);
        assert_int_equal(n, 0);
        assert_null(recs);

        /* A minimal event: time stamped now, nothing else recorded. */
        e.kind = MND_AUDIT_DAEMON_START;
        before = realtime_usec();
        assert_int_equal(mnd_audit_append(a, &e, true, &seq, head), 0);
        after = realtime_usec();
        assert_int_equal(seq, 1);
        assert_int_equal(mnd_audit_head_hash(a, head2), 0);
        assert_string_equal(head, head2);
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &e, h), 0);   /* time 0 here, so differs */

        /* A full one. */
        e = full_event(7);
        assert_int_equal(mnd_audit_append(a, &e, false, &seq, head), 0);
        assert_int_equal(seq, 2);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 2);

        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {}, &recs, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(recs[0].seq, 1);
        assert_string_equal(recs[0].event.kind, "daemon-start");
        assert_true(recs[0].event.time_usec >= before && recs[0].event.time_usec <= after);
        assert_null(recs[0].event.pen);
        assert_null(recs[0].event.message);
        assert_int_equal(recs[0].event.session, 0);
        assert_int_equal(recs[0].event.depth_um, MND_AUDIT_UNSET);
        assert_int_equal(recs[0].event.uid, MND_AUDIT_UNSET);
        assert_int_equal(recs[0].event.n_details, 0);
        assert_int_equal(recs[1].seq, 2);
        assert_events_equal(&recs[1].event, &e);
        assert_string_equal(recs[1].hash, head);

        /* The chain can be recomputed from what Query returns (an external verifier's view). */
        {
                uint8_t prev[32], cur[32];
                char hex[MND_AUDIT_HASH_HEX_SIZE];

                assert_int_equal(mnd_audit_event_hash(NULL, 1, &recs[0].event, cur), 0);
                mnd_audit_hash_to_hex(cur, hex);
                assert_string_equal(hex, recs[0].hash);
                memcpy(prev, cur, 32);
                assert_int_equal(mnd_audit_event_hash(prev, 2, &recs[1].event, cur), 0);
                mnd_audit_hash_to_hex(cur, hex);
                assert_string_equal(hex, recs[1].hash);
        }

        /* The a{sv} view: only recorded fields, fixed keys and types. */
        assert_int_equal(mnd_audit_record_foreach(&recs[0], collect_key, &seen), 0);
        assert_string_equal(seen.keys, "seq:t time:t kind:s hash:s");
        seen.keys[0] = '\0';
        assert_int_equal(mnd_audit_record_foreach(&recs[1], collect_key, &seen), 0);
        assert_string_equal(seen.keys, "seq:t time:t kind:s pen:s session:t cartridge:s area:s depth_um:u speed_hz:u "
                            "duration_s:u operator:s patient_ref:s uid:u user:s sender:s message:s hash:s");
        mnd_audit_records_free(recs, n);

        verify(a, true, 2, 0);
        mnd_audit_close(a);

        /* Reopened: the same. */
        a = open_log(dir);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 2);
        assert_int_equal(mnd_audit_head_hash(a, head2), 0);
        assert_string_equal(head, head2);
        verify(a, true, 2, 0);
        mnd_audit_close(a);

        /* Files are private. */
        {
                char *p = path_in(dir, MND_AUDIT_DB_FILE);
                struct stat st;

                assert_int_equal(stat(p, &st), 0);
                assert_int_equal(st.st_mode & 0777, 0600);
                free(p);
                p = path_in(dir, MND_AUDIT_CHECKPOINT_FILE);
                assert_int_equal(stat(p, &st), 0);
                assert_int_equal(st.st_mode & 0777, 0600);
                free(p);
        }
        remove_dir(dir);
}

static void test_null_and_args(void **state) {
        struct mnd_audit *a = (struct mnd_audit *) 0x1;
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        char *dir;

        assert_null(mnd_audit_close(NULL));
        assert_null(mnd_audit_records_free(NULL, 0));
        assert_int_equal(mnd_audit_open(NULL, 0, &a), -EINVAL);
        assert_int_equal(mnd_audit_open("/nonexistent/dir", 0, &a), -ENOENT);
        assert_ptr_equal(a, (struct mnd_audit *) 0x1);         /* untouched on failure */

        dir = make_dir();
        a = open_log(dir);
        assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), -EINVAL);   /* no kind */
        assert_int_equal(mnd_audit_batch_commit(a), -ENOENT);
        assert_int_equal(mnd_audit_batch_abort(a), -ENOENT);
        mnd_audit_close(a);
        remove_dir(dir);
}

/* ---- filters and paging ---- */

#define N_FILTER_EVENTS 60

static const char *const filter_kinds[] = { "session-start", "setpoint-change", "refusal", "session-end" };

static struct mnd_audit_event filter_event(unsigned i) {
        static char pen[4][8], cart[16][8];
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;

        snprintf(pen[i % 4], sizeof pen[0], "P%u", i % 4);
        snprintf(cart[i % 16], sizeof cart[0], "C%u", i % 7);
        e.kind = filter_kinds[i % 4];
        e.time_usec = T0 + (uint64_t) i * 1000000;
        e.pen = pen[i % 4];
        e.session = i % 5 == 0 ? 0 : 1 + i % 6;
        e.cartridge = i % 3 == 0 ? NULL : cart[i % 16];
        return e;
}

static bool filter_matches(const struct mnd_audit_filter *f, uint64_t seq, const struct mnd_audit_event *e) {
        if (seq <= f->after_seq)
                return false;
        if (f->since && e->time_usec < f->since)
                return false;
        if (f->until && e->time_usec >= f->until)
                return false;
        if (f->pen && strcmp(f->pen, e->pen ?: "") != 0)
                return false;
        if (f->session && f->session != e->session)
                return false;
        if (f->cartridge && strcmp(f->cartridge, e->cartridge ?: "") != 0)
                return false;
        if (f->kind && strcmp(f->kind, e->kind) != 0)
                return false;
        return true;
}

/* Pages through f with the given page size, checking every page against a brute-force model. */
static void check_filter(struct mnd_audit *a, struct mnd_audit_filter f, unsigned page) {
        uint64_t expected[N_FILTER_EVENTS], got_total = 0;
        size_t n_expected = 0;

        for (unsigned i = 1; i <= N_FILTER_EVENTS; i++) {
                struct mnd_audit_event e = filter_event(i);

                if (filter_matches(&f, i, &e))
                        expected[n_expected++] = i;
        }

        f.limit = page;
        for (;;) {
                struct mnd_audit_record *recs = NULL;
                size_t n = 0;

                assert_int_equal(mnd_audit_query(a, &f, &recs, &n), 0);
                assert_true(n <= page);
                for (size_t i = 0; i < n; i++) {
                        struct mnd_audit_event e = filter_event((unsigned) recs[i].seq);

                        assert_true(got_total < n_expected);
                        assert_int_equal(recs[i].seq, expected[got_total]);
                        assert_events_equal(&recs[i].event, &e);
                        got_total++;
                }
                if (n > 0)
                        f.after_seq = recs[n - 1].seq;
                mnd_audit_records_free(recs, n);
                if (n < page)
                        break;
        }
        assert_int_equal(got_total, n_expected);
}

static void test_filters(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_record *recs = (struct mnd_audit_record *) 0x1;
        size_t n = 77;

        assert_int_equal(mnd_audit_batch_begin(a, true), 0);
        assert_int_equal(mnd_audit_batch_begin(a, true), -EBUSY);
        for (unsigned i = 1; i <= N_FILTER_EVENTS; i++) {
                struct mnd_audit_event e = filter_event(i);

                assert_int_equal(mnd_audit_append(a, &e, false, NULL, NULL), 0);
        }
        assert_int_equal(mnd_audit_batch_commit(a), 0);
        verify(a, true, N_FILTER_EVENTS, 0);

        static const unsigned pages[] = { 1, 7, 1000 };
        for (size_t p = 0; p < ELEMENTSOF(pages); p++) {
                unsigned pg = pages[p];

                check_filter(a, (struct mnd_audit_filter) {}, pg);
                check_filter(a, (struct mnd_audit_filter) { .pen = "P2" }, pg);
                check_filter(a, (struct mnd_audit_filter) { .pen = "nope" }, pg);
                check_filter(a, (struct mnd_audit_filter) { .session = 3 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .cartridge = "C4" }, pg);
                check_filter(a, (struct mnd_audit_filter) { .kind = "refusal" }, pg);
                check_filter(a, (struct mnd_audit_filter) { .since = T0 + 20000000 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .until = T0 + 20000000 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .since = T0 + 10000000, .until = T0 + 40000000 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .since = T0 + 10000000, .until = T0 + 10000000 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .after_seq = 33 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .after_seq = 60 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .pen = "P1", .since = T0 + 15000000 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .pen = "P1", .kind = "setpoint-change", .session = 2 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .cartridge = "C1", .kind = "session-start",
                                                             .since = T0, .until = T0 + 50000000 }, pg);
                check_filter(a, (struct mnd_audit_filter) { .pen = "P0", .session = 5, .cartridge = "C5",
                                                             .kind = "session-start", .since = T0 + 1,
                                                             .until = T0 + 59000000, .after_seq = 3 }, pg);
        }

        /* Limits: at most 1000 a call; more is refused (not capped); 0 means 1000.  Bad filters
         * are refused, the outputs untouched. */
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .limit = 1001 }, &recs, &n), -EINVAL);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .since = 5, .until = 4 }, &recs, &n), -EINVAL);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .kind = "No Such" }, &recs, &n), -EINVAL);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .pen = "\xff" }, &recs, &n), -EINVAL);
        assert_ptr_equal(recs, (struct mnd_audit_record *) 0x1);
        assert_int_equal(n, 77);

        assert_int_equal(mnd_audit_batch_begin(a, false), 0);
        for (unsigned i = 0; i < 1000; i++) {
                struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;

                e.kind = "fault";
                assert_int_equal(mnd_audit_append(a, &e, false, NULL, NULL), 0);
        }
        assert_int_equal(mnd_audit_batch_commit(a), 0);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {}, &recs, &n), 0);
        assert_int_equal(n, MND_AUDIT_QUERY_MAX);
        assert_int_equal(recs[999].seq, 1000);
        mnd_audit_records_free(recs, n);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .limit = 1000, .after_seq = 1000 }, &recs, &n), 0);
        assert_int_equal(n, N_FILTER_EVENTS);
        assert_int_equal(recs[0].seq, 1001);
        mnd_audit_records_free(recs, n);

        mnd_audit_close(a);
        remove_dir(dir);
}

/* ---- sessions, cartridges, batches, durability ---- */

static void append_session_event(struct mnd_audit *a, const char *kind, uint64_t session, const char *cart) {
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;

        e.kind = kind;
        e.session = session;
        e.cartridge = cart;
        e.pen = "PEN-1";
        e.area = "cheeks";
        e.depth_um = 1500;
        e.speed_hz = 120;
        e.duration_s = 900;
        e.message = streq(kind, "session-end") ? "completed" : NULL;
        assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);
}

static void test_sessions_cartridges(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_record *recs = NULL;
        uint64_t session = 0, max = 99;
        size_t n = 99;

        assert_int_equal(mnd_audit_max_session(a, &max), 0);
        assert_int_equal(max, 0);
        assert_int_equal(mnd_audit_running_sessions(a, &recs, &n), 0);
        assert_int_equal(n, 0);

        append_session_event(a, "cartridge-inserted", 0, "CART-A");
        append_session_event(a, "session-start", 1, "CART-A");
        append_session_event(a, "setpoint-change", 1, "CART-A");
        append_session_event(a, "session-end", 1, "CART-A");
        append_session_event(a, "cartridge-inserted", 0, "CART-B");
        append_session_event(a, "session-start", 2, "CART-B");
        append_session_event(a, "session-start", 3, "CART-C");
        append_session_event(a, "session-end", 3, "CART-C");
        append_session_event(a, "cartridge-inserted", 0, "CART-D");
        append_session_event(a, "session-start", 4, "CART-D");

        assert_int_equal(mnd_audit_cartridge_used(a, "CART-A", &session), 1);
        assert_int_equal(session, 1);
        assert_int_equal(mnd_audit_cartridge_used(a, "CART-D", &session), 1);
        assert_int_equal(session, 4);
        assert_int_equal(mnd_audit_cartridge_used(a, "CART-X", NULL), 0);
        assert_int_equal(mnd_audit_cartridge_used(a, "", NULL), -EINVAL);
        assert_int_equal(mnd_audit_max_session(a, &max), 0);
        assert_int_equal(max, 4);

        /* 2 and 4 never ended: what the daemon must close with "daemon-restart". */
        assert_int_equal(mnd_audit_running_sessions(a, &recs, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(recs[0].event.session, 2);
        assert_string_equal(recs[0].event.cartridge, "CART-B");
        assert_string_equal(recs[0].event.pen, "PEN-1");
        assert_int_equal(recs[0].event.depth_um, 1500);
        assert_int_equal(recs[1].event.session, 4);
        mnd_audit_records_free(recs, n);

        /* Closing them as the daemon would, in one batch. */
        assert_int_equal(mnd_audit_batch_begin(a, true), 0);
        append_session_event(a, "session-end", 2, "CART-B");
        append_session_event(a, "session-end", 4, "CART-D");
        assert_int_equal(mnd_audit_batch_commit(a), 0);
        assert_int_equal(mnd_audit_running_sessions(a, &recs, &n), 0);
        assert_int_equal(n, 0);
        assert_null(recs);
        verify(a, true, 12, 0);
        mnd_audit_close(a);
        remove_dir(dir);
}

static void test_batch_and_checkpoint(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        struct mnd_audit_checkpoint cp;
        char head[MND_AUDIT_HASH_HEX_SIZE], head2[MND_AUDIT_HASH_HEX_SIZE];
        uint64_t count, seq;

        e.kind = "config-change";
        assert_int_equal(mnd_audit_checkpoint(a, &cp), 0);     /* none yet */

        /* A durable append moves the checkpoint; a non-durable one does not. */
        assert_int_equal(mnd_audit_append(a, &e, true, &seq, head), 0);
        assert_int_equal(mnd_audit_checkpoint(a, &cp), 1);
        assert_int_equal(cp.count, 1);
        assert_string_equal(cp.head, head);
        assert_int_equal(mnd_audit_append(a, &e, false, &seq, NULL), 0);
        assert_int_equal(seq, 2);
        assert_int_equal(mnd_audit_checkpoint(a, &cp), 1);
        assert_int_equal(cp.count, 1);

        /* An aborted batch leaves nothing. */
        assert_int_equal(mnd_audit_head_hash(a, head), 0);
        assert_int_equal(mnd_audit_batch_begin(a, true), 0);
        for (int i = 0; i < 5; i++)
                assert_int_equal(mnd_audit_append(a, &e, true, &seq, NULL), 0);
        assert_int_equal(seq, 7);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 7);    /* inside the batch, it sees its own events */
        assert_int_equal(mnd_audit_batch_abort(a), 0);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 2);
        assert_int_equal(mnd_audit_head_hash(a, head2), 0);
        assert_string_equal(head, head2);

        /* A committed one is all there; a durable commit moves the checkpoint. */
        assert_int_equal(mnd_audit_batch_begin(a, true), 0);
        for (int i = 0; i < 5; i++)
                assert_int_equal(mnd_audit_append(a, &e, false, &seq, NULL), 0);
        assert_int_equal(mnd_audit_batch_commit(a), 0);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 7);
        assert_int_equal(mnd_audit_checkpoint(a, &cp), 1);
        assert_int_equal(cp.count, 7);
        verify(a, true, 7, 0);

        /* A batch left open at close is discarded. */
        assert_int_equal(mnd_audit_batch_begin(a, true), 0);
        assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);
        mnd_audit_close(a);
        a = open_log(dir);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 7);
        verify(a, true, 7, 0);
        mnd_audit_close(a);
        remove_dir(dir);
}

/* ---- hostile strings and caps ---- */

static void test_strings(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_record *recs = NULL;
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        char id_max[MND_AUDIT_ID_MAX + 1], name_max[MND_AUDIT_NAME_MAX + 1], msg_max[MND_AUDIT_MESSAGE_MAX + 1];
        char id_over[MND_AUDIT_ID_MAX + 2], name_over[MND_AUDIT_NAME_MAX + 2], msg_over[MND_AUDIT_MESSAGE_MAX + 2];
        struct mnd_audit_detail many[MND_AUDIT_DETAILS_MAX + 1];
        char keys[MND_AUDIT_DETAILS_MAX + 1][8];
        uint64_t count;
        size_t n;

        e.kind = "refusal";
        e.pen = "PEN-'; DROP TABLE events; --";
        e.operator = "Zoë Ångström-Ñúñez 李小龍 \"Dr.\" \\ %s %n";
        e.patient_ref = "مريض-١٢";           /* right-to-left */
        e.user = "🙂 user";
        e.sender = ":1.7";
        e.area = "forehead";
        e.message = "depth 0.80 mm exceeds the 0.75 mm cap for area 'forehead'\n\tsecond line";
        e.details = (const struct mnd_audit_detail[]) { { "sql", "x' OR '1'='1" }, { "empty", "" } };
        e.n_details = 2;
        assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);

        /* Exactly at every cap is fine. */
        memset(id_max, 'i', MND_AUDIT_ID_MAX);
        id_max[MND_AUDIT_ID_MAX] = '\0';
        memset(name_max, 'n', MND_AUDIT_NAME_MAX);
        name_max[MND_AUDIT_NAME_MAX] = '\0';
        memset(msg_max, 'm', MND_AUDIT_MESSAGE_MAX);
        msg_max[MND_AUDIT_MESSAGE_MAX] = '\0';
        struct mnd_audit_event big = MND_AUDIT_EVENT_INIT;
        big.kind = "abcdefghijklmnopqrstuvwxyz-01234";  /* 32 */
        big.pen = big.cartridge = big.area = id_max;
        big.operator = big.patient_ref = big.user = big.sender = name_max;
        big.message = msg_max;
        for (unsigned i = 0; i <= MND_AUDIT_DETAILS_MAX; i++) {
                snprintf(keys[i], sizeof keys[i], "k%u", i);
                many[i] = (struct mnd_audit_detail) { keys[i], "v" };
        }
        big.details = many;
        big.n_details = MND_AUDIT_DETAILS_MAX;
        assert_int_equal(mnd_audit_append(a, &big, true, NULL, NULL), 0);

        /* One over any cap: refused, never truncated. */
        struct mnd_audit_event bad;
#define REFUSED(field, value, err)                                              \
        do {                                                                    \
                bad = big;                                                      \
                bad.field = value;                                              \
                assert_int_equal(mnd_audit_append(a, &bad, true, NULL, NULL), err); \
        } while (0)
        memcpy(id_over, id_max, MND_AUDIT_ID_MAX);
        strcpy(id_over + MND_AUDIT_ID_MAX, "i");
        memcpy(name_over, name_max, MND_AUDIT_NAME_MAX);
        strcpy(name_over + MND_AUDIT_NAME_MAX, "n");
        memcpy(msg_over, msg_max, MND_AUDIT_MESSAGE_MAX);
        strcpy(msg_over + MND_AUDIT_MESSAGE_MAX, "m");
        REFUSED(pen, id_over, -E2BIG);
        REFUSED(cartridge, id_over, -E2BIG);
        REFUSED(area, id_over, -E2BIG);
        REFUSED(operator, name_over, -E2BIG);
        REFUSED(patient_ref, name_over, -E2BIG);
        REFUSED(user, name_over, -E2BIG);
        REFUSED(sender, name_over, -E2BIG);
        REFUSED(message, msg_over, -E2BIG);
        REFUSED(kind, "abcdefghijklmnopqrstuvwxyz-012345", -E2BIG);
        REFUSED(n_details, MND_AUDIT_DETAILS_MAX + 1, -E2BIG);
        /* Malformed: invalid UTF-8 (bad byte, overlong, surrogate, truncated), control
         * characters (C0, DEL, C1, a terminal escape), bad kinds and detail keys. */
        REFUSED(operator, "abc\xff", -EINVAL);
        REFUSED(operator, "\xc0\xaf", -EINVAL);
        REFUSED(operator, "\xed\xa0\x80", -EINVAL);
        REFUSED(operator, "\xe2\x82", -EINVAL);
        REFUSED(operator, "tab\there", -EINVAL);
        REFUSED(pen, "esc\x1b[31m", -EINVAL);
        REFUSED(pen, "del\x7f", -EINVAL);
        REFUSED(pen, "c1\xc2\x9b", -EINVAL);
        REFUSED(message, "bell\a", -EINVAL);
        REFUSED(kind, "Session-Start", -EINVAL);
        REFUSED(kind, "1abc", -EINVAL);
        REFUSED(kind, "a b", -EINVAL);
        REFUSED(kind, "", -EINVAL);
        REFUSED(details, ((const struct mnd_audit_detail[]) { { "a", "1" }, { "a", "2" } }), -EINVAL);
        REFUSED(details, ((const struct mnd_audit_detail[]) { { "bad key", "1" }, { "b", "2" } }), -EINVAL);
        REFUSED(details, ((const struct mnd_audit_detail[]) { { "", "1" }, { "b", "2" } }), -EINVAL);
#undef REFUSED
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 2);

        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {}, &recs, &n), 0);
        assert_int_equal(n, 2);
        e.details = (const struct mnd_audit_detail[]) { { "sql", "x' OR '1'='1" }, { "empty", NULL } };
        e.time_usec = recs[0].event.time_usec;         /* stamped at append */
        assert_events_equal(&recs[0].event, &e);
        assert_int_equal(recs[1].event.n_details, MND_AUDIT_DETAILS_MAX);
        assert_string_equal(recs[1].event.details[31].key, "k31");
        assert_string_equal(recs[1].event.operator, name_max);
        assert_string_equal(recs[1].event.message, msg_max);
        mnd_audit_records_free(recs, n);

        /* Filters bind their values: the hostile pen finds its event and nothing else. */
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .pen = "PEN-'; DROP TABLE events; --" },
                                         &recs, &n), 0);
        assert_int_equal(n, 1);
        mnd_audit_records_free(recs, n);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .pen = "x' OR '1'='1" }, &recs, &n), 0);
        assert_int_equal(n, 0);

        verify(a, true, 2, 0);
        mnd_audit_close(a);
        remove_dir(dir);
}

/* The serialisation is unambiguous where plain concatenation is not; "" and NULL are one value. */
static void test_serialisation(void **state) {
        struct mnd_audit_event x = MND_AUDIT_EVENT_INIT, y;
        uint8_t hx[32], hy[32];

        x.kind = "fault";
        x.time_usec = T0;
        x.pen = "ab";
        x.area = "c";
        y = x;
        y.pen = "a";
        y.area = "bc";
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &x, hx), 0);
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &y, hy), 0);
        assert_memory_not_equal(hx, hy, 32);

        /* A value moved from one field to its neighbour. */
        y = x;
        y.pen = NULL;
        y.cartridge = "ab";
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &y, hy), 0);
        assert_memory_not_equal(hx, hy, 32);

        /* Unset versus zero. */
        y = x;
        y.depth_um = 0;
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &y, hy), 0);
        assert_memory_not_equal(hx, hy, 32);

        /* Details: ("a=b", "c=") versus ("a=", "bc=")... */
        x.details = (const struct mnd_audit_detail[]) { { "a", "bc" } };
        x.n_details = 1;
        y = x;
        y.details = (const struct mnd_audit_detail[]) { { "ab", "c" } };
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &x, hx), 0);
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &y, hy), 0);
        assert_memory_not_equal(hx, hy, 32);

        /* seq and prev are hashed. */
        assert_int_equal(mnd_audit_event_hash(NULL, 2, &x, hy), 0);
        assert_memory_not_equal(hx, hy, 32);
        assert_int_equal(mnd_audit_event_hash(hx, 1, &x, hy), 0);
        assert_memory_not_equal(hx, hy, 32);

        /* "" is NULL. */
        x.n_details = 0;
        x.message = "";
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &x, hx), 0);
        x.message = NULL;
        assert_int_equal(mnd_audit_event_hash(NULL, 1, &x, hy), 0);
        assert_memory_equal(hx, hy, 32);
}

/* ---- tampering ---- */

#define N_TAMPER 10

static void test_tamper_each_column(void **state) {
        static const char *const edits[] = {
                "UPDATE events SET time_usec = time_usec + 1 WHERE seq = 4",
                "UPDATE events SET kind = 'session-start' WHERE seq = 4",
                "UPDATE events SET pen = pen || 'x' WHERE seq = 4",
                "UPDATE events SET session = session + 1 WHERE seq = 4",
                "UPDATE events SET cartridge = 'CART-99' WHERE seq = 4",
                "UPDATE events SET area = 'body' WHERE seq = 4",
                "UPDATE events SET depth_um = 2500 WHERE seq = 4",
                "UPDATE events SET speed_hz = speed_hz + 1 WHERE seq = 4",
                "UPDATE events SET duration_s = 3600 WHERE seq = 4",
                "UPDATE events SET operator = 'someone else' WHERE seq = 4",
                "UPDATE events SET patient_ref = NULL WHERE seq = 4",
                "UPDATE events SET uid = 0 WHERE seq = 4",
                "UPDATE events SET user = 'root' WHERE seq = 4",
                "UPDATE events SET sender = ':1.1' WHERE seq = 4",
                "UPDATE events SET message = 'nothing happened' WHERE seq = 4",
                "UPDATE events SET details = NULL WHERE seq = 4",
                "UPDATE events SET details = details || x'00' WHERE seq = 4",
                "UPDATE events SET hash = randomblob(32) WHERE seq = 4",
                "UPDATE events SET depth_um = '260' WHERE seq = 2",            /* same number, as text */
                "UPDATE events SET message = CAST(message AS BLOB) || x'00' WHERE seq = 4",
                "UPDATE events SET operator = '' WHERE seq = 4",
        };
        char *pristine = make_full_log(N_TAMPER);

        verify_dir(pristine, true, N_TAMPER, 0);
        for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
                char *dir = clone_log(pristine);
                sqlite3 *db = tamper_open(dir);
                struct mnd_audit *a;
                struct mnd_audit_verify_result v;

                raw_exec(db, edits[i]);
                assert_int_equal(sqlite3_changes(db), 1);
                sqlite3_close(db);
                a = open_log(dir);
                assert_int_equal(mnd_audit_verify(a, &v), 0);
                if (v.ok || v.count != N_TAMPER || v.first_bad_seq != (strstr(edits[i], "seq = 2") ? 2u : 4u))
                        fail_msg("not detected: %s (ok %d first_bad %" PRIu64 ")", edits[i], v.ok, v.first_bad_seq);
                mnd_audit_close(a);
                remove_dir(dir);
        }
        remove_dir(pristine);
}

/* A clever tamperer: edits event 'from' and recomputes the hash of it and every later event, then
 * rewrites the checkpoint file or not. */
static void rewrite_chain(const char *dir, uint64_t from, const char *new_operator) {
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_record *recs = NULL;
        uint8_t prev[32], h[32];
        sqlite3 *db;
        sqlite3_stmt *s;
        size_t n;

        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {}, &recs, &n), 0);
        mnd_audit_close(a);
        db = tamper_open(dir);
        assert_int_equal(sqlite3_prepare_v2(db, "UPDATE events SET operator = ?1, hash = ?2 WHERE seq = ?3", -1, &s, NULL),
                         SQLITE_OK);
        for (size_t i = 0; i < n; i++) {
                if (recs[i].seq >= from) {
                        if (recs[i].seq == from)
                                recs[i].event.operator = new_operator;
                        assert_int_equal(mnd_audit_event_hash(recs[i].seq == 1 ? NULL : prev, recs[i].seq,
                                                              &recs[i].event, h), 0);
                        sqlite3_bind_text(s, 1, recs[i].event.operator, -1, SQLITE_STATIC);
                        sqlite3_bind_blob(s, 2, h, 32, SQLITE_STATIC);
                        sqlite3_bind_int64(s, 3, (sqlite3_int64) recs[i].seq);
                        assert_int_equal(sqlite3_step(s), SQLITE_DONE);
                        sqlite3_reset(s);
                } else
                        assert_int_equal(sodium_hex2bin(h, 32, recs[i].hash, 64, NULL, NULL, NULL), 0);
                memcpy(prev, h, 32);
        }
        sqlite3_finalize(s);
        sqlite3_close(db);
        mnd_audit_records_free(recs, n);
}

static void test_tamper_rows(void **state) {
        char *pristine = make_full_log(N_TAMPER), *dir;
        struct mnd_audit_checkpoint published;
        struct mnd_audit_verify_result v;
        struct mnd_audit *a;
        sqlite3 *db;

        a = open_log(pristine);
        assert_int_equal(mnd_audit_checkpoint(a, &published), 1);
        assert_int_equal(published.count, N_TAMPER);
        mnd_audit_close(a);

        /* The triggers refuse plain edits. */
        db = raw_open(pristine);
        assert_int_equal(sqlite3_exec(db, "UPDATE events SET depth_um = 1 WHERE seq = 3", NULL, NULL, NULL),
                         SQLITE_CONSTRAINT);
        assert_int_equal(sqlite3_exec(db, "DELETE FROM events WHERE seq = 3", NULL, NULL, NULL), SQLITE_CONSTRAINT);
        sqlite3_close(db);

        /* Deleting a row in the middle: the first missing seq. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "DELETE FROM events WHERE seq = 5");
        sqlite3_close(db);
        verify_dir(dir, false, N_TAMPER - 1, 5);
        remove_dir(dir);

        /* Deleting the first. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "DELETE FROM events WHERE seq = 1");
        sqlite3_close(db);
        verify_dir(dir, false, N_TAMPER - 1, 1);
        remove_dir(dir);

        /* Inserting a row at the end with a made-up hash. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "INSERT INTO events (seq, time_usec, kind, hash) VALUES (11, 1, 'session-end', randomblob(32))");
        sqlite3_close(db);
        verify_dir(dir, false, N_TAMPER + 1, 11);
        remove_dir(dir);

        /* Inserting a row in the middle with a correct hash for its place: the rows after it
         * had to move, and they no longer hash. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        for (int seq = N_TAMPER; seq >= 6; seq--) {
                char sql[128];

                snprintf(sql, sizeof sql, "UPDATE events SET seq = %d WHERE seq = %d", seq + 1, seq);
                raw_exec(db, sql);
        }
        {
                struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
                uint8_t prev[32], h[32];
                sqlite3_stmt *s;

                assert_int_equal(sqlite3_prepare_v2(db, "SELECT hash FROM events WHERE seq = 5", -1, &s, NULL), SQLITE_OK);
                assert_int_equal(sqlite3_step(s), SQLITE_ROW);
                memcpy(prev, sqlite3_column_blob(s, 0), 32);
                sqlite3_finalize(s);
                e.kind = "session-end";
                e.time_usec = T0 + 5500;
                e.message = "completed";
                assert_int_equal(mnd_audit_event_hash(prev, 6, &e, h), 0);
                assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO events (seq, time_usec, kind, message, hash) "
                                                    "VALUES (6, ?1, 'session-end', 'completed', ?2)", -1, &s, NULL),
                                 SQLITE_OK);
                sqlite3_bind_int64(s, 1, (sqlite3_int64) e.time_usec);
                sqlite3_bind_blob(s, 2, h, 32, SQLITE_STATIC);
                assert_int_equal(sqlite3_step(s), SQLITE_DONE);
                sqlite3_finalize(s);
        }
        sqlite3_close(db);
        verify_dir(dir, false, N_TAMPER + 1, 7);
        remove_dir(dir);

        /* Swapping two rows' contents (seq stays in place). */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "UPDATE events SET seq = 1000 WHERE seq = 3;"
                     "UPDATE events SET seq = 3 WHERE seq = 7;"
                     "UPDATE events SET seq = 7 WHERE seq = 1000;");
        sqlite3_close(db);
        verify_dir(dir, false, N_TAMPER, 3);
        remove_dir(dir);

        /* Renumbering: seq shifted by one everywhere. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "UPDATE events SET seq = seq + 100; UPDATE events SET seq = seq - 99;");
        sqlite3_close(db);
        verify_dir(dir, false, N_TAMPER, 1);
        remove_dir(dir);

        /* Truncating the tail: the chain itself is fine, the checkpoint is not. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "DELETE FROM events WHERE seq > 8");
        sqlite3_close(db);
        a = open_log(dir);
        verify(a, false, 8, 9);
        {
                struct mnd_audit_checkpoint cp;
                struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;

                /* The checkpoint is frozen: appending does not paper over the gap. */
                assert_int_equal(mnd_audit_checkpoint(a, &cp), 2);
                assert_int_equal(cp.count, N_TAMPER);
                e.kind = "daemon-start";
                assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);
                assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);
                verify(a, false, 10, 10);
                assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);
                verify(a, false, 11, 10);
        }
        mnd_audit_close(a);
        verify_dir(dir, false, 11, 10);
        remove_dir(dir);

        /* Truncating the tail and deleting the checkpoint file: undetectable locally (the
         * documented limit), detected against a head published before. */
        dir = clone_log(pristine);
        db = tamper_open(dir);
        raw_exec(db, "DELETE FROM events WHERE seq > 8");
        sqlite3_close(db);
        {
                char *p = path_in(dir, MND_AUDIT_CHECKPOINT_FILE);

                assert_int_equal(unlink(p), 0);
                free(p);
        }
        a = open_log(dir);
        verify(a, true, 8, 0);
        assert_int_equal(mnd_audit_verify_against(a, &published, &v), 0);
        assert_false(v.ok);
        assert_int_equal(v.first_bad_seq, 9);
        mnd_audit_close(a);
        remove_dir(dir);

        /* Rewriting the chain from event 4 on: every row hashes, but the checkpoint's does not. */
        dir = clone_log(pristine);
        rewrite_chain(dir, 4, "an impostor");
        a = open_log(dir);
        verify(a, false, N_TAMPER, N_TAMPER);
        assert_int_equal(mnd_audit_verify_against(a, &published, &v), 0);
        assert_false(v.ok);
        assert_int_equal(v.first_bad_seq, N_TAMPER);
        mnd_audit_close(a);
        remove_dir(dir);

        /* ... and with the checkpoint file deleted too: only a published head finds it. */
        dir = clone_log(pristine);
        rewrite_chain(dir, 4, "an impostor");
        {
                char *p = path_in(dir, MND_AUDIT_CHECKPOINT_FILE);

                assert_int_equal(unlink(p), 0);
                free(p);
        }
        a = open_log(dir);
        verify(a, true, N_TAMPER, 0);
        assert_int_equal(mnd_audit_verify_against(a, &published, &v), 0);
        assert_false(v.ok);
        assert_int_equal(v.first_bad_seq, N_TAMPER);
        /* A published head for an earlier state still matches where nothing changed. */
        {
                struct mnd_audit_checkpoint early = { .count = 3 };
                struct mnd_audit_record *recs;
                size_t n;

                assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .limit = 3 }, &recs, &n), 0);
                assert_int_equal(n, 3);
                memcpy(early.head, recs[2].hash, sizeof early.head);
                mnd_audit_records_free(recs, n);
                assert_int_equal(mnd_audit_verify_against(a, &early, &v), 0);
                assert_true(v.ok);
                early.head[0] = early.head[0] == '0' ? '1' : '0';
                assert_int_equal(mnd_audit_verify_against(a, &early, &v), 0);
                assert_false(v.ok);
                assert_int_equal(v.first_bad_seq, 3);
                memcpy(early.head, "zz", 2);
                assert_int_equal(mnd_audit_verify_against(a, &early, &v), -EINVAL);
        }
        mnd_audit_close(a);
        remove_dir(dir);

        remove_dir(pristine);
}

/* The checkpoint file: a damaged slot falls back to the other one; garbage is no checkpoint. */
static void test_checkpoint_file(void **state) {
        char *pristine = make_full_log(N_TAMPER), *dir;
        struct mnd_audit_checkpoint cp;
        struct mnd_audit *a;
        char *p;
        int fd;

        /* Slot (count % 2): count 10 is in slot 0, count 9 in slot 1. */
        dir = clone_log(pristine);
        p = path_in(dir, MND_AUDIT_CHECKPOINT_FILE);
        fd = open(p, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "X", 1, 20), 1);   /* torn/damaged newest slot */
        close(fd);
        a = open_log(dir);
        assert_int_equal(mnd_audit_checkpoint(a, &cp), 1);
        assert_int_equal(cp.count, N_TAMPER - 1);
        verify(a, true, N_TAMPER, 0);
        mnd_audit_close(a);

        /* Both slots damaged: no checkpoint, the chain alone. */
        fd = open(p, O_RDWR | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(pwrite(fd, "X", 1, 4096 + 20), 1);
        close(fd);
        a = open_log(dir);
        assert_int_equal(mnd_audit_checkpoint(a, &cp), 0);
        verify(a, true, N_TAMPER, 0);
        mnd_audit_close(a);
        free(p);
        remove_dir(dir);

        /* A checkpoint from a longer log (copied from elsewhere) is a mismatch. */
        dir = make_dir();
        a = open_log(dir);
        for (unsigned i = 1; i <= 3; i++) {
                struct mnd_audit_event e = full_event(i);

                assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), 0);
        }
        mnd_audit_close(a);
        copy_file(pristine, dir, MND_AUDIT_CHECKPOINT_FILE);
        verify_dir(dir, false, 3, 4);
        remove_dir(dir);

        remove_dir(pristine);
}

/* ---- crashes ---- */

static void crash_child(const char *dir, int fd, unsigned round) {
        struct mnd_audit *a = NULL;
        char msg[64];

        if (mnd_audit_open(dir, 0, &a) < 0)
                _exit(2);
        for (unsigned i = 0;; i++) {
                struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
                uint64_t seq;

                snprintf(msg, sizeof msg, "round %u event %u", round, i);
                e.kind = "setpoint-change";
                e.pen = "PEN-CRASH";
                e.depth_um = i % 3000;
                e.message = msg;
                if (mnd_audit_append(a, &e, true, &seq, NULL) < 0)
                        _exit(3);
                if (write(fd, &seq, sizeof seq) != sizeof seq)
                        _exit(4);
        }
}

static void test_crash(void **state) {
        char *dir = make_dir();
        uint64_t total = 0;
        unsigned seed = (unsigned) time(NULL) ^ (unsigned) getpid();

        srand(seed);
        for (unsigned round = 0; round < 4; round++) {
                uint64_t acked[1 << 14], max_acked = 0, count;
                size_t n_acked = 0;
                struct timespec ts;
                int pipefd[2], status;
                pid_t pid;
                ssize_t n;
                struct mnd_audit *a;

                assert_int_equal(pipe2(pipefd, O_CLOEXEC), 0);
                pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        close(pipefd[0]);
                        crash_child(dir, pipefd[1], round);
                }
                close(pipefd[1]);
                /* Let it get going, then kill it at a random moment (20-120 ms later). */
                n = read(pipefd[0], &acked[0], sizeof acked[0]);
                assert_int_equal(n, (ssize_t) sizeof acked[0]);
                n_acked = 1;
                ts = (struct timespec) { .tv_nsec = (20 + rand() % 100) * 1000000L };
                nanosleep(&ts, NULL);
                assert_int_equal(kill(pid, SIGKILL), 0);
                assert_int_equal(waitpid(pid, &status, 0), pid);
                assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
                for (;;) {
                        n = read(pipefd[0], &acked[n_acked], sizeof acked[0]);
                        if (n == 0)
                                break;
                        assert_int_equal(n, (ssize_t) sizeof acked[0]);
                        if (n_acked + 1 < ELEMENTSOF(acked))
                                n_acked++;
                }
                close(pipefd[0]);
                for (size_t i = 0; i < n_acked; i++) {
                        assert_int_equal(acked[i], total + 1 + i);     /* seqs are consecutive */
                        max_acked = acked[i];
                }

                /* Every acknowledged event is there, the chain verifies, the checkpoint holds. */
                a = open_log(dir);
                assert_int_equal(mnd_audit_count(a, &count), 0);
                assert_true(count >= max_acked);
                assert_true(count <= max_acked + 1);  /* at most one committed but not yet acknowledged */
                verify(a, true, count, 0);
                {
                        struct mnd_audit_record *recs;
                        size_t n_recs;
                        char msg[64];

                        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {
                                .after_seq = total, .limit = 1000, .pen = "PEN-CRASH" }, &recs, &n_recs), 0);
                        assert_true(n_recs >= MIN(n_acked, (size_t) 1000));
                        for (size_t i = 0; i < n_recs; i++) {
                                assert_int_equal(recs[i].seq, total + 1 + i);
                                snprintf(msg, sizeof msg, "round %u event %zu", round, i);
                                assert_string_equal(recs[i].event.message, msg);
                        }
                        mnd_audit_records_free(recs, n_recs);
                }
                mnd_audit_close(a);
                print_message("crash round %u: killed after %zu acknowledged appends, %" PRIu64 " committed\n",
                              round, n_acked, count - total);
                total = count;
        }
        assert_true(total > 4);
        remove_dir(dir);
}

/* ---- full and read-only ---- */

static void test_disk_full(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_event e = full_event(1);
        char head[MND_AUDIT_HASH_HEX_SIZE], head_now[MND_AUDIT_HASH_HEX_SIZE];
        uint64_t seq = 0, last = 0, count;
        int r = 0;

        assert_int_equal(mnd_audit_append(a, &e, true, &last, head), 0);
        assert_int_equal(mnd_audit_set_max_size(a, 1), 0);     /* clamped to the current size */
        for (unsigned i = 0; i < 10000; i++) {
                r = mnd_audit_append(a, &e, true, &seq, NULL);
                if (r < 0)
                        break;
                last = seq;
                assert_int_equal(mnd_audit_head_hash(a, head), 0);
        }
        assert_int_equal(r, -ENOSPC);

        /* Nothing half-written: same count, same head, chain intact. */
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, last);
        assert_int_equal(mnd_audit_head_hash(a, head_now), 0);
        assert_string_equal(head_now, head);
        verify(a, true, last, 0);

        /* A batch that runs into it is discarded whole. */
        assert_int_equal(mnd_audit_batch_begin(a, true), 0);
        r = mnd_audit_append(a, &e, true, NULL, NULL);
        assert_int_equal(r, -ENOSPC);
        assert_int_equal(mnd_audit_batch_commit(a), -ENOENT);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, last);

        /* Room again: the next event continues the chain. */
        assert_int_equal(mnd_audit_set_max_size(a, 0), 0);
        assert_int_equal(mnd_audit_append(a, &e, true, &seq, NULL), 0);
        assert_int_equal(seq, last + 1);
        verify(a, true, last + 1, 0);
        mnd_audit_close(a);
        verify_dir(dir, true, last + 1, 0);
        remove_dir(dir);
}

static int set_immutable(const char *path, bool on) {
        int fd = open(path, O_RDONLY | O_CLOEXEC), flags, r = 0;

        if (fd < 0)
                return -errno;
        if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
                r = -errno;
        else {
                flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
                if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)
                        r = -errno;
        }
        close(fd);
        return r;
}

static void test_read_only(void **state) {
        char *dir = make_dir(), *db_path = path_in(dir, MND_AUDIT_DB_FILE);
        struct mnd_audit *a = open_log(dir);
        struct mnd_audit_event e = full_event(1);
        struct mnd_audit_record *recs;
        char head[MND_AUDIT_HASH_HEX_SIZE], head_now[MND_AUDIT_HASH_HEX_SIZE];
        uint64_t count;
        size_t n;
        int r;

        for (int i = 0; i < 3; i++)
                assert_int_equal(mnd_audit_append(a, &e, true, NULL, head), 0);
        mnd_audit_close(a);

        /* Opened read-only (SQLITE_OPEN_READONLY: works as root too): reads work, appends fail
         * in SQLite with SQLITE_READONLY. */
        assert_int_equal(mnd_audit_open(dir, MND_AUDIT_OPEN_READ_ONLY, &a), 0);
        assert_int_equal(mnd_audit_append(a, &e, true, NULL, NULL), -EROFS);
        assert_int_equal(mnd_audit_batch_begin(a, true), -EROFS);
        assert_int_equal(mnd_audit_count(a, &count), 0);
        assert_int_equal(count, 3);
        assert_int_equal(mnd_audit_head_hash(a, head_now), 0);
        assert_string_equal(head_now, head);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) {}, &recs, &n), 0);
        assert_int_equal(n, 3);
        mnd_audit_records_free(recs, n);
        verify(a, true, 3, 0);
        mnd_audit_close(a);

        /* The file made immutable (chmod does not stop root, FS_IMMUTABLE_FL does): SQLite falls
         * back to opening it read-only and the append fails with -EROFS. */
        r = set_immutable(db_path, true);
        if (r < 0)
                print_message("[ SKIPPED  ] immutable file: FS_IOC_SETFLAGS: %s\n", strerror(-r));
        else {
                int r_append;

                r = mnd_audit_open(dir, 0, &a);
                r_append = r < 0 ? r : mnd_audit_append(a, &e, true, NULL, NULL);
                mnd_audit_close(a);
                assert_int_equal(set_immutable(db_path, false), 0);
                assert_int_equal(r, 0);
                assert_int_equal(r_append, -EROFS);
        }

        verify_dir(dir, true, 3, 0);
        free(db_path);
        remove_dir(dir);
}

/* A damaged database file: every call fails cleanly with -EBADMSG (or Verify names it), nothing
 * crashes and nothing reports a good log. */
static void test_corrupt(void **state) {
        char *dir = make_full_log(200), *p = path_in(dir, MND_AUDIT_DB_FILE);
        struct mnd_audit_verify_result v;
        struct mnd_audit_event e = full_event(1);
        struct mnd_audit *a = NULL;
        uint8_t junk[4096];
        struct stat st;
        int fd, r;

        assert_int_equal(stat(p, &st), 0);
        assert_true(st.st_size >= 8 * 4096);
        memset(junk, 0xa5, sizeof junk);
        fd = open(p, O_WRONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        for (off_t page = 2; page * 4096 < st.st_size; page += 2)      /* every other page */
                assert_int_equal(pwrite(fd, junk, sizeof junk, page * 4096), (ssize_t) sizeof junk);
        close(fd);

        r = mnd_audit_open(dir, 0, &a);
        if (r < 0)
                assert_int_equal(r, -EBADMSG);
        else {
                r = mnd_audit_verify(a, &v);
                assert_true(r == -EBADMSG || (r == 0 && !v.ok));
                r = mnd_audit_append(a, &e, true, NULL, NULL);
                assert_true(r == 0 || r == -EBADMSG);
                mnd_audit_close(a);
        }
        free(p);
        remove_dir(dir);
}

/* ---- schema ---- */

/* Schema version 1 as that version created it. */
static const char schema_v1[] =
        "CREATE TABLE events ("
        " seq INTEGER PRIMARY KEY NOT NULL CHECK (seq > 0),"
        " time_usec INTEGER NOT NULL,"
        " kind TEXT NOT NULL,"
        " pen TEXT, session INTEGER, cartridge TEXT, area TEXT,"
        " depth_um INTEGER, speed_hz INTEGER, duration_s INTEGER,"
        " operator TEXT, patient_ref TEXT, uid INTEGER, user TEXT, sender TEXT,"
        " message TEXT,"
        " hash BLOB NOT NULL CHECK (length(hash) = 32));"
        "CREATE INDEX events_time ON events (time_usec);"
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events"
        " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events"
        " BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;"
        "PRAGMA user_version = 1;";

static void test_migration_v1(void **state) {
        char *dir = make_dir();
        sqlite3 *db = raw_open(dir);
        sqlite3_stmt *s;
        struct mnd_audit *a;
        struct mnd_audit_record *recs;
        struct mnd_audit_event e;
        uint8_t prev[32], h[32];
        uint64_t count;
        size_t n;

        raw_exec(db, "PRAGMA journal_mode = WAL");
        raw_exec(db, schema_v1);
        assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO events (seq, time_usec, kind, pen, session, cartridge, "
                                            "depth_um, operator, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                                            -1, &s, NULL), SQLITE_OK);
        for (unsigned i = 1; i <= 3; i++) {
                e = MND_AUDIT_EVENT_INIT;
                e.kind = i == 2 ? "session-start" : "setpoint-change";
                e.time_usec = T0 + i;
                e.pen = "OLD-PEN";
                e.session = 7;
                e.cartridge = "OLD-CART";
                e.depth_um = 500;
                e.operator = "v1 operator";
                assert_int_equal(mnd_audit_event_hash(i == 1 ? NULL : prev, i, &e, h), 0);
                sqlite3_bind_int64(s, 1, i);
                sqlite3_bind_int64(s, 2, (sqlite3_int64) e.time_usec);
                sqlite3_bind_text(s, 3, e.kind, -1, SQLITE_STATIC);
                sqlite3_bind_text(s, 4, e.pen, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 5, (sqlite3_int64) e.session);
                sqlite3_bind_text(s, 6, e.cartridge, -1, SQLITE_STATIC);
                sqlite3_bind_int64(s, 7, e.depth_um);
                sqlite3_bind_text(s, 8, e.operator, -1, SQLITE_STATIC);
                sqlite3_bind_blob(s, 9, h, 32, SQLITE_STATIC);
                assert_int_equal(sqlite3_step(s), SQLITE_DONE);
                sqlite3_reset(s);
                memcpy(prev, h, 32);
        }
        sqlite3_finalize(s);
        sqlite3_close(db);

        /* Opening migrates: version 2, the details column and the new indexes; the old chain
         * still verifies and continues. */
        a = open_log(dir);
        verify(a, true, 3, 0);
        assert_int_equal(mnd_audit_cartridge_used(a, "OLD-CART", &count), 1);
        assert_int_equal(count, 7);
        e = full_event(4);
        assert_int_equal(mnd_audit_append(a, &e, true, &count, NULL), 0);
        assert_int_equal(count, 4);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .pen = "OLD-PEN" }, &recs, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(recs[1].event.operator, "v1 operator");
        assert_int_equal(recs[1].event.n_details, 0);
        mnd_audit_records_free(recs, n);
        assert_int_equal(mnd_audit_query(a, &(struct mnd_audit_filter) { .after_seq = 3 }, &recs, &n), 0);
        assert_int_equal(n, 1);
        assert_events_equal(&recs[0].event, &e);
        mnd_audit_records_free(recs, n);
        verify(a, true, 4, 0);
        mnd_audit_close(a);

        db = raw_open(dir);
        assert_int_equal(raw_int(db, "PRAGMA user_version"), 2);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM pragma_table_info('events') WHERE name = 'details'"), 1);
        assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name IN "
                                     "('events_pen', 'events_session', 'events_cartridge', 'events_kind', "
                                     "'events_session_end', 'events_time')"), 6);
        sqlite3_close(db);

        /* Reopening a current database changes nothing. */
        verify_dir(dir, true, 4, 0);
        remove_dir(dir);
}

static void test_schema_refused(void **state) {
        char *dir = make_dir();
        struct mnd_audit *a = NULL;
        sqlite3 *db;

        /* A newer schema than this code knows. */
        a = open_log(dir);
        mnd_audit_close(a);
        db = raw_open(dir);
        raw_exec(db, "PRAGMA user_version = 3");
        sqlite3_close(db);
        a = NULL;
        assert_int_equal(mnd_audit_open(dir, 0, &a), -EPROTONOSUPPORT);
        assert_null(a);
        remove_dir(dir);

        /* Somebody else's database. */
        dir = make_dir();
        db = raw_open(dir);
        raw_exec(db, "CREATE TABLE other (x)");
        sqlite3_close(db);
        assert_int_equal(mnd_audit_open(dir, 0, &a), -EBADMSG);
        remove_dir(dir);

        /* Not a database at all. */
        dir = make_dir();
        {
                char *p = path_in(dir, MND_AUDIT_DB_FILE);
                int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);

                assert_true(fd >= 0);
                assert_int_equal(write(fd, "this is not an SQLite database, just text.......................................................................................", 120), 120);
                close(fd);
                free(p);
        }
        assert_int_equal(mnd_audit_open(dir, 0, &a), -EBADMSG);
        remove_dir(dir);

        /* Read-only open of a directory without a log. */
        dir = make_dir();
        assert_true(mnd_audit_open(dir, MND_AUDIT_OPEN_READ_ONLY, &a) < 0);
        assert_false(file_exists(dir, MND_AUDIT_DB_FILE));
        remove_dir(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_append_query),
                cmocka_unit_test(test_null_and_args),
                cmocka_unit_test(test_filters),
                cmocka_unit_test(test_sessions_cartridges),
                cmocka_unit_test(test_batch_and_checkpoint),
                cmocka_unit_test(test_strings),
                cmocka_unit_test(test_serialisation),
                cmocka_unit_test(test_tamper_each_column),
                cmocka_unit_test(test_tamper_rows),
                cmocka_unit_test(test_checkpoint_file),
                cmocka_unit_test(test_crash),
                cmocka_unit_test(test_disk_full),
                cmocka_unit_test(test_read_only),
                cmocka_unit_test(test_corrupt),
                cmocka_unit_test(test_migration_v1),
                cmocka_unit_test(test_schema_refused),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
