/*  test_lane: the local lane (lane/pyi_lane.c) over socket pairs.

    Guarantees checked:
    - REQUEST, REPLY, ERROR and CANCEL cross with every header field, their
      body frames (empty, small, 8 MiB) and descriptor marks intact, in
      order, also when the bytes arrive one at a time; a long frame lent
      the lane's memory stays valid after the lane is gone; the memory a
      lent frame held is reused for a later record only once that frame is
      gone (while it lives, later records never overwrite it);
    - READY, HEARTBEAT and DISCONNECT are refused by send, and break the
      receiving lane when a peer writes them;
    - hostile records break the lane with a reason, never a crash nor an
      out-of-bounds read (AddressSanitizer build): a length over the limit
      or under its size field, a header size of 0, over the header limit or
      over the record, a truncated frame size, a frame longer than its
      record, 257 frames, a malformed header, a mark naming no frame; every
      cut of a valid record is "incomplete", never a message nor an error;
      random mutations of valid records decode or fail cleanly, and what
      decodes encodes back to the same bytes;
    - a message over max_record is refused by send;
    - backpressure: with nobody reading, records queue in the lane
      (pyi_lane_queued grows), flush says 1 until the peer reads, then 0;
    - the peer closing its end gives EOF on receive and -1 on send; a
      broken lane reads nothing more; destroy closes the socket (no fd left).
*/
#include "testutil.h"
#include <sys/socket.h>

