/*  test_router_failures: every failure is answered, at once, never with silence.

    "At once" is checked against AT_ONCE_MS (10 s), and the broker here
    gives up on a silent worker only after LIVENESS x HEARTBEAT_MS (60 s):
    an answer that waited for the heartbeat instead of coming at once
    fails by a wide margin, and a test thread starved for seconds (ASan
    on two shared vCPUs) neither fails an "at once" bound nor loses its
    workers. The one test of heartbeat loss shortens the heartbeat for
    itself (2 s), and the one of deadlines lengthens it (10 s ticks) so
    that a deadline that waited for a tick fails by a wide margin too.

    Guarantees checked:
    - a request to a service nobody offers gets ERROR UNKNOWN_SERVICE at
      once, with the caller's id and the service named;
    - an offer with a token never granted, for a service the token was not
      granted, with a token another live worker holds, or for a service
      another live worker offers is refused: ERROR (id 0, DENIED, service
      set) to the worker, event REFUSED, counted in `rejected`; the first
      worker keeps serving;
    - a worker that disconnects (pyi_worker_destroy) with requests in
      flight: each gets ERROR WORKER_LOST at once, event LOST comes, the
      service is no longer ready and later requests to it get WORKER_LOST
      at once; another worker may then offer it again;
    - a worker whose connection closed without DISCONNECT is found lost
      when the next request cannot be sent to it: that request and the
      ones in flight get WORKER_LOST at once, naming the service;
    - a worker that stops heartbeating (HEARTBEAT_MS 100, LIVENESS 20) is
      lost after heartbeat x liveness (never before 2 s after its last
      message; within AT_ONCE_MS after that), while one that keeps
      beating stays for longer: its requests get WORKER_LOST, it is
      counted in `disconnected` and told DISCONNECT when it wakes up;
    - deadline: timeout_ms 200 to a worker that never answers gives ERROR
      TIMEOUT no earlier than 200 ms, by its own timer (well before the
      next heartbeat tick, 10 s away), and the worker gets CANCEL for it;
      a late reply is not delivered; deadlines fire in deadline order; a
      request answered in time gets no TIMEOUT later;
    - pyi_client_cancel: the worker gets CANCEL, the late reply is not
      delivered, nothing is sent to the caller, an unknown id is harmless;
    - PYI_OPT_MAX_PENDING reached: ERROR BUSY at once, and requests pass
      again once one is answered;
    - a request id already in flight from the same caller is refused
      (MALFORMED) while the first one still completes;
    - an answer over the broker's size limit fails its call at once with
      ERROR TOO_LARGE to the caller (not silence until a deadline), and the
      worker keeps serving.
*/
#include "testutil.h"
#include <zmq.h>

#define WAIT_MS 20000          /* a message that must come: fails the test when it does not */
#define AT_ONCE_MS 10000        /* "at once": far below the heartbeat, far above a stall */
#define HEARTBEAT_MS 1000       /* the broker's, as by default */
#define LIVENESS 60             /* a silent worker is lost after 60 s */
#define LOSS_HEARTBEAT_MS 100   /* test_heartbeat_loss: lost after 2 s */
#define LOSS_LIVENESS 20
#define TICK_MS 10000           /* test_deadline: the heartbeat tick a deadline must not wait for */

static pyi_broker_t *s_broker;

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
#define CLIENT_GET(client, command) \
    s_expect (__FILE__, __LINE__, pyi_client_recv ((client), WAIT_MS), (command))

