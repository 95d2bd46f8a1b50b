/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The state files of mnd before the audit log: STATE_DIRECTORY/cartridges (used cartridges,
 * "CARTRIDGE <TAB> SESSION <TAB> TIME-USEC") and STATE_DIRECTORY/sessions ("B <TAB> ID <TAB>
 * STARTED-USEC <TAB> PLANNED-S <TAB> SERIAL <TAB> AREA <TAB> CARTRIDGE" when a session began,
 * "E <TAB> ID <TAB> ENDED-USEC <TAB> ELAPSED-MS <TAB> STATE <TAB> REASON" when it ended).
 *
 * Migration, once, at the first start with the audit log: every session either file knows
 * becomes a session-start event (time, pen, area, planned duration, cartridge as recorded; a
 * detail source=legacy), followed by a session-end event when the sessions file has its end.
 * Sessions left without an end are those that were running when the old daemon stopped: the
 * daemon then closes them as it closes any session the log shows running ("daemon-restart").
 * A legacy-import event (with the numbers imported) ends the batch, which is committed as one
 * durable transaction; only then are the files renamed to cartridges.imported and
 * sessions.imported.  If the daemon dies between the commit and the renames, the next start
 * finds the legacy-import event and only renames.  So single use and session numbering carry
 * over, and the old files are never read again.  Lines that are torn (no LF) or malformed are
 * skipped (counted in the legacy-import event); the files are only read, never written.
 */
#pragma once

#include "audit-log.h"

#define MND_LEGACY_CARTRIDGES_FILE "cartridges"
#define MND_LEGACY_SESSIONS_FILE   "sessions"
#define MND_LEGACY_IMPORTED_SUFFIX ".imported"

struct mnd_legacy_import_result {
        unsigned sessions;              /* session-start events written */
        unsigned ended;                 /* session-end events written */
        unsigned skipped;               /* malformed or torn lines */
        bool found;                     /* either file existed */
};

/* Imports directory's legacy files into a (see above).  0 when there was nothing to do or it is
 * done (ret, optional, says what was found); a negative errno when the files cannot be read or
 * the log cannot be written (then nothing was imported and the files stay). */
int mnd_audit_import_legacy(struct mnd_audit *a, const char *directory, struct mnd_legacy_import_result *ret);