static void
s_pair (pyi_lane_t **a, pyi_lane_t **b, size_t max_record)
{
    int sv[2];
    CHECK (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    *a = pyi_lane_new (sv[0], max_record);
    *b = pyi_lane_new (sv[1], max_record);
    CHECK (*a && *b);
}

static pyi_msg_t *
s_request (uint64_t id, const char *service, uint32_t timeout)
{
    pyi_msg_t *m = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (m, id);
    pyi_msg_set_service (m, service);
    pyi_msg_set_timeout (m, timeout);
    CHECK (pyi_msg_append (m, "body", 4) == 0);
    return m;
}

/*  The next message of lane, waiting up to 2 s (flushing the sender's
    queue, when there is one, meanwhile). */
static pyi_lane_t *s_sender;

static pyi_msg_t *
s_recv (pyi_lane_t *lane)
{
    int64_t end = t_now_ms () + 2000;
    while (t_now_ms () < end) {
        pyi_msg_t *m = pyi_lane_recv (lane);
        if (m || pyi_lane_state (lane) != PYI_LANE_OPEN)
            return m;
        if (s_sender)
            pyi_lane_flush (s_sender);
        t_sleep_ms (1);
    }
    return NULL;
}

static void
test_round_trip (void)
{
    TEST_BEGIN ("every lane command crosses intact, in order");
    pyi_lane_t *a, *b;
    s_pair (&a, &b, 0);
    pyi_msg_t *m = s_request (42, "ext.one", 1500);
    CHECK (pyi_msg_append (m, "", 0) == 0);
    CHECK (pyi_msg_mark_descriptor (m, 1) == 0);
    CHECK_INT (pyi_lane_send (a, &m), 0);
    CHECK (m == NULL);
    m = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (m, 43);
    size_t big = 8u << 20;
    char *data = malloc (big);
    for (size_t i = 0; i < big; i++)
        data[i] = (char) (i * 7);
    CHECK (pyi_msg_append (m, data, big) == 0);
    CHECK_INT (pyi_lane_send (a, &m), 0);
    m = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (m, 44);
    pyi_msg_set_code (m, PYI_ERR_APPLICATION);
    pyi_msg_set_text (m, "boom");
    CHECK_INT (pyi_lane_send (a, &m), 0);
    m = pyi_msg_new (PYI_CANCEL);
    pyi_msg_set_id (m, 45);
    CHECK_INT (pyi_lane_send (a, &m), 0);

    s_sender = a;
    m = s_recv (b);
    CHECK_CMD (m, PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (m), 42);
    CHECK_STR (pyi_msg_service (m), "ext.one");
    CHECK_INT (pyi_msg_timeout (m), 1500);
    CHECK_INT (pyi_msg_frames (m), 2);
    CHECK (memcmp (pyi_msg_frame_data (m, 0), "body", 4) == 0);
    CHECK_INT (pyi_msg_frame_size (m, 1), 0);
    CHECK (pyi_msg_is_descriptor (m, 1) && !pyi_msg_is_descriptor (m, 0));
    pyi_msg_destroy (&m);
    m = s_recv (b);
    CHECK_CMD (m, PYI_REPLY);
    CHECK_U64 (pyi_msg_id (m), 43);
    CHECK (pyi_msg_frame_size (m, 0) == big);
    CHECK (memcmp (pyi_msg_frame_data (m, 0), data, big) == 0);
    pyi_msg_t *kept = m;   /* its frame is lent the lane's memory: it outlives the lane */
    m = s_recv (b);
    CHECK_CMD (m, PYI_ERROR);
    CHECK_INT (pyi_msg_code (m), PYI_ERR_APPLICATION);
    CHECK_STR (pyi_msg_text (m), "boom");
    pyi_msg_destroy (&m);
    m = s_recv (b);
    CHECK_CMD (m, PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (m), 45);
    pyi_msg_destroy (&m);
    CHECK (pyi_lane_recv (b) == NULL && pyi_lane_state (b) == PYI_LANE_OPEN);
    /*  Counted by command and direction: messages and body bytes. */
    uint64_t bytes;
    CHECK_U64 (pyi_lane_count (b, false, PYI_REQUEST, &bytes), 1);
    CHECK_U64 (bytes, 4);
    CHECK_U64 (pyi_lane_count (b, false, PYI_REPLY, &bytes), 1);
    CHECK_U64 (bytes, big);
    CHECK_U64 (pyi_lane_count (b, false, PYI_ERROR, &bytes), 1);
    CHECK_U64 (bytes, 0);
    CHECK_U64 (pyi_lane_count (b, false, PYI_CANCEL, NULL), 1);
    CHECK_U64 (pyi_lane_count (b, true, PYI_REQUEST, NULL), 0);
    for (int command = PYI_READY; command <= PYI_DISCONNECT; command++)
        CHECK_U64 (pyi_lane_count (a, true, command, NULL), pyi_lane_count (b, false, command, NULL));
    CHECK_U64 (pyi_lane_count (a, true, PYI_REPLY, &bytes), 1);
    CHECK_U64 (bytes, big);
    CHECK_U64 (pyi_lane_count (a, true, 99, &bytes), 0);
    CHECK_U64 (bytes, 0);
    s_sender = NULL;
    pyi_lane_destroy (&a);
    pyi_lane_destroy (&b);
    CHECK (memcmp (pyi_msg_frame_data (kept, 0), data, big) == 0);
    pyi_msg_destroy (&kept);
    free (data);
}

/*  A REPLY of one frame of size bytes, each (char) (i + seed). */
static pyi_msg_t *
s_filled (size_t size, int seed)
{
    pyi_msg_t *m = pyi_msg_new (PYI_REPLY);
    char *data = malloc (size);
    for (size_t i = 0; i < size; i++)
        data[i] = (char) (i + (size_t) seed);
    CHECK (pyi_msg_append (m, data, size) == 0);
    free (data);
    return m;
}

static bool
s_holds (const pyi_msg_t *m, size_t size, int seed)
{
    const char *data = (const char *) pyi_msg_frame_data (m, 0);
    for (size_t i = 0; i < size; i++)
        if (data[i] != (char) (i + (size_t) seed))
            return false;
    return true;
}

static void
test_lent_memory_reused (void)
{
    TEST_BEGIN ("a lent frame's memory is reused only once the frame is gone");
    pyi_lane_t *a, *b;
    s_pair (&a, &b, 0);
    s_sender = a;
    size_t size = 1u << 20;
    pyi_msg_t *m = s_filled (size, 1);
    CHECK_INT (pyi_lane_send (a, &m), 0);
    pyi_msg_t *first = s_recv (b);
    CHECK (first && s_holds (first, size, 1));
    const void *where = pyi_msg_frame_data (first, 0);
    /*  While the first is held, later records go elsewhere. */
    for (int seed = 2; seed < 5; seed++) {
        m = s_filled (size, seed);
        CHECK_INT (pyi_lane_send (a, &m), 0);
        pyi_msg_t *next = s_recv (b);
        CHECK (next && s_holds (next, size, seed));
        CHECK (pyi_msg_frame_data (next, 0) != where);
        pyi_msg_destroy (&next);
        CHECK_MSG (s_holds (first, size, 1), "a later record overwrote a lent frame");
    }
    /*  Once it and those after it are gone, records land in the memory
        the last of them held: no new block for a steady stream. */
    pyi_msg_destroy (&first);
    uint64_t blocks = pyi_lane_blocks (b);
    for (int seed = 5; seed < 15; seed++) {
        m = s_filled (size, seed);
        CHECK_INT (pyi_lane_send (a, &m), 0);
        pyi_msg_t *next = s_recv (b);
        CHECK (next && s_holds (next, size, seed));
        pyi_msg_destroy (&next);
    }
    CHECK_MSG (pyi_lane_blocks (b) <= blocks + 1, "%d blocks for 10 records",
               (int) (pyi_lane_blocks (b) - blocks));
    s_sender = NULL;
    pyi_lane_destroy (&a);
    pyi_lane_destroy (&b);
}

static void
test_refused (void)
{
    TEST_BEGIN ("READY, HEARTBEAT, DISCONNECT and oversized messages are refused");
    pyi_lane_t *a, *b;
    s_pair (&a, &b, 1024);
    int commands[] = { PYI_READY, PYI_HEARTBEAT, PYI_DISCONNECT };
    for (size_t i = 0; i < 3; i++) {
        pyi_msg_t *m = pyi_msg_new ((pyi_command_t) commands[i]);
        CHECK_INT (pyi_lane_send (a, &m), -1);
        CHECK (m == NULL);
    }
    pyi_msg_t *m = pyi_msg_new (PYI_REPLY);
    char big[2048] = { 0 };
    CHECK (pyi_msg_append (m, big, sizeof big) == 0);
    CHECK_INT (pyi_lane_send (a, &m), -1);
    CHECK (strstr (pyi_last_error (), "limit") != NULL);
    CHECK_INT (pyi_lane_queued (a), 0);
    CHECK_INT (pyi_lane_state (a), PYI_LANE_OPEN);
    pyi_lane_destroy (&a);
    pyi_lane_destroy (&b);
}

/*  Write raw bytes into a lane's peer socket and read: the lane must break. */
static void
s_expect_broken (const void *bytes, size_t size, const char *reason)
{
    int sv[2];
    CHECK (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    pyi_lane_t *lane = pyi_lane_new (sv[1], 4096);
    CHECK (write (sv[0], bytes, size) == (ssize_t) size);
    pyi_msg_t *m = s_recv (lane);
    CHECK_MSG (m == NULL, "a hostile record (%s) decoded", reason);
    CHECK_MSG (pyi_lane_state (lane) == PYI_LANE_BROKEN, "%s: state %d", reason,
               pyi_lane_state (lane));
    CHECK_MSG (strstr (pyi_lane_error (lane), reason) != NULL, "expected \"%s\", got \"%s\"",
               reason, pyi_lane_error (lane));
    /*  Nothing more is read from a broken lane, even a valid record. */
    void *rec;
    size_t rsize;
    pyi_msg_t *ok = s_request (1, "x", 0);
    CHECK (pyi_lane_encode (ok, 0, &rec, &rsize) == 0);
    CHECK (write (sv[0], rec, rsize) == (ssize_t) rsize);
    CHECK (pyi_lane_recv (lane) == NULL);
    free (rec);
    pyi_msg_destroy (&ok);
    pyi_lane_destroy (&lane);
    close (sv[0]);
}

static size_t
s_put (uint8_t *p, uint32_t v)
{
    memcpy (p, &v, 4);   /* the test machines are little-endian, as the format */
    return 4;
}

static void
test_hostile (void)
{
    TEST_BEGIN ("hostile records break the lane with a reason");
    uint8_t buf[8192];
    size_t n;
    /*  A valid header to build on. */
    pyi_msg_t *m = s_request (9, "svc", 0);
    uint8_t header[256];
    int hsize = pyi_msg_encode (m, header, sizeof header);
    pyi_msg_destroy (&m);
    CHECK (hsize > 0);

    n = s_put (buf, 5000);
    s_expect_broken (buf, n, "longer than the lane's limit");
    n = s_put (buf, 0xFFFFFFFFu);
    s_expect_broken (buf, n, "longer than the lane's limit");
    n = s_put (buf, 2);
    s_expect_broken (buf, n, "shorter than its header size");
    n = s_put (buf, 4);
    n += s_put (buf + n, 0);
    s_expect_broken (buf, n, "bad header size");
    n = s_put (buf, 8);
    n += s_put (buf + n, 100);
    n += s_put (buf + n, 0);
    s_expect_broken (buf, n, "bad header size");
    n = s_put (buf, 4 + (uint32_t) hsize + 2);
    n += s_put (buf + n, (uint32_t) hsize);
    memcpy (buf + n, header, (size_t) hsize);
    n += (size_t) hsize;
    buf[n++] = 1;
    buf[n++] = 0;
    s_expect_broken (buf, n, "truncated frame size");
    n = s_put (buf, 4 + (uint32_t) hsize + 4 + 3);
    n += s_put (buf + n, (uint32_t) hsize);
    memcpy (buf + n, header, (size_t) hsize);
    n += (size_t) hsize;
    n += s_put (buf + n, 4);
    memcpy (buf + n, "abc", 3);
    n += 3;
    s_expect_broken (buf, n, "frame longer than");
    /*  257 empty frames. */
    n = s_put (buf, 4 + (uint32_t) hsize + 257 * 4);
    n += s_put (buf + n, (uint32_t) hsize);
    memcpy (buf + n, header, (size_t) hsize);
    n += (size_t) hsize;
    for (int i = 0; i < 257; i++)
        n += s_put (buf + n, 0);
    s_expect_broken (buf, n, "too many body frames");
    /*  Garbage in place of the header. */
    n = s_put (buf, 4 + 3);
    n += s_put (buf + n, 3);
    memcpy (buf + n, "\xc1\xc1\xc1", 3);
    n += 3;
    s_expect_broken (buf, n, "malformed message header");
    /*  A command that has no place on a lane. */
    m = pyi_msg_new (PYI_HEARTBEAT);
    hsize = pyi_msg_encode (m, header, sizeof header);
    pyi_msg_destroy (&m);
    n = s_put (buf, 4 + (uint32_t) hsize);
    n += s_put (buf + n, (uint32_t) hsize);
    memcpy (buf + n, header, (size_t) hsize);
    n += (size_t) hsize;
    s_expect_broken (buf, n, "no place on a lane");
    /*  A descriptor mark beyond the frames. */
    m = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (m, 1);
    CHECK (pyi_msg_mark_descriptor (m, 3) == 0);
    hsize = pyi_msg_encode (m, header, sizeof header);
    pyi_msg_destroy (&m);
    n = s_put (buf, 4 + (uint32_t) hsize + 4);
    n += s_put (buf + n, (uint32_t) hsize);
    memcpy (buf + n, header, (size_t) hsize);
    n += (size_t) hsize;
    n += s_put (buf + n, 0);
    s_expect_broken (buf, n, "descriptor mark names no body frame");
}

static void
test_cuts_and_mutations (void)
{
    TEST_BEGIN ("cuts of a record are incomplete; mutations decode or fail cleanly");
    pyi_msg_t *m = s_request (77, "api.mod.Thing", 250);
    CHECK (pyi_msg_append (m, "second frame", 12) == 0);
    CHECK (pyi_msg_mark_descriptor (m, 1) == 0);
    void *rec;
    size_t size;
    CHECK (pyi_lane_encode (m, 0, &rec, &size) == 0);
    pyi_msg_destroy (&m);
    for (size_t cut = 0; cut < size; cut++) {
        pyi_msg_t *out;
        size_t used;
        const char *why;
        uint8_t *copy = malloc (cut ? cut : 1);   /* exact size: ASan sees overreads */
        memcpy (copy, rec, cut);
        CHECK_INT (pyi_lane_decode (copy, cut, 0, &out, &used, &why), 0);
        CHECK (out == NULL && used == 0);
        free (copy);
    }
    srand (12345);
    int decoded = 0;
    for (int round = 0; round < 20000; round++) {
        uint8_t *copy = malloc (size);
        memcpy (copy, rec, size);
        int flips = 1 + rand () % 4;
        for (int f = 0; f < flips; f++)
            copy[(size_t) rand () % size] = (uint8_t) rand ();
        pyi_msg_t *out;
        size_t used;
        const char *why;
        int rc = pyi_lane_decode (copy, size, 0, &out, &used, &why);
        CHECK (rc >= -1 && rc <= 1);
        if (rc == 1) {
            decoded++;
            CHECK (used <= size);
            void *again;
            size_t asize;
            CHECK (pyi_lane_encode (out, 0, &again, &asize) == 0);
            pyi_msg_t *back;
            size_t bused;
            CHECK_INT (pyi_lane_decode (again, asize, 0, &back, &bused, &why), 1);
            CHECK (bused == asize);
            CHECK_U64 (pyi_msg_id (back), pyi_msg_id (out));
            CHECK_INT (pyi_msg_frames (back), pyi_msg_frames (out));
            pyi_msg_destroy (&back);
            pyi_msg_destroy (&out);
            free (again);
        }
        else
            CHECK (out == NULL);
        free (copy);
    }
    CHECK (decoded > 0);
    free (rec);
}

static void
test_byte_by_byte (void)
{
    TEST_BEGIN ("a record that arrives one byte at a time");
    int sv[2];
    CHECK (socketpair (AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    pyi_lane_t *lane = pyi_lane_new (sv[1], 0);
    pyi_msg_t *m = s_request (5, "svc", 0);
    void *rec;
    size_t size;
    CHECK (pyi_lane_encode (m, 0, &rec, &size) == 0);
    pyi_msg_destroy (&m);
    for (size_t i = 0; i < size; i++) {
        CHECK (pyi_lane_recv (lane) == NULL);
        CHECK_INT (pyi_lane_state (lane), PYI_LANE_OPEN);
        CHECK (write (sv[0], (uint8_t *) rec + i, 1) == 1);
    }
    m = pyi_lane_recv (lane);
    CHECK_CMD (m, PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (m), 5);
    pyi_msg_destroy (&m);
    free (rec);
    /*  The peer closes mid-record: EOF, with the reason. */
    CHECK (write (sv[0], "\x10\0\0\0\x01", 5) == 5);
    close (sv[0]);
    CHECK (pyi_lane_recv (lane) == NULL);
    CHECK_INT (pyi_lane_state (lane), PYI_LANE_EOF);
    CHECK (strstr (pyi_lane_error (lane), "mid-record") != NULL);
    pyi_lane_destroy (&lane);
}

static void
test_backpressure_and_eof (void)
{
    TEST_BEGIN ("a full socket queues records; flush; EOF on close");
    int fds_before = t_count_fds ();
    pyi_lane_t *a, *b;
    s_pair (&a, &b, 0);
    char chunk[65536] = { 1 };
    int sent = 0;
    while (pyi_lane_queued (a) == 0 && sent < 10000) {
        pyi_msg_t *m = pyi_msg_new (PYI_REPLY);
        pyi_msg_set_id (m, (uint64_t) sent);
        CHECK (pyi_msg_append (m, chunk, sizeof chunk) == 0);
        CHECK_INT (pyi_lane_send (a, &m), 0);
        sent++;
    }
    CHECK (pyi_lane_queued (a) > 0);
    CHECK_INT (pyi_lane_flush (a), 1);
    /*  The reader drains: every record arrives, in order. */
    int got = 0;
    int64_t end = t_now_ms () + 5000;
    while (got < sent && t_now_ms () < end) {
        pyi_lane_flush (a);
        pyi_msg_t *m = pyi_lane_recv (b);
        if (m) {
            CHECK_U64 (pyi_msg_id (m), (uint64_t) got);
            got++;
            pyi_msg_destroy (&m);
        }
    }
    CHECK_INT (got, sent);
    CHECK_INT (pyi_lane_queued (a), 0);
    pyi_lane_destroy (&b);
    CHECK (pyi_lane_recv (a) == NULL);
    CHECK_INT (pyi_lane_state (a), PYI_LANE_EOF);
    pyi_msg_t *m = s_request (1, "svc", 0);
    CHECK_INT (pyi_lane_send (a, &m), -1);
    CHECK (strstr (pyi_last_error (), "closed") != NULL);
    pyi_lane_destroy (&a);
    pyi_lane_destroy (&a);   /* safe twice */
    CHECK_INT (t_count_fds (), fds_before);
}

int
main (void)
{
    test_round_trip ();
    test_lent_memory_reused ();
    test_refused ();
    test_hostile ();
    test_cuts_and_mutations ();
    test_byte_by_byte ();
    test_backpressure_and_eof ();
    fprintf (stderr, "test_lane: OK\n");
    return 0;
}
