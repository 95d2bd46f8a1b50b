/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * hotplug-client: mnsim's control socket (errors, several clients, pipelined
 * commands) and cable pulls: a USB pen unplugged with a transfer pending
 * (LIBUSB_TRANSFER_NO_DEVICE, hotplug "left"), plugged back (hotplug
 * "arrived", usable again), and the same for the serial pen through
 * libserialport.  Run under mnsim --usb 1 --serial 1 --cartridge.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include <mnp/pen-ids.h>

static void expect_error(const char *cmd, const char *needle) {
        char *r = control("%s", cmd);

        CHECK(strncmp(r, "error: ", 7) == 0, "'%s' was accepted: %s", cmd, r);
        CHECK(strstr(r, needle), "'%s': reply '%s' does not mention '%s'", cmd, r, needle);
        printf("   %-32s -> %s\n", cmd, r);
        free(r);
}

static char *expect_ok(const char *cmd) {
        char *r = control("%s", cmd);

        CHECK(strncmp(r, "ok", 2) == 0, "'%s' failed: %s", cmd, r);
        return r;
}

static int raw_connect(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", getenv("MNSIM_CONTROL"));
        CHECK(fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0, "connect: %s", strerror(errno));
        return fd;
}

/* Reads n reply lines from fd into buf. */
static void read_lines(int fd, char *buf, size_t size, int n) {
        size_t got = 0;
        int lines = 0;

        while (lines < n) {
                ssize_t r = read(fd, buf + got, size - 1 - got);
                CHECK(r > 0, "control connection closed after %d of %d lines", lines, n);
                for (ssize_t i = 0; i < r; i++)
                        lines += buf[got + (size_t) i] == '\n';
                got += (size_t) r;
        }
        buf[got] = 0;
}

static void test_control(void) {
        char buf[8192], *r;
        int a, b;

        printf("== control socket\n");
        expect_error("frobnicate", "unknown command 'frobnicate'");
        expect_error("", "empty command");
        expect_error("status", "'status' takes 1 argument");
        expect_error("battery MNU-0001", "'battery' takes 2 arguments");
        expect_error("status NOPE-1", "no pen with serial 'NOPE-1'");
        expect_error("battery MNU-0001 abc", "bad battery percentage 'abc'");
        expect_error("battery MNU-0001 101", "from 0 to 100");
        expect_error("temperature MNU-0001 12.5", "bad temperature");
        expect_error("drop MNU-0001 2", "bad rate '2'");
        expect_error("corrupt MNU-0001 nan", "bad rate");
        expect_error("delay MNU-0001 0.1 -5", "bad delay '-5'");
        expect_error("stall MNU-0001 maybe", "bad stall setting 'maybe'");
        expect_error("fault MNU-0001 gremlins", "unknown fault 'gremlins'");
        expect_error("cartridge MNU-0001 CART-X", "already has a cartridge");
        expect_error("plug MNU-0001", "already plugged in");
        {
                /* An over-long line gets one error; the next line works. */
                static char longline[6002];
                memset(longline, 'x', 6000);
                longline[6000] = '\n';
                a = raw_connect();
                CHECK(write(a, longline, 6001) == 6001, "write");
                CHECK(write(a, "list\n", 5) == 5, "write");
                read_lines(a, buf, sizeof buf, 2);
                CHECK(strncmp(buf, "error: command line longer than", 31) == 0, "long line: %.80s", buf);
                CHECK(strncmp(strchr(buf, '\n') + 1, "ok ", 3) == 0, "after the long line: %s", buf);
                close(a);
                printf("   %-32s -> %.*s\n", "(6000-byte line)", (int) strcspn(buf, "\n"), buf);
        }

        free(expect_ok("remove-cartridge MNU-0001"));
        expect_error("remove-cartridge MNU-0001", "has no cartridge");
        free(expect_ok("cartridge MNU-0001 CART-NEW-7"));
        free(expect_ok("battery MNU-0001 80"));
        free(expect_ok("temperature MNU-0001 312"));
        free(expect_ok("drop MNS-0001 0"));
        free(expect_ok("delay MNS-0001 0 5"));
        r = expect_ok("status MNU-0001");
        CHECK(strcmp(status_field(r, "cartridge"), "CART-NEW-7") == 0, "%s", r);
        CHECK(strcmp(status_field(r, "battery"), "80") == 0, "%s", r);
        CHECK(strcmp(status_field(r, "temperature"), "312") == 0, "%s", r);
        free(r);
        r = expect_ok("list");
        CHECK(strstr(r, "MNU-0001 usb plugged") && strstr(r, "MNS-0001 serial plugged"), "%s", r);
        free(r);

        /* Two clients at once, one of them pipelining three commands. */
        a = raw_connect();
        b = raw_connect();
        CHECK(write(a, "list\nstatus MNU-0001\nbogus\n", 27) == 27, "write");
        CHECK(write(b, "status MNS-0001\n", 16) == 16, "write");
        read_lines(b, buf, sizeof buf, 1);
        CHECK(strncmp(buf, "ok serial=MNS-0001 ", 19) == 0, "client b: %s", buf);
        read_lines(a, buf, sizeof buf, 3);
        {
                char *l1 = buf, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
                CHECK(strncmp(l1, "ok MNU-0001", 11) == 0, "client a line 1: %s", l1);
                CHECK(strncmp(l2, "ok serial=MNU-0001 ", 19) == 0, "client a line 2: %s", l2);
                CHECK(strncmp(l3, "error: unknown command 'bogus'", 30) == 0, "client a line 3: %s", l3);
        }
        close(a);
        close(b);
        printf("   two clients, pipelined commands: ok\n");
}

