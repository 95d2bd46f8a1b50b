/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pen-client: finds every pen the way a real host program would (libusb by
 * VID/PID, libserialport by USB VID/PID), then drives each one through the
 * protocol: handshake, SET_DEPTH, START with a lease kept alive by
 * heartbeats, STOP; then a reboot (new boot id) and an expiring lease.
 * Reboots go through mnsim's control socket ($MNSIM_CONTROL).
 *
 * Usage: pen-client [--usb N] [--serial N]   (the pens to expect; default 1 and 1)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include <mnp/pen-ids.h>

#define MAX_PENS 16

static void run_pen(struct pen_conn *c) {
        struct mnp_msg m;
        uint32_t boot1, depth, step;
        uint16_t speed;
        uint16_t last_speed = 0;
        bool saw_running = false;
        uint64_t t0, deadline;
        char *reply;
        int r;

        printf("== %s (%s)\n", c->serial, c->usb ? "usb" : "serial");

        /* Handshake. */
        CHECK(pen_handshake(c, 3000) == 0, "%s: no HELLO_REPLY", c->serial);
        CHECK(strcmp(c->hello.serial, c->serial) == 0, "HELLO_REPLY serial '%s' differs from the USB serial '%s'",
              c->hello.serial, c->serial);
        CHECK(c->hello.depth_step_um > 0 && c->hello.depth_min_um < c->hello.depth_max_um,
              "bad depth range %u..%u step %u", c->hello.depth_min_um, c->hello.depth_max_um, c->hello.depth_step_um);
        CHECK(c->hello.speed_min_hz > 0 && c->hello.speed_min_hz <= c->hello.speed_max_hz, "bad speed range %u..%u",
              c->hello.speed_min_hz, c->hello.speed_max_hz);
        CHECK(c->hello.max_lease_ms >= 300, "max lease %u ms is too short for this test", c->hello.max_lease_ms);
        CHECK(c->hello.boot_id != 0, "boot id 0");
        boot1 = c->hello.boot_id;
        printf("   handshake ok: model %s firmware %s boot id 0x%08x\n", c->hello.model, c->hello.firmware, boot1);

        /* Round trip: a reliable command and its ACK. */
        step = c->hello.depth_step_um;
        depth = c->hello.depth_min_um + 10 * step;
        if (depth > c->hello.depth_max_um)
                depth = c->hello.depth_max_um;
        speed = (uint16_t) ((c->hello.speed_min_hz + c->hello.speed_max_hz) / 2);
        t0 = now_us();
        for (int i = 0; i < 50; i++) {
                m = (struct mnp_msg) { .type = MNP_MSG_SET_DEPTH, .set_depth.depth_um = depth };
                r = pen_command(c, &m, 1000);
                CHECK(r == 0, "SET_DEPTH %u: %s", depth, r < 0 ? "no answer" : mnp_nak_reason_name((uint8_t) r));
        }
        printf("   SET_DEPTH -> ACK round trip: %.0f us (mean of 50)\n", (double) (now_us() - t0) / 50.0);

        /* START with a lease, kept alive by heartbeats. */
        c->lease_ms = 300;
        m = (struct mnp_msg) { .type = MNP_MSG_START, .start = { .depth_um = depth, .speed_hz = speed, .lease_ms = 300 } };
        r = pen_command(c, &m, 1000);
        CHECK(r == 0, "START: %s", r < 0 ? "no answer" : mnp_nak_reason_name((uint8_t) r));
        reply = control("status %s", c->serial);
        printf("   just after START: speed_actual=%s of %u Hz\n", status_field(reply, "speed_actual"), speed);
        free(reply);

        deadline = now_us() + 300000;
        while (pen_next(c, deadline, &m, NULL, NULL) == 1) {
                if (m.type != MNP_MSG_STATUS)
                        continue;
                CHECK(m.status.state == MNP_STATE_RUNNING, "state %s while the lease is renewed (faults 0x%x)",
                      mnp_state_name(m.status.state), m.status.fault_flags);
                CHECK(m.status.speed_actual_hz >= last_speed, "speed fell from %u to %u Hz while running",
                      last_speed, m.status.speed_actual_hz);
                saw_running = true;
                last_speed = m.status.speed_actual_hz;
        }
        CHECK(saw_running, "no STATUS in 300 ms of running");
        CHECK(last_speed == speed, "speed ramped to %u Hz, not %u Hz", last_speed, speed);
        CHECK(c->status.depth_set_um == depth, "depth set %u, not %u", c->status.depth_set_um, depth);
        printf("   running: speed ramped up to %u Hz, depth %u/%u um\n", last_speed, c->status.depth_actual_um, depth);

        /* STOP. */
        c->lease_ms = 0;
        m = (struct mnp_msg) { .type = MNP_MSG_STOP };
        r = pen_command(c, &m, 1000);
        CHECK(r == 0, "STOP: %s", r < 0 ? "no answer" : mnp_nak_reason_name((uint8_t) r));
        CHECK(pen_wait_state(c, MNP_STATE_IDLE, 1000) == 0, "no idle STATUS after STOP");
        CHECK(c->status.speed_actual_hz == 0, "still %u Hz after STOP", c->status.speed_actual_hz);
        printf("   stopped: idle\n");

        /* Reboot through the control socket: a new boot id. */
        reply = control("reboot %s", c->serial);
        CHECK(strncmp(reply, "ok", 2) == 0, "reboot: %s", reply);
        free(reply);
        CHECK(pen_handshake(c, 3000) == 0, "%s: no HELLO_REPLY after reboot", c->serial);
        CHECK(c->hello.boot_id != boot1, "boot id 0x%08x unchanged by reboot", boot1);
        printf("   rebooted: boot id 0x%08x -> 0x%08x\n", boot1, c->hello.boot_id);

        /* START and then silence: the lease runs out, the pen stops itself. */
        m = (struct mnp_msg) { .type = MNP_MSG_START, .start = { .depth_um = depth, .speed_hz = speed, .lease_ms = 150 } };
        r = pen_command(c, &m, 1000);
        CHECK(r == 0, "START: %s", r < 0 ? "no answer" : mnp_nak_reason_name((uint8_t) r));
        t0 = now_us();
        c->heartbeats = false;
        c->faults_seen = 0;
        deadline = now_us() + 1000000;
        while (!(c->faults_seen & MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED)) && pen_next(c, deadline, &m, NULL, NULL) == 1)
                ;
        CHECK(c->faults_seen & MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED), "no lease-expired FAULT within 1 s");
        printf("   lease expired after %.0f ms\n", (double) (now_us() - t0) / 1000.0);
        c->heartbeats = true;
        CHECK(pen_wait_state(c, MNP_STATE_FAULT, 1000) == 0, "no fault STATUS after the lease expired");
        CHECK(c->status.speed_actual_hz == 0, "needles at %u Hz after the lease expired", c->status.speed_actual_hz);
        CHECK(c->status.fault_flags & MNP_FAULT_FLAG(MNP_FAULT_LEASE_EXPIRED), "fault flags 0x%x", c->status.fault_flags);
        reply = control("status %s", c->serial);
        CHECK(strcmp(status_field(reply, "needles_moving"), "0") == 0 &&
              strstr(status_field(reply, "faults"), "lease-expired"), "mnsim status: %s", reply);
        free(reply);

        m = (struct mnp_msg) { .type = MNP_MSG_CLEAR_FAULT };
        r = pen_command(c, &m, 1000);
        CHECK(r == 0, "CLEAR_FAULT: %s", r < 0 ? "no answer" : mnp_nak_reason_name((uint8_t) r));
        CHECK(pen_wait_state(c, MNP_STATE_IDLE, 1000) == 0, "not idle after CLEAR_FAULT");
        printf("   fault cleared: idle\n");
}

