/* SPDX-License-Identifier: GPL-2.0-or-later */
/* /org/microneedle/Mnd1/pen/<serial>: org.microneedle.Mnd1.Pen, one object per connected pen. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit-trail.h"
#include "auth.h"
#include "bus-error.h"
#include "bus-options.h"
#include "log.h"
#include "manager.h"
#include "text.h"

/* ---- properties ---- */

static int property_get_identity_string(sd_bus *bus, const char *path, const char *interface,
                                        const char *property, sd_bus_message *reply, void *userdata,
                                        sd_bus_error *error) {
        struct mnd_pen *pen = userdata;
        const char *v = "";

        if (pen) {
                if (streq(property, "Serial"))
                        v = pen->identity.serial;
                else if (streq(property, "Model"))
                        v = pen->identity.model;
                else if (streq(property, "Firmware"))
                        v = pen->identity.firmware;
                else if (streq(property, "Transport"))
                        v = mnp_transport_name(pen->identity.kind);
        }
        return sd_bus_message_append(reply, "s", v);
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", mnd_pen_state_string(userdata));
}

static int property_get_status_u(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const struct mnd_pen_status *st = userdata ? mnd_pen_status(userdata) : NULL;
        uint32_t v = 0;

        if (st) {
                struct mnd_pen *pen = userdata;

                if (streq(property, "DepthUm"))
                        v = pen->depth_um;
                else if (streq(property, "SpeedHz"))
                        v = pen->speed_hz;
                else if (streq(property, "ActualDepthUm"))
                        v = st->depth_actual_um;
                else if (streq(property, "ActualSpeedHz"))
                        v = st->speed_actual_hz;
        }
        return sd_bus_message_append(reply, "u", v);
}

static int property_get_depth_range(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen = userdata;
        const struct mnp_pen_range *r = pen ? &pen->identity.range : &(struct mnp_pen_range) {};

        return sd_bus_message_append(reply, "(uuu)", r->depth_min_um, r->depth_max_um, r->depth_step_um);
}

static int property_get_speed_range(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen = userdata;
        const struct mnp_pen_range *r = pen ? &pen->identity.range : &(struct mnp_pen_range) {};

        return sd_bus_message_append(reply, "(uu)", r->speed_min_hz, r->speed_max_hz);
}

static int property_get_cartridge(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const struct mnd_pen_status *st = userdata ? mnd_pen_status(userdata) : NULL;

        return sd_bus_message_append(reply, "s", st ? st->cartridge : "");
}

static int property_get_battery(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        const struct mnd_pen_status *st = userdata ? mnd_pen_status(userdata) : NULL;

        return sd_bus_message_append(reply, "y", st ? st->battery_percent : (uint8_t) 255);
}

static int property_get_session(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen = userdata;

        return sd_bus_message_append(reply, "o", pen && pen->session ? pen->session->path : "/");
}

static int property_get_fault(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", userdata ? mnd_pen_fault_string(userdata) : "");
}

/* ---- commands that wait for the pen ---- */

struct pen_op {
        struct mnd_pen *pen;
        sd_bus_message *message;
        char what[64];
        enum {
                PEN_OP_OTHER,
                PEN_OP_DEPTH,
                PEN_OP_SPEED,
                PEN_OP_CLEAR_FAULT,
        } kind;
        uint32_t value;
};

static struct pen_op *pen_op_free(struct pen_op *op) {
        if (!op)
                return NULL;
        sd_bus_message_unref(op->message);
        return mfree(op);
}

static struct pen_op *pen_op_new(struct mnd_pen *pen, sd_bus_message *message, const char *what) {
        struct pen_op *op = calloc(1, sizeof(*op));

        if (!op)
                return NULL;
        op->pen = pen;
        op->message = sd_bus_message_ref(message);
        snprintf(op->what, sizeof(op->what), "%s", what);
        return op;
}

