/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The pen link against the simulated pen, in real time: a real sd-event
 * loop, the memory transport, and the pen model on the socket's far end
 * (tests/unit/pen-loop.h).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <mnp/frame.h>
#include <mnp/message.h>
#include "pen-link.h"
#include "pen-loop.h"
#include "pen.h"
#include "transport.h"

#define MS UINT64_C(1000)

struct result {
        int calls;
        int error;
        bool had_message;
        char message[256];
        uint64_t at;
};

struct fx {
        sd_event *event;
        struct pen_loop pl;
        struct mnd_pen_link *link;
        struct mnd_link_settings settings;

        int ready, resets, losts, lost_error, faults;
        uint8_t last_fault;
        uint32_t ready_boot_id;
        uint64_t lost_at;
        unsigned changed_or, changed_calls;
        unsigned actual_calls;
        uint64_t actual_at[256];
        bool free_in_lost;
        bool seen_running_after_lost;
};

static void on_ready(struct mnd_pen_link *l, void *userdata) {
        struct fx *fx = userdata;

        fx->ready++;
        fx->ready_boot_id = mnd_pen_link_identity(l)->boot_id;
}

static void on_changed(struct mnd_pen_link *l, unsigned changes, void *userdata) {
        struct fx *fx = userdata;

        assert_int_not_equal(changes, 0);
        fx->changed_or |= changes;
        fx->changed_calls++;
        if (changes & (MND_PEN_CHANGED_ACTUAL_DEPTH | MND_PEN_CHANGED_ACTUAL_SPEED)) {
                if (fx->actual_calls < 256)
                        fx->actual_at[fx->actual_calls] = pen_loop_now();
                fx->actual_calls++;
        }
        if (fx->losts > 0 && mnd_pen_link_status(l)->state == MND_PEN_RUNNING)
                fx->seen_running_after_lost = true;
}

static void on_fault(struct mnd_pen_link *l, uint8_t code, void *userdata) {
        struct fx *fx = userdata;

        fx->faults++;
        fx->last_fault = code;
}

static void on_reset(struct mnd_pen_link *l, void *userdata) {
        struct fx *fx = userdata;

        fx->resets++;
}

static void on_lost(struct mnd_pen_link *l, int error, void *userdata) {
        struct fx *fx = userdata;

        fx->losts++;
        fx->lost_error = error;
        fx->lost_at = pen_loop_now();
        assert_int_equal(mnd_pen_link_status(l)->state, MND_PEN_DISCONNECTED);
        if (fx->free_in_lost)
                fx->link = mnd_pen_link_free(fx->link);
}

static const struct mnd_pen_link_callbacks callbacks = {
        .ready = on_ready,
        .changed = on_changed,
        .fault = on_fault,
        .reset = on_reset,
        .lost = on_lost,
};

static void on_done(struct mnd_pen_link *l, int error, const char *message, void *userdata) {
        struct result *r = userdata;

        r->calls++;
        r->error = error;
        r->had_message = message != NULL;
        snprintf(r->message, sizeof r->message, "%s", message ? message : "");
        r->at = pen_loop_now();
        /* A sentence exactly when it failed. */
        assert_true((error == 0) == (message == NULL));
}

static bool result_done(void *userdata) {
        return ((struct result *) userdata)->calls > 0;
}

static bool fx_ready(void *userdata) {
        return ((struct fx *) userdata)->ready > 0;
}

static bool fx_lost(void *userdata) {
        return ((struct fx *) userdata)->losts > 0;
}

/* The default pen, but quick to boot: the tests wait for every boot. */
static void quick_pen_config(struct sim_pen_config *cfg) {
        sim_pen_config_default(cfg);
        cfg->boot_ms = 20;
}

static void fx_setup_with(struct fx *fx, const struct sim_pen_config *cfg, const struct mnd_link_settings *s) {
        struct mnd_transport *t = NULL;
        struct sim_pen_config quick;
        int fd = -1;

        if (!cfg) {
                quick_pen_config(&quick);
                cfg = &quick;
        }

        memset(fx, 0, sizeof *fx);
        if (s)
                fx->settings = *s;
        else
                mnd_link_settings_default(&fx->settings);

        assert_int_equal(sd_event_new(&fx->event), 0);
        assert_int_equal(mnd_transport_memory_new(fx->event, &t, &fd), 0);
        assert_non_null(t);
        assert_true(fd >= 0);
        assert_int_equal(pen_loop_init(&fx->pl, fx->event, cfg, fd), 0);
        assert_int_equal(mnd_pen_link_new(fx->event, t, &fx->settings, &callbacks, fx, &fx->link), 0);
}

static void fx_setup_ready(struct fx *fx, const struct sim_pen_config *cfg, const struct mnd_link_settings *s) {
        fx_setup_with(fx, cfg, s);
        assert_true(pen_loop_run_until(fx->event, fx_ready, fx, 1000 * MS));
}

static void fx_teardown(struct fx *fx) {
        fx->link = mnd_pen_link_free(fx->link);
        /* Let the loop settle (closed sockets, last completions). */
        pen_loop_run_for(fx->event, 1 * MS);
        pen_loop_done(&fx->pl);
        fx->event = sd_event_unref(fx->event);
}

static void snap(struct fx *fx, struct sim_pen_snapshot *s) {
        pen_loop_snapshot(&fx->pl, s);
}

/* Runs until r completes (at most timeout); fails the test if it does not. */
static void wait_done(struct fx *fx, struct result *r, uint64_t timeout_us) {
        assert_true(pen_loop_run_until(fx->event, result_done, r, timeout_us));
        assert_int_equal(r->calls, 1);
}

static bool status_running(void *userdata) {
        struct fx *fx = userdata;

        return mnd_pen_link_status(fx->link)->state == MND_PEN_RUNNING;
}

static bool status_fault(void *userdata) {
        struct fx *fx = userdata;

        return mnd_pen_link_status(fx->link)->state == MND_PEN_FAULT && fx->faults > 0;
}

static bool status_has_cartridge(void *userdata) {
        struct fx *fx = userdata;

        return strcmp(mnd_pen_link_status(fx->link)->cartridge, "CART-0001") == 0;
}

