/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The audit trail end to end (mnsim --usb 1 --serial 0 --cartridge; run as root for the
 * read-only case):
 *  - migration: a state directory with the legacy cartridges/sessions files: the session they
 *    show running is closed "daemon-restart", numbering continues above, their cartridges stay
 *    used;
 *  - events with their fields and caller: daemon-start, pen-connected, cartridge-inserted,
 *    setpoint-change (before the pen acts), session-start, session-end, refusal, stop,
 *    pen-disconnected; Count and HeadHash with PropertiesChanged;
 *  - Query: every filter, paging with after_seq + limit, refusals of bad filters; Verify;
 *  - crash rounds: SIGKILL at a random moment during a burst of sessions, restart: Verify ok,
 *    every acknowledged start has its session-start and every acknowledged Stop its
 *    session-end, the session left running is closed "daemon-restart"; single use holds;
 *  - disk full ([audit] max_size_mb), read-only (chattr +i) and corrupt databases:
 *    StartSession and SetDepth refused with AuditFailure, the pen untouched, Stop works.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit-log.h"
#include "mnd-harness.h"

#define AUDIT_PATH "/org/microneedle/Mnd1/audit"
#define AUDIT      "org.microneedle.Mnd1.Audit"
#define SERIAL     "MNU-0001"

struct ev {
        uint64_t seq, time, session;
        char kind[40], pen[40], cartridge[40], area[40], oper[64], patient[64], user[64], sender[64];
        char message[512], hash[80], state[32];
        uint32_t depth, speed, duration, uid;
};

struct evs {
        struct ev *v;
        size_t n;
};

static void evs_free(struct evs *e) {
        free(e->v);
        *e = (struct evs) {};
}

/* Audit.Query with (key, type, value) triples ended by NULL; type 's', 't' or 'u'. */
static int query(struct harness *h, sd_bus_error *err, struct evs *ret, ...) {
        sd_bus_message *m = NULL, *reply = NULL;
        const char *key;
        va_list ap;
        int r;

        *ret = (struct evs) {};
        CHECK(sd_bus_message_new_method_call(h->bus, &m, MND_NAME, AUDIT_PATH, AUDIT, "Query") >= 0, "new call");
        CHECK(sd_bus_message_open_container(m, 'a', "{sv}") >= 0, "append");
        va_start(ap, ret);
        while ((key = va_arg(ap, const char *))) {
                char type = (char) va_arg(ap, int);

                if (type == 's')
                        r = sd_bus_message_append(m, "{sv}", key, "s", va_arg(ap, const char *));
                else if (type == 't')
                        r = sd_bus_message_append(m, "{sv}", key, "t", va_arg(ap, uint64_t));
                else
                        r = sd_bus_message_append(m, "{sv}", key, "u", va_arg(ap, uint32_t));
                CHECK(r >= 0, "append %s", key);
        }
        va_end(ap);
        CHECK(sd_bus_message_close_container(m) >= 0, "append");
        r = sd_bus_call(h->bus, m, 10 * SEC, err, &reply);
        sd_bus_message_unref(m);
        if (r < 0)
                return r;

        CHECK(sd_bus_message_enter_container(reply, 'a', "a{sv}") >= 0, "reply");
        while ((r = sd_bus_message_enter_container(reply, 'a', "{sv}")) > 0) {
                struct ev e = { .depth = UINT32_MAX, .speed = UINT32_MAX, .duration = UINT32_MAX, .uid = UINT32_MAX };

                while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                        const char *k, *contents, *s;

                        CHECK(sd_bus_message_read(reply, "s", &k) >= 0, "key");
                        CHECK(sd_bus_message_peek_type(reply, NULL, &contents) > 0, "type");
                        CHECK(sd_bus_message_enter_container(reply, 'v', contents) >= 0, "variant");
#define S(name, field) else if (streq(k, name)) { CHECK(streq(contents, "s"), "%s is '%s'", k, contents); \
                CHECK(sd_bus_message_read(reply, "s", &s) >= 0, "read"); snprintf(e.field, sizeof e.field, "%s", s); }
#define T(name, field) else if (streq(k, name)) { CHECK(streq(contents, "t"), "%s is '%s'", k, contents); \
                CHECK(sd_bus_message_read(reply, "t", &e.field) >= 0, "read"); }
