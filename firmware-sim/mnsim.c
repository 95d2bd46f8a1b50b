/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * mnsim: makes simulated microneedling pens appear as real USB devices
 * (through umockdev) to unmodified programs.  See README.md.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>

#include "control.h"
#include <mnp/pen-ids.h>
#include "serial-pen.h"
#include "testbed.h"
#include "usb-pen.h"

#define MNSIM_MAX_PENS 64
#define PRELOAD_LIB "libumockdev-preload.so.0"
#define CHILD_KILL_TIMEOUT_S 5

static struct mn_sim the_sim;

struct mn_sim *mn_sim_get(void) {
        return &the_sim;
}

struct mn_pen *mn_sim_find_pen(struct mn_sim *sim, const char *serial) {
        for (guint i = 0; i < sim->pens->len; i++) {
                struct mn_pen *p = sim->pens->pdata[i];
                if (strcmp(p->serial, serial) == 0)
                        return p;
        }
        return NULL;
}

/* ---- timers ---- */

void mn_pen_rearm_locked(struct mn_pen *p) {
        uint64_t next = sim_pen_next_deadline(p->model);
        int64_t ready = next >= (uint64_t) INT64_MAX ? -1 : (int64_t) next;

        if (ready == p->armed || !p->timer)
                return;
        p->armed = ready;
        g_source_set_ready_time(p->timer, ready);      /* thread-safe; wakes the main context */
}

size_t mn_pen_pump_locked(struct mn_pen *p, uint64_t now) {
        uint8_t buf[1024];
        size_t n;

        sim_pen_advance(p->model, now);
        while ((n = sim_pen_transmit(p->model, now, buf, sizeof buf)) > 0) {
                size_t room = MNSIM_FIFO_MAX - MIN((size_t) p->fifo->len, (size_t) MNSIM_FIFO_MAX);
                size_t take = p->plugged ? MIN(n, room) : 0;

                /* Like a device whose host does not read: what does not fit is lost. */
                g_byte_array_append(p->fifo, buf, (guint) take);
                p->fifo_dropped += n - take;
        }
        mn_pen_rearm_locked(p);
        return p->fifo->len;
}

static gboolean on_pen_timer(gpointer userdata) {
        struct mn_pen *p = userdata;
        struct mn_sim *sim = p->sim;
        static bool warned;
        uint64_t now;

        g_mutex_lock(&sim->lock);
        now = mn_now_us();
        p->armed = -2;          /* the ready time passed: always set it again */
        mn_pen_pump_locked(p, now);
        if (p->armed >= 0 && (uint64_t) p->armed <= now) {
                /* The model still has work due after advancing: never spin on it. */
                if (!warned)
                        fprintf(stderr, "mnsim: pen %s: model deadline still due after sim_pen_advance(); "
                                        "retrying every millisecond\n", p->serial);
                warned = true;
                p->armed = (int64_t) now + 1000;
                g_source_set_ready_time(p->timer, p->armed);
        }
        if (p->kind == MN_PEN_USB)
                usb_pen_deliver_locked(p->usb, now);
        g_mutex_unlock(&sim->lock);

        if (p->kind == MN_PEN_SERIAL)
                serial_pen_flush(p->tty);
        return G_SOURCE_CONTINUE;
}

static gboolean timer_dispatch(GSource *source, GSourceFunc callback, gpointer userdata) {
        return callback(userdata);
}

static GSourceFuncs timer_funcs = {
        .dispatch = timer_dispatch,
};

/* ---- pens ---- */

static struct mn_pen *pen_new(struct mn_sim *sim, enum mn_pen_kind kind, unsigned index, uint64_t seed) {
        struct mn_pen *p = g_new0(struct mn_pen, 1);
        const struct mnp_pen_id *id;
        struct sim_pen_config cfg;

        p->sim = sim;
        p->kind = kind;
        p->index = index;
        g_snprintf(p->serial, sizeof p->serial, "%s-%04u", kind == MN_PEN_USB ? "MNU" : "MNS", index);
        p->busnum = kind == MN_PEN_USB ? 1 : 2;
        p->port = index;
        p->devnum = index + 1;
        p->fifo = g_byte_array_new();
        p->armed = -1;

        sim_pen_config_default(&cfg);
        g_strlcpy(cfg.serial, p->serial, sizeof cfg.serial);
        id = mnp_pen_id_lookup(MNP_USB_VID, mn_pen_pid(p));
        if (id && id->model)
                g_strlcpy(cfg.model, id->model, sizeof cfg.model);
        /* Distinct, reproducible streams per pen. */
        cfg.seed = seed ^ (UINT64_C(0x9E3779B97F4A7C15) * (1 + (uint64_t) kind * 4096 + index));