static bool pen_stopped(void *userdata) {
        struct fx *fx = userdata;
        struct sim_pen_snapshot s;

        snap(fx, &s);
        return !s.needles_moving;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_handshake(void **state) {
        struct fx fx;
        struct sim_pen_config cfg;
        struct sim_pen_snapshot s;
        const struct mnd_pen_identity *id;
        struct result r = {};
        uint64_t t0;

        sim_pen_config_default(&cfg);   /* boots for 100 ms */
        t0 = pen_loop_now();
        fx_setup_with(&fx, &cfg, NULL);

        /* Before the handshake: no identity, commands refused, STOP never. */
        assert_null(mnd_pen_link_identity(fx.link));
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_CONNECTING);
        assert_string_equal(mnd_pen_state_name(MND_PEN_CONNECTING), "connecting");
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &r), -ENOTCONN);
        assert_int_equal(mnd_pen_link_start(fx.link, 500, 100, on_done, &r), -ENOTCONN);

        /* The pen boots for 100 ms and ignores our HELLOs meanwhile; ready() waits for the
         * pen's first STATUS, which comes within one 100 ms period of the HELLO_REPLY. */
        assert_true(pen_loop_run_until(fx.event, fx_ready, &fx, 1000 * MS));
        assert_int_equal(fx.ready, 1);
        assert_true(pen_loop_now() - t0 >= 100 * MS);
        assert_true(pen_loop_now() - t0 < 100 * MS + 100 * MS + 100 * MS);
        assert_int_equal(mnd_pen_link_status(fx.link)->speed_set_hz, 50);
        print_message("handshake done %.1f ms after power-on (boot 100 ms)\n",
                      (double) (pen_loop_now() - t0) / 1000.0);

        id = mnd_pen_link_identity(fx.link);
        assert_non_null(id);
        snap(&fx, &s);
        assert_string_equal(id->serial, "MN1-000001");
        assert_string_equal(id->model, "MN-1");
        assert_string_equal(id->firmware, "1.0.0");
        assert_int_equal(id->kind, MNP_TRANSPORT_USB);
        assert_int_equal(id->range.depth_min_um, 0);
        assert_int_equal(id->range.depth_max_um, 3000);
        assert_int_equal(id->range.depth_step_um, 50);
        assert_int_equal(id->range.speed_min_hz, 50);
        assert_int_equal(id->range.speed_max_hz, 150);
        assert_int_equal(id->max_lease_ms, 1000);
        assert_int_equal(id->caps, MNP_CAP_CARTRIDGE_ID | MNP_CAP_BATTERY | MNP_CAP_TEMPERATURE | MNP_CAP_DEPTH_SENSOR);
        assert_int_equal(id->version, 1);
        assert_int_not_equal(id->boot_id, 0);
        assert_int_equal(id->boot_id, s.boot_id);
        assert_true(s.host_connected);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);

        /* The first STATUS fills the rest. */
        pen_loop_run_for(fx.event, 150 * MS);
        assert_int_equal(mnd_pen_link_status(fx.link)->battery_percent, 100);
        assert_int_equal(mnd_pen_link_status(fx.link)->temperature_dc, 250);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);
        assert_true(fx.changed_or & MND_PEN_CHANGED_BATTERY);
        assert_int_equal(fx.losts, 0);

        fx_teardown(&fx);
}

static void test_set_depth_speed(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s;
        struct result r = {};
        uint64_t total = 0, worst = 0;
        const unsigned rounds = 50;

        fx_setup_ready(&fx, NULL, NULL);

        assert_int_equal(mnd_pen_link_set_depth(fx.link, 1000, on_done, &r), 0);
        assert_int_equal(r.calls, 0);   /* never from inside the call */
        wait_done(&fx, &r, 500 * MS);
        assert_int_equal(r.error, 0);
        assert_false(r.had_message);
        snap(&fx, &s);
        assert_int_equal(s.depth_set_um, 1000);

        r = (struct result) {};
        assert_int_equal(mnd_pen_link_set_speed(fx.link, 120, on_done, &r), 0);
        assert_int_equal(r.calls, 0);
        wait_done(&fx, &r, 500 * MS);
        assert_int_equal(r.error, 0);
        snap(&fx, &s);
        assert_int_equal(s.speed_set_hz, 120);

        /* The next STATUS shows the setpoints. */
        pen_loop_run_for(fx.event, 120 * MS);
        assert_int_equal(mnd_pen_link_status(fx.link)->depth_set_um, 1000);
        assert_int_equal(mnd_pen_link_status(fx.link)->speed_set_hz, 120);
        assert_true(fx.changed_or & MND_PEN_CHANGED_DEPTH);
        assert_true(fx.changed_or & MND_PEN_CHANGED_SPEED);

        /* Round trip over the memory transport: call to done(). */
        for (unsigned i = 0; i < rounds; i++) {
                uint64_t t0 = pen_loop_now(), dt;

                r = (struct result) {};
                assert_int_equal(mnd_pen_link_set_depth(fx.link, 50u * (i % 20), on_done, &r), 0);
                wait_done(&fx, &r, 500 * MS);
                assert_int_equal(r.error, 0);
                dt = r.at - t0;
                total += dt;
                if (dt > worst)
                        worst = dt;
        }
        print_message("command round trip (set depth, memory transport, sim pen in the loop): "
                      "mean %.1f us, worst %.1f us over %u\n",
                      (double) total / rounds, (double) worst, rounds);

        fx_teardown(&fx);
}

static void expect_error(struct fx *fx, int r_call, struct result *r, int error, const char *message) {
        assert_int_equal(r_call, 0);
        assert_int_equal(r->calls, 0);
        wait_done(fx, r, 500 * MS);
        if (r->error != error)
                print_error("expected %d, got %d: %s\n", error, r->error, r->message);
        assert_int_equal(r->error, error);
        if (message)
                assert_string_equal(r->message, message);
}

static void test_nak_mapping(void **state) {
        struct fx fx;
        struct result r;

        fx_setup_ready(&fx, NULL, NULL);

        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_set_depth(fx.link, 1025, on_done, &r), &r, -EDOM,
                     "the pen refused depth 1.025 mm: not a multiple of its 0.05 mm step");
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_set_depth(fx.link, 3050, on_done, &r), &r, -ERANGE,
                     "the pen refused depth 3.05 mm: above its maximum of 3.00 mm");
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_set_speed(fx.link, 200, on_done, &r), &r, -ERANGE,
                     "the pen refused speed 200 Hz: above its maximum of 150 Hz");
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_set_speed(fx.link, 10, on_done, &r), &r, -ERANGE,
                     "the pen refused speed 10 Hz: below its minimum of 50 Hz");
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_start(fx.link, 1000, 100, on_done, &r), &r, -ENOMEDIUM,
                     "the pen refused to start at 1.00 mm and 100 Hz: no cartridge is inserted");

        /* A cartridge: the CARTRIDGE event reaches the status. */
        assert_int_equal(sim_pen_insert_cartridge(fx.pl.pen, pen_loop_now(), "CART-0001"), 0);
        pen_loop_poke(&fx.pl);
        assert_true(pen_loop_run_until(fx.event, status_has_cartridge, &fx, 300 * MS));
        assert_true(fx.changed_or & MND_PEN_CHANGED_CARTRIDGE);

        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_start(fx.link, 1000, 100, on_done, &r), &r, 0, NULL);
        assert_true(pen_loop_run_until(fx.event, status_running, &fx, 300 * MS));
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_start(fx.link, 1000, 100, on_done, &r), &r, -EBUSY,
                     "the pen refused to start at 1.00 mm and 100 Hz: not possible while it is running");
        /* The refused second START did not end the first one's lease renewal. */
        pen_loop_run_for(fx.event, 250 * MS);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_RUNNING);

        /* A fault: event, state, callback; then commands are refused with -EIO. */
        assert_int_equal(sim_pen_inject_fault(fx.pl.pen, pen_loop_now(), MNP_FAULT_MOTOR), 0);
        pen_loop_poke(&fx.pl);
        assert_true(pen_loop_run_until(fx.event, status_fault, &fx, 300 * MS));
        assert_int_equal(fx.last_fault, MNP_FAULT_MOTOR);
        assert_int_equal(fx.faults, 1);
        assert_int_equal(mnd_pen_link_status(fx.link)->fault, MNP_FAULT_MOTOR);
        assert_int_equal(mnd_pen_link_status(fx.link)->fault_flags, MNP_FAULT_FLAG(MNP_FAULT_MOTOR));
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_set_depth(fx.link, 500, on_done, &r), &r, -EIO,
                     "the pen refused to set the depth to 0.50 mm: a fault is active (motor)");
        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_start(fx.link, 500, 100, on_done, &r), &r, -EIO, NULL);
        /* STATUS repeats the fault: no second callback. */
        pen_loop_run_for(fx.event, 150 * MS);
        assert_int_equal(fx.faults, 1);

        r = (struct result) {};
        expect_error(&fx, mnd_pen_link_clear_fault(fx.link, on_done, &r), &r, 0, NULL);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);
        assert_int_equal(mnd_pen_link_status(fx.link)->fault_flags, 0);
        pen_loop_run_for(fx.event, 150 * MS);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);
        assert_int_equal(fx.losts, 0);

        fx_teardown(&fx);
}

