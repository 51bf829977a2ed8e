/*  pyi_test_worker: a worker process for the process tests.

    Started by pyi_broker_spawn (). Binds its life to the host
    (pyi_worker_bind_to_parent), connects to $PYI_ENDPOINT with $PYI_TOKEN,
    offers $PYI_SERVICE and serves requests whose first body frame is a
    command:

      echo          reply with the request's frames
      pid           reply with this process's pid in decimal
      token         reply with $PYI_TOKEN
      print:TEXT    write TEXT and a newline to stdout, reply "printed"
      exit:CODE     _exit (CODE) at once, without answering
      crash         raise SIGSEGV
      abort         abort ()
      hang          stop calling pyi_worker_recv (no heartbeats), forever
      hold          never answer this request, keep serving others
      sleep:MS      answer "slept" after MS milliseconds, serving others meanwhile

    $PYI_TEST_HEARTBEAT_MS and $PYI_TEST_LIVENESS, when set, are passed to
    pyi_worker_new. On READY it prints "ready <pid>" to stdout.
*/
#include <pyisolate/pyisolate.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEFERRED 64

typedef struct {
    uint64_t id;
    int64_t due;                /* ms, monotonic */
} deferred_t;

static int64_t
s_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int
s_env_int (const char *name)
{
    const char *value = getenv (name);
    return value ? atoi (value) : 0;
}

int
main (int argc, char *argv [])
{
    if (pyi_worker_bind_to_parent ()) {
        fprintf (stderr, "pyi_test_worker: not started by a broker\n");
        return 64;
    }
    const char *endpoint = getenv ("PYI_ENDPOINT");
    const char *token = getenv ("PYI_TOKEN");
    const char *service = getenv ("PYI_SERVICE");
    if (!endpoint || !token || !service) {
        fprintf (stderr, "pyi_test_worker: PYI_ENDPOINT, PYI_TOKEN or PYI_SERVICE missing\n");
        return 65;
    }
    pyi_worker_t *worker = pyi_worker_new (endpoint, token, s_env_int ("PYI_TEST_HEARTBEAT_MS"),
                                           s_env_int ("PYI_TEST_LIVENESS"));
    if (!worker || pyi_worker_offer (worker, service)) {
        fprintf (stderr, "pyi_test_worker: cannot offer %s: %s\n", service, pyi_last_error ());
        return 66;
    }
    deferred_t deferred [MAX_DEFERRED];
    size_t ndeferred = 0;
    int rc = 0;
    while (true) {
        /*  Answer the sleeps that are due; wait at most until the next one. */
        int64_t now = s_now_ms ();
        int timeout = -1;
        for (size_t i = 0; i < ndeferred;) {
            if (deferred [i].due <= now) {
                pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
                pyi_msg_append (body, "slept", 5);
                pyi_worker_reply (worker, deferred [i].id, &body);
                deferred [i] = deferred [--ndeferred];
            }
            else {
                int left = (int) (deferred [i].due - now);
                if (timeout == -1 || left < timeout)
                    timeout = left;
                i++;
            }
        }
        pyi_msg_t *msg = pyi_worker_recv (worker, timeout == -1 ? 1000 : timeout);
        if (!msg) {
            if (pyi_worker_heartbeat (worker) == -1) {
                fprintf (stderr, "pyi_test_worker: broker lost\n");
                rc = 3;
                break;
            }
            continue;
        }
        pyi_command_t command = pyi_msg_command (msg);
        if (command == PYI_READY) {
            printf ("ready %d\n", (int) getpid ());
            fflush (stdout);
        }
        else
        if (command == PYI_ERROR) {
            fprintf (stderr, "pyi_test_worker: refused: %s\n", pyi_msg_text (msg));
            rc = 2;
            pyi_msg_destroy (&msg);
            break;
        }
        else
        if (command == PYI_DISCONNECT) {
            pyi_msg_destroy (&msg);
            break;
        }
        else
        if (command == PYI_CANCEL) {
            for (size_t i = 0; i < ndeferred; i++)
                if (deferred [i].id == pyi_msg_id (msg)) {
                    deferred [i] = deferred [--ndeferred];
                    break;
                }
        }
        else
        if (command == PYI_REQUEST) {
            char text [1024] = "";
            size_t size = pyi_msg_frames (msg) ? pyi_msg_frame_size (msg, 0) : 0;
            if (size >= sizeof (text))
                size = sizeof (text) - 1;
            if (size)
                memcpy (text, pyi_msg_frame_data (msg, 0), size);
            text [size] = 0;
            uint64_t id = pyi_msg_id (msg);

            if (strcmp (text, "echo") == 0) {
                pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
                for (size_t i = 0; i < pyi_msg_frames (msg); i++)
                    pyi_msg_append (body, pyi_msg_frame_data (msg, i), pyi_msg_frame_size (msg, i));
                pyi_worker_reply (worker, id, &body);
            }
            else
            if (strcmp (text, "pid") == 0) {
                char pid [32];
                snprintf (pid, sizeof pid, "%d", (int) getpid ());
                pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
                pyi_msg_append (body, pid, strlen (pid));
                pyi_worker_reply (worker, id, &body);
            }
            else
            if (strcmp (text, "token") == 0) {
                pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
                pyi_msg_append (body, token, strlen (token));
                pyi_worker_reply (worker, id, &body);
            }
            else
            if (strncmp (text, "print:", 6) == 0) {
                printf ("%s\n", text + 6);
                fflush (stdout);
                pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
                pyi_msg_append (body, "printed", 7);
                pyi_worker_reply (worker, id, &body);
            }
            else
            if (strncmp (text, "exit:", 5) == 0)
                _exit (atoi (text + 5));
            else
            if (strcmp (text, "crash") == 0) {
                /*  Die by the signal itself, also under a sanitizer that
                    would catch it, report and exit with status 1. */
                signal (SIGSEGV, SIG_DFL);
                raise (SIGSEGV);
                _exit (99);         /* not reached */
            }
            else
            if (strcmp (text, "abort") == 0) {
                signal (SIGABRT, SIG_DFL);
                abort ();
            }
            else
            if (strcmp (text, "hang") == 0) {
                while (true)
                    pause ();
            }
            else
            if (strcmp (text, "hold") == 0)
                ;                   /* never answered */
            else
            if (strncmp (text, "sleep:", 6) == 0 && ndeferred < MAX_DEFERRED) {
                deferred [ndeferred].id = id;
                deferred [ndeferred].due = s_now_ms () + atoi (text + 6);
                ndeferred++;
            }
            else
                pyi_worker_error (worker, id, PYI_ERR_APPLICATION, "unknown test command", NULL);
        }
        pyi_msg_destroy (&msg);
    }
    pyi_worker_destroy (&worker);
    return rc;
}
