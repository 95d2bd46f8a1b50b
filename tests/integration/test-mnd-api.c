/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnd's D-Bus API member by member, against one USB and one serial pen
 * (mnsim --usb 1 --serial 1 --cartridge), with a configuration that lowers
 * some caps: Manager (Version, Pens, Areas, GetLimits of every area,
 * GetPenBySerial, StopAll), Pen (every property, SetDepth, SetSpeed,
 * StartSession, Stop, ClearFault, the Fault signal), Session (every
 * property), PropertiesChanged, and the refusals: each error name the API
 * lists that a client can provoke here, each message naming the value and the
 * limit, each refusal leaving the pen untouched (checked in the pen itself,
 * through mnsim).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mnd-harness.h"

static const char config[] =
        "# This test is about the API, not liveness: a pen is declared lost only after 1 s of\n"
        "# silence, so that a loaded machine does not end a session here (the other tests keep\n"
        "# the default 250 ms).\n"
        "[link]\n"
        "peer_timeout_ms = 1000\n"
        "# Lowers some caps (a configuration may only lower them).\n"
        "[limits]\n"
        "max_speed_hz = 140\n"
        "[area.forehead]\n"
        "max_depth_um = 600\n"
        "[area.cheeks]\n"
        "max_speed_hz = 120\n"
        "[area.body]\n"
        "max_duration_s = 1800\n";

static const struct {
        const char *id;
        uint32_t depth, speed, duration;
} expected_limits[] = {
        /* domain.md's table with the configuration above applied */
        { "periorbital",  500, 140, 15 * 60 },
        { "forehead",     600, 140, 20 * 60 },
        { "nose",         500, 140, 10 * 60 },
        { "upper-lip",    750, 140, 10 * 60 },
        { "cheeks",      2000, 120, 30 * 60 },
        { "chin",        2000, 140, 15 * 60 },
        { "face",        2000, 140, 45 * 60 },
        { "neck",        1000, 140, 30 * 60 },
        { "decolletage", 1000, 140, 30 * 60 },
        { "scalp",       1500, 140, 30 * 60 },
        { "body",        2500, 140, 30 * 60 },
};

struct limits {
        uint32_t depth, speed, duration;
        unsigned n;
};

static int get_limits(struct harness *h, const char *area, sd_bus_error *e, struct limits *ret) {
        sd_bus_message *reply = NULL;
        int r;

        *ret = (struct limits) {};
        r = h_call(h, e, &reply, MND_PATH, MND_MANAGER, "GetLimits", "s", area);
        if (r < 0)
                return r;
        CHECK(streq(sd_bus_message_get_signature(reply, true), "a{sv}"), "GetLimits returned '%s'",
              sd_bus_message_get_signature(reply, true));
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        CHECK(r >= 0, "GetLimits: %s", strerror(-r));
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key, *contents;
                uint32_t v;

                CHECK(sd_bus_message_read(reply, "s", &key) >= 0, "GetLimits key");
                CHECK(sd_bus_message_peek_type(reply, NULL, &contents) > 0, "GetLimits value");
                CHECK(streq(contents, "u"), "GetLimits '%s' has type '%s', not 'u'", key, contents);
                CHECK(sd_bus_message_read(reply, "v", "u", &v) >= 0, "GetLimits value");
                if (streq(key, "MaxDepthUm"))
                        ret->depth = v;
                else if (streq(key, "MaxSpeedHz"))
                        ret->speed = v;
                else if (streq(key, "MaxDurationS"))
                        ret->duration = v;
                else
                        h_fail(__FILE__, __LINE__, "GetLimits returned an unknown key '%s'", key);
                ret->n++;
                CHECK(sd_bus_message_exit_container(reply) >= 0, "GetLimits");
        }
        sd_bus_message_unref(reply);
        return 0;
}

/* The refusals must leave the pen exactly as it was: checked in the pen model itself. */
static void check_pen_untouched(struct harness *h, const char *serial, const char *path, uint32_t depth,
                                uint32_t speed, const char *what) {
        struct h_sim_status st;
        char *s;

        h_sim_status(h, serial, &st);
        CHECK(st.depth_set == depth && st.speed_set == speed, "after %s: the pen's setpoints are %" PRIu32
              " um / %" PRIu32 " Hz, not %" PRIu32 " um / %" PRIu32 " Hz", what, st.depth_set, st.speed_set,
              depth, speed);
        CHECK(streq(st.state, "idle") && !st.needles_moving, "after %s: the pen is %s (needles moving %u)", what,
              st.state, st.needles_moving);
        CHECK(h_get_u(h, path, MND_PEN, "DepthUm") == depth, "after %s: DepthUm changed", what);
        CHECK(h_get_u(h, path, MND_PEN, "SpeedHz") == speed, "after %s: SpeedHz changed", what);
        s = h_get_o(h, path, MND_PEN, "Session");
        CHECK(streq(s, "/"), "after %s: Session is %s", what, s);
        free(s);
}

