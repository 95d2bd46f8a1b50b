/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * /org/microneedle/Mnd1/audit: org.microneedle.Mnd1.Audit, the audit log on the bus.
 *
 * Verify recomputes the whole chain, which for years of events takes seconds: it runs in a
 * thread of its own, on a read-only handle of its own (SQLite WAL lets it read while the daemon
 * appends), so that the event loop keeps renewing the pens' leases meanwhile.  Calls that arrive
 * while a verification runs share the next run (at most MND_AUDIT_VERIFY_WAITERS_MAX waiting).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "audit-trail.h"
#include "auth.h"
#include "bus-error.h"
#include "bus-options.h"
#include "log.h"
#include "manager.h"
#include "text.h"

#define MND_AUDIT_VERIFY_WAITERS_MAX 64

struct verify_waiter {
        sd_bus_message *message;
        struct mnd_audit_caller caller;
        struct verify_waiter *next;
};

struct mnd_audit_verifier {
        struct mnd_manager *manager;
        char *directory;
        int efd;
        sd_event_source *io;
        pthread_t thread;
        bool running;
        /* written by the thread, read after the eventfd fired */
        int result_r;
        struct mnd_audit_verify_result result;
        struct verify_waiter *current, *next;
        unsigned n_waiters;
};

/* ---- properties ---- */

static int property_get_count(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        uint64_t n = 0;

        if (m && m->audit && mnd_audit_count(m->audit, &n) < 0)
                n = 0;
        return sd_bus_message_append(reply, "t", n);
}

static int property_get_head_hash(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        char head[MND_AUDIT_HASH_HEX_SIZE] = "";

        if (m && m->audit && mnd_audit_head_hash(m->audit, head) < 0)
                head[0] = '\0';
        return sd_bus_message_append(reply, "s", head);
}

/* ---- Query ---- */

static int parse_filter(sd_bus_message *message, struct mnd_audit_filter *f, sd_bus_error *error) {
        struct mnd_bus_option table[] = {
                { "since",     "t", NULL, &f->since,     false },
                { "until",     "t", NULL, &f->until,     false },
                { "pen",       "s", NULL, &f->pen,       false },
                { "session",   "t", NULL, &f->session,   false },
                { "cartridge", "s", NULL, &f->cartridge, false },
                { "kind",      "s", NULL, &f->kind,      false },
                { "after_seq", "t", NULL, &f->after_seq, false },
                { "limit",     "u", NULL, &f->limit,     false },
        };
        int r;

        r = mnd_bus_read_options(message, table, ELEMENTSOF(table), "filter key",
                                 "the keys are since (t), until (t), pen (s), session (t), cartridge (s), "
                                 "kind (s), after_seq (t) and limit (u)", error);
        if (r < 0)
                return r;

        if (f->limit > MND_AUDIT_QUERY_MAX)
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                         "limit %u is above %u events a call; page with after_seq", f->limit,
                                         MND_AUDIT_QUERY_MAX);
        if (f->until != 0 && f->until < f->since)
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                         "until (%" PRIu64 ") is before since (%" PRIu64 ")", f->until, f->since);
        return 0;
}

