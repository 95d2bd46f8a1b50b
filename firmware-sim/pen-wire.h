/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Internal to the pen model: the wire between pen and host as the simulator
 * sees it.  A bounded queue of frames with release times (delayed frames may
 * be overtaken), a deterministic PRNG, and the per-frame fault injection
 * (drop, corrupt, duplicate, delay) applied in both directions.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mnp/frame.h>
#include "pen.h"

/* Most frames a queue holds; a full queue drops its oldest frame. */
#define PEN_WQ_MAX 64

struct pen_wq_entry {
        uint64_t due_us;
        uint64_t order;         /* enqueue order: ties on due_us keep it */
        size_t len;
        uint8_t data[MNP_MAX_WIRE_FRAME];
};

struct pen_wq {
        struct pen_wq_entry e[PEN_WQ_MAX];
        size_t n;
        uint64_t next_order;
        uint64_t dropped;       /* frames pushed out because the queue was full */
};

void pen_wq_clear(struct pen_wq *q);
/* Queues a copy of data (len <= MNP_MAX_WIRE_FRAME, else -EMSGSIZE); when the
 * queue is full the oldest frame is dropped and counted.  Returns 0. */
int pen_wq_push(struct pen_wq *q, uint64_t due_us, const uint8_t *data, size_t len);
/* Moves the frame that is due first (by due time, then order) into *ret.
 * Returns false when nothing is due by now_us. */
bool pen_wq_pop_due(struct pen_wq *q, uint64_t now_us, struct pen_wq_entry *ret);
/* The earliest due time in the queue, UINT64_MAX if empty. */
uint64_t pen_wq_next_due(const struct pen_wq *q);

/* splitmix64: small, fast and good enough for a simulation. */
uint64_t pen_rand_next(uint64_t *state);

struct pen_faults {
        struct sim_link_faults cfg;
        uint64_t rng;
        bool active;            /* any probability > 0 */
};

void pen_faults_init(struct pen_faults *f, uint64_t seed);
void pen_faults_set(struct pen_faults *f, const struct sim_link_faults *cfg);

/*
 * Decides one frame's fate.  body is the COBS-encoded frame without its
 * delimiters; a corruption flips one COBS data byte to another non-zero value
 * (so the framing survives and the CRC check is what rejects it).  Returns the
 * number of copies to deliver (0 dropped, 1, or 2 duplicated) and stores in
 * *ret_delay_us how long to hold them back.
 */
unsigned pen_faults_apply(struct pen_faults *f, uint8_t *body, size_t len, uint64_t *ret_delay_us);
