/*  testpeer.h: a fake broker for the tests of the peer ends (test_client.c,
    test_worker.c): a raw libzmq ROUTER on its own context, bound to a tcp
    port of 127.0.0.1, with no pyisolate broker behind it, so that a test
    sees exactly what a client or worker sends and sends it anything.
*/
#ifndef PYI_TESTPEER_H_INCLUDED
#define PYI_TESTPEER_H_INCLUDED

#include "testutil.h"
#include <zmq.h>

typedef struct {
    void *ctx;                      /* the fake's own libzmq context */
    void *router;                   /* ROUTER, bound */
    char endpoint [256];            /* tcp://127.0.0.1:<port> */
    uint8_t peer [PYI_MAX_NAME];    /* routing id of the last peer heard */
    size_t peer_size;
} t_fake_t;

static inline void
t_fake_start (t_fake_t *fake)
{
    memset (fake, 0, sizeof (*fake));
    fake->ctx = zmq_ctx_new ();
    CHECK (fake->ctx);
    fake->router = zmq_socket (fake->ctx, ZMQ_ROUTER);
    CHECK (fake->router);
    int linger = 0;
    zmq_setsockopt (fake->router, ZMQ_LINGER, &linger, sizeof linger);
    CHECK_INT (zmq_bind (fake->router, "tcp://127.0.0.1:*"), 0);
    size_t size = sizeof fake->endpoint;
    CHECK_INT (zmq_getsockopt (fake->router, ZMQ_LAST_ENDPOINT, fake->endpoint, &size), 0);
}

static inline void
t_fake_stop (t_fake_t *fake)
{
    zmq_close (fake->router);
    zmq_ctx_term (fake->ctx);
}

/*  The next message a peer sent, within ms (NULL when none came); HEARTBEATs
    are skipped unless heartbeats is set. Remembers the peer's routing id. */
static inline pyi_msg_t *
t_fake_recv (t_fake_t *fake, int ms, bool heartbeats)
{
    int64_t end = t_now_ms () + ms;
    while (true) {
        int64_t left = end - t_now_ms ();
        zmq_pollitem_t item = { fake->router, 0, ZMQ_POLLIN, 0 };
        if (left < 0 || zmq_poll (&item, 1, left) <= 0)
            return NULL;
        pyi_msg_t *msg = pyi_msg_recv (fake->router, true, 0, ZMQ_DONTWAIT);
        if (!msg)
            continue;
        const void *rid = pyi_msg_routing_id (msg, &fake->peer_size);
        memcpy (fake->peer, rid, fake->peer_size);
        if (heartbeats || pyi_msg_command (msg) != PYI_HEARTBEAT)
            return msg;
        pyi_msg_destroy (&msg);
    }
}

/*  Send msg (taken) to the last peer heard. */
static inline void
t_fake_send (t_fake_t *fake, pyi_msg_t **msg_p)
{
    CHECK_INT (pyi_msg_send (msg_p, fake->router, fake->peer, fake->peer_size, 0), 0);
}

/*  Send a body-less message of command with id to the last peer heard. */
static inline void
t_fake_send_command (t_fake_t *fake, pyi_command_t command, uint64_t id)
{
    pyi_msg_t *msg = pyi_msg_new (command);
    CHECK (msg);
    pyi_msg_set_id (msg, id);
    t_fake_send (fake, &msg);
}

/*  Send one frame of raw bytes (not a valid header) to the last peer heard. */
static inline void
t_fake_send_raw (t_fake_t *fake, const void *data, size_t size)
{
    CHECK_INT (zmq_send (fake->router, fake->peer, fake->peer_size, ZMQ_SNDMORE),
               (int) fake->peer_size);
    CHECK_INT (zmq_send (fake->router, data, size, 0), (int) size);
}

#endif
