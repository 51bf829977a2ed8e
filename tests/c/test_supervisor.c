/*  test_supervisor: worker processes that the broker spawns and supervises.

    Uses pyi_test_worker (pyi_test_worker.c) and pyi_test_host
    (pyi_test_host.c).

    "At once" is checked against AT_ONCE_MS (10 s), and the broker here
    gives up on a silent worker only after LIVENESS x 1 s (60 s): a death
    seen by the heartbeat instead of the pidfd, or a worker that leaves by
    itself when its broker goes silent instead of by PR_SET_PDEATHSIG,
    fails by a wide margin, while a machine that stalls the test for
    seconds (ASan on two shared vCPUs) fails no bound. The test of a hung
    worker shortens the heartbeat for itself (100 ms x 20).

    Guarantees checked:
    - pyi_broker_spawn starts the program with PYI_ENDPOINT, PYI_SERVICE,
      PYI_TOKEN and PYI_PARENT_PID: it offers its service and EVENT_READY
      names its pid; the service's stats carry the pid; its token serves
      no second connection and dies with the process; a program found on
      PATH starts too; a program that does not exist gives -1;
    - a worker that crashes (SIGSEGV) while requests are in flight: each
      gets ERROR WORKER_LOST at once (by the pidfd) naming the signal, EVENT_LOST
      and EVENT_EXIT (status -SIGSEGV) arrive, the process is reaped; the
      same for abort () (-SIGABRT) and for exit (3) (status 3);
    - a hung worker (stops calling recv) is lost after heartbeat x
      liveness (not before), its requests fail, and it is killed (EXIT
      -SIGKILL), while one that beats stays for twice as long;
    - the event fd becomes readable when an event is waiting;
    - stdout_fd and stderr_fd become the child's standard output and error;
      an explicit envp is the child's environment, with the PYI_ variables
      added over any of the same name;
    - destroying the broker leaves no child process, not even a zombie:
      children that leave on DISCONNECT are reaped, children that do not
      are killed after the grace period, and a destroy does not wait for
      a hung child (which never leaves by itself) past the grace period
      (plus AT_ONCE_MS);
    - a child started with a PYI_PARENT_PID that is not its parent exits
      at once (pyi_worker_bind_to_parent), and outside a spawned process
      pyi_worker_bind_to_parent returns -1;
    - a host killed with SIGKILL leaves no orphan: its worker dies at once
      (PR_SET_PDEATHSIG; it would leave by itself only after 60 s of
      broker silence), and the next host removes the runtime directory it
      left behind.
*/
#include "testutil.h"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#define WAIT_MS 20000          /* a message that must come: fails the test when it does not */
#define AT_ONCE_MS 10000        /* "at once": far below the heartbeat, far above a stall */
#define HEARTBEAT_MS 1000       /* the broker's, as by default */
#define LIVENESS 60             /* a silent worker is lost after 60 s */
#define HANG_HEARTBEAT "100"    /* test_hang: lost after 2 s */
#define HANG_LIVENESS "20"

extern char **environ;
static pyi_broker_t *s_broker;
static pyi_client_t *s_client;
static uint64_t s_next_id = 1;

/*  True when pid is gone entirely: no process, no zombie. */
static bool
s_pid_gone (pid_t pid)
{
    return kill (pid, 0) == -1 && errno == ESRCH;
}

/*  Spawn the test worker for service; wait for its READY event. */
static int
s_spawn (const char *service, int out_fd, int err_fd)
{
    const char *argv [] = { PYI_TEST_WORKER, NULL };
    t_drain_events (s_broker);
    /*  Keep the test's output clean of the workers' "ready" lines. */
    static int devnull = -1;
    if (devnull == -1)
        devnull = open ("/dev/null", O_WRONLY | O_CLOEXEC);
    int pid = pyi_broker_spawn (s_broker, service, argv, NULL,
                                out_fd == -1 ? devnull : out_fd, err_fd);
    CHECK_MSG (pid > 0, "spawn: %s", pyi_last_error ());
    pyi_event_t event;
    CHECK_MSG (t_wait_event (s_broker, PYI_EVENT_READY, service, &event, WAIT_MS) == 0,
               "no READY from the spawned %s", service);
    CHECK_INT (event.pid, pid);
    return pid;
}

