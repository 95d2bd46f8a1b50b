/* SPDX-License-Identifier: GPL-2.0-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "audit-events.h"
#include "util.h"

/* ---- building ---- */

void mnd_audit_build(struct mnd_audit_event_buf *b, const char *kind) {
        memset(b, 0, sizeof(*b));
        b->event = MND_AUDIT_EVENT_INIT;
        b->event.kind = kind;
        b->event.details = b->details;
}

void mnd_audit_build_detail(struct mnd_audit_event_buf *b, const char *key, const char *fmt, ...) {
        size_t i = b->event.n_details;
        va_list ap;

        if (i >= MND_AUDIT_EVENT_DETAILS_MAX)
                return;
        va_start(ap, fmt);
        vsnprintf(b->text[i], sizeof(b->text[i]), fmt, ap);
        va_end(ap);
        b->details[i] = (struct mnd_audit_detail) { .key = key, .value = b->text[i] };
        b->event.n_details = i + 1;
}

void mnd_audit_build_message(struct mnd_audit_event_buf *b, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(b->message, sizeof(b->message), fmt, ap);
        va_end(ap);
        b->event.message = b->message;
}

void mnd_audit_build_caller(struct mnd_audit_event_buf *b, const struct mnd_audit_caller *c) {
        if (!c)
                return;
        b->event.uid = c->uid;
        b->event.user = c->user;
        b->event.sender = c->sender;
}

void mnd_audit_build_daemon_start(struct mnd_audit_event_buf *b, const char *version, const char *config_path,
                                  const char *config_hash) {
        mnd_audit_build(b, MND_AUDIT_DAEMON_START);
        mnd_audit_build_detail(b, "version", "%s", strempty(version));
        mnd_audit_build_detail(b, "config", "%s", isempty(config_path) ? "(none)" : config_path);
        mnd_audit_build_detail(b, "config_sha256", "%s", strempty(config_hash));
        mnd_audit_build_detail(b, "pid", "%d", (int) getpid());
}

void mnd_audit_build_daemon_stop(struct mnd_audit_event_buf *b, const char *version, const char *reason) {
        mnd_audit_build(b, MND_AUDIT_DAEMON_STOP);
        mnd_audit_build_detail(b, "version", "%s", strempty(version));
        if (!isempty(reason))
                mnd_audit_build_message(b, "%s", reason);
}

void mnd_audit_build_config_change(struct mnd_audit_event_buf *b, const char *config_path, const char *old_hash,
                                   const char *new_hash) {
        mnd_audit_build(b, MND_AUDIT_CONFIG_CHANGE);
        mnd_audit_build_detail(b, "config", "%s", isempty(config_path) ? "(none)" : config_path);
        mnd_audit_build_detail(b, "old_sha256", "%s", strempty(old_hash));
        mnd_audit_build_detail(b, "config_sha256", "%s", strempty(new_hash));
        mnd_audit_build_message(b, isempty(old_hash) ? "first recorded configuration"
                                                     : "the configuration changed since it was last recorded");
}

void mnd_audit_build_pen_connected(struct mnd_audit_event_buf *b, const char *serial, const char *model,
                                   const char *firmware, const char *transport) {
        mnd_audit_build(b, MND_AUDIT_PEN_CONNECTED);
        b->event.pen = serial;
        mnd_audit_build_detail(b, "model", "%s", strempty(model));
        mnd_audit_build_detail(b, "firmware", "%s", strempty(firmware));
        mnd_audit_build_detail(b, "transport", "%s", strempty(transport));
}

void mnd_audit_build_pen_disconnected(struct mnd_audit_event_buf *b, const char *serial, const char *reason) {
        mnd_audit_build(b, MND_AUDIT_PEN_DISCONNECTED);
        b->event.pen = serial;
        if (!isempty(reason))
                mnd_audit_build_message(b, "%s", reason);
}

void mnd_audit_build_cartridge(struct mnd_audit_event_buf *b, bool inserted, const char *serial,
                               const char *cartridge, uint64_t session) {
        mnd_audit_build(b, inserted ? MND_AUDIT_CARTRIDGE_INSERTED : MND_AUDIT_CARTRIDGE_REMOVED);
        b->event.pen = serial;
        b->event.cartridge = cartridge;
        b->event.session = session;
}

