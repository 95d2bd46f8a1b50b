/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <time.h>

#include "audit-legacy.h"
#include "audit-trail.h"
#include "bus-error.h"
#include "log.h"
#include "manager.h"

#ifndef MND_VERSION
#define MND_VERSION "unknown"
#endif

static void journal_event(const struct mnd_audit_event *e, uint64_t seq, const char *hash) {
        struct iovec *iov;
        char **fields = NULL;
        size_t n = 0;
        int r;

        r = mnd_audit_journal_fields(e, seq, hash, &fields);
        if (r < 0) {
                log_oom();
                return;
        }
        while (fields[n])
                n++;
        iov = calloc(n, sizeof(*iov));
        if (!iov) {
                mnd_strv_free(fields);
                log_oom();
                return;
        }
        for (size_t i = 0; i < n; i++)
                iov[i] = (struct iovec) { .iov_base = fields[i], .iov_len = strlen(fields[i]) };
        r = sd_journal_sendv(iov, (int) n);
        free(iov);
        if (r < 0)
                /* No journald (tests, containers): stderr has the daemon's own log line. */
                log_debug_errno(r, "Cannot send audit event %" PRIu64 " to the journal: %m", seq);
        mnd_strv_free(fields);
}

static void emit_changed(struct mnd_manager *m) {
        int r;

        if (!m->bus || !m->audit_slot)
                return;
        r = sd_bus_emit_properties_changed(m->bus, MND_AUDIT_PATH, MND_AUDIT_INTERFACE, "Count", "HeadHash", NULL);
        if (r < 0)
                log_debug_errno(r, "Cannot emit PropertiesChanged for %s: %m", MND_AUDIT_PATH);
}

int mnd_audit_record(struct mnd_manager *m, struct mnd_audit_event_buf *b, bool durable) {
        char head[MND_AUDIT_HASH_HEX_SIZE];
        uint64_t seq;
        int r;

        if (!m->audit) {
                log_error_errno(m->audit_error, "Audit log unavailable, event '%s' (pen %s, session %" PRIu64
                                ") is NOT recorded: %m", b->event.kind, strempty(b->event.pen), b->event.session);
                return m->audit_error ?: -EIO;
        }
        r = mnd_audit_append(m->audit, &b->event, durable, &seq, head);
        if (r < 0)
                return log_error_errno(r, "Cannot record audit event '%s' (pen %s, session %" PRIu64 "): %m",
                                       b->event.kind, strempty(b->event.pen), b->event.session);
        log_debug("Audit event %" PRIu64 ": %s%s.", seq, b->event.kind, durable ? " (durable)" : "");
        journal_event(&b->event, seq, head);
        emit_changed(m);
        return 0;
}

int mnd_audit_check_available(struct mnd_manager *m, const char *what, sd_bus_error *error) {
        if (m->audit)
                return 0;
        sd_bus_error_setf(error, MND_ERROR_AUDIT_FAILURE,
                          "the audit log in %s is unavailable (%s), so '%s' is refused; Stop "
                          "works. Repair or move aside %s there and restart mnd", m->config->state_directory,
                          strerror(ERRNO_VALUE(m->audit_error ?: -EIO)), what, MND_AUDIT_DB_FILE);
        return m->audit_error ?: -EIO;
}

int mnd_audit_write_ahead(struct mnd_manager *m, struct mnd_audit_event_buf *b, const char *what,
                          const char *not_done, sd_bus_error *error) {
        int r;

        r = mnd_audit_check_available(m, what, error);
        if (r < 0)
                return r;
        r = mnd_audit_record(m, b, true);
        if (r < 0)
                sd_bus_error_setf(error, MND_ERROR_AUDIT_FAILURE,
                                  "cannot record '%s' in the audit log in %s (%s); %s%s", what,
                                  m->config->state_directory, strerror(ERRNO_VALUE(r)), not_done,
                                  r == -ENOSPC ? ". Free disk space (or raise [audit] max_size_mb)" :
                                  r == -EROFS || r == -EACCES || r == -EPERM ?
                                  ". The audit database is read-only: check the state directory" : "");
        return r;
}