static void expect_string(struct harness *h, const char *path, const char *iface, const char *prop,
                          const char *want) {
        char *v = h_get_s(h, path, iface, prop);

        CHECK(streq(v, want), "%s %s is '%s', expected '%s'", path, prop, v, want);
        free(v);
}

static void expect_object(struct harness *h, const char *path, const char *iface, const char *prop,
                          const char *want) {
        char *o = h_get_o(h, path, iface, prop);

        CHECK(streq(o, want), "%s %s is '%s', expected '%s'", path, prop, o, want);
        free(o);
}

static void expect_range(struct harness *h, const char *path) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        uint32_t a, b, c;
        int r;

        r = sd_bus_get_property(h->bus, MND_NAME, path, MND_PEN, "DepthRangeUm", &e, &reply, "(uuu)");
        CHECK(r >= 0, "DepthRangeUm (type (uuu)): %s: %s", e.name, e.message);
        CHECK(sd_bus_message_read(reply, "(uuu)", &a, &b, &c) >= 0, "DepthRangeUm");
        CHECK(a == 0 && b == 3000 && c == 50, "DepthRangeUm is (%u, %u, %u), the pen says (0, 3000, 50)", a, b, c);
        reply = sd_bus_message_unref(reply);
        r = sd_bus_get_property(h->bus, MND_NAME, path, MND_PEN, "SpeedRangeHz", &e, &reply, "(uu)");
        CHECK(r >= 0, "SpeedRangeHz (type (uu)): %s: %s", e.name, e.message);
        CHECK(sd_bus_message_read(reply, "(uu)", &a, &b) >= 0, "SpeedRangeHz");
        CHECK(a == 50 && b == 150, "SpeedRangeHz is (%u, %u), the pen says (50, 150)", a, b);
        sd_bus_message_unref(reply);
        sd_bus_error_free(&e);
}

static uint64_t realtime_us(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t) ts.tv_sec * SEC + (uint64_t) ts.tv_nsec / 1000u;
}

static void test_manager(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        struct limits l;
        char **areas, *v, cmd[512], version[64] = "";
        const char *o;
        FILE *p;
        int r;

        /* Version: what mnd --version says. */
        snprintf(cmd, sizeof cmd, "%s --version", h->mnd_binary);
        p = popen(cmd, "r");
        CHECK(p && fgets(version, sizeof version, p), "running %s", cmd);
        pclose(p);
        version[strcspn(version, "\n")] = '\0';
        v = h_get_s(h, MND_PATH, MND_MANAGER, "Version");
        CHECK(v[0] && strncmp(version, "mnd ", 4) == 0 && streq(version + 4, v),
              "Version is '%s', mnd --version says '%s'", v, version);
        OK("Version '%s'", v);
        free(v);

        /* Areas: the ids of the limits table, in its order. */
        areas = h_get_strv(h, MND_PATH, MND_MANAGER, "Areas", 's');
        CHECK(h_strv_len(areas) == ELEMENTSOF(expected_limits), "Areas has %zu ids", h_strv_len(areas));
        for (size_t i = 0; i < ELEMENTSOF(expected_limits); i++)
                CHECK(streq(areas[i], expected_limits[i].id), "Areas[%zu] is '%s', not '%s'", i, areas[i],
                      expected_limits[i].id);
        h_strv_free(areas);
        OK("Areas: the %zu areas of the table", ELEMENTSOF(expected_limits));

        /* GetLimits: every area, after the configuration lowered some caps. */
        for (size_t i = 0; i < ELEMENTSOF(expected_limits); i++) {
                r = get_limits(h, expected_limits[i].id, &e, &l);
                CHECK(r >= 0, "GetLimits('%s'): %s", expected_limits[i].id, e.message);
                CHECK(l.n == 3, "GetLimits('%s') has %u entries", expected_limits[i].id, l.n);
                CHECK(l.depth == expected_limits[i].depth && l.speed == expected_limits[i].speed &&
                      l.duration == expected_limits[i].duration,
                      "GetLimits('%s') = %u um, %u Hz, %u s; expected %u um, %u Hz, %u s", expected_limits[i].id,
                      l.depth, l.speed, l.duration, expected_limits[i].depth, expected_limits[i].speed,
                      expected_limits[i].duration);
        }
        r = get_limits(h, "", &e, &l);
        CHECK(r >= 0 && l.depth == 3000 && l.speed == 140 && l.duration == 3600,
              "GetLimits('') = %u um, %u Hz, %u s", l.depth, l.speed, l.duration);
        OK("GetLimits: every area and the global caps, as configured");
        r = get_limits(h, "elbow", &e, &l);
        EXPECT_ERROR(&e, r, "NoSuchArea", "'elbow'");
        sd_bus_error_free(&e);
        OK("GetLimits('elbow'): NoSuchArea");

        /* Pens and GetPenBySerial. */
        {
                char **pens = h_get_strv(h, MND_PATH, MND_MANAGER, "Pens", 'o');

                CHECK(h_strv_len(pens) == 2 && h_strv_contains(pens, PEN_U1) && h_strv_contains(pens, PEN_S1),
                      "Pens does not hold exactly both pens");
                h_strv_free(pens);
        }
        r = h_call(h, &e, &reply, MND_PATH, MND_MANAGER, "GetPenBySerial", "s", "MNU-0001");
        CHECK(r >= 0 && sd_bus_message_read(reply, "o", &o) > 0 && streq(o, PEN_U1), "GetPenBySerial(MNU-0001)");
        reply = sd_bus_message_unref(reply);
        r = h_call(h, &e, &reply, MND_PATH, MND_MANAGER, "GetPenBySerial", "s", "MNS-0001");
        CHECK(r >= 0 && sd_bus_message_read(reply, "o", &o) > 0 && streq(o, PEN_S1), "GetPenBySerial(MNS-0001)");
        reply = sd_bus_message_unref(reply);
        r = h_call(h, &e, NULL, MND_PATH, MND_MANAGER, "GetPenBySerial", "s", "NOPE-9");
        EXPECT_ERROR(&e, r, "NoSuchPen", "'NOPE-9'");
        sd_bus_error_free(&e);
        OK("Pens, GetPenBySerial, NoSuchPen");
}

