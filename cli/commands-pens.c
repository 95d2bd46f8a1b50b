/* SPDX-License-Identifier: GPL-2.0-or-later */
/* The pen commands: list, info, status, set-depth, set-speed, clear-fault, stop. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "units.h"

void mnctl_json_pen(struct json *j, const struct mnctl_pen *p) {
        json_object_begin(j);
        json_kv_string(j, "serial", p->serial);
        json_kv_string(j, "model", p->model);
        json_kv_string(j, "firmware", p->firmware);
        json_kv_string(j, "transport", p->transport);
        json_kv_string(j, "state", p->state);
        json_kv_uint(j, "depth_um", p->depth_um);
        json_kv_uint(j, "speed_hz", p->speed_hz);
        json_kv_uint(j, "actual_depth_um", p->actual_depth_um);
        json_kv_uint(j, "actual_speed_hz", p->actual_speed_hz);
        json_key(j, "depth_range_um");
        json_object_begin(j);
        json_kv_uint(j, "min", p->depth_range[0]);
        json_kv_uint(j, "max", p->depth_range[1]);
        json_kv_uint(j, "step", p->depth_range[2]);
        json_object_end(j);
        json_key(j, "speed_range_hz");
        json_object_begin(j);
        json_kv_uint(j, "min", p->speed_range[0]);
        json_kv_uint(j, "max", p->speed_range[1]);
        json_object_end(j);
        json_kv_string(j, "cartridge", isempty(p->cartridge) ? NULL : p->cartridge);
        json_key(j, "battery_percent");
        if (p->battery == 255)
                json_null(j);
        else
                json_uint(j, p->battery);
        json_kv_string(j, "session", mnctl_pen_has_session(p) ? p->session : NULL);
        json_kv_string(j, "fault", isempty(p->fault) ? NULL : p->fault);
        json_kv_string(j, "object", p->path);
        json_object_end(j);
}

/* "Label:      value", the value escaped for the terminal (between colour codes, if any). */
static void print_field(const char *label, const char *color, const char *value) {
        printf("%-12s %s", label, strempty(color));
        mnctl_fputs_text(stdout, value, false);
        printf("%s\n", isempty(color) ? "" : ANSI_NORMAL);
}

static const char *battery_text(uint8_t battery, char *buf, size_t size) {
        if (battery == 255)
                return "-";
        snprintf(buf, size, "%u%%", battery);
        return buf;
}

int cmd_list(struct mnctl *c, const struct mnctl_args *a) {
        static const char *const headers[] = {
                "SERIAL", "MODEL", "TRANSPORT", "STATE", "DEPTH", "SPEED", "CARTRIDGE", "BATTERY", NULL };
        _cleanup_(strv_freep) char **paths = NULL, **serials = NULL;
        _cleanup_(table_freep) struct table *t = NULL;
        struct mnctl_pen *pens = NULL;
        size_t n;
        int r;

        /* --serials is what the shell completion asks: it never starts mnd, nor waits long for it. */
        c->quick = a->set[OPT_SERIALS];
        r = mnctl_list_pens(c, &paths, &serials);
        if (r < 0)
                return r;
        n = strv_length(paths);

        if (a->set[OPT_SERIALS]) {
                if (c->json) {
                        struct json j;

                        json_init(&j, stdout, true);
                        json_object_begin(&j);
                        json_key(&j, "serials");
                        json_array_begin(&j);
                        for (size_t i = 0; i < n; i++)
                                json_string(&j, serials[i]);
                        json_array_end(&j);
                        json_object_end(&j);
                        json_finish(&j);
                } else
                        for (size_t i = 0; i < n; i++)
                                printf("%s\n", serials[i]);
                return 0;
        }

        pens = calloc(n + 1, sizeof(struct mnctl_pen));
        if (!pens)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        for (size_t i = 0; i < n; i++) {
                r = mnctl_load_pen(c, paths[i], &pens[i]);
                if (r < 0)
                        goto finish;
        }

        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_key(&j, "pens");
                json_array_begin(&j);
                for (size_t i = 0; i < n; i++)
                        mnctl_json_pen(&j, &pens[i]);
                json_array_end(&j);
                json_object_end(&j);
                json_finish(&j);
                goto finish;
        }

        if (n == 0) {
                printf("No pens connected.\n");
                goto finish;
        }

        t = table_new(headers);
        if (!t) {
                r = mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                goto finish;
        }
        for (size_t i = 0; i < n; i++) {
                const struct mnctl_pen *p = &pens[i];
                char depth[16], speed[16], battery[8];

                snprintf(speed, sizeof(speed), "%u Hz", p->speed_hz);
                r = table_add_row(t, (const char *const[]) {
                        p->serial, p->model, p->transport, p->state,
                        mnp_format_depth(p->depth_um, depth, sizeof(depth)), speed,
                        isempty(p->cartridge) ? "-" : p->cartridge,
                        battery_text(p->battery, battery, sizeof(battery)) });
                if (r < 0) {
                        r = mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                        goto finish;
                }
                table_set_color(t, 3, mnctl_state_color(p->state));
        }
        table_print(t, stdout, c->color);
        r = 0;