#define U(name, field) else if (streq(k, name)) { CHECK(streq(contents, "u"), "%s is '%s'", k, contents); \
                CHECK(sd_bus_message_read(reply, "u", &e.field) >= 0, "read"); }
                        if (streq(k, "details")) {
                                const char *dk, *dv;

                                CHECK(streq(contents, "a{ss}"), "details is '%s'", contents);
                                CHECK(sd_bus_message_enter_container(reply, 'a', "{ss}") >= 0, "details");
                                while (sd_bus_message_read(reply, "{ss}", &dk, &dv) > 0)
                                        if (streq(dk, "state"))
                                                snprintf(e.state, sizeof e.state, "%s", dv);
                                CHECK(sd_bus_message_exit_container(reply) >= 0, "details");
                        }
                        S("kind", kind) S("pen", pen) S("cartridge", cartridge) S("area", area) S("operator", oper)
                        S("patient_ref", patient) S("user", user) S("sender", sender) S("message", message)
                        S("hash", hash) T("seq", seq) T("time", time) T("session", session)
                        U("depth_um", depth) U("speed_hz", speed) U("duration_s", duration) U("uid", uid)
                        else
                                h_fail(__FILE__, __LINE__, "unexpected key '%s' in an event", k);
#undef S
#undef T
#undef U
                        CHECK(sd_bus_message_exit_container(reply) >= 0, "variant");
                        CHECK(sd_bus_message_exit_container(reply) >= 0, "entry");
                }
                CHECK(r >= 0, "entries: %s", strerror(-r));
                CHECK(sd_bus_message_exit_container(reply) >= 0, "event");
                ret->v = realloc(ret->v, (ret->n + 1) * sizeof(struct ev));
                CHECK(ret->v, "oom");
                ret->v[ret->n++] = e;
        }
        CHECK(r >= 0, "events: %s", strerror(-r));
        sd_bus_message_unref(reply);
        return 0;
}

#define QUERY_OK(h, ret, ...)                                                                           \
        do {                                                                                            \
                sd_bus_error _e = SD_BUS_ERROR_NULL;                                                    \
                if (query(h, &_e, ret, __VA_ARGS__) < 0)                                                \
                        h_fail(__FILE__, __LINE__, "Query: %s: %s", _e.name, _e.message);               \
        } while (0)

static const struct ev *find_kind(const struct evs *e, const char *kind, size_t from) {
        for (size_t i = from; i < e->n; i++)
                if (streq(e->v[i].kind, kind))
                        return &e->v[i];
        return NULL;
}

static char *unique_name(struct harness *h) {
        const char *u = NULL;

        CHECK(sd_bus_get_unique_name(h->bus, &u) >= 0, "unique name");
        return strdup(u);
}

static void change_cartridge(struct harness *h, const char *id) {
        char reply[256];

        (void) h_sim(h, reply, sizeof reply, "remove-cartridge " SERIAL);
        h_sim_ok(h, "cartridge " SERIAL " %s", id);
}

static void verify_ok(struct harness *h, uint64_t *ret_count) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *head;
        uint64_t count, bad;
        int ok, r;

        r = h_call(h, &e, &reply, AUDIT_PATH, AUDIT, "Verify", "");
        CHECK(r >= 0, "Verify: %s: %s", e.name, e.message);
        CHECK(sd_bus_message_read(reply, "btts", &ok, &count, &bad, &head) >= 0, "Verify reply");
        CHECK(ok && bad == 0 && strlen(head) == 64, "Verify: ok %d, count %" PRIu64 ", first bad %" PRIu64, ok, count,
              bad);
        if (ret_count)
                *ret_count = count;
        sd_bus_message_unref(reply);
}

/* ---- migration, first start ---- */

static void write_state_file(struct harness *h, const char *name, const char *text) {
        char path[400];
        FILE *f;

        snprintf(path, sizeof path, "%s/%s", h->state_dir, name);
        f = fopen(path, "we");
        CHECK(f, "%s: %m", path);
        fputs(text, f);
        CHECK(fclose(f) == 0, "%s: %m", path);
}