static void test_lease_renewal(void **state) {
        struct fx fx;
        struct sim_pen_config cfg;
        struct mnd_link_settings set;
        struct sim_pen_snapshot s;
        struct result r = {}, st = {};
        uint64_t t_start, elapsed;

        quick_pen_config(&cfg);
        cfg.status_period_ms = 10;      /* a fast pen: changed() must coalesce */
        mnd_link_settings_default(&set);
        set.heartbeat_ms = 25;
        set.lease_ms = 100;
        fx_setup_ready(&fx, &cfg, &set);
        assert_int_equal(sim_pen_insert_cartridge(fx.pl.pen, pen_loop_now(), "CART-0001"), 0);
        pen_loop_poke(&fx.pl);

        fx.actual_calls = 0;
        assert_int_equal(mnd_pen_link_start(fx.link, 1500, 120, on_done, &r), 0);
        t_start = pen_loop_now();
        wait_done(&fx, &r, 300 * MS);
        assert_int_equal(r.error, 0);
        snap(&fx, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_true(s.lease_left_ms > 0 && s.lease_left_ms <= 100);

        /* Five lease periods: still running, no fault. */
        pen_loop_run_for(fx.event, 500 * MS);
        snap(&fx, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_true(s.needles_moving);
        assert_int_equal(s.fault_flags, 0);
        assert_true(s.needling_ms >= 400);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_RUNNING);
        assert_int_equal(mnd_pen_link_status(fx.link)->speed_actual_hz, 120);
        assert_int_equal(mnd_pen_link_status(fx.link)->depth_actual_um, 1500);
        assert_true(fx.changed_or & MND_PEN_CHANGED_NEEDLING);

        /* ~50 STATUS frames, the actuals moving in the first 300 ms: at most 10 reports a second. */
        elapsed = pen_loop_now() - t_start;
        print_message("actual depth/speed reports: %u in %.0f ms\n", fx.actual_calls, (double) elapsed / 1000.0);
        assert_true(fx.actual_calls >= 2);
        assert_true(fx.actual_calls <= elapsed / (100 * MS) + 1);
        for (unsigned i = 1; i < fx.actual_calls && i < 256; i++)
                assert_true(fx.actual_at[i] - fx.actual_at[i - 1] >= 99 * MS);

        /* STOP ends it, and lease renewal with it. */
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st), 0);
        assert_int_equal(st.calls, 0);
        wait_done(&fx, &st, 300 * MS);
        assert_int_equal(st.error, 0);
        assert_int_not_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_RUNNING);
        snap(&fx, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_false(s.needles_moving);
        assert_int_equal(s.lease_left_ms, 0);
        pen_loop_run_for(fx.event, 150 * MS);
        snap(&fx, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(mnd_pen_link_status(fx.link)->speed_actual_hz, 0);
        assert_int_equal(fx.losts, 0);

        fx_teardown(&fx);
}

static void test_stop_overtakes_queue(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s0, s;
        struct result a = {}, b = {}, c = {}, st = {}, after = {};

        fx_setup_ready(&fx, NULL, NULL);
        assert_int_equal(sim_pen_insert_cartridge(fx.pl.pen, pen_loop_now(), "CART-0001"), 0);
        pen_loop_poke(&fx.pl);
        pen_loop_run_for(fx.event, 20 * MS);
        snap(&fx, &s0);

        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &a), 0);     /* in flight */
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 1500, on_done, &b), 0);    /* queued */
        assert_int_equal(mnd_pen_link_start(fx.link, 1500, 140, on_done, &c), 0);   /* queued */
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st), 0);
        assert_int_equal(a.calls + b.calls + c.calls + st.calls, 0);

        wait_done(&fx, &st, 300 * MS);
        assert_int_equal(st.error, 0);
        assert_int_equal(a.calls, 1);
        assert_int_equal(a.error, -ECANCELED);
        assert_int_equal(b.calls, 1);
        assert_int_equal(b.error, -ECANCELED);
        assert_string_equal(b.message, "the request to set the depth to 1.50 mm was cancelled by a stop");
        assert_int_equal(c.calls, 1);
        assert_int_equal(c.error, -ECANCELED);

        /* The queued ones never reached the pen. */
        pen_loop_run_for(fx.event, 200 * MS);
        snap(&fx, &s);
        assert_int_not_equal(s.depth_set_um, 1500);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_false(s.needles_moving);
        /* At most the one in flight and the STOP were acted on. */
        assert_true(s.commands_acted - s0.commands_acted <= 2);
        assert_int_equal(s.naks_sent, s0.naks_sent);

        /* Commands work again afterwards. */
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 750, on_done, &after), 0);
        wait_done(&fx, &after, 300 * MS);
        assert_int_equal(after.error, 0);
        assert_int_equal(a.calls + b.calls + c.calls + st.calls, 4);
        assert_int_equal(fx.losts, 0);

        fx_teardown(&fx);
}

static void test_stop_while_running(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s;
        struct result r = {}, st = {}, st2 = {};

        fx_setup_ready(&fx, NULL, NULL);
        assert_int_equal(sim_pen_insert_cartridge(fx.pl.pen, pen_loop_now(), "CART-0001"), 0);
        pen_loop_poke(&fx.pl);
        assert_int_equal(mnd_pen_link_start(fx.link, 1000, 100, on_done, &r), 0);
        wait_done(&fx, &r, 300 * MS);
        assert_int_equal(r.error, 0);
        pen_loop_run_for(fx.event, 100 * MS);

        /* Two STOPs back to back: both callers hear the outcome. */
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st), 0);
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st2), 0);
        assert_int_equal(mnd_pen_link_stop(fx.link, NULL, NULL), 0);
        wait_done(&fx, &st, 300 * MS);
        wait_done(&fx, &st2, 300 * MS);
        assert_int_equal(st.error, 0);
        assert_int_equal(st2.error, 0);
        snap(&fx, &s);
        assert_false(s.needles_moving);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);
        pen_loop_run_for(fx.event, 50 * MS);
        assert_int_equal(st.calls, 1);
        assert_int_equal(st2.calls, 1);

        fx_teardown(&fx);
}