        p->model = sim_pen_new(&cfg, mn_now_us());
        if (!p->model) {
                g_byte_array_unref(p->fifo);
                g_free(p);
                return NULL;
        }
        if (kind == MN_PEN_USB)
                p->usb = usb_pen_new(p);
        else
                p->tty = serial_pen_new(p);

        p->timer = g_source_new(&timer_funcs, sizeof(GSource));
        g_source_set_callback(p->timer, on_pen_timer, p, NULL);
        g_source_set_name(p->timer, "mnsim pen timer");
        g_source_attach(p->timer, sim->ctx);
        return p;
}

static void pen_free(struct mn_pen *p) {
        if (!p)
                return;
        if (p->timer) {
                g_source_destroy(p->timer);
                g_source_unref(p->timer);
        }
        usb_pen_free(p->usb);
        serial_pen_free(p->tty);
        sim_pen_free(p->model);
        g_byte_array_unref(p->fifo);
        g_free(p->syspath);
        g_free(p->devnode);
        g_free(p);
}

int mn_pen_plug(struct mn_pen *p, char **error) {
        struct mn_sim *sim = p->sim;
        int r;

        if (p->plugged) {
                *error = g_strdup_printf("pen %s is already plugged in", p->serial);
                return -EALREADY;
        }
        if (p->kind == MN_PEN_SERIAL)
                p->acm = sim->next_acm++;
        mn_pen_set_paths(p);

        /* The ioctl emulation first: umockdev sends the "add" events while it
         * adds the devices, and a client may open the node right then (the
         * preload aborts a client whose node has no ioctl socket). */
        r = p->kind == MN_PEN_USB ? usb_pen_attach(p->usb, error) : serial_pen_attach(p->tty, error);
        if (r < 0)
                goto fail_attach;
        r = mn_testbed_add_pen(sim, p, error);
        if (r < 0)
                goto fail_attach;
        if (p->kind == MN_PEN_SERIAL) {
                r = serial_pen_connect(p->tty, error);
                if (r < 0) {
                        mn_testbed_remove_pen(sim, p);
                        goto fail_attach;
                }
        }

        g_mutex_lock(&sim->lock);
        p->plugged = true;
        g_byte_array_set_size(p->fifo, 0);
        sim_pen_set_connected(p->model, mn_now_us(), true);
        mn_pen_pump_locked(p, mn_now_us());
        g_mutex_unlock(&sim->lock);
        return 0;

fail_attach:
        if (p->kind == MN_PEN_USB)
                usb_pen_detach(p->usb);
        else
                serial_pen_detach(p->tty);
        return r;
}

int mn_pen_unplug(struct mn_pen *p, char **error) {
        struct mn_sim *sim = p->sim;

        if (!p->plugged) {
                *error = g_strdup_printf("pen %s is already unplugged", p->serial);
                return -EALREADY;
        }
        g_mutex_lock(&sim->lock);
        p->plugged = false;
        sim_pen_set_connected(p->model, mn_now_us(), false);
        g_byte_array_set_size(p->fifo, 0);
        mn_pen_pump_locked(p, mn_now_us());
        g_mutex_unlock(&sim->lock);

        /* The device dies first (transfers fail from here on), then the
         * "remove" events and the nodes go, and only then the ioctl
         * emulation: a client that opens the node until it is removed still
         * gets its answers (ENODEV), never a missing socket. */
        if (p->kind == MN_PEN_USB)
                usb_pen_disconnect(p->usb);
        mn_testbed_remove_pen(sim, p);
        if (p->kind == MN_PEN_USB)
                usb_pen_detach(p->usb);
        else {
                serial_pen_detach(p->tty);
                serial_pen_hangup(p->tty);
        }
        return 0;
}

/* ---- the child ---- */

static GMainLoop *loop;
static GPid child_pid;
static bool child_running;
static int exit_status;
static guint kill_timer;

static void on_child_exit(GPid pid, gint status, gpointer userdata) {
        if (WIFEXITED(status))
                exit_status = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                exit_status = 128 + WTERMSIG(status);
        else
                exit_status = 1;
        child_running = false;
        g_spawn_close_pid(pid);
        g_main_loop_quit(loop);
}