static void test_migration(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char *v;
        int r;

        CHECK(mkdir(h->state_dir, 0750) == 0, "mkdir: %m");
        write_state_file(h, "cartridges", "CART-OLD-40\t40\t1000\nCART-OLD-41\t41\t2000\n");
        write_state_file(h, "sessions", "B\t40\t1000\t60\tMNU-0001\tface\tCART-OLD-40\n"
                                        "E\t40\t1500\t60000\tcompleted\tcompleted\n"
                                        "B\t41\t2000\t60\tMNU-0001\tcheeks\tCART-OLD-41\n");
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "mnd did not publish the pen");

        v = h_get_s(h, "/org/microneedle/Mnd1/session/41", MND_SESSION, "EndReason");
        CHECK(streq(v, "daemon-restart"), "legacy session 41 EndReason '%s'", v);
        free(v);
        CHECK(access("state/cartridges", F_OK) < 0, "the legacy file is still there");
        change_cartridge(h, "CART-OLD-41");
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", "CART-OLD-41", SEC), "cartridge");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, NULL);
        EXPECT_ERROR(&e, r, "CartridgeUsed", "CART-OLD-41", "session 41");
        sd_bus_error_free(&e);
        OK("migration: legacy session 41 closed daemon-restart, its cartridge stays used");
}

/* ---- events, Query, Verify ---- */

