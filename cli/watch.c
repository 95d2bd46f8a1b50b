/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * watch, monitor and start --wait: following the daemon from its signals
 * (PropertiesChanged, PenAdded, PenRemoved, Fault), never by polling.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "units.h"

#define BAR_WIDTH 30
#define LINE_MAX_LEN 512
#define VIEW_LINES 4

/* ---- signals: Ctrl-C ends the wait without a race (blocked except inside ppoll) ---- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
        interrupted = sig;
}

static void interrupt_signals(sigset_t *ret) {
        sigemptyset(ret);
        sigaddset(ret, SIGINT);
        sigaddset(ret, SIGTERM);
}

void mnctl_signals_catch(struct mnctl_signals *s) {
        struct sigaction sa = { .sa_handler = on_signal };
        sigset_t block;

        interrupted = 0;
        interrupt_signals(&block);
        sigprocmask(SIG_BLOCK, &block, &s->old_mask);
        s->wait_mask = s->old_mask;
        sigdelset(&s->wait_mask, SIGINT);
        sigdelset(&s->wait_mask, SIGTERM);
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &s->old_int);
        sigaction(SIGTERM, &sa, &s->old_term);
}

bool mnctl_signals_interrupted(void) {
        sigset_t pending;

        if (interrupted)
                return true;
        if (sigpending(&pending) < 0)
                return false;
        return sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1;
}

void mnctl_signals_restore(struct mnctl_signals *s) {
        const struct timespec zero = {};
        sigset_t set;
        int sig;

        /* A signal still pending is taken here (and remembered), not delivered to the old handler. */
        interrupt_signals(&set);
        while ((sig = sigtimedwait(&set, NULL, &zero)) > 0)
                interrupted = sig;
        sigaction(SIGINT, &s->old_int, NULL);
        sigaction(SIGTERM, &s->old_term, NULL);
        sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
}

/* Waits until the bus has something for us or a signal comes (-EINTR). */
static int bus_wait(sd_bus *bus, const struct mnctl_signals *s) {
        struct timespec ts, *tsp = NULL;
        struct pollfd pfd;
        uint64_t until;
        int fd, events, r;

        fd = sd_bus_get_fd(bus);
        if (fd < 0)
                return fd;
        events = sd_bus_get_events(bus);
        if (events < 0)
                return events;
        r = sd_bus_get_timeout(bus, &until);
        if (r < 0)
                return r;
        if (until != UINT64_MAX) {
                struct timespec now;
                uint64_t n, d;

                clock_gettime(CLOCK_MONOTONIC, &now);
                n = (uint64_t) now.tv_sec * 1000000u + (uint64_t) now.tv_nsec / 1000u;
                d = until > n ? until - n : 0;
                ts = (struct timespec) { .tv_sec = (time_t) (d / 1000000u), .tv_nsec = (long) (d % 1000000u) * 1000 };
                tsp = &ts;
        }

        pfd = (struct pollfd) { .fd = fd, .events = (short) events };
        if (ppoll(&pfd, 1, tsp, &s->wait_mask) < 0)
                return -errno;
        return 0;
}

static uint64_t now_realtime_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

/* ---- the view ---- */

struct view {
        char line[VIEW_LINES][LINE_MAX_LEN];
        unsigned n;
};

static const char *paint(bool color, const char *k) {
        return color ? k : "";
}

/* The end reason when it says more than the state ("fault:motor" after "failed"), else NULL. */
static const char *end_reason_news(const struct mnctl_session *s) {
        if (isempty(s->end_reason) || streq_ptr(s->end_reason, s->state))
                return NULL;
        return s->end_reason;
}

/* The text fields the views show, escaped for the terminal (mnctl_escape_text). */
struct view_text {
        char serial[128], state[64], fault[128], area[64], session_state[64], reason[128];
};

