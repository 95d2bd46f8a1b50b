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
        { OPT_NO_ASK_PASSWORD, "no-ask-password", 0, NULL, "Never let polkit ask for a password (refused instead)" },
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
        { OPT_SINCE,    "since",    0,   "TIME",     "Only events at or after TIME: 2026-11-20, 2026-11-20T14:30, -1h, today" },
        { OPT_UNTIL,    "until",    0,   "TIME",     "Only events before TIME (a date alone: to the end of that day)" },
        { OPT_PEN,      "pen",      0,   "PEN",      "Only this pen's events (a prefix names a connected pen)" },
        { OPT_SESSION,  "session",  0,   "N",        "Only the events of session N" },
        { OPT_CARTRIDGE, "cartridge", 0, "ID",       "Only the events with this cartridge" },
        { OPT_KIND,     "kind",     0,   "KIND",     "Only events of this kind: session-start, refusal ... (see mnctl(1))" },
        { OPT_UTC,      "utc",      0,   NULL,       "Show times in UTC instead of local time" },
        { OPT_FORMAT,   "format",   0,   "FORMAT",   "csv (RFC 4180, the default) or json (one array)" },
        { OPT_OUTPUT,   "output",   0,   "FILE",     "Write to FILE, replaced only once complete (default: standard output)" },
};

/* Options every command takes. */
static const enum mnctl_opt common_options[] = { OPT_JSON, OPT_USER, OPT_NO_COLOR, OPT_NO_ASK_PASSWORD, OPT_HELP };

#define OPTS(...) (const enum mnctl_opt[]) { __VA_ARGS__, _OPT_MAX }
#define NO_OPTS   (const enum mnctl_opt[]) { _OPT_MAX }
#define AUDIT_FILTERS OPT_SINCE, OPT_UNTIL, OPT_PEN, OPT_SESSION, OPT_CARTRIDGE, OPT_KIND

struct command {
        const char *name;       /* "list", or "audit list" for a command of a group */
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
        { "audit list",  "[FILTERS...] [--utc]", "List the audit log's events in a table",
          cmd_audit_list, 0, 0, OPTS(AUDIT_FILTERS, OPT_UTC) },
        { "audit show",  "N [--utc]",     "Show every field of audit event N",
          cmd_audit_show, 1, 1, OPTS(OPT_UTC) },
        { "audit export", "[--format csv|json] [--output FILE] [FILTERS...]",
          "Export the matching audit events for the clinic's records",
          cmd_audit_export, 0, 0, OPTS(OPT_FORMAT, OPT_OUTPUT, AUDIT_FILTERS) },
        { "audit verify", "",             "Check the audit log's hash chain",
          cmd_audit_verify, 0, 0, NO_OPTS },
        { "help",        "[COMMAND]",     "Show help for mnctl or a command",
          cmd_help, 0, 2, NO_OPTS },
};

/* Groups of commands ("audit list" ...): the first word, and what the group is for. */
static const struct {
        const char *name;
        const char *summary;
} groups[] = {
        { "audit", "The audit log: who needled with which pen and cartridge, how deep and how long, "
                   "and what mnd refused" },
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

static const char *group_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(groups); i++)
                if (streq(groups[i].name, name))
                        return groups[i].name;
        return NULL;
}

/* The command "GROUP NAME". */
static const struct command *command_find_in(const char *group, const char *name) {
        size_t n = strlen(group);

        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strncmp(commands[i].name, group, n) == 0 && commands[i].name[n] == ' ' &&
                    streq(commands[i].name + n + 1, name))
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

static void print_command(FILE *f, const char *name, const char *args, const char *summary) {
        char left[96];

        snprintf(left, sizeof(left), "%s %s", name, args);
        if (strlen(left) > 32)
                fprintf(f, "  %s\n  %-32s %s\n", left, "", summary);
        else
                fprintf(f, "  %-32s %s\n", left, summary);
}