static void test_events(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct evs all, x;
        const struct ev *ev;
        char *me = unique_name(h), *session = NULL, *head;
        struct h_sim_status st;
        uint64_t count, last_seq, t_mid;
        size_t mark;
        int r;

        change_cartridge(h, "CART-A1");
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", "CART-A1", SEC), "cartridge");
        mark = h_mark(h);
        CALL_OK(h, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 300);
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, "depth_um", 'u', 2100,
                            NULL);
        EXPECT_ERROR(&e, r, "LimitExceeded", "2.10 mm");
        sd_bus_error_free(&e);
        t_mid = (uint64_t) time(NULL) * SEC;
        r = h_start_session(h, PEN_U1, &e, &session, "area", 's', "face", "duration_s", 'u', 1, "depth_um", 'u', 500,
                            "speed_hz", 'u', 100, "operator", 's', "Dr Tester", "patient_ref", 's', "P-4711", NULL);
        CHECK(r >= 0, "StartSession: %s: %s", e.name, e.message);
        CHECK(streq(session, "/org/microneedle/Mnd1/session/42"), "numbering continues above the legacy 41: %s",
              session);
        CHECK(h_wait_prop_s(h, session, MND_SESSION, "State", "completed", 3 * SEC), "session did not complete");
        CALL_OK(h, PEN_U1, MND_PEN, "Stop", "");
        CHECK(h_wait_event(h, mark, AUDIT_PATH, "PropertiesChanged", "Count", NULL, SEC), "no Count change");
        CHECK(h_wait_event(h, mark, AUDIT_PATH, "PropertiesChanged", "HeadHash", NULL, SEC), "no HeadHash change");

        QUERY_OK(h, &all, NULL);
        CHECK(all.n > 10, "only %zu events", all.n);
        count = h_get_t(h, AUDIT_PATH, AUDIT, "Count");
        head = h_get_s(h, AUDIT_PATH, AUDIT, "HeadHash");
        CHECK(count == all.v[all.n - 1].seq, "Count %" PRIu64 " vs newest seq %" PRIu64, count, all.v[all.n - 1].seq);
        CHECK(streq(head, all.v[all.n - 1].hash), "HeadHash %s vs newest hash %s", head, all.v[all.n - 1].hash);
        free(head);
        for (size_t i = 0; i < all.n; i++)
                CHECK(all.v[i].seq == i + 1 && all.v[i].time > 0, "event %zu has seq %" PRIu64, i, all.v[i].seq);

        CHECK((ev = find_kind(&all, "daemon-start", 0)), "no daemon-start");
        CHECK((ev = find_kind(&all, "legacy-import", 0)), "no legacy-import");
        CHECK((ev = find_kind(&all, "pen-connected", 0)) && streq(ev->pen, SERIAL), "no pen-connected");
        CHECK((ev = find_kind(&all, "cartridge-inserted", 0)), "no cartridge-inserted");
        ev = find_kind(&all, "setpoint-change", 0);
        CHECK(ev && streq(ev->pen, SERIAL) && ev->depth == 300 && ev->speed == UINT32_MAX && ev->uid == getuid() &&
              streq(ev->user, "root") && streq(ev->sender, me), "setpoint-change: depth %u uid %u user '%s' sender '%s'",
              ev ? ev->depth : 0, ev ? ev->uid : 0, ev ? ev->user : "", ev ? ev->sender : "");
        ev = find_kind(&all, "refusal", 0);
        while (ev && ev->depth != 2100)
                ev = find_kind(&all, "refusal", (size_t) (ev - all.v) + 1);
        CHECK(ev && ev->depth == 2100 && strstr(ev->message, "2.10 mm") && streq(ev->area, "face") &&
              ev->uid == getuid() && streq(ev->sender, me), "refusal: '%s'", ev ? ev->message : "");
        ev = find_kind(&all, "session-start", 0);
        while (ev && ev->session != 42)
                ev = find_kind(&all, "session-start", (size_t) (ev - all.v) + 1);
        CHECK(ev && streq(ev->pen, SERIAL) && streq(ev->area, "face") && ev->depth == 500 && ev->speed == 100 &&
              ev->duration == 1 && streq(ev->cartridge, "CART-A1") && streq(ev->oper, "Dr Tester") &&
              streq(ev->patient, "P-4711") && ev->uid == getuid() && streq(ev->user, "root") &&
              streq(ev->sender, me), "session-start 42 fields");
        ev = find_kind(&all, "session-end", (size_t) (ev - all.v));
        CHECK(ev && ev->session == 42 && streq(ev->message, "completed") && streq(ev->state, "completed") &&
              ev->depth == 500, "session-end 42: '%s'", ev ? ev->message : "");
        CHECK(find_kind(&all, "stop", 0), "no stop event");
        OK("events: %zu recorded; setpoint, refusal, session start/end with fields and caller (%s)", all.n, me);

        /* Used cartridge: refused, and the refusal is recorded. */
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, NULL);
        EXPECT_ERROR(&e, r, "CartridgeUsed", "CART-A1", "session 42");
        sd_bus_error_free(&e);
        h_sim_status(h, SERIAL, &st);
        CHECK(!st.needles_moving, "the pen moves");

        /* Filters. */
        QUERY_OK(h, &x, "kind", 's', "session-start", NULL);
        for (size_t i = 0; i < x.n; i++)
                CHECK(streq(x.v[i].kind, "session-start"), "kind filter gave %s", x.v[i].kind);
        CHECK(x.n == 3, "%zu session-starts (40, 41, 42)", x.n);
        evs_free(&x);
        QUERY_OK(h, &x, "session", 't', (uint64_t) 42, NULL);
        CHECK(x.n >= 2, "session 42: %zu events", x.n);
        for (size_t i = 0; i < x.n; i++)
                CHECK(x.v[i].session == 42, "session filter gave %" PRIu64, x.v[i].session);
        evs_free(&x);
        QUERY_OK(h, &x, "cartridge", 's', "CART-A1", NULL);
        CHECK(x.n >= 3, "cartridge CART-A1: %zu events", x.n);
        for (size_t i = 0; i < x.n; i++)
                CHECK(streq(x.v[i].cartridge, "CART-A1"), "cartridge filter gave '%s'", x.v[i].cartridge);
        evs_free(&x);
        QUERY_OK(h, &x, "pen", 's', SERIAL, "kind", 's', "refusal", NULL);
        CHECK(x.n == 3, "%zu refusals (the legacy cartridge, the depth, the used cartridge)", x.n);
        evs_free(&x);
        QUERY_OK(h, &x, "since", 't', t_mid, NULL);
        for (size_t i = 0; i < x.n; i++)
                CHECK(x.v[i].time >= t_mid, "since filter");
        CHECK(x.n > 0 && x.n < all.n, "since: %zu of %zu", x.n, all.n);
        evs_free(&x);
        QUERY_OK(h, &x, "until", 't', t_mid, NULL);
        for (size_t i = 0; i < x.n; i++)
                CHECK(x.v[i].time < t_mid, "until filter");
        evs_free(&x);
        /* Paging: 3 at a time gives the same events. */
        last_seq = 0;
        for (size_t got = 0;;) {
                QUERY_OK(h, &x, "after_seq", 't', last_seq, "limit", 'u', (uint32_t) 3, NULL);
                CHECK(x.n <= 3, "limit 3 gave %zu", x.n);
                /* Events recorded since (the refusal above) come after those of the full query. */
                for (size_t i = 0; i < x.n; i++, got++)
                        CHECK(x.v[i].seq == got + 1 && (got >= all.n || streq(x.v[i].hash, all.v[got].hash)),
                              "paging out of step at %zu", got);
                if (x.n == 0) {
                        CHECK(got >= all.n, "paging ended at %zu of %zu", got, all.n);
                        break;
                }
                last_seq = x.v[x.n - 1].seq;
                evs_free(&x);
        }
        evs_free(&x);
        r = query(h, &e, &x, "colour", 's', "red", NULL);
        EXPECT_ERROR(&e, r, "InvalidArgument", "colour");
        sd_bus_error_free(&e);
        r = query(h, &e, &x, "session", 's', "42", NULL);
        EXPECT_ERROR(&e, r, "InvalidArgument", "session", "'t'");
        sd_bus_error_free(&e);
        r = query(h, &e, &x, "limit", 'u', (uint32_t) 1001, NULL);
        EXPECT_ERROR(&e, r, "InvalidArgument", "1001", "1000");
        sd_bus_error_free(&e);
        OK("Query: kind, session, cartridge, pen, since, until, paging by 3; bad key, type and limit refused");

        verify_ok(h, &count);
        QUERY_OK(h, &x, "kind", 's', "verify", NULL);
        CHECK(x.n == 1 && x.v[0].seq > count && x.v[0].uid == getuid(), "verify event");
        evs_free(&x);
        OK("Verify: ok over %" PRIu64 " events, then recorded", count);
        evs_free(&all);
        free(session);
        free(me);
}

