/*  test_descriptors: what the broker does to the tensor descriptors of
    the messages it moves (broker/pyi_descriptors.c, broker/pyi_router.c).

    Guarantees checked:
    - descriptor frames are marked in their message; a request the broker
      refuses (unknown service) and a reply it drops (after the caller's
      deadline) give their regions' in-flight counts back, so the regions
      go with their last holder; pyi_tensor_discard of a descriptor whose
      region is gone, or of garbage, is an error;
    - the broker routes and never copies a payload: a request with a marked
      (shared-memory) descriptor for a worker connected over tcp is refused
      (PYI_ERR_INLINE, saying to send inline) and its count given back; a
      sender that inlines it itself (pyi_tensor_inline) is served, the
      worker gets a copy, the region goes with its holder; so is one that
      sends it chunked (pyi_tensor_inline_span, chunk frames lending the
      region's memory): the worker joins the chunks into a copy, and the
      region goes once the chunk frames are sent and its holder let go;
    - a request from a caller connected over tcp reaches a local worker
      flagged answer-inline (a local caller's is not); the worker's answer
      with a marked descriptor is refused to that caller (INLINE, count
      given back), its inline answer reaches it;
    - a peer over tcp that marks descriptors is refused (PYI_ERR_MALFORMED)
      and the broker never acts on its marks, even when they name a live
      region of this host: a request, and an answer of a remote worker
      (the caller gets the error, not a hang);
    - at the end nothing of ours stays in /dev/shm nor in the mappings.
*/
#include "testtensor.h"

static void
test_dropped (void)
{
    TEST_BEGIN ("messages the broker drops give their descriptors back");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    CHECK (client);
    /*  A request for a service nobody offers. */
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];
    pyi_msg_t *body = s_body_with_tensor (&region, name);
    CHECK_INT (pyi_client_request (client, "nobody.here", 1, 0, &body), 0);
    pyi_msg_t *answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_command (answer) == PYI_ERROR
           && pyi_msg_code (answer) == PYI_ERR_UNKNOWN_SERVICE);
    pyi_msg_destroy (&answer);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "the dropped request kept %s", name);

    /*  A reply that comes after the caller's deadline. */
    char *token = pyi_broker_allow (broker, "late", NULL);
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_inproc (broker), token, 0, 0);
    free (token);
    CHECK (worker && pyi_worker_offer (worker, "late") == 0);
    pyi_msg_t *ready = pyi_worker_recv (worker, 5000);
    CHECK (ready && pyi_msg_command (ready) == PYI_READY);
    pyi_msg_destroy (&ready);
    CHECK_INT (pyi_client_request (client, "late", 2, 50, NULL), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_code (answer) == PYI_ERR_TIMEOUT);
    pyi_msg_destroy (&answer);
    pyi_msg_t *reply = s_body_with_tensor (&region, name);
    pyi_msg_set_command (reply, PYI_REPLY);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    /*  The broker drops it in its own thread: wait for the count. */
    for (int i = 0; i < 500 && pyi_region_inflight (region) > 0; i++)
        usleep (10000);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "the dropped reply kept %s", name);
    CHECK (pyi_client_recv (client, 100) == NULL);      /* nothing reached the caller */

    /*  A discarded descriptor whose region is gone is an error, not a crash. */
    uint8_t desc [PYI_TENSOR_MAX_DESCRIPTOR];
    body = s_body_with_tensor (&region, name);
    size_t size = pyi_msg_frame_size (body, 1);
    memcpy (desc, pyi_msg_frame_data (body, 1), size);
    CHECK_INT (pyi_tensor_discard (desc, size), 0);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_msg_destroy (&body);
    pyi_region_release (&region);
    CHECK (!s_exists (name));
    CHECK_INT (pyi_tensor_discard (desc, size), -1);
    CHECK_INT (pyi_tensor_discard ("\x93", 1), -1);
    pyi_worker_destroy (&worker);
    pyi_client_destroy (&client);
    pyi_broker_destroy (&broker);
}

/*  A copy of body frame index (a descriptor, before its message is sent). */
static size_t
s_copy_frame (pyi_msg_t *msg, size_t index, char *buffer, size_t size)
{
    size_t n = pyi_msg_frame_size (msg, index);
    CHECK (n <= size);
    memcpy (buffer, pyi_msg_frame_data (msg, index), n);
    return n;
}

/*  A worker offering service over endpoint (tcp: remote; inproc: local). */
static pyi_worker_t *
s_worker (pyi_broker_t *broker, const char *endpoint, const char *service)
{
    char *token = pyi_broker_allow (broker, service, NULL);
    pyi_worker_t *worker = pyi_worker_new (endpoint, token, 0, 0);
    free (token);
    CHECK (worker && pyi_worker_offer (worker, service) == 0);
    pyi_msg_t *ready = pyi_worker_recv (worker, 5000);
    CHECK (ready && pyi_msg_command (ready) == PYI_READY);
    pyi_msg_destroy (&ready);
    return worker;
}

