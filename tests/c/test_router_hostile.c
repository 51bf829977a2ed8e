/*  test_router_hostile: the broker survives hostile peers and says why it refuses.

    A raw libzmq DEALER (its own context, no pyisolate code on its side)
    connects to the broker's ipc endpoint and sends hand-crafted msgpack.

    Guarantees checked, each followed by a normal request through the
    broker that must still be served correctly:
    - garbage bytes, an empty frame, bad msgpack, an unknown command, a
      REQUEST missing fields or with a field of the wrong type, a header
      with a string claiming 4 GiB or an array claiming 2^32-1 elements:
      ERROR MALFORMED (with the request's id when it could be read before
      the fault), counted in `malformed`;
    - a header of another protocol version: DISCONNECT (or ERROR) with
      code VERSION, counted in `rejected`;
    - a message over PYI_OPT_MAX_MSG_SIZE or with more than
      PYI_MAX_BODY_FRAMES body frames: ERROR TOO_LARGE with the request's
      id, counted in `rejected`, and never forwarded to the worker;
    - a REPLY or ERROR from a peer that is no worker is dropped and
      counted; a HEARTBEAT from one gets DISCONNECT;
    - a registered worker cannot forge: its answer to an id it was never
      given is dropped (the real worker's answer still arrives), and a
      broker code in its ERROR reaches the caller as APPLICATION or above;
    - after PYI_OPT_MAX_STRIKES bad messages the peer gets DISCONNECT, is
      counted in `disconnected`, and everything it sends afterwards is
      ignored (counted, never answered), while other peers are served.
*/
#include "testutil.h"
#include <zmq.h>

#define WAIT_MS 5000

static pyi_broker_t *s_broker;
static pyi_worker_t *s_worker;      /* offers "echo" */
static pyi_client_t *s_client;
static void *s_ctx;                 /* the raw peers' own context */
static mp_t s_mp;

static pyi_broker_stats_t
s_stats (void)
{
    pyi_broker_stats_t stats;
    CHECK_INT (pyi_broker_stats (s_broker, &stats), 0);
    return stats;
}

/*  A raw DEALER connected to the broker's ipc endpoint. */
static void *
s_raw_peer (void)
{
    void *dealer = zmq_socket (s_ctx, ZMQ_DEALER);
    CHECK (dealer);
    int linger = 0;
    zmq_setsockopt (dealer, ZMQ_LINGER, &linger, sizeof linger);
    CHECK_INT (zmq_connect (dealer, pyi_broker_endpoint (s_broker)), 0);
    return dealer;
}

/*  Send frames (a header and optional body frames) raw. */
static void
s_raw_send (void *dealer, const void *header, size_t size, int body_frames, size_t body_size)
{
    int more = body_frames ? ZMQ_SNDMORE : 0;
    CHECK_INT (zmq_send (dealer, header, size, more), (int) size);
    uint8_t *body = (uint8_t *) calloc (1, body_size ? body_size : 1);
    for (int i = 0; i < body_frames; i++)
        CHECK_INT (zmq_send (dealer, body, body_size, i + 1 < body_frames ? ZMQ_SNDMORE : 0),
                   (int) body_size);
    free (body);
}

/*  Next message on a raw peer within ms, or NULL. */
static pyi_msg_t *
s_raw_recv (void *dealer, int ms)
{
    zmq_pollitem_t item = { dealer, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll (&item, 1, ms) <= 0)
        return NULL;
    pyi_msg_t *msg = pyi_msg_recv (dealer, false, 0, ZMQ_DONTWAIT);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);      /* the broker speaks well */
    return msg;
}

/*  The broker still routes a normal request, and the worker got nothing
    else meanwhile. */
static void
s_check_serving (const char *file, int line)
{
    static uint64_t next_id = 1;
    uint64_t id = next_id++;
    pyi_msg_t *body = t_body_str ("still there?");
    CHECK_INT (pyi_client_request (s_client, "echo", id, 0, &body), 0);
    pyi_msg_t *msg = pyi_worker_recv (s_worker, WAIT_MS);
    if (!msg || pyi_msg_command (msg) != PYI_REQUEST || !t_frame_is (msg, 0, "still there?"))
        s_fail (file, line, "the worker did not get the normal request next");
    uint64_t wid = pyi_msg_id (msg);
    CHECK_INT (pyi_worker_reply (s_worker, wid, &msg), 0);
    msg = pyi_client_recv (s_client, WAIT_MS);
    if (!msg || pyi_msg_command (msg) != PYI_REPLY || pyi_msg_id (msg) != id
    ||  !t_frame_is (msg, 0, "still there?"))
        s_fail (file, line, "the normal request was not answered correctly");
    pyi_msg_destroy (&msg);
}
#define CHECK_SERVING() s_check_serving (__FILE__, __LINE__)

