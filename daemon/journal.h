/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Append-only record files in the state directory (used cartridges, session
 * numbers): text lines, each appended with one write() and fsync'd before
 * the daemon acts on it.  A torn last line (no LF: the daemon died while
 * writing it, so it never acted on it) is cut off when the file is loaded.
 */
#pragma once

#include <stddef.h>

/* Opens (creates) path for appending; returns the fd or a negative errno. */
int mnd_journal_open(const char *path);

/* Calls fn for every complete line (without its LF, NUL-terminated, writable),
 * with its 1-based number.  fn returns < 0 to abort.  Cuts off a torn last line. */
int mnd_journal_load(int fd, const char *path, int (*fn)(char *line, unsigned lineno, void *userdata),
                     void *userdata);

/* Appends one line (which must end in LF) and fsyncs.  On failure after a
 * partial write, the partial line is ended, so that it stays one bad line. */
int mnd_journal_append(int fd, const char *line, size_t n);

/* Strict unsigned decimal. */
int mnd_parse_u64(const char *p, unsigned long long max, unsigned long long *ret);
