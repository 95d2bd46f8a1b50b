/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mnd-harness.h"

struct harness *h_current;

static bool streq_ptr(const char *a, const char *b) {
        return a && b && strcmp(a, b) == 0;
}

/* ---- time and output ---- */

uint64_t h_now_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * SEC + (uint64_t) ts.tv_nsec / 1000u;
}

void h_sleep_us(uint64_t us) {
        struct timespec ts = { .tv_sec = (time_t) (us / SEC), .tv_nsec = (long) (us % SEC) * 1000 };

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

void h_ok(const char *fmt, ...) {
        va_list ap;

        printf("ok: ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        fflush(stdout);
}

char *h_read_log(const struct harness *h) {
        FILE *f = fopen(h->log, "re");
        char *buf = NULL;
        size_t size = 0;

        if (!f)
                return strdup("");
        {
                FILE *m = open_memstream(&buf, &size);
                char chunk[4096];
                size_t n;

                if (!m) {
                        fclose(f);
                        return strdup("");
                }
                while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
                        fwrite(chunk, 1, n, m);
                fclose(m);
        }
        fclose(f);
        return buf;
}

static void show_log_tail(const struct harness *h, size_t lines) {
        char *log = h_read_log(h), *p;
        size_t n = 0;

        if (!log)
                return;
        for (p = log + strlen(log); p > log; p--)
                if (p[-1] == '\n' && ++n > lines)
                        break;
        fprintf(stderr, "---- the last %zu lines of mnd's log (%s) ----\n%s---- end of mnd's log ----\n", lines,
                h->log, p);
        free(log);
}

static _Noreturn void fail_tail(void) {
        if (h_current) {
                h_dump_events(h_current, h_current->n_events > 40 ? h_current->n_events - 40 : 0);
                show_log_tail(h_current, 120);
        }
        exit(EXIT_FAILURE);
}

_Noreturn void h_fail(const char *file, int line, const char *fmt, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "FAIL: %s:%d: ", file, line);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n");
        fail_tail();
}

_Noreturn void h_fail_check(const char *file, int line, const char *cond, const char *fmt, ...) {
        va_list ap;

        fflush(stdout);
        fprintf(stderr, "FAIL: %s:%d: check '%s' failed: ", file, line, cond);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, "\n");
        fail_tail();
}

/* ---- children and cleanup ---- */

static void kill_children(void) {
        struct harness *h = h_current;

        if (!h)
                return;
        if (h->mnd_pid > 0)
                (void) kill(h->mnd_pid, SIGKILL);
        if (h->bus_pid > 0)
                (void) kill(h->bus_pid, SIGKILL);
}

static void on_fatal_signal(int sig) {
        kill_children();
        signal(sig, SIG_DFL);
        raise(sig);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        if (flag == FTW_DP)
                (void) rmdir(path);
        else
                (void) unlink(path);
        return 0;
}

