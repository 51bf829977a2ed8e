/*  make_corpus: writes the seed corpus of fuzz_msg (tests/fuzz/corpus),
    one valid header of each command per file, and of REQUEST and REPLY
    with descriptor marks, encoded by pyi_msg_encode () (common/pyi_msg.c);
    and, given a second directory, the seeds of fuzz_router
    (tests/fuzz/corpus_router): scripts of the fake peers (fuzz_router.h),
    one per path through the broker's dispatch: a call, descriptors given
    back, a cancel, deadlines, remote workers and callers, heartbeat loss,
    a process that ended, refused offers, strikes, oversize messages, a
    full table, duplicate ids and strangers' replies, a caller that leaves.
    And, given a third, the seeds of fuzz_lane (tests/fuzz/corpus_lane):
    lane records (pyi_lane_encode, lane/pyi_lane.c) of a request, a reply
    with a marked descriptor frame, an error, and a stream of three.
    tests/fuzz/run checks that the committed corpora are what this writes.
    (The seeds of fuzz_tensor, tests/fuzz/corpus_tensor, are hand-written:
    they hold forms pyi_tensor_pack never writes, such as nil strides.)

    Usage: make_corpus DIRECTORY [ROUTER_DIRECTORY [LANE_DIRECTORY]]
*/

#include <stdio.h>
#include <stdlib.h>

#include <pyisolate/pyisolate.h>

#include "fuzz_router.h"

#define BUFFER 4096

static int s_write (const char *dir, const char *name, pyi_msg_t **msg_p)
{
    unsigned char buffer [BUFFER];
    int size = pyi_msg_encode (*msg_p, buffer, sizeof buffer);
    pyi_msg_destroy (msg_p);
    char path [1024];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen (path, "wb");
    if (size < 0 || !file || fwrite (buffer, 1, (size_t) size, file) != (size_t) size) {
        fprintf (stderr, "make_corpus: cannot write %s\n", path);
        if (file)
            fclose (file);
        return -1;
    }
    return fclose (file);
}

/*  A script of fuzz_router: one byte per number, up to END. */
#define END -1
#define RAW(c) FR_FRAME_RAW, 1, (c)
#define DESC FR_FRAME_DESCRIPTOR
#define INL FR_FRAME_INLINE
enum { A, B, C, X };                        /* the services */

static int s_script (const char *dir, const char *name, const int *bytes)
{
    unsigned char buffer [BUFFER];
    size_t size = 0;
    while (bytes [size] != END && size < BUFFER) {
        buffer [size] = (unsigned char) bytes [size];
        size++;
    }
    char path [1024];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen (path, "wb");
    if (!file || fwrite (buffer, 1, size, file) != size) {
        fprintf (stderr, "make_corpus: cannot write %s\n", path);
        if (file)
            fclose (file);
        return -1;
    }
    return fclose (file);
}

