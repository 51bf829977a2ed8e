/*  test_broker_cmd: the typed commands between the host thread and the
    broker thread (broker/pyi_broker_cmd.c), an internal class: this test
    compiles it in and sends them over an inproc PAIR pipe of its own.

    Guarantees checked:
    - every command crosses as one frame with its tag and its own
      arguments intact (strings and arrays cross as the caller's pointers,
      borrowed, not copied);
    - an answer crosses with its rc, its statistics and its text;
    - a frame that is not one whole command (too short, too long, or a
      multipart message) is refused, and the command after it reads
      correctly; so for answers.
*/
#include "testutil.h"
#include "pyi_broker_cmd.h"
#include <zmq.h>

typedef struct {
    void *ctx;
    void *host;                     /* the host thread's end */
    void *broker;                   /* the broker thread's end */
} s_pipe_t;

static s_pipe_t
s_pipe_new (void)
{
    s_pipe_t pipe;
    pipe.ctx = zmq_ctx_new ();
    pipe.host = zmq_socket (pipe.ctx, ZMQ_PAIR);
    pipe.broker = zmq_socket (pipe.ctx, ZMQ_PAIR);
    CHECK (pipe.ctx && pipe.host && pipe.broker);
    CHECK_INT (zmq_bind (pipe.broker, "inproc://test-broker-cmd"), 0);
    CHECK_INT (zmq_connect (pipe.host, "inproc://test-broker-cmd"), 0);
    return pipe;
}

static void
s_pipe_destroy (s_pipe_t *pipe)
{
    zmq_close (pipe->host);
    zmq_close (pipe->broker);
    zmq_ctx_term (pipe->ctx);
}

/*  Send cmd from the host's end, read it at the broker's. */
static pyi_broker_cmd_t
s_cross (s_pipe_t *pipe, const pyi_broker_cmd_t *cmd)
{
    pyi_broker_cmd_t got;
    memset (&got, 0xa5, sizeof got);
    CHECK_INT (pyi_broker_cmd_send (pipe->host, cmd), 0);
    CHECK_INT (pyi_broker_cmd_recv (pipe->broker, &got), 0);
    CHECK_INT (got.type, cmd->type);
    return got;
}

static void
test_commands (s_pipe_t *pipe)
{
    TEST_BEGIN ("every command crosses with its own arguments");
    const char *endpoint = "tcp://127.0.0.1:*";
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_BIND };
    cmd.args.bind.endpoint = endpoint;
    CHECK (s_cross (pipe, &cmd).args.bind.endpoint == endpoint);
    cmd.type = PYI_BROKER_BIND_CURVE;
    CHECK (s_cross (pipe, &cmd).args.bind.endpoint == endpoint);

    const char *key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_ALLOW_KEY };
    cmd.args.allow_key.public_key = key;
    CHECK (s_cross (pipe, &cmd).args.allow_key.public_key == key);

    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_SET };
    cmd.args.set.option = PYI_OPT_GRACE_MS;
    cmd.args.set.value = INT64_MAX;
    pyi_broker_cmd_t got = s_cross (pipe, &cmd);
    CHECK_INT (got.args.set.option, PYI_OPT_GRACE_MS);
    CHECK (got.args.set.value == INT64_MAX);

    const char *service = "svc", *token = "0123456789abcdef0123456789abcdef";
    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_ALLOW };
    cmd.args.allow.service = service;
    cmd.args.allow.token = token;
    got = s_cross (pipe, &cmd);
    CHECK (got.args.allow.service == service && got.args.allow.token == token);

    const char *const argv [] = { "/bin/true", NULL };
    const char *const envp [] = { "A=1", NULL };
    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_SPAWN };
    cmd.args.spawn = (pyi_spawn_args_t) { service, argv, envp, 7, -1 };
    got = s_cross (pipe, &cmd);
    CHECK (got.args.spawn.service == service);
    CHECK (got.args.spawn.argv == argv && got.args.spawn.envp == envp);
    CHECK_INT (got.args.spawn.stdout_fd, 7);
    CHECK_INT (got.args.spawn.stderr_fd, -1);

    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_SERVICE_STATS };
    cmd.args.service_stats.service = service;
    CHECK (s_cross (pipe, &cmd).args.service_stats.service == service);
    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_STATS };
    s_cross (pipe, &cmd);
    cmd = (pyi_broker_cmd_t) { .type = PYI_BROKER_TERM };
    s_cross (pipe, &cmd);
}

