/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Discovery and the libusb / libserialport transports against mnsim:
 *
 *   mnsim --usb 1 --serial 1 --cartridge -- test-discovery
 *
 * Both pens are found with the right identity, opened, and answer HELLO
 * (round-trip times measured, median printed); unplugging each through the
 * control socket gives on_gone(-ENODEV) and "removed" with the same key;
 * plugging them back gives "added" again (hotplug after start) and they
 * answer again.  Also: -ENOBUFS for an oversized write, and transports freed
 * with transfers in flight (meant to run under AddressSanitizer as well).
 *
 * Every check that fails ends the program with a message and status 1.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-event.h>

#include "discovery.h"
#include <mnp/frame.h>
#include <mnp/message.h>
#include <mnp/pen-ids.h>
#include "transport.h"

#define USB_SERIAL      "MNU-0001"
#define TTY_SERIAL      "MNS-0001"
#define RTT_ROUNDS      200
#define TIMEOUT_USEC    (10 * 1000 * 1000ULL)

#define CHECK(cond, ...)                                                                \
        do {                                                                            \
                if (!(cond)) {                                                          \
                        fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
                        fprintf(stderr, __VA_ARGS__);                                   \
                        fputc('\n', stderr);                                            \
                        exit(EXIT_FAILURE);                                             \
                }                                                                       \
        } while (0)

struct pen {
        const char *name;               /* "usb" or "serial" */
        enum mnp_transport kind;
        const char *serial;

        struct mnd_pen_device dev;      /* as last added */
        unsigned added, removed;
        char removed_key[64];

        struct mnd_transport *t;
        bool gone;
        int gone_error;
        uint64_t bytes_in;

        struct mnp_decoder dec;
        uint16_t seq;                   /* of the last HELLO sent */
        bool replied;                   /* HELLO_REPLY for seq arrived */
        struct mnp_hello_reply reply;
};

static sd_event *event;
static struct mnd_discovery *disc;
static struct pen pens[2] = {
        { .name = "usb", .kind = MNP_TRANSPORT_USB, .serial = USB_SERIAL },
        { .name = "serial", .kind = MNP_TRANSPORT_SERIAL, .serial = TTY_SERIAL },
};
static unsigned unexpected_added;

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static struct pen *pen_for(const struct mnd_pen_device *dev) {
        for (unsigned i = 0; i < 2; i++)
                if (strcmp(dev->serial, pens[i].serial) == 0)
                        return &pens[i];
        return NULL;
}

static void on_added(struct mnd_discovery *d, const struct mnd_pen_device *dev, void *userdata) {
        struct pen *p = pen_for(dev);

        CHECK(d == disc, "wrong discovery object");
        CHECK(userdata == &pens, "wrong userdata");
        if (!p) {
                fprintf(stderr, "unexpected pen added: %s serial \"%s\"\n", dev->key, dev->serial);
                unexpected_added++;
                return;
        }
        p->dev = *dev;
        p->added++;
        printf("added:   %-12s kind=%s vid:pid=%04x:%04x bus/addr=%u/%u serial=%s product=\"%s\" tty=\"%s\"\n",
               dev->key, mnp_transport_name(dev->kind), dev->vid, dev->pid, dev->busnum, dev->devaddr,
               dev->serial, dev->product, dev->tty);
}

static void on_removed(struct mnd_discovery *d, const struct mnd_pen_device *dev, void *userdata) {
        struct pen *p = pen_for(dev);

        CHECK(p, "unknown pen removed: %s", dev->key);
        p->removed++;
        snprintf(p->removed_key, sizeof p->removed_key, "%s", dev->key);
        printf("removed: %-12s serial=%s\n", dev->key, dev->serial);
}