static void test_pen_properties(struct harness *h, const char *path, const char *serial, const char *model,
                                const char *transport, const char *cartridge) {
        struct h_sim_status st;

        h_sim_status(h, serial, &st);
        expect_string(h, path, MND_PEN, "Serial", serial);
        expect_string(h, path, MND_PEN, "Model", model);
        expect_string(h, path, MND_PEN, "Firmware", "1.0.0");
        expect_string(h, path, MND_PEN, "Transport", transport);
        expect_string(h, path, MND_PEN, "State", "idle");
        CHECK(h_get_u(h, path, MND_PEN, "DepthUm") == st.depth_set, "DepthUm is not the pen's %u", st.depth_set);
        CHECK(h_get_u(h, path, MND_PEN, "SpeedHz") == st.speed_set && st.speed_set == 50,
              "SpeedHz is not the pen's %u", st.speed_set);
        CHECK(h_get_u(h, path, MND_PEN, "ActualDepthUm") == st.depth_actual, "ActualDepthUm");
        CHECK(h_get_u(h, path, MND_PEN, "ActualSpeedHz") == 0, "ActualSpeedHz of an idle pen");
        expect_range(h, path);
        expect_string(h, path, MND_PEN, "Cartridge", cartridge);
        CHECK(h_get_y(h, path, MND_PEN, "BatteryPercent") == st.battery, "BatteryPercent is not the pen's %u",
              st.battery);
        expect_object(h, path, MND_PEN, "Session", "/");
        expect_string(h, path, MND_PEN, "Fault", "");
        OK("%s: every Pen property (%s, %s, battery %u%%)", serial, transport, cartridge, st.battery);
}

