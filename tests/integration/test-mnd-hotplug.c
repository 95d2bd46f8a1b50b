/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Pens that come and go (mnsim --usb 1 --serial 1 --cartridge): a pen
 * plugged in after mnd started appears (PenAdded) and is usable at once (its
 * setpoints are the pen's, not 0: a StartSession without speed_hz works right
 * after PenAdded); unplugged it disappears (PenRemoved); replugged it comes
 * back under the same object path.  Unplugged in the middle of a session
 * (USB and serial), the session ends "interrupted"/"disconnected" and the
 * pen, which keeps running on its battery, stops by its lease.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "mnd-harness.h"

/* Plugs a pen in and returns the time from the plug command to PenAdded. */
static uint64_t plug(struct harness *h, const char *serial, const char *path) {
        size_t mark = h_mark(h);
        uint64_t t0 = h_now_us();
        const struct h_event *ev;

        h_sim_ok(h, "plug %s", serial);
        ev = h_wait_event(h, mark, MND_PATH, "PenAdded", NULL, path, 3 * SEC);
        CHECK(ev, "no PenAdded(%s) within 3 s of plugging %s in", path, serial);
        t0 = ev->t_us - t0;
        CHECK(h_wait_event(h, mark, MND_PATH, "PropertiesChanged", "Pens", NULL, SEC), "no Pens change");
        CHECK(h_find(h, mark, MND_PATH, "InterfacesAdded", NULL, path), "no InterfacesAdded(%s)", path);
        return t0;
}

static void unplug(struct harness *h, const char *serial, const char *path) {
        size_t mark = h_mark(h);
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char *v = NULL;
        int r;

        h_sim_ok(h, "unplug %s", serial);
        CHECK(h_wait_event(h, mark, MND_PATH, "PenRemoved", NULL, path, 2 * SEC), "no PenRemoved(%s)", path);
        CHECK(h_find(h, mark, MND_PATH, "InterfacesRemoved", NULL, path), "no InterfacesRemoved(%s)", path);
        CHECK(h_wait_event(h, mark, MND_PATH, "PropertiesChanged", "Pens", NULL, SEC), "no Pens change");
        {
                char **pens = h_get_strv(h, MND_PATH, MND_MANAGER, "Pens", 'o');

                CHECK(!h_strv_contains(pens, path), "Pens still lists %s", path);
                h_strv_free(pens);
        }
        r = h_call(h, &e, NULL, MND_PATH, MND_MANAGER, "GetPenBySerial", "s", serial);
        EXPECT_ERROR(&e, r, "NoSuchPen", serial);
        sd_bus_error_free(&e);
        r = sd_bus_get_property_string(h->bus, MND_NAME, path, MND_PEN, "State", &e, &v);
        CHECK(r < 0, "the unplugged pen's object still answers (State '%s')", v ?: "");
        sd_bus_error_free(&e);
}

/* Unplugs a pen in the middle of a session and checks the session's end and the pen's stop. */
static void unplug_mid_session(struct harness *h, const char *serial, const char *path, const char *cartridge) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        char *session = NULL;
        size_t mark;
        uint64_t t_unplug, stop_ms;
        int r;

        h_sim_ok(h, "remove-cartridge %s", serial);
        h_sim_ok(h, "cartridge %s %s", serial, cartridge);
        CHECK(h_wait_prop_s(h, path, MND_PEN, "Cartridge", cartridge, SEC), "%s: new cartridge not seen", serial);
        r = h_start_session(h, path, &e, &session, "area", 's', "neck", "duration_s", 'u', 30,
                            "depth_um", 'u', 500, "speed_hz", 'u', 100, NULL);
        CHECK(r >= 0, "StartSession: %s: %s", e.name, e.message);
        CHECK(h_sim_wait_moving(h, serial, true, SEC, &st), "%s never ran", serial);
        h_pump(h, 150 * MSEC);

        mark = h_mark(h);
        t_unplug = h_now_us();
        h_sim_ok(h, "unplug %s", serial);
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "EndReason", "disconnected", 2 * SEC),
              "the session did not end 'disconnected'");
        CHECK(h_find(h, mark, session, "PropertiesChanged", "State", "interrupted"), "State is not 'interrupted'");
        CHECK(h_wait_event(h, mark, MND_PATH, "PenRemoved", NULL, path, SEC), "no PenRemoved");
        CHECK(h_sim_wait_moving(h, serial, false, SEC, &st), "the unplugged pen keeps running");
        stop_ms = (st.motion_changed_us - t_unplug) / MSEC;
        CHECK(st.motion_changed_us > t_unplug && stop_ms <= 300,
              "the unplugged pen stopped %" PRIu64 " ms after the unplug (lease 200 ms)", stop_ms);
        CHECK(streq(st.state, "fault") && strstr(st.faults, "lease-expired"),
              "the unplugged pen is %s (%s), not stopped by its lease", st.state, st.faults);
        {
                char *v = h_get_s(h, session, MND_SESSION, "State");

                CHECK(streq(v, "interrupted"), "session State '%s'", v);
                free(v);
                v = h_get_s(h, session, MND_SESSION, "EndReason");
                CHECK(streq(v, "disconnected"), "session EndReason '%s'", v);
                free(v);
        }
        CHECK(h_get_t(h, session, MND_SESSION, "EndedAt") > 0, "EndedAt");
        OK("%s unplugged mid-session: session interrupted/disconnected, needles stopped by the lease %" PRIu64
           " ms after the unplug", serial, stop_ms);

        /* Back again: the same object, in fault until cleared; the session stays ended. */
        (void) plug(h, serial, path);
        CHECK(h_wait_prop_s(h, path, MND_PEN, "State", "fault", SEC), "the replugged pen is not in fault");
        {
                char *v = h_get_s(h, path, MND_PEN, "Fault");

                CHECK(streq(v, "lease-expired"), "Fault is '%s' after the lease ran out", v);
                free(v);
        }
        CALL_OK(h, path, MND_PEN, "ClearFault", "");
        CHECK(h_wait_prop_s(h, path, MND_PEN, "State", "idle", SEC), "not idle after ClearFault");
        {
                char *v = h_get_o(h, path, MND_PEN, "Session");

                CHECK(streq(v, "/"), "Session '%s' after the replug", v);
                free(v);
        }
        {
                char *v = h_get_s(h, session, MND_SESSION, "EndReason");

                CHECK(streq(v, "disconnected"), "the old session's EndReason changed to '%s'", v);
                free(v);
        }
        OK("%s replugged: same object path, fault lease-expired, ClearFault, old session still ended", serial);
        free(session);
}

