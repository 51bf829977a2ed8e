/*  pyi_broker_cmd: the commands the host thread sends the broker thread
    over their inproc pipe, and the answers; one typed command per frame,
    one answer per command (the host waits for it).

    A command is a tag and the arguments of that command alone. Strings
    and arrays in a command are the caller's, borrowed: the host thread
    waits for the answer before its call returns, so they outlive the
    broker thread's look at them. The broker thread writes nothing of the
    caller's: what it gives back travels in the answer. Internal to
    libpyisolate (broker/).
*/
#ifndef PYI_BROKER_CMD_H_INCLUDED
#define PYI_BROKER_CMD_H_INCLUDED

#include "pyisolate/pyi_broker.h"
#include "pyi_library_internal.h"

typedef enum {
    PYI_BROKER_TERM = 1,            /* stop the broker thread ($TERM) */
    PYI_BROKER_BIND = 2,            /* bind a plain endpoint: bind */
    PYI_BROKER_BIND_CURVE = 3,      /* bind a CURVE endpoint: bind */
    PYI_BROKER_ALLOW_KEY = 4,       /* admit a CURVE public key: allow_key */
    PYI_BROKER_SET = 5,             /* set an option: set */
    PYI_BROKER_ALLOW = 6,           /* grant a service to a token: allow */
    PYI_BROKER_SPAWN = 7,           /* start a worker process: spawn */
    PYI_BROKER_STATS = 8,           /* the broker-wide counters (no arguments) */
    PYI_BROKER_SERVICE_STATS = 9,   /* one service's counters: service_stats */
    PYI_BROKER_TRACE_START = 10,    /* record the hops: trace */
    PYI_BROKER_TRACE_STOP = 11      /* stop; the recording goes in the answer (no arguments) */
} pyi_broker_cmd_type_t;

typedef struct {
    const char *endpoint;           /* "tcp://127.0.0.1:*", ... */
} pyi_bind_args_t;

typedef struct {
    const char *public_key;         /* Z85 */
} pyi_allow_key_args_t;

typedef struct {
    int option;                     /* pyi_option_t */
    int64_t value;
} pyi_set_args_t;

typedef struct {
    const char *service;
    const char *token;              /* NULL or "": a new one */
} pyi_allow_args_t;

typedef struct {
    const char *service;            /* granted to the new process's token */
    const char *const *argv;        /* NULL-terminated */
    const char *const *envp;        /* NULL-terminated, or NULL: the host's */
    int stdout_fd;                  /* -1: the host's */
    int stderr_fd;                  /* -1: the host's */
} pyi_spawn_args_t;

typedef struct {
    const char *service;
} pyi_service_stats_args_t;

typedef struct {
    size_t capacity;                /* hops kept at most */
} pyi_trace_args_t;

typedef struct {
    pyi_broker_cmd_type_t type;     /* which member of args holds the arguments */
    union {
        pyi_bind_args_t bind;
        pyi_allow_key_args_t allow_key;
        pyi_set_args_t set;
        pyi_allow_args_t allow;
        pyi_spawn_args_t spawn;
        pyi_service_stats_args_t service_stats;
        pyi_trace_args_t trace;
    } args;
} pyi_broker_cmd_t;

typedef struct {
    int rc;                         /* -1: failed; else 0, or SPAWN's pid */
    union {
        pyi_broker_stats_t broker;  /* STATS */
        pyi_service_stats_t service;    /* SERVICE_STATS */
    } stats;
    pyi_trace_t *trace;             /* TRACE_STOP: the recording, now the caller's */
    /*  BIND, BIND_CURVE: the endpoint bound; ALLOW: the token; when rc is
        -1, why (the broker thread's pyi_last_error ()). */
    char text [PYI_ERROR_SIZE];
} pyi_broker_answer_t;

/*  Send one command, or one answer, on a pipe end (a libzmq PAIR
    handle), waiting for room. 0, or -1 with errno set by libzmq. */
int pyi_broker_cmd_send (void *pipe, const pyi_broker_cmd_t *cmd);
int pyi_broker_answer_send (void *pipe, const pyi_broker_answer_t *answer);

/*  Receive one command, or one answer, waiting for it. 0, or -1 when
    reading failed or the frame was not one whole command (answer). */
int pyi_broker_cmd_recv (void *pipe, pyi_broker_cmd_t *cmd);
int pyi_broker_answer_recv (void *pipe, pyi_broker_answer_t *answer);

#endif
