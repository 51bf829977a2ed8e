/*  pyi_demo_worker: the worker half of the C demo (see pyi_demo_host.c).

    Started by the host with pyi_broker_spawn (), it finds the broker's
    endpoint, its service name and its token in the environment
    (PYI_ENDPOINT, PYI_SERVICE, PYI_TOKEN), offers the service and answers
    requests until the broker says DISCONNECT. A request's first body frame
    names the method, the frames after it are the arguments:

      upper TEXT        -> TEXT in capitals
      sum N1 N2 ...     -> the sum of the numbers, as text
      anything else     -> ERROR APPLICATION "unknown method"
*/

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pyisolate/pyisolate.h>

#define RECV_TIMEOUT_MS 500     /* wake up at least this often to heartbeat */
#define NUMBER_TEXT 64          /* longest number argument or answer */

/*  Frame index of a request as a C string (copied, caller frees). */
static char *s_frame_string (pyi_msg_t *msg, size_t index)
{
    size_t size = pyi_msg_frame_size (msg, index);
    char *text = malloc (size + 1);
    if (text) {
        memcpy (text, pyi_msg_frame_data (msg, index), size);
        text [size] = '\0';
    }
    return text;
}

static int s_upper (pyi_worker_t *worker, uint64_t id, pyi_msg_t *request)
{
    if (pyi_msg_frames (request) != 2)
        return pyi_worker_error (worker, id, PYI_ERR_APPLICATION, "upper takes one argument", NULL);
    size_t size = pyi_msg_frame_size (request, 1);
    const unsigned char *text = pyi_msg_frame_data (request, 1);
    char *answer = malloc (size ? size : 1);
    if (!answer)
        return pyi_worker_error (worker, id, PYI_ERR_APPLICATION, "out of memory", NULL);
    for (size_t i = 0; i < size; i++)
        answer [i] = (char) toupper (text [i]);
    pyi_msg_t *reply = pyi_msg_new (PYI_REPLY);
    int rc = pyi_msg_append (reply, answer, size);
    free (answer);
    if (rc) {
        pyi_msg_destroy (&reply);
        return pyi_worker_error (worker, id, PYI_ERR_APPLICATION, "cannot build the answer", NULL);
    }
    return pyi_worker_reply (worker, id, &reply);
}

static int s_sum (pyi_worker_t *worker, uint64_t id, pyi_msg_t *request)
{
    double sum = 0;
    for (size_t i = 1; i < pyi_msg_frames (request); i++) {
        char *arg = s_frame_string (request, i);
        char *end = NULL;
        errno = 0;
        double value = arg ? strtod (arg, &end) : 0;
        bool good = arg && end != arg && *end == '\0' && errno == 0;
        if (!good) {
            char text [NUMBER_TEXT + 32];
            snprintf (text, sizeof text, "not a number: \"%.*s\"", NUMBER_TEXT, arg ? arg : "");
            free (arg);
            return pyi_worker_error (worker, id, PYI_ERR_APPLICATION, text, NULL);
        }
        free (arg);
        sum += value;
    }
    char answer [NUMBER_TEXT];
    snprintf (answer, sizeof answer, "%.17g", sum);
    pyi_msg_t *reply = pyi_msg_new (PYI_REPLY);
    pyi_msg_append (reply, answer, strlen (answer));
    return pyi_worker_reply (worker, id, &reply);
}

static int s_serve (pyi_worker_t *worker, pyi_msg_t *request)
{
    uint64_t id = pyi_msg_id (request);
    char *method = pyi_msg_frames (request) > 0 ? s_frame_string (request, 0) : NULL;
    int rc;
    if (method && strcmp (method, "upper") == 0)
        rc = s_upper (worker, id, request);
    else
    if (method && strcmp (method, "sum") == 0)
        rc = s_sum (worker, id, request);
    else {
        char text [PYI_MAX_NAME + 32];
        snprintf (text, sizeof text, "unknown method \"%.*s\"", PYI_MAX_NAME, method ? method : "");
        rc = pyi_worker_error (worker, id, PYI_ERR_APPLICATION, text, NULL);
    }
    free (method);
    return rc;
}

int main (void)
{
    if (pyi_worker_bind_to_parent ()) {
        fprintf (stderr, "pyi_demo_worker: run me through pyi_demo_host (%s)\n", pyi_last_error ());
        return 2;
    }
    const char *endpoint = getenv ("PYI_ENDPOINT");
    const char *token = getenv ("PYI_TOKEN");
    const char *service = getenv ("PYI_SERVICE");
    if (!endpoint || !token || !service) {
        fprintf (stderr, "pyi_demo_worker: PYI_ENDPOINT, PYI_TOKEN and PYI_SERVICE must be set\n");
        return 2;
    }
    pyi_worker_t *worker = pyi_worker_new (endpoint, token, 0, 0);
    if (!worker || pyi_worker_offer (worker, service)) {
        fprintf (stderr, "pyi_demo_worker: cannot offer %s at %s: %s\n",
                 service, endpoint, pyi_last_error ());
        pyi_worker_destroy (&worker);
        return 1;
    }
    int status = 0;
    bool running = true;
    while (running) {
        pyi_msg_t *msg = pyi_worker_recv (worker, RECV_TIMEOUT_MS);
        if (!msg) {
            if (pyi_worker_heartbeat (worker) < 0) {
                fprintf (stderr, "pyi_demo_worker: the broker went silent, giving up\n");
                status = 1;
                running = false;
            }
            continue;
        }
        switch (pyi_msg_command (msg)) {
            case PYI_REQUEST:
                if (s_serve (worker, msg))
                    fprintf (stderr, "pyi_demo_worker: cannot answer request %llu: %s\n",
                             (unsigned long long) pyi_msg_id (msg), pyi_last_error ());
                break;
            case PYI_READY:
                fprintf (stderr, "pyi_demo_worker: pid %d serves \"%s\"\n", (int) getpid (), service);
                break;
            case PYI_ERROR:
                fprintf (stderr, "pyi_demo_worker: the broker refused \"%s\": %s %s\n", service,
                         pyi_error_name (pyi_msg_code (msg)), pyi_msg_text (msg));
                status = 1;
                running = false;
                break;
            case PYI_DISCONNECT:
                running = false;
                break;
            default:
                break;          /* CANCEL: every answer is immediate, nothing to stop */
        }
        pyi_msg_destroy (&msg);
    }
    pyi_worker_destroy (&worker);
    return status;
}