int main(int argc, char *argv[]) {
        static struct harness h;     /* static: the exit handler uses it after main() returns */
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        char *session = NULL, *log;
        uint64_t t0 = h_now_us(), t_added, t_replug;
        int r;

        h_init(&h, argc, argv);
        h_start_bus(&h);

        /* MNU-0001 is not plugged in when mnd starts. */
        h_sim_ok(&h, "unplug MNU-0001");
        h_start_mnd(&h);
        CHECK(h_wait_pens(&h, 1, 5 * SEC), "mnd did not publish the serial pen");
        {
                char **pens = h_get_strv(&h, MND_PATH, MND_MANAGER, "Pens", 'o');

                CHECK(h_strv_contains(pens, PEN_S1), "Pens lacks %s", PEN_S1);
                h_strv_free(pens);
        }
        OK("mnd up with the serial pen only");

        /* Plugged in: PenAdded, and usable at once with the pen's own setpoints. */
        t_added = plug(&h, "MNU-0001", PEN_U1);
        CHECK(h_get_u(&h, PEN_U1, MND_PEN, "SpeedHz") == 50, "SpeedHz right after PenAdded is %u, the pen's is 50",
              h_get_u(&h, PEN_U1, MND_PEN, "SpeedHz"));
        {
                char *v = h_get_s(&h, PEN_U1, MND_PEN, "State");

                CHECK(streq(v, "idle"), "State right after PenAdded is '%s'", v);
                free(v);
                v = h_get_s(&h, PEN_U1, MND_PEN, "Cartridge");
                CHECK(streq(v, "CART-U1-0001"), "Cartridge right after PenAdded is '%s'", v);
                free(v);
        }
        r = h_start_session(&h, PEN_U1, &e, &session, "area", 's', "forehead", "duration_s", 'u', 1, NULL);
        CHECK(r >= 0, "StartSession without depth_um/speed_hz right after PenAdded: %s: %s", e.name, e.message);
        CHECK(h_get_u(&h, session, MND_SESSION, "SpeedHz") == 50 && h_get_u(&h, session, MND_SESSION, "DepthUm") == 0,
              "the session did not take the pen's setpoints");
        CALL_OK(&h, PEN_U1, MND_PEN, "Stop", "");
        h_sim_status(&h, "MNU-0001", &st);
        CHECK(!st.needles_moving, "still running after Stop");
        free(session);
        OK("MNU-0001 plugged in: PenAdded after %" PRIu64 " ms, setpoints known at once, "
           "StartSession without speed_hz works", t_added / MSEC);

        /* Unplugged while idle, replugged: same path. */
        unplug(&h, "MNU-0001", PEN_U1);
        OK("MNU-0001 unplugged: PenRemoved, InterfacesRemoved, gone from Pens, NoSuchPen, object gone");
        t_replug = plug(&h, "MNU-0001", PEN_U1);
        {
                char *v = h_get_s(&h, PEN_U1, MND_PEN, "Serial");

                CHECK(streq(v, "MNU-0001"), "Serial after the replug is '%s'", v);
                free(v);
        }
        OK("MNU-0001 replugged: PenAdded(%s) again after %" PRIu64 " ms", PEN_U1, t_replug / MSEC);
        /* mnsim attaches its usbfs emulation just after the "add" uevent, so mnd's first open may
         * lose that race (EIO) and be retried: the retry must be quick. */
        log = h_read_log(&h);
        {
                size_t retries = 0;

                for (const char *p = log; (p = strstr(p, "Cannot open the pen at usb:")); p++)
                        retries++;
                OK("USB opens retried so far: %zu", retries);
        }
        free(log);
        CHECK(t_replug < 500 * MSEC, "the replugged pen took %" PRIu64 " ms to appear", t_replug / MSEC);

        unplug(&h, "MNS-0001", PEN_S1);
        t_replug = plug(&h, "MNS-0001", PEN_S1);
        {
                char *v = h_get_s(&h, PEN_S1, MND_PEN, "Transport");

                CHECK(streq(v, "serial"), "Transport after the replug is '%s'", v);
                free(v);
        }
        OK("MNS-0001 unplugged and replugged (a new tty): same object path, after %" PRIu64 " ms",
           t_replug / MSEC);

        unplug_mid_session(&h, "MNU-0001", PEN_U1, "CART-U1-0002");
        unplug_mid_session(&h, "MNS-0001", PEN_S1, "CART-S1-0002");

        h_stop_mnd_clean(&h);
        OK("all done in %" PRIu64 " ms", (h_now_us() - t0) / MSEC);
        return 0;
}
