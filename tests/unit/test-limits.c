/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Unit tests for the safety limits (protocol/limits.c). */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include <mnp/limits.h>

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Not <limits.h>: with protocol/ on the include path that name is ours. */
#define LINE_MAX_U (~0u)
_Static_assert(sizeof(unsigned) == 4, "the expected strings assume a 32-bit unsigned");

static const struct {
        const char *id;
        uint32_t depth_um;
        uint32_t duration_s;
        const char *duration_str;
} shipped[MNP_AREA_COUNT] = {
        { "periorbital",  500, 15 * 60, "15 min" },
        { "forehead",     750, 20 * 60, "20 min" },
        { "nose",         500, 10 * 60, "10 min" },
        { "upper-lip",    750, 10 * 60, "10 min" },
        { "cheeks",      2000, 30 * 60, "30 min" },
        { "chin",        2000, 15 * 60, "15 min" },
        { "face",        2000, 45 * 60, "45 min" },
        { "neck",        1000, 30 * 60, "30 min" },
        { "decolletage", 1000, 30 * 60, "30 min" },
        { "scalp",       1500, 30 * 60, "30 min" },
        { "body",        2500, 60 * 60, "60 min" },
};

/* A pen with a 10 um step and a range wider than any cap. */
static const struct mnp_pen_range pen_fine = {
        .depth_min_um = 0, .depth_max_um = 5000, .depth_step_um = 10,
        .speed_min_hz = 0, .speed_max_hz = 1000,
};

/* A Dermapen-like pen: 0.20-2.50 mm in 0.05 mm steps, 100-150 Hz. */
static const struct mnp_pen_range pen_real = {
        .depth_min_um = 200, .depth_max_um = 2500, .depth_step_um = 50,
        .speed_min_hz = 100, .speed_max_hz = 150,
};

#define assert_refused(expr, err, msg)                                  \
        do {                                                            \
                char _reason[MNP_REASON_MAX];                           \
                memset(_reason, 'X', sizeof _reason);                   \
                int _r = (expr);                                        \
                assert_int_equal(_r, (err));                            \
                assert_string_equal(_reason, (msg));                    \
        } while (0)

#define assert_allowed(expr)                                            \
        do {                                                            \
                char _reason[MNP_REASON_MAX];                           \
                memset(_reason, 'X', sizeof _reason);                   \
                int _r = (expr);                                        \
                if (_r != 0)                                            \
                        print_error("refused: %s\n", _reason);          \
                assert_int_equal(_r, 0);                                \
                assert_string_equal(_reason, "");                       \
        } while (0)

/* The calls in the macros above refer to the reason buffer as R. */
#define R _reason, sizeof _reason

static const char *fmt_depth(uint32_t um, char *buf) {
        return mnp_format_depth(um, buf, 32);
}

static void test_format_depth(void **state) {
        char buf[32];

        assert_string_equal(mnp_format_depth(0, buf, sizeof buf), "0.00 mm");
        assert_string_equal(mnp_format_depth(750, buf, sizeof buf), "0.75 mm");
        assert_string_equal(mnp_format_depth(333, buf, sizeof buf), "0.333 mm");
        assert_string_equal(mnp_format_depth(3010, buf, sizeof buf), "3.01 mm");
        assert_string_equal(mnp_format_depth(3001, buf, sizeof buf), "3.001 mm");
        assert_string_equal(mnp_format_depth(3000, buf, sizeof buf), "3.00 mm");
        assert_string_equal(mnp_format_depth(5, buf, sizeof buf), "0.005 mm");
        assert_string_equal(mnp_format_depth(50, buf, sizeof buf), "0.05 mm");
        assert_string_equal(mnp_format_depth(1005, buf, sizeof buf), "1.005 mm");
        assert_string_equal(mnp_format_depth(25000, buf, sizeof buf), "25.00 mm");
        assert_string_equal(mnp_format_depth(UINT32_MAX, buf, sizeof buf), "4294967.295 mm");
        assert_true(mnp_format_depth(0, buf, sizeof buf) == buf);

        /* 16 bytes always suffice. */
        char b16[16];
        assert_string_equal(mnp_format_depth(UINT32_MAX, b16, sizeof b16), "4294967.295 mm");

        /* Small buffers: truncated, NUL-terminated, nothing written past size. */
        memset(buf, 'X', sizeof buf);
        mnp_format_depth(750, buf, 1);
        assert_int_equal(buf[0], '\0');
        assert_int_equal(buf[1], 'X');
        memset(buf, 'X', sizeof buf);
        mnp_format_depth(750, buf, 4);
        assert_string_equal(buf, "0.7");
        assert_int_equal(buf[4], 'X');

        assert_string_equal(mnp_format_depth(750, NULL, 0), "");
        memset(buf, 'X', sizeof buf);
        assert_string_equal(mnp_format_depth(750, buf, 0), "");
        assert_int_equal(buf[0], 'X');
}

static void test_init_table(void **state) {
        struct mnp_limits l;

        memset(&l, 0xa5, sizeof l);
        mnp_limits_init(&l);

        assert_int_equal(l.max_depth_um, MNP_ABS_MAX_DEPTH_UM);
        assert_int_equal(l.max_speed_hz, MNP_ABS_MAX_SPEED_HZ);
        assert_int_equal(l.max_duration_s, MNP_ABS_MAX_DURATION_S);
        assert_int_equal(MNP_ABS_MAX_DEPTH_UM, 3000);
        assert_int_equal(MNP_ABS_MAX_SPEED_HZ, 300);
        assert_int_equal(MNP_ABS_MAX_DURATION_S, 3600);

        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                const struct mnp_area_limits *a = &l.areas[i];

                assert_string_equal(a->id, shipped[i].id);
                /* The rest of the id is zeroed, not left over. */
                for (size_t j = strlen(a->id); j < MNP_AREA_ID_MAX; j++)
                        assert_int_equal(a->id[j], 0);
                assert_int_equal(a->max_depth_um, shipped[i].depth_um);
                assert_int_equal(a->max_speed_hz, 300);
                assert_int_equal(a->max_duration_s, shipped[i].duration_s);
                assert_true(mnp_limits_area(&l, shipped[i].id) == a);
        }

        /* The shipped table is within the absolute caps. */
        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                assert_true(l.areas[i].max_depth_um <= MNP_ABS_MAX_DEPTH_UM);
                assert_true(l.areas[i].max_duration_s <= MNP_ABS_MAX_DURATION_S);
        }
}

