/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A polkit client: asks polkitd (org.freedesktop.PolicyKit1) whether the sender of a method call
 * may perform an action, asynchronously, so that the event loop (and with it the pens' leases and
 * every Stop) never waits for polkit or for a person typing a password.
 *
 * The subject is the caller's unique bus name ("system-bus-name"), so polkit itself finds its
 * uid, process and login session; the call's "allow interactive authorization" flag becomes
 * polkit's AllowUserInteraction.
 *
 * Every check ends exactly once, in its callback, with one of:
 *   r > 0                      authorised;
 *   r < 0 and error set        not authorised: org.freedesktop.DBus.Error.AccessDenied (polkit
 *                              said no, or could not be asked: never allowed on error), or
 *                              org.freedesktop.DBus.Error.InteractiveAuthorizationRequired (polkit
 *                              would ask for a password but the call did not allow interaction),
 *                              or org.microneedle.Mnd1.Error.Busy (too many checks waiting, or the
 *                              daemon is stopping: mnd_polkit_cancel_all());
 *   r == -ECONNRESET, no error the caller left the bus while polkit was thinking: nobody to answer.
 * The callback may be called from inside mnd_polkit_check() (a refusal that needs no polkit).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#define MND_POLKIT_BUS_NAME  "org.freedesktop.PolicyKit1"
#define MND_POLKIT_PATH      "/org/freedesktop/PolicyKit1/Authority"
#define MND_POLKIT_INTERFACE "org.freedesktop.PolicyKit1.Authority"

/* CheckAuthorization's flags. */
#define MND_POLKIT_CHECK_ALLOW_USER_INTERACTION UINT32_C(1)

/* How long polkit may take: without interaction it answers in milliseconds; with interaction a
 * person may be typing a password. */
#define MND_POLKIT_TIMEOUT_USEC             (25 * UINT64_C(1000000))
#define MND_POLKIT_INTERACTIVE_TIMEOUT_USEC (120 * UINT64_C(1000000))

/* Checks in flight: at most this many in all, and per caller (a client must not make the
 * daemon hold unbounded state by sending calls it is not authorised for). */
#define MND_POLKIT_CHECKS_MAX            256U
#define MND_POLKIT_CHECKS_PER_CALLER_MAX 16U

struct mnd_polkit;

typedef void (*mnd_polkit_fn)(int r, const sd_bus_error *error, void *userdata);

/* The checks in flight on bus (a reference is taken). */
int mnd_polkit_new(sd_bus *bus, struct mnd_polkit **ret);
/* Cancels what is in flight (mnd_polkit_cancel_all()), then frees.  Accepts NULL, returns NULL. */
struct mnd_polkit *mnd_polkit_free(struct mnd_polkit *p);

/*
 * Asks polkit whether the sender of message may do action (what: the same in words for the
 * messages, "operate pens"; uid: the sender's, for the messages, or (uid_t) -1 if unknown).
 * Returns 0 when the check is under way (or already ended in its callback), or a negative errno
 * (-ENOMEM ...) when it could not even be started; the callback is then not called.
 */
int mnd_polkit_check(struct mnd_polkit *p, sd_bus_message *message, const char *action, const char *what,
                     uid_t uid, mnd_polkit_fn fn, void *userdata);

/* Ends every check in flight with Busy ("the daemon is shutting down").  The callbacks may not
 * start new checks. */
void mnd_polkit_cancel_all(struct mnd_polkit *p);

/* The number of checks in flight. */
unsigned mnd_polkit_pending(const struct mnd_polkit *p);

/* ---- the parts without a bus, exposed for the unit tests ---- */

/* Appends CheckAuthorization's arguments to call: subject ("system-bus-name", {"name": sender}),
 * action, no details, the flags, no cancellation id. */
int mnd_polkit_append_check_args(sd_bus_message *call, const char *sender, const char *action, bool interactive);

/* Reads CheckAuthorization's answer (bba{ss}).  -EBADMSG if it is not that. */
int mnd_polkit_read_result(sd_bus_message *reply, bool *ret_authorized, bool *ret_challenge);

/*
 * The verdict on a CheckAuthorization call: r and reply as sd-bus hands them to the reply
 * callback (reply may be NULL when r < 0).  Returns 1 if authorised; otherwise sets error
 * (AccessDenied or InteractiveAuthorizationRequired, with a sentence naming what, the action and,
 * if known, the uid) and returns -EACCES.
 */
int mnd_polkit_verdict(int r, sd_bus_message *reply, const char *action, const char *what, uid_t uid,
                       bool interactive, sd_bus_error *error);

/* The verdict once the call's outcome is known (the pure core of mnd_polkit_verdict):
 * call_error is the error polkit (or the bus) answered, NULL if it answered a result. */
int mnd_polkit_decide(const sd_bus_error *call_error, int call_r, bool authorized, bool challenge,
                      const char *action, const char *what, uid_t uid, bool interactive, sd_bus_error *error);
