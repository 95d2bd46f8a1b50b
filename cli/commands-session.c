/* SPDX-License-Identifier: GPL-2.0-or-later */
/* start: a treatment session, checked against the limits before the daemon is asked. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "units.h"

/* The daemon's limits for the free-text options (org.microneedle.Mnd1.xml, StartSession). */
#define OPERATOR_MAX 128
#define PATIENT_REF_MAX 64

void mnctl_json_session(struct json *j, const struct mnctl_session *s) {
        uint64_t elapsed_s = s->elapsed_ms / 1000;

        json_object_begin(j);
        json_kv_uint(j, "id", s->id);
        json_kv_string(j, "pen", s->pen_serial);
        json_kv_string(j, "area", s->area);
        json_kv_string(j, "state", s->state);
        json_kv_string(j, "end_reason", isempty(s->end_reason) ? NULL : s->end_reason);
        json_kv_uint(j, "planned_duration_s", s->planned_duration_s);
        json_kv_uint(j, "elapsed_ms", s->elapsed_ms);
        json_kv_uint(j, "remaining_s", elapsed_s < s->planned_duration_s ? s->planned_duration_s - elapsed_s : 0);
        json_kv_uint(j, "depth_um", s->depth_um);
        json_kv_uint(j, "speed_hz", s->speed_hz);
        json_kv_string(j, "operator", s->operator_name);
        json_kv_string(j, "patient_ref", s->patient_ref);
        json_kv_string(j, "cartridge", s->cartridge);
        json_kv_uint(j, "started_at_us", s->started_at);
        json_key(j, "ended_at_us");
        if (s->ended_at == 0)
                json_null(j);
        else
                json_uint(j, s->ended_at);
        json_kv_string(j, "object", s->path);
        json_object_end(j);
}

static int check_text(struct mnctl *c, const char *option, const char *value, size_t max) {
        if (value && strlen(value) > max)
                return mnctl_usage(c, "--%s is %zu bytes long; mnd takes at most %zu", option, strlen(value), max);
        return 0;
}