/* ---- crash rounds ---- */

static bool bus_dead(const sd_bus_error *e) {
        return !e->name || strncmp(e->name, MND_ERR, strlen(MND_ERR)) != 0;
}

static void crash_round(struct harness *h, unsigned round) {
        uint64_t acked_start[64], running = 0;
        size_t n_start = 0, n_stop = 0;
        pid_t killer, mnd = h->mnd_pid;
        struct evs x;
        int status;

        killer = fork();
        CHECK(killer >= 0, "fork: %m");
        if (killer == 0) {
                srand(round * 7919u + (unsigned) getpid());
                h_sleep_us((uint64_t) (80 + rand() % 400) * MSEC);
                kill(mnd, SIGKILL);
                _exit(0);
        }
        for (unsigned i = 0; i < 60; i++) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                sd_bus_message *reply = NULL;
                char cart[32], *path = NULL;
                int r;

                snprintf(cart, sizeof cart, "CART-R%u-%u", round, i);
                change_cartridge(h, cart);
                for (unsigned k = 0;; k++) {
                        r = h_start_session(h, PEN_U1, &e, &path, "area", 's', "face", "duration_s", 'u', 60, NULL);
                        if (r >= 0 || bus_dead(&e) || k > 100 ||
                            !(sd_bus_error_has_name(&e, MND_ERR "CartridgeUsed") ||
                              sd_bus_error_has_name(&e, MND_ERR "CartridgeMissing") ||
                              sd_bus_error_has_name(&e, MND_ERR "Busy")))
                                break;
                        sd_bus_error_free(&e);
                        h_sleep_us(2 * MSEC);
                }
                if (r < 0) {
                        /* The daemon died (the point of it), or the pen link hiccuped under load
                         * (NotConnected, Timeout): either way the burst ends and the kill comes. */
                        if (!bus_dead(&e))
                                printf("round %u: StartSession: %s: %s\n", round, e.name, e.message);
                        sd_bus_error_free(&e);
                        break;
                }
                running = strtoull(strrchr(path, '/') + 1, NULL, 10);
                acked_start[n_start++] = running;
                free(path);
                r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) (i % 2 ? 1000 : 1500));
                if (r < 0 && bus_dead(&e)) {
                        sd_bus_error_free(&e);
                        break;
                }
                sd_bus_error_free(&e);
                r = h_call(h, &e, &reply, PEN_U1, MND_PEN, "Stop", "");
                if (r < 0) {
                        sd_bus_error_free(&e);
                        break;
                }
                n_stop++;
                running = 0;
                sd_bus_message_unref(reply);
                if (n_start == ELEMENTSOF(acked_start))
                        break;
        }
        CHECK(waitpid(killer, &status, 0) == killer, "killer");
        CHECK(waitpid(mnd, &status, 0) == mnd && WIFSIGNALED(status), "mnd was not killed");
        h->mnd_pid = 0;
        /* mnsim keeps a killed client's claim: a replug gives a fresh device. */
        h_sim_ok(h, "unplug " SERIAL);
        h_sim_ok(h, "plug " SERIAL);
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the pen did not come back");

        verify_ok(h, NULL);
        for (size_t i = 0; i < n_start; i++) {
                QUERY_OK(h, &x, "session", 't', acked_start[i], "kind", 's', "session-start", NULL);
                CHECK(x.n == 1, "round %u: acknowledged session %" PRIu64 " has no session-start", round,
                      acked_start[i]);
                evs_free(&x);
                QUERY_OK(h, &x, "session", 't', acked_start[i], "kind", 's', "session-end", NULL);
                CHECK(x.n == 1, "round %u: session %" PRIu64 " has %zu session-ends", round, acked_start[i], x.n);
                if (i < n_stop)
                        CHECK(streq(x.v[0].message, "stopped"), "acknowledged Stop of %" PRIu64 " recorded as '%s'",
                              acked_start[i], x.v[0].message);
                else {
                        CHECK(streq(x.v[0].message, "daemon-restart") || streq(x.v[0].message, "stopped"),
                              "session %" PRIu64 " left running ended '%s'", acked_start[i], x.v[0].message);
                        /* "stopped": the Stop was done, only its reply was lost with the daemon. */
                        if (!streq(x.v[0].message, "daemon-restart"))
                                running = 0;
                }
                evs_free(&x);
        }
        if (running) {
                char *v, path[64];

                snprintf(path, sizeof path, "/org/microneedle/Mnd1/session/%" PRIu64, running);
                v = h_get_s(h, path, MND_SESSION, "EndReason");
                CHECK(streq(v, "daemon-restart"), "%s EndReason '%s'", path, v);
                free(v);
        }
        /* Single use across the restart. */
        if (n_start > 0) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                char cart[32];
                int r;

                snprintf(cart, sizeof cart, "CART-R%u-0", round);
                change_cartridge(h, cart);
                CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", cart, SEC), "cartridge");
                (void) h_call(h, NULL, NULL, PEN_U1, MND_PEN, "ClearFault", "");
                r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, NULL);
                EXPECT_ERROR(&e, r, "CartridgeUsed", cart);
                sd_bus_error_free(&e);
        }
        (void) h_call(h, NULL, NULL, PEN_U1, MND_PEN, "ClearFault", "");
        OK("crash round %u: %zu starts and %zu stops acknowledged, all recorded%s; Verify ok; single use holds",
           round, n_start, n_stop, running ? ", the running one closed" : "");
}