/* A command's completion: reply only now, when the pen acknowledged (or refused). */
static void pen_op_done(struct mnd_pen_link *l, int error, const char *message, void *userdata) {
        struct pen_op *op = userdata;
        struct mnd_pen *pen = op->pen;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        if (error == -ECANCELED && pen->gone)
                error = -ENODEV;        /* cancelled because the pen went away */
        if (error == 0) {
                log_info("Pen %s: %s: done.", pen->identity.serial, op->what);
                if (op->kind == PEN_OP_DEPTH)
                        mnd_pen_set_setpoints(pen, op->value, pen->speed_hz);
                else if (op->kind == PEN_OP_SPEED)
                        mnd_pen_set_setpoints(pen, pen->depth_um, op->value);
                else if (op->kind == PEN_OP_CLEAR_FAULT) {
                        struct mnd_audit_caller caller;
                        struct mnd_audit_event_buf b;

                        mnd_audit_caller_from_message(op->message, &caller);
                        mnd_audit_build(&b, MND_AUDIT_FAULT_CLEARED);
                        b.event.pen = pen->identity.serial;
                        mnd_audit_build_caller(&b, &caller);
                        (void) mnd_audit_record(pen->manager, &b, false);
                }
                (void) sd_bus_reply_method_return(op->message, NULL);
        } else {
                mnd_bus_error_set_pen(&e, error, pen->identity.serial, op->what, message);
                log_notice("Pen %s: %s failed: %s", pen->identity.serial, op->what, e.message);
                /* The setpoint record went first; that the pen did not take it follows. */
                mnd_audit_record_refusal(pen->manager, op->message, pen->identity.serial,
                                         pen->session ? pen->session->id : 0, sd_bus_message_get_member(op->message),
                                         mnd_pen_current_area(pen),
                                         op->kind == PEN_OP_DEPTH ? op->value : MND_AUDIT_UNSET,
                                         op->kind == PEN_OP_SPEED ? op->value : MND_AUDIT_UNSET, MND_AUDIT_UNSET, &e);
                (void) sd_bus_reply_method_error(op->message, &e);
        }
        pen_op_free(op);
}

/*
 * The operate methods run in two halves: method_*() validate the arguments and ask for
 * authorisation (auth.h); *_authorised() do the rest once the caller is authorised, possibly later,
 * when polkit answered.  The pen may have gone meanwhile, so the second half finds it again from
 * the call's path (and its userdata is the manager, which lives as long as any call).
 */
static int pen_of_call(struct mnd_manager *m, sd_bus_message *message, struct mnd_pen **ret, sd_bus_error *error) {
        _cleanup_(freep) char *serial = NULL;
        const char *path = sd_bus_message_get_path(message);

        for (struct mnd_pen *p = m->pens; p; p = p->next)
                if (p->path && path && streq(p->path, path)) {
                        *ret = p;
                        return 0;
                }
        if (!path || sd_bus_path_decode(path, MND_PEN_PATH_PREFIX, &serial) <= 0)
                return sd_bus_error_setf(error, MND_ERROR_NOT_CONNECTED, "the pen is not connected any more");
        return sd_bus_error_setf(error, MND_ERROR_NOT_CONNECTED, "pen %s is not connected any more", serial);
}

/* Not shutting down, connected: the common gate of the operate methods (after authorisation). */
static int pen_check_operable(struct mnd_pen *pen, sd_bus_message *message, sd_bus_error *error) {
        if (pen->manager->shutting_down)
                return sd_bus_error_setf(error, MND_ERROR_BUSY, "the daemon is shutting down");
        if (pen->gone || !pen->link || !mnd_pen_status(pen) || !pen->ready)
                return sd_bus_error_setf(error, MND_ERROR_NOT_CONNECTED, "pen %s is not connected",
                                         pen->identity.serial);
        return 0;
}

/* Records the refusal already in error (unless it is an authorisation failure, which auth.c
 * records) and returns r. */
static int refuse(struct mnd_pen *pen, sd_bus_message *message, int r, sd_bus_error *error, const char *area,
                  uint32_t depth_um, uint32_t speed_hz, uint32_t duration_s) {
        if (!sd_bus_error_is_set(error) || sd_bus_error_has_name(error, SD_BUS_ERROR_ACCESS_DENIED))
                return r;
        mnd_audit_record_refusal(pen->manager, message, pen->identity.serial, pen->session ? pen->session->id : 0,
                                 sd_bus_message_get_member(message), area, depth_um, speed_hz, duration_s, error);
        return r;
}

/* The write-ahead record of a setpoint change (depth_um or speed_hz MND_AUDIT_UNSET for the other). */
static int setpoint_write_ahead(struct mnd_pen *pen, sd_bus_message *message, uint32_t depth_um, uint32_t speed_hz,
                                const char *what, sd_bus_error *error) {
        struct mnd_audit_caller caller;
        struct mnd_audit_event_buf b;

        mnd_audit_caller_from_message(message, &caller);
        mnd_audit_build_setpoint(&b, pen->identity.serial, pen->session ? pen->session->id : 0,
                                 mnd_pen_current_area(pen), depth_um, speed_hz, &caller);
        return mnd_audit_write_ahead(pen->manager, &b, what, "nothing was sent to the pen", error);
}

