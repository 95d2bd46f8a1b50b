/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bench-audit: the audit log (daemon/audit-log.c) on a big database.
 *
 *   1. Builds a log of N events (1,000,000; --quick: 20,000) in one non-durable batch and one
 *      durable commit, and prints how long that took.  The events look like a clinic's: 20 pens,
 *      sessions of 50 events (session-start with a new cartridge, setpoint changes, the odd
 *      refusal, session-end), one event a second.
 *   2. Baseline: the latency of a bare write + fsync of a small file in the same directory.
 *   3. Durable appends (synchronous=FULL, checkpoint file updated) onto that log: latency median
 *      and p99, and events committed per second; what an append adds over the baseline at p99.
 *   4. Filtered queries (pen and since, limit 1000; session; kind and since; cartridge), each the
 *      median of several runs; single-use cartridge lookup and the orphaned-session scan.
 *   5. A full Verify.
 *
 * Targets (reported, never enforced): an append adds at most 2 ms over the baseline at p99; a
 * filtered query under 50 ms; Verify of 1M events under 3 s.  The program fails only on a
 * correctness failure: a query returning the wrong events, or Verify not ok.
 *
 * Options: --quick, --events N, --appends N, --dir DIR (default: a new directory under $TMPDIR or
 * /var/tmp, removed at the end).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "audit-log.h"

#define N_PENS 20
#define SESSION_EVENTS 50
#define T0 UINT64_C(1700000000000000)

#define TARGET_APPEND_ADDED_P99_MS 2.0
#define TARGET_QUERY_MS 50.0
#define TARGET_VERIFY_1M_S 3.0

static bool failed;

#define CHECK(cond, ...)                                                \
        do {                                                            \
                if (!(cond)) {                                          \
                        fprintf(stderr, "FAIL: " __VA_ARGS__);          \
                        fputc('\n', stderr);                            \
                        failed = true;                                  \
                }                                                       \
        } while (0)

static double now_s(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;

        return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p) {
        size_t i;

        qsort(v, n, sizeof *v, cmp_double);
        i = (size_t) (p * (double) (n - 1) + 0.5);
        return v[i < n ? i : n - 1];
}

/* Event i (1-based) of the synthetic log. */
static struct mnd_audit_event synthetic(uint64_t i, char pen[16], char cart[24]) {
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        uint64_t session = 1 + (i - 1) / SESSION_EVENTS, pos = (i - 1) % SESSION_EVENTS;

        snprintf(pen, 16, "PEN-%02u", (unsigned) (session % N_PENS));
        snprintf(cart, 24, "CART-%08" PRIu64, session);
        e.time_usec = T0 + i * 1000000;
        e.pen = pen;
        e.session = session;
        e.cartridge = cart;
        e.area = "cheeks";
        e.depth_um = 500 + (uint32_t) (i % 16) * 100;
        e.speed_hz = 120;
        e.operator = "Dr. Example";
        e.patient_ref = "P-000123";
        e.uid = 1000;
        e.user = "clinic";
        e.sender = ":1.42";
        if (pos == 0) {
                e.kind = MND_AUDIT_SESSION_START;
                e.duration_s = 1800;
        } else if (pos == SESSION_EVENTS - 1) {
                e.kind = MND_AUDIT_SESSION_END;
                e.message = "completed";
        } else if (pos % 10 == 7) {
                e.kind = MND_AUDIT_REFUSAL;
                e.message = "depth 2.50 mm exceeds the 2.00 mm cap for area 'cheeks'";
        } else
                e.kind = MND_AUDIT_SETPOINT_CHANGE;
        return e;
}

static void remove_tree(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                char p[4096 + 512];

                if (de->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
                unlink(p);
        }
        closedir(d);
        rmdir(dir);
}

static const char *fs_name(const char *dir) {
        struct statfs sf;

        if (statfs(dir, &sf) < 0)
                return "?";
        switch ((unsigned long) sf.f_type) {
        case 0xef53: return "ext4";
        case 0x01021994: return "tmpfs";
        case 0x58465342: return "xfs";
        case 0x9123683e: return "btrfs";
        case 0x794c7630: return "overlayfs";
        default: return "other";
        }
}