static void on_data(struct mnd_transport *t, const uint8_t *data, size_t len, void *userdata) {
        struct pen *p = userdata;

        CHECK(p->t == t, "data for the wrong transport");
        CHECK(!p->gone, "data after on_gone");
        p->bytes_in += len;
        while (len > 0) {
                struct mnp_frame f;
                struct mnp_msg m;
                size_t used = 0;
                int r;

                r = mnp_decoder_feed(&p->dec, data, len, &used, &f);
                CHECK(used <= len, "decoder consumed too much");
                data += used;
                len -= used;
                CHECK(r >= 0, "%s pen sent a bad frame: %s", p->name, strerror(-r));
                if (r == 0)
                        continue;
                if (f.type != MNP_MSG_HELLO_REPLY)
                        continue;       /* STATUS and the like */
                r = mnp_msg_unpack(f.type, f.payload, f.payload_len, &m);
                CHECK(r == 0, "bad HELLO_REPLY payload: %s", strerror(-r));
                if (m.hello_reply.hello_seq == p->seq) {
                        p->replied = true;
                        p->reply = m.hello_reply;
                }
        }
}

static void on_gone(struct mnd_transport *t, int error, void *userdata) {
        struct pen *p = userdata;

        CHECK(p->t == t, "gone for the wrong transport");
        CHECK(!p->gone, "on_gone called twice");
        p->gone = true;
        p->gone_error = error;
        printf("gone:    %s transport: %s\n", p->name, strerror(-error));
}

/* Runs the loop until *flag (any non-zero byte) or the deadline. */
static bool run_until(const bool *flag, uint64_t timeout_usec) {
        uint64_t deadline = now_usec() + timeout_usec;

        while (!*flag) {
                uint64_t now = now_usec();
                int r;

                if (now >= deadline)
                        return false;
                r = sd_event_run(event, deadline - now);
                CHECK(r >= 0, "sd_event_run: %s", strerror(-r));
        }
        return true;
}

static bool run_until_count(const unsigned *count, unsigned want, uint64_t timeout_usec) {
        uint64_t deadline = now_usec() + timeout_usec;

        while (*count < want) {
                uint64_t now = now_usec();
                int r;

                if (now >= deadline)
                        return false;
                r = sd_event_run(event, deadline - now);
                CHECK(r >= 0, "sd_event_run: %s", strerror(-r));
        }
        return true;
}

static void run_for(uint64_t usec) {
        uint64_t deadline = now_usec() + usec, now;

        while ((now = now_usec()) < deadline)
                CHECK(sd_event_run(event, deadline - now) >= 0, "sd_event_run");
}

