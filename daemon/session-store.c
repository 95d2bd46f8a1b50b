/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"
#include "session-store.h"

struct mnd_session_store {
        int fd;
        char *path;
        uint64_t max_id;
        struct mnd_session_orphan *orphans;
        unsigned n_orphans, allocated;
};

struct mnd_session_store *mnd_session_store_free(struct mnd_session_store *s) {
        if (!s)
                return NULL;
        if (s->fd >= 0)
                close(s->fd);
        free(s->path);
        free(s->orphans);
        return mfree(s);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct mnd_session_store *, mnd_session_store_free);

/* Splits line at tabs into at most n fields; returns how many. */
static unsigned split(char *line, char **fields, unsigned n) {
        unsigned k = 0;

        while (k < n) {
                fields[k++] = line;
                line = strchr(line, '\t');
                if (!line)
                        break;
                *line++ = '\0';
        }
        return line ? n + 1 : k;
}

static void forget_orphan(struct mnd_session_store *s, uint64_t id) {
        for (unsigned i = 0; i < s->n_orphans; i++)
                if (s->orphans[i].id == id) {
                        memmove(s->orphans + i, s->orphans + i + 1, (s->n_orphans - i - 1) * sizeof(*s->orphans));
                        s->n_orphans--;
                        return;
                }
}

static int load_line(char *line, unsigned lineno, void *userdata) {
        struct mnd_session_store *s = userdata;
        unsigned long long id, t, planned;
        char *f[7];
        unsigned n;

        n = split(line, f, ELEMENTSOF(f));
        if (n < 2 || mnd_parse_u64(f[1], UINT64_MAX, &id) < 0 || id == 0)
                goto bad;
        if (streq(f[0], "B") && n == 7) {
                struct mnd_session_orphan o = { .id = id };

                if (mnd_parse_u64(f[2], UINT64_MAX, &t) < 0 || mnd_parse_u64(f[3], UINT32_MAX, &planned) < 0 ||
                    strcpy_bounded(o.serial, sizeof(o.serial), f[4]) < 0 ||
                    strcpy_bounded(o.area, sizeof(o.area), f[5]) < 0 ||
                    strcpy_bounded(o.cartridge, sizeof(o.cartridge), f[6]) < 0)
                        goto bad;
                o.started_at = t;
                o.planned_duration_s = (uint32_t) planned;
                if (s->n_orphans == s->allocated) {
                        unsigned a = s->allocated ? s->allocated * 2 : 8;
                        struct mnd_session_orphan *p = reallocarray(s->orphans, a, sizeof(*p));
                        if (!p)
                                return -ENOMEM;
                        s->orphans = p;
                        s->allocated = a;
                }
                forget_orphan(s, id);
                s->orphans[s->n_orphans++] = o;
        } else if (streq(f[0], "E") && n == 6)
                forget_orphan(s, id);
        else
                goto bad;
        if (id > s->max_id)
                s->max_id = id;
        return 0;

bad:
        log_warning("%s:%u: ignoring a malformed line.", s->path, lineno);
        return 0;
}

int mnd_session_store_open(const char *directory, struct mnd_session_store **ret) {
        _cleanup_(mnd_session_store_freep) struct mnd_session_store *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->fd = -1;
        if (asprintf(&s->path, "%s/sessions", directory) < 0) {
                s->path = NULL;
                return -ENOMEM;
        }
        s->fd = mnd_journal_open(s->path);
        if (s->fd < 0)
                return log_error_errno(s->fd, "Cannot open %s: %m", s->path);
        r = mnd_journal_load(s->fd, s->path, load_line, s);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

uint64_t mnd_session_store_next_id(struct mnd_session_store *s, uint64_t floor) {
        uint64_t m = s->max_id > floor ? s->max_id : floor;

        /* Reserve it in memory, so that two starts in flight never share a number. */
        s->max_id = m + 1;
        return m + 1;
}

static bool field_ok(const char *f) {
        return !isempty(f) && !strpbrk(f, "\t\n");
}

int mnd_session_store_begin(struct mnd_session_store *s, uint64_t id, uint64_t started_at,
                            uint32_t planned_duration_s, const char *serial, const char *area,
                            const char *cartridge) {
        _cleanup_(freep) char *line = NULL;
        int n;

        if (id == 0 || !field_ok(serial) || !field_ok(area) || !field_ok(cartridge))
                return -EINVAL;
        n = asprintf(&line, "B\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu32 "\t%s\t%s\t%s\n", id, started_at,
                     planned_duration_s, serial, area, cartridge);
        if (n < 0) {
                line = NULL;
                return -ENOMEM;
        }
        if (id > s->max_id)
                s->max_id = id;
        return mnd_journal_append(s->fd, line, (size_t) n);
}

int mnd_session_store_end(struct mnd_session_store *s, uint64_t id, uint64_t ended_at, uint64_t elapsed_ms,
                          const char *state, const char *reason) {
        _cleanup_(freep) char *line = NULL;
        int n;

        if (id == 0 || !field_ok(state) || !field_ok(reason))
                return -EINVAL;
        n = asprintf(&line, "E\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%s\t%s\n", id, ended_at, elapsed_ms,
                     state, reason);
        if (n < 0) {
                line = NULL;
                return -ENOMEM;
        }
        return mnd_journal_append(s->fd, line, (size_t) n);
}

const struct mnd_session_orphan *mnd_session_store_orphans(const struct mnd_session_store *s, unsigned *ret_n) {
        *ret_n = s->n_orphans;
        return s->orphans;
}