/*  Expect ERROR code for id on client. */
static void
s_expect_error (const char *file, int line, pyi_client_t *client, uint64_t id, int code,
                const char *service)
{
    pyi_msg_t *msg = s_expect (file, line, pyi_client_recv (client, WAIT_MS), PYI_ERROR);
    if (pyi_msg_code (msg) != code)
        s_fail (file, line, "expected ERROR %s, got ERROR %s (\"%s\")", pyi_error_name (code),
                pyi_error_name (pyi_msg_code (msg)), pyi_msg_text (msg));
    if (pyi_msg_id (msg) != id)
        s_fail (file, line, "ERROR for id %" PRIu64 ", expected %" PRIu64, pyi_msg_id (msg), id);
    if (service && strcmp (pyi_msg_service (msg), service))
        s_fail (file, line, "ERROR names service \"%s\", expected \"%s\"",
                pyi_msg_service (msg), service);
    if (!*pyi_msg_text (msg))
        s_fail (file, line, "ERROR without text");
    pyi_msg_destroy (&msg);
}
#define EXPECT_ERROR(client, id, code, service) \
    s_expect_error (__FILE__, __LINE__, (client), (id), (code), (service))

static pyi_worker_t *
s_worker_hb (const char *service, int heartbeat_ms, int liveness)
{
    char *token = pyi_broker_allow (s_broker, service, NULL);
    CHECK (token);
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_endpoint (s_broker), token,
                                           heartbeat_ms, liveness);
    free (token);
    CHECK (worker);
    CHECK_INT (pyi_worker_offer (worker, service), 0);
    pyi_msg_t *msg = WORKER_GET (worker, PYI_READY);
    CHECK_STR (pyi_msg_service_at (msg, 0), service);
    pyi_msg_destroy (&msg);
    return worker;
}

static pyi_worker_t *
s_worker (const char *service)
{
    return s_worker_hb (service, 0, 0);
}

/*  Receive one REQUEST at worker; returns the broker's id for it. */
static uint64_t
s_take_request (const char *file, int line, pyi_worker_t *worker)
{
    pyi_msg_t *msg = s_expect (file, line, pyi_worker_recv (worker, WAIT_MS), PYI_REQUEST);
    uint64_t id = pyi_msg_id (msg);
    pyi_msg_destroy (&msg);
    return id;
}
#define TAKE_REQUEST(worker) s_take_request (__FILE__, __LINE__, (worker))

static pyi_broker_stats_t
s_stats (void)
{
    pyi_broker_stats_t stats;
    CHECK_INT (pyi_broker_stats (s_broker, &stats), 0);
    return stats;
}

static void
test_unknown_service (pyi_client_t *client)
{
    TEST_BEGIN ("unknown service: ERROR UNKNOWN_SERVICE at once");
    int64_t start = t_now_ms ();
    CHECK_INT (pyi_client_request (client, "nobody.offers.this", 77, 0, NULL), 0);
    EXPECT_ERROR (client, 77, PYI_ERR_UNKNOWN_SERVICE, "nobody.offers.this");
    int64_t took = t_now_ms () - start;
    CHECK_MSG (took < AT_ONCE_MS, "UNKNOWN_SERVICE took %lld ms", (long long) took);
    /*  Also with a deadline set: the error is still immediate. */
    CHECK_INT (pyi_client_request (client, "nobody.offers.this", 78, 100000, NULL), 0);
    EXPECT_ERROR (client, 78, PYI_ERR_UNKNOWN_SERVICE, "nobody.offers.this");
}