static void
s_expect_error (pyi_client_t *client, int code, const char *words)
{
    pyi_msg_t *answer = pyi_client_recv (client, 5000);
    CHECK_MSG (answer && pyi_msg_command (answer) == PYI_ERROR && pyi_msg_code (answer) == code,
               "expected error %d, got %s", code, answer ? pyi_msg_text (answer) : "nothing");
    CHECK_MSG (strstr (pyi_msg_text (answer), words), "error text: %s", pyi_msg_text (answer));
    pyi_msg_destroy (&answer);
}

/*  A zero-copy chunk frame's free function: its region reference. */
static void
s_release_chunk (void *data, void *hint)
{
    pyi_region_t *region = (pyi_region_t *) hint;
    pyi_region_release (&region);
}

static void
test_to_remote_worker (void)
{
    TEST_BEGIN ("descriptors bound for a peer over tcp: refused; the sender sends inline");
    DLManagedTensor *m;
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (tcp, "%s", pyi_last_error ());
    pyi_worker_t *worker = s_worker (broker, tcp, "far");
    free (tcp);
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];

    /*  A shared-memory descriptor for the remote worker: refused, count back. */
    pyi_msg_t *body = s_body_with_tensor (&region, name);
    CHECK_INT (pyi_client_request (client, "far", 1, 0, &body), 0);
    s_expect_error (client, PYI_ERR_INLINE, "inline");
    CHECK_INT (pyi_region_inflight (region), 0);
    CHECK (pyi_worker_recv (worker, 100) == NULL);
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "%s outlived its holders", name);

    /*  The sender inlines it: the worker gets a copy. */
    body = s_body_with_tensor (&region, name);
    float *values = (float *) pyi_region_data (region);
    for (int i = 0; i < 16; i++)
        values [i] = (float) i * 1.5f;
    CHECK_INT (pyi_tensor_inline (body, 1), 0);
    CHECK (!pyi_msg_has_descriptors (body));
    CHECK_INT (pyi_region_inflight (region), 0);    /* the inline copy consumed it */
    CHECK_INT (pyi_client_request (client, "far", 2, 0, &body), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    CHECK (!pyi_msg_answer_inline (request));       /* the caller is local */
    CHECK_INT (pyi_msg_frames (request), 2);
    CHECK (!pyi_msg_is_descriptor (request, 1));
    m = pyi_tensor_decode (pyi_msg_frame_data (request, 1), pyi_msg_frame_size (request, 1));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (m->dl_tensor.data != values);           /* a copy: no shared memory there */
    for (int i = 0; i < 16; i++)
        CHECK (((float *) m->dl_tensor.data) [i] == values [i]);
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "%s outlived its holders", name);
    /*  The remote worker answers inline; the caller gets a region of its own. */
    pyi_msg_t *reply = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_tensor_encode_inline (&m->dl_tensor, reply), 0);
    m->deleter (m);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    pyi_msg_t *answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_command (answer) == PYI_REPLY && pyi_msg_frames (answer) == 1);
    m = pyi_tensor_decode (pyi_msg_frame_data (answer, 0), pyi_msg_frame_size (answer, 0));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (((float *) m->dl_tensor.data) [3] == 4.5f);
    m->deleter (m);
    pyi_msg_destroy (&answer);

    /*  Chunked: the descriptor, then two frames lending the region's bytes. */
    body = s_body_with_tensor (&region, name);
    values = (float *) pyi_region_data (region);
    for (int i = 0; i < 16; i++)
        values [i] = (float) i - 3.0f;
    uint8_t head [PYI_TENSOR_MAX_DESCRIPTOR];
    size_t head_size, length;
    const void *span;
    pyi_region_t *held = pyi_tensor_inline_span (pyi_msg_frame_data (body, 1),
                                                 pyi_msg_frame_size (body, 1), head, sizeof head,
                                                 &head_size, &span, &length);
    CHECK_MSG (held, "%s", pyi_last_error ());
    CHECK_INT (pyi_region_inflight (region), 0);
    CHECK_INT (length, 64);
    pyi_msg_destroy (&body);
    body = pyi_msg_new (PYI_REQUEST);
    CHECK_INT (pyi_msg_append (body, "call", 4), 0);
    CHECK_INT (pyi_msg_append (body, head, head_size), 0);
    CHECK_INT (pyi_msg_append_zerocopy (body, (void *) span, 24, s_release_chunk, held), 0);
    pyi_region_t *again = pyi_region_ref (region);
    CHECK_INT (pyi_msg_append_zerocopy (body, (uint8_t *) span + 24, 40, s_release_chunk,
                                        again), 0);
    CHECK_INT (pyi_client_request (client, "far", 3, 0, &body), 0);
    pyi_region_release (&region);           /* the chunk frames hold it until sent */
    request = pyi_worker_recv (worker, 5000);
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    CHECK_INT (pyi_msg_frames (request), 4);
    const void *chunks [2] = { pyi_msg_frame_data (request, 2), pyi_msg_frame_data (request, 3) };
    size_t sizes [2] = { pyi_msg_frame_size (request, 2), pyi_msg_frame_size (request, 3) };
    m = pyi_tensor_decode_chunked (pyi_msg_frame_data (request, 1),
                                   pyi_msg_frame_size (request, 1), chunks, sizes, 2);
    CHECK_MSG (m, "%s", pyi_last_error ());
    for (int i = 0; i < 16; i++)
        CHECK (((float *) m->dl_tensor.data) [i] == (float) i - 3.0f);
    m->deleter (m);
    pyi_msg_destroy (&request);
    /*  The broker's I/O thread closes the sent frames a moment later. */
    for (int i = 0; i < 500 && s_exists (name); i++)
        usleep (10000);
    CHECK_MSG (!s_exists (name), "%s outlived its chunk frames", name);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
}