static int s_router_corpus (const char *dir)
{
    int rc = 0;
    rc |= s_script (dir, "call", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, 1, 1, A, 0, 1, 0, RAW ('q'),
        FR_REPLY, 0, 1, 1, 0, RAW ('r'), END });
    rc |= s_script (dir, "descriptors_given_back", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, 1, 2, A, 0, 2, 0, RAW ('x'), DESC,
        FR_REPLY, 0, 1, 1, 0, DESC,
        FR_REQUEST, 1, 3, X, 0, 1, 0, DESC,
        FR_REPLY, 0, 9, 1, 0, DESC, END });
    rc |= s_script (dir, "cancel", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, 1, 5, A, 0, 1, 0, DESC,
        FR_CANCEL, 1, 5,
        FR_REPLY, 0, 1, 1, 0, DESC, END });
    rc |= s_script (dir, "deadlines", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, 1, 6, A, 1, 0,
        FR_REQUEST, 1, 7, A, 3, 0,
        FR_TIME, 0, 5,
        FR_REPLY, 0, 1, 1, 0, DESC, END });
    rc |= s_script (dir, "remote_worker", (const int []) {
        FR_READY, FR_REMOTE_PEER, 1, 2, B, C,
        FR_REQUEST, 0, 1, B, 0, 1, 0, DESC,
        FR_REQUEST, 0, 2, B, 0, 1, 0, INL,
        FR_REPLY, FR_REMOTE_PEER, 1, 1, 0, INL,
        FR_REPLY, FR_REMOTE_PEER, 1, 1, 1, DESC, END });
    rc |= s_script (dir, "remote_caller", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, FR_REMOTE_PEER, 1, A, 0, 1, 1, DESC,
        FR_REQUEST, FR_REMOTE_PEER, 2, A, 0, 1, 0, INL,
        FR_REPLY, 0, 1, 1, 0, DESC,
        FR_REQUEST, FR_REMOTE_PEER, 3, A, 0, 1, 0, INL,
        FR_REPLY, 0, 2, 1, 0, INL, END });
    rc |= s_script (dir, "heartbeat_loss", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, 1, 1, A, 0, 0,
        FR_TIME, 0, 50,
        FR_HEARTBEAT, 0,
        FR_REQUEST, 1, 2, A, 0, 0, END });
    rc |= s_script (dir, "process_ended", (const int []) {
        FR_READY, 1, 1, 1, C,
        FR_REQUEST, 0, 1, C, 0, 1, 0, DESC,
        FR_EXITED, 0, 0,
        FR_READY, 1, 1, 1, C, END });
    rc |= s_script (dir, "refused_offers", (const int []) {
        FR_READY, 0, 2, 1, A,
        FR_READY, 0, 0, 1, C,
        FR_READY, 1, 0, 1, A,
        FR_READY, 0, 0, 1, A,
        FR_READY, 1, 3, 0, END });
    rc |= s_script (dir, "strikes", (const int []) {
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_RAW, 1, 3, 0x93, 1, 2, 0,
        FR_REQUEST, 1, 1, A, 0, 0, END });
    rc |= s_script (dir, "oversize", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_OVERSIZE, 1, 0, 1, A, 0,
        FR_OVERSIZE, 1, 0, 2, A, 1,
        FR_REQUEST, 1, 3, A, 0, 0,
        FR_OVERSIZE, 0, 1, 1, A, 0, END });
    rc |= s_script (dir, "busy", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_REQUEST, 1, 1, A, 0, 0, FR_REQUEST, 1, 2, A, 0, 0,
        FR_REQUEST, 1, 3, A, 0, 0, FR_REQUEST, 1, 4, A, 0, 0,
        FR_REQUEST, 1, 5, A, 0, 0, FR_REQUEST, 1, 6, A, 0, 0,
        FR_REQUEST, 1, 7, A, 0, 0, FR_REQUEST, 1, 8, A, 0, 0,
        FR_REQUEST, 1, 9, A, 0, 1, 0, DESC, END });
    rc |= s_script (dir, "duplicates_and_strangers", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_READY, 1, 1, 1, B,
        FR_REQUEST, FR_REMOTE_PEER, 1, A, 0, 0,
        FR_REQUEST, FR_REMOTE_PEER, 1, A, 0, 0,
        FR_REPLY, 1, 1, 1, 0, DESC,
        FR_REPLY, FR_REMOTE_PEER, 1, 0,
        FR_ERROR, 0, 1, 3, 1, 0, RAW ('e'), END });
    rc |= s_script (dir, "caller_leaves", (const int []) {
        FR_READY, 0, 0, 1, A,
        FR_READY, 1, 1, 1, B,
        FR_REQUEST, 1, 1, A, 0, 1, 0, DESC,
        FR_DISCONNECT, 1,
        FR_REQUEST, 0, 2, B, 0, 0, END });
    return rc;
}

/*  The lane records of msgs (taken), one after the other, into a file. */
static int s_records (const char *dir, const char *name, pyi_msg_t **msgs, size_t count)
{
    char path [1024];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen (path, "wb");
    int rc = file ? 0 : -1;
    for (size_t i = 0; i < count; i++) {
        void *data = NULL;
        size_t size = 0;
        if (rc == 0 && pyi_lane_encode (msgs [i], 0, &data, &size) == 0)
            rc = fwrite (data, 1, size, file) == size ? 0 : -1;
        else
            rc = -1;
        free (data);
        pyi_msg_destroy (&msgs [i]);
    }
    if (file && fclose (file))
        rc = -1;
    if (rc)
        fprintf (stderr, "make_corpus: cannot write %s\n", path);
    return rc;
}