/*  Offer service on a new worker with token; expect a refusal. */
static void
s_expect_refused (const char *file, int line, const char *token, const char *service,
                  bool valid_token)
{
    t_drain_events (s_broker);
    pyi_broker_stats_t before = s_stats ();
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_endpoint (s_broker), token, 0, 0);
    CHECK (worker);
    CHECK_INT (pyi_worker_offer (worker, service), 0);
    pyi_msg_t *msg = s_expect (file, line, pyi_worker_recv (worker, WAIT_MS), PYI_ERROR);
    if (pyi_msg_id (msg) != 0 || pyi_msg_code (msg) != PYI_ERR_DENIED
    ||  strcmp (pyi_msg_service (msg), service))
        s_fail (file, line, "refusal: id %" PRIu64 " code %s service \"%s\"", pyi_msg_id (msg),
                pyi_error_name (pyi_msg_code (msg)), pyi_msg_service (msg));
    pyi_msg_destroy (&msg);
    pyi_event_t event;
    if (t_wait_event (s_broker, PYI_EVENT_REFUSED, service, &event, WAIT_MS))
        s_fail (file, line, "no REFUSED event for %s", service);
    if (!*event.text)
        s_fail (file, line, "REFUSED event without a reason");
    pyi_broker_stats_t after = s_stats ();
    if (after.rejected <= before.rejected)
        s_fail (file, line, "refusal not counted in rejected");
    /*  (A worker with a valid token may stay registered with no services;
        one without a valid token must not be registered at all.) */
    if (!valid_token && after.workers != before.workers)
        s_fail (file, line, "a refused worker was registered: %" PRIu64 " workers, %"
                PRIu64 " before", after.workers, before.workers);
    pyi_worker_destroy (&worker);
}
#define EXPECT_REFUSED(token, service, valid) \
    s_expect_refused (__FILE__, __LINE__, (token), (service), (valid))

static void
test_refused_offers (pyi_client_t *client)
{
    TEST_BEGIN ("offers without a valid grant are refused, evented and counted");
    pyi_worker_t *first = s_worker ("guarded");
    char *other_token = pyi_broker_allow (s_broker, "something.else", NULL);
    char *guarded_token = pyi_broker_allow (s_broker, "guarded", NULL);
    CHECK (other_token && guarded_token);

    EXPECT_REFUSED ("never-granted-token", "guarded", false);
    EXPECT_REFUSED ("", "guarded", false);
    EXPECT_REFUSED (other_token, "guarded", true);      /* not granted that name */
    EXPECT_REFUSED (guarded_token, "guarded", true);    /* granted, but offered already */

    /*  The first worker still serves. */
    CHECK_INT (pyi_client_request (client, "guarded", 5, 0, NULL), 0);
    uint64_t id = TAKE_REQUEST (first);
    CHECK_INT (pyi_worker_reply (first, id, NULL), 0);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 5);
    pyi_msg_destroy (&msg);

    /*  A second connection with the first worker's own token is refused:
        a token belongs to one live worker. */
    char *shared = pyi_broker_allow (s_broker, "shared.a", NULL);
    char *same = pyi_broker_allow (s_broker, "shared.b", shared);
    free (same);
    pyi_worker_t *holder = pyi_worker_new (pyi_broker_endpoint (s_broker), shared, 0, 0);
    CHECK_INT (pyi_worker_offer (holder, "shared.a"), 0);
    msg = WORKER_GET (holder, PYI_READY);
    pyi_msg_destroy (&msg);
    EXPECT_REFUSED (shared, "shared.b", false);        /* in use: not this one's */
    pyi_worker_destroy (&holder);
    free (shared);

    pyi_worker_destroy (&first);
    free (other_token);
    free (guarded_token);
}

