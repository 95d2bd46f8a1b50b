/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "usb-thread.h"

/* The thread wakes up at least this often even with nothing to do; it is
 * normally woken by libusb (events) or libusb_interrupt_event_handler(). */
#define USB_THREAD_IDLE_SEC 60

struct mnd_usb_thread {
        libusb_context *ctx;
        sd_event *event;
        sd_event_source *source;
        int efd;                        /* EFD_SEMAPHORE: one count per queued item */

        pthread_t thread;
        bool running;
        int stop;                       /* libusb's "completed" flag; atomic */

        pthread_mutex_t lock;
        pthread_cond_t cond;            /* a discarded transfer was given back */
        struct mnd_usb_item *head, *tail;  /* guarded by lock */
};

void mnd_transport_debug(const char *fmt, ...) {
        static int enabled = -1;        /* any thread may get here first */
        int e = __atomic_load_n(&enabled, __ATOMIC_RELAXED);
        va_list ap;

        if (e < 0) {
                e = !!getenv("MND_DEBUG_TRANSPORT");
                __atomic_store_n(&enabled, e, __ATOMIC_RELAXED);
        }
        if (!e)
                return;
        va_start(ap, fmt);
        fputs("mnd-transport: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}

int mnd_errno_from_libusb(int r) {
        switch (r) {
        case LIBUSB_SUCCESS:
                return 0;
        case LIBUSB_ERROR_IO:
                return -EIO;
        case LIBUSB_ERROR_INVALID_PARAM:
                return -EINVAL;
        case LIBUSB_ERROR_ACCESS:
                return -EACCES;
        case LIBUSB_ERROR_NO_DEVICE:
                return -ENODEV;
        case LIBUSB_ERROR_NOT_FOUND:
                return -ENOENT;
        case LIBUSB_ERROR_BUSY:
                return -EBUSY;
        case LIBUSB_ERROR_TIMEOUT:
                return -ETIMEDOUT;
        case LIBUSB_ERROR_OVERFLOW:
                return -EOVERFLOW;
        case LIBUSB_ERROR_PIPE:
                return -EPIPE;
        case LIBUSB_ERROR_INTERRUPTED:
                return -EINTR;
        case LIBUSB_ERROR_NO_MEM:
                return -ENOMEM;
        case LIBUSB_ERROR_NOT_SUPPORTED:
                return -EOPNOTSUPP;
        default:
                return -EIO;
        }
}

/* Lock held. */
static void queue_append(struct mnd_usb_thread *u, struct mnd_usb_item *item) {
        item->next = NULL;
        item->prev = u->tail;
        if (u->tail)
                u->tail->next = item;
        else
                u->head = item;
        u->tail = item;
        item->queued = true;
}

/* Lock held. */
static void queue_remove(struct mnd_usb_thread *u, struct mnd_usb_item *item) {
        if (item->prev)
                item->prev->next = item->next;
        else
                u->head = item->next;
        if (item->next)
                item->next->prev = item->prev;
        else
                u->tail = item->prev;
        item->prev = item->next = NULL;
        item->queued = false;
}

static void wake_loop(struct mnd_usb_thread *u) {
        uint64_t one = 1;

        /* Cannot fail short of a counter overflow (2^64 - 2 items). */
        if (write(u->efd, &one, sizeof one) < 0)
                mnd_transport_debug("cannot signal the eventfd: %m");
}

void mnd_usb_thread_post(struct mnd_usb_thread *u, struct mnd_usb_item *item) {
        bool wake = false;

        pthread_mutex_lock(&u->lock);
        if (!item->queued) {
                queue_append(u, item);
                wake = true;
        }
        pthread_mutex_unlock(&u->lock);
        if (wake)
                wake_loop(u);
}

void mnd_usb_thread_unpost(struct mnd_usb_thread *u, struct mnd_usb_item *item) {
        pthread_mutex_lock(&u->lock);
        if (item->queued)
                queue_remove(u, item);
        pthread_mutex_unlock(&u->lock);
        /* The eventfd keeps its count: the loop then wakes once for nothing. */
}

/* Loop thread.  One item per dispatch: an item's handler may free anything,
 * even u itself, so nothing is touched after it returns. */
static int on_eventfd(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct mnd_usb_thread *u = userdata;
        struct mnd_usb_item *item;
        uint64_t v;

        /* Takes one count; EAGAIN: the item was unposted, nothing to do.  Never
         * return an error: sd-event would disable the source for good. */
        if (read(fd, &v, sizeof v) < 0)
                return 0;

        pthread_mutex_lock(&u->lock);
        item = u->head;
        if (item)
                queue_remove(u, item);
        pthread_mutex_unlock(&u->lock);

        if (item)
                item->dispatch(item);
        return 0;
}

static void *thread_main(void *userdata) {
        struct mnd_usb_thread *u = userdata;

        while (!__atomic_load_n(&u->stop, __ATOMIC_ACQUIRE)) {
                struct timeval tv = { .tv_sec = USB_THREAD_IDLE_SEC };
                int r;

                r = libusb_handle_events_timeout_completed(u->ctx, &tv, &u->stop);
                if (r < 0 && r != LIBUSB_ERROR_INTERRUPTED) {
                        /* Should not happen; do not spin if it does. */
                        mnd_transport_debug("libusb event handling failed: %s", libusb_error_name(r));
                        nanosleep(&(struct timespec) { .tv_nsec = 10 * 1000 * 1000 }, NULL);
                }
        }
        return NULL;
}

int mnd_usb_thread_new(sd_event *event, struct mnd_usb_thread **ret) {
        struct mnd_usb_thread *u;
        pthread_condattr_t ca;
        int r;

        if (!event || !ret)
                return -EINVAL;

        u = calloc(1, sizeof *u);
        if (!u)
                return -ENOMEM;
        u->efd = -1;
        pthread_mutex_init(&u->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&u->cond, &ca);
        pthread_condattr_destroy(&ca);
        u->event = sd_event_ref(event);

        r = libusb_init(&u->ctx);
        if (r < 0) {
                u->ctx = NULL;
                r = mnd_errno_from_libusb(r);
                goto fail;
        }

        u->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE);
        if (u->efd < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(event, &u->source, u->efd, EPOLLIN, on_eventfd, u);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_description(u->source, "mnd-usb-thread");

        *ret = u;
        return 0;

fail:
        mnd_usb_thread_free(u, NULL);
        return r;
}

int mnd_usb_thread_start(struct mnd_usb_thread *u) {
        sigset_t all, old;
        int r;

        if (u->running)
                return -EALREADY;

        /* The loop handles signals (signalfd): none may land on this thread. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        r = pthread_create(&u->thread, NULL, thread_main, u);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0)
                return -r;
        (void) pthread_setname_np(u->thread, "mnd-libusb");
        u->running = true;
        return 0;
}

struct mnd_usb_thread *mnd_usb_thread_free(struct mnd_usb_thread *u, mnd_usb_item_fn drop) {
        struct mnd_usb_item *item;

        if (!u)
                return NULL;

        if (u->running) {
                __atomic_store_n(&u->stop, 1, __ATOMIC_RELEASE);
                libusb_interrupt_event_handler(u->ctx);
                pthread_join(u->thread, NULL);
                u->running = false;
        }

        /* Nothing posts any more. */
        while ((item = u->head)) {
                queue_remove(u, item);
                if (drop)
                        drop(item);
        }

        sd_event_source_disable_unref(u->source);
        if (u->efd >= 0)
                close(u->efd);
        if (u->ctx)
                libusb_exit(u->ctx);
        sd_event_unref(u->event);
        pthread_cond_destroy(&u->cond);
        pthread_mutex_destroy(&u->lock);
        free(u);
        return NULL;
}

libusb_context *mnd_usb_thread_context(struct mnd_usb_thread *u) {
        return u->ctx;
}

sd_event *mnd_usb_thread_event(struct mnd_usb_thread *u) {
        return u->event;
}

/* libusb's event thread (or, rarely, a thread in a synchronous libusb call). */
static void LIBUSB_CALL xfer_callback(struct libusb_transfer *transfer) {
        struct mnd_usb_xfer *x = transfer->user_data;
        struct mnd_usb_thread *u = x->thread;
        bool wake = false;

        pthread_mutex_lock(&u->lock);
        x->in_flight = false;
        if (x->discard)
                pthread_cond_broadcast(&u->cond);
        else if (!x->item.queued) {
                queue_append(u, &x->item);
                wake = true;
        }
        pthread_mutex_unlock(&u->lock);
        /* x may be gone from here on. */
        if (wake)
                wake_loop(u);
}

int mnd_usb_xfer_init(struct mnd_usb_xfer *x, struct mnd_usb_thread *u, void *owner, mnd_usb_item_fn done) {
        *x = (struct mnd_usb_xfer) {
                .item.dispatch = done,
                .thread = u,
                .owner = owner,
        };
        x->transfer = libusb_alloc_transfer(0);
        return x->transfer ? 0 : -ENOMEM;
}

int mnd_usb_xfer_submit(struct mnd_usb_xfer *x) {
        struct mnd_usb_thread *u = x->thread;
        int r;

        x->transfer->callback = xfer_callback;
        x->transfer->user_data = x;

        pthread_mutex_lock(&u->lock);
        if (x->in_flight || x->discard) {
                pthread_mutex_unlock(&u->lock);
                return -EBUSY;
        }
        x->in_flight = true;
        pthread_mutex_unlock(&u->lock);

        r = libusb_submit_transfer(x->transfer);
        if (r < 0) {
                pthread_mutex_lock(&u->lock);
                x->in_flight = false;
                pthread_mutex_unlock(&u->lock);
                return mnd_errno_from_libusb(r);
        }
        return 0;
}

int mnd_usb_xfer_cancel_wait(struct mnd_usb_xfer *const *xs, size_t n, uint64_t timeout_usec) {
        struct mnd_usb_thread *u = NULL;
        struct timespec deadline;
        uint32_t busy = 0;              /* bit i: xs[i] was in flight */
        int r = 0;

        if (n > 32)
                return -EINVAL;

        for (size_t i = 0; i < n; i++)
                if (xs[i]->transfer) {
                        u = xs[i]->thread;
                        break;
                }
        if (!u)
                return 0;

        pthread_mutex_lock(&u->lock);
        for (size_t i = 0; i < n; i++) {
                struct mnd_usb_xfer *x = xs[i];

                if (!x->transfer)
                        continue;
                x->discard = true;
                if (x->item.queued)
                        queue_remove(u, &x->item);
                if (x->in_flight)
                        busy |= UINT32_C(1) << i;
        }
        pthread_mutex_unlock(&u->lock);
        if (busy == 0)
                return 0;

        /* Outside the lock: libusb may be calling xfer_callback, which takes it.
         * LIBUSB_ERROR_NOT_FOUND just means the completion is on its way. */
        for (size_t i = 0; i < n; i++)
                if (busy & (UINT32_C(1) << i))
                        (void) libusb_cancel_transfer(xs[i]->transfer);

        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += (time_t) (timeout_usec / 1000000);
        deadline.tv_nsec += (long) (timeout_usec % 1000000) * 1000;
        if (deadline.tv_nsec >= 1000000000) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000;
        }

        pthread_mutex_lock(&u->lock);
        for (;;) {
                bool pending = false;

                for (size_t i = 0; i < n; i++)
                        if (xs[i]->transfer && xs[i]->in_flight)
                                pending = true;
                if (!pending)
                        break;
                if (pthread_cond_timedwait(&u->cond, &u->lock, &deadline) == ETIMEDOUT) {
                        r = -ETIMEDOUT;
                        break;
                }
        }
        pthread_mutex_unlock(&u->lock);
        return r;
}

void mnd_usb_xfer_done(struct mnd_usb_xfer *x) {
        libusb_free_transfer(x->transfer);
        x->transfer = NULL;
}
