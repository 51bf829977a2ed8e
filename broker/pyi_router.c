/*  pyi_router: routing and dispatch on the broker thread (docs/protocol.md).

    Services, workers and requests in flight (pending) point at each other:
    a service at the worker offering it, a worker at its grant, its
    services and its pending requests (a list), a pending request at its
    service, its worker and its deadline (in the heap). Tables find them
    by name, routing id, the broker's request id and the caller's key.
*/
#include "pyi_router.h"
#include "pyi_deadlines.h"
#include "pyi_descriptors.h"
#include "pyi_events.h"
#include "pyi_offenders.h"
#include "pyi_table.h"
#include "pyi_library_internal.h"
#include <czmq.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_LIVENESS 5
#define DEFAULT_MAX_PENDING 65536
#define DEFAULT_MAX_STRIKES 10
#define BATCH 256                   /* workers or requests dropped per pass */
#define CALLER_ID 8                 /* bytes of the caller's request id in a caller key */
#define REASON_TEXT 256             /* why a service's last worker went away */
#define ERROR_TEXT 512              /* an ERROR's text as the router writes it */
#define SHORT_TEXT 128              /* a one-line reason */

/*  Structures --------------------------------------------------------- */

typedef struct _s_worker_t s_worker_t;
typedef struct _s_pending_t s_pending_t;

typedef struct {
    char name [PYI_MAX_NAME + 1];
    s_worker_t *worker;             /* live worker offering it, or NULL */
    pyi_service_stats_t stats;
    char lost [REASON_TEXT];        /* why the last worker went away */
} s_service_t;

struct _s_worker_t {
    uint8_t rid [PYI_MAX_NAME];     /* routing id */
    size_t rid_size;
    pyi_grant_t *grant;             /* the token it registered with */
    s_service_t **services;         /* services it offers */
    size_t nservices;
    int64_t expiry;                 /* lost when silent past this (ms, mono) */
    bool remote;                    /* connected over a network: its tensors are inline */
    s_pending_t *pending;           /* requests in flight to it */
};

struct _s_pending_t {
    uint64_t rid;                   /* the broker's id, the worker sees it */
    uint8_t ckey [CALLER_ID + PYI_MAX_NAME];   /* caller's id then its routing id */
    size_t ckey_size;
    s_service_t *service;
    s_worker_t *worker;
    pyi_deadline_t deadline;        /* when = 0: none; in the heap otherwise */
    bool caller_remote;             /* the caller connected over a network */
    s_pending_t *prev, *next;       /* in worker->pending */
};

struct _pyi_router_t {
    void *socket;                   /* the broker's ROUTER (libzmq handle), borrowed */
    pyi_events_t *events;           /* events for the host, borrowed */
    pyi_grants_t *grants;           /* who may offer what, borrowed */
    pyi_supervisor_t *supervisor;   /* kills hung workers' processes, borrowed */
    pyi_tracer_t *tracer;           /* records the hops while a trace is on, borrowed */
    pyi_table_t *services;          /* name -> s_service_t */
    pyi_table_t *workers;           /* routing id -> s_worker_t */
    pyi_table_t *pending;           /* rid -> s_pending_t */
    pyi_table_t *callers;           /* caller id + routing id -> s_pending_t */
    pyi_offenders_t *offenders;     /* peers that sent bad messages */
    pyi_deadlines_t *deadlines;     /* pending requests with a deadline */
    uint64_t next_rid;              /* the last request id given to a worker */
    int64_t next_heartbeat;         /* when heartbeats are due (ms, mono) */
    int64_t heartbeat_ms;           /* PYI_OPT_HEARTBEAT_MS */
    int64_t liveness;               /* PYI_OPT_LIVENESS */
    int64_t max_pending;            /* PYI_OPT_MAX_PENDING */
    int64_t max_strikes;            /* PYI_OPT_MAX_STRIKES */
    pyi_broker_stats_t stats;       /* counters (processes: the supervisor's) */
};

