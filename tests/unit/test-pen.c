/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The simulated pen, driven by a libmnp host on a virtual clock. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pen-harness.h"

#define FLAG(c) MNP_FAULT_FLAG(c)
#define USEC_PER_SEC_TEST UINT64_C(1000000)

static void done(struct harness *h) {
        /* The pen never named a deadline that was already past. */
        assert_int_equal(h->stuck, 0);
        h_done(h);
}

static uint8_t state_of(struct harness *h) {
        struct sim_pen_snapshot s;

        h_snap(h, &s);
        return s.state;
}

/* Handshake and a cartridge: ready to START. */
static void ready(struct harness *h) {
        assert_non_null(h_connect(h));
        assert_int_equal(sim_pen_insert_cartridge(h->pen, h->now, "CART-0001"), 0);
        h_advance(h, 1 * H_MS);
}

/* The frame the test expects; fails the test (never returns NULL) if it is missing. */
static const struct h_frame *must(const struct h_frame *f) {
        if (!f) {
                fail_msg("an expected frame did not arrive");
                abort();  /* not reached: fail_msg() leaves the test */
        }
        return f;
}

static const struct h_frame *last_status(const struct harness *h) {
        for (size_t i = h->n_frames; i > 0; i--)
                if (h->frames[i - 1].f.type == MNP_MSG_STATUS && h->frames[i - 1].unpack == 0)
                        return &h->frames[i - 1];
        return must(NULL);
}

static void test_config_default(void **state) {
        struct sim_pen_config c;

        sim_pen_config_default(&c);
        assert_string_equal(c.model, "MN-1");
        assert_string_equal(c.serial, "MN1-000001");
        assert_string_equal(c.firmware, "1.0.0");
        assert_int_equal(c.depth_min_um, 0);
        assert_int_equal(c.depth_max_um, 3000);
        assert_int_equal(c.depth_step_um, 50);
        assert_int_equal(c.speed_min_hz, 50);
        assert_int_equal(c.speed_max_hz, 150);
        assert_int_equal(c.max_lease_ms, 1000);
        assert_int_equal(c.boot_ms, 100);
        assert_int_equal(c.status_period_ms, 100);
        assert_int_equal(c.actuator_um_per_s, 5000);
        assert_int_equal(c.actuator_timeout_ms, 1000);
        assert_int_equal(c.motor_ramp_hz_per_s, 2000);
        assert_false(c.mains_powered);
        assert_int_equal(c.battery_drain_ms_per_percent, 30000);
        assert_int_equal(c.overheat_dc, 450);
        assert_int_equal(c.seed, 1);
}

static void test_config_invalid(void **state) {
        struct sim_pen_config c;

        sim_pen_config_default(&c);
        c.depth_step_um = 0;
        errno = 0;
        assert_null(sim_pen_new(&c, 0));
        assert_int_equal(errno, EINVAL);

        sim_pen_config_default(&c);
        c.speed_min_hz = 200;
        assert_null(sim_pen_new(&c, 0));

        sim_pen_config_default(&c);
        c.model[0] = 0;
        assert_null(sim_pen_new(&c, 0));

        assert_null(sim_pen_free(NULL));
}

static void test_boot(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;

        h_init(&h, NULL);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_BOOTING);
        assert_int_not_equal(s.boot_id, 0);
        assert_false(s.host_connected);
        assert_true(s.connected);
        assert_int_equal(s.battery_percent, 100);
        assert_int_equal(s.temperature_dc, 250);
        assert_int_equal(sim_pen_next_deadline(h.pen), H_T0 + 100 * H_MS);

        /* Frames during boot are ignored. */
        h_advance(&h, 50 * H_MS);
        (void) h_hello(&h, 1, 1, 100);
        (void) h_simple(&h, MNP_MSG_STOP);
        assert_int_equal(h.n_frames, 0);
        h_snap(&h, &s);
        assert_int_equal(s.frames_received, 2);
        assert_false(s.host_connected);

        h_advance_to(&h, H_T0 + 100 * H_MS - 1);
        assert_int_equal(state_of(&h), MNP_STATE_BOOTING);
        h_advance(&h, 1);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* Idle, no host, nothing moving: nothing will ever happen. */
        assert_int_equal(sim_pen_next_deadline(h.pen), UINT64_MAX);

        /* And without a handshake the pen says nothing. */
        h_advance(&h, 1000 * H_MS);
        assert_int_equal(h.bytes_in, 0);
        done(&h);
}

static void test_handshake(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        const struct h_frame *r;
        uint16_t seq;
        size_t from;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);
        seq = h_hello(&h, 1, 3, 100);
        r = must(h_find(&h, MNP_MSG_HELLO_REPLY, 0));
        assert_non_null(r);
        h_snap(&h, &s);
        assert_true(s.host_connected);
        assert_int_equal(r->m.hello_reply.hello_seq, seq);
        assert_int_equal(r->m.hello_reply.version, 1);
        assert_int_equal(r->m.hello_reply.caps, MNP_CAP_CARTRIDGE_ID | MNP_CAP_BATTERY |
                                                MNP_CAP_TEMPERATURE | MNP_CAP_DEPTH_SENSOR);
        assert_int_equal(r->m.hello_reply.boot_id, s.boot_id);
        assert_int_equal(r->m.hello_reply.depth_min_um, 0);
        assert_int_equal(r->m.hello_reply.depth_max_um, 3000);
        assert_int_equal(r->m.hello_reply.depth_step_um, 50);
        assert_int_equal(r->m.hello_reply.speed_min_hz, 50);
        assert_int_equal(r->m.hello_reply.speed_max_hz, 150);
        assert_int_equal(r->m.hello_reply.max_lease_ms, 1000);
        assert_string_equal(r->m.hello_reply.model, "MN-1");
        assert_string_equal(r->m.hello_reply.serial, "MN1-000001");
        assert_string_equal(r->m.hello_reply.firmware, "1.0.0");

        /* STATUS every 100 ms from now on, HEARTBEATs (lease 0) in between. */
        from = h.n_frames;
        h_heartbeats(&h, 50 * H_MS, 0);
        h_advance(&h, 1000 * H_MS);
        assert_int_equal(h_count(&h, MNP_MSG_STATUS, from), 10);
        assert_true(h_count(&h, MNP_MSG_HEARTBEAT, from) >= 9);
        assert_int_equal(must(h_find(&h, MNP_MSG_HEARTBEAT, from))->m.heartbeat.lease_ms, 0);
        assert_int_equal(must(h_find(&h, MNP_MSG_STATUS, from))->at_us, r->at_us + 100 * H_MS);
        for (size_t i = from; i < h.n_frames; i++)
                assert_int_equal(h.frames[i].unpack, 0);
        done(&h);
}

static void test_version_mismatch(void **state) {
        struct harness h;
        const struct h_frame *a;
        uint16_t seq;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);
        seq = h_hello(&h, 2, 4, 100);
        a = must(h_answer(&h, seq));
        assert_non_null(a);
        assert_int_equal(a->f.type, MNP_MSG_NAK);
        assert_int_equal(a->m.nak.reason, MNP_NAK_UNSUPPORTED_VERSION);
        assert_int_equal(a->m.nak.detail, 1);
        assert_null(h_find(&h, MNP_MSG_HELLO_REPLY, 0));

        h_advance(&h, 500 * H_MS);
        assert_int_equal(h_count(&h, MNP_MSG_STATUS, 0), 0);
        {
                struct sim_pen_snapshot s;

                h_snap(&h, &s);
                assert_false(s.host_connected);
                assert_int_equal(s.naks_sent, 1);
        }
        done(&h);
}

static void test_before_handshake(void **state) {
        struct harness h;
        uint32_t detail = 0;
        size_t from;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "C1"), 0);
        assert_int_equal(h.n_frames, 0);  /* no host: no CARTRIDGE event */

        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 500 },
                                   NULL), MNP_NAK_NOT_READY);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 100 },
                                   NULL), MNP_NAK_NOT_READY);
        assert_int_equal(h_start(&h, 500, 100, 500, &detail), MNP_NAK_NOT_READY);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), MNP_NAK_NOT_READY);

        /* Unreliable frames are ignored. */
        from = h.n_frames;
        h_heartbeat(&h, 500);
        assert_int_equal(h.n_frames, from);

        /* STOP is never refused. */
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);

        assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        h_advance(&h, 1000 * H_MS);
        assert_int_equal(h_count(&h, MNP_MSG_STATUS, 0), 0);
        done(&h);
}