void mnd_audit_caller_from_message(sd_bus_message *message, struct mnd_audit_caller *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;

        *ret = (struct mnd_audit_caller) { .uid = MND_AUDIT_UNSET };
        if (!message)
                return;
        snprintf(ret->sender, sizeof(ret->sender), "%s", strempty(sd_bus_message_get_sender(message)));
        if (sd_bus_query_sender_creds(message, SD_BUS_CREDS_EUID | SD_BUS_CREDS_AUGMENT, &creds) < 0 ||
            sd_bus_creds_get_euid(creds, &uid) < 0)
                return;
        ret->uid = (uint32_t) uid;
        {
                struct passwd pw, *p = NULL;
                char buf[4096];

                if (getpwuid_r(uid, &pw, buf, sizeof(buf), &p) == 0 && p && p->pw_name)
                        snprintf(ret->user, sizeof(ret->user), "%s", p->pw_name);
        }
}

void mnd_audit_record_refusal(struct mnd_manager *m, sd_bus_message *message, const char *serial, uint64_t session,
                              const char *request, const char *area, uint32_t depth_um, uint32_t speed_hz,
                              uint32_t duration_s, const sd_bus_error *error) {
        struct mnd_audit_caller caller;
        struct mnd_audit_event_buf b;

        mnd_audit_caller_from_message(message, &caller);
        mnd_audit_build_refusal(&b, serial, session, request, area, depth_um, speed_hz, duration_s,
                                error ? error->name : NULL, error ? error->message : NULL, &caller);
        (void) mnd_audit_record(m, &b, false);
}

void mnd_audit_record_auth_failure(struct mnd_manager *m, sd_bus_message *message, const char *action,
                                   const sd_bus_error *error) {
        struct mnd_audit_caller caller;
        struct mnd_audit_event_buf b;

        if (m->auth_failure_ratelimit.interval_usec == 0)
                m->auth_failure_ratelimit = (struct mnd_ratelimit) {
                        .interval_usec = 60 * USEC_PER_SEC,
                        .burst = MND_AUDIT_AUTH_FAILURE_BURST,
                };
        if (!mnd_ratelimit_below(&m->auth_failure_ratelimit, now_usec(CLOCK_MONOTONIC)))
                return;
        mnd_audit_caller_from_message(message, &caller);
        mnd_audit_build_auth_failure(&b, action, sd_bus_message_get_member(message), error ? error->message : NULL,
                                     mnd_ratelimit_take_suppressed(&m->auth_failure_ratelimit), &caller);
        (void) mnd_audit_record(m, &b, false);
}

void mnd_audit_record_stop(struct mnd_manager *m, sd_bus_message *message, const char *serial, uint64_t session,
                           const char *request, bool active) {
        struct mnd_audit_caller caller;
        struct mnd_audit_event_buf b;
        unsigned suppressed = 0;

        if (!active) {
                if (m->idle_stop_ratelimit.interval_usec == 0)
                        m->idle_stop_ratelimit = (struct mnd_ratelimit) {
                                .interval_usec = 60 * USEC_PER_SEC,
                                .burst = MND_AUDIT_IDLE_STOP_BURST,
                        };
                if (!mnd_ratelimit_below(&m->idle_stop_ratelimit, now_usec(CLOCK_MONOTONIC))) {
                        log_debug("%s that stopped nothing, not recorded (rate limit).", request);
                        return;
                }
        }
        /* Whatever was left out is carried by the next one recorded, idle or not. */
        suppressed = mnd_ratelimit_take_suppressed(&m->idle_stop_ratelimit);
        mnd_audit_caller_from_message(message, &caller);
        mnd_audit_build_stop(&b, serial, session, request, &caller);
        if (!active)
                mnd_audit_build_detail(&b, "stopped", "%s", "nothing");
        if (suppressed > 0)
                mnd_audit_build_detail(&b, "suppressed_before", "%u", suppressed);
        (void) mnd_audit_record(m, &b, false);
}

