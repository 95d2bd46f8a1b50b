/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl: the clinic's command line for mnd.  It talks only to mnd's D-Bus
 * API (org.microneedle.Mnd1), so everything it does another program can do.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"

#ifndef MNCTL_VERSION
#define MNCTL_VERSION "unknown"
#endif

struct option_def {
        enum mnctl_opt id;
        const char *name;
        char short_name;
        const char *arg;        /* the argument's name, NULL for a flag */
        const char *help;
};

static const struct option_def option_defs[] = {
        { OPT_HELP,     "help",     'h', NULL,       "Show this help" },
        { OPT_VERSION,  "version",  0,   NULL,       "Show mnctl's version" },
        { OPT_JSON,     "json",     0,   NULL,       "Print JSON (errors too) instead of text" },
        { OPT_USER,     "user",     0,   NULL,       "Talk to mnd on the session bus (also MNCTL_BUS=user)" },
        { OPT_NO_COLOR, "no-color", 0,   NULL,       "No colour, even on a terminal (also NO_COLOR=1)" },
        { OPT_AREA,     "area",     'a', "AREA",     "Treatment area id (see 'mnctl limits')" },
        { OPT_DURATION, "duration", 't', "DURATION", "Planned needling time: 90s, 20m, 1h30m; a bare number is seconds" },
        { OPT_DEPTH,    "depth",    'd', "DEPTH",    "Needle depth: 0.5mm, 500um; a bare number is mm (default: the pen's setting)" },
        { OPT_SPEED,    "speed",    's', "HZ",       "Strokes per second: 120, 120hz (default: the pen's setting)" },
        { OPT_OPERATOR, "operator", 'o', "NAME",     "Who operates the pen (for the audit log)" },
        { OPT_PATIENT,  "patient",  'p', "REF",      "The clinic's patient reference (for the audit log)" },
        { OPT_WAIT,     "wait",     'w', NULL,       "Follow the session until it ends (Ctrl-C stops the pen)" },
        { OPT_ALL,      "all",      0,   NULL,       "Stop every pen" },
        { OPT_SERIALS,  "serials",  0,   NULL,       "Print only the serial numbers, one per line" },
        { OPT_AREAS,    "areas",    0,   NULL,       "Print only the area ids, one per line" },
};

/* Options every command takes. */
static const enum mnctl_opt common_options[] = { OPT_JSON, OPT_USER, OPT_NO_COLOR, OPT_HELP };

#define OPTS(...) (const enum mnctl_opt[]) { __VA_ARGS__, _OPT_MAX }
#define NO_OPTS   (const enum mnctl_opt[]) { _OPT_MAX }

struct command {
        const char *name;
        const char *args;
        const char *summary;
        int (*run)(struct mnctl *c, const struct mnctl_args *a);
        size_t min_pos, max_pos;
        const enum mnctl_opt *options;
};

static int cmd_help(struct mnctl *c, const struct mnctl_args *a);

static const struct command commands[] = {
        { "list",        "",              "List the connected pens",
          cmd_list, 0, 0, OPTS(OPT_SERIALS) },
        { "info",        "[PEN]",         "Show everything about a pen",
          cmd_info, 0, 1, NO_OPTS },
        { "status",      "[PEN]",         "Show a pen's state and its running session's progress",
          cmd_status, 0, 1, NO_OPTS },
        { "limits",      "[AREA]",        "Show the effective caps for each treatment area",
          cmd_limits, 0, 1, OPTS(OPT_AREAS) },
        { "set-depth",   "[PEN] DEPTH",   "Set a pen's needle depth",
          cmd_set_depth, 1, 2, NO_OPTS },
        { "set-speed",   "[PEN] HZ",      "Set a pen's speed in strokes per second",
          cmd_set_speed, 1, 2, NO_OPTS },
        { "start",       "[PEN] --area AREA --duration DURATION", "Start a treatment session",
          cmd_start, 0, 1, OPTS(OPT_AREA, OPT_DURATION, OPT_DEPTH, OPT_SPEED, OPT_OPERATOR, OPT_PATIENT, OPT_WAIT) },
        { "stop",        "[PEN|--all]",   "Stop a pen (without PEN and with several pens: every pen)",
          cmd_stop, 0, 1, OPTS(OPT_ALL) },
        { "clear-fault", "[PEN]",         "Clear a pen's fault once its cause is gone",
          cmd_clear_fault, 0, 1, NO_OPTS },
        { "watch",       "[PEN]",         "Follow a pen's running session live",
          cmd_watch, 0, 1, NO_OPTS },
        { "monitor",     "",              "Print events as they happen",
          cmd_monitor, 0, 0, NO_OPTS },
        { "help",        "[COMMAND]",     "Show help for mnctl or a command",
          cmd_help, 0, 1, NO_OPTS },
};

