/*  pyi_broker: the ROUTER broker actor (docs/protocol.md): the public API
    on the host's side, and the broker thread with its event loop.

    The host thread owns the pyi_broker_t and talks to the broker thread
    over an inproc PAIR pipe, one typed command at a time (pyi_broker_cmd;
    not on the hot path). The broker thread owns the ROUTER socket, the
    event socket and every part below; nothing else touches them:
      pyi_router      what each message means: routing and dispatch
      pyi_grants      who may offer which service
      pyi_supervisor  the worker processes it spawned
      pyi_curve       CURVE endpoints and their ZAP handler
      pyi_events      events for the host
    What brokers of one process share is in pyi_registry.
*/
#include "pyisolate/pyi_broker.h"
#include "pyi_broker_cmd.h"
#include "pyi_curve.h"
#include "pyi_events.h"
#include "pyi_grants.h"
#include "pyi_registry.h"
#include "pyi_router.h"
#include "pyi_rundir.h"
#include "pyi_supervisor.h"
#include "pyi_library_internal.h"
#include <czmq.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_MSG_SIZE (512 * 1024 * 1024)
#define DEFAULT_GRACE_MS 2000
#define ROUTER_HWM 10000            /* messages queued per peer, each way */
#define ROUTER_LINGER_MS 100        /* let DISCONNECTs go out at the end, never long */
#define BATCH 256                   /* messages handled per poll wake-up */
#define UNWATCHED_MS 50             /* processes without a pidfd are reaped this often */
#define REAP_SLEEP_MS 5             /* between looks during the grace period */
#define POLL_FIXED 3                /* the pipe, the ROUTER socket, the ZAP handler */
#define PATH_TEXT 256               /* the runtime directory and the ipc:// endpoint */
#define INPROC_TEXT 64              /* an inproc:// endpoint */
#define SESSION_TEXT 64             /* "<pid>-<hex>" */
#define CURVE_TEXT (PYI_CURVE_KEY_TEXT + 1)

/*  What the host thread hands the broker thread at start-up. */
typedef struct {
    char endpoint [PATH_TEXT];      /* ipc:// to bind */
    char inproc [INPROC_TEXT];      /* inproc:// to bind */
    char events [INPROC_TEXT];      /* inproc:// of the events */
    char session [SESSION_TEXT];    /* the host's session id */
    char curve_secret [CURVE_TEXT]; /* the broker's CURVE secret key, Z85 */
    int status;                     /* 0 once the thread runs */
    char error [PYI_ERROR_SIZE];    /* why it does not */
} s_start_t;

/*  The broker thread's state. */
typedef struct {
    zsock_t *pipe;                  /* commands from the host */
    zsock_t *socket;                /* the ROUTER socket */
    void *handle;                   /* its libzmq handle */
    pyi_events_t *events;           /* events to the host */
    pyi_grants_t *grants;           /* who may offer which service */
    pyi_supervisor_t *supervisor;   /* spawned processes */
    pyi_curve_t *curve;             /* CURVE endpoints, ZAP handler */
    pyi_router_t *router;           /* routing and dispatch */
    pyi_tracer_t *tracer;           /* the hops while a trace is on (the router borrows it) */
    int64_t max_msg_size;           /* PYI_OPT_MAX_MSG_SIZE */
    int64_t grace_ms;               /* PYI_OPT_GRACE_MS */
    bool terminated;                /* PYI_BROKER_TERM came */
} s_broker_t;

struct _pyi_broker_t {
    zsock_t *pipe;                  /* our end of the command pipe */
    zsock_t *backend;               /* the thread's end, closed after join */
    pyi_events_t *events;           /* events from the broker thread */
    pthread_t thread;
    char rundir [PATH_TEXT];
    int lock_fd;                    /* holds the runtime directory's lock */
    char session [SESSION_TEXT];    /* the runtime directory's name */
    char endpoint [PATH_TEXT];      /* ipc:// */
    char curve_public [CURVE_TEXT]; /* the broker's CURVE public key, Z85 ("" without CURVE) */
    char inproc [INPROC_TEXT];
};

/*  The broker thread: commands ---------------------------------------- */

/*  Reap the processes that ended (wait: all of them, waiting for each)
    and tell the router. */
static void
s_reap (s_broker_t *self, bool wait)
{
    pyi_exit_t ended;
    while (pyi_supervisor_reap (self->supervisor, wait, &ended))
        pyi_router_exited (self->router, &ended);
}

