/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bench-mnd: what mnd costs and how fast it stops a pen, measured end to end.
 *
 *   mnsim --usb 8 --serial 16 --cartridge -- bench-mnd [--quick] MND
 *   bench-mnd --mnsim MNSIM [--quick] MND        (starts itself under mnsim)
 *
 * Runs inside mnsim (MNSIM_CONTROL set).  Starts a private dbus-daemon and mnd
 * (--user) as its children and measures:
 *   1. the SetDepth round trip (D-Bus, daemon, pen and back) beside trivial
 *      calls to the daemon on the same connection;
 *   2. Pen.Stop to needles stopped, at the pen (mnsim's motion_changed_us);
 *   3. SIGKILL of mnd to needles stopped (the lease running out);
 *   4. mnd's memory and CPU with no pens, serial pens only, and USB + serial.
 * Exits non-zero only when something is wrong (a call fails, a pen does not
 * stop, mnd does not come up), never because a figure is slow.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#define _printf_(a, b) __attribute__((__format__(printf, a, b)))
#define _noreturn_ __attribute__((__noreturn__))

#define MND_NAME        "org.microneedle.Mnd1"
#define MANAGER_PATH    "/org/microneedle/Mnd1"
#define MANAGER_IFACE   "org.microneedle.Mnd1.Manager"
#define PEN_PATH_PREFIX "/org/microneedle/Mnd1/pen"
#define PEN_IFACE       "org.microneedle.Mnd1.Pen"

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC  1000000ULL
#define NSEC_PER_USEC 1000ULL

#define MAX_PENS 64
#define SAFE_STOP_MS 300            /* the bound for a pen whose host died */
#define DOC_HEARTBEAT_MS 50         /* mnd's documented defaults (daemon/mnd.conf) */
#define DOC_LEASE_MS 200

struct sim_pen {
        char serial[32];
        bool usb;
        bool plugged;
        char *path;                 /* the D-Bus object path mnd gives it */
        uint32_t depth_a, depth_b;  /* two valid depths */
        uint32_t speed;             /* a valid speed */
};

struct sim_status {
        bool moving;
        bool plugged;
        uint64_t motion_changed_us;
        unsigned lease_left_ms;
        uint64_t frames_received;
        char state[16];
        char faults[96];
};

struct params {
        unsigned calls;             /* part 1, per pen */
        unsigned stop_runs;         /* part 2, per pen */
        unsigned kill_runs;         /* part 3 */
        uint64_t settle_us;         /* part 4 */
        uint64_t interval_us;
        unsigned max_pens;          /* part 4 */
};

static const struct params params_default = {
        .calls = 500, .stop_runs = 10, .kill_runs = 8,
        .settle_us = 1500 * USEC_PER_MSEC, .interval_us = 5 * USEC_PER_SEC, .max_pens = 16,
};
static const struct params params_quick = {
        .calls = 100, .stop_runs = 3, .kill_runs = 2,
        .settle_us = 500 * USEC_PER_MSEC, .interval_us = 1 * USEC_PER_SEC, .max_pens = 2,
};

static bool arg_quick = false;
static const char *arg_mnd = NULL;
static const char *arg_mnsim = NULL;
static const struct params *P = &params_default;

static char bench_dir[PATH_MAX];
static char log_path[PATH_MAX + 16];
static bool have_dir = false;
static pid_t dbus_pid = 0, mnd_pid = 0;
static sd_bus *bus = NULL;
static int ctl_fd = -1;
static char ctl_buf[8192];
static size_t ctl_len = 0;
static struct sim_pen pens[MAX_PENS];
static unsigned n_pens = 0;
static unsigned cartridge_counter = 0;
static uint64_t bench_start_us = 0;

/* ---- small things ---- */

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static uint64_t now_us(void) {
        return now_ns() / NSEC_PER_USEC;
}

static void sleep_us(uint64_t us) {
        struct timespec ts = {
                .tv_sec = (time_t) (us / USEC_PER_SEC),
                .tv_nsec = (long) (us % USEC_PER_SEC) * 1000L,
        };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

/* Nearest rank on a sorted array: the smallest value with at least p of the samples at or below it. */
static uint64_t rank(const uint64_t *sorted, size_t n, double p) {
        size_t i;

        if (n == 0)
                return 0;
        i = (size_t) (p * (double) n + 0.999999);
        if (i < 1)
                i = 1;
        if (i > n)
                i = n;
        return sorted[i - 1];
}

static void dump_log_tail(void) {
        char line[1024];
        char **lines = NULL;
        size_t n = 0, first;
        FILE *f;

        if (!have_dir)
                return;
        f = fopen(log_path, "re");
        if (!f)
                return;
        while (fgets(line, sizeof(line), f)) {
                char **l = realloc(lines, (n + 1) * sizeof(char *));

                if (!l)
                        break;
                lines = l;
                lines[n] = strdup(line);
                if (!lines[n])
                        break;
                n++;
        }
        fclose(f);
        first = n > 40 ? n - 40 : 0;
        fprintf(stderr, "---- last %zu lines of the mnd/dbus-daemon log ----\n", n - first);
        for (size_t i = 0; i < n; i++) {
                if (i >= first)
                        fputs(lines[i], stderr);
                free(lines[i]);
        }
        free(lines);
        fprintf(stderr, "----\n");
}

static _noreturn_ _printf_(1, 2) void fail(const char *fmt, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "bench-mnd: FAIL: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        dump_log_tail();
        exit(EXIT_FAILURE);     /* cleanup() runs from atexit */
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
        (void) remove(path);
        return 0;
}

static void stop_mnd_hard(void) {
        if (mnd_pid > 0) {
                (void) kill(mnd_pid, SIGKILL);
                (void) waitpid(mnd_pid, NULL, 0);
                mnd_pid = 0;
        }
}

static void cleanup(void) {
        bus = sd_bus_flush_close_unref(bus);
        stop_mnd_hard();
        if (dbus_pid > 0) {
                (void) kill(dbus_pid, SIGTERM);
                (void) waitpid(dbus_pid, NULL, 0);
                dbus_pid = 0;
        }
        if (ctl_fd >= 0) {
                close(ctl_fd);
                ctl_fd = -1;
        }
        if (have_dir) {
                (void) nftw(bench_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
                have_dir = false;
        }
        for (unsigned i = 0; i < n_pens; i++) {
                free(pens[i].path);
                pens[i].path = NULL;
        }
}

/* SIGTERM (mnsim forwards it), SIGINT, SIGHUP: no child may outlive us. */
static void on_fatal_signal(int sig) {
        if (mnd_pid > 0)
                (void) kill(mnd_pid, SIGKILL);
        if (dbus_pid > 0)
                (void) kill(dbus_pid, SIGTERM);
        _exit(128 + sig);
}

/* Starts argv as a child that dies with us; its stdout and stderr go to the log. */
static pid_t spawn(const char *const argv[], int fd3) {
        pid_t parent = getpid(), pid;
        int log_fd;

        log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0)
                fail("cannot open %s: %m", log_path);
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                fail("fork: %m");
        if (pid == 0) {
                int null;

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(127);
                null = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
                    dup2(log_fd, STDERR_FILENO) < 0)
                        _exit(127);
                if (fd3 == 3) {
                        if (fcntl(3, F_SETFD, 0) < 0)
                                _exit(127);
                } else if (fd3 >= 0 && dup2(fd3, 3) < 0)
                        _exit(127);
                execvp(argv[0], (char *const *) argv);
                fprintf(stderr, "bench-mnd: cannot execute %s: %m\n", argv[0]);
                _exit(127);
        }
        close(log_fd);
        return pid;
}

static const char *describe_status(int status, char *buf, size_t size) {
        if (WIFEXITED(status))
                snprintf(buf, size, "exit status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                snprintf(buf, size, "signal %s", strsignal(WTERMSIG(status)));
        else
                snprintf(buf, size, "wait status 0x%x", (unsigned) status);
        return buf;
}

static void check_mnd_alive(void) {
        char buf[64];
        int status;
        pid_t r;

        if (mnd_pid <= 0)
                fail("mnd is not running");
        r = waitpid(mnd_pid, &status, WNOHANG);
        if (r == mnd_pid) {
                mnd_pid = 0;
                fail("mnd died unexpectedly (%s)", describe_status(status, buf, sizeof(buf)));
        }
}

/* ---- mnsim's control socket ---- */

static void ctl_connect(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *path = getenv("MNSIM_CONTROL");

        if (!path || strlen(path) >= sizeof(sa.sun_path))
                fail("MNSIM_CONTROL is not set (or too long): run me under mnsim");
        strcpy(sa.sun_path, path);
        ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (ctl_fd < 0)
                fail("socket: %m");
        if (connect(ctl_fd, (const struct sockaddr *) &sa, sizeof(sa)) < 0)
                fail("cannot connect to mnsim's control socket %s: %m", path);
}

/* One command, one reply line (malloc'd, without the newline). */
static _printf_(1, 2) char *ctl(const char *fmt, ...) {
        char cmd[512];
        size_t len, done = 0;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(cmd, sizeof(cmd) - 1, fmt, ap);
        va_end(ap);
        if (n < 0 || (size_t) n >= sizeof(cmd) - 1)
                fail("mnsim command too long");
        len = (size_t) n;
        cmd[len++] = '\n';
        while (done < len) {
                ssize_t k = write(ctl_fd, cmd + done, len - done);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        fail("writing to mnsim's control socket: %m");
                done += (size_t) k;
        }
        for (;;) {
                char *nl = memchr(ctl_buf, '\n', ctl_len);
                ssize_t k;

                if (nl) {
                        size_t l = (size_t) (nl - ctl_buf);
                        char *reply = strndup(ctl_buf, l);

                        if (!reply)
                                fail("out of memory");
                        memmove(ctl_buf, nl + 1, ctl_len - l - 1);
                        ctl_len -= l + 1;
                        return reply;
                }
                if (ctl_len == sizeof(ctl_buf))
                        fail("mnsim's reply is too long");
                k = read(ctl_fd, ctl_buf + ctl_len, sizeof(ctl_buf) - ctl_len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        fail("reading mnsim's control socket: %m");
                if (k == 0)
                        fail("mnsim closed its control socket");
                ctl_len += (size_t) k;
        }
}

static void ctl_ok(const char *what, char *reply) {
        if (strncmp(reply, "ok", 2) != 0)
                fail("mnsim refused '%s': %s", what, reply);
        free(reply);
}

static void sim_status(const struct sim_pen *p, struct sim_status *s) {
        char *reply = ctl("status %s", p->serial), *save = NULL;

        if (strncmp(reply, "ok ", 3) != 0)
                fail("mnsim status %s: %s", p->serial, reply);
        *s = (struct sim_status) {};
        for (char *t = strtok_r(reply + 3, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                char *v = strchr(t, '=');

                if (!v)
                        continue;
                *v++ = '\0';
                if (strcmp(t, "needles_moving") == 0)
                        s->moving = strcmp(v, "1") == 0;
                else if (strcmp(t, "plugged") == 0)
                        s->plugged = strcmp(v, "1") == 0;
                else if (strcmp(t, "motion_changed_us") == 0)
                        s->motion_changed_us = strtoull(v, NULL, 10);
                else if (strcmp(t, "lease_left_ms") == 0)
                        s->lease_left_ms = (unsigned) strtoul(v, NULL, 10);
                else if (strcmp(t, "frames_received") == 0)
                        s->frames_received = strtoull(v, NULL, 10);
                else if (strcmp(t, "state") == 0)
                        snprintf(s->state, sizeof(s->state), "%s", v);
                else if (strcmp(t, "faults") == 0)
                        snprintf(s->faults, sizeof(s->faults), "%s", v);
        }
        free(reply);
}

/* Polls the pen until needles_moving is as wanted; false on timeout. */
static bool sim_wait_moving(const struct sim_pen *p, bool want, uint64_t timeout_us, struct sim_status *ret) {
        uint64_t end = now_us() + timeout_us;

        for (;;) {
                sim_status(p, ret);
                if (ret->moving == want)
                        return true;
                if (now_us() > end)
                        return false;
                sleep_us(2000);
        }
}

static void sim_list(void) {
        char *reply = ctl("list"), *save = NULL;

        if (strncmp(reply, "ok", 2) != 0)
                fail("mnsim list: %s", reply);
        /* "ok MNU-0001 usb plugged idle; MNS-0001 serial unplugged running" */
        for (char *e = strtok_r(reply + 2, ";", &save); e; e = strtok_r(NULL, ";", &save)) {
                char serial[32], kind[16], plugged[16];
                struct sim_pen *p;

                if (sscanf(e, " %31s %15s %15s", serial, kind, plugged) != 3)
                        continue;
                if (n_pens >= MAX_PENS)
                        break;
                p = &pens[n_pens++];
                snprintf(p->serial, sizeof(p->serial), "%s", serial);
                p->usb = strcmp(kind, "usb") == 0;
                p->plugged = strcmp(plugged, "plugged") == 0;
                if (sd_bus_path_encode(PEN_PATH_PREFIX, p->serial, &p->path) < 0)
                        fail("out of memory");
        }
        free(reply);
        if (n_pens == 0)
                fail("mnsim has no pens");
}

static void sim_set_plugged(const bool want[]) {
        for (unsigned i = 0; i < n_pens; i++) {
                if (pens[i].plugged == want[i])
                        continue;
                ctl_ok(want[i] ? "plug" : "unplug",
                       ctl("%s %s", want[i] ? "plug" : "unplug", pens[i].serial));
                pens[i].plugged = want[i];
        }
}

/* ---- D-Bus ---- */

static void start_bus(void) {
        char sock[PATH_MAX + 32], addr[1024];
        const char *argv[] = { "dbus-daemon", "--session", "--nofork", "--nopidfile", "--print-address=3",
                               sock, NULL };
        struct pollfd pfd;
        size_t len = 0;
        int fds[2], r;

        snprintf(sock, sizeof(sock), "--address=unix:path=%s/bus.sock", bench_dir);
        if (pipe2(fds, O_CLOEXEC) < 0)
                fail("pipe: %m");
        dbus_pid = spawn(argv, fds[1]);
        close(fds[1]);
        pfd = (struct pollfd) { .fd = fds[0], .events = POLLIN };
        while (!memchr(addr, '\n', len)) {
                ssize_t k;

                r = poll(&pfd, 1, 10000);
                if (r == 0)
                        fail("dbus-daemon did not print its address within 10 s");
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        fail("poll: %m");
                k = read(fds[0], addr + len, sizeof(addr) - 1 - len);
                if (k <= 0)
                        fail("dbus-daemon exited without printing its address");
                len += (size_t) k;
                if (len >= sizeof(addr) - 1)
                        fail("dbus-daemon's address is too long");
        }
        close(fds[0]);
        addr[len] = '\0';
        addr[strcspn(addr, "\n")] = '\0';
        if (setenv("DBUS_SESSION_BUS_ADDRESS", addr, 1) < 0)
                fail("setenv: %m");
        r = sd_bus_open_user_with_description(&bus, "bench-mnd");
        if (r < 0)
                fail("cannot connect to the private bus %s: %s", addr, strerror(-r));
}

static char *get_string(const char *path, const char *iface, const char *name, sd_bus_error *error) {
        char *s = NULL;

        if (sd_bus_get_property_string(bus, MND_NAME, path, iface, name, error, &s) < 0)
                return NULL;
        return s;
}

static char *must_get_string(const char *path, const char *iface, const char *name) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        char *s = get_string(path, iface, name, &error);

        if (!s)
                fail("Get %s.%s on %s: %s", iface, name, path, error.message ?: error.name);
        return s;
}

static bool pen_state_is(const struct sim_pen *p, const char *state) {
        char *s = must_get_string(p->path, PEN_IFACE, "State");
        bool r = strcmp(s, state) == 0;

        free(s);
        return r;
}

static void pen_call(const struct sim_pen *p, const char *member) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(bus, MND_NAME, p->path, PEN_IFACE, member, &error, NULL, NULL);
        if (r < 0)
                fail("%s on %s: %s", member, p->serial, error.message ?: strerror(-r));
        sd_bus_error_free(&error);
}

/* Picks two valid depths near 0.5 mm and a valid speed from the ranges the pen reports. */
static void pen_pick_values(struct sim_pen *p) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        uint32_t min, max, step, smin, smax, a;
        int r;

        r = sd_bus_get_property(bus, MND_NAME, p->path, PEN_IFACE, "DepthRangeUm", &error, &reply, "(uuu)");
        if (r >= 0)
                r = sd_bus_message_read(reply, "(uuu)", &min, &max, &step);
        if (r < 0)
                fail("Get DepthRangeUm on %s: %s", p->serial, error.message ?: strerror(-r));
        reply = sd_bus_message_unref(reply);
        r = sd_bus_get_property(bus, MND_NAME, p->path, PEN_IFACE, "SpeedRangeHz", &error, &reply, "(uu)");
        if (r >= 0)
                r = sd_bus_message_read(reply, "(uu)", &smin, &smax);
        if (r < 0)
                fail("Get SpeedRangeHz on %s: %s", p->serial, error.message ?: strerror(-r));
        reply = sd_bus_message_unref(reply);
        if (step == 0 || max < min)
                fail("pen %s reports a bad depth range (%" PRIu32 ", %" PRIu32 ", %" PRIu32 ")", p->serial, min, max,
                     step);

        a = (500 + step - 1) / step * step;
        if (a < min)
                a = (min + step - 1) / step * step;
        if (a > max)
                a = max / step * step;
        p->depth_a = a;
        p->depth_b = a + step <= max && a + step <= 2000 ? a + step : a - step;
        if (p->depth_b < min)
                p->depth_b = a;     /* a one-value range: the same depth twice */
        p->speed = 100 < smin ? smin : 100 > smax ? smax : 100;
}

/* ---- mnd ---- */

/* Until mnd lists exactly the pens plugged in mnsim, each connected. */
static void wait_ready(void) {
        uint64_t end = now_us() + 20 * USEC_PER_SEC;
        char last[256] = "no answer yet";

        for (;; sleep_us(20000)) {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                sd_bus_message *reply = NULL;
                unsigned listed = 0, wanted = 0, ready = 0;
                const char *path;
                int r;

                check_mnd_alive();
                if (now_us() > end)
                        fail("mnd did not list its pens as connected within 20 s (%s)", last);

                r = sd_bus_get_property(bus, MND_NAME, MANAGER_PATH, MANAGER_IFACE, "Pens", &error, &reply, "ao");
                if (r < 0) {
                        snprintf(last, sizeof(last), "Get Pens: %s", error.message ?: strerror(-r));
                        sd_bus_error_free(&error);
                        continue;
                }
                r = sd_bus_message_enter_container(reply, 'a', "o");
                while (r >= 0 && (r = sd_bus_message_read(reply, "o", &path)) > 0)
                        listed++;
                sd_bus_message_unref(reply);
                if (r < 0)
                        fail("cannot parse the Pens property: %s", strerror(-r));

                for (unsigned i = 0; i < n_pens; i++) {
                        char *state;

                        if (!pens[i].plugged)
                                continue;
                        wanted++;
                        state = get_string(pens[i].path, PEN_IFACE, "State", &error);
                        sd_bus_error_free(&error);
                        if (state && (strcmp(state, "idle") == 0 || strcmp(state, "fault") == 0 ||
                                      strcmp(state, "running") == 0))
                                ready++;
                        free(state);
                }
                snprintf(last, sizeof(last), "%u pens listed, %u of %u expected connected", listed, ready, wanted);
                if (listed == wanted && ready == wanted)
                        return;
        }
}

static void mnd_start(void) {
        char state_dir[PATH_MAX + 16];
        const char *argv[] = { arg_mnd, "--user", "--state-dir", state_dir, "--config", "/dev/null", NULL };

        snprintf(state_dir, sizeof(state_dir), "%s/state", bench_dir);
        mnd_pid = spawn(argv, -1);
        wait_ready();
}

static void mnd_stop(void) {
        uint64_t end = now_us() + 10 * USEC_PER_SEC;
        char buf[64];
        int status;

        if (mnd_pid <= 0)
                return;
        if (kill(mnd_pid, SIGTERM) < 0)
                fail("kill mnd: %m");
        for (;;) {
                pid_t r = waitpid(mnd_pid, &status, WNOHANG);

                if (r == mnd_pid)
                        break;
                if (now_us() > end) {
                        stop_mnd_hard();
                        fail("mnd did not exit within 10 s of SIGTERM");
                }
                sleep_us(5000);
        }
        mnd_pid = 0;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                fail("mnd did not exit cleanly on SIGTERM (%s)", describe_status(status, buf, sizeof(buf)));
}

/* ---- sessions ---- */

/*
 * Makes the pen idle, in mnsim's truth and in mnd's view: clears a fault (a lease that ran out),
 * stops a session.  Right after a (re)connection mnd says "idle" until the pen's first STATUS
 * arrives (up to 100 ms), even for a pen in fault, so wait until both agree.
 */
static void pen_make_idle(const struct sim_pen *p) {
        uint64_t end = now_us() + 5 * USEC_PER_SEC;
        bool cleared = false, stopped = false;

        for (;; sleep_us(5000)) {
                struct sim_status st;
                char *s;

                sim_status(p, &st);
                s = must_get_string(p->path, PEN_IFACE, "State");
                if (strcmp(s, "idle") == 0 && strcmp(st.state, "idle") == 0) {
                        free(s);
                        return;
                }
                if (now_us() > end)
                        fail("pen %s stays '%s' in mnd, '%s' in mnsim (faults '%s'), not idle", p->serial, s,
                             st.state, st.faults);
                if (strcmp(s, "fault") == 0 && strcmp(st.state, "fault") == 0 && !cleared) {
                        pen_call(p, "ClearFault");
                        cleared = true;
                } else if (strcmp(s, "running") == 0 && !stopped) {
                        pen_call(p, "Stop");
                        stopped = true;
                }
                free(s);
        }
}

/* A new sterile cartridge (a used one is refused, as it should be), once mnd has seen it. */
static void pen_new_cartridge(const struct sim_pen *p) {
        char id[33], what[96];
        uint64_t end;

        snprintf(id, sizeof(id), "BENCH-%d-%u", (int) getpid(), ++cartridge_counter);
        free(ctl("remove-cartridge %s", p->serial));   /* an error when there is none: fine */
        snprintf(what, sizeof(what), "cartridge %s %s", p->serial, id);
        ctl_ok(what, ctl("%s", what));
        end = now_us() + 3 * USEC_PER_SEC;
        for (;; sleep_us(5000)) {
                char *c = must_get_string(p->path, PEN_IFACE, "Cartridge");
                bool seen = strcmp(c, id) == 0;

                free(c);
                if (seen)
                        return;
                if (now_us() > end)
                        fail("mnd did not see the new cartridge %s in pen %s within 3 s", id, p->serial);
        }
}

static void pen_start_session(const struct sim_pen *p) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        struct sim_status st;
        int r;

        pen_make_idle(p);
        pen_new_cartridge(p);
        r = sd_bus_call_method(bus, MND_NAME, p->path, PEN_IFACE, "StartSession", &error, NULL, "a{sv}", 5,
                               "area", "s", "face", "duration_s", "u", (uint32_t) 600, "depth_um", "u", p->depth_a,
                               "speed_hz", "u", p->speed, "operator", "s", "bench-mnd");
        if (r < 0)
                fail("StartSession on %s: %s", p->serial, error.message ?: strerror(-r));
        if (!sim_wait_moving(p, true, 3 * USEC_PER_SEC, &st))
                fail("pen %s: needles not moving 3 s after StartSession succeeded (state %s)", p->serial,
                     st.state);
}

