/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The daemon's life and its state directory (mnsim --usb 1 --cartridge; run
 * as root: the state directory is a small tmpfs in a private mount
 * namespace, so that it can be filled up):
 *  - SIGKILL mid-session: the pen's own lease stops its needles within
 *    300 ms of the kill (measured in the pen model on CLOCK_MONOTONIC);
 *  - restart with the same state directory: the killed session is recorded
 *    "interrupted"/"daemon-restart", its cartridge stays used (CartridgeUsed);
 *  - SIGTERM mid-session: the session ends "stopped" and the pen is stopped
 *    by a STOP (idle, no fault), not by its lease; mnd exits 0;
 *  - a full state directory: StartSession is refused with AuditFailure
 *    before anything reaches the pen, and works once there is room;
 *  - another uid on the bus: AccessDenied for SetDepth, SetSpeed,
 *    StartSession and ClearFault, while properties, Stop and StopAll work.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mnd-harness.h"

#define NOBODY 65534

static void setup_state_fs(struct harness *h) {
        CHECK(geteuid() == 0, "this test needs root (a private mount namespace with a tmpfs state directory)");
        CHECK(unshare(CLONE_NEWNS) == 0, "unshare(CLONE_NEWNS): %m");
        CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0, "making / private: %m");
        CHECK(mkdir(h->state_dir, 0750) == 0, "mkdir %s: %m", h->state_dir);
        CHECK(mount("mnd-itest", h->state_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=0750") == 0,
              "mounting a tmpfs on %s: %m", h->state_dir);
}

/* Fills the state directory's file system up; returns the filler's path. */
static void fill_state_fs(struct harness *h, char *filler, size_t size) {
        static const char block[4096];
        int fd;

        snprintf(filler, size, "%s/filler", h->state_dir);
        fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0, "open %s: %m", filler);
        for (;;) {
                ssize_t k = write(fd, block, sizeof block);

                if (k < 0) {
                        CHECK(errno == ENOSPC, "filling %s: %m", filler);
                        break;
                }
        }
        close(fd);
}

static char *start_running(struct harness *h, const char *cartridge) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        char *session = NULL, reply[256];
        int r;

        h_sim_status(h, "MNU-0001", &st);
        if (!streq(st.cartridge, cartridge)) {
                (void) h_sim(h, reply, sizeof reply, "remove-cartridge MNU-0001");
                h_sim_ok(h, "cartridge MNU-0001 %s", cartridge);
        }
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", cartridge, SEC), "cartridge %s not seen", cartridge);
        r = h_start_session(h, PEN_U1, &e, &session, "area", 's', "face", "duration_s", 'u', 60,
                            "depth_um", 'u', 1500, "speed_hz", 'u', 120, NULL);
        CHECK(r >= 0, "StartSession: %s: %s", e.name, e.message);
        CHECK(h_sim_wait_moving(h, "MNU-0001", true, SEC, &st), "the pen never ran");
        return session;
}

static char *test_sigkill(struct harness *h) {
        struct h_sim_status st;
        uint64_t t_kill, stop_ms;
        char *session;
        int status;

        session = start_running(h, "CART-U1-0002");
        h_pump(h, 300 * MSEC);

        t_kill = h_now_us();
        status = h_stop_mnd(h, SIGKILL, 2 * SEC);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "mnd was not killed");
        CHECK(h_sim_wait_moving(h, "MNU-0001", false, 2 * SEC, &st), "the pen keeps running without its host");
        stop_ms = (st.motion_changed_us - t_kill) / MSEC;
        CHECK(st.motion_changed_us > t_kill && stop_ms <= 300,
              "the pen stopped %" PRIu64 " ms after mnd was killed (at most 300 ms allowed)", stop_ms);
        CHECK(streq(st.state, "fault") && (strstr(st.faults, "lease-expired") || strstr(st.faults, "host-lost")),
              "the pen is %s (%s) after its host died", st.state, st.faults);
        OK("SIGKILL mid-session: the needles stopped %" PRIu64 " ms after the kill (%s)", stop_ms, st.faults);
        /* The pen stays plugged in: the restarted mnd must be able to claim it again (the killed
         * one never released its claim; the kernel, and mnsim, release it when the fd closes). */
        return session;
}

