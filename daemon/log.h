/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Logging for mnd: one line per message on stderr with a syslog priority
 * prefix ("<6>..."), which journald and systemd understand.  The *_errno
 * variants format %m with the given error and return it as a negative errno,
 * so that callers can write "return log_error_errno(r, "...: %m");".
 *
 * Patient references are personal data: never log them at info or above.
 */
#pragma once

#include <syslog.h>

#include "util.h"

void log_set_max_level(int level);
int log_get_max_level(void);
/* "debug", "info", "notice", "warning", "err"/"error", ..., or a number 0-7. */
int log_level_from_string(const char *s);

/* Returns -ERRNO_VALUE(error) (or 0 when error is 0). */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_full_errno(level, error, ...)                                       \
        ({                                                                      \
                int _level = (level), _e = (error);                             \
                (log_get_max_level() >= _level)                                 \
                        ? log_internal(_level, _e, __VA_ARGS__)                 \
                        : -ERRNO_VALUE(_e);                                     \
        })

#define log_full(level, ...) ((void) log_full_errno((level), 0, __VA_ARGS__))

#define log_debug(...)   log_full(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)    log_full(LOG_INFO, __VA_ARGS__)
#define log_notice(...)  log_full(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_full(LOG_ERR, __VA_ARGS__)

#define log_debug_errno(error, ...)   log_full_errno(LOG_DEBUG, error, __VA_ARGS__)
#define log_info_errno(error, ...)    log_full_errno(LOG_INFO, error, __VA_ARGS__)
#define log_notice_errno(error, ...)  log_full_errno(LOG_NOTICE, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, error, __VA_ARGS__)

/* For allocation failures. */
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")
