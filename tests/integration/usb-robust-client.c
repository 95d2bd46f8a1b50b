/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * usb-robust-client: what a USB host does to a device that a daemon must
 * survive, with plain libusb.  Run under mnsim --usb 1.
 *
 *   usb-robust-client kill-claim [ROUNDS]
 *       A child process opens the pen, claims its interface, leaves an IN
 *       transfer pending and handles libusb events (as mnd's USB thread
 *       does).  The parent's claim on its own open handle fails with
 *       LIBUSB_ERROR_BUSY while the child lives; then the child is SIGKILLed
 *       (at a different point of its event loop each round).  The kernel
 *       releases a claim when the process's descriptors close, so the
 *       parent's claim right after must succeed (no retry), and the pen must
 *       answer the next session.
 *
 *   usb-robust-client replug [ROUNDS]
 *       With a hotplug callback registered, the pen is unplugged and plugged
 *       back through the control socket ROUNDS times.  On each arrival the
 *       client opens the pen at once, without waiting for mnsim's reply to
 *       the plug command (as a daemon would), claims it and reads its serial
 *       number; it must stay alive throughout.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include <mnp/pen-ids.h>

/* ---- kill-claim ---- */

static void LIBUSB_CALL on_child_transfer(struct libusb_transfer *t) {
        /* Keep one IN transfer pending for as long as the device lets us. */
        if (t->status == LIBUSB_TRANSFER_COMPLETED || t->status == LIBUSB_TRANSFER_TIMED_OUT)
                (void) libusb_submit_transfer(t);
}

static void __attribute__((noreturn)) claim_and_wait(int ready_fd) {
        static unsigned char buf[512];
        libusb_context *ctx;
        struct pen_conn c[2];
        struct libusb_transfer *t;
        int r;

        r = libusb_init(&ctx);
        CHECK(r == 0, "child: libusb_init: %s", libusb_strerror(r));
        CHECK(find_usb_pens(ctx, c, 2) == 1, "child: expected one USB pen");

        t = libusb_alloc_transfer(0);
        CHECK(t, "child: libusb_alloc_transfer");
        libusb_fill_bulk_transfer(t, c[0].h, MNP_USB_EP_IN, buf, sizeof buf, on_child_transfer, NULL, 0);
        r = libusb_submit_transfer(t);
        CHECK(r == 0, "child: libusb_submit_transfer: %s", libusb_strerror(r));

        CHECK(write(ready_fd, "R", 1) == 1, "child: write: %s", strerror(errno));
        close(ready_fd);
        for (;;)
                libusb_handle_events(ctx);
}

/* Opens the USB pen without claiming it. */
static libusb_device_handle *open_pen(libusb_context *ctx) {
        libusb_device_handle *h = NULL;
        libusb_device **list;
        ssize_t n = libusb_get_device_list(ctx, &list);

        CHECK(n >= 0, "libusb_get_device_list: %s", libusb_strerror((int) n));
        for (ssize_t i = 0; i < n && !h; i++) {
                struct libusb_device_descriptor dd;
                int r;

                r = libusb_get_device_descriptor(list[i], &dd);
                CHECK(r == 0, "libusb_get_device_descriptor: %s", libusb_strerror(r));
                if (dd.idVendor != MNP_USB_VID || dd.idProduct != MNP_USB_PID_VENDOR_PEN)
                        continue;
                r = libusb_open(list[i], &h);
                CHECK(r == 0, "libusb_open: %s", libusb_strerror(r));
        }
        libusb_free_device_list(list, 1);
        CHECK(h, "no USB pen");
        return h;
}