typedef enum { COUNT_MALFORMED, COUNT_REJECTED } s_counter_t;

/*  From a fresh peer, send a header (with body frames), expect command
    with code (and id when want_id is not -1), and the counter to grow by
    exactly one. */
static void
s_expect_answer (const char *file, int line, const void *header, size_t size,
                 int body_frames, size_t body_size,
                 int command, int code, int64_t want_id, s_counter_t counter)
{
    pyi_broker_stats_t before = s_stats ();
    void *peer = s_raw_peer ();
    s_raw_send (peer, header, size, body_frames, body_size);
    pyi_msg_t *msg = s_raw_recv (peer, WAIT_MS);
    if (!msg)
        s_fail (file, line, "no answer to a bad message");
    if ((int) pyi_msg_command (msg) != command || pyi_msg_code (msg) != code)
        s_fail (file, line, "answer %s %s (\"%s\"), expected %s %s",
                pyi_command_name (pyi_msg_command (msg)), pyi_error_name (pyi_msg_code (msg)),
                pyi_msg_text (msg), pyi_command_name (command), pyi_error_name (code));
    if (want_id != -1 && pyi_msg_id (msg) != (uint64_t) want_id)
        s_fail (file, line, "answer for id %" PRIu64 ", expected %lld", pyi_msg_id (msg),
                (long long) want_id);
    if (!*pyi_msg_text (msg))
        s_fail (file, line, "answer without text");
    pyi_msg_destroy (&msg);
    pyi_broker_stats_t after = s_stats ();
    uint64_t grew = counter == COUNT_MALFORMED ? after.malformed - before.malformed
                                               : after.rejected - before.rejected;
    if (grew != 1)
        s_fail (file, line, "%s grew by %" PRIu64 ", expected 1 (malformed %" PRIu64
                "->%" PRIu64 ", rejected %" PRIu64 "->%" PRIu64 ")",
                counter == COUNT_MALFORMED ? "malformed" : "rejected", grew,
                before.malformed, after.malformed, before.rejected, after.rejected);
    if (after.messages <= before.messages)
        s_fail (file, line, "message not counted");
    zmq_close (peer);
    s_check_serving (file, line);
}
#define EXPECT_MALFORMED(data, size, id) \
    s_expect_answer (__FILE__, __LINE__, (data), (size), 0, 0, PYI_ERROR, \
                     PYI_ERR_MALFORMED, (id), COUNT_MALFORMED)
#define EXPECT_MP_MALFORMED(id) EXPECT_MALFORMED (s_mp.data, s_mp.size, (id))

static void
s_request_header (uint64_t id, const char *service, uint64_t timeout)
{
    s_mp.size = 0;
    mp_array (&s_mp, 5);
    mp_uint (&s_mp, PYI_PROTOCOL_VERSION);
    mp_uint (&s_mp, PYI_REQUEST);
    mp_uint (&s_mp, id);
    mp_str (&s_mp, service);
    mp_uint (&s_mp, timeout);
}