static int
s_bind (s_broker_t *self, const char *endpoint, const char **bound)
{
    if (zsock_bind (self->socket, "%s", endpoint) == -1) {
        pyi_set_error ("cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
        return -1;
    }
    *bound = zsock_endpoint (self->socket);
    return 0;
}

static int
s_set (s_broker_t *self, int option, int64_t value)
{
    switch (option) {
        case PYI_OPT_MAX_MSG_SIZE: if (value <= 0) return -1;
                                   self->max_msg_size = value; return 0;
        case PYI_OPT_GRACE_MS: if (value < 0) return -1;
                               self->grace_ms = value; return 0;
        default: return pyi_router_set (self->router, option, value);
    }
}

static int
s_spawn (s_broker_t *self, const pyi_spawn_args_t *args)
{
    if (pyi_supervisor_size (self->supervisor) >= PYI_SUPERVISOR_MAX) {
        pyi_set_error ("too many worker processes");
        return -1;
    }
    pyi_grant_t *grant = pyi_grants_allow (self->grants, args->service, NULL);
    if (!grant) {
        pyi_set_error ("invalid service name");
        return -1;
    }
    pid_t pid = pyi_supervisor_spawn (self->supervisor, args->service, pyi_grant_token (grant),
                                      args->argv, args->envp, args->stdout_fd,
                                      args->stderr_fd);
    if (pid != -1)
        pyi_grants_set_pid (self->grants, grant, pid);
    return pid;
}

static void
s_handle_pipe (s_broker_t *self)
{
    pyi_broker_cmd_t cmd;
    void *pipe = zsock_resolve (self->pipe);
    if (pyi_broker_cmd_recv (pipe, &cmd))
        return;
    pyi_broker_answer_t answer;
    memset (&answer, 0, sizeof (answer));
    answer.rc = -1;
    const char *text = "";
    pyi_grant_t *grant;
    pyi_set_error ("%s", "");
    switch (cmd.type) {
        case PYI_BROKER_TERM:
            self->terminated = true;
            answer.rc = 0;
            break;
        case PYI_BROKER_BIND:
            answer.rc = s_bind (self, cmd.args.bind.endpoint, &text);
            break;
        case PYI_BROKER_BIND_CURVE:
            answer.rc = pyi_curve_bind (self->curve, self->socket, cmd.args.bind.endpoint,
                                        &text);
            break;
        case PYI_BROKER_ALLOW_KEY:
            answer.rc = pyi_curve_allow (self->curve, cmd.args.allow_key.public_key);
            break;
        case PYI_BROKER_SET:
            answer.rc = s_set (self, cmd.args.set.option, cmd.args.set.value);
            break;
        case PYI_BROKER_ALLOW:
            grant = pyi_grants_allow (self->grants, cmd.args.allow.service,
                                      cmd.args.allow.token);
            answer.rc = grant ? 0 : -1;
            text = grant ? pyi_grant_token (grant) : "";
            break;
        case PYI_BROKER_SPAWN:
            answer.rc = s_spawn (self, &cmd.args.spawn);
            break;
        case PYI_BROKER_STATS:
            pyi_router_stats (self->router, &answer.stats.broker);
            answer.stats.broker.processes = pyi_supervisor_size (self->supervisor);
            answer.rc = 0;
            break;
        case PYI_BROKER_SERVICE_STATS:
            answer.rc = pyi_router_service_stats (self->router, cmd.args.service_stats.service,
                                                  &answer.stats.service);
            break;
        case PYI_BROKER_TRACE_START:
            answer.rc = pyi_tracer_start (self->tracer, cmd.args.trace.capacity);
            if (answer.rc)
                pyi_set_error ("cannot record %zu hops", cmd.args.trace.capacity);
            break;
        case PYI_BROKER_TRACE_STOP:
            answer.trace = pyi_tracer_stop (self->tracer);
            answer.rc = 0;
            break;
    }
    snprintf (answer.text, sizeof (answer.text), "%s", *text ? text : pyi_last_error ());
    pyi_broker_answer_send (pipe, &answer);
}

/*  The broker thread: start, loop, stop ------------------------------- */

static int
s_setup (s_broker_t *self, s_start_t *start)
{
    self->max_msg_size = DEFAULT_MAX_MSG_SIZE;
    self->grace_ms = DEFAULT_GRACE_MS;
    self->grants = pyi_grants_new ();
    self->supervisor = pyi_supervisor_new (start->endpoint, start->session);
    self->curve = pyi_curve_new (start->curve_secret);
    if (!self->grants || !self->supervisor || !self->curve) {
        snprintf (start->error, sizeof (start->error), "out of memory");
        return -1;
    }
    self->socket = zsock_new (ZMQ_ROUTER);
    if (!self->socket) {
        snprintf (start->error, sizeof (start->error), "cannot create sockets");
        return -1;
    }
    self->handle = zsock_resolve (self->socket);
    zsock_set_router_mandatory (self->socket, 1);
    zsock_set_sndhwm (self->socket, ROUTER_HWM);
    zsock_set_rcvhwm (self->socket, ROUTER_HWM);
    zsock_set_linger (self->socket, ROUTER_LINGER_MS);
    const char *endpoints [] = { start->endpoint, start->inproc };
    for (size_t i = 0; i < sizeof (endpoints) / sizeof (endpoints [0]); i++)
        if (zsock_bind (self->socket, "%s", endpoints [i]) == -1) {
            snprintf (start->error, sizeof (start->error), "cannot bind %s: %s",
                      endpoints [i], zmq_strerror (zmq_errno ()));
            return -1;
        }
    if (!(self->events = pyi_events_bind (start->events))) {
        snprintf (start->error, sizeof (start->error), "%s", pyi_last_error ());
        return -1;
    }
    self->tracer = pyi_tracer_new ();
    if (self->tracer)
        self->router = pyi_router_new (self->handle, self->events, self->grants,
                                       self->supervisor, self->tracer);
    if (!self->router) {
        snprintf (start->error, sizeof (start->error), "out of memory");
        return -1;
    }
    return 0;
}

/*  Answer every caller, release every worker, give processes the grace
    period to exit, then kill and reap what is left. */
static void
s_shutdown (s_broker_t *self)
{
    pyi_router_stop (self->router);
    int64_t deadline = zclock_mono () + self->grace_ms;
    while (pyi_supervisor_size (self->supervisor) && zclock_mono () < deadline) {
        s_reap (self, false);
        if (pyi_supervisor_size (self->supervisor))
            zclock_sleep (REAP_SLEEP_MS);
    }
    pyi_supervisor_kill_all (self->supervisor);
    s_reap (self, true);
}

static void
s_teardown (s_broker_t *self)
{
    zsock_destroy (&self->socket);
    pyi_events_destroy (&self->events);
    pyi_curve_destroy (&self->curve);
    pyi_router_destroy (&self->router);
    pyi_tracer_destroy (&self->tracer);
    pyi_supervisor_destroy (&self->supervisor);
    pyi_grants_destroy (&self->grants);
    free (self);
}

/*  One pass: messages first (up to BATCH), then deadlines and heartbeats,
    then commands (PYI_BROKER_TERM sees the effects of what came before
    it), then ZAP requests. true when the ROUTER socket may hold more. */
static bool
s_work (s_broker_t *self, bool pipe_ready)
{
    bool busy = false;
    for (int i = 0; i < BATCH; i++) {
        pyi_msg_t *msg = pyi_msg_recv (self->handle, true, (size_t) self->max_msg_size,
                                       ZMQ_DONTWAIT);
        if (!msg)
            break;
        pyi_tracer_mark (self->tracer);
        pyi_router_handle (self->router, &msg);
        pyi_msg_destroy (&msg);
        busy = i == BATCH - 1;
    }
    int64_t now = zclock_mono ();
    pyi_router_expire (self->router, now);
    pyi_router_heartbeat (self->router, now);
    if (pipe_ready)
        while (!self->terminated && (zsock_events (self->pipe) & ZMQ_POLLIN))
            s_handle_pipe (self);
    if (!self->terminated)
        pyi_curve_handle (self->curve);
    return busy;
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
        if (self)
            s_teardown (self);
        zsock_signal (pipe, 0);
        return NULL;
    }
    self->pipe = pipe;
    zsock_signal (pipe, 0);

    /*  The loop polls libzmq's ZMQ_FD descriptors directly: they are
        edge-triggered, so each socket is drained until it has nothing
        before the thread sleeps. Cheaper than zmq_poll, which re-polls
        every socket's signaller around each sleep. */
    struct pollfd fds [POLL_FIXED + PYI_SUPERVISOR_MAX];
    int pipe_fd = zsock_fd (pipe);
    int socket_fd = zsock_fd (self->socket);
    /*  Each look at a ZeroMQ socket costs libzmq syscalls: the pipe is
        looked at when its descriptor fired (or a look found it busy), the
        processes are reaped when a pidfd fired. */
    bool pipe_ready = true;
    while (true) {
        bool busy = s_work (self, pipe_ready);
        if (self->terminated)
            break;
        int64_t now = zclock_mono ();
        nfds_t nfds = 0;
        fds [nfds++] = (struct pollfd) { pipe_fd, POLLIN, 0 };
        fds [nfds++] = (struct pollfd) { socket_fd, POLLIN, 0 };
        if (pyi_curve_fd (self->curve) != -1)
            fds [nfds++] = (struct pollfd) { pyi_curve_fd (self->curve), POLLIN, 0 };
        nfds_t first_pidfd = nfds;
        bool unwatched;
        nfds += pyi_supervisor_pollfds (self->supervisor, fds + nfds, &unwatched);
        int64_t wake = pyi_router_wake (self->router);
        if (unwatched && wake > now + UNWATCHED_MS)
            wake = now + UNWATCHED_MS;
        /*  Sends above may have consumed the router's edge: look again. */
        if (busy || (zsock_events (self->socket) & ZMQ_POLLIN))
            wake = now;
        int timeout = wake > now ? (int) (wake - now) : 0;
        int ready = poll (fds, nfds, timeout);
        pipe_ready = ready != 0 && (ready < 0 || fds [0].revents);
        bool exited = unwatched;
        for (nfds_t i = first_pidfd; ready > 0 && i < nfds; i++)
            exited |= fds [i].revents != 0;
        if (exited)
            s_reap (self, false);
    }
    s_shutdown (self);
    s_teardown (self);
    /*  The host joins this thread after the signal, then closes the pipe. */
    zsock_signal (pipe, 0);
    return NULL;
}