static void test_start_stop(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t t_start, t_stop;

        h_init(&h, NULL);
        ready(&h);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        t_start = h.now;
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 1000, 100, 500, NULL), 0);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_int_equal(s.depth_set_um, 1000);
        assert_int_equal(s.speed_set_hz, 100);
        assert_int_equal(s.speed_actual_hz, 0);
        assert_false(s.needles_moving);
        assert_int_equal(s.lease_left_ms, 500);

        h_advance(&h, 300 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_true(s.needles_moving);
        assert_int_equal(s.speed_actual_hz, 100);
        assert_int_equal(s.motion_changed_us, t_start + 500);  /* 1 Hz at 2000 Hz/s */

        t_stop = h.now;
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.speed_actual_hz, 0);
        assert_false(s.needles_moving);
        assert_int_equal(s.motion_changed_us, t_stop);
        assert_int_equal(s.lease_left_ms, 0);
        assert_int_equal(s.fault_flags, 0);

        /* STOP in IDLE: still ACKed. */
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* and it can start again */
        assert_int_equal(h_start(&h, 500, 60, 500, NULL), 0);
        assert_int_equal(state_of(&h), MNP_STATE_RUNNING);
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        done(&h);
}

static void test_naks(void **state) {
        struct harness h;
        uint32_t d = 0;

        h_init(&h, NULL);
        assert_non_null(h_connect(&h));

        /* NO_CARTRIDGE */
        assert_int_equal(h_start(&h, 500, 100, 500, &d), MNP_NAK_NO_CARTRIDGE);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "C1"), 0);
        h_advance(&h, 1 * H_MS);

        /* OFF_STEP, detail = step */
        d = 0;
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 1025 },
                                   &d), MNP_NAK_OFF_STEP);
        assert_int_equal(d, 50);
        d = 0;
        assert_int_equal(h_start(&h, 1010, 100, 500, &d), MNP_NAK_OFF_STEP);
        assert_int_equal(d, 50);

        /* OUT_OF_RANGE: depth, speed (above and below), lease */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 3050 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 3000);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 151 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 150);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 49 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 50);
        assert_int_equal(h_start(&h, 500, 200, 500, &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 150);
        assert_int_equal(h_start(&h, 500, 100, 1001, &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 1000);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* MALFORMED: a SET_DEPTH with a 2-byte payload; START with lease 0 is
         * outside the field's domain in libmnp, so it is malformed too. */
        {
                uint8_t p[2] = { 1, 2 };
                uint8_t start0[8] = { 0xf4, 0x01, 0, 0, 100, 0, 0, 0 };
                uint16_t seq;

                seq = h_send_raw(&h, MNP_MSG_SET_DEPTH, p, sizeof p);
                (void) must(h_answer(&h, seq));
                assert_int_equal(must(h_answer(&h, seq))->m.nak.reason, MNP_NAK_MALFORMED);
                seq = h_send_raw(&h, MNP_MSG_START, start0, sizeof start0);
                (void) must(h_answer(&h, seq));
                assert_int_equal(must(h_answer(&h, seq))->m.nak.reason, MNP_NAK_MALFORMED);
        }

        /* UNKNOWN_TYPE: an unassigned command type, and a pen-only type sent by the host. */
        {
                uint16_t seq;

                seq = h_send_raw(&h, 0x1f, NULL, 0);
                (void) must(h_answer(&h, seq));
                assert_int_equal(must(h_answer(&h, seq))->m.nak.reason, MNP_NAK_UNKNOWN_TYPE);
                seq = h_send(&h, &(struct mnp_msg) {
                        .type = MNP_MSG_FAULT, .fault = { .code = 1, .fault_flags = 1 } });
                (void) must(h_answer(&h, seq));
                assert_int_equal(must(h_answer(&h, seq))->m.nak.reason, MNP_NAK_UNKNOWN_TYPE);
        }

        /* BAD_STATE: START while running */
        assert_int_equal(h_start(&h, 500, 100, 1000, NULL), 0);
        assert_int_equal(h_start(&h, 500, 100, 1000, &d), MNP_NAK_BAD_STATE);
        assert_int_equal(state_of(&h), MNP_STATE_RUNNING);

        /* SET_* while running are fine */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 750 },
                                   NULL), 0);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 120 },
                                   NULL), 0);

        /* FAULT_ACTIVE, detail = fault flags, for SET_*, START and CLEAR_FAULT */
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_MOTOR), 0);
        h_advance(&h, 1 * H_MS);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 500 },
                                   &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_MOTOR));
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 100 },
                                   &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(h_start(&h, 500, 100, 500, &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_MOTOR));
        sim_pen_set_temperature(h.pen, h.now, 460);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), MNP_NAK_FAULT_ACTIVE);
        sim_pen_set_temperature(h.pen, h.now, 250);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        done(&h);
}

static void test_naks_pen_ranges(void **state) {
        struct sim_pen_config c;
        struct harness h;
        uint32_t d = 0;

        /* A pen whose own range starts above 0 and ends beyond the absolute caps. */
        sim_pen_config_default(&c);
        c.depth_min_um = 200;
        c.depth_max_um = 3500;
        c.speed_max_hz = 400;
        h_init(&h, &c);
        assert_non_null(h_connect(&h));

        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 100 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 200);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 3200 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 3000);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 350 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 300);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 3000 },
                                   &d), 0);
        done(&h);

        /* A pen whose minimum lies above the absolute caps: a value that is both
         * above the cap and below the minimum gets the cap, which is checked
         * first (PROTOCOL.md 12.3); the step comes before both. */
        sim_pen_config_default(&c);
        c.depth_min_um = 3200;
        c.depth_max_um = 3500;
        c.speed_min_hz = 320;
        c.speed_max_hz = 400;
        h_init(&h, &c);
        assert_non_null(h_connect(&h));
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "C1"), 0);
        h_advance(&h, 1 * H_MS);

        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 3100 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 3000);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 3125 },
                                   &d), MNP_NAK_OFF_STEP);
        assert_int_equal(d, 50);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 310 },
                                   &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 300);
        assert_int_equal(h_start(&h, 3100, 100, 500, &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 3000);
        /* Depth before speed: no depth is possible on this pen. */
        assert_int_equal(h_start(&h, 3000, 310, 500, &d), MNP_NAK_OUT_OF_RANGE);
        assert_int_equal(d, 3200);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        done(&h);
}

static void test_lease(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        const struct h_frame *f;
        uint64_t expiry;
        size_t from;

        h_init(&h, NULL);
        ready(&h);

        /* Heartbeats every 50 ms renew a 200 ms lease: it keeps running. */
        h_heartbeats(&h, 50 * H_MS, 200);
        assert_int_equal(h_start(&h, 500, 100, 200, NULL), 0);
        h_advance(&h, 2000 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_true(s.needles_moving);
        assert_true(s.lease_left_ms > 100 && s.lease_left_ms <= 200);

        /* A renewal is capped at max_lease_ms. */
        h_heartbeat(&h, 60000);
        h_snap(&h, &s);
        assert_int_equal(s.lease_left_ms, 1000);
        h_heartbeat(&h, 200);

        /* The host stops renewing: the motor stops exactly when the lease runs out. */
        h_heartbeats(&h, 0, 0);
        expiry = h.last_hb_us + 200 * H_MS;
        from = h.n_frames;
        h_advance_to(&h, expiry - 1);
        assert_int_equal(state_of(&h), MNP_STATE_RUNNING);
        h_advance(&h, 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_LEASE_EXPIRED));
        assert_false(s.needles_moving);
        assert_int_equal(s.speed_actual_hz, 0);
        assert_int_equal(s.motion_changed_us, expiry);

        f = must(h_find(&h, MNP_MSG_FAULT, from));
        assert_non_null(f);
        assert_int_equal(f->m.fault.code, MNP_FAULT_LEASE_EXPIRED);
        assert_int_equal(f->m.fault.fault_flags, FLAG(MNP_FAULT_LEASE_EXPIRED));
        assert_int_equal(f->at_us, expiry);

        /* The STATUS says so too. */
        h_advance(&h, 100 * H_MS);
        assert_int_equal(last_status(&h)->m.status.state, MNP_STATE_FAULT);
        assert_int_equal(last_status(&h)->m.status.lease_left_ms, 0);

        /* A heartbeat after the fault renews nothing. */
        h_heartbeat(&h, 500);
        h_snap(&h, &s);
        assert_int_equal(s.lease_left_ms, 0);

        /* FAULT -> IDLE by CLEAR_FAULT */
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.fault_flags, 0);

        /* CLEAR_FAULT while idle: ACKed, nothing happens */
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        done(&h);
}

