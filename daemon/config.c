/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

int mnd_config_init(struct mnd_config *c) {
        *c = (struct mnd_config) {};
        c->state_directory = strdup(MND_STATE_DIRECTORY_DEFAULT);
        if (!c->state_directory)
                return -ENOMEM;
        mnd_link_settings_default(&c->link);
        mnd_id_table_init(&c->ids);
        mnp_limits_init(&c->limits);
        return 0;
}

void mnd_config_done(struct mnd_config *c) {
        if (!c)
                return;
        c->state_directory = mfree(c->state_directory);
        c->path = mfree(c->path);
}

int mnd_link_settings_check(const struct mnd_link_settings *s, char *reason, size_t size) {
        if (s->heartbeat_ms == 0 || s->lease_ms == 0 || s->retransmit_ms == 0 || s->peer_timeout_ms == 0) {
                snprintf(reason, size, "heartbeat_ms, lease_ms, retransmit_ms and peer_timeout_ms must be above 0");
                return -EINVAL;
        }
        if (s->lease_ms > MND_LINK_LEASE_MS_MAX) {
                snprintf(reason, size, "lease_ms %" PRIu32 " is above %u: a pen would run that long after the host died",
                         s->lease_ms, MND_LINK_LEASE_MS_MAX);
                return -EINVAL;
        }
        if (s->lease_ms < 2 * s->heartbeat_ms) {
                snprintf(reason, size,
                         "lease_ms %" PRIu32 " must be at least twice heartbeat_ms %" PRIu32
                         " (%" PRIu32 "), or one late heartbeat stops the pen",
                         s->lease_ms, s->heartbeat_ms, 2 * s->heartbeat_ms);
                return -EINVAL;
        }
        if (s->retries > 10) {
                snprintf(reason, size, "retries %" PRIu32 " is above 10", s->retries);
                return -EINVAL;
        }
        if (s->retransmit_ms >= s->peer_timeout_ms) {
                snprintf(reason, size, "retransmit_ms %" PRIu32 " must be below peer_timeout_ms %" PRIu32,
                         s->retransmit_ms, s->peer_timeout_ms);
                return -EINVAL;
        }
        if (s->peer_timeout_ms <= s->heartbeat_ms || s->peer_timeout_ms > 10000) {
                snprintf(reason, size, "peer_timeout_ms %" PRIu32 " must be above heartbeat_ms %" PRIu32
                         " and at most 10000", s->peer_timeout_ms, s->heartbeat_ms);
                return -EINVAL;
        }
        if (size > 0)
                reason[0] = '\0';
        return 0;
}

/* Strict unsigned decimal: 1+ digits, nothing else, at most UINT32_MAX. */
static int parse_u32(const char *s, uint32_t *ret) {
        uint64_t v = 0;

        if (!s || !*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                v = v * 10 + (uint64_t) (*p - '0');
                if (v > UINT32_MAX)
                        return -ERANGE;
        }
        *ret = (uint32_t) v;
        return 0;
}

static int parse_hex16(const char *s, size_t n, uint16_t *ret) {
        uint32_t v = 0;

        if (n == 0 || n > 4)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                char ch = s[i];
                unsigned d;

                if (ch >= '0' && ch <= '9')
                        d = (unsigned) (ch - '0');
                else if (ch >= 'a' && ch <= 'f')
                        d = (unsigned) (ch - 'a' + 10);
                else if (ch >= 'A' && ch <= 'F')
                        d = (unsigned) (ch - 'A' + 10);
                else
                        return -EINVAL;
                v = v * 16 + d;
        }
        *ret = (uint16_t) v;
        return 0;
}

/* "1209:0003": four hex digits (or fewer) each side; vendor 0 is no vendor. */
static int parse_vid_pid(const char *s, uint16_t *ret_vid, uint16_t *ret_pid) {
        const char *colon = strchr(s, ':');
        uint16_t vid, pid;

        if (!colon)
                return -EINVAL;
        if (parse_hex16(s, (size_t) (colon - s), &vid) < 0 ||
            parse_hex16(colon + 1, strlen(colon + 1), &pid) < 0 || vid == 0)
                return -EINVAL;
        *ret_vid = vid;
        *ret_pid = pid;
        return 0;
}

struct parse_state {
        struct mnd_config *config;
        const char *path;
        FILE *f;
        unsigned line;          /* the line the parser is on */
        bool at_line_start;
        bool line_too_long;
        int error;
        char *message;          /* "FILE:LINE: problem" */
};

