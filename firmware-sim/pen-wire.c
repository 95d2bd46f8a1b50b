/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "pen-wire.h"

void pen_wq_clear(struct pen_wq *q) {
        q->n = 0;
}

static size_t pen_wq_oldest(const struct pen_wq *q) {
        size_t best = 0;

        for (size_t i = 1; i < q->n; i++)
                if (q->e[i].order < q->e[best].order)
                        best = i;
        return best;
}

static void pen_wq_remove(struct pen_wq *q, size_t i) {
        /* Order lives in the entries, so the array need not stay sorted. */
        if (i != q->n - 1)
                q->e[i] = q->e[q->n - 1];
        q->n--;
}

int pen_wq_push(struct pen_wq *q, uint64_t due_us, const uint8_t *data, size_t len) {
        struct pen_wq_entry *e;

        if (len > MNP_MAX_WIRE_FRAME)
                return -EMSGSIZE;

        if (q->n == PEN_WQ_MAX) {
                pen_wq_remove(q, pen_wq_oldest(q));
                q->dropped++;
        }

        e = &q->e[q->n++];
        e->due_us = due_us;
        e->order = q->next_order++;
        e->len = len;
        memcpy(e->data, data, len);
        return 0;
}

static bool pen_wq_before(const struct pen_wq_entry *a, const struct pen_wq_entry *b) {
        if (a->due_us != b->due_us)
                return a->due_us < b->due_us;
        return a->order < b->order;
}

bool pen_wq_pop_due(struct pen_wq *q, uint64_t now_us, struct pen_wq_entry *ret) {
        size_t best = SIZE_MAX;

        for (size_t i = 0; i < q->n; i++) {
                if (q->e[i].due_us > now_us)
                        continue;
                if (best == SIZE_MAX || pen_wq_before(&q->e[i], &q->e[best]))
                        best = i;
        }
        if (best == SIZE_MAX)
                return false;

        *ret = q->e[best];
        pen_wq_remove(q, best);
        return true;
}

uint64_t pen_wq_next_due(const struct pen_wq *q) {
        uint64_t d = UINT64_MAX;

        for (size_t i = 0; i < q->n; i++)
                if (q->e[i].due_us < d)
                        d = q->e[i].due_us;
        return d;
}

uint64_t pen_rand_next(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}

/* A uniform draw in [0, 1). */
static double pen_rand_unit(uint64_t *state) {
        return (double) (pen_rand_next(state) >> 11) * 0x1.0p-53;
}

void pen_faults_init(struct pen_faults *f, uint64_t seed) {
        *f = (struct pen_faults) {
                /* A stream of its own, so that boot ids do not depend on traffic. */
                .rng = seed ^ UINT64_C(0x6c696e6b2d666c74),
        };
}

void pen_faults_set(struct pen_faults *f, const struct sim_link_faults *cfg) {
        if (!cfg) {
                f->cfg = (struct sim_link_faults) {};
                f->active = false;
                return;
        }

        f->cfg = *cfg;
        f->active = cfg->drop > 0 || cfg->corrupt > 0 || cfg->duplicate > 0 ||
                    (cfg->delay > 0 && cfg->delay_ms > 0);
}

static void pen_corrupt(uint8_t *body, size_t len, uint64_t r_pos, uint64_t r_val) {
        size_t data[MNP_MAX_COBS_FRAME];
        size_t n = 0, pos = 0;
        uint8_t b;

        if (len == 0)
                return;

        /* Collect the positions of COBS data bytes (not code bytes). */
        while (pos < len && n < MNP_MAX_COBS_FRAME) {
                size_t code = body[pos];

                if (code == 0)
                        break;
                for (size_t i = pos + 1; i < pos + code && i < len && n < MNP_MAX_COBS_FRAME; i++)
                        data[n++] = i;
                pos += code;
        }

        if (n == 0) {
                /* Not valid COBS to begin with: flip any byte, keeping it non-zero. */
                data[n++] = (size_t) (r_pos % len);
                r_pos = 0;
        }

        pos = data[r_pos % n];
        b = body[pos];
        if (b == 0)
                b = 1;
        /* Another value in 1..255, never the same one and never 0x00. */
        body[pos] = (uint8_t) (((unsigned) (b - 1) + 1u + (unsigned) (r_val % 254)) % 255u + 1u);
}

unsigned pen_faults_apply(struct pen_faults *f, uint8_t *body, size_t len, uint64_t *ret_delay_us) {
        bool drop, corrupt, duplicate, delay;
        uint64_t r_pos, r_val;

        *ret_delay_us = 0;
        if (!f->active)
                return 1;

        /* Always the same number of draws per frame: the stream stays in step
         * whatever the outcome. */
        drop = pen_rand_unit(&f->rng) < f->cfg.drop;
        corrupt = pen_rand_unit(&f->rng) < f->cfg.corrupt;
        duplicate = pen_rand_unit(&f->rng) < f->cfg.duplicate;
        delay = pen_rand_unit(&f->rng) < f->cfg.delay;
        r_pos = pen_rand_next(&f->rng);
        r_val = pen_rand_next(&f->rng);

        if (drop)
                return 0;
        if (corrupt)
                pen_corrupt(body, len, r_pos, r_val);
        if (delay)
                *ret_delay_us = (uint64_t) f->cfg.delay_ms * 1000u;
        return duplicate ? 2 : 1;
}