int cmd_start(struct mnctl *c, const struct mnctl_args *a) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(mnctl_pen_clearp) struct mnctl_pen p = {};
        _cleanup_(mnctl_session_clearp) struct mnctl_session s = {};
        _cleanup_(freep) char *path = NULL, *final_state = NULL;
        const char *area = a->value[OPT_AREA], *session_path, *check_area;
        uint32_t duration = 0, depth = 0, speed = 0;
        char reason[MNCTL_REASON_MAX], d1[16], d2[32], e1[128], e2[64], e3[128];
        struct mnp_limits limits;
        sd_bus *bus;
        int r;

        /* Everything that needs no daemon first: a usage error is a usage error with or without one. */
        if (!a->set[OPT_AREA] || isempty(area))
                return mnctl_usage(c, "'mnctl start' needs --area AREA (see 'mnctl limits' for the areas)");
        if (!a->set[OPT_DURATION])
                return mnctl_usage(c, "'mnctl start' needs --duration, such as --duration 20m");
        if (mnctl_parse_duration(a->value[OPT_DURATION], &duration, reason, sizeof(reason)) < 0)
                return mnctl_usage(c, "%s", reason);
        if (a->set[OPT_DEPTH] && mnctl_parse_depth(a->value[OPT_DEPTH], &depth, reason, sizeof(reason)) < 0)
                return mnctl_usage(c, "%s", reason);
        if (a->set[OPT_SPEED] && mnctl_parse_speed(a->value[OPT_SPEED], &speed, reason, sizeof(reason)) < 0)
                return mnctl_usage(c, "%s", reason);
        r = check_text(c, "operator", a->value[OPT_OPERATOR], OPERATOR_MAX);
        if (r < 0)
                return r;
        r = check_text(c, "patient", a->value[OPT_PATIENT], PATIENT_REF_MAX);
        if (r < 0)
                return r;

        r = mnctl_find_pen(c, a->npos > 0 ? a->pos[0] : NULL, &path, NULL);
        if (r < 0)
                return r;
        r = mnctl_load_pen(c, path, &p);
        if (r < 0)
                return r;

        /* The daemon's caps for the area (its NoSuchArea names an unknown one), then libmnp's checks. */
        r = mnctl_load_limits(c, area, &limits);
        if (r < 0)
                return r;
        check_area = mnp_limits_area(&limits, area) ? area : NULL;
        r = mnp_check_duration(&limits, check_area, duration, reason, sizeof(reason));
        if (r >= 0)
                r = mnctl_check_setpoint(&limits, &p, check_area, true, a->set[OPT_DEPTH] ? depth : p.depth_um,
                                         reason, sizeof(reason));
        if (r >= 0)
                r = mnctl_check_setpoint(&limits, &p, check_area, false, a->set[OPT_SPEED] ? speed : p.speed_hz,
                                         reason, sizeof(reason));
        if (r < 0)
                return mnctl_fail_limit(c, r, reason);

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, MND_BUS_NAME, path, MND_PEN_IFACE, "StartSession");
        if (r >= 0)
                r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0)
                r = sd_bus_message_append(m, "{sv}{sv}", "area", "s", area, "duration_s", "u", duration);
        if (r >= 0 && a->set[OPT_DEPTH])
                r = sd_bus_message_append(m, "{sv}", "depth_um", "u", depth);
        if (r >= 0 && a->set[OPT_SPEED])
                r = sd_bus_message_append(m, "{sv}", "speed_hz", "u", speed);
        if (r >= 0 && a->set[OPT_OPERATOR])
                r = sd_bus_message_append(m, "{sv}", "operator", "s", a->value[OPT_OPERATOR]);
        if (r >= 0 && a->set[OPT_PATIENT])
                r = sd_bus_message_append(m, "{sv}", "patient_ref", "s", a->value[OPT_PATIENT]);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "cannot build the StartSession call: %s", strerror(-r));

        if (!a->set[OPT_WAIT]) {
                r = sd_bus_call(bus, m, 0, &error, &reply);
                if (r < 0)
                        return mnctl_fail_bus(c, r, &error, "cannot start the session");
                r = sd_bus_message_read(reply, "o", &session_path);
                if (r < 0)
                        return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                          "mnd's reply to StartSession is not understood: %s", strerror(-r));
        } else {
                struct mnctl_signals sig;

                /*
                 * --wait promises that Ctrl-C stops the pen: the signals are caught before the
                 * session can start, so that one that comes at any moment after is never lost.
                 */
                mnctl_signals_catch(&sig);
                if (mnctl_signals_interrupted()) {
                        mnctl_signals_restore(&sig);
                        return mnctl_fail(c, -ECANCELED, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                          "interrupted before the session was started; nothing runs");
                }
                r = sd_bus_call(bus, m, 0, &error, &reply);
                if (r < 0) {
                        mnctl_signals_restore(&sig);
                        return mnctl_fail_bus(c, r, &error, "cannot start the session");
                }
                /* Interrupted while StartSession ran: the pen stops now, before anything else. */
                if (mnctl_signals_interrupted())
                        (void) mnctl_call(c, path, MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
                r = sd_bus_message_read(reply, "o", &session_path);
                if (r < 0) {
                        /* A session runs that cannot be followed: --wait does not leave it running. */
                        (void) mnctl_call(c, path, MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
                        mnctl_signals_restore(&sig);
                        return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                          "mnd's reply to StartSession is not understood: %s; the pen was stopped",
                                          strerror(-r));
                }

                if (!c->json) {
                        char serial[128], shown[256];

                        printf("%s: session started (%s); following it until it ends, Ctrl-C stops the pen.\n",
                               mnctl_escape(p.serial, serial, sizeof(serial)),
                               mnctl_escape(session_path, shown, sizeof(shown)));
                        fflush(stdout);
                }
                r = mnctl_follow(c, path, session_path, true, &sig, &final_state);
                mnctl_signals_restore(&sig);
                if (r < 0) {
                        if (mnctl_signals_interrupted())
                                (void) mnctl_call(c, path, MND_PEN_IFACE, "Stop", "cannot stop the pen", NULL, "");
                        return r;
                }
        }

        r = mnctl_load_session(c, session_path, &s);
        if (r < 0)
                return r;

        /* --wait: anything but "completed" is a failure, reported alone (pure JSON with --json). */
        if (a->set[OPT_WAIT] && !streq_ptr(s.state, "completed"))
                return mnctl_fail(c, -ECANCELED, MNCTL_EXIT_DEVICE, MNCTL_ERROR_SESSION_NOT_COMPLETED,
                                  "session %" PRIu64 " on %s did not complete: %s (%s) after %s of needling",
                                  s.id, p.serial, strempty(s.state), strempty(s.end_reason),
                                  mnctl_format_duration(s.elapsed_ms / 1000, d2, sizeof(d2)));

        if (c->json) {
                struct json j;

                json_init(&j, stdout, true);
                json_object_begin(&j);
                json_key(&j, "session");
                mnctl_json_session(&j, &s);
                json_object_end(&j);
                json_finish(&j);
        } else if (a->set[OPT_WAIT])
                printf("%s: session %" PRIu64 " completed: %s of needling\n",
                       mnctl_escape(p.serial, e1, sizeof(e1)), s.id,
                       mnctl_format_duration(s.elapsed_ms / 1000, d2, sizeof(d2)));
        else
                printf("%s: session %" PRIu64 " started: %s, %s at %u Hz for %s (cartridge %s)\n",
                       mnctl_escape(p.serial, e1, sizeof(e1)), s.id, mnctl_escape(s.area, e2, sizeof(e2)),
                       mnp_format_depth(s.depth_um, d1, sizeof(d1)), s.speed_hz,
                       mnctl_format_duration(s.planned_duration_s, d2, sizeof(d2)),
                       mnctl_escape(s.cartridge, e3, sizeof(e3)));
        return 0;
}