uint64_t mnd_audit_next_session_id(struct mnd_manager *m) {
        uint64_t max = 0;

        if (m->audit && mnd_audit_max_session(m->audit, &max) >= 0 && max > m->audit_session_max)
                m->audit_session_max = max;
        /* Reserved in memory, so that two starts in flight never share a number. */
        return ++m->audit_session_max;
}

int mnd_audit_check_cartridge(struct mnd_manager *m, const char *serial, const char *cartridge, sd_bus_error *error) {
        struct mnd_audit_record *recs = NULL;
        char when[64] = "an earlier date";
        uint64_t session = 0;
        size_t n = 0;
        int r;

        r = mnd_audit_check_available(m, "start a session", error);
        if (r < 0)
                return r;
        r = mnd_audit_cartridge_used(m->audit, cartridge, &session);
        if (r < 0) {
                log_error_errno(r, "Cannot look up cartridge %s in the audit log: %m", cartridge);
                sd_bus_error_setf(error, MND_ERROR_AUDIT_FAILURE,
                                  "cannot tell from the audit log whether cartridge '%s' was used before (%s); the "
                                  "session was not started", cartridge, strerror(ERRNO_VALUE(r)));
                return r;
        }
        if (r == 0)
                return 0;

        /* When: the time of that session's start. */
        if (mnd_audit_query(m->audit, &(struct mnd_audit_filter) {
                                    .session = session, .kind = MND_AUDIT_SESSION_START, .limit = 1 },
                            &recs, &n) >= 0 && n > 0) {
                time_t t = (time_t) (recs[0].event.time_usec / USEC_PER_SEC);
                struct tm tm;

                if (localtime_r(&t, &tm))
                        strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
        }
        mnd_audit_records_free(recs, n);
        sd_bus_error_setf(error, MND_ERROR_CARTRIDGE_USED,
                          "cartridge '%s' was used by session %" PRIu64 " on %s; a cartridge serves one session: "
                          "insert a new one", cartridge, session, when);
        return -EEXIST;
}

void mnd_audit_session_info(const struct mnd_session *s, struct mnd_audit_session_info *ret) {
        *ret = (struct mnd_audit_session_info) {
                .id = s->id,
                .pen = s->pen_serial,
                .area = s->area,
                .cartridge = s->cartridge,
                .operator_name = s->operator_name,
                .patient_ref = s->patient_ref,
                .depth_um = s->depth_um,
                .speed_hz = s->speed_hz,
                .planned_duration_s = s->planned_duration_s,
        };
}

/* The configuration hash the log last recorded (the newest config-change event), "" if none. */
static int last_config_hash(struct mnd_audit *a, char ret[MND_AUDIT_HASH_HEX_SIZE]) {
        uint64_t after = 0;

        ret[0] = '\0';
        for (;;) {
                struct mnd_audit_record *recs = NULL;
                size_t n = 0;
                int r;

                r = mnd_audit_query(a, &(struct mnd_audit_filter) {
                                            .kind = MND_AUDIT_CONFIG_CHANGE, .after_seq = after },
                                    &recs, &n);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n; i++)
                        for (size_t k = 0; k < recs[i].event.n_details; k++)
                                if (streq(recs[i].event.details[k].key, "config_sha256"))
                                        snprintf(ret, MND_AUDIT_HASH_HEX_SIZE, "%s",
                                                 strempty(recs[i].event.details[k].value));
                if (n > 0)
                        after = recs[n - 1].seq;
                mnd_audit_records_free(recs, n);
                if (n < MND_AUDIT_QUERY_MAX)
                        return 0;
        }
}