static void
test_from_remote_caller (void)
{
    TEST_BEGIN ("a caller over tcp: its requests flagged answer-inline, marked answers refused");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (tcp, "%s", pyi_last_error ());
    pyi_worker_t *worker = s_worker (broker, pyi_broker_inproc (broker), "near");
    pyi_client_t *client = pyi_client_new (tcp);
    CHECK (client);
    free (tcp);
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];

    /*  The worker answers with a shared-memory descriptor: refused. */
    CHECK_INT (pyi_client_request (client, "near", 1, 0, NULL), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    CHECK (pyi_msg_answer_inline (request));
    pyi_msg_info_t info;
    pyi_msg_info (request, &info);
    CHECK (info.answer_inline);
    pyi_msg_t *reply = s_body_with_tensor (&region, name);
    pyi_msg_set_command (reply, PYI_REPLY);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    s_expect_error (client, PYI_ERR_INLINE, "inline");
    CHECK_INT (pyi_region_inflight (region), 0);

    /*  Answered inline: served. */
    CHECK_INT (pyi_client_request (client, "near", 2, 0, NULL), 0);
    request = pyi_worker_recv (worker, 5000);
    CHECK (request && pyi_msg_answer_inline (request));
    reply = pyi_msg_new (PYI_REPLY);
    int64_t shape [1] = { 16 };
    ((float *) pyi_region_data (region)) [5] = 2.25f;
    DLTensor t = { pyi_region_data (region), { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 }, shape,
                   NULL, 0 };
    CHECK_INT (pyi_tensor_encode_inline (&t, reply), 0);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    pyi_msg_t *answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_command (answer) == PYI_REPLY && pyi_msg_frames (answer) == 1);
    DLManagedTensor *m = pyi_tensor_decode (pyi_msg_frame_data (answer, 0),
                                            pyi_msg_frame_size (answer, 0));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (((float *) m->dl_tensor.data) [5] == 2.25f);
    m->deleter (m);
    pyi_msg_destroy (&answer);

    /*  The remote caller marks a descriptor naming a live region of this
        host: refused, and the region's count is not touched. */
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    CHECK_INT (pyi_tensor_encode (&t, body), 0);
    CHECK_INT (pyi_region_inflight (region), 1);
    char desc [PYI_TENSOR_MAX_DESCRIPTOR];
    size_t size = s_copy_frame (body, 0, desc, sizeof (desc));
    CHECK_INT (pyi_client_request (client, "near", 3, 0, &body), 0);
    s_expect_error (client, PYI_ERR_MALFORMED, "inline");
    CHECK (pyi_worker_recv (worker, 100) == NULL);
    CHECK_INT (pyi_region_inflight (region), 1);        /* never acted on */
    CHECK_INT (pyi_tensor_discard (desc, size), 0);     /* the sender takes it back */
    pyi_region_release (&region);
    CHECK (!s_exists (name));
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
}

static void
test_remote_worker_marks (void)
{
    TEST_BEGIN ("a worker over tcp that marks descriptors: the caller gets an error");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (tcp, "%s", pyi_last_error ());
    pyi_worker_t *worker = s_worker (broker, tcp, "far");
    free (tcp);
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    CHECK_INT (pyi_client_request (client, "far", 1, 0, NULL), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    CHECK (request && !pyi_msg_answer_inline (request));
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];
    pyi_msg_t *reply = s_body_with_tensor (&region, name);
    pyi_msg_set_command (reply, PYI_REPLY);
    char desc [PYI_TENSOR_MAX_DESCRIPTOR];
    size_t size = s_copy_frame (reply, 1, desc, sizeof (desc));
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    s_expect_error (client, PYI_ERR_MALFORMED, "inline");
    CHECK_INT (pyi_region_inflight (region), 1);        /* never acted on */
    CHECK_INT (pyi_tensor_discard (desc, size), 0);
    pyi_region_release (&region);
    CHECK (!s_exists (name));
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
}

int
main (void)
{
    t_setup_rundir ();
    t_on_failure = s_on_failure;
    setenv ("PYI_SESSION", pyi_region_session (), 1);
    test_dropped ();
    test_to_remote_worker ();
    test_from_remote_caller ();
    test_remote_worker_marks ();
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_descriptors: OK\n");
    return 0;
}