static void cleanup(void) {
        struct harness *h = h_current;

        if (!h)
                return;
        kill_children();
        if (h->mnd_pid > 0)
                (void) waitpid(h->mnd_pid, NULL, 0);
        if (h->bus_pid > 0)
                (void) waitpid(h->bus_pid, NULL, 0);
        h->mnd_pid = h->bus_pid = 0;
        h->bus = sd_bus_flush_close_unref(h->bus);
        if (h->ctl_fd >= 0)
                close(h->ctl_fd);
        h->ctl_fd = -1;
        if (h->dir[0] && !getenv("MND_ITEST_KEEP")) {
                (void) umount2(h->state_dir, MNT_DETACH);      /* a test may have mounted one there */
                (void) nftw(h->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        free(h->events);
        h->events = NULL;
        h_current = NULL;
}

static int connect_control(void) {
        const char *path = getenv("MNSIM_CONTROL");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (!path || strlen(path) >= sizeof sa.sun_path)
                return -1;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

void h_init(struct harness *h, int argc, char *argv[]) {
        static const int fatal[] = { SIGINT, SIGTERM, SIGHUP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL };
        const char *tmp = getenv("TMPDIR") ?: "/tmp";

        *h = (struct harness) { .ctl_fd = -1 };
        h_current = h;
        setvbuf(stdout, NULL, _IOLBF, 0);
        atexit(cleanup);
        for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
                signal(fatal[i], on_fatal_signal);
        signal(SIGPIPE, SIG_IGN);

        CHECK(argc >= 2, "usage: %s MND (run it inside mnsim)", argv[0]);
        h->mnd_binary = argv[1];
        CHECK(access(h->mnd_binary, X_OK) == 0, "%s is not executable", h->mnd_binary);

        snprintf(h->dir, sizeof h->dir, "%s/mnd-itest.XXXXXX", tmp);
        CHECK(mkdtemp(h->dir), "cannot create a directory in %s: %m", tmp);
        /* Another uid (the AccessDenied test) must reach the bus socket. */
        CHECK(chmod(h->dir, 0755) == 0, "chmod %s: %m", h->dir);
        snprintf(h->state_dir, sizeof h->state_dir, "%s/state", h->dir);
        snprintf(h->log, sizeof h->log, "%s/mnd.log", h->dir);

        h->ctl_fd = connect_control();
        CHECK(h->ctl_fd >= 0, "cannot connect to mnsim's control socket '%s' (run the test inside mnsim): %m",
              getenv("MNSIM_CONTROL") ?: "(MNSIM_CONTROL not set)");
}

void h_set_config(struct harness *h, const char *text) {
        FILE *f;

        if (!text) {
                h->config[0] = '\0';
                return;
        }
        snprintf(h->config, sizeof h->config, "%s/mnd.conf", h->dir);
        f = fopen(h->config, "we");
        CHECK(f, "cannot write %s: %m", h->config);
        fputs(text, f);
        CHECK(fclose(f) == 0, "cannot write %s: %m", h->config);
}

static void child_setup(void) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGPIPE, SIG_DFL);
}

/* ---- the bus ---- */

static int on_signal_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error);

void h_start_bus(struct harness *h) {
        char conf[320], sock[300], line[512] = "";
        int pipefd[2], r;
        size_t n = 0;
        FILE *f;

        snprintf(sock, sizeof sock, "%s/bus.sock", h->dir);
        snprintf(conf, sizeof conf, "%s/bus.conf", h->dir);
        f = fopen(conf, "we");
        CHECK(f, "cannot write %s: %m", conf);
        /* A session bus that lets any uid connect (the AccessDenied test runs a client as nobody). */
        fprintf(f,
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
                " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                "<busconfig>\n"
                "  <type>session</type>\n"
                "  <listen>unix:path=%s</listen>\n"
                "  <auth>EXTERNAL</auth>\n"
                "  <policy context=\"default\">\n"
                "    <allow user=\"*\"/>\n"
                "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
                "    <allow eavesdrop=\"true\"/>\n"
                "    <allow own=\"*\"/>\n"
                "  </policy>\n"
                "</busconfig>\n", sock);
        CHECK(fclose(f) == 0, "cannot write %s: %m", conf);

        CHECK(pipe2(pipefd, O_CLOEXEC) == 0, "pipe: %m");
        h->bus_pid = fork();
        CHECK(h->bus_pid >= 0, "fork: %m");
        if (h->bus_pid == 0) {
                char arg[400], log[300];
                int fd;

                child_setup();
                snprintf(log, sizeof log, "%s/bus.log", h->dir);
                fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0 || dup2(fd, STDERR_FILENO) < 0 || dup2(pipefd[1], 3) < 0)
                        _exit(127);
                snprintf(arg, sizeof arg, "--config-file=%s", conf);
                execlp("dbus-daemon", "dbus-daemon", arg, "--nofork", "--nopidfile", "--print-address=3",
                       (char *) NULL);
                _exit(127);
        }
        close(pipefd[1]);
        for (;;) {
                ssize_t k = read(pipefd[0], line + n, sizeof line - 1 - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t) k;
                line[n] = '\0';
                if (strchr(line, '\n') || n == sizeof line - 1)
                        break;
        }
        close(pipefd[0]);
        line[strcspn(line, "\n")] = '\0';
        CHECK(line[0], "dbus-daemon did not print its address");
        CHECK(strlen(line) < sizeof h->bus_address, "dbus-daemon's address is too long: %s", line);
        memcpy(h->bus_address, line, strlen(line) + 1);
        CHECK(chmod(sock, 0777) == 0, "chmod %s: %m", sock);

        r = sd_bus_new(&h->bus);
        CHECK(r >= 0, "sd_bus_new: %s", strerror(-r));
        r = sd_bus_set_address(h->bus, h->bus_address);
        CHECK(r >= 0, "sd_bus_set_address: %s", strerror(-r));
        (void) sd_bus_set_bus_client(h->bus, 1);
        r = sd_bus_start(h->bus);
        CHECK(r >= 0, "cannot connect to the test bus %s: %s", h->bus_address, strerror(-r));
        r = sd_bus_add_match(h->bus, NULL, "type='signal',path_namespace='" MND_PATH "'", on_signal_message, h);
        CHECK(r >= 0, "sd_bus_add_match: %s", strerror(-r));
}