static void test_free_mid_session(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s;
        struct result r = {}, pending = {};
        uint64_t t_free;

        fx_setup_ready(&fx, NULL, NULL);
        assert_int_equal(sim_pen_insert_cartridge(fx.pl.pen, pen_loop_now(), "CART-0001"), 0);
        pen_loop_poke(&fx.pl);
        assert_int_equal(mnd_pen_link_start(fx.link, 1000, 100, on_done, &r), 0);
        wait_done(&fx, &r, 300 * MS);
        assert_int_equal(r.error, 0);
        pen_loop_run_for(fx.event, 120 * MS);
        snap(&fx, &s);
        assert_true(s.needles_moving);

        /* Freed with a command pending: it completes with -ECANCELED, in free(). */
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &pending), 0);
        t_free = pen_loop_now();
        fx.link = mnd_pen_link_free(fx.link);
        assert_int_equal(pending.calls, 1);
        assert_int_equal(pending.error, -ECANCELED);
        assert_null(mnd_pen_link_free(NULL));

        /* Nobody renews the lease: the pen stops by itself. */
        assert_true(pen_loop_run_until(fx.event, pen_stopped, &fx, 1000 * MS));
        snap(&fx, &s);
        print_message("pen stopped %.1f ms after the link was freed (lease 200 ms)\n",
                      (double) (s.motion_changed_us - t_free) / 1000.0);
        assert_true(s.motion_changed_us - t_free <= 200 * MS + 10 * MS);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_true(s.fault_flags & (MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED) | MNP_FAULT_FLAG(MNP_FAULT_HOST_LOST)));

        fx_teardown(&fx);
}

static bool fx_ready_twice(void *userdata) {
        return ((struct fx *) userdata)->ready >= 2;
}

static void test_pen_stalled(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s;
        struct result r = {}, late = {};
        uint64_t t_stall;

        fx_setup_ready(&fx, NULL, NULL);
        assert_int_equal(sim_pen_insert_cartridge(fx.pl.pen, pen_loop_now(), "CART-0001"), 0);
        pen_loop_poke(&fx.pl);
        assert_int_equal(mnd_pen_link_start(fx.link, 1000, 100, on_done, &r), 0);
        wait_done(&fx, &r, 300 * MS);
        assert_true(pen_loop_run_until(fx.event, status_running, &fx, 300 * MS));

        t_stall = pen_loop_now();
        sim_pen_set_stalled(fx.pl.pen, true);
        pen_loop_poke(&fx.pl);

        assert_true(pen_loop_run_until(fx.event, fx_lost, &fx, 1000 * MS));
        print_message("stalled pen lost after %.1f ms (peer timeout 250 ms)\n",
                      (double) (fx.lost_at - t_stall) / 1000.0);
        assert_int_equal(fx.lost_error, -ETIMEDOUT);
        assert_true(fx.lost_at - t_stall <= 250 * MS + 25 * MS);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_DISCONNECTED);
        assert_false(fx.seen_running_after_lost);

        /* Only free() is left; STOP is not refused, it just cannot be confirmed. */
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &late), -ENOTCONN);
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &late), -ENODEV);
        pen_loop_run_for(fx.event, 100 * MS);
        assert_int_equal(late.calls, 0);
        assert_int_equal(fx.losts, 1);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_DISCONNECTED);

        /* Its own lease stopped the stalled pen. */
        snap(&fx, &s);
        assert_false(s.needles_moving);

        /* Still connected: probed once a second; when it answers, a new session and ready() again. */
        assert_true(mnd_pen_link_may_recover(fx.link));
        sim_pen_set_stalled(fx.pl.pen, false);
        pen_loop_poke(&fx.pl);
        t_stall = pen_loop_now();
        assert_true(pen_loop_run_until(fx.event, fx_ready_twice, &fx, 2000 * MS));
        print_message("the pen answered a probe and is ready again %.1f ms after its stall ended\n",
                      (double) (pen_loop_now() - t_stall) / 1000.0);
        assert_true(pen_loop_now() - t_stall <= 1000 * MS + 250 * MS);
        assert_int_equal(fx.losts, 1);
        assert_false(mnd_pen_link_may_recover(fx.link));
        /* It ran when it lost us: it is in fault now, and says so. */
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_FAULT);
        snap(&fx, &s);
        assert_true(s.host_connected);

        fx_teardown(&fx);
}

static void test_pen_reboot_silent(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s;
        uint32_t old_boot;
        uint64_t t_reboot;

        fx_setup_ready(&fx, NULL, NULL);
        old_boot = mnd_pen_link_identity(fx.link)->boot_id;
        pen_loop_run_for(fx.event, 120 * MS);

        /* The pen resets while idle: it goes quiet, boots, and waits for a HELLO. */
        t_reboot = pen_loop_now();
        sim_pen_reboot(fx.pl.pen, t_reboot);
        pen_loop_poke(&fx.pl);

        assert_true(pen_loop_run_until(fx.event, fx_ready_twice, &fx, 1000 * MS));
        print_message("reboot noticed and re-handshaken %.1f ms after the reset (boot 20 ms)\n",
                      (double) (pen_loop_now() - t_reboot) / 1000.0);
        assert_int_equal(fx.resets, 1);
        assert_int_equal(fx.losts, 0);
        snap(&fx, &s);
        assert_int_not_equal(s.boot_id, old_boot);
        assert_int_equal(mnd_pen_link_identity(fx.link)->boot_id, s.boot_id);
        assert_int_equal(fx.ready_boot_id, s.boot_id);
        assert_true(s.host_connected);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);

        /* And the session works. */
        {
                struct result r = {};

                assert_int_equal(mnd_pen_link_set_depth(fx.link, 800, on_done, &r), 0);
                wait_done(&fx, &r, 300 * MS);
                assert_int_equal(r.error, 0);
        }
        fx_teardown(&fx);
}

static void test_pen_reboot_not_ready(void **state) {
        struct fx fx;
        struct sim_pen_config cfg;
        struct sim_pen_snapshot s;
        struct result r = {}, q = {};
        uint32_t old_boot;

        quick_pen_config(&cfg);
        cfg.boot_ms = 10;
        fx_setup_ready(&fx, &cfg, NULL);
        old_boot = mnd_pen_link_identity(fx.link)->boot_id;
        pen_loop_run_for(fx.event, 60 * MS);

        /* Reset, and a command right away: once booted, the pen says NOT_READY. */
        sim_pen_reboot(fx.pl.pen, pen_loop_now());
        pen_loop_poke(&fx.pl);
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &r), 0);
        assert_int_equal(mnd_pen_link_set_speed(fx.link, 80, on_done, &q), 0);
        wait_done(&fx, &r, 500 * MS);
        assert_int_equal(r.error, -ENOTCONN);
        wait_done(&fx, &q, 500 * MS);
        assert_int_equal(q.error, -ENOTCONN);   /* nothing of the old session is resumed */

        assert_true(pen_loop_run_until(fx.event, fx_ready_twice, &fx, 1000 * MS));
        assert_int_equal(fx.resets, 1);
        assert_int_equal(fx.losts, 0);
        snap(&fx, &s);
        assert_int_not_equal(s.boot_id, old_boot);
        assert_int_equal(mnd_pen_link_identity(fx.link)->boot_id, s.boot_id);
        assert_int_not_equal(s.speed_set_hz, 80);

        fx_teardown(&fx);
}