static void test_setpoints(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        size_t mark = h_mark(h);
        int r;

        CALL_OK(h, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 500);
        CHECK(h_get_u(h, PEN_U1, MND_PEN, "DepthUm") == 500, "DepthUm after SetDepth(500)");
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "DepthUm", "500", SEC), "no DepthUm change");
        CALL_OK(h, PEN_U1, MND_PEN, "SetSpeed", "u", (uint32_t) 100);
        CHECK(h_get_u(h, PEN_U1, MND_PEN, "SpeedHz") == 100, "SpeedHz after SetSpeed(100)");
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "SpeedHz", "100", SEC), "no SpeedHz change");
        h_sim_status(h, "MNU-0001", &st);
        CHECK(st.depth_set == 500 && st.speed_set == 100, "the pen's setpoints are %u um / %u Hz", st.depth_set,
              st.speed_set);
        /* The actuator moves to the new depth: ActualDepthUm follows (published at most 10 times a second). */
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "ActualDepthUm", "500", 2 * SEC),
              "ActualDepthUm never reached 500");
        CHECK(h_count(h, mark, PEN_U1, "PropertiesChanged", "ActualDepthUm", NULL) <= 4,
              "ActualDepthUm published %zu times for a 100 ms move",
              h_count(h, mark, PEN_U1, "PropertiesChanged", "ActualDepthUm", NULL));
        CHECK(h_get_u(h, PEN_U1, MND_PEN, "ActualDepthUm") == 500, "ActualDepthUm");
        OK("SetDepth, SetSpeed: acknowledged, in the pen, PropertiesChanged DepthUm, SpeedHz, ActualDepthUm");

        /* The serial pen too. */
        CALL_OK(h, PEN_S1, MND_PEN, "SetDepth", "u", (uint32_t) 250);
        CALL_OK(h, PEN_S1, MND_PEN, "SetSpeed", "u", (uint32_t) 80);
        h_sim_status(h, "MNS-0001", &st);
        CHECK(st.depth_set == 250 && st.speed_set == 80, "MNS-0001's setpoints are %u um / %u Hz", st.depth_set,
              st.speed_set);
        OK("SetDepth, SetSpeed on the serial pen");

        /* Refusals of SetDepth/SetSpeed: named error, value and limit in the message, pen untouched. */
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 3001);
        EXPECT_ERROR(&e, r, "InvalidArgument", "3.001 mm", "0.05 mm step");
        sd_bus_error_free(&e);
        check_pen_untouched(h, "MNU-0001", PEN_U1, 500, 100, "SetDepth(3001)");
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 3050);
        EXPECT_ERROR(&e, r, "LimitExceeded", "3.05 mm", "3.00 mm");
        sd_bus_error_free(&e);
        check_pen_untouched(h, "MNU-0001", PEN_U1, 500, 100, "SetDepth(3050)");
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 525);
        EXPECT_ERROR(&e, r, "InvalidArgument", "0.525 mm", "not a multiple", "0.05 mm");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", UINT32_MAX);
        EXPECT_ERROR(&e, r, "InvalidArgument", "4294967.295 mm", "0.05 mm");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", UINT32_MAX - 45);
        EXPECT_ERROR(&e, r, "LimitExceeded", "4294967.25 mm", "3.00 mm");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetSpeed", "u", (uint32_t) 141);
        EXPECT_ERROR(&e, r, "LimitExceeded", "141 Hz", "140 Hz");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetSpeed", "u", (uint32_t) 49);
        EXPECT_ERROR(&e, r, "LimitExceeded", "49 Hz", "minimum of 50 Hz");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetSpeed", "u", UINT32_MAX);
        EXPECT_ERROR(&e, r, "LimitExceeded", "4294967295 Hz", "140 Hz");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "s", "500");
        CHECK(r < 0 && sd_bus_error_has_name(&e, "org.freedesktop.DBus.Error.InvalidArgs"),
              "SetDepth with a string argument: %s", e.name ?: "accepted");
        sd_bus_error_free(&e);
        check_pen_untouched(h, "MNU-0001", PEN_U1, 500, 100, "the SetDepth/SetSpeed refusals");
        OK("SetDepth/SetSpeed refusals: 1 um over the cap (off step), 1 step over, off-step, UINT32_MAX, "
           "1 Hz over the clinic cap, 1 Hz under the pen's minimum: pen untouched");
}