static bool name_has_owner(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        int has = 0, r;

        r = sd_bus_call_method(h->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", &e, &reply, "s", MND_NAME);
        CHECK(r >= 0, "NameHasOwner: %s", e.message);
        r = sd_bus_message_read(reply, "b", &has);
        CHECK(r >= 0, "NameHasOwner reply: %s", strerror(-r));
        sd_bus_message_unref(reply);
        sd_bus_error_free(&e);
        return has;
}

void h_start_mnd(struct harness *h) {
        uint64_t deadline;
        int status;

        CHECK(h->bus, "h_start_bus() first");
        CHECK(h->mnd_pid == 0, "mnd is running already");
        h->mnd_runs++;
        h->mnd_pid = fork();
        CHECK(h->mnd_pid >= 0, "fork: %m");
        if (h->mnd_pid == 0) {
                int fd;

                child_setup();
                fd = open(h->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
                if (fd < 0 || dup2(fd, STDERR_FILENO) < 0 || dup2(fd, STDOUT_FILENO) < 0)
                        _exit(127);
                dprintf(fd, "==== mnd run %u ====\n", h->mnd_runs);
                setenv("DBUS_SESSION_BUS_ADDRESS", h->bus_address, 1);
                setenv("MND_LOG_LEVEL", getenv("MND_ITEST_LOG_LEVEL") ?: "debug", 1);
                execl(h->mnd_binary, h->mnd_binary, "--user", "--state-dir", h->state_dir,
                      "--config", h->config[0] ? h->config : "/dev/null", (char *) NULL);
                _exit(127);
        }

        deadline = h_now_us() + 10 * SEC;
        for (;;) {
                pid_t p = waitpid(h->mnd_pid, &status, WNOHANG);

                if (p == h->mnd_pid) {
                        h->mnd_pid = 0;
                        h_fail(__FILE__, __LINE__, "mnd exited (status 0x%x) before it owned %s", status, MND_NAME);
                }
                if (name_has_owner(h))
                        break;
                CHECK(h_now_us() < deadline, "mnd did not own %s within 10 s", MND_NAME);
                h_pump(h, 10 * MSEC);
        }
}

/* A sanitizer report in mnd's log fails the test, whatever mnd's exit status was. */
static void check_log_clean(const struct harness *h) {
        static const char *const markers[] = { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" };
        char *log = h_read_log(h);

        for (size_t i = 0; i < ELEMENTSOF(markers); i++)
                CHECK(!strstr(log, markers[i]), "mnd's log has a sanitizer report ('%s')", markers[i]);
        free(log);
}

int h_stop_mnd(struct harness *h, int sig, uint64_t timeout_us) {
        uint64_t deadline = h_now_us() + timeout_us;
        int status = 0;

        CHECK(h->mnd_pid > 0, "mnd is not running");
        CHECK(kill(h->mnd_pid, sig) == 0, "kill: %m");
        for (;;) {
                pid_t p = waitpid(h->mnd_pid, &status, WNOHANG);

                if (p == h->mnd_pid)
                        break;
                CHECK(h_now_us() < deadline, "mnd did not exit within %" PRIu64 " ms of signal %d",
                      timeout_us / MSEC, sig);
                /* Keep reading the bus: mnd's last signals are recorded, and it never blocks on us. */
                h_pump(h, 5 * MSEC);
        }
        h->mnd_pid = 0;
        check_log_clean(h);
        return status;
}

void h_stop_mnd_clean(struct harness *h) {
        int status = h_stop_mnd(h, SIGTERM, 3 * SEC);

        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "mnd did not exit 0 on SIGTERM (wait status 0x%x)",
              status);
}

/* ---- signals ---- */

static void format_variant(sd_bus_message *m, char *buf, size_t size) {
        const char *contents = NULL, *s;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        CHECK(r > 0 && type == 'v', "expected a variant");
        r = sd_bus_message_enter_container(m, 'v', contents);
        CHECK(r >= 0, "enter variant: %s", strerror(-r));
        switch (contents[0]) {
        case 's':
        case 'o':
        case 'g':
                r = sd_bus_message_read_basic(m, contents[0], &s);
                snprintf(buf, size, "%s", s);
                break;
        case 'u': {
                uint32_t v;
                r = sd_bus_message_read_basic(m, 'u', &v);
                snprintf(buf, size, "%" PRIu32, v);
                break;
        }
        case 't': {
                uint64_t v;
                r = sd_bus_message_read_basic(m, 't', &v);
                snprintf(buf, size, "%" PRIu64, v);
                break;
        }
        case 'y': {
                uint8_t v;
                r = sd_bus_message_read_basic(m, 'y', &v);
                snprintf(buf, size, "%u", (unsigned) v);
                break;
        }
        case 'b': {
                int v;
                r = sd_bus_message_read_basic(m, 'b', &v);
                snprintf(buf, size, "%s", v ? "true" : "false");
                break;
        }
        default:
                snprintf(buf, size, "(%s)", contents);
                r = sd_bus_message_skip(m, contents);
                break;
        }
        CHECK(r >= 0, "reading a '%s' variant: %s", contents, strerror(-r));
        r = sd_bus_message_exit_container(m);
        CHECK(r >= 0, "exit variant: %s", strerror(-r));
}

static struct h_event *add_event(struct harness *h, sd_bus_message *m) {
        struct h_event *ev;

        if (h->n_events == h->allocated_events) {
                size_t a = h->allocated_events ? h->allocated_events * 2 : 256;
                struct h_event *p = realloc(h->events, a * sizeof *p);

                CHECK(p, "out of memory");
                h->events = p;
                h->allocated_events = a;
        }
        ev = &h->events[h->n_events++];
        *ev = (struct h_event) { .t_us = h_now_us() };
        snprintf(ev->path, sizeof ev->path, "%s", sd_bus_message_get_path(m) ?: "");
        snprintf(ev->member, sizeof ev->member, "%s", sd_bus_message_get_member(m) ?: "");
        return ev;
}

static int on_signal_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct harness *h = userdata;
        const char *member = sd_bus_message_get_member(m) ?: "";
        const char *s, *s2;
        int r;

        if (sd_bus_message_is_signal(m, "org.freedesktop.DBus.Properties", "PropertiesChanged")) {
                r = sd_bus_message_read(m, "s", &s);
                CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                r = sd_bus_message_enter_container(m, 'a', "{sv}");
                CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                        struct h_event *ev;
                        char value[256];

                        r = sd_bus_message_read(m, "s", &s);
                        CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                        format_variant(m, value, sizeof value);
                        ev = add_event(h, m);
                        snprintf(ev->prop, sizeof ev->prop, "%s", s);
                        snprintf(ev->value, sizeof ev->value, "%s", value);
                        r = sd_bus_message_exit_container(m);
                        CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                }
                CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                r = sd_bus_message_exit_container(m);
                CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                r = sd_bus_message_enter_container(m, 'a', "s");
                CHECK(r >= 0, "PropertiesChanged: %s", strerror(-r));
                while ((r = sd_bus_message_read(m, "s", &s)) > 0) {
                        struct h_event *ev = add_event(h, m);

                        snprintf(ev->prop, sizeof ev->prop, "%s", s);
                        snprintf(ev->value, sizeof ev->value, "<invalidated>");
                }
                return 0;
        }

        if (streq_ptr(member, "PenAdded") || streq_ptr(member, "PenRemoved") ||
            streq_ptr(member, "InterfacesAdded") || streq_ptr(member, "InterfacesRemoved")) {
                struct h_event *ev;

                r = sd_bus_message_read(m, "o", &s);
                CHECK(r >= 0, "%s: %s", member, strerror(-r));
                ev = add_event(h, m);
                snprintf(ev->value, sizeof ev->value, "%s", s);
                return 0;
        }

        if (streq_ptr(member, "Fault")) {
                struct h_event *ev;

                r = sd_bus_message_read(m, "ss", &s, &s2);
                CHECK(r >= 0, "Fault: wrong signature '%s': %s", sd_bus_message_get_signature(m, true),
                      strerror(-r));
                ev = add_event(h, m);
                snprintf(ev->prop, sizeof ev->prop, "%s", s);
                snprintf(ev->value, sizeof ev->value, "%s", s2);
                return 0;
        }

        (void) add_event(h, m);
        return 0;
}

