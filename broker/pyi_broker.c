/*  pyi_broker: the ROUTER broker actor (docs/protocol.md).

    The host thread owns the pyi_broker_t and talks to the broker thread
    over an inproc PAIR pipe (czmq's zsock_send / zsock_recv pictures; not
    on the hot path). The broker thread owns the ROUTER socket, the event
    socket, the tables and the child processes; nothing else touches them.
*/
#include "pyisolate/pyisolate.h"
#include "pyi_table.h"
#include "pyi_proc.h"
#include "pyi_library_internal.h"
#include <czmq.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_LIVENESS 5
#define DEFAULT_MAX_MSG_SIZE (512 * 1024 * 1024)
#define DEFAULT_MAX_PENDING 65536
#define DEFAULT_MAX_STRIKES 10
#define DEFAULT_GRACE_MS 2000
#define ROUTER_HWM 10000            /* messages queued per peer, each way */
#define MAX_OFFENDERS 4096          /* peers tracked for bad input */
#define EVENT_HWM 10000             /* events waiting for the host */
#define MAX_PROCS 1024              /* spawned processes not yet reaped */
#define BATCH 256                   /* messages handled per poll wake-up */
#define TOKEN_BYTES 16

/*  Structures --------------------------------------------------------- */

typedef struct _s_worker_t s_worker_t;
typedef struct _s_pending_t s_pending_t;

typedef struct {
    char name [PYI_MAX_NAME + 1];
    s_worker_t *worker;             /* live worker offering it, or NULL */
    pyi_service_stats_t stats;
    char lost [256];                /* why the last worker went away */
} s_service_t;

typedef struct {
    char token [2 * TOKEN_BYTES + 1];
    char **services;                /* names this token may offer */
    size_t nservices;
    s_worker_t *worker;             /* the peer using it now, or NULL */
    pid_t pid;                      /* spawned process holding it, or 0 */
} s_grant_t;

struct _s_worker_t {
    uint8_t rid [PYI_MAX_NAME];     /* routing id */
    size_t rid_size;
    s_grant_t *grant;
    s_service_t **services;         /* services it offers */
    size_t nservices;
    int64_t expiry;                 /* lost when silent past this (ms, mono) */
    bool remote;                    /* connected over a network: tensors go inline */
    s_pending_t *pending;           /* requests in flight to it */
};

struct _s_pending_t {
    uint64_t rid;                   /* the broker's id, the worker sees it */
    uint8_t ckey [8 + PYI_MAX_NAME];/* caller's id then its routing id */
    size_t ckey_size;
    s_service_t *service;
    s_worker_t *worker;
    int64_t deadline;               /* ms, mono; 0 = none */
    size_t heap;                    /* index in the deadline heap, or SIZE_MAX */
    bool caller_remote;             /* the caller connected over a network */
    s_pending_t *prev, *next;       /* in worker->pending */
};

typedef struct {
    uint8_t rid [PYI_MAX_NAME];
    size_t rid_size;
    int strikes;
    bool banned;
} s_offender_t;

typedef struct {
    pid_t pid;
    int pidfd;                      /* -1: polled with waitpid instead */
    s_grant_t *grant;
} s_proc_t;

/*  What the host thread hands the broker thread at start-up. */
typedef struct {
    char endpoint [256];
    char inproc [64];
    char events [64];
    char curve_secret [41];         /* the broker's CURVE secret key, Z85 */
    int status;                     /* 0 once the thread runs */
    char error [256];
} s_start_t;

/*  A CURVE public key a remote peer may connect with. */
typedef struct {
    uint8_t key [32];
} s_key_t;

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"   /* ZeroMQ's, one per process */

typedef struct {
    zsock_t *pipe;                  /* commands from the host */
    zsock_t *router;                /* the broker socket */
    void *handle;                   /* libzmq handle of router */
    zsock_t *events;                /* events to the host */
    pyi_table_t *services;          /* name -> s_service_t */
    pyi_table_t *workers;           /* routing id -> s_worker_t */
    pyi_table_t *grants;            /* token -> s_grant_t */
    pyi_table_t *pending;           /* rid -> s_pending_t */
    pyi_table_t *callers;           /* caller id + routing id -> s_pending_t */
    pyi_table_t *offenders;         /* routing id -> s_offender_t */
    pyi_table_t *keys;              /* CURVE public keys allowed -> s_key_t */
    zsock_t *zap;                   /* ZAP handler (REP), once a CURVE endpoint is bound */
    char curve_secret [41];
    s_pending_t **heap;             /* pending with deadlines, min-heap */
    size_t heap_size, heap_capacity;
    s_proc_t procs [MAX_PROCS];
    size_t nprocs;
    uint64_t next_rid;
    int64_t next_heartbeat;
    int64_t heartbeat_ms;
    int64_t liveness;
    int64_t max_msg_size;
    int64_t max_pending;
    int64_t max_strikes;
    int64_t grace_ms;
    pyi_broker_stats_t stats;
    char endpoint [256];
    bool terminated;
} s_broker_t;