/*  Send a command to service; returns the request id. */
static uint64_t
s_send (const char *service, const char *command)
{
    uint64_t id = s_next_id++;
    pyi_msg_t *body = t_body_str (command);
    CHECK_INT (pyi_client_request (s_client, service, id, 0, &body), 0);
    return id;
}

/*  Expect the next answer on the client: command, for id. */
static pyi_msg_t *
s_answer (const char *file, int line, uint64_t id, int command)
{
    pyi_msg_t *msg = pyi_client_recv (s_client, WAIT_MS);
    if (!msg)
        s_fail (file, line, "no answer for request %" PRIu64, id);
    if ((int) pyi_msg_command (msg) != command || pyi_msg_id (msg) != id)
        s_fail (file, line, "got %s %s (\"%s\") for id %" PRIu64 ", expected %s for %" PRIu64,
                pyi_command_name (pyi_msg_command (msg)), pyi_error_name (pyi_msg_code (msg)),
                pyi_msg_text (msg), pyi_msg_id (msg), pyi_command_name (command), id);
    return msg;
}
#define ANSWER(id, command) s_answer (__FILE__, __LINE__, (id), (command))

static void
test_spawn_and_serve (void)
{
    TEST_BEGIN ("spawn: READY with pid, requests served, stats carry the pid");
    int pid = s_spawn ("proc.echo", -1, -1);
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "proc.echo", &stats), 0);
    CHECK (stats.ready);
    CHECK_INT (stats.pid, pid);
    pyi_broker_stats_t bstats;
    CHECK_INT (pyi_broker_stats (s_broker, &bstats), 0);
    CHECK_U64 (bstats.processes, 1);

    uint64_t id = s_send ("proc.echo", "pid");
    pyi_msg_t *msg = ANSWER (id, PYI_REPLY);
    char text [32];
    CHECK_INT (atoi (t_frame_str (msg, 0, text, sizeof text)), pid);
    pyi_msg_destroy (&msg);
    id = s_send ("proc.echo", "echo");
    msg = ANSWER (id, PYI_REPLY);
    CHECK (t_frame_is (msg, 0, "echo"));
    pyi_msg_destroy (&msg);

    /*  Its token works for its service only, and for one connection. */
    id = s_send ("proc.echo", "token");
    msg = ANSWER (id, PYI_REPLY);
    char token [PYI_MAX_NAME + 1];
    t_frame_str (msg, 0, token, sizeof token);
    pyi_msg_destroy (&msg);
    CHECK (strlen (token) >= 16);
    pyi_worker_t *thief = pyi_worker_new (pyi_broker_endpoint (s_broker), token, 0, 0);
    CHECK_INT (pyi_worker_offer (thief, "proc.echo"), 0);
    msg = pyi_worker_recv (thief, WAIT_MS);
    CHECK_CMD (msg, PYI_ERROR);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_DENIED);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&thief);

    /*  Ask it to exit cleanly: EXIT status 0, reaped. */
    id = s_send ("proc.echo", "exit:0");
    msg = ANSWER (id, PYI_ERROR);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
    pyi_msg_destroy (&msg);
    pyi_event_t event;
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, "proc.echo", &event, WAIT_MS), 0);
    CHECK_INT (event.pid, pid);
    CHECK_INT (event.status, 0);
    CHECK (s_pid_gone (pid));
    CHECK_INT (pyi_broker_stats (s_broker, &bstats), 0);
    CHECK_U64 (bstats.processes, 0);

    /*  The token died with its process. */
    thief = pyi_worker_new (pyi_broker_endpoint (s_broker), token, 0, 0);
    CHECK_INT (pyi_worker_offer (thief, "proc.echo"), 0);
    msg = pyi_worker_recv (thief, WAIT_MS);
    CHECK_CMD (msg, PYI_ERROR);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_DENIED);
    pyi_msg_destroy (&msg);
    pyi_worker_destroy (&thief);
    id = s_send ("proc.echo", "echo");
    msg = ANSWER (id, PYI_ERROR);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
    pyi_msg_destroy (&msg);
}