/* ---- 1. SetDepth round trip ---- */

static void print_row(const char *pen, const char *kind, const char *call, size_t n, uint64_t *ns) {
        qsort(ns, n, sizeof(uint64_t), cmp_u64);
        printf("   %-9s %-7s %-30s %5zu %9.1f %9.1f %9.1f\n", pen, kind, call, n,
               (double) rank(ns, n, 0.5) / 1000.0, (double) rank(ns, n, 0.99) / 1000.0,
               (double) ns[n - 1] / 1000.0);
}

static void bench_set_depth(const struct sim_pen *p) {
        const unsigned warmup = 10, n = P->calls;
        uint64_t *set = calloc(n, sizeof(uint64_t)), *get = calloc(n, sizeof(uint64_t)),
                 *ping = calloc(n, sizeof(uint64_t));
        uint64_t set_med, get_med, set_p99, get_p99;

        if (!set || !get || !ping)
                fail("out of memory");
        pen_make_idle(p);
        for (unsigned i = 0; i < warmup + n; i++) {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                sd_bus_message *reply = NULL;
                uint64_t t0, t1, t2, t3;
                int r;

                t0 = now_ns();
                r = sd_bus_call_method(bus, MND_NAME, p->path, PEN_IFACE, "SetDepth", &error, NULL, "u",
                                       i % 2 ? p->depth_b : p->depth_a);
                t1 = now_ns();
                if (r < 0)
                        fail("SetDepth %" PRIu32 " on %s (call %u): %s", i % 2 ? p->depth_b : p->depth_a,
                             p->serial, i, error.message ?: strerror(-r));
                r = sd_bus_call_method(bus, MND_NAME, MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                                       &error, &reply, "ss", MANAGER_IFACE, "Version");
                t2 = now_ns();
                sd_bus_message_unref(reply);
                if (r < 0)
                        fail("Get Manager.Version: %s", error.message ?: strerror(-r));
                r = sd_bus_call_method(bus, MND_NAME, "/", "org.freedesktop.DBus.Peer", "Ping", &error, NULL,
                                       NULL);
                t3 = now_ns();
                if (r < 0)
                        fail("Peer.Ping to mnd: %s", error.message ?: strerror(-r));
                if (i < warmup)
                        continue;
                set[i - warmup] = t1 - t0;
                get[i - warmup] = t2 - t1;
                ping[i - warmup] = t3 - t2;
        }
        print_row(p->serial, p->usb ? "usb" : "serial", "SetDepth (daemon + pen)", n, set);
        print_row("", "", "Get Manager.Version", n, get);
        print_row("", "", "Peer.Ping", n, ping);
        set_med = rank(set, n, 0.5);
        get_med = rank(get, n, 0.5);
        set_p99 = rank(set, n, 0.99);
        get_p99 = rank(get, n, 0.99);
        printf("   %-9s %-7s %-30s %5s %9.1f %9.1f\n", "", "", "SetDepth - Get Version", "",
               ((double) set_med - (double) get_med) / 1000.0, ((double) set_p99 - (double) get_p99) / 1000.0);
        fflush(stdout);
        free(set);
        free(get);
        free(ping);
}