/*  Keys of the tables. */
static const void *
s_service_key (const void *item, size_t *size)
{
    const s_service_t *service = (const s_service_t *) item;
    *size = strlen (service->name);
    return service->name;
}

static const void *
s_worker_key (const void *item, size_t *size)
{
    *size = ((const s_worker_t *) item)->rid_size;
    return ((const s_worker_t *) item)->rid;
}

static const void *
s_pending_key (const void *item, size_t *size)
{
    *size = sizeof (uint64_t);
    return &((const s_pending_t *) item)->rid;
}

static const void *
s_caller_key (const void *item, size_t *size)
{
    *size = ((const s_pending_t *) item)->ckey_size;
    return ((const s_pending_t *) item)->ckey;
}

pyi_router_t *
pyi_router_new (void *socket, pyi_events_t *events, pyi_grants_t *grants,
                pyi_supervisor_t *supervisor, pyi_tracer_t *tracer)
{
    pyi_router_t *self = (pyi_router_t *) calloc (1, sizeof (pyi_router_t));
    if (!self)
        return NULL;
    self->socket = socket;
    self->events = events;
    self->grants = grants;
    self->supervisor = supervisor;
    self->tracer = tracer;
    self->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
    self->liveness = DEFAULT_LIVENESS;
    self->max_pending = DEFAULT_MAX_PENDING;
    self->max_strikes = DEFAULT_MAX_STRIKES;
    self->next_heartbeat = zclock_mono () + self->heartbeat_ms;
    self->services = pyi_table_new (s_service_key);
    self->workers = pyi_table_new (s_worker_key);
    self->pending = pyi_table_new (s_pending_key);
    self->callers = pyi_table_new (s_caller_key);
    self->offenders = pyi_offenders_new ();
    self->deadlines = pyi_deadlines_new ();
    if (!self->services || !self->workers || !self->pending || !self->callers
    ||  !self->offenders || !self->deadlines)
        pyi_router_destroy (&self);
    return self;
}

int
pyi_router_set (pyi_router_t *self, int option, int64_t value)
{
    if (value <= 0)
        return -1;
    switch (option) {
        case PYI_OPT_HEARTBEAT_MS: self->heartbeat_ms = value;
                                   self->next_heartbeat = zclock_mono () + value;
                                   return 0;
        case PYI_OPT_LIVENESS: self->liveness = value; return 0;
        case PYI_OPT_MAX_PENDING: self->max_pending = value; return 0;
        case PYI_OPT_MAX_STRIKES: self->max_strikes = value; return 0;
        default: return -1;
    }
}

/*  Sending ------------------------------------------------------------- */

/*  Send a body-less message to a peer; failures are the peer's loss. */
static int
s_send (pyi_router_t *self, const uint8_t *rid, size_t rid_size, pyi_msg_t **msg_p)
{
    return pyi_msg_send (msg_p, self->socket, rid, rid_size, ZMQ_DONTWAIT);
}

static void
s_send_error (pyi_router_t *self, const uint8_t *rid, size_t rid_size, uint64_t id,
              int code, const char *service, const char *text)
{
    pyi_msg_t *msg = pyi_msg_new (PYI_ERROR);
    if (!msg)
        return;
    pyi_msg_set_id (msg, id);
    pyi_msg_set_code (msg, code);
    pyi_msg_set_service (msg, service);
    pyi_msg_set_text (msg, text);
    s_send (self, rid, rid_size, &msg);
}

static void
s_send_simple (pyi_router_t *self, const uint8_t *rid, size_t rid_size,
               pyi_command_t command, uint64_t id, int code, const char *text)
{
    pyi_msg_t *msg = pyi_msg_new (command);
    if (!msg)
        return;
    pyi_msg_set_id (msg, id);
    pyi_msg_set_code (msg, code);
    pyi_msg_set_text (msg, text);
    s_send (self, rid, rid_size, &msg);
}

/*  Pending requests ---------------------------------------------------- */

static uint64_t
s_caller_id (const s_pending_t *pending)
{
    uint64_t id;
    memcpy (&id, pending->ckey, sizeof (id));
    return id;
}

