/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The audit commands: audit list, audit show, audit export, audit verify. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "commands.h"
#include "units.h"

/* hash(0) of the chain: SHA-256("org.microneedle.Mnd1.Audit genesis v1"), see daemon/audit-log.h. */
#define AUDIT_GENESIS_HASH "f3e12237720b141decdb2347a72fa10bd25a094a3ce6d88f0314b871f5f538d2"

/* Verify recomputes the whole chain: give it longer than the default 25 s on a large log. */
#define AUDIT_VERIFY_TIMEOUT_USEC (10 * 60 * UINT64_C(1000000))

/* The longest value the table's summary column shows ("audit show" shows it whole). */
#define SUMMARY_VALUE_MAX 60

struct audit_head {
        uint64_t count;
        char *head_hash;
};

static const struct mnctl_prop audit_head_props[] = {
        { "Count",    "t", offsetof(struct audit_head, count) },
        { "HeadHash", "s", offsetof(struct audit_head, head_hash) },
        {}
};

static void audit_head_clear(struct audit_head *h) {
        mnctl_props_free(audit_head_props, h);
}

static int load_head(struct mnctl *c, struct audit_head *ret) {
        *ret = (struct audit_head) {};
        return mnctl_get_all(c, MND_AUDIT_PATH, MND_AUDIT_IFACE, audit_head_props, ret);
}

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000) + (uint64_t) ts.tv_nsec / 1000;
}

static int parse_number(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (isempty(s))
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t) (*p - '0');
        }
        *ret = v;
        return 0;
}

static int query_page(struct mnctl *c, const struct mnctl_audit_filter *f,
                      struct mnctl_audit_event **ret_events, size_t *ret_n);

/*
 * --pen.  Serials are case-sensitive, and the log holds pens that are no
 * longer connected, so the argument is taken exactly as given when an event
 * in the log has that pen, or when it is a connected pen's complete serial.
 * Only otherwise is it a prefix of a connected pen's serial (case-sensitive):
 * one match is taken (and said on stderr), several are a usage error, none
 * leaves the argument as given (it then matches nothing).
 */
static int resolve_pen(struct mnctl *c, const char *arg, char **ret) {
        _cleanup_(strv_freep) char **serials = NULL;
        struct mnctl_audit_filter probe = { .pen = arg, .limit = 1 };
        struct mnctl_audit_event *events = NULL;
        const char *take = arg;
        size_t i, n = 0;
        int r;

        r = query_page(c, &probe, &events, &n);
        if (r < 0)
                return r;
        mnctl_audit_events_free(events, n);

        if (n == 0) {
                r = mnctl_list_pens(c, NULL, &serials);
                if (r < 0)
                        return r;
                r = mnctl_pen_resolve_full((const char *const *) serials, arg, false, &i);
                if (r == -ENOTUNIQ) {
                        _cleanup_(freep) char *message =
                                mnctl_pen_resolve_message_full(r, arg, (const char *const *) serials, false);

                        return mnctl_fail(c, r, MNCTL_EXIT_USAGE, MNCTL_ERROR_AMBIGUOUS_PEN, "--pen %s",
                                          message ?: "matches more than one pen");
                }
                if (r >= 0 && !streq(serials[i], arg)) {
                        char e1[128], e2[128];

                        take = serials[i];
                        /* On stderr, so that stdout stays the events (JSON with --json). */
                        fprintf(stderr, "mnctl: --pen %s taken as %s, the connected pen whose serial starts with it "
                                "(no event in the log has pen '%s')\n",
                                mnctl_escape(arg, e1, sizeof(e1)), mnctl_escape(take, e2, sizeof(e2)), e1);
                }
        }

        *ret = strdup(take);
        if (!*ret)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        return 0;
}

/*
 * The filter options into f; *ret_pen holds the resolved --pen (f->pen
 * points to it).  Usage errors are found before the bus is touched.
 */