/* What SetDepth and SetSpeed differ in. */
struct setpoint {
        bool depth;             /* the depth (µm), else the speed (Hz) */
        int (*check)(const struct mnp_limits *l, const struct mnp_pen_range *pen, const char *area, uint32_t value,
                     char *reason, size_t size);
        int (*set)(struct mnd_pen_link *l, uint32_t value, mnd_pen_done_fn done, void *userdata);
};

static const struct setpoint setpoint_depth = { true, mnp_check_depth, mnd_pen_link_set_depth };
static const struct setpoint setpoint_speed = { false, mnp_check_speed, mnd_pen_link_set_speed };

static int set_setpoint_authorised(const struct setpoint *sp, sd_bus_message *message, void *userdata,
                                   sd_bus_error *error) {
        struct mnd_pen *pen;
        char reason[MNP_REASON_MAX], what[64], mm[16];
        struct pen_op *op;
        uint32_t value, depth, speed;
        int r;

        r = sd_bus_message_read(message, "u", &value);
        if (r < 0)
                return r;
        depth = sp->depth ? value : MND_AUDIT_UNSET;
        speed = sp->depth ? MND_AUDIT_UNSET : value;
        r = pen_of_call(userdata, message, &pen, error);
        if (r < 0)
                return r;
        r = pen_check_operable(pen, message, error);
        if (r < 0)
                return refuse(pen, message, r, error, mnd_pen_current_area(pen), depth, speed, MND_AUDIT_UNSET);

        /* Every limit at once, before anything is sent: pen range, absolute, clinic, session area. */
        r = sp->check(&pen->manager->config->limits, &pen->identity.range, mnd_pen_current_area(pen), value,
                      reason, sizeof(reason));
        if (r < 0) {
                log_notice("Pen %s: refused %s %" PRIu32 " %s: %s", pen->identity.serial,
                           sp->depth ? "depth" : "speed", value, sp->depth ? "um" : "Hz", reason);
                return refuse(pen, message, mnd_bus_error_set_limit(error, r, reason), error,
                              mnd_pen_current_area(pen), depth, speed, MND_AUDIT_UNSET);
        }

        if (sp->depth)
                snprintf(what, sizeof(what), "set depth to %s", mnp_format_depth(value, mm, sizeof(mm)));
        else
                snprintf(what, sizeof(what), "set speed to %" PRIu32 " Hz", value);
        /* On the trail, durably, before the pen is told. */
        r = setpoint_write_ahead(pen, message, depth, speed, what, error);
        if (r < 0)
                return r;
        op = pen_op_new(pen, message, what);
        if (!op)
                return -ENOMEM;
        op->kind = sp->depth ? PEN_OP_DEPTH : PEN_OP_SPEED;
        op->value = value;
        r = sp->set(pen->link, value, pen_op_done, op);
        if (r < 0) {
                pen_op_free(op);
                return mnd_bus_error_set_pen(error, r, pen->identity.serial, what, NULL);
        }
        return 1;
}

static int set_depth_authorised(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return set_setpoint_authorised(&setpoint_depth, message, userdata, error);
}

static int set_speed_authorised(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return set_setpoint_authorised(&setpoint_speed, message, userdata, error);
}

/* A well-typed value is all there is to validate before authorisation: the limits come after it
 * (an unauthorised caller learns nothing about them). */
static int method_set_setpoint(sd_bus_message *message, struct mnd_pen *pen, mnd_auth_continue_fn authorised,
                               sd_bus_error *error) {
        uint32_t value;
        int r;

        r = sd_bus_message_read(message, "u", &value);
        if (r < 0)
                return r;
        return mnd_auth_operate(pen->manager, message, authorised, pen->manager, error);
}

static int method_set_depth(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return method_set_setpoint(message, userdata, set_depth_authorised, error);
}

static int method_set_speed(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return method_set_setpoint(message, userdata, set_speed_authorised, error);
}