static gboolean on_kill_timeout(gpointer userdata) {
        kill_timer = 0;
        if (child_running) {
                fprintf(stderr, "mnsim: child %d did not exit, killing it\n", (int) child_pid);
                kill(child_pid, SIGKILL);
        }
        return G_SOURCE_REMOVE;
}

static gboolean on_signal(gpointer userdata) {
        int sig = GPOINTER_TO_INT(userdata);

        if (child_running) {
                /* The child decides when we are done: its exit ends the loop. */
                kill(child_pid, sig);
                if (!kill_timer)
                        kill_timer = g_timeout_add_seconds(CHILD_KILL_TIMEOUT_S, on_kill_timeout, NULL);
        } else {
                exit_status = 0;
                g_main_loop_quit(loop);
        }
        return G_SOURCE_CONTINUE;
}

static char **child_environment(struct mn_sim *sim, const char *control_path) {
        char **env = g_get_environ();
        const char *preload = g_environ_getenv(env, "LD_PRELOAD");
        const char *asan = g_environ_getenv(env, "ASAN_OPTIONS");
        g_autofree char *new_preload = NULL;
        g_autofree char *new_asan = NULL;

        if (preload && strstr(preload, "libumockdev-preload"))
                new_preload = g_strdup(preload);
        else if (preload && *preload)
                new_preload = g_strconcat(PRELOAD_LIB ":", preload, NULL);
        else
                new_preload = g_strdup(PRELOAD_LIB);
        env = g_environ_setenv(env, "LD_PRELOAD", new_preload, true);
        env = g_environ_setenv(env, "UMOCKDEV_DIR", sim->root_dir, true);
        env = g_environ_setenv(env, "MNSIM_CONTROL", control_path, true);
        /* An AddressSanitizer child would refuse to run with the preload first. */
        if (!asan || !*asan)
                new_asan = g_strdup("verify_asan_link_order=0");
        else if (!strstr(asan, "verify_asan_link_order"))
                new_asan = g_strconcat(asan, ":verify_asan_link_order=0", NULL);
        if (new_asan)
                env = g_environ_setenv(env, "ASAN_OPTIONS", new_asan, true);
        return env;
}

/* umockdev 0.17 complains (g_critical) whenever it drops the connection of a
 * client that died inside an ioctl, which usb-pen.c relies on to release
 * that client's claim: expected, as a kernel's clean-up after a killed
 * process is.  Everything else goes through unchanged. */
static void on_glib_log(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer userdata) {
        if (message && strstr(message, "Destroying IoctlClient with open stream"))
                return;
        g_log_default_handler(domain, level, message, userdata);
}

/* ---- command line ---- */

static void help(void) {
        printf("Usage: mnsim [OPTIONS] [--] [COMMAND [ARGS...]]\n"
               "       mnsim ctl [--control PATH] CONTROL-COMMAND [ARGS...]\n"
               "\n"
               "Simulated microneedling pens as USB devices (umockdev). With COMMAND, runs it\n"
               "with the pens visible (LD_PRELOAD=" PRELOAD_LIB ", UMOCKDEV_DIR and\n"
               "MNSIM_CONTROL set) and exits with its status; without, runs until SIGINT or\n"
               "SIGTERM and prints the environment other programs need.\n"
               "\n"
               "Options:\n"
               "  -u, --usb N          vendor-class USB pens (default 1), serials MNU-0001...\n"
               "  -s, --serial N       CDC-ACM serial pens (default 0), serials MNS-0001...\n"
               "  -c, --cartridge      insert a cartridge into every pen at start\n"
               "                       (CART-U1-0001, CART-S1-0001, ...)\n"
               "  -C, --control PATH   control socket (default: in the testbed directory)\n"
               "  -S, --seed S         seed for boot ids and fault injection (default: random)\n"
               "  -h, --help           this help\n"
               "  -V, --version        version\n"
               "\n"
               "Control commands (one per line on the socket, or mnsim ctl COMMAND...):\n"
               "%s"
               "Replies are one line: \"ok ...\" or \"error: <sentence>\". mnsim ctl prints the\n"
               "reply and exits 0 for ok, 1 for error, 2 when there is no reply.\n",
               control_usage);
}

static int parse_count(const char *s, const char *opt, unsigned *ret) {
        char *end;
        long v;

        errno = 0;
        v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < 0 || v > MNSIM_MAX_PENS) {
                fprintf(stderr, "mnsim: bad value '%s' for %s: expected a number of pens from 0 to %d\n",
                        s, opt, MNSIM_MAX_PENS);
                return -EINVAL;
        }
        *ret = (unsigned) v;
        return 0;
}

