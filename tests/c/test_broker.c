/*  test_broker: the broker actor starts and stops synchronously and
    leaves nothing behind.

    Guarantees checked:
    - pyi_broker_new () returns with the broker thread running, its
      endpoints bound and its runtime directory made:
      $PYI_RUNTIME_DIR/pyisolate-<uid>/<pid>-<random>/, mode 0700, both
      levels, holding the ipc socket; two brokers get distinct ones;
    - pyi_broker_destroy () returns with no thread, no file descriptor and
      no directory left (measured after a first create/destroy cycle, so
      that czmq's global context, which lives until exit, is not counted),
      also after real traffic and a tcp endpoint; it does not wait for the
      grace period when there are no children (a minute here; the bound is
      AT_ONCE_MS, 10 s, room for a stalled machine); it is safe on NULL; a new broker starts right after
      one was destroyed, 200 times in a row;
    - destroying a broker answers every request in flight with ERROR
      SHUTDOWN and tells every worker DISCONNECT SHUTDOWN;
    - a directory of a dead host (lock file not held, or no lock file and a
      dead pid in its name) is removed by the next pyi_broker_new (); a
      live host's directory (lock held, or no lock and a live pid) and
      anything not named like a host directory are left alone;
    - options, grants and binds refuse bad values;
    - neither the broker nor a client or worker installs a SIGINT or
      SIGTERM handler (czmq's would steal Ctrl-C from a Python host).
*/
#include "testutil.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>

#define AT_ONCE_MS 10000            /* an upper bound no stalled machine reaches */
#define LONG_GRACE_MS 60000         /* a grace period a destroy must not wait for */

static pid_t s_dead_pid;            /* a pid that has exited and been reaped */

/*  Check the broker's runtime directory is where and what it should be. */
static void
s_check_rundir (pyi_broker_t *broker, const char *base)
{
    const char *rundir = pyi_broker_rundir (broker);
    CHECK (rundir && *rundir);
    char parent [512];
    snprintf (parent, sizeof parent, "%s/pyisolate-%u/", base, (unsigned) getuid ());
    CHECK_MSG (strncmp (rundir, parent, strlen (parent)) == 0, "%s not under %s", rundir, parent);
    /*  <pid>-<random> */
    const char *name = rundir + strlen (parent);
    char prefix [32];
    snprintf (prefix, sizeof prefix, "%d-", (int) getpid ());
    CHECK_MSG (strncmp (name, prefix, strlen (prefix)) == 0, "name %s", name);
    CHECK (strlen (name) > strlen (prefix));
    CHECK (strchr (name, '/') == NULL);

    struct stat st;
    CHECK_INT (stat (rundir, &st), 0);
    CHECK (S_ISDIR (st.st_mode));
    CHECK_INT (st.st_mode & 07777, 0700);
    CHECK_INT (st.st_uid, getuid ());
    parent [strlen (parent) - 1] = 0;
    CHECK_INT (stat (parent, &st), 0);
    CHECK_INT (st.st_mode & 07777, 0700);

    /*  The ipc endpoint is a socket file inside it. */
    const char *endpoint = pyi_broker_endpoint (broker);
    CHECK (endpoint);
    CHECK_MSG (strncmp (endpoint, "ipc://", 6) == 0, "endpoint %s", endpoint);
    CHECK_MSG (strncmp (endpoint + 6, rundir, strlen (rundir)) == 0, "endpoint %s", endpoint);
    CHECK_INT (stat (endpoint + 6, &st), 0);
    CHECK (S_ISSOCK (st.st_mode));
    CHECK (pyi_broker_inproc (broker));
    CHECK (strncmp (pyi_broker_inproc (broker), "inproc://", 9) == 0);
}

/*  Wait for the fd count to come back to want (libzmq closes a socket's
    descriptors in its reaper thread, shortly after zmq_close returns). */
static int
s_wait_fds (int want, int ms)
{
    int64_t end = t_now_ms () + ms;
    int count = t_count_fds ();
    while (count != want && t_now_ms () < end) {
        t_sleep_ms (10);
        count = t_count_fds ();
    }
    return count;
}

static void
s_check_nothing_left (int threads, int fds, const char *rundir)
{
    int now_threads = t_wait_threads (threads, 500);
    CHECK_MSG (now_threads == threads, "%d threads after destroy, %d before", now_threads, threads);
    int now_fds = s_wait_fds (fds, 2000);
    if (now_fds != fds) {
        t_dump_fds ();
        CHECK_MSG (false, "%d fds after destroy, %d before", now_fds, fds);
    }
    CHECK_MSG (!t_is_dir (rundir), "runtime directory %s still there", rundir);
}

