/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"

static bool name_in(const char *name, const char *const *names) {
        for (; *names; names++)
                if (streq(name, *names))
                        return true;
        return false;
}

int mnctl_exit_code_for_error(const char *name, int r) {
        static const char *const refused[] = {
                MND_ERROR_PREFIX "LimitExceeded", MND_ERROR_PREFIX "InvalidArgument",
                MND_ERROR_PREFIX "NoSuchArea", MND_ERROR_PREFIX "CartridgeUsed",
                MND_ERROR_PREFIX "CartridgeMissing", NULL };
        static const char *const no_pen[] = {
                MND_ERROR_PREFIX "NoSuchPen", "org.freedesktop.DBus.Error.UnknownObject", MNCTL_ERROR_NO_SUCH_EVENT, NULL };
        static const char *const denied[] = {
                "org.freedesktop.DBus.Error.AccessDenied",
                "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
                "org.freedesktop.DBus.Error.AuthFailed", NULL };
        static const char *const no_daemon[] = {
                "org.freedesktop.DBus.Error.ServiceUnknown", "org.freedesktop.DBus.Error.NameHasNoOwner",
                "org.freedesktop.DBus.Error.Disconnected", "org.freedesktop.DBus.Error.NoServer",
                "org.freedesktop.DBus.Error.FileNotFound", MNCTL_ERROR_NO_DAEMON, NULL };
        static const char *const usage[] = { MNCTL_ERROR_USAGE, MNCTL_ERROR_AMBIGUOUS_PEN, NULL };

        if (!isempty(name)) {
                if (name_in(name, refused))
                        return MNCTL_EXIT_REFUSED;
                if (name_in(name, no_pen))
                        return MNCTL_EXIT_NO_PEN;
                if (name_in(name, denied))
                        return MNCTL_EXIT_DENIED;
                if (name_in(name, no_daemon))
                        return MNCTL_EXIT_NO_DAEMON;
                if (name_in(name, usage))
                        return MNCTL_EXIT_USAGE;
                if (streq(name, MNCTL_ERROR_AUDIT_BROKEN))
                        return MNCTL_EXIT_AUDIT_BROKEN;
                /* Timeout, DeviceError, NotConnected, Busy, AuditFailure, NoReply and anything unknown. */
                return MNCTL_EXIT_DEVICE;
        }

        switch (-r) {
        case ENOENT:
        case ECONNREFUSED:
        case ECONNRESET:
        case ENOTCONN:
        case EPIPE:
        case ENXIO:
        case EHOSTDOWN:
        case ENOMEDIUM:
                return MNCTL_EXIT_NO_DAEMON;
        case EACCES:
        case EPERM:
                return MNCTL_EXIT_DENIED;
        default:
                return MNCTL_EXIT_DEVICE;
        }
}

static const char *bus_kind(const struct mnctl *c) {
        return c->user_bus ? "session" : "system";
}

int mnctl_bus(struct mnctl *c, sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        if (c->bus) {
                *ret = c->bus;
                return 0;
        }

        r = c->user_bus ? sd_bus_open_user(&bus) : sd_bus_open_system(&bus);
        if (r < 0) {
                if (c->user_bus)
                        return mnctl_fail(c, r, MNCTL_EXIT_NO_DAEMON, MNCTL_ERROR_NO_DAEMON,
                                          "cannot connect to the session bus (DBUS_SESSION_BUS_ADDRESS=%s): %s; "
                                          "is a session bus running with mnd on it?",
                                          strempty(getenv("DBUS_SESSION_BUS_ADDRESS")), strerror(-r));
                return mnctl_fail(c, r, MNCTL_EXIT_NO_DAEMON, MNCTL_ERROR_NO_DAEMON,
                                  "cannot connect to the system bus: %s; is D-Bus running? "
                                  "(use --user for a daemon on the session bus)", strerror(-r));
        }
        /* On a terminal, let polkit ask for a password instead of refusing (every call on this
         * connection carries the flag), unless --no-ask-password. */
        (void) sd_bus_set_allow_interactive_authorization(bus, !c->no_ask_password && isatty(STDIN_FILENO) > 0);

        c->bus = bus;
        *ret = bus;
        return 0;
}