/* ---- 2. Stop to needles stopped ---- */

static void bench_stop(const struct sim_pen *p) {
        const unsigned n = P->stop_runs;
        uint64_t *lat = calloc(n, sizeof(uint64_t)), *rep = calloc(n, sizeof(uint64_t));
        unsigned before_reply = 0;

        if (!lat || !rep)
                fail("out of memory");
        for (unsigned i = 0; i < n; i++) {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                struct sim_status st;
                uint64_t t0, t1;
                int r;

                pen_start_session(p);
                /* Land the Stop anywhere in the heartbeat period. */
                sleep_us(20000 + (uint64_t) (rand() % 50000));
                t0 = now_us();
                r = sd_bus_call_method(bus, MND_NAME, p->path, PEN_IFACE, "Stop", &error, NULL, NULL);
                t1 = now_us();
                if (r < 0)
                        fail("Stop on %s: %s", p->serial, error.message ?: strerror(-r));
                if (!sim_wait_moving(p, false, 2 * USEC_PER_SEC, &st))
                        fail("pen %s: needles still moving 2 s after Stop returned", p->serial);
                if (st.motion_changed_us < t0)
                        fail("pen %s: needles stopped at %" PRIu64 " us, before Stop was called at %" PRIu64 " us",
                             p->serial, st.motion_changed_us, t0);
                lat[i] = st.motion_changed_us - t0;
                rep[i] = t1 - t0;
                if (st.motion_changed_us <= t1)
                        before_reply++;
        }
        qsort(lat, n, sizeof(uint64_t), cmp_u64);
        qsort(rep, n, sizeof(uint64_t), cmp_u64);
        printf("   %-9s %-7s %4u %10.2f %9.2f %12.2f %9.2f   %u/%u\n", p->serial, p->usb ? "usb" : "serial", n,
               (double) rank(lat, n, 0.5) / 1000.0, (double) lat[n - 1] / 1000.0,
               (double) rank(rep, n, 0.5) / 1000.0, (double) rep[n - 1] / 1000.0, before_reply, n);
        fflush(stdout);
        free(lat);
        free(rep);
}