static uint64_t cpu_usec(void) {
        struct rusage ru;

        CHECK(getrusage(RUSAGE_SELF, &ru) == 0, "getrusage: %m");
        return (uint64_t) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 +
               (uint64_t) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* No transport open: the loop and the libusb thread must sleep. */
static void check_idle(const char *when) {
        uint64_t c0 = cpu_usec(), t0 = now_usec(), cpu, wall;

        run_for(500 * 1000);
        cpu = cpu_usec() - c0;
        wall = now_usec() - t0;
        printf("idle:    %s: %llu us CPU in %llu us with discovery running and no transport open\n", when,
               (unsigned long long) cpu, (unsigned long long) wall);
        CHECK(cpu < wall / 20, "busy while idle: %llu us CPU in %llu us", (unsigned long long) cpu,
              (unsigned long long) wall);
}

static void send_hello(struct pen *p) {
        struct mnp_msg m = {
                .type = MNP_MSG_HELLO,
                .hello = {
                        .min_version = MNP_PROTOCOL_VERSION_MIN,
                        .max_version = MNP_PROTOCOL_VERSION_MAX,
                        .caps = 0,
                        .heartbeat_ms = 5000,
                },
        };
        uint8_t wire[MNP_MAX_WIRE_FRAME];
        ssize_t n;
        int r;

        p->seq++;
        p->replied = false;
        n = mnp_msg_encode(&m, p->seq, wire, sizeof wire);
        CHECK(n > 0, "mnp_msg_encode: %s", strerror((int) -n));
        r = mnd_transport_write(p->t, wire, (size_t) n);
        CHECK(r == 0, "%s write: %s", p->name, strerror(-r));
}

/* HELLO until the pen answers (it ignores frames while it boots). */
static void handshake(struct pen *p) {
        uint64_t deadline = now_usec() + TIMEOUT_USEC;

        for (;;) {
                send_hello(p);
                if (run_until(&p->replied, 200 * 1000))
                        break;
                CHECK(now_usec() < deadline, "%s pen never answered HELLO (%llu bytes in)", p->name,
                      (unsigned long long) p->bytes_in);
        }
        CHECK(strcmp(p->reply.serial, p->serial) == 0, "HELLO_REPLY serial %s, expected %s", p->reply.serial,
              p->serial);
        printf("hello:   %s pen answered: model=%s serial=%s firmware=%s version=%u\n", p->name, p->reply.model,
               p->reply.serial, p->reply.firmware, p->reply.version);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void measure_rtt(struct pen *p) {
        static uint64_t rtt[RTT_ROUNDS];

        for (unsigned i = 0; i < RTT_ROUNDS; i++) {
                uint64_t t0 = now_usec();

                send_hello(p);
                CHECK(run_until(&p->replied, 2 * 1000 * 1000), "%s pen: no HELLO_REPLY in round %u", p->name, i);
                rtt[i] = now_usec() - t0;
        }
        qsort(rtt, RTT_ROUNDS, sizeof rtt[0], cmp_u64);
        printf("rtt:     %s transport HELLO->HELLO_REPLY over %u rounds: median %llu us, min %llu us, "
               "p90 %llu us, max %llu us\n",
               p->name, RTT_ROUNDS, (unsigned long long) rtt[RTT_ROUNDS / 2], (unsigned long long) rtt[0],
               (unsigned long long) rtt[RTT_ROUNDS * 9 / 10], (unsigned long long) rtt[RTT_ROUNDS - 1]);
}

static void open_pen(struct pen *p) {
        int r;

        CHECK(!p->t, "already open");
        r = mnd_discovery_open(disc, &p->dev, event, &p->t);
        CHECK(r == 0, "opening the %s pen %s: %s", p->name, p->dev.key, strerror(-r));
        CHECK(p->t->ops->kind == p->kind, "transport kind %d, expected %d", p->t->ops->kind, p->kind);
        mnd_transport_set_callbacks(p->t, on_data, on_gone, p);
        p->gone = false;
        p->gone_error = 0;
        mnp_decoder_init(&p->dec);
}

static void close_pen(struct pen *p) {
        p->t = mnd_transport_free(p->t);
}

/* One command on mnsim's control socket; the reply must start with "ok". */
static void control(const char *fmt, ...) {
        const char *path = getenv("MNSIM_CONTROL");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        char line[256], reply[512];
        size_t got = 0;
        va_list ap;
        int fd, n;

        CHECK(path && *path, "MNSIM_CONTROL is not set: run this under mnsim");
        CHECK(strlen(path) < sizeof sa.sun_path, "control socket path too long");
        strcpy(sa.sun_path, path);

        va_start(ap, fmt);
        n = vsnprintf(line, sizeof line - 1, fmt, ap);
        va_end(ap);
        CHECK(n > 0 && (size_t) n < sizeof line - 1, "command too long");
        line[n++] = '\n';

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0, "socket: %m");
        CHECK(connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0, "connect %s: %m", path);
        CHECK(write(fd, line, (size_t) n) == n, "write to the control socket: %m");
        while (got < sizeof reply - 1) {
                ssize_t k = read(fd, reply + got, sizeof reply - 1 - got);

                CHECK(k >= 0, "read from the control socket: %m");
                if (k == 0)
                        break;
                got += (size_t) k;
                if (memchr(reply, '\n', got))
                        break;
        }
        close(fd);
        reply[got] = '\0';
        reply[strcspn(reply, "\n")] = '\0';
        line[n - 1] = '\0';
        CHECK(strncmp(reply, "ok", 2) == 0, "mnsim \"%s\" replied \"%s\"", line, reply);
}

static void check_identity(const struct pen *p) {
        const struct mnd_pen_device *d = &p->dev;

        CHECK(d->kind == p->kind, "%s pen reported as kind %s", p->name, mnp_transport_name(d->kind));
        CHECK(d->vid == MNP_USB_VID, "%s pen vid %04x", p->name, d->vid);
        CHECK(d->pid == (p->kind == MNP_TRANSPORT_USB ? MNP_USB_PID_VENDOR_PEN : MNP_USB_PID_SERIAL_PEN),
              "%s pen pid %04x", p->name, d->pid);
        CHECK(strncmp(d->key, "usb:", 4) == 0, "key \"%s\"", d->key);
        CHECK(d->busnum > 0 && d->devaddr > 0, "bus/address %u/%u", d->busnum, d->devaddr);
        CHECK(strcmp(d->product, p->kind == MNP_TRANSPORT_USB ? MNP_USB_PRODUCT_VENDOR : MNP_USB_PRODUCT_SERIAL) == 0,
              "%s pen product \"%s\"", p->name, d->product);
        if (p->kind == MNP_TRANSPORT_SERIAL)
                CHECK(strncmp(d->tty, "/dev/ttyACM", 11) == 0, "serial pen tty \"%s\"", d->tty);
        else
                CHECK(d->tty[0] == '\0', "usb pen has a tty \"%s\"", d->tty);
}

/* Unplug with the transport open: on_gone(-ENODEV), then "removed", same key. */
static void unplug(struct pen *p) {
        unsigned removed = p->removed;
        int r;

        control("unplug %s", p->serial);
        CHECK(run_until(&p->gone, TIMEOUT_USEC), "%s pen: no on_gone after unplug", p->name);
        CHECK(p->gone_error == -ENODEV, "%s pen: on_gone(%s), expected ENODEV", p->name, strerror(-p->gone_error));
        CHECK(run_until_count(&p->removed, removed + 1, TIMEOUT_USEC), "%s pen: not removed after unplug", p->name);
        CHECK(strcmp(p->removed_key, p->dev.key) == 0, "removed key %s, added as %s", p->removed_key, p->dev.key);
        r = mnd_transport_write(p->t, (const uint8_t *) "x", 1);
        CHECK(r == -ENODEV, "%s write after unplug: %d", p->name, r);
        r = mnd_discovery_open(disc, &p->dev, event, &(struct mnd_transport *) { NULL });
        CHECK(r == -ENODEV, "%s open after unplug: %d", p->name, r);
        close_pen(p);
}

/* Open, write a burst, free at once: transfers in flight or completing. */
static void churn(struct pen *p, unsigned rounds) {
        for (unsigned i = 0; i < rounds; i++) {
                open_pen(p);
                for (unsigned k = 0; k < 5; k++)
                        send_hello(p);
                if (i % 2)
                        run_for(1000);
                close_pen(p);
        }
}

int main(void) {
        struct mnd_id_table ids;
        uint8_t *big;
        int r;

        setvbuf(stdout, NULL, _IOLBF, 0);
        CHECK(getenv("MNSIM_CONTROL"), "not running under mnsim (MNSIM_CONTROL unset)");

        /* The table: built-ins plus additions. */
        mnd_id_table_init(&ids);
        CHECK(ids.n == 2, "built-in table has %u entries", ids.n);
        CHECK(mnd_id_table_find(&ids, MNP_USB_VID, MNP_USB_PID_SERIAL_PEN)->transport == MNP_TRANSPORT_SERIAL,
              "serial pen entry");
        CHECK(mnd_id_table_add(&ids, MNP_USB_VID, MNP_USB_PID_VENDOR_PEN, MNP_TRANSPORT_USB) == -EEXIST, "EEXIST");
        CHECK(mnd_id_table_add(&ids, 0x1209, 0x7777, MNP_TRANSPORT_USB) == 0, "add");
        CHECK(mnd_id_table_find(&ids, 0x1209, 0x7777) != NULL, "find the added entry");
        while (ids.n < MND_ID_TABLE_MAX)
                CHECK(mnd_id_table_add(&ids, 0x1209, (uint16_t) (0x8000 + ids.n), MNP_TRANSPORT_SERIAL) == 0, "fill");
        CHECK(mnd_id_table_add(&ids, 0x1209, 0x9999, MNP_TRANSPORT_USB) == -E2BIG, "E2BIG");

        r = sd_event_new(&event);
        CHECK(r >= 0, "sd_event_new: %s", strerror(-r));

        /* Coldplug: both pens, reported from the loop only. */
        mnd_id_table_init(&ids);
        r = mnd_discovery_new(event, &ids, on_added, on_removed, &pens, &disc);
        CHECK(r == 0, "mnd_discovery_new: %s", strerror(-r));
        CHECK(pens[0].added == 0 && pens[1].added == 0, "added called before the loop ran");
        CHECK(run_until_count(&pens[0].added, 1, TIMEOUT_USEC), "usb pen %s not discovered", USB_SERIAL);
        CHECK(run_until_count(&pens[1].added, 1, TIMEOUT_USEC), "serial pen %s not discovered", TTY_SERIAL);
        run_for(100 * 1000);
        CHECK(pens[0].added == 1 && pens[1].added == 1 && unexpected_added == 0, "pens reported more than once");
        for (unsigned i = 0; i < 2; i++)
                check_identity(&pens[i]);
        CHECK(strcmp(pens[0].dev.key, pens[1].dev.key) != 0, "both pens have the key %s", pens[0].dev.key);
        check_idle("after coldplug");

        /* Open both, HELLO -> HELLO_REPLY, round-trip times. */
        for (unsigned i = 0; i < 2; i++) {
                open_pen(&pens[i]);
                handshake(&pens[i]);
        }
        /* Both open at once: a second open of the vendor pen must fail (interface claimed). */
        r = mnd_discovery_open(disc, &pens[0].dev, event, &(struct mnd_transport *) { NULL });
        CHECK(r == -EBUSY, "second open of the usb pen: %d (%s)", r, strerror(-r));
        for (unsigned i = 0; i < 2; i++)
                measure_rtt(&pens[i]);
        {
                /* For information only: libusb polls umockdev's usbfs node, a
                 * plain file that is always ready, so it spins while a vendor
                 * pen is open (platform-notes.md); real usbfs does not. */
                uint64_t c0 = cpu_usec(), t0 = now_usec();

                run_for(500 * 1000);
                printf("busy:    %llu us CPU in %llu us with both transports open (umockdev's usbfs spin)\n",
                       (unsigned long long) (cpu_usec() - c0), (unsigned long long) (now_usec() - t0));
        }

        /* Bounded queues. */
        big = calloc(1, 1024 * 1024);
        CHECK(big, "calloc");
        for (unsigned i = 0; i < 2; i++) {
                r = mnd_transport_write(pens[i].t, big, 1024 * 1024);
                CHECK(r == -ENOBUFS, "%s: 1 MiB write gave %d, expected -ENOBUFS", pens[i].name, r);
        }
        free(big);

        /* Freeing with transfers in flight, many times. */
        for (unsigned i = 0; i < 2; i++) {
                close_pen(&pens[i]);
                churn(&pens[i], 20);
                open_pen(&pens[i]);
                handshake(&pens[i]);
        }

        /* Surprise removal of open pens. */
        for (unsigned i = 0; i < 2; i++)
                unplug(&pens[i]);

        /* Hotplug after start: the same pens come back. */
        for (unsigned i = 0; i < 2; i++) {
                unsigned added = pens[i].added;

                control("plug %s", pens[i].serial);
                CHECK(run_until_count(&pens[i].added, added + 1, TIMEOUT_USEC), "%s pen not added after plug",
                      pens[i].name);
                check_identity(&pens[i]);
                open_pen(&pens[i]);
                handshake(&pens[i]);
        }

        /* Unplugged while closed: only "removed". */
        close_pen(&pens[0]);
        control("unplug %s", pens[0].serial);
        CHECK(run_until_count(&pens[0].removed, 2, TIMEOUT_USEC), "usb pen not removed after the second unplug");

        close_pen(&pens[1]);
        check_idle("after closing everything");
        mnd_discovery_free(disc);
        sd_event_unref(event);
        printf("ok\n");
        return EXIT_SUCCESS;
}
