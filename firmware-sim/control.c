/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib-unix.h>

#include "control.h"
#include "testbed.h"

#define LINE_MAX_LEN 4096
#define OUT_MAX_LEN (1024 * 1024)

const char control_usage[] =
        "  list                          every pen: serial, kind, plugged/unplugged, state\n"
        "  status SERIAL                 one line of key=value pairs (see README.md)\n"
        "  plug SERIAL                   connect the pen's cable (the device appears)\n"
        "  unplug SERIAL                 pull the cable: surprise removal, the pen runs on\n"
        "  cartridge SERIAL ID           insert a cartridge with that id\n"
        "  remove-cartridge SERIAL       take the cartridge out\n"
        "  drop SERIAL RATE              drop frames with probability RATE (0..1)\n"
        "  corrupt SERIAL RATE           flip a byte in frames with probability RATE\n"
        "  duplicate SERIAL RATE         send frames twice with probability RATE\n"
        "  delay SERIAL RATE MS          hold frames back by MS ms with probability RATE\n"
        "  stall SERIAL on|off           firmware stops processing and sending\n"
        "  reboot SERIAL                 power cycle: new boot id, back to booting\n"
        "  fault SERIAL motor|overheat|actuator|battery|internal\n"
        "                                raise that fault\n"
        "  temperature SERIAL DECI_C     set the temperature in tenths of a degree C\n"
        "  battery SERIAL PERCENT        set the battery charge (0..100)\n"
        "  help                          this list\n";

/* ---- parsing helpers: each returns NULL or an error sentence ---- */

static char *parse_rate(const char *s, double *ret) {
        char *end;
        double v;

        errno = 0;
        v = strtod(s, &end);
        if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < 0.0 || v > 1.0)
                return g_strdup_printf("bad rate '%s': expected a probability from 0 to 1, such as 0.05", s);
        *ret = v;
        return NULL;
}