static void set_session(struct mnd_audit_event_buf *b, const struct mnd_audit_session_info *s) {
        b->event.session = s->id;
        b->event.pen = s->pen;
        b->event.area = s->area;
        b->event.cartridge = s->cartridge;
        b->event.operator = s->operator_name;
        b->event.depth_um = s->depth_um;
        b->event.speed_hz = s->speed_hz;
        b->event.duration_s = s->planned_duration_s;
}

void mnd_audit_build_session_start(struct mnd_audit_event_buf *b, const struct mnd_audit_session_info *s,
                                   const struct mnd_audit_caller *caller) {
        mnd_audit_build(b, MND_AUDIT_SESSION_START);
        set_session(b, s);
        b->event.patient_ref = s->patient_ref;
        mnd_audit_build_caller(b, caller);
}

void mnd_audit_build_session_end(struct mnd_audit_event_buf *b, const struct mnd_audit_session_info *s,
                                 const char *state, const char *reason, uint64_t needling_ms) {
        mnd_audit_build(b, MND_AUDIT_SESSION_END);
        set_session(b, s);
        /* The operator is on the start; the end says how it ended and with which setpoints. */
        b->event.operator = NULL;
        mnd_audit_build_message(b, "%s", strempty(reason));
        mnd_audit_build_detail(b, "state", "%s", strempty(state));
        mnd_audit_build_detail(b, "needling_ms", "%" PRIu64, needling_ms);
}

void mnd_audit_build_setpoint(struct mnd_audit_event_buf *b, const char *serial, uint64_t session,
                              const char *area, uint32_t depth_um, uint32_t speed_hz,
                              const struct mnd_audit_caller *caller) {
        mnd_audit_build(b, MND_AUDIT_SETPOINT_CHANGE);
        b->event.pen = serial;
        b->event.session = session;
        b->event.area = area;
        b->event.depth_um = depth_um;
        b->event.speed_hz = speed_hz;
        mnd_audit_build_caller(b, caller);
}

void mnd_audit_build_refusal(struct mnd_audit_event_buf *b, const char *serial, uint64_t session,
                             const char *request, const char *area, uint32_t depth_um, uint32_t speed_hz,
                             uint32_t duration_s, const char *error, const char *sentence,
                             const struct mnd_audit_caller *caller) {
        mnd_audit_build(b, MND_AUDIT_REFUSAL);
        b->event.pen = serial;
        b->event.session = session;
        b->event.area = area;
        b->event.depth_um = depth_um;
        b->event.speed_hz = speed_hz;
        b->event.duration_s = duration_s;
        mnd_audit_build_message(b, "%s", strempty(sentence));
        mnd_audit_build_detail(b, "request", "%s", strempty(request));
        mnd_audit_build_detail(b, "error", "%s", strempty(error));
        mnd_audit_build_caller(b, caller);
}

void mnd_audit_build_fault(struct mnd_audit_event_buf *b, const char *serial, uint64_t session, const char *code,
                           const char *sentence) {
        mnd_audit_build(b, MND_AUDIT_FAULT);
        b->event.pen = serial;
        b->event.session = session;
        mnd_audit_build_detail(b, "code", "%s", strempty(code));
        if (!isempty(sentence))
                mnd_audit_build_message(b, "%s", sentence);
}

void mnd_audit_build_lease_expired(struct mnd_audit_event_buf *b, const char *serial, uint64_t session) {
        mnd_audit_build(b, MND_AUDIT_LEASE_EXPIRED);
        b->event.pen = serial;
        b->event.session = session;
        mnd_audit_build_message(b, "the pen's lease expired: it stopped its needles by itself");
}

