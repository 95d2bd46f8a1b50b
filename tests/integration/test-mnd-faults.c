/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Pens that misbehave (mnsim --usb 1 --serial 1 --cartridge):
 *  - a stalled pen (firmware hangs, cable still in): a command gets Timeout,
 *    the pen is dropped as not responding (Fault signal, PenRemoved), probed
 *    once a second and published again, same path, when it answers;
 *  - a command in flight when the pen is unplugged: NotConnected;
 *  - a stall mid-session: the session ends "fault:not-responding" with no
 *    more needling time than the pen reported, the pen is never reported
 *    running after it stalled, its lease stops it;
 *  - a reboot mid-session: "fault:pen-reset", the pen comes back by itself;
 *  - a motor fault mid-session: the Fault signal and "fault:motor".
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "mnd-harness.h"

static void new_cartridge(struct harness *h, const char *serial, const char *path, const char *id) {
        char reply[256];

        (void) h_sim(h, reply, sizeof reply, "remove-cartridge %s", serial);
        h_sim_ok(h, "cartridge %s %s", serial, id);
        CHECK(h_wait_prop_s(h, path, MND_PEN, "Cartridge", id, SEC), "%s: cartridge %s not seen", serial, id);
}

static char *start_running(struct harness *h, const char *serial, const char *path, uint32_t duration_s) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        char *session = NULL;
        int r;

        r = h_start_session(h, path, &e, &session, "area", 's', "scalp", "duration_s", 'u', duration_s,
                            "depth_um", 'u', 1000, "speed_hz", 'u', 100, NULL);
        CHECK(r >= 0, "StartSession on %s: %s: %s", serial, e.name, e.message);
        CHECK(h_sim_wait_moving(h, serial, true, SEC, &st), "%s never ran", serial);
        return session;
}

static void expect_session_end(struct harness *h, const char *session, const char *state, const char *reason) {
        char *v = h_get_s(h, session, MND_SESSION, "State");

        CHECK(streq(v, state), "session State '%s', expected '%s'", v, state);
        free(v);
        v = h_get_s(h, session, MND_SESSION, "EndReason");
        CHECK(streq(v, reason), "session EndReason '%s', expected '%s'", v, reason);
        free(v);
        CHECK(h_get_t(h, session, MND_SESSION, "EndedAt") >= h_get_t(h, session, MND_SESSION, "StartedAt"),
              "EndedAt");
}

/* The stalled pen answers again: published anew within the probe interval. */
static uint64_t wait_back(struct harness *h, size_t mark, const char *serial, const char *path) {
        uint64_t t0 = h_now_us();
        const struct h_event *ev;

        h_sim_ok(h, "stall %s off", serial);
        ev = h_wait_event(h, mark, MND_PATH, "PenAdded", NULL, path, 3 * SEC);
        CHECK(ev, "%s was not published again within 3 s of answering", serial);
        return ev->t_us - t0;
}

