/*  pyi_events: the events the broker reports to the host (pyi_event_t:
    a worker ready, lost or refused, a process ended), over an inproc
    PAIR from the broker thread's end to the host's end. The broker
    thread never waits for the host: past PYI_EVENTS_MAX events waiting,
    new ones are dropped. Internal to libpyisolate (broker/).
*/
#ifndef PYI_EVENTS_H_INCLUDED
#define PYI_EVENTS_H_INCLUDED

#include "pyisolate/pyi_broker.h"

/*  Events waiting for the host at most (the broker's end's queue). */
#define PYI_EVENTS_MAX 10000

typedef struct _pyi_events_t pyi_events_t;

/*  The broker thread's end, bound at endpoint (inproc://). NULL with
    pyi_last_error () set. */
pyi_events_t *pyi_events_bind (const char *endpoint);

/*  The host's end, connected to endpoint. NULL with pyi_last_error () set. */
pyi_events_t *pyi_events_connect (const char *endpoint);

/*  Close this end. Safe on NULL and on *self_p == NULL. */
void pyi_events_destroy (pyi_events_t **self_p);

/*  Report one event (service and text may be NULL for ""; longer ones
    are cut); never blocks. */
void pyi_events_send (pyi_events_t *self, int type, int pid, int status,
                      const char *service, const char *text);

/*  Take the next event; timeout_ms 0 = don't wait, -1 = wait forever.
    0 with *event filled, or -1 when none came. */
int pyi_events_recv (pyi_events_t *self, pyi_event_t *event, int timeout_ms);

/*  The host's end's descriptor (ZMQ_FD: edge-triggered). */
int pyi_events_fd (pyi_events_t *self);

#endif
