/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "journal.h"
#include "log.h"

int mnd_journal_open(const char *path) {
        int fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);

        if (fd < 0)
                return -errno;
        return fd;
}

int mnd_journal_load(int fd, const char *path, int (*fn)(char *line, unsigned lineno, void *userdata),
                     void *userdata) {
        _cleanup_(freep) char *buf = NULL;
        size_t size = 0, allocated = 0, complete;
        unsigned lineno = 0;
        int r;

        for (;;) {
                ssize_t k;

                if (allocated - size < 4096) {
                        char *b = realloc(buf, allocated + 65536);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        allocated += 65536;
                }
                k = pread(fd, buf + size, allocated - size - 1, (off_t) size);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return log_error_errno(errno, "%s: read failed: %m", path);
                }
                if (k == 0)
                        break;
                size += (size_t) k;
        }

        /* Everything up to the last LF is complete; after it, a torn line. */
        complete = size;
        while (complete > 0 && buf[complete - 1] != '\n')
                complete--;
        if (complete < size) {
                log_warning("%s: ignoring a torn last line (%zu bytes): the daemon stopped while writing it, "
                            "before it acted on it.", path, size - complete);
                if (ftruncate(fd, (off_t) complete) < 0)
                        return log_error_errno(errno, "%s: cannot cut off the torn line: %m", path);
                if (fsync(fd) < 0)
                        return log_error_errno(errno, "%s: fsync failed: %m", path);
        }

        for (size_t start = 0; start < complete;) {
                char *nl = memchr(buf + start, '\n', complete - start);

                *nl = '\0';
                lineno++;
                if (strlen(buf + start) != (size_t) (nl - (buf + start)))
                        log_warning("%s:%u: ignoring a line with a NUL byte.", path, lineno);
                else {
                        r = fn(buf + start, lineno, userdata);
                        if (r < 0)
                                return r;
                }
                start = (size_t) (nl - buf) + 1;
        }
        return 0;
}

int mnd_journal_append(int fd, const char *line, size_t n) {
        size_t done = 0;
        int r;

        if (n == 0 || line[n - 1] != '\n')
                return -EINVAL;
        while (done < n) {
                ssize_t k = write(fd, line + done, n - done);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                done += (size_t) k;
        }
        if (fsync(fd) < 0)
                return -errno;
        return 0;

fail:
        if (done > 0 && write(fd, "\n", 1) < 0)
                log_debug_errno(errno, "Cannot end a partial line: %m");
        return r;
}

int mnd_parse_u64(const char *p, unsigned long long max, unsigned long long *ret) {
        unsigned long long v = 0;

        if (!p || !*p)
                return -EINVAL;
        for (; *p; p++) {
                unsigned d;

                if (*p < '0' || *p > '9')
                        return -EINVAL;
                d = (unsigned) (*p - '0');
                if (v > (max - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}
