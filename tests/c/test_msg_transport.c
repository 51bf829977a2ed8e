/*  test_msg_transport: pyi_msg_send and pyi_msg_recv, the frame-level
    transport of messages over libzmq sockets.

    Guarantees checked:
    - pyi_msg_send / pyi_msg_recv carry the header and body frames in
      order over PAIR and DEALER/ROUTER sockets, zero-copy frames travel
      without being copied (inproc) and their free function runs exactly
      once, whether the message is sent, destroyed, or refused;
    - a message holds PYI_MAX_BODY_FRAMES body frames and refuses one
      more; empty frames are frames;
    - pyi_msg_recv drains and marks TOO_LARGE a message over max_size or
      with more than PYI_MAX_BODY_FRAMES body frames, and the next message
      still reads correctly;
    - a header read from a ROUTER keeps the peer's routing id, also when
      it is malformed; a send to an unknown peer fails and still takes
      the message.
*/
#include "testutil.h"
#include <stdatomic.h>
#include <zmq.h>

/*  Frames over sockets --------------------------------------------------- */

static atomic_int s_freed;
static void *s_freed_data;

static void
s_free_fn (void *data, void *hint)
{
    CHECK (hint == (void *) 0x5eed);
    s_freed_data = data;
    free (data);
    atomic_fetch_add (&s_freed, 1);
}

/*  Wait up to 1 s for the free function to have run want times. */
static int
s_wait_freed (int want)
{
    int64_t end = t_now_ms () + 1000;
    while (atomic_load (&s_freed) < want && t_now_ms () < end)
        t_sleep_ms (1);
    t_sleep_ms (20);        /* and make sure it does not run again */
    return atomic_load (&s_freed);
}

static void
test_zerocopy_local (void)
{
    TEST_BEGIN ("zero-copy frames: free runs once on destroy and on refusal");
    /*  Destroyed without being sent. */
    atomic_store (&s_freed, 0);
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    void *data = malloc (100);
    CHECK_INT (pyi_msg_append_zerocopy (msg, data, 100, s_free_fn, (void *) 0x5eed), 0);
    CHECK (pyi_msg_frame_data (msg, 0) == data);
    CHECK_INT (pyi_msg_frame_size (msg, 0), 100);
    CHECK_INT (atomic_load (&s_freed), 0);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);

    /*  PYI_MAX_BODY_FRAMES frames fit; the next append is refused, and a
        refused zero-copy frame is freed at once, exactly once. */
    atomic_store (&s_freed, 0);
    msg = pyi_msg_new (PYI_REPLY);
    for (int i = 0; i < PYI_MAX_BODY_FRAMES; i++)
        CHECK_INT (pyi_msg_append (msg, &i, sizeof i), 0);
    CHECK_INT (pyi_msg_frames (msg), PYI_MAX_BODY_FRAMES);
    CHECK_INT (pyi_msg_body_size (msg), PYI_MAX_BODY_FRAMES * sizeof (int));
    for (int i = 0; i < PYI_MAX_BODY_FRAMES; i++)
        CHECK (memcmp (pyi_msg_frame_data (msg, (size_t) i), &i, sizeof i) == 0);
    CHECK_INT (pyi_msg_append (msg, "x", 1), -1);
    data = malloc (10);
    CHECK_INT (pyi_msg_append_zerocopy (msg, data, 10, s_free_fn, (void *) 0x5eed), -1);
    CHECK_INT (atomic_load (&s_freed), 1);
    CHECK_INT (pyi_msg_frames (msg), PYI_MAX_BODY_FRAMES);
    CHECK (pyi_msg_frame_data (msg, PYI_MAX_BODY_FRAMES) == NULL);
    CHECK_INT (pyi_msg_frame_size (msg, PYI_MAX_BODY_FRAMES), 0);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);

    /*  Empty frames are frames. */
    msg = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_msg_append (msg, NULL, 0), 0);
    CHECK_INT (pyi_msg_append (msg, "", 0), 0);
    CHECK_INT (pyi_msg_frames (msg), 2);
    CHECK_INT (pyi_msg_body_size (msg), 0);
    pyi_msg_destroy (&msg);
}