/* ---- 3. SIGKILL to needles stopped ---- */

/* While p runs: the largest lease_left_ms seen, and the host's frame interval at the pen. */
static void observe_lease(const struct sim_pen *p, unsigned *ret_lease_ms, double *ret_frame_ms) {
        struct sim_status a, b, s;
        uint64_t ta, tb, end;

        *ret_lease_ms = 0;
        *ret_frame_ms = 0;
        sim_status(p, &a);
        ta = now_us();
        end = ta + (arg_quick ? 300 : 600) * USEC_PER_MSEC;
        while (now_us() < end) {
                sim_status(p, &s);
                if (s.lease_left_ms > *ret_lease_ms)
                        *ret_lease_ms = s.lease_left_ms;
                sleep_us(3000);
        }
        sim_status(p, &b);
        tb = now_us();
        if (a.moving && b.moving && b.frames_received > a.frames_received)
                *ret_frame_ms = (double) (tb - ta) / 1000.0 / (double) (b.frames_received - a.frames_received);
}

static void bench_kill(struct sim_pen *const *run, unsigned n_run) {
        const unsigned n = P->kill_runs;
        uint64_t *lat = calloc((size_t) n * n_run, sizeof(uint64_t));
        char faults[MAX_PENS][96] = {};
        unsigned lease_ms = 0;
        double frame_ms = 0;
        uint64_t all_max = 0;
        bool met;

        if (!lat)
                fail("out of memory");
        for (unsigned k = 0; k < n; k++) {
                uint64_t t_kill;

                for (unsigned j = 0; j < n_run; j++)
                        pen_start_session(run[j]);
                if (k == 0)
                        observe_lease(run[0], &lease_ms, &frame_ms);
                sleep_us(20000 + (uint64_t) (rand() % 50000));

                check_mnd_alive();
                t_kill = now_us();
                if (kill(mnd_pid, SIGKILL) < 0)
                        fail("kill -KILL mnd: %m");
                (void) waitpid(mnd_pid, NULL, 0);
                mnd_pid = 0;

                for (unsigned j = 0; j < n_run; j++) {
                        struct sim_status st;

                        if (!sim_wait_moving(run[j], false, 3 * USEC_PER_SEC, &st))
                                fail("pen %s: needles still moving 3 s after mnd was killed (lease_left_ms %u)",
                                     run[j]->serial, st.lease_left_ms);
                        if (st.motion_changed_us < t_kill)
                                fail("pen %s: needles stopped before mnd was killed", run[j]->serial);
                        lat[j * n + k] = st.motion_changed_us - t_kill;
                        snprintf(faults[j], sizeof(faults[j]), "%s", st.faults[0] ? st.faults : "(none)");
                }
                /* The new mnd claims the USB pen the killed one held (as the kernel, mnsim
                 * releases a dead client's claim). */
                mnd_start();
        }

        printf("   settings: mnd --config /dev/null, i.e. its built-in defaults (documented in daemon/mnd.conf:\n"
               "   heartbeat_ms=%u, lease_ms=%u); observed at the pen while running: lease_left_ms up to %u,\n"
               "   one host frame every %.1f ms\n\n", DOC_HEARTBEAT_MS, DOC_LEASE_MS, lease_ms, frame_ms);
        printf("   %-9s %-7s %4s %10s %9s   %s\n", "pen", "kind", "N", "median ms", "max ms", "fault at the pen");
        for (unsigned j = 0; j < n_run; j++) {
                uint64_t *l = lat + (size_t) j * n;

                qsort(l, n, sizeof(uint64_t), cmp_u64);
                if (l[n - 1] > all_max)
                        all_max = l[n - 1];
                printf("   %-9s %-7s %4u %10.2f %9.2f   %s\n", run[j]->serial, run[j]->usb ? "usb" : "serial", n,
                       (double) rank(l, n, 0.5) / 1000.0, (double) l[n - 1] / 1000.0, faults[j]);
        }
        met = all_max <= SAFE_STOP_MS * USEC_PER_MSEC;
        printf("\n   bound: every pen stopped within %u ms of SIGKILL; worst %.2f ms\n", SAFE_STOP_MS,
               (double) all_max / 1000.0);
        printf("   target met: %s\n", met ? "yes" : "no");
        fflush(stdout);
        free(lat);
}