static void test_area_lookup(void **state) {
        struct mnp_limits l;

        mnp_limits_init(&l);
        assert_null(mnp_limits_area(&l, "Forehead"));
        assert_null(mnp_limits_area(&l, "forehead "));
        assert_null(mnp_limits_area(&l, "fore"));
        assert_null(mnp_limits_area(&l, ""));
        assert_null(mnp_limits_area(&l, "lips"));
        assert_null(mnp_limits_area(&l, NULL));
        assert_null(mnp_limits_area(NULL, "forehead"));
        assert_non_null(mnp_limits_area(&l, "upper-lip"));
}

static void test_effective(void **state) {
        struct mnp_limits l;
        struct mnp_area_limits e;

        mnp_limits_init(&l);
        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                assert_allowed(mnp_limits_effective(&l, shipped[i].id, &e, R));
                assert_string_equal(e.id, shipped[i].id);
                assert_int_equal(e.max_depth_um, shipped[i].depth_um);
                assert_int_equal(e.max_speed_hz, 300);
                assert_int_equal(e.max_duration_s, shipped[i].duration_s);
        }

        /* No area: the global caps. */
        assert_allowed(mnp_limits_effective(&l, NULL, &e, R));
        assert_string_equal(e.id, "");
        assert_int_equal(e.max_depth_um, 3000);
        assert_int_equal(e.max_speed_hz, 300);
        assert_int_equal(e.max_duration_s, 3600);

        memset(&e, 0x5a, sizeof e);
        struct mnp_area_limits saved = e;
        assert_refused(mnp_limits_effective(&l, "lips", &e, R), -ENOENT, "unknown treatment area 'lips'");
        assert_memory_equal(&e, &saved, sizeof e);

        /* Global caps lower the area caps. */
        l.max_depth_um = 900;
        l.max_speed_hz = 120;
        l.max_duration_s = 1000;
        assert_allowed(mnp_limits_effective(&l, "cheeks", &e, R));
        assert_int_equal(e.max_depth_um, 900);
        assert_int_equal(e.max_speed_hz, 120);
        assert_int_equal(e.max_duration_s, 1000);
        assert_allowed(mnp_limits_effective(&l, "nose", &e, R));
        assert_int_equal(e.max_depth_um, 500);
        assert_int_equal(e.max_duration_s, 600);

        /* A hand-filled table above the absolute caps is still held to them. */
        l.max_depth_um = 9000;
        l.areas[10].max_depth_um = 9000;
        assert_allowed(mnp_limits_effective(&l, "body", &e, R));
        assert_int_equal(e.max_depth_um, 3000);
}

static void test_depth_area_caps(void **state) {
        struct mnp_limits l;
        char exp[MNP_REASON_MAX], v[32], c[32];

        mnp_limits_init(&l);
        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                uint32_t cap = shipped[i].depth_um;
                const char *id = shipped[i].id;

                assert_allowed(mnp_check_depth(&l, NULL, id, cap, R));
                assert_allowed(mnp_check_depth(&l, NULL, id, 0, R));
                assert_allowed(mnp_check_depth(&l, &pen_fine, id, cap, R));
                assert_allowed(mnp_check_depth(&l, &pen_fine, id, cap - 10, R));

                snprintf(exp, sizeof exp, "depth %s exceeds the %s cap for area '%s'",
                         fmt_depth(cap + 1, v), fmt_depth(cap, c), id);
                assert_refused(mnp_check_depth(&l, NULL, id, cap + 1, R), -ERANGE, exp);

                snprintf(exp, sizeof exp, "depth %s exceeds the %s cap for area '%s'",
                         fmt_depth(cap + 10, v), fmt_depth(cap, c), id);
                assert_refused(mnp_check_depth(&l, &pen_fine, id, cap + 10, R), -ERANGE, exp);

                /* 1 um over with a 10 um step pen is off-step first. */
                assert_int_equal(mnp_check_depth(&l, &pen_fine, id, cap + 1, NULL, 0), -EDOM);
        }

        /* Exact strings. */
        assert_refused(mnp_check_depth(&l, NULL, "forehead", 800, R), -ERANGE,
                       "depth 0.80 mm exceeds the 0.75 mm cap for area 'forehead'");
        assert_refused(mnp_check_depth(&l, NULL, "forehead", 751, R), -ERANGE,
                       "depth 0.751 mm exceeds the 0.75 mm cap for area 'forehead'");
        assert_refused(mnp_check_depth(&l, &pen_fine, "body", 2510, R), -ERANGE,
                       "depth 2.51 mm exceeds the 2.50 mm cap for area 'body'");
}

static void test_depth_step(void **state) {
        struct mnp_limits l;
        struct mnp_pen_range p = pen_real;

        mnp_limits_init(&l);

        assert_refused(mnp_check_depth(&l, &pen_real, "face", 330, R), -EDOM,
                       "depth 0.33 mm is not a multiple of the pen's 0.05 mm step; it is refused, not rounded");
        assert_refused(mnp_check_depth(&l, &pen_real, NULL, 333, R), -EDOM,
                       "depth 0.333 mm is not a multiple of the pen's 0.05 mm step; it is refused, not rounded");
        assert_int_equal(mnp_check_depth(&l, &pen_fine, "face", 333, NULL, 0), -EDOM);
        assert_int_equal(mnp_check_depth(&l, &pen_real, "face", 349, NULL, 0), -EDOM);
        assert_int_equal(mnp_check_depth(&l, &pen_real, "face", 351, NULL, 0), -EDOM);
        assert_allowed(mnp_check_depth(&l, &pen_real, "face", 350, R));
        assert_allowed(mnp_check_depth(&l, &pen_real, "face", 300, R));

        /* The step rule comes before the caps: refused as off-step even when too deep. */
        assert_int_equal(mnp_check_depth(&l, &pen_real, "forehead", 3333, NULL, 0), -EDOM);

        /* Without a pen there is no step: 0.333 mm is within the cap. */
        assert_allowed(mnp_check_depth(&l, NULL, "face", 333, R));

        /* A step of 1 um accepts everything within the caps. */
        p.depth_step_um = 1;
        assert_allowed(mnp_check_depth(&l, &p, "face", 333, R));

        /* A SkinPen-like 0.25 mm step. */
        p.depth_step_um = 250;
        assert_allowed(mnp_check_depth(&l, &p, "face", 1500, R));
        assert_refused(mnp_check_depth(&l, &p, "face", 1600, R), -EDOM,
                       "depth 1.60 mm is not a multiple of the pen's 0.25 mm step; it is refused, not rounded");

        /* A zero step from the pen. */
        p.depth_step_um = 0;
        assert_refused(mnp_check_depth(&l, &p, "face", 500, R), -EINVAL,
                       "the pen reports a depth step of 0 mm; no depth can be set on it");

        /* An unknown area comes first. */
        assert_int_equal(mnp_check_depth(&l, &p, "lips", 333, NULL, 0), -ENOENT);
        assert_int_equal(mnp_check_depth(&l, &pen_real, "lips", 333, NULL, 0), -ENOENT);
}