static void
test_malformed (void)
{
    TEST_BEGIN ("malformed headers: ERROR MALFORMED, counted, broker serves on");
    EXPECT_MALFORMED ("garbage bytes", 13, 0);
    EXPECT_MALFORMED ("", 0, 0);
    EXPECT_MALFORMED ("\xc1", 1, 0);
    EXPECT_MALFORMED ("\x92\x01", 2, 0);                   /* truncated */
    EXPECT_MALFORMED ("\x92\x01\x63", 3, 0);               /* unknown command 99 */
    EXPECT_MALFORMED ("\x92\x01\x00", 3, 0);               /* command 0 */
    EXPECT_MALFORMED ("\x93\x01\x02\x05", 4, 0);           /* REQUEST missing fields */
    EXPECT_MALFORMED ("\xdd\xff\xff\xff\xff\x01\x02", 7, 0);   /* array of 2^32-1 */
    EXPECT_MALFORMED ("\x81\x01\x02", 3, 0);               /* a map */

    /*  REQUEST with a str32 service claiming 4 GiB: answered by its id. */
    s_mp.size = 0;
    mp_array (&s_mp, 5);
    mp_uint (&s_mp, PYI_PROTOCOL_VERSION);
    mp_uint (&s_mp, PYI_REQUEST);
    mp_uint (&s_mp, 4242);
    mp_byte (&s_mp, 0xdb);
    mp_be (&s_mp, 0xffffffff, 4);
    mp_bytes (&s_mp, "echo", 4);
    EXPECT_MP_MALFORMED (4242);
    /*  REQUEST with the timeout a string. */
    s_mp.size = 0;
    mp_array (&s_mp, 5);
    mp_uint (&s_mp, PYI_PROTOCOL_VERSION);
    mp_uint (&s_mp, PYI_REQUEST);
    mp_uint (&s_mp, 4343);
    mp_str (&s_mp, "echo");
    mp_str (&s_mp, "soon");
    EXPECT_MP_MALFORMED (4343);
    /*  REQUEST with a 256-byte service name. */
    s_mp.size = 0;
    mp_array (&s_mp, 5);
    mp_uint (&s_mp, PYI_PROTOCOL_VERSION);
    mp_uint (&s_mp, PYI_REQUEST);
    mp_uint (&s_mp, 4444);
    mp_str_fill (&s_mp, 'e', PYI_MAX_NAME + 1);
    mp_uint (&s_mp, 0);
    EXPECT_MP_MALFORMED (4444);
    /*  REQUEST with one field too many. */
    s_mp.size = 0;
    mp_array (&s_mp, 6);
    mp_uint (&s_mp, PYI_PROTOCOL_VERSION);
    mp_uint (&s_mp, PYI_REQUEST);
    mp_uint (&s_mp, 4545);
    mp_str (&s_mp, "echo");
    mp_uint (&s_mp, 0);
    mp_uint (&s_mp, 0);
    EXPECT_MP_MALFORMED (-1);
    /*  READY whose service list claims 2^32-1 names. */
    s_mp.size = 0;
    mp_array (&s_mp, 5);
    mp_uint (&s_mp, PYI_PROTOCOL_VERSION);
    mp_uint (&s_mp, PYI_READY);
    mp_str (&s_mp, "token");
    mp_byte (&s_mp, 0xdd);
    mp_be (&s_mp, 0xffffffff, 4);
    mp_str (&s_mp, "echo");
    mp_uint (&s_mp, 0);
    EXPECT_MP_MALFORMED (-1);
    /*  A valid REQUEST header followed by garbage bytes in the same frame. */
    s_request_header (4646, "echo", 0);
    mp_bytes (&s_mp, "\xc1\xc1", 2);
    EXPECT_MP_MALFORMED (-1);
}

static void
test_version (void)
{
    TEST_BEGIN ("another protocol version: VERSION, counted, broker serves on");
    const uint64_t versions [] = { 0, 2, 255, UINT64_MAX };
    for (size_t i = 0; i < sizeof versions / sizeof versions [0]; i++) {
        /*  What a version-2 REQUEST might look like. */
        s_mp.size = 0;
        mp_array (&s_mp, 5);
        mp_uint (&s_mp, versions [i]);
        mp_uint (&s_mp, PYI_REQUEST);
        mp_uint (&s_mp, 17);
        mp_str (&s_mp, "echo");
        mp_uint (&s_mp, 0);
        pyi_broker_stats_t before = s_stats ();
        void *peer = s_raw_peer ();
        s_raw_send (peer, s_mp.data, s_mp.size, 1, 10);
        pyi_msg_t *msg = s_raw_recv (peer, WAIT_MS);
        CHECK_MSG (msg, "no answer to version %" PRIu64, versions [i]);
        CHECK (pyi_msg_command (msg) == PYI_DISCONNECT || pyi_msg_command (msg) == PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_VERSION);
        CHECK (*pyi_msg_text (msg));
        pyi_msg_destroy (&msg);
        pyi_broker_stats_t after = s_stats ();
        CHECK_U64 (after.rejected, before.rejected + 1);
        CHECK_U64 (after.malformed, before.malformed);
        zmq_close (peer);
        CHECK_SERVING ();
    }
}