static void view_text(const struct mnctl_pen *p, const struct mnctl_session *s, struct view_text *t) {
        mnctl_escape(p->serial, t->serial, sizeof(t->serial));
        mnctl_escape(p->state, t->state, sizeof(t->state));
        mnctl_escape(p->fault, t->fault, sizeof(t->fault));
        mnctl_escape(s ? s->area : NULL, t->area, sizeof(t->area));
        mnctl_escape(s ? s->state : NULL, t->session_state, sizeof(t->session_state));
        mnctl_escape(s ? end_reason_news(s) : NULL, t->reason, sizeof(t->reason));
}

static void build_view(const struct mnctl_pen *p, const struct mnctl_session *s, bool color, struct view *v) {
        char d1[16], d2[16], c1[32], c2[32], c3[32];
        struct view_text t;

        view_text(p, s, &t);
        v->n = 0;
        if (s) {
                const char *reason = end_reason_news(s) ? t.reason : NULL;
                uint64_t planned_ms = (uint64_t) s->planned_duration_s * 1000u;
                uint64_t used = planned_ms == 0 ? 0 : (s->elapsed_ms >= planned_ms ? 100 : s->elapsed_ms * 100 / planned_ms);
                uint64_t elapsed_s = s->elapsed_ms / 1000u;
                unsigned filled = (unsigned) (used * BAR_WIDTH / 100);
                char bar[BAR_WIDTH + 1];

                memset(bar, '#', filled);
                memset(bar + filled, '-', BAR_WIDTH - filled);
                bar[BAR_WIDTH] = '\0';

                snprintf(v->line[v->n++], LINE_MAX_LEN, "%s%s%s  session %" PRIu64 ", %s, %s%s%s%s%s%s",
                         paint(color, ANSI_BOLD), t.serial, paint(color, ANSI_NORMAL), s->id,
                         t.area, paint(color, mnctl_state_color(s->state)), t.session_state,
                         paint(color, ANSI_NORMAL), reason ? " (" : "", strempty(reason), reason ? ")" : "");
                snprintf(v->line[v->n++], LINE_MAX_LEN, "[%s%.*s%s%s] %3" PRIu64 "%%  %s of %s needled, %s left",
                         paint(color, ANSI_GREEN), (int) filled, bar, paint(color, ANSI_NORMAL), bar + filled, used,
                         mnctl_format_clock(elapsed_s, c1, sizeof(c1)),
                         mnctl_format_clock(s->planned_duration_s, c2, sizeof(c2)),
                         mnctl_format_clock(elapsed_s < s->planned_duration_s ? s->planned_duration_s - elapsed_s : 0,
                                            c3, sizeof(c3)));
        } else
                snprintf(v->line[v->n++], LINE_MAX_LEN, "%s%s%s  %s%s%s%s%s%s, no session running",
                         paint(color, ANSI_BOLD), t.serial, paint(color, ANSI_NORMAL),
                         paint(color, mnctl_state_color(p->state)), t.state, paint(color, ANSI_NORMAL),
                         isempty(p->fault) ? "" : " (", t.fault, isempty(p->fault) ? "" : ")");

        snprintf(v->line[v->n++], LINE_MAX_LEN, "Depth  %s set, %s measured",
                 mnp_format_depth(p->depth_um, d1, sizeof(d1)), mnp_format_depth(p->actual_depth_um, d2, sizeof(d2)));
        snprintf(v->line[v->n++], LINE_MAX_LEN, "Speed  %u Hz set, %u Hz measured", p->speed_hz, p->actual_speed_hz);
}

void mnctl_print_view(FILE *f, const struct mnctl_pen *p, const struct mnctl_session *s, bool color) {
        struct view v;

        build_view(p, s, color, &v);
        for (unsigned i = 0; i < v.n; i++)
                fprintf(f, "%s\n", v.line[i]);
}