void h_pump(struct harness *h, uint64_t timeout_us) {
        uint64_t deadline = h_now_us() + timeout_us;

        for (;;) {
                uint64_t now;
                int r = sd_bus_process(h->bus, NULL);

                CHECK(r >= 0, "sd_bus_process: %s", strerror(-r));
                if (r > 0)
                        continue;
                now = h_now_us();
                if (now >= deadline)
                        return;
                r = sd_bus_wait(h->bus, deadline - now);
                CHECK(r >= 0 || r == -EINTR, "sd_bus_wait: %s", strerror(-r));
        }
}

size_t h_mark(const struct harness *h) {
        return h->n_events;
}

static bool field_matches(const char *want, const char *have) {
        return !want || strcmp(want, have) == 0;
}

const struct h_event *h_find(const struct harness *h, size_t from, const char *path, const char *member,
                             const char *prop, const char *value) {
        for (size_t i = from; i < h->n_events; i++) {
                const struct h_event *ev = &h->events[i];

                if (field_matches(path, ev->path) && field_matches(member, ev->member) &&
                    field_matches(prop, ev->prop) && field_matches(value, ev->value))
                        return ev;
        }
        return NULL;
}

size_t h_count(const struct harness *h, size_t from, const char *path, const char *member, const char *prop,
               const char *value) {
        size_t n = 0;

        for (size_t i = from; i < h->n_events; i++) {
                const struct h_event *ev = &h->events[i];

                if (field_matches(path, ev->path) && field_matches(member, ev->member) &&
                    field_matches(prop, ev->prop) && field_matches(value, ev->value))
                        n++;
        }
        return n;
}

