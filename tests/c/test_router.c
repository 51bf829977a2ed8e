/*  test_router: a C client and a C worker talk through the broker.

    Guarantees checked:
    - requests reach the worker offering the named service and answers
      come back to the caller that made them, over the ipc, inproc and
      tcp endpoints and across them (worker on one, client on another);
    - many requests in flight at once, answered in reverse order, are all
      matched to their ids (including ids 0 and 2^64-1), and two clients
      using the same ids each get their own answers;
    - body frames, empty ones included, arrive intact and in order in
      both directions; a 4 MiB body arrives intact; over inproc the broker
      forwards a zero-copy frame without copying it (the worker sees the
      caller's very buffer) and its free function runs once;
    - the worker sees the service name and the timeout of each request;
      an application ERROR reaches the caller with its code, text, service
      and body;
    - nested calls: a worker serving request A calls another service and
      its own service and answers A afterwards, and a chain of 20 nested
      calls into its own service unwinds, all without deadlock;
    - per-service statistics (requests, replies, errors, bytes in and out,
      in flight, ready, pid) and broker counters (workers, pending) are
      exact.
*/
#include "testutil.h"
#include <stdatomic.h>

#define WAIT_MS 5000

static pyi_worker_t *
s_worker (pyi_broker_t *broker, const char *endpoint, const char *service)
{
    char *token = pyi_broker_allow (broker, service, NULL);
    CHECK (token);
    pyi_worker_t *worker = pyi_worker_new (endpoint, token, 0, 0);
    free (token);
    CHECK (worker);
    CHECK_INT (pyi_worker_offer (worker, service), 0);
    pyi_msg_t *msg = pyi_worker_recv (worker, WAIT_MS);
    CHECK_CMD (msg, PYI_READY);
    CHECK_INT (pyi_msg_services (msg), 1);
    CHECK_STR (pyi_msg_service_at (msg, 0), service);
    pyi_msg_destroy (&msg);
    return worker;
}

static pyi_msg_t *
s_expect (const char *file, int line, pyi_msg_t *msg, int command)
{
    if (!msg)
        s_fail (file, line, "expected %s, got nothing", pyi_command_name (command));
    if ((int) pyi_msg_command (msg) != command)
        s_fail (file, line, "expected %s, got %s (code %d, text \"%s\")",
                pyi_command_name (command), pyi_command_name (pyi_msg_command (msg)),
                pyi_msg_code (msg), pyi_msg_text (msg));
    return msg;
}
#define WORKER_GET(worker, command) \
    s_expect (__FILE__, __LINE__, pyi_worker_recv ((worker), WAIT_MS), (command))
#define CLIENT_GET(client, command) \
    s_expect (__FILE__, __LINE__, pyi_client_recv ((client), WAIT_MS), (command))

/*  Echo one request with frames; the worker answers with the frames
    reversed so that order is checked both ways. */
static void
s_echo_once (pyi_client_t *client, pyi_worker_t *worker, const char *service)
{
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    pyi_msg_append (body, "one", 3);
    pyi_msg_append (body, "", 0);
    pyi_msg_append (body, "three", 5);
    CHECK_INT (pyi_client_request (client, service, 7, 0, &body), 0);
    CHECK (body == NULL);
    pyi_msg_t *msg = WORKER_GET (worker, PYI_REQUEST);
    CHECK_STR (pyi_msg_service (msg), service);
    CHECK_INT (pyi_msg_frames (msg), 3);
    CHECK (t_frame_is (msg, 0, "one"));
    CHECK (t_frame_is (msg, 1, ""));
    CHECK (t_frame_is (msg, 2, "three"));
    pyi_msg_t *reply = pyi_msg_new (PYI_REPLY);
    for (size_t i = 3; i-- > 0;)
        pyi_msg_append (reply, pyi_msg_frame_data (msg, i), pyi_msg_frame_size (msg, i));
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (msg), &reply), 0);
    CHECK (reply == NULL);
    pyi_msg_destroy (&msg);
    msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 7);
    CHECK_INT (pyi_msg_frames (msg), 3);
    CHECK (t_frame_is (msg, 0, "three"));
    CHECK (t_frame_is (msg, 1, ""));
    CHECK (t_frame_is (msg, 2, "one"));
    pyi_msg_destroy (&msg);
}