/*  Spawn, put a "hold" request in flight, send the fatal command, and
    check both fail at once with text containing want_text, EVENT_LOST and
    EVENT_EXIT with status come, and the pid is reaped. */
static void
s_check_death (const char *service, const char *fatal, int status, const char *want_text)
{
    int pid = s_spawn (service, -1, -1);
    uint64_t held = s_send (service, "hold");
    /*  Make sure "hold" reached the worker first: a round trip after it. */
    uint64_t probe = s_send (service, "echo");
    pyi_msg_t *msg = ANSWER (probe, PYI_REPLY);
    pyi_msg_destroy (&msg);

    int64_t start = t_now_ms ();
    uint64_t fatal_id = s_send (service, fatal);
    bool seen_held = false, seen_fatal = false;
    for (int i = 0; i < 2; i++) {
        msg = pyi_client_recv (s_client, WAIT_MS);
        CHECK_MSG (msg, "no answer after %s", fatal);
        CHECK_CMD (msg, PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
        CHECK_STR (pyi_msg_service (msg), service);
        CHECK_MSG (strstr (pyi_msg_text (msg), want_text), "text \"%s\" lacks \"%s\"",
                   pyi_msg_text (msg), want_text);
        if (pyi_msg_id (msg) == held)
            seen_held = true;
        else
        if (pyi_msg_id (msg) == fatal_id)
            seen_fatal = true;
        pyi_msg_destroy (&msg);
    }
    int64_t took = t_now_ms () - start;
    CHECK (seen_held && seen_fatal);
    fprintf (stderr, "   %s: requests failed %lld ms after the command\n", fatal, (long long) took);
    CHECK_MSG (took < AT_ONCE_MS, "WORKER_LOST %lld ms after %s", (long long) took, fatal);

    pyi_event_t event;
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, service, &event, WAIT_MS), 0);
    CHECK_INT (event.pid, pid);
    CHECK_INT (event.status, status);
    CHECK (strstr (event.text, want_text));
    CHECK (s_pid_gone (pid));
    /*  The service is gone: WORKER_LOST with the reason, at once. */
    uint64_t later = s_send (service, "echo");
    msg = ANSWER (later, PYI_ERROR);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
    CHECK (strstr (pyi_msg_text (msg), want_text));
    pyi_msg_destroy (&msg);
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, service, &stats), 0);
    CHECK (!stats.ready);
    CHECK_U64 (stats.in_flight, 0);
}

static void
test_deaths (void)
{
    TEST_BEGIN ("crash, abort and exit with requests in flight");
    /*  The LOST event is checked once here (the others skip past it). */
    t_drain_events (s_broker);
    s_check_death ("proc.crash", "crash", -SIGSEGV, "signal 11");
    s_check_death ("proc.abort", "abort", -SIGABRT, "signal 6");
    s_check_death ("proc.exit", "exit:3", 3, "status 3");

    int pid = s_spawn ("proc.lost", -1, -1);
    uint64_t id = s_send ("proc.lost", "crash");
    pyi_msg_t *msg = ANSWER (id, PYI_ERROR);
    pyi_msg_destroy (&msg);
    pyi_event_t event;
    /*  READY came before; now LOST then EXIT, for this pid. */
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_LOST, "proc.lost", &event, WAIT_MS), 0);
    CHECK (strstr (event.text, "signal 11"));
    CHECK (event.pid == pid || event.pid == 0);
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, "proc.lost", &event, WAIT_MS), 0);
    CHECK_INT (event.pid, pid);
    CHECK_INT (event.status, -SIGSEGV);
}