static void test_restart(struct harness *h, const char *s1) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char id[32];
        char *v;
        int r;

        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the pen did not come back after the restart");
        v = h_get_s(h, s1, MND_SESSION, "State");
        CHECK(streq(v, "interrupted"), "the killed session is '%s' after the restart", v);
        free(v);
        v = h_get_s(h, s1, MND_SESSION, "EndReason");
        CHECK(streq(v, "daemon-restart"), "the killed session's EndReason is '%s'", v);
        free(v);
        v = h_get_s(h, s1, MND_SESSION, "Cartridge");
        CHECK(streq(v, "CART-U1-0002"), "the killed session's Cartridge is '%s'", v);
        free(v);
        snprintf(id, sizeof id, "%" PRIu64, h_get_t(h, s1, MND_SESSION, "Id"));
        CHECK(streq(strrchr(s1, '/') + 1, id) && h_get_t(h, s1, MND_SESSION, "EndedAt") > 0, "Id/EndedAt");
        OK("restart: the killed session %s recorded interrupted/daemon-restart", s1);

        /* The pen lost its host while running: in fault until cleared; the cartridge stays spent. */
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "State", "fault", SEC), "the pen is not in fault");
        CALL_OK(h, PEN_U1, MND_PEN, "ClearFault", "");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, NULL);
        EXPECT_ERROR(&e, r, "CartridgeUsed", "CART-U1-0002", "session");
        sd_bus_error_free(&e);
        OK("after the restart: CartridgeUsed for the killed session's cartridge");
}

static void test_sigterm(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        char *session, *v;
        size_t mark;
        uint64_t t_term, stop_ms;
        int status, r;

        session = start_running(h, "CART-U1-0003");
        h_pump(h, 200 * MSEC);

        mark = h_mark(h);
        t_term = h_now_us();
        status = h_stop_mnd(h, SIGTERM, 3 * SEC);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "mnd exited with status 0x%x on SIGTERM", status);
        CHECK(h_find(h, mark, session, "PropertiesChanged", "State", "stopped"), "the session did not end 'stopped'");
        CHECK(h_find(h, mark, session, "PropertiesChanged", "EndReason", "stopped"), "EndReason not 'stopped'");
        CHECK(h_sim_wait_moving(h, "MNU-0001", false, SEC, &st), "the pen keeps running");
        stop_ms = (st.motion_changed_us - t_term) / MSEC;
        CHECK(streq(st.state, "idle") && st.faults[0] == '\0',
              "the pen is %s (%s): it was not stopped by a STOP before mnd exited", st.state, st.faults);
        CHECK(stop_ms < 150, "the pen stopped %" PRIu64 " ms after SIGTERM", stop_ms);
        OK("SIGTERM mid-session: session ended 'stopped', the pen stopped by STOP %" PRIu64 " ms after the "
           "signal (idle, no fault), mnd exited 0", stop_ms);

        /* Recorded as ended: not an orphan at the next start, and its cartridge stays spent. */
        h_start_mnd(h);
        CHECK(h_wait_pens(h, 1, 5 * SEC), "the pen did not come back");
        r = sd_bus_get_property_string(h->bus, MND_NAME, session, MND_SESSION, "State", &e, &v);
        CHECK(r < 0, "%s was restored as '%s': its end was not recorded", session, v);
        sd_bus_error_free(&e);
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60, NULL);
        EXPECT_ERROR(&e, r, "CartridgeUsed", "CART-U1-0003", strrchr(session, '/') + 1);
        sd_bus_error_free(&e);
        OK("after a SIGTERM restart: %s not an orphan, CartridgeUsed", session);
        free(session);
}