static int append_entry(const char *key, char type, const void *value, void *userdata) {
        sd_bus_message *reply = userdata;
        const char sig[2] = { type, 0 };
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "s", key);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'v', sig);
        if (r < 0)
                return r;
        switch (type) {
        case 's':
                r = sd_bus_message_append_basic(reply, 's', value);
                break;
        case 't':
                r = sd_bus_message_append_basic(reply, 't', value);
                break;
        case 'u':
                r = sd_bus_message_append_basic(reply, 'u', value);
                break;
        default:
                r = -EINVAL;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static int append_record(sd_bus_message *reply, const struct mnd_audit_record *rec) {
        int r;

        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        r = mnd_audit_record_foreach(rec, append_entry, reply);
        if (r < 0)
                return r;
        if (rec->event.n_details > 0) {
                r = sd_bus_message_open_container(reply, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "s", "details");
                if (r >= 0)
                        r = sd_bus_message_open_container(reply, 'v', "a{ss}");
                if (r >= 0)
                        r = sd_bus_message_open_container(reply, 'a', "{ss}");
                for (size_t i = 0; r >= 0 && i < rec->event.n_details; i++)
                        r = sd_bus_message_append(reply, "{ss}", rec->event.details[i].key,
                                                  strempty(rec->event.details[i].value));
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

/* Query once the caller is authorised (auth.h): the filter was validated already, read it again. */
static int query_authorised(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        struct mnd_manager *m = userdata;
        struct mnd_audit_filter f = {};
        struct mnd_audit_record *recs = NULL;
        size_t n = 0;
        int r;

        r = parse_filter(message, &f, error);
        if (r < 0)
                return r;
        r = mnd_audit_check_available(m, "Query", error);
        if (r < 0)
                return r;
        r = mnd_audit_query(m->audit, &f, &recs, &n);
        if (r == -EINVAL)
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                         "the filter can never match (a string that is too long or not UTF-8)");
        if (r < 0) {
                log_error_errno(r, "Audit query failed: %m");
                return sd_bus_error_setf(error, MND_ERROR_AUDIT_FAILURE, "the audit log cannot be read (%s)",
                                         strerror(ERRNO_VALUE(r)));
        }

        r = sd_bus_message_new_method_return(message, &reply);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "a{sv}");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = append_record(reply, &recs[i]);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        mnd_audit_records_free(recs, n);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* A malformed filter is InvalidArgument without asking polkit (and not recorded). */
static int method_query(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_audit_filter f = {};
        int r;

        r = parse_filter(message, &f, error);
        if (r < 0)
                return r;
        return mnd_auth_audit(userdata, message, query_authorised, userdata, error);
}

/* ---- Verify ---- */

static void *verify_thread(void *userdata) {
        struct mnd_audit_verifier *v = userdata;
        struct mnd_audit *a = NULL;
        uint64_t one = 1;
        int r;

        r = mnd_audit_open(v->directory, MND_AUDIT_OPEN_READ_ONLY, &a);
        if (r >= 0)
                r = mnd_audit_verify(a, &v->result);
        mnd_audit_close(a);
        v->result_r = r;
        while (write(v->efd, &one, sizeof(one)) < 0 && errno == EINTR)
                ;
        return NULL;
}

static int verify_start(struct mnd_audit_verifier *v) {
        int r;

        v->result = (struct mnd_audit_verify_result) {};
        v->result_r = 0;
        r = -pthread_create(&v->thread, NULL, verify_thread, v);
        if (r < 0)
                return r;
        v->running = true;
        return 0;
}

static void waiters_reply(struct mnd_audit_verifier *v, struct verify_waiter *list) {
        struct mnd_manager *m = v->manager;
        struct verify_waiter *w;

        while ((w = list)) {
                list = w->next;
                if (v->result_r < 0) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

                        sd_bus_error_setf(&e, MND_ERROR_AUDIT_FAILURE,
                                          "the audit log in %s cannot be read to verify it (%s)",
                                          m->config->state_directory, strerror(ERRNO_VALUE(v->result_r)));
                        (void) sd_bus_reply_method_error(w->message, &e);
                } else {
                        struct mnd_audit_event_buf b;

                        /* The verification run is on the trail too (after the check it reports). */
                        mnd_audit_build_verify(&b, &v->result, &w->caller);
                        (void) mnd_audit_record(m, &b, false);
                        (void) sd_bus_reply_method_return(w->message, "btts", (int) v->result.ok, v->result.count,
                                                          v->result.first_bad_seq, v->result.head);
                }
                sd_bus_message_unref(w->message);
                free(w);
                v->n_waiters--;
        }
}

static int verify_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct mnd_audit_verifier *v = userdata;
        uint64_t value;
        int r;

        if (read(v->efd, &value, sizeof(value)) < 0)
                return 0;
        if (!v->running)
                return 0;
        (void) pthread_join(v->thread, NULL);
        v->running = false;
        if (v->result_r >= 0 && !v->result.ok)
                log_error("Audit log verification FAILED: first bad event %" PRIu64 " of %" PRIu64 ".",
                          v->result.first_bad_seq, v->result.count);
        waiters_reply(v, TAKE_PTR(v->current));

        if (v->next) {
                v->current = TAKE_PTR(v->next);
                r = verify_start(v);
                if (r < 0) {
                        v->result_r = r;
                        waiters_reply(v, TAKE_PTR(v->current));
                }
        }
        return 0;
}