static int parse_filter(struct mnctl *c, const struct mnctl_args *a, struct mnctl_audit_filter *f, char **ret_pen) {
        char reason[MNCTL_REASON_MAX];
        uint64_t now = now_usec();
        int r;

        *f = (struct mnctl_audit_filter) {};
        if (a->set[OPT_SINCE]) {
                if (mnctl_parse_time(a->value[OPT_SINCE], now, false, &f->since, reason, sizeof(reason)) < 0)
                        return mnctl_usage(c, "--since: %s", reason);
                f->has_since = true;
        }
        if (a->set[OPT_UNTIL]) {
                if (mnctl_parse_time(a->value[OPT_UNTIL], now, true, &f->until, reason, sizeof(reason)) < 0)
                        return mnctl_usage(c, "--until: %s", reason);
                f->has_until = true;
        }
        if (f->has_since && f->has_until && f->until < f->since) {
                char t1[64], t2[64];

                return mnctl_usage(c, "--until %s (%s) is before --since %s (%s)",
                                   a->value[OPT_UNTIL], mnctl_format_time(f->until, false, false, t1, sizeof(t1)),
                                   a->value[OPT_SINCE], mnctl_format_time(f->since, false, false, t2, sizeof(t2)));
        }
        if (a->set[OPT_SESSION]) {
                r = parse_number(a->value[OPT_SESSION], &f->session);
                if (r < 0 || f->session == 0)
                        return mnctl_usage(c, "--session '%s' is not a session number: sessions are numbered 1, 2, 3 ...",
                                           a->value[OPT_SESSION]);
        }
        if (a->set[OPT_CARTRIDGE]) {
                if (isempty(a->value[OPT_CARTRIDGE]))
                        return mnctl_usage(c, "--cartridge needs a cartridge id");
                f->cartridge = a->value[OPT_CARTRIDGE];
        }
        if (a->set[OPT_KIND]) {
                if (!mnctl_audit_kind_valid(a->value[OPT_KIND]))
                        return mnctl_usage(c, "--kind '%s' is not an event kind: kinds are lower-case words such as "
                                           "session-start, session-end, refusal or fault (see mnctl(1))",
                                           a->value[OPT_KIND]);
                f->kind = a->value[OPT_KIND];
        }
        if (a->set[OPT_PEN] && isempty(a->value[OPT_PEN]))
                return mnctl_usage(c, "--pen needs a serial number (or a unique prefix of a connected pen's)");

        /* Everything else is checked: now the bus. */
        if (a->set[OPT_PEN]) {
                r = resolve_pen(c, a->value[OPT_PEN], ret_pen);
                if (r < 0)
                        return r;
                f->pen = *ret_pen;
        }
        return 0;
}

/* One page of Query: the events after f->after_seq. */
static int query_page(struct mnctl *c, const struct mnctl_audit_filter *f,
                      struct mnctl_audit_event **ret_events, size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus;
        int r;

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, MND_BUS_NAME, MND_AUDIT_PATH, MND_AUDIT_IFACE, "Query");
        if (r >= 0)
                r = mnctl_audit_filter_append(m, f);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot build the Query call: %s",
                                  strerror(-r));
        r = sd_bus_call(bus, m, 0, &error, &reply);
        if (r < 0)
                return mnctl_fail_bus(c, r, &error, "cannot read the audit log");
        r = mnctl_audit_events_read(reply, ret_events, ret_n);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "mnd's reply to Query is not understood: %s", strerror(-r));
        return 0;
}

typedef int (*event_fn)(struct mnctl *c, const struct mnctl_audit_event *e, void *userdata);

/*
 * Every event that matches f, a page of at most 1000 at a time (after_seq
 * and limit), handed to fn in seq order; only one page is held at a time.
 * begin (optional) is called once the first page is in, before any event
 * is handed on: once the daemon has let the caller read the log.
 * max_seq > 0: stop after that seq (an export of what the log held when it
 * began).  *ret_n: how many fn was given.
 */