/* First thing after the start: the records are still empty files, so their first line needs a
 * new block (on tmpfs, an append into a block already allocated still succeeds on a full disk). */
static void test_audit_failure(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        char filler[400], *session = NULL;
        int r;

        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", "CART-U1-0001", SEC), "cartridge not seen");
        CALL_OK(h, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 300);

        fill_state_fs(h, filler, sizeof filler);
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "face", "duration_s", 'u', 60,
                            "depth_um", 'u', 1000, NULL);
        /* The message must say what could not be recorded where, and why. */
        EXPECT_ERROR(&e, r, "AuditFailure", "not started");
        CHECK(strstr(e.message, h->state_dir) || strstr(e.message, "CART-U1-0001"),
              "the AuditFailure message names neither the state directory nor the cartridge: '%s'", e.message);
        CHECK(strstr(e.message, "No space left") || strstr(e.message, "full"),
              "the AuditFailure message does not say the disk is full: '%s'", e.message);
        sd_bus_error_free(&e);
        h_sim_status(h, "MNU-0001", &st);
        CHECK(streq(st.state, "idle") && !st.needles_moving && st.depth_set == 300,
              "after AuditFailure the pen is %s at %u um", st.state, st.depth_set);
        {
                char *v = h_get_o(h, PEN_U1, MND_PEN, "Session");

                CHECK(streq(v, "/"), "a session '%s' exists after AuditFailure", v);
                free(v);
        }
        OK("full state directory: StartSession refused with AuditFailure, the pen untouched");

        CHECK(unlink(filler) == 0, "unlink %s: %m", filler);
        r = h_start_session(h, PEN_U1, &e, &session, "area", 's', "face", "duration_s", 'u', 60, NULL);
        CHECK(r >= 0, "StartSession once there is room again: %s: %s", e.name, e.message);
        CALL_OK(h, PEN_U1, MND_PEN, "Stop", "");
        OK("room again: the same cartridge starts %s (it was not spent by the refusal)", session);
        free(session);
}

/* Runs as nobody in a child: one line per call, "NAME|MESSAGE" ("ok|" on success). */
static void nobody_client(const char *address, int out) {
        static const struct {
                const char *member, *types;
                uint32_t arg;
        } calls[] = {
                { "SetDepth", "u", 500 },
                { "SetSpeed", "u", 100 },
                { "ClearFault", "", 0 },
                { "StartSession", "a{sv}", 0 },
                { "Stop", "", 0 },
        };
        sd_bus *bus = NULL;
        char *state = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;

        if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
            setresuid(NOBODY, NOBODY, NOBODY) < 0) {
                dprintf(out, "setup|cannot become uid %d: %s\n", NOBODY, strerror(errno));
                _exit(1);
        }
        if (sd_bus_new(&bus) < 0 || sd_bus_set_address(bus, address) < 0 || sd_bus_set_bus_client(bus, 1) < 0 ||
            sd_bus_start(bus) < 0) {
                dprintf(out, "setup|uid %d cannot connect to the bus\n", NOBODY);
                _exit(1);
        }
        dprintf(out, "uid|%u\n", (unsigned) geteuid());
        if (sd_bus_get_property_string(bus, MND_NAME, PEN_U1, MND_PEN, "State", &e, &state) < 0)
                dprintf(out, "State|%s: %s\n", e.name, e.message);
        else
                dprintf(out, "State|ok %s\n", state);
        sd_bus_error_free(&e);
        free(state);
        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
                int r;

                if (streq(calls[i].types, "u"))
                        r = sd_bus_call_method(bus, MND_NAME, PEN_U1, MND_PEN, calls[i].member, &e, NULL, "u",
                                               calls[i].arg);
                else if (streq(calls[i].types, "a{sv}"))
                        r = sd_bus_call_method(bus, MND_NAME, PEN_U1, MND_PEN, calls[i].member, &e, NULL, "a{sv}",
                                               2, "area", "s", "face", "duration_s", "u", 60);
                else
                        r = sd_bus_call_method(bus, MND_NAME, PEN_U1, MND_PEN, calls[i].member, &e, NULL, "");
                dprintf(out, "%s|%s|%s\n", calls[i].member, r < 0 ? e.name : "ok", r < 0 ? e.message : "");
                sd_bus_error_free(&e);
        }
        if (sd_bus_call_method(bus, MND_NAME, MND_PATH, MND_MANAGER, "StopAll", &e, NULL, "") < 0)
                dprintf(out, "StopAll|%s|%s\n", e.name, e.message);
        else
                dprintf(out, "StopAll|ok|\n");
        sd_bus_flush_close_unref(bus);
        _exit(0);
}