void mnd_audit_build_auth_failure(struct mnd_audit_event_buf *b, const char *action, const char *request,
                                  const char *sentence, unsigned suppressed, const struct mnd_audit_caller *caller) {
        mnd_audit_build(b, MND_AUDIT_AUTH_FAILURE);
        mnd_audit_build_detail(b, "action", "%s", strempty(action));
        mnd_audit_build_detail(b, "request", "%s", strempty(request));
        if (suppressed > 0)
                mnd_audit_build_detail(b, "suppressed_before", "%u", suppressed);
        if (!isempty(sentence))
                mnd_audit_build_message(b, "%s", sentence);
        mnd_audit_build_caller(b, caller);
}

void mnd_audit_build_stop(struct mnd_audit_event_buf *b, const char *serial, uint64_t session, const char *request,
                          const struct mnd_audit_caller *caller) {
        mnd_audit_build(b, MND_AUDIT_STOP);
        b->event.pen = serial;
        b->event.session = session;
        mnd_audit_build_detail(b, "request", "%s", strempty(request));
        mnd_audit_build_caller(b, caller);
}

void mnd_audit_build_verify(struct mnd_audit_event_buf *b, const struct mnd_audit_verify_result *v,
                            const struct mnd_audit_caller *caller) {
        mnd_audit_build(b, MND_AUDIT_VERIFY);
        mnd_audit_build_detail(b, "ok", "%s", v->ok ? "true" : "false");
        mnd_audit_build_detail(b, "count", "%" PRIu64, v->count);
        mnd_audit_build_detail(b, "first_bad_seq", "%" PRIu64, v->first_bad_seq);
        mnd_audit_build_detail(b, "head_hash", "%s", v->head);
        if (v->ok)
                mnd_audit_build_message(b, "the chain of %" PRIu64 " events verified", v->count);
        else
                mnd_audit_build_message(b, "the chain does NOT verify: first bad event %" PRIu64 " of %" PRIu64,
                                        v->first_bad_seq, v->count);
        mnd_audit_build_caller(b, caller);
}

/* ---- the journal ---- */

/* Fixed for ever: a log reader (journalctl MESSAGE_ID=...) relies on them. */
static const struct {
        const char *kind;
        const char *id;
        int priority;
} kinds[] = {
        { MND_AUDIT_DAEMON_START,       "99a58813d0f44c96a8754764efc03d72", LOG_INFO },
        { MND_AUDIT_DAEMON_STOP,        "959c7c339d7e4c68a6819f2a58dd3888", LOG_INFO },
        { MND_AUDIT_PEN_CONNECTED,      "0634645f5e00435c8eed8f17dce1bd4f", LOG_INFO },
        { MND_AUDIT_PEN_DISCONNECTED,   "ea809e821470408f9e01ee02477f8301", LOG_INFO },
        { MND_AUDIT_CARTRIDGE_INSERTED, "824e5ce2ed6f499697bf4574668b0a00", LOG_INFO },
        { MND_AUDIT_CARTRIDGE_REMOVED,  "0223e55be63c499383a8711eaa853589", LOG_INFO },
        { MND_AUDIT_SESSION_START,      "eed2b695e78d403fb090c3035989ff31", LOG_INFO },
        { MND_AUDIT_SETPOINT_CHANGE,    "2db1f8fef117480ba9b6894d1670820c", LOG_INFO },
        { MND_AUDIT_SESSION_END,        "6b3e9f92a827425ab218708768f04206", LOG_INFO },
        { MND_AUDIT_REFUSAL,            "a7d01b22f9f04934bd4a86416d1d58f8", LOG_NOTICE },
        { MND_AUDIT_FAULT,              "23bcaa7213fc4a22a98c5ce98266c19a", LOG_WARNING },
        { MND_AUDIT_LEASE_EXPIRED,      "8aae183418ee4eabb64de8a9ac1b979e", LOG_WARNING },
        { MND_AUDIT_AUTH_FAILURE,       "504041c33cf34f0d9d7e582c57f669ca", LOG_NOTICE },
        { MND_AUDIT_CONFIG_CHANGE,      "1565dfc9507446a185d28d7dfdbd4aeb", LOG_NOTICE },
        { MND_AUDIT_VERIFY,             "09cc7367478a4a6b9293f8b9dfcc15d5", LOG_INFO },
        { MND_AUDIT_STOP,               "99615a69fe2a4a63a4992891cf5f6e27", LOG_INFO },
        { MND_AUDIT_FAULT_CLEARED,      "adb8e5a69199435f839e0d49124868c3", LOG_INFO },
        { MND_AUDIT_LEGACY_IMPORT,      "8f1965ef1ff045088906e3e8ecb10cb1", LOG_NOTICE },
};
#define MESSAGE_ID_OTHER "1047e888b46c4100bddae11812e2fc77"

