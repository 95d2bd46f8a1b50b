/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mnctl-util.h"
#include "mnctl.h"
#include "output.h"

bool mnctl_use_color(int fd, bool no_color_flag) {
        const char *term;

        if (no_color_flag || !isempty(getenv("NO_COLOR")))
                return false;
        term = getenv("TERM");
        if (term && streq(term, "dumb"))
                return false;
        return isatty(fd) > 0;
}

const char *mnctl_state_color(const char *state) {
        if (!state)
                return "";
        if (streq(state, "running") || streq(state, "completed"))
                return ANSI_GREEN;
        if (streq(state, "fault") || streq(state, "failed") || streq(state, "interrupted") ||
            streq(state, "disconnected"))
                return ANSI_RED;
        if (streq(state, "connecting") || streq(state, "stopped"))
                return ANSI_YELLOW;
        return "";
}

/* ---- JSON ---- */

void json_init(struct json *j, FILE *f, bool pretty) {
        *j = (struct json) { .f = f, .pretty = pretty };
}

static void json_newline(struct json *j) {
        if (!j->pretty)
                return;
        fputc('\n', j->f);
        for (unsigned i = 0; i < j->depth; i++)
                fputs("  ", j->f);
}

/* Before any value: the comma and line break between items, nothing after a key. */
static void json_value_prefix(struct json *j) {
        if (j->after_key) {
                j->after_key = false;
                return;
        }
        if (j->depth == 0)
                return;
        if (j->has_items[j->depth])
                fputc(',', j->f);
        j->has_items[j->depth] = true;
        json_newline(j);
}

static void json_open(struct json *j, char c) {
        json_value_prefix(j);
        fputc(c, j->f);
        if (j->depth + 1 < JSON_DEPTH_MAX)
                j->depth++;
        j->has_items[j->depth] = false;
}

static void json_close(struct json *j, char c) {
        bool had = j->has_items[j->depth];

        if (j->depth > 0)
                j->depth--;
        if (had)
                json_newline(j);
        fputc(c, j->f);
}

void json_object_begin(struct json *j) {
        json_open(j, '{');
}

void json_object_end(struct json *j) {
        json_close(j, '}');
}

void json_array_begin(struct json *j) {
        json_open(j, '[');
}

void json_array_end(struct json *j) {
        json_close(j, ']');
}

void json_key(struct json *j, const char *key) {
        json_value_prefix(j);
        json_write_string(j->f, key);
        fputs(j->pretty ? ": " : ":", j->f);
        j->after_key = true;
}

void json_string(struct json *j, const char *s) {
        json_value_prefix(j);
        if (s)
                json_write_string(j->f, s);
        else
                fputs("null", j->f);
}

void json_uint(struct json *j, uint64_t v) {
        json_value_prefix(j);
        fprintf(j->f, "%" PRIu64, v);
}

void json_int(struct json *j, int64_t v) {
        json_value_prefix(j);
        fprintf(j->f, "%" PRId64, v);
}

void json_bool(struct json *j, bool b) {
        json_value_prefix(j);
        fputs(b ? "true" : "false", j->f);
}

void json_null(struct json *j) {
        json_value_prefix(j);
        fputs("null", j->f);
}

void json_finish(struct json *j) {
        fputc('\n', j->f);
        fflush(j->f);
}

void json_kv_string(struct json *j, const char *key, const char *s) {
        json_key(j, key);
        json_string(j, s);
}

void json_kv_uint(struct json *j, const char *key, uint64_t v) {
        json_key(j, key);
        json_uint(j, v);
}

void json_kv_bool(struct json *j, const char *key, bool b) {
        json_key(j, key);
        json_bool(j, b);
}

/* The length of the valid UTF-8 sequence at s (1-4), or 0 if it is not one. */
static size_t utf8_sequence(const unsigned char *s) {
        unsigned char c = s[0], lo = 0x80, hi = 0xBF;
        size_t n;

        if (c < 0x80)
                return 1;
        if (c >= 0xC2 && c <= 0xDF)
                n = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
                n = 3;
                if (c == 0xE0)
                        lo = 0xA0;      /* no overlong forms */
                else if (c == 0xED)
                        hi = 0x9F;      /* no UTF-16 surrogates */
        } else if (c >= 0xF0 && c <= 0xF4) {
                n = 4;
                if (c == 0xF0)
                        lo = 0x90;
                else if (c == 0xF4)
                        hi = 0x8F;      /* nothing above U+10FFFF */
        } else
                return 0;

        if (s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < n; i++)
                if (s[i] < 0x80 || s[i] > 0xBF)
                        return 0;
        return n;
}