static void
test_worker_disconnects (pyi_client_t *client)
{
    TEST_BEGIN ("a worker that disconnects: in-flight requests fail at once, service gone");
    pyi_worker_t *worker = s_worker ("leaving");
    t_drain_events (s_broker);
    for (uint64_t id = 1; id <= 3; id++)
        CHECK_INT (pyi_client_request (client, "leaving", id, 0, NULL), 0);
    for (int i = 0; i < 3; i++)
        TAKE_REQUEST (worker);
    int64_t start = t_now_ms ();
    pyi_worker_destroy (&worker);
    bool seen [4] = { false };
    for (int i = 0; i < 3; i++) {
        pyi_msg_t *msg = CLIENT_GET (client, PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
        CHECK_STR (pyi_msg_service (msg), "leaving");
        CHECK (strstr (pyi_msg_text (msg), "lost"));
        uint64_t id = pyi_msg_id (msg);
        CHECK (id >= 1 && id <= 3 && !seen [id]);
        seen [id] = true;
        pyi_msg_destroy (&msg);
    }
    int64_t took = t_now_ms () - start;
    CHECK_MSG (took < AT_ONCE_MS, "WORKER_LOST took %lld ms", (long long) took);
    pyi_event_t event;
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_LOST, "leaving", &event, WAIT_MS), 0);
    CHECK (*event.text);

    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "leaving", &stats), 0);
    CHECK (!stats.ready);
    CHECK_U64 (stats.in_flight, 0);
    CHECK_U64 (stats.errors, 3);

    /*  Later requests: WORKER_LOST (not UNKNOWN_SERVICE, not silence). */
    start = t_now_ms ();
    CHECK_INT (pyi_client_request (client, "leaving", 9, 0, NULL), 0);
    EXPECT_ERROR (client, 9, PYI_ERR_WORKER_LOST, "leaving");
    CHECK (t_now_ms () - start < AT_ONCE_MS);

    /*  A new worker may offer it again, and it serves. */
    worker = s_worker ("leaving");
    CHECK_INT (pyi_client_request (client, "leaving", 10, 0, NULL), 0);
    uint64_t id = TAKE_REQUEST (worker);
    CHECK_INT (pyi_worker_reply (worker, id, NULL), 0);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 10);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&worker);
}

static void
test_connection_closed (pyi_client_t *client)
{
    TEST_BEGIN ("a worker whose connection closed without DISCONNECT: lost on the next send");
    /*  A raw worker (no pyi_worker: nothing sends DISCONNECT for it). */
    void *ctx = zmq_ctx_new ();
    void *raw = zmq_socket (ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt (raw, ZMQ_LINGER, &linger, sizeof linger);
    CHECK_INT (zmq_connect (raw, pyi_broker_endpoint (s_broker)), 0);
    char *token = pyi_broker_allow (s_broker, "abrupt", NULL);
    pyi_msg_t *ready = pyi_msg_new (PYI_READY);
    pyi_msg_set_token (ready, token);
    pyi_msg_add_service (ready, "abrupt");
    free (token);
    CHECK_INT (pyi_msg_send (&ready, raw, NULL, 0, 0), 0);
    pyi_msg_t *msg = pyi_msg_recv (raw, false, 0, 0);
    CHECK (msg && pyi_msg_command (msg) == PYI_READY);
    pyi_msg_destroy (&msg);
    CHECK_INT (pyi_client_request (client, "abrupt", 1, 0, NULL), 0);
    msg = pyi_msg_recv (raw, false, 0, 0);
    CHECK (msg && pyi_msg_command (msg) == PYI_REQUEST);
    pyi_msg_destroy (&msg);
    zmq_close (raw);
    zmq_ctx_term (ctx);
    /*  libzmq drops the peer's pipe shortly after the close. */
    t_sleep_ms (500);
    int64_t start = t_now_ms ();
    CHECK_INT (pyi_client_request (client, "abrupt", 2, 0, NULL), 0);
    bool seen [3] = { false };
    for (int i = 0; i < 2; i++) {
        msg = CLIENT_GET (client, PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
        CHECK_STR (pyi_msg_service (msg), "abrupt");
        uint64_t id = pyi_msg_id (msg);
        CHECK (id == 1 || id == 2);
        CHECK (!seen [id]);
        seen [id] = true;
        pyi_msg_destroy (&msg);
    }
    int64_t took = t_now_ms () - start;
    CHECK_MSG (took < AT_ONCE_MS, "WORKER_LOST %lld ms after the send", (long long) took);
    CHECK (pyi_client_recv (client, 100) == NULL);      /* one answer each */
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "abrupt", &stats), 0);
    CHECK (!stats.ready);
    CHECK_U64 (stats.in_flight, 0);
}