/*  The host's side ----------------------------------------------------- */

/*  Send the broker thread a command and wait for its answer. The answer's
    rc; when it is -1, the answer's text is this thread's last error. */
static int
s_command (pyi_broker_t *self, const pyi_broker_cmd_t *cmd, pyi_broker_answer_t *answer)
{
    void *pipe = zsock_resolve (self->pipe);
    if (pyi_broker_cmd_send (pipe, cmd) || pyi_broker_answer_recv (pipe, answer)) {
        pyi_set_error ("broker thread is not answering");
        return -1;
    }
    if (answer->rc == -1)
        pyi_set_error ("%s", *answer->text ? answer->text : "broker command failed");
    return answer->rc;
}

/*  A command whose answer is a string: the caller frees it; NULL when it
    failed. */
static char *
s_command_text (pyi_broker_t *self, const pyi_broker_cmd_t *cmd)
{
    pyi_broker_answer_t answer;
    return s_command (self, cmd, &answer) == -1 ? NULL : strdup (answer.text);
}

/*  NULL strings cross as "", as they always did. */
static const char *
s_text (const char *text)
{
    return text ? text : "";
}

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
    /*  The session is the runtime directory's name: "<pid>-<random>". */
    snprintf (self->session, sizeof (self->session), "%s", strrchr (self->rundir, '/') + 1);
    s_start_t start;
    memset (&start, 0, sizeof (start));
    snprintf (self->endpoint, sizeof (self->endpoint), "ipc://%s/broker", self->rundir);
    unsigned long number = pyi_registry_number ();
    snprintf (self->inproc, sizeof (self->inproc), "inproc://pyi-broker-%lu", number);
    snprintf (start.endpoint, sizeof (start.endpoint), "%s", self->endpoint);
    snprintf (start.inproc, sizeof (start.inproc), "%s", self->inproc);
    snprintf (start.events, sizeof (start.events), "inproc://pyi-events-%lu", number);
    snprintf (start.session, sizeof (start.session), "%s", self->session);
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
        pyi_registry_join (self->session);
        if ((self->events = pyi_events_connect (start.events)))
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
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_TERM };
    pyi_broker_answer_t answer;
    s_command (self, &cmd, &answer);
    zsock_wait (self->pipe);
    pthread_join (self->thread, NULL);
    pyi_events_destroy (&self->events);
    zsock_destroy (&self->backend);
    zsock_destroy (&self->pipe);
    pyi_registry_leave (self->session);
    pyi_rundir_remove (self->rundir, &self->lock_fd);
    free (self);
}