/*  A worker offering service on endpoint, registered (READY seen). */
static pyi_worker_t *
s_worker (pyi_broker_t *broker, const char *endpoint, const char *service)
{
    char *token = pyi_broker_allow (broker, service, NULL);
    CHECK (token);
    pyi_worker_t *worker = pyi_worker_new (endpoint, token, 0, 0);
    free (token);
    CHECK (worker);
    CHECK_INT (pyi_worker_offer (worker, service), 0);
    pyi_msg_t *msg = pyi_worker_recv (worker, 5000);
    CHECK_CMD (msg, PYI_READY);
    CHECK_STR (pyi_msg_service_at (msg, 0), service);
    pyi_msg_destroy (&msg);
    return worker;
}

static void
test_start_stop (const char *base)
{
    TEST_BEGIN ("start and stop leave no thread, fd or directory");
    /*  First cycle: czmq's context and its I/O threads come to stay. */
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    pyi_broker_destroy (&broker);
    CHECK (broker == NULL);

    for (int cycle = 0; cycle < 3; cycle++) {
        int threads = t_count_threads ();
        int fds = t_settled_fds ();
        broker = pyi_broker_new ();
        CHECK (broker);
        CHECK_MSG (t_count_threads () >= threads + 1, "no broker thread: %d threads, %d before",
                   t_count_threads (), threads);
        s_check_rundir (broker, base);
        CHECK_INT (pyi_broker_set (broker, PYI_OPT_GRACE_MS, LONG_GRACE_MS), 0);
        char rundir [512];
        snprintf (rundir, sizeof rundir, "%s", pyi_broker_rundir (broker));
        int64_t start = t_now_ms ();
        pyi_broker_destroy (&broker);
        int64_t took = t_now_ms () - start;
        CHECK (broker == NULL);
        CHECK_MSG (took < AT_ONCE_MS, "destroy of an idle broker took %lld ms", (long long) took);
        s_check_nothing_left (threads, fds, rundir);
    }
    pyi_broker_destroy (NULL);
    broker = NULL;
    pyi_broker_destroy (&broker);
}

static void
test_stop_after_traffic (void)
{
    TEST_BEGIN ("stop after traffic on ipc, inproc and tcp leaves nothing");
    /*  Warm up the client/worker code paths once. */
    for (int cycle = 0; cycle < 2; cycle++) {
        int threads = t_count_threads ();
        int fds = t_settled_fds ();
        pyi_broker_t *broker = pyi_broker_new ();
        CHECK (broker);
        char rundir [512];
        snprintf (rundir, sizeof rundir, "%s", pyi_broker_rundir (broker));
        char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
        CHECK_MSG (tcp, "bind: %s", pyi_last_error ());
        const char *endpoints [] = { pyi_broker_endpoint (broker), pyi_broker_inproc (broker), tcp };
        for (int e = 0; e < 3; e++) {
            char service [32];
            snprintf (service, sizeof service, "svc%d", e);
            pyi_worker_t *worker = s_worker (broker, endpoints [e], service);
            pyi_client_t *client = pyi_client_new (endpoints [e]);
            CHECK (client);
            pyi_msg_t *body = t_body_str ("ping");
            CHECK_INT (pyi_client_request (client, service, 1, 0, &body), 0);
            pyi_msg_t *msg = pyi_worker_recv (worker, 5000);
            CHECK_CMD (msg, PYI_REQUEST);
            CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (msg), NULL), 0);
            pyi_msg_destroy (&msg);
            msg = pyi_client_recv (client, 5000);
            CHECK_CMD (msg, PYI_REPLY);
            CHECK_U64 (pyi_msg_id (msg), 1);
            pyi_msg_destroy (&msg);
            pyi_client_destroy (&client);
            CHECK (client == NULL);
            pyi_worker_destroy (&worker);
            CHECK (worker == NULL);
        }
        free (tcp);
        pyi_broker_destroy (&broker);
        if (cycle > 0)
            s_check_nothing_left (threads, fds, rundir);
    }
    pyi_client_destroy (NULL);
    pyi_worker_destroy (NULL);
}