static int clear_fault_authorised(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen;
        struct pen_op *op;
        int r;

        r = pen_of_call(userdata, message, &pen, error);
        if (r < 0)
                return r;
        r = pen_check_operable(pen, message, error);
        if (r < 0)
                return refuse(pen, message, r, error, NULL, MND_AUDIT_UNSET, MND_AUDIT_UNSET, MND_AUDIT_UNSET);

        op = pen_op_new(pen, message, "clear the fault");
        if (!op)
                return -ENOMEM;
        op->kind = PEN_OP_CLEAR_FAULT;
        r = mnd_pen_link_clear_fault(pen->link, pen_op_done, op);
        if (r < 0) {
                pen_op_free(op);
                return mnd_bus_error_set_pen(error, r, pen->identity.serial, "clear the fault", NULL);
        }
        return 1;
}

static int method_clear_fault(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen = userdata;

        return mnd_auth_operate(pen->manager, message, clear_fault_authorised, pen->manager, error);
}

static void method_stop_done(struct mnd_pen *pen, int error, void *userdata) {
        sd_bus_message *message = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        if (mnd_bus_stop_result(&e, error, pen) < 0)
                (void) sd_bus_reply_method_error(message, &e);
        else
                (void) sd_bus_reply_method_return(message, NULL);
        sd_bus_message_unref(message);
}

/* Never refused: no authorisation, no state check.  Idempotent. */
static int method_stop(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen = userdata;

        uint64_t session = pen->session ? pen->session->id : 0;
        bool active = mnd_pen_is_active(pen);

        /* The pen first, before anything is logged or written; the session's end and the record
         * right after, whatever becomes of them (a failure is logged).  A Stop that stopped nothing
         * is recorded rate-limited: anyone may call it. */
        mnd_pen_stop_send(pen);
        log_info("Pen %s: Stop from %s.", pen->identity.serial, strempty(sd_bus_message_get_sender(message)));
        mnd_pen_stop_finish(pen, MND_SESSION_STOPPED, "stopped", method_stop_done, sd_bus_message_ref(message));
        mnd_audit_record_stop(pen->manager, message, pen->identity.serial, session, "Stop", active);
        return 1;
}

/* ---- StartSession ---- */

struct start_options {
        const char *area;
        uint32_t duration_s;
        uint32_t depth_um, speed_hz;
        bool has_depth, has_speed;
        const char *operator_name;
        const char *patient_ref;
};

static int check_option_text(const char *key, const char *value, size_t max, sd_bus_error *error) {
        int r = mnd_session_check_text(value, max);

        if (r == -E2BIG)
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                         "option '%s' is %zu bytes long; at most %zu are allowed", key,
                                         strlen(value), max);
        if (r < 0)
                return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                         "option '%s' contains control characters; only printable text is allowed",
                                         key);
        return 0;
}

enum {
        OPT_AREA,
        OPT_DURATION,
        OPT_DEPTH,
        OPT_SPEED,
        OPT_OPERATOR,
        OPT_PATIENT_REF,
        _OPT_MAX,
};

static int parse_start_options(sd_bus_message *message, struct start_options *o, sd_bus_error *error) {
        struct mnd_bus_option table[_OPT_MAX] = {
                [OPT_AREA]        = { "area",        "s", "string", &o->area, false },
                [OPT_DURATION]    = { "duration_s",  "u", "uint32", &o->duration_s, false },
                [OPT_DEPTH]       = { "depth_um",    "u", "uint32", &o->depth_um, false },
                [OPT_SPEED]       = { "speed_hz",    "u", "uint32", &o->speed_hz, false },
                [OPT_OPERATOR]    = { "operator",    "s", "string", &o->operator_name, false },
                [OPT_PATIENT_REF] = { "patient_ref", "s", "string", &o->patient_ref, false },
        };
        int r;

        r = mnd_bus_read_options(message, table, _OPT_MAX, "option",
                                 "the options are area (s), duration_s (u), depth_um (u), speed_hz (u), "
                                 "operator (s) and patient_ref (s)", error);
        if (r < 0)
                return r;

        for (unsigned i = OPT_AREA; i <= OPT_DURATION; i++)     /* the required ones */
                if (!table[i].seen)
                        return sd_bus_error_setf(error, MND_ERROR_INVALID_ARGUMENT,
                                                 "option '%s' (type '%s', %s) is required", table[i].key,
                                                 table[i].type, table[i].type_name);
        o->has_depth = table[OPT_DEPTH].seen;
        o->has_speed = table[OPT_SPEED].seen;

        r = check_option_text("area", o->area, MNP_AREA_ID_MAX - 1, error);
        if (r < 0) {
                if (sd_bus_error_has_name(error, MND_ERROR_INVALID_ARGUMENT) &&
                    mnd_session_check_text(o->area, 64) == 0) {
                        char q[MND_TEXT_QUOTE_SIZE(24)];

                        /* Merely too long to be an area id: say so as limits.c would. */
                        sd_bus_error_free(error);
                        return sd_bus_error_setf(error, MND_ERROR_NO_SUCH_AREA, "unknown treatment area '%s'",
                                                 mnd_text_quote(o->area, 24, q, sizeof(q)));
                }
                return r;
        }
        if (o->operator_name) {
                r = check_option_text("operator", o->operator_name, MND_SESSION_OPERATOR_MAX, error);
                if (r < 0)
                        return r;
        }
        if (o->patient_ref) {
                r = check_option_text("patient_ref", o->patient_ref, MND_SESSION_PATIENT_REF_MAX, error);
                if (r < 0)
                        return r;
        }
        return 0;
}