static void
test_endpoints (pyi_broker_t *broker, const char *tcp)
{
    TEST_BEGIN ("request and reply over ipc, inproc, tcp and across them");
    const char *endpoints [] = { pyi_broker_endpoint (broker), pyi_broker_inproc (broker), tcp };
    const char *names [] = { "ipc", "inproc", "tcp" };
    for (int w = 0; w < 3; w++) {
        char service [64];
        snprintf (service, sizeof service, "echo.%s", names [w]);
        pyi_worker_t *worker = s_worker (broker, endpoints [w], service);
        for (int c = 0; c < 3; c++) {
            pyi_client_t *client = pyi_client_new (endpoints [c]);
            CHECK (client);
            s_echo_once (client, worker, service);
            pyi_client_destroy (&client);
        }
        pyi_worker_destroy (&worker);
    }
}

static void
test_out_of_order (pyi_broker_t *broker)
{
    TEST_BEGIN ("1000 requests in flight answered in reverse order, two clients, same ids");
    enum { N = 500 };
    pyi_worker_t *worker = s_worker (broker, pyi_broker_endpoint (broker), "reverse");
    pyi_client_t *clients [2] = { pyi_client_new (pyi_broker_endpoint (broker)),
                                  pyi_client_new (pyi_broker_inproc (broker)) };
    CHECK (clients [0] && clients [1]);
    /*  Ids: 0, 2^64-1 and a spread in between; both clients use the same. */
    static uint64_t ids [N];
    for (int i = 0; i < N; i++)
        ids [i] = i == 0 ? 0 : i == 1 ? UINT64_MAX : (uint64_t) i * 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < 2; c++) {
            char text [64];
            snprintf (text, sizeof text, "client %d request %d", c, i);
            pyi_msg_t *body = t_body_str (text);
            CHECK_INT (pyi_client_request (clients [c], "reverse", ids [i], 0, &body), 0);
        }
    /*  The worker takes them all, then answers the last first. */
    static uint64_t worker_ids [2 * N];
    static char texts [2 * N][64];
    for (int i = 0; i < 2 * N; i++) {
        pyi_msg_t *msg = WORKER_GET (worker, PYI_REQUEST);
        worker_ids [i] = pyi_msg_id (msg);
        t_frame_str (msg, 0, texts [i], sizeof texts [i]);
        for (int j = 0; j < i; j++)
            CHECK_MSG (worker_ids [j] != worker_ids [i], "broker id %" PRIu64 " given twice",
                       worker_ids [i]);
        pyi_msg_destroy (&msg);
    }
    pyi_broker_stats_t stats;
    CHECK_INT (pyi_broker_stats (broker, &stats), 0);
    CHECK_U64 (stats.pending, 2 * N);
    for (int i = 2 * N - 1; i >= 0; i--) {
        char answer [80];
        snprintf (answer, sizeof answer, "answer to %s", texts [i]);
        pyi_msg_t *body = t_body_str (answer);
        CHECK_INT (pyi_worker_reply (worker, worker_ids [i], &body), 0);
    }
    for (int c = 0; c < 2; c++) {
        static bool seen [N];
        memset (seen, 0, sizeof seen);
        for (int k = 0; k < N; k++) {
            pyi_msg_t *msg = CLIENT_GET (clients [c], PYI_REPLY);
            int i;
            for (i = 0; i < N && ids [i] != pyi_msg_id (msg); i++)
                ;
            CHECK_MSG (i < N, "reply for an id never sent: %" PRIu64, pyi_msg_id (msg));
            CHECK_MSG (!seen [i], "two replies for id %" PRIu64, ids [i]);
            seen [i] = true;
            char want [96], got [96];
            snprintf (want, sizeof want, "answer to client %d request %d", c, i);
            CHECK_STR (t_frame_str (msg, 0, got, sizeof got), want);
            pyi_msg_destroy (&msg);
        }
        CHECK (pyi_client_recv (clients [c], 50) == NULL);
    }
    CHECK_INT (pyi_broker_stats (broker, &stats), 0);
    CHECK_U64 (stats.pending, 0);
    pyi_client_destroy (&clients [0]);
    pyi_client_destroy (&clients [1]);
    pyi_worker_destroy (&worker);
}

static atomic_int s_freed;
static void
s_free_fn (void *data, void *hint)
{
    free (data);
    atomic_fetch_add (&s_freed, 1);
}