finish:
        for (size_t i = 0; i < n; i++)
                mnctl_pen_clear(&pens[i]);
        free(pens);
        return r;
}

/* Finds and loads the pen a command names (NULL: the only one). */
static int load_named_pen(struct mnctl *c, const char *arg, struct mnctl_pen *ret) {
        _cleanup_(freep) char *path = NULL;
        int r;

        r = mnctl_find_pen(c, arg, &path, NULL);
        if (r < 0)
                return r;
        return mnctl_load_pen(c, path, ret);
}

/* Loads the pen a command names and its session, if it has one (else s stays empty). */
static int load_pen_and_session(struct mnctl *c, const struct mnctl_args *a, struct mnctl_pen *p,
                                struct mnctl_session *s) {
        int r;

        r = load_named_pen(c, a->npos > 0 ? a->pos[0] : NULL, p);
        if (r < 0)
                return r;
        if (mnctl_pen_has_session(p))
                return mnctl_load_session(c, p->session, s);
        return 0;
}

/* {"pen": ..., "session": ... or null} */
static void print_pen_and_session_json(const struct mnctl_pen *p, const struct mnctl_session *s) {
        struct json j;

        json_init(&j, stdout, true);
        json_object_begin(&j);
        json_key(&j, "pen");
        mnctl_json_pen(&j, p);
        json_key(&j, "session");
        if (s->path)
                mnctl_json_session(&j, s);
        else
                json_null(&j);
        json_object_end(&j);
        json_finish(&j);
}

int cmd_info(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(mnctl_pen_clearp) struct mnctl_pen p = {};
        _cleanup_(mnctl_session_clearp) struct mnctl_session s = {};
        char buf[6][160], d1[16], d2[16], d3[16];
        int r;

        r = load_pen_and_session(c, a, &p, &s);
        if (r < 0)
                return r;
        if (c->json) {
                print_pen_and_session_json(&p, &s);
                return 0;
        }

        snprintf(buf[0], sizeof(buf[0]), "%s set, %s measured",
                 mnp_format_depth(p.depth_um, d1, sizeof(d1)), mnp_format_depth(p.actual_depth_um, d2, sizeof(d2)));
        snprintf(buf[1], sizeof(buf[1]), "%u Hz set, %u Hz measured", p.speed_hz, p.actual_speed_hz);
        snprintf(buf[2], sizeof(buf[2]), "%s to %s in steps of %s",
                 mnp_format_depth(p.depth_range[0], d1, sizeof(d1)), mnp_format_depth(p.depth_range[1], d2, sizeof(d2)),
                 mnp_format_depth(p.depth_range[2], d3, sizeof(d3)));
        snprintf(buf[3], sizeof(buf[3]), "%u to %u Hz", p.speed_range[0], p.speed_range[1]);
        if (s.path) {
                char area[64], state[64];

                snprintf(buf[4], sizeof(buf[4]), "%" PRIu64 " (%s, %s)", s.id, mnctl_escape(s.area, area, sizeof(area)),
                         mnctl_escape(s.state, state, sizeof(state)));
        } else
                snprintf(buf[4], sizeof(buf[4]), "none");

        /* Everything the pen and the daemon said, escaped for the terminal. */
        print_field("Serial:", NULL, p.serial);
        print_field("Model:", NULL, p.model);
        print_field("Firmware:", NULL, p.firmware);
        print_field("Transport:", NULL, p.transport);
        print_field("State:", c->color ? mnctl_state_color(p.state) : NULL, p.state);
        print_field("Depth:", NULL, buf[0]);
        print_field("Speed:", NULL, buf[1]);
        print_field("Depth range:", NULL, buf[2]);
        print_field("Speed range:", NULL, buf[3]);
        print_field("Cartridge:", NULL, isempty(p.cartridge) ? "none" : p.cartridge);
        print_field("Battery:", NULL, p.battery == 255 ? "mains or unknown" : battery_text(p.battery, buf[5], sizeof(buf[5])));
        printf("%-12s %s\n", "Session:", buf[4]);      /* escaped above */
        print_field("Fault:", c->color && !isempty(p.fault) ? ANSI_RED : NULL, isempty(p.fault) ? "none" : p.fault);
        print_field("Object:", NULL, p.path);
        return 0;
}

