/*  pyi_broker: the ROUTER broker that runs inside the host.

    The broker is an actor: pyi_broker_new () starts a thread that owns all
    of the broker's sockets and child processes, and every function below
    sends that thread a command over an inproc pipe and waits for its
    answer. Nothing is shared between the host and the broker thread but
    that pipe, so any one thread of the host may drive a broker; the
    functions are not meant to be called from several threads at once.

    Peers (pyi_client, pyi_worker) connect to the broker's endpoints.
    Callers address named services; the broker routes each request to the
    worker that offers the service and routes the answer back. Who may
    offer a service is the broker's policy alone: a worker must present a
    token that pyi_broker_allow () or pyi_broker_spawn () granted for it.
*/
#ifndef PYI_BROKER_H_INCLUDED
#define PYI_BROKER_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "pyi_library.h"
#include "pyi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _pyi_broker_t pyi_broker_t;

/*  Start a broker thread. It makes a private runtime directory (mode 0700)
    under $PYI_RUNTIME_DIR, else $XDG_RUNTIME_DIR, else /tmp, named
    pyisolate-<uid>/<pid>-<random>, binds ipc://<dir>/broker in it and an
    inproc endpoint, and removes the runtime directories of dead hosts it
    finds there. Returns NULL on failure (see pyi_last_error ()). */
PYI_EXPORT pyi_broker_t *pyi_broker_new (void);

/*  Stop the broker: tell every worker DISCONNECT, give spawned processes
    the grace period (pyi_broker_set (PYI_OPT_GRACE_MS)) to exit, then
    SIGKILL and reap them, close every socket, join the thread and remove
    the runtime directory. Safe on NULL and on *self_p == NULL. */
PYI_EXPORT void pyi_broker_destroy (pyi_broker_t **self_p);

/*  The broker's local endpoints: ipc:// for other processes on this
    machine, inproc:// for peers inside this process (faster). Borrowed. */
PYI_EXPORT const char *pyi_broker_endpoint (pyi_broker_t *self);
PYI_EXPORT const char *pyi_broker_inproc (pyi_broker_t *self);
/*  The private runtime directory (borrowed), and its name, which is this
    host's session id "<pid>-<random>" (borrowed until the next call on
    this thread); spawned processes get it as $PYI_SESSION. */
PYI_EXPORT const char *pyi_broker_rundir (pyi_broker_t *self);
PYI_EXPORT const char *pyi_broker_session (pyi_broker_t *self);

/*  Bind one more endpoint (for example "tcp://127.0.0.1:*"), without
    security: on a trusted network only (else pyi_broker_bind_curve). Returns the
    endpoint actually bound (port resolved), which the caller frees, or
    NULL on failure. */
PYI_EXPORT char *pyi_broker_bind (pyi_broker_t *self, const char *endpoint);

/*  Bind a tcp:// endpoint secured with CURVE (RFC 26): traffic is
    encrypted, peers know the broker by its public key, and only peers
    whose public key was allowed with pyi_broker_allow_key may connect
    (others fail the handshake and are never seen). Plain endpoints bound
    with pyi_broker_bind stay plain. One broker per process may bind CURVE
    endpoints (ZeroMQ has one authentication handler per process). Returns
    the endpoint bound (the caller frees it), or NULL. */
PYI_EXPORT char *pyi_broker_bind_curve (pyi_broker_t *self, const char *endpoint);

/*  The broker's CURVE public key (40 characters of Z85, borrowed), which
    peers give pyi_client_new_curve / pyi_worker_new_curve; "" when libzmq
    has no CURVE. A new key pair is made for each broker. */
PYI_EXPORT const char *pyi_broker_curve_key (pyi_broker_t *self);

/*  Let the peer holding the secret key of public_key (Z85) connect to the
    CURVE endpoints. 0, or -1 for a malformed key. */
PYI_EXPORT int pyi_broker_allow_key (pyi_broker_t *self, const char *public_key);

/*  A new CURVE key pair, Z85 (40 characters and a NUL each). 0 or -1. */
PYI_EXPORT int pyi_curve_keypair (char public_key [41], char secret_key [41]);

/*  Options; values are integers. */
typedef enum {
    PYI_OPT_HEARTBEAT_MS = 1,  /* heartbeat interval (default 1000) */
    PYI_OPT_LIVENESS = 2,      /* silent intervals before a worker is lost (default 5) */
    PYI_OPT_MAX_MSG_SIZE = 3,  /* largest message in bytes (default 512 MiB) */
    PYI_OPT_MAX_PENDING = 4,   /* most requests in flight in all (default 65536) */
    PYI_OPT_MAX_STRIKES = 5,   /* bad messages before a peer is cut off (default 10) */
    PYI_OPT_GRACE_MS = 6       /* wait for children at destroy (default 2000) */
} pyi_option_t;

/*  Set an option. 0, or -1 for an unknown option or a bad value. */
PYI_EXPORT int pyi_broker_set (pyi_broker_t *self, pyi_option_t option, int64_t value);

/*  Grant the right to offer service to the holder of token; token NULL
    makes a new random one. Returns the token (the caller frees it), which
    a worker passes to pyi_worker_new (), or NULL for an invalid name. */
PYI_EXPORT char *pyi_broker_allow (pyi_broker_t *self, const char *service,
                        const char *token);