const struct h_event *h_wait_event(struct harness *h, size_t from, const char *path, const char *member,
                                   const char *prop, const char *value, uint64_t timeout_us) {
        uint64_t deadline = h_now_us() + timeout_us;

        for (;;) {
                const struct h_event *ev = h_find(h, from, path, member, prop, value);
                uint64_t now;
                int r;

                if (ev)
                        return ev;
                r = sd_bus_process(h->bus, NULL);
                CHECK(r >= 0, "sd_bus_process: %s", strerror(-r));
                if (r > 0)
                        continue;
                now = h_now_us();
                if (now >= deadline)
                        return NULL;
                r = sd_bus_wait(h->bus, deadline - now);
                CHECK(r >= 0 || r == -EINTR, "sd_bus_wait: %s", strerror(-r));
        }
}

void h_dump_events(const struct harness *h, size_t from) {
        uint64_t t0 = from < h->n_events ? h->events[from].t_us : 0;

        if (from >= h->n_events)
                return;
        fprintf(stderr, "---- signals from mnd (#%zu on, ms since the first) ----\n", from);
        for (size_t i = from; i < h->n_events; i++) {
                const struct h_event *ev = &h->events[i];

                fprintf(stderr, "  #%zu +%" PRIu64 " ms %s %s %s = '%s'\n", i, (ev->t_us - t0) / MSEC, ev->path,
                        ev->member, ev->prop, ev->value);
        }
}