static void test_start_refusals(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char longtext[200];
        int r;

#define REFUSED(name, ...)                                                              \
        do {                                                                            \
                EXPECT_ERROR(&e, r, name, __VA_ARGS__);                                 \
                sd_bus_error_free(&e);                                                  \
                check_pen_untouched(h, "MNU-0001", PEN_U1, 500, 100, "a refused StartSession"); \
        } while (0)

        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "depth_um", 'u', 601, NULL);
        REFUSED("InvalidArgument", "0.601 mm", "0.05 mm step");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "depth_um", 'u', 650, NULL);
        REFUSED("LimitExceeded", "0.65 mm", "0.60 mm", "'forehead'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 1201, NULL);
        REFUSED("LimitExceeded", "20 min 1 s", "20 min", "'forehead'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "body", "duration_s", 'u', 1801, NULL);
        REFUSED("LimitExceeded", "30 min 1 s", "30 min", "'body'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', 60,
                            "speed_hz", 'u', 121, NULL);
        REFUSED("LimitExceeded", "121 Hz", "120 Hz", "'cheeks'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', UINT32_MAX, NULL);
        REFUSED("LimitExceeded", "30 min");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', 60,
                            "depth_um", 'u', UINT32_MAX, NULL);
        REFUSED("InvalidArgument", "4294967.295 mm");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', 60,
                            "speed_hz", 'u', UINT32_MAX, NULL);
        REFUSED("LimitExceeded", "4294967295 Hz", "120 Hz");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', 0, NULL);
        REFUSED("InvalidArgument", "0 s");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "elbow", "duration_s", 'u', 60, NULL);
        REFUSED("NoSuchArea", "'elbow'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "a-very-long-area-name-indeed", "duration_s", 'u',
                            60, NULL);
        REFUSED("NoSuchArea", "a-very-long-area");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", NULL);
        REFUSED("InvalidArgument", "'duration_s'", "required");
        r = h_start_session(h, PEN_U1, &e, NULL, "duration_s", 'u', 60, NULL);
        REFUSED("InvalidArgument", "'area'", "required");
        r = h_start_session(h, PEN_U1, &e, NULL, NULL);
        REFUSED("InvalidArgument", "required");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 's', "60", NULL);
        REFUSED("InvalidArgument", "'duration_s'", "'u'", "'s'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 'u', 3, "duration_s", 'u', 60, NULL);
        REFUSED("InvalidArgument", "'area'", "'s'", "'u'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "depth_um", 'i', 500, NULL);
        REFUSED("InvalidArgument", "'depth_um'", "'u'", "'i'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 't', (uint64_t) 60, NULL);
        REFUSED("InvalidArgument", "'duration_s'", "'t'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "colour", 's', "red", NULL);
        REFUSED("InvalidArgument", "'colour'");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "area", 's', "nose", NULL);
        REFUSED("InvalidArgument", "'area'", "more than once");
        memset(longtext, 'x', sizeof longtext - 1);
        longtext[sizeof longtext - 1] = '\0';
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "operator", 's', longtext, NULL);
        REFUSED("InvalidArgument", "'operator'", "199 bytes", "128");
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 60,
                            "patient_ref", 's', "P\n1", NULL);
        REFUSED("InvalidArgument", "'patient_ref'", "control characters");
#undef REFUSED
        OK("StartSession refusals (over caps, off step, UINT32_MAX, zero, unknown area, missing, "
           "wrong-typed, unknown, repeated and malformed options): pen untouched, no session, cartridge unused");
}