static void
test_heartbeat_loss (pyi_client_t *client)
{
    TEST_BEGIN ("a worker that stops heartbeating is lost after heartbeat x liveness");
    const int64_t expiry = LOSS_HEARTBEAT_MS * LOSS_LIVENESS;
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, LOSS_HEARTBEAT_MS), 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_LIVENESS, LOSS_LIVENESS), 0);
    pyi_worker_t *worker = s_worker_hb ("sleepy", LOSS_HEARTBEAT_MS, LOSS_LIVENESS);
    pyi_worker_t *lively = s_worker_hb ("lively", LOSS_HEARTBEAT_MS, LOSS_LIVENESS);

    /*  While the worker keeps calling recv it stays, well past the expiry. */
    CHECK_INT (pyi_client_request (client, "sleepy", 1, 0, NULL), 0);
    CHECK_INT (pyi_client_request (client, "sleepy", 2, 0, NULL), 0);
    CHECK_INT (pyi_client_request (client, "sleepy", 3, 0, NULL), 0);
    uint64_t ids [3];
    for (int i = 0; i < 3; i++)
        ids [i] = TAKE_REQUEST (worker);
    int64_t end = t_now_ms () + 2 * expiry;
    while (t_now_ms () < end) {
        pyi_msg_t *msg = pyi_worker_recv (worker, 10);
        CHECK (msg == NULL);
        msg = pyi_worker_recv (lively, 10);
        CHECK (msg == NULL);
    }
    CHECK (pyi_client_recv (client, 0) == NULL);
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "sleepy", &stats), 0);
    CHECK (stats.ready);

    /*  Its last sign of life: a reply. Then silence. */
    pyi_broker_stats_t before = s_stats ();
    t_drain_events (s_broker);
    int64_t last = t_now_ms ();
    CHECK_INT (pyi_worker_reply (worker, ids [0], NULL), 0);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 1);
    pyi_msg_destroy (&msg);
    /*  The other requests fail when the broker gives up on it; meanwhile
        the lively worker keeps beating. */
    int failed = 0;
    int64_t lost_at = 0;
    end = t_now_ms () + WAIT_MS;
    while (failed < 2 && t_now_ms () < end) {
        pyi_msg_t *lively_msg = pyi_worker_recv (lively, 0);
        CHECK (lively_msg == NULL);
        msg = pyi_client_recv (client, 5);
        if (msg) {
            CHECK_CMD (msg, PYI_ERROR);
            CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
            CHECK (pyi_msg_id (msg) == 2 || pyi_msg_id (msg) == 3);
            CHECK_MSG (strstr (pyi_msg_text (msg), "heartbeat"), "text: %s", pyi_msg_text (msg));
            if (!failed)
                lost_at = t_now_ms ();
            failed++;
            pyi_msg_destroy (&msg);
        }
    }
    CHECK_INT (failed, 2);
    int64_t took = lost_at - last;
    fprintf (stderr, "   lost %lld ms after its last message\n", (long long) took);
    /*  Never before the expiry (a lower bound holds on any machine); then
        within AT_ONCE_MS: the heartbeat gave up on it, not something later. */
    CHECK_MSG (took >= expiry, "lost after %lld ms, before heartbeat x liveness",
               (long long) took);
    CHECK_MSG (took < expiry + AT_ONCE_MS, "lost after %lld ms", (long long) took);
    pyi_event_t event;
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_LOST, "sleepy", &event, WAIT_MS), 0);
    pyi_broker_stats_t after = s_stats ();
    CHECK_U64 (after.disconnected, before.disconnected + 1);
    CHECK_U64 (after.workers, before.workers - 1);
    CHECK_INT (pyi_broker_service_stats (s_broker, "sleepy", &stats), 0);
    CHECK (!stats.ready);

    /*  The lively one was never lost. */
    CHECK_INT (pyi_broker_service_stats (s_broker, "lively", &stats), 0);
    CHECK (stats.ready);

    /*  When the sleeper wakes up it is told it was cut off. */
    msg = WORKER_GET (worker, PYI_DISCONNECT);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
    pyi_msg_destroy (&msg);

    pyi_worker_destroy (&worker);
    pyi_worker_destroy (&lively);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, HEARTBEAT_MS), 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_LIVENESS, LIVENESS), 0);
}