static int arrived, left;

static int LIBUSB_CALL on_hotplug(libusb_context *ctx, libusb_device *dev, libusb_hotplug_event event, void *ud) {
        if (event == LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED)
                arrived++;
        else
                left++;
        return 0;
}

static void LIBUSB_CALL on_transfer(struct libusb_transfer *t) {
        *(int *) t->user_data = 1;
}

static void wait_events(libusb_context *ctx, int *flag, int want, unsigned ms) {
        uint64_t deadline = now_us() + (uint64_t) ms * 1000;

        while (*flag < want && now_us() < deadline) {
                struct timeval tv = { 0, 10000 };
                libusb_handle_events_timeout_completed(ctx, &tv, NULL);
        }
}

static void test_usb_unplug(libusb_context *ctx) {
        struct pen_conn c[2];
        struct libusb_transfer *t;
        unsigned char buf[512];
        int done = 0, r, sent = 0;
        libusb_hotplug_callback_handle cb;
        uint64_t t0;

        printf("== USB unplug and plug\n");
        CHECK(libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG), "libusb has no hotplug support here");
        r = libusb_hotplug_register_callback(ctx, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED | LIBUSB_HOTPLUG_EVENT_DEVICE_LEFT,
                                             0, MNP_USB_VID, MNP_USB_PID_VENDOR_PEN, LIBUSB_HOTPLUG_MATCH_ANY,
                                             on_hotplug, NULL, &cb);
        CHECK(r == 0, "libusb_hotplug_register_callback: %s", libusb_strerror(r));

        CHECK(find_usb_pens(ctx, c, 2) == 1, "expected one USB pen");
        CHECK(pen_handshake(&c[0], 3000) == 0, "no handshake");

        /* Silence the pen, so that an IN transfer stays pending. */
        free(expect_ok("stall MNU-0001 on"));
        pen_idle(&c[0], 150);
        c[0].heartbeats = false;

        t = libusb_alloc_transfer(0);
        libusb_fill_bulk_transfer(t, c[0].h, MNP_USB_EP_IN, buf, sizeof buf, on_transfer, &done, 0);
        r = libusb_submit_transfer(t);
        CHECK(r == 0, "libusb_submit_transfer: %s", libusb_strerror(r));
        wait_events(ctx, &done, 1, 100);
        CHECK(!done, "the IN transfer completed although the pen is stalled (status %d)", t->status);

        t0 = now_us();
        free(expect_ok("unplug MNU-0001"));
        wait_events(ctx, &done, 1, 2000);
        CHECK(done, "the pending IN transfer did not complete after the unplug");
        CHECK(t->status == LIBUSB_TRANSFER_NO_DEVICE, "pending transfer status %d, not LIBUSB_TRANSFER_NO_DEVICE",
              t->status);
        printf("   pending IN transfer: LIBUSB_TRANSFER_NO_DEVICE after %.1f ms\n", (double) (now_us() - t0) / 1000.0);
        libusb_free_transfer(t);

        wait_events(ctx, &left, 1, 2000);
        CHECK(left == 1, "no hotplug 'left' event");
        r = libusb_bulk_transfer(c[0].h, MNP_USB_EP_OUT, buf, 8, &sent, 500);
        CHECK(r == LIBUSB_ERROR_NO_DEVICE, "bulk OUT after unplug: %s, not LIBUSB_ERROR_NO_DEVICE", libusb_strerror(r));
        printf("   hotplug left; new transfers: %s\n", libusb_strerror(r));
        pen_close(&c[0]);
        CHECK(find_usb_pens(ctx, c, 2) == 0, "the unplugged pen is still listed");

        free(expect_ok("plug MNU-0001"));
        wait_events(ctx, &arrived, 1, 2000);
        CHECK(arrived == 1, "no hotplug 'arrived' event");
        CHECK(find_usb_pens(ctx, c, 2) == 1, "the pen did not come back");
        CHECK(strcmp(c[0].serial, "MNU-0001") == 0, "came back as %s", c[0].serial);
        free(expect_ok("stall MNU-0001 off"));
        CHECK(pen_handshake(&c[0], 3000) == 0, "no handshake after plugging back in");
        printf("   hotplug arrived; handshake again: boot id 0x%08x\n", c[0].hello.boot_id);
        pen_close(&c[0]);
        libusb_hotplug_deregister_callback(ctx, cb);
}