static void test_depth_pen_range(void **state) {
        struct mnp_limits l;
        struct mnp_pen_range p = pen_real;

        mnp_limits_init(&l);

        assert_allowed(mnp_check_depth(&l, &pen_real, "face", 200, R));
        assert_refused(mnp_check_depth(&l, &pen_real, "face", 150, R), -ERANGE,
                       "depth 0.15 mm is below the pen's minimum of 0.20 mm");
        assert_refused(mnp_check_depth(&l, &pen_real, NULL, 0, R), -ERANGE,
                       "depth 0.00 mm is below the pen's minimum of 0.20 mm");

        /* No area: the pen's maximum is the tightest. */
        assert_allowed(mnp_check_depth(&l, &pen_real, NULL, 2500, R));
        assert_refused(mnp_check_depth(&l, &pen_real, NULL, 2550, R), -ERANGE,
                       "depth 2.55 mm exceeds the pen's maximum of 2.50 mm");

        /* Area cap below the pen's maximum: the area is named. */
        assert_refused(mnp_check_depth(&l, &pen_real, "cheeks", 2050, R), -ERANGE,
                       "depth 2.05 mm exceeds the 2.00 mm cap for area 'cheeks'");

        /* Pen's maximum below the area cap: the pen is named. */
        p.depth_max_um = 1500;
        assert_refused(mnp_check_depth(&l, &p, "cheeks", 1550, R), -ERANGE,
                       "depth 1.55 mm exceeds the pen's maximum of 1.50 mm");

        /* A pen claiming more than the absolute cap is still held to it. */
        p.depth_max_um = 5000;
        assert_allowed(mnp_check_depth(&l, &p, NULL, 3000, R));
        assert_refused(mnp_check_depth(&l, &p, NULL, 3050, R), -ERANGE,
                       "depth 3.05 mm exceeds the absolute cap of 3.00 mm");

        /* Area cap 0 and a pen minimum above it: the cap is named. */
        assert_allowed(mnp_limits_apply(&l, "area.nose", "max_depth_um", "0", 1, R));
        assert_refused(mnp_check_depth(&l, &pen_real, "nose", 100, R), -ERANGE,
                       "depth 0.10 mm exceeds the 0.00 mm cap for area 'nose'");
}

static void test_depth_absolute_and_clinic(void **state) {
        struct mnp_limits l;

        mnp_limits_init(&l);

        assert_allowed(mnp_check_depth(&l, NULL, NULL, 3000, R));
        assert_allowed(mnp_check_depth(&l, NULL, NULL, 0, R));
        /* The clinic's cap equals the absolute one by default: the absolute cap is named. */
        assert_refused(mnp_check_depth(&l, NULL, NULL, 3001, R), -ERANGE,
                       "depth 3.001 mm exceeds the absolute cap of 3.00 mm");
        assert_refused(mnp_check_depth(&l, &pen_fine, NULL, 3010, R), -ERANGE,
                       "depth 3.01 mm exceeds the absolute cap of 3.00 mm");
        assert_refused(mnp_check_depth(&l, NULL, "body", 3010, R), -ERANGE,
                       "depth 3.01 mm exceeds the 2.50 mm cap for area 'body'");

        assert_allowed(mnp_limits_apply(&l, "limits", "max_depth_um", "900", 3, R));
        assert_allowed(mnp_check_depth(&l, NULL, NULL, 900, R));
        assert_refused(mnp_check_depth(&l, NULL, NULL, 1000, R), -ERANGE,
                       "depth 1.00 mm exceeds the clinic's cap of 0.90 mm");
        assert_refused(mnp_check_depth(&l, &pen_real, "cheeks", 1000, R), -ERANGE,
                       "depth 1.00 mm exceeds the clinic's cap of 0.90 mm");
        /* An area cap below the clinic's is the tighter one. */
        assert_refused(mnp_check_depth(&l, NULL, "forehead", 800, R), -ERANGE,
                       "depth 0.80 mm exceeds the 0.75 mm cap for area 'forehead'");
        /* Far beyond everything: still the tightest cap is named. */
        assert_refused(mnp_check_depth(&l, NULL, "forehead", 5000, R), -ERANGE,
                       "depth 5.00 mm exceeds the 0.75 mm cap for area 'forehead'");
        assert_refused(mnp_check_depth(&l, NULL, NULL, 5000, R), -ERANGE,
                       "depth 5.00 mm exceeds the clinic's cap of 0.90 mm");
}

static void test_uint32_max(void **state) {
        struct mnp_limits l;
        struct mnp_pen_range p = pen_fine;

        mnp_limits_init(&l);

        assert_refused(mnp_check_depth(&l, NULL, NULL, UINT32_MAX, R), -ERANGE,
                       "depth 4294967.295 mm exceeds the absolute cap of 3.00 mm");
        assert_refused(mnp_check_depth(&l, NULL, "nose", UINT32_MAX, R), -ERANGE,
                       "depth 4294967.295 mm exceeds the 0.50 mm cap for area 'nose'");
        assert_refused(mnp_check_depth(&l, &pen_real, "nose", UINT32_MAX, R), -EDOM,
                       "depth 4294967.295 mm is not a multiple of the pen's 0.05 mm step; it is refused, not rounded");
        /* 4294967295 is a multiple of 5. */
        p.depth_step_um = 5;
        assert_int_equal(mnp_check_depth(&l, &p, NULL, UINT32_MAX, NULL, 0), -ERANGE);
        p.depth_step_um = UINT32_MAX;
        p.depth_max_um = UINT32_MAX;
        assert_refused(mnp_check_depth(&l, &p, NULL, UINT32_MAX, R), -ERANGE,
                       "depth 4294967.295 mm exceeds the absolute cap of 3.00 mm");
        assert_refused(mnp_check_depth(&l, &p, NULL, 1, R), -EDOM,
                       "depth 0.001 mm is not a multiple of the pen's 4294967.295 mm step; it is refused, not rounded");

        assert_refused(mnp_check_speed(&l, NULL, NULL, UINT32_MAX, R), -ERANGE,
                       "speed 4294967295 Hz exceeds the absolute cap of 300 Hz");
        assert_refused(mnp_check_speed(&l, &pen_real, "neck", UINT32_MAX, R), -ERANGE,
                       "speed 4294967295 Hz exceeds the pen's maximum of 150 Hz");

        assert_refused(mnp_check_duration(&l, NULL, UINT32_MAX, R), -ERANGE,
                       "1193046 h 28 min 15 s exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, "nose", UINT32_MAX, R), -ERANGE,
                       "1193046 h 28 min 15 s exceeds the 10 min limit for area 'nose'");

        /* A pen whose ranges are all UINT32_MAX. */
        struct mnp_pen_range big = {
                UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
        };
        assert_int_equal(mnp_check_depth(&l, &big, NULL, 0, NULL, 0), -ERANGE);
        assert_int_equal(mnp_check_speed(&l, &big, NULL, 300, NULL, 0), -ERANGE);
}