static void test_host_lost(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t t;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "C1"), 0);
        (void) h_hello(&h, 1, 1, 50);          /* host lost after 200 ms */
        (void) must(h_find(&h, MNP_MSG_HELLO_REPLY, 0));
        h_advance(&h, 10 * H_MS);

        t = h.now;
        assert_int_equal(h_start(&h, 500, 100, 1000, NULL), 0);
        h_advance(&h, 199 * H_MS);
        assert_int_equal(state_of(&h), MNP_STATE_RUNNING);
        h_advance(&h, 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_HOST_LOST));
        assert_int_equal(s.motion_changed_us, t + 200 * H_MS);
        assert_false(s.host_connected);

        /* No STATUS once the host is gone, and a new HELLO is needed. */
        {
                size_t from = h.n_frames;

                h_advance(&h, 500 * H_MS);
                assert_int_equal(h_count(&h, MNP_MSG_STATUS, from), 0);
                assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), MNP_NAK_NOT_READY);
        }

        /* A host lost while idle: no fault, just the connection gone. */
        (void) h_hello(&h, 1, 1, 50);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        h_advance(&h, 300 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.fault_flags, 0);
        assert_false(s.host_connected);
        done(&h);
}

static void test_duplicate_command(void **state) {
        struct harness h;
        struct sim_pen_snapshot s1, s2;
        const struct h_frame *a;
        uint16_t seq;
        size_t from;

        h_init(&h, NULL);
        ready(&h);

        seq = h_send(&h, &(struct mnp_msg) {
                .type = MNP_MSG_START, .start = { .depth_um = 500, .speed_hz = 100, .lease_ms = 1000 } });
        assert_int_equal(must(h_answer(&h, seq))->f.type, MNP_MSG_ACK);
        h_snap(&h, &s1);

        /* The same frame again (the ACK was lost): the cached ACK, no second START. */
        from = h.n_frames;
        h_resend(&h);
        a = must(h_find(&h, MNP_MSG_ACK, from));
        assert_non_null(a);
        assert_int_equal(a->m.ack.seq, seq);
        assert_null(h_find(&h, MNP_MSG_NAK, from));
        h_snap(&h, &s2);
        assert_int_equal(s2.state, MNP_STATE_RUNNING);
        assert_int_equal(s2.commands_acted, s1.commands_acted);
        assert_int_equal(s2.duplicates_ignored, s1.duplicates_ignored + 1);

        /* A NAK is cached as well. */
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 3333 });
        assert_int_equal(must(h_answer(&h, seq))->m.nak.reason, MNP_NAK_OFF_STEP);
        from = h.n_frames;
        h_resend(&h);
        assert_int_equal(must(h_find(&h, MNP_MSG_NAK, from))->m.nak.seq, seq);
        h_snap(&h, &s1);
        assert_int_equal(s1.duplicates_ignored, 2);
        assert_int_equal(s1.naks_sent, 1);
        done(&h);
}

static void test_hello_while_running(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t t;

        h_init(&h, NULL);
        ready(&h);
        assert_int_equal(h_start(&h, 500, 100, 1000, NULL), 0);
        h_advance(&h, 100 * H_MS);
        (void) must(h_find(&h, MNP_MSG_STATUS, 0));

        t = h.now;
        (void) h_hello(&h, 1, 1, 100);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.fault_flags, 0);
        assert_false(s.needles_moving);
        assert_int_equal(s.motion_changed_us, t);
        assert_int_equal(s.lease_left_ms, 0);
        assert_true(s.host_connected);
        done(&h);
}

static void check_fault(struct harness *h, enum mnp_fault code, size_t from, uint64_t at) {
        struct sim_pen_snapshot s;
        const struct h_frame *f;

        h_snap(h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_true(s.fault_flags & FLAG(code));
        assert_false(s.needles_moving);
        assert_int_equal(s.speed_actual_hz, 0);
        assert_int_equal(s.motion_changed_us, at);
        assert_int_equal(s.lease_left_ms, 0);

        f = must(h_find(h, MNP_MSG_FAULT, from));
        assert_non_null(f);
        assert_int_equal(f->m.fault.code, code);
        assert_int_equal(f->m.fault.fault_flags, s.fault_flags);
}

static void test_injected_faults(void **state) {
        /* INTERNAL is raised the same way but never cleared: test_internal_fault. */
        static const enum mnp_fault codes[] = {
                MNP_FAULT_MOTOR, MNP_FAULT_OVERHEAT, MNP_FAULT_ACTUATOR, MNP_FAULT_BATTERY,
        };
        struct harness h;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);

        for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
                size_t from;
                uint64_t t;

                assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
                h_advance(&h, 100 * H_MS);
                from = h.n_frames;
                t = h.now;
                assert_int_equal(sim_pen_inject_fault(h.pen, t, codes[i]), 0);
                h_pump(&h);
                check_fault(&h, codes[i], from, t);
                /* The cause is gone (the physical state is normal): it clears. */
                assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
                assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        }

        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_NONE), -EINVAL);
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_LEASE_EXPIRED), -EINVAL);
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, (enum mnp_fault) 42), -EINVAL);

        /* A fault in IDLE is a fault too. */
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_INTERNAL), 0);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        /* STOP in FAULT: ACKed, stays FAULT. */
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        done(&h);
}

static void test_overheat(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint32_t d = 0;
        uint64_t t;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);

        /* Running warms the pen by 0.1 C/s. */
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 10000 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_in_range(s.temperature_dc, 259, 261);
        assert_in_range(last_status(&h)->m.status.temperature_dc, 258, 261);

        from = h.n_frames;
        t = h.now;
        sim_pen_set_temperature(h.pen, t, 450);
        h_pump(&h);
        check_fault(&h, MNP_FAULT_OVERHEAT, from, t);

        /* Refused while the cause persists: the temperature is not below the threshold. */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT }, &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_OVERHEAT));
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        sim_pen_set_temperature(h.pen, h.now, 451);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), MNP_NAK_FAULT_ACTIVE);

        /* Stopped, it cools by 0.2 C/s; just below the threshold the cause is
         * gone (PROTOCOL.md 13: no hysteresis). */
        h_advance(&h, 5000 * H_MS);
        h_snap(&h, &s);
        assert_in_range(s.temperature_dc, 440, 442);
        sim_pen_set_temperature(h.pen, h.now, 449);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* ... down to ambient, and then nothing moves any more. */
        h_heartbeats(&h, 0, 0);
        (void) h_hello(&h, 1, 1, 60000);
        h_advance(&h, 100000 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.temperature_dc, 250);
        done(&h);
}

static void test_battery(void **state) {
        struct sim_pen_config c;
        struct harness h;
        struct sim_pen_snapshot s;
        uint32_t d = 0;
        uint64_t t;
        size_t from;

        sim_pen_config_default(&c);
        c.battery_drain_ms_per_percent = 100;
        h_init(&h, &c);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);

        sim_pen_set_battery(h.pen, h.now, 5);
        from = h.n_frames;
        t = h.now;
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 150 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.battery_percent, 4);
        h_advance(&h, 500 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.battery_percent, 2);
        check_fault(&h, MNP_FAULT_BATTERY, from, s.motion_changed_us);
        /* 5 -> 2 % takes 300 ms of running; noticed within one physics tick. */
        assert_in_range(s.motion_changed_us, t + 300 * H_MS, t + 310 * H_MS);

        /* Idle: no drain. */
        h_advance(&h, 1000 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.battery_percent, 2);

        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT }, &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_BATTERY));
        /* Cleared as soon as it is above the threshold (PROTOCOL.md 13: no hysteresis). */
        sim_pen_set_battery(h.pen, h.now, 3);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        sim_pen_set_battery(h.pen, h.now, 2);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        sim_pen_set_battery(h.pen, h.now, 3);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* A low battery in IDLE is a fault as well. */
        sim_pen_set_battery(h.pen, h.now, 1);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        done(&h);
}

static void test_mains(void **state) {
        struct sim_pen_config c;
        struct harness h;
        struct sim_pen_snapshot s;

        sim_pen_config_default(&c);
        c.mains_powered = true;
        c.battery_drain_ms_per_percent = 10;
        h_init(&h, &c);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 2000 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_int_equal(s.battery_percent, 255);
        assert_int_equal(last_status(&h)->m.status.battery_percent, 255);
        done(&h);
}

static void test_actuator(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t t;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 0);

        /* 5000 um/s: the measured depth lags the setpoint. */
        t = h.now;
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 1000 },
                                   NULL), 0);
        h_snap(&h, &s);
        assert_int_equal(s.depth_set_um, 1000);
        assert_int_equal(s.depth_actual_um, 0);
        h_advance_to(&h, t + 50 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_actual_um, 250);
        h_advance_to(&h, t + 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_actual_um, 500);
        h_advance_to(&h, t + 300 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_actual_um, 1000);
        assert_int_equal(last_status(&h)->m.status.depth_actual_um, 1000);

        /* and back down */
        t = h.now;
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 0 },
                                   NULL), 0);
        h_advance_to(&h, t + 40 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_actual_um, 800);

        /* A jam (injected): the fault is raised at once and the actuator stops. */
        h_advance(&h, 500 * H_MS);
        t = h.now;
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 2000 },
                                   NULL), 0);
        h_advance_to(&h, t + 100 * H_MS);
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_ACTUATOR), 0);
        h_advance(&h, 300 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_ACTUATOR));
        assert_int_equal(s.depth_actual_um, 500);

        /* Cleared, it moves again. */
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        h_advance(&h, 300 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_actual_um, 2000);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        done(&h);
}