#define FI_SEQUENTIAL 30
#define FI_BATCH 17     /* one in flight and a full queue of 16 */

struct fi {
        struct fx *fx;
        struct result r[FI_SEQUENTIAL + FI_BATCH];
        unsigned issued;
        uint32_t last_depth;
};

static uint32_t fi_depth(unsigned i) {
        return 100u + 50u * (i % 40);
}

static void fi_done(struct mnd_pen_link *l, int error, const char *message, void *userdata);

static void fi_issue(struct fi *fi) {
        unsigned i = fi->issued++;

        fi->last_depth = fi_depth(i);
        assert_int_equal(mnd_pen_link_set_depth(fi->fx->link, fi->last_depth, fi_done, &fi->r[i]), 0);
}

static struct fi *fi_current;

static void fi_done(struct mnd_pen_link *l, int error, const char *message, void *userdata) {
        on_done(l, error, message, userdata);
        /* Back to back, from inside done(): keeps the link busy. */
        if (fi_current->issued < FI_SEQUENTIAL)
                fi_issue(fi_current);
}

/* Every command issued so far is done, and the sequential run is over. */
static bool fi_all_done(void *userdata) {
        struct fi *fi = userdata;

        if (fi->issued < FI_SEQUENTIAL)
                return false;
        for (unsigned i = 0; i < fi->issued; i++)
                if (fi->r[i].calls == 0)
                        return false;
        return true;
}

static void test_fault_injection(void **state) {
        struct fx fx;
        struct mnd_link_settings set;
        struct sim_pen_snapshot s0, s;
        struct fi fi = { .fx = &fx };
        struct sim_link_faults faults = { .drop = 0.2, .duplicate = 0.2, .corrupt = 0.1 };
        unsigned ok = 0;
        uint64_t t0;

        mnd_link_settings_default(&set);
        set.retransmit_ms = 10;         /* a lossy cable, but not a dead pen */
        set.retries = 30;
        set.peer_timeout_ms = 3000;
        fx_setup_ready(&fx, NULL, &set);
        fi_current = &fi;

        snap(&fx, &s0);
        sim_pen_set_link_faults(fx.pl.pen, &faults);
        t0 = pen_loop_now();

        fi_issue(&fi);
        assert_true(pen_loop_run_until(fx.event, fi_all_done, &fi, 5000 * MS));

        /* A batch, queued at once. */
        for (unsigned i = 0; i < FI_BATCH; i++)
                fi_issue(&fi);
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 100, on_done, &(struct result) {}), -EBUSY);
        assert_true(pen_loop_run_until(fx.event, fi_all_done, &fi, 5000 * MS));

        sim_pen_set_link_faults(fx.pl.pen, &(struct sim_link_faults) {});
        pen_loop_run_for(fx.event, 100 * MS);
        snap(&fx, &s);

        for (unsigned i = 0; i < FI_SEQUENTIAL + FI_BATCH; i++) {
                assert_int_equal(fi.r[i].calls, 1);
                if (fi.r[i].error == 0)
                        ok++;
                else
                        print_error("command %u: %s\n", i, fi.r[i].message);
        }
        print_message("fault injection: %u/%u commands acknowledged in %.0f ms; pen ignored %llu duplicates, "
                      "dropped %llu bad frames\n",
                      ok, FI_SEQUENTIAL + FI_BATCH, (double) (pen_loop_now() - t0) / 1000.0,
                      (unsigned long long) (s.duplicates_ignored - s0.duplicates_ignored),
                      (unsigned long long) (s.bad_frames - s0.bad_frames));
        assert_int_equal(ok, FI_SEQUENTIAL + FI_BATCH);
        /* Each acted on exactly once: no re-handshake, so commands_acted counts only them. */
        assert_int_equal(fx.ready, 1);
        assert_int_equal(fx.resets, 0);
        assert_int_equal(fx.losts, 0);
        assert_int_equal(s.commands_acted - s0.commands_acted, FI_SEQUENTIAL + FI_BATCH);
        assert_int_equal(s.naks_sent, s0.naks_sent);
        assert_int_equal(s.depth_set_um, fi.last_depth);

        fx_teardown(&fx);
}

static void test_transport_gone(void **state) {
        struct fx fx;
        struct result r = {}, st = {};

        fx_setup_ready(&fx, NULL, NULL);
        fx.free_in_lost = false;

        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &r), 0);
        pen_loop_close(&fx.pl);         /* unplugged */

        assert_true(pen_loop_run_until(fx.event, fx_lost, &fx, 500 * MS));
        assert_int_equal(fx.lost_error, -ENODEV);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_DISCONNECTED);
        wait_done(&fx, &r, 100 * MS);
        /* Either the pen answered before the cable went, or it is gone. */
        assert_true(r.error == 0 || r.error == -ENODEV);
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st), -ENODEV);
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &st), -ENOTCONN);
        pen_loop_run_for(fx.event, 50 * MS);
        assert_int_equal(st.calls, 0);
        assert_int_equal(fx.losts, 1);

        fx_teardown(&fx);
}

static void test_transport_gone_free_in_callback(void **state) {
        struct fx fx;
        struct result r = {};

        fx_setup_ready(&fx, NULL, NULL);
        fx.free_in_lost = true;
        /* Keep a command in flight that the pen never answers. */
        sim_pen_set_stalled(fx.pl.pen, true);
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 500, on_done, &r), 0);
        pen_loop_close(&fx.pl);

        assert_true(pen_loop_run_until(fx.event, fx_lost, &fx, 500 * MS));
        assert_null(fx.link);
        assert_int_equal(r.calls, 1);
        assert_true(r.error == -ENODEV || r.error == -ECANCELED);
        pen_loop_run_for(fx.event, 20 * MS);
        assert_int_equal(r.calls, 1);

        fx_teardown(&fx);
}

static void put_frame(struct fx *fx, const struct mnp_msg *m, uint16_t seq) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n = mnp_msg_encode(m, seq, wire, sizeof wire);

        assert_true(n > 0);
        assert_int_equal(send(fx->pl.fd, wire, (size_t) n, MSG_NOSIGNAL), n);
}

static void put_raw(struct fx *fx, uint8_t type, uint16_t seq, const void *payload, size_t len) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n = mnp_frame_encode(type, seq, payload, len, wire, sizeof wire);

        assert_true(n > 0);
        assert_int_equal(send(fx->pl.fd, wire, (size_t) n, MSG_NOSIGNAL), n);
}