static void test_speed(void **state) {
        struct mnp_limits l;
        struct mnp_pen_range p = pen_real;

        mnp_limits_init(&l);

        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                assert_allowed(mnp_check_speed(&l, NULL, shipped[i].id, 300, R));
                assert_refused(mnp_check_speed(&l, NULL, shipped[i].id, 301, R), -ERANGE,
                               "speed 301 Hz exceeds the absolute cap of 300 Hz");
        }

        assert_allowed(mnp_check_speed(&l, NULL, NULL, 0, R));
        assert_allowed(mnp_check_speed(&l, NULL, NULL, 300, R));
        assert_refused(mnp_check_speed(&l, NULL, NULL, 301, R), -ERANGE,
                       "speed 301 Hz exceeds the absolute cap of 300 Hz");

        /* The pen's own range. */
        assert_allowed(mnp_check_speed(&l, &pen_real, "face", 100, R));
        assert_allowed(mnp_check_speed(&l, &pen_real, "face", 150, R));
        assert_refused(mnp_check_speed(&l, &pen_real, "face", 99, R), -ERANGE,
                       "speed 99 Hz is below the pen's minimum of 100 Hz");
        assert_refused(mnp_check_speed(&l, &pen_real, "face", 0, R), -ERANGE,
                       "speed 0 Hz is below the pen's minimum of 100 Hz");
        assert_refused(mnp_check_speed(&l, &pen_real, "face", 151, R), -ERANGE,
                       "speed 151 Hz exceeds the pen's maximum of 150 Hz");
        p.speed_max_hz = 400;
        assert_allowed(mnp_check_speed(&l, &p, NULL, 300, R));
        assert_refused(mnp_check_speed(&l, &p, NULL, 350, R), -ERANGE,
                       "speed 350 Hz exceeds the absolute cap of 300 Hz");

        /* Clinic and area caps. */
        assert_allowed(mnp_limits_apply(&l, "limits", "max_speed_hz", "200", 4, R));
        assert_allowed(mnp_limits_apply(&l, "area.forehead", "max_speed_hz", "120", 9, R));
        assert_allowed(mnp_check_speed(&l, NULL, NULL, 200, R));
        assert_refused(mnp_check_speed(&l, &p, NULL, 250, R), -ERANGE,
                       "speed 250 Hz exceeds the clinic's cap of 200 Hz");
        assert_refused(mnp_check_speed(&l, &p, "cheeks", 201, R), -ERANGE,
                       "speed 201 Hz exceeds the clinic's cap of 200 Hz");
        assert_allowed(mnp_check_speed(&l, &p, "forehead", 120, R));
        assert_refused(mnp_check_speed(&l, &p, "forehead", 130, R), -ERANGE,
                       "speed 130 Hz exceeds the 120 Hz cap for area 'forehead'");

        assert_refused(mnp_check_speed(&l, &p, "lips", 100, R), -ENOENT, "unknown treatment area 'lips'");
        assert_refused(mnp_check_speed(&l, NULL, "", 100, R), -ENOENT, "unknown treatment area ''");
}

static void test_duration(void **state) {
        struct mnp_limits l;
        char exp[MNP_REASON_MAX];

        mnp_limits_init(&l);

        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                const char *id = shipped[i].id;
                uint32_t cap = shipped[i].duration_s;

                assert_allowed(mnp_check_duration(&l, id, 1, R));
                assert_allowed(mnp_check_duration(&l, id, cap, R));
                /* body: 60 min is both the area's and the absolute limit; the absolute one is named. */
                if (cap == 3600)
                        snprintf(exp, sizeof exp, "60 min 1 s exceeds the absolute limit of 60 min");
                else
                        snprintf(exp, sizeof exp, "%s 1 s exceeds the %s limit for area '%s'",
                                 shipped[i].duration_str, shipped[i].duration_str, id);
                assert_refused(mnp_check_duration(&l, id, cap + 1, R), -ERANGE, exp);
                assert_refused(mnp_check_duration(&l, id, 0, R), -EINVAL,
                               "a session time of 0 s is not a session");
        }

        assert_refused(mnp_check_duration(&l, "forehead", 1500, R), -ERANGE,
                       "25 min exceeds the 20 min limit for area 'forehead'");
        assert_refused(mnp_check_duration(&l, "forehead", 1530, R), -ERANGE,
                       "25 min 30 s exceeds the 20 min limit for area 'forehead'");
        assert_refused(mnp_check_duration(&l, "periorbital", 901, R), -ERANGE,
                       "15 min 1 s exceeds the 15 min limit for area 'periorbital'");

        /* The absolute 60 min. */
        assert_allowed(mnp_check_duration(&l, NULL, 3600, R));
        assert_refused(mnp_check_duration(&l, NULL, 3601, R), -ERANGE,
                       "60 min 1 s exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, NULL, 5400, R), -ERANGE,
                       "90 min exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, NULL, 7200, R), -ERANGE,
                       "2 h exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, NULL, 7201, R), -ERANGE,
                       "2 h 1 s exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, NULL, 9000, R), -ERANGE,
                       "2 h 30 min exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, "body", 3660, R), -ERANGE,
                       "61 min exceeds the absolute limit of 60 min");
        assert_refused(mnp_check_duration(&l, NULL, 0, R), -EINVAL,
                       "a session time of 0 s is not a session");

        /* Clinic caps, and seconds for short ones. */
        assert_allowed(mnp_limits_apply(&l, "limits", "max_duration_s", "60", 2, R));
        assert_refused(mnp_check_duration(&l, NULL, 90, R), -ERANGE,
                       "90 s exceeds the clinic's limit of 60 s");
        assert_refused(mnp_check_duration(&l, "nose", 61, R), -ERANGE,
                       "61 s exceeds the clinic's limit of 60 s");
        assert_allowed(mnp_check_duration(&l, "nose", 60, R));
        assert_allowed(mnp_limits_apply(&l, "area.nose", "max_duration_s", "45", 3, R));
        assert_refused(mnp_check_duration(&l, "nose", 46, R), -ERANGE,
                       "46 s exceeds the 45 s limit for area 'nose'");

        /* Unknown area comes before the zero check. */
        assert_refused(mnp_check_duration(&l, "lips", 0, R), -ENOENT, "unknown treatment area 'lips'");
}