static void test_actuator_timeout(void **state) {
        struct sim_pen_config c;
        struct harness h;
        struct sim_pen_snapshot s;
        const struct h_frame *f;
        uint64_t t;
        size_t from;

        sim_pen_config_default(&c);
        c.actuator_um_per_s = 1000;     /* too slow for a 2 mm move within 1 s */
        h_init(&h, &c);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 0);

        t = h.now;
        from = h.n_frames;
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 2000 },
                                   NULL), 0);
        h_advance_to(&h, t + 1000 * H_MS - 1);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        h_advance(&h, 1);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_ACTUATOR));
        f = must(h_find(&h, MNP_MSG_FAULT, from));
        assert_non_null(f);
        assert_int_equal(f->m.fault.code, MNP_FAULT_ACTUATOR);
        assert_int_equal(f->at_us, t + 1000 * H_MS);
        done(&h);
}

static void test_motor_ramp(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t t;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);

        t = h.now;
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance_to(&h, t + 25 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.speed_actual_hz, 50);
        assert_true(s.needles_moving);
        assert_int_equal(s.motion_changed_us, t + 500);
        h_advance_to(&h, t + 50 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.speed_actual_hz, 100);
        h_advance_to(&h, t + 80 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.speed_actual_hz, 100);

        /* Braking is immediate... */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 60 },
                                   NULL), 0);
        h_snap(&h, &s);
        assert_int_equal(s.speed_set_hz, 60);
        assert_int_equal(s.speed_actual_hz, 60);
        assert_int_equal(s.motion_changed_us, t + 500);

        /* ... speeding up ramps. */
        t = h.now;
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 150 },
                                   NULL), 0);
        h_advance_to(&h, t + 20 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.speed_actual_hz, 100);
        h_advance_to(&h, t + 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.speed_actual_hz, 150);

        /* SET_SPEED while idle sets the setpoint; the motor stays still. */
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 80 },
                                   NULL), 0);
        h_advance(&h, 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.speed_set_hz, 80);
        assert_int_equal(s.speed_actual_hz, 0);
        done(&h);
}

static void test_needling_time(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);

        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 1000 * H_MS);
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        h_snap(&h, &s);
        /* Moving from 0.5 ms after START. */
        assert_int_equal(s.needling_ms, 999);

        h_advance(&h, 1000 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.needling_ms, 999);
        assert_int_equal(last_status(&h)->m.status.needling_ms, 999);

        /* START resets it. */
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_snap(&h, &s);
        assert_int_equal(s.needling_ms, 0);
        h_advance(&h, 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.needling_ms, 99);
        done(&h);
}

static void test_cartridge(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        const struct h_frame *f;
        size_t from;
        uint64_t t;

        h_init(&h, NULL);
        assert_non_null(h_connect(&h));

        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, ""), -EINVAL);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, NULL), -EINVAL);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "0123456789abcdef0123456789abcdefX"), -EINVAL);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "bad\tid"), -EINVAL);
        assert_int_equal(sim_pen_remove_cartridge(h.pen, h.now), -ENOENT);

        from = h.n_frames;
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "0123456789abcdef0123456789abcdef"), 0);
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "other"), -EEXIST);
        h_pump(&h);
        f = must(h_find(&h, MNP_MSG_CARTRIDGE, from));
        assert_non_null(f);
        assert_int_equal(f->m.cartridge.present, 1);
        assert_string_equal(f->m.cartridge.id, "0123456789abcdef0123456789abcdef");
        h_advance(&h, 100 * H_MS);
        assert_string_equal(last_status(&h)->m.status.cartridge_id, "0123456789abcdef0123456789abcdef");
        /* ACKed: sent once */
        assert_int_equal(h_count(&h, MNP_MSG_CARTRIDGE, from), 1);

        from = h.n_frames;
        assert_int_equal(sim_pen_remove_cartridge(h.pen, h.now), 0);
        h_pump(&h);
        f = must(h_find(&h, MNP_MSG_CARTRIDGE, from));
        assert_non_null(f);
        assert_int_equal(f->m.cartridge.present, 0);
        assert_string_equal(f->m.cartridge.id, "");

        /* Not acknowledged: retransmitted, 1 + 3 times in all, then given up. */
        h.auto_ack = false;
        from = h.n_frames;
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "C2"), 0);
        h_advance(&h, 50 * H_MS);
        h_heartbeat(&h, 0);
        h_advance(&h, 50 * H_MS);
        h_heartbeat(&h, 0);
        h_advance(&h, 200 * H_MS);
        assert_int_equal(h_count(&h, MNP_MSG_CARTRIDGE, from), 4);
        h.auto_ack = true;

        /* Removal while running: stop, FAULT CARTRIDGE_REMOVED, both events. */
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 200 * H_MS);
        from = h.n_frames;
        t = h.now;
        assert_int_equal(sim_pen_remove_cartridge(h.pen, t), 0);
        h_pump(&h);
        check_fault(&h, MNP_FAULT_CARTRIDGE_REMOVED, from, t);
        f = must(h_find(&h, MNP_MSG_CARTRIDGE, from));
        assert_non_null(f);
        assert_int_equal(f->m.cartridge.present, 0);
        /* The FAULT event first, then the CARTRIDGE event (PROTOCOL.md 12.6). */
        assert_true(must(h_find(&h, MNP_MSG_FAULT, from)) < f);
        assert_int_equal(h_count(&h, MNP_MSG_FAULT, from), 1);
        assert_int_equal(h_count(&h, MNP_MSG_CARTRIDGE, from), 1);
        h_snap(&h, &s);
        assert_string_equal(s.cartridge_id, "");

        /* The cause is gone once it is out; no cartridge means no START though. */
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), MNP_NAK_NO_CARTRIDGE);
        done(&h);
}

static void test_reboot(void **state) {
        struct harness h;
        struct sim_pen_snapshot s1, s2;
        const struct h_frame *r;
        uint64_t t;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 200 * H_MS);
        h_snap(&h, &s1);

        t = h.now;
        sim_pen_reboot(h.pen, t);
        h_snap(&h, &s2);
        assert_int_equal(s2.state, MNP_STATE_BOOTING);
        assert_int_not_equal(s2.boot_id, 0);
        assert_int_not_equal(s2.boot_id, s1.boot_id);
        assert_false(s2.needles_moving);
        assert_int_equal(s2.motion_changed_us, t);
        assert_false(s2.host_connected);
        assert_int_equal(s2.lease_left_ms, 0);
        assert_string_equal(s2.cartridge_id, "CART-0001");

        /* Booting: deaf.  Then IDLE, and a new HELLO sees the new boot id. */
        from = h.n_frames;
        (void) h_hello(&h, 1, 1, 100);
        assert_null(h_find(&h, MNP_MSG_HELLO_REPLY, from));
        h_heartbeats(&h, 0, 0);
        h_advance_to(&h, t + 100 * H_MS);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);
        (void) h_hello(&h, 1, 1, 100);
        r = must(h_find(&h, MNP_MSG_HELLO_REPLY, from));
        assert_non_null(r);
        assert_int_equal(r->m.hello_reply.boot_id, s2.boot_id);

        /* A reboot clears faults. */
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_MOTOR), 0);
        sim_pen_reboot(h.pen, h.now);
        h_advance(&h, 100 * H_MS);
        h_snap(&h, &s1);
        assert_int_equal(s1.state, MNP_STATE_IDLE);
        assert_int_equal(s1.fault_flags, 0);
        assert_int_not_equal(s1.boot_id, s2.boot_id);
        done(&h);
}

static void test_boot_ids_deterministic(void **state) {
        struct sim_pen_config c;
        struct sim_pen *a, *b;
        struct sim_pen_snapshot sa, sb;

        sim_pen_config_default(&c);
        a = sim_pen_new(&c, 0);
        b = sim_pen_new(&c, 0);
        assert_non_null(a);
        assert_non_null(b);
        for (int i = 0; i < 5; i++) {
                sim_pen_snapshot(a, 0, &sa);
                sim_pen_snapshot(b, 0, &sb);
                assert_int_equal(sa.boot_id, sb.boot_id);
                sim_pen_reboot(a, 0);
                sim_pen_reboot(b, 0);
        }
        b = sim_pen_free(b);
        c.seed = 2;
        b = sim_pen_new(&c, 0);
        sim_pen_snapshot(a, 0, &sa);
        sim_pen_snapshot(b, 0, &sb);
        assert_int_not_equal(sa.boot_id, sb.boot_id);
        sim_pen_free(a);
        sim_pen_free(b);
}