static void test_garbage_and_unexpected(void **state) {
        struct fx fx;
        struct sim_pen_snapshot s;
        struct result r = {};
        uint8_t junk[700];
        uint64_t rng = 0x9e3779b97f4a7c15u;
        struct mnp_msg hr = {
                .type = MNP_MSG_HELLO_REPLY,
                .hello_reply = {
                        .hello_seq = 4242, .version = 1, .depth_max_um = 3000, .depth_step_um = 50,
                        .speed_min_hz = 50, .speed_max_hz = 150, .max_lease_ms = 1000,
                        .model = "X", .serial = "Y", .firmware = "Z",
                },
        };

        fx_setup_ready(&fx, NULL, NULL);
        hr.hello_reply.boot_id = mnd_pen_link_identity(fx.link)->boot_id;

        for (unsigned round = 0; round < 5; round++) {
                for (size_t i = 0; i < sizeof junk; i++) {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        junk[i] = (uint8_t) rng;
                }
                if (round == 0)
                        memset(junk, 0x41, sizeof junk);        /* an overlong frame */
                assert_int_equal(send(fx.pl.fd, junk, sizeof junk, MSG_NOSIGNAL), (ssize_t) sizeof junk);
                pen_loop_run_for(fx.event, 2 * MS);
        }

        /* Well-formed, but nothing a host expects. */
        put_frame(&fx, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 100 }, 60000);
        put_frame(&fx, &(struct mnp_msg) { .type = MNP_MSG_START, .start = { 100, 100, 100 } }, 60001);
        put_frame(&fx, &(struct mnp_msg) { .type = MNP_MSG_STOP }, 60002);
        put_frame(&fx, &(struct mnp_msg) { .type = MNP_MSG_HELLO, .hello = { 1, 1, 0, 50 } }, 60003);
        put_frame(&fx, &(struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = 12345 }, 60004);
        put_frame(&fx, &(struct mnp_msg) { .type = MNP_MSG_NAK, .nak = { 12345, MNP_NAK_NOT_READY, 0 } }, 60005);
        put_frame(&fx, &hr, 60006);                                    /* stale, same boot */
        put_raw(&fx, 0x2f, 60007, "\x01\x02", 2);                      /* unknown reliable type */
        put_raw(&fx, 0x30, 60008, "\x01\x02", 2);                      /* unknown report */
        put_raw(&fx, 0x7f, 60009, NULL, 0);                            /* reserved */
        put_raw(&fx, MNP_MSG_STATUS, 60010, "\x09", 1);                /* malformed STATUS */
        put_raw(&fx, MNP_MSG_FAULT, 60011, "\x00\x00", 2);             /* malformed event */
        put_raw(&fx, MNP_MSG_FAULT, 60011, "\x00\x00", 2);             /* ... and its duplicate */
        put_raw(&fx, MNP_MSG_ACK, 60012, NULL, 0);                     /* malformed ACK */
        put_raw(&fx, MNP_MSG_NAK, 60013, "\x00\x00\x00\x00\x00\x00\x00", 7);   /* reason 0 */
        pen_loop_run_for(fx.event, 30 * MS);

        assert_int_equal(fx.losts, 0);
        assert_int_equal(fx.resets, 0);
        assert_int_equal(fx.ready, 1);
        assert_int_not_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_DISCONNECTED);
        {
                const struct mnp_decoder_stats *ds = mnd_pen_link_decoder_stats(fx.link);

                assert_non_null(ds);
                /* The noise was counted and dropped; the pen's frames kept coming through. */
                assert_true(ds->bad_crc + ds->bad_cobs + ds->oversize + ds->runts + ds->bad_version > 0);
                assert_true(ds->oversize > 0);
                assert_true(ds->frames > 0);
        }
        assert_null(mnd_pen_link_decoder_stats(NULL));
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 650, on_done, &r), 0);
        wait_done(&fx, &r, 300 * MS);
        assert_int_equal(r.error, 0);
        snap(&fx, &s);
        assert_int_equal(s.depth_set_um, 650);
        pen_loop_run_for(fx.event, 300 * MS);
        assert_int_equal(fx.losts, 0);

        fx_teardown(&fx);
}

/* ---- the same, byte for byte, against a pen played by hand ---------------------- */

struct wire_pen {
        sd_event *event;
        int fd;
        struct mnp_decoder dec;
        uint16_t seq;
        struct mnp_frame frames[512];
        struct mnp_msg msgs[512];
        uint64_t at[512];
        size_t n;
};

static void wp_drain(struct wire_pen *wp) {
        uint8_t buf[1024];
        ssize_t n;

        while ((n = recv(wp->fd, buf, sizeof buf, MSG_DONTWAIT)) > 0) {
                size_t off = 0;

                while (off < (size_t) n) {
                        struct mnp_frame f;
                        size_t consumed = 0;
                        int r = mnp_decoder_feed(&wp->dec, buf + off, (size_t) n - off, &consumed, &f);

                        off += consumed;
                        if (r > 0 && wp->n < 512) {
                                wp->frames[wp->n] = f;
                                assert_int_equal(mnp_msg_unpack(f.type, f.payload, f.payload_len, &wp->msgs[wp->n]), 0);
                                wp->at[wp->n] = pen_loop_now();
                                wp->n++;
                        }
                        assert_true(r >= 0);
                        if (r == 0 && consumed == 0)
                                break;
                }
        }
}

static void wp_send(struct wire_pen *wp, const struct mnp_msg *m) {
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n = mnp_msg_encode(m, wp->seq++, wire, sizeof wire);

        assert_true(n > 0);
        assert_int_equal(send(wp->fd, wire, (size_t) n, MSG_NOSIGNAL), n);
}

/* Runs the loop for ms, reading what the host sends and saying HEARTBEAT every 40 ms. */
static void wp_run(struct wire_pen *wp, unsigned ms) {
        for (unsigned t = 0; t < ms; t += 5) {
                if (t % 40 == 0)
                        wp_send(wp, &(struct mnp_msg) { .type = MNP_MSG_HEARTBEAT });
                pen_loop_run_for(wp->event, 5 * MS);
                wp_drain(wp);
        }
}

static size_t wp_count(const struct wire_pen *wp, size_t from, uint8_t type) {
        size_t n = 0;

        for (size_t i = from; i < wp->n; i++)
                if (wp->frames[i].type == type)
                        n++;
        return n;
}

static const struct mnp_msg *wp_last(const struct wire_pen *wp, uint8_t type, uint16_t *ret_seq) {
        for (size_t i = wp->n; i > 0; i--)
                if (wp->frames[i - 1].type == type) {
                        if (ret_seq)
                                *ret_seq = wp->frames[i - 1].seq;
                        return &wp->msgs[i - 1];
                }
        fail_msg("no %s frame from the host", mnp_msg_type_name(type));
        abort();
}