static void test_apply_lower(void **state) {
        struct mnp_limits l;
        struct mnp_area_limits e;

        mnp_limits_init(&l);

        /* Global lowering. */
        assert_allowed(mnp_limits_apply(&l, "limits", "max_depth_um", "1200", 1, R));
        assert_allowed(mnp_limits_apply(&l, "limits", "max_speed_hz", "150", 2, R));
        assert_allowed(mnp_limits_apply(&l, "limits", "max_duration_s", "2400", 3, R));
        assert_int_equal(l.max_depth_um, 1200);
        assert_int_equal(l.max_speed_hz, 150);
        assert_int_equal(l.max_duration_s, 2400);
        assert_allowed(mnp_limits_effective(&l, "body", &e, R));
        assert_int_equal(e.max_depth_um, 1200);
        assert_int_equal(e.max_speed_hz, 150);
        assert_int_equal(e.max_duration_s, 2400);
        assert_allowed(mnp_check_depth(&l, NULL, "body", 1200, R));
        assert_refused(mnp_check_depth(&l, NULL, "body", 1250, R), -ERANGE,
                       "depth 1.25 mm exceeds the clinic's cap of 1.20 mm");
        assert_refused(mnp_check_duration(&l, "body", 2401, R), -ERANGE,
                       "40 min 1 s exceeds the clinic's limit of 40 min");

        /* Per-area lowering, below the global cap; the area is named. */
        assert_allowed(mnp_limits_apply(&l, "area.forehead", "max_depth_um", "500", 4, R));
        assert_allowed(mnp_limits_apply(&l, "area.forehead", "max_duration_s", "900", 5, R));
        assert_allowed(mnp_limits_effective(&l, "forehead", &e, R));
        assert_int_equal(e.max_depth_um, 500);
        assert_int_equal(e.max_duration_s, 900);
        assert_int_equal(e.max_speed_hz, 150);
        assert_refused(mnp_check_depth(&l, &pen_real, "forehead", 550, R), -ERANGE,
                       "depth 0.55 mm exceeds the 0.50 mm cap for area 'forehead'");
        assert_refused(mnp_check_duration(&l, "forehead", 1000, R), -ERANGE,
                       "16 min 40 s exceeds the 15 min limit for area 'forehead'");
        /* Other areas untouched. */
        assert_int_equal(mnp_limits_area(&l, "upper-lip")->max_depth_um, 750);

        /* An area value above the global cap but below its own is accepted; the global still applies. */
        assert_allowed(mnp_limits_apply(&l, "area.body", "max_depth_um", "2000", 6, R));
        assert_allowed(mnp_limits_effective(&l, "body", &e, R));
        assert_int_equal(e.max_depth_um, 1200);

        /* The same value again, and leading zeros, are not raises. */
        assert_allowed(mnp_limits_apply(&l, "area.body", "max_depth_um", "2000", 7, R));
        assert_allowed(mnp_limits_apply(&l, "area.body", "max_depth_um", "02000", 8, R));
        assert_int_equal(mnp_limits_area(&l, "body")->max_depth_um, 2000);

        /* A zero depth cap is allowed: the area may not be needled at all. */
        assert_allowed(mnp_limits_apply(&l, "area.nose", "max_depth_um", "0", 9, R));
        assert_allowed(mnp_check_depth(&l, NULL, "nose", 0, R));
        assert_refused(mnp_check_depth(&l, NULL, "nose", 50, R), -ERANGE,
                       "depth 0.05 mm exceeds the 0.00 mm cap for area 'nose'");
        assert_allowed(mnp_limits_apply(&l, "limits", "max_depth_um", "0", 10, R));
        assert_refused(mnp_check_depth(&l, NULL, NULL, 10, R), -ERANGE,
                       "depth 0.01 mm exceeds the clinic's cap of 0.00 mm");

        /* Speed and duration down to 1. */
        assert_allowed(mnp_limits_apply(&l, "area.chin", "max_speed_hz", "1", 11, R));
        assert_allowed(mnp_limits_apply(&l, "area.chin", "max_duration_s", "1", 12, R));
        assert_allowed(mnp_check_duration(&l, "chin", 1, R));
        assert_refused(mnp_check_speed(&l, NULL, "chin", 2, R), -ERANGE,
                       "speed 2 Hz exceeds the 1 Hz cap for area 'chin'");
}