/*  A connected pair of sockets on a private context. */
typedef struct {
    void *ctx;
    void *a;            /* PAIR or DEALER */
    void *b;            /* PAIR or ROUTER */
} pair_t;

static pair_t
s_pair (int type_a, int type_b, const char *endpoint)
{
    pair_t pair;
    pair.ctx = zmq_ctx_new ();
    CHECK (pair.ctx);
    pair.a = zmq_socket (pair.ctx, type_a);
    pair.b = zmq_socket (pair.ctx, type_b);
    CHECK (pair.a && pair.b);
    int linger = 0;
    zmq_setsockopt (pair.a, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (pair.b, ZMQ_LINGER, &linger, sizeof linger);
    if (type_b == ZMQ_ROUTER) {
        int one = 1;
        zmq_setsockopt (pair.b, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt (pair.a, ZMQ_ROUTING_ID, "peer-a", 6);
    }
    CHECK_INT (zmq_bind (pair.b, endpoint), 0);
    CHECK_INT (zmq_connect (pair.a, endpoint), 0);
    return pair;
}

static void
s_pair_close (pair_t *pair)
{
    zmq_close (pair->a);
    zmq_close (pair->b);
    zmq_ctx_term (pair->ctx);
}

static void
test_socket_pair (const char *endpoint)
{
    TEST_BEGIN (endpoint);
    pair_t pair = s_pair (ZMQ_PAIR, ZMQ_PAIR, endpoint);
    bool inproc = strncmp (endpoint, "inproc:", 7) == 0;

    /*  A REQUEST with three body frames, the middle one zero-copy. */
    atomic_store (&s_freed, 0);
    const size_t big = 1024 * 1024;
    uint8_t *data = (uint8_t *) malloc (big);
    for (size_t i = 0; i < big; i++)
        data [i] = (uint8_t) (i * 31 + 7);
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, UINT64_MAX - 1);
    pyi_msg_set_service (msg, "svc");
    pyi_msg_set_timeout (msg, 1234);
    CHECK_INT (pyi_msg_append (msg, "first", 5), 0);
    CHECK_INT (pyi_msg_append_zerocopy (msg, data, big, s_free_fn, (void *) 0x5eed), 0);
    CHECK_INT (pyi_msg_append (msg, "", 0), 0);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    CHECK (msg == NULL);

    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_command (msg), PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (msg), UINT64_MAX - 1);
    CHECK_STR (pyi_msg_service (msg), "svc");
    CHECK_U64 (pyi_msg_timeout (msg), 1234);
    CHECK_INT (pyi_msg_frames (msg), 3);
    CHECK (t_frame_is (msg, 0, "first"));
    CHECK_INT (pyi_msg_frame_size (msg, 1), big);
    CHECK_INT (pyi_msg_frame_size (msg, 2), 0);
    CHECK_INT (pyi_msg_body_size (msg), 5 + big);
    const uint8_t *got = (const uint8_t *) pyi_msg_frame_data (msg, 1);
    for (size_t i = 0; i < big; i++)
        if (got [i] != (uint8_t) (i * 31 + 7))
            CHECK_MSG (false, "byte %zu of the zero-copy frame differs", i);
    size_t rid_size = 99;
    pyi_msg_routing_id (msg, &rid_size);
    CHECK_INT (rid_size, 0);
    if (inproc)
        /*  inproc hands the very buffer over: nothing copied it. */
        CHECK (got == data);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);
    CHECK (s_freed_data == data);

    /*  Nothing waiting: NULL and EAGAIN. */
    errno = 0;
    CHECK (pyi_msg_recv (pair.b, false, 0, ZMQ_DONTWAIT) == NULL);
    CHECK_INT (errno, EAGAIN);

    /*  Every command crosses. */
    for (int command = PYI_READY; command <= PYI_DISCONNECT; command++) {
        msg = pyi_msg_new ((pyi_command_t) command);
        pyi_msg_set_id (msg, 5);
        pyi_msg_set_code (msg, 101);
        pyi_msg_set_text (msg, "text");
        pyi_msg_set_service (msg, "svc");
        pyi_msg_set_token (msg, "tok");
        pyi_msg_add_service (msg, "svc");
        CHECK_INT (pyi_msg_append (msg, "body", 4), 0);
        CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
        msg = pyi_msg_recv (pair.b, false, 0, 0);
        CHECK (msg);
        CHECK_INT (pyi_msg_status (msg), PYI_OK);
        CHECK_INT (pyi_msg_command (msg), command);
        CHECK (t_frame_is (msg, 0, "body"));
        pyi_msg_destroy (&msg);
    }

    /*  Over max_size: drained, marked TOO_LARGE, body dropped, header kept;
        then the next message reads normally. */
    msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 31);
    pyi_msg_set_service (msg, "svc");
    char chunk [600];
    memset (chunk, 'c', sizeof chunk);
    for (int i = 0; i < 4; i++)
        pyi_msg_append (msg, chunk, sizeof chunk);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 32);
    pyi_msg_append (msg, "after", 5);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_recv (pair.b, false, 1000, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_TOO_LARGE);
    CHECK_U64 (pyi_msg_id (msg), 31);
    CHECK_INT (pyi_msg_frames (msg), 0);
    pyi_msg_destroy (&msg);
    msg = pyi_msg_recv (pair.b, false, 1000, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_U64 (pyi_msg_id (msg), 32);
    CHECK (t_frame_is (msg, 0, "after"));
    pyi_msg_destroy (&msg);
    /*  Exactly at max_size is fine (header + body). */
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 1);
    pyi_msg_append (msg, chunk, 100);
    uint8_t header [64];
    int header_size = pyi_msg_encode (msg, header, sizeof header);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_recv (pair.b, false, (size_t) header_size + 100, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_frames (msg), 1);
    pyi_msg_destroy (&msg);

    /*  More than PYI_MAX_BODY_FRAMES frames (sent raw): TOO_LARGE and
        drained; exactly PYI_MAX_BODY_FRAMES is fine. */
    for (int extra = 0; extra <= 1; extra++) {
        msg = pyi_msg_new (PYI_REPLY);
        pyi_msg_set_id (msg, 40 + (uint64_t) extra);
        int length = pyi_msg_encode (msg, header, sizeof header);
        pyi_msg_destroy (&msg);
        int frames = PYI_MAX_BODY_FRAMES + extra;
        CHECK_INT (zmq_send (pair.a, header, (size_t) length, ZMQ_SNDMORE), length);
        for (int i = 0; i < frames; i++)
            CHECK_INT (zmq_send (pair.a, "f", 1, i + 1 < frames ? ZMQ_SNDMORE : 0), 1);
        CHECK_INT (zmq_send (pair.a, header, (size_t) length, 0), length);   /* a next one */
        msg = pyi_msg_recv (pair.b, false, 0, 0);
        CHECK (msg);
        CHECK_U64 (pyi_msg_id (msg), 40 + (uint64_t) extra);
        if (extra) {
            CHECK_INT (pyi_msg_status (msg), PYI_ERR_TOO_LARGE);
            CHECK_INT (pyi_msg_frames (msg), 0);
        }
        else {
            CHECK_INT (pyi_msg_status (msg), PYI_OK);
            CHECK_INT (pyi_msg_frames (msg), PYI_MAX_BODY_FRAMES);
        }
        pyi_msg_destroy (&msg);
        msg = pyi_msg_recv (pair.b, false, 0, 0);
        CHECK (msg);
        CHECK_INT (pyi_msg_status (msg), PYI_OK);
        CHECK_INT (pyi_msg_frames (msg), 0);
        pyi_msg_destroy (&msg);
    }

    /*  Garbage header with body frames: a message (not NULL), MALFORMED,
        and the body frames do not leak into the next message. */
    CHECK_INT (zmq_send (pair.a, "\xc1garbage", 8, ZMQ_SNDMORE), 8);
    CHECK_INT (zmq_send (pair.a, "b1", 2, ZMQ_SNDMORE), 2);
    CHECK_INT (zmq_send (pair.a, "b2", 2, 0), 2);
    CHECK_INT (zmq_send (pair.a, "", 0, 0), 0);      /* empty header */
    msg = pyi_msg_new (PYI_CANCEL);
    pyi_msg_set_id (msg, 55);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_MALFORMED);
    pyi_msg_destroy (&msg);
    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_MALFORMED);
    pyi_msg_destroy (&msg);
    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_command (msg), PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), 55);
    pyi_msg_destroy (&msg);
    s_pair_close (&pair);
}

