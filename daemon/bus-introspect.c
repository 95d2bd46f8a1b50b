/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * mnd --bus-introspect: the introspection XML of the four interfaces, taken
 * from the real vtables.  The objects are served on an in-process sd-bus
 * connection over a socketpair and asked with
 * org.freedesktop.DBus.Introspectable.Introspect, so the output cannot drift
 * from the code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-id128.h>

#include "log.h"
#include "manager.h"

static const struct {
        const char *path;
        const char *interface;
        const sd_bus_vtable *vtable;
} objects[] = {
        { MND_MANAGER_PATH,                   MND_MANAGER_INTERFACE, mnd_manager_vtable },
        { MND_PEN_PATH_PREFIX "/example",     MND_PEN_INTERFACE,     mnd_pen_vtable },
        { MND_SESSION_PATH_PREFIX "/1",       MND_SESSION_INTERFACE, mnd_session_vtable },
        { MND_AUDIT_PATH,                     MND_AUDIT_INTERFACE,   mnd_audit_vtable },
};

struct introspect_state {
        unsigned pending;
        int error;
        char *xml[ELEMENTSOF(objects)];
};

struct introspect_call {
        struct introspect_state *state;
        size_t index;
};

static int introspect_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        struct introspect_call *call = userdata;
        struct introspect_state *st = call->state;
        const char *xml;
        int r;

        if (sd_bus_message_is_method_error(reply, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(reply);
                st->error = log_error_errno(sd_bus_message_get_errno(reply), "Introspect failed: %s: %s",
                                            e->name, e->message);
        } else {
                r = sd_bus_message_read(reply, "s", &xml);
                if (r < 0)
                        st->error = r;
                else if (!(st->xml[call->index] = strdup(xml)))
                        st->error = -ENOMEM;
        }
        if (--st->pending == 0 || st->error < 0)
                (void) sd_event_exit(sd_bus_get_event(sd_bus_message_get_bus(reply)), 0);
        return 0;
}

static void introspect_state_done(struct introspect_state *st) {
        for (size_t i = 0; i < ELEMENTSOF(objects); i++)
                st->xml[i] = mfree(st->xml[i]);
}

/* The <interface name="..."> ... </interface> element of one interface. */
static int extract_interface(const char *xml, const char *interface, char **ret) {
        _cleanup_(freep) char *open_tag = NULL;
        const char *begin, *end;

        if (asprintf(&open_tag, "<interface name=\"%s\">", interface) < 0)
                return -ENOMEM;
        begin = strstr(xml, open_tag);
        if (!begin)
                return -ENOENT;
        end = strstr(begin, "</interface>");
        if (!end)
                return -EBADMSG;
        end += strlen("</interface>");
        *ret = strndup(begin, (size_t) (end - begin));
        return *ret ? 0 : -ENOMEM;
}

int mnd_bus_introspect_print(void) {
        _cleanup_(sd_event_unrefp) sd_event *event = NULL;
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *server = NULL, *client = NULL;
        _cleanup_(introspect_state_done) struct introspect_state st = {};
        int fds[2], r;
        sd_id128_t id;

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0)
                return log_error_errno(errno, "socketpair failed: %m");

        r = sd_event_new(&event);
        if (r < 0)
                goto fail_fds;
        r = sd_bus_new(&server);
        if (r < 0)
                goto fail_fds;
        r = sd_bus_new(&client);
        if (r < 0)
                goto fail_fds;
        r = sd_bus_set_fd(server, fds[0], fds[0]);
        if (r < 0)
                goto fail_fds;
        fds[0] = -1;
        r = sd_bus_set_fd(client, fds[1], fds[1]);
        if (r < 0)
                goto fail_fds;
        fds[1] = -1;

        r = sd_id128_randomize(&id);
        if (r < 0)
                return log_error_errno(r, "Cannot make a server id: %m");
        r = sd_bus_set_server(server, true, id);
        if (r < 0)
                return log_error_errno(r, "Cannot set up the in-process server: %m");
        r = sd_bus_set_anonymous(server, true);
        if (r < 0)
                return r;
        r = sd_bus_set_anonymous(client, true);
        if (r < 0)
                return r;

        /* Userdata NULL: introspection never calls a getter or a method. */
        for (size_t i = 0; i < ELEMENTSOF(objects); i++) {
                r = sd_bus_add_object_vtable(server, NULL, objects[i].path, objects[i].interface,
                                             objects[i].vtable, NULL);
                if (r < 0)
                        return log_error_errno(r, "Cannot add the %s vtable: %m", objects[i].interface);
        }

        r = sd_bus_start(server);
        if (r < 0)
                return log_error_errno(r, "Cannot start the in-process server: %m");
        r = sd_bus_start(client);
        if (r < 0)
                return log_error_errno(r, "Cannot start the in-process client: %m");
        r = sd_bus_attach_event(server, event, 0);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(client, event, 0);
        if (r < 0)
                return r;

        struct introspect_call calls[ELEMENTSOF(objects)];
        for (size_t i = 0; i < ELEMENTSOF(objects); i++) {
                calls[i] = (struct introspect_call) { .state = &st, .index = i };
                r = sd_bus_call_method_async(client, NULL, NULL, objects[i].path,
                                             "org.freedesktop.DBus.Introspectable", "Introspect",
                                             introspect_reply, &calls[i], 0);
                if (r < 0)
                        return log_error_errno(r, "Cannot ask for the introspection data: %m");
                st.pending++;
        }
        r = sd_event_loop(event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        if (st.error < 0)
                return st.error;

        printf("<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n"
               "\"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n"
               "<node>\n");
        for (size_t i = 0; i < ELEMENTSOF(objects); i++) {
                _cleanup_(freep) char *element = NULL;

                if (!st.xml[i])
                        return log_error_errno(EIO, "No introspection data for %s.", objects[i].path);
                r = extract_interface(st.xml[i], objects[i].interface, &element);
                if (r < 0)
                        return log_error_errno(r, "No %s in the introspection data: %m", objects[i].interface);
                printf(" %s\n", element);
        }
        printf("</node>\n");
        return fflush(stdout) == 0 ? 0 : -EIO;

fail_fds:
        if (fds[0] >= 0)
                close(fds[0]);
        if (fds[1] >= 0)
                close(fds[1]);
        return log_error_errno(r, "Cannot set up the in-process bus: %m");
}
