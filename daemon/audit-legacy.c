/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit-events.h"
#include "audit-legacy.h"
#include "util.h"

struct legacy_session {
        uint64_t id;
        bool begun, ended;
        uint64_t started_at, ended_at, elapsed_ms, cartridge_time;
        uint32_t planned_s;
        char serial[MND_AUDIT_ID_MAX + 1];
        char area[MND_AUDIT_ID_MAX + 1];
        char cartridge[MND_AUDIT_ID_MAX + 1];
        char state[32];
        char reason[64];
};

struct legacy {
        struct legacy_session *s;
        size_t n, allocated;
        unsigned skipped;
};

static int parse_u64(const char *p, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (!p || !*p)
                return -EINVAL;
        for (; *p; p++) {
                unsigned d;

                if (*p < '0' || *p > '9')
                        return -EINVAL;
                d = (unsigned) (*p - '0');
                if (v > (max - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

static struct legacy_session *get_session(struct legacy *l, uint64_t id) {
        for (size_t i = 0; i < l->n; i++)
                if (l->s[i].id == id)
                        return &l->s[i];
        if (l->n == l->allocated) {
                size_t a = l->allocated ? l->allocated * 2 : 64;
                struct legacy_session *p = reallocarray(l->s, a, sizeof(*p));

                if (!p)
                        return NULL;
                l->s = p;
                l->allocated = a;
        }
        l->s[l->n] = (struct legacy_session) { .id = id };
        return &l->s[l->n++];
}

/* Splits at tabs; the number of fields (n + 1 when there are more than n). */
static unsigned split(char *line, char **f, unsigned n) {
        unsigned k = 0;

        while (k < n) {
                f[k++] = line;
                line = strchr(line, '\t');
                if (!line)
                        return k;
                *line++ = '\0';
        }
        return n + 1;
}

static bool copy_field(char *dst, size_t size, const char *src) {
        return !isempty(src) && strcpy_bounded(dst, size, src) >= 0;
}

static int cartridge_line(struct legacy *l, char *line) {
        struct legacy_session *s;
        uint64_t id, t;
        char *f[3];

        if (split(line, f, 3) != 3 || !mnd_cartridge_id_is_valid(f[0]) || parse_u64(f[1], UINT64_MAX, &id) < 0 ||
            id == 0 || parse_u64(f[2], INT64_MAX, &t) < 0) {
                l->skipped++;
                return 0;
        }
        s = get_session(l, id);
        if (!s)
                return -ENOMEM;
        if (isempty(s->cartridge))
                strcpy_bounded(s->cartridge, sizeof(s->cartridge), f[0]);
        if (!s->cartridge_time)
                s->cartridge_time = t;
        return 0;
}

static int session_line(struct legacy *l, char *line) {
        struct legacy_session *s;
        uint64_t id, t, v;
        char *f[7];
        unsigned n;

        n = split(line, f, 7);
        if (n < 2 || parse_u64(f[1], UINT64_MAX, &id) < 0 || id == 0)
                goto bad;
        if (streq(f[0], "B") && n == 7) {
                struct legacy_session b = {};

                if (parse_u64(f[2], INT64_MAX, &t) < 0 || parse_u64(f[3], UINT32_MAX - 1, &v) < 0 ||
                    !copy_field(b.serial, sizeof(b.serial), f[4]) || !copy_field(b.area, sizeof(b.area), f[5]) ||
                    !mnd_cartridge_id_is_valid(f[6]))
                        goto bad;
                s = get_session(l, id);
                if (!s)
                        return -ENOMEM;
                s->begun = true;
                s->started_at = t;
                s->planned_s = (uint32_t) v;
                memcpy(s->serial, b.serial, sizeof(s->serial));
                memcpy(s->area, b.area, sizeof(s->area));
                strcpy_bounded(s->cartridge, sizeof(s->cartridge), f[6]);
                return 0;
        }
        if (streq(f[0], "E") && n == 6) {
                struct legacy_session e = {};
                uint64_t ms;

                if (parse_u64(f[2], INT64_MAX, &t) < 0 || parse_u64(f[3], INT64_MAX, &ms) < 0 ||
                    !copy_field(e.state, sizeof(e.state), f[4]) || !copy_field(e.reason, sizeof(e.reason), f[5]))
                        goto bad;
                s = get_session(l, id);
                if (!s)
                        return -ENOMEM;
                s->ended = true;
                s->ended_at = t;
                s->elapsed_ms = ms;
                memcpy(s->state, e.state, sizeof(s->state));
                memcpy(s->reason, e.reason, sizeof(s->reason));
                return 0;
        }
bad:
        l->skipped++;
        return 0;
}

/* Reads every complete line (a torn last line, without LF, is skipped); 0 if the file is missing. */
static int load(const char *path, struct legacy *l, int (*fn)(struct legacy *l, char *line), bool *found) {
        _cleanup_(fclosep) FILE *f = NULL;
        _cleanup_(freep) char *line = NULL;
        size_t size = 0;
        ssize_t k;
        int r;

        f = fopen(path, "re");
        if (!f)
                return errno == ENOENT ? 0 : -errno;
        *found = true;
        errno = 0;
        while ((k = getline(&line, &size, f)) > 0) {
                if (line[k - 1] != '\n' || strlen(line) != (size_t) k) {
                        l->skipped++;
                        continue;
                }
                line[k - 1] = '\0';
                r = fn(l, line);
                if (r < 0)
                        return r;
        }
        if (ferror(f))
                return errno > 0 ? -errno : -EIO;
        return 0;
}

static int cmp_session(const void *a, const void *b) {
        const struct legacy_session *x = a, *y = b;

        return x->id < y->id ? -1 : x->id > y->id;
}

static int already_imported(struct mnd_audit *a) {
        struct mnd_audit_record *recs = NULL;
        size_t n = 0;
        int r;

        r = mnd_audit_query(a, &(struct mnd_audit_filter) { .kind = MND_AUDIT_LEGACY_IMPORT, .limit = 1 }, &recs,
                            &n);
        if (r < 0)
                return r;
        mnd_audit_records_free(recs, n);
        return n > 0;
}

static int rename_imported(const char *directory) {
        static const char *const files[] = { MND_LEGACY_CARTRIDGES_FILE, MND_LEGACY_SESSIONS_FILE };

        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_(freep) char *from = NULL, *to = NULL;

                if (asprintf(&from, "%s/%s", directory, files[i]) < 0 ||
                    asprintf(&to, "%s/%s" MND_LEGACY_IMPORTED_SUFFIX, directory, files[i]) < 0)
                        return -ENOMEM;
                if (rename(from, to) < 0 && errno != ENOENT)
                        return -errno;
        }
        return 0;
}

static int import_all(struct mnd_audit *a, struct legacy *l, struct mnd_legacy_import_result *res) {
        struct mnd_audit_event_buf b;
        uint8_t h[MND_AUDIT_HASH_SIZE];
        int r;

        for (size_t i = 0; i < l->n; i++) {
                const struct legacy_session *s = &l->s[i];
                struct mnd_audit_session_info info = {
                        .id = s->id,
                        .pen = s->serial,
                        .area = s->area,
                        .cartridge = s->cartridge,
                        .depth_um = MND_AUDIT_UNSET,
                        .speed_hz = MND_AUDIT_UNSET,
                        .planned_duration_s = s->begun ? s->planned_s : MND_AUDIT_UNSET,
                };

                mnd_audit_build_session_start(&b, &info, NULL);
                b.event.time_usec = s->begun ? s->started_at : s->cartridge_time;
                mnd_audit_build_detail(&b, "source", "legacy");
                mnd_audit_build_message(&b, "imported from the %s file%s", s->begun ? "sessions" : "cartridges",
                                        s->begun ? "" : " (the sessions file has no start for it)");
                if (mnd_audit_event_hash(NULL, 1, &b.event, h) < 0) {
                        /* A field the log does not accept (control characters ...): keep what single
                         * use and numbering need, the session and its cartridge. */
                        b.event.pen = b.event.area = NULL;
                        res->skipped++;
                }
                r = mnd_audit_append(a, &b.event, true, NULL, NULL);
                if (r < 0)
                        return r;
                res->sessions++;
                if (!s->ended)
                        continue;
                mnd_audit_build_session_end(&b, &info, s->state, s->reason, s->elapsed_ms);
                b.event.time_usec = s->ended_at;
                mnd_audit_build_detail(&b, "source", "legacy");
                if (mnd_audit_event_hash(NULL, 1, &b.event, h) < 0) {
                        b.event.pen = b.event.area = NULL;
                        b.event.message = "unknown";
                        b.event.n_details = 0;
                        res->skipped++;
                }
                r = mnd_audit_append(a, &b.event, true, NULL, NULL);
                if (r < 0)
                        return r;
                res->ended++;
        }
        mnd_audit_build(&b, MND_AUDIT_LEGACY_IMPORT);
        mnd_audit_build_detail(&b, "sessions", "%u", res->sessions);
        mnd_audit_build_detail(&b, "ended", "%u", res->ended);
        mnd_audit_build_detail(&b, "skipped_lines", "%u", res->skipped);
        mnd_audit_build_message(&b, "imported the legacy " MND_LEGACY_CARTRIDGES_FILE " and "
                                MND_LEGACY_SESSIONS_FILE " files");
        return mnd_audit_append(a, &b.event, true, NULL, NULL);
}

int mnd_audit_import_legacy(struct mnd_audit *a, const char *directory, struct mnd_legacy_import_result *ret) {
        _cleanup_(freep) char *cartridges = NULL, *sessions = NULL;
        struct mnd_legacy_import_result res = {};
        struct legacy l = {};
        int r;

        if (asprintf(&cartridges, "%s/" MND_LEGACY_CARTRIDGES_FILE, directory) < 0 ||
            asprintf(&sessions, "%s/" MND_LEGACY_SESSIONS_FILE, directory) < 0)
                return -ENOMEM;
        if (access(cartridges, F_OK) < 0 && access(sessions, F_OK) < 0) {
                if (ret)
                        *ret = res;
                return 0;
        }
        res.found = true;

        r = already_imported(a);
        if (r < 0)
                return r;
        if (r > 0)
                /* Imported before; the daemon died before it renamed the files. */
                goto rename;

        r = load(cartridges, &l, cartridge_line, &res.found);
        if (r >= 0)
                r = load(sessions, &l, session_line, &res.found);
        if (r < 0)
                goto finish;
        res.skipped = l.skipped;
        qsort(l.s, l.n, sizeof(*l.s), cmp_session);

        r = mnd_audit_batch_begin(a, true);
        if (r < 0)
                goto finish;
        r = import_all(a, &l, &res);
        if (r < 0) {
                (void) mnd_audit_batch_abort(a);
                goto finish;
        }
        r = mnd_audit_batch_commit(a);
        if (r < 0)
                goto finish;
rename:
        r = rename_imported(directory);
finish:
        free(l.s);
        if (r >= 0 && ret)
                *ret = res;
        return r < 0 ? r : 0;
}