const char *pyi_broker_endpoint (pyi_broker_t *self) { return self->endpoint; }
const char *pyi_broker_inproc (pyi_broker_t *self) { return self->inproc; }
const char *pyi_broker_rundir (pyi_broker_t *self) { return self->rundir; }
const char *pyi_broker_session (pyi_broker_t *self) { return self->session; }
const char *pyi_broker_curve_key (pyi_broker_t *self) { return self->curve_public; }

char *
pyi_broker_bind (pyi_broker_t *self, const char *endpoint)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_BIND };
    cmd.args.bind.endpoint = s_text (endpoint);
    return s_command_text (self, &cmd);
}

char *
pyi_broker_bind_curve (pyi_broker_t *self, const char *endpoint)
{
    if (!*self->curve_public) {
        pyi_set_error ("this libzmq has no CURVE security");
        return NULL;
    }
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_BIND_CURVE };
    cmd.args.bind.endpoint = s_text (endpoint);
    return s_command_text (self, &cmd);
}

int
pyi_broker_allow_key (pyi_broker_t *self, const char *public_key)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_ALLOW_KEY };
    cmd.args.allow_key.public_key = s_text (public_key);
    pyi_broker_answer_t answer;
    return s_command (self, &cmd, &answer);
}

int
pyi_broker_set (pyi_broker_t *self, pyi_option_t option, int64_t value)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_SET };
    cmd.args.set.option = (int) option;
    cmd.args.set.value = value;
    pyi_broker_answer_t answer;
    int rc = s_command (self, &cmd, &answer);
    if (rc)
        pyi_set_error ("invalid option %d or value %lld", (int) option, (long long) value);
    return rc;
}