static const struct option_def *option_def(enum mnctl_opt id) {
        for (size_t i = 0; i < ELEMENTSOF(option_defs); i++)
                if (option_defs[i].id == id)
                        return &option_defs[i];
        return NULL;
}

static const struct command *command_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(commands[i].name, name))
                        return &commands[i];
        return NULL;
}

static bool command_takes(const struct command *cmd, enum mnctl_opt id) {
        for (size_t i = 0; i < ELEMENTSOF(common_options); i++)
                if (common_options[i] == id)
                        return true;
        if (!cmd)
                return id == OPT_VERSION;
        for (const enum mnctl_opt *o = cmd->options; *o != _OPT_MAX; o++)
                if (*o == id)
                        return true;
        return false;
}

static void print_option(FILE *f, const struct option_def *d) {
        char left[64];

        if (d->short_name)
                snprintf(left, sizeof(left), "-%c --%s%s%s", d->short_name, d->name, d->arg ? " " : "", d->arg ?: "");
        else
                snprintf(left, sizeof(left), "   --%s%s%s", d->name, d->arg ? " " : "", d->arg ?: "");
        fprintf(f, "  %-24s %s\n", left, d->help);
}

static void help_main(FILE *f) {
        fprintf(f, "mnctl [OPTIONS...] COMMAND [ARGS...]\n\n"
                   "Control microneedling pens through mnd, the pen daemon.\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
                char left[64];

                snprintf(left, sizeof(left), "%s %s", commands[i].name, commands[i].args);
                if (strlen(left) > 32)
                        fprintf(f, "  %s\n  %-32s %s\n", left, "", commands[i].summary);
                else
                        fprintf(f, "  %-32s %s\n", left, commands[i].summary);
        }
        fprintf(f, "\nOptions:\n");
        for (size_t i = 0; i < ELEMENTSOF(common_options); i++)
                print_option(f, option_def(common_options[i]));
        print_option(f, option_def(OPT_VERSION));
        fprintf(f, "\nPEN is a serial number or a unique prefix of one; it may be left out when one pen is\n"
                   "connected.  Depths: 0.5mm, 500um (a bare number is mm).  Durations: 90s, 20m, 1h30m\n"
                   "(a bare number is seconds).  Speeds: 120, 120hz.\n"
                   "Exit status: 0 ok, 2 usage, 3 no such pen, 4 refused by limits, 5 not authorised,\n"
                   "6 device or daemon error, 7 daemon not running.  See mnctl(1).\n");
}

static void help_command(FILE *f, const struct command *cmd) {
        fprintf(f, "mnctl %s %s\n\n%s.\n\nOptions:\n", cmd->name, cmd->args, cmd->summary);
        for (const enum mnctl_opt *o = cmd->options; *o != _OPT_MAX; o++)
                print_option(f, option_def(*o));
        for (size_t i = 0; i < ELEMENTSOF(common_options); i++)
                print_option(f, option_def(common_options[i]));
        fprintf(f, "\nSee mnctl(1).\n");
}