static int query_all(struct mnctl *c, const struct mnctl_audit_filter *filter, uint64_t max_seq,
                     int (*begin)(struct mnctl *c, void *userdata), event_fn fn, void *userdata,
                     uint64_t *ret_n) {
        struct mnctl_audit_filter f = *filter;
        uint64_t n = 0;
        bool done = false;
        int r = 0;

        f.limit = MNCTL_AUDIT_PAGE;
        while (!done) {
                struct mnctl_audit_event *events = NULL;
                size_t n_events = 0;

                r = query_page(c, &f, &events, &n_events);
                if (r < 0)
                        return r;
                if (begin) {
                        r = begin(c, userdata);
                        begin = NULL;
                        if (r < 0) {
                                mnctl_audit_events_free(events, n_events);
                                return r;
                        }
                }
                /* Only an empty page ends it: a daemon may send fewer than asked for. */
                done = n_events == 0;
                for (size_t i = 0; r >= 0 && i < n_events; i++) {
                        const struct mnctl_audit_event *e = &events[i];

                        if (e->seq <= f.after_seq) {
                                r = mnctl_fail(c, -EBADMSG, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                               "mnd sent audit event %" PRIu64 " after %" PRIu64
                                               ": events must come in ascending order", e->seq, f.after_seq);
                                break;
                        }
                        f.after_seq = e->seq;
                        if (max_seq > 0 && e->seq > max_seq) {
                                done = true;
                                break;
                        }
                        r = fn(c, e, userdata);
                        if (r < 0)
                                break;
                        n++;
                        if (max_seq > 0 && e->seq == max_seq)
                                done = true;
                }
                mnctl_audit_events_free(events, n_events);
                if (r < 0)
                        return r;
        }
        if (ret_n)
                *ret_n = n;
        return 0;
}

/* ---- audit list ---- */

static const char *kind_color(const char *kind) {
        if (!kind)
                return "";
        if (streq(kind, "refusal") || streq(kind, "fault") || streq(kind, "auth-failure") ||
            streq(kind, "lease-expired"))
                return ANSI_RED;
        if (streq(kind, "session-start") || streq(kind, "session-end"))
                return ANSI_GREEN;
        return "";
}

struct list_state {
        struct table *table;
        struct json json;
        bool utc;
};

static int list_row(struct mnctl *c, const struct mnctl_audit_event *e, void *userdata) {
        struct list_state *s = userdata;
        _cleanup_(freep) char *summary = NULL;
        char seq[24], session[24] = "-", t[64];
        const char *kind = mnctl_audit_event_string(e, "kind");
        uint64_t v;
        int r;

        if (c->json) {
                mnctl_audit_event_json(&s->json, e);
                return 0;
        }

        summary = mnctl_audit_summary(e, SUMMARY_VALUE_MAX);
        if (!summary)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        snprintf(seq, sizeof(seq), "%" PRIu64, e->seq);
        if (mnctl_audit_event_uint(e, "session", &v) && v > 0)
                snprintf(session, sizeof(session), "%" PRIu64, v);
        r = table_add_row(s->table, (const char *const[]) {
                seq, mnctl_format_time(e->time, s->utc, false, t, sizeof(t)), kind ?: "?",
                mnctl_audit_event_string(e, "pen") ?: "-", session, summary });
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        table_set_color(s->table, 2, kind_color(kind));
        return 0;
}

int cmd_audit_list(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(freep) char *pen = NULL, *buf = NULL;
        _cleanup_(table_freep) struct table *t = NULL;
        struct mnctl_audit_filter f;
        struct list_state s = { .utc = a->set[OPT_UTC] };
        size_t size = 0;
        uint64_t n;
        FILE *m = NULL;
        int r;

        r = parse_filter(c, a, &f, &pen);
        if (r < 0)
                return r;

        if (c->json) {
                /* Collected first, so that stdout carries one document: the events, or the error. */
                m = open_memstream(&buf, &size);
                if (!m)
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                json_init(&s.json, m, true);
                json_object_begin(&s.json);
                json_key(&s.json, "events");
                json_array_begin(&s.json);
        } else {
                s.table = t = table_new((const char *const[]) {
                        "SEQ", a->set[OPT_UTC] ? "TIME (UTC)" : "TIME", "KIND", "PEN", "SESSION", "DETAILS", NULL });
                if (!t)
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        }

        r = query_all(c, &f, 0, NULL, list_row, &s, &n);
        if (c->json) {
                json_array_end(&s.json);
                json_object_end(&s.json);
                json_finish(&s.json);
                if (fclose(m) < 0 && r >= 0)
                        r = mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                if (r < 0)
                        return r;
                fwrite(buf, 1, size, stdout);
                return 0;
        }
        if (r < 0)
                return r;

        if (n == 0)
                printf("No audit events match.\n");
        else
                table_print(t, stdout, c->color);
        return 0;
}