static void test_wire_level(void **state) {
        struct fx fx = {};
        struct wire_pen wp = {};
        struct mnd_transport *t = NULL;
        struct result a = {}, st = {}, go = {}, st2 = {};
        const struct mnp_msg *m;
        uint16_t hello_seq = 0, depth_seq = 0, stop_seq = 0, start_seq = 0;
        size_t mark;

        assert_int_equal(sd_event_new(&wp.event), 0);
        mnp_decoder_init(&wp.dec);
        wp.seq = 777;
        assert_int_equal(mnd_transport_memory_new(wp.event, &t, &wp.fd), 0);
        assert_int_equal(mnd_pen_link_new(wp.event, t, NULL, &callbacks, &fx, &fx.link), 0);

        /* The HELLO, with our versions and heartbeat. */
        pen_loop_run_for(wp.event, 1 * MS);
        wp_drain(&wp);
        m = wp_last(&wp, MNP_MSG_HELLO, &hello_seq);
        assert_non_null(m);
        assert_int_equal(m->hello.min_version, MNP_PROTOCOL_VERSION_MIN);
        assert_int_equal(m->hello.max_version, MNP_PROTOCOL_VERSION_MAX);
        assert_int_equal(m->hello.heartbeat_ms, 50);
        /* A booting pen says nothing: the HELLO is retransmitted. */
        pen_loop_run_for(wp.event, 35 * MS);
        wp_drain(&wp);
        assert_true(wp_count(&wp, 0, MNP_MSG_HELLO) >= 2);
        m = wp_last(&wp, MNP_MSG_HELLO, &hello_seq);

        wp_send(&wp, &(struct mnp_msg) {
                .type = MNP_MSG_HELLO_REPLY,
                .hello_reply = {
                        .hello_seq = hello_seq, .version = 1, .caps = 0, .boot_id = 0xb007,
                        .depth_min_um = 0, .depth_max_um = 2500, .depth_step_um = 100,
                        .speed_min_hz = 60, .speed_max_hz = 120, .max_lease_ms = 150,
                        .model = "HAND", .serial = "SN-HAND", .firmware = "0.1",
                },
        });
        pen_loop_run_for(wp.event, 2 * MS);
        /* Not ready before the pen's first STATUS: state and setpoints are not known yet. */
        assert_int_equal(fx.ready, 0);
        assert_non_null(mnd_pen_link_identity(fx.link));
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_CONNECTING);
        wp_send(&wp, &(struct mnp_msg) {
                .type = MNP_MSG_STATUS,
                .status = {
                        .state = MNP_STATE_IDLE, .depth_set_um = 300, .depth_actual_um = 300,
                        .speed_set_hz = 70, .battery_percent = 90, .temperature_dc = 250,
                        .cartridge_id = "C-1",
                },
        });
        pen_loop_run_for(wp.event, 2 * MS);
        assert_int_equal(fx.ready, 1);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_IDLE);
        assert_int_equal(mnd_pen_link_status(fx.link)->speed_set_hz, 70);
        assert_string_equal(mnd_pen_link_status(fx.link)->cartridge, "C-1");
        assert_int_equal(mnd_pen_link_identity(fx.link)->boot_id, 0xb007);
        assert_string_equal(mnd_pen_link_identity(fx.link)->serial, "SN-HAND");

        /* Idle: one HEARTBEAT every 50 ms, lease 0, and nothing else. */
        wp_drain(&wp);
        mark = wp.n;
        wp_run(&wp, 200);
        assert_true(wp_count(&wp, mark, MNP_MSG_HEARTBEAT) >= 3);
        assert_true(wp_count(&wp, mark, MNP_MSG_HEARTBEAT) <= 5);
        assert_int_equal(wp.n - mark, wp_count(&wp, mark, MNP_MSG_HEARTBEAT));
        assert_int_equal(wp_last(&wp, MNP_MSG_HEARTBEAT, NULL)->heartbeat.lease_ms, 0);

        /* A SET_DEPTH the pen does not answer is retransmitted, same seq... */
        mark = wp.n;
        assert_int_equal(mnd_pen_link_set_depth(fx.link, 700, on_done, &a), 0);
        wp_run(&wp, 40);
        assert_int_equal(wp_count(&wp, mark, MNP_MSG_SET_DEPTH), 2);
        m = wp_last(&wp, MNP_MSG_SET_DEPTH, &depth_seq);
        assert_int_equal(m->set_depth.depth_um, 700);
        for (size_t i = mark; i < wp.n; i++)
                if (wp.frames[i].type == MNP_MSG_SET_DEPTH)
                        assert_int_equal(wp.frames[i].seq, depth_seq);

        /* ...until a STOP overtakes it: never again after that. */
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st), 0);
        mark = wp.n;
        wp_run(&wp, 100);
        assert_int_equal(wp_count(&wp, mark, MNP_MSG_SET_DEPTH), 0);
        assert_true(wp_count(&wp, mark, MNP_MSG_STOP) >= 2);    /* the STOP itself is retried */
        assert_int_equal(a.calls, 1);
        assert_int_equal(a.error, -ECANCELED);
        m = wp_last(&wp, MNP_MSG_STOP, &stop_seq);
        wp_send(&wp, &(struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = stop_seq });
        /* A late answer to the cancelled command changes nothing. */
        wp_send(&wp, &(struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = depth_seq });
        wp_run(&wp, 10);
        assert_int_equal(st.calls, 1);
        assert_int_equal(st.error, 0);
        assert_int_equal(a.calls, 1);

        /* START carries our lease, capped at the pen's 150 ms; heartbeats renew it. */
        mark = wp.n;
        assert_int_equal(mnd_pen_link_start(fx.link, 1000, 100, on_done, &go), 0);
        wp_run(&wp, 5);
        m = wp_last(&wp, MNP_MSG_START, &start_seq);
        assert_non_null(m);
        assert_int_equal(m->start.depth_um, 1000);
        assert_int_equal(m->start.speed_hz, 100);
        assert_int_equal(m->start.lease_ms, 150);
        wp_send(&wp, &(struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = start_seq });
        mark = wp.n;
        wp_run(&wp, 200);
        assert_int_equal(go.calls, 1);
        assert_int_equal(go.error, 0);
        assert_true(wp_count(&wp, mark, MNP_MSG_HEARTBEAT) >= 3);
        for (size_t i = mark; i < wp.n; i++)
                if (wp.frames[i].type == MNP_MSG_HEARTBEAT)
                        assert_int_equal(wp.msgs[i].heartbeat.lease_ms, 150);
        /* Renewals at most heartbeat_ms apart. */
        {
                uint64_t prev = 0;

                for (size_t i = mark; i < wp.n; i++) {
                        if (wp.frames[i].type != MNP_MSG_HEARTBEAT)
                                continue;
                        if (prev)
                                assert_true(wp.at[i] - prev <= 50 * MS + 15 * MS);
                        prev = wp.at[i];
                }
        }

        /* STOP: lease 0 from the very next heartbeat on. */
        assert_int_equal(mnd_pen_link_stop(fx.link, on_done, &st2), 0);
        mark = wp.n;
        wp_run(&wp, 5);
        m = wp_last(&wp, MNP_MSG_STOP, &stop_seq);
        wp_send(&wp, &(struct mnp_msg) { .type = MNP_MSG_ACK, .ack.seq = stop_seq });
        wp_run(&wp, 150);
        assert_int_equal(st2.calls, 1);
        assert_int_equal(st2.error, 0);
        assert_true(wp_count(&wp, mark, MNP_MSG_HEARTBEAT) >= 2);
        for (size_t i = mark; i < wp.n; i++)
                if (wp.frames[i].type == MNP_MSG_HEARTBEAT)
                        assert_int_equal(wp.msgs[i].heartbeat.lease_ms, 0);

        /* A FAULT event is acknowledged, and its duplicate answered again but not acted on twice. */
        mark = wp.n;
        {
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                uint16_t seq = wp.seq++;
                ssize_t n = mnp_msg_encode(&(struct mnp_msg) {
                        .type = MNP_MSG_FAULT,
                        .fault = { .code = MNP_FAULT_OVERHEAT, .fault_flags = MNP_FAULT_FLAG(MNP_FAULT_OVERHEAT) },
                }, seq, wire, sizeof wire);

                assert_true(n > 0);
                assert_int_equal(send(wp.fd, wire, (size_t) n, MSG_NOSIGNAL), n);
                assert_int_equal(send(wp.fd, wire, (size_t) n, MSG_NOSIGNAL), n);
                wp_run(&wp, 5);
                assert_int_equal(wp_count(&wp, mark, MNP_MSG_ACK), 2);
                for (size_t i = mark; i < wp.n; i++)
                        if (wp.frames[i].type == MNP_MSG_ACK)
                                assert_int_equal(wp.msgs[i].ack.seq, seq);
        }
        assert_int_equal(fx.faults, 1);
        assert_int_equal(fx.last_fault, MNP_FAULT_OVERHEAT);
        assert_int_equal(mnd_pen_link_status(fx.link)->state, MND_PEN_FAULT);
        assert_int_equal(fx.losts, 0);

        /* Silence: a HELLO probe at half the peer timeout, then lost at the peer timeout. */
        pen_loop_run_for(wp.event, 5 * MS);
        wp_drain(&wp);
        mark = wp.n;
        {
                uint64_t t0 = pen_loop_now();

                assert_true(pen_loop_run_until(wp.event, fx_lost, &fx, 1000 * MS));
                wp_drain(&wp);
                assert_true(wp_count(&wp, mark, MNP_MSG_HELLO) >= 1);
                assert_int_equal(fx.lost_error, -ETIMEDOUT);
                assert_true(fx.lost_at - t0 <= 250 * MS + 10 * MS);
        }

        fx.link = mnd_pen_link_free(fx.link);
        pen_loop_run_for(wp.event, 1 * MS);
        close(wp.fd);
        sd_event_unref(wp.event);
}