static void test_timeout_and_recovery(struct harness *h) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct h_sim_status st;
        const struct h_event *ev;
        size_t mark = h_mark(h);
        uint64_t t0, back;
        int r;

        h_sim_ok(h, "stall MNU-0001 on");
        t0 = h_now_us();
        r = h_call(h, &e, NULL, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 500);
        EXPECT_ERROR(&e, r, "Timeout", "MNU-0001", "0.50 mm");
        sd_bus_error_free(&e);
        OK("SetDepth on a stalled pen: Timeout after %" PRIu64 " ms", (h_now_us() - t0) / MSEC);
        ev = h_wait_event(h, mark, PEN_U1, "Fault", "not-responding", NULL, SEC);
        CHECK(ev && strstr(ev->value, "MNU-0001"), "no Fault(not-responding) signal naming the pen");
        CHECK(h_wait_event(h, mark, MND_PATH, "PenRemoved", NULL, PEN_U1, SEC), "the stalled pen was not removed");
        CHECK(h_find(h, mark, PEN_U1, "PropertiesChanged", "Fault", "not-responding"), "no Fault change");
        CHECK(h_find(h, mark, PEN_U1, "PropertiesChanged", "State", "disconnected"), "no State 'disconnected'");
        h_sim_status(h, "MNU-0001", &st);
        CHECK(st.depth_set == 0, "the stalled pen acted on the SetDepth (%u um)", st.depth_set);
        OK("the stalled pen: Fault(not-responding), State 'disconnected', PenRemoved; nothing reached it");

        /* Still stalled: stays away (probes are not answered). */
        h_pump(h, 1300 * MSEC);
        CHECK(!h_find(h, mark, MND_PATH, "PenAdded", NULL, PEN_U1), "a stalled pen was published again");
        back = wait_back(h, mark, "MNU-0001", PEN_U1);
        CHECK(back <= 1300 * MSEC, "back %" PRIu64 " ms after the stall ended (probe every 1 s)", back / MSEC);
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "State", "idle", SEC), "the pen is not idle again");
        {
                char *v = h_get_s(h, PEN_U1, MND_PEN, "Fault");

                CHECK(streq(v, ""), "Fault '%s' after it came back idle", v);
                free(v);
        }
        CHECK(h_get_u(h, PEN_U1, MND_PEN, "SpeedHz") == 50, "setpoints after coming back");
        CALL_OK(h, PEN_U1, MND_PEN, "SetDepth", "u", (uint32_t) 500);
        h_sim_status(h, "MNU-0001", &st);
        CHECK(st.depth_set == 500, "SetDepth after the pen came back: %u um", st.depth_set);
        OK("the pen answered again: PenAdded(%s) %" PRIu64 " ms after the stall ended, idle, usable", PEN_U1,
           back / MSEC);
}

struct async_reply {
        bool done;
        char name[128], message[512];
};

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct async_reply *a = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        a->done = true;
        snprintf(a->name, sizeof a->name, "%s", e ? e->name : "");
        snprintf(a->message, sizeof a->message, "%s", e ? e->message : "");
        return 0;
}

static void test_not_connected(struct harness *h) {
        struct async_reply a = {};
        sd_bus_slot *slot = NULL;
        size_t mark = h_mark(h);
        uint64_t deadline;
        int r;

        /* A stalled pen does not answer, so the command is still in flight when the cable goes. */
        h_sim_ok(h, "stall MNU-0001 on");
        r = sd_bus_call_method_async(h->bus, &slot, MND_NAME, PEN_U1, MND_PEN, "SetDepth", on_reply, &a, "u",
                                     (uint32_t) 700);
        CHECK(r >= 0, "SetDepth: %s", strerror(-r));
        CHECK(sd_bus_flush(h->bus) >= 0, "flush");
        h_pump(h, 5 * MSEC);
        h_sim_ok(h, "unplug MNU-0001");
        deadline = h_now_us() + 2 * SEC;
        while (!a.done && h_now_us() < deadline)
                h_pump(h, 10 * MSEC);
        CHECK(a.done, "no reply to SetDepth");
        CHECK(streq(a.name, MND_ERR "NotConnected") && strstr(a.message, "MNU-0001") &&
              strstr(a.message, "0.70 mm"), "SetDepth in flight at the unplug: %s: %s", a.name, a.message);
        sd_bus_slot_unref(slot);
        CHECK(h_wait_event(h, mark, MND_PATH, "PenRemoved", NULL, PEN_U1, SEC), "no PenRemoved");
        OK("a command in flight when the pen is unplugged: NotConnected (%s)", a.message);

        mark = h_mark(h);
        h_sim_ok(h, "stall MNU-0001 off");
        h_sim_ok(h, "plug MNU-0001");
        CHECK(h_wait_event(h, mark, MND_PATH, "PenAdded", NULL, PEN_U1, 2 * SEC), "no PenAdded after the replug");
}

