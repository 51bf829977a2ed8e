/*  pyi_worker: a DEALER that serves named services through the broker. */
#include "pyisolate/pyi_worker.h"
#include "pyi_dealer.h"
#include "pyi_library_internal.h"
#include <czmq.h>

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_LIVENESS 5
#define LINGER_MS 200               /* time for a last DISCONNECT to leave */

struct _pyi_worker_t {
    zsock_t *sock;                  /* DEALER to the broker */
    void *handle;                   /* its libzmq handle */
    char token [PYI_MAX_NAME + 1];
    int64_t heartbeat_ms;           /* ours, lowered to the broker's */
    int64_t liveness;
    int64_t next_heartbeat;         /* when to send the next one (mono ms) */
    int64_t broker_expiry;          /* broker lost when silent past this; 0 = not yet */
};

pyi_worker_t *
pyi_worker_new (const char *endpoint, const char *token, int heartbeat_ms, int liveness)
{
    return pyi_worker_new_curve (endpoint, token, heartbeat_ms, liveness, NULL, NULL, NULL);
}

pyi_worker_t *
pyi_worker_new_curve (const char *endpoint, const char *token, int heartbeat_ms, int liveness,
                      const char *server_key, const char *public_key, const char *secret_key)
{
    if (!token || strlen (token) > PYI_MAX_NAME) {
        pyi_set_error ("invalid token");
        return NULL;
    }
    pyi_worker_t *self = (pyi_worker_t *) calloc (1, sizeof (pyi_worker_t));
    if (!self)
        return NULL;
    self->sock = pyi_dealer_new (endpoint, LINGER_MS, server_key, public_key, secret_key);
    if (!self->sock) {
        free (self);
        return NULL;
    }
    self->handle = zsock_resolve (self->sock);
    snprintf (self->token, sizeof (self->token), "%s", token);
    self->heartbeat_ms = heartbeat_ms > 0 ? heartbeat_ms : DEFAULT_HEARTBEAT_MS;
    self->liveness = liveness > 0 ? liveness : DEFAULT_LIVENESS;
    return self;
}

static int
s_send (pyi_worker_t *self, pyi_msg_t **msg_p)
{
    return pyi_msg_send (msg_p, self->handle, NULL, 0, ZMQ_DONTWAIT);
}

static void
s_send_command (pyi_worker_t *self, pyi_command_t command)
{
    pyi_msg_t *msg = pyi_msg_new (command);
    if (msg)
        s_send (self, &msg);
}

void
pyi_worker_destroy (pyi_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_worker_t *self = *self_p;
    s_send_command (self, PYI_DISCONNECT);
    zsock_destroy (&self->sock);
    free (self);
    *self_p = NULL;
}

int
pyi_worker_offer (pyi_worker_t *self, const char *service)
{
    pyi_msg_t *msg = pyi_msg_new (PYI_READY);
    if (!msg)
        return -1;
    pyi_msg_set_token (msg, self->token);
    if (pyi_msg_add_service (msg, service)) {
        pyi_set_error ("invalid service name");
        pyi_msg_destroy (&msg);
        return -1;
    }
    if (!self->broker_expiry) {
        int64_t now = zclock_mono ();
        self->broker_expiry = now + self->heartbeat_ms * self->liveness;
        self->next_heartbeat = now + self->heartbeat_ms;
    }
    return s_send (self, &msg);
}

int
pyi_worker_heartbeat (pyi_worker_t *self)
{
    int64_t now = zclock_mono ();
    if (!self->broker_expiry)
        return (int) self->heartbeat_ms;    /* nothing offered yet: nothing to keep alive */
    if (now > self->broker_expiry)
        return -1;
    if (now >= self->next_heartbeat) {
        s_send_command (self, PYI_HEARTBEAT);
        self->next_heartbeat = now + self->heartbeat_ms;
    }
    return (int) (self->next_heartbeat - now);
}

pyi_msg_t *
pyi_worker_recv (pyi_worker_t *self, int timeout_ms)
{
    int64_t deadline = timeout_ms > 0 ? zclock_mono () + timeout_ms : 0;
    while (true) {
        /*  Wake for the next heartbeat, or the caller's deadline if sooner. */
        int next = pyi_worker_heartbeat (self);
        int wait = next < 0 ? (int) self->heartbeat_ms : next;
        if (timeout_ms == 0)
            wait = 0;
        else
        if (timeout_ms > 0) {
            int64_t left = deadline - zclock_mono ();
            if (left < wait)
                wait = left > 0 ? (int) left : 0;
        }
        zsock_set_rcvtimeo (self->sock, wait);
        pyi_msg_t *msg = pyi_msg_recv (self->handle, false, 0, wait == 0 ? ZMQ_DONTWAIT : 0);
        if (!msg) {
            if (timeout_ms == 0 || (timeout_ms > 0 && zclock_mono () >= deadline))
                return NULL;
            continue;
        }
        int64_t now = zclock_mono ();
        self->broker_expiry = now + self->heartbeat_ms * self->liveness;
        pyi_command_t command = pyi_msg_command (msg);
        if (command == PYI_READY && pyi_msg_timeout (msg)
        &&  pyi_msg_timeout (msg) < self->heartbeat_ms) {
            /*  Beat at least as often as the broker expects. */
            self->heartbeat_ms = pyi_msg_timeout (msg);
            if (self->next_heartbeat > now + self->heartbeat_ms)
                self->next_heartbeat = now + self->heartbeat_ms;
        }
        if (pyi_msg_status (msg) == PYI_OK && command != PYI_HEARTBEAT)
            return msg;
        pyi_msg_destroy (&msg);
    }
}

int
pyi_worker_reply (pyi_worker_t *self, uint64_t id, pyi_msg_t **body_p)
{
    pyi_msg_t *msg = body_p && *body_p ? *body_p : pyi_msg_new (PYI_REPLY);
    if (body_p)
        *body_p = NULL;
    if (!msg)
        return -1;
    pyi_msg_set_command (msg, PYI_REPLY);
    pyi_msg_set_id (msg, id);
    return s_send (self, &msg);
}

int
pyi_worker_error (pyi_worker_t *self, uint64_t id, int code, const char *text,
                  pyi_msg_t **body_p)
{
    pyi_msg_t *msg = body_p && *body_p ? *body_p : pyi_msg_new (PYI_ERROR);
    if (body_p)
        *body_p = NULL;
    if (!msg)
        return -1;
    pyi_msg_set_command (msg, PYI_ERROR);
    pyi_msg_set_id (msg, id);
    pyi_msg_set_code (msg, code < PYI_ERR_APPLICATION ? PYI_ERR_APPLICATION : code);
    pyi_msg_set_text (msg, text);
    return s_send (self, &msg);
}

int
pyi_worker_fd (pyi_worker_t *self)
{
    return zsock_fd (self->sock);
}

int
pyi_worker_bind_to_parent (void)
{
    const char *parent = getenv ("PYI_PARENT_PID");
    if (!parent || !*parent)
        return -1;
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    /*  The parent may have died before the line above. */
    if (getppid () != (pid_t) strtol (parent, NULL, 10))
        _exit (1);
    return 0;
}