static void test_access_denied(struct harness *h) {
        struct h_sim_status before, after;
        char buf[8192] = "", *line, *save = NULL;
        size_t n = 0, denied = 0, allowed = 0;
        int pipefd[2], status;
        pid_t pid;

        h_sim_status(h, "MNU-0001", &before);
        CHECK(pipe2(pipefd, O_CLOEXEC) == 0, "pipe: %m");
        fflush(NULL);
        pid = fork();
        CHECK(pid >= 0, "fork: %m");
        if (pid == 0) {
                close(pipefd[0]);
                nobody_client(h->bus_address, pipefd[1]);
        }
        close(pipefd[1]);
        for (;;) {
                ssize_t k = read(pipefd[0], buf + n, sizeof buf - 1 - n);

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
        close(pipefd[0]);
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the client as uid %d failed:\n%s", NOBODY, buf);

        for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *member = line, *name = strchr(line, '|'), *message;

                CHECK(name, "bad line '%s'", line);
                *name++ = '\0';
                message = strchr(name, '|');
                if (message)
                        *message++ = '\0';
                if (streq(member, "uid")) {
                        CHECK(atoi(name) == NOBODY, "the client ran as uid %s", name);
                } else if (streq(member, "State")) {
                        CHECK(strncmp(name, "ok ", 3) == 0, "uid %d cannot read State: %s", NOBODY, name);
                } else if (streq(member, "Stop") || streq(member, "StopAll")) {
                        CHECK(streq(name, "ok"), "%s as uid %d: %s: %s", member, NOBODY, name, message ?: "");
                        allowed++;
                } else {
                        CHECK(streq(name, "org.freedesktop.DBus.Error.AccessDenied"), "%s as uid %d: %s: %s",
                              member, NOBODY, name, message ?: "");
                        CHECK(message && strstr(message, "65534") && strstr(message, "user 0"),
                              "the AccessDenied message does not name the users: '%s'", message ?: "");
                        denied++;
                }
        }
        CHECK(denied == 4 && allowed == 2, "%zu denied, %zu allowed", denied, allowed);
        h_sim_status(h, "MNU-0001", &after);
        CHECK(after.depth_set == before.depth_set && after.speed_set == before.speed_set &&
              streq(after.state, "idle"), "a denied call changed the pen");
        OK("uid %d: AccessDenied for SetDepth, SetSpeed, ClearFault, StartSession (message names both users); "
           "reading State, Stop and StopAll allowed; the pen untouched", NOBODY);
}

int main(int argc, char *argv[]) {
        static struct harness h;     /* static: the exit handler uses it after main() returns */
        uint64_t t0 = h_now_us();
        char *session;

        h_init(&h, argc, argv);
        setup_state_fs(&h);
        h_start_bus(&h);
        h_start_mnd(&h);
        CHECK(h_wait_pens(&h, 1, 5 * SEC), "mnd did not publish the pen");

        test_audit_failure(&h);
        session = test_sigkill(&h);
        test_restart(&h, session);
        free(session);
        test_sigterm(&h);
        test_access_denied(&h);

        h_stop_mnd_clean(&h);
        OK("all done in %" PRIu64 " ms", (h_now_us() - t0) / MSEC);
        return 0;
}