/*  Forget a pending request (no messages sent). */
static void
s_pending_free (pyi_router_t *self, s_pending_t *pending)
{
    pyi_table_remove (self->pending, &pending->rid, sizeof (pending->rid));
    pyi_table_remove (self->callers, pending->ckey, pending->ckey_size);
    pyi_deadlines_remove (self->deadlines, &pending->deadline);
    if (pending->prev)
        pending->prev->next = pending->next;
    else
        pending->worker->pending = pending->next;
    if (pending->next)
        pending->next->prev = pending->prev;
    pending->service->stats.in_flight--;
    self->stats.pending--;
    free (pending);
}

/*  Answer the caller with ERROR and, when cancel is set, tell the worker
    to stop; then forget the request. */
static void
s_pending_fail (pyi_router_t *self, s_pending_t *pending, int code, const char *text,
                bool cancel)
{
    s_send_error (self, pending->ckey + CALLER_ID, pending->ckey_size - CALLER_ID,
                  s_caller_id (pending), code, pending->service->name, text);
    pending->service->stats.errors++;
    if (cancel)
        s_send_simple (self, pending->worker->rid, pending->worker->rid_size,
                       PYI_CANCEL, pending->rid, 0, NULL);
    s_pending_free (self, pending);
}

/*  Workers ------------------------------------------------------------- */

/*  Drop a worker's record (nothing sent). */
static void
s_worker_free (pyi_router_t *self, s_worker_t *worker)
{
    pyi_table_remove (self->workers, worker->rid, worker->rid_size);
    free (worker->services);
    free (worker);
    self->stats.workers--;
}

/*  The worker is gone: fail its requests, cancel the ones it made, drop
    its services. reason completes "worker lost: ...". */
static void
s_worker_lost (pyi_router_t *self, s_worker_t *worker, const char *reason)
{
    char text [ERROR_TEXT];
    snprintf (text, sizeof (text), "worker lost: %s", reason);
    while (worker->pending)
        s_pending_fail (self, worker->pending, PYI_ERR_WORKER_LOST, text, false);

    /*  Requests it made as a caller will never be read: cancel them. */
    size_t cursor = 0;
    s_pending_t *pending;
    s_pending_t *orphans [BATCH];
    size_t norphans;
    do {
        norphans = 0;
        cursor = 0;
        while (norphans < BATCH
           && (pending = (s_pending_t *) pyi_table_next (self->pending, &cursor)))
            if (pending->ckey_size - CALLER_ID == worker->rid_size
            &&  memcmp (pending->ckey + CALLER_ID, worker->rid, worker->rid_size) == 0)
                orphans [norphans++] = pending;
        for (size_t i = 0; i < norphans; i++) {
            s_send_simple (self, orphans [i]->worker->rid, orphans [i]->worker->rid_size,
                           PYI_CANCEL, orphans [i]->rid, 0, NULL);
            s_pending_free (self, orphans [i]);
        }
    } while (norphans == BATCH);

    int pid = worker->grant ? pyi_grant_pid (worker->grant) : 0;
    for (size_t i = 0; i < worker->nservices; i++) {
        s_service_t *service = worker->services [i];
        service->worker = NULL;
        service->stats.pid = 0;
        service->stats.ready = false;
        snprintf (service->lost, sizeof (service->lost), "%s", reason);
        pyi_events_send (self->events, PYI_EVENT_LOST, pid, 0, service->name, text);
    }
    if (worker->grant)
        pyi_grant_set_holder (worker->grant, NULL);
    s_worker_free (self, worker);
}

/*  Count a bad message against a peer; past the limit, cut it off. */
static void
s_strike (pyi_router_t *self, const uint8_t *rid, size_t rid_size)
{
    if (!pyi_offenders_strike (self->offenders, rid, rid_size, self->max_strikes))
        return;
    self->stats.disconnected++;
    s_send_simple (self, rid, rid_size, PYI_DISCONNECT, 0, PYI_ERR_MALFORMED,
                   "too many bad messages: disconnected");
    s_worker_t *worker = (s_worker_t *) pyi_table_lookup (self->workers, rid, rid_size);
    if (worker)
        s_worker_lost (self, worker, "disconnected for bad messages");
}