static void
test_too_large (void)
{
    TEST_BEGIN ("over the size limit or the frame limit: TOO_LARGE, not forwarded");
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_MSG_SIZE, 64 * 1024), 0);
    /*  One frame of 100 KiB. */
    s_request_header (5001, "echo", 0);
    s_expect_answer (__FILE__, __LINE__, s_mp.data, s_mp.size, 1, 100 * 1024,
                     PYI_ERROR, PYI_ERR_TOO_LARGE, 5001, COUNT_REJECTED);
    /*  Many small frames adding up to more than the limit. */
    s_request_header (5002, "echo", 0);
    s_expect_answer (__FILE__, __LINE__, s_mp.data, s_mp.size, 200, 1024,
                     PYI_ERROR, PYI_ERR_TOO_LARGE, 5002, COUNT_REJECTED);
    /*  Just under the limit passes (and reaches the worker). */
    s_request_header (5003, "echo", 0);
    void *peer = s_raw_peer ();
    s_raw_send (peer, s_mp.data, s_mp.size, 1, 60 * 1024);
    pyi_msg_t *msg = pyi_worker_recv (s_worker, WAIT_MS);
    CHECK_CMD (msg, PYI_REQUEST);
    CHECK_INT (pyi_msg_body_size (msg), 60 * 1024);
    uint64_t id = pyi_msg_id (msg);
    CHECK_INT (pyi_worker_reply (s_worker, id, &msg), 0);
    msg = s_raw_recv (peer, WAIT_MS);
    CHECK_CMD (msg, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 5003);
    CHECK_INT (pyi_msg_body_size (msg), 60 * 1024);
    pyi_msg_destroy (&msg);
    zmq_close (peer);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_MSG_SIZE, 512 * 1024 * 1024), 0);

    /*  More than PYI_MAX_BODY_FRAMES frames, however small. */
    s_request_header (5004, "echo", 0);
    s_expect_answer (__FILE__, __LINE__, s_mp.data, s_mp.size, PYI_MAX_BODY_FRAMES + 1, 1,
                     PYI_ERROR, PYI_ERR_TOO_LARGE, 5004, COUNT_REJECTED);
    s_request_header (5005, "echo", 0);
    s_expect_answer (__FILE__, __LINE__, s_mp.data, s_mp.size, 5000, 0,
                     PYI_ERROR, PYI_ERR_TOO_LARGE, 5005, COUNT_REJECTED);
    /*  (s_check_serving, run by each of the above, found the worker
        received nothing but the normal requests.) */
}

static void
test_not_a_worker (void)
{
    TEST_BEGIN ("answers and heartbeats from a peer that is no worker");
    /*  REPLY and ERROR for an id in flight to the real worker: dropped. */
    pyi_msg_t *body = t_body_str ("genuine");
    CHECK_INT (pyi_client_request (s_client, "echo", 900, 0, &body), 0);
    pyi_msg_t *request = pyi_worker_recv (s_worker, WAIT_MS);
    CHECK_CMD (request, PYI_REQUEST);
    uint64_t wid = pyi_msg_id (request);

    pyi_broker_stats_t before = s_stats ();
    void *peer = s_raw_peer ();
    /*  (6 bad messages: fewer than the 10 strikes that would cut it off.) */
    for (uint64_t id = wid ? wid - 1 : 0; id <= wid + 1; id++) {
        pyi_msg_t *forged = pyi_msg_new (PYI_REPLY);
        pyi_msg_set_id (forged, id);
        pyi_msg_append (forged, "forged", 6);
        CHECK_INT (pyi_msg_send (&forged, peer, NULL, 0, 0), 0);
        forged = pyi_msg_new (PYI_ERROR);
        pyi_msg_set_id (forged, id);
        pyi_msg_set_code (forged, PYI_ERR_TIMEOUT);
        pyi_msg_set_text (forged, "forged");
        CHECK_INT (pyi_msg_send (&forged, peer, NULL, 0, 0), 0);
    }
    /*  A HEARTBEAT from it: DISCONNECT (the broker does not know it). */
    pyi_msg_t *beat = pyi_msg_new (PYI_HEARTBEAT);
    CHECK_INT (pyi_msg_send (&beat, peer, NULL, 0, 0), 0);
    pyi_msg_t *msg = s_raw_recv (peer, WAIT_MS);
    CHECK_CMD (msg, PYI_DISCONNECT);
    pyi_msg_destroy (&msg);
    CHECK (s_raw_recv (peer, 100) == NULL);
    pyi_broker_stats_t after = s_stats ();
    CHECK_MSG (after.rejected >= before.rejected + 1, "forged answers not counted");
    /*  The caller got nothing forged; the genuine answer gets through. */
    CHECK (pyi_client_recv (s_client, 100) == NULL);
    CHECK_INT (pyi_worker_reply (s_worker, wid, &request), 0);
    msg = pyi_client_recv (s_client, WAIT_MS);
    CHECK_CMD (msg, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 900);
    CHECK (t_frame_is (msg, 0, "genuine"));
    pyi_msg_destroy (&msg);
    zmq_close (peer);
    CHECK_SERVING ();
}

