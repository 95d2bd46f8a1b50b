/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Authorisation: one function per action.  Stop and StopAll have none, by
 * design: stopping is never refused (domain.md).
 *
 * On the session bus (mnd --user: demos and tests) only the user who runs the daemon may, decided
 * at once.  On the system bus polkit decides (polkit.h), asynchronously; uid 0 is authorised
 * without asking (as polkitd itself would answer, and as systemd's daemons do), so that root keeps
 * every power even while polkitd is down.  Whoever polkit cannot be asked about is refused.
 *
 * A method that needs authorisation validates its arguments first (a malformed call is refused
 * without asking anyone), then hands its call to mnd_auth_*() with a continuation that does the
 * rest (state and limit checks, the audit write-ahead, the pen command) once the caller is
 * authorised.
 */
#pragma once

#include <systemd/sd-bus.h>

struct mnd_manager;

/*
 * What happens once the caller is authorised: a method handler of its own (an sd-bus method
 * handler's signature and return convention: >= 0 replied or will reply, < 0 with error set or a
 * plain errno to be answered), called with message rewound to its first argument, so it reads the
 * arguments again.  userdata must live until the daemon stops: pass the manager, not a pen (a pen
 * may go away while polkit thinks; find it again from the message's path).
 */
typedef int (*mnd_auth_continue_fn)(sd_bus_message *message, void *userdata, sd_bus_error *error);

/*
 * org.microneedle.mnd.operate: SetDepth, SetSpeed, StartSession, ClearFault.
 * When the answer is known at once (the session bus, uid 0, a refusal without polkit), returns
 * what fn returned, or a negative errno with error set (org.freedesktop.DBus.Error.AccessDenied
 * and a sentence).  Otherwise returns 1: the reply follows when polkit answers (fn's, or the
 * refusal: AccessDenied, InteractiveAuthorizationRequired, or Busy when the daemon stops first).
 * A method handler returns what this returns.  Every refusal is on the audit trail
 * (auth-failure, rate-limited).
 */
int mnd_auth_operate(struct mnd_manager *m, sd_bus_message *message, mnd_auth_continue_fn fn, void *userdata,
                     sd_bus_error *error);

/*
 * org.microneedle.mnd.audit: Audit.Query and Audit.Verify (the log holds patient references).
 * Same conventions as mnd_auth_operate().
 */
int mnd_auth_audit(struct mnd_manager *m, sd_bus_message *message, mnd_auth_continue_fn fn, void *userdata,
                   sd_bus_error *error);

/* The daemon is stopping: every check in flight is answered with Busy, and no continuation runs. */
void mnd_auth_cancel_all(struct mnd_manager *m);
/* At exit: cancels what is in flight and frees the polkit client. */
void mnd_auth_done(struct mnd_manager *m);