static struct mnd_audit_verifier *verifier_get(struct mnd_manager *m) {
        struct mnd_audit_verifier *v;
        int r;

        if (m->verifier)
                return m->verifier;
        v = calloc(1, sizeof(*v));
        if (!v)
                return NULL;
        v->manager = m;
        v->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        v->directory = strdup(m->config->state_directory);
        if (v->efd < 0 || !v->directory)
                goto fail;
        r = sd_event_add_io(m->event, &v->io, v->efd, EPOLLIN, verify_done, v);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(v->io, "audit-verify");
        m->verifier = v;
        return v;
fail:
        if (v->efd >= 0)
                close(v->efd);
        free(v->directory);
        free(v);
        return NULL;
}

static int verify_authorised(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_manager *m = userdata;
        struct mnd_audit_verifier *v;
        struct verify_waiter *w;
        int r;

        r = mnd_audit_check_available(m, "Verify", error);
        if (r < 0)
                return r;
        v = verifier_get(m);
        if (!v)
                return -ENOMEM;
        if (v->n_waiters >= MND_AUDIT_VERIFY_WAITERS_MAX)
                return sd_bus_error_setf(error, MND_ERROR_BUSY,
                                         "%u verifications are waiting already; try again when they are done",
                                         v->n_waiters);
        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->message = sd_bus_message_ref(message);
        mnd_audit_caller_from_message(message, &w->caller);
        v->n_waiters++;
        if (v->running) {
                w->next = v->next;
                v->next = w;
                return 1;
        }
        w->next = v->current;
        v->current = w;
        r = verify_start(v);
        if (r < 0) {
                v->current = NULL;
                v->n_waiters--;
                sd_bus_message_unref(w->message);
                free(w);
                return log_error_errno(r, "Cannot start the audit verification thread: %m");
        }
        return 1;
}

static int method_verify(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return mnd_auth_audit(userdata, message, verify_authorised, userdata, error);
}

void mnd_bus_audit_done(struct mnd_manager *m) {
        struct mnd_audit_verifier *v = m->verifier;

        m->audit_slot = sd_bus_slot_unref(m->audit_slot);
        if (!v)
                return;
        if (v->running) {
                /* It holds only its own read-only handle: wait for it; its result is complete
                 * (finished before or while we waited), so its waiters get it. */
                (void) pthread_join(v->thread, NULL);
                v->running = false;
                waiters_reply(v, TAKE_PTR(v->current));
        }
        /* Whoever waits for a run that never started: cancelled. */
        v->result_r = -ECANCELED;
        waiters_reply(v, TAKE_PTR(v->current));
        waiters_reply(v, TAKE_PTR(v->next));
        v->io = sd_event_source_disable_unref(v->io);
        close(v->efd);
        free(v->directory);
        m->verifier = mfree(v);
}

const sd_bus_vtable mnd_audit_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Count", "t", property_get_count, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HeadHash", "s", property_get_head_hash, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Query",
                                SD_BUS_ARGS("a{sv}", filter),
                                SD_BUS_RESULT("aa{sv}", events),
                                method_query, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Verify",
                                SD_BUS_NO_ARGS,
                                SD_BUS_RESULT("b", ok, "t", count, "t", first_bad_seq, "s", head_hash),
                                method_verify, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int mnd_bus_audit_attach(struct mnd_manager *m) {
        int r;

        r = sd_bus_add_object_vtable(m->bus, &m->audit_slot, MND_AUDIT_PATH, MND_AUDIT_INTERFACE, mnd_audit_vtable,
                                     m);
        if (r < 0)
                return log_error_errno(r, "Cannot serve %s: %m", MND_AUDIT_PATH);
        return 0;
}