static void
test_forging_worker (void)
{
    TEST_BEGIN ("a registered worker cannot answer others' requests or use broker codes");
    /*  A raw worker, registered with a real token. */
    char *token = pyi_broker_allow (s_broker, "raw", NULL);
    void *raw = s_raw_peer ();
    pyi_msg_t *ready = pyi_msg_new (PYI_READY);
    pyi_msg_set_token (ready, token);
    pyi_msg_add_service (ready, "raw");
    CHECK_INT (pyi_msg_send (&ready, raw, NULL, 0, 0), 0);
    free (token);
    pyi_msg_t *msg = s_raw_recv (raw, WAIT_MS);
    CHECK_CMD (msg, PYI_READY);
    CHECK_STR (pyi_msg_service_at (msg, 0), "raw");
    pyi_msg_destroy (&msg);

    /*  A request in flight to the real worker: the raw worker answers it. */
    CHECK_INT (pyi_client_request (s_client, "echo", 901, 0, NULL), 0);
    pyi_msg_t *request = pyi_worker_recv (s_worker, WAIT_MS);
    CHECK_CMD (request, PYI_REQUEST);
    uint64_t wid = pyi_msg_id (request);
    pyi_msg_t *forged = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (forged, wid);
    pyi_msg_append (forged, "forged", 6);
    CHECK_INT (pyi_msg_send (&forged, raw, NULL, 0, 0), 0);
    CHECK (pyi_client_recv (s_client, 200) == NULL);
    CHECK_INT (pyi_worker_reply (s_worker, wid, &request), 0);
    msg = pyi_client_recv (s_client, WAIT_MS);
    CHECK_CMD (msg, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 901);
    CHECK_INT (pyi_msg_frames (msg), 0);
    pyi_msg_destroy (&msg);

    /*  Its own request, answered with a broker code: the caller sees
        APPLICATION or above, and the service named by the broker. */
    CHECK_INT (pyi_client_request (s_client, "raw", 902, 0, NULL), 0);
    msg = s_raw_recv (raw, WAIT_MS);
    CHECK_CMD (msg, PYI_REQUEST);
    uint64_t rid = pyi_msg_id (msg);
    pyi_msg_destroy (&msg);
    pyi_msg_t *error = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (error, rid);
    pyi_msg_set_code (error, PYI_ERR_WORKER_LOST);
    pyi_msg_set_text (error, "pretending");
    pyi_msg_set_service (error, "echo");
    CHECK_INT (pyi_msg_send (&error, raw, NULL, 0, 0), 0);
    msg = pyi_client_recv (s_client, WAIT_MS);
    CHECK_CMD (msg, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 902);
    CHECK (pyi_msg_code (msg) >= PYI_ERR_APPLICATION);
    CHECK_STR (pyi_msg_service (msg), "raw");
    pyi_msg_destroy (&msg);

    /*  It says goodbye. */
    pyi_msg_t *bye = pyi_msg_new (PYI_DISCONNECT);
    CHECK_INT (pyi_msg_send (&bye, raw, NULL, 0, 0), 0);
    CHECK_U64 (t_wait_workers (s_broker, 1, WAIT_MS), 1);
    zmq_close (raw);
    CHECK_SERVING ();
}

