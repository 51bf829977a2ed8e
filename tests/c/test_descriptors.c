/*  test_descriptors: what the broker does to the tensor descriptors of
    the messages it moves (broker/pyi_descriptors.c).

    Guarantees checked:
    - descriptor frames are marked in their message; a request the broker
      refuses (unknown service) and a reply it drops (after the caller's
      deadline) give their regions' in-flight counts back, so the regions
      go with their last holder; pyi_tensor_discard of a descriptor whose
      region is gone, or of garbage, is an error;
    - for a worker connected over tcp (remote), the broker turns a
      request's descriptor into inline form (a copy; the descriptor's
      in-flight count consumed, the region gone with its holder), and the
      worker's inline answer reaches the caller;
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

static void
test_inline_for_remote (void)
{
    TEST_BEGIN ("the broker turns descriptors into inline form for a peer over tcp");
    DLManagedTensor *m;
    /*  Through the broker: a worker connected over tcp is remote. */
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (tcp, "%s", pyi_last_error ());
    char *token = pyi_broker_allow (broker, "far", NULL);
    pyi_worker_t *worker = pyi_worker_new (tcp, token, 0, 0);
    free (token);
    free (tcp);
    CHECK (worker && pyi_worker_offer (worker, "far") == 0);
    pyi_msg_t *ready = pyi_worker_recv (worker, 5000);
    CHECK (ready && pyi_msg_command (ready) == PYI_READY);
    pyi_msg_destroy (&ready);
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];
    pyi_msg_t *body = s_body_with_tensor (&region, name);
    float *values = (float *) pyi_region_data (region);
    for (int i = 0; i < 16; i++)
        values [i] = (float) i * 1.5f;
    CHECK_INT (pyi_client_request (client, "far", 1, 0, &body), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    if (!request) {
        pyi_msg_t *why = pyi_client_recv (client, 100);
        CHECK_MSG (false, "the worker got nothing; the caller got %s",
                   why ? pyi_msg_text (why) : "nothing");
    }
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    CHECK_INT (pyi_msg_frames (request), 2);
    CHECK (!pyi_msg_is_descriptor (request, 1));
    m = pyi_tensor_decode (pyi_msg_frame_data (request, 1), pyi_msg_frame_size (request, 1));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (m->dl_tensor.data != values);           /* a copy: no shared memory there */
    for (int i = 0; i < 16; i++)
        CHECK (((float *) m->dl_tensor.data) [i] == values [i]);
    CHECK_INT (pyi_region_inflight (region), 0);    /* the broker consumed the descriptor */
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
    test_inline_for_remote ();
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_descriptors: OK\n");
    return 0;
}