/*  READY ---------------------------------------------------------------- */

static s_service_t *
s_service_require (pyi_router_t *self, const char *name)
{
    s_service_t *service = (s_service_t *) pyi_table_lookup (self->services, name, strlen (name));
    if (service)
        return service;
    service = (s_service_t *) calloc (1, sizeof (s_service_t));
    if (!service)
        return NULL;
    snprintf (service->name, sizeof (service->name), "%s", name);
    if (pyi_table_insert (self->services, service)) {
        free (service);
        return NULL;
    }
    return service;
}

static void
s_refuse (pyi_router_t *self, const uint8_t *rid, size_t rid_size, int pid,
          const char *service, const char *why)
{
    char text [ERROR_TEXT];
    snprintf (text, sizeof (text), "service '%s' refused: %s", service, why);
    s_send_error (self, rid, rid_size, 0, PYI_ERR_DENIED, service, text);
    pyi_events_send (self->events, PYI_EVENT_REFUSED, pid, 0, service, text);
    self->stats.rejected++;
}

/*  Register service name for worker, which holds grant: NULL, or why not. */
static const char *
s_offer (pyi_router_t *self, s_worker_t *worker, pyi_grant_t *grant, const char *name)
{
    s_service_t *service = NULL;
    if (!pyi_grant_allows (grant, name))
        return "not granted to this token";
    if (!(service = s_service_require (self, name)))
        return "out of memory";
    if (service->worker == worker)
        return NULL;            /* offered again: acknowledge */
    if (service->worker)
        return "already offered by another worker";
    s_service_t **services = (s_service_t **) realloc (
        worker->services, (worker->nservices + 1) * sizeof (s_service_t *));
    if (!services)
        return "out of memory";
    worker->services = services;
    services [worker->nservices++] = service;
    service->worker = worker;
    service->stats.pid = pyi_grant_pid (grant);
    service->stats.ready = true;
    service->lost [0] = 0;
    return NULL;
}

static void
s_handle_ready (pyi_router_t *self, pyi_msg_t *msg, const uint8_t *rid, size_t rid_size,
                s_worker_t *worker)
{
    const char *token = pyi_msg_token (msg);
    pyi_grant_t *grant = pyi_grants_lookup (self->grants, token);
    const char *why = NULL;
    if (!grant)
        why = "token not granted";
    else
    if (pyi_grant_holder (grant) && pyi_grant_holder (grant) != worker)
        why = "token in use by another worker";
    else
    if (worker && worker->grant != grant)
        why = "worker already registered with another token";
    if (why) {
        for (size_t i = 0; i < pyi_msg_services (msg); i++)
            s_refuse (self, rid, rid_size, 0, pyi_msg_service_at (msg, i), why);
        s_strike (self, rid, rid_size);
        return;
    }
    if (!worker) {
        worker = (s_worker_t *) calloc (1, sizeof (s_worker_t));
        if (!worker)
            return;
        memcpy (worker->rid, rid, rid_size);
        worker->rid_size = rid_size;
        worker->grant = grant;
        worker->expiry = zclock_mono () + self->heartbeat_ms * self->liveness;
        worker->remote = pyi_msg_remote (msg);
        if (pyi_table_insert (self->workers, worker)) {
            free (worker);
            return;
        }
        pyi_grant_set_holder (grant, worker);
        self->stats.workers++;
    }
    for (size_t i = 0; i < pyi_msg_services (msg); i++) {
        const char *name = pyi_msg_service_at (msg, i);
        if ((why = s_offer (self, worker, grant, name))) {
            s_refuse (self, rid, rid_size, pyi_grant_pid (grant), name, why);
            continue;
        }
        pyi_msg_t *ack = pyi_msg_new (PYI_READY);
        if (ack) {
            pyi_msg_add_service (ack, name);
            pyi_msg_set_timeout (ack, (uint32_t) self->heartbeat_ms);
            s_send (self, rid, rid_size, &ack);
        }
        pyi_events_send (self->events, PYI_EVENT_READY, pyi_grant_pid (grant), 0, name, "ready");
    }
    if (worker->nservices == 0) {
        /*  Everything refused: it is not a worker. */
        pyi_grant_set_holder (grant, NULL);
        s_worker_free (self, worker);
    }
}