static void
test_strikes (void)
{
    TEST_BEGIN ("after MAX_STRIKES bad messages: DISCONNECT, counted, then ignored");
    const int strikes = 4;
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_STRIKES, strikes), 0);
    pyi_broker_stats_t before = s_stats ();
    void *peer = s_raw_peer ();
    for (int i = 1; i <= strikes; i++) {
        s_raw_send (peer, "bad", 3, 0, 0);
        pyi_msg_t *msg = s_raw_recv (peer, WAIT_MS);
        CHECK_CMD (msg, PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_MALFORMED);
        pyi_msg_destroy (&msg);
        if (i < strikes)
            CHECK_U64 (s_stats ().disconnected, before.disconnected);
    }
    pyi_msg_t *msg = s_raw_recv (peer, WAIT_MS);
    CHECK_CMD (msg, PYI_DISCONNECT);
    CHECK (*pyi_msg_text (msg));
    pyi_msg_destroy (&msg);
    pyi_broker_stats_t after = s_stats ();
    CHECK_U64 (after.disconnected, before.disconnected + 1);
    CHECK_U64 (after.malformed, before.malformed + (uint64_t) strikes);

    /*  Cut off: 1000 more messages, good or bad, are ignored but counted,
        and a normal request from it is not served. */
    for (int i = 0; i < 500; i++)
        s_raw_send (peer, "bad", 3, 0, 0);
    s_request_header (1, "echo", 0);
    for (int i = 0; i < 500; i++)
        s_raw_send (peer, s_mp.data, s_mp.size, 1, 4);
    int64_t end = t_now_ms () + WAIT_MS;
    do {
        CHECK_SERVING ();
        after = s_stats ();
    } while (after.malformed + after.rejected < before.malformed + before.rejected + 1000 + strikes
             && t_now_ms () < end);
    CHECK_MSG (after.malformed + after.rejected >= before.malformed + before.rejected + 1000 + strikes,
               "ignored messages not counted");
    CHECK_U64 (after.disconnected, before.disconnected + 1);
    CHECK (s_raw_recv (peer, 200) == NULL);
    CHECK (pyi_worker_recv (s_worker, 0) == NULL);
    zmq_close (peer);

    /*  A worker cut off for bad input loses its services. */
    char *token = pyi_broker_allow (s_broker, "unruly", NULL);
    void *raw = s_raw_peer ();
    pyi_msg_t *ready = pyi_msg_new (PYI_READY);
    pyi_msg_set_token (ready, token);
    pyi_msg_add_service (ready, "unruly");
    CHECK_INT (pyi_msg_send (&ready, raw, NULL, 0, 0), 0);
    free (token);
    msg = s_raw_recv (raw, WAIT_MS);
    CHECK_CMD (msg, PYI_READY);
    pyi_msg_destroy (&msg);
    CHECK_INT (pyi_client_request (s_client, "unruly", 77, 0, NULL), 0);
    msg = s_raw_recv (raw, WAIT_MS);
    CHECK_CMD (msg, PYI_REQUEST);
    pyi_msg_destroy (&msg);
    for (int i = 0; i < strikes; i++)
        s_raw_send (raw, "\xc1", 1, 0, 0);
    msg = pyi_client_recv (s_client, WAIT_MS);
    CHECK_CMD (msg, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 77);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
    pyi_msg_destroy (&msg);
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "unruly", &stats), 0);
    CHECK (!stats.ready);
    zmq_close (raw);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_STRIKES, 10), 0);
    CHECK_SERVING ();
}

int
main (void)
{
    t_setup_rundir ();
    s_broker = pyi_broker_new ();
    CHECK_MSG (s_broker, "pyi_broker_new: %s", pyi_last_error ());
    char *token = pyi_broker_allow (s_broker, "echo", NULL);
    s_worker = pyi_worker_new (pyi_broker_inproc (s_broker), token, 0, 0);
    free (token);
    CHECK_INT (pyi_worker_offer (s_worker, "echo"), 0);
    pyi_msg_t *msg = pyi_worker_recv (s_worker, WAIT_MS);
    CHECK_CMD (msg, PYI_READY);
    pyi_msg_destroy (&msg);
    s_client = pyi_client_new (pyi_broker_inproc (s_broker));
    s_ctx = zmq_ctx_new ();
    CHECK_SERVING ();

    test_malformed ();
    test_version ();
    test_too_large ();
    test_not_a_worker ();
    test_forging_worker ();
    test_strikes ();

    pyi_client_destroy (&s_client);
    pyi_worker_destroy (&s_worker);
    pyi_broker_destroy (&s_broker);
    zmq_ctx_term (s_ctx);
    fprintf (stderr, "test_router_hostile: OK\n");
    return 0;
}