int mnctl_fail_bus(struct mnctl *c, int r, const sd_bus_error *e, const char *what) {
        const char *name = e && sd_bus_error_is_set(e) ? e->name : NULL;
        const char *message = e && !isempty(e->message) ? e->message : strerror(-r);
        int code = mnctl_exit_code_for_error(name, r);

        if (r >= 0)
                r = -EIO;

        if (name && (streq(name, "org.freedesktop.DBus.Error.ServiceUnknown") ||
                     streq(name, "org.freedesktop.DBus.Error.NameHasNoOwner")))
                return mnctl_fail(c, r, code, name,
                                  "mnd is not running: nobody owns %s on the %s bus (start the daemon%s)",
                                  MND_BUS_NAME, bus_kind(c),
                                  c->user_bus ? " with 'mnd --user'" :
                                  ", or use --user for a daemon on the session bus");
        if (!name && code == MNCTL_EXIT_NO_DAEMON)
                return mnctl_fail(c, r, code, MNCTL_ERROR_NO_DAEMON, "%s: lost the connection to the %s bus (%s)",
                                  what, bus_kind(c), message);
        if (!name)
                return mnctl_fail(c, r, code, MNCTL_ERROR_FAILED, "%s: %s", what, message);

        /* The daemon's refusals are sentences for a person: show them as they were sent. */
        if (strncmp(name, MND_ERROR_PREFIX, strlen(MND_ERROR_PREFIX)) == 0 ||
            streq(name, "org.freedesktop.DBus.Error.AccessDenied") ||
            streq(name, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"))
                return mnctl_fail(c, r, code, name, "%s", message);
        return mnctl_fail(c, r, code, name, "%s: %s", what, message);
}

static int read_one(sd_bus_message *m, const char *signature, void *where) {
        int r;

        if (streq(signature, "s") || streq(signature, "o")) {
                const char *s;
                char **p = where;

                r = sd_bus_message_read_basic(m, signature[0], &s);
                if (r < 0)
                        return r;
                return free_and_strdup(p, s);
        }
        if (streq(signature, "u") || streq(signature, "t") || streq(signature, "y"))
                return sd_bus_message_read_basic(m, signature[0], where);
        if (streq(signature, "b")) {
                int b;

                r = sd_bus_message_read_basic(m, 'b', &b);
                if (r >= 0)
                        *(bool *) where = b;
                return r;
        }
        if (streq(signature, "as")) {
                char **l = NULL, ***p = where;

                r = sd_bus_message_read_strv(m, &l);
                if (r < 0)
                        return r;
                strv_free(*p);
                *p = l;
                return 0;
        }
        if (streq(signature, "(uuu)")) {
                uint32_t *v = where;
                return sd_bus_message_read(m, "(uuu)", &v[0], &v[1], &v[2]);
        }
        if (streq(signature, "(uu)")) {
                uint32_t *v = where;
                return sd_bus_message_read(m, "(uu)", &v[0], &v[1]);
        }
        return -EINVAL;
}

int mnctl_read_props(sd_bus_message *m, const struct mnctl_prop *props, void *data) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const struct mnctl_prop *p;
                const char *name, *contents;

                r = sd_bus_message_read_basic(m, 's', &name);
                if (r < 0)
                        return r;
                for (p = props; p->name; p++)
                        if (streq(p->name, name))
                                break;
                r = sd_bus_message_peek_type(m, NULL, &contents);
                if (r < 0)
                        return r;
                if (!p->name || !streq(contents, p->signature))
                        r = sd_bus_message_skip(m, "v");
                else {
                        r = sd_bus_message_enter_container(m, 'v', contents);
                        if (r < 0)
                                return r;
                        r = read_one(m, p->signature, (char *) data + p->offset);
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(m);
                }
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int mnctl_get_all(struct mnctl *c, const char *path, const char *interface,
                  const struct mnctl_prop *props, void *data) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = mnctl_call(c, path, "org.freedesktop.DBus.Properties", "GetAll", "read the properties",
                       &reply, "s", interface);
        if (r < 0)
                return r;
        r = mnctl_read_props(reply, props, data);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED,
                                  "cannot read the properties of %s: %s", path, strerror(-r));
        return 0;
}

void mnctl_props_free(const struct mnctl_prop *props, void *data) {
        for (const struct mnctl_prop *p = props; p->name; p++) {
                void *where = (char *) data + p->offset;

                if (streq(p->signature, "s") || streq(p->signature, "o")) {
                        free(*(char **) where);
                        *(char **) where = NULL;
                } else if (streq(p->signature, "as")) {
                        *(char ***) where = strv_free(*(char ***) where);
                }
        }
}

int mnctl_get_property_strv(struct mnctl *c, const char *path, const char *interface, const char *member,
                            const char *what, char ***ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        char **l = NULL;
        sd_bus *bus;
        int r;

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(bus, &m, MND_BUS_NAME, path, "org.freedesktop.DBus.Properties", "Get");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", interface, member);
        /* The shell completion must neither start mnd nor hang when it does not answer. */
        if (r >= 0 && c->quick)
                r = sd_bus_message_set_auto_start(m, 0);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "%s: cannot build the call: %s",
                                  what, strerror(-r));
        r = sd_bus_call(bus, m, c->quick ? MNCTL_QUICK_TIMEOUT_USEC : 0, &error, &reply);
        if (r < 0)
                return mnctl_fail_bus(c, r, &error, what);
        r = sd_bus_message_enter_container(reply, 'v', NULL);   /* "as" or "ao" */
        if (r >= 0)
                r = sd_bus_message_read_strv(reply, &l);
        if (r < 0)
                return mnctl_fail(c, r, MNCTL_EXIT_DEVICE, MNCTL_ERROR_FAILED, "%s: mnd's reply is not understood: %s",
                                  what, strerror(-r));
        *ret = l;
        return 0;
}

int mnctl_call(struct mnctl *c, const char *path, const char *interface, const char *member,
               const char *what, sd_bus_message **ret_reply, const char *types, ...) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus *bus;
        va_list ap;
        int r;

        r = mnctl_bus(c, &bus);
        if (r < 0)
                return r;

        va_start(ap, types);
        r = sd_bus_call_methodv(bus, MND_BUS_NAME, path, interface, member, &error, ret_reply, types, ap);
        va_end(ap);
        if (r < 0)
                return mnctl_fail_bus(c, r, &error, what);
        return 0;
}
