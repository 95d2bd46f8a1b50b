/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl's output: a small JSON writer (correct escaping for any byte
 * string), aligned tables, and the colour decision.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* ---- colour ---- */
#define ANSI_RED       "\033[31m"
#define ANSI_GREEN     "\033[32m"
#define ANSI_YELLOW    "\033[33m"
#define ANSI_BOLD      "\033[1m"
#define ANSI_GREY      "\033[90m"
#define ANSI_NORMAL    "\033[0m"

/*
 * Colour (and the live view) only on a terminal: false when no_color_flag
 * (--no-color), when NO_COLOR is set to anything non-empty, when TERM is
 * "dumb", or when fd is not a terminal.
 */
bool mnctl_use_color(int fd, bool no_color_flag);

/* The colour for a pen or session state ("running" green, "fault"/"failed" red ...), or "" if none. */
const char *mnctl_state_color(const char *state);

/* ---- JSON ---- */
#define JSON_DEPTH_MAX 16

struct json {
        FILE *f;
        bool pretty;            /* indent with two spaces, else one line */
        unsigned depth;
        bool has_items[JSON_DEPTH_MAX];
        bool after_key;
};

void json_init(struct json *j, FILE *f, bool pretty);
void json_object_begin(struct json *j);
void json_object_end(struct json *j);
void json_array_begin(struct json *j);
void json_array_end(struct json *j);
void json_key(struct json *j, const char *key);
void json_string(struct json *j, const char *s);        /* NULL gives null */
void json_uint(struct json *j, uint64_t v);
void json_int(struct json *j, int64_t v);
void json_bool(struct json *j, bool b);
void json_null(struct json *j);
/* Ends the document (a newline) and flushes. */
void json_finish(struct json *j);

/* Shorthands for "key": value. */
void json_kv_string(struct json *j, const char *key, const char *s);
void json_kv_uint(struct json *j, const char *key, uint64_t v);
void json_kv_bool(struct json *j, const char *key, bool b);

/*
 * Writes s as a JSON string, quotes included.  Escapes ", \ and every
 * control character; copies valid UTF-8 as it is; replaces each byte of an
 * invalid UTF-8 sequence (overlong forms, surrogates, above U+10FFFF,
 * truncated) with \ufffd, so the output is always valid JSON.
 */
void json_write_string(FILE *f, const char *s);

/* ---- tables ---- */
struct table;

struct table *table_new(const char *const *headers);    /* NULL-terminated */
struct table *table_free(struct table *t);
/* Adds a row of table->ncols cells (copied; NULL is shown as "").  -ENOMEM on failure. */
int table_add_row(struct table *t, const char *const *cells);
/* Colours a cell of the last row (a static string such as ANSI_GREEN). */
void table_set_color(struct table *t, size_t column, const char *color);
/* Prints the header and rows, columns aligned (by characters, not bytes), two spaces apart. */
void table_print(const struct table *t, FILE *f, bool color);

static inline void table_freep(struct table **t) {
        table_free(*t);
}

/* The number of characters (UTF-8 code points) in s. */
size_t mnctl_utf8_width(const char *s);

/* ---- text for a terminal ---- */

/*
 * The one way mnctl writes text that came from elsewhere (the daemon, a pen,
 * the audit log, the command line) in text mode: every character that is not
 * printable is escaped, so that such text can never act on the terminal.
 *   C0 controls and DEL   \t, \n, \r as such, others as \x1b ...; with
 *                         keep_newline a LF stays a LF
 *   C1 controls           U+0080..U+009F (such as CSI, U+009B) as \u009b
 *   bidi controls         U+061C, U+200E, U+200F, U+202A..U+202E,
 *                         U+2066..U+2069 as \u202e ...
 *   invalid UTF-8         each byte of no valid character as \xff ...
 *   backslash             \\, so that the escaped text is unambiguous
 * Everything else (printable ASCII and valid UTF-8) is copied as it is.
 * s NULL reads as "".
 *
 * mnctl_escape_text() writes into buf (NUL-terminated when size > 0, cut only
 * between characters) and returns the length the whole escaped text needs,
 * as snprintf does.
 */
size_t mnctl_escape_text(const char *s, bool keep_newline, char *buf, size_t size);
/* The same, into a buffer that is returned (for use inside printf's arguments). */
static inline const char *mnctl_escape(const char *s, char *buf, size_t size) {
        mnctl_escape_text(s, false, buf, size);
        return buf;
}
/* The same, written to f. */
void mnctl_fputs_text(FILE *f, const char *s, bool keep_newline);
/* The same, newly allocated (NULL on OOM). */
char *mnctl_text_dup(const char *s, bool keep_newline);