/* ---- audit show ---- */

static const char *field_label(const char *key) {
        static const struct {
                const char *key, *label;
        } labels[] = {
                { "seq", "Seq" }, { "time", "Time" }, { "kind", "Kind" }, { "pen", "Pen" },
                { "session", "Session" }, { "cartridge", "Cartridge" }, { "area", "Area" },
                { "depth_um", "Depth" }, { "speed_hz", "Speed" }, { "duration_s", "Duration" },
                { "operator", "Operator" }, { "patient_ref", "Patient ref" }, { "uid", "UID" },
                { "user", "User" }, { "sender", "Sender" }, { "message", "Message" },
                { "details", "Details" }, { "hash", "Hash" }, { "prev_hash", "Previous hash" },
        };

        for (size_t i = 0; i < ELEMENTSOF(labels); i++)
                if (streq(labels[i].key, key))
                        return labels[i].label;
        return NULL;
}

#define LABEL_WIDTH 15

/*
 * "Label:" and the value; a value of several lines goes on under the first, indented.  The value
 * is what the log holds, escaped for the terminal (line breaks kept, every other control shown).
 */
static void show_line(const char *label, const char *value) {
        _cleanup_(freep) char *text = mnctl_text_dup(value, true);
        char l[64];

        snprintf(l, sizeof(l), "%s%s", label, isempty(label) ? "" : ":");
        printf("%-*s", LABEL_WIDTH, l);
        if (!text) {
                puts("(out of memory)");
                return;
        }
        for (const char *p = text; *p; p++) {
                putchar(*p);
                if (*p == '\n' && p[1])
                        printf("%-*s", LABEL_WIDTH, "");
        }
        putchar('\n');
}

static int show_field(struct mnctl *c, const struct mnctl_field *f, bool utc) {
        _cleanup_(freep) char *text = NULL;
        const char *label = field_label(f->key);
        char buf[128], t1[64], t2[64];

        if (f->type == FIELD_UNSIGNED && streq(f->key, "time")) {
                snprintf(buf, sizeof(buf), "%s (%" PRIu64 " us since 1970)",
                         mnctl_format_time(f->num, utc, true, t1, sizeof(t1)), f->num);
                show_line("Time", buf);
                /* The same instant in UTC, unless local time is UTC anyway. */
                if (!utc && !streq(t1, mnctl_format_time(f->num, true, true, t2, sizeof(t2))))
                        show_line("Time (UTC)", t2);
                return 0;
        }
        if (f->type == FIELD_UNSIGNED && f->num <= UINT32_MAX && streq(f->key, "depth_um")) {
                snprintf(buf, sizeof(buf), "%s (%" PRIu64 " um)", mnp_format_depth((uint32_t) f->num, t1, sizeof(t1)), f->num);
                show_line(label, buf);
                return 0;
        }
        if (f->type == FIELD_UNSIGNED && streq(f->key, "speed_hz")) {
                snprintf(buf, sizeof(buf), "%" PRIu64 " Hz", f->num);
                show_line(label, buf);
                return 0;
        }
        if (f->type == FIELD_UNSIGNED && f->num <= UINT32_MAX && streq(f->key, "duration_s")) {
                snprintf(buf, sizeof(buf), "%s (%" PRIu64 " s)", mnctl_format_duration(f->num, t1, sizeof(t1)), f->num);
                show_line(label, buf);
                return 0;
        }
        if (f->type == FIELD_PAIRS) {
                if (!f->strv || !f->strv[0])
                        return 0;
                for (size_t i = 0; f->strv[i] && f->strv[i + 1]; i += 2) {
                        _cleanup_(freep) char *line = NULL;

                        if (asprintf(&line, "%s=%s", f->strv[i], f->strv[i + 1]) < 0)
                                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                        show_line(i == 0 ? label ?: f->key : "", line);
                }
                return 0;
        }
        text = mnctl_field_text(f);
        if (!text)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        show_line(label ?: f->key, text);
        return 0;
}