/* Median of the time of `runs` calls of fn, in ms. */
#define TIME_MEDIAN_MS(runs, result, ...)                               \
        do {                                                            \
                double _t[(runs)];                                      \
                for (int _run = 0; _run < (runs); _run++) {             \
                        double _s = now_s();                            \
                        __VA_ARGS__;                                    \
                        _t[_run] = (now_s() - _s) * 1e3;                \
                }                                                       \
                (result) = percentile(_t, (runs), 0.5);                 \
        } while (0)

int main(int argc, char **argv) {
        uint64_t n_events = 1000000, n_appends = 2000, count = 0;
        const char *dir_arg = NULL;
        char dir[4096], path[4200];
        struct mnd_audit *a = NULL;
        struct mnd_audit_verify_result v;
        struct mnd_audit_record *recs;
        size_t n;
        double t, build_s, *lat, *base, q_pen_ms, q_session_ms, q_kind_ms, q_cart_ms, cart_used_ms,
                running_ms, verify_s, append_total_s;
        int r, fd;
        bool quick = false;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--quick") == 0) {
                        quick = true;
                        n_events = 20000;
                        n_appends = 500;
                } else if (strcmp(argv[i], "--events") == 0 && i + 1 < argc)
                        n_events = strtoull(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--appends") == 0 && i + 1 < argc)
                        n_appends = strtoull(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
                        dir_arg = argv[++i];
                else {
                        fprintf(stderr, "usage: %s [--quick] [--events N] [--appends N] [--dir DIR]\n", argv[0]);
                        return 2;
                }
        }
        if (n_events < 2 * SESSION_EVENTS * N_PENS || n_appends < 100) {
                fprintf(stderr, "need at least %d events and 100 appends\n", 2 * SESSION_EVENTS * N_PENS);
                return 2;
        }

        if (dir_arg)
                snprintf(dir, sizeof dir, "%s", dir_arg);
        else {
                const char *tmp = getenv("TMPDIR");

                snprintf(dir, sizeof dir, "%s/bench-audit-XXXXXX", tmp && *tmp ? tmp : "/var/tmp");
                if (!mkdtemp(dir)) {
                        perror("mkdtemp");
                        return 1;
                }
        }
        printf("bench-audit: %s mode, %" PRIu64 " events, %" PRIu64 " durable appends, in %s (%s)\n",
               quick ? "quick" : "full", n_events, n_appends, dir, fs_name(dir));

        r = mnd_audit_open(dir, 0, &a);
        if (r < 0) {
                fprintf(stderr, "mnd_audit_open(%s): %s\n", dir, strerror(-r));
                return 1;
        }

        /* 1. Build. */
        t = now_s();
        r = mnd_audit_batch_begin(a, true);
        for (uint64_t i = 1; r >= 0 && i <= n_events; i++) {
                char pen[16], cart[24];
                struct mnd_audit_event e = synthetic(i, pen, cart);

                r = mnd_audit_append(a, &e, false, NULL, NULL);
        }
        if (r >= 0)
                r = mnd_audit_batch_commit(a);
        build_s = now_s() - t;
        if (r < 0) {
                fprintf(stderr, "building the log: %s\n", strerror(-r));
                return 1;
        }
        {
                struct stat st;

                snprintf(path, sizeof path, "%s/%s", dir, MND_AUDIT_DB_FILE);
                if (stat(path, &st) == 0)
                        printf("build:   %" PRIu64 " events in one batch (non-durable appends, one durable commit): "
                               "%.2f s, %.0f events/s; database %.1f MiB\n",
                               n_events, build_s, (double) n_events / build_s, (double) st.st_size / 1048576.0);
        }

        /* 2. Baseline: write + fsync of a small file in the same directory. */
        lat = calloc(n_appends, sizeof *lat);
        base = calloc(n_appends, sizeof *base);
        if (!lat || !base)
                return 1;
        snprintf(path, sizeof path, "%s/fsync-baseline", dir);
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
                perror(path);
                return 1;
        }
        for (uint64_t i = 0; i < n_appends; i++) {
                char buf[128];

                memset(buf, (int) ('a' + i % 26), sizeof buf);
                t = now_s();
                if (pwrite(fd, buf, sizeof buf, 0) != sizeof buf || fsync(fd) < 0) {
                        perror("baseline");
                        return 1;
                }
                base[i] = (now_s() - t) * 1e3;
        }
        close(fd);
        unlink(path);

        /* 3. Durable appends onto the big log. */
        t = now_s();
        for (uint64_t i = 0; i < n_appends; i++) {
                char pen[16], cart[24];
                struct mnd_audit_event e = synthetic(n_events + 1 + i, pen, cart);
                double s = now_s();

                e.time_usec = 0;        /* stamped now, as the daemon does */
                r = mnd_audit_append(a, &e, true, NULL, NULL);
                lat[i] = (now_s() - s) * 1e3;
                if (r < 0) {
                        fprintf(stderr, "durable append: %s\n", strerror(-r));
                        return 1;
                }
        }
        append_total_s = now_s() - t;
        double base_med = percentile(base, n_appends, 0.5), base_p99 = percentile(base, n_appends, 0.99);
        double app_med = percentile(lat, n_appends, 0.5), app_p99 = percentile(lat, n_appends, 0.99);
        double added_p99 = app_p99 - base_p99;
        printf("baseline: write+fsync of a 128-byte file: median %.3f ms, p99 %.3f ms\n", base_med, base_p99);
        printf("append:  durable (synchronous=FULL + checkpoint): median %.3f ms, p99 %.3f ms, max %.3f ms; "
               "%.0f events/s committed\n", app_med, app_p99, lat[n_appends - 1], (double) n_appends / append_total_s);
        printf("append:  adds %.3f ms over the baseline at p99 (target <= %.1f ms)\n", added_p99,
               TARGET_APPEND_ADDED_P99_MS);

        uint64_t total = n_events + n_appends;
        r = mnd_audit_count(a, &count);
        CHECK(r >= 0 && count == total, "count %" PRIu64 ", expected %" PRIu64, count, total);

        /* 4. Queries on the middle of the log. */
        uint64_t mid = n_events / 2, mid_session = 1 + (mid - 1) / SESSION_EVENTS;
        uint64_t since = T0 + mid * 1000000;
        char pen[16], cart[24];
        struct mnd_audit_filter f_pen = { .pen = "PEN-07", .since = since, .limit = 1000 };
        struct mnd_audit_filter f_session = { .session = mid_session, .limit = 1000 };
        struct mnd_audit_filter f_kind = { .kind = MND_AUDIT_REFUSAL, .since = since, .limit = 1000 };
        struct mnd_audit_filter f_cart;

        (void) synthetic(mid, pen, cart);
        f_cart = (struct mnd_audit_filter) { .cartridge = cart, .limit = 1000 };