static void test_stall(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t bytes, expiry;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 300);
        assert_int_equal(h_start(&h, 500, 100, 300, NULL), 0);
        h_advance(&h, 500 * H_MS);
        assert_int_equal(state_of(&h), MNP_STATE_RUNNING);

        sim_pen_set_stalled(h.pen, true);
        expiry = h.last_hb_us + 300 * H_MS;
        bytes = h.bytes_in;
        from = h.n_frames;

        /* No answers, heartbeats unheard... */
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), -1);
        h_advance_to(&h, expiry - 1);
        assert_int_equal(state_of(&h), MNP_STATE_RUNNING);
        /* ... but the lease still stops the motor, on time. */
        h_advance(&h, 1);
        h_snap(&h, &s);
        assert_true(s.stalled);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_LEASE_EXPIRED));
        assert_int_equal(s.motion_changed_us, expiry);
        assert_int_equal(h.bytes_in, bytes);
        assert_int_equal(h.n_frames, from);

        /* Recovered after the host gave up: silent until a new HELLO. */
        h_advance(&h, 500 * H_MS);
        sim_pen_set_stalled(h.pen, false);
        h_heartbeats(&h, 0, 0);
        h_advance(&h, 500 * H_MS);
        assert_int_equal(h.n_frames, from);
        h_snap(&h, &s);
        assert_false(s.host_connected);
        (void) h_hello(&h, 1, 1, 100);
        (void) must(h_find(&h, MNP_MSG_HELLO_REPLY, from));
        h_advance(&h, 100 * H_MS);
        assert_int_equal(last_status(&h)->m.status.fault_flags, FLAG(MNP_FAULT_LEASE_EXPIRED));
        done(&h);
}

static void test_stall_brief(void **state) {
        struct harness h;
        size_t from;

        /* A short stall: frames from the stall are lost, then it carries on. */
        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 0);
        sim_pen_set_stalled(h.pen, true);
        from = h.n_frames;
        h_advance(&h, 150 * H_MS);
        assert_int_equal(h.n_frames, from);
        sim_pen_set_stalled(h.pen, false);
        h_advance(&h, 150 * H_MS);
        assert_true(h_count(&h, MNP_MSG_STATUS, from) >= 1);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        done(&h);
}

static void test_disconnect(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t bytes, t;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 1000);
        assert_int_equal(h_start(&h, 500, 100, 1000, NULL), 0);
        h_advance(&h, 300 * H_MS);

        /* Unplugged: status already queued is lost, nothing goes out or comes in. */
        h.reading = false;
        h_advance(&h, 120 * H_MS);
        t = h.now;
        sim_pen_set_connected(h.pen, t, false);
        h.reading = true;
        bytes = h.bytes_in;
        from = h.n_frames;
        h_advance(&h, 2000 * H_MS);
        assert_int_equal(h.bytes_in, bytes);
        h_snap(&h, &s);
        assert_false(s.connected);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_false(s.needles_moving);
        /* The last heartbeat before the unplug granted 1000 ms; the host-lost
         * watchdog (400 ms) is faster. */
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_HOST_LOST));
        assert_in_range(s.motion_changed_us, t + 350 * H_MS, t + 400 * H_MS);
        assert_false(s.host_connected);

        /* Plugged back in: a handshake works again. */
        h_heartbeats(&h, 0, 0);
        sim_pen_set_connected(h.pen, h.now, true);
        (void) h_hello(&h, 1, 1, 100);
        (void) must(h_find(&h, MNP_MSG_HELLO_REPLY, from));
        h_snap(&h, &s);
        assert_true(s.connected);
        assert_true(s.host_connected);
        done(&h);
}

static void test_faults_drop(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint64_t bytes;

        h_init(&h, NULL);
        ready(&h);
        sim_pen_set_link_faults(h.pen, &(struct sim_link_faults) { .drop = 1.0 });
        h_snap(&h, &s);
        bytes = h.bytes_in;

        /* Nothing arrives in either direction. */
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), -1);
        h_heartbeats(&h, 50 * H_MS, 0);
        h_advance(&h, 300 * H_MS);
        assert_int_equal(h.bytes_in, bytes);
        {
                struct sim_pen_snapshot s2;

                h_snap(&h, &s2);
                assert_int_equal(s2.frames_received, s.frames_received);
                assert_true(s2.frames_sent > s.frames_sent);
        }
        done(&h);
}

static void test_faults_corrupt(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        sim_pen_set_link_faults(h.pen, &(struct sim_link_faults) { .corrupt = 1.0 });
        from = h.n_frames;
        h_heartbeats(&h, 50 * H_MS, 0);
        h_advance(&h, 350 * H_MS);  /* the pen hears nothing either: host lost at 400 ms */

        /* The host decoder sees only CRC errors, one per frame. */
        assert_int_equal(h.n_frames, from);
        assert_true(h.decode_errors[H_ERR_CRC] >= 5);
        assert_int_equal(h.decode_errors[H_ERR_COBS], 0);
        assert_int_equal(h.decode_errors[H_ERR_SIZE], 0);
        assert_int_equal(h.decode_errors[H_ERR_RUNT], 0);
        assert_int_equal(h.decode_errors[H_ERR_VERSION], 0);
        assert_int_equal(h.decode_errors[H_ERR_OTHER], 0);

        /* And the pen rejects every frame of ours. */
        h_snap(&h, &s);
        assert_true(s.bad_frames >= 6);
        assert_true(s.host_connected);
        done(&h);
}

static void test_faults_duplicate(void **state) {
        struct harness h;
        struct sim_pen_snapshot s1, s2;
        uint16_t seq;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        sim_pen_set_link_faults(h.pen, &(struct sim_link_faults) { .duplicate = 1.0 });
        h_snap(&h, &s1);
        from = h.n_frames;
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 500 });
        h_snap(&h, &s2);

        /* Our frame arrived twice and was acted on once; each answer came twice. */
        assert_int_equal(s2.commands_acted, s1.commands_acted + 1);
        assert_int_equal(s2.duplicates_ignored, s1.duplicates_ignored + 1);
        assert_int_equal(h_count(&h, MNP_MSG_ACK, from), 4);
        assert_int_equal(must(h_answer(&h, seq))->f.type, MNP_MSG_ACK);

        /* STATUS frames come in identical pairs. */
        from = h.n_frames;
        h_heartbeats(&h, 50 * H_MS, 0);
        h_advance(&h, 300 * H_MS);
        assert_int_equal(h_count(&h, MNP_MSG_STATUS, from) % 2, 0);
        assert_true(h_count(&h, MNP_MSG_STATUS, from) >= 4);
        done(&h);
}

static void test_faults_delay(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        const struct h_frame *a;
        uint16_t seq;
        uint64_t t;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 20 * H_MS, 0);
        h_advance(&h, 5 * H_MS);
        sim_pen_set_link_faults(h.pen, &(struct sim_link_faults) { .delay = 1.0, .delay_ms = 50 });

        t = h.now;
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 500 });
        assert_null(h_answer(&h, seq));
        assert_true(sim_pen_next_deadline(h.pen) <= t + 50 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_set_um, 0);

        /* Held 50 ms on the way in ... */
        h_advance_to(&h, t + 50 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.depth_set_um, 500);
        assert_null(h_answer(&h, seq));

        /* ... and the ACK 50 ms on the way out, overtaken by frames sent without delay. */
        h_heartbeats(&h, 0, 0);
        sim_pen_set_link_faults(h.pen, NULL);
        h_advance_to(&h, t + 100 * H_MS);
        a = must(h_answer(&h, seq));
        assert_non_null(a);
        assert_int_equal(a->at_us, t + 100 * H_MS);
        {
                bool overtaken = false;

                for (const struct h_frame *e = h.frames; e < a; e++)
                        if (e->at_us > t + 50 * H_MS && e->at_us < a->at_us)
                                overtaken = true;
                assert_true(overtaken);
        }
        done(&h);
}

static void test_chunked_input(void **state) {
        struct harness h;
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);
        n = mnp_msg_encode(&(struct mnp_msg) {
                .type = MNP_MSG_HELLO, .hello = { .min_version = 1, .max_version = 1, .heartbeat_ms = 100 } },
                7, wire, sizeof wire);
        assert_true(n > 0);
        /* Noise first, then the frame one byte at a time. */
        h_raw(&h, (const uint8_t[]) { 0x55, 0x66, 0x00 }, 3);
        for (ssize_t i = 0; i < n; i++)
                h_raw(&h, wire + i, 1);
        (void) must(h_find(&h, MNP_MSG_HELLO_REPLY, 0));
        assert_int_equal(must(h_find(&h, MNP_MSG_HELLO_REPLY, 0))->m.hello_reply.hello_seq, 7);
        done(&h);
}