static char *parse_int(const char *s, const char *what, long min, long max, long *ret) {
        char *end;
        long v;

        errno = 0;
        v = strtol(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
                return g_strdup_printf("bad %s '%s': expected an integer from %ld to %ld", what, s, min, max);
        *ret = v;
        return NULL;
}

static const char *state_name(uint8_t state) {
        return mnp_state_name(state);
}

static char *fault_list(uint32_t flags) {
        GString *s = g_string_new(NULL);

        for (unsigned code = 1; code <= MNP_FAULT_MAX; code++)
                if (flags & MNP_FAULT_FLAG(code))
                        g_string_append_printf(s, "%s%s", s->len ? "," : "", mnp_fault_name((uint8_t) code));
        return g_string_free(s, false);
}

static char *cmd_list(struct mn_sim *sim) {
        GString *s = g_string_new("ok");
        uint64_t now = mn_now_us();

        g_mutex_lock(&sim->lock);
        for (guint i = 0; i < sim->pens->len; i++) {
                struct mn_pen *p = sim->pens->pdata[i];
                struct sim_pen_snapshot snap;

                sim_pen_snapshot(p->model, now, &snap);
                g_string_append_printf(s, "%s %s %s %s %s", i == 0 ? "" : ";", p->serial,
                                       mn_pen_kind_name(p->kind), p->plugged ? "plugged" : "unplugged",
                                       state_name(snap.state));
        }
        g_mutex_unlock(&sim->lock);
        return g_string_free(s, false);
}

static char *cmd_status(struct mn_sim *sim, struct mn_pen *p) {
        struct sim_pen_snapshot s;
        g_autofree char *faults = NULL;
        char *r;

        g_mutex_lock(&sim->lock);
        sim_pen_snapshot(p->model, mn_now_us(), &s);
        r = g_strdup_printf(
                "ok serial=%s kind=%s plugged=%d state=%s depth_set=%" PRIu32 " depth_actual=%" PRIu32
                " speed_set=%u speed_actual=%u needles_moving=%d motion_changed_us=%" PRIu64
                " cartridge=%s battery=%u temperature=%d needling_ms=%" PRIu32 " boot_id=0x%08" PRIx32
                " host_connected=%d fault_flags=0x%" PRIx32 " faults=%s stalled=%d connected=%d lease_left_ms=%" PRIu32
                " frames_received=%" PRIu64 " frames_sent=%" PRIu64 " commands_acted=%" PRIu64
                " duplicates_ignored=%" PRIu64 " naks_sent=%" PRIu64 " bad_frames=%" PRIu64 " fifo_dropped=%" PRIu64,
                p->serial, mn_pen_kind_name(p->kind), p->plugged, state_name(s.state), s.depth_set_um,
                s.depth_actual_um, s.speed_set_hz, s.speed_actual_hz, s.needles_moving, s.motion_changed_us,
                s.cartridge_id, s.battery_percent, s.temperature_dc, s.needling_ms, s.boot_id,
                s.host_connected, s.fault_flags, (faults = fault_list(s.fault_flags)), s.stalled, s.connected,
                s.lease_left_ms, s.frames_received, s.frames_sent, s.commands_acted, s.duplicates_ignored,
                s.naks_sent, s.bad_frames, p->fifo_dropped);
        g_mutex_unlock(&sim->lock);
        return r;
}

static const struct {
        const char *name;
        enum mnp_fault code;
} fault_names[] = {
        { "motor", MNP_FAULT_MOTOR },
        { "overheat", MNP_FAULT_OVERHEAT },
        { "actuator", MNP_FAULT_ACTUATOR },
        { "battery", MNP_FAULT_BATTERY },
        { "internal", MNP_FAULT_INTERNAL },
};

struct command {
        const char *name;
        unsigned nargs;
        const char *synopsis;
};

static const struct command commands[] = {
        { "list", 0, "list" },
        { "help", 0, "help" },
        { "status", 1, "status SERIAL" },
        { "plug", 1, "plug SERIAL" },
        { "unplug", 1, "unplug SERIAL" },
        { "cartridge", 2, "cartridge SERIAL ID" },
        { "remove-cartridge", 1, "remove-cartridge SERIAL" },
        { "drop", 2, "drop SERIAL RATE" },
        { "corrupt", 2, "corrupt SERIAL RATE" },
        { "duplicate", 2, "duplicate SERIAL RATE" },
        { "delay", 3, "delay SERIAL RATE MS" },
        { "stall", 2, "stall SERIAL on|off" },
        { "reboot", 1, "reboot SERIAL" },
        { "fault", 2, "fault SERIAL motor|overheat|actuator|battery|internal" },
        { "temperature", 2, "temperature SERIAL DECI_C" },
        { "battery", 2, "battery SERIAL PERCENT" },
};

static char *pen_list(struct mn_sim *sim) {
        GString *s = g_string_new(NULL);

        for (guint i = 0; i < sim->pens->len; i++)
                g_string_append_printf(s, "%s%s", i ? ", " : "", ((struct mn_pen *) sim->pens->pdata[i])->serial);
        return g_string_free(s, false);
}

static char *error_reply(char *sentence) {
        char *r = g_strconcat("error: ", sentence, NULL);
        g_free(sentence);
        return r;
}

char *control_execute(struct mn_sim *sim, const char *line) {
        g_auto(GStrv) raw = g_strsplit_set(line, " \t\r\n", -1);
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        const struct command *cmd = NULL;
        struct mn_pen *p = NULL;
        const char *name;
        char *err = NULL;
        uint64_t now;
        int r;

        for (char **a = raw; *a; a++)
                if (**a)
                        g_ptr_array_add(argv, *a);
        if (argv->len == 0)
                return g_strdup("error: empty command (try 'help')");
        name = argv->pdata[0];

        for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        cmd = &commands[i];
        if (!cmd)
                return error_reply(g_strdup_printf("unknown command '%.64s' (try 'help')", name));
        if (argv->len - 1 != cmd->nargs)
                return error_reply(g_strdup_printf("'%s' takes %u argument%s (%s), got %u", cmd->name, cmd->nargs,
                                                   cmd->nargs == 1 ? "" : "s", cmd->synopsis, argv->len - 1));

        if (strcmp(name, "list") == 0)
                return cmd_list(sim);
        if (strcmp(name, "help") == 0) {
                GString *s = g_string_new("ok commands:");
                for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
                        g_string_append_printf(s, "%s %s", i ? ";" : "", commands[i].synopsis);
                return g_string_free(s, false);
        }

        p = mn_sim_find_pen(sim, argv->pdata[1]);
        if (!p) {
                g_autofree char *pens = pen_list(sim);
                return error_reply(g_strdup_printf("no pen with serial '%.64s' (pens: %s)",
                                                   (char *) argv->pdata[1], pens));
        }

        if (strcmp(name, "status") == 0)
                return cmd_status(sim, p);
        if (strcmp(name, "plug") == 0) {
                if (mn_pen_plug(p, &err) < 0)
                        return error_reply(err);
                return g_strdup_printf("ok %s plugged in", p->serial);
        }
        if (strcmp(name, "unplug") == 0) {
                if (mn_pen_unplug(p, &err) < 0)
                        return error_reply(err);
                return g_strdup_printf("ok %s unplugged", p->serial);
        }

        /* Validate everything before touching the pen. */
        double rate = 0;
        long num = 0;
        bool on = false;
        enum mnp_fault fault = MNP_FAULT_NONE;
        const char *arg2 = argv->len > 2 ? argv->pdata[2] : NULL;

        if (strcmp(name, "drop") == 0 || strcmp(name, "corrupt") == 0 || strcmp(name, "duplicate") == 0 ||
            strcmp(name, "delay") == 0)
                err = parse_rate(arg2, &rate);
        if (!err && strcmp(name, "delay") == 0)
                err = parse_int(argv->pdata[3], "delay", 0, 60000, &num);
        else if (strcmp(name, "temperature") == 0)
                err = parse_int(arg2, "temperature (tenths of a degree Celsius)", -1000, 2000, &num);
        else if (strcmp(name, "battery") == 0)
                err = parse_int(arg2, "battery percentage", 0, 100, &num);
        else if (strcmp(name, "stall") == 0) {
                if (strcmp(arg2, "on") == 0)
                        on = true;
                else if (strcmp(arg2, "off") != 0)
                        err = g_strdup_printf("bad stall setting '%.64s': expected 'on' or 'off'", arg2);
        } else if (strcmp(name, "fault") == 0) {
                for (size_t i = 0; i < G_N_ELEMENTS(fault_names); i++)
                        if (strcmp(fault_names[i].name, arg2) == 0)
                                fault = fault_names[i].code;
                if (fault == MNP_FAULT_NONE)
                        err = g_strdup_printf("unknown fault '%.64s': expected motor, overheat, actuator, battery or internal",
                                              arg2);
        } else if (strcmp(name, "cartridge") == 0) {
                size_t len = strlen(arg2);
                bool printable = true;
                for (const char *c = arg2; *c; c++)
                        if (*c < 0x21 || *c > 0x7e)
                                printable = false;
                if (len > MNP_MAX_STR || !printable)
                        err = g_strdup_printf("bad cartridge id '%.64s': expected 1 to %d printable characters",
                                              arg2, MNP_MAX_STR);
        }
        if (err)
                return error_reply(err);

        g_mutex_lock(&sim->lock);
        now = mn_now_us();
        sim_pen_advance(p->model, now);
        r = 0;
        if (strcmp(name, "drop") == 0)
                p->faults.drop = rate;
        else if (strcmp(name, "corrupt") == 0)
                p->faults.corrupt = rate;
        else if (strcmp(name, "duplicate") == 0)
                p->faults.duplicate = rate;
        else if (strcmp(name, "delay") == 0) {
                p->faults.delay = rate;
                p->faults.delay_ms = (uint32_t) num;
        } else if (strcmp(name, "stall") == 0)
                sim_pen_set_stalled(p->model, on);
        else if (strcmp(name, "reboot") == 0)
                sim_pen_reboot(p->model, now);
        else if (strcmp(name, "fault") == 0)
                r = sim_pen_inject_fault(p->model, now, fault);
        else if (strcmp(name, "temperature") == 0)
                sim_pen_set_temperature(p->model, now, (int16_t) num);
        else if (strcmp(name, "battery") == 0)
                sim_pen_set_battery(p->model, now, (uint8_t) num);
        else if (strcmp(name, "cartridge") == 0)
                r = sim_pen_insert_cartridge(p->model, now, arg2);
        else if (strcmp(name, "remove-cartridge") == 0)
                r = sim_pen_remove_cartridge(p->model, now);
        if (strcmp(name, "drop") == 0 || strcmp(name, "corrupt") == 0 || strcmp(name, "duplicate") == 0 ||
            strcmp(name, "delay") == 0)
                sim_pen_set_link_faults(p->model, &p->faults);
        mn_pen_pump_locked(p, now);
        g_mutex_unlock(&sim->lock);

        if (r == -EEXIST)
                return error_reply(g_strdup_printf("pen %s already has a cartridge: remove it first", p->serial));
        if (r == -ENOENT)
                return error_reply(g_strdup_printf("pen %s has no cartridge", p->serial));
        if (r < 0)
                return error_reply(g_strdup_printf("pen %s refused '%s': %s", p->serial, name, g_strerror(-r)));
        return g_strdup_printf("ok %s %s", p->serial, name);
}

/* ---- the server ---- */

struct conn {
        struct control *ctl;
        int fd;
        guint in_watch, out_watch;
        GString *in, *out;
        bool discarding;                /* inside an over-long line */
};

struct control {
        struct mn_sim *sim;
        char *path;
        int fd;
        guint watch;
        GList *conns;
};

static void conn_free(struct conn *c) {
        if (c->in_watch)
                g_source_remove(c->in_watch);
        if (c->out_watch)
                g_source_remove(c->out_watch);
        close(c->fd);
        g_string_free(c->in, true);
        g_string_free(c->out, true);
        c->ctl->conns = g_list_remove(c->ctl->conns, c);
        g_free(c);
}

static gboolean on_conn_out(gint fd, GIOCondition cond, gpointer userdata);

/* Returns false if the connection had to be closed. */
static bool conn_send(struct conn *c) {
        while (c->out->len > 0) {
                ssize_t n = send(c->fd, c->out->str, c->out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN) {
                        if (c->out->len > OUT_MAX_LEN)
                                return false;   /* a client that never reads */
                        if (!c->out_watch)
                                c->out_watch = g_unix_fd_add(c->fd, G_IO_OUT, on_conn_out, c);
                        return true;
                }
                if (n < 0)
                        return false;
                g_string_erase(c->out, 0, n);
        }
        return true;
}

static gboolean on_conn_out(gint fd, GIOCondition cond, gpointer userdata) {
        struct conn *c = userdata;

        c->out_watch = 0;
        if (!conn_send(c))
                conn_free(c);
        return G_SOURCE_REMOVE;
}

static void conn_reply(struct conn *c, char *reply) {
        g_string_append(c->out, reply);
        g_string_append_c(c->out, '\n');
        g_free(reply);
}

static gboolean on_conn_in(gint fd, GIOCondition cond, gpointer userdata) {
        struct conn *c = userdata;
        char buf[4096];
        ssize_t n;
        char *nl;

        n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return G_SOURCE_CONTINUE;
        if (n <= 0) {
                c->in_watch = 0;
                conn_free(c);
                return G_SOURCE_REMOVE;
        }
        g_string_append_len(c->in, buf, n);

        while ((nl = memchr(c->in->str, '\n', c->in->len))) {
                size_t len = (size_t) (nl - c->in->str);

                if (c->discarding)
                        c->discarding = false;
                else if (len > LINE_MAX_LEN)
                        conn_reply(c, g_strdup_printf("error: command line longer than %d bytes", LINE_MAX_LEN));
                else {
                        g_autofree char *line = g_strndup(c->in->str, len);
                        if (strlen(line) != len)
                                conn_reply(c, g_strdup("error: the command contains a NUL byte"));
                        else
                                conn_reply(c, control_execute(c->ctl->sim, line));
                }
                g_string_erase(c->in, 0, (gssize) len + 1);
        }
        if (c->in->len > LINE_MAX_LEN) {
                if (!c->discarding)
                        conn_reply(c, g_strdup_printf("error: command line longer than %d bytes", LINE_MAX_LEN));
                c->discarding = true;
                g_string_truncate(c->in, 0);
        }
        if (!conn_send(c)) {
                c->in_watch = 0;
                conn_free(c);
                return G_SOURCE_REMOVE;
        }
        return G_SOURCE_CONTINUE;
}

static gboolean on_accept(gint fd, GIOCondition cond, gpointer userdata) {
        struct control *ctl = userdata;
        struct conn *c;
        int cfd;

        cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0) {
                if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        fprintf(stderr, "mnsim: control socket: accept failed: %s\n", strerror(errno));
                return G_SOURCE_CONTINUE;
        }
        c = g_new0(struct conn, 1);
        c->ctl = ctl;
        c->fd = cfd;
        c->in = g_string_new(NULL);
        c->out = g_string_new(NULL);
        c->in_watch = g_unix_fd_add(cfd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_conn_in, c);
        ctl->conns = g_list_prepend(ctl->conns, c);
        return G_SOURCE_CONTINUE;
}

