/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The harness of mnd's integration tests: a private dbus-daemon and the real
 * mnd binary as children, an sd-bus client connection that records every
 * signal mnd emits, mnsim's control socket, and checks that fail loudly.
 *
 * A test program runs inside mnsim (`mnsim ... -- test-program MND`): the
 * pens are visible to mnd, MNSIM_CONTROL names the control socket.  Every
 * child is killed when the test exits, whether it passes, fails a check,
 * aborts or is killed by a signal it can catch (and the children die with
 * it through PR_SET_PDEATHSIG otherwise).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>

#define MND_NAME        "org.microneedle.Mnd1"
#define MND_PATH        "/org/microneedle/Mnd1"
#define MND_MANAGER     "org.microneedle.Mnd1.Manager"
#define MND_PEN         "org.microneedle.Mnd1.Pen"
#define MND_SESSION     "org.microneedle.Mnd1.Session"
#define MND_ERR         "org.microneedle.Mnd1.Error."

/* The object paths of mnsim's first pens (sd_bus_path_encode of the serial). */
#define PEN_U1          "/org/microneedle/Mnd1/pen/MNU_2d0001"
#define PEN_S1          "/org/microneedle/Mnd1/pen/MNS_2d0001"

#define streq(a, b)     (strcmp((a), (b)) == 0)
#define ELEMENTSOF(x)   (sizeof(x) / sizeof((x)[0]))

#define MSEC            UINT64_C(1000)
#define SEC             UINT64_C(1000000)

/* One signal from mnd; a PropertiesChanged gives one event per property. */
struct h_event {
        uint64_t t_us;                  /* CLOCK_MONOTONIC when the client read it */
        char path[128];
        char member[32];                /* PropertiesChanged, PenAdded, PenRemoved, Fault, InterfacesAdded ... */
        char prop[48];                  /* the property (PropertiesChanged) or the fault code (Fault) */
        char value[256];                /* the value as text: strings and paths as is, numbers in decimal */
};

struct h_sim_status {
        char serial[32], kind[16], state[16], cartridge[40], faults[128];
        unsigned plugged, connected, stalled, host_connected, needles_moving;
        uint32_t depth_set, depth_actual, speed_set, speed_actual, needling_ms, lease_left_ms, battery;
        uint64_t motion_changed_us;
        char boot_id[16];
};

struct harness {
        const char *mnd_binary;
        char dir[256];                  /* everything of this test; removed at exit */
        char state_dir[300];
        char config[300];               /* "" = --config /dev/null */
        char log[300];                  /* mnd's stderr, all runs appended */
        char bus_address[400];
        pid_t bus_pid, mnd_pid;
        sd_bus *bus;
        int ctl_fd;                     /* mnsim's control socket */
        unsigned mnd_runs;

        struct h_event *events;
        size_t n_events, allocated_events;
        bool quiet;
};

/* The one harness of the process (the exit and signal handlers need it). */
extern struct harness *h_current;

/* argv[1] is the mnd binary.  Creates the directory, installs the cleanup (an exit handler: h must
 * outlive main(), so make it static). */
void h_init(struct harness *h, int argc, char *argv[]);
/* Writes the [config] file mnd gets with --config (NULL: /dev/null). */
void h_set_config(struct harness *h, const char *text);
/* The bus and the client connection (signals recorded from here on). */
void h_start_bus(struct harness *h);
/* mnd --user --state-dir --config; returns when it owns its bus name. */
void h_start_mnd(struct harness *h);
/* Sends sig to mnd and waits for it to exit (at most timeout); returns its wait status. */
int h_stop_mnd(struct harness *h, int sig, uint64_t timeout_us);
/* SIGTERM, and mnd must exit 0 within 3 s. */
void h_stop_mnd_clean(struct harness *h);

