/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnctl's side of the D-Bus API: connecting, calling, reading properties,
 * and turning D-Bus errors into exit codes and sentences.
 */
#pragma once

#include <stdint.h>
#include <systemd/sd-bus.h>

#include "mnctl.h"

/*
 * The exit code for a D-Bus error name (or, when name is NULL, for the
 * negative errno r of a failed connection or call):
 *   4  Mnd1.Error.LimitExceeded, InvalidArgument, NoSuchArea, CartridgeUsed, CartridgeMissing
 *   3  Mnd1.Error.NoSuchPen, DBus.Error.UnknownObject (the pen's object is gone)
 *   5  DBus.Error.AccessDenied, InteractiveAuthorizationRequired, AuthFailed
 *   6  Mnd1.Error.Timeout, DeviceError, NotConnected, Busy, AuditFailure, and anything else
 *   7  DBus.Error.ServiceUnknown, NameHasNoOwner, Disconnected, NoServer, FileNotFound;
 *      errno: ENOENT, ECONNREFUSED, ECONNRESET, ENOTCONN, EPIPE, ENXIO, EHOSTDOWN
 *   plus mnctl's own names (Usage 2, AmbiguousPen 2, NoSuchEvent 3, NoDaemon 7, SessionNotCompleted 6,
 *   AuditChainBroken 8).
 */
int mnctl_exit_code_for_error(const char *name, int r);

/* Connects to the system bus, or the session bus with --user; exit 7 with a sentence on failure. */
int mnctl_bus(struct mnctl *c, sd_bus **ret);

/*
 * Records a failed call: the daemon's own sentence for its errors (as it
 * sent it), "what: message" for others, and a clear sentence when mnd is not
 * on the bus.  Returns r.
 */
int mnctl_fail_bus(struct mnctl *c, int r, const sd_bus_error *e, const char *what);

/*
 * Reading a{sv} into a struct: each entry names a property, its D-Bus
 * signature and where it goes.  Supported: "s" and "o" (char *, replaced),
 * "u" (uint32_t), "t" (uint64_t), "y" (uint8_t), "b" (bool), "as" (char **),
 * "(uuu)" and "(uu)" (uint32_t[3] / [2]).  Unknown properties are skipped;
 * a known one with another signature is skipped too (a newer daemon).
 */
struct mnctl_prop {
        const char *name;
        const char *signature;
        size_t offset;
};

int mnctl_read_props(sd_bus_message *m, const struct mnctl_prop *props, void *data);
/* GetAll on path and interface into data. */
int mnctl_get_all(struct mnctl *c, const char *path, const char *interface,
                  const struct mnctl_prop *props, void *data);
/* Frees the strings and string arrays data holds for props. */
void mnctl_props_free(const struct mnctl_prop *props, void *data);

/*
 * Reads a string-array property of the daemon (Pens, Areas); on failure
 * records the error (what names the action).  With c->quick the call does
 * not start mnd by bus activation and waits at most MNCTL_QUICK_TIMEOUT_USEC.
 */
int mnctl_get_property_strv(struct mnctl *c, const char *path, const char *interface, const char *member,
                            const char *what, char ***ret);

/* Calls a method on the daemon; on failure records the error (what names the action) and returns it. */
int mnctl_call(struct mnctl *c, const char *path, const char *interface, const char *member,
               const char *what, sd_bus_message **ret_reply, const char *types, ...);