static void test_status_fields(void **state) {
        struct harness h;
        const struct mnp_status *st;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 1500, 120, 500, NULL), 0);
        h_advance(&h, 150 * H_MS);
        st = &last_status(&h)->m.status;
        assert_int_equal(st->state, MNP_STATE_RUNNING);
        assert_int_equal(st->fault_flags, 0);
        assert_int_equal(st->depth_set_um, 1500);
        assert_true(st->depth_actual_um > 0 && st->depth_actual_um < 1500);
        assert_int_equal(st->speed_set_hz, 120);
        assert_int_equal(st->speed_actual_hz, 120);
        assert_int_equal(st->battery_percent, 100);
        assert_int_equal(st->temperature_dc, 250);
        assert_true(st->needling_ms > 0);
        assert_true(st->lease_left_ms > 400 && st->lease_left_ms <= 500);
        assert_string_equal(st->cartridge_id, "CART-0001");
        done(&h);
}

static void test_next_deadline(void **state) {
        struct harness h;
        uint64_t d;

        h_init(&h, NULL);
        assert_int_equal(sim_pen_next_deadline(h.pen), H_T0 + 100 * H_MS);
        assert_non_null(h_connect(&h));
        /* The link's heartbeat is next (50 ms), before the first STATUS (100 ms). */
        assert_int_equal(sim_pen_next_deadline(h.pen), h.now + 50 * H_MS);

        /* Running: a physics tick at most 10 ms away. */
        assert_int_equal(sim_pen_insert_cartridge(h.pen, h.now, "C"), 0);
        h_advance(&h, 1 * H_MS);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        d = sim_pen_next_deadline(h.pen);
        assert_true(d > h.now && d <= h.now + 10 * H_MS);
        done(&h);
}

static void test_tx_queue_bounded(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 0);

        /* A host that never reads: the queue stays bounded, oldest frames go. */
        h.reading = false;
        h_advance(&h, 10000 * H_MS);
        h_snap(&h, &s);
        assert_true(s.tx_dropped > 100);

        h.reading = true;
        from = h.n_frames;
        h_pump(&h);
        assert_int_equal(h.n_frames - from, 64);
        /* The newest ones survived. */
        assert_true(last_status(&h)->at_us == h.now);
        done(&h);
}

/* The answer to seq at index from or later: its type, the NAK reason (0 for an
 * ACK), and the reply's own seq in *ret_reply_seq.  -1 if there is none. */
static int answer_from(const struct harness *h, uint16_t seq, size_t from, uint16_t *ret_reply_seq) {
        const struct h_frame *a = h_answer_from(h, seq, from);

        if (!a)
                return -1;
        if (ret_reply_seq)
                *ret_reply_seq = a->f.seq;
        return a->f.type == MNP_MSG_ACK ? 0 : a->m.nak.reason;
}

static void test_not_ready_any_reliable(void **state) {
        static const uint8_t short_depth[2] = { 1, 2 };
        static const uint8_t start_lease0[8] = { 0xf4, 0x01, 0, 0, 100, 0, 0, 0 };
        struct harness h;
        struct sim_pen_snapshot s;
        uint16_t seq, r1 = 0, r2 = 0;
        size_t from;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);

        /* Before a handshake every reliable type but STOP gets NOT_READY, detail 0:
         * unknown ones, pen events sent by the host, malformed commands (PROTOCOL.md 12.2). */
        seq = h_send_raw(&h, 0x1f, NULL, 0);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_NOT_READY);
        assert_int_equal(must(h_answer(&h, seq))->m.nak.detail, 0);
        seq = h_send_raw(&h, 0x2f, (const uint8_t[]) { 1, 2, 3 }, 3);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_NOT_READY);
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_CARTRIDGE, .cartridge = { .present = 0 } });
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_NOT_READY);
        seq = h_send_raw(&h, MNP_MSG_FAULT, NULL, 0);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_NOT_READY);
        seq = h_send_raw(&h, MNP_MSG_SET_DEPTH, short_depth, sizeof short_depth);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_NOT_READY);
        seq = h_send_raw(&h, MNP_MSG_START, start_lease0, sizeof start_lease0);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_NOT_READY);

        /* De-duplication comes first: a copy gets the recorded NAK, byte for byte. */
        seq = h_send_raw(&h, 0x15, NULL, 0);
        assert_int_equal(answer_from(&h, seq, 0, &r1), MNP_NAK_NOT_READY);
        from = h.n_frames;
        h_resend(&h);
        assert_int_equal(answer_from(&h, seq, from, &r2), MNP_NAK_NOT_READY);
        assert_int_equal(r1, r2);
        assert_int_equal(h.n_frames, from + 1);

        /* Unreliable types, known or not, well-formed or not: ignored. */
        from = h.n_frames;
        (void) h_send_raw(&h, 0x00, NULL, 0);
        (void) h_send_raw(&h, 0x06, NULL, 0);
        (void) h_send_raw(&h, 0x30, (const uint8_t[]) { 1 }, 1);
        (void) h_send_raw(&h, 0x40, NULL, 0);
        (void) h_send_raw(&h, 0xff, NULL, 0);
        (void) h_send_raw(&h, MNP_MSG_HEARTBEAT, (const uint8_t[]) { 1 }, 1);
        (void) h_send_raw(&h, MNP_MSG_ACK, (const uint8_t[]) { 1 }, 1);
        (void) h_send_raw(&h, MNP_MSG_STATUS, NULL, 0);
        assert_int_equal(h.n_frames, from);

        h_snap(&h, &s);
        assert_false(s.host_connected);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.naks_sent, 7);
        assert_int_equal(s.duplicates_ignored, 1);
        done(&h);
}

static void test_unreliable_ignored(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        uint16_t seq;
        size_t from;

        h_init(&h, NULL);
        ready(&h);      /* host heartbeat 100 ms: lost after 400 ms */

        /* During a session, too, unreliable frames the pen cannot use get no answer. */
        from = h.n_frames;
        (void) h_send_raw(&h, 0x00, NULL, 0);
        (void) h_send_raw(&h, 0x06, NULL, 0);
        (void) h_send_raw(&h, 0x0f, NULL, 0);
        (void) h_send_raw(&h, 0x30, (const uint8_t[]) { 1 }, 1);
        (void) h_send_raw(&h, 0x40, NULL, 0);
        (void) h_send_raw(&h, 0xff, NULL, 0);
        (void) h_send_raw(&h, MNP_MSG_HEARTBEAT, (const uint8_t[]) { 1 }, 1);
        (void) h_send_raw(&h, MNP_MSG_ACK, (const uint8_t[]) { 1 }, 1);
        (void) h_send_raw(&h, MNP_MSG_NAK, (const uint8_t[]) { 1, 0, 0 }, 3);
        (void) h_send_raw(&h, MNP_MSG_HELLO_REPLY, NULL, 0);
        (void) h_send_raw(&h, MNP_MSG_STATUS, (const uint8_t[]) { 7 }, 1);
        assert_int_equal(h.n_frames, from);

        /* ... but they are signs of life: a second of nothing else, and the host is not lost. */
        for (int i = 0; i < 10; i++) {
                h_advance(&h, 100 * H_MS);
                (void) h_send_raw(&h, 0x30, NULL, 0);
        }
        h_snap(&h, &s);
        assert_true(s.host_connected);
        assert_int_equal(h_count(&h, MNP_MSG_ACK, from), 0);
        assert_int_equal(h_count(&h, MNP_MSG_NAK, from), 0);
        assert_int_equal(h_count(&h, MNP_MSG_STATUS, from), 10);

        /* Reliable types meant for the host, or unknown ones, are UNKNOWN_TYPE
         * even when malformed: that row comes first (PROTOCOL.md 12.2). */
        seq = h_send_raw(&h, MNP_MSG_FAULT, NULL, 0);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_UNKNOWN_TYPE);
        seq = h_send_raw(&h, MNP_MSG_CARTRIDGE, (const uint8_t[]) { 1, 0 }, 2);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_UNKNOWN_TYPE);
        seq = h_send_raw(&h, 0x2f, (const uint8_t[]) { 1, 2, 3 }, 3);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_UNKNOWN_TYPE);
        seq = h_send_raw(&h, MNP_MSG_SET_SPEED, (const uint8_t[]) { 1 }, 1);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_MALFORMED);
        assert_int_equal(must(h_answer(&h, seq))->m.nak.detail, 0);
        done(&h);
}