static void
test_deadline (pyi_client_t *client)
{
    TEST_BEGIN ("deadline: TIMEOUT to the caller, CANCEL to the worker");
    /*  The next heartbeat tick is TICK_MS away: a deadline checked only
        at ticks would come that late. The worker hears from the broker
        that seldom, so it waits longer for it. */
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, TICK_MS), 0);
    pyi_worker_t *worker = s_worker_hb ("slow", 0, 10 * TICK_MS / HEARTBEAT_MS);

    int64_t start = t_now_ms ();
    CHECK_INT (pyi_client_request (client, "slow", 21, 200, NULL), 0);
    uint64_t id = TAKE_REQUEST (worker);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_ERROR);
    int64_t took = t_now_ms () - start;
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_TIMEOUT);
    CHECK_U64 (pyi_msg_id (msg), 21);
    CHECK_STR (pyi_msg_service (msg), "slow");
    pyi_msg_destroy (&msg);
    fprintf (stderr, "   TIMEOUT after %lld ms\n", (long long) took);
    CHECK_MSG (took >= 200, "TIMEOUT after %lld ms, before the 200 ms deadline", (long long) took);
    CHECK_MSG (took < TICK_MS / 2, "TIMEOUT after %lld ms: waited for the tick?",
               (long long) took);
    msg = WORKER_GET (worker, PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), id);
    pyi_msg_destroy (&msg);
    /*  The worker answers anyway: dropped. */
    pyi_msg_t *body = t_body_str ("too late");
    CHECK_INT (pyi_worker_reply (worker, id, &body), 0);
    CHECK (pyi_client_recv (client, 200) == NULL);
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "slow", &stats), 0);
    CHECK_U64 (stats.in_flight, 0);
    CHECK_U64 (stats.errors, 1);
    CHECK_U64 (stats.replies, 0);

    /*  Deadlines fire in deadline order, whatever the sending order. */
    start = t_now_ms ();
    CHECK_INT (pyi_client_request (client, "slow", 33, 300, NULL), 0);
    CHECK_INT (pyi_client_request (client, "slow", 31, 100, NULL), 0);
    CHECK_INT (pyi_client_request (client, "slow", 32, 200, NULL), 0);
    CHECK_INT (pyi_client_request (client, "slow", 34, 0, NULL), 0);     /* no deadline */
    for (int i = 0; i < 4; i++)
        TAKE_REQUEST (worker);
    for (uint64_t want = 31; want <= 33; want++) {
        msg = CLIENT_GET (client, PYI_ERROR);
        took = t_now_ms () - start;
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_TIMEOUT);
        CHECK_U64 (pyi_msg_id (msg), want);
        int64_t deadline = (int64_t) (want - 30) * 100;
        CHECK_MSG (took >= deadline && took < deadline + TICK_MS / 2,
                   "id %" PRIu64 " after %lld ms", want, (long long) took);
        pyi_msg_destroy (&msg);
    }
    for (int i = 0; i < 3; i++) {
        msg = WORKER_GET (worker, PYI_CANCEL);
        pyi_msg_destroy (&msg);
    }
    /*  The one without a deadline is still in flight. */
    CHECK_INT (pyi_broker_service_stats (s_broker, "slow", &stats), 0);
    CHECK_U64 (stats.in_flight, 1);

    /*  Answered in time (2 s to answer: room for a stalled thread): a
        REPLY, and no TIMEOUT once the deadline has passed. */
    const int64_t in_time = 2000;
    start = t_now_ms ();
    CHECK_INT (pyi_client_request (client, "slow", 40, (uint32_t) in_time, NULL), 0);
    id = TAKE_REQUEST (worker);
    CHECK_INT (pyi_worker_reply (worker, id, NULL), 0);
    msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 40);
    pyi_msg_destroy (&msg);
    int64_t past = start + in_time + 500 - t_now_ms ();
    CHECK (pyi_client_recv (client, past > 0 ? (int) past : 0) == NULL);
    CHECK (pyi_worker_recv (worker, 0) == NULL);     /* and no CANCEL */

    pyi_worker_destroy (&worker);
    msg = CLIENT_GET (client, PYI_ERROR);            /* request 34 */
    CHECK_U64 (pyi_msg_id (msg), 34);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
    pyi_msg_destroy (&msg);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, HEARTBEAT_MS), 0);
}