/* Help on stdout; with --json as {"help": "..."}, so that stdout stays JSON. */
static int print_help(struct mnctl *c, const struct command *cmd) {
        _cleanup_(freep) char *text = NULL;
        size_t size = 0;
        struct json j;
        FILE *f;

        if (!c->json) {
                if (cmd)
                        help_command(stdout, cmd);
                else
                        help_main(stdout);
                return 0;
        }

        f = open_memstream(&text, &size);
        if (!f)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        if (cmd)
                help_command(f, cmd);
        else
                help_main(f);
        if (fclose(f) < 0)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");

        json_init(&j, stdout, true);
        json_object_begin(&j);
        json_kv_string(&j, "help", text);
        json_object_end(&j);
        json_finish(&j);
        return 0;
}

static int cmd_help(struct mnctl *c, const struct mnctl_args *a) {
        const struct command *cmd = NULL;

        if (a->npos > 0) {
                cmd = command_find(a->pos[0]);
                if (!cmd)
                        return mnctl_usage(c, "unknown command '%s'; see 'mnctl --help'", a->pos[0]);
        }
        return print_help(c, cmd);
}

static const struct option_def *match_option(const char *arg, const char **ret_value) {
        *ret_value = NULL;

        if (arg[1] == '-') {
                const char *name = arg + 2, *eq = strchr(name, '=');
                size_t n = eq ? (size_t) (eq - name) : strlen(name);

                for (size_t i = 0; i < ELEMENTSOF(option_defs); i++)
                        if (strlen(option_defs[i].name) == n && strncmp(option_defs[i].name, name, n) == 0) {
                                if (eq)
                                        *ret_value = eq + 1;
                                return &option_defs[i];
                        }
                return NULL;
        }
        for (size_t i = 0; i < ELEMENTSOF(option_defs); i++)
                if (option_defs[i].short_name && option_defs[i].short_name == arg[1]) {
                        if (arg[2])
                                *ret_value = arg + 2;
                        return &option_defs[i];
                }
        return NULL;
}

/* A negative number ("-1", "-0.5mm") is a value, for the parsers to refuse with a clear sentence. */
static bool looks_like_option(const char *arg) {
        return arg[0] == '-' && arg[1] != '\0' && !(arg[1] >= '0' && arg[1] <= '9') && arg[1] != '.';
}

/*
 * Parses argv: global options anywhere, the command (the first positional
 * argument), then the command's options and positional arguments in any
 * order; "--" ends the options.
 */
static int parse_args(struct mnctl *c, int argc, char **argv, const struct command **ret_cmd,
                      struct mnctl_args *a) {
        const struct command *cmd = NULL;
        bool options_done = false;

        a->pos = calloc((size_t) argc, sizeof(char *));
        if (!a->pos)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");

        for (int i = 1; i < argc; i++) {
                const char *arg = argv[i], *value;
                const struct option_def *d;

                if (!options_done && streq(arg, "--")) {
                        options_done = true;
                        continue;
                }
                if (options_done || !looks_like_option(arg)) {
                        if (!cmd) {
                                cmd = command_find(arg);
                                if (!cmd)
                                        return mnctl_usage(c, "unknown command '%s'; see 'mnctl --help'", arg);
                                continue;
                        }
                        a->pos[a->npos++] = argv[i];
                        continue;
                }

                d = match_option(arg, &value);
                if (!d || (arg[1] != '-' && value && !d->arg)) {
                        if (cmd)
                                return mnctl_usage(c, "unknown option '%s' for 'mnctl %s'; see 'mnctl %s --help'",
                                                   arg, cmd->name, cmd->name);
                        return mnctl_usage(c, "unknown option '%s'; see 'mnctl --help'", arg);
                }
                if (d->arg && !value) {
                        if (i + 1 >= argc)
                                return mnctl_usage(c, "option '%s' needs a value (%s)", arg, d->arg);
                        value = argv[++i];
                }
                if (!d->arg && value)
                        return mnctl_usage(c, "option '--%s' takes no value", d->name);
                if (a->set[d->id] && d->arg)
                        return mnctl_usage(c, "option '--%s' given twice", d->name);
                a->set[d->id] = true;
                a->value[d->id] = value ?: "";
        }

        /* Options a command does not take are refused, so that a typo never goes unnoticed. */
        for (size_t k = 0; k < ELEMENTSOF(option_defs); k++) {
                const struct option_def *d = &option_defs[k];

                if (!a->set[d->id] || a->set[OPT_HELP] || command_takes(cmd, d->id))
                        continue;
                if (cmd)
                        return mnctl_usage(c, "'mnctl %s' takes no option '--%s'; see 'mnctl %s --help'",
                                           cmd->name, d->name, cmd->name);
                return mnctl_usage(c, "option '--%s' needs a command; see 'mnctl --help'", d->name);
        }

        *ret_cmd = cmd;
        return 0;
}