static void
test_hang (void)
{
    TEST_BEGIN ("a hung worker process is lost after heartbeat x liveness and killed");
    const int64_t beat = atoi (HANG_HEARTBEAT), expiry = beat * atoi (HANG_LIVENESS);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, beat), 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_LIVENESS, atoi (HANG_LIVENESS)), 0);
    setenv ("PYI_TEST_HEARTBEAT_MS", HANG_HEARTBEAT, 1);
    setenv ("PYI_TEST_LIVENESS", HANG_LIVENESS, 1);
    int pid = s_spawn ("proc.hang", -1, -1);
    unsetenv ("PYI_TEST_HEARTBEAT_MS");
    unsetenv ("PYI_TEST_LIVENESS");
    /*  It stays well past the expiry while it beats. */
    t_sleep_ms ((int) (2 * expiry));
    pyi_service_stats_t stats;
    CHECK_INT (pyi_broker_service_stats (s_broker, "proc.hang", &stats), 0);
    CHECK (stats.ready);

    uint64_t held = s_send ("proc.hang", "hold");
    int64_t start = t_now_ms ();
    uint64_t hang = s_send ("proc.hang", "hang");
    for (int i = 0; i < 2; i++) {
        pyi_msg_t *msg = pyi_client_recv (s_client, WAIT_MS);
        CHECK_CMD (msg, PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_WORKER_LOST);
        CHECK (pyi_msg_id (msg) == held || pyi_msg_id (msg) == hang);
        pyi_msg_destroy (&msg);
    }
    int64_t took = t_now_ms () - start;
    fprintf (stderr, "   hung worker lost after %lld ms\n", (long long) took);
    /*  Its last heartbeat came at most one beat before "hang": never lost
        before expiry - beat; then within AT_ONCE_MS (the heartbeat gave
        up on it, not something later). */
    CHECK_MSG (took >= expiry - beat && took < expiry + AT_ONCE_MS,
               "hung worker lost after %lld ms", (long long) took);
    pyi_event_t event;
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, "proc.hang", &event, WAIT_MS), 0);
    CHECK_INT (event.pid, pid);
    CHECK_INT (event.status, -SIGKILL);
    CHECK (s_pid_gone (pid));
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, HEARTBEAT_MS), 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_LIVENESS, LIVENESS), 0);
}

/*  Read a line from fd within ms into buf; false on timeout or EOF. */
static bool
s_read_line (int fd, char *buf, size_t size, int ms)
{
    size_t used = 0;
    int64_t end = t_now_ms () + ms;
    while (used + 1 < size && t_now_ms () < end) {
        char c;
        ssize_t n = read (fd, &c, 1);
        if (n == 1) {
            if (c == '\n') {
                buf [used] = 0;
                return true;
            }
            buf [used++] = c;
        }
        else
        if (n == 0)
            return false;
        else
            t_sleep_ms (5);
    }
    buf [used] = 0;
    return false;
}

static void
test_event_fd (void)
{
    TEST_BEGIN ("the event fd becomes readable when an event waits");
    t_drain_events (s_broker);
    int fd = pyi_broker_event_fd (s_broker);
    CHECK (fd >= 0);
    const char *argv [] = { "true", NULL };
    int pid = pyi_broker_spawn (s_broker, "proc.true", argv, NULL, -1, -1);
    CHECK (pid > 0);
    struct pollfd item = { fd, POLLIN, 0 };
    CHECK_MSG (poll (&item, 1, WAIT_MS) == 1, "event fd never readable");
    /*  Then the events are there to take without waiting. */
    pyi_event_t event;
    bool exited = false;
    int64_t end = t_now_ms () + WAIT_MS;
    while (!exited && t_now_ms () < end) {
        while (pyi_broker_event (s_broker, &event, 0) == 0)
            if (event.type == PYI_EVENT_EXIT && event.pid == pid) {
                exited = true;
                CHECK_INT (event.status, 0);
                CHECK_STR (event.service, "proc.true");
            }
        if (!exited)
            poll (&item, 1, 100);
    }
    CHECK (exited);
}