static void
test_stop_answers_everyone (void)
{
    TEST_BEGIN ("stop answers requests in flight with SHUTDOWN, workers get DISCONNECT");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    pyi_worker_t *worker = s_worker (broker, pyi_broker_inproc (broker), "slow");
    pyi_client_t *client = pyi_client_new (pyi_broker_endpoint (broker));
    for (uint64_t id = 1; id <= 3; id++)
        CHECK_INT (pyi_client_request (client, "slow", id, 0, NULL), 0);
    for (int i = 0; i < 3; i++) {
        pyi_msg_t *msg = pyi_worker_recv (worker, 5000);
        CHECK_CMD (msg, PYI_REQUEST);
        pyi_msg_destroy (&msg);
    }
    pyi_broker_destroy (&broker);
    bool answered [4] = { false };
    for (int i = 0; i < 3; i++) {
        pyi_msg_t *msg = pyi_client_recv (client, 5000);
        CHECK_CMD (msg, PYI_ERROR);
        CHECK_INT (pyi_msg_code (msg), PYI_ERR_SHUTDOWN);
        uint64_t id = pyi_msg_id (msg);
        CHECK (id >= 1 && id <= 3 && !answered [id]);
        answered [id] = true;
        pyi_msg_destroy (&msg);
    }
    pyi_msg_t *msg = pyi_worker_recv (worker, 5000);
    CHECK_CMD (msg, PYI_DISCONNECT);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_SHUTDOWN);
    pyi_msg_destroy (&msg);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
}

static void
test_rapid_restart (void)
{
    TEST_BEGIN ("200 brokers in a row, each started right after the last stopped");
    /*  libzmq closes sockets in the background: a new broker must not
        trip over the endpoints of the one just destroyed. */
    for (int i = 0; i < 200; i++) {
        pyi_broker_t *broker = pyi_broker_new ();
        CHECK_MSG (broker, "broker %d: pyi_broker_new: %s", i, pyi_last_error ());
        pyi_broker_destroy (&broker);
    }
}

static void
test_two_brokers (void)
{
    TEST_BEGIN ("two brokers at once have distinct directories and endpoints");
    pyi_broker_t *a = pyi_broker_new ();
    pyi_broker_t *b = pyi_broker_new ();
    CHECK_MSG (a && b, "pyi_broker_new: %s", pyi_last_error ());
    CHECK (strcmp (pyi_broker_rundir (a), pyi_broker_rundir (b)) != 0);
    CHECK (strcmp (pyi_broker_endpoint (a), pyi_broker_endpoint (b)) != 0);
    CHECK (strcmp (pyi_broker_inproc (a), pyi_broker_inproc (b)) != 0);
    /*  A worker registered on one is unknown to the other. */
    pyi_worker_t *worker = s_worker (a, pyi_broker_inproc (a), "only-a");
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (b));
    CHECK_INT (pyi_client_request (client, "only-a", 1, 0, NULL), 0);
    pyi_msg_t *msg = pyi_client_recv (client, 5000);
    CHECK_CMD (msg, PYI_ERROR);
    CHECK_INT (pyi_msg_code (msg), PYI_ERR_UNKNOWN_SERVICE);
    pyi_msg_destroy (&msg);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    char rundir_a [512];
    snprintf (rundir_a, sizeof rundir_a, "%s", pyi_broker_rundir (a));
    pyi_broker_destroy (&a);
    CHECK (!t_is_dir (rundir_a));
    CHECK (t_is_dir (pyi_broker_rundir (b)));   /* b's directory is untouched */
    pyi_broker_destroy (&b);
}

/*  Make <base>/pyisolate-<uid>/<name>/ with a file and a subdirectory,
    and a lock file when with_lock. Returns the path (static). */
static const char *
s_fake_host (const char *base, const char *name, bool with_lock)
{
    static char path [512];
    char file [600];
    snprintf (path, sizeof path, "%s/pyisolate-%u", base, (unsigned) getuid ());
    mkdir (path, 0700);
    snprintf (path, sizeof path, "%s/pyisolate-%u/%s", base, (unsigned) getuid (), name);
    CHECK_INT (mkdir (path, 0700), 0);
    snprintf (file, sizeof file, "%s/broker", path);
    int fd = open (file, O_WRONLY | O_CREAT, 0600);
    CHECK (fd >= 0);
    close (fd);
    snprintf (file, sizeof file, "%s/sub", path);
    CHECK_INT (mkdir (file, 0700), 0);
    snprintf (file, sizeof file, "%s/sub/deep", path);
    fd = open (file, O_WRONLY | O_CREAT, 0600);
    CHECK (fd >= 0);
    close (fd);
    if (with_lock) {
        snprintf (file, sizeof file, "%s/lock", path);
        fd = open (file, O_WRONLY | O_CREAT, 0600);
        CHECK (fd >= 0);
        close (fd);
    }
    return path;
}

