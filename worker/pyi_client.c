/*  pyi_client: a DEALER that calls named services through the broker. */
#include "pyisolate/pyi_client.h"
#include "pyi_dealer.h"
#include "pyi_library_internal.h"
#include <czmq.h>

struct _pyi_client_t {
    zsock_t *sock;                  /* DEALER to the broker */
    void *handle;                   /* its libzmq handle */
};

static pyi_client_t *
s_new (zsock_t *sock)
{
    if (!sock)
        return NULL;
    pyi_client_t *self = (pyi_client_t *) calloc (1, sizeof (pyi_client_t));
    if (!self) {
        zsock_destroy (&sock);
        return NULL;
    }
    self->sock = sock;
    self->handle = zsock_resolve (self->sock);
    return self;
}

pyi_client_t *
pyi_client_new (const char *endpoint)
{
    return s_new (pyi_dealer_new (endpoint, -1, NULL, NULL, NULL));
}

pyi_client_t *
pyi_client_new_curve (const char *endpoint, const char *server_key, const char *public_key,
                      const char *secret_key)
{
    if (!server_key || !public_key || !secret_key) {
        pyi_set_error ("a CURVE client needs the server, public and secret keys");
        return NULL;
    }
    return s_new (pyi_dealer_new (endpoint, -1, server_key, public_key, secret_key));
}

void
pyi_client_destroy (pyi_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zsock_destroy (&(*self_p)->sock);
    free (*self_p);
    *self_p = NULL;
}

int
pyi_client_request (pyi_client_t *self, const char *service, uint64_t id,
                    uint32_t timeout_ms, pyi_msg_t **body_p)
{
    pyi_msg_t *msg = body_p && *body_p ? *body_p : pyi_msg_new (PYI_REQUEST);
    if (body_p)
        *body_p = NULL;
    if (!msg)
        return -1;
    pyi_msg_set_command (msg, PYI_REQUEST);
    pyi_msg_set_id (msg, id);
    pyi_msg_set_service (msg, service);
    pyi_msg_set_timeout (msg, timeout_ms);
    return pyi_msg_send (&msg, self->handle, NULL, 0, ZMQ_DONTWAIT);
}

int
pyi_client_cancel (pyi_client_t *self, uint64_t id)
{
    pyi_msg_t *msg = pyi_msg_new (PYI_CANCEL);
    if (!msg)
        return -1;
    pyi_msg_set_id (msg, id);
    return pyi_msg_send (&msg, self->handle, NULL, 0, ZMQ_DONTWAIT);
}

pyi_msg_t *
pyi_client_recv (pyi_client_t *self, int timeout_ms)
{
    int64_t deadline = timeout_ms > 0 ? zclock_mono () + timeout_ms : 0;
    while (true) {
        int wait = timeout_ms;
        if (timeout_ms > 0) {
            int64_t left = deadline - zclock_mono ();
            wait = left > 0 ? (int) left : 0;
        }
        /*  A blocking receive with a timeout costs fewer system calls than
            poll then receive. */
        zsock_set_rcvtimeo (self->sock, wait);
        pyi_msg_t *msg = pyi_msg_recv (self->handle, false, 0, wait == 0 ? ZMQ_DONTWAIT : 0);
        if (!msg)
            return NULL;
        pyi_command_t command = pyi_msg_command (msg);
        if (pyi_msg_status (msg) == PYI_OK
        &&  (command == PYI_REPLY || command == PYI_ERROR || command == PYI_DISCONNECT))
            return msg;
        pyi_msg_destroy (&msg);     /* not for a client: ignore */
    }
}

int
pyi_client_fd (pyi_client_t *self)
{
    return zsock_fd (self->sock);
}