static void
test_cancel (pyi_client_t *client)
{
    TEST_BEGIN ("client cancel: CANCEL to the worker, late reply dropped");
    pyi_worker_t *worker = s_worker ("cancellable");
    CHECK_INT (pyi_client_request (client, "cancellable", 50, 0, NULL), 0);
    CHECK_INT (pyi_client_request (client, "cancellable", 51, 0, NULL), 0);
    uint64_t id50 = TAKE_REQUEST (worker);
    uint64_t id51 = TAKE_REQUEST (worker);
    CHECK_INT (pyi_client_cancel (client, 50), 0);
    pyi_msg_t *msg = WORKER_GET (worker, PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), id50);
    pyi_msg_destroy (&msg);
    pyi_msg_t *body = t_body_str ("late");
    CHECK_INT (pyi_worker_reply (worker, id50, &body), 0);
    body = t_body_str ("on time");
    CHECK_INT (pyi_worker_reply (worker, id51, &body), 0);
    /*  Only 51's reply comes; nothing at all for 50. */
    msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 51);
    CHECK (t_frame_is (msg, 0, "on time"));
    pyi_msg_destroy (&msg);
    CHECK (pyi_client_recv (client, 200) == NULL);

    /*  Cancelling an id not in flight (done, or never sent) is harmless. */
    CHECK_INT (pyi_client_cancel (client, 51), 0);
    CHECK_INT (pyi_client_cancel (client, 987654321), 0);
    CHECK (pyi_worker_recv (worker, 100) == NULL);
    CHECK (pyi_client_recv (client, 0) == NULL);
    /*  The same id may be used again after a cancel. */
    CHECK_INT (pyi_client_request (client, "cancellable", 50, 0, NULL), 0);
    uint64_t id = TAKE_REQUEST (worker);
    CHECK (id != id50);
    CHECK_INT (pyi_worker_reply (worker, id, NULL), 0);
    msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 50);
    pyi_msg_destroy (&msg);
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "cancellable", &stats), 0);
    CHECK_U64 (stats.in_flight, 0);
    CHECK_U64 (stats.replies, 2);
    pyi_worker_destroy (&worker);
}

static void
test_busy (pyi_client_t *client)
{
    TEST_BEGIN ("max pending reached: ERROR BUSY at once");
    CHECK_U64 (s_stats ().pending, 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_PENDING, 3), 0);
    pyi_worker_t *worker = s_worker ("crowded");
    int64_t start = t_now_ms ();
    for (uint64_t id = 1; id <= 5; id++)
        CHECK_INT (pyi_client_request (client, "crowded", id, 0, NULL), 0);
    EXPECT_ERROR (client, 4, PYI_ERR_BUSY, "crowded");
    EXPECT_ERROR (client, 5, PYI_ERR_BUSY, "crowded");
    CHECK (t_now_ms () - start < AT_ONCE_MS);
    uint64_t ids [3];
    for (int i = 0; i < 3; i++)
        ids [i] = TAKE_REQUEST (worker);
    CHECK (pyi_worker_recv (worker, 100) == NULL);
    CHECK_U64 (s_stats ().pending, 3);
    /*  One answered: room for one more. */
    CHECK_INT (pyi_worker_reply (worker, ids [0], NULL), 0);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 1);
    pyi_msg_destroy (&msg);
    CHECK_INT (pyi_client_request (client, "crowded", 6, 0, NULL), 0);
    uint64_t id6 = TAKE_REQUEST (worker);
    CHECK_INT (pyi_worker_reply (worker, ids [1], NULL), 0);
    CHECK_INT (pyi_worker_reply (worker, ids [2], NULL), 0);
    CHECK_INT (pyi_worker_reply (worker, id6, NULL), 0);
    for (int i = 0; i < 3; i++) {
        msg = CLIENT_GET (client, PYI_REPLY);
        pyi_msg_destroy (&msg);
    }
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_PENDING, 65536), 0);
    pyi_worker_destroy (&worker);
}