static int fill_addr(const char *path, struct sockaddr_un *sa, char **error) {
        memset(sa, 0, sizeof *sa);
        sa->sun_family = AF_UNIX;
        if (strlen(path) >= sizeof sa->sun_path) {
                *error = g_strdup_printf("control socket path '%s' is too long (at most %zu bytes)",
                                         path, sizeof sa->sun_path - 1);
                return -ENAMETOOLONG;
        }
        strcpy(sa->sun_path, path);
        return 0;
}

struct control *control_new(struct mn_sim *sim, const char *path, char **error) {
        struct control *ctl;
        struct sockaddr_un sa;
        struct stat st;
        int fd;

        if (fill_addr(path, &sa, error) < 0)
                return NULL;
        if (lstat(path, &st) == 0) {
                int probe;

                if (!S_ISSOCK(st.st_mode)) {
                        *error = g_strdup_printf("control socket path '%s' exists and is not a socket", path);
                        return NULL;
                }
                probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe >= 0 && connect(probe, (struct sockaddr *) &sa, sizeof sa) == 0) {
                        close(probe);
                        *error = g_strdup_printf("control socket '%s' is in use by another mnsim", path);
                        return NULL;
                }
                if (probe >= 0)
                        close(probe);
                (void) unlink(path);
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof sa) < 0 || listen(fd, 16) < 0) {
                *error = g_strdup_printf("cannot listen on control socket '%s': %s", path, g_strerror(errno));
                if (fd >= 0)
                        close(fd);
                return NULL;
        }

        ctl = g_new0(struct control, 1);
        ctl->sim = sim;
        ctl->path = g_strdup(path);
        ctl->fd = fd;
        ctl->watch = g_unix_fd_add(fd, G_IO_IN, on_accept, ctl);
        return ctl;
}

