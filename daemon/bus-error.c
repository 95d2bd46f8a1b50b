/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <string.h>

#include "bus-error.h"
#include "util.h"

const sd_bus_error_map mnd_bus_error_map[] = {
        SD_BUS_ERROR_MAP(MND_ERROR_LIMIT_EXCEEDED,    ERANGE),
        SD_BUS_ERROR_MAP(MND_ERROR_INVALID_ARGUMENT,  EINVAL),
        SD_BUS_ERROR_MAP(MND_ERROR_NO_SUCH_PEN,       ENODEV),
        SD_BUS_ERROR_MAP(MND_ERROR_NO_SUCH_AREA,      ENOENT),
        SD_BUS_ERROR_MAP(MND_ERROR_NOT_CONNECTED,     ENOTCONN),
        SD_BUS_ERROR_MAP(MND_ERROR_BUSY,              EBUSY),
        SD_BUS_ERROR_MAP(MND_ERROR_DEVICE_ERROR,      EIO),
        SD_BUS_ERROR_MAP(MND_ERROR_TIMEOUT,           ETIMEDOUT),
        SD_BUS_ERROR_MAP(MND_ERROR_CARTRIDGE_MISSING, ENOMEDIUM),
        SD_BUS_ERROR_MAP(MND_ERROR_CARTRIDGE_USED,    EEXIST),
        SD_BUS_ERROR_MAP(MND_ERROR_AUDIT_FAILURE,     ENOSPC),
        SD_BUS_ERROR_MAP_END
};

int mnd_bus_error_set_limit(sd_bus_error *error, int r, const char *reason) {
        const char *name;

        switch (r) {
        case -ERANGE:
                name = MND_ERROR_LIMIT_EXCEEDED;
                break;
        case -ENOENT:
                name = MND_ERROR_NO_SUCH_AREA;
                break;
        default: /* -EDOM (off the pen's step), -EINVAL (zero duration, bad pen step) */
                name = MND_ERROR_INVALID_ARGUMENT;
                break;
        }
        sd_bus_error_setf(error, name, "%s", isempty(reason) ? strerror(ERRNO_VALUE(r)) : reason);
        return r;
}

int mnd_bus_error_set_pen(sd_bus_error *error, int r, const char *pen, const char *what, const char *message) {
        const char *name;

        switch (r) {
        case -ETIMEDOUT:
                sd_bus_error_setf(error, MND_ERROR_TIMEOUT,
                                  "pen %s did not answer '%s' in time; check the cable", pen, what);
                return r;
        case -ENODEV:
        case -ENOTCONN:
                sd_bus_error_setf(error, MND_ERROR_NOT_CONNECTED,
                                  "pen %s is not connected (or not ready) for '%s'", pen, what);
                return r;
        case -ECANCELED:
                /* Busy, not DeviceError: nothing is wrong with the pen, another caller stopped it. */
                sd_bus_error_setf(error, MND_ERROR_BUSY,
                                  "'%s' on pen %s was overtaken by a stop before the pen acknowledged it; "
                                  "the pen is stopped, check its settings before trying again", what, pen);
                return r;
        case -ERANGE:
                name = MND_ERROR_LIMIT_EXCEEDED;
                break;
        case -EDOM:
                name = MND_ERROR_INVALID_ARGUMENT;
                break;
        case -ENOMEDIUM:
                name = MND_ERROR_CARTRIDGE_MISSING;
                break;
        case -EBUSY:
                name = MND_ERROR_BUSY;
                break;
        default: /* -EIO (fault active), -EPROTO, anything else */
                name = MND_ERROR_DEVICE_ERROR;
                break;
        }
        sd_bus_error_setf(error, name, "pen %s refused '%s': %s", pen, what,
                          isempty(message) ? strerror(ERRNO_VALUE(r)) : message);
        return r;
}