const char *mnd_audit_message_id(const char *kind) {
        for (size_t i = 0; kind && i < ELEMENTSOF(kinds); i++)
                if (streq(kinds[i].kind, kind))
                        return kinds[i].id;
        return MESSAGE_ID_OTHER;
}

int mnd_audit_journal_priority(const char *kind) {
        for (size_t i = 0; kind && i < ELEMENTSOF(kinds); i++)
                if (streq(kinds[i].kind, kind))
                        return kinds[i].priority;
        return LOG_INFO;
}

char **mnd_strv_free(char **l) {
        for (char **p = l; p && *p; p++)
                free(*p);
        free(l);
        return NULL;
}

struct strv_builder {
        char **l;
        size_t n, allocated;
        int error;
};

static void strv_addf(struct strv_builder *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void strv_addf(struct strv_builder *sb, const char *fmt, ...) {
        va_list ap;
        char *s;

        if (sb->error < 0)
                return;
        if (sb->n + 2 > sb->allocated) {
                size_t a = sb->allocated ? sb->allocated * 2 : 32;
                char **p = reallocarray(sb->l, a, sizeof(char *));

                if (!p) {
                        sb->error = -ENOMEM;
                        return;
                }
                sb->l = p;
                sb->allocated = a;
        }
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) < 0) {
                sb->error = -ENOMEM;
                va_end(ap);
                return;
        }
        va_end(ap);
        sb->l[sb->n++] = s;
        sb->l[sb->n] = NULL;
}

/* "MND_AUDIT_DETAIL_" + key upper-cased, [-.] as '_' (journal field names: [A-Z0-9_]). */
static void journal_key(const char *key, char *buf, size_t size) {
        size_t n = 0;

        for (const char *p = key; *p && n + 1 < size; p++) {
                char c = *p;

                if (c >= 'a' && c <= 'z')
                        c = (char) (c - 'a' + 'A');
                else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
                        c = '_';
                buf[n++] = c;
        }
        buf[n] = '\0';
}

static void summary(const struct mnd_audit_event *e, uint64_t seq, char *buf, size_t size) {
        FILE *f = fmemopen(buf, size, "w");

        if (!f) {
                snprintf(buf, size, "Audit event %" PRIu64 ": %s.", seq, e->kind);
                return;
        }
        fprintf(f, "Audit event %" PRIu64 ": %s", seq, e->kind);
        if (e->session)
                fprintf(f, ", session %" PRIu64, e->session);
        if (!isempty(e->pen))
                fprintf(f, ", pen %s", e->pen);
        if (!isempty(e->area))
                fprintf(f, ", area %s", e->area);
        if (e->depth_um != MND_AUDIT_UNSET)
                fprintf(f, ", %" PRIu32 " um", e->depth_um);
        if (e->speed_hz != MND_AUDIT_UNSET)
                fprintf(f, ", %" PRIu32 " Hz", e->speed_hz);
        if (e->duration_s != MND_AUDIT_UNSET)
                fprintf(f, ", %" PRIu32 " s", e->duration_s);
        if (!isempty(e->cartridge))
                fprintf(f, ", cartridge %s", e->cartridge);
        if (e->uid != MND_AUDIT_UNSET)
                fprintf(f, ", by uid %" PRIu32 "%s%s%s", e->uid, isempty(e->user) ? "" : " (",
                        strempty(e->user), isempty(e->user) ? "" : ")");
        if (!isempty(e->message))
                fprintf(f, ": %s", e->message);
        fputc('.', f);
        fputc('\0', f);
        fclose(f);
        buf[size - 1] = '\0';
}

