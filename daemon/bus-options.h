/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Reading an a{sv} of named options (StartSession's options, Query's filter) against a table.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-bus.h>

struct mnd_bus_option {
        const char *key;
        const char *type;       /* the D-Bus type: "s" (const char *), "u" (uint32_t) or "t" (uint64_t) */
        const char *type_name;  /* if not NULL, named after the type in the wrong-type message */
        void *value;            /* where the value goes: a const char **, uint32_t * or uint64_t * */
        bool seen;              /* set when the key was given */
};

/*
 * Enters the a{sv} at the message's read position and reads each entry into the value of the
 * option with its key; the values of the keys not given are left alone.  An unknown key, a key
 * given twice or a value of another type is InvalidArgument, named with what ("option", "filter
 * key"); known is the rest of the message for an unknown key ("the options are ...").
 */
int mnd_bus_read_options(sd_bus_message *message, struct mnd_bus_option *options, size_t n_options,
                         const char *what, const char *known, sd_bus_error *error);