static void
test_stale_cleanup (const char *base)
{
    TEST_BEGIN ("directories of dead hosts are removed, live ones kept");
    char dead_locked [512], dead_nolock [512], live_nolock [512], live_locked [512],
         other [512], name [64];

    /*  A dead host: lock file present, nobody holds it. */
    snprintf (name, sizeof name, "%d-0badf00d", (int) s_dead_pid);
    snprintf (dead_locked, sizeof dead_locked, "%s", s_fake_host (base, name, true));
    /*  A dead host that died before making its lock file. */
    snprintf (name, sizeof name, "%d-0badf00e", (int) s_dead_pid);
    snprintf (dead_nolock, sizeof dead_nolock, "%s", s_fake_host (base, name, false));
    /*  A live host still making its directory: no lock, live pid. */
    snprintf (name, sizeof name, "%d-00000001", (int) getpid ());
    snprintf (live_nolock, sizeof live_nolock, "%s", s_fake_host (base, name, false));
    /*  A live host: lock held (by this process, on its own open file). */
    snprintf (name, sizeof name, "%d-00000002", (int) s_dead_pid);
    snprintf (live_locked, sizeof live_locked, "%s", s_fake_host (base, name, true));
    char lock [600];
    snprintf (lock, sizeof lock, "%s/lock", live_locked);
    int lock_fd = open (lock, O_RDWR | O_CLOEXEC);
    CHECK (lock_fd >= 0);
    CHECK_INT (flock (lock_fd, LOCK_EX | LOCK_NB), 0);
    /*  Not a host directory at all. */
    snprintf (other, sizeof other, "%s", s_fake_host (base, "not-a-host", false));

    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    CHECK_MSG (!t_is_dir (dead_locked), "stale %s not removed", dead_locked);
    CHECK_MSG (!t_is_dir (dead_nolock), "stale %s not removed", dead_nolock);
    CHECK_MSG (t_is_dir (live_nolock), "live %s removed", live_nolock);
    CHECK_MSG (t_is_dir (live_locked), "live %s removed", live_locked);
    CHECK_MSG (t_is_dir (other), "%s removed", other);
    /*  Our own broker's directory survives another broker's clean-up. */
    pyi_broker_t *second = pyi_broker_new ();
    CHECK (second);
    CHECK (t_is_dir (pyi_broker_rundir (broker)));
    pyi_broker_destroy (&second);
    pyi_broker_destroy (&broker);

    /*  Once its lock is released, the "live" host is dead too. */
    close (lock_fd);
    broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    CHECK_MSG (!t_is_dir (live_locked), "stale %s not removed after unlock", live_locked);
    CHECK (t_is_dir (live_nolock));
    pyi_broker_destroy (&broker);
    t_rm_tree (live_nolock);
    t_rm_tree (other);
}

static bool
s_default_disposition (int sig)
{
    struct sigaction action;
    CHECK_INT (sigaction (sig, NULL, &action), 0);
    return !(action.sa_flags & SA_SIGINFO) && action.sa_handler == SIG_DFL;
}

static void
test_signals_untouched (void)
{
    TEST_BEGIN ("czmq installs no SIGINT/SIGTERM handler (Ctrl-C stays the host's)");
    /*  (Runs first: nothing in this process has touched czmq yet.) */
    CHECK (s_default_disposition (SIGINT) && s_default_disposition (SIGTERM));
    pyi_client_t *client = pyi_client_new ("ipc:///nonexistent/pyi-test");
    pyi_client_destroy (&client);
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_inproc (broker), "token", 0, 0);
    CHECK_MSG (s_default_disposition (SIGINT), "a SIGINT handler was installed");
    CHECK_MSG (s_default_disposition (SIGTERM), "a SIGTERM handler was installed");
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
    CHECK (s_default_disposition (SIGINT) && s_default_disposition (SIGTERM));
}