int cmd_status(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(mnctl_pen_clearp) struct mnctl_pen p = {};
        _cleanup_(mnctl_session_clearp) struct mnctl_session s = {};
        int r;

        r = load_pen_and_session(c, a, &p, &s);
        if (r < 0)
                return r;
        if (c->json) {
                print_pen_and_session_json(&p, &s);
                return 0;
        }
        mnctl_print_view(stdout, &p, s.path ? &s : NULL, c->color);
        return 0;
}

/* The area whose caps apply to a pen now: its running session's, or NULL. */
static int session_area(struct mnctl *c, const struct mnctl_pen *p, char **ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus;
        int r;

        *ret = NULL;
        if (!mnctl_pen_has_session(p))
                return 0;
        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;
        r = sd_bus_get_property_string(bus, MND_BUS_NAME, p->session, MND_SESSION_IFACE, "Area", &error, ret);
        if (r < 0)
                return mnctl_fail_bus(c, r, &error, "cannot read the running session's area");
        return 0;
}

/* set-depth and set-speed: [PEN] VALUE. */
static int set_value(struct mnctl *c, const struct mnctl_args *a, bool depth) {
        _cleanup_(mnctl_pen_clearp) struct mnctl_pen p = {};
        _cleanup_(freep) char *area = NULL;
        const char *pen_arg = a->npos == 2 ? a->pos[0] : NULL, *text = a->pos[a->npos - 1];
        char reason[MNCTL_REASON_MAX], shown[16], serial[128];
        struct mnp_limits limits;
        uint32_t value;
        int r;

        r = depth ? mnctl_parse_depth(text, &value, reason, sizeof(reason)) :
                    mnctl_parse_speed(text, &value, reason, sizeof(reason));
        if (r < 0)
                return mnctl_usage(c, "%s", reason);

        r = load_named_pen(c, pen_arg, &p);
        if (r < 0)
                return r;
        r = session_area(c, &p, &area);
        if (r < 0)
                return r;
        r = mnctl_load_limits(c, area, &limits);
        if (r < 0)
                return r;

        /* A pen still connecting has no ranges yet: then the daemon answers for it (NotConnected, Busy). */
        r = mnctl_check_setpoint(&limits, &p, area, depth, value, reason, sizeof(reason));
        if (r < 0)
                return mnctl_fail_limit(c, r, reason);

        r = mnctl_call(c, p.path, MND_PEN_IFACE, depth ? "SetDepth" : "SetSpeed",
                       depth ? "cannot set the depth" : "cannot set the speed", NULL, "u", value);
        if (r < 0)
                return r;

        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_kv_string(&j, "pen", p.serial);
                json_kv_uint(&j, depth ? "depth_um" : "speed_hz", value);
                json_object_end(&j);
                json_finish(&j);
        } else if (depth)
                printf("%s: depth set to %s\n", mnctl_escape(p.serial, serial, sizeof(serial)),
                       mnp_format_depth(value, shown, sizeof(shown)));
        else
                printf("%s: speed set to %u Hz\n", mnctl_escape(p.serial, serial, sizeof(serial)), value);
        return 0;
}

int cmd_set_depth(struct mnctl *c, const struct mnctl_args *a) {
        return set_value(c, a, true);
}

int cmd_set_speed(struct mnctl *c, const struct mnctl_args *a) {
        return set_value(c, a, false);
}

int cmd_clear_fault(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(freep) char *path = NULL, *serial = NULL;
        int r;

        r = mnctl_find_pen(c, a->npos > 0 ? a->pos[0] : NULL, &path, &serial);
        if (r < 0)
                return r;
        r = mnctl_call(c, path, MND_PEN_IFACE, "ClearFault", "cannot clear the fault", NULL, "");
        if (r < 0)
                return r;

        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_kv_string(&j, "pen", serial);
                json_kv_bool(&j, "fault_cleared", true);
                json_object_end(&j);
                json_finish(&j);
        } else {
                mnctl_fputs_text(stdout, serial, false);
                fputs(": fault cleared\n", stdout);
        }
        return 0;
}