/*  REQUEST, REPLY, ERROR, CANCEL ------------------------------------------ */

static void
s_handle_request (pyi_router_t *self, pyi_msg_t **msg_p, const uint8_t *rid, size_t rid_size)
{
    pyi_msg_t *msg = *msg_p;
    uint64_t id = pyi_msg_id (msg);
    const char *name = pyi_msg_service (msg);
    s_service_t *service = (s_service_t *) pyi_table_lookup (self->services, name, strlen (name));
    char text [ERROR_TEXT];
    if (!service || !service->worker) {
        pyi_descriptors_discard (msg);
        if (service && service->lost [0]) {
            snprintf (text, sizeof (text), "service '%s' is gone: worker lost: %s",
                      name, service->lost);
            service->stats.errors++;
            s_send_error (self, rid, rid_size, id, PYI_ERR_WORKER_LOST, name, text);
        }
        else {
            snprintf (text, sizeof (text), "unknown service '%s'", name);
            s_send_error (self, rid, rid_size, id, PYI_ERR_UNKNOWN_SERVICE, name, text);
        }
        return;
    }
    if ((int64_t) self->stats.pending >= self->max_pending) {
        pyi_descriptors_discard (msg);
        service->stats.errors++;
        s_send_error (self, rid, rid_size, id, PYI_ERR_BUSY, name,
                      "too many requests in flight");
        return;
    }
    s_pending_t *pending = (s_pending_t *) malloc (sizeof (s_pending_t));
    if (!pending) {
        pyi_descriptors_discard (msg);
        s_send_error (self, rid, rid_size, id, PYI_ERR_BUSY, name, "out of memory");
        return;
    }
    memcpy (pending->ckey, &id, CALLER_ID);
    memcpy (pending->ckey + CALLER_ID, rid, rid_size);
    pending->ckey_size = CALLER_ID + rid_size;
    if (pyi_table_lookup (self->callers, pending->ckey, pending->ckey_size)) {
        pyi_descriptors_discard (msg);
        free (pending);
        service->stats.errors++;
        s_send_error (self, rid, rid_size, id, PYI_ERR_MALFORMED, name,
                      "request id already in flight");
        s_strike (self, rid, rid_size);
        return;
    }
    s_worker_t *worker = service->worker;
    int code;
    const char *why = pyi_descriptors_refusal (msg, worker->remote, &code);
    if (why) {
        free (pending);
        service->stats.errors++;
        s_send_error (self, rid, rid_size, id, code, name, why);
        if (code == PYI_ERR_MALFORMED)
            s_strike (self, rid, rid_size);
        return;
    }
    uint32_t timeout = pyi_msg_timeout (msg);
    size_t bytes = pyi_msg_body_size (msg);
    pending->rid = ++self->next_rid;
    pending->service = service;
    pending->worker = worker;
    pending->deadline = (pyi_deadline_t) {
        timeout ? zclock_mono () + timeout : 0, PYI_DEADLINE_NONE, pending };
    pending->caller_remote = pyi_msg_remote (msg);
    pyi_msg_set_id (msg, pending->rid);
    pyi_msg_set_answer_inline (msg, pending->caller_remote);
    if (pyi_msg_send (msg_p, self->socket, worker->rid, worker->rid_size, ZMQ_DONTWAIT)) {
        int error = errno;
        free (pending);
        service->stats.errors++;
        /*  msg is gone: name pointed into it. */
        if (error == EAGAIN)
            s_send_error (self, rid, rid_size, id, PYI_ERR_BUSY, service->name,
                          "worker's queue is full");
        else {
            s_send_error (self, rid, rid_size, id, PYI_ERR_WORKER_LOST, service->name,
                          "worker lost: connection closed");
            s_worker_lost (self, worker, "connection closed");
        }
        return;
    }
    pyi_table_insert (self->pending, pending);
    pyi_table_insert (self->callers, pending);
    if (pending->deadline.when)
        pyi_deadlines_add (self->deadlines, &pending->deadline);
    pending->prev = NULL;
    pending->next = worker->pending;
    if (worker->pending)
        worker->pending->prev = pending;
    worker->pending = pending;
    service->stats.requests++;
    service->stats.bytes_in += bytes;
    service->stats.in_flight++;
    self->stats.pending++;
    pyi_tracer_hop (self->tracer, PYI_HOP_REQUEST, pending->rid, id, service->name);
}