static void test_internal_fault(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        const struct h_frame *f;
        uint32_t d = 0;
        uint64_t t;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 100 * H_MS);

        from = h.n_frames;
        t = h.now;
        assert_int_equal(sim_pen_inject_fault(h.pen, t, MNP_FAULT_INTERNAL), 0);
        h_pump(&h);
        check_fault(&h, MNP_FAULT_INTERNAL, from, t);

        /* CLEAR_FAULT never clears it (PROTOCOL.md 13). */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT }, &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_INTERNAL));
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_INTERNAL));

        /* With a second fault: that one is cleared, INTERNAL stays. */
        from = h.n_frames;
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_MOTOR), 0);
        h_pump(&h);
        f = must(h_find(&h, MNP_MSG_FAULT, from));
        assert_int_equal(f->m.fault.code, MNP_FAULT_MOTOR);
        assert_int_equal(f->m.fault.fault_flags, FLAG(MNP_FAULT_INTERNAL) | FLAG(MNP_FAULT_MOTOR));
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT }, &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_INTERNAL));
        h_snap(&h, &s);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_INTERNAL));

        /* Nor does a new handshake, and nothing can be started. */
        (void) h_hello(&h, 1, 1, 100);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_INTERNAL));
        assert_int_equal(h_start(&h, 500, 100, 500, &d), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(d, FLAG(MNP_FAULT_INTERNAL));
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), MNP_NAK_FAULT_ACTIVE);
        h_advance(&h, 100 * H_MS);
        assert_int_equal(last_status(&h)->m.status.fault_flags, FLAG(MNP_FAULT_INTERNAL));

        /* Only a reset does. */
        h_heartbeats(&h, 0, 0);
        sim_pen_reboot(h.pen, h.now);
        h_advance(&h, 100 * H_MS);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.fault_flags, 0);
        done(&h);
}

static void test_duplicate_never_acted_again(void **state) {
        struct harness h;
        struct sim_pen_snapshot s1, s2;
        struct h_wire start, depth, clear, speed, stop, hello;
        uint16_t seq, r1 = 0, r2 = 0;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);

        /* START, STOP, then a late copy of the START: the recorded ACK, verbatim,
         * and the needles stay still (PROTOCOL.md 8.3, 8.5). */
        seq = h_send(&h, &(struct mnp_msg) {
                .type = MNP_MSG_START, .start = { .depth_um = 500, .speed_hz = 100, .lease_ms = 500 } });
        h_save(&h, &start, seq);
        assert_int_equal(answer_from(&h, seq, 0, &r1), 0);
        h_advance(&h, 20 * H_MS);
        assert_int_equal(h_simple(&h, MNP_MSG_STOP), 0);
        h_snap(&h, &s1);
        assert_int_equal(s1.state, MNP_STATE_IDLE);
        from = h.n_frames;
        h_resend_wire(&h, &start);
        assert_int_equal(answer_from(&h, start.seq, from, &r2), 0);
        assert_int_equal(r1, r2);
        assert_int_equal(h.n_frames, from + 1);
        h_advance(&h, 50 * H_MS);
        h_snap(&h, &s2);
        assert_int_equal(s2.state, MNP_STATE_IDLE);
        assert_false(s2.needles_moving);
        assert_int_equal(s2.lease_left_ms, 0);
        assert_int_equal(s2.commands_acted, s1.commands_acted);
        assert_int_equal(s2.duplicates_ignored, s1.duplicates_ignored + 1);

        /* A command acted on, then a fault: the copy still gets the recorded ACK,
         * not FAULT_ACTIVE. */
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 1000 });
        h_save(&h, &depth, seq);
        assert_int_equal(answer_from(&h, seq, 0, &r1), 0);
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_MOTOR), 0);
        h_advance(&h, 1 * H_MS);
        from = h.n_frames;
        h_resend_wire(&h, &depth);
        assert_int_equal(answer_from(&h, depth.seq, from, &r2), 0);
        assert_int_equal(r1, r2);

        /* A refused CLEAR_FAULT: its copy gets the same NAK after the cause is
         * gone, and is not tried again; a new CLEAR_FAULT is. */
        sim_pen_set_temperature(h.pen, h.now, 460);
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT });
        h_save(&h, &clear, seq);
        assert_int_equal(answer_from(&h, seq, 0, &r1), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(must(h_answer(&h, seq))->m.nak.detail, FLAG(MNP_FAULT_OVERHEAT));
        sim_pen_set_temperature(h.pen, h.now, 250);
        from = h.n_frames;
        h_resend_wire(&h, &clear);
        assert_int_equal(answer_from(&h, clear.seq, from, &r2), MNP_NAK_FAULT_ACTIVE);
        assert_int_equal(r1, r2);
        assert_int_equal(state_of(&h), MNP_STATE_FAULT);
        assert_int_equal(h_simple(&h, MNP_MSG_CLEAR_FAULT), 0);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* STOP is always NEW: the same STOP twice is acted on twice, with a fresh
         * ACK each time, and does not move the record. */
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 80 });
        h_save(&h, &speed, seq);
        assert_int_equal(answer_from(&h, seq, 0, &r1), 0);
        h_snap(&h, &s1);
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_STOP });
        h_save(&h, &stop, seq);
        from = h.n_frames;
        h_resend_wire(&h, &stop);
        assert_int_equal(h_count(&h, MNP_MSG_ACK, from), 1);
        assert_int_equal(must(h_find(&h, MNP_MSG_ACK, from))->m.ack.seq, stop.seq);
        assert_int_not_equal(must(h_find(&h, MNP_MSG_ACK, from))->f.seq, must(h_answer(&h, stop.seq))->f.seq);
        h_snap(&h, &s2);
        assert_int_equal(s2.commands_acted, s1.commands_acted + 2);
        assert_int_equal(s2.duplicates_ignored, s1.duplicates_ignored);
        from = h.n_frames;
        h_resend_wire(&h, &speed);
        assert_int_equal(answer_from(&h, speed.seq, from, &r2), 0);
        assert_int_equal(r1, r2);

        /* STALE: an older copy after a newer command gets nothing. */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_SPEED, .set_speed.speed_hz = 90 },
                                   NULL), 0);
        from = h.n_frames;
        h_resend_wire(&h, &speed);
        assert_null(h_answer_from(&h, speed.seq, from));
        h_snap(&h, &s1);
        assert_int_equal(s1.speed_set_hz, 90);

        /* Unknown and malformed frames are recorded with their NAK. */
        seq = h_send_raw(&h, 0x1e, NULL, 0);
        assert_int_equal(answer_from(&h, seq, 0, &r1), MNP_NAK_UNKNOWN_TYPE);
        from = h.n_frames;
        h_resend(&h);
        assert_int_equal(answer_from(&h, seq, from, &r2), MNP_NAK_UNKNOWN_TYPE);
        assert_int_equal(r1, r2);
        seq = h_send_raw(&h, MNP_MSG_SET_DEPTH, (const uint8_t[]) { 1, 2 }, 2);
        assert_int_equal(answer_from(&h, seq, 0, &r1), MNP_NAK_MALFORMED);
        from = h.n_frames;
        h_resend(&h);
        assert_int_equal(answer_from(&h, seq, from, &r2), MNP_NAK_MALFORMED);
        assert_int_equal(r1, r2);

        /* HELLO is always NEW: the same HELLO twice is answered twice with the
         * same boot id; and the handshake clears the record, so a copy of a
         * command from before it is NEW again. */
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 600 });
        h_save(&h, &depth, seq);
        assert_int_equal(answer_from(&h, seq, 0, &r1), 0);
        from = h.n_frames;
        seq = (uint16_t) h_hello(&h, 1, 1, 100);
        h_save(&h, &hello, seq);
        h_resend_wire(&h, &hello);
        assert_int_equal(h_count(&h, MNP_MSG_HELLO_REPLY, from), 2);
        {
                const struct h_frame *a = must(h_find(&h, MNP_MSG_HELLO_REPLY, from));
                const struct h_frame *b = must(h_find(&h, MNP_MSG_HELLO_REPLY, (size_t) (a - h.frames) + 1));

                assert_int_equal(a->m.hello_reply.hello_seq, hello.seq);
                assert_int_equal(b->m.hello_reply.hello_seq, hello.seq);
                assert_int_equal(a->m.hello_reply.boot_id, b->m.hello_reply.boot_id);
                assert_int_not_equal(a->f.seq, b->f.seq);
        }
        h_snap(&h, &s1);
        from = h.n_frames;
        h_resend_wire(&h, &depth);
        assert_int_equal(answer_from(&h, depth.seq, from, &r2), 0);
        assert_int_not_equal(r1, r2);
        h_snap(&h, &s2);
        assert_int_equal(s2.commands_acted, s1.commands_acted + 1);
        done(&h);
}