int cmd_audit_show(struct mnctl *c, const struct mnctl_args *a) {
        struct mnctl_audit_event *events = NULL;
        const struct mnctl_audit_event *e = NULL;
        const char *prev_hash = NULL;
        struct mnctl_audit_filter f = {};
        size_t n = 0;
        uint64_t seq;
        int r;

        if (parse_number(a->pos[0], &seq) < 0 || seq == 0)
                return mnctl_usage(c, "'%s' is not an event number: events are numbered 1, 2, 3 ... "
                                   "(see 'mnctl audit list')", a->pos[0]);

        /* The event and the one before it, whose hash it chains on. */
        f.after_seq = seq > 1 ? seq - 2 : 0;
        f.limit = 2;
        r = query_page(c, &f, &events, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (events[i].seq == seq)
                        e = &events[i];
                else if (events[i].seq == seq - 1)
                        prev_hash = mnctl_audit_event_string(&events[i], "hash");
        if (seq == 1)
                prev_hash = AUDIT_GENESIS_HASH;
        if (e && mnctl_audit_event_string(e, "prev_hash"))
                prev_hash = NULL;       /* the daemon says it itself */

        if (!e) {
                struct audit_head h = {};

                mnctl_audit_events_free(events, n);
                r = load_head(c, &h);
                if (r < 0)
                        return r;
                r = mnctl_fail(c, -ENOENT, MNCTL_EXIT_NO_PEN, MNCTL_ERROR_NO_SUCH_EVENT,
                               h.count == 0 ? "there is no audit event %" PRIu64 ": the audit log is empty" :
                                              "there is no audit event %" PRIu64 ": the audit log has events 1 to %" PRIu64,
                               seq, h.count);
                audit_head_clear(&h);
                return r;
        }

        r = 0;
        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_key(&j, "event");
                mnctl_audit_event_json(&j, e);
                if (!mnctl_audit_event_string(e, "prev_hash"))
                        json_kv_string(&j, "previous_hash", prev_hash);
                json_object_end(&j);
                json_finish(&j);
        } else {
                for (size_t i = 0; r >= 0 && i < e->n_fields; i++) {
                        r = show_field(c, &e->fields[i], a->set[OPT_UTC]);
                        if (r >= 0 && streq(e->fields[i].key, "hash") && prev_hash)
                                show_line("Previous hash", prev_hash);
                }
        }
        mnctl_audit_events_free(events, n);
        return r;
}

/* ---- audit export ---- */

struct export_state {
        const char *path;       /* NULL: standard output, through buf */
        char *tmp;
        FILE *f;
        char *buf;              /* standard output's export, written there once complete */
        size_t buf_size;
        bool json;
        uint64_t n;
};

static int open_output(struct mnctl *c, const char *path, FILE **ret, char **ret_tmp);

/* Once the daemon answered: the output is opened (so that a refusal leaves no file) and begun. */
static int export_begin(struct mnctl *c, void *userdata) {
        struct export_state *s = userdata;
        int r;

        if (!s->path) {
                /*
                 * Standard output gets the export whole or not at all: one JSON document (or a
                 * complete CSV), never a part of one followed by an error.  So it is collected
                 * here first (--output writes a file as it goes instead).
                 */
                s->f = open_memstream(&s->buf, &s->buf_size);
                if (!s->f)
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        } else {
                r = open_output(c, s->path, &s->f, &s->tmp);
                if (r < 0)
                        return r;
        }
        if (s->json)
                fputc('[', s->f);
        else
                mnctl_audit_csv_header(s->f);
        return 0;
}