/*  REPLY or ERROR from a worker. */
static void
s_handle_answer (pyi_router_t *self, pyi_msg_t **msg_p, s_worker_t *worker)
{
    pyi_msg_t *msg = *msg_p;
    uint64_t rid = pyi_msg_id (msg);
    s_pending_t *pending = (s_pending_t *) pyi_table_lookup (self->pending, &rid, sizeof (rid));
    if (!pending) {
        pyi_descriptors_discard (msg);        /* cancelled or timed out: drop */
        return;
    }
    if (pending->worker != worker)
        return;                 /* not its own: drop, and trust nothing of it */
    s_service_t *service = pending->service;
    if (pyi_msg_command (msg) == PYI_REPLY) {
        service->stats.replies++;
        service->stats.bytes_out += pyi_msg_body_size (msg);
    }
    else {
        service->stats.errors++;
        /*  Broker codes are the broker's to give. */
        if (pyi_msg_code (msg) < PYI_ERR_APPLICATION)
            pyi_msg_set_code (msg, PYI_ERR_APPLICATION);
        pyi_msg_set_service (msg, service->name);
    }
    pyi_msg_set_id (msg, s_caller_id (pending));
    const uint8_t *caller = pending->ckey + CALLER_ID;
    size_t caller_size = pending->ckey_size - CALLER_ID;
    int code;
    const char *why = pyi_descriptors_refusal (msg, pending->caller_remote, &code);
    if (why) {
        s_send_error (self, caller, caller_size, s_caller_id (pending), code,
                      service->name, why);
        if (code == PYI_ERR_MALFORMED)
            s_strike (self, worker->rid, worker->rid_size);
    }
    else
        pyi_msg_send (msg_p, self->socket, caller, caller_size, ZMQ_DONTWAIT);
    pyi_tracer_hop (self->tracer, PYI_HOP_ANSWER, rid, s_caller_id (pending), service->name);
    s_pending_free (self, pending);
}

static void
s_handle_cancel (pyi_router_t *self, pyi_msg_t *msg, const uint8_t *rid, size_t rid_size)
{
    uint8_t key [CALLER_ID + PYI_MAX_NAME];
    uint64_t id = pyi_msg_id (msg);
    memcpy (key, &id, CALLER_ID);
    memcpy (key + CALLER_ID, rid, rid_size);
    s_pending_t *pending = (s_pending_t *) pyi_table_lookup (self->callers, key,
                                                             CALLER_ID + rid_size);
    if (!pending)
        return;
    s_send_simple (self, pending->worker->rid, pending->worker->rid_size,
                   PYI_CANCEL, pending->rid, 0, NULL);
    s_pending_free (self, pending);
}

/*  A message that did not decode: say why, and count it against the peer.
    An answer of worker's too large to pass fails its call (at once, not
    at a deadline that may never come). */
