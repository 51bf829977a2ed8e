/*  fuzz_lane: libFuzzer target for the local lane's record decoder
    (lane/pyi_lane.c), fed the bytes a hostile peer could write.

    The input is read as a stream of records, as a lane reads its socket:
    pyi_lane_decode () must never crash, leak or read out of bounds, must
    consume no more than it was given, and must say "incomplete" (0) for
    every proper prefix of a record it accepts. Each accepted message is
    encoded again (pyi_lane_encode) and decoded once more: the two must
    agree on the command, id, frames and their bytes, or it aborts. The
    same bytes then go through a real lane over a socket pair
    (pyi_lane_recv), which must deliver the same number of messages before
    it stops.

    Build: tests/fuzz/run (clang, -DPYI_FUZZ=ON).
*/

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <pyisolate/pyisolate.h>

#define MAX_RECORD 65536

static void
s_check (int ok, const char *what)
{
    if (!ok) {
        fprintf (stderr, "fuzz_lane: %s\n", what);
        abort ();
    }
}

static void
s_same (const pyi_msg_t *a, const pyi_msg_t *b)
{
    s_check (pyi_msg_command (a) == pyi_msg_command (b), "command changed");
    s_check (pyi_msg_id (a) == pyi_msg_id (b), "id changed");
    s_check (pyi_msg_frames (a) == pyi_msg_frames (b), "frame count changed");
    for (size_t i = 0; i < pyi_msg_frames (a); i++) {
        s_check (pyi_msg_frame_size (a, i) == pyi_msg_frame_size (b, i), "frame size changed");
        s_check (memcmp (pyi_msg_frame_data (a, i), pyi_msg_frame_data (b, i),
                         pyi_msg_frame_size (a, i)) == 0, "frame bytes changed");
        s_check (pyi_msg_is_descriptor (a, i) == pyi_msg_is_descriptor (b, i), "mark changed");
    }
    s_check (strcmp (pyi_msg_service (a), pyi_msg_service (b)) == 0, "service changed");
    s_check (strcmp (pyi_msg_text (a), pyi_msg_text (b)) == 0, "text changed");
}

/*  Decode records from data; the number of messages before the first
    fault or incomplete record. */
static size_t
s_decode_all (const uint8_t *data, size_t size)
{
    size_t offset = 0, count = 0;
    while (offset < size) {
        pyi_msg_t *msg;
        size_t used;
        const char *why;
        int rc = pyi_lane_decode (data + offset, size - offset, MAX_RECORD, &msg, &used, &why);
        s_check (rc >= -1 && rc <= 1, "bad return code");
        if (rc != 1) {
            s_check (msg == NULL && used == 0, "a message or bytes used without success");
            s_check (rc == 0 || *why, "a fault without a reason");
            break;
        }
        s_check (used > 0 && used <= size - offset, "used more than given");
        /*  A proper prefix of the record is incomplete. */
        pyi_msg_t *none;
        size_t nused;
        s_check (pyi_lane_decode (data + offset, used - 1, MAX_RECORD, &none, &nused, &why) == 0,
                 "a prefix of a record did not read as incomplete");
        void *again;
        size_t asize;
        s_check (pyi_lane_encode (msg, MAX_RECORD, &again, &asize) == 0, "cannot re-encode");
        pyi_msg_t *back;
        s_check (pyi_lane_decode (again, asize, MAX_RECORD, &back, &nused, &why) == 1
                 && nused == asize, "the re-encoding does not decode");
        s_same (msg, back);
        pyi_msg_destroy (&back);
        free (again);
        pyi_msg_destroy (&msg);
        offset += used;
        count++;
    }
    return count;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    size_t expected = s_decode_all (data, size);
    if (size > 100000)
        return 0;   /* over a socket pair's buffer: the decoder alone */
    int sv[2];
    s_check (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    pyi_lane_t *lane = pyi_lane_new (sv[1], MAX_RECORD);
    s_check (lane != NULL, "pyi_lane_new");
    size_t sent = 0;
    while (sent < size) {
        ssize_t n = write (sv[0], data + sent, size - sent);
        s_check (n > 0, "write");
        sent += (size_t) n;
    }
    close (sv[0]);
    size_t count = 0;
    pyi_msg_t *msg;
    while ((msg = pyi_lane_recv (lane)) != NULL) {
        count++;
        pyi_msg_destroy (&msg);
    }
    s_check (count == expected, "the lane and the decoder disagree");
    s_check (pyi_lane_state (lane) != PYI_LANE_OPEN, "the lane did not end");
    pyi_lane_destroy (&lane);
    return 0;
}