/* ---- properties and calls ---- */

char *h_get_s(struct harness *h, const char *path, const char *iface, const char *prop) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char *v = NULL;
        int r;

        r = sd_bus_get_property_string(h->bus, MND_NAME, path, iface, prop, &e, &v);
        CHECK(r >= 0, "%s %s.%s (type s): %s: %s", path, iface, prop, e.name ?: strerror(-r), e.message ?: "");
        sd_bus_error_free(&e);
        return v;
}

char *h_get_o(struct harness *h, const char *path, const char *iface, const char *prop) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *o;
        char *v;
        int r;

        r = sd_bus_get_property(h->bus, MND_NAME, path, iface, prop, &e, &reply, "o");
        CHECK(r >= 0, "%s %s.%s (type o): %s: %s", path, iface, prop, e.name ?: strerror(-r), e.message ?: "");
        r = sd_bus_message_read(reply, "o", &o);
        CHECK(r > 0, "%s %s.%s: %s", path, iface, prop, strerror(-r));
        v = strdup(o);
        CHECK(v, "out of memory");
        sd_bus_message_unref(reply);
        sd_bus_error_free(&e);
        return v;
}

static void get_trivial(struct harness *h, const char *path, const char *iface, const char *prop, char type,
                        void *ret) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_get_property_trivial(h->bus, MND_NAME, path, iface, prop, &e, type, ret);
        CHECK(r >= 0, "%s %s.%s (type %c): %s: %s", path, iface, prop, type, e.name ?: strerror(-r),
              e.message ?: "");
        sd_bus_error_free(&e);
}

uint32_t h_get_u(struct harness *h, const char *path, const char *iface, const char *prop) {
        uint32_t v = 0;

        get_trivial(h, path, iface, prop, 'u', &v);
        return v;
}

uint64_t h_get_t(struct harness *h, const char *path, const char *iface, const char *prop) {
        uint64_t v = 0;

        get_trivial(h, path, iface, prop, 't', &v);
        return v;
}

uint8_t h_get_y(struct harness *h, const char *path, const char *iface, const char *prop) {
        uint8_t v = 0;

        get_trivial(h, path, iface, prop, 'y', &v);
        return v;
}

char **h_get_strv(struct harness *h, const char *path, const char *iface, const char *prop, char type) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        char sig[3] = { 'a', type, 0 }, elem[2] = { type, 0 };
        char **l = NULL;
        size_t n = 0;
        const char *s;
        int r;

        r = sd_bus_get_property(h->bus, MND_NAME, path, iface, prop, &e, &reply, sig);
        CHECK(r >= 0, "%s %s.%s (type %s): %s: %s", path, iface, prop, sig, e.name ?: strerror(-r),
              e.message ?: "");
        r = sd_bus_message_enter_container(reply, 'a', elem);
        CHECK(r >= 0, "%s.%s: %s", iface, prop, strerror(-r));
        l = calloc(1, sizeof(char *));
        CHECK(l, "out of memory");
        while ((r = sd_bus_message_read_basic(reply, type, &s)) > 0) {
                char **p = realloc(l, (n + 2) * sizeof(char *));

                CHECK(p, "out of memory");
                l = p;
                l[n] = strdup(s);
                CHECK(l[n], "out of memory");
                l[++n] = NULL;
        }
        CHECK(r >= 0, "%s.%s: %s", iface, prop, strerror(-r));
        sd_bus_message_unref(reply);
        sd_bus_error_free(&e);
        return l;
}

void h_strv_free(char **l) {
        for (char **p = l; p && *p; p++)
                free(*p);
        free(l);
}