static void
test_redirect (void)
{
    TEST_BEGIN ("stdout_fd and stderr_fd become the child's output and error");
    int out [2], err [2];
    CHECK_INT (pipe2 (out, O_CLOEXEC | O_NONBLOCK), 0);
    CHECK_INT (pipe2 (err, O_CLOEXEC | O_NONBLOCK), 0);
    int pid = s_spawn ("proc.print", out [1], err [1]);
    close (out [1]);
    close (err [1]);
    char line [256], want [64];
    CHECK (s_read_line (out [0], line, sizeof line, WAIT_MS));
    snprintf (want, sizeof want, "ready %d", pid);
    CHECK_STR (line, want);
    uint64_t id = s_send ("proc.print", "print:hello from the worker");
    pyi_msg_t *msg = ANSWER (id, PYI_REPLY);
    pyi_msg_destroy (&msg);
    CHECK (s_read_line (out [0], line, sizeof line, WAIT_MS));
    CHECK_STR (line, "hello from the worker");
    id = s_send ("proc.print", "no-such-command");
    msg = ANSWER (id, PYI_ERROR);
    CHECK (pyi_msg_code (msg) >= PYI_ERR_APPLICATION);
    pyi_msg_destroy (&msg);
    /*  Exit: both pipes reach EOF (no other process holds them). */
    id = s_send ("proc.print", "exit:0");
    msg = ANSWER (id, PYI_ERROR);
    pyi_msg_destroy (&msg);
    pyi_event_t event;
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, "proc.print", &event, WAIT_MS), 0);
    CHECK (!s_read_line (out [0], line, sizeof line, 2000));
    close (out [0]);
    close (err [0]);

    /*  stderr: a program that writes there (sh), found on PATH. */
    CHECK_INT (pipe2 (err, O_CLOEXEC | O_NONBLOCK), 0);
    const char *argv [] = { "sh", "-c", "echo \"to stderr $PYI_SERVICE\" >&2", NULL };
    pid = pyi_broker_spawn (s_broker, "proc.sh", argv, NULL, -1, err [1]);
    CHECK_MSG (pid > 0, "spawn sh: %s", pyi_last_error ());
    close (err [1]);
    CHECK (s_read_line (err [0], line, sizeof line, WAIT_MS));
    CHECK_STR (line, "to stderr proc.sh");
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, "proc.sh", &event, WAIT_MS), 0);
    CHECK_INT (event.pid, pid);
    CHECK_INT (event.status, 0);
    close (err [0]);

    /*  An explicit environment: the child gets it, plus the PYI_ variables,
        which override any of the same name. */
    CHECK_INT (pipe2 (err, O_CLOEXEC | O_NONBLOCK), 0);
    const char *env_argv [] = { "sh", "-c",
        "echo \"$FOO|$PYI_SERVICE|$PYI_PARENT_PID|${HOME-unset}|${#PYI_TOKEN}\" >&2", NULL };
    const char *envp [] = { "FOO=bar", "PYI_SERVICE=forged", "PATH=/usr/bin:/bin", NULL };
    pid = pyi_broker_spawn (s_broker, "proc.env", env_argv, envp, -1, err [1]);
    CHECK_MSG (pid > 0, "spawn sh: %s", pyi_last_error ());
    close (err [1]);
    CHECK (s_read_line (err [0], line, sizeof line, WAIT_MS));
    char expected [128];
    snprintf (expected, sizeof expected, "bar|proc.env|%d|unset|", (int) getpid ());
    CHECK_MSG (strncmp (line, expected, strlen (expected)) == 0, "child saw \"%s\"", line);
    CHECK_MSG (atoi (line + strlen (expected)) >= 16, "token too short: \"%s\"", line);
    CHECK_INT (t_wait_event (s_broker, PYI_EVENT_EXIT, "proc.env", &event, WAIT_MS), 0);
    close (err [0]);
}