static void test_apply_raise(void **state) {
        static const char *const keys[] = { "max_depth_um", "max_speed_hz", "max_duration_s" };
        static const char *const units[] = { "um", "Hz", "s" };
        struct mnp_limits l, saved;
        char exp[MNP_REASON_MAX], sect[32], val[16];

        mnp_limits_init(&l);
        saved = l;

        /* Global caps: one above the absolute caps. */
        const uint32_t globals[] = { 3000, 300, 3600 };
        for (size_t k = 0; k < 3; k++) {
                snprintf(val, sizeof val, "%" PRIu32, globals[k] + 1);
                snprintf(exp, sizeof exp,
                         "line 7: %s = %s in [limits] would raise the cap of %" PRIu32 " %s; "
                         "the configuration may only lower caps", keys[k], val, globals[k], units[k]);
                assert_refused(mnp_limits_apply(&l, "limits", keys[k], val, 7, R), -ERANGE, exp);
                assert_memory_equal(&l, &saved, sizeof l);

                /* The largest value too. */
                assert_int_equal(mnp_limits_apply(&l, "limits", keys[k], "4294967295", 7, NULL, 0), -ERANGE);
                assert_memory_equal(&l, &saved, sizeof l);
        }

        /* Every area, every key. */
        for (size_t i = 0; i < MNP_AREA_COUNT; i++) {
                const uint32_t caps[] = { shipped[i].depth_um, 300, shipped[i].duration_s };

                snprintf(sect, sizeof sect, "area.%s", shipped[i].id);
                for (size_t k = 0; k < 3; k++) {
                        unsigned line = (unsigned) (100 + i * 3 + k);

                        snprintf(val, sizeof val, "%" PRIu32, caps[k] + 1);
                        snprintf(exp, sizeof exp,
                                 "line %u: %s = %s in [%s] would raise the cap of %" PRIu32 " %s; "
                                 "the configuration may only lower caps",
                                 line, keys[k], val, sect, caps[k], units[k]);
                        assert_refused(mnp_limits_apply(&l, sect, keys[k], val, line, R), -ERANGE, exp);
                        assert_memory_equal(&l, &saved, sizeof l);
                }
        }

        assert_refused(mnp_limits_apply(&l, "area.forehead", "max_depth_um", "800", 12, R), -ERANGE,
                       "line 12: max_depth_um = 800 in [area.forehead] would raise the cap of 750 um; "
                       "the configuration may only lower caps");
        /* Line 0: no prefix. */
        assert_refused(mnp_limits_apply(&l, "area.forehead", "max_depth_um", "800", 0, R), -ERANGE,
                       "max_depth_um = 800 in [area.forehead] would raise the cap of 750 um; "
                       "the configuration may only lower caps");
        /* The largest line number. */
        assert_refused(mnp_limits_apply(&l, "limits", "max_speed_hz", "301", LINE_MAX_U, R), -ERANGE,
                       "line 4294967295: max_speed_hz = 301 in [limits] would raise the cap of 300 Hz; "
                       "the configuration may only lower caps");
        assert_memory_equal(&l, &saved, sizeof l);

        /* After lowering, going back up is a raise too. */
        assert_allowed(mnp_limits_apply(&l, "limits", "max_depth_um", "2000", 1, R));
        assert_allowed(mnp_limits_apply(&l, "area.scalp", "max_duration_s", "600", 2, R));
        saved = l;
        assert_refused(mnp_limits_apply(&l, "limits", "max_depth_um", "2500", 3, R), -ERANGE,
                       "line 3: max_depth_um = 2500 in [limits] would raise the cap of 2000 um; "
                       "the configuration may only lower caps");
        assert_refused(mnp_limits_apply(&l, "area.scalp", "max_duration_s", "1800", 4, R), -ERANGE,
                       "line 4: max_duration_s = 1800 in [area.scalp] would raise the cap of 600 s; "
                       "the configuration may only lower caps");
        assert_memory_equal(&l, &saved, sizeof l);
}

static void test_apply_malformed(void **state) {
        static const char *const bad[] = {
                "", "-1", "+5", "1e3", " 5", "5 ", "5x", "0x10", "99999999999", "4294967296",
                "18446744073709551616", "5.0", "5,0", "\t5", "5\n", "five", "0b1", "1_000", "-0",
        };
        struct mnp_limits l, saved;

        mnp_limits_init(&l);
        saved = l;

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                assert_int_equal(mnp_limits_apply(&l, "limits", "max_depth_um", bad[i], 1, NULL, 0), -EINVAL);
                assert_int_equal(mnp_limits_apply(&l, "area.neck", "max_speed_hz", bad[i], 1, NULL, 0), -EINVAL);
                assert_int_equal(mnp_limits_apply(&l, "area.body", "max_duration_s", bad[i], 1, NULL, 0), -EINVAL);
                assert_memory_equal(&l, &saved, sizeof l);
        }

        assert_refused(mnp_limits_apply(&l, "area.forehead", "max_depth_um", "5x", 8, R), -EINVAL,
                       "line 8: max_depth_um = '5x' in [area.forehead] is not a whole number of micrometres (digits only)");
        assert_refused(mnp_limits_apply(&l, "limits", "max_speed_hz", "", 9, R), -EINVAL,
                       "line 9: max_speed_hz = '' in [limits] is not a whole number of hertz (digits only)");
        assert_refused(mnp_limits_apply(&l, "limits", "max_duration_s", "99999999999", 10, R), -EINVAL,
                       "line 10: max_duration_s = '99999999999' in [limits] is too large a number (at most 4294967295 s)");
        /* Control characters are not echoed. */
        assert_refused(mnp_limits_apply(&l, "limits", "max_duration_s", "5\n", 11, R), -EINVAL,
                       "line 11: max_duration_s = '5?' in [limits] is not a whole number of seconds (digits only)");

        /* UINT32_MAX itself is a number (and a raise). */
        assert_int_equal(mnp_limits_apply(&l, "limits", "max_depth_um", "4294967295", 1, NULL, 0), -ERANGE);

        /* Zero speed and duration caps would forbid every session. */
        assert_refused(mnp_limits_apply(&l, "limits", "max_speed_hz", "0", 5, R), -EINVAL,
                       "line 5: max_speed_hz = 0 in [limits] would forbid every session; the lowest cap is 1 Hz");
        assert_refused(mnp_limits_apply(&l, "area.face", "max_duration_s", "0", 6, R), -EINVAL,
                       "line 6: max_duration_s = 0 in [area.face] would forbid every session; the lowest cap is 1 s");
        assert_int_equal(mnp_limits_apply(&l, "area.face", "max_speed_hz", "000", 6, NULL, 0), -EINVAL);
        assert_int_equal(mnp_limits_apply(&l, "limits", "max_duration_s", "0", 6, NULL, 0), -EINVAL);
        assert_memory_equal(&l, &saved, sizeof l);

        /* NULL arguments. */
        assert_int_equal(mnp_limits_apply(&l, NULL, "max_depth_um", "5", 1, NULL, 0), -EINVAL);
        assert_int_equal(mnp_limits_apply(&l, "limits", NULL, "5", 1, NULL, 0), -EINVAL);
        assert_int_equal(mnp_limits_apply(&l, "limits", "max_depth_um", NULL, 1, NULL, 0), -EINVAL);
        assert_int_equal(mnp_limits_apply(NULL, "limits", "max_depth_um", "5", 1, NULL, 0), -EINVAL);
        assert_memory_equal(&l, &saved, sizeof l);
}