struct mnd_start_op {
        struct mnd_pen *pen;
        sd_bus_message *message;
        struct mnd_session_params params;       /* strings below */
        char *pen_path;                         /* copies: the pen may go (and be freed) meanwhile */
        char pen_serial[MNP_MAX_STR + 1];
        char area[MNP_AREA_ID_MAX];
        char cartridge[MNP_MAX_STR + 1];
        char *operator_name;
        char *patient_ref;
};

static struct mnd_start_op *start_op_free(struct mnd_start_op *op) {
        if (!op)
                return NULL;
        sd_bus_message_unref(op->message);
        free(op->pen_path);
        free(op->operator_name);
        if (op->patient_ref) {
                explicit_bzero(op->patient_ref, strlen(op->patient_ref));
                free(op->patient_ref);
        }
        return mfree(op);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct mnd_start_op *, start_op_free);

static void start_op_session_info(const struct mnd_start_op *op, struct mnd_audit_session_info *ret) {
        *ret = (struct mnd_audit_session_info) {
                .id = op->params.id,
                .pen = op->params.pen_serial,
                .area = op->params.area,
                .cartridge = op->params.cartridge,
                .operator_name = op->params.operator_name,
                .patient_ref = op->params.patient_ref,
                .depth_um = op->params.depth_um,
                .speed_hz = op->params.speed_hz,
                .planned_duration_s = op->params.planned_duration_s,
        };
}

/* The session-start is on the trail but the pen did not start: its end follows ("not-started";
 * the cartridge stays spent: it was offered for this session). */
static void start_record_end(struct mnd_start_op *op, enum mnd_session_state state, const char *reason) {
        struct mnd_audit_session_info info;
        struct mnd_audit_event_buf b;

        start_op_session_info(op, &info);
        mnd_audit_build_session_end(&b, &info, mnd_session_state_name(state), reason, 0);
        (void) mnd_audit_record(op->pen->manager, &b, false);
}

static void start_not_started(struct mnd_start_op *op) {
        start_record_end(op, MND_SESSION_FAILED, "not-started");
}