#define QUERY_CHECKED(f, check)                                                         \
        do {                                                                            \
                r = mnd_audit_query(a, &(f), &recs, &n);                                \
                CHECK(r >= 0, "query: %s", strerror(-r));                               \
                if (r >= 0) {                                                           \
                        check;                                                          \
                        for (size_t _i = 1; _i < n; _i++)                               \
                                CHECK(recs[_i].seq > recs[_i - 1].seq, "query order");  \
                        mnd_audit_records_free(recs, n);                                \
                }                                                                       \
        } while (0)

        /* The model: events mid.. of PEN-07 (the appended ones are stamped now, after since). */
        size_t pen_expected = 0;
        for (uint64_t i = mid; i <= total && pen_expected < 1000; i++)
                if ((1 + (i - 1) / SESSION_EVENTS) % N_PENS == 7)
                        pen_expected++;
        TIME_MEDIAN_MS(21, q_pen_ms, QUERY_CHECKED(f_pen, ({
                CHECK(n == pen_expected, "pen query: %zu events, expected %zu", n, pen_expected);
                for (size_t i = 0; i < n; i++)
                        CHECK(strcmp(recs[i].event.pen, "PEN-07") == 0 && recs[i].event.time_usec >= since,
                              "pen query: event %" PRIu64 " does not match", recs[i].seq);
        })));
        TIME_MEDIAN_MS(21, q_session_ms, QUERY_CHECKED(f_session, ({
                CHECK(n == SESSION_EVENTS, "session query: %zu events", n);
                for (size_t i = 0; i < n; i++)
                        CHECK(recs[i].event.session == mid_session, "session query: event %" PRIu64, recs[i].seq);
        })));
        TIME_MEDIAN_MS(21, q_kind_ms, QUERY_CHECKED(f_kind, ({
                CHECK(n == 1000 || quick, "kind query: %zu events", n);
                for (size_t i = 0; i < n; i++)
                        CHECK(strcmp(recs[i].event.kind, "refusal") == 0 && recs[i].event.time_usec >= since,
                              "kind query: event %" PRIu64, recs[i].seq);
        })));
        TIME_MEDIAN_MS(21, q_cart_ms, QUERY_CHECKED(f_cart, ({
                CHECK(n == SESSION_EVENTS, "cartridge query: %zu events", n);
        })));
        TIME_MEDIAN_MS(21, cart_used_ms, ({
                uint64_t s = 0;

                CHECK(mnd_audit_cartridge_used(a, cart, &s) == 1 && s == mid_session, "cartridge_used");
                CHECK(mnd_audit_cartridge_used(a, "CART-NEVER", NULL) == 0, "cartridge_used (new)");
        }));
        TIME_MEDIAN_MS(3, running_ms, ({
                /* The last synthetic session of the appends may be open; the bulk ones are closed. */
                r = mnd_audit_running_sessions(a, &recs, &n);
                CHECK(r >= 0 && n <= 1, "running sessions: %d, %zu", r, n);
                if (r >= 0)
                        mnd_audit_records_free(recs, n);
        }));
        printf("query:   pen = PEN-07 and since = middle, limit 1000: %.3f ms (median of 21; target < %.0f ms)\n",
               q_pen_ms, TARGET_QUERY_MS);
        printf("query:   session = %" PRIu64 " (%d events): %.3f ms\n", mid_session, SESSION_EVENTS, q_session_ms);
        printf("query:   kind = refusal and since = middle, limit 1000: %.3f ms\n", q_kind_ms);
        printf("query:   cartridge = %s: %.3f ms\n", cart, q_cart_ms);
        printf("lookup:  cartridge_used (a used and a new id): %.3f ms; running_sessions: %.3f ms\n",
               cart_used_ms, running_ms);

        /* 5. Verify. */
        t = now_s();
        r = mnd_audit_verify(a, &v);
        verify_s = now_s() - t;
        CHECK(r >= 0, "verify: %s", strerror(-r));
        CHECK(r >= 0 && v.ok && v.count == total && v.first_bad_seq == 0,
              "verify: ok %d count %" PRIu64 " first_bad %" PRIu64, v.ok, v.count, v.first_bad_seq);
        double verify_1m_s = verify_s * 1e6 / (double) total;
        printf("verify:  %" PRIu64 " events: %.3f s (%.2f s per 1M events; target < %.1f s per 1M), %s\n",
               total, verify_s, verify_1m_s, TARGET_VERIFY_1M_S, v.ok ? "ok" : "NOT OK");

        mnd_audit_close(a);
        if (!dir_arg)
                remove_tree(dir);
        free(lat);
        free(base);

        bool met_append = added_p99 <= TARGET_APPEND_ADDED_P99_MS;
        bool met_query = q_pen_ms < TARGET_QUERY_MS && q_session_ms < TARGET_QUERY_MS;
        bool met_verify = verify_1m_s < TARGET_VERIFY_1M_S;
        printf("targets: append %s, query %s, verify %s%s\n", met_append ? "met" : "MISSED",
               met_query ? "met" : "MISSED", met_verify ? "met" : "MISSED",
               quick ? " (quick mode: query and verify targets are for 1M events; verify scaled)" : "");
        printf("target met: %s\n", met_append && met_query && met_verify ? "yes" : "no");
        if (failed)
                printf("CORRECTNESS FAILURE\n");
        return failed ? 1 : 0;
}