static void kill_claim(unsigned rounds) {
        for (unsigned i = 0; i < rounds; i++) {
                struct pen_conn c = { .usb = true }, pens[2];
                libusb_context *ctx;
                int fds[2], status, r;
                uint64_t t0;
                char ready;
                pid_t pid;

                CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
                fflush(NULL);
                pid = fork();
                CHECK(pid >= 0, "fork: %s", strerror(errno));
                if (pid == 0) {
                        close(fds[0]);
                        claim_and_wait(fds[1]);
                }
                close(fds[1]);
                CHECK(read(fds[0], &ready, 1) == 1, "round %u: the child died before it claimed the pen", i + 1);
                close(fds[0]);

                /* While the child lives, the interface is its own. */
                r = libusb_init(&ctx);
                CHECK(r == 0, "libusb_init: %s", libusb_strerror(r));
                c.h = open_pen(ctx);
                t0 = now_us();
                r = libusb_claim_interface(c.h, MNP_USB_INTERFACE);
                CHECK(r == LIBUSB_ERROR_BUSY, "round %u: claiming the child's interface: %s, not busy", i + 1,
                      libusb_strerror(r));
                if (i == 0)
                        printf("   claimed by a live process: %s after %.1f ms\n", libusb_strerror(r),
                               (double) (now_us() - t0) / 1000.0);

                /* Kill it at different points of its event loop. */
                usleep(1000u * (i % 10) * 3u);
                CHECK(kill(pid, SIGKILL) == 0, "kill: %s", strerror(errno));
                CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
                CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status 0x%x", status);

                /* As on a real kernel: the claim went with the process, at once
                 * (the same open handle, no retry). */
                t0 = now_us();
                r = libusb_claim_interface(c.h, MNP_USB_INTERFACE);
                CHECK(r == 0, "round %u: claim after the holder was SIGKILLed: %s", i + 1, libusb_strerror(r));
                printf("   round %u: the SIGKILLed child's claim was released (claim took %.1f ms)", i + 1,
                       (double) (now_us() - t0) / 1000.0);
                pen_close(&c);

                /* And the pen talks to the next session. */
                CHECK(find_usb_pens(ctx, pens, 2) == 1, "round %u: expected one USB pen", i + 1);
                CHECK(pen_handshake(&pens[0], 3000) == 0, "round %u: no handshake after the claim", i + 1);
                printf("; handshake ok\n");
                pen_close(&pens[0]);
                libusb_exit(ctx);
        }
}

/* ---- replug ---- */

static int arrived, left;
static libusb_device *arrived_dev;

static int LIBUSB_CALL on_hotplug(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event, void *ud) {
        if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED) {
                arrived++;
                if (arrived_dev)
                        libusb_unref_device(arrived_dev);
                arrived_dev = libusb_ref_device(dev);
        } else
                left++;
        return 0;
}

static void wait_events(libusb_context *ctx, int *counter, int want, unsigned ms) {
        uint64_t deadline = now_us() + (uint64_t) ms * 1000;

        while (*counter < want && now_us() < deadline) {
                struct timeval tv = { 0, 10000 };
                libusb_handle_events_timeout_completed(ctx, &tv, NULL);
        }
}

static char *expect_ok(const char *cmd) {
        char *r = control("%s", cmd);

        CHECK(strncmp(r, "ok", 2) == 0, "'%s' failed: %s", cmd, r);
        return r;
}

/* Sends a control command without waiting for its reply: mnsim may still be
 * busy with it while the client reacts to what it caused, as any program
 * would that does not know the plugging is simulated. */
static int control_send(const char *cmd) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        const char *path = getenv("MNSIM_CONTROL");
        size_t len = strlen(cmd);
        int fd;

        CHECK(path && strlen(path) < sizeof sa.sun_path, "MNSIM_CONTROL is not set or too long");
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0, "socket: %s", strerror(errno));
        CHECK(connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0, "connect %s: %s", path, strerror(errno));
        CHECK(write(fd, cmd, len) == (ssize_t) len && write(fd, "\n", 1) == 1, "write: %s", strerror(errno));
        return fd;
}

