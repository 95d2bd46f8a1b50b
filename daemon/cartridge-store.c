/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cartridge-store.h"
#include "journal.h"
#include "log.h"

struct mnd_cartridge_store {
        int fd;
        char *path;
        struct mnd_cartridge_use *uses;
        unsigned n, allocated;
        uint64_t max_session;
};

bool mnd_cartridge_id_is_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n == 0 || n > MND_CARTRIDGE_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (id[i] < 0x21 || id[i] > 0x7e)
                        return false;
        return true;
}

struct mnd_cartridge_store *mnd_cartridge_store_free(struct mnd_cartridge_store *s) {
        if (!s)
                return NULL;
        if (s->fd >= 0)
                close(s->fd);
        free(s->path);
        free(s->uses);
        return mfree(s);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct mnd_cartridge_store *, mnd_cartridge_store_free);

static int add_use(struct mnd_cartridge_store *s, const char *id, uint64_t session_id, uint64_t time_usec) {
        if (s->n == s->allocated) {
                unsigned a = s->allocated ? s->allocated * 2 : 64;
                struct mnd_cartridge_use *u = reallocarray(s->uses, a, sizeof(*u));

                if (!u)
                        return -ENOMEM;
                s->uses = u;
                s->allocated = a;
        }
        s->uses[s->n] = (struct mnd_cartridge_use) {
                .session_id = session_id,
                .time_usec = time_usec,
        };
        memcpy(s->uses[s->n].id, id, strlen(id) + 1);
        s->n++;
        if (session_id > s->max_session)
                s->max_session = session_id;
        return 0;
}

/* One complete line, modified in place. */
static int load_line(char *line, unsigned lineno, void *userdata) {
        struct mnd_cartridge_store *s = userdata;
        unsigned long long session_id, t;
        char *id = line, *sess, *tm;

        sess = strchr(id, '\t');
        tm = sess ? strchr(sess + 1, '\t') : NULL;
        if (!tm)
                goto bad;
        *sess++ = '\0';
        *tm++ = '\0';
        if (!mnd_cartridge_id_is_valid(id) || mnd_parse_u64(sess, UINT64_MAX, &session_id) < 0 ||
            mnd_parse_u64(tm, UINT64_MAX, &t) < 0)
                goto bad;
        if (mnd_cartridge_store_find(s, id))
                return 0;
        return add_use(s, id, session_id, t);

bad:
        log_warning("%s:%u: ignoring a malformed line.", s->path, lineno);
        return 0;
}

int mnd_cartridge_store_open(const char *directory, struct mnd_cartridge_store **ret) {
        _cleanup_(mnd_cartridge_store_freep) struct mnd_cartridge_store *s = NULL;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->fd = -1;
        if (asprintf(&s->path, "%s/cartridges", directory) < 0) {
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

const struct mnd_cartridge_use *mnd_cartridge_store_find(const struct mnd_cartridge_store *s, const char *id) {
        if (!s || !id)
                return NULL;
        for (unsigned i = 0; i < s->n; i++)
                if (streq(s->uses[i].id, id))
                        return &s->uses[i];
        return NULL;
}

int mnd_cartridge_store_record(struct mnd_cartridge_store *s, const char *id, uint64_t session_id,
                               uint64_t time_usec) {
        char line[MND_CARTRIDGE_ID_MAX + 64];
        int n, r;

        if (!mnd_cartridge_id_is_valid(id))
                return -EINVAL;
        if (mnd_cartridge_store_find(s, id))
                return -EEXIST;

        n = snprintf(line, sizeof(line), "%s\t%" PRIu64 "\t%" PRIu64 "\n", id, session_id, time_usec);
        if (n < 0 || (size_t) n >= sizeof(line))
                return -EINVAL;

        /* Room in memory first, so that nothing can fail after the line is on disk. */
        r = add_use(s, id, session_id, time_usec);
        if (r < 0)
                return r;

        r = mnd_journal_append(s->fd, line, (size_t) n);
        if (r < 0) {
                /* Not recorded: forget it in memory too (the start will be refused). */
                s->n--;
                return r;
        }
        return 0;
}

uint64_t mnd_cartridge_store_max_session(const struct mnd_cartridge_store *s) {
        return s ? s->max_session : 0;
}

unsigned mnd_cartridge_store_count(const struct mnd_cartridge_store *s) {
        return s ? s->n : 0;
}
