/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The session record: session numbers that stay unique across restarts, and
 * which sessions were running when the daemon stopped.
 *
 * STATE_DIRECTORY/sessions, append-only, one line per event (see journal.h):
 *   B <TAB> ID <TAB> STARTED-USEC <TAB> PLANNED-S <TAB> SERIAL <TAB> AREA <TAB> CARTRIDGE <LF>
 *       written and fsync'd before the START is sent
 *   E <TAB> ID <TAB> ENDED-USEC <TAB> ELAPSED-MS <TAB> STATE <TAB> REASON <LF>
 *       written when it ended ("not-started" when the pen refused the START)
 * Operator and patient reference are not kept here (personal data belongs to
 * the audit log, which a later issue adds).
 */
#pragma once

#include <stdint.h>

#include "session.h"

/* A session that began and never ended: the daemon died while it ran. */
struct mnd_session_orphan {
        uint64_t id;
        uint64_t started_at;
        uint32_t planned_duration_s;
        char serial[MNP_MAX_STR + 1];
        char area[MNP_AREA_ID_MAX];
        char cartridge[MNP_MAX_STR + 1];
};

struct mnd_session_store;

int mnd_session_store_open(const char *directory, struct mnd_session_store **ret);
struct mnd_session_store *mnd_session_store_free(struct mnd_session_store *s);

/* A new session number: above every number in the record and above floor
 * (e.g. the cartridge record's highest).  Not written until begin(). */
uint64_t mnd_session_store_next_id(struct mnd_session_store *s, uint64_t floor);

int mnd_session_store_begin(struct mnd_session_store *s, uint64_t id, uint64_t started_at,
                            uint32_t planned_duration_s, const char *serial, const char *area,
                            const char *cartridge);
int mnd_session_store_end(struct mnd_session_store *s, uint64_t id, uint64_t ended_at, uint64_t elapsed_ms,
                          const char *state, const char *reason);

/* The sessions found begun but not ended at open (oldest first); valid until
 * the store is freed.  The caller ends them ("daemon-restart"). */
const struct mnd_session_orphan *mnd_session_store_orphans(const struct mnd_session_store *s, unsigned *ret_n);