static void parse_fail(struct parse_state *st, int error, const char *fmt, ...) _printf_(3, 4);
static void parse_fail(struct parse_state *st, int error, const char *fmt, ...) {
        char buf[512];
        va_list ap;

        if (st->error < 0)
                return; /* the first problem is the one reported */
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        st->error = error;
        if (asprintf(&st->message, "%s:%u: %s", st->path, st->line, buf) < 0)
                st->message = NULL;
}

/* fgets that counts lines, so that the handler knows where it is (the
 * installed inih calls handlers without a line number). */
static char *counting_reader(char *str, int num, void *stream) {
        struct parse_state *st = stream;
        char *r;
        size_t n;

        r = fgets(str, num, st->f);
        if (!r)
                return NULL;
        if (st->at_line_start)
                st->line++;
        n = strlen(str);
        st->at_line_start = n > 0 && str[n - 1] == '\n';
        if (!st->at_line_start && !feof(st->f)) {
                st->line_too_long = true;
                parse_fail(st, -EINVAL, "line is longer than %d characters", num - 2);
                return NULL;
        }
        return r;
}

static int handle_daemon(struct parse_state *st, const char *key, const char *value) {
        char *p;

        if (!streq(key, "state_directory")) {
                parse_fail(st, -ENOENT, "unknown key '%s' in section [daemon]; known: state_directory", key);
                return 0;
        }
        if (value[0] != '/') {
                parse_fail(st, -EINVAL, "state_directory must be an absolute path, not '%s'", value);
                return 0;
        }
        p = strdup(value);
        if (!p) {
                parse_fail(st, -ENOMEM, "out of memory");
                return 0;
        }
        free(st->config->state_directory);
        st->config->state_directory = p;
        return 1;
}

#define MND_AUDIT_MAX_SIZE_MB_MAX 1048576u   /* 1 TiB */

static int handle_audit(struct parse_state *st, const char *key, const char *value) {
        uint32_t v;

        if (!streq(key, "max_size_mb")) {
                parse_fail(st, -ENOENT, "unknown key '%s' in section [audit]; known: max_size_mb", key);
                return 0;
        }
        if (parse_u32(value, &v) < 0 || v == 0 || v > MND_AUDIT_MAX_SIZE_MB_MAX) {
                parse_fail(st, -EINVAL, "max_size_mb must be a whole number of megabytes from 1 to %u, not '%s'",
                           MND_AUDIT_MAX_SIZE_MB_MAX, value);
                return 0;
        }
        st->config->audit_max_size = (uint64_t) v * 1024 * 1024;
        return 1;
}

static int handle_link(struct parse_state *st, const char *key, const char *value) {
        static const struct {
                const char *key;
                size_t offset;
        } keys[] = {
                { "heartbeat_ms",    offsetof(struct mnd_link_settings, heartbeat_ms) },
                { "lease_ms",        offsetof(struct mnd_link_settings, lease_ms) },
                { "retransmit_ms",   offsetof(struct mnd_link_settings, retransmit_ms) },
                { "retries",         offsetof(struct mnd_link_settings, retries) },
                { "peer_timeout_ms", offsetof(struct mnd_link_settings, peer_timeout_ms) },
        };
        uint32_t v;

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (!streq(key, keys[i].key))
                        continue;
                if (parse_u32(value, &v) < 0) {
                        parse_fail(st, -EINVAL, "%s must be an unsigned decimal integer, not '%s'", key, value);
                        return 0;
                }
                if (v > 60000) {
                        parse_fail(st, -ERANGE, "%s %" PRIu32 " is above 60000", key, v);
                        return 0;
                }
                memcpy((uint8_t *) &st->config->link + keys[i].offset, &v, sizeof(v));
                return 1;
        }
        parse_fail(st, -ENOENT, "unknown key '%s' in section [link]; known: heartbeat_ms, lease_ms, "
                   "retransmit_ms, retries, peer_timeout_ms", key);
        return 0;
}

