/*  test_worker: the worker end of a connection (pyi_worker), against a
    fake broker (a raw libzmq ROUTER, testpeer.h) and a silent one.

    Guarantees checked:
    - a worker sees a silent broker: pyi_worker_heartbeat () returns -1
      after heartbeat x liveness (100 ms x 10; not before, and within
      AT_ONCE_MS after: 10 s, room for a stalled test thread), and it did
      beat meanwhile;
    - before it offers anything a worker keeps nothing alive: it sends
      nothing and pyi_worker_heartbeat () returns its interval;
    - pyi_worker_offer sends READY with the token and the service name,
      and refuses an empty or too long name without sending anything;
    - a READY acknowledgement with a shorter heartbeat interval than the
      worker's makes it beat at least that often;
    - pyi_worker_recv hands out REQUEST (with its frames), CANCEL, READY
      and DISCONNECT, and consumes HEARTBEATs and malformed messages;
    - pyi_worker_reply and pyi_worker_error answer with the request's id
      and take the body (the caller's pointer is nulled); an ERROR code
      below PYI_ERR_APPLICATION goes out as PYI_ERR_APPLICATION, one above
      it as it is;
    - pyi_worker_destroy sends DISCONNECT, and is safe on NULL;
    - pyi_worker_new refuses a NULL or too long token and an endpoint it
      cannot connect to, saying why.
*/
#include "testpeer.h"

#define WAIT_MS 5000
#define AT_ONCE_MS 10000            /* an upper bound no stalled machine reaches */
#define QUIET_MS 100                /* long enough to see that nothing comes */

static pyi_msg_t *
s_expect (const char *file, int line, pyi_msg_t *msg, int command)
{
    if (!msg)
        s_fail (file, line, "expected %s, got nothing", pyi_command_name (command));
    if ((int) pyi_msg_command (msg) != command)
        s_fail (file, line, "expected %s, got %s (code %d %s, text \"%s\")",
                pyi_command_name (command), pyi_command_name (pyi_msg_command (msg)),
                pyi_msg_code (msg), pyi_error_name (pyi_msg_code (msg)), pyi_msg_text (msg));
    return msg;
}
#define WORKER_GET(worker, command) \
    s_expect (__FILE__, __LINE__, pyi_worker_recv ((worker), WAIT_MS), (command))
#define FAKE_GET(fake, command) \
    s_expect (__FILE__, __LINE__, t_fake_recv ((fake), WAIT_MS, false), (command))

