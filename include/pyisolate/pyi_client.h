/*  pyi_client: calls named services through the broker.

    A client is one DEALER socket connected to a broker endpoint. It sends
    REQUESTs, each with a caller-chosen 64-bit id, and receives REPLY or
    ERROR for them in whatever order they complete: any number of requests
    may be in flight at once. A client is not thread-safe: use it from one
    thread at a time.

    For event loops: pyi_client_fd () is libzmq's ZMQ_FD (edge-triggered);
    when it becomes readable, and after every send, call
    pyi_client_recv (self, 0) until it returns NULL.
*/
#ifndef PYI_CLIENT_H_INCLUDED
#define PYI_CLIENT_H_INCLUDED

#include "pyi_library.h"
#include "pyi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _pyi_client_t pyi_client_t;

/*  Connect to a broker endpoint (ipc://, tcp:// or the broker's inproc://).
    The connection is made in the background. NULL on a bad endpoint. */
PYI_EXPORT pyi_client_t *pyi_client_new (const char *endpoint);

/*  Connect to a CURVE endpoint of a broker (pyi_broker_bind_curve) whose
    public key is server_key, as the holder of public_key / secret_key (the
    broker must allow public_key). Keys are 40 characters of Z85. NULL on
    a bad endpoint or key. A peer that is not allowed is never answered. */
PYI_EXPORT pyi_client_t *pyi_client_new_curve (const char *endpoint, const char *server_key,
                                               const char *public_key,
                                               const char *secret_key);

/*  Close the connection; requests in flight are abandoned. Safe on NULL. */
PYI_EXPORT void pyi_client_destroy (pyi_client_t **self_p);

/*  Send a REQUEST to service. body (may be NULL) supplies the body frames
    and is taken over. timeout_ms 0 means no deadline; past it, the broker
    answers ERROR TIMEOUT and cancels the request at the worker.
    0, or -1 (errno EAGAIN when the send queue is full). */
PYI_EXPORT int pyi_client_request (pyi_client_t *self, const char *service,
                        uint64_t id, uint32_t timeout_ms, pyi_msg_t **body_p);

/*  Give up on a request: the broker forgets it and sends the worker
    CANCEL. Any answer that still arrives for it must be ignored. */
PYI_EXPORT int pyi_client_cancel (pyi_client_t *self, uint64_t id);

/*  Next REPLY, ERROR or DISCONNECT for this client. timeout_ms: 0 = don't
    wait, -1 = wait forever. NULL when none came in time. The caller owns
    (and destroys) the message. */
PYI_EXPORT pyi_msg_t *pyi_client_recv (pyi_client_t *self, int timeout_ms);

/*  libzmq's ZMQ_FD for this client's socket. */
PYI_EXPORT int pyi_client_fd (pyi_client_t *self);

#ifdef __cplusplus
}
#endif

#endif