static void test_apply_unknown(void **state) {
        static const char *const sections[] = {
                "limit", "Limits", "limits ", "", "area", "area.", "area.foo", "area.Forehead",
                "area.forehead.x", "areas.forehead", "area..forehead",
        };
        static const char *const keys[] = {
                "max_depth", "MAX_DEPTH_UM", "max_depth_mm", "", "max_depth_um ", "depth",
        };
        struct mnp_limits l, saved;

        mnp_limits_init(&l);
        saved = l;

        for (size_t i = 0; i < ELEMENTSOF(sections); i++)
                assert_int_equal(mnp_limits_apply(&l, sections[i], "max_depth_um", "5", 1, NULL, 0), -ENOENT);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                assert_int_equal(mnp_limits_apply(&l, "limits", keys[i], "5", 1, NULL, 0), -ENOENT);
                assert_int_equal(mnp_limits_apply(&l, "area.neck", keys[i], "5", 1, NULL, 0), -ENOENT);
        }
        assert_memory_equal(&l, &saved, sizeof l);

        assert_refused(mnp_limits_apply(&l, "area.lips", "max_depth_um", "500", 3, R), -ENOENT,
                       "line 3: unknown treatment area 'lips' in section [area.lips]");
        assert_refused(mnp_limits_apply(&l, "caps", "max_depth_um", "500", 4, R), -ENOENT,
                       "line 4: unknown section [caps]; the limits live in [limits] and [area.<id>]");
        assert_refused(mnp_limits_apply(&l, "area.neck", "max_depth", "500", 5, R), -ENOENT,
                       "line 5: unknown key 'max_depth' in [area.neck]; expected max_depth_um, max_speed_hz or max_duration_s");
        /* A section or key error comes before a malformed value. */
        assert_int_equal(mnp_limits_apply(&l, "area.lips", "max_depth_um", "x", 3, NULL, 0), -ENOENT);
        assert_int_equal(mnp_limits_apply(&l, "limits", "depth", "x", 3, NULL, 0), -ENOENT);
        assert_memory_equal(&l, &saved, sizeof l);
}

static void test_unknown_area_checks(void **state) {
        struct mnp_limits l;

        mnp_limits_init(&l);
        assert_refused(mnp_check_depth(&l, NULL, "lips", 100, R), -ENOENT, "unknown treatment area 'lips'");
        assert_refused(mnp_check_depth(&l, &pen_real, "Forehead", 333, R), -ENOENT,
                       "unknown treatment area 'Forehead'");
        assert_refused(mnp_check_speed(&l, NULL, "lips", 100, R), -ENOENT, "unknown treatment area 'lips'");
        assert_refused(mnp_check_duration(&l, "lips", 100, R), -ENOENT, "unknown treatment area 'lips'");
        /* Non-printable bytes are not echoed, long ids are cut. */
        assert_refused(mnp_check_depth(&l, NULL, "a\033[2Jb", 100, R), -ENOENT,
                       "unknown treatment area 'a?[2Jb'");
        assert_refused(mnp_check_depth(&l, NULL, "abcdefghijklmnopqrstuvwxyz0123456789", 100, R), -ENOENT,
                       "unknown treatment area 'abcdefghijklmnopqrstuvwx...'");

        /* No limits table at all: refused. */
        assert_int_equal(mnp_check_depth(NULL, NULL, NULL, 100, NULL, 0), -EINVAL);
        assert_int_equal(mnp_check_speed(NULL, NULL, NULL, 100, NULL, 0), -EINVAL);
        assert_int_equal(mnp_check_duration(NULL, NULL, 100, NULL, 0), -EINVAL);
        assert_int_equal(mnp_limits_effective(NULL, NULL, &(struct mnp_area_limits) {}, NULL, 0), -EINVAL);
}

/* Every way to produce a message, with the longest inputs: one buffer of
 * MNP_REASON_MAX must never truncate. */
static void test_reason_lengths(void **state) {
        char longstr[1024], big[1024], exact[MNP_REASON_MAX];
        struct mnp_limits l;
        struct mnp_pen_range p = {
                UINT32_MAX - 4, UINT32_MAX - 4, 5, UINT32_MAX - 1, UINT32_MAX - 1,
        };
        size_t longest = 0;

        memset(longstr, 'z', sizeof longstr - 1);
        longstr[sizeof longstr - 1] = '\0';
        char longsect[1100];
        snprintf(longsect, sizeof longsect, "area.%s", longstr);

        mnp_limits_init(&l);
        /* Area ids at their longest: 15 characters. */
        memcpy(l.areas[8].id, "decolletage1234", 16);
        const char *lid = l.areas[8].id;
        char lsect[32];
        snprintf(lsect, sizeof lsect, "area.%s", lid);
        l.areas[8].max_depth_um = 2995;
        l.areas[8].max_duration_s = 3599;

#define CHECK_LEN(call)                                                         \
        do {                                                                    \
                char *_b = big;                                                 \
                size_t _s = sizeof big;                                         \
                int _r1 = (call);                                               \
                size_t _n = strlen(big);                                        \
                assert_true(_n < MNP_REASON_MAX);                               \
                if (_n > longest)                                               \
                        longest = _n;                                           \
                _b = exact;                                                     \
                _s = sizeof exact;                                              \
                assert_int_equal((call), _r1);                                  \
                assert_string_equal(exact, big);                                \
        } while (0)
#define B _b, _s

        const unsigned L = LINE_MAX_U;
        CHECK_LEN(mnp_limits_apply(&l, longsect, "max_duration_s", "5", L, B));
        CHECK_LEN(mnp_limits_apply(&l, longstr, "max_duration_s", "5", L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, longstr, "5", L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, "max_duration_s", longstr, L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, "max_duration_s", "99999999999999999999999999999999", L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, "max_duration_s", "4294967295", L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, "max_depth_um", "4294967295", L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, "max_duration_s", "0", L, B));
        CHECK_LEN(mnp_limits_apply(&l, lsect, NULL, "0", L, B));
        CHECK_LEN(mnp_limits_apply(NULL, lsect, NULL, "0", L, B));
        CHECK_LEN(mnp_check_depth(&l, NULL, longstr, UINT32_MAX, B));
        CHECK_LEN(mnp_check_depth(&l, NULL, lid, UINT32_MAX, B));
        CHECK_LEN(mnp_check_depth(&l, &p, NULL, 5, B));
        p.depth_step_um = UINT32_MAX - 1;
        CHECK_LEN(mnp_check_depth(&l, &p, lid, UINT32_MAX, B));
        p.depth_step_um = 0;
        CHECK_LEN(mnp_check_depth(&l, &p, lid, UINT32_MAX, B));
        CHECK_LEN(mnp_check_speed(&l, NULL, lid, UINT32_MAX, B));
        CHECK_LEN(mnp_check_speed(&l, &p, lid, 1, B));
        CHECK_LEN(mnp_check_duration(&l, lid, UINT32_MAX, B));
        CHECK_LEN(mnp_check_duration(&l, lid, 0, B));
        CHECK_LEN(mnp_check_duration(&l, longstr, 0, B));
        CHECK_LEN(mnp_check_duration(NULL, longstr, 0, B));
        /* The longest duration value against the longest cap value. */
        l.max_duration_s = UINT32_MAX - 1;
        l.areas[8].max_duration_s = 7199 + 3600 * 1000000u;
        CHECK_LEN(mnp_check_duration(&l, lid, UINT32_MAX, B));

        print_message("longest reason: %zu bytes of %d\n", longest, MNP_REASON_MAX - 1);
#undef B
#undef CHECK_LEN
}

