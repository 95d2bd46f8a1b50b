/* SPDX-License-Identifier: GPL-2.0-or-later */
#include "bus-options.h"

#include "bus-error.h"
#include "text.h"
#include "util.h"

static int read_option(sd_bus_message *message, struct mnd_bus_option *options, size_t n_options,
                       const char *what, const char *known, sd_bus_error *error) {
        struct mnd_bus_option *o = NULL;
        const char *key, *contents;
        int r;

        r = sd_bus_message_read(message, "s", &key);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_options && !o; i++)
                if (streq(key, options[i].key))
                        o = &options[i];
        if (!o) {
                char q[MND_TEXT_QUOTE_SIZE(32)];

                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT, "unknown %s '%s'; %s", what,
                                         mnd_text_quote(key, 32, q, sizeof(q)), known);
        }
        if (o->seen)
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT, "%s '%s' is given more than once",
                                         what, key);
        o->seen = true;

        r = sd_bus_message_peek_type(message, NULL, &contents);
        if (r < 0)
                return r;
        if (!streq(contents, o->type)) {
                if (o->type_name)
                        return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                                 "%s '%s' must be of type '%s' (%s), not '%.16s'", what, key,
                                                 o->type, o->type_name, contents);
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                         "%s '%s' must be of type '%s', not '%.16s'", what, key, o->type,
                                         contents);
        }
        r = sd_bus_message_enter_container(message, 'v', contents);
        if (r < 0)
                return r;
        r = sd_bus_message_read_basic(message, o->type[0], o->value);
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}

int mnd_bus_read_options(sd_bus_message *message, struct mnd_bus_option *options, size_t n_options,
                         const char *what, const char *known, sd_bus_error *error) {
        int r;

        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
                r = read_option(message, options, n_options, what, known, error);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(message);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}