static void start_done(struct mnd_pen_link *l, int error, const char *message, void *userdata) {
        _cleanup_(start_op_freep) struct mnd_start_op *op = userdata;
        struct mnd_pen *pen = op->pen;
        struct mnd_session *s = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        char what[64];
        int r;

        if (pen->starting == op)
                pen->starting = NULL;
        snprintf(what, sizeof(what), "start session %" PRIu64, op->params.id);

        if (error == -ECANCELED && pen->gone)
                error = -ENODEV;
        if (error < 0) {
                start_not_started(op);
                mnd_bus_error_set_pen(&e, error, pen->identity.serial, what, message);
                log_notice("Pen %s: %s failed: %s", pen->identity.serial, what, e.message);
                (void) sd_bus_reply_method_error(op->message, &e);
                return;
        }
        if (pen->gone || !pen->path) {
                /* Acknowledged, but the pen was lost (unplugged, or not answering) before this
                 * completion ran: no session on a pen that is not there.  The start is on the trail,
                 * so its end follows; the pen's lease stops it (one more STOP if it can still hear). */
                mnd_pen_stop_send(pen);
                start_record_end(op, MND_SESSION_INTERRUPTED, "disconnected");
                mnd_bus_error_set_pen(&e, -ENODEV, op->pen_serial, what, NULL);
                log_notice("Pen %s: %s: the pen was lost as it acknowledged: %s", op->pen_serial, what, e.message);
                (void) sd_bus_reply_method_error(op->message, &e);
                return;
        }

        /* The pen acknowledged: the session exists from now on. */
        op->params.started_at = now_usec(CLOCK_REALTIME);
        r = mnd_session_new(&op->params, &s);
        if (r >= 0) {
                r = mnd_manager_add_session(pen->manager, s);
                if (r < 0)
                        s = mnd_session_free(s);
        }
        if (r < 0) {
                /* Cannot account for it: do not let it run. */
                log_error_errno(r, "Pen %s: cannot set up session %" PRIu64 ", stopping the pen: %m",
                                pen->identity.serial, op->params.id);
                mnd_pen_stop(pen, MND_SESSION_FAILED, "fault:internal", NULL, NULL);
                start_not_started(op);
                sd_bus_error_set_errnof(&e, r, "session %" PRIu64 " could not be set up: %m; the pen was stopped",
                                        op->params.id);
                (void) sd_bus_reply_method_error(op->message, &e);
                return;
        }

        s->pen = pen;
        pen->session = s;
        mnd_bus_pen_emit_changed(pen, MND_BUS_PEN_CHANGED_SESSION);
        mnd_pen_set_setpoints(pen, op->params.depth_um, op->params.speed_hz);
        mnd_manager_notify_status(pen->manager);
        if (pen->stop_in_flight || pen->manager->shutting_down)
                /* A stop raced with the acknowledgement: the pen is being stopped already. */
                mnd_manager_end_session(pen->manager, s, MND_SESSION_STOPPED, "stopped");
        /* Patient reference: personal data, debug level only. */
        log_info("Pen %s: session %" PRIu64 " started: area %s, %" PRIu32 " um, %" PRIu32 " Hz, %" PRIu32
                 " s planned, cartridge %s.", pen->identity.serial, s->id, s->area, s->depth_um, s->speed_hz,
                 s->planned_duration_s, s->cartridge);
        log_debug("Session %" PRIu64 ": operator '%s', patient reference '%s'.", s->id, s->operator_name,
                  s->patient_ref);
        (void) sd_bus_reply_method_return(op->message, "o", s->path);
}