static void test_session(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        size_t mark = h_mark(h), n_elapsed = 0;
        char *session = NULL;
        uint64_t t0, started, ended, elapsed, last_t = 0, max_gap = 0;
        uint64_t rt0 = realtime_us();
        int r;

        t0 = h_now_us();
        r = h_start_session(h, PEN_U1, &e, &session, "area", 's', "forehead", "duration_s", 'u', 2,
                            "depth_um", 'u', 550, "speed_hz", 'u', 120, "operator", 's', "Dr. Test",
                            "patient_ref", 's', "P-0042", NULL);
        CHECK(r >= 0, "StartSession: %s: %s", e.name, e.message);
        CHECK(streq(session, "/org/microneedle/Mnd1/session/1"), "the first session is %s", session);
        expect_object(h, PEN_U1, MND_PEN, "Session", session);
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "Session", session, SEC), "no Session change");

        /* Every Session property, with its type. */
        CHECK(h_get_t(h, session, MND_SESSION, "Id") == 1, "Id");
        expect_object(h, session, MND_SESSION, "Pen", PEN_U1);
        expect_string(h, session, MND_SESSION, "PenSerial", "MNU-0001");
        expect_string(h, session, MND_SESSION, "Area", "forehead");
        expect_string(h, session, MND_SESSION, "Operator", "Dr. Test");
        expect_string(h, session, MND_SESSION, "PatientRef", "P-0042");
        expect_string(h, session, MND_SESSION, "Cartridge", "CART-U1-0001");
        expect_string(h, session, MND_SESSION, "State", "running");
        started = h_get_t(h, session, MND_SESSION, "StartedAt");
        CHECK(started >= rt0 - 1000 && started <= realtime_us(), "StartedAt %" PRIu64 " is not now", started);
        CHECK(h_get_t(h, session, MND_SESSION, "EndedAt") == 0, "EndedAt of a running session");
        CHECK(h_get_u(h, session, MND_SESSION, "PlannedDurationS") == 2, "PlannedDurationS");
        CHECK(h_get_t(h, session, MND_SESSION, "ElapsedMs") < 2000, "ElapsedMs");
        CHECK(h_get_u(h, session, MND_SESSION, "DepthUm") == 550, "Session DepthUm");
        CHECK(h_get_u(h, session, MND_SESSION, "SpeedHz") == 120, "Session SpeedHz");
        expect_string(h, session, MND_SESSION, "EndReason", "");
        CHECK(h_get_u(h, PEN_U1, MND_PEN, "DepthUm") == 550 && h_get_u(h, PEN_U1, MND_PEN, "SpeedHz") == 120,
              "the pen's setpoints after StartSession");
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "State", "running", SEC), "pen never running");
        h_sim_status(h, "MNU-0001", &st);
        CHECK(streq(st.state, "running") && st.depth_set == 550 && st.speed_set == 120,
              "the pen is %s at %u um / %u Hz", st.state, st.depth_set, st.speed_set);
        OK("StartSession: every Session property; the pen runs at 550 um / 120 Hz");

        /* Within the session, the area's caps apply to SetDepth. */
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 650);
        EXPECT_ERROR(&e, r, "LimitExceeded", "0.65 mm", "0.60 mm", "'forehead'");
        sd_bus_error_free(&e);
        h_sim_status(h, "MNU-0001", &st);
        CHECK(st.depth_set == 550, "the refused SetDepth reached the pen (%u um)", st.depth_set);
        CALL_OK(h, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 600);
        CALL_OK(h, PEN_U1, MND_PEN, "SetSpeed", "u", (uint32_t) 130);
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "DepthUm", "600", SEC), "no Session DepthUm");
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "SpeedHz", "130", SEC), "no Session SpeedHz");
        CHECK(h_get_u(h, session, MND_SESSION, "DepthUm") == 600, "Session DepthUm after SetDepth");
        OK("SetDepth over the area cap refused in a session; SetDepth/SetSpeed change the session's setpoints");

        /* A second session on a busy pen. */
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 2, NULL);
        EXPECT_ERROR(&e, r, "Busy", "MNU-0001", "session 1");
        sd_bus_error_free(&e);
        OK("StartSession on a running pen: Busy");

        /* Completion by needling time. */
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "State", "completed", 4 * SEC),
              "the 2 s session did not complete");
        expect_string(h, session, MND_SESSION, "State", "completed");
        expect_string(h, session, MND_SESSION, "EndReason", "completed");
        elapsed = h_get_t(h, session, MND_SESSION, "ElapsedMs");
        ended = h_get_t(h, session, MND_SESSION, "EndedAt");
        CHECK(elapsed >= 2000 && elapsed < 2300, "ElapsedMs %" PRIu64 " for a 2 s session", elapsed);
        /* StartedAt is the START's acknowledgement, a few ms after the pen started needling. */
        CHECK(ended + 50 * MSEC >= started + elapsed * 1000, "EndedAt - StartedAt = %" PRIu64 " ms < ElapsedMs %"
              PRIu64, (ended - started) / 1000, elapsed);
        CHECK(h_find(h, mark, session, "PropertiesChanged", "EndReason", "completed"), "no EndReason change");
        CHECK(h_find(h, mark, session, "PropertiesChanged", "EndedAt", NULL), "no EndedAt change");
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "Session", "/", SEC), "Session not reset to /");
        CHECK(h_wait_event(h, mark, PEN_U1, "PropertiesChanged", "State", "idle", SEC), "pen not idle");
        OK("session completed after %" PRIu64 " ms of needling (%" PRIu64 " ms wall)", elapsed,
           (h_now_us() - t0) / MSEC);

        /* ElapsedMs is published at least once a second while running. */
        for (size_t i = mark; i < h->n_events; i++) {
                const struct h_event *ev = &h->events[i];

                if (!streq(ev->path, session) || !streq(ev->prop, "ElapsedMs"))
                        continue;
                n_elapsed++;
                if (last_t && ev->t_us - last_t > max_gap)
                        max_gap = ev->t_us - last_t;
                last_t = ev->t_us;
        }
        CHECK(n_elapsed >= 3 && max_gap <= 1100 * MSEC, "ElapsedMs published %zu times, largest gap %" PRIu64
              " ms", n_elapsed, max_gap / MSEC);
        OK("ElapsedMs published %zu times, at most %" PRIu64 " ms apart", n_elapsed, max_gap / MSEC);

        h_sim_status(h, "MNU-0001", &st);
        CHECK(streq(st.state, "idle") && !st.needles_moving, "the pen is %s after completion", st.state);
        CHECK(st.needling_ms + 150 >= elapsed && st.needling_ms <= elapsed + 150,
              "the pen needled %u ms, the session says %" PRIu64, st.needling_ms, elapsed);

        /* The cartridge is spent. */
        r = h_start_session(h, PEN_U1, &e, NULL, "area", 's', "forehead", "duration_s", 'u', 2, NULL);
        EXPECT_ERROR(&e, r, "CartridgeUsed", "CART-U1-0001", "session 1");
        sd_bus_error_free(&e);
        check_pen_untouched(h, "MNU-0001", PEN_U1, 600, 130, "StartSession with a used cartridge");
        OK("the used cartridge is refused: CartridgeUsed");
        free(session);
}