static void
test_router_dealer (void)
{
    TEST_BEGIN ("DEALER/ROUTER: routing ids, zero-copy, failed send");
    pair_t pair = s_pair (ZMQ_DEALER, ZMQ_ROUTER, "inproc://test-msg-router");

    atomic_store (&s_freed, 0);
    void *data = malloc (4096);
    memset (data, 'z', 4096);
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 1);
    pyi_msg_set_service (msg, "svc");
    pyi_msg_append_zerocopy (msg, data, 4096, s_free_fn, (void *) 0x5eed);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);

    msg = pyi_msg_recv (pair.b, true, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    size_t rid_size = 0;
    const void *rid = pyi_msg_routing_id (msg, &rid_size);
    CHECK_INT (rid_size, 6);
    CHECK (memcmp (rid, "peer-a", 6) == 0);
    CHECK_INT (pyi_msg_frames (msg), 1);
    CHECK (pyi_msg_frame_data (msg, 0) == data);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);

    /*  Answer through the ROUTER with the routing id. */
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 1);
    pyi_msg_append (msg, "answer", 6);
    CHECK_INT (pyi_msg_send (&msg, pair.b, "peer-a", 6, 0), 0);
    msg = pyi_msg_recv (pair.a, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_command (msg), PYI_REPLY);
    CHECK (t_frame_is (msg, 0, "answer"));
    pyi_msg_destroy (&msg);

    /*  A send that fails (unknown peer on a mandatory ROUTER) still takes
        the message and frees its zero-copy frame exactly once. */
    atomic_store (&s_freed, 0);
    data = malloc (64);
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_append_zerocopy (msg, data, 64, s_free_fn, (void *) 0x5eed);
    errno = 0;
    CHECK_INT (pyi_msg_send (&msg, pair.b, "nobody", 6, ZMQ_DONTWAIT), -1);
    CHECK_INT (errno, EHOSTUNREACH);
    CHECK (msg == NULL);
    CHECK_INT (s_wait_freed (1), 1);

    /*  A bad header read from a ROUTER is MALFORMED and keeps its routing id
        (so that the broker can answer and count it against the peer). */
    CHECK_INT (zmq_send (pair.a, "x", 1, 0), 1);
    msg = pyi_msg_recv (pair.b, true, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_MALFORMED);
    pyi_msg_routing_id (msg, &rid_size);
    CHECK_INT (rid_size, 6);
    pyi_msg_destroy (&msg);
    s_pair_close (&pair);
}

int
main (void)
{
    test_zerocopy_local ();
    test_socket_pair ("inproc://test-msg-pair");
    char endpoint [128];
    snprintf (endpoint, sizeof endpoint, "ipc:///tmp/pyi-test-msg-%d", (int) getpid ());
    test_socket_pair (endpoint);
    unlink (endpoint + 6);
    test_router_dealer ();
    fprintf (stderr, "test_msg_transport: OK\n");
    return 0;
}