static int s_lane_corpus (const char *dir)
{
    /*  The body of a call: msgpack [op, target, method, args, kwargs]. */
    static const char call [] = "\x95\xa4" "call" "\xa0\xa3" "get" "\x90\x80";
    int rc = 0;
    pyi_msg_t *msgs [3];

    msgs [0] = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msgs [0], 1);
    pyi_msg_set_service (msgs [0], "ext.demo");
    pyi_msg_set_timeout (msgs [0], 1000);
    pyi_msg_append (msgs [0], call, sizeof call - 1);
    rc |= s_records (dir, "request", msgs, 1);

    msgs [0] = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msgs [0], 3);
    pyi_msg_append (msgs [0], "\x91\x01", 2);
    pyi_msg_append (msgs [0], "descriptor bytes", 16);
    pyi_msg_mark_descriptor (msgs [0], 1);
    rc |= s_records (dir, "reply_marked", msgs, 1);

    msgs [0] = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (msgs [0], 3);
    pyi_msg_set_code (msgs [0], PYI_ERR_APPLICATION + 3);
    pyi_msg_set_text (msgs [0], "ValueError: x");
    pyi_msg_append (msgs [0], "\x81\xa1m\xa1x", 5);
    rc |= s_records (dir, "error", msgs, 1);

    msgs [0] = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msgs [0], 4);
    pyi_msg_set_service (msgs [0], "api.m.C");
    pyi_msg_append (msgs [0], "a", 1);
    pyi_msg_append (msgs [0], "c", 1);
    pyi_msg_mark_descriptor (msgs [0], 1);
    msgs [1] = pyi_msg_new (PYI_CANCEL);
    pyi_msg_set_id (msgs [1], 4);
    msgs [2] = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msgs [2], 5);
    rc |= s_records (dir, "stream", msgs, 3);
    return rc;
}

int main (int argc, char *argv [])
{
    if (argc < 2 || argc > 4) {
        fprintf (stderr, "usage: make_corpus DIRECTORY [ROUTER_DIRECTORY [LANE_DIRECTORY]]\n");
        return 2;
    }
    const char *dir = argv [1];
    int rc = 0;
    pyi_msg_t *msg;

    msg = pyi_msg_new (PYI_READY);
    pyi_msg_set_token (msg, "3q2+7wAAAAB0b2tlbgo");
    pyi_msg_add_service (msg, "echo");
    pyi_msg_add_service (msg, "numpy.linalg");
    pyi_msg_set_timeout (msg, 1000);
    rc |= s_write (dir, "ready", &msg);

    msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 42);
    pyi_msg_set_service (msg, "echo");
    pyi_msg_set_timeout (msg, 5000);
    rc |= s_write (dir, "request", &msg);

    msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 0x8000000000000005ull);
    pyi_msg_set_service (msg, "a-much-longer-service-name-that-needs-more-than-31-bytes");
    rc |= s_write (dir, "request_large_id", &msg);

    msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 7);
    pyi_msg_set_service (msg, "svc");
    pyi_msg_mark_descriptor (msg, 1);
    pyi_msg_mark_descriptor (msg, 3);
    rc |= s_write (dir, "request_descriptors", &msg);

    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 42);
    rc |= s_write (dir, "reply", &msg);

    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 7);
    pyi_msg_mark_descriptor (msg, 1);
    rc |= s_write (dir, "reply_descriptors", &msg);

    msg = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (msg, 7);
    pyi_msg_set_code (msg, PYI_ERR_UNKNOWN_SERVICE);
    pyi_msg_set_text (msg, "no live worker offers the service");
    pyi_msg_set_service (msg, "echo");
    rc |= s_write (dir, "error", &msg);

    msg = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (msg, 300);
    pyi_msg_set_code (msg, PYI_ERR_APPLICATION + 1);
    pyi_msg_set_text (msg, "Traceback (most recent call last): ValueError");
    rc |= s_write (dir, "error_application", &msg);

    msg = pyi_msg_new (PYI_CANCEL);
    pyi_msg_set_id (msg, 65536);
    rc |= s_write (dir, "cancel", &msg);

    msg = pyi_msg_new (PYI_HEARTBEAT);
    rc |= s_write (dir, "heartbeat", &msg);

    msg = pyi_msg_new (PYI_DISCONNECT);
    pyi_msg_set_code (msg, PYI_ERR_SHUTDOWN);
    pyi_msg_set_text (msg, "the broker is stopping");
    rc |= s_write (dir, "disconnect", &msg);

    if (argc >= 3)
        rc |= s_router_corpus (argv [2]);
    if (argc == 4)
        rc |= s_lane_corpus (argv [3]);
    return rc ? 1 : 0;
}