int mnd_audit_journal_fields(const struct mnd_audit_event *e, uint64_t seq, const char *hash, char ***ret) {
        struct strv_builder sb = {};
        char text[1024];

        strv_addf(&sb, "MESSAGE_ID=%s", mnd_audit_message_id(e->kind));
        strv_addf(&sb, "PRIORITY=%d", mnd_audit_journal_priority(e->kind));
        summary(e, seq, text, sizeof(text));
        strv_addf(&sb, "MESSAGE=%s", text);
        strv_addf(&sb, "MND_AUDIT_SEQ=%" PRIu64, seq);
        strv_addf(&sb, "MND_AUDIT_KIND=%s", e->kind);
        if (!isempty(hash))
                strv_addf(&sb, "MND_AUDIT_HASH=%s", hash);
        if (e->time_usec)
                strv_addf(&sb, "MND_AUDIT_TIME=%" PRIu64, e->time_usec);
        if (!isempty(e->pen))
                strv_addf(&sb, "MND_AUDIT_PEN=%s", e->pen);
        if (e->session)
                strv_addf(&sb, "MND_AUDIT_SESSION=%" PRIu64, e->session);
        if (!isempty(e->cartridge))
                strv_addf(&sb, "MND_AUDIT_CARTRIDGE=%s", e->cartridge);
        if (!isempty(e->area))
                strv_addf(&sb, "MND_AUDIT_AREA=%s", e->area);
        if (e->depth_um != MND_AUDIT_UNSET)
                strv_addf(&sb, "MND_AUDIT_DEPTH_UM=%" PRIu32, e->depth_um);
        if (e->speed_hz != MND_AUDIT_UNSET)
                strv_addf(&sb, "MND_AUDIT_SPEED_HZ=%" PRIu32, e->speed_hz);
        if (e->duration_s != MND_AUDIT_UNSET)
                strv_addf(&sb, "MND_AUDIT_DURATION_S=%" PRIu32, e->duration_s);
        if (!isempty(e->operator))
                strv_addf(&sb, "MND_AUDIT_OPERATOR=%s", e->operator);
        /* e->patient_ref: never in the journal. */
        if (e->uid != MND_AUDIT_UNSET)
                strv_addf(&sb, "MND_AUDIT_UID=%" PRIu32, e->uid);
        if (!isempty(e->user))
                strv_addf(&sb, "MND_AUDIT_USER=%s", e->user);
        if (!isempty(e->sender))
                strv_addf(&sb, "MND_AUDIT_SENDER=%s", e->sender);
        if (!isempty(e->message))
                strv_addf(&sb, "MND_AUDIT_MESSAGE=%s", e->message);
        for (size_t i = 0; i < e->n_details; i++) {
                char key[MND_AUDIT_DETAIL_KEY_MAX + 1];

                journal_key(e->details[i].key, key, sizeof(key));
                strv_addf(&sb, "MND_AUDIT_DETAIL_%s=%s", key, strempty(e->details[i].value));
        }
        if (sb.error < 0) {
                mnd_strv_free(sb.l);
                return sb.error;
        }
        *ret = sb.l;
        return 0;
}

/* ---- rate limit ---- */

bool mnd_ratelimit_below(struct mnd_ratelimit *rl, uint64_t now) {
        if (rl->begin == 0 || now < rl->begin || now - rl->begin >= rl->interval_usec) {
                rl->begin = now;
                rl->num = 0;
        }
        if (rl->num < rl->burst) {
                rl->num++;
                return true;
        }
        rl->suppressed++;
        return false;
}

unsigned mnd_ratelimit_take_suppressed(struct mnd_ratelimit *rl) {
        unsigned n = rl->suppressed;

        rl->suppressed = 0;
        return n;
}

/* ---- misc ---- */

bool mnd_cartridge_id_is_valid(const char *id) {
        size_t n;

        if (!id)
                return false;
        n = strlen(id);
        if (n == 0 || n > MND_CARTRIDGE_ID_MAX)
                return false;
        for (size_t i = 0; i < n; i++)
                if (id[i] < 0x21 || id[i] > 0x7e)
                        return false;
        return true;
}