static void test_stall_mid_session(struct harness *h) {
        struct h_sim_status st;
        char *session;
        size_t mark;
        uint64_t t_start, t_stall, t_removed, elapsed, stop_ms, back;

        new_cartridge(h, "MNU-0001", PEN_U1, "CART-U1-0002");
        t_start = h_now_us();
        session = start_running(h, "MNU-0001", PEN_U1, 30);
        h_pump(h, 500 * MSEC);

        mark = h_mark(h);
        t_stall = h_now_us();
        h_sim_ok(h, "stall MNU-0001 on");
        CHECK(h_wait_event(h, mark, PEN_U1, "Fault", "not-responding", NULL, SEC), "no Fault(not-responding)");
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "EndReason", "fault:not-responding", SEC),
              "the session did not end 'fault:not-responding'");
        CHECK(h_wait_event(h, mark, MND_PATH, "PenRemoved", NULL, PEN_U1, SEC), "the stalled pen was not removed");
        t_removed = h_find(h, mark, MND_PATH, "PenRemoved", NULL, PEN_U1)->t_us;
        expect_session_end(h, session, "failed", "fault:not-responding");
        OK("stall mid-session: Fault(not-responding), session failed 'fault:not-responding', PenRemoved "
           "%" PRIu64 " ms after the stall", (t_removed - t_stall) / MSEC);

        /* Never "running" once stalled: the last State it published is "disconnected". */
        CHECK(!h_find(h, mark, PEN_U1, "PropertiesChanged", "State", "running"),
              "the stalled pen was reported running");
        {
                const char *last = NULL;

                for (size_t i = mark; i < h->n_events; i++)
                        if (streq(h->events[i].path, PEN_U1) && streq(h->events[i].prop, "State"))
                                last = h->events[i].value;
                CHECK(last && streq(last, "disconnected"), "the last State published is '%s'", last ?: "(none)");
        }

        /* Its lease stopped it. */
        CHECK(h_sim_wait_moving(h, "MNU-0001", false, SEC, &st), "the stalled pen keeps running");
        stop_ms = (st.motion_changed_us - t_stall) / MSEC;
        CHECK(st.motion_changed_us > t_stall && stop_ms <= 300, "the stalled pen stopped %" PRIu64
              " ms after the stall", stop_ms);
        OK("the stalled pen stopped by its lease %" PRIu64 " ms after the stall (%s)", stop_ms, st.faults);

        /* A stalled pen does not use up the session: only what the pen reported before it stalled counts. */
        elapsed = h_get_t(h, session, MND_SESSION, "ElapsedMs");
        CHECK(elapsed + 50 >= (t_stall - t_start) / MSEC - 250 && elapsed <= (t_stall - t_start) / MSEC + 20,
              "ElapsedMs %" PRIu64 " for %" PRIu64 " ms of running before the stall", elapsed,
              (t_stall - t_start) / MSEC);
        CHECK(elapsed < st.needling_ms, "ElapsedMs %" PRIu64 " counts the needling after the stall (pen: %u ms)",
              elapsed, st.needling_ms);

        /* Back: the same object; in fault (the lease ran out while stalled); the session stays ended. */
        back = wait_back(h, mark, "MNU-0001", PEN_U1);
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "State", "fault", SEC), "not in fault after coming back");
        {
                char *v = h_get_s(h, PEN_U1, MND_PEN, "Fault");

                CHECK(streq(v, "lease-expired") || streq(v, "host-lost"), "Fault '%s' after coming back", v);
                free(v);
                v = h_get_o(h, PEN_U1, MND_PEN, "Session");
                CHECK(streq(v, "/"), "Session '%s' after coming back", v);
                free(v);
        }
        expect_session_end(h, session, "failed", "fault:not-responding");
        CHECK(h_get_t(h, session, MND_SESSION, "ElapsedMs") == elapsed, "ElapsedMs changed after the end");
        CALL_OK(h, PEN_U1, MND_PEN, "ClearFault", "");
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "State", "idle", SEC), "not idle after ClearFault");
        OK("ElapsedMs %" PRIu64 " ms (running %" PRIu64 " ms before the stall, the pen needled %u ms in all); "
           "back %" PRIu64 " ms after the stall ended, same path, fault cleared", elapsed,
           (t_stall - t_start) / MSEC, st.needling_ms, back / MSEC);
        free(session);
}