static int handle_pens(struct parse_state *st, const char *key, const char *value) {
        enum mnp_transport kind;
        uint16_t vid, pid;
        int r;

        if (streq(key, "usb"))
                kind = MNP_TRANSPORT_USB;
        else if (streq(key, "serial"))
                kind = MNP_TRANSPORT_SERIAL;
        else {
                parse_fail(st, -ENOENT, "unknown key '%s' in section [pens]; known: usb, serial", key);
                return 0;
        }
        if (parse_vid_pid(value, &vid, &pid) < 0) {
                parse_fail(st, -EINVAL, "%s must be VENDOR:PRODUCT in hex (e.g. 1209:0001), not '%s'", key, value);
                return 0;
        }
        r = mnd_id_table_add(&st->config->ids, vid, pid, kind);
        if (r == -EEXIST) {
                parse_fail(st, r, "%04x:%04x is already in the pen table (built in, or listed twice)", vid, pid);
                return 0;
        }
        if (r == -E2BIG) {
                parse_fail(st, r, "too many pen ids: the table holds %d", MND_ID_TABLE_MAX);
                return 0;
        }
        if (r < 0) {
                parse_fail(st, r, "cannot add %04x:%04x to the pen table: %s", vid, pid, strerror(-r));
                return 0;
        }
        return 1;
}

static int config_handler(void *userdata, const char *section, const char *key, const char *value) {
        struct parse_state *st = userdata;
        char reason[MNP_REASON_MAX];
        int r;

        if (st->error < 0)
                return 0;
        if (isempty(section)) {
                parse_fail(st, -ENOENT, "key '%s' is outside any section", key);
                return 0;
        }
        if (streq(section, "daemon"))
                return handle_daemon(st, key, value);
        if (streq(section, "link"))
                return handle_link(st, key, value);
        if (streq(section, "pens"))
                return handle_pens(st, key, value);
        if (streq(section, "audit"))
                return handle_audit(st, key, value);
        if (streq(section, "limits") || strncmp(section, "area.", 5) == 0) {
                /* libmnp knows the keys and areas and refuses raises; its reason is the message. */
                r = mnp_limits_apply(&st->config->limits, section, key, value, 0, reason, sizeof(reason));
                if (r < 0) {
                        parse_fail(st, r, "%s", reason);
                        return 0;
                }
                return 1;
        }
        parse_fail(st, -ENOENT, "unknown section [%s]; known: [daemon], [link], [pens], [audit], [limits], [area.<id>]",
                   section);
        return 0;
}

int mnd_config_load(struct mnd_config *c, const char *path, bool must_exist, char **ret_error) {
        _cleanup_(fclosep) FILE *f = NULL;
        struct parse_state st = {
                .config = c,
                .path = path,
                .at_line_start = true,
        };
        char reason[256];
        int r;

        f = fopen(path, "re");
        if (!f) {
                r = -errno;
                if (r == -ENOENT && !must_exist) {
                        log_debug("No configuration file %s, using the defaults.", path);
                        return 0;
                }
                if (ret_error && asprintf(ret_error, "%s: cannot open: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        st.f = f;

        /* Our own rules: stop at the first problem, no continuation lines. */
        ini_stop_on_first_error = true;
        ini_allow_multiline = false;

        r = ini_parse_stream(counting_reader, &st, config_handler, &st);
        if (st.error >= 0 && ferror(f)) {
                st.line++;
                parse_fail(&st, -EIO, "read error");
        }
        if (st.error >= 0 && r > 0) {
                /* A syntax error inih found itself (no handler was called for it). */
                st.line = (unsigned) r;
                parse_fail(&st, -EINVAL, "syntax error: expected '[section]', 'key = value' or a comment");
        }
        if (st.error >= 0 && r < 0)
                parse_fail(&st, r == -2 ? -ENOMEM : -EIO, "cannot parse the file");
        if (st.error >= 0 && mnd_link_settings_check(&c->link, reason, sizeof(reason)) < 0) {
                /* Not tied to a line: the values only conflict together. */
                free(st.message);
                if (asprintf(&st.message, "%s: [link] %s", path, reason) < 0)
                        st.message = NULL;
                st.error = -EINVAL;
        }
        if (st.error < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(st.message);
                free(st.message);
                return st.error;
        }

        free(c->path);
        c->path = strdup(path);
        if (!c->path)
                return -ENOMEM;

        if (c->link.lease_ms + c->link.heartbeat_ms > MND_LINK_SAFE_STOP_MS)
                log_warning("%s: [link] lease_ms + heartbeat_ms = %" PRIu32 " ms: a pen whose host died may run "
                            "longer than the recommended %u ms.", path, c->link.lease_ms + c->link.heartbeat_ms,
                            MND_LINK_SAFE_STOP_MS);
        return 0;
}
