/*  test_curve: tcp endpoints secured with CURVE, for workers and callers
    on other machines.

    Guarantees checked:
    - a broker has a CURVE public key (40 characters of Z85); a CURVE
      endpoint is tcp:// only; key pairs are made on demand;
    - a worker whose public key the broker allowed connects over the CURVE
      endpoint, offers a service and answers a caller on the broker's
      inproc endpoint; a caller with an allowed key calls a local worker
      over the CURVE endpoint;
    - peers the broker does not know are never seen: a worker with a key
      not allowed, a worker without CURVE, and a worker that expects
      another server key get no READY and register nothing;
    - endpoints bound before and after a CURVE endpoint stay plain: a
      plain worker on a plain tcp endpoint still works;
    - malformed keys are refused (allow_key, new_curve); a second broker
      in the same process cannot bind CURVE endpoints (one authentication
      handler per process) and says so, and the next broker after one is
      destroyed binds at once;
    - tensors cross to a CURVE peer inline (it is remote), made so by the
      sender: a shared-memory descriptor for it is refused.
*/
#include "testutil.h"

#define WAIT_MS 5000
#define SILENCE_MS 700

typedef struct {
    char public_key [41];
    char secret_key [41];
} s_keys_t;

static s_keys_t
s_keys (void)
{
    s_keys_t keys;
    CHECK_INT (pyi_curve_keypair (keys.public_key, keys.secret_key), 0);
    CHECK_INT (strlen (keys.public_key), 40);
    return keys;
}

/*  A worker for service over endpoint; NULL keys: plain. Returns it after
    its offer, without waiting for the answer. */
static pyi_worker_t *
s_worker (pyi_broker_t *broker, const char *endpoint, const char *service,
          const char *server_key, const s_keys_t *keys)
{
    char *token = pyi_broker_allow (broker, service, NULL);
    CHECK (token);
    pyi_worker_t *worker = keys
        ? pyi_worker_new_curve (endpoint, token, 0, 0, server_key, keys->public_key,
                                keys->secret_key)
        : pyi_worker_new (endpoint, token, 0, 0);
    free (token);
    CHECK_MSG (worker, "%s", pyi_last_error ());
    CHECK_INT (pyi_worker_offer (worker, service), 0);
    return worker;
}

static bool
s_ready (pyi_worker_t *worker, int timeout_ms)
{
    pyi_msg_t *msg = pyi_worker_recv (worker, timeout_ms);
    bool ready = msg && pyi_msg_command (msg) == PYI_READY;
    pyi_msg_destroy (&msg);
    return ready;
}

/*  One round trip from client to service; the worker echoes frame 0. */
static void
s_round_trip (pyi_client_t *client, pyi_worker_t *worker, const char *service, uint64_t id)
{
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    CHECK_INT (pyi_msg_append (body, "ping", 4), 0);
    CHECK_INT (pyi_client_request (client, service, id, 0, &body), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, WAIT_MS);
    CHECK_MSG (request && pyi_msg_command (request) == PYI_REQUEST, "no request for %s",
               service);
    pyi_msg_t *reply = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_msg_append (reply, "pong", 4), 0);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    pyi_msg_t *answer = pyi_client_recv (client, WAIT_MS);
    CHECK_MSG (answer && pyi_msg_command (answer) == PYI_REPLY, "no answer from %s", service);
    CHECK_INT (pyi_msg_id (answer), id);
    CHECK (pyi_msg_frame_size (answer, 0) == 4
           && memcmp (pyi_msg_frame_data (answer, 0), "pong", 4) == 0);
    pyi_msg_destroy (&answer);
}

static int
s_workers (pyi_broker_t *broker)
{
    pyi_broker_stats_t stats;
    CHECK_INT (pyi_broker_stats (broker, &stats), 0);
    return (int) stats.workers;
}