static void
test_spawn_errors (void)
{
    TEST_BEGIN ("spawn of a missing program fails; a wrong parent exits at once");
    const char *missing [] = { "/nonexistent/pyi-no-such-program", NULL };
    CHECK_INT (pyi_broker_spawn (s_broker, "proc.missing", missing, NULL, -1, -1), -1);
    CHECK (*pyi_last_error ());
    const char *missing_path [] = { "pyi-no-such-program-on-path", NULL };
    CHECK_INT (pyi_broker_spawn (s_broker, "proc.missing", missing_path, NULL, -1, -1), -1);
    const char *argv [] = { PYI_TEST_WORKER, NULL };
    CHECK_INT (pyi_broker_spawn (s_broker, "bad\nname", argv, NULL, -1, -1), -1);
    pyi_broker_stats_t stats;
    CHECK_INT (pyi_broker_stats (s_broker, &stats), 0);
    CHECK_U64 (stats.processes, 0);

    /*  Not spawned by a broker: -1. */
    unsetenv ("PYI_PARENT_PID");
    CHECK_INT (pyi_worker_bind_to_parent (), -1);

    /*  A worker told its parent is pid 1 (it is not): exits at once with 1.
        Started with posix_spawn here, so this process is its parent. */
    char endpoint [300], parent [64];
    snprintf (endpoint, sizeof endpoint, "PYI_ENDPOINT=%s", pyi_broker_endpoint (s_broker));
    snprintf (parent, sizeof parent, "PYI_PARENT_PID=%d", 1);
    char *envp [] = { endpoint, "PYI_SERVICE=x", "PYI_TOKEN=x", parent, NULL };
    pid_t pid;
    int64_t start = t_now_ms ();
    CHECK_INT (posix_spawn (&pid, PYI_TEST_WORKER, NULL, NULL, (char **) argv, envp), 0);
    int status;
    CHECK_INT (waitpid (pid, &status, 0), pid);
    CHECK (WIFEXITED (status));
    CHECK_INT (WEXITSTATUS (status), 1);
    /*  At once, not after a life as a worker that nobody admits. */
    CHECK (t_now_ms () - start < AT_ONCE_MS);
}

static void
test_destroy_leaves_no_child (void)
{
    TEST_BEGIN ("destroying the broker leaves no child process, not even a zombie");
    /*  A worker that leaves on DISCONNECT, one that hangs, and a program
        that is no worker at all (sleep, found on PATH). */
    pyi_broker_t *broker = s_broker;
    pyi_client_destroy (&s_client);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_GRACE_MS, 500), 0);
    int polite = s_spawn ("proc.polite", -1, -1);
    setenv ("PYI_TEST_HEARTBEAT_MS", "1000", 1);
    int hung = s_spawn ("proc.hung", -1, -1);
    unsetenv ("PYI_TEST_HEARTBEAT_MS");
    s_client = pyi_client_new (pyi_broker_endpoint (broker));
    uint64_t id = s_send ("proc.hung", "hang");
    const char *sleeper_argv [] = { "sleep", "1000", NULL };
    int sleeper = pyi_broker_spawn (broker, "proc.sleep", sleeper_argv, NULL, -1, -1);
    CHECK_MSG (sleeper > 0, "spawn sleep: %s", pyi_last_error ());
    /*  Give the "hang" time to arrive. */
    t_sleep_ms (200);
    CHECK (!s_pid_gone (polite) && !s_pid_gone (hung) && !s_pid_gone (sleeper));

    int64_t start = t_now_ms ();
    pyi_broker_destroy (&s_broker);
    int64_t took = t_now_ms () - start;
    fprintf (stderr, "   destroy took %lld ms with a 500 ms grace\n", (long long) took);
    CHECK_MSG (took < 500 + AT_ONCE_MS, "destroy took %lld ms", (long long) took);
    CHECK_MSG (s_pid_gone (polite), "worker %d still there", polite);
    CHECK_MSG (s_pid_gone (hung), "hung worker %d still there", hung);
    CHECK_MSG (s_pid_gone (sleeper), "sleep %d still there", sleeper);
    /*  The hung request was answered when the broker stopped. */
    pyi_msg_t *msg = pyi_client_recv (s_client, WAIT_MS);
    CHECK_CMD (msg, PYI_ERROR);
    CHECK_U64 (pyi_msg_id (msg), id);
    pyi_msg_destroy (&msg);
    pyi_client_destroy (&s_client);
    /*  Nothing left for this process to reap either. */
    errno = 0;
    CHECK_INT (waitpid (-1, NULL, WNOHANG), -1);
    CHECK_INT (errno, ECHILD);
}

static pid_t s_host_pid, s_orphan_pid;