static void test_cartridge_and_faults(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        const struct h_event *ev;
        size_t mark = h_mark(h);
        char *session = NULL;
        int r;

        /* No cartridge. */
        h_sim_ok(h, "remove-cartridge MNS-0001");
        CHECK(h_wait_event(h, mark, PEN_S1, "PropertiesChanged", "Cartridge", "", SEC), "no Cartridge change");
        r = h_start_session(h, PEN_S1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', 1, NULL);
        EXPECT_ERROR(&e, r, "CartridgeMissing", "MNS-0001", "cartridge");
        sd_bus_error_free(&e);
        check_pen_untouched(h, "MNS-0001", PEN_S1, 250, 80, "StartSession without a cartridge");
        h_sim_ok(h, "cartridge MNS-0001 CART-S1-NEW");
        CHECK(h_wait_event(h, mark, PEN_S1, "PropertiesChanged", "Cartridge", "CART-S1-NEW", SEC),
              "no Cartridge change");
        expect_string(h, PEN_S1, MND_PEN, "Cartridge", "CART-S1-NEW");
        OK("Cartridge follows the pen; StartSession without one: CartridgeMissing");

        /* Battery. */
        h_sim_ok(h, "battery MNS-0001 77");
        CHECK(h_wait_event(h, mark, PEN_S1, "PropertiesChanged", "BatteryPercent", "77", SEC),
              "no BatteryPercent change");
        CHECK(h_get_y(h, PEN_S1, MND_PEN, "BatteryPercent") == 77, "BatteryPercent");
        OK("BatteryPercent follows the pen");

        /* A fault whose cause stays: the Fault signal, DeviceError, ClearFault refused, then cleared. */
        mark = h_mark(h);
        h_sim_ok(h, "temperature MNS-0001 500");
        ev = h_wait_event(h, mark, PEN_S1, "Fault", "overheat", NULL, 2 * SEC);
        CHECK(ev, "no Fault signal for the overheat");
        CHECK(strstr(ev->value, "MNS-0001") && strstr(ev->value, "overheat"), "Fault message '%s'", ev->value);
        CHECK(h_wait_event(h, mark, PEN_S1, "PropertiesChanged", "Fault", "overheat", SEC), "no Fault change");
        CHECK(h_wait_prop_s(h, PEN_S1, MND_PEN, "State", "fault", SEC), "State is not fault");
        expect_string(h, PEN_S1, MND_PEN, "Fault", "overheat");
        r = h_start_session(h, PEN_S1, &e, NULL, "area", 's', "cheeks", "duration_s", 'u', 1, NULL);
        EXPECT_ERROR(&e, r, "DeviceError", "MNS-0001", "overheat", "ClearFault");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_S1, MND_PEN, "SetDepth", "u", (uint32_t) 300);
        EXPECT_ERROR(&e, r, "DeviceError", "MNS-0001", "overheat");
        sd_bus_error_free(&e);
        r = h_call(h, &e, NULL, PEN_S1, MND_PEN, "ClearFault", "");
        EXPECT_ERROR(&e, r, "DeviceError", "MNS-0001", "still active", "overheat");
        sd_bus_error_free(&e);
        h_sim_status(h, "MNS-0001", &st);
        CHECK(streq(st.state, "fault") && st.depth_set == 250, "the pen is %s at %u um", st.state, st.depth_set);
        OK("overheat: Fault signal, State/Fault properties, DeviceError for StartSession, SetDepth, ClearFault");

        h_sim_ok(h, "temperature MNS-0001 300");
        CALL_OK(h, PEN_S1, MND_PEN, "ClearFault", "");
        expect_string(h, PEN_S1, MND_PEN, "State", "idle");
        expect_string(h, PEN_S1, MND_PEN, "Fault", "");
        CHECK(h_wait_event(h, mark, PEN_S1, "PropertiesChanged", "Fault", "", SEC), "no Fault change to ''");
        CALL_OK(h, PEN_S1, MND_PEN, "ClearFault", "");          /* nothing to clear: fine */
        OK("ClearFault once the cause is gone: idle, Fault ''");

        /* Stop ends a session "stopped"; Stop and StopAll are idempotent. */
        mark = h_mark(h);
        r = h_start_session(h, PEN_S1, &e, &session, "area", 's', "cheeks", "duration_s", 'u', 30, NULL);
        CHECK(r >= 0, "StartSession on MNS-0001 without depth and speed: %s: %s", e.name, e.message);
        CHECK(h_get_u(h, session, MND_SESSION, "DepthUm") == 250 && h_get_u(h, session, MND_SESSION, "SpeedHz") == 80,
              "a session without depth_um/speed_hz takes the pen's setpoints");
        CHECK(h_sim_wait_moving(h, "MNS-0001", true, SEC, &st), "the serial pen's needles never moved");
        CALL_OK(h, PEN_S1, MND_PEN, "Stop", "");
        expect_string(h, session, MND_SESSION, "State", "stopped");
        expect_string(h, session, MND_SESSION, "EndReason", "stopped");
        CHECK(h_sim_wait_moving(h, "MNS-0001", false, 300 * MSEC, &st), "the serial pen still runs after Stop");
        CHECK(streq(st.state, "idle"), "the pen is %s after Stop", st.state);
        CALL_OK(h, PEN_S1, MND_PEN, "Stop", "");
        CALL_OK(h, MND_PATH, MND_MANAGER, "StopAll", "");
        expect_string(h, session, MND_SESSION, "EndReason", "stopped");
        OK("Stop ends the session 'stopped' and stops the needles; Stop and StopAll again: fine");
        free(session);

        /* StopAll with a session running. */
        h_sim_ok(h, "remove-cartridge MNU-0001");
        h_sim_ok(h, "cartridge MNU-0001 CART-U1-0002");
        h_sim_ok(h, "remove-cartridge MNS-0001");
        h_sim_ok(h, "cartridge MNS-0001 CART-S1-0003");
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "Cartridge", "CART-U1-0002", SEC), "new cartridge not seen");
        CHECK(h_wait_prop_s(h, PEN_S1, MND_PEN, "Cartridge", "CART-S1-0003", SEC), "new cartridge not seen");
        r = h_start_session(h, PEN_U1, &e, &session, "area", 's', "neck", "duration_s", 'u', 30, NULL);
        CHECK(r >= 0, "StartSession: %s: %s", e.name, e.message);
        free(session);
        r = h_start_session(h, PEN_S1, &e, &session, "area", 's', "neck", "duration_s", 'u', 30, NULL);
        CHECK(r >= 0, "StartSession: %s: %s", e.name, e.message);
        CHECK(h_sim_wait_moving(h, "MNU-0001", true, SEC, &st), "MNU-0001 not running");
        CHECK(h_sim_wait_moving(h, "MNS-0001", true, SEC, &st), "MNS-0001 not running");
        CALL_OK(h, MND_PATH, MND_MANAGER, "StopAll", "");
        expect_string(h, session, MND_SESSION, "EndReason", "stopped");
        CHECK(h_sim_wait_moving(h, "MNU-0001", false, 300 * MSEC, &st), "MNU-0001 runs after StopAll");
        CHECK(h_sim_wait_moving(h, "MNS-0001", false, 300 * MSEC, &st), "MNS-0001 runs after StopAll");
        OK("StopAll stops both pens and ends their sessions");
        free(session);
}

int main(int argc, char *argv[]) {
        static struct harness h;     /* static: the exit handler uses it after main() returns */
        uint64_t t0 = h_now_us();

        h_init(&h, argc, argv);
        h_set_config(&h, config);
        h_start_bus(&h);
        h_start_mnd(&h);
        CHECK(h_wait_pens(&h, 2, 5 * SEC), "mnd did not publish both pens");
        OK("mnd up with both pens after %" PRIu64 " ms", (h_now_us() - t0) / MSEC);

        test_manager(&h);
        test_pen_properties(&h, PEN_U1, "MNU-0001", "MN-1", "usb", "CART-U1-0001");
        test_pen_properties(&h, PEN_S1, "MNS-0001", "MN-1S", "serial", "CART-S1-0001");
        test_setpoints(&h);
        test_start_refusals(&h);
        test_session(&h);
        test_cartridge_and_faults(&h);

        h_stop_mnd_clean(&h);
        OK("all done in %" PRIu64 " ms", (h_now_us() - t0) / MSEC);
        return 0;
}