static void
test_bad_arguments (void)
{
    TEST_BEGIN ("options, grants and binds refuse bad values");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "pyi_broker_new: %s", pyi_last_error ());
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_HEARTBEAT_MS, 250), 0);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_LIVENESS, 3), 0);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_MAX_MSG_SIZE, 1 << 20), 0);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_MAX_PENDING, 10), 0);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_MAX_STRIKES, 2), 0);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_GRACE_MS, 0), 0);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_HEARTBEAT_MS, 0), -1);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_HEARTBEAT_MS, -5), -1);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_LIVENESS, 0), -1);
    CHECK_INT (pyi_broker_set (broker, PYI_OPT_GRACE_MS, -1), -1);
    CHECK_INT (pyi_broker_set (broker, (pyi_option_t) 0, 1), -1);
    CHECK_INT (pyi_broker_set (broker, (pyi_option_t) 99, 1), -1);
    CHECK (*pyi_last_error ());

    /*  Grants: a new token per call without one; the same token extends. */
    char *token = pyi_broker_allow (broker, "svc.a", NULL);
    CHECK (token && strlen (token) >= 16);
    char *again = pyi_broker_allow (broker, "svc.b", token);
    CHECK (again);
    CHECK_STR (again, token);
    char *other = pyi_broker_allow (broker, "svc.a", NULL);
    CHECK (other && strcmp (other, token) != 0);
    free (again);
    free (other);
    free (token);
    CHECK (pyi_broker_allow (broker, "svc", "no-such-token") == NULL);
    CHECK (pyi_broker_allow (broker, "", NULL) == NULL);
    CHECK (pyi_broker_allow (broker, NULL, NULL) == NULL);
    CHECK (pyi_broker_allow (broker, "bad\nname", NULL) == NULL);
    char long_name [PYI_MAX_NAME + 2];
    memset (long_name, 'n', sizeof long_name - 1);
    long_name [PYI_MAX_NAME + 1] = 0;
    CHECK (pyi_broker_allow (broker, long_name, NULL) == NULL);
    long_name [PYI_MAX_NAME] = 0;
    token = pyi_broker_allow (broker, long_name, NULL);
    CHECK (token);
    free (token);

    /*  Binds. */
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK (tcp);
    CHECK_MSG (strncmp (tcp, "tcp://127.0.0.1:", 16) == 0 && atoi (tcp + 16) > 0,
               "bound %s", tcp);
    free (tcp);
    CHECK (pyi_broker_bind (broker, "bogus://nowhere") == NULL);
    CHECK (*pyi_last_error ());

    /*  Stats: none for a name never heard of; zero counters at start. */
    pyi_service_stats_t service;
    CHECK_INT (pyi_broker_service_stats (broker, "never-heard-of", &service), -1);
    pyi_broker_stats_t stats;
    CHECK_INT (pyi_broker_stats (broker, &stats), 0);
    CHECK_U64 (stats.workers, 0);
    CHECK_U64 (stats.pending, 0);
    CHECK_U64 (stats.processes, 0);
    CHECK_U64 (stats.malformed, 0);

    /*  No events: -1 at once. */
    CHECK (pyi_broker_event_fd (broker) >= 0);
    pyi_event_t event;
    int64_t start = t_now_ms ();
    CHECK_INT (pyi_broker_event (broker, &event, 0), -1);
    CHECK_INT (pyi_broker_event (broker, &event, 100), -1);
    int64_t took = t_now_ms () - start;
    /*  Not less than asked; and not without end (AT_ONCE_MS). */
    CHECK_MSG (took >= 100 && took < 100 + AT_ONCE_MS, "event wait of 100 ms took %lld",
               (long long) took);

    /*  Bad endpoints for peers. */
    CHECK (pyi_client_new ("bogus://nowhere") == NULL);
    CHECK (pyi_client_new (NULL) == NULL);
    CHECK (pyi_worker_new ("bogus://nowhere", "token", 0, 0) == NULL);
    pyi_broker_destroy (&broker);
}

int
main (void)
{
    /*  A pid that surely belongs to no live process: a child that exited
        and was reaped (made before any ZeroMQ context exists). */
    s_dead_pid = fork ();
    if (s_dead_pid == 0)
        _exit (0);
    CHECK (s_dead_pid > 0);
    CHECK_INT (waitpid (s_dead_pid, NULL, 0), s_dead_pid);

    const char *base = t_setup_rundir ();
    test_signals_untouched ();
    test_start_stop (base);
    test_stop_after_traffic ();
    test_stop_answers_everyone ();
    test_rapid_restart ();
    test_two_brokers ();
    test_stale_cleanup (base);
    test_bad_arguments ();
    fprintf (stderr, "test_broker: OK\n");
    return 0;
}