/* ---- the log cannot be written ---- */

static void expect_refused(struct harness *h, const char *why, const char *cart) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        uint64_t t0;
        int r;

        h_sim_status(h, SERIAL, &st);
        uint32_t depth = st.depth_set;

        change_cartridge(h, cart);
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", cart, SEC), "cartridge");
        (void) h_call(h, NULL, NULL, PEN_U1, MND_PEN, "ClearFault", "");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, NULL);
        EXPECT_ERROR(&e, r, "AuditFailure", why);
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) (depth == 1000 ? 1500 : 1000));
        EXPECT_ERROR(&e, r, "AuditFailure", why);
        sd_bus_error_free(&e);
        h_sim_status(h, SERIAL, &st);
        CHECK(!st.needles_moving && st.depth_set == depth, "the pen moved (depth %u, was %u)", st.depth_set, depth);
        t0 = h_now_us();
        CALL_OK(h, PEN_U1, MND_PEN, "Stop", "");
        CALL_OK(h, MND_PATH, MND_MANAGER, "StopAll", "");
        OK("%s: StartSession and SetDepth refused with AuditFailure, the pen untouched; Stop works (%" PRIu64 " us)",
           why, h_now_us() - t0);
}

static void test_disk_full(struct harness *h) {
        struct mnd_audit *a = NULL;
        struct mnd_audit_event e = MND_AUDIT_EVENT_INIT;
        unsigned n = 0;
        int r;

        h_stop_mnd(h, SIGTERM, 5 * SEC);
        CHECK(mnd_audit_open(h->state_dir, 0, &a) == 0, "open the log");
        CHECK(mnd_audit_set_max_size(a, 1024 * 1024) == 0, "cap");
        /* Up to the cap, with events like the daemon's (every index gets entries), then smaller ones
         * until not even the smallest fits. */
        e.kind = "setpoint-change";
        e.pen = SERIAL;
        e.area = "face";
        e.cartridge = "CART-FILLER-000000";
        e.operator = "filler";
        e.session = 1000000;
        e.message = "filler filler filler filler filler filler filler filler filler filler filler filler";
        while ((r = mnd_audit_append(a, &e, false, NULL, NULL)) == 0 && n < 200000)
                n++;
        CHECK(r == -ENOSPC, "filling: %s after %u", strerror(-r), n);
        /* Then events shaped like the ones the daemon will try (a session-start with session 0, which
         * is never "running"; a setpoint-change), then the smallest possible. */
        e.message = NULL;
        e.kind = "session-start";
        e.session = 0;
        /* As long as the daemon's, but another cartridge: one of these may
         * still fit, and must not make CART-FULL "used". */
        e.cartridge = "CART-FILL";
        e.depth_um = 1500;
        e.speed_hz = 120;
        e.duration_s = 60;
        e.uid = 0;
        e.user = "root";
        e.sender = ":1.0";
        while (mnd_audit_append(a, &e, false, NULL, NULL) == 0)
                n++;
        e.kind = "setpoint-change";
        e.cartridge = e.operator = NULL;
        e.speed_hz = e.duration_s = MND_AUDIT_UNSET;
        while (mnd_audit_append(a, &e, false, NULL, NULL) == 0)
                n++;
        e = MND_AUDIT_EVENT_INIT;
        e.kind = "x";
        while (mnd_audit_append(a, &e, false, NULL, NULL) == 0)
                n++;
        mnd_audit_close(a);
        h_set_config(h, "[audit]\nmax_size_mb = 1\n");
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the pen did not come back");
        expect_refused(h, "No space left", "CART-FULL");
        h_stop_mnd(h, SIGTERM, 5 * SEC);
        h_set_config(h, NULL);
}