static void test_serial_unplug(void) {
        struct pen_conn c[2];
        struct pollfd pfd;
        char *r;
        int fd;

        printf("== serial unplug and plug\n");
        CHECK(find_serial_pens(c, 2) == 1, "expected one serial pen");
        CHECK(pen_handshake(&c[0], 3000) == 0, "no handshake");
        printf("   %s on %s\n", c[0].serial, sp_get_port_name(c[0].port));

        free(expect_ok("unplug MNS-0001"));
        CHECK(sp_get_port_handle(c[0].port, &fd) == SP_OK, "sp_get_port_handle");
        pfd = (struct pollfd) { .fd = fd, .events = POLLIN };
        CHECK(poll(&pfd, 1, 2000) == 1 && (pfd.revents & POLLHUP), "no hang-up on the tty (revents 0x%x)", pfd.revents);
        printf("   hang-up seen (revents 0x%x)\n", pfd.revents);
        pen_close(&c[0]);
        CHECK(find_serial_pens(c, 2) == 0, "the unplugged serial pen is still listed");
        r = expect_ok("list");
        CHECK(strstr(r, "MNS-0001 serial unplugged"), "%s", r);
        free(r);

        free(expect_ok("plug MNS-0001"));
        CHECK(find_serial_pens(c, 2) == 1, "the serial pen did not come back");
        CHECK(strcmp(c[0].serial, "MNS-0001") == 0, "came back as %s", c[0].serial);
        CHECK(pen_handshake(&c[0], 3000) == 0, "no handshake after plugging back in");
        printf("   back on %s; handshake again\n", sp_get_port_name(c[0].port));
        pen_close(&c[0]);
}

int main(int argc, char **argv) {
        libusb_context *ctx;
        int r;

        r = libusb_init(&ctx);
        CHECK(r == 0, "libusb_init: %s", libusb_strerror(r));

        test_control();
        test_usb_unplug(ctx);
        test_serial_unplug();

        libusb_exit(ctx);
        printf("PASS\n");
        return 0;
}