static void
test_duplicate_id (pyi_client_t *client)
{
    TEST_BEGIN ("a request id already in flight is refused, the first completes");
    pyi_worker_t *worker = s_worker ("dup");
    CHECK_INT (pyi_client_request (client, "dup", 600, 0, NULL), 0);
    CHECK_INT (pyi_client_request (client, "dup", 600, 0, NULL), 0);
    EXPECT_ERROR (client, 600, PYI_ERR_MALFORMED, NULL);
    uint64_t id = TAKE_REQUEST (worker);
    CHECK (pyi_worker_recv (worker, 100) == NULL);
    CHECK_INT (pyi_worker_reply (worker, id, NULL), 0);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 600);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&worker);
}

static void
test_answer_too_large (pyi_client_t *client)
{
    TEST_BEGIN ("an answer over the size limit: ERROR TOO_LARGE to the caller at once");
    const size_t limit = 64 * 1024;
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_MSG_SIZE, (int64_t) limit), 0);
    pyi_worker_t *worker = s_worker ("bulky");
    CHECK_INT (pyi_client_request (client, "bulky", 70, 0, NULL), 0);   /* no deadline */
    uint64_t id = TAKE_REQUEST (worker);
    char *big = calloc (1, 2 * limit);
    CHECK (big);
    pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_msg_append (body, big, 2 * limit), 0);
    free (big);
    int64_t start = t_now_ms ();
    CHECK_INT (pyi_worker_reply (worker, id, &body), 0);
    EXPECT_ERROR (client, 70, PYI_ERR_TOO_LARGE, "bulky");
    CHECK_MSG (t_now_ms () - start < AT_ONCE_MS, "TOO_LARGE after %lld ms",
               (long long) (t_now_ms () - start));
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "bulky", &stats), 0);
    CHECK_U64 (stats.in_flight, 0);
    /*  The worker is told too. */
    pyi_msg_t *told = WORKER_GET (worker, PYI_ERROR);
    CHECK_INT (pyi_msg_code (told), PYI_ERR_TOO_LARGE);
    CHECK_U64 (pyi_msg_id (told), id);
    pyi_msg_destroy (&told);
    /*  The worker still serves, and a small answer passes. */
    CHECK_INT (pyi_client_request (client, "bulky", 71, 0, NULL), 0);
    id = TAKE_REQUEST (worker);
    body = t_body_str ("small");
    CHECK_INT (pyi_worker_reply (worker, id, &body), 0);
    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 71);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&worker);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_MAX_MSG_SIZE, (int64_t) 512 << 20), 0);
}

int
main (void)
{
    t_setup_rundir ();
    s_broker = pyi_broker_new ();
    CHECK_MSG (s_broker, "pyi_broker_new: %s", pyi_last_error ());
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, HEARTBEAT_MS), 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_LIVENESS, LIVENESS), 0);
    pyi_client_t *client = pyi_client_new (pyi_broker_endpoint (s_broker));
    CHECK (client);
    test_unknown_service (client);
    test_refused_offers (client);
    test_worker_disconnects (client);
    test_connection_closed (client);
    test_heartbeat_loss (client);
    test_deadline (client);
    test_cancel (client);
    test_busy (client);
    test_duplicate_id (client);
    test_answer_too_large (client);
    CHECK (pyi_client_recv (client, 0) == NULL);
    pyi_client_destroy (&client);
    pyi_broker_destroy (&s_broker);
    fprintf (stderr, "test_router_failures: OK\n");
    return 0;
}