static int start_session_authorised(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(start_op_freep) struct mnd_start_op *op = NULL;
        struct mnd_manager *m = userdata;
        struct mnd_pen *pen;
        struct start_options o = {};
        const struct mnd_pen_status *st;
        struct mnd_audit_session_info info;
        struct mnd_audit_caller caller;
        struct mnd_audit_event_buf b;
        char reason[MNP_REASON_MAX], what[160];
        uint64_t id;
        int r;

        /* The options were validated before authorisation (method_start_session): read them again. */
        r = parse_start_options(message, &o, error);
        if (r < 0)
                return r;
        r = pen_of_call(m, message, &pen, error);
        if (r < 0)
                return r;
        r = pen_check_operable(pen, message, error);
        if (r < 0)
                return refuse(pen, message, r, error, NULL, MND_AUDIT_UNSET, MND_AUDIT_UNSET, MND_AUDIT_UNSET);
        st = mnd_pen_status(pen);
        if (!o.has_depth)
                o.depth_um = pen->depth_um;
        if (!o.has_speed)
                o.speed_hz = pen->speed_hz;

#define REFUSE(r) refuse(pen, message, (r), error, o.area, o.depth_um, o.speed_hz, o.duration_s)

        /* Every limit at once, for the session's area, before anything is sent or recorded. */
        r = mnp_check_duration(&m->config->limits, o.area, o.duration_s, reason, sizeof(reason));
        if (r >= 0)
                r = mnp_check_depth(&m->config->limits, &pen->identity.range, o.area, o.depth_um, reason,
                                    sizeof(reason));
        if (r >= 0)
                r = mnp_check_speed(&m->config->limits, &pen->identity.range, o.area, o.speed_hz, reason,
                                    sizeof(reason));
        if (r < 0) {
                log_notice("Pen %s: refused to start a session: %s", pen->identity.serial, reason);
                return REFUSE(mnd_bus_error_set_limit(error, r, reason));
        }

        /* The pen must be free for it. */
        if (pen->session)
                return REFUSE(sd_bus_error_setf(error, MND_ERROR_BUSY, "pen %s is running session %" PRIu64
                                                "; stop it first", pen->identity.serial, pen->session->id));
        if (pen->starting || pen->stop_in_flight)
                return REFUSE(sd_bus_error_setf(error, MND_ERROR_BUSY, "pen %s is %s; try again when it is idle",
                                                pen->identity.serial,
                                                pen->starting ? "starting a session" : "stopping"));
        if (st->state == MND_PEN_FAULT)
                return REFUSE(sd_bus_error_setf(error, MND_ERROR_DEVICE_ERROR,
                                                "pen %s has an active fault '%s'; remove its cause and call "
                                                "ClearFault", pen->identity.serial, mnd_pen_fault_string(pen)));
        if (st->state != MND_PEN_IDLE)
                return REFUSE(sd_bus_error_setf(error, MND_ERROR_BUSY, "pen %s is %s, not idle; stop it first",
                                                pen->identity.serial, mnd_pen_state_string(pen)));

        /* A new sterile cartridge for every session: the audit log knows every one used. */
        if (isempty(st->cartridge))
                return REFUSE(sd_bus_error_setf(error, MND_ERROR_CARTRIDGE_MISSING,
                                                "pen %s has no cartridge; insert a new sterile cartridge",
                                                pen->identity.serial));
        if (!mnd_cartridge_id_is_valid(st->cartridge))
                return REFUSE(sd_bus_error_setf(error, MND_ERROR_DEVICE_ERROR,
                                                "pen %s reports a cartridge id that is not printable text; replace "
                                                "the cartridge", pen->identity.serial));
        r = mnd_audit_check_cartridge(m, pen->identity.serial, st->cartridge, error);
        if (r < 0)
                return REFUSE(r);
#undef REFUSE

        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        op->pen = pen;
        op->message = sd_bus_message_ref(message);
        strcpy_bounded(op->area, sizeof(op->area), o.area);
        strcpy_bounded(op->cartridge, sizeof(op->cartridge), st->cartridge);
        strcpy_bounded(op->pen_serial, sizeof(op->pen_serial), pen->identity.serial);
        op->pen_path = strdup(pen->path);
        op->operator_name = strdup(strempty(o.operator_name));
        op->patient_ref = strdup(strempty(o.patient_ref));
        if (!op->pen_path || !op->operator_name || !op->patient_ref)
                return -ENOMEM;

        id = mnd_audit_next_session_id(m);
        op->params = (struct mnd_session_params) {
                .id = id,
                .pen_path = op->pen_path,
                .pen_serial = op->pen_serial,
                .area = op->area,
                .operator_name = op->operator_name,
                .patient_ref = op->patient_ref,
                .cartridge = op->cartridge,
                .planned_duration_s = o.duration_s,
                .depth_um = o.depth_um,
                .speed_hz = o.speed_hz,
        };

        /* Durably on the trail before the START is sent: the session, its caller, and the cartridge,
         * which counts as used from here on. */
        mnd_audit_caller_from_message(message, &caller);
        start_op_session_info(op, &info);
        mnd_audit_build_session_start(&b, &info, &caller);
        snprintf(what, sizeof(what), "start session %" PRIu64 " on pen %s with cartridge %s", id,
                 pen->identity.serial, op->cartridge);
        r = mnd_audit_write_ahead(m, &b, what, "the session was not started, nothing was sent to the pen", error);
        if (r < 0)
                return r;

        r = mnd_pen_link_start(pen->link, o.depth_um, o.speed_hz, start_done, op);
        if (r < 0) {
                start_not_started(op);
                snprintf(what, sizeof(what), "start session %" PRIu64, id);
                return mnd_bus_error_set_pen(error, r, pen->identity.serial, what, NULL);
        }
        pen->starting = TAKE_PTR(op);
        return 1;
}

static int method_start_session(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct mnd_pen *pen = userdata;
        struct start_options o = {};
        int r;

        /*
         * The options first: a malformed call (unknown or missing option, wrong type, control
         * characters) is InvalidArgument without asking polkit.  It is not recorded: nobody was
         * authorised yet, and an unauthorised caller must not be able to fill the audit log.  The
         * limits, the pen's state and the cartridge are checked only for an authorised caller.
         */
        r = parse_start_options(message, &o, error);
        if (r < 0)
                return r;
        return mnd_auth_operate(pen->manager, message, start_session_authorised, pen->manager, error);
}

const char *mnd_pen_current_area(const struct mnd_pen *pen) {
        if (pen->session)
                return pen->session->area;
        if (pen->starting)
                return pen->starting->area;
        return NULL;
}