void json_write_string(FILE *f, const char *s) {
        const unsigned char *p = (const unsigned char *) s;

        fputc('"', f);
        while (*p) {
                size_t n;

                switch (*p) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                case '\b':
                        fputs("\\b", f);
                        break;
                case '\f':
                        fputs("\\f", f);
                        break;
                default:
                        if (*p < 0x20) {
                                fprintf(f, "\\u%04x", *p);
                                break;
                        }
                        n = utf8_sequence(p);
                        if (n == 0) {
                                fputs("\\ufffd", f);
                                break;
                        }
                        fwrite(p, 1, n, f);
                        p += n;
                        continue;
                }
                p++;
        }
        fputc('"', f);
}

/* ---- text for a terminal ---- */

struct text_sink {
        FILE *f;                /* write here, or else into buf */
        char *buf;
        size_t size, used;      /* buf's size, and the bytes in it */
        size_t len;             /* the whole escaped text's length */
        bool full;              /* a piece did not fit: nothing more goes into buf */
};

static void sink_put(struct text_sink *k, const char *p, size_t n) {
        if (k->f)
                fwrite(p, 1, n, k->f);
        else if (!k->full && k->used + n < k->size) {
                memcpy(k->buf + k->used, p, n);
                k->used += n;
        } else
                k->full = true;
        k->len += n;
}

/* The code point of the valid n-byte UTF-8 sequence at s. */
static uint32_t utf8_code_point(const unsigned char *s, size_t n) {
        uint32_t cp;

        if (n == 1)
                return s[0];
        cp = s[0] & (0xFFu >> (n + 1));
        for (size_t i = 1; i < n; i++)
                cp = (cp << 6) | (s[i] & 0x3Fu);
        return cp;
}

static bool is_bidi_control(uint32_t cp) {
        return cp == 0x061C || cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
               (cp >= 0x2066 && cp <= 0x2069);
}

static void escape_to(struct text_sink *k, const char *s, bool keep_newline) {
        const unsigned char *p = (const unsigned char *) strempty(s);
        char piece[16];

        while (*p) {
                size_t n = utf8_sequence(p);
                uint32_t cp;

                if (n == 0) {
                        /* A byte of no valid character. */
                        snprintf(piece, sizeof(piece), "\\x%02x", *p);
                        sink_put(k, piece, strlen(piece));
                        p++;
                        continue;
                }
                cp = utf8_code_point(p, n);
                if (cp == '\\')
                        sink_put(k, "\\\\", 2);
                else if (cp == '\n' && keep_newline)
                        sink_put(k, "\n", 1);
                else if (cp == '\n')
                        sink_put(k, "\\n", 2);
                else if (cp == '\r')
                        sink_put(k, "\\r", 2);
                else if (cp == '\t')
                        sink_put(k, "\\t", 2);
                else if (cp < 0x20 || cp == 0x7F) {
                        snprintf(piece, sizeof(piece), "\\x%02x", (unsigned) cp);
                        sink_put(k, piece, strlen(piece));
                } else if ((cp >= 0x80 && cp <= 0x9F) || is_bidi_control(cp)) {
                        snprintf(piece, sizeof(piece), "\\u%04x", (unsigned) cp);
                        sink_put(k, piece, strlen(piece));
                } else
                        sink_put(k, (const char *) p, n);
                p += n;
        }
}

size_t mnctl_escape_text(const char *s, bool keep_newline, char *buf, size_t size) {
        struct text_sink k = { .buf = buf, .size = size };

        escape_to(&k, s, keep_newline);
        if (size > 0)
                buf[k.used] = '\0';
        return k.len;
}

void mnctl_fputs_text(FILE *f, const char *s, bool keep_newline) {
        struct text_sink k = { .f = f };

        escape_to(&k, s, keep_newline);
}

char *mnctl_text_dup(const char *s, bool keep_newline) {
        size_t n = mnctl_escape_text(s, keep_newline, NULL, 0);
        char *t = malloc(n + 1);

        if (t)
                mnctl_escape_text(s, keep_newline, t, n + 1);
        return t;
}

/* ---- tables ---- */

struct table {
        size_t ncols, nrows;
        char **cells;                   /* (nrows + 1) * ncols, row 0 the header */
        const char **colors;            /* same layout, NULL for none */
};

size_t mnctl_utf8_width(const char *s) {
        size_t n = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xC0) != 0x80)
                        n++;
        return n;
}

struct table *table_free(struct table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < (t->nrows + 1) * t->ncols; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t->colors);
        free(t);
        return NULL;
}