size_t h_strv_len(char **l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

bool h_strv_contains(char **l, const char *s) {
        for (char **p = l; p && *p; p++)
                if (strcmp(*p, s) == 0)
                        return true;
        return false;
}

bool h_wait_prop_s(struct harness *h, const char *path, const char *iface, const char *prop, const char *want,
                   uint64_t timeout_us) {
        uint64_t deadline = h_now_us() + timeout_us;

        for (;;) {
                char *v = h_get_s(h, path, iface, prop);
                bool same = strcmp(v, want) == 0;

                free(v);
                if (same)
                        return true;
                if (h_now_us() >= deadline)
                        return false;
                h_pump(h, 10 * MSEC);
        }
}

bool h_wait_pens(struct harness *h, size_t n, uint64_t timeout_us) {
        uint64_t deadline = h_now_us() + timeout_us;

        for (;;) {
                char **l = h_get_strv(h, MND_PATH, MND_MANAGER, "Pens", 'o');
                size_t k = h_strv_len(l);

                h_strv_free(l);
                if (k == n)
                        return true;
                if (h_now_us() >= deadline)
                        return false;
                h_pump(h, 10 * MSEC);
        }
}

int h_call(struct harness *h, sd_bus_error *e, sd_bus_message **reply, const char *path, const char *iface,
           const char *member, const char *types, ...) {
        va_list ap;
        int r;

        va_start(ap, types);
        r = sd_bus_call_methodv(h->bus, MND_NAME, path, iface, member, e, reply, types, ap);
        va_end(ap);
        return r;
}

void h_expect_error_at(const char *file, int line, const sd_bus_error *e, int r, const char *name, ...) {
        char full[128];
        const char *sub;
        va_list ap;

        if (strchr(name, '.'))
                snprintf(full, sizeof full, "%s", name);
        else
                snprintf(full, sizeof full, MND_ERR "%s", name);
        if (r >= 0)
                h_fail(file, line, "expected the error %s, but the call succeeded", full);
        if (!e->name || strcmp(e->name, full) != 0)
                h_fail(file, line, "expected the error %s, got %s: %s", full, e->name ?: strerror(-r),
                       e->message ?: "");
        va_start(ap, name);
        while ((sub = va_arg(ap, const char *)))
                if (!e->message || !strstr(e->message, sub)) {
                        va_end(ap);
                        h_fail(file, line, "the message of %s does not contain '%s': '%s'", full, sub,
                               e->message ?: "");
                }
        va_end(ap);
}

int h_start_session(struct harness *h, const char *pen, sd_bus_error *e, char **ret_path, ...) {
        sd_bus_message *m = NULL, *reply = NULL;
        const char *key, *path;
        va_list ap;
        int r;

        r = sd_bus_message_new_method_call(h->bus, &m, MND_NAME, pen, MND_PEN, "StartSession");
        CHECK(r >= 0, "new call: %s", strerror(-r));
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        CHECK(r >= 0, "append: %s", strerror(-r));
        va_start(ap, ret_path);
        while ((key = va_arg(ap, const char *))) {
                char type = (char) va_arg(ap, int), sig[2] = { type, 0 };

                r = sd_bus_message_open_container(m, 'e', "sv");
                CHECK(r >= 0, "append: %s", strerror(-r));
                r = sd_bus_message_append(m, "s", key);
                CHECK(r >= 0, "append: %s", strerror(-r));
                r = sd_bus_message_open_container(m, 'v', sig);
                CHECK(r >= 0, "append: %s", strerror(-r));
                switch (type) {
                case 's':
                        r = sd_bus_message_append(m, "s", va_arg(ap, const char *));
                        break;
                case 'u':
                        r = sd_bus_message_append(m, "u", va_arg(ap, uint32_t));
                        break;
                case 'i':
                        r = sd_bus_message_append(m, "i", va_arg(ap, int32_t));
                        break;
                case 't':
                        r = sd_bus_message_append(m, "t", va_arg(ap, uint64_t));
                        break;
                default:
                        h_fail(__FILE__, __LINE__, "h_start_session: unsupported type '%c'", type);
                }
                CHECK(r >= 0, "append: %s", strerror(-r));
                r = sd_bus_message_close_container(m);
                CHECK(r >= 0, "append: %s", strerror(-r));
                r = sd_bus_message_close_container(m);
                CHECK(r >= 0, "append: %s", strerror(-r));
        }
        va_end(ap);
        r = sd_bus_message_close_container(m);
        CHECK(r >= 0, "append: %s", strerror(-r));

        r = sd_bus_call(h->bus, m, 10 * SEC, e, &reply);
        sd_bus_message_unref(m);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        CHECK(r >= 0, "StartSession replied with signature '%s', not 'o'", sd_bus_message_get_signature(reply, true));
        if (ret_path) {
                *ret_path = strdup(path);
                CHECK(*ret_path, "out of memory");
        }
        sd_bus_message_unref(reply);
        return 0;
}

/* ---- mnsim ---- */

int h_sim(struct harness *h, char *reply, size_t size, const char *fmt, ...) {
        char line[4200], buf[4200];
        size_t n = 0, len;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(line, sizeof line - 1, fmt, ap);
        va_end(ap);
        len = strlen(line);
        line[len++] = '\n';
        for (size_t done = 0; done < len;) {
                ssize_t k = write(h->ctl_fd, line + done, len - done);

                if (k < 0 && errno == EINTR)
                        continue;
                CHECK(k > 0, "writing to mnsim's control socket: %m");
                done += (size_t) k;
        }
        /* One reply line; we never pipeline, so nothing follows it. */
        for (;;) {
                ssize_t k = read(h->ctl_fd, buf + n, sizeof buf - 1 - n);

                if (k < 0 && errno == EINTR)
                        continue;
                CHECK(k > 0, "reading mnsim's control socket: %s", k == 0 ? "closed" : strerror(errno));
                n += (size_t) k;
                buf[n] = '\0';
                if (memchr(buf, '\n', n))
                        break;
                CHECK(n < sizeof buf - 1, "overlong reply from mnsim");
        }
        buf[strcspn(buf, "\n")] = '\0';
        if (reply)
                snprintf(reply, size, "%s", buf);
        return strncmp(buf, "ok", 2) == 0 ? 0 : -1;
}

void h_sim_ok(struct harness *h, const char *fmt, ...) {
        char line[4096], reply[4200];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        CHECK(h_sim(h, reply, sizeof reply, "%s", line) == 0, "mnsim '%s': %s", line, reply);
}

void h_sim_status(struct harness *h, const char *serial, struct h_sim_status *ret) {
        char reply[4200], *p, *save = NULL;

        CHECK(h_sim(h, reply, sizeof reply, "status %s", serial) == 0, "mnsim status %s: %s", serial, reply);
        *ret = (struct h_sim_status) {};
        for (p = strtok_r(reply + 2, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
                char *eq = strchr(p, '=');
                const char *k, *v;

                if (!eq)
                        continue;
                *eq = '\0';
                k = p;
                v = eq + 1;
#define STR(name) if (strcmp(k, #name) == 0) snprintf(ret->name, sizeof ret->name, "%s", v)
#define NUM(name) if (strcmp(k, #name) == 0) ret->name = (typeof(ret->name)) strtoull(v, NULL, 10)
                STR(serial); STR(kind); STR(state); STR(cartridge); STR(faults); STR(boot_id);
                NUM(plugged); NUM(connected); NUM(stalled); NUM(host_connected); NUM(needles_moving);
                NUM(depth_set); NUM(depth_actual); NUM(speed_set); NUM(speed_actual); NUM(needling_ms);
                NUM(lease_left_ms); NUM(motion_changed_us); NUM(battery);
#undef STR
#undef NUM
        }
        CHECK(strcmp(ret->serial, serial) == 0, "mnsim status for %s named '%s'", serial, ret->serial);
}

bool h_sim_wait_moving(struct harness *h, const char *serial, bool moving, uint64_t timeout_us,
                       struct h_sim_status *ret) {
        uint64_t deadline = h_now_us() + timeout_us;

        for (;;) {
                h_sim_status(h, serial, ret);
                if (!!ret->needles_moving == moving)
                        return true;
                if (h_now_us() >= deadline)
                        return false;
                h_pump(h, 5 * MSEC);
        }
}