/* ---- 4. memory and CPU ---- */

static bool proc_cpu_ticks(pid_t pid, uint64_t *ret) {
        char path[64], buf[2048], *p;
        unsigned long long utime, stime;
        ssize_t k;
        int fd;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        k = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (k <= 0)
                return false;
        buf[k] = '\0';
        p = strrchr(buf, ')');
        /* after "pid (comm)": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
                return false;
        *ret = utime + stime;
        return true;
}

static void proc_memory(pid_t pid, unsigned long *rss_kb, unsigned long *hwm_kb) {
        char path[64], line[256];
        FILE *f;

        *rss_kb = *hwm_kb = 0;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        f = fopen(path, "re");
        if (!f)
                fail("cannot read %s: %m", path);
        while (fgets(line, sizeof(line), f)) {
                if (strncmp(line, "VmRSS:", 6) == 0)
                        *rss_kb = strtoul(line + 6, NULL, 10);
                else if (strncmp(line, "VmHWM:", 6) == 0)
                        *hwm_kb = strtoul(line + 6, NULL, 10);
        }
        fclose(f);
}

/* mnsim re-executes itself through /proc/self/exe, so its comm is "exe": look at the binary. */
static bool parent_is_mnsim(void) {
        char path[64], exe[PATH_MAX];
        const char *base;
        ssize_t k;

        snprintf(path, sizeof(path), "/proc/%d/exe", (int) getppid());
        k = readlink(path, exe, sizeof(exe) - 1);
        if (k <= 0)
                return false;
        exe[k] = '\0';
        base = strrchr(exe, '/');
        return strcmp(base ? base + 1 : exe, "mnsim") == 0;
}

/* Run time of every thread of pid in ns, from /proc/PID/task/TID/schedstat (finer than ticks). */
static bool proc_sched_ns(pid_t pid, uint64_t *ret) {
        char path[64];
        struct dirent *de;
        uint64_t sum = 0;
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/task", (int) pid);
        d = opendir(path);
        if (!d)
                return false;
        while ((de = readdir(d))) {
                char p2[64 + sizeof(de->d_name) + 16];
                unsigned long long ns;
                FILE *f;

                if (de->d_name[0] == '.')
                        continue;
                snprintf(p2, sizeof(p2), "%s/%s/schedstat", path, de->d_name);
                f = fopen(p2, "re");
                if (!f)
                        continue;       /* the thread just ended */
                if (fscanf(f, "%llu", &ns) == 1)
                        sum += ns;
                fclose(f);
        }
        closedir(d);
        *ret = sum;
        return true;
}

struct load_config {
        char label[48];
        const char *note;
        bool plug[MAX_PENS];
        bool sessions;
};

static void bench_load(const struct load_config *c) {
        long hz = sysconf(_SC_CLK_TCK);
        pid_t sim = getppid();
        bool have_sim = parent_is_mnsim();
        uint64_t m0 = 0, m1 = 0, n0 = 0, n1 = 0, s0 = 0, s1 = 0, t0, t1;
        unsigned long rss, hwm;
        unsigned n = 0;
        char sim_cpu[16] = "-";
        double secs;

        mnd_stop();
        sim_set_plugged(c->plug);
        mnd_start();
        for (unsigned i = 0; i < n_pens; i++)
                if (c->plug[i]) {
                        n++;
                        if (c->sessions) {
                                pen_pick_values(&pens[i]);
                                pen_start_session(&pens[i]);
                        }
                }
        sleep_us(P->settle_us);
        check_mnd_alive();
        t0 = now_us();
        if (!proc_cpu_ticks(mnd_pid, &m0) || !proc_sched_ns(mnd_pid, &n0))
                fail("cannot read /proc/%d/stat or schedstat", (int) mnd_pid);
        if (have_sim)
                have_sim = proc_cpu_ticks(sim, &s0);
        sleep_us(P->interval_us);
        check_mnd_alive();
        t1 = now_us();
        if (!proc_cpu_ticks(mnd_pid, &m1) || !proc_sched_ns(mnd_pid, &n1))
                fail("cannot read /proc/%d/stat or schedstat", (int) mnd_pid);
        secs = (double) (t1 - t0) / 1e6;
        if (have_sim && proc_cpu_ticks(sim, &s1))
                snprintf(sim_cpu, sizeof(sim_cpu), "%.1f %%", 100.0 * (double) (s1 - s0) / (double) hz / secs);
        proc_memory(mnd_pid, &rss, &hwm);
        if (c->sessions)
                for (unsigned i = 0; i < n_pens; i++)
                        if (c->plug[i] && !pen_state_is(&pens[i], "running"))
                                fail("pen %s stopped running during the measurement", pens[i].serial);

        printf("   %-34s %4u %7lu kB %7lu kB %7.1f %% %7.2f %% %9s   %s\n", c->label, n, rss, hwm,
               100.0 * (double) (m1 - m0) / (double) hz / secs, 100.0 * (double) (n1 - n0) / 1e9 / secs, sim_cpu,
               c->note);
        fflush(stdout);
}

/* ---- main ---- */

static void help(void) {
        printf("Usage: mnsim --usb 8 --serial 16 --cartridge -- bench-mnd [--quick] MND\n"
               "       bench-mnd --mnsim MNSIM [--quick] MND\n"
               "\n"
               "Measures mnd (the binary MND) against simulated pens: the SetDepth round trip, Stop\n"
               "and SIGKILL to needles stopped, memory and CPU.  Starts its own dbus-daemon and mnd.\n"
               "\n"
               "  --quick        Small counts, for CI (mnsim --usb 1 --serial 1 is enough)\n"
               "  --mnsim PATH   Not under mnsim yet: run under PATH with 8 USB and 16 serial pens\n"
               "                 (1 and 1 with --quick)\n"
               "  -h --help      Show this help\n");
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_QUICK = 0x100, ARG_MNSIM };
        static const struct option options[] = {
                { "quick", no_argument,       NULL, ARG_QUICK },
                { "mnsim", required_argument, NULL, ARG_MNSIM },
                { "help",  no_argument,       NULL, 'h' },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case ARG_QUICK:
                        arg_quick = true;
                        break;
                case ARG_MNSIM:
                        arg_mnsim = optarg;
                        break;
                case 'h':
                        help();
                        return 0;
                default:
                        return -EINVAL;
                }
        if (optind != argc - 1) {
                fprintf(stderr, "bench-mnd: expected one argument, the mnd binary; see --help\n");
                return -EINVAL;
        }
        arg_mnd = argv[optind];
        return 1;
}

