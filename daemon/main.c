/* SPDX-License-Identifier: GPL-2.0-or-later */
/* mnd: the microneedling pen daemon. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "bus-error.h"
#include "config.h"
#include "log.h"
#include "manager.h"

#ifndef MND_VERSION
#define MND_VERSION "unknown"
#endif

static const char *arg_config = NULL;
static const char *arg_state_dir = NULL;
static bool arg_user = false;
static bool arg_introspect = false;

static void help(void) {
        printf("Usage: mnd [OPTIONS]\n"
               "\n"
               "The microneedling pen daemon: finds the pens, enforces the clinical limits and\n"
               "offers them on D-Bus as %s.\n"
               "\n"
               "  -c --config PATH     Configuration file (default: %s)\n"
               "  -s --state-dir PATH  State directory (the audit log; overrides\n"
               "                       [daemon] state_directory)\n"
               "     --user            Serve on the session bus (demos and tests), not the system bus\n"
               "     --bus-introspect  Print the D-Bus introspection XML of the interfaces and exit\n"
               "     --version         Print the version and exit\n"
               "  -h --help            Show this help\n"
               "\n"
               "Environment: MND_LOG_LEVEL (debug, info, notice, warning, err).\n",
               MND_BUS_NAME, MND_CONFIG_DEFAULT_PATH);
}

/* Returns 1 to go on, 0 to exit successfully, < 0 on error. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_USER = 0x100,
                ARG_INTROSPECT,
                ARG_VERSION,
        };
        static const struct option options[] = {
                { "config",         required_argument, NULL, 'c' },
                { "state-dir",      required_argument, NULL, 's' },
                { "user",           no_argument,       NULL, ARG_USER },
                { "bus-introspect", no_argument,       NULL, ARG_INTROSPECT },
                { "version",        no_argument,       NULL, ARG_VERSION },
                { "help",           no_argument,       NULL, 'h' },
                {}
        };
        int c;

        while ((c = getopt_long(argc, argv, "c:s:h", options, NULL)) >= 0)
                switch (c) {
                case 'c':
                        arg_config = optarg;
                        break;
                case 's':
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "--state-dir needs an absolute path, not '%s'.", optarg);
                        arg_state_dir = optarg;
                        break;
                case ARG_USER:
                        arg_user = true;
                        break;
                case ARG_INTROSPECT:
                        arg_introspect = true;
                        break;
                case ARG_VERSION:
                        printf("mnd %s\n", MND_VERSION);
                        return 0;
                case 'h':
                        help();
                        return 0;
                case '?':
                        return -EINVAL;
                default:
                        return log_error_errno(EINVAL, "Unknown option code %c.", c);
                }
        if (optind < argc)
                return log_error_errno(EINVAL, "mnd takes no arguments ('%s'); see --help.", argv[optind]);
        return 1;
}

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_(freep) char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct mnd_manager *m = userdata;

        log_info("Received %s.", strsignal((int) si->ssi_signo));
        mnd_manager_shutdown(m);
        return 0;
}

static int run(int argc, char *argv[]) {
        _cleanup_(mnd_config_done) struct mnd_config config = {};
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        struct mnd_manager *m = NULL;
        _cleanup_(freep) char *config_error = NULL;
        const char *e;
        sigset_t mask;
        int r;

        e = getenv("MND_LOG_LEVEL");
        if (e) {
                r = log_level_from_string(e);
                if (r < 0)
                        log_warning("Ignoring MND_LOG_LEVEL=%s: not a log level.", e);
                else
                        log_set_max_level(r);
        }

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r;

        if (arg_introspect)
                return mnd_bus_introspect_print();

        r = mnd_config_init(&config);
        if (r < 0)
                return log_oom();
        r = mnd_config_load(&config, arg_config ?: MND_CONFIG_DEFAULT_PATH, !!arg_config, &config_error);
        if (r < 0) {
                log_error("%s", config_error ?: "Cannot load the configuration.");
                return r;
        }
        if (arg_state_dir) {
                char *p = strdup(arg_state_dir);
                if (!p)
                        return log_oom();
                free(config.state_directory);
                config.state_directory = p;
        }
        r = mkdir_p(config.state_directory, 0750);
        if (r < 0)
                return log_error_errno(r, "Cannot create the state directory %s: %m", config.state_directory);

        (void) sd_bus_error_add_map(mnd_bus_error_map);

        r = sd_event_default(&event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        (void) sd_event_set_watchdog(event, true);

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");

        r = mnd_manager_new(event, &config, arg_user, &m);
        if (r < 0) {
                log_error_errno(r, "Cannot set up with state directory %s: %m", config.state_directory);
                goto finish;
        }

        r = sd_event_add_signal(event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(event, NULL, SIGINT, on_signal, m);
        if (r < 0) {
                log_error_errno(r, "Cannot watch for signals: %m");
                goto finish;
        }

        r = arg_user ? sd_bus_open_user_with_description(&bus, "mnd")
                     : sd_bus_open_system_with_description(&bus, "mnd");
        if (r < 0) {
                log_error_errno(r, "Cannot connect to the %s bus: %m", arg_user ? "session" : "system");
                goto finish;
        }
        r = mnd_manager_attach_bus(m, bus);
        if (r < 0)
                goto finish;
        r = sd_bus_request_name(bus, MND_BUS_NAME, 0);
        if (r == -EEXIST) {
                log_error("Another program (another mnd?) already owns %s on the %s bus; exiting.", MND_BUS_NAME,
                          arg_user ? "session" : "system");
                goto finish;
        }
        if (r < 0) {
                log_error_errno(r, "Cannot acquire the bus name %s: %m", MND_BUS_NAME);
                goto finish;
        }
        r = sd_bus_attach_event(bus, event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                log_error_errno(r, "Cannot attach the bus to the event loop: %m");
                goto finish;
        }

        r = mnd_manager_start_discovery(m);
        if (r < 0)
                goto finish;

        log_info("mnd %s running on the %s bus as %s; state in %s.", MND_VERSION, arg_user ? "session" : "system",
                 MND_BUS_NAME, config.state_directory);
        (void) sd_notify(false, "READY=1");
        mnd_manager_notify_status(m);

        r = sd_event_loop(event);
        if (r < 0)
                log_error_errno(r, "Event loop failed: %m");

finish:
        /* Whatever happened: no pen keeps running without us (free() stops and closes them). */
        m = mnd_manager_free(m);
        return r;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);

        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