static void
test_bodies (pyi_broker_t *broker)
{
    TEST_BEGIN ("body frames in order; 4 MiB intact; zero-copy through the broker");
    const char *endpoints [] = { pyi_broker_endpoint (broker), pyi_broker_inproc (broker) };
    for (int e = 0; e < 2; e++) {
        bool inproc = e == 1;
        /*  (A service name per round: the first worker's DISCONNECT and
            the second's READY travel on different connections.) */
        const char *service = inproc ? "bodies.inproc" : "bodies.ipc";
        pyi_worker_t *worker = s_worker (broker, endpoints [e], service);
        pyi_client_t *client = pyi_client_new (endpoints [e]);

        /*  64 frames of sizes 0..63 with distinct contents, both ways. */
        pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
        for (int i = 0; i < 64; i++) {
            uint8_t frame [64];
            memset (frame, i, sizeof frame);
            CHECK_INT (pyi_msg_append (body, frame, (size_t) i), 0);
        }
        CHECK_INT (pyi_client_request (client, service, 1, 0, &body), 0);
        pyi_msg_t *msg = WORKER_GET (worker, PYI_REQUEST);
        CHECK_INT (pyi_msg_frames (msg), 64);
        for (int i = 0; i < 64; i++) {
            CHECK_INT (pyi_msg_frame_size (msg, (size_t) i), i);
            for (int j = 0; j < i; j++)
                CHECK (((const uint8_t *) pyi_msg_frame_data (msg, (size_t) i)) [j] == i);
        }
        /*  The worker sends the same frames back (moved, not copied). */
        uint64_t id = pyi_msg_id (msg);
        CHECK_INT (pyi_worker_reply (worker, id, &msg), 0);
        msg = CLIENT_GET (client, PYI_REPLY);
        CHECK_U64 (pyi_msg_id (msg), 1);
        CHECK_INT (pyi_msg_frames (msg), 64);
        for (int i = 0; i < 64; i++)
            CHECK_INT (pyi_msg_frame_size (msg, (size_t) i), i);
        pyi_msg_destroy (&msg);

        /*  4 MiB, zero-copy from the client. */
        const size_t big = 4 * 1024 * 1024;
        uint8_t *data = (uint8_t *) malloc (big);
        for (size_t i = 0; i < big; i++)
            data [i] = (uint8_t) ((i >> 3) ^ (i * 13));
        atomic_store (&s_freed, 0);
        body = pyi_msg_new (PYI_REQUEST);
        pyi_msg_append (body, "head", 4);
        CHECK_INT (pyi_msg_append_zerocopy (body, data, big, s_free_fn, NULL), 0);
        pyi_msg_append (body, "tail", 4);
        CHECK_INT (pyi_client_request (client, service, 2, 0, &body), 0);
        msg = WORKER_GET (worker, PYI_REQUEST);
        CHECK_INT (pyi_msg_frames (msg), 3);
        CHECK (t_frame_is (msg, 0, "head"));
        CHECK (t_frame_is (msg, 2, "tail"));
        CHECK_INT (pyi_msg_frame_size (msg, 1), big);
        const uint8_t *got = (const uint8_t *) pyi_msg_frame_data (msg, 1);
        if (inproc)
            CHECK_MSG (got == data, "the 4 MiB frame was copied on its way through the broker");
        for (size_t i = 0; i < big; i++)
            if (got [i] != (uint8_t) ((i >> 3) ^ (i * 13)))
                CHECK_MSG (false, "byte %zu of the 4 MiB body differs", i);
        /*  Back to the client, also zero-copy from the worker. */
        id = pyi_msg_id (msg);
        CHECK_INT (pyi_worker_reply (worker, id, &msg), 0);
        msg = CLIENT_GET (client, PYI_REPLY);
        CHECK_U64 (pyi_msg_id (msg), 2);
        CHECK_INT (pyi_msg_frames (msg), 3);
        CHECK_INT (pyi_msg_frame_size (msg, 1), big);
        got = (const uint8_t *) pyi_msg_frame_data (msg, 1);
        if (inproc)
            CHECK (got == data);
        for (size_t i = 0; i < big; i++)
            if (got [i] != (uint8_t) ((i >> 3) ^ (i * 13)))
                CHECK_MSG (false, "byte %zu of the 4 MiB reply differs", i);
        pyi_msg_destroy (&msg);
        int64_t end = t_now_ms () + 2000;
        while (atomic_load (&s_freed) < 1 && t_now_ms () < end)
            t_sleep_ms (1);
        t_sleep_ms (20);
        CHECK_INT (atomic_load (&s_freed), 1);

        pyi_client_destroy (&client);
        pyi_worker_destroy (&worker);
    }
}