/* The view in one line, for a pipe or a log. */
static void build_line(const struct mnctl_pen *p, const struct mnctl_session *s, char *buf, size_t size) {
        char d1[16], d2[16], c1[32], c2[32], c3[32];
        struct view_text t;
        int n = 0;

        view_text(p, s, &t);
        if (s) {
                uint64_t elapsed_s = s->elapsed_ms / 1000u;
                uint64_t planned_ms = (uint64_t) s->planned_duration_s * 1000u;

                n = snprintf(buf, size, "%s session %" PRIu64 " %s %s%s%s: %s of %s (%" PRIu64 "%%), %s left; ",
                             t.serial, s->id, t.area, t.session_state,
                             end_reason_news(s) ? " " : "", t.reason,
                             mnctl_format_clock(elapsed_s, c1, sizeof(c1)),
                             mnctl_format_clock(s->planned_duration_s, c2, sizeof(c2)),
                             planned_ms == 0 ? 0 : (s->elapsed_ms >= planned_ms ? 100 : s->elapsed_ms * 100 / planned_ms),
                             mnctl_format_clock(elapsed_s < s->planned_duration_s ? s->planned_duration_s - elapsed_s : 0,
                                                c3, sizeof(c3)));
        } else
                n = snprintf(buf, size, "%s %s%s%s, no session running; ", t.serial, t.state,
                             isempty(p->fault) ? "" : " fault ", t.fault);
        if (n < 0 || (size_t) n >= size)
                return;
        snprintf(buf + n, size - (size_t) n, "depth %s set, %s measured; speed %u Hz set, %u Hz measured",
                 mnp_format_depth(p->depth_um, d1, sizeof(d1)), mnp_format_depth(p->actual_depth_um, d2, sizeof(d2)),
                 p->speed_hz, p->actual_speed_hz);
}

/* ---- following a pen and its session ---- */

struct follow {
        struct mnctl *c;
        struct mnctl_pen pen;
        struct mnctl_session session;   /* path NULL: none yet */
        bool fixed_session;             /* following one given session (start --wait) */
        bool live, progress;
        bool dirty, done;
        int r;
        unsigned drawn;
        char last[LINE_MAX_LEN];
};

static bool session_ended(const struct mnctl_session *s) {
        return s->path && s->state && !streq(s->state, "running");
}

static void follow_stop(struct follow *f, int r) {
        f->done = true;
        if (r < 0 && f->r >= 0)
                f->r = r;
}

static int attach_session(struct follow *f, const char *path) {
        mnctl_session_clear(&f->session);
        return mnctl_load_session(f->c, path, &f->session);
}

static int on_pen_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct follow *f = userdata;
        const char *iface;
        int r;

        if (sd_bus_message_read(m, "s", &iface) < 0 || !streq(iface, MND_PEN_IFACE))
                return 0;
        r = mnctl_read_props(m, mnctl_pen_props, &f->pen);
        if (r < 0) {
                follow_stop(f, mnctl_fail(f->c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                          "cannot read a change of pen %s: %s", f->pen.serial, strerror(-r)));
                return 0;
        }
        f->dirty = true;

        if (!f->fixed_session && mnctl_pen_has_session(&f->pen) && !streq_ptr(f->session.path, f->pen.session)) {
                r = attach_session(f, f->pen.session);
                if (r < 0)
                        follow_stop(f, r);
        }
        return 0;
}

static int on_session_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct follow *f = userdata;
        const char *iface;
        int r;

        if (!f->session.path || !streq_ptr(sd_bus_message_get_path(m), f->session.path))
                return 0;
        if (sd_bus_message_read(m, "s", &iface) < 0 || !streq(iface, MND_SESSION_IFACE))
                return 0;
        r = mnctl_read_props(m, mnctl_session_props, &f->session);
        if (r < 0) {
                follow_stop(f, mnctl_fail(f->c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                          "cannot read a change of session %" PRIu64 ": %s", f->session.id,
                                          strerror(-r)));
                return 0;
        }
        f->dirty = true;
        if (session_ended(&f->session))
                f->done = true;
        return 0;
}

static int on_pen_removed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct follow *f = userdata;
        const char *path;

        if (sd_bus_message_read(m, "o", &path) < 0 || !streq(path, f->pen.path))
                return 0;
        if (f->session.path) {
                /* The session object stays: its end (interrupted) is the news. */
                _cleanup_(freep) char *p = strdup(f->session.path);

                if (p && attach_session(f, p) >= 0) {
                        f->dirty = true;
                        f->done = true;
                        return 0;
                }
        }
        follow_stop(f, mnctl_fail(f->c, -ENODEV, MNCTL_EXIT_NO_PEN, MND_ERROR_PREFIX "NoSuchPen",
                                  "pen %s was disconnected", strempty(f->pen.serial)));
        return 0;
}