static void print_stopped(struct mnctl *c, char *const *serials, bool all) {
        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_kv_bool(&j, "all", all);
                json_key(&j, "stopped");
                json_array_begin(&j);
                for (char *const *s = serials; s && *s; s++)
                        json_string(&j, *s);
                json_array_end(&j);
                json_object_end(&j);
                json_finish(&j);
                return;
        }
        if (!all)
                for (char *const *s = serials; s && *s; s++) {
                        mnctl_fputs_text(stdout, *s, false);
                        fputs(": stopped\n", stdout);
                }
        else if (strv_length(serials) == 0)
                printf("No pens connected; nothing was running.\n");
        else
                printf("Stopped every pen (%zu).\n", strv_length(serials));
}

/*
 * Stops the pens whose serial numbers a PEN argument matches: the one it
 * names (an exact serial, or a prefix of one only), or, when it is a prefix
 * of several, every one of them: stopping is never made harder by an
 * ambiguity.  Each pen is stopped even when stopping another failed; the
 * first failure is the error.  *ret_stopped: the serials of those stopped.
 */
static int stop_matching(struct mnctl *c, const char *arg, char ***ret_stopped) {
        _cleanup_(strv_freep) char **paths = NULL, **serials = NULL, **stopped = NULL;
        size_t n, k = 0, i = 0;
        int r, ret = 0;

        r = mnctl_list_pens(c, &paths, &serials);
        if (r < 0)
                return r;
        n = strv_length(serials);
        stopped = calloc(n + 1, sizeof(char *));
        if (!stopped)
                return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");

        r = mnctl_pen_resolve((const char *const *) serials, arg, &i);
        if (r == -ENODEV) {
                _cleanup_(freep) char *message = mnctl_pen_resolve_message(r, arg, (const char *const *) serials);

                return mnctl_fail(c, r, MNCTL_EXIT_NO_PEN, MND_ERROR_PREFIX "NoSuchPen", "%s",
                                  message ?: "no such pen");
        }

        for (size_t j = 0; j < n; j++) {
                int q;

                if (r >= 0 ? j != i : !mnctl_pen_prefix_matches(serials[j], arg, true))
                        continue;
                q = mnctl_call(c, paths[j], MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
                if (q < 0) {
                        if (ret >= 0)
                                ret = q;
                        continue;
                }
                stopped[k] = strdup(serials[j]);
                if (!stopped[k])
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
                k++;
        }
        if (r == -ENOTUNIQ && !c->json) {
                fputs("mnctl: '", stderr);
                mnctl_fputs_text(stderr, arg, false);
                fprintf(stderr, "' matches %zu pens: stopped each of them\n", k);
        }
        *ret_stopped = TAKE_PTR(stopped);
        return ret;
}

/*
 * Stopping is never refused, and never made harder than it must be: without
 * PEN, "stop" stops the only pen, or every pen when there are several; a PEN
 * prefix of several pens stops each of them.
 */
int cmd_stop(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(strv_freep) char **paths = NULL, **serials = NULL, **stopped = NULL;
        _cleanup_(freep) char *path = NULL, *serial = NULL;
        int r;

        if (a->set[OPT_ALL] && a->npos > 0)
                return mnctl_usage(c, "give a PEN or --all, not both");

        if (a->npos > 0) {
                r = stop_matching(c, a->pos[0], &stopped);
                /* The pens that did stop are said even when another failed. */
                if (stopped && stopped[0] && (r >= 0 || !c->json))
                        print_stopped(c, stopped, false);
                return r;
        }

        r = mnctl_list_pens(c, &paths, &serials);
        if (r < 0)
                return r;
        if (!a->set[OPT_ALL] && strv_length(paths) == 1) {
                path = strdup(paths[0]);
                serial = strdup(serials[0]);
                if (!path || !serial)
                        return mnctl_fail(c, -ENOMEM, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "out of memory");
        }

        if (path) {
                r = mnctl_call(c, path, MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
                if (r < 0)
                        return r;
                print_stopped(c, (char *const[]) { serial, NULL }, false);
                return 0;
        }

        r = mnctl_call(c, MND_MANAGER_PATH, MND_MANAGER_IFACE, "StopAll", "cannot stop every pen", NULL, "");
        if (r < 0)
                return r;
        print_stopped(c, serials, true);
        return 0;
}
