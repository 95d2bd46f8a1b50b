/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's audit trail: the audit log (audit-log.h) in the state directory, written as the
 * daemon acts, and mirrored into the journal.
 *
 * Write-ahead: an event that authorises a pen action (session-start; setpoint-change, in a session
 * or outside one) is committed durably (synchronous=FULL) BEFORE the command goes to the pen, with
 * mnd_audit_write_ahead(); if that fails the action is refused with
 * org.microneedle.Mnd1.Error.AuditFailure and nothing is sent.  Everything else (the pen's own
 * reports, session ends, refusals, Stop) is recorded with mnd_audit_record() right after the fact,
 * non-durably (the WAL is written but not fsync'd: it survives a crash of the daemon, and the next
 * durable commit makes it durable; a power cut may lose the newest of these).  Stop never waits
 * for the log: the STOP goes to the pen first and the record follows; a record that fails is
 * logged at error level and the Stop still succeeds.
 *
 * A database that cannot be opened at start (corrupt, not an audit log, a schema from a newer mnd,
 * unreadable) does not keep the daemon from starting: pens are served, Stop and StopAll work, and
 * every action that needs a write-ahead record (StartSession, SetDepth, SetSpeed) is refused with
 * AuditFailure naming the cause, as are Audit.Query and Audit.Verify.  Count and HeadHash then read
 * 0 and "".  The daemon has to be restarted once the database is repaired or moved aside.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "audit-events.h"

struct mnd_manager;
struct mnd_session;

/* At start: opens the log (never fatal, see above), imports the legacy record files, records
 * daemon-start and, if the configuration's hash differs from the last recorded one,
 * config-change.  Returns 0, or -ENOMEM. */
int mnd_audit_trail_open(struct mnd_manager *m);
/* At exit: records daemon-stop and closes the log. */
void mnd_audit_trail_close(struct mnd_manager *m, const char *reason);

/* Appends b's event, writes it to the journal and emits PropertiesChanged for Count and HeadHash.
 * On failure logs at error level and returns the negative errno. */
int mnd_audit_record(struct mnd_manager *m, struct mnd_audit_event_buf *b, bool durable);
/* The write-ahead record of an action (what: "start session 12 on pen MNU-0001 with cartridge
 * 'C1'"; not_done: "the session was not started"): durable; on failure sets AuditFailure with a
 * sentence naming both, the state directory and the cause, and returns the negative errno. */
int mnd_audit_write_ahead(struct mnd_manager *m, struct mnd_audit_event_buf *b, const char *what,
                          const char *not_done, sd_bus_error *error);
/* AuditFailure for an action when the log is unavailable; returns -EIO-like errno, 0 if available. */
int mnd_audit_check_available(struct mnd_manager *m, const char *what, sd_bus_error *error);

/* The caller of a method: uid (from the bus), user name, unique name.  Never fails: what cannot
 * be found stays unset. */
void mnd_audit_caller_from_message(sd_bus_message *message, struct mnd_audit_caller *ret);

/* Records the refusal in error (its name and sentence) of request by the caller of message. */
void mnd_audit_record_refusal(struct mnd_manager *m, sd_bus_message *message, const char *serial, uint64_t session,
                              const char *request, const char *area, uint32_t depth_um, uint32_t speed_hz,
                              uint32_t duration_s, const sd_bus_error *error);
/* Records an authorisation failure (at most MND_AUDIT_AUTH_FAILURE_BURST a minute; the number left
 * out is carried by the next one recorded). */
#define MND_AUDIT_AUTH_FAILURE_BURST 30
void mnd_audit_record_auth_failure(struct mnd_manager *m, sd_bus_message *message, const char *action,
                                   const sd_bus_error *error);

/* Records a Stop or StopAll (request) by the caller of message, right after the pens were told.
 * One that had something to stop (active: a session running or starting, needles running) is
 * always recorded; one that stopped nothing (anyone may call Stop) at most
 * MND_AUDIT_IDLE_STOP_BURST a minute, the number left out carried by the next one recorded. */
#define MND_AUDIT_IDLE_STOP_BURST 30
void mnd_audit_record_stop(struct mnd_manager *m, sd_bus_message *message, const char *serial, uint64_t session,
                           const char *request, bool active);

/* A new session number: above every one in the log and every one handed out before. */
uint64_t mnd_audit_next_session_id(struct mnd_manager *m);
/* Single use: 0 if the cartridge was never used; -EEXIST with CartridgeUsed set if an earlier
 * session used it; AuditFailure (and its errno) if the log cannot tell. */
int mnd_audit_check_cartridge(struct mnd_manager *m, const char *serial, const char *cartridge, sd_bus_error *error);

/* A session's fields for the builders. */
void mnd_audit_session_info(const struct mnd_session *s, struct mnd_audit_session_info *ret);