const sd_bus_vtable mnd_pen_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Serial", "s", property_get_identity_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Model", "s", property_get_identity_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Firmware", "s", property_get_identity_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Transport", "s", property_get_identity_string, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DepthUm", "u", property_get_status_u, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SpeedHz", "u", property_get_status_u, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActualDepthUm", "u", property_get_status_u, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ActualSpeedHz", "u", property_get_status_u, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DepthRangeUm", "(uuu)", property_get_depth_range, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("SpeedRangeHz", "(uu)", property_get_speed_range, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Cartridge", "s", property_get_cartridge, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BatteryPercent", "y", property_get_battery, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Session", "o", property_get_session, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Fault", "s", property_get_fault, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("SetDepth",
                                SD_BUS_ARGS("u", depth_um),
                                SD_BUS_NO_RESULT,
                                method_set_depth, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetSpeed",
                                SD_BUS_ARGS("u", speed_hz),
                                SD_BUS_NO_RESULT,
                                method_set_speed, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StartSession",
                                SD_BUS_ARGS("a{sv}", options),
                                SD_BUS_RESULT("o", session),
                                method_start_session, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Stop",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_stop, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ClearFault",
                                SD_BUS_NO_ARGS,
                                SD_BUS_NO_RESULT,
                                method_clear_fault, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Fault", SD_BUS_ARGS("s", code, "s", message), 0),
        SD_BUS_VTABLE_END
};

int mnd_bus_pen_publish(struct mnd_pen *pen) {
        struct mnd_manager *m = pen->manager;
        _cleanup_(freep) char *path = NULL;
        int r;

        r = sd_bus_path_encode(MND_PEN_PATH_PREFIX, pen->identity.serial, &path);
        if (r < 0)
                return r;
        if (m->bus) {
                r = sd_bus_add_object_vtable(m->bus, &pen->slot, path, MND_PEN_INTERFACE, mnd_pen_vtable, pen);
                if (r < 0)
                        return r;
                (void) sd_bus_emit_object_added(m->bus, path);
        }
        pen->path = TAKE_PTR(path);
        (void) mnd_bus_manager_emit_pen_added(m, pen->path);
        (void) mnd_bus_manager_emit_pens_changed(m);
        return 0;
}

void mnd_bus_pen_unpublish(struct mnd_pen *pen) {
        struct mnd_manager *m = pen->manager;
        _cleanup_(freep) char *path = NULL;

        if (!pen->path)
                return;
        path = TAKE_PTR(pen->path);
        if (m->bus && pen->slot)
                (void) sd_bus_emit_object_removed(m->bus, path);
        pen->slot = sd_bus_slot_unref(pen->slot);
        (void) mnd_bus_manager_emit_pen_removed(m, path);
        (void) mnd_bus_manager_emit_pens_changed(m);
}

void mnd_bus_pen_emit_changed(struct mnd_pen *pen, unsigned changes) {
        static const struct {
                unsigned bit;
                const char *name;
        } map[] = {
                { MND_PEN_CHANGED_STATE,        "State" },
                { MND_PEN_CHANGED_DEPTH,        "DepthUm" },
                { MND_PEN_CHANGED_SPEED,        "SpeedHz" },
                { MND_PEN_CHANGED_ACTUAL_DEPTH, "ActualDepthUm" },
                { MND_PEN_CHANGED_ACTUAL_SPEED, "ActualSpeedHz" },
                { MND_PEN_CHANGED_CARTRIDGE,    "Cartridge" },
                { MND_PEN_CHANGED_BATTERY,      "BatteryPercent" },
                { MND_PEN_CHANGED_FAULT,        "Fault" },
                { MND_BUS_PEN_CHANGED_SESSION,  "Session" },
        };
        const char *names[ELEMENTSOF(map) + 1];
        size_t n = 0;
        int r;

        if (!pen->path || !pen->manager->bus)
                return;
        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (changes & map[i].bit)
                        names[n++] = map[i].name;
        if (n == 0)
                return;
        names[n] = NULL;
        r = sd_bus_emit_properties_changed_strv(pen->manager->bus, pen->path, MND_PEN_INTERFACE, (char **) names);
        if (r < 0)
                log_debug_errno(r, "Cannot emit PropertiesChanged for %s: %m", pen->path);
}

void mnd_bus_pen_emit_fault(struct mnd_pen *pen, const char *code, const char *message) {
        int r;

        if (!pen->path || !pen->manager->bus)
                return;
        r = sd_bus_emit_signal(pen->manager->bus, pen->path, MND_PEN_INTERFACE, "Fault", "ss", code, message);
        if (r < 0)
                log_debug_errno(r, "Cannot emit Fault for %s: %m", pen->path);
}