static void
test_fields_and_errors (pyi_broker_t *broker)
{
    TEST_BEGIN ("worker sees service and timeout; application ERROR reaches the caller");
    /*  One worker offering two services granted to one token. */
    char *token = pyi_broker_allow (broker, "fields.a", NULL);
    CHECK (token);
    char *same = pyi_broker_allow (broker, "fields.b", token);
    CHECK (same);
    CHECK_STR (same, token);
    free (same);
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_inproc (broker), token, 0, 0);
    free (token);
    CHECK_INT (pyi_worker_offer (worker, "fields.a"), 0);
    CHECK_INT (pyi_worker_offer (worker, "fields.b"), 0);
    for (int i = 0; i < 2; i++) {
        pyi_msg_t *ready = WORKER_GET (worker, PYI_READY);
        CHECK_STR (pyi_msg_service_at (ready, 0), i ? "fields.b" : "fields.a");
        pyi_msg_destroy (&ready);
    }
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    CHECK_INT (pyi_client_request (client, "fields.b", 10, 0, NULL), 0);
    pyi_msg_t *msg_b = WORKER_GET (worker, PYI_REQUEST);
    CHECK_STR (pyi_msg_service (msg_b), "fields.b");
    CHECK_U64 (pyi_msg_timeout (msg_b), 0);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (msg_b), NULL), 0);
    pyi_msg_destroy (&msg_b);
    msg_b = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg_b), 10);
    pyi_msg_destroy (&msg_b);
    CHECK_INT (pyi_client_request (client, "fields.a", 11, 60000, NULL), 0);
    pyi_msg_t *msg = WORKER_GET (worker, PYI_REQUEST);
    CHECK_STR (pyi_msg_service (msg), "fields.a");
    CHECK_U64 (pyi_msg_timeout (msg), 60000);
    CHECK_INT (pyi_msg_frames (msg), 0);
    uint64_t id = pyi_msg_id (msg);
    pyi_msg_destroy (&msg);

    pyi_msg_t *details = pyi_msg_new (PYI_ERROR);
    pyi_msg_append (details, "Traceback", 9);
    pyi_msg_append (details, "ValueError", 10);
    CHECK_INT (pyi_worker_error (worker, id, 142, "it went wrong", &details), 0);
    CHECK (details == NULL);
    msg = CLIENT_GET (client, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 11);
    CHECK_INT (pyi_msg_code (msg), 142);
    CHECK_STR (pyi_msg_text (msg), "it went wrong");
    CHECK_STR (pyi_msg_service (msg), "fields.a");
    CHECK_INT (pyi_msg_frames (msg), 2);
    CHECK (t_frame_is (msg, 0, "Traceback"));
    CHECK (t_frame_is (msg, 1, "ValueError"));
    pyi_msg_destroy (&msg);

    /*  A worker's code below APPLICATION never reaches the caller as a
        broker code. */
    CHECK_INT (pyi_client_request (client, "fields.a", 12, 0, NULL), 0);
    msg = WORKER_GET (worker, PYI_REQUEST);
    id = pyi_msg_id (msg);
    pyi_msg_destroy (&msg);
    CHECK_INT (pyi_worker_error (worker, id, PYI_ERR_WORKER_LOST, "lies", NULL), 0);
    msg = CLIENT_GET (client, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 12);
    CHECK (pyi_msg_code (msg) >= PYI_ERR_APPLICATION);
    pyi_msg_destroy (&msg);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
}

