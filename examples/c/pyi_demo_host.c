/*  pyi_demo_host: the host half of the C demo, a host and a worker talking
    through the pyisolate broker with no Python at all.

    The host starts a broker, spawns pyi_demo_worker (the program next to
    this one, or the path given as the first argument) to serve the
    service "demo", waits until the worker is ready, calls it, prints what
    it answered and the broker's statistics for the service, and stops
    the broker, which stops the worker. Exit status 0 when every answer
    was the expected one.

    Usage: pyi_demo_host [WORKER_PROGRAM]
*/

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pyisolate/pyisolate.h>

#define SERVICE "demo"
#define WORKER_NAME "pyi_demo_worker"
#define READY_TIMEOUT_MS 10000  /* time the worker has to come up */
#define CALL_TIMEOUT_MS 5000    /* deadline of each call */
#define MAX_ARGS 8

static int64_t s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*  The worker program: the first argument, else the one beside this binary. */
static int s_worker_path (int argc, char *argv [], char *path, size_t size)
{
    if (argc > 1) {
        snprintf (path, size, "%s", argv [1]);
        return 0;
    }
    char self [PATH_MAX];
    ssize_t length = readlink ("/proc/self/exe", self, sizeof self - 1);
    if (length < 0) {
        fprintf (stderr, "pyi_demo_host: cannot find my own path: %s\n", strerror (errno));
        return -1;
    }
    self [length] = '\0';
    snprintf (path, size, "%s/%s", dirname (self), WORKER_NAME);
    if (access (path, X_OK)) {
        fprintf (stderr, "pyi_demo_host: no worker program at %s (%s); "
                 "pass its path as the first argument\n", path, strerror (errno));
        return -1;
    }
    return 0;
}

/*  Wait until the broker reports the worker ready; 0, or -1 with a message. */
static int s_wait_ready (pyi_broker_t *broker, int pid)
{
    int64_t deadline = s_now_ms () + READY_TIMEOUT_MS;
    while (true) {
        int64_t left = deadline - s_now_ms ();
        if (left <= 0) {
            fprintf (stderr, "pyi_demo_host: the worker (pid %d) was not ready after %d ms\n",
                     pid, READY_TIMEOUT_MS);
            return -1;
        }
        pyi_event_t event;
        if (pyi_broker_event (broker, &event, (int) left))
            continue;
        switch (event.type) {
            case PYI_EVENT_READY:
                if (strcmp (event.service, SERVICE) == 0) {
                    printf ("worker pid %d is ready to serve \"%s\"\n", event.pid, event.service);
                    return 0;
                }
                break;
            case PYI_EVENT_EXIT:
                if (event.pid == pid) {
                    fprintf (stderr, "pyi_demo_host: the worker (pid %d) exited before it was "
                             "ready, status %d: %s\n", pid, event.status, event.text);
                    return -1;
                }
                break;
            case PYI_EVENT_REFUSED:
            case PYI_EVENT_LOST:
                fprintf (stderr, "pyi_demo_host: worker for \"%s\": %s\n",
                         event.service, event.text);
                return -1;
            default:
                break;
        }
    }
}

/*  Call service with the given text frames; returns the answer (REPLY or
    ERROR) or NULL when none came, which is always a failure. */
static pyi_msg_t *s_call (pyi_client_t *client, const char *service, uint64_t id,
                          const char *args [])
{
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    for (int i = 0; body && args [i]; i++)
        pyi_msg_append (body, args [i], strlen (args [i]));
    if (pyi_client_request (client, service, id, CALL_TIMEOUT_MS, &body)) {
        fprintf (stderr, "pyi_demo_host: cannot send request %" PRIu64 ": %s\n",
                 id, pyi_last_error ());
        return NULL;
    }
    /*  One call at a time, so the next answer is this call's; a deadline
        past CALL_TIMEOUT_MS is the broker's to report as ERROR TIMEOUT. */
    pyi_msg_t *answer = pyi_client_recv (client, 2 * CALL_TIMEOUT_MS);
    if (!answer)
        fprintf (stderr, "pyi_demo_host: no answer to request %" PRIu64 "\n", id);
    else
    if (pyi_msg_id (answer) != id) {
        fprintf (stderr, "pyi_demo_host: answer to request %" PRIu64 " carries id %" PRIu64 "\n",
                 id, pyi_msg_id (answer));
        pyi_msg_destroy (&answer);
    }
    return answer;
}

/*  Print a call and its answer, and check that it is the one expected:
    a REPLY whose first frame is expect_reply, or an ERROR with
    expect_code. 0 when it is, else -1. */