static bool env_user_bus(struct mnctl *c) {
        const char *e = getenv("MNCTL_BUS");

        if (isempty(e) || streq(e, "system"))
                return false;
        if (streq(e, "user") || streq(e, "session"))
                return true;
        mnctl_usage(c, "MNCTL_BUS='%s' is not understood: use 'system' or 'user'", e);
        return false;
}

static int run(struct mnctl *c, int argc, char **argv) {
        _cleanup_(freep) struct mnctl_args *a = calloc(1, sizeof(struct mnctl_args));
        const struct command *cmd = NULL;
        int r;

        if (!a)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");

        /* --json first, so that even a usage error comes out as JSON. */
        for (int i = 1; i < argc && !streq(argv[i], "--"); i++)
                if (streq(argv[i], "--json"))
                        c->json = true;

        c->user_bus = env_user_bus(c);
        if (c->error_name)
                return -EINVAL;

        r = parse_args(c, argc, argv, &cmd, a);
        if (r >= 0) {
                c->json = a->set[OPT_JSON];
                c->user_bus = c->user_bus || a->set[OPT_USER];
                c->no_color = a->set[OPT_NO_COLOR];
                c->color = !c->json && mnctl_use_color(STDOUT_FILENO, c->no_color);
        }
        if (r < 0)
                goto finish;

        if (a->set[OPT_HELP]) {
                r = print_help(c, cmd);
                goto finish;
        }
        if (a->set[OPT_VERSION]) {
                if (c->json) {
                        struct json j;

                        json_init(&j, stdout, true);
                        json_object_begin(&j);
                        json_kv_string(&j, "version", MNCTL_VERSION);
                        json_object_end(&j);
                        json_finish(&j);
                } else
                        printf("mnctl %s\n", MNCTL_VERSION);
                goto finish;
        }
        if (!cmd) {
                r = mnctl_usage(c, "no command given; see 'mnctl --help'");
                goto finish;
        }
        if (a->npos > cmd->max_pos && cmd->max_pos == 0) {
                r = mnctl_usage(c, "'mnctl %s' takes no arguments ('%s' is one too many)", cmd->name, a->pos[0]);
                goto finish;
        }
        if (a->npos < cmd->min_pos || a->npos > cmd->max_pos) {
                r = mnctl_usage(c, "%s arguments for 'mnctl %s'; usage: mnctl %s %s",
                                a->npos < cmd->min_pos ? "too few" : "too many", cmd->name, cmd->name, cmd->args);
                goto finish;
        }

        r = cmd->run(c, a);
finish:
        free(a->pos);
        return r;
}

int main(int argc, char **argv) {
        struct mnctl c = {};
        int r, code;

        r = run(&c, argc, argv);
        if (r < 0 && !c.error_name)
                mnctl_fail(&c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "%s", strerror(-r));
        if (fflush(stdout) != 0 && !c.error_name)
                mnctl_fail(&c, -EIO, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "cannot write the output: %m");

        if (c.error_name)
                mnctl_report_error(&c);
        code = c.error_name ? c.exit_code : MNCTL_EXIT_OK;
        mnctl_done(&c);
        return code;
}