static void open_failed(struct mnd_manager *m, int r) {
        const char *dir = m->config->state_directory;

        m->audit = mnd_audit_close(m->audit);
        m->audit_error = r;
        if (r == -EPROTONOSUPPORT)
                log_error("The audit log %s/%s was written by a newer mnd (schema above %d). Every action that "
                          "needs an audit record is refused until a newer mnd runs; Stop works.", dir,
                          MND_AUDIT_DB_FILE, MND_AUDIT_SCHEMA_VERSION);
        else
                log_error_errno(r, "The audit log %s/%s cannot be used: %m. Every action that needs an audit record "
                                "is refused until it is repaired or moved aside and mnd restarted; Stop works.",
                                dir, MND_AUDIT_DB_FILE);
        (void) sd_notifyf(false, "STATUS=Audit log unavailable: %s", strerror(ERRNO_VALUE(r)));
}

int mnd_audit_trail_open(struct mnd_manager *m) {
        const struct mnd_config *c = m->config;
        char config_hash[MND_AUDIT_HASH_HEX_SIZE] = "", last[MND_AUDIT_HASH_HEX_SIZE];
        struct mnd_legacy_import_result imported = {};
        struct mnd_audit_checkpoint cp;
        struct mnd_audit_event_buf b;
        int r;

        if (c->path) {
                r = mnd_file_sha256_hex(c->path, config_hash);
                if (r < 0)
                        log_warning_errno(r, "Cannot hash the configuration file %s: %m", c->path);
        }

        r = mnd_audit_open(c->state_directory, 0, &m->audit);
        if (r < 0) {
                open_failed(m, r);
                return 0;
        }
        if (mnd_audit_checkpoint(m->audit, &cp) == 2)
                log_error("The audit log %s/%s disagrees with its checkpoint file %s: events were removed or "
                          "rewritten. Audit.Verify reports it until an administrator has looked and moved the "
                          "checkpoint file aside.", c->state_directory, MND_AUDIT_DB_FILE,
                          MND_AUDIT_CHECKPOINT_FILE);
        if (c->audit_max_size > 0) {
                r = mnd_audit_set_max_size(m->audit, c->audit_max_size);
                if (r < 0)
                        log_warning_errno(r, "Cannot cap the audit log at %" PRIu64 " bytes: %m", c->audit_max_size);
        }

        r = mnd_audit_import_legacy(m->audit, c->state_directory, &imported);
        if (r < 0) {
                /* Without them single use could not be honoured: refuse rather than guess. */
                log_error_errno(r, "Cannot import the legacy %s and %s files from %s into the audit log: %m",
                                MND_LEGACY_CARTRIDGES_FILE, MND_LEGACY_SESSIONS_FILE, c->state_directory);
                open_failed(m, r);
                return 0;
        }
        if (imported.found)
                log_notice("Imported %u session(s) (%u with their end, %u line(s) skipped) from the legacy files in "
                           "%s into the audit log.", imported.sessions, imported.ended, imported.skipped,
                           c->state_directory);

        r = mnd_audit_max_session(m->audit, &m->audit_session_max);
        if (r < 0)
                log_warning_errno(r, "Cannot read the highest session number from the audit log: %m");

        mnd_audit_build_daemon_start(&b, MND_VERSION, c->path, config_hash);
        (void) mnd_audit_record(m, &b, true);

        r = last_config_hash(m->audit, last);
        if (r < 0)
                log_warning_errno(r, "Cannot read the last recorded configuration from the audit log: %m");
        else if (!streq(last, config_hash)) {
                log_notice("The configuration (%s, SHA-256 %s) differs from the one last recorded (%s).",
                           c->path ?: "defaults, no file", isempty(config_hash) ? "none" : config_hash,
                           isempty(last) ? "none" : last);
                mnd_audit_build_config_change(&b, c->path, last, config_hash);
                (void) mnd_audit_record(m, &b, true);
        }
        return 0;
}

void mnd_audit_trail_close(struct mnd_manager *m, const char *reason) {
        struct mnd_audit_event_buf b;

        if (!m->audit)
                return;
        mnd_audit_build_daemon_stop(&b, MND_VERSION, reason);
        (void) mnd_audit_record(m, &b, true);
        m->audit = mnd_audit_close(m->audit);
}