static void test_dedup_after_host_lost(void **state) {
        struct harness h;
        struct sim_pen_snapshot s;
        struct h_wire depth;
        uint16_t seq, r1 = 0, r2 = 0;
        size_t from;

        h_init(&h, NULL);
        h_advance(&h, 100 * H_MS);
        (void) h_hello(&h, 1, 1, 50);           /* host lost after 200 ms */
        seq = h_send(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 500 });
        h_save(&h, &depth, seq);
        assert_int_equal(answer_from(&h, seq, 0, &r1), 0);
        h_advance(&h, 250 * H_MS);
        h_snap(&h, &s);
        assert_false(s.host_connected);

        /* The session is over, but only a handshake clears the record (PROTOCOL.md
         * 8.5): a late copy of the command still gets its ACK, it was acted on. */
        from = h.n_frames;
        h_resend_wire(&h, &depth);
        assert_int_equal(answer_from(&h, depth.seq, from, &r2), 0);
        assert_int_equal(r1, r2);

        /* A new command: NOT_READY, not acted on. */
        assert_int_equal(h_command(&h, &(struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = 700 },
                                   NULL), MNP_NAK_NOT_READY);
        h_snap(&h, &s);
        assert_int_equal(s.depth_set_um, 500);

        /* Nothing else is sent without a session. */
        from = h.n_frames;
        h_advance(&h, 1000 * H_MS);
        assert_int_equal(h.n_frames, from);
        done(&h);
}

static void test_hello_refused(void **state) {
        static const uint8_t hb0[8] = { 1, 1, 0, 0, 0, 0, 0, 0 };
        static const uint8_t inverted[8] = { 2, 1, 0, 0, 0, 0, 100, 0 };
        struct harness h;
        struct sim_pen_snapshot s;
        uint16_t seq;
        uint64_t t;
        size_t from;

        h_init(&h, NULL);
        ready(&h);
        h_heartbeats(&h, 50 * H_MS, 500);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), 0);
        h_advance(&h, 100 * H_MS);

        /* A malformed HELLO (heartbeat 0, min above max) is NAKed and changes nothing. */
        seq = h_send_raw(&h, MNP_MSG_HELLO, hb0, sizeof hb0);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_MALFORMED);
        seq = h_send_raw(&h, MNP_MSG_HELLO, inverted, sizeof inverted);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_MALFORMED);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_RUNNING);
        assert_true(s.host_connected);
        assert_true(s.lease_left_ms > 0);

        /* A HELLO with no common version: the pen stops and goes to idle, the
         * session ends, and the NAK names the pen's highest version (PROTOCOL.md 9). */
        t = h.now;
        seq = (uint16_t) h_hello(&h, 2, 4, 100);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_UNSUPPORTED_VERSION);
        assert_int_equal(must(h_answer(&h, seq))->m.nak.detail, 1);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_IDLE);
        assert_int_equal(s.fault_flags, 0);
        assert_false(s.needles_moving);
        assert_int_equal(s.motion_changed_us, t);
        assert_int_equal(s.lease_left_ms, 0);
        assert_false(s.host_connected);

        /* No session: no STATUS, no HEARTBEAT, commands NOT_READY, the lease not renewed. */
        from = h.n_frames;
        h_advance(&h, 500 * H_MS);
        assert_int_equal(h.n_frames, from);
        h_heartbeats(&h, 0, 0);
        assert_int_equal(h_start(&h, 500, 100, 500, NULL), MNP_NAK_NOT_READY);
        assert_int_equal(state_of(&h), MNP_STATE_IDLE);

        /* A pen in fault stays in fault. */
        (void) must(h_connect(&h));
        assert_int_equal(sim_pen_inject_fault(h.pen, h.now, MNP_FAULT_MOTOR), 0);
        seq = (uint16_t) h_hello(&h, 2, 2, 100);
        assert_int_equal(answer_from(&h, seq, 0, NULL), MNP_NAK_UNSUPPORTED_VERSION);
        h_snap(&h, &s);
        assert_int_equal(s.state, MNP_STATE_FAULT);
        assert_int_equal(s.fault_flags, FLAG(MNP_FAULT_MOTOR));
        assert_false(s.host_connected);
        done(&h);
}

static void run_script(uint64_t seed, uint8_t *out, size_t size, size_t *ret_len) {
        struct sim_pen_config c;
        struct sim_pen *p;
        uint64_t now = 0;
        uint16_t seq = 0;
        size_t len = 0;

        sim_pen_config_default(&c);
        c.seed = seed;
        p = sim_pen_new(&c, now);
        assert_non_null(p);
        sim_pen_set_link_faults(p, &(struct sim_link_faults) {
                .drop = 0.2, .corrupt = 0.2, .duplicate = 0.2, .delay = 0.2, .delay_ms = 15 });
        assert_int_equal(sim_pen_insert_cartridge(p, now, "CART"), 0);

        for (now = 0; now < 3 * USEC_PER_SEC_TEST; now += 5 * H_MS) {
                struct mnp_msg m = { .type = MNP_MSG_HEARTBEAT, .heartbeat.lease_ms = 300 };
                uint8_t wire[MNP_MAX_WIRE_FRAME];
                ssize_t n;

                if (now % (200 * H_MS) == 150 * H_MS)
                        m = (struct mnp_msg) {
                                .type = MNP_MSG_HELLO, .hello = { .min_version = 1, .max_version = 1, .heartbeat_ms = 100 } };
                else if (now % (200 * H_MS) == 160 * H_MS)
                        m = (struct mnp_msg) {
                                .type = MNP_MSG_START, .start = { .depth_um = 500, .speed_hz = 100, .lease_ms = 300 } };
                else if (now % (50 * H_MS) != 0)
                        m.type = 0;

                if (m.type != 0) {
                        n = mnp_msg_encode(&m, seq++, wire, sizeof wire);
                        assert_true(n > 0);
                        sim_pen_receive(p, now, wire, (size_t) n);
                }
                sim_pen_advance(p, now);
                len += sim_pen_transmit(p, now, out + len, size - len);
        }
        *ret_len = len;
        sim_pen_free(p);
}

static void test_determinism(void **state) {
        static uint8_t a[1 << 17], b[1 << 17], c[1 << 17];
        size_t la, lb, lc;

        run_script(42, a, sizeof a, &la);
        run_script(42, b, sizeof b, &lb);
        run_script(43, c, sizeof c, &lc);
        assert_true(la > 1000);
        assert_true(la < sizeof a);
        assert_int_equal(la, lb);
        assert_memory_equal(a, b, la);
        assert_true(la != lc || memcmp(a, c, la) != 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config_default),
                cmocka_unit_test(test_config_invalid),
                cmocka_unit_test(test_boot),
                cmocka_unit_test(test_handshake),
                cmocka_unit_test(test_version_mismatch),
                cmocka_unit_test(test_before_handshake),
                cmocka_unit_test(test_start_stop),
                cmocka_unit_test(test_naks),
                cmocka_unit_test(test_naks_pen_ranges),
                cmocka_unit_test(test_lease),
                cmocka_unit_test(test_host_lost),
                cmocka_unit_test(test_duplicate_command),
                cmocka_unit_test(test_hello_while_running),
                cmocka_unit_test(test_injected_faults),
                cmocka_unit_test(test_overheat),
                cmocka_unit_test(test_battery),
                cmocka_unit_test(test_mains),
                cmocka_unit_test(test_actuator),
                cmocka_unit_test(test_actuator_timeout),
                cmocka_unit_test(test_motor_ramp),
                cmocka_unit_test(test_needling_time),
                cmocka_unit_test(test_cartridge),
                cmocka_unit_test(test_reboot),
                cmocka_unit_test(test_boot_ids_deterministic),
                cmocka_unit_test(test_stall),
                cmocka_unit_test(test_stall_brief),
                cmocka_unit_test(test_disconnect),
                cmocka_unit_test(test_faults_drop),
                cmocka_unit_test(test_faults_corrupt),
                cmocka_unit_test(test_faults_duplicate),
                cmocka_unit_test(test_faults_delay),
                cmocka_unit_test(test_chunked_input),
                cmocka_unit_test(test_status_fields),
                cmocka_unit_test(test_next_deadline),
                cmocka_unit_test(test_tx_queue_bounded),
                cmocka_unit_test(test_determinism),
                cmocka_unit_test(test_not_ready_any_reliable),
                cmocka_unit_test(test_unreliable_ignored),
                cmocka_unit_test(test_internal_fault),
                cmocka_unit_test(test_duplicate_never_acted_again),
                cmocka_unit_test(test_dedup_after_host_lost),
                cmocka_unit_test(test_hello_refused),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