static int ctl_main(int argc, char **argv) {
        static const struct option options[] = {
                { "control", required_argument, NULL, 'C' },
                { "help", no_argument, NULL, 'h' },
                {}
        };
        const char *path = getenv("MNSIM_CONTROL");
        int c;

        while ((c = getopt_long(argc, argv, "+C:h", options, NULL)) >= 0)
                switch (c) {
                case 'C':
                        path = optarg;
                        break;
                case 'h':
                        printf("Usage: mnsim ctl [--control PATH] COMMAND [ARGS...]\n"
                               "PATH defaults to $MNSIM_CONTROL. Commands:\n%s", control_usage);
                        return 0;
                default:
                        return 2;
                }
        return control_client(path, argc - optind, argv + optind);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "usb", required_argument, NULL, 'u' },
                { "serial", required_argument, NULL, 's' },
                { "cartridge", no_argument, NULL, 'c' },
                { "control", required_argument, NULL, 'C' },
                { "seed", required_argument, NULL, 'S' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                {}
        };
        struct mn_sim *sim = &the_sim;
        unsigned n_usb = 1, n_serial = 0;
        bool cartridge = false;
        const char *control_path = NULL;
        g_autofree char *default_control = NULL;
        uint64_t seed = ((uint64_t) g_random_int() << 32) | g_random_int();
        struct control *ctl = NULL;
        g_autoptr(GError) err = NULL;
        char *error = NULL;
        int c;

        if (argc > 1 && strcmp(argv[1], "ctl") == 0)
                return ctl_main(argc - 1, argv + 1);

        while ((c = getopt_long(argc, argv, "+u:s:cC:S:hV", options, NULL)) >= 0)
                switch (c) {
                case 'u':
                        if (parse_count(optarg, "--usb", &n_usb) < 0)
                                return 2;
                        break;
                case 's':
                        if (parse_count(optarg, "--serial", &n_serial) < 0)
                                return 2;
                        break;
                case 'c':
                        cartridge = true;
                        break;
                case 'C':
                        control_path = optarg;
                        break;
                case 'S': {
                        char *end;
                        errno = 0;
                        seed = strtoull(optarg, &end, 0);
                        if (errno || end == optarg || *end) {
                                fprintf(stderr, "mnsim: bad value '%s' for --seed: expected an unsigned integer\n",
                                        optarg);
                                return 2;
                        }
                        break;
                }
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("mnsim %s\n", MNSIM_VERSION);
                        return 0;
                default:
                        fprintf(stderr, "Try 'mnsim --help'.\n");
                        return 2;
                }
        if (n_usb + n_serial == 0) {
                fprintf(stderr, "mnsim: no pens: give --usb N or --serial N with N > 0\n");
                return 2;
        }

        /* umockdev's uevent sender looks the device up with libudev in this
         * process: it only finds the testbed's /sys through the preload, as
         * under umockdev-run.  So run ourselves under it. */
        {
                const char *preload = getenv("LD_PRELOAD");

                if (!preload || !strstr(preload, "libumockdev-preload")) {
                        const char *asan = getenv("ASAN_OPTIONS");
                        g_autofree char *p = preload && *preload ? g_strconcat(PRELOAD_LIB ":", preload, NULL)
                                                                 : g_strdup(PRELOAD_LIB);

                        setenv("LD_PRELOAD", p, 1);
                        if (!asan || !strstr(asan, "verify_asan_link_order")) {
                                g_autofree char *a = asan && *asan ? g_strconcat(asan, ":verify_asan_link_order=0", NULL)
                                                                   : g_strdup("verify_asan_link_order=0");
                                setenv("ASAN_OPTIONS", a, 1);
                        }
                        unsetenv("UMOCKDEV_DIR");
                        execv("/proc/self/exe", argv);
                        fprintf(stderr, "mnsim: cannot re-execute myself with %s preloaded: %s\n",
                                PRELOAD_LIB, strerror(errno));
                        return 1;
                }
        }

        g_log_set_handler(NULL, G_LOG_LEVEL_CRITICAL | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION, on_glib_log, NULL);
        g_mutex_init(&sim->lock);
        sim->ctx = g_main_context_default();
        sim->pens = g_ptr_array_new();
        loop = g_main_loop_new(sim->ctx, false);

        sim->testbed = umockdev_testbed_new();
        sim->root_dir = umockdev_testbed_get_root_dir(sim->testbed);
        if (!control_path)
                control_path = default_control = g_build_filename(sim->root_dir, "mnsim.sock", NULL);

        exit_status = 1;
        if (mn_testbed_add_base(sim, &error) < 0) {
                fprintf(stderr, "mnsim: %s\n", error);
                g_free(error);
                goto finish;
        }
        for (unsigned k = 0; k < 2; k++)
                for (unsigned i = 1; i <= (k == 0 ? n_usb : n_serial); i++) {
                        enum mn_pen_kind kind = k == 0 ? MN_PEN_USB : MN_PEN_SERIAL;
                        struct mn_pen *p = pen_new(sim, kind, i, seed);

                        if (!p) {
                                fprintf(stderr, "mnsim: cannot create pen model: out of memory\n");
                                goto finish;
                        }
                        g_ptr_array_add(sim->pens, p);
                        if (cartridge) {
                                g_autofree char *id = g_strdup_printf("CART-%c%u-0001", k == 0 ? 'U' : 'S', i);
                                int r = sim_pen_insert_cartridge(p->model, mn_now_us(), id);
                                if (r < 0) {
                                        fprintf(stderr, "mnsim: pen %s refused cartridge %s: %s\n", p->serial, id,
                                                g_strerror(-r));
                                        goto finish;
                                }
                        }
                        if (mn_pen_plug(p, &error) < 0) {
                                fprintf(stderr, "mnsim: %s\n", error);
                                g_free(error);
                                goto finish;
                        }
                }

        ctl = control_new(sim, control_path, &error);
        if (!ctl) {
                fprintf(stderr, "mnsim: %s\n", error);
                g_free(error);
                goto finish;
        }

        g_unix_signal_add(SIGINT, on_signal, GINT_TO_POINTER(SIGINT));
        g_unix_signal_add(SIGTERM, on_signal, GINT_TO_POINTER(SIGTERM));
        g_unix_signal_add(SIGHUP, on_signal, GINT_TO_POINTER(SIGHUP));

        if (optind < argc) {
                g_auto(GStrv) env = child_environment(sim, control_path);

                if (!g_spawn_async(NULL, argv + optind, env,
                                   G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CHILD_INHERITS_STDIN,
                                   NULL, NULL, &child_pid, &err)) {
                        fprintf(stderr, "mnsim: cannot run %s: %s\n", argv[optind], err->message);
                        exit_status = 127;
                        goto finish;
                }
                child_running = true;
                g_child_watch_add(child_pid, on_child_exit, NULL);
        } else {
                fprintf(stderr, "mnsim: %u USB and %u serial pen(s) running; stop with Ctrl-C. Pens:",
                        n_usb, n_serial);
                for (guint i = 0; i < sim->pens->len; i++) {
                        struct mn_pen *p = sim->pens->pdata[i];
                        fprintf(stderr, " %s (%s)", p->serial, p->devnode);
                }
                fprintf(stderr, "\nmnsim: run programs against them with this environment:\n");
                printf("export UMOCKDEV_DIR=%s\n"
                       "export LD_PRELOAD=%s${LD_PRELOAD:+:$LD_PRELOAD}\n"
                       "export MNSIM_CONTROL=%s\n",
                       sim->root_dir, PRELOAD_LIB, control_path);
                fflush(stdout);
        }

        g_main_loop_run(loop);

finish:
        if (child_running) {
                int status;

                kill(child_pid, SIGTERM);
                if (waitpid(child_pid, &status, 0) == child_pid)
                        exit_status = 128 + SIGTERM;
        }
        if (kill_timer)
                g_source_remove(kill_timer);
        control_free(ctl);

        /* Unplug everything (clients still connected get ENODEV), then stop
         * umockdev's worker from touching the pens and remove the testbed. */
        for (guint i = 0; i < sim->pens->len; i++) {
                struct mn_pen *p = sim->pens->pdata[i];
                if (p->plugged)
                        (void) mn_pen_unplug(p, &error);
        }
        g_mutex_lock(&sim->lock);
        sim->closing = true;
        g_mutex_unlock(&sim->lock);
        g_clear_object(&sim->testbed);
        for (guint i = 0; i < sim->pens->len; i++)
                pen_free(sim->pens->pdata[i]);
        g_ptr_array_unref(sim->pens);
        g_free(sim->root_dir);
        g_main_loop_unref(loop);
        return exit_status;
}