static void help_main(FILE *f) {
        fprintf(f, "mnctl [OPTIONS...] COMMAND [ARGS...]\n\n"
                   "Control microneedling pens through mnd, the pen daemon.\n\n"
                   "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                print_command(f, commands[i].name, commands[i].args, commands[i].summary);
        fprintf(f, "\nOptions:\n");
        for (size_t i = 0; i < ELEMENTSOF(common_options); i++)
                print_option(f, option_def(common_options[i]));
        print_option(f, option_def(OPT_VERSION));
        fprintf(f, "\nPEN is a serial number or a unique prefix of one; it may be left out when one pen is\n"
                   "connected.  Depths: 0.5mm, 500um (a bare number is mm).  Durations: 90s, 20m, 1h30m\n"
                   "(a bare number is seconds).  Speeds: 120, 120hz.\n"
                   "Exit status: 0 ok, 2 usage, 3 no such pen or event, 4 refused by limits, 5 not authorised,\n"
                   "6 device or daemon error, 7 daemon not running, 8 audit chain broken.  See mnctl(1).\n");
}

static void help_group(FILE *f, const char *group) {
        size_t n = strlen(group);

        fprintf(f, "mnctl %s COMMAND [OPTIONS...]\n\n", group);
        for (size_t i = 0; i < ELEMENTSOF(groups); i++)
                if (streq(groups[i].name, group))
                        fprintf(f, "%s.\n\n", groups[i].summary);
        fprintf(f, "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strncmp(commands[i].name, group, n) == 0 && commands[i].name[n] == ' ')
                        print_command(f, commands[i].name + n + 1, commands[i].args, commands[i].summary);
        if (streq(group, "audit"))
                fprintf(f, "\nFILTERS: --since TIME, --until TIME, --pen PEN, --session N, --cartridge ID, --kind KIND.\n"
                           "TIME: 2026-11-20, 2026-11-20T14:30, '2026-11-20 14:30:05', with Z or +01:00 for\n"
                           "UTC or an offset (else local time); now, today, yesterday; -30m, -1h, -7d; @SECONDS.\n");
        fprintf(f, "\nSee 'mnctl %s COMMAND --help' and mnctl(1).\n", group);
}

static void help_command(FILE *f, const struct command *cmd) {
        fprintf(f, "mnctl %s %s\n\n%s.\n\nOptions:\n", cmd->name, cmd->args, cmd->summary);
        for (const enum mnctl_opt *o = cmd->options; *o != _OPT_MAX; o++)
                print_option(f, option_def(*o));
        for (size_t i = 0; i < ELEMENTSOF(common_options); i++)
                print_option(f, option_def(common_options[i]));
        fprintf(f, "\nSee mnctl(1).\n");
}

static void help_any(FILE *f, const struct command *cmd, const char *group) {
        if (cmd)
                help_command(f, cmd);
        else if (group)
                help_group(f, group);
        else
                help_main(f);
}

/* Help on stdout; with --json as {"help": "..."}, so that stdout stays JSON. */
static int print_help(struct mnctl *c, const struct command *cmd, const char *group) {
        _cleanup_(freep) char *text = NULL;
        size_t size = 0;
        struct json j;
        FILE *f;

        if (!c->json) {
                help_any(stdout, cmd, group);
                return 0;
        }

        f = open_memstream(&text, &size);
        if (!f)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        help_any(f, cmd, group);
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
        const char *group = NULL;

        if (a->npos > 0) {
                group = group_find(a->pos[0]);
                if (group && a->npos > 1) {
                        cmd = command_find_in(group, a->pos[1]);
                        if (!cmd)
                                return mnctl_usage(c, "unknown command '%s %s'; see 'mnctl %s --help'",
                                                   group, a->pos[1], group);
                } else if (!group) {
                        cmd = command_find(a->pos[0]);
                        if (!cmd)
                                return mnctl_usage(c, "unknown command '%s'; see 'mnctl --help'", a->pos[0]);
                        if (a->npos > 1)
                                return mnctl_usage(c, "too many arguments for 'mnctl help'; usage: mnctl help [COMMAND]");
                }
        }
        return print_help(c, cmd, group);
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
                      const char **ret_group, struct mnctl_args *a) {
        const struct command *cmd = NULL;
        const char *group = NULL;
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
                        if (!cmd && group) {
                                cmd = command_find_in(group, arg);
                                if (!cmd)
                                        return mnctl_usage(c, "unknown command '%s %s'; see 'mnctl %s --help'",
                                                           group, arg, group);
                                continue;
                        }
                        if (!cmd) {
                                group = group_find(arg);
                                if (group)
                                        continue;
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
                if (group)
                        return mnctl_usage(c, "option '--%s' needs a command after '%s'; see 'mnctl %s --help'",
                                           d->name, group, group);
                return mnctl_usage(c, "option '--%s' needs a command; see 'mnctl --help'", d->name);
        }

        *ret_cmd = cmd;
        *ret_group = group;
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
        const char *group = NULL;
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

        r = parse_args(c, argc, argv, &cmd, &group, a);
        if (r >= 0) {
                c->json = a->set[OPT_JSON];
                c->user_bus = c->user_bus || a->set[OPT_USER];
                c->no_color = a->set[OPT_NO_COLOR];
                c->no_ask_password = a->set[OPT_NO_ASK_PASSWORD];
                c->color = !c->json && mnctl_use_color(STDOUT_FILENO, c->no_color);
        }
        if (r < 0)
                goto finish;

        if (a->set[OPT_HELP]) {
                r = print_help(c, cmd, group);
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
        if (!cmd && group) {
                r = mnctl_usage(c, "'mnctl %s' needs a command; see 'mnctl %s --help'", group, group);
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