static void
s_handle_bad (pyi_router_t *self, pyi_msg_t *msg, const uint8_t *rid, size_t rid_size,
              s_worker_t *worker)
{
    int status = pyi_msg_status (msg);
    uint64_t id = pyi_msg_id (msg);
    s_pending_t *pending = worker && status == PYI_ERR_TOO_LARGE
                        && pyi_msg_command (msg) >= PYI_REPLY && pyi_msg_command (msg) <= PYI_ERROR
                         ? (s_pending_t *) pyi_table_lookup (self->pending, &id, sizeof (id)) : NULL;
    if (pending && pending->worker == worker)
        s_pending_fail (self, pending, PYI_ERR_TOO_LARGE, "the answer was over the size limit",
                        false);
    if (status == PYI_ERR_MALFORMED)
        self->stats.malformed++;
    else
        self->stats.rejected++;
    if (status == PYI_ERR_VERSION) {
        char text [SHORT_TEXT];
        snprintf (text, sizeof (text),
                  "protocol version not supported: this broker speaks version %d",
                  PYI_PROTOCOL_VERSION);
        s_send_simple (self, rid, rid_size, PYI_DISCONNECT, 0, PYI_ERR_VERSION, text);
    }
    else
        s_send_error (self, rid, rid_size, pyi_msg_id (msg), status,
                      pyi_msg_service (msg), pyi_msg_text (msg));
    s_strike (self, rid, rid_size);
}

void
pyi_router_handle (pyi_router_t *self, pyi_msg_t **msg_p)
{
    pyi_msg_t *msg = *msg_p;
    size_t rid_size;
    const uint8_t *rid_data = (const uint8_t *) pyi_msg_routing_id (msg, &rid_size);
    uint8_t rid [PYI_MAX_NAME];
    memcpy (rid, rid_data, rid_size);
    self->stats.messages++;

    if (pyi_offenders_banned (self->offenders, rid, rid_size)) {
        self->stats.rejected++;
        return;
    }
    s_worker_t *worker = (s_worker_t *) pyi_table_lookup (self->workers, rid, rid_size);
    if (worker)
        worker->expiry = zclock_mono () + self->heartbeat_ms * self->liveness;

    if (pyi_msg_status (msg) != PYI_OK) {
        s_handle_bad (self, msg, rid, rid_size, worker);
        return;
    }
    switch (pyi_msg_command (msg)) {
        case PYI_READY:
            s_handle_ready (self, msg, rid, rid_size, worker);
            break;
        case PYI_REQUEST:
            s_handle_request (self, msg_p, rid, rid_size);
            break;
        case PYI_REPLY:
        case PYI_ERROR:
            if (worker)
                s_handle_answer (self, msg_p, worker);
            else {
                self->stats.rejected++;
                s_strike (self, rid, rid_size);
            }
            break;
        case PYI_CANCEL:
            s_handle_cancel (self, msg, rid, rid_size);
            break;
        case PYI_HEARTBEAT:
            if (!worker)        /* a worker the broker already gave up on */
                s_send_simple (self, rid, rid_size, PYI_DISCONNECT, 0, PYI_ERR_WORKER_LOST,
                               "not registered: offer your services again");
            break;
        case PYI_DISCONNECT:
            if (worker)
                s_worker_lost (self, worker, "disconnected");
            break;
    }
}

/*  Timers --------------------------------------------------------------- */

void
pyi_router_expire (pyi_router_t *self, int64_t now)
{
    pyi_deadline_t *first;
    while ((first = pyi_deadlines_first (self->deadlines)) && first->when <= now) {
        s_pending_t *pending = (s_pending_t *) first->item;
        char text [SHORT_TEXT];
        snprintf (text, sizeof (text), "timeout: no answer from '%s' in time",
                  pending->service->name);
        s_pending_fail (self, pending, PYI_ERR_TIMEOUT, text, true);
    }
}