static int s_check (pyi_msg_t **answer_p, const char *service, const char *args [],
                    const char *expect_reply, int expect_code)
{
    pyi_msg_t *answer = *answer_p;
    printf ("%s(", service);
    for (int i = 0; args [i]; i++)
        printf ("%s\"%s\"", i ? ", " : "", args [i]);
    printf (") -> ");
    if (!answer) {
        printf ("no answer\n");
        return -1;
    }
    int rc = 0;
    if (pyi_msg_command (answer) == PYI_REPLY) {
        size_t size = pyi_msg_frames (answer) ? pyi_msg_frame_size (answer, 0) : 0;
        const char *data = pyi_msg_frames (answer) ? pyi_msg_frame_data (answer, 0) : "";
        printf ("REPLY \"%.*s\"\n", (int) size, data);
        if (!expect_reply || size != strlen (expect_reply) || memcmp (data, expect_reply, size))
            rc = -1;
    }
    else
    if (pyi_msg_command (answer) == PYI_ERROR) {
        printf ("ERROR %s (%d): %s\n", pyi_error_name (pyi_msg_code (answer)),
                pyi_msg_code (answer), pyi_msg_text (answer));
        if (expect_reply || pyi_msg_code (answer) != expect_code)
            rc = -1;
    }
    else {
        printf ("%s\n", pyi_command_name (pyi_msg_command (answer)));
        rc = -1;
    }
    if (rc)
        fprintf (stderr, "pyi_demo_host: unexpected answer (expected %s%s%s)\n",
                 expect_reply ? "REPLY \"" : "ERROR ",
                 expect_reply ? expect_reply : pyi_error_name (expect_code),
                 expect_reply ? "\"" : "");
    pyi_msg_destroy (answer_p);
    return rc;
}

int main (int argc, char *argv [])
{
    setvbuf (stdout, NULL, _IOLBF, 0);      /* keep order with the worker's stderr */
    char worker_path [PATH_MAX + sizeof WORKER_NAME + 1];
    if (s_worker_path (argc, argv, worker_path, sizeof worker_path))
        return 1;

    pyi_broker_t *broker = pyi_broker_new ();
    if (!broker) {
        fprintf (stderr, "pyi_demo_host: cannot start the broker: %s\n", pyi_last_error ());
        return 1;
    }
    printf ("broker listening at %s and %s\n", pyi_broker_endpoint (broker), pyi_broker_inproc (broker));

    const char *worker_argv [] = { worker_path, NULL };
    int pid = pyi_broker_spawn (broker, SERVICE, worker_argv, NULL, -1, -1);
    if (pid < 0) {
        fprintf (stderr, "pyi_demo_host: cannot start %s: %s\n", worker_path, pyi_last_error ());
        pyi_broker_destroy (&broker);
        return 1;
    }
    printf ("spawned %s as pid %d\n", worker_path, pid);
    if (s_wait_ready (broker, pid)) {
        pyi_broker_destroy (&broker);
        return 1;
    }

    /*  The calls: two that work, one the worker fails, one nobody serves. */
    struct {
        const char *service;
        const char *args [MAX_ARGS];
        const char *expect_reply;       /* NULL: an ERROR is expected */
        int expect_code;
    } calls [] = {
        { SERVICE, { "upper", "hello from the host", NULL }, "HELLO FROM THE HOST", 0 },
        { SERVICE, { "sum", "1", "2", "3.5", "-0.25", NULL }, "6.25", 0 },
        { SERVICE, { "divide", "1", "0", NULL }, NULL, PYI_ERR_APPLICATION },
        { "nobody", { "upper", "anyone?", NULL }, NULL, PYI_ERR_UNKNOWN_SERVICE },
    };
    size_t call_count = sizeof calls / sizeof calls [0];
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    int failures = 0;
    if (!client) {
        fprintf (stderr, "pyi_demo_host: cannot connect a client: %s\n", pyi_last_error ());
        failures++;
    }
    for (size_t i = 0; client && i < call_count; i++) {
        pyi_msg_t *answer = s_call (client, calls [i].service, i + 1, calls [i].args);
        if (s_check (&answer, calls [i].service, calls [i].args,
                     calls [i].expect_reply, calls [i].expect_code))
            failures++;
    }
    pyi_client_destroy (&client);

    pyi_service_stats_t stats;
    if (pyi_broker_service_stats (broker, SERVICE, &stats) == 0)
        printf ("stats for \"%s\": requests %" PRIu64 ", replies %" PRIu64 ", errors %" PRIu64
                ", bytes in %" PRIu64 ", bytes out %" PRIu64 ", in flight %" PRIu64
                ", pid %" PRId64 ", ready %s\n", SERVICE, stats.requests, stats.replies,
                stats.errors, stats.bytes_in, stats.bytes_out, stats.in_flight, stats.pid,
                stats.ready ? "yes" : "no");
    else {
        fprintf (stderr, "pyi_demo_host: no statistics for \"%s\"\n", SERVICE);
        failures++;
    }

    pyi_broker_destroy (&broker);
    printf ("broker stopped\n");
    if (failures) {
        fprintf (stderr, "pyi_demo_host: %d of %zu calls went wrong\n", failures, call_count);
        return 1;
    }
    printf ("demo OK\n");
    return 0;
}