static void
test_nested (pyi_broker_t *broker)
{
    TEST_BEGIN ("nested calls: into another service and into its own, no deadlock");
    pyi_worker_t *outer = s_worker (broker, pyi_broker_endpoint (broker), "outer");
    pyi_worker_t *inner = s_worker (broker, pyi_broker_inproc (broker), "inner");
    pyi_client_t *client = pyi_client_new (pyi_broker_endpoint (broker));
    pyi_client_t *outer_client = pyi_client_new (pyi_broker_endpoint (broker));

    /*  A to outer. */
    CHECK_INT (pyi_client_request (client, "outer", 100, 0, NULL), 0);
    pyi_msg_t *a = WORKER_GET (outer, PYI_REQUEST);
    /*  While serving A, outer calls inner (B) and itself (C). */
    pyi_msg_t *body = t_body_str ("B");
    CHECK_INT (pyi_client_request (outer_client, "inner", 1, 0, &body), 0);
    body = t_body_str ("C");
    CHECK_INT (pyi_client_request (outer_client, "outer", 2, 0, &body), 0);
    pyi_msg_t *b = WORKER_GET (inner, PYI_REQUEST);
    CHECK (t_frame_is (b, 0, "B"));
    pyi_msg_t *c = WORKER_GET (outer, PYI_REQUEST);
    CHECK (t_frame_is (c, 0, "C"));
    CHECK (pyi_msg_id (c) != pyi_msg_id (a));
    CHECK_INT (pyi_worker_reply (outer, pyi_msg_id (c), &c), 0);
    CHECK_INT (pyi_worker_reply (inner, pyi_msg_id (b), &b), 0);
    bool got [3] = { false };
    for (int i = 0; i < 2; i++) {
        pyi_msg_t *msg = CLIENT_GET (outer_client, PYI_REPLY);
        uint64_t id = pyi_msg_id (msg);
        CHECK (id == 1 || id == 2);
        CHECK (!got [id]);
        got [id] = true;
        CHECK (t_frame_is (msg, 0, id == 1 ? "B" : "C"));
        pyi_msg_destroy (&msg);
    }
    /*  Then A is answered. */
    body = t_body_str ("A done");
    CHECK_INT (pyi_worker_reply (outer, pyi_msg_id (a), &body), 0);
    pyi_msg_destroy (&a);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 100);
    CHECK (t_frame_is (msg, 0, "A done"));
    pyi_msg_destroy (&msg);

    /*  A chain of 20 nested calls into its own service: each level is in
        flight at the worker while it makes the next call. */
    enum { DEPTH = 20 };
    uint64_t level_ids [DEPTH + 1];
    CHECK_INT (pyi_client_request (client, "outer", 1000, 0, NULL), 0);
    msg = WORKER_GET (outer, PYI_REQUEST);
    level_ids [0] = pyi_msg_id (msg);
    pyi_msg_destroy (&msg);
    for (int level = 1; level <= DEPTH; level++) {
        CHECK_INT (pyi_client_request (outer_client, "outer", (uint64_t) level, 0, NULL), 0);
        msg = WORKER_GET (outer, PYI_REQUEST);
        level_ids [level] = pyi_msg_id (msg);
        pyi_msg_destroy (&msg);
    }
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (broker, "outer", &stats), 0);
    CHECK_U64 (stats.in_flight, DEPTH + 1);
    for (int level = DEPTH; level >= 1; level--) {
        CHECK_INT (pyi_worker_reply (outer, level_ids [level], NULL), 0);
        msg = CLIENT_GET (outer_client, PYI_REPLY);
        CHECK_U64 (pyi_msg_id (msg), (uint64_t) level);
        pyi_msg_destroy (&msg);
    }
    CHECK_INT (pyi_worker_reply (outer, level_ids [0], NULL), 0);
    msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 1000);
    pyi_msg_destroy (&msg);

    pyi_client_destroy (&outer_client);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&inner);
    pyi_worker_destroy (&outer);
}