/* The reply to control_send(): must be "ok ...". */
static void control_expect_ok(int fd, const char *cmd) {
        char reply[512];
        size_t got = 0;

        while (got < sizeof reply - 1 && !memchr(reply, '\n', got)) {
                ssize_t n = read(fd, reply + got, sizeof reply - 1 - got);
                CHECK(n > 0, "'%s': no reply from mnsim", cmd);
                got += (size_t) n;
        }
        reply[got] = 0;
        CHECK(strncmp(reply, "ok", 2) == 0, "'%s' failed: %s", cmd, reply);
        close(fd);
}

static void replug(unsigned rounds) {
        libusb_hotplug_callback_handle cb;
        libusb_context *ctx;
        uint64_t t0 = now_us();
        int r;

        r = libusb_init(&ctx);
        CHECK(r == 0, "libusb_init: %s", libusb_strerror(r));
        CHECK(libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG), "libusb has no hotplug support here");
        r = libusb_hotplug_register_callback(ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
                                             0, MNP_USB_VID, MNP_USB_PID_VENDOR_PEN, LIBUSB_HOTPLUG_MATCH_ANY,
                                             on_hotplug, NULL, &cb);
        CHECK(r == 0, "libusb_hotplug_register_callback: %s", libusb_strerror(r));

        for (unsigned i = 0; i < rounds; i++) {
                struct libusb_device_descriptor dd;
                unsigned char serial[64];
                libusb_device_handle *h;
                int fd;

                free(expect_ok("unplug MNU-0001"));
                wait_events(ctx, &left, (int) i + 1, 2000);
                CHECK(left == (int) i + 1, "round %u: no hotplug 'left' event", i + 1);

                /* Open on arrival, whether or not mnsim has answered yet. */
                fd = control_send("plug MNU-0001");
                wait_events(ctx, &arrived, (int) i + 1, 2000);
                CHECK(arrived == (int) i + 1, "round %u: no hotplug 'arrived' event", i + 1);

                r = libusb_open(arrived_dev, &h);
                CHECK(r == 0, "round %u: libusb_open: %s", i + 1, libusb_strerror(r));
                r = libusb_claim_interface(h, MNP_USB_INTERFACE);
                CHECK(r == 0, "round %u: libusb_claim_interface: %s", i + 1, libusb_strerror(r));
                /* A control transfer: the node must talk to the pen's usbfs emulation. */
                r = libusb_get_device_descriptor(arrived_dev, &dd);
                CHECK(r == 0, "libusb_get_device_descriptor: %s", libusb_strerror(r));
                r = libusb_get_string_descriptor_ascii(h, dd.iSerialNumber, serial, sizeof serial);
                CHECK(r > 0, "round %u: reading the serial number: %s", i + 1, libusb_strerror(r));
                CHECK(strcmp((char *) serial, "MNU-0001") == 0, "round %u: serial number '%s'", i + 1, serial);
                libusb_release_interface(h, MNP_USB_INTERFACE);
                libusb_close(h);
                control_expect_ok(fd, "plug MNU-0001");
        }
        printf("   %u unplug/plug rounds, each arrival opened and claimed (%.0f ms)\n", rounds,
               (double) (now_us() - t0) / 1000.0);

        if (arrived_dev)
                libusb_unref_device(arrived_dev);
        arrived_dev = NULL;
        libusb_hotplug_deregister_callback(ctx, cb);
        libusb_exit(ctx);
}

int main(int argc, char **argv) {
        unsigned rounds;

        if (argc < 2 || (strcmp(argv[1], "kill-claim") != 0 && strcmp(argv[1], "replug") != 0)) {
                fprintf(stderr, "Usage: usb-robust-client kill-claim|replug [ROUNDS]\n");
                return 2;
        }
        rounds = argc > 2 ? (unsigned) strtoul(argv[2], NULL, 10) : (strcmp(argv[1], "replug") == 0 ? 100u : 10u);

        printf("== %s, %u rounds\n", argv[1], rounds);
        if (strcmp(argv[1], "kill-claim") == 0)
                kill_claim(rounds);
        else
                replug(rounds);
        printf("PASS\n");
        return 0;
}