struct _pyi_broker_t {
    zsock_t *pipe;                  /* our end of the command pipe */
    zsock_t *backend;               /* the thread's end, closed after join */
    zsock_t *events;                /* events from the broker thread */
    pthread_t thread;
    char rundir [256];
    int lock_fd;                    /* holds the runtime directory's lock */
    char endpoint [256];            /* ipc:// */
    char curve_public [41];         /* the broker's CURVE public key, Z85 ("" without CURVE) */
    char inproc [64];
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
s_grant_key (const void *item, size_t *size)
{
    *size = strlen (((const s_grant_t *) item)->token);
    return ((const s_grant_t *) item)->token;
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

static const void *
s_key_key (const void *item, size_t *size)
{
    *size = 32;
    return ((const s_key_t *) item)->key;
}

static const void *
s_offender_key (const void *item, size_t *size)
{
    *size = ((const s_offender_t *) item)->rid_size;
    return ((const s_offender_t *) item)->rid;
}

/*  Deadline heap ------------------------------------------------------- */

static void
s_heap_swap (s_broker_t *self, size_t a, size_t b)
{
    s_pending_t *t = self->heap [a];
    self->heap [a] = self->heap [b];
    self->heap [b] = t;
    self->heap [a]->heap = a;
    self->heap [b]->heap = b;
}

static void
s_heap_fix (s_broker_t *self, size_t i)
{
    while (i > 0 && self->heap [(i - 1) / 2]->deadline > self->heap [i]->deadline) {
        s_heap_swap (self, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    while (true) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < self->heap_size && self->heap [l]->deadline < self->heap [m]->deadline)
            m = l;
        if (r < self->heap_size && self->heap [r]->deadline < self->heap [m]->deadline)
            m = r;
        if (m == i)
            break;
        s_heap_swap (self, i, m);
        i = m;
    }
}

static int
s_heap_push (s_broker_t *self, s_pending_t *pending)
{
    if (self->heap_size == self->heap_capacity) {
        size_t capacity = self->heap_capacity ? self->heap_capacity * 2 : 64;
        s_pending_t **heap = (s_pending_t **) realloc (self->heap, capacity * sizeof (*heap));
        if (!heap)
            return -1;
        self->heap = heap;
        self->heap_capacity = capacity;
    }
    pending->heap = self->heap_size;
    self->heap [self->heap_size++] = pending;
    s_heap_fix (self, pending->heap);
    return 0;
}

static void
s_heap_remove (s_broker_t *self, s_pending_t *pending)
{
    size_t i = pending->heap;
    if (i == SIZE_MAX)
        return;
    pending->heap = SIZE_MAX;
    if (i != --self->heap_size) {
        self->heap [i] = self->heap [self->heap_size];
        self->heap [i]->heap = i;
        s_heap_fix (self, i);
    }
}

/*  Sending ------------------------------------------------------------- */

static void
s_event (s_broker_t *self, int type, int pid, int status, const char *service, const char *text)
{
    pyi_event_t event;
    memset (&event, 0, sizeof (event));
    event.type = type;
    event.pid = pid;
    event.status = status;
    snprintf (event.service, sizeof (event.service), "%s", service ? service : "");
    snprintf (event.text, sizeof (event.text), "%s", text ? text : "");
    zmq_send (zsock_resolve (self->events), &event, sizeof (event), ZMQ_DONTWAIT);
}

/*  Send a body-less message to a peer; failures are the peer's loss. */
static int
s_send (s_broker_t *self, const uint8_t *rid, size_t rid_size, pyi_msg_t **msg_p)
{
    return pyi_msg_send (msg_p, self->handle, rid, rid_size, ZMQ_DONTWAIT);
}

static void
s_send_error (s_broker_t *self, const uint8_t *rid, size_t rid_size, uint64_t id,
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
s_send_simple (s_broker_t *self, const uint8_t *rid, size_t rid_size,
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
s_pending_free (s_broker_t *self, s_pending_t *pending)
{
    pyi_table_remove (self->pending, &pending->rid, sizeof (pending->rid));
    pyi_table_remove (self->callers, pending->ckey, pending->ckey_size);
    s_heap_remove (self, pending);
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
s_pending_fail (s_broker_t *self, s_pending_t *pending, int code, const char *text, bool cancel)
{
    s_send_error (self, pending->ckey + 8, pending->ckey_size - 8, s_caller_id (pending),
                  code, pending->service->name, text);
    pending->service->stats.errors++;
    if (cancel)
        s_send_simple (self, pending->worker->rid, pending->worker->rid_size,
                       PYI_CANCEL, pending->rid, 0, NULL);
    s_pending_free (self, pending);
}

/*  Workers ------------------------------------------------------------- */

static s_proc_t *
s_proc_by_pid (s_broker_t *self, pid_t pid)
{
    for (size_t i = 0; i < self->nprocs; i++)
        if (self->procs [i].pid == pid)
            return &self->procs [i];
    return NULL;
}

/*  The worker is gone: fail its requests, cancel the ones it made, drop
    its services. reason completes "worker lost: ...". */
static void
s_worker_lost (s_broker_t *self, s_worker_t *worker, const char *reason)
{
    char text [512];
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
        while (norphans < BATCH && (pending = (s_pending_t *) pyi_table_next (self->pending, &cursor)))
            if (pending->ckey_size - 8 == worker->rid_size
            &&  memcmp (pending->ckey + 8, worker->rid, worker->rid_size) == 0)
                orphans [norphans++] = pending;
        for (size_t i = 0; i < norphans; i++) {
            s_send_simple (self, orphans [i]->worker->rid, orphans [i]->worker->rid_size,
                           PYI_CANCEL, orphans [i]->rid, 0, NULL);
            s_pending_free (self, orphans [i]);
        }
    } while (norphans == BATCH);

    int pid = worker->grant ? worker->grant->pid : 0;
    for (size_t i = 0; i < worker->nservices; i++) {
        s_service_t *service = worker->services [i];
        service->worker = NULL;
        service->stats.pid = 0;
        service->stats.ready = false;
        snprintf (service->lost, sizeof (service->lost), "%s", reason);
        s_event (self, PYI_EVENT_LOST, pid, 0, service->name, text);
    }
    if (worker->grant)
        worker->grant->worker = NULL;
    pyi_table_remove (self->workers, worker->rid, worker->rid_size);
    free (worker->services);
    free (worker);
    self->stats.workers--;
}

/*  Start counting afresh: keeps the table bounded whatever peers do. A
    forgotten peer that goes on sending bad messages is cut off again. */
static void
s_forget_offenders (s_broker_t *self)
{
    size_t cursor = 0;
    void *item;
    pyi_table_t *fresh = pyi_table_new (s_offender_key);
    if (!fresh)
        return;
    while ((item = pyi_table_next (self->offenders, &cursor)))
        free (item);
    pyi_table_destroy (&self->offenders);
    self->offenders = fresh;
}

/*  Count a bad message against a peer; past the limit, cut it off. */
static void
s_strike (s_broker_t *self, const uint8_t *rid, size_t rid_size)
{
    s_offender_t *offender = (s_offender_t *) pyi_table_lookup (self->offenders, rid, rid_size);
    if (!offender) {
        if (pyi_table_size (self->offenders) >= MAX_OFFENDERS)
            s_forget_offenders (self);
        if (!(offender = (s_offender_t *) calloc (1, sizeof (s_offender_t))))
            return;
        memcpy (offender->rid, rid, rid_size);
        offender->rid_size = rid_size;
        if (pyi_table_insert (self->offenders, offender)) {
            free (offender);
            return;
        }
    }
    if (++offender->strikes < self->max_strikes || offender->banned)
        return;
    offender->banned = true;
    self->stats.disconnected++;
    s_send_simple (self, rid, rid_size, PYI_DISCONNECT, 0, PYI_ERR_MALFORMED,
                   "too many bad messages: disconnected");
    s_worker_t *worker = (s_worker_t *) pyi_table_lookup (self->workers, rid, rid_size);
    if (worker)
        s_worker_lost (self, worker, "disconnected for bad messages");
}

/*  Handlers ------------------------------------------------------------ */

static s_service_t *
s_service_require (s_broker_t *self, const char *name)
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
s_grant_free (s_grant_t *grant)
{
    for (size_t i = 0; i < grant->nservices; i++)
        free (grant->services [i]);
    free (grant->services);
    free (grant);
}

static bool
s_grant_allows (const s_grant_t *grant, const char *service)
{
    for (size_t i = 0; i < grant->nservices; i++)
        if (streq (grant->services [i], service))
            return true;
    return false;
}

static void
s_refuse (s_broker_t *self, const uint8_t *rid, size_t rid_size, int pid,
          const char *service, const char *why)
{
    char text [512];
    snprintf (text, sizeof (text), "service '%s' refused: %s", service, why);
    s_send_error (self, rid, rid_size, 0, PYI_ERR_DENIED, service, text);
    s_event (self, PYI_EVENT_REFUSED, pid, 0, service, text);
    self->stats.rejected++;
}

static void
s_handle_ready (s_broker_t *self, pyi_msg_t *msg, const uint8_t *rid, size_t rid_size,
                s_worker_t *worker)
{
    const char *token = pyi_msg_token (msg);
    s_grant_t *grant = (s_grant_t *) pyi_table_lookup (self->grants, token, strlen (token));
    const char *why = NULL;
    if (!grant)
        why = "token not granted";
    else
    if (grant->worker && grant->worker != worker)
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
        grant->worker = worker;
        self->stats.workers++;
    }
    for (size_t i = 0; i < pyi_msg_services (msg); i++) {
        const char *name = pyi_msg_service_at (msg, i);
        s_service_t *service = NULL;
        if (!s_grant_allows (grant, name))
            why = "not granted to this token";
        else
        if (!(service = s_service_require (self, name)))
            why = "out of memory";
        else
        if (service->worker == worker)
            why = NULL;         /* offered again: acknowledge */
        else
        if (service->worker)
            why = "already offered by another worker";
        else {
            s_service_t **services = (s_service_t **) realloc (
                worker->services, (worker->nservices + 1) * sizeof (s_service_t *));
            if (!services) {
                why = "out of memory";
            }
            else {
                worker->services = services;
                services [worker->nservices++] = service;
                service->worker = worker;
                service->stats.pid = grant->pid;
                service->stats.ready = true;
                service->lost [0] = 0;
                why = NULL;
            }
        }
        if (why) {
            s_refuse (self, rid, rid_size, grant->pid, name, why);
            continue;
        }
        pyi_msg_t *ack = pyi_msg_new (PYI_READY);
        if (ack) {
            pyi_msg_add_service (ack, name);
            pyi_msg_set_timeout (ack, (uint32_t) self->heartbeat_ms);
            s_send (self, rid, rid_size, &ack);
        }
        s_event (self, PYI_EVENT_READY, grant->pid, 0, name, "ready");
    }
    if (worker->nservices == 0) {
        /*  Everything refused: it is not a worker. */
        grant->worker = NULL;
        pyi_table_remove (self->workers, worker->rid, worker->rid_size);
        free (worker->services);
        free (worker);
        self->stats.workers--;
    }
}

/*  A REQUEST or REPLY that goes no further: give back the in-flight
    counts of the tensor descriptors it carries, so their regions go when
    their holders let go instead of at the session's end. */
static void
s_discard (pyi_msg_t *msg)
{
    size_t frames = pyi_msg_frames (msg);
    for (size_t i = 0; i < frames; i++)
        if (pyi_msg_is_descriptor (msg, i))
            pyi_tensor_discard (pyi_msg_frame_data (msg, i), pyi_msg_frame_size (msg, i));
}

/*  A message for a peer without shared memory: its descriptor frames in
    inline form (pyi_tensor_inline). 0, or -1 with pyi_last_error () (the
    frames not converted are discarded). */
static int
s_inline (pyi_msg_t *msg)
{
    size_t frames = pyi_msg_frames (msg);
    for (size_t i = 0; i < frames; i++)
        if (pyi_msg_is_descriptor (msg, i) && pyi_tensor_inline (msg, i)) {
            char why [256];
            snprintf (why, sizeof (why), "%s", pyi_last_error ());
            s_discard (msg);
            pyi_set_error ("%s", why);
            return -1;
        }
    return 0;
}

static void
s_handle_request (s_broker_t *self, pyi_msg_t **msg_p, const uint8_t *rid, size_t rid_size)
{
    pyi_msg_t *msg = *msg_p;
    uint64_t id = pyi_msg_id (msg);
    const char *name = pyi_msg_service (msg);
    s_service_t *service = (s_service_t *) pyi_table_lookup (self->services, name, strlen (name));
    char text [512];
    if (!service || !service->worker) {
        s_discard (msg);
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
        s_discard (msg);
        service->stats.errors++;
        s_send_error (self, rid, rid_size, id, PYI_ERR_BUSY, name,
                      "too many requests in flight");
        return;
    }
    s_pending_t *pending = (s_pending_t *) malloc (sizeof (s_pending_t));
    if (!pending) {
        s_discard (msg);
        s_send_error (self, rid, rid_size, id, PYI_ERR_BUSY, name, "out of memory");
        return;
    }
    memcpy (pending->ckey, &id, 8);
    memcpy (pending->ckey + 8, rid, rid_size);
    pending->ckey_size = 8 + rid_size;
    if (pyi_table_lookup (self->callers, pending->ckey, pending->ckey_size)) {
        s_discard (msg);
        free (pending);
        service->stats.errors++;
        s_send_error (self, rid, rid_size, id, PYI_ERR_MALFORMED, name,
                      "request id already in flight");
        s_strike (self, rid, rid_size);
        return;
    }
    s_worker_t *worker = service->worker;
    if (worker->remote && s_inline (msg)) {
        free (pending);
        service->stats.errors++;
        snprintf (text, sizeof (text), "cannot send to remote service '%s': %s", name,
                  pyi_last_error ());
        s_send_error (self, rid, rid_size, id, PYI_ERR_DENIED, name, text);
        return;
    }
    uint32_t timeout = pyi_msg_timeout (msg);
    size_t bytes = pyi_msg_body_size (msg);
    pending->rid = ++self->next_rid;
    pending->service = service;
    pending->worker = worker;
    pending->deadline = timeout ? zclock_mono () + timeout : 0;
    pending->heap = SIZE_MAX;
    pending->caller_remote = pyi_msg_remote (msg);
    pyi_msg_set_id (msg, pending->rid);
    if (pyi_msg_send (msg_p, self->handle, worker->rid, worker->rid_size, ZMQ_DONTWAIT)) {
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
    if (pending->deadline)
        s_heap_push (self, pending);
    pending->prev = NULL;
    pending->next = worker->pending;
    if (worker->pending)
        worker->pending->prev = pending;
    worker->pending = pending;
    service->stats.requests++;
    service->stats.bytes_in += bytes;
    service->stats.in_flight++;
    self->stats.pending++;
}

/*  REPLY or ERROR from a worker. */
static void
s_handle_answer (s_broker_t *self, pyi_msg_t **msg_p, s_worker_t *worker)
{
    pyi_msg_t *msg = *msg_p;
    uint64_t rid = pyi_msg_id (msg);
    s_pending_t *pending = (s_pending_t *) pyi_table_lookup (self->pending, &rid, sizeof (rid));
    if (!pending) {
        s_discard (msg);        /* cancelled or timed out: drop */
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
    if (pending->caller_remote && s_inline (msg)) {
        char text [512];
        snprintf (text, sizeof (text), "cannot send the answer to a remote caller: %s",
                  pyi_last_error ());
        s_send_error (self, pending->ckey + 8, pending->ckey_size - 8, s_caller_id (pending),
                      PYI_ERR_DENIED, service->name, text);
    }
    else
        pyi_msg_send (msg_p, self->handle, pending->ckey + 8, pending->ckey_size - 8,
                      ZMQ_DONTWAIT);
    s_pending_free (self, pending);
}

static void
s_handle_cancel (s_broker_t *self, pyi_msg_t *msg, const uint8_t *rid, size_t rid_size)
{
    uint8_t key [8 + PYI_MAX_NAME];
    uint64_t id = pyi_msg_id (msg);
    memcpy (key, &id, 8);
    memcpy (key + 8, rid, rid_size);
    s_pending_t *pending = (s_pending_t *) pyi_table_lookup (self->callers, key, 8 + rid_size);
    if (!pending)
        return;
    s_send_simple (self, pending->worker->rid, pending->worker->rid_size,
                   PYI_CANCEL, pending->rid, 0, NULL);
    s_pending_free (self, pending);
}

static void
s_handle_message (s_broker_t *self, pyi_msg_t **msg_p)
{
    pyi_msg_t *msg = *msg_p;
    size_t rid_size;
    const uint8_t *rid_data = (const uint8_t *) pyi_msg_routing_id (msg, &rid_size);
    uint8_t rid [PYI_MAX_NAME];
    memcpy (rid, rid_data, rid_size);
    self->stats.messages++;

    s_offender_t *offender = (s_offender_t *) pyi_table_lookup (self->offenders, rid, rid_size);
    if (offender && offender->banned) {
        self->stats.rejected++;
        return;
    }
    s_worker_t *worker = (s_worker_t *) pyi_table_lookup (self->workers, rid, rid_size);
    if (worker)
        worker->expiry = zclock_mono () + self->heartbeat_ms * self->liveness;

    int status = pyi_msg_status (msg);
    if (status != PYI_OK) {
        if (status == PYI_ERR_MALFORMED)
            self->stats.malformed++;
        else
            self->stats.rejected++;
        if (status == PYI_ERR_VERSION) {
            char text [128];
            snprintf (text, sizeof (text),
                      "protocol version not supported: this broker speaks version %d",
                      PYI_PROTOCOL_VERSION);
            s_send_simple (self, rid, rid_size, PYI_DISCONNECT, 0, PYI_ERR_VERSION, text);
        }
        else
            s_send_error (self, rid, rid_size, pyi_msg_id (msg), status,
                          pyi_msg_service (msg), pyi_msg_text (msg));
        s_strike (self, rid, rid_size);
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

/*  Timers and processes ----------------------------------------------- */

static void
s_expire_deadlines (s_broker_t *self, int64_t now)
{
    while (self->heap_size && self->heap [0]->deadline <= now) {
        s_pending_t *pending = self->heap [0];
        char text [128];
        snprintf (text, sizeof (text), "timeout: no answer from '%s' in time",
                  pending->service->name);
        s_pending_fail (self, pending, PYI_ERR_TIMEOUT, text, true);
    }
}

static void
s_kill_proc_of (s_broker_t *self, s_worker_t *worker)
{
    if (worker->grant && worker->grant->pid > 0 && s_proc_by_pid (self, worker->grant->pid))
        kill (worker->grant->pid, SIGKILL);
}

static void
s_heartbeat (s_broker_t *self, int64_t now)
{
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
        char reason [128];
        snprintf (reason, sizeof (reason), "no heartbeat for %lld ms",
                  (long long) (self->heartbeat_ms * self->liveness));
        self->stats.disconnected++;
        s_send_simple (self, expired [i]->rid, expired [i]->rid_size, PYI_DISCONNECT, 0,
                       PYI_ERR_WORKER_LOST, "heartbeat expired");
        /*  A hung local process is killed: its supervisor is the broker. */
        s_kill_proc_of (self, expired [i]);
        s_worker_lost (self, expired [i], reason);
    }
    self->next_heartbeat = now + self->heartbeat_ms;
}

static const char *s_session_of (const char *endpoint);

/*  Reap one process if it has ended; true when it did. */
static bool
s_reap (s_broker_t *self, size_t index, int options)
{
    s_proc_t *proc = &self->procs [index];
    int wstatus = 0;
    pid_t rc = waitpid (proc->pid, &wstatus, options);
    if (rc == 0 || (rc == -1 && errno == EINTR))
        return false;
    char text [128];
    int status;
    if (rc == -1) {
        snprintf (text, sizeof (text), "exit status unknown (reaped elsewhere)");
        status = 0;
    }
    else
        status = pyi_proc_describe (wstatus, text, sizeof (text));
    s_grant_t *grant = proc->grant;
    if (grant->worker)
        s_worker_lost (self, grant->worker, text);
    /*  Regions the process made that nobody maps any more go with it. */
    pyi_region_sweep (s_session_of (self->endpoint), proc->pid);
    s_event (self, PYI_EVENT_EXIT, proc->pid, status,
             grant->nservices ? grant->services [0] : "", text);
    /*  The token dies with its process: a READY still queued from it is
        refused as "token not granted". */
    pyi_table_remove (self->grants, grant->token, strlen (grant->token));
    s_grant_free (grant);
    if (proc->pidfd != -1)
        close (proc->pidfd);
    self->procs [index] = self->procs [--self->nprocs];
    self->stats.processes = self->nprocs;
    return true;
}

static void
s_reap_all (s_broker_t *self, int options)
{
    for (size_t i = 0; i < self->nprocs;)
        if (!s_reap (self, i, options))
            i++;
}

/*  Commands from the host ---------------------------------------------- */

static void
s_new_token (char *token)
{
    uint8_t bytes [TOKEN_BYTES];
    if (getrandom (bytes, sizeof (bytes), 0) != sizeof (bytes))
        for (size_t i = 0; i < sizeof (bytes); i++)
            bytes [i] = (uint8_t) randof (256);
    for (size_t i = 0; i < TOKEN_BYTES; i++)
        sprintf (token + 2 * i, "%02x", bytes [i]);
}

static bool
s_valid_name (const char *name)
{
    size_t size = name ? strlen (name) : 0;
    if (size == 0 || size > PYI_MAX_NAME)
        return false;
    for (size_t i = 0; i < size; i++)
        if ((unsigned char) name [i] < 0x20 || name [i] == 0x7f)
            return false;
    return true;
}

static s_grant_t *
s_allow (s_broker_t *self, const char *service, const char *token)
{
    if (!s_valid_name (service))
        return NULL;
    s_grant_t *grant = token && *token
        ? (s_grant_t *) pyi_table_lookup (self->grants, token, strlen (token)) : NULL;
    if (!grant) {
        if (token && *token)
            return NULL;
        grant = (s_grant_t *) calloc (1, sizeof (s_grant_t));
        if (!grant)
            return NULL;
        s_new_token (grant->token);
        if (pyi_table_insert (self->grants, grant)) {
            free (grant);
            return NULL;
        }
    }
    if (s_grant_allows (grant, service))
        return grant;
    char **services = (char **) realloc (grant->services, (grant->nservices + 1) * sizeof (char *));
    if (!services)
        return NULL;
    grant->services = services;
    if (!(services [grant->nservices] = strdup (service)))
        return NULL;
    grant->nservices++;
    return grant;
}

/*  The session is the runtime directory's name: "<pid>-<random>", taken
    from "ipc://<base>/<session>/broker". Borrowed from a static buffer. */
static const char *
s_session_of (const char *endpoint)
{
    static __thread char session [256];
    const char *end = strrchr (endpoint, '/');
    const char *start = end;
    while (start && start > endpoint && start [-1] != '/')
        start--;
    size_t size = end && start ? (size_t) (end - start) : 0;
    snprintf (session, sizeof (session), "%.*s", (int) size, start ? start : "");
    return session;
}

static int
s_spawn (s_broker_t *self, const char *service, const char *const *argv,
         const char *const *envp, int out_fd, int err_fd)
{
    if (self->nprocs >= MAX_PROCS) {
        pyi_set_error ("too many worker processes");
        return -1;
    }
    s_grant_t *grant = s_allow (self, service, NULL);
    if (!grant) {
        pyi_set_error ("invalid service name");
        return -1;
    }
    char endpoint [300], name [300], token [64], parent [64], session [300];
    snprintf (endpoint, sizeof (endpoint), "PYI_ENDPOINT=%s", self->endpoint);
    snprintf (name, sizeof (name), "PYI_SERVICE=%s", service);
    snprintf (token, sizeof (token), "PYI_TOKEN=%s", grant->token);
    snprintf (parent, sizeof (parent), "PYI_PARENT_PID=%ld", (long) getpid ());
    snprintf (session, sizeof (session), "PYI_SESSION=%s", s_session_of (self->endpoint));
    const char *extra [] = { endpoint, name, token, parent, session, NULL };
    pid_t pid = pyi_proc_spawn (argv, envp, extra, out_fd, err_fd);
    if (pid == -1)
        return -1;
    grant->pid = pid;
    s_proc_t *proc = &self->procs [self->nprocs++];
    proc->pid = pid;
    proc->pidfd = pyi_proc_pidfd (pid);
    proc->grant = grant;
    self->stats.processes = self->nprocs;
    return pid;
}

static void
s_fill_service_stats (s_broker_t *self, const char *name, pyi_service_stats_t *stats, int *rc)
{
    s_service_t *service = (s_service_t *) pyi_table_lookup (self->services, name, strlen (name));
    *rc = service ? 0 : -1;
    if (service)
        *stats = service->stats;
}

static int
s_set_option (s_broker_t *self, int option, int64_t value)
{
    if (value <= 0 && option != PYI_OPT_GRACE_MS)
        return -1;
    switch (option) {
        case PYI_OPT_HEARTBEAT_MS: self->heartbeat_ms = value;
                                   self->next_heartbeat = zclock_mono () + value;
                                   return 0;
        case PYI_OPT_LIVENESS: self->liveness = value; return 0;
        case PYI_OPT_MAX_MSG_SIZE: self->max_msg_size = value; return 0;
        case PYI_OPT_MAX_PENDING: self->max_pending = value; return 0;
        case PYI_OPT_MAX_STRIKES: self->max_strikes = value; return 0;
        case PYI_OPT_GRACE_MS: if (value < 0) return -1;
                               self->grace_ms = value; return 0;
        default: return -1;
    }
}

/*  Every command crosses the pipe with the same picture: a name, two
    strings, two pointers, two ints and a 64-bit value, unused ones empty.
    The answer is an int and a string. */
#define COMMAND_PICTURE "sssppii8"
#define ANSWER_PICTURE "is"

/*  CURVE ------------------------------------------------------------- */

/*  Answer one ZAP request (RFC 27): CURVE peers whose public key was
    allowed get 200, anything else 400. */
static void
s_handle_zap (s_broker_t *self)
{
    zmsg_t *request = zmsg_recv (self->zap);
    if (!request)
        return;
    char *version = zmsg_popstr (request);
    char *sequence = zmsg_popstr (request);
    char *domain = zmsg_popstr (request);
    char *address = zmsg_popstr (request);
    zframe_t *identity = zmsg_pop (request);
    char *mechanism = zmsg_popstr (request);
    zframe_t *key = zmsg_pop (request);
    bool ok = version && streq (version, "1.0") && mechanism && streq (mechanism, "CURVE")
           && key && zframe_size (key) == 32
           && pyi_table_lookup (self->keys, zframe_data (key), 32);
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, "1.0");
    zmsg_addstr (reply, sequence ? sequence : "");
    zmsg_addstr (reply, ok ? "200" : "400");
    zmsg_addstr (reply, ok ? "OK" : "key not allowed");
    zmsg_addstr (reply, ok ? "pyi-curve" : "");
    zmsg_addmem (reply, "", 0);
    zmsg_send (&reply, self->zap);
    zstr_free (&version);
    zstr_free (&sequence);
    zstr_free (&domain);
    zstr_free (&address);
    zstr_free (&mechanism);
    zframe_destroy (&identity);
    zframe_destroy (&key);
    zmsg_destroy (&request);
}

/*  Bind endpoint with CURVE: the router's options at bind time apply to
    that endpoint only, so the endpoints bound before and after stay plain. */
static int
s_bind_curve (s_broker_t *self, const char *endpoint, const char **bound)
{
    if (strncmp (endpoint, "tcp://", 6) != 0) {
        pyi_set_error ("a CURVE endpoint is tcp://, not %s", endpoint);
        return -1;
    }
    if (!self->zap) {
        self->zap = zsock_new (ZMQ_REP);
        if (!self->zap || zsock_bind (self->zap, ZAP_ENDPOINT) == -1) {
            zsock_destroy (&self->zap);
            pyi_set_error ("cannot start CURVE authentication: another broker in this "
                           "process has CURVE endpoints (ZeroMQ allows one handler)");
            return -1;
        }
    }
    zsock_set_curve_server (self->router, 1);
    zsock_set_curve_secretkey (self->router, self->curve_secret);
    int rc = zsock_bind (self->router, "%s", endpoint);
    if (rc == -1)
        pyi_set_error ("cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
    zsock_set_curve_server (self->router, 0);      /* later endpoints: plain */
    *bound = rc == -1 ? "" : zsock_endpoint (self->router);
    return rc == -1 ? -1 : 0;
}

static int
s_allow_key (s_broker_t *self, const char *z85)
{
    s_key_t *entry = (s_key_t *) calloc (1, sizeof (s_key_t));
    if (!entry || !z85 || strlen (z85) != 40 || !zmq_z85_decode (entry->key, z85)) {
        free (entry);
        pyi_set_error ("not a CURVE public key (40 characters of Z85)");
        return -1;
    }
    if (pyi_table_lookup (self->keys, entry->key, 32))
        free (entry);
    else
        pyi_table_insert (self->keys, entry);
    return 0;
}

static void
s_handle_pipe (s_broker_t *self)
{
    char *command = NULL, *s1 = NULL, *s2 = NULL;
    void *p1 = NULL, *p2 = NULL;
    int i1 = 0, i2 = 0;
    uint64_t value = 0;
    if (zsock_recv (self->pipe, COMMAND_PICTURE, &command, &s1, &s2, &p1, &p2,
                    &i1, &i2, &value) == -1)
        return;
    int rc = -1;
    const char *text = "";
    pyi_set_error ("%s", "");
    if (streq (command, "$TERM")) {
        self->terminated = true;
        rc = 0;
    }
    else
    if (streq (command, "BIND")) {
        rc = zsock_bind (self->router, "%s", s1);
        if (rc == -1)
            pyi_set_error ("cannot bind %s: %s", s1, zmq_strerror (zmq_errno ()));
        else
            text = zsock_endpoint (self->router);
    }
    else
    if (streq (command, "BIND_CURVE"))
        rc = s_bind_curve (self, s1, &text);
    else
    if (streq (command, "ALLOW_KEY"))
        rc = s_allow_key (self, s1);
    else
    if (streq (command, "SET"))
        rc = s_set_option (self, i1, (int64_t) value);
    else
    if (streq (command, "ALLOW")) {
        s_grant_t *grant = s_allow (self, s1, s2);
        rc = grant ? 0 : -1;
        text = grant ? grant->token : "";
    }
    else
    if (streq (command, "SPAWN"))
        rc = s_spawn (self, s1, (const char *const *) p1, (const char *const *) p2, i1, i2);
    else
    if (streq (command, "STATS")) {
        if (*s1)
            s_fill_service_stats (self, s1, (pyi_service_stats_t *) p1, &rc);
        else {
            *(pyi_broker_stats_t *) p1 = self->stats;
            rc = 0;
        }
    }
    zsock_send (self->pipe, ANSWER_PICTURE, rc, *text ? text : pyi_last_error ());
    zstr_free (&command);
    zstr_free (&s1);
    zstr_free (&s2);
}

/*  The broker thread --------------------------------------------------- */

static void
s_shutdown (s_broker_t *self)
{
    /*  Answer every caller, release every worker. */
    size_t cursor = 0;
    s_worker_t *worker;
    while ((worker = (s_worker_t *) pyi_table_next (self->workers, &cursor)))
        while (worker->pending)
            s_pending_fail (self, worker->pending, PYI_ERR_SHUTDOWN, "broker stopping", false);
    cursor = 0;
    while ((worker = (s_worker_t *) pyi_table_next (self->workers, &cursor)))
        s_send_simple (self, worker->rid, worker->rid_size, PYI_DISCONNECT, 0,
                       PYI_ERR_SHUTDOWN, "broker stopping");

    /*  Give processes the grace period, then kill what is left. */
    int64_t deadline = zclock_mono () + self->grace_ms;
    while (self->nprocs && zclock_mono () < deadline) {
        s_reap_all (self, WNOHANG);
        if (self->nprocs)
            zclock_sleep (5);
    }
    for (size_t i = 0; i < self->nprocs; i++)
        kill (self->procs [i].pid, SIGKILL);
    s_reap_all (self, 0);
}

static void
s_destroy_tables (s_broker_t *self)
{
    size_t cursor = 0;
    void *item;
    while ((item = pyi_table_next (self->workers, &cursor))) {
        s_worker_t *worker = (s_worker_t *) item;
        while (worker->pending)
            s_pending_free (self, worker->pending);
        free (worker->services);
        free (worker);
    }
    cursor = 0;
    while ((item = pyi_table_next (self->services, &cursor)))
        free (item);
    cursor = 0;
    while ((item = pyi_table_next (self->grants, &cursor)))
        s_grant_free ((s_grant_t *) item);
    cursor = 0;
    while ((item = pyi_table_next (self->offenders, &cursor)))
        free (item);
    cursor = 0;
    while (self->keys && (item = pyi_table_next (self->keys, &cursor)))
        free (item);
    pyi_table_destroy (&self->keys);
    pyi_table_destroy (&self->services);
    pyi_table_destroy (&self->workers);
    pyi_table_destroy (&self->grants);
    pyi_table_destroy (&self->pending);
    pyi_table_destroy (&self->callers);
    pyi_table_destroy (&self->offenders);
    free (self->heap);
}

static int
s_setup (s_broker_t *self, s_start_t *start)
{
    self->heartbeat_ms = DEFAULT_HEARTBEAT_MS;
    self->liveness = DEFAULT_LIVENESS;
    self->max_msg_size = DEFAULT_MAX_MSG_SIZE;
    self->max_pending = DEFAULT_MAX_PENDING;
    self->max_strikes = DEFAULT_MAX_STRIKES;
    self->grace_ms = DEFAULT_GRACE_MS;
    self->next_heartbeat = zclock_mono () + self->heartbeat_ms;
    snprintf (self->endpoint, sizeof (self->endpoint), "%s", start->endpoint);
    self->services = pyi_table_new (s_service_key);
    self->workers = pyi_table_new (s_worker_key);
    self->grants = pyi_table_new (s_grant_key);
    self->pending = pyi_table_new (s_pending_key);
    self->callers = pyi_table_new (s_caller_key);
    self->offenders = pyi_table_new (s_offender_key);
    self->keys = pyi_table_new (s_key_key);
    snprintf (self->curve_secret, sizeof (self->curve_secret), "%s", start->curve_secret);
    if (!self->services || !self->workers || !self->grants || !self->pending
    ||  !self->callers || !self->offenders || !self->keys) {
        snprintf (start->error, sizeof (start->error), "out of memory");
        return -1;
    }
    self->router = zsock_new (ZMQ_ROUTER);
    self->events = zsock_new (ZMQ_PAIR);
    if (self->events)
        zsock_set_sndhwm (self->events, EVENT_HWM);
    if (!self->router || !self->events) {
        snprintf (start->error, sizeof (start->error), "cannot create sockets");
        return -1;
    }
    self->handle = zsock_resolve (self->router);
    zsock_set_router_mandatory (self->router, 1);
    zsock_set_sndhwm (self->router, ROUTER_HWM);
    zsock_set_rcvhwm (self->router, ROUTER_HWM);
    /*  Let DISCONNECTs go out at shutdown, but never wait long for that. */
    zsock_set_linger (self->router, 100);
    const char *endpoints [] = { start->endpoint, start->inproc, start->events };
    for (int i = 0; i < 3; i++)
        if (zsock_bind (i < 2 ? self->router : self->events, "%s", endpoints [i]) == -1) {
            snprintf (start->error, sizeof (start->error), "cannot bind %s: %s",
                      endpoints [i], zmq_strerror (zmq_errno ()));
            return -1;
        }
    return 0;
}

typedef struct {
    zsock_t *pipe;                  /* the thread's end of the command pipe */
    s_start_t *start;               /* lives until the first signal */
} s_thread_args_t;

static void *
s_broker_thread (void *arg)
{
    s_thread_args_t *args = (s_thread_args_t *) arg;
    zsock_t *pipe = args->pipe;
    s_broker_t *self = (s_broker_t *) calloc (1, sizeof (s_broker_t));
    if (!self || s_setup (self, args->start)) {
        if (!self)
            snprintf (args->start->error, sizeof (args->start->error), "out of memory");
        args->start->status = -1;
        goto done;
    }
    self->pipe = pipe;
    zsock_signal (pipe, 0);

    /*  The loop polls libzmq's ZMQ_FD descriptors directly: they are
        edge-triggered, so each socket is drained until it has nothing
        before the thread sleeps. Cheaper than zmq_poll, which re-polls
        every socket's signaller around each sleep. */
    struct pollfd fds [3 + MAX_PROCS];
    int pipe_fd = zsock_fd (pipe);
    int router_fd = zsock_fd (self->router);
    /*  Each look at a ZeroMQ socket costs libzmq syscalls: the pipe is
        looked at when its descriptor fired (or a look found it busy), the
        processes are reaped when a pidfd fired. */
    bool pipe_ready = true;
    while (!self->terminated) {
        bool busy = false;
        for (int i = 0; i < BATCH; i++) {
            pyi_msg_t *msg = pyi_msg_recv (self->handle, true,
                                           (size_t) self->max_msg_size, ZMQ_DONTWAIT);
            if (!msg)
                break;
            s_handle_message (self, &msg);
            pyi_msg_destroy (&msg);
            busy = i == BATCH - 1;
        }
        int64_t now = zclock_mono ();
        s_expire_deadlines (self, now);
        if (now >= self->next_heartbeat)
            s_heartbeat (self, now);
        /*  Commands after messages: $TERM sees the effects of what came
            before it. */
        if (pipe_ready)
            while (!self->terminated && (zsock_events (pipe) & ZMQ_POLLIN))
                s_handle_pipe (self);
        if (self->terminated)
            break;

        /*  ZAP requests come while a peer connects: a few, never many. */
        if (self->zap)
            while (zsock_events (self->zap) & ZMQ_POLLIN)
                s_handle_zap (self);

        nfds_t nfds = 2;
        bool polled_procs = false;
        fds [0] = (struct pollfd) { pipe_fd, POLLIN, 0 };
        fds [1] = (struct pollfd) { router_fd, POLLIN, 0 };
        if (self->zap)
            fds [nfds++] = (struct pollfd) { zsock_fd (self->zap), POLLIN, 0 };
        for (size_t i = 0; i < self->nprocs; i++) {
            if (self->procs [i].pidfd == -1)
                polled_procs = true;
            else
                fds [nfds++] = (struct pollfd) { self->procs [i].pidfd, POLLIN, 0 };
        }
        int64_t wake = self->next_heartbeat;
        if (self->heap_size && self->heap [0]->deadline < wake)
            wake = self->heap [0]->deadline;
        /*  Without pidfds, processes are checked every 50 ms. */
        if (polled_procs && wake > now + 50)
            wake = now + 50;
        /*  Sends above may have consumed the router's edge: look again. */
        if (busy || (zsock_events (self->router) & ZMQ_POLLIN))
            wake = now;
        int timeout = wake > now ? (int) (wake - now) : 0;
        int ready = poll (fds, nfds, timeout);
        pipe_ready = ready != 0 && (ready < 0 || fds [0].revents);
        bool exited = polled_procs;
        for (nfds_t i = self->zap ? 3 : 2; ready > 0 && i < nfds; i++)
            exited |= fds [i].revents != 0;
        if (exited)
            s_reap_all (self, WNOHANG);
    }
    s_shutdown (self);
done:
    if (self) {
        zsock_destroy (&self->router);
        zsock_destroy (&self->events);
        zsock_destroy (&self->zap);
        if (self->services)
            s_destroy_tables (self);
        free (self);
    }
    /*  The host joins this thread after the signal, then closes the pipe. */
    zsock_signal (pipe, 0);
    return NULL;
}

/*  The host's side ----------------------------------------------------- */

/*  Shared-memory regions the host makes are named after one session for
    the life of its brokers: the first live broker's. A broker's own
    session also names the regions of the extensions it spawned. */
static pthread_mutex_t s_brokers_lock = PTHREAD_MUTEX_INITIALIZER;
static int s_brokers;               /* live brokers in this process */

static void
s_brokers_started (pyi_broker_t *self)
{
    pthread_mutex_lock (&s_brokers_lock);
    if (s_brokers++ == 0)
        pyi_region_set_session (pyi_broker_session (self));
    pthread_mutex_unlock (&s_brokers_lock);
}

/*  The broker's extensions are gone, so are the names of the regions they
    made (mappings held here stay valid until released). The host's own
    regions lose their names when its last broker stops: only then can no
    message in flight name them. */
static void
s_brokers_stopped (pyi_broker_t *self)
{
    pthread_mutex_lock (&s_brokers_lock);
    char session [256];
    snprintf (session, sizeof (session), "%s", pyi_broker_session (self));
    bool last = --s_brokers == 0;
    if (strcmp (session, pyi_region_session ()) != 0)
        pyi_region_remove_session (session);
    if (last)
        pyi_region_remove_session (NULL);
    pthread_mutex_unlock (&s_brokers_lock);
}

static int s_command (pyi_broker_t *self, const char *command, const char *s1,
                      const char *s2, const void *p1, const void *p2, int i1, int i2,
                      int64_t value, char **text);

pyi_broker_t *
pyi_broker_new (void)
{
    pyi_init ();
    pyi_broker_t *self = (pyi_broker_t *) calloc (1, sizeof (pyi_broker_t));
    if (!self) {
        pyi_set_error ("out of memory");
        return NULL;
    }
    self->lock_fd = -1;
    if (pyi_rundir_create (self->rundir, sizeof (self->rundir), &self->lock_fd)) {
        free (self);
        return NULL;
    }
    s_start_t start;
    memset (&start, 0, sizeof (start));
    snprintf (self->endpoint, sizeof (self->endpoint), "ipc://%s/broker", self->rundir);
    /*  Unique for the life of the process: libzmq may still hold the name
        of a broker destroyed a moment ago. */
    static _Atomic unsigned long sequence;
    unsigned long number = ++sequence;
    snprintf (self->inproc, sizeof (self->inproc), "inproc://pyi-broker-%lu", number);
    snprintf (start.endpoint, sizeof (start.endpoint), "%s", self->endpoint);
    snprintf (start.inproc, sizeof (start.inproc), "%s", self->inproc);
    snprintf (start.events, sizeof (start.events), "inproc://pyi-events-%lu", number);
    if (zmq_curve_keypair (self->curve_public, start.curve_secret) != 0) {
        /*  libzmq without CURVE: CURVE endpoints are refused later. */
        self->curve_public [0] = 0;
        start.curve_secret [0] = 0;
    }

    self->pipe = zsys_create_pipe (&self->backend);
    s_thread_args_t args = { self->backend, &start };
    if (!self->pipe || pthread_create (&self->thread, NULL, s_broker_thread, &args)) {
        pyi_set_error ("cannot start the broker thread");
        zsock_destroy (&self->pipe);
        zsock_destroy (&self->backend);
        pyi_rundir_remove (self->rundir, &self->lock_fd);
        free (self);
        return NULL;
    }
    zsock_wait (self->pipe);
    if (start.status == 0) {
        s_brokers_started (self);
        self->events = zsock_new (ZMQ_PAIR);
        if (self->events && zsock_connect (self->events, "%s", start.events) == 0)
            return self;
        pyi_broker_destroy (&self);
        pyi_set_error ("cannot connect the event socket");
        return NULL;
    }
    pyi_set_error ("%s", start.error);
    pthread_join (self->thread, NULL);
    zsock_destroy (&self->backend);
    zsock_destroy (&self->pipe);
    pyi_rundir_remove (self->rundir, &self->lock_fd);
    free (self);
    return NULL;
}

void
pyi_broker_destroy (pyi_broker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_broker_t *self = *self_p;
    *self_p = NULL;
    s_command (self, "$TERM", NULL, NULL, NULL, NULL, 0, 0, 0, NULL);
    zsock_wait (self->pipe);
    pthread_join (self->thread, NULL);
    zsock_destroy (&self->events);
    zsock_destroy (&self->backend);
    zsock_destroy (&self->pipe);
    s_brokers_stopped (self);
    pyi_rundir_remove (self->rundir, &self->lock_fd);
    free (self);
}

const char *pyi_broker_endpoint (pyi_broker_t *self) { return self->endpoint; }
const char *pyi_broker_inproc (pyi_broker_t *self) { return self->inproc; }
const char *pyi_broker_rundir (pyi_broker_t *self) { return self->rundir; }
const char *pyi_broker_session (pyi_broker_t *self) { return s_session_of (self->endpoint); }

/*  Send the broker thread a command and wait for its answer. *text gets
    the answer's string (caller frees) when text is not NULL. */
static int
s_command (pyi_broker_t *self, const char *command, const char *s1, const char *s2,
           const void *p1, const void *p2, int i1, int i2, int64_t value, char **text)
{
    int rc = -1;
    char *answer = NULL;
    if (zsock_send (self->pipe, COMMAND_PICTURE, command, s1 ? s1 : "", s2 ? s2 : "",
                    p1, p2, i1, i2, (uint64_t) value) == -1
    ||  zsock_recv (self->pipe, ANSWER_PICTURE, &rc, &answer) == -1) {
        pyi_set_error ("broker thread is not answering");
        return -1;
    }
    if (rc == -1)
        pyi_set_error ("%s", answer && *answer ? answer : "broker command failed");
    if (text && rc != -1)
        *text = answer;
    else
        zstr_free (&answer);
    return rc;
}

char *
pyi_broker_bind_curve (pyi_broker_t *self, const char *endpoint)
{
    if (!*self->curve_public) {
        pyi_set_error ("this libzmq has no CURVE security");
        return NULL;
    }
    char *bound = NULL;
    s_command (self, "BIND_CURVE", endpoint, NULL, NULL, NULL, 0, 0, 0, &bound);
    return bound;
}

const char *pyi_broker_curve_key (pyi_broker_t *self) { return self->curve_public; }

int
pyi_broker_allow_key (pyi_broker_t *self, const char *public_key)
{
    return s_command (self, "ALLOW_KEY", public_key, NULL, NULL, NULL, 0, 0, 0, NULL);
}

int
pyi_curve_keypair (char public_key [41], char secret_key [41])
{
    if (zmq_curve_keypair (public_key, secret_key) != 0) {
        pyi_set_error ("cannot make a CURVE key pair: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    return 0;
}

char *
pyi_broker_bind (pyi_broker_t *self, const char *endpoint)
{
    char *bound = NULL;
    s_command (self, "BIND", endpoint, NULL, NULL, NULL, 0, 0, 0, &bound);
    return bound;
}

int
pyi_broker_set (pyi_broker_t *self, pyi_option_t option, int64_t value)
{
    int rc = s_command (self, "SET", NULL, NULL, NULL, NULL, (int) option, 0, value, NULL);
    if (rc)
        pyi_set_error ("invalid option %d or value %lld", (int) option, (long long) value);
    return rc;
}

char *
pyi_broker_allow (pyi_broker_t *self, const char *service, const char *token)
{
    char *granted = NULL;
    if (s_command (self, "ALLOW", service, token, NULL, NULL, 0, 0, 0, &granted))
        pyi_set_error ("invalid service name or unknown token");
    return granted;
}

int
pyi_broker_spawn (pyi_broker_t *self, const char *service, const char *const argv[],
                  const char *const envp[], int stdout_fd, int stderr_fd)
{
    return s_command (self, "SPAWN", service, NULL, argv, envp, stdout_fd, stderr_fd, 0, NULL);
}

int
pyi_broker_service_stats (pyi_broker_t *self, const char *service, pyi_service_stats_t *stats)
{
    if (!service || !*service) {
        pyi_set_error ("no service name");
        return -1;
    }
    int rc = s_command (self, "STATS", service, NULL, stats, NULL, 0, 0, 0, NULL);
    if (rc)
        pyi_set_error ("unknown service '%s'", service);
    return rc;
}

int
pyi_broker_stats (pyi_broker_t *self, pyi_broker_stats_t *stats)
{
    return s_command (self, "STATS", NULL, NULL, stats, NULL, 0, 0, 0, NULL);
}

int
pyi_broker_event_fd (pyi_broker_t *self)
{
    return zsock_fd (self->events);
}

int
pyi_broker_event (pyi_broker_t *self, pyi_event_t *event, int timeout_ms)
{
    void *handle = zsock_resolve (self->events);
    if (timeout_ms != 0) {
        zmq_pollitem_t item = { handle, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, timeout_ms) <= 0)
            return -1;
    }
    int size = zmq_recv (handle, event, sizeof (*event), ZMQ_DONTWAIT);
    return size == (int) sizeof (*event) ? 0 : -1;
}
