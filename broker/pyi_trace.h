/*  pyi_trace: the broker thread's record of its hops while a trace is on
    (manager.trace; the public half, pyi_trace_t, is in pyi_broker.h).

    A tracer lives on the broker thread, owned by the broker and borrowed
    by the router. Off, each hook costs one branch. On, each hop (a
    REQUEST forwarded to its worker, a REPLY or ERROR forwarded to its
    caller) is one record in a buffer of a fixed capacity, allocated when
    the trace starts; hops past it are counted, not kept. Stopping hands
    the buffer to the caller (pyi_trace_t), nothing is copied. Times are
    CLOCK_MONOTONIC nanoseconds. Internal to libpyisolate (broker/).
*/
#ifndef PYI_TRACE_H_INCLUDED
#define PYI_TRACE_H_INCLUDED

#include "pyisolate/pyi_broker.h"
#include <stddef.h>
#include <stdint.h>

typedef struct _pyi_tracer_t pyi_tracer_t;

/*  A tracer, off. NULL when out of memory. */
pyi_tracer_t *pyi_tracer_new (void);

/*  Destroy it and a recording underway. Safe on NULL and *self_p NULL. */
void pyi_tracer_destroy (pyi_tracer_t **self_p);

/*  Start recording up to capacity hops (1 to PYI_TRACE_MAX_HOPS), dropping
    a recording underway. 0, or -1 (a capacity out of range, out of memory). */
int pyi_tracer_start (pyi_tracer_t *self, size_t capacity);

/*  Stop; the recording, the caller's to destroy, or NULL if none was on. */
pyi_trace_t *pyi_tracer_stop (pyi_tracer_t *self);

/*  A message arrived: the receive time of the hop it may become. This
    and pyi_tracer_hop do nothing on a NULL tracer (a router without one). */
void pyi_tracer_mark (pyi_tracer_t *self);

/*  A hop of request rid (the broker's id; caller_id the caller's) for
    service, from the last mark until now. */
void pyi_tracer_hop (pyi_tracer_t *self, int kind, uint64_t rid, uint64_t caller_id,
                     const char *service);

#endif
