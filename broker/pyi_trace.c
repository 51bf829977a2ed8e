/*  pyi_trace: the broker thread's hops while a trace is on (pyi_trace.h),
    and the recording a caller takes away (pyi_trace_t, pyi_broker.h). */
#include "pyi_trace.h"
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct _pyi_trace_t {
    pyi_hop_t *hops;                /* capacity records, size of them used */
    size_t size;
    size_t capacity;
    uint64_t dropped;               /* hops past capacity */
};

struct _pyi_tracer_t {
    pyi_trace_t *trace;             /* the recording, NULL when off */
    int64_t received;               /* the last mark (ns) */
};

static int64_t
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

pyi_tracer_t *
pyi_tracer_new (void)
{
    return (pyi_tracer_t *) calloc (1, sizeof (pyi_tracer_t));
}

void
pyi_tracer_destroy (pyi_tracer_t **self_p)
{
    if (self_p && *self_p) {
        pyi_trace_destroy (&(*self_p)->trace);
        free (*self_p);
        *self_p = NULL;
    }
}

int
pyi_tracer_start (pyi_tracer_t *self, size_t capacity)
{
    if (capacity == 0 || capacity > PYI_TRACE_MAX_HOPS)
        return -1;
    pyi_trace_t *trace = (pyi_trace_t *) calloc (1, sizeof (pyi_trace_t));
    if (trace)
        trace->hops = (pyi_hop_t *) calloc (capacity, sizeof (pyi_hop_t));
    if (!trace || !trace->hops) {
        pyi_trace_destroy (&trace);
        return -1;
    }
    trace->capacity = capacity;
    pyi_trace_destroy (&self->trace);
    self->trace = trace;
    return 0;
}

pyi_trace_t *
pyi_tracer_stop (pyi_tracer_t *self)
{
    pyi_trace_t *trace = self->trace;
    self->trace = NULL;
    return trace;
}

void
pyi_tracer_mark (pyi_tracer_t *self)
{
    if (self && self->trace)
        self->received = s_now ();
}

void
pyi_tracer_hop (pyi_tracer_t *self, int kind, uint64_t rid, uint64_t caller_id,
                const char *service)
{
    pyi_trace_t *trace = self ? self->trace : NULL;
    if (!trace)
        return;
    if (trace->size == trace->capacity) {
        trace->dropped++;
        return;
    }
    pyi_hop_t *hop = &trace->hops [trace->size++];
    hop->kind = kind;
    hop->rid = rid;
    hop->caller_id = caller_id;
    hop->received_ns = self->received;
    hop->forwarded_ns = s_now ();
    snprintf (hop->service, sizeof (hop->service), "%s", service);
}

/*  The recording (public) ---------------------------------------------- */

size_t
pyi_trace_size (const pyi_trace_t *self)
{
    return self->size;
}

const pyi_hop_t *
pyi_trace_hop (const pyi_trace_t *self, size_t index)
{
    return index < self->size ? &self->hops [index] : NULL;
}

uint64_t
pyi_trace_dropped (const pyi_trace_t *self)
{
    return self->dropped;
}

void
pyi_trace_destroy (pyi_trace_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->hops);
        free (*self_p);
        *self_p = NULL;
    }
}