static int table_append(struct table *t, const char *const *cells) {
        size_t base = t->nrows * t->ncols, total = base + t->ncols;
        char **c;
        const char **k;

        c = realloc(t->cells, total * sizeof(char *));
        if (!c)
                return -ENOMEM;
        t->cells = c;
        k = realloc(t->colors, total * sizeof(char *));
        if (!k)
                return -ENOMEM;
        t->colors = k;

        for (size_t i = 0; i < t->ncols; i++) {
                t->colors[base + i] = NULL;
                /* Cells are text for a terminal: whatever a pen or the log holds is shown escaped. */
                t->cells[base + i] = mnctl_text_dup(cells[i], false);
                if (!t->cells[base + i]) {
                        for (size_t k2 = 0; k2 < i; k2++)
                                free(t->cells[base + k2]);
                        return -ENOMEM;
                }
        }
        return 0;
}

struct table *table_new(const char *const *headers) {
        struct table *t;

        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        while (headers[t->ncols])
                t->ncols++;
        if (table_append(t, headers) < 0)
                return table_free(t);
        return t;
}

int table_add_row(struct table *t, const char *const *cells) {
        int r;

        /* Row 0 is the header, so the new row's index is nrows + 1. */
        t->nrows++;
        r = table_append(t, cells);
        if (r < 0)
                t->nrows--;
        return r;
}

void table_set_color(struct table *t, size_t column, const char *color) {
        if (t->nrows > 0 && column < t->ncols)
                t->colors[t->nrows * t->ncols + column] = color;
}

void table_print(const struct table *t, FILE *f, bool color) {
        _cleanup_(freep) size_t *width = calloc(t->ncols, sizeof(size_t));

        if (!width)
                return;
        for (size_t r = 0; r <= t->nrows; r++)
                for (size_t c = 0; c < t->ncols; c++) {
                        size_t w = mnctl_utf8_width(t->cells[r * t->ncols + c]);
                        if (w > width[c])
                                width[c] = w;
                }

        for (size_t r = 0; r <= t->nrows; r++) {
                for (size_t c = 0; c < t->ncols; c++) {
                        const char *cell = t->cells[r * t->ncols + c];
                        const char *k = r == 0 ? ANSI_BOLD : t->colors[r * t->ncols + c];
                        bool last = c + 1 == t->ncols;
                        bool paint = color && !isempty(k);

                        if (paint)
                                fputs(k, f);
                        fputs(cell, f);
                        if (paint)
                                fputs(ANSI_NORMAL, f);
                        if (!last)
                                fprintf(f, "%*s", (int) (width[c] - mnctl_utf8_width(cell) + 2), "");
                }
                fputc('\n', f);
        }
}

/* ---- the error the run ends with ---- */

int mnctl_fail(struct mnctl *c, int r, int exit_code, const char *name, const char *fmt, ...) {
        va_list ap;
        char *m = NULL;

        if (c->error_name)
                return r;       /* the first error is the one that counts */

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);

        c->exit_code = exit_code;
        c->error_name = strdup(name);
        c->error_message = m;
        return r < 0 ? r : -EIO;
}

void mnctl_report_error(const struct mnctl *c) {
        const char *message = c->error_message ?: "out of memory";

        if (c->json) {
                struct json j;

                /* In a stream of JSON Lines (watch, monitor) the error is one more line. */
                json_init(&j, stdout, !c->json_lines);
                json_object_begin(&j);
                if (c->json_error_members)
                        c->json_error_members(&j, c->json_error_userdata);
                json_key(&j, "error");
                json_object_begin(&j);
                json_kv_string(&j, "name", c->error_name ?: MNCTL_ERROR_FAILED);
                json_kv_string(&j, "message", message);
                json_kv_uint(&j, "exit_code", (uint64_t) c->exit_code);
                json_object_end(&j);
                json_object_end(&j);
                json_finish(&j);
                return;
        }

        /* The daemon's sentences quote values a caller or a pen chose: escaped like any other text. */
        if (mnctl_use_color(STDERR_FILENO, c->no_color))
                fputs(ANSI_RED ANSI_BOLD "mnctl:" ANSI_NORMAL " ", stderr);
        else
                fputs("mnctl: ", stderr);
        mnctl_fputs_text(stderr, message, false);
        fputc('\n', stderr);
}

void mnctl_done(struct mnctl *c) {
        c->bus = sd_bus_flush_close_unref(c->bus);
        free(c->error_name);
        free(c->error_message);
        c->error_name = c->error_message = NULL;
}