static void
test_answers (s_pipe_t *pipe)
{
    TEST_BEGIN ("answers cross with rc, statistics and text");
    pyi_broker_answer_t answer, got;
    memset (&answer, 0, sizeof answer);
    answer.rc = 4242;
    answer.stats.service.requests = UINT64_MAX;
    answer.stats.service.pid = 4242;
    answer.stats.service.ready = true;
    snprintf (answer.text, sizeof answer.text, "tcp://127.0.0.1:5555");
    CHECK_INT (pyi_broker_answer_send (pipe->broker, &answer), 0);
    CHECK_INT (pyi_broker_answer_recv (pipe->host, &got), 0);
    CHECK_INT (got.rc, 4242);
    CHECK_U64 (got.stats.service.requests, UINT64_MAX);
    CHECK_INT (got.stats.service.pid, 4242);
    CHECK (got.stats.service.ready);
    CHECK_STR (got.text, "tcp://127.0.0.1:5555");

    memset (&answer, 0, sizeof answer);
    answer.rc = -1;
    answer.stats.broker.messages = 12;
    answer.stats.broker.processes = 3;
    memset (answer.text, 'e', sizeof answer.text - 1);
    CHECK_INT (pyi_broker_answer_send (pipe->broker, &answer), 0);
    CHECK_INT (pyi_broker_answer_recv (pipe->host, &got), 0);
    CHECK_INT (got.rc, -1);
    CHECK_U64 (got.stats.broker.messages, 12);
    CHECK_U64 (got.stats.broker.processes, 3);
    CHECK_INT (strlen (got.text), sizeof answer.text - 1);
}

static void
test_refused (s_pipe_t *pipe)
{
    TEST_BEGIN ("frames that are not one whole command are refused");
    pyi_broker_cmd_t cmd = { .type = PYI_BROKER_STATS }, got;
    uint8_t big [sizeof (pyi_broker_cmd_t) + 1] = { 0 };
    CHECK_INT (zmq_send (pipe->host, "x", 1, 0), 1);
    CHECK_INT (pyi_broker_cmd_recv (pipe->broker, &got), -1);
    CHECK_INT (zmq_send (pipe->host, big, sizeof big, 0), (int) sizeof big);
    CHECK_INT (pyi_broker_cmd_recv (pipe->broker, &got), -1);
    CHECK_INT (zmq_send (pipe->host, &cmd, sizeof cmd, ZMQ_SNDMORE), (int) sizeof cmd);
    CHECK_INT (zmq_send (pipe->host, &cmd, sizeof cmd, 0), (int) sizeof cmd);
    CHECK_INT (pyi_broker_cmd_recv (pipe->broker, &got), -1);
    cmd.type = PYI_BROKER_TERM;
    CHECK_INT (pyi_broker_cmd_send (pipe->host, &cmd), 0);
    CHECK_INT (pyi_broker_cmd_recv (pipe->broker, &got), 0);
    CHECK_INT (got.type, PYI_BROKER_TERM);

    pyi_broker_answer_t answer = { .rc = 7 }, back;
    CHECK_INT (zmq_send (pipe->broker, "short", 5, 0), 5);
    CHECK_INT (pyi_broker_answer_recv (pipe->host, &back), -1);
    CHECK_INT (pyi_broker_answer_send (pipe->broker, &answer), 0);
    CHECK_INT (pyi_broker_answer_recv (pipe->host, &back), 0);
    CHECK_INT (back.rc, 7);
}

int
main (void)
{
    s_pipe_t pipe = s_pipe_new ();
    test_commands (&pipe);
    test_answers (&pipe);
    test_refused (&pipe);
    s_pipe_destroy (&pipe);
    fprintf (stderr, "test_broker_cmd: OK\n");
    return 0;
}