void
pyi_router_heartbeat (pyi_router_t *self, int64_t now)
{
    if (now < self->next_heartbeat)
        return;
    s_worker_t *expired [BATCH];
    size_t nexpired = 0, cursor = 0;
    s_worker_t *worker;
    while ((worker = (s_worker_t *) pyi_table_next (self->workers, &cursor))) {
        if (worker->expiry <= now) {
            if (nexpired < BATCH)
                expired [nexpired++] = worker;
        }
        else
            s_send_simple (self, worker->rid, worker->rid_size, PYI_HEARTBEAT, 0, 0, NULL);
    }
    for (size_t i = 0; i < nexpired; i++) {
        char reason [SHORT_TEXT];
        snprintf (reason, sizeof (reason), "no heartbeat for %lld ms",
                  (long long) (self->heartbeat_ms * self->liveness));
        self->stats.disconnected++;
        s_send_simple (self, expired [i]->rid, expired [i]->rid_size, PYI_DISCONNECT, 0,
                       PYI_ERR_WORKER_LOST, "heartbeat expired");
        /*  A hung local process is killed: its supervisor is the broker. */
        if (expired [i]->grant && pyi_grant_pid (expired [i]->grant) > 0)
            pyi_supervisor_kill (self->supervisor, pyi_grant_pid (expired [i]->grant));
        s_worker_lost (self, expired [i], reason);
    }
    self->next_heartbeat = now + self->heartbeat_ms;
}

int64_t
pyi_router_wake (pyi_router_t *self)
{
    int64_t wake = self->next_heartbeat;
    pyi_deadline_t *first = pyi_deadlines_first (self->deadlines);
    if (first && first->when < wake)
        wake = first->when;
    return wake;
}

/*  Processes ------------------------------------------------- */

void
pyi_router_exited (pyi_router_t *self, const pyi_exit_t *ended)
{
    pyi_grant_t *grant = pyi_grants_of_pid (self->grants, ended->pid);
    s_worker_t *worker = grant ? (s_worker_t *) pyi_grant_holder (grant) : NULL;
    if (worker)
        s_worker_lost (self, worker, ended->text);
    pyi_events_send (self->events, PYI_EVENT_EXIT, ended->pid, ended->status,
                     grant ? pyi_grant_service (grant) : "", ended->text);
    /*  The token dies with its process: a READY still queued from it is
        refused as "token not granted". */
    if (grant)
        pyi_grants_remove (self->grants, &grant);
}

/*  Statistics and the end ------------------------------------------------ */

int
pyi_router_service_stats (pyi_router_t *self, const char *name, pyi_service_stats_t *stats)
{
    s_service_t *service = (s_service_t *) pyi_table_lookup (self->services, name, strlen (name));
    if (!service)
        return -1;
    *stats = service->stats;
    return 0;
}

void
pyi_router_stats (pyi_router_t *self, pyi_broker_stats_t *stats)
{
    *stats = self->stats;
}

void
pyi_router_stop (pyi_router_t *self)
{
    size_t cursor = 0;
    s_worker_t *worker;
    while ((worker = (s_worker_t *) pyi_table_next (self->workers, &cursor)))
        while (worker->pending)
            s_pending_fail (self, worker->pending, PYI_ERR_SHUTDOWN, "broker stopping", false);
    cursor = 0;
    while ((worker = (s_worker_t *) pyi_table_next (self->workers, &cursor)))
        s_send_simple (self, worker->rid, worker->rid_size, PYI_DISCONNECT, 0,
                       PYI_ERR_SHUTDOWN, "broker stopping");
}

void
pyi_router_destroy (pyi_router_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_router_t *self = *self_p;
    size_t cursor = 0;
    void *item;
    while (self->workers && (item = pyi_table_next (self->workers, &cursor))) {
        s_worker_t *worker = (s_worker_t *) item;
        while (worker->pending)
            s_pending_free (self, worker->pending);
        free (worker->services);
        free (worker);
    }
    cursor = 0;
    while (self->services && (item = pyi_table_next (self->services, &cursor)))
        free (item);
    pyi_table_destroy (&self->services);
    pyi_table_destroy (&self->workers);
    pyi_table_destroy (&self->pending);
    pyi_table_destroy (&self->callers);
    pyi_offenders_destroy (&self->offenders);
    pyi_deadlines_destroy (&self->deadlines);
    free (self);
    *self_p = NULL;
}
