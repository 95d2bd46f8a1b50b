/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Authorisation: one function per action.  Stop and StopAll have none, by
 * design: stopping is never refused (domain.md).
 */
#pragma once

#include <systemd/sd-bus.h>

struct mnd_manager;

/*
 * org.microneedle.mnd.operate: SetDepth, SetSpeed, StartSession, ClearFault.
 * Returns 0 if the caller may, or a negative errno with error set
 * (org.freedesktop.DBus.Error.AccessDenied and a sentence).
 */
int mnd_auth_operate(struct mnd_manager *m, sd_bus_message *message, sd_bus_error *error);

/*
 * org.microneedle.mnd.audit: Audit.Query and Audit.Verify (the log holds patient references).
 * Until polkit lands, the same rule as operate.  Same return convention.  Both record a refused
 * caller on the audit trail (auth-failure, rate-limited).
 */
int mnd_auth_audit(struct mnd_manager *m, sd_bus_message *message, sd_bus_error *error);