int
main (void)
{
    t_setup_rundir ();
    setenv ("PYI_SESSION", pyi_region_session (), 1);
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    const char *server_key = pyi_broker_curve_key (broker);

    TEST_BEGIN ("keys and endpoints");
    CHECK_INT (strlen (server_key), 40);
    char *plain_before = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK (plain_before);
    CHECK (pyi_broker_bind_curve (broker, "ipc:///tmp/pyi-test-curve") == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "tcp://"), "%s", pyi_last_error ());
    char *curve = pyi_broker_bind_curve (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (curve, "%s", pyi_last_error ());
    char *plain_after = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK (plain_after);
    CHECK_INT (pyi_broker_allow_key (broker, "short"), -1);
    CHECK_INT (pyi_broker_allow_key (broker, NULL), -1);
    s_keys_t good = s_keys (), other = s_keys (), caller = s_keys ();
    CHECK (strcmp (good.public_key, other.public_key) != 0);
    CHECK_INT (pyi_broker_allow_key (broker, good.public_key), 0);
    CHECK_INT (pyi_broker_allow_key (broker, good.public_key), 0);     /* again: fine */
    CHECK_INT (pyi_broker_allow_key (broker, caller.public_key), 0);
    CHECK (pyi_worker_new_curve (curve, "t", 0, 0, "bad", good.public_key,
                                 good.secret_key) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "Z85"), "%s", pyi_last_error ());
    CHECK (pyi_client_new_curve (curve, server_key, good.public_key, NULL) == NULL);

    TEST_BEGIN ("an allowed worker serves over CURVE, an allowed caller calls over CURVE");
    pyi_worker_t *remote = s_worker (broker, curve, "remote.echo", server_key, &good);
    CHECK_MSG (s_ready (remote, WAIT_MS), "the allowed worker got no READY");
    pyi_client_t *local = pyi_client_new (pyi_broker_inproc (broker));
    s_round_trip (local, remote, "remote.echo", 1);
    pyi_worker_t *nearby = s_worker (broker, pyi_broker_inproc (broker), "local.echo", NULL,
                                     NULL);
    CHECK (s_ready (nearby, WAIT_MS));
    pyi_client_t *far = pyi_client_new_curve (curve, server_key, caller.public_key,
                                              caller.secret_key);
    CHECK_MSG (far, "%s", pyi_last_error ());
    s_round_trip (far, nearby, "local.echo", 2);
    s_round_trip (far, remote, "remote.echo", 3);

    TEST_BEGIN ("strangers are never seen");
    int before = s_workers (broker);
    pyi_worker_t *stranger = s_worker (broker, curve, "stranger", server_key, &other);
    pyi_worker_t *naked = s_worker (broker, curve, "naked", NULL, NULL);
    s_keys_t fake_server = s_keys ();
    pyi_worker_t *fooled = s_worker (broker, curve, "fooled", fake_server.public_key, &good);
    CHECK_MSG (!s_ready (stranger, SILENCE_MS), "a worker with a key not allowed got READY");
    CHECK_MSG (!s_ready (naked, 100), "a worker without CURVE got READY");
    CHECK_MSG (!s_ready (fooled, 100), "a worker with the wrong server key got READY");
    CHECK_INT (s_workers (broker), before);
    pyi_client_t *probe = pyi_client_new (pyi_broker_inproc (broker));
    CHECK_INT (pyi_client_request (probe, "stranger", 9, 0, NULL), 0);
    pyi_msg_t *answer = pyi_client_recv (probe, WAIT_MS);
    CHECK (answer && pyi_msg_code (answer) == PYI_ERR_UNKNOWN_SERVICE);
    pyi_msg_destroy (&answer);
    pyi_worker_destroy (&stranger);
    pyi_worker_destroy (&naked);
    pyi_worker_destroy (&fooled);

    TEST_BEGIN ("plain endpoints stay plain");
    const char *plains [] = { plain_before, plain_after };
    for (int i = 0; i < 2; i++) {
        char service [32];
        snprintf (service, sizeof service, "plain.%d", i);
        pyi_worker_t *worker = s_worker (broker, plains [i], service, NULL, NULL);
        CHECK_MSG (s_ready (worker, WAIT_MS), "plain worker on %s", plains [i]);
        s_round_trip (local, worker, service, 10 + (uint64_t) i);
        pyi_worker_destroy (&worker);
    }

    TEST_BEGIN ("tensors cross to a CURVE peer inline, made so by the sender");
    pyi_region_t *region = pyi_region_new (64);
    CHECK (region);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    memset (pyi_region_data (region), 7, 64);
    int64_t shape [1] = { 64 };
    DLTensor t = { pyi_region_data (region), { kDLCPU, 0 }, 1, { kDLUInt, 8, 1 }, shape, NULL,
                   0 };
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    CHECK_INT (pyi_tensor_encode (&t, body), 0);
    CHECK_INT (pyi_client_request (local, "remote.echo", 19, 0, &body), 0);
    answer = pyi_client_recv (local, WAIT_MS);     /* shared memory: refused */
    CHECK (answer && pyi_msg_code (answer) == PYI_ERR_INLINE);
    pyi_msg_destroy (&answer);
    CHECK_INT (pyi_region_inflight (region), 0);
    body = pyi_msg_new (PYI_REQUEST);
    CHECK_INT (pyi_tensor_encode (&t, body), 0);
    CHECK_INT (pyi_tensor_inline (body, 0), 0);
    CHECK_INT (pyi_client_request (local, "remote.echo", 20, 0, &body), 0);
    pyi_msg_t *request = pyi_worker_recv (remote, WAIT_MS);
    CHECK (request && pyi_msg_frames (request) == 1);
    DLManagedTensor *m = pyi_tensor_decode (pyi_msg_frame_data (request, 0),
                                            pyi_msg_frame_size (request, 0));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (m->dl_tensor.data != pyi_region_data (region));
    CHECK_INT (((uint8_t *) m->dl_tensor.data) [63], 7);
    m->deleter (m);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_region_release (&region);
    pyi_msg_destroy (&request);

    TEST_BEGIN ("one broker per process has CURVE endpoints");
    pyi_broker_t *second = pyi_broker_new ();
    CHECK (second);
    CHECK (pyi_broker_bind_curve (second, "tcp://127.0.0.1:*") == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "another broker"), "%s", pyi_last_error ());
    pyi_broker_destroy (&second);

    pyi_client_destroy (&probe);
    pyi_client_destroy (&far);
    pyi_client_destroy (&local);
    pyi_worker_destroy (&nearby);
    pyi_worker_destroy (&remote);
    free (plain_before);
    free (plain_after);
    free (curve);
    pyi_broker_destroy (&broker);

    TEST_BEGIN ("the next broker binds CURVE at once after one is destroyed");
    /*  Each with a CURVE caller still connected when it goes (its ZAP
        handler then has peers: closing alone frees the endpoint late). */
    enum { ROUNDS = 10 };
    pyi_client_t *callers [ROUNDS];
    for (int i = 0; i < ROUNDS; i++) {
        pyi_broker_t *next = pyi_broker_new ();
        CHECK (next);
        char *bound = pyi_broker_bind_curve (next, "tcp://127.0.0.1:*");
        CHECK_MSG (bound, "round %d: %s", i, pyi_last_error ());
        CHECK_INT (pyi_broker_allow_key (next, caller.public_key), 0);
        callers [i] = pyi_client_new_curve (bound, pyi_broker_curve_key (next),
                                            caller.public_key, caller.secret_key);
        CHECK (callers [i]);
        CHECK_INT (pyi_client_request (callers [i], "nobody", 1, 0, NULL), 0);
        pyi_msg_t *refused = pyi_client_recv (callers [i], WAIT_MS);
        CHECK (refused && pyi_msg_code (refused) == PYI_ERR_UNKNOWN_SERVICE);
        pyi_msg_destroy (&refused);
        free (bound);
        pyi_broker_destroy (&next);
    }
    for (int i = 0; i < ROUNDS; i++)
        pyi_client_destroy (&callers [i]);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_curve: OK\n");
    return 0;
}