/* Small buffers: NUL-terminated, a prefix of the full sentence, nothing written past size. */
static void test_small_buffers(void **state) {
        static const size_t sizes[] = { 1, 2, 8, 9, 16 };
        struct mnp_limits l;
        struct mnp_area_limits e;

        mnp_limits_init(&l);

        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
                size_t sz = sizes[i];
                char full[MNP_REASON_MAX], buf[64];

#define CHECK_SMALL(call_full, call_small)                              \
                do {                                                    \
                        int _rf = (call_full);                          \
                        memset(buf, 'X', sizeof buf);                   \
                        assert_int_equal((call_small), _rf);            \
                        assert_int_equal(buf[sz - 1], '\0');            \
                        assert_int_equal(strlen(buf), sz - 1);          \
                        assert_memory_equal(buf, full, sz - 1);         \
                        assert_int_equal(buf[sz], 'X');                 \
                } while (0)

                CHECK_SMALL(mnp_check_depth(&l, NULL, "forehead", 800, full, sizeof full),
                            mnp_check_depth(&l, NULL, "forehead", 800, buf, sz));
                CHECK_SMALL(mnp_check_depth(&l, &pen_real, "forehead", 333, full, sizeof full),
                            mnp_check_depth(&l, &pen_real, "forehead", 333, buf, sz));
                CHECK_SMALL(mnp_check_speed(&l, &pen_real, NULL, 5, full, sizeof full),
                            mnp_check_speed(&l, &pen_real, NULL, 5, buf, sz));
                CHECK_SMALL(mnp_check_duration(&l, "forehead", 1530, full, sizeof full),
                            mnp_check_duration(&l, "forehead", 1530, buf, sz));
                CHECK_SMALL(mnp_check_duration(&l, "lips", 1530, full, sizeof full),
                            mnp_check_duration(&l, "lips", 1530, buf, sz));
                CHECK_SMALL(mnp_limits_effective(&l, "lips", &e, full, sizeof full),
                            mnp_limits_effective(&l, "lips", &e, buf, sz));
                /* Truncation inside the "line N: " prefix and after it. */
                CHECK_SMALL(mnp_limits_apply(&l, "limits", "max_depth_um", "5x", 123456, full, sizeof full),
                            mnp_limits_apply(&l, "limits", "max_depth_um", "5x", 123456, buf, sz));
                CHECK_SMALL(mnp_limits_apply(&l, "area.nose", "max_depth_um", "800", 12, full, sizeof full),
                            mnp_limits_apply(&l, "area.nose", "max_depth_um", "800", 12, buf, sz));
#undef CHECK_SMALL
        }

        /* Size 0: the buffer is not touched; NULL is fine. */
        char buf[4] = "XXX";
        assert_int_equal(mnp_check_depth(&l, NULL, "forehead", 800, buf, 0), -ERANGE);
        assert_string_equal(buf, "XXX");
        assert_int_equal(mnp_limits_apply(&l, "limits", "max_depth_um", "5x", 1, buf, 0), -EINVAL);
        assert_string_equal(buf, "XXX");
        assert_int_equal(mnp_check_depth(&l, NULL, "forehead", 700, NULL, 0), 0);
        assert_int_equal(mnp_limits_apply(&l, "limits", "max_depth_um", "2000", 1, NULL, 0), 0);
        assert_int_equal(l.max_depth_um, 2000);

        /* Success clears a buffer of size 1. */
        buf[0] = 'X';
        assert_int_equal(mnp_check_depth(&l, NULL, "forehead", 700, buf, 1), 0);
        assert_int_equal(buf[0], '\0');
        assert_int_equal(buf[1], 'X');
}

/* The functions keep no state: the same call gives the same answer, and a
 * second table is independent of the first. */
static void test_pure(void **state) {
        struct mnp_limits a, b;
        char r1[MNP_REASON_MAX], r2[MNP_REASON_MAX];

        mnp_limits_init(&a);
        mnp_limits_init(&b);
        assert_int_equal(mnp_limits_apply(&a, "limits", "max_depth_um", "500", 1, NULL, 0), 0);
        assert_int_equal(mnp_check_depth(&b, NULL, "cheeks", 1500, r1, sizeof r1), 0);
        assert_int_equal(mnp_check_depth(&a, NULL, "cheeks", 1500, r1, sizeof r1), -ERANGE);
        assert_int_equal(mnp_check_depth(&a, NULL, "cheeks", 1500, r2, sizeof r2), -ERANGE);
        assert_string_equal(r1, r2);

        const struct mnp_limits before = b;
        (void) mnp_check_depth(&b, &pen_real, "face", 1000, NULL, 0);
        (void) mnp_check_speed(&b, &pen_real, "face", 120, NULL, 0);
        (void) mnp_check_duration(&b, "face", 1200, NULL, 0);
        assert_memory_equal(&b, &before, sizeof b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_format_depth),
                cmocka_unit_test(test_init_table),
                cmocka_unit_test(test_area_lookup),
                cmocka_unit_test(test_effective),
                cmocka_unit_test(test_depth_area_caps),
                cmocka_unit_test(test_depth_step),
                cmocka_unit_test(test_depth_pen_range),
                cmocka_unit_test(test_depth_absolute_and_clinic),
                cmocka_unit_test(test_uint32_max),
                cmocka_unit_test(test_speed),
                cmocka_unit_test(test_duration),
                cmocka_unit_test(test_apply_lower),
                cmocka_unit_test(test_apply_raise),
                cmocka_unit_test(test_apply_malformed),
                cmocka_unit_test(test_apply_unknown),
                cmocka_unit_test(test_unknown_area_checks),
                cmocka_unit_test(test_reason_lengths),
                cmocka_unit_test(test_small_buffers),
                cmocka_unit_test(test_pure),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