static void test_reboot_mid_session(struct harness *h) {
        struct h_sim_status before, st;
        char *session, *v;
        size_t mark;
        uint64_t t_reboot;

        new_cartridge(h, "MNU-0001", PEN_U1, "CART-U1-0003");
        session = start_running(h, "MNU-0001", PEN_U1, 30);
        h_sim_status(h, "MNU-0001", &before);
        h_pump(h, 200 * MSEC);

        mark = h_mark(h);
        t_reboot = h_now_us();
        h_sim_ok(h, "reboot MNU-0001");
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "EndReason", "fault:pen-reset", 2 * SEC),
              "the session did not end 'fault:pen-reset'");
        expect_session_end(h, session, "failed", "fault:pen-reset");
        CHECK(h_wait_prop_s(h, PEN_U1, MND_PEN, "State", "idle", SEC), "the rebooted pen is not idle");
        CHECK(!h_find(h, mark, MND_PATH, "PenRemoved", NULL, PEN_U1), "the rebooted pen was removed");
        v = h_get_o(h, PEN_U1, MND_PEN, "Session");
        CHECK(streq(v, "/"), "Session '%s' after the reboot", v);
        free(v);
        h_sim_status(h, "MNU-0001", &st);
        CHECK(!streq(st.boot_id, before.boot_id), "the boot id did not change");
        CHECK(!st.needles_moving && st.host_connected, "after the reboot: moving %u, host_connected %u",
              st.needles_moving, st.host_connected);
        CHECK(h_get_u(h, PEN_U1, MND_PEN, "SpeedHz") == st.speed_set, "SpeedHz is not the rebooted pen's");
        OK("reboot mid-session: session failed 'fault:pen-reset' %" PRIu64 " ms after the reboot, same object, "
           "idle again, setpoints re-read",
           (h_find(h, mark, session, "PropertiesChanged", "EndReason", NULL)->t_us - t_reboot) / MSEC);
        free(session);
}

static void test_motor_fault_mid_session(struct harness *h) {
        const struct h_event *ev;
        struct h_sim_status st;
        char *session;
        size_t mark;

        new_cartridge(h, "MNS-0001", PEN_S1, "CART-S1-0002");
        session = start_running(h, "MNS-0001", PEN_S1, 30);
        mark = h_mark(h);
        h_sim_ok(h, "fault MNS-0001 motor");
        ev = h_wait_event(h, mark, PEN_S1, "Fault", "motor", NULL, SEC);
        CHECK(ev && strstr(ev->value, "MNS-0001") && strstr(ev->value, "ClearFault"), "no Fault(motor) signal");
        CHECK(h_wait_event(h, mark, session, "PropertiesChanged", "EndReason", "fault:motor", SEC),
              "the session did not end 'fault:motor'");
        expect_session_end(h, session, "failed", "fault:motor");
        CHECK(h_wait_prop_s(h, PEN_S1, MND_PEN, "State", "fault", SEC), "State not 'fault'");
        h_sim_status(h, "MNS-0001", &st);
        CHECK(!st.needles_moving, "the faulted pen still runs");
        CALL_OK(h, PEN_S1, MND_PEN, "ClearFault", "");
        CHECK(h_wait_prop_s(h, PEN_S1, MND_PEN, "State", "idle", SEC), "not idle after ClearFault");
        OK("motor fault mid-session: Fault(motor) signal, session failed 'fault:motor', ClearFault");
        free(session);
}

int main(int argc, char *argv[]) {
        static struct harness h;     /* static: the exit handler uses it after main() returns */
        uint64_t t0 = h_now_us();

        h_init(&h, argc, argv);
        h_start_bus(&h);
        h_start_mnd(&h);
        CHECK(h_wait_pens(&h, 2, 5 * SEC), "mnd did not publish both pens");

        test_timeout_and_recovery(&h);
        test_not_connected(&h);
        test_stall_mid_session(&h);
        test_reboot_mid_session(&h);
        test_motor_fault_mid_session(&h);

        h_stop_mnd_clean(&h);
        OK("all done in %" PRIu64 " ms", (h_now_us() - t0) / MSEC);
        return 0;
}
