/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The used-cartridge record: a cartridge serves one session, and a cartridge
 * an earlier session used is refused, across daemon restarts.
 *
 * STATE_DIRECTORY/cartridges is an append-only text file, one line per use:
 *     CARTRIDGE-ID <TAB> SESSION-ID <TAB> TIME-USEC <LF>
 * A line is written and fsync'd before the START that uses the cartridge is
 * sent.  A torn last line (no LF: the daemon died while writing it, so its
 * START was never sent) is ignored and cut off when the file is opened.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define MND_CARTRIDGE_ID_MAX 32         /* as MNP_MAX_STR */

struct mnd_cartridge_use {
        char id[MND_CARTRIDGE_ID_MAX + 1];
        uint64_t session_id;
        uint64_t time_usec;             /* CLOCK_REALTIME */
};

struct mnd_cartridge_store;

/* Opens (creates) DIR/cartridges and loads it.  Lines that are not torn but
 * malformed are skipped with a warning (never fatal: a damaged record must
 * not keep Stop from working), their ids cannot be known. */
int mnd_cartridge_store_open(const char *directory, struct mnd_cartridge_store **ret);
struct mnd_cartridge_store *mnd_cartridge_store_free(struct mnd_cartridge_store *s);

/* The earlier use of this cartridge, or NULL if it is new. */
const struct mnd_cartridge_use *mnd_cartridge_store_find(const struct mnd_cartridge_store *s, const char *id);

/* Appends a use and fsyncs it.  -EEXIST if the cartridge was used already,
 * -EINVAL for an id that is empty, too long or not printable ASCII, or the
 * write/fsync error (then nothing is recorded in memory either). */
int mnd_cartridge_store_record(struct mnd_cartridge_store *s, const char *id, uint64_t session_id,
                               uint64_t time_usec);

/* The highest session id seen in the record (0 if none): session ids are
 * allocated above it. */
uint64_t mnd_cartridge_store_max_session(const struct mnd_cartridge_store *s);
unsigned mnd_cartridge_store_count(const struct mnd_cartridge_store *s);

/* Printable ASCII (0x21..0x7e; no spaces, tabs or line breaks), 1..32 characters. */
bool mnd_cartridge_id_is_valid(const char *id);