static void
test_silent_broker (void)
{
    TEST_BEGIN ("a worker notices a silent broker");
    /*  A fake broker: a raw ROUTER that acknowledges READY, then says
        nothing more. */
    void *ctx = zmq_ctx_new ();
    void *router = zmq_socket (ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt (router, ZMQ_LINGER, &linger, sizeof linger);
    CHECK_INT (zmq_bind (router, "tcp://127.0.0.1:*"), 0);
    char endpoint [256];
    size_t size = sizeof endpoint;
    CHECK_INT (zmq_getsockopt (router, ZMQ_LAST_ENDPOINT, endpoint, &size), 0);

    pyi_worker_t *worker = pyi_worker_new (endpoint, "token", 100, 10);
    CHECK (worker);
    CHECK_INT (pyi_worker_offer (worker, "svc"), 0);
    pyi_msg_t *msg = pyi_msg_recv (router, true, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_command (msg), PYI_READY);
    size_t rid_size;
    const void *rid = pyi_msg_routing_id (msg, &rid_size);
    uint8_t routing_id [256];
    memcpy (routing_id, rid, rid_size);
    pyi_msg_destroy (&msg);
    pyi_msg_t *ack = pyi_msg_new (PYI_READY);
    pyi_msg_add_service (ack, "svc");
    pyi_msg_set_timeout (ack, 100);
    CHECK_INT (pyi_msg_send (&ack, router, routing_id, rid_size, 0), 0);
    msg = WORKER_GET (worker, PYI_READY);
    pyi_msg_destroy (&msg);
    int64_t start = t_now_ms ();
    int rc = 0;
    while ((rc = pyi_worker_heartbeat (worker)) != -1 && t_now_ms () - start < AT_ONCE_MS * 2) {
        CHECK (rc >= 0 && rc <= 100);
        msg = pyi_worker_recv (worker, 10);
        CHECK (msg == NULL);
    }
    int64_t took = t_now_ms () - start;
    CHECK_INT (rc, -1);
    CHECK_MSG (took >= 1000 - 100 && took < 1000 + AT_ONCE_MS, "broker given up after %lld ms",
               (long long) took);
    /*  The worker did beat meanwhile. */
    int beats = 0;
    while ((msg = pyi_msg_recv (router, true, 0, ZMQ_DONTWAIT))) {
        if (pyi_msg_command (msg) == PYI_HEARTBEAT)
            beats++;
        pyi_msg_destroy (&msg);
    }
    CHECK_MSG (beats >= 1, "%d heartbeats", beats);
    pyi_worker_destroy (&worker);
    zmq_close (router);
    zmq_ctx_term (ctx);
}

static void
test_conversation (void)
{
    TEST_BEGIN ("READY, REQUEST, CANCEL, REPLY, ERROR and DISCONNECT with a fake broker");
    t_fake_t fake;
    t_fake_start (&fake);
    pyi_worker_t *worker = pyi_worker_new (fake.endpoint, "tok", 1000, 5);
    CHECK_MSG (worker, "%s", pyi_last_error ());

    /*  Nothing offered: nothing sent, nothing to keep alive. */
    CHECK_INT (pyi_worker_heartbeat (worker), 1000);
    char long_name [PYI_MAX_NAME + 2];
    memset (long_name, 'n', sizeof long_name - 1);
    long_name [sizeof long_name - 1] = 0;
    CHECK_INT (pyi_worker_offer (worker, ""), -1);
    CHECK_INT (pyi_worker_offer (worker, long_name), -1);
    CHECK (t_fake_recv (&fake, QUIET_MS, true) == NULL);

    /*  READY with the token; the acknowledgement lowers the interval. */
    CHECK_INT (pyi_worker_offer (worker, "svc"), 0);
    pyi_msg_t *msg = FAKE_GET (&fake, PYI_READY);
    CHECK_STR (pyi_msg_token (msg), "tok");
    CHECK_INT (pyi_msg_services (msg), 1);
    CHECK_STR (pyi_msg_service_at (msg, 0), "svc");
    pyi_msg_destroy (&msg);
    pyi_msg_t *ack = pyi_msg_new (PYI_READY);
    pyi_msg_add_service (ack, "svc");
    pyi_msg_set_timeout (ack, 50);
    t_fake_send (&fake, &ack);
    msg = WORKER_GET (worker, PYI_READY);
    CHECK_STR (pyi_msg_service_at (msg, 0), "svc");
    pyi_msg_destroy (&msg);
    int next = pyi_worker_heartbeat (worker);
    CHECK_MSG (next >= 0 && next <= 50, "next heartbeat in %d ms", next);

    /*  HEARTBEAT and a malformed frame are consumed; REQUEST comes out. */
    t_fake_send_command (&fake, PYI_HEARTBEAT, 0);
    t_fake_send_raw (&fake, "x", 1);
    CHECK (pyi_worker_recv (worker, QUIET_MS) == NULL);
    pyi_msg_t *request = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (request, 7);
    pyi_msg_set_service (request, "svc");
    pyi_msg_set_timeout (request, 900);
    CHECK_INT (pyi_msg_append (request, "args", 4), 0);
    t_fake_send (&fake, &request);
    msg = WORKER_GET (worker, PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (msg), 7);
    CHECK_STR (pyi_msg_service (msg), "svc");
    CHECK_U64 (pyi_msg_timeout (msg), 900);
    CHECK (t_frame_is (msg, 0, "args"));
    pyi_msg_destroy (&msg);
    t_fake_send_command (&fake, PYI_CANCEL, 7);
    msg = WORKER_GET (worker, PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), 7);
    pyi_msg_destroy (&msg);

    /*  Answers carry the id and take the body. */
    pyi_msg_t *body = t_body_str ("answer");
    CHECK_INT (pyi_worker_reply (worker, 7, &body), 0);
    CHECK (body == NULL);
    msg = FAKE_GET (&fake, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 7);
    CHECK (t_frame_is (msg, 0, "answer"));
    pyi_msg_destroy (&msg);
    CHECK_INT (pyi_worker_error (worker, 8, PYI_ERR_TIMEOUT, "bad", NULL), 0);
    msg = FAKE_GET (&fake, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 8);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_APPLICATION);
    CHECK_STR (pyi_msg_text (msg), "bad");
    pyi_msg_destroy (&msg);
    body = t_body_str ("details");
    CHECK_INT (pyi_worker_error (worker, 9, PYI_ERR_APPLICATION + 50, "worse", &body), 0);
    CHECK (body == NULL);
    msg = FAKE_GET (&fake, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 9);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_APPLICATION + 50);
    CHECK (t_frame_is (msg, 0, "details"));
    pyi_msg_destroy (&msg);

    /*  The broker's DISCONNECT reaches the worker; the worker's, the broker. */
    t_fake_send_command (&fake, PYI_DISCONNECT, 0);
    msg = WORKER_GET (worker, PYI_DISCONNECT);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&worker);
    CHECK (worker == NULL);
    msg = FAKE_GET (&fake, PYI_DISCONNECT);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&worker);
    pyi_worker_destroy (NULL);
    t_fake_stop (&fake);
}

static void
test_new_refuses (void)
{
    TEST_BEGIN ("pyi_worker_new refuses bad tokens and endpoints");
    char long_token [PYI_MAX_NAME + 2];
    memset (long_token, 't', sizeof long_token - 1);
    long_token [sizeof long_token - 1] = 0;
    CHECK (pyi_worker_new ("inproc://nowhere", NULL, 0, 0) == NULL);
    CHECK_STR (pyi_last_error (), "invalid token");
    CHECK (pyi_worker_new ("inproc://nowhere", long_token, 0, 0) == NULL);
    CHECK_STR (pyi_last_error (), "invalid token");
    CHECK (pyi_worker_new (NULL, "token", 0, 0) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "cannot connect"), "%s", pyi_last_error ());
    CHECK (pyi_worker_new ("bogus://x", "token", 0, 0) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "bogus://x"), "%s", pyi_last_error ());
}

int
main (void)
{
    test_silent_broker ();
    test_conversation ();
    test_new_refuses ();
    fprintf (stderr, "test_worker: OK\n");
    return 0;
}
