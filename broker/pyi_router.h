/*  pyi_router: what the broker does with each message (docs/protocol.md):
    it registers the workers that offer services (READY, against the
    grants), routes each REQUEST to the worker offering its service and
    each REPLY or ERROR back to the caller that made it, forwards CANCEL,
    answers every failure (unknown service, lost worker, deadline, full
    tables, bad input) with an ERROR at once, keeps workers alive by
    heartbeat and gives up on silent ones, and cuts off peers that keep
    sending bad messages.

    It lives on the broker thread and sends on the broker's ROUTER socket
    and its events, which it borrows; the broker thread reads the messages
    and feeds them in. Internal to libpyisolate (broker/).
*/
#ifndef PYI_ROUTER_H_INCLUDED
#define PYI_ROUTER_H_INCLUDED

#include "pyisolate/pyi_broker.h"
#include "pyisolate/pyi_msg.h"
#include "pyi_events.h"
#include "pyi_grants.h"
#include "pyi_supervisor.h"
#include "pyi_trace.h"
#include <stdint.h>

typedef struct _pyi_router_t pyi_router_t;

/*  A router sending on socket (the broker's ROUTER, a libzmq handle) and
    reporting to the host on events, which admits
    workers by grants, asks supervisor to kill the process of a worker
    that stopped answering and tells tracer each hop (pyi_trace.h). All
    five are borrowed. Options have their defaults. NULL when out of
    memory. */
pyi_router_t *pyi_router_new (void *socket, pyi_events_t *events, pyi_grants_t *grants,
                              pyi_supervisor_t *supervisor, pyi_tracer_t *tracer);

/*  Forget every worker and request, sending nothing (see
    pyi_router_stop). Safe on NULL and on *self_p == NULL. */
void pyi_router_destroy (pyi_router_t **self_p);

/*  Set one of the options the router keeps: PYI_OPT_HEARTBEAT_MS,
    PYI_OPT_LIVENESS, PYI_OPT_MAX_PENDING, PYI_OPT_MAX_STRIKES. 0, or -1
    for another option or a value <= 0. */
int pyi_router_set (pyi_router_t *self, int option, int64_t value);

/*  Handle one message read from the ROUTER socket (pyi_msg_recv with
    router = true), whatever its status. A message routed on is taken
    (*msg_p becomes NULL); the caller destroys what is left. */
void pyi_router_handle (pyi_router_t *self, pyi_msg_t **msg_p);

/*  Answer ERROR TIMEOUT to every request whose deadline is at or before
    now (ms, monotonic), and CANCEL it at its worker. */
void pyi_router_expire (pyi_router_t *self, int64_t now);

/*  When heartbeats are due (at or before now): HEARTBEAT to every live
    worker, and give up on those silent for heartbeat x liveness (told
    DISCONNECT, their process killed, their requests failed). */
void pyi_router_heartbeat (pyi_router_t *self, int64_t now);

/*  The next time pyi_router_expire or pyi_router_heartbeat has work to do
    (ms, monotonic). */
int64_t pyi_router_wake (pyi_router_t *self);

/*  A spawned process ended: its worker is lost (requests in flight fail
    at once with the reason), EXIT is reported, and its token dies. */
void pyi_router_exited (pyi_router_t *self, const pyi_exit_t *ended);

/*  The statistics of service; 0, or -1 when the broker never heard of it. */
int pyi_router_service_stats (pyi_router_t *self, const char *service,
                              pyi_service_stats_t *stats);

/*  The broker-wide counters (all but processes, the supervisor's). */
void pyi_router_stats (pyi_router_t *self, pyi_broker_stats_t *stats);

/*  The broker is stopping: answer every request in flight with ERROR
    SHUTDOWN and tell every worker DISCONNECT SHUTDOWN. */
void pyi_router_stop (pyi_router_t *self);

#endif