char *
pyi_broker_allow (pyi_broker_t *self, const char *service, const char *token)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_ALLOW };
    cmd.args.allow.service = s_text (service);
    cmd.args.allow.token = s_text (token);
    char *granted = s_command_text (self, &cmd);
    if (!granted)
        pyi_set_error ("invalid service name or unknown token");
    return granted;
}

int
pyi_broker_spawn (pyi_broker_t *self, const char *service, const char *const argv[],
                  const char *const envp[], int stdout_fd, int stderr_fd)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_SPAWN };
    cmd.args.spawn = (pyi_spawn_args_t) { s_text (service), argv, envp, stdout_fd, stderr_fd };
    pyi_broker_answer_t answer;
    return s_command (self, &cmd, &answer);
}

int
pyi_broker_service_stats (pyi_broker_t *self, const char *service, pyi_service_stats_t *stats)
{
    if (!service || !*service) {
        pyi_set_error ("no service name");
        return -1;
    }
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_SERVICE_STATS };
    cmd.args.service_stats.service = service;
    pyi_broker_answer_t answer;
    int rc = s_command (self, &cmd, &answer);
    if (rc)
        pyi_set_error ("unknown service '%s'", service);
    else
        *stats = answer.stats.service;
    return rc;
}

int
pyi_broker_stats (pyi_broker_t *self, pyi_broker_stats_t *stats)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_STATS };
    pyi_broker_answer_t answer;
    int rc = s_command (self, &cmd, &answer);
    if (rc == 0)
        *stats = answer.stats.broker;
    return rc;
}

int
pyi_broker_trace_start (pyi_broker_t *self, size_t capacity)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_TRACE_START };
    cmd.args.trace.capacity = capacity;
    pyi_broker_answer_t answer;
    return s_command (self, &cmd, &answer);
}

pyi_trace_t *
pyi_broker_trace_stop (pyi_broker_t *self)
{
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_TRACE_STOP };
    pyi_broker_answer_t answer;
    return s_command (self, &cmd, &answer) == 0 ? answer.trace : NULL;
}

int
pyi_broker_event_fd (pyi_broker_t *self)
{
    return pyi_events_fd (self->events);
}

int
pyi_broker_event (pyi_broker_t *self, pyi_event_t *event, int timeout_ms)
{
    return pyi_events_recv (self->events, event, timeout_ms);
}
