/*  make_corpus: writes the seed corpus of fuzz_msg (tests/fuzz/corpus),
    one valid header of each command per file, and of REQUEST and REPLY
    with descriptor marks, encoded by pyi_msg_encode () (common/pyi_msg.c).
    tests/fuzz/run checks that the committed corpus is what this writes.
    (The seeds of fuzz_tensor, tests/fuzz/corpus_tensor, are hand-written:
    they hold forms pyi_tensor_pack never writes, such as nil strides.)

    Usage: make_corpus DIRECTORY
*/

#include <stdio.h>
#include <stdlib.h>

#include <pyisolate/pyisolate.h>

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

int main (int argc, char *argv [])
{
    if (argc != 2) {
        fprintf (stderr, "usage: make_corpus DIRECTORY\n");
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

    return rc ? 1 : 0;
}