/* Checks: print, show the end of mnd's log, exit(1) (children are killed). */
_Noreturn void h_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
_Noreturn void h_fail_check(const char *file, int line, const char *cond, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
#define CHECK(cond, ...)                                                        \
        do {                                                                    \
                if (!(cond))                                                    \
                        h_fail_check(__FILE__, __LINE__, #cond, __VA_ARGS__);  \
        } while (0)
#define OK(...) h_ok(__VA_ARGS__)
void h_ok(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t h_now_us(void);
void h_sleep_us(uint64_t us);

/* Reads and records whatever mnd sent, for up to timeout_us. */
void h_pump(struct harness *h, uint64_t timeout_us);
/* The index the next recorded event will get: a mark to search from. */
size_t h_mark(const struct harness *h);
/* The first event at or after index from that matches (NULL fields match anything). */
const struct h_event *h_find(const struct harness *h, size_t from, const char *path, const char *member,
                             const char *prop, const char *value);
/* Like h_find, pumping the bus until it appears or timeout_us passed; NULL on timeout. */
const struct h_event *h_wait_event(struct harness *h, size_t from, const char *path, const char *member,
                                   const char *prop, const char *value, uint64_t timeout_us);
size_t h_count(const struct harness *h, size_t from, const char *path, const char *member, const char *prop,
               const char *value);
void h_dump_events(const struct harness *h, size_t from);

/* Properties; each checks the D-Bus type (sd-bus refuses another signature) and fails on error. */
char *h_get_s(struct harness *h, const char *path, const char *iface, const char *prop);    /* free() */
char *h_get_o(struct harness *h, const char *path, const char *iface, const char *prop);    /* free() */
uint32_t h_get_u(struct harness *h, const char *path, const char *iface, const char *prop);
uint64_t h_get_t(struct harness *h, const char *path, const char *iface, const char *prop);
uint8_t h_get_y(struct harness *h, const char *path, const char *iface, const char *prop);
char **h_get_strv(struct harness *h, const char *path, const char *iface, const char *prop, char type); /* 'o' or 's' */
void h_strv_free(char **l);
size_t h_strv_len(char **l);
bool h_strv_contains(char **l, const char *s);
/* Polls a string property until it equals want; false on timeout. */
bool h_wait_prop_s(struct harness *h, const char *path, const char *iface, const char *prop, const char *want,
                   uint64_t timeout_us);
/* Waits until Manager.Pens has n entries; false on timeout. */
bool h_wait_pens(struct harness *h, size_t n, uint64_t timeout_us);

/* A method call with sd_bus_call_method's arguments; returns 0 or the negative errno of the error in *e. */
int h_call(struct harness *h, sd_bus_error *e, sd_bus_message **reply, const char *path, const char *iface,
           const char *member, const char *types, ...);
/* Fails unless the call failed with org.microneedle.Mnd1.Error.<name> (or a full error name) and its
 * message contains every one of the substrings. */
#define EXPECT_ERROR(e, r, name, ...) h_expect_error_at(__FILE__, __LINE__, e, r, name, __VA_ARGS__, NULL)
void h_expect_error_at(const char *file, int line, const sd_bus_error *e, int r, const char *name, ...)
        __attribute__((sentinel));
#define CALL_OK(h, ...)                                                                         \
        do {                                                                                    \
                sd_bus_error _e = SD_BUS_ERROR_NULL;                                            \
                int _r = h_call(h, &_e, NULL, __VA_ARGS__);                                     \
                if (_r < 0)                                                                     \
                        h_fail(__FILE__, __LINE__, "call failed: %s: %s", _e.name, _e.message); \
                sd_bus_error_free(&_e);                                                         \
        } while (0)

/*
 * Pen.StartSession with an a{sv} built from (key, type, value) triples ended
 * by a NULL key; type is 's' (const char *), 'u' (uint32_t), 'i' (int32_t),
 * 't' (uint64_t).  Returns 0 and the session path (free()), or the error.
 */
int h_start_session(struct harness *h, const char *pen, sd_bus_error *e, char **ret_path, ...)
        __attribute__((sentinel));

/* mnsim's control socket: one line, one reply.  Returns 0 for "ok ...", -1 for "error: ...". */
int h_sim(struct harness *h, char *reply, size_t size, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Fails unless the reply is "ok". */
void h_sim_ok(struct harness *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void h_sim_status(struct harness *h, const char *serial, struct h_sim_status *ret);
/* Polls the pen's status until needles_moving == moving; false on timeout. */
bool h_sim_wait_moving(struct harness *h, const char *serial, bool moving, uint64_t timeout_us,
                       struct h_sim_status *ret);

/* The whole of mnd's log so far (free()). */
char *h_read_log(const struct harness *h);
