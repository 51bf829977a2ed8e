/*  test_trace: the broker's hop recording (pyi_broker_trace_start/stop,
    pyi_trace_t) through a real broker, client and worker.

    Guarantees checked:
    - off by default: stopping without a start gives NULL, and traffic
      before a start is not recorded;
    - on, each request forwarded to its worker is one PYI_HOP_REQUEST hop
      and each answer (REPLY or ERROR) forwarded back one PYI_HOP_ANSWER
      hop, in order, with the broker's request id (the one the worker saw),
      the caller's id, the service, and CLOCK_MONOTONIC times with
      received <= forwarded, all within the test's own clock readings;
    - the recording stops at its capacity and counts the hops past it as
      dropped; stop hands the recording over once (then NULL) and nothing
      is recorded after it;
    - a capacity of 0 or above PYI_TRACE_MAX_HOPS is refused; hop () past
      the end is NULL; destroy is safe on NULL.
*/
#include "testutil.h"
#include <time.h>

static int64_t
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*  A worker offering service, registered (READY seen). */
static pyi_worker_t *
s_worker (pyi_broker_t *broker, const char *service)
{
    char *token = pyi_broker_allow (broker, service, NULL);
    CHECK (token);
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_inproc (broker), token, 0, 0);
    free (token);
    CHECK (worker);
    CHECK_INT (pyi_worker_offer (worker, service), 0);
    pyi_msg_t *msg = pyi_worker_recv (worker, 5000);
    CHECK_CMD (msg, PYI_READY);
    pyi_msg_destroy (&msg);
    return worker;
}

/*  One call with caller id id: answered by REPLY, or by ERROR when fail;
    the broker's id the worker saw. */
static uint64_t
s_call (pyi_client_t *client, pyi_worker_t *worker, const char *service, uint64_t id,
        bool fail)
{
    CHECK_INT (pyi_client_request (client, service, id, 0, NULL), 0);
    pyi_msg_t *msg = pyi_worker_recv (worker, 5000);
    CHECK_CMD (msg, PYI_REQUEST);
    uint64_t rid = pyi_msg_id (msg);
    pyi_msg_destroy (&msg);
    if (fail)
        CHECK_INT (pyi_worker_error (worker, rid, PYI_ERR_APPLICATION, "no", NULL), 0);
    else
        CHECK_INT (pyi_worker_reply (worker, rid, NULL), 0);
    msg = pyi_client_recv (client, 5000);
    CHECK (msg);
    CHECK_U64 (pyi_msg_id (msg), id);
    pyi_msg_destroy (&msg);
    return rid;
}

static void
s_check_hop (const pyi_trace_t *trace, size_t index, int kind, uint64_t rid, uint64_t id,
             const char *service, int64_t after, int64_t before, int64_t stopped)
{
    const pyi_hop_t *hop = pyi_trace_hop (trace, index);
    CHECK (hop);
    CHECK_INT (hop->kind, kind);
    CHECK_U64 (hop->rid, rid);
    CHECK_U64 (hop->caller_id, id);
    CHECK_STR (hop->service, service);
    /*  Received before the caller had its answer (before); forwarded when
        the send returned, which may be after the peer had it, but before
        the broker thread took the stop command (stopped). */
    CHECK (after <= hop->received_ns);
    CHECK (hop->received_ns <= before);
    CHECK (hop->received_ns <= hop->forwarded_ns);
    CHECK (hop->forwarded_ns <= stopped);
}

static void
test_hops (void)
{
    TEST_BEGIN ("requests and answers are recorded while on, in order");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    pyi_worker_t *worker = s_worker (broker, "svc");
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    CHECK (client);
    CHECK (pyi_broker_trace_stop (broker) == NULL);     /* off by default */
    s_call (client, worker, "svc", 1, false);           /* not recorded */

    CHECK_INT (pyi_broker_trace_start (broker, 16), 0);
    int64_t t0 = s_now ();
    uint64_t r1 = s_call (client, worker, "svc", 7, false);
    uint64_t r2 = s_call (client, worker, "svc", 8, true);
    int64_t t1 = s_now ();
    pyi_trace_t *trace = pyi_broker_trace_stop (broker);
    int64_t t2 = s_now ();
    CHECK (trace);
    CHECK_INT ((int) pyi_trace_size (trace), 4);
    CHECK_U64 (pyi_trace_dropped (trace), 0);
    s_check_hop (trace, 0, PYI_HOP_REQUEST, r1, 7, "svc", t0, t1, t2);
    s_check_hop (trace, 1, PYI_HOP_ANSWER, r1, 7, "svc", t0, t1, t2);
    s_check_hop (trace, 2, PYI_HOP_REQUEST, r2, 8, "svc", t0, t1, t2);
    s_check_hop (trace, 3, PYI_HOP_ANSWER, r2, 8, "svc", t0, t1, t2);
    CHECK (pyi_trace_hop (trace, 4) == NULL);
    pyi_trace_destroy (&trace);
    CHECK (trace == NULL);

    s_call (client, worker, "svc", 9, false);           /* stopped: not recorded */
    CHECK (pyi_broker_trace_stop (broker) == NULL);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
}

static void
test_capacity (void)
{
    TEST_BEGIN ("hops past the capacity are counted, not kept; bad capacities refused");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    pyi_worker_t *worker = s_worker (broker, "svc");
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    CHECK (client);
    CHECK_INT (pyi_broker_trace_start (broker, 0), -1);
    CHECK_INT (pyi_broker_trace_start (broker, PYI_TRACE_MAX_HOPS + 1), -1);
    CHECK (pyi_broker_trace_stop (broker) == NULL);     /* the refusals started nothing */
    CHECK_INT (pyi_broker_trace_start (broker, 3), 0);
    for (uint64_t id = 1; id <= 5; id++)
        s_call (client, worker, "svc", id, false);
    pyi_trace_t *trace = pyi_broker_trace_stop (broker);
    CHECK (trace);
    CHECK_INT ((int) pyi_trace_size (trace), 3);
    CHECK_U64 (pyi_trace_dropped (trace), 7);
    pyi_trace_destroy (&trace);
    pyi_trace_destroy (&trace);
    pyi_trace_destroy (NULL);
    /*  A recording underway when the broker ends is freed with it. */
    CHECK_INT (pyi_broker_trace_start (broker, 8), 0);
    s_call (client, worker, "svc", 6, false);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
}

int
main (void)
{
    t_setup_rundir ();
    test_hops ();
    test_capacity ();
    fprintf (stderr, "test_trace: OK\n");
    return 0;
}