static int on_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct follow *f = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0 || !isempty(new_owner))
                return 0;
        follow_stop(f, mnctl_fail(f->c, -ECONNRESET, MNCTL_EXIT_NO_DAEMON, MNCTL_ERROR_NO_DAEMON,
                                  "mnd left the bus while following pen %s", strempty(f->pen.serial)));
        return 0;
}

static void follow_render(struct follow *f) {
        const struct mnctl_session *s = f->session.path ? &f->session : NULL;

        f->dirty = false;
        if (!f->progress)
                return;

        if (f->c->json) {
                struct json j;

                json_init(&j, stdout, false);
                json_object_begin(&j);
                json_kv_uint(&j, "time_us", now_realtime_us());
                json_key(&j, "pen");
                mnctl_json_pen(&j, &f->pen);
                json_key(&j, "session");
                if (s)
                        mnctl_json_session(&j, s);
                else
                        json_null(&j);
                json_object_end(&j);
                json_finish(&j);
                return;
        }

        if (f->live) {
                struct view v;

                build_view(&f->pen, s, f->c->color, &v);
                if (!s)
                        snprintf(v.line[0] + strlen(v.line[0]), LINE_MAX_LEN - strlen(v.line[0]),
                                 "; waiting for one (Ctrl-C to quit)");
                /* Back to the top of what was drawn, then each line over again. */
                if (f->drawn > 0)
                        printf("\033[%uA", f->drawn);
                for (unsigned i = 0; i < v.n; i++)
                        printf("\r\033[2K%s\n", v.line[i]);
                for (unsigned i = v.n; i < f->drawn; i++)
                        printf("\r\033[2K\n");
                f->drawn = v.n > f->drawn ? v.n : f->drawn;
                fflush(stdout);
                return;
        }

        {
                char line[LINE_MAX_LEN];

                build_line(&f->pen, s, line, sizeof(line));
                if (streq(line, f->last))
                        return;
                printf("%s\n", line);
                fflush(stdout);
                snprintf(f->last, sizeof(f->last), "%s", line);
        }
}

static int add_match(struct mnctl *c, sd_bus *bus, sd_bus_slot **slot, const char *rule,
                     sd_bus_message_handler_t callback, void *userdata) {
        int r;

        r = sd_bus_add_match(bus, slot, rule, callback, userdata);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "cannot subscribe to mnd's signals: %s", strerror(-r));
        return 0;
}

#define SIGNAL_FROM_MND "type='signal',sender='" MND_BUS_NAME "',"
#define PROPERTIES_CHANGED "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged',"
#define OWNER_CHANGED "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus'," \
        "member='NameOwnerChanged',arg0='" MND_BUS_NAME "'"