/* Not under mnsim but told where it is: start over under it. */
static void reexec_under_mnsim(void) {
        char self[PATH_MAX], mnd[PATH_MAX];
        const char *argv[16];
        unsigned i = 0;
        ssize_t k;

        k = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (k < 0)
                fail("readlink /proc/self/exe: %m");
        self[k] = '\0';
        if (!realpath(arg_mnd, mnd))
                fail("cannot find mnd at %s: %m", arg_mnd);
        argv[i++] = arg_mnsim;
        argv[i++] = "--usb";
        argv[i++] = arg_quick ? "1" : "8";
        argv[i++] = "--serial";
        argv[i++] = arg_quick ? "1" : "16";
        argv[i++] = "--cartridge";
        argv[i++] = "--";
        argv[i++] = self;
        if (arg_quick)
                argv[i++] = "--quick";
        argv[i++] = mnd;
        argv[i] = NULL;
        execvp(argv[0], (char *const *) argv);
        fail("cannot execute %s: %m", arg_mnsim);
}

int main(int argc, char *argv[]) {
        struct sim_pen *usb = NULL, *serial = NULL, *run[2];
        unsigned n_run = 0, n_usb = 0, n_serial = 0;
        struct sigaction sa = { .sa_handler = on_fatal_signal };
        const char *tmp;
        bool plug[MAX_PENS] = {};
        struct load_config cfg;
        int r;

        setvbuf(stdout, NULL, _IOLBF, 0);
        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
        P = arg_quick ? &params_quick : &params_default;
        if (!getenv("MNSIM_CONTROL") && arg_mnsim)
                reexec_under_mnsim();
        if (access(arg_mnd, X_OK) < 0) {
                fprintf(stderr, "bench-mnd: cannot execute mnd at %s: %m\n", arg_mnd);
                return EXIT_FAILURE;
        }

        bench_start_us = now_us();
        srand((unsigned) getpid());
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        atexit(cleanup);

        tmp = getenv("TMPDIR");
        snprintf(bench_dir, sizeof(bench_dir), "%s/bench-mnd.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(bench_dir))
                fail("mkdtemp %s: %m", bench_dir);
        have_dir = true;
        snprintf(log_path, sizeof(log_path), "%s/mnd.log", bench_dir);

        ctl_connect();
        sim_list();
        for (unsigned i = 0; i < n_pens; i++) {
                if (pens[i].usb) {
                        n_usb++;
                        if (!usb)
                                usb = &pens[i];
                } else {
                        n_serial++;
                        if (!serial)
                                serial = &pens[i];
                }
        }
        if (serial)
                run[n_run++] = serial;
        if (usb)
                run[n_run++] = usb;

        start_bus();

        printf("bench-mnd: mnd %s on a private dbus-daemon, pens simulated by mnsim (%u USB, %u serial)%s\n",
               arg_mnd, n_usb, n_serial, arg_quick ? ", --quick" : "");
        {
                double load[1] = { -1 };

                (void) getloadavg(load, 1);
                printf("Machine: %ld CPUs online, load average %.2f at the start (other work competes for the CPUs).\n",
                       sysconf(_SC_NPROCESSORS_ONLN), load[0]);
        }
        printf("Parts 1-3 run with one pen of each kind plugged in (the others unplugged); times are\n"
               "CLOCK_MONOTONIC, the pens' own motion_changed_us included.  Under umockdev a USB pen's libusb\n"
               "transfers are emulated (about 0.7 ms per OUT+IN round trip): USB figures are not hardware figures.\n\n");

        /* Parts 1 to 3: the first pen of each kind only; part 1's first pen (the serial one) alone,
         * so that no emulated libusb spins beside it. */
        for (unsigned i = 0; i < n_pens; i++)
                plug[i] = &pens[i] == run[0];
        sim_set_plugged(plug);
        mnd_start();
        pen_pick_values(run[0]);

        printf("1. SetDepth round trip: D-Bus -> mnd -> pen -> mnd -> D-Bus\n"
               "   method: N iterations per pen (after 10 not counted), each a SetDepth (alternately %" PRIu32
               " and %" PRIu32 " um),\n"
               "   then Properties.Get(Manager.Version) and Peer.Ping to mnd: synchronous sd_bus_call_method() on\n"
               "   one connection, CLOCK_MONOTONIC around each call; median and p99 by nearest rank.\n"
               "   The serial pen is measured alone (no USB pen connected: its emulation spins, see 4.), then mnd\n"
               "   is restarted with the USB pen plugged in too; the difference rows subtract medians and p99s.\n\n",
               run[0]->depth_a, run[0]->depth_b);
        printf("   %-9s %-7s %-30s %5s %9s %9s %9s\n", "pen", "kind", "call", "N", "median us", "p99 us",
               "max us");
        bench_set_depth(run[0]);
        if (n_run > 1) {
                /* Pens are plugged only while mnd is down: mnsim announces a USB pen ("add") before
                 * its ioctl emulation exists, and umockdev's preload ends a client (mnd) that opens
                 * the node in that window with exit status 1. */
                mnd_stop();
                for (unsigned i = 0; i < n_pens; i++)
                        plug[i] = &pens[i] == run[0] || &pens[i] == run[1];
                sim_set_plugged(plug);
                mnd_start();
                pen_pick_values(run[1]);
                bench_set_depth(run[1]);
        }

        printf("\n2. Pen.Stop -> needles stopped at the pen\n"
               "   method: N runs per pen: new cartridge, StartSession (face, %" PRIu32 " um), wait until mnsim reports\n"
               "   needles_moving=1, wait 20-70 ms, t0 = CLOCK_MONOTONIC, synchronous Pen.Stop; latency =\n"
               "   the pen's motion_changed_us - t0; reply = Stop's D-Bus round trip.\n\n",
               run[0]->depth_a);
        printf("   %-9s %-7s %4s %10s %9s %12s %9s   %s\n", "pen", "kind", "N", "median ms", "max ms",
               "reply med ms", "max ms", "stopped before reply");
        for (unsigned j = 0; j < n_run; j++)
                bench_stop(run[j]);

        printf("\n3. SIGKILL of mnd -> needles stopped (lease expiry)\n"
               "   method: N runs: a session on each pen, wait 20-70 ms, t_kill = CLOCK_MONOTONIC, SIGKILL mnd,\n"
               "   poll mnsim until needles_moving=0; latency = motion_changed_us - t_kill; mnd restarted\n"
               "   (same state directory) and the pens' faults cleared before the next run.\n");
        bench_kill(run, n_run);

        printf("\n4. mnd memory and CPU\n"
               "   method: mnd restarted with the pens shown plugged in, idle pens stream STATUS every 100 ms\n"
               "   and mnd heartbeats every 50 ms; after %.1f s settling, utime+stime from /proc/PID/stat over\n"
               "   %.1f s as a percentage of one core (resolution 1 tick = 1/%ld s), and the same from the\n"
               "   threads' /proc/PID/task/*/schedstat (ns); VmRSS and VmHWM from /proc/PID/status at the end.\n"
               "   mnsim's own CPU (the pen models and umockdev's emulation) beside it for context.\n"
               "   Which pens: serial (CDC-ACM) pens only is the honest figure: mnd reads their ttys (ptys here)\n"
               "   from sd-event, no busy loop.  USB pens under umockdev make libusb's event thread spin (the\n"
               "   emulated usbfs node is a plain file that always polls ready: ~0.3 s CPU per second), so the\n"
               "   mixed row is reported but says nothing about real hardware.\n\n",
               (double) P->settle_us / 1e6, (double) P->interval_us / 1e6, sysconf(_SC_CLK_TCK));
        printf("   %-34s %4s %10s %10s %9s %9s %9s\n", "configuration", "pens", "VmRSS", "VmHWM", "mnd CPU",
               "(sched)", "mnsim CPU");

        cfg = (struct load_config) { .note = "baseline" };
        snprintf(cfg.label, sizeof(cfg.label), "no pens");
        bench_load(&cfg);

        {
                unsigned k = 0;

                cfg = (struct load_config) { .note = "the honest figure: no libusb" };
                for (unsigned i = 0; i < n_pens; i++)
                        if (!pens[i].usb && k < P->max_pens) {
                                cfg.plug[i] = true;
                                k++;
                        }
                snprintf(cfg.label, sizeof(cfg.label), "%u serial, idle", k);
                if (k > 0) {
                        bench_load(&cfg);
                        if (!arg_quick) {
                                cfg.sessions = true;
                                cfg.note = "the same, every pen needling";
                                snprintf(cfg.label, sizeof(cfg.label), "%u serial, each running a session", k);
                                bench_load(&cfg);
                        }
                }
        }
        {
                unsigned ku = 0, ks = 0;

                cfg = (struct load_config) { .note = "emulation-dominated: libusb spins under umockdev" };
                for (unsigned i = 0; i < n_pens; i++)
                        if (pens[i].usb && ku < P->max_pens / 2) {
                                cfg.plug[i] = true;
                                ku++;
                        }
                for (unsigned i = 0; i < n_pens; i++)
                        if (!pens[i].usb && ks + ku < P->max_pens) {
                                cfg.plug[i] = true;
                                ks++;
                        }
                snprintf(cfg.label, sizeof(cfg.label), "%u usb + %u serial, idle", ku, ks);
                if (ku > 0)
                        bench_load(&cfg);
        }
        mnd_stop();

        printf("\nbench-mnd: done in %.1f s\n", (double) (now_us() - bench_start_us) / 1e6);
        return EXIT_SUCCESS;
}