static void
test_stats (pyi_broker_t *broker)
{
    TEST_BEGIN ("per-service statistics are exact");
    CHECK_U64 (t_wait_workers (broker, 0, WAIT_MS), 0);
    pyi_broker_stats_t before;
    CHECK_INT (pyi_broker_stats (broker, &before), 0);
    CHECK_U64 (before.pending, 0);
    pyi_worker_t *worker = s_worker (broker, pyi_broker_inproc (broker), "counted");
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (broker, "counted", &stats), 0);
    CHECK_U64 (stats.requests, 0);
    CHECK_U64 (stats.replies, 0);
    CHECK_U64 (stats.errors, 0);
    CHECK_U64 (stats.bytes_in, 0);
    CHECK_U64 (stats.bytes_out, 0);
    CHECK_U64 (stats.in_flight, 0);
    CHECK (stats.ready);
    CHECK_INT (stats.pid, 0);       /* a worker in this process, not spawned */
    pyi_broker_stats_t bstats;
    CHECK_INT (pyi_broker_stats (broker, &bstats), 0);
    CHECK_U64 (bstats.workers, before.workers + 1);

    /*  5 requests of 10, 20, 30, 40, 50 body bytes (two frames each). */
    for (int i = 1; i <= 5; i++) {
        char frame [50];
        memset (frame, 'r', sizeof frame);
        pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
        pyi_msg_append (body, frame, (size_t) (i * 10 - 3));
        pyi_msg_append (body, frame, 3);
        CHECK_INT (pyi_client_request (client, "counted", (uint64_t) i, 0, &body), 0);
    }
    uint64_t ids [5];
    for (int i = 0; i < 5; i++) {
        pyi_msg_t *msg = WORKER_GET (worker, PYI_REQUEST);
        ids [i] = pyi_msg_id (msg);
        pyi_msg_destroy (&msg);
    }
    CHECK_INT (pyi_broker_service_stats (broker, "counted", &stats), 0);
    CHECK_U64 (stats.requests, 5);
    CHECK_U64 (stats.bytes_in, 150);
    CHECK_U64 (stats.in_flight, 5);
    CHECK_INT (pyi_broker_stats (broker, &bstats), 0);
    CHECK_U64 (bstats.pending, before.pending + 5);

    /*  3 replies of 1, 2 and 3 bytes; 1 error; 1 left in flight. */
    for (int i = 0; i < 3; i++) {
        pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
        pyi_msg_append (body, "xyz", (size_t) i + 1);
        CHECK_INT (pyi_worker_reply (worker, ids [i], &body), 0);
    }
    pyi_msg_t *details = pyi_msg_new (PYI_ERROR);
    pyi_msg_append (details, "12345", 5);
    CHECK_INT (pyi_worker_error (worker, ids [3], PYI_ERR_APPLICATION, "no", &details), 0);
    for (int i = 0; i < 4; i++) {
        pyi_msg_t *msg = pyi_client_recv (client, WAIT_MS);
        CHECK (msg);
        pyi_msg_destroy (&msg);
    }
    CHECK_INT (pyi_broker_service_stats (broker, "counted", &stats), 0);
    CHECK_U64 (stats.requests, 5);
    CHECK_U64 (stats.replies, 3);
    CHECK_U64 (stats.errors, 1);
    CHECK_U64 (stats.bytes_in, 150);
    CHECK_U64 (stats.bytes_out, 6);
    CHECK_U64 (stats.in_flight, 1);
    CHECK (stats.ready);

    /*  The last one cancelled: no longer in flight; a late reply to it is
        dropped and not counted. */
    CHECK_INT (pyi_client_cancel (client, 5), 0);
    pyi_msg_t *msg = WORKER_GET (worker, PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), ids [4]);
    pyi_msg_destroy (&msg);
    pyi_msg_t *body = t_body_str ("late");
    CHECK_INT (pyi_worker_reply (worker, ids [4], &body), 0);
    CHECK (pyi_client_recv (client, 200) == NULL);
    CHECK_INT (pyi_broker_service_stats (broker, "counted", &stats), 0);
    CHECK_U64 (stats.requests, 5);
    CHECK_U64 (stats.replies, 3);
    CHECK_U64 (stats.errors, 1);
    CHECK_U64 (stats.bytes_out, 6);
    CHECK_U64 (stats.in_flight, 0);
    CHECK_INT (pyi_broker_stats (broker, &bstats), 0);
    CHECK_U64 (bstats.pending, before.pending);

    /*  Once the worker leaves, the service is no longer ready. */
    pyi_worker_destroy (&worker);
    int64_t end = t_now_ms () + WAIT_MS;
    do {
        CHECK_INT (pyi_broker_service_stats (broker, "counted", &stats), 0);
    } while (stats.ready && t_now_ms () < end && (t_sleep_ms (5), true));
    CHECK (!stats.ready);
    CHECK_INT (pyi_broker_stats (broker, &bstats), 0);
    CHECK_U64 (bstats.workers, before.workers);
    pyi_client_destroy (&client);
}

int
main (void)
{
    t_setup_rundir ();
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (tcp, "bind: %s", pyi_last_error ());
    test_endpoints (broker, tcp);
    test_out_of_order (broker);
    test_bodies (broker);
    test_fields_and_errors (broker);
    test_nested (broker);
    test_stats (broker);
    free (tcp);
    pyi_broker_destroy (&broker);
    fprintf (stderr, "test_router: OK\n");
    return 0;
}