static void test_settings_and_api(void **state) {
        struct mnd_link_settings s;
        struct mnd_transport *t = NULL;
        struct mnd_pen_link *l = NULL;
        sd_event *e = NULL;
        int fd = -1;

        mnd_link_settings_default(&s);
        assert_int_equal(s.heartbeat_ms, 50);
        assert_int_equal(s.lease_ms, 200);
        assert_int_equal(s.retransmit_ms, 30);
        assert_int_equal(s.retries, 3);
        assert_int_equal(s.peer_timeout_ms, 250);
        assert_int_equal(s.handshake_timeout_ms, 2000);
        assert_int_equal(s.reprobe_ms, 1000);
        assert_string_equal(mnd_pen_state_name(MND_PEN_IDLE), "idle");
        assert_string_equal(mnd_pen_state_name(MND_PEN_RUNNING), "running");
        assert_string_equal(mnd_pen_state_name(MND_PEN_FAULT), "fault");
        assert_string_equal(mnd_pen_state_name(MND_PEN_DISCONNECTED), "disconnected");

        assert_int_equal(sd_event_new(&e), 0);

        /* Invalid settings: refused, the transport freed, *ret untouched. */
        assert_int_equal(mnd_transport_memory_new(e, &t, &fd), 0);
        s.lease_ms = s.heartbeat_ms;
        l = (struct mnd_pen_link *) &s;
        assert_int_equal(mnd_pen_link_new(e, t, &s, NULL, NULL, &l), -EINVAL);
        assert_ptr_equal(l, (struct mnd_pen_link *) &s);
        close(fd);

        /* No pen answers: the handshake gives up with lost(-ETIMEDOUT). */
        {
                struct fx fx = {};
                struct mnd_pen_link_callbacks cb = { .lost = on_lost };
                uint64_t t0;

                mnd_link_settings_default(&s);
                s.handshake_timeout_ms = 150;
                assert_int_equal(mnd_transport_memory_new(e, &t, &fd), 0);
                t0 = pen_loop_now();
                assert_int_equal(mnd_pen_link_new(e, t, &s, &cb, &fx, &l), 0);
                /* STOP is accepted before any handshake. */
                assert_int_equal(mnd_pen_link_stop(l, NULL, NULL), 0);
                assert_true(pen_loop_run_until(e, fx_lost, &fx, 1000 * MS));
                assert_int_equal(fx.lost_error, -ETIMEDOUT);
                assert_true(fx.lost_at - t0 >= 150 * MS);
                assert_true(fx.lost_at - t0 < 150 * MS + 40 * MS);
                assert_null(mnd_pen_link_identity(l));
                l = mnd_pen_link_free(l);
                close(fd);
        }

        assert_null(mnd_pen_link_free(NULL));
        assert_int_equal(mnd_pen_link_stop(NULL, NULL, NULL), -EINVAL);
        assert_null(mnd_transport_free(NULL));
        pen_loop_run_for(e, 1 * MS);
        sd_event_unref(e);
}

static void test_memory_transport(void **state) {
        struct mnd_transport *t = NULL;
        sd_event *e = NULL;
        int fd = -1;
        static uint8_t big[256 * 1024];
        uint8_t buf[4096];
        size_t got = 0;
        int r;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(mnd_transport_memory_new(e, &t, &fd), 0);
        assert_int_equal(t->ops->kind, MNP_TRANSPORT_USB);

        /* More than the socket takes: the rest is queued, then refused when full. */
        for (size_t i = 0; i < sizeof big; i++)
                big[i] = (uint8_t) i;
        r = mnd_transport_write(t, big, 100 * 1024);
        assert_int_equal(r, 0);
        r = mnd_transport_write(t, big, sizeof big);
        assert_int_equal(r, -ENOBUFS);

        /* The peer reads: the queue drains through EPOLLOUT, in order. */
        while (got < 100 * 1024) {
                ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);

                if (n < 0) {
                        assert_int_equal(errno, EAGAIN);
                        assert_true(sd_event_run(e, 10 * MS) >= 0);
                        continue;
                }
                for (ssize_t i = 0; i < n; i++)
                        assert_int_equal(buf[i], (uint8_t) (got + (size_t) i));
                got += (size_t) n;
        }

        close(fd);
        pen_loop_run_for(e, 5 * MS);
        assert_int_equal(mnd_transport_write(t, big, 10), -ENODEV);
        t = mnd_transport_free(t);
        sd_event_unref(e);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_settings_and_api),
                cmocka_unit_test(test_memory_transport),
                cmocka_unit_test(test_handshake),
                cmocka_unit_test(test_set_depth_speed),
                cmocka_unit_test(test_nak_mapping),
                cmocka_unit_test(test_lease_renewal),
                cmocka_unit_test(test_stop_overtakes_queue),
                cmocka_unit_test(test_stop_while_running),
                cmocka_unit_test(test_free_mid_session),
                cmocka_unit_test(test_pen_stalled),
                cmocka_unit_test(test_pen_reboot_silent),
                cmocka_unit_test(test_pen_reboot_not_ready),
                cmocka_unit_test(test_fault_injection),
                cmocka_unit_test(test_transport_gone),
                cmocka_unit_test(test_transport_gone_free_in_callback),
                cmocka_unit_test(test_garbage_and_unexpected),
                cmocka_unit_test(test_wire_level),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