static void
s_kill_helpers (void)
{
    if (s_host_pid > 0)
        kill (s_host_pid, SIGKILL);
    if (s_orphan_pid > 0)
        kill (s_orphan_pid, SIGKILL);
}

static void
test_host_killed (void)
{
    TEST_BEGIN ("a host killed with SIGKILL leaves no orphan and a stale directory");
    /*  Orphans of the host come to this process, so that their end can be
        seen (and reaped) here. */
    bool subreaper = prctl (PR_SET_CHILD_SUBREAPER, 1) == 0;
    int out [2];
    CHECK_INT (pipe2 (out, O_CLOEXEC | O_NONBLOCK), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_adddup2 (&actions, out [1], 1);
    const char *argv [] = { PYI_TEST_HOST, PYI_TEST_WORKER, NULL };
    pid_t host;
    /*  The worker would leave by itself only after 60 s of broker silence. */
    setenv ("PYI_TEST_LIVENESS", "60", 1);
    CHECK_INT (posix_spawn (&host, PYI_TEST_HOST, &actions, NULL, (char **) argv, environ), 0);
    unsetenv ("PYI_TEST_LIVENESS");
    posix_spawn_file_actions_destroy (&actions);
    s_host_pid = host;
    t_on_failure = s_kill_helpers;
    close (out [1]);
    char line [512];
    CHECK_MSG (s_read_line (out [0], line, sizeof line, WAIT_MS), "the host printed nothing");
    close (out [0]);
    pid_t worker = (pid_t) atoi (line);
    char *space = strchr (line, ' ');
    CHECK_MSG (worker > 0 && space, "the host printed \"%s\"", line);
    s_orphan_pid = worker;
    const char *rundir = space + 1;
    CHECK (t_is_dir (rundir));
    CHECK (!s_pid_gone (worker));

    CHECK_INT (kill (host, SIGKILL), 0);
    int status;
    CHECK_INT (waitpid (host, &status, 0), host);
    s_host_pid = 0;
    CHECK (WIFSIGNALED (status) && WTERMSIG (status) == SIGKILL);
    int64_t start = t_now_ms ();
    bool gone = false;
    while (!gone && t_now_ms () - start < AT_ONCE_MS) {
        if (subreaper) {
            pid_t rc = waitpid (worker, &status, WNOHANG);
            gone = rc == worker || (rc == -1 && errno == ECHILD && s_pid_gone (worker));
        }
        else
            gone = s_pid_gone (worker);
        if (!gone)
            t_sleep_ms (5);
    }
    int64_t took = t_now_ms () - start;
    if (!gone)
        kill (worker, SIGKILL);
    CHECK_MSG (gone, "worker %d outlived its host by %d s", (int) worker, AT_ONCE_MS / 1000);
    s_orphan_pid = 0;
    fprintf (stderr, "   worker gone %lld ms after its host\n", (long long) took);
    if (subreaper)
        CHECK_MSG (WIFSIGNALED (status), "the worker exited by itself, not by PDEATHSIG");

    /*  The dead host's directory is stale; the next host removes it. */
    CHECK (t_is_dir (rundir));
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    CHECK_MSG (!t_is_dir (rundir), "stale %s not removed", rundir);
    pyi_broker_destroy (&broker);
    if (subreaper)
        prctl (PR_SET_CHILD_SUBREAPER, 0);
}

int
main (void)
{
    t_setup_rundir ();
    /*  First, while no ZeroMQ context exists in this process. */
    test_host_killed ();

    s_broker = pyi_broker_new ();
    CHECK_MSG (s_broker, "pyi_broker_new: %s", pyi_last_error ());
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_HEARTBEAT_MS, HEARTBEAT_MS), 0);
    CHECK_INT (pyi_broker_set (s_broker, PYI_OPT_LIVENESS, LIVENESS), 0);
    s_client = pyi_client_new (pyi_broker_endpoint (s_broker));
    CHECK (s_client);
    test_spawn_and_serve ();
    test_deaths ();
    test_hang ();
    test_event_fd ();
    test_redirect ();
    test_spawn_errors ();
    test_destroy_leaves_no_child ();
    fprintf (stderr, "test_supervisor: OK\n");
    return 0;
}