int main(int argc, char **argv) {
        struct pen_conn pens[MAX_PENS];
        size_t n_usb, n_serial;
        long want_usb = 1, want_serial = 1;
        libusb_context *ctx;
        int r;

        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--usb") == 0 && i + 1 < argc)
                        want_usb = strtol(argv[++i], NULL, 10);
                else if (strcmp(argv[i], "--serial") == 0 && i + 1 < argc)
                        want_serial = strtol(argv[++i], NULL, 10);
                else {
                        fprintf(stderr, "Usage: pen-client [--usb N] [--serial N]\n");
                        return 2;
                }
        }

        r = libusb_init(&ctx);
        CHECK(r == 0, "libusb_init: %s", libusb_strerror(r));

        n_usb = find_usb_pens(ctx, pens, MAX_PENS);
        n_serial = find_serial_pens(pens + n_usb, MAX_PENS - n_usb);
        printf("found %zu USB and %zu serial pen(s)\n", n_usb, n_serial);
        CHECK((long) n_usb == want_usb, "expected %ld USB pen(s), found %zu", want_usb, n_usb);
        CHECK((long) n_serial == want_serial, "expected %ld serial pen(s), found %zu", want_serial, n_serial);
        for (size_t i = 0; i < n_usb + n_serial; i++)
                for (size_t j = 0; j < i; j++)
                        CHECK(strcmp(pens[i].serial, pens[j].serial) != 0, "two pens with serial %s", pens[i].serial);

        for (size_t i = 0; i < n_usb + n_serial; i++)
                run_pen(&pens[i]);

        for (size_t i = 0; i < n_usb + n_serial; i++)
                pen_close(&pens[i]);
        libusb_exit(ctx);
        printf("PASS\n");
        return 0;
}