void control_free(struct control *ctl) {
        if (!ctl)
                return;
        while (ctl->conns)
                conn_free(ctl->conns->data);
        g_source_remove(ctl->watch);
        close(ctl->fd);
        (void) unlink(ctl->path);
        g_free(ctl->path);
        g_free(ctl);
}

/* ---- the client ---- */

int control_client(const char *path, int argc, char **argv) {
        g_autofree char *line = NULL;
        g_autofree char *err = NULL;
        g_autoptr(GString) reply = g_string_new(NULL);
        struct sockaddr_un sa;
        size_t off = 0;
        int fd;

        if (!path || !*path) {
                fprintf(stderr, "mnsim ctl: no control socket: pass --control PATH or set MNSIM_CONTROL\n");
                return 2;
        }
        if (argc == 0) {
                fprintf(stderr, "mnsim ctl: no command given; commands:\n%s", control_usage);
                return 2;
        }
        if (fill_addr(path, &sa, &err) < 0) {
                fprintf(stderr, "mnsim ctl: %s\n", err);
                return 2;
        }
        line = g_strjoinv(" ", argv);
        if (strchr(line, '\n')) {
                fprintf(stderr, "mnsim ctl: the command must not contain a newline\n");
                return 2;
        }

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                fprintf(stderr, "mnsim ctl: cannot connect to '%s': %s\n", path, g_strerror(errno));
                if (fd >= 0)
                        close(fd);
                return 2;
        }
        {
                g_autofree char *msg = g_strconcat(line, "\n", NULL);
                size_t len = strlen(msg);

                while (off < len) {
                        ssize_t n = send(fd, msg + off, len - off, MSG_NOSIGNAL);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n < 0) {
                                fprintf(stderr, "mnsim ctl: cannot send to '%s': %s\n", path, g_strerror(errno));
                                close(fd);
                                return 2;
                        }
                        off += (size_t) n;
                }
        }
        for (;;) {
                char buf[1024];
                ssize_t n = recv(fd, buf, sizeof buf, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                g_string_append_len(reply, buf, n);
                if (memchr(buf, '\n', (size_t) n))
                        break;
        }
        close(fd);

        if (!strchr(reply->str, '\n')) {
                fprintf(stderr, "mnsim ctl: no reply from '%s'\n", path);
                return 2;
        }
        g_string_truncate(reply, (gsize) (strchr(reply->str, '\n') - reply->str));
        puts(reply->str);
        fflush(stdout);
        return g_str_has_prefix(reply->str, "ok") ? 0 : 1;
}