static void test_read_only(struct harness *h) {
        char cmd[600];

        snprintf(cmd, sizeof cmd, "chattr +i %s/audit.sqlite 2>/dev/null", h->state_dir);
        /* CI runs as root; anywhere else this test cannot run, and says so by failing. */
        CHECK(geteuid() == 0, "the read-only database test needs root (chattr +i)");
        CHECK(system(cmd) == 0, "chattr +i %s/audit.sqlite failed (e2fsprogs missing, or a file system "
              "without the immutable attribute)", h->state_dir);
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the pen did not come back");
        expect_refused(h, "audit", "CART-RO");
        h_stop_mnd(h, SIGTERM, 5 * SEC);
        snprintf(cmd, sizeof cmd, "chattr -i %s/audit.sqlite", h->state_dir);
        CHECK(system(cmd) == 0, "chattr -i");
}

static void test_corrupt(struct harness *h) {
        char path[400], aside[420];
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct evs x;
        FILE *f;
        int r;

        snprintf(path, sizeof path, "%s/audit.sqlite", h->state_dir);
        snprintf(aside, sizeof aside, "%s.aside", path);
        CHECK(rename(path, aside) == 0, "rename: %m");
        f = fopen(path, "we");
        CHECK(f, "%s: %m", path);
        for (int i = 0; i < 2000; i++)
                fputs("this is not an audit log ", f);
        CHECK(fclose(f) == 0, "write");
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the daemon must run with a corrupt log (Stop works)");
        expect_refused(h, "unavailable", "CART-BAD");
        r = query(h, &e, &x, NULL);
        EXPECT_ERROR(&e, r, "AuditFailure", "unavailable");
        sd_bus_error_free(&e);
        CHECK(h_get_t(h, AUDIT_PATH, AUDIT, "Count") == 0, "Count of an unavailable log");
        h_stop_mnd(h, SIGTERM, 5 * SEC);
        CHECK(rename(aside, path) == 0, "rename back: %m");
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the pen did not come back");
        verify_ok(h, NULL);
        OK("corrupt database: daemon runs, AuditFailure; restored: Verify ok");
}

int main(int argc, char *argv[]) {
        static struct harness h;
        uint64_t t0 = h_now_us();

        h_init(&h, argc, argv);
        CHECK(chdir(h.dir) == 0, "chdir: %m");
        h_start_bus(&h);
        test_migration(&h);
        test_events(&h);
        for (unsigned round = 1; round <= 3; round++)
                crash_round(&h, round);
        test_disk_full(&h);
        test_read_only(&h);
        test_corrupt(&h);
        h_stop_mnd(&h, SIGTERM, 5 * SEC);
        OK("all done in %" PRIu64 " ms", (h_now_us() - t0) / MSEC);
        return 0;
}
