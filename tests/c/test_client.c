/*  test_client: the caller's end of a connection (pyi_client) and the
    DEALER set-up it shares with pyi_worker (pyi_dealer), against a fake
    broker (a raw libzmq ROUTER, testpeer.h).

    Guarantees checked:
    - pyi_client_request sends REQUEST with the caller's id, the service
      and the timeout, and takes the body (the caller's pointer is nulled),
      whatever command the body was built for; with no body it sends a
      body-less REQUEST;
    - pyi_client_cancel sends CANCEL with the id;
    - pyi_client_recv hands out REPLY, ERROR and DISCONNECT in the order
      they came, and drops anything else (REQUEST, READY, CANCEL,
      HEARTBEAT, a malformed frame);
    - pyi_client_recv (0) returns at once when nothing is waiting; with a
      timeout it waits that long (not less; and not without end: within
      AT_ONCE_MS more, 10 s, a bound no stalled machine reaches) and
      returns NULL;
    - pyi_client_fd is a descriptor;
    - pyi_client_new refuses an endpoint it cannot connect to,
      pyi_client_new_curve a missing key, and the DEALER set-up malformed
      keys, saying why; destroy is safe on NULL.
*/
#include "testpeer.h"

#define WAIT_MS 5000
#define SHORT_MS 200                /* a timeout short enough to wait for */
#define AT_ONCE_MS 10000            /* an upper bound no stalled machine reaches */

static pyi_msg_t *
s_expect (const char *file, int line, pyi_msg_t *msg, int command)
{
    if (!msg)
        s_fail (file, line, "expected %s, got nothing", pyi_command_name (command));
    if ((int) pyi_msg_command (msg) != command)
        s_fail (file, line, "expected %s, got %s", pyi_command_name (command),
                pyi_command_name (pyi_msg_command (msg)));
    return msg;
}
#define CLIENT_GET(client, command) \
    s_expect (__FILE__, __LINE__, pyi_client_recv ((client), WAIT_MS), (command))
#define FAKE_GET(fake, command) \
    s_expect (__FILE__, __LINE__, t_fake_recv ((fake), WAIT_MS, true), (command))

static void
test_requests (t_fake_t *fake, pyi_client_t *client)
{
    TEST_BEGIN ("REQUEST and CANCEL carry the caller's id, service and timeout");
    pyi_msg_t *body = t_body_str ("args");
    pyi_msg_set_command (body, PYI_ERROR);      /* built for another command */
    CHECK_INT (pyi_client_request (client, "svc", UINT64_MAX, 1500, &body), 0);
    CHECK (body == NULL);
    pyi_msg_t *msg = FAKE_GET (fake, PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (msg), UINT64_MAX);
    CHECK_STR (pyi_msg_service (msg), "svc");
    CHECK_U64 (pyi_msg_timeout (msg), 1500);
    CHECK_INT (pyi_msg_frames (msg), 1);
    CHECK (t_frame_is (msg, 0, "args"));
    pyi_msg_destroy (&msg);

    CHECK_INT (pyi_client_request (client, "other", 0, 0, NULL), 0);
    msg = FAKE_GET (fake, PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (msg), 0);
    CHECK_STR (pyi_msg_service (msg), "other");
    CHECK_U64 (pyi_msg_timeout (msg), 0);
    CHECK_INT (pyi_msg_frames (msg), 0);
    pyi_msg_destroy (&msg);

    CHECK_INT (pyi_client_cancel (client, 42), 0);
    msg = FAKE_GET (fake, PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), 42);
    pyi_msg_destroy (&msg);
}

static void
test_receive (t_fake_t *fake, pyi_client_t *client)
{
    TEST_BEGIN ("recv hands out REPLY, ERROR and DISCONNECT only, in order");
    t_fake_send_command (fake, PYI_REQUEST, 1);
    t_fake_send_command (fake, PYI_READY, 2);
    t_fake_send_command (fake, PYI_CANCEL, 3);
    t_fake_send_command (fake, PYI_HEARTBEAT, 4);
    t_fake_send_raw (fake, "\xc1", 1);
    pyi_msg_t *reply = t_body_str ("result");
    pyi_msg_set_id (reply, 5);
    t_fake_send (fake, &reply);
    pyi_msg_t *error = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (error, 6);
    pyi_msg_set_code (error, PYI_ERR_TIMEOUT);
    pyi_msg_set_text (error, "too late");
    t_fake_send (fake, &error);
    t_fake_send_command (fake, PYI_DISCONNECT, 0);

    pyi_msg_t *msg = CLIENT_GET (client, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (msg), 5);
    CHECK (t_frame_is (msg, 0, "result"));
    pyi_msg_destroy (&msg);
    msg = CLIENT_GET (client, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), 6);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_TIMEOUT);
    CHECK_STR (pyi_msg_text (msg), "too late");
    pyi_msg_destroy (&msg);
    msg = CLIENT_GET (client, PYI_DISCONNECT);
    pyi_msg_destroy (&msg);
}

static void
test_timeouts (pyi_client_t *client)
{
    TEST_BEGIN ("recv waits as long as asked, and no longer");
    int64_t start = t_now_ms ();
    CHECK (pyi_client_recv (client, 0) == NULL);
    CHECK_MSG (t_now_ms () - start < AT_ONCE_MS, "recv (0) took %lld ms",
               (long long) (t_now_ms () - start));
    start = t_now_ms ();
    CHECK (pyi_client_recv (client, SHORT_MS) == NULL);
    int64_t took = t_now_ms () - start;
    CHECK_MSG (took >= SHORT_MS - 1 && took < SHORT_MS + AT_ONCE_MS, "recv (%d) took %lld ms",
               SHORT_MS, (long long) took);
    CHECK (pyi_client_fd (client) >= 0);
}

static void
test_refusals (void)
{
    TEST_BEGIN ("bad endpoints and keys are refused with a reason");
    CHECK (pyi_client_new (NULL) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "cannot connect"), "%s", pyi_last_error ());
    CHECK (pyi_client_new ("bogus://x") == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "bogus://x"), "%s", pyi_last_error ());
    char public_key [41], secret_key [41];
    CHECK_INT (pyi_curve_keypair (public_key, secret_key), 0);
    CHECK (pyi_client_new_curve ("tcp://127.0.0.1:1", NULL, public_key, secret_key) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "needs the server, public and secret keys"),
               "%s", pyi_last_error ());
    CHECK (pyi_client_new_curve ("tcp://127.0.0.1:1", "short", public_key, secret_key) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "40 characters of Z85"), "%s", pyi_last_error ());
    pyi_client_destroy (NULL);
    pyi_client_t *none = NULL;
    pyi_client_destroy (&none);
}

int
main (void)
{
    t_fake_t fake;
    t_fake_start (&fake);
    pyi_client_t *client = pyi_client_new (fake.endpoint);
    CHECK_MSG (client, "%s", pyi_last_error ());
    test_requests (&fake, client);
    test_receive (&fake, client);
    test_timeouts (client);
    pyi_client_destroy (&client);
    CHECK (client == NULL);
    t_fake_stop (&fake);
    test_refusals ();
    fprintf (stderr, "test_client: OK\n");
    return 0;
}
