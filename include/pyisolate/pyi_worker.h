/*  pyi_worker: serves named services through the broker.

    A worker is one DEALER socket connected to a broker endpoint. It offers
    services (READY, with a token the broker granted), then receives
    REQUESTs and answers each with REPLY or ERROR, in any order and with
    any number in flight. It exchanges heartbeats with the broker: call
    pyi_worker_recv () or pyi_worker_heartbeat () at least once per
    heartbeat interval, or the broker declares the worker lost. A worker is
    not thread-safe: use it from one thread at a time.

    For event loops: pyi_worker_fd () is libzmq's ZMQ_FD (edge-triggered);
    when it becomes readable, and after every send, call
    pyi_worker_recv (self, 0) until it returns NULL.
*/
#ifndef PYI_WORKER_H_INCLUDED
#define PYI_WORKER_H_INCLUDED

#include "pyi_library.h"
#include "pyi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _pyi_worker_t pyi_worker_t;

/*  Connect to a broker endpoint. token is the one the broker granted
    (pyi_broker_allow, or $PYI_TOKEN in a spawned process).
    heartbeat_ms and liveness as in pyi_broker_set; 0 picks the defaults
    (1000 ms, 5). NULL on a bad endpoint. */
PYI_EXPORT pyi_worker_t *pyi_worker_new (const char *endpoint, const char *token,
                              int heartbeat_ms, int liveness);

/*  The same over a CURVE endpoint (see pyi_client_new_curve). */
PYI_EXPORT pyi_worker_t *pyi_worker_new_curve (const char *endpoint, const char *token,
                                               int heartbeat_ms, int liveness,
                                               const char *server_key,
                                               const char *public_key,
                                               const char *secret_key);

/*  Send DISCONNECT and close. Safe on NULL. */
PYI_EXPORT void pyi_worker_destroy (pyi_worker_t **self_p);

/*  Offer a service. The broker answers, through pyi_worker_recv (), with
    READY when it is registered (the name is pyi_msg_service_at (msg, 0)),
    or ERROR (id 0, the name in pyi_msg_service ()) when it is refused. */
PYI_EXPORT int pyi_worker_offer (pyi_worker_t *self, const char *service);

/*  Next REQUEST, CANCEL, READY, ERROR or DISCONNECT for this worker.
    Heartbeats are sent and consumed inside. timeout_ms: 0 = don't wait,
    -1 = wait forever. NULL when none came in time. Caller owns it. */
PYI_EXPORT pyi_msg_t *pyi_worker_recv (pyi_worker_t *self, int timeout_ms);

/*  Answer request id with a REPLY; body (may be NULL) is taken over. */
PYI_EXPORT int pyi_worker_reply (pyi_worker_t *self, uint64_t id, pyi_msg_t **body_p);

/*  Answer request id with an ERROR: code >= PYI_ERR_APPLICATION, text
    for humans, body (may be NULL, taken over) for structured details. */
PYI_EXPORT int pyi_worker_error (pyi_worker_t *self, uint64_t id, int code,
                      const char *text, pyi_msg_t **body_p);

/*  Send a HEARTBEAT if one is due. Returns the milliseconds until the next
    call is needed, or -1 when the broker has been silent for liveness
    intervals (the worker should then give up). */
PYI_EXPORT int pyi_worker_heartbeat (pyi_worker_t *self);

/*  libzmq's ZMQ_FD for this worker's socket. */
PYI_EXPORT int pyi_worker_fd (pyi_worker_t *self);

/*  For a process started by pyi_broker_spawn (): make the kernel kill this
    process when its parent dies (PR_SET_PDEATHSIG), and exit at once if
    the parent named in $PYI_PARENT_PID is already gone. Call it first
    thing in main (). 0, or -1 outside a spawned process. */
PYI_EXPORT int pyi_worker_bind_to_parent (void);

#ifdef __cplusplus
}
#endif

#endif
