/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mnsim's control socket: a Unix stream socket, one command per line, one
 * reply line per command ("ok ..." or "error: <sentence>").  See README.md.
 */
#pragma once

#include "mnsim.h"

struct control;

/* Listens on path (a stale socket there is replaced). */
struct control *control_new(struct mn_sim *sim, const char *path, char **error);
/* Closes every connection and removes the socket. */
void control_free(struct control *c);

/* Runs one command line; returns the reply line, without newline. */
char *control_execute(struct mn_sim *sim, const char *line);

/* The command summary for --help and "help". */
extern const char control_usage[];

/* "mnsim ctl": sends argv joined by spaces, prints the reply.  Returns the
 * exit status: 0 for "ok", 1 for "error", 2 if no reply could be had. */
int control_client(const char *path, int argc, char **argv);