int mnctl_follow(struct mnctl *c, const char *pen_path, const char *session_path, bool start_wait,
                 struct mnctl_signals *caught, char **ret_state) {
        _cleanup_(freep) char *pen_rule = NULL;
        sd_bus_slot *slots[4] = {};
        struct follow f = {
                .c = c,
                .fixed_session = session_path != NULL,
                .live = !c->json && mnctl_use_color(STDOUT_FILENO, c->no_color),
                .progress = !(start_wait && c->json),
        };
        struct mnctl_signals own, *sig = caught ?: &own;
        bool stop_pen;
        sd_bus *bus;
        int r;

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;

        /* Subscribe first, then read: nothing that changes in between is missed. */
        if (asprintf(&pen_rule, SIGNAL_FROM_MND PROPERTIES_CHANGED "path='%s'", pen_path) < 0)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        r = add_match(c, bus, &slots[0], pen_rule, on_pen_changed, &f);
        if (r >= 0)
                r = add_match(c, bus, &slots[1],
                              SIGNAL_FROM_MND PROPERTIES_CHANGED "path_namespace='" MND_MANAGER_PATH "/session'",
                              on_session_changed, &f);
        if (r >= 0)
                r = add_match(c, bus, &slots[2],
                              SIGNAL_FROM_MND "interface='" MND_MANAGER_IFACE "',member='PenRemoved'",
                              on_pen_removed, &f);
        if (r >= 0)
                r = add_match(c, bus, &slots[3], OWNER_CHANGED, on_owner_changed, &f);
        if (r < 0)
                goto finish;

        r = mnctl_load_pen(c, pen_path, &f.pen);
        if (r < 0)
                goto finish;
        if (session_path || mnctl_pen_has_session(&f.pen)) {
                r = attach_session(&f, session_path ?: f.pen.session);
                if (r < 0)
                        goto finish;
        }
        f.done = session_ended(&f.session);
        follow_render(&f);

        if (!caught)
                mnctl_signals_catch(&own);
        while (!f.done) {
                r = sd_bus_process(bus, NULL);
                if (r < 0) {
                        f.r = mnctl_fail_bus(c, r, NULL, "lost mnd");
                        break;
                }
                if (r > 0)
                        continue;
                if (f.dirty)
                        follow_render(&f);
                if (interrupted)
                        break;
                r = bus_wait(bus, sig);
                if (r < 0 && r != -EINTR) {
                        f.r = mnctl_fail_bus(c, r, NULL, "lost mnd");
                        break;
                }
        }
        /* A Ctrl-C that came while the setup calls ran is still pending: it counts too. */
        stop_pen = start_wait && mnctl_signals_interrupted();
        if (!caught)
                mnctl_signals_restore(&own);

        if (f.dirty)
                follow_render(&f);
        r = f.r;
        if (r < 0 && stop_pen)
                /* Whatever went wrong, a pen we started is not left running after a Ctrl-C. */
                (void) mnctl_call(c, pen_path, MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
        if (r < 0)
                goto finish;

        if (stop_pen) {
                /* Ctrl-C while a session we started runs: the pen stops. */
                r = mnctl_call(c, f.pen.path, MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
                if (r >= 0 && f.session.path) {
                        _cleanup_(freep) char *p = strdup(f.session.path);

                        r = p ? attach_session(&f, p) : -ENOMEM;
                }
                if (r < 0)
                        goto finish;
                if (!c->json) {
                        char serial[128];

                        printf("Interrupted: pen %s stopped.\n", mnctl_escape(f.pen.serial, serial, sizeof(serial)));
                }
        }

        if (ret_state) {
                *ret_state = f.session.state ? strdup(f.session.state) : NULL;
                if (f.session.state && !*ret_state)
                        r = mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        }
finish:
        for (size_t i = 0; i < ELEMENTSOF(slots); i++)
                sd_bus_slot_unref(slots[i]);
        mnctl_pen_clear(&f.pen);
        mnctl_session_clear(&f.session);
        return r < 0 ? r : 0;
}

int cmd_watch(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(freep) char *path = NULL;
        int r;

        c->json_lines = true;

        r = mnctl_find_pen(c, a->npos > 0 ? a->pos[0] : NULL, &path, NULL);
        if (r < 0)
                return r;
        return mnctl_follow(c, path, NULL, false, NULL, NULL);
}

/* ---- monitor ---- */

struct event {
        const char *event;
        const char *pen;
        uint64_t session;               /* 0: none */
        const char *area, *state, *end_reason, *code, *message;
};

struct monitor {
        struct mnctl *c;
        char **states;          /* path, state, path, state ...: the last state reported per pen */
};

/* True if state is news for the pen at path (and remembers it). */
static bool monitor_state_changed(struct monitor *mon, const char *path, const char *state) {
        size_t n = strv_length(mon->states);
        char **l;

        for (size_t i = 0; i + 1 < n; i += 2)
                if (streq(mon->states[i], path)) {
                        if (streq(mon->states[i + 1], state))
                                return false;
                        (void) free_and_strdup(&mon->states[i + 1], state);
                        return true;
                }
        l = realloc(mon->states, (n + 3) * sizeof(char *));
        if (!l)
                return true;
        l[n] = strdup(path);
        l[n + 1] = l[n] ? strdup(state) : NULL;
        l[n + 2] = NULL;
        if (!l[n + 1]) {
                free(l[n]);
                l[n] = NULL;
        }
        mon->states = l;
        return true;
}

static void print_event(struct monitor *mon, const struct event *e) {
        if (mon->c->json) {
                struct json j;

                json_init(&j, stdout, false);
                json_object_begin(&j);
                json_kv_uint(&j, "time_us", now_realtime_us());
                json_kv_string(&j, "event", e->event);
                if (e->pen)
                        json_kv_string(&j, "pen", e->pen);
                if (e->session)
                        json_kv_uint(&j, "session", e->session);
                if (e->area)
                        json_kv_string(&j, "area", e->area);
                if (e->state)
                        json_kv_string(&j, "state", e->state);
                if (e->end_reason)
                        json_kv_string(&j, "end_reason", e->end_reason);
                if (e->code)
                        json_kv_string(&j, "code", e->code);
                if (e->message)
                        json_kv_string(&j, "message", e->message);
                json_object_end(&j);
                json_finish(&j);
                return;
        }

        {
                const char *k = mon->c->color && e->state ? mnctl_state_color(e->state) : "";
                time_t t = time(NULL);
                char when[16];
                struct tm tm;

                strftime(when, sizeof(when), "%H:%M:%S", localtime_r(&t, &tm));
                printf("%s  %-16s", when, e->event);
                /* What the daemon and the pens sent, escaped for the terminal. */
                if (e->pen) {
                        putchar(' ');
                        mnctl_fputs_text(stdout, e->pen, false);
                }
                if (e->session)
                        printf(" session %" PRIu64, e->session);
                if (e->area) {
                        fputs(" (", stdout);
                        mnctl_fputs_text(stdout, e->area, false);
                        putchar(')');
                }
                if (e->state) {
                        printf(" %s", k);
                        mnctl_fputs_text(stdout, e->state, false);
                        fputs(isempty(k) ? "" : ANSI_NORMAL, stdout);
                }
                if (e->end_reason && !streq_ptr(e->end_reason, e->state)) {
                        fputs(", ", stdout);
                        mnctl_fputs_text(stdout, e->end_reason, false);
                }
                if (e->code) {
                        putchar(' ');
                        mnctl_fputs_text(stdout, e->code, false);
                }
                if (e->message) {
                        fputs(": ", stdout);
                        mnctl_fputs_text(stdout, e->message, false);
                }
                putchar('\n');
                fflush(stdout);
        }
}

static void monitor_session(struct monitor *mon, const char *path, const char *event) {
        _cleanup_(mnctl_session_clearp) struct mnctl_session s = {};

        if (mnctl_load_session(mon->c, path, &s) < 0) {
                /* Gone already: report what the path says. */
                print_event(mon, &(struct event) { .event = event });
                return;
        }
        print_event(mon, &(struct event) {
                .event = event, .pen = s.pen_serial, .session = s.id, .area = s.area,
                .state = streq(event, "session-ended") ? s.state : NULL,
                .end_reason = streq(event, "session-ended") && !isempty(s.end_reason) ? s.end_reason : NULL,
        });
}

static int on_monitor_pen(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct monitor *mon = userdata;
        _cleanup_(freep) char *serial = NULL;
        const char *path;

        if (sd_bus_message_read(m, "o", &path) < 0)
                return 0;
        serial = mnctl_pen_serial_from_path(path);
        print_event(mon, &(struct event) {
                .event = streq(sd_bus_message_get_member(m), "PenAdded") ? "pen-added" : "pen-removed",
                .pen = serial ?: path,
        });
        return 0;
}

static int on_monitor_fault(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct monitor *mon = userdata;
        _cleanup_(freep) char *serial = mnctl_pen_serial_from_path(sd_bus_message_get_path(m));
        const char *code, *message;

        if (sd_bus_message_read(m, "ss", &code, &message) < 0)
                return 0;
        print_event(mon, &(struct event) { .event = "fault", .pen = serial, .code = code, .message = message });
        return 0;
}

static int on_monitor_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct monitor *mon = userdata;
        const char *iface, *path = sd_bus_message_get_path(m);

        if (sd_bus_message_read(m, "s", &iface) < 0)
                return 0;

        if (streq(iface, MND_PEN_IFACE)) {
                _cleanup_(mnctl_pen_clearp) struct mnctl_pen p = {};
                _cleanup_(freep) char *serial = mnctl_pen_serial_from_path(path);

                if (mnctl_read_props(m, mnctl_pen_props, &p) < 0)
                        return 0;
                if (p.state && monitor_state_changed(mon, path, p.state))
                        print_event(mon, &(struct event) { .event = "pen-state", .pen = serial, .state = p.state });
                if (mnctl_pen_has_session(&p))
                        monitor_session(mon, p.session, "session-started");
        } else if (streq(iface, MND_SESSION_IFACE)) {
                _cleanup_(mnctl_session_clearp) struct mnctl_session s = {};

                if (mnctl_read_props(m, mnctl_session_props, &s) < 0)
                        return 0;
                if (s.state && !streq(s.state, "running"))
                        monitor_session(mon, path, "session-ended");
        }
        return 0;
}

static int on_monitor_owner(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct monitor *mon = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        print_event(mon, &(struct event) { .event = isempty(new_owner) ? "daemon-stopped" : "daemon-started" });
        return 0;
}

int cmd_monitor(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *version = NULL;
        struct monitor mon = { .c = c };
        sd_bus_slot *slots[5] = {};
        struct mnctl_signals sig;
        sd_bus *bus;
        int r;

        c->json_lines = true;

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;

        r = add_match(c, bus, &slots[0], SIGNAL_FROM_MND "interface='" MND_MANAGER_IFACE "',member='PenAdded'",
                      on_monitor_pen, &mon);
        if (r >= 0)
                r = add_match(c, bus, &slots[1], SIGNAL_FROM_MND "interface='" MND_MANAGER_IFACE "',member='PenRemoved'",
                              on_monitor_pen, &mon);
        if (r >= 0)
                r = add_match(c, bus, &slots[2], SIGNAL_FROM_MND "interface='" MND_PEN_IFACE "',member='Fault'",
                              on_monitor_fault, &mon);
        if (r >= 0)
                r = add_match(c, bus, &slots[3],
                              SIGNAL_FROM_MND PROPERTIES_CHANGED "path_namespace='" MND_MANAGER_PATH "'",
                              on_monitor_changed, &mon);
        if (r >= 0)
                r = add_match(c, bus, &slots[4], OWNER_CHANGED, on_monitor_owner, &mon);
        if (r < 0)
                goto finish;

        /* mnd must be there to begin with; later departures are events. */
        r = sd_bus_get_property_string(bus, MND_BUS_NAME, MND_MANAGER_PATH, MND_MANAGER_IFACE, "Version",
                                       &error, &version);
        if (r < 0) {
                r = mnctl_fail_bus(c, r, &error, "cannot reach mnd");
                goto finish;
        }
        if (!c->json && isatty(STDERR_FILENO) > 0) {
                char v[64];

                fprintf(stderr, "Monitoring mnd %s on the %s bus; Ctrl-C to quit.\n",
                        mnctl_escape(version, v, sizeof(v)), c->user_bus ? "session" : "system");
        }

        mnctl_signals_catch(&sig);
        while (!interrupted) {
                r = sd_bus_process(bus, NULL);
                if (r < 0) {
                        r = mnctl_fail_bus(c, r, NULL, "lost the bus");
                        break;
                }
                if (r > 0)
                        continue;
                r = bus_wait(bus, &sig);
                if (r < 0 && r != -EINTR) {
                        r = mnctl_fail_bus(c, r, NULL, "lost the bus");
                        break;
                }
                r = 0;
        }
        mnctl_signals_restore(&sig);
finish:
        for (size_t i = 0; i < ELEMENTSOF(slots); i++)
                sd_bus_slot_unref(slots[i]);
        strv_free(mon.states);
        return r < 0 ? r : 0;
}