/*  Start a worker process with posix_spawn. argv[0] is the program (found
    on PATH when it has no slash); argv and envp end with NULL; envp NULL
    means the host's environment. The child's environment also holds
    PYI_ENDPOINT, PYI_SERVICE, PYI_TOKEN (granted for service),
    PYI_PARENT_PID and PYI_SESSION. stdout_fd and stderr_fd, when not -1,
    become the child's standard output and error; no other descriptor of
    the host's reaches it. The broker reaps the child and
    reports its exit as an event; if it offered services, requests in
    flight to it fail with WORKER_LOST at once. Returns the pid, or -1. */
PYI_EXPORT int pyi_broker_spawn (pyi_broker_t *self, const char *service,
                      const char *const argv[], const char *const envp[],
                      int stdout_fd, int stderr_fd);

/*  Statistics of one service, as seen by the broker. */
typedef struct {
    uint64_t requests;     /* requests routed to the service */
    uint64_t replies;      /* replies routed back */
    uint64_t errors;       /* ERRORs returned for it (any origin) */
    uint64_t bytes_in;     /* body bytes of its requests */
    uint64_t bytes_out;    /* body bytes of its replies */
    uint64_t in_flight;    /* requests waiting for an answer now */
    int64_t pid;           /* process offering it, 0 if not known */
    bool ready;            /* a live worker offers it now */
} pyi_service_stats_t;

/*  Fill stats for service. 0, or -1 if the broker has never heard of it. */
PYI_EXPORT int pyi_broker_service_stats (pyi_broker_t *self, const char *service,
                              pyi_service_stats_t *stats);

/*  Broker-wide counters. */
typedef struct {
    uint64_t messages;     /* messages received */
    uint64_t malformed;    /* rejected: not a valid header or frame layout */
    uint64_t rejected;     /* rejected otherwise: version, size, policy, full */
    uint64_t disconnected; /* peers cut off for bad input or silence */
    uint64_t workers;      /* workers registered now */
    uint64_t pending;      /* requests in flight now */
    uint64_t processes;    /* spawned processes not yet reaped */
} pyi_broker_stats_t;

PYI_EXPORT int pyi_broker_stats (pyi_broker_t *self, pyi_broker_stats_t *stats);

/*  Events the broker reports to the host. */
typedef enum {
    PYI_EVENT_READY = 1,   /* a worker now offers service */
    PYI_EVENT_LOST = 2,    /* the worker that offered service is gone (text says why) */
    PYI_EVENT_EXIT = 3,    /* a spawned process ended; status as below */
    PYI_EVENT_REFUSED = 4  /* a worker's offer of service was refused (text says why) */
} pyi_event_type_t;

typedef struct {
    int type;              /* pyi_event_type_t */
    int pid;               /* process, 0 if not known */
    int status;            /* EXIT: exit code >= 0, or -signal number */
    char service[256];     /* service concerned, "" for none */
    char text[256];        /* human-readable reason */
} pyi_event_t;

/*  Up to 10,000 events wait for the host; past that, new ones are dropped.
    A file descriptor that becomes readable (edge-triggered, like ZMQ_FD)
    when events may be waiting; after it fires, call pyi_broker_event ()
    until it returns -1. */
PYI_EXPORT int pyi_broker_event_fd (pyi_broker_t *self);

/*  Take the next event. timeout_ms: 0 = don't wait, -1 = wait forever.
    0 with *event filled, or -1 when none came. */
PYI_EXPORT int pyi_broker_event (pyi_broker_t *self, pyi_event_t *event, int timeout_ms);

/*  Tracing the broker thread's hops (manager.trace). Off by default. */
#define PYI_TRACE_MAX_HOPS 1048576 /* the largest capacity of one recording */

typedef enum {
    PYI_HOP_REQUEST = 1,   /* a REQUEST forwarded to the worker of its service */
    PYI_HOP_ANSWER = 2     /* a REPLY or ERROR forwarded to its caller */
} pyi_hop_kind_t;

typedef struct {
    int kind;              /* pyi_hop_kind_t */
    uint64_t rid;          /* the broker's request id (the one the worker sees) */
    uint64_t caller_id;    /* the caller's id of the request */
    int64_t received_ns;   /* CLOCK_MONOTONIC: the message reached the broker thread */
    int64_t forwarded_ns;  /* CLOCK_MONOTONIC: its send returned (the peer may have it) */
    char service[256];     /* the service of the request */
} pyi_hop_t;

typedef struct _pyi_trace_t pyi_trace_t;

/*  Start recording the broker thread's hops, up to capacity of them (1 to
    PYI_TRACE_MAX_HOPS; later ones are counted as dropped), replacing a
    recording underway. 0, or -1. */
PYI_EXPORT int pyi_broker_trace_start (pyi_broker_t *self, size_t capacity);

/*  Stop recording; the recording (the caller's: pyi_trace_destroy), or
    NULL when none was underway. */
PYI_EXPORT pyi_trace_t *pyi_broker_trace_stop (pyi_broker_t *self);

/*  The hops recorded, in the order they happened; hop index (borrowed
    from the recording), NULL past the end; how many were dropped. */
PYI_EXPORT size_t pyi_trace_size (const pyi_trace_t *self);
PYI_EXPORT const pyi_hop_t *pyi_trace_hop (const pyi_trace_t *self, size_t index);
PYI_EXPORT uint64_t pyi_trace_dropped (const pyi_trace_t *self);

/*  Free a recording. Safe on NULL and on *self_p == NULL. */
PYI_EXPORT void pyi_trace_destroy (pyi_trace_t **self_p);

#ifdef __cplusplus
}
#endif

#endif
