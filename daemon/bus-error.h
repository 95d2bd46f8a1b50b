/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The D-Bus errors of org.microneedle.Mnd1 and the one place where negative
 * errno values from inside the daemon become named errors (at the method
 * boundary).
 */
#pragma once

#include <systemd/sd-bus.h>

#define MND_ERROR_PREFIX "org.microneedle.Mnd1.Error."
#define MND_ERROR_LIMIT_EXCEEDED    MND_ERROR_PREFIX "LimitExceeded"
#define MND_ERROR_INVALID_ARGUMENT  MND_ERROR_PREFIX "InvalidArgument"
#define MND_ERROR_NO_SUCH_PEN       MND_ERROR_PREFIX "NoSuchPen"
#define MND_ERROR_NO_SUCH_AREA      MND_ERROR_PREFIX "NoSuchArea"
#define MND_ERROR_NOT_CONNECTED     MND_ERROR_PREFIX "NotConnected"
#define MND_ERROR_BUSY              MND_ERROR_PREFIX "Busy"
#define MND_ERROR_DEVICE_ERROR      MND_ERROR_PREFIX "DeviceError"
#define MND_ERROR_TIMEOUT           MND_ERROR_PREFIX "Timeout"
#define MND_ERROR_CARTRIDGE_MISSING MND_ERROR_PREFIX "CartridgeMissing"
#define MND_ERROR_CARTRIDGE_USED    MND_ERROR_PREFIX "CartridgeUsed"
#define MND_ERROR_AUDIT_FAILURE     MND_ERROR_PREFIX "AuditFailure"

/* For sd_bus_error_add_map(): lets sd-bus clients map the names to errno. */
extern const sd_bus_error_map mnd_bus_error_map[];

/*
 * A refusal by mnp_check_depth/speed/duration or mnp_limits_effective:
 * -ERANGE LimitExceeded, -EDOM and -EINVAL InvalidArgument, -ENOENT
 * NoSuchArea; reason (the sentence limits.c wrote) is the message.
 * Returns r.
 */
int mnd_bus_error_set_limit(sd_bus_error *error, int r, const char *reason);

/*
 * A command's completion from pen-link (what is "set depth to 0.50 mm", pen
 * is the serial; message is pen-link's sentence, may be NULL):
 *   -ETIMEDOUT Timeout, -ENODEV/-ENOTCONN NotConnected, -ERANGE LimitExceeded
 *   and -EDOM InvalidArgument (the pen's own refusal), -ENOMEDIUM
 *   CartridgeMissing, -EBUSY Busy, -EIO DeviceError, -ECANCELED Busy (a stop
 *   overtook the command before the pen acknowledged it), anything else
 *   DeviceError.
 * Returns r.
 */
int mnd_bus_error_set_pen(sd_bus_error *error, int r, const char *pen, const char *what, const char *message);