static int export_row(struct mnctl *c, const struct mnctl_audit_event *e, void *userdata) {
        struct export_state *s = userdata;

        if (s->json) {
                struct json j;

                fputs(s->n == 0 ? "\n" : ",\n", s->f);
                json_init(&j, s->f, false);
                mnctl_audit_event_json(&j, e);
        } else if (mnctl_audit_csv_row(s->f, e) < 0)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        s->n++;
        if (ferror(s->f))
                return mnctl_fail(c, -EIO, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write the export: %m");
        return 0;
}

/*
 * Where the export goes: standard output (NULL or "-"), a device or pipe
 * as it is, or a regular file through a temporary one beside it (0600: the
 * log holds personal data), renamed over it only once the export is
 * complete, so that a failed export never leaves a file that looks whole.
 */
static int open_output(struct mnctl *c, const char *path, FILE **ret, char **ret_tmp) {
        _cleanup_(freep) char *tmp = NULL;
        struct stat st;
        int fd;

        *ret_tmp = NULL;
        if (!path || streq(path, "-")) {
                *ret = stdout;
                return 0;
        }
        if (stat(path, &st) >= 0 && !S_ISREG(st.st_mode)) {
                if (S_ISDIR(st.st_mode))
                        return mnctl_usage(c, "--output '%s' is a directory: give a file name", path);
                *ret = fopen(path, "we");
                if (!*ret)
                        return mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot open '%s': %m", path);
                return 0;
        }
        if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "cannot create a file beside '%s': %m", path);
        *ret = fdopen(fd, "w");
        if (!*ret) {
                int e = errno;

                close(fd);
                unlink(tmp);
                errno = e;
                return mnctl_fail(c, -e, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write '%s': %m", tmp);
        }
        *ret_tmp = TAKE_PTR(tmp);
        return 0;
}

/* Ends the export collected for standard output: written there only if it is complete (r >= 0). */
static int close_buffered(struct mnctl *c, struct export_state *s, int r) {
        if (fclose(s->f) != 0 && r >= 0)
                r = mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        s->f = NULL;
        if (r >= 0 && (fwrite(s->buf, 1, s->buf_size, stdout) != s->buf_size || fflush(stdout) != 0))
                r = mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write the export: %m");
        s->buf = mfree(s->buf);
        return r;
}

/* Flushes and closes the output; a temporary file is synced and renamed into place, or removed on failure. */
static int close_output(struct mnctl *c, FILE *f, const char *path, char *tmp, int r) {
        if (f == stdout) {
                if (fflush(stdout) != 0 && r >= 0)
                        r = mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write the export: %m");
                return r;
        }
        if (r >= 0 && (fflush(f) != 0 || ferror(f)))
                r = mnctl_fail(c, -EIO, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write '%s': %m", tmp ?: path);
        if (r >= 0 && tmp && fsync(fileno(f)) < 0)
                r = mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write '%s': %m", tmp);
        if (fclose(f) != 0 && r >= 0)
                r = mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write '%s': %m", tmp ?: path);
        if (tmp) {
                if (r >= 0 && rename(tmp, path) < 0)
                        r = mnctl_fail(c, -errno, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                       "cannot rename '%s' to '%s': %m", tmp, path);
                if (r < 0)
                        (void) unlink(tmp);
        }
        return r;
}

int cmd_audit_export(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(freep) char *pen = NULL;
        const char *format = a->value[OPT_FORMAT], *output = a->value[OPT_OUTPUT];
        bool to_stdout = !a->set[OPT_OUTPUT] || streq(output, "-");
        struct mnctl_audit_filter f;
        struct export_state s = {};
        struct audit_head h = {};
        int r;

        if (!a->set[OPT_FORMAT])
                /* With --json on standard output, only JSON may go there. */
                format = c->json && to_stdout ? "json" : "csv";
        if (!streq(format, "csv") && !streq(format, "json"))
                return mnctl_usage(c, "--format '%s' is not known: use csv or json", format);
        s.json = streq(format, "json");
        if (c->json && to_stdout && !s.json)
                return mnctl_usage(c, "--json keeps standard output for JSON: give --output FILE for CSV, or --format json");
        if (a->set[OPT_OUTPUT] && isempty(output))
                return mnctl_usage(c, "--output needs a file name (or - for standard output)");

        r = parse_filter(c, a, &f, &pen);
        if (r < 0)
                return r;

        /* What the log holds now: the export stops there, however much is appended meanwhile. */
        r = load_head(c, &h);
        if (r < 0)
                return r;

        s.path = to_stdout ? NULL : output;
        if (h.count > 0)
                r = query_all(c, &f, h.count, export_begin, export_row, &s, NULL);
        else
                r = export_begin(c, &s);
        if (s.f) {
                if (r >= 0)
                        fputs(s.json ? (s.n > 0 ? "\n]\n" : "]\n") : "", s.f);
                r = to_stdout ? close_buffered(c, &s, r) : close_output(c, s.f, output, s.tmp, r);
        }
        free(s.tmp);
        if (r < 0)
                goto finish;

        if (to_stdout)
                goto finish;
        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_kv_uint(&j, "exported", s.n);
                json_kv_string(&j, "format", format);
                json_kv_string(&j, "output", output);
                json_kv_uint(&j, "count", h.count);
                json_kv_string(&j, "head_hash", h.head_hash);
                json_object_end(&j);
                json_finish(&j);
        } else {
                _cleanup_(freep) char *shown = mnctl_text_dup(output, false), *hash = mnctl_text_dup(h.head_hash, false);

                printf("Exported %" PRIu64 " audit event%s to %s (%s).\n"
                       "The log held %" PRIu64 " event%s; head hash %s\n",
                       s.n, s.n == 1 ? "" : "s", strempty(shown), s.json ? "JSON" : "CSV",
                       h.count, h.count == 1 ? "" : "s", strempty(hash));
        }
finish:
        audit_head_clear(&h);
        return r;
}

/* ---- audit verify ---- */

struct verify_result {
        bool ok;
        uint64_t count, first_bad_seq;
        char head_hash[2 * 64 + 1];     /* a copy: the error is reported after the reply is gone */
};

static void verify_json_members(struct json *j, const struct verify_result *v) {
        json_kv_bool(j, "ok", v->ok);
        json_kv_uint(j, "count", v->count);
        json_key(j, "first_bad_seq");
        if (v->ok)
                json_null(j);
        else
                json_uint(j, v->first_bad_seq);
        json_kv_string(j, "head_hash", v->head_hash);
}

static void verify_json_error_members(struct json *j, const void *userdata) {
        verify_json_members(j, userdata);
}

int cmd_audit_verify(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        static struct verify_result v;
        const char *head;
        sd_bus *bus;
        int ok, r;

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, MND_BUS_NAME, MND_AUDIT_PATH, MND_AUDIT_IFACE, "Verify");
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot build the Verify call: %s",
                                  strerror(-r));
        r = sd_bus_call(bus, m, AUDIT_VERIFY_TIMEOUT_USEC, &error, &reply);
        if (r < 0)
                return mnctl_fail_bus(c, r, &error, "cannot verify the audit log");
        r = sd_bus_message_read(reply, "btts", &ok, &v.count, &v.first_bad_seq, &head);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "mnd's reply to Verify is not understood: %s", strerror(-r));
        v.ok = ok;
        snprintf(v.head_hash, sizeof(v.head_hash), "%s", head);

        if (!v.ok) {
                /* The result, then the error: on stdout as text, in the error object with --json. */
                if (!c->json) {
                        printf("%-15s %s%s%s\n", "Result:", c->color ? ANSI_RED : "", "BROKEN", c->color ? ANSI_NORMAL : "");
                        printf("%-15s %" PRIu64 "\n", "First bad seq:", v.first_bad_seq);
                        printf("%-15s %" PRIu64 "\n", "Events:", v.count);
                        printf("%-15s ", "Head hash:");
                        mnctl_fputs_text(stdout, v.head_hash, false);
                        putchar('\n');
                }
                c->json_error_members = verify_json_error_members;
                c->json_error_userdata = &v;
                return mnctl_fail(c, -EBADMSG, MNCTL_EXIT_AUDIT_BROKEN, MNCTL_ERROR_AUDIT_BROKEN,
                                  "the audit log's hash chain is broken at event %" PRIu64
                                  ": that event is missing, out of place or was altered (%" PRIu64
                                  " events checked); keep the log as it is and see mnctl(1)",
                                  v.first_bad_seq, v.count);
        }

        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                verify_json_members(&j, &v);
                json_object_end(&j);
                json_finish(&j);
                return 0;
        }
        printf("%-15s %s%s%s\n", "Result:", c->color ? ANSI_GREEN : "", "ok", c->color ? ANSI_NORMAL : "");
        printf("%-15s %" PRIu64 "\n", "Events:", v.count);
        printf("%-15s ", "Head hash:");
        mnctl_fputs_text(stdout, v.head_hash, false);
        putchar('\n');
        return 0;
}
