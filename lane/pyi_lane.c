/*  pyi_lane: records of the wire protocol over a connected stream socket
    (include/pyisolate/pyi_lane.h, docs/protocol.md "Local lane").

    Receiving reads what the socket holds into one buffer and decodes
    whole records from it; the buffer grows to the longest record seen
    (at most max_record plus one read). Sending appends records to a
    queue and writes as much as the socket takes.
*/
#include "pyisolate/pyi_lane.h"
#include "pyi_library_internal.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HEADER_MAX 4096          /* longest header a lane carries */
#define READ_CHUNK 65536         /* bytes asked of the socket per read */
#define KEEP (2u << 20)          /* an idle buffer up to this size is kept */
#define LENT 65536               /* received frames this long are lent, not copied */
#define ERROR_SIZE 160
#define COMMANDS 8               /* command values counted: 0-7 */

/*  A buffer's memory: a reference count, then the bytes. Received frames
    of LENT bytes and more point into it (the message holds a reference);
    the lane then leaves it to them and takes a new one for what follows. */
typedef struct {
    int refs;
    size_t capacity;
    uint8_t data[];
} s_block_t;

typedef struct {
    s_block_t *block;            /* NULL until first used */
    uint8_t *data;               /* block->data */
    size_t start;                /* first unused byte */
    size_t end;                  /* one past the last byte */
    size_t capacity;
    s_block_t *prev;             /* the last block left to lent frames (at
                                    most KEEP bytes): reused once they are gone */
    uint64_t blocks;             /* blocks allocated (not grown, not reused) */
} s_buffer_t;

struct _pyi_lane_t {
    int fd;
    size_t max_record;
    pyi_lane_state_t state;
    char error[ERROR_SIZE];
    s_buffer_t in;
    s_buffer_t out;
    /*  Statistics, by direction (0 received, 1 sent) and command:
        messages, and the bytes of their body frames. */
    uint64_t count[2][COMMANDS];
    uint64_t bytes[2][COMMANDS];
};

static uint32_t
s_get32 (const uint8_t *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 24;
}

static void
s_put32 (uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
    p[2] = (uint8_t) (v >> 16);
    p[3] = (uint8_t) (v >> 24);
}

static bool
s_lane_command (int command)
{
    return command == PYI_REQUEST || command == PYI_REPLY || command == PYI_ERROR
        || command == PYI_CANCEL;
}

static void
s_unref (s_block_t *block)
{
    if (block && __atomic_sub_fetch (&block->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free (block);
}

/*  pyi_free_fn of a lent frame: data points into the block hint. */
static void
s_lent_free (void *data, void *hint)
{
    (void) data;
    s_unref ((s_block_t *) hint);
}

/*  Room for more bytes at the end of b (moving what is kept to the
    front first; growing by realloc, which moves large blocks' pages
    without copying them). 0, or -1 when out of memory. */
static int
s_reserve (s_buffer_t *b, size_t more)
{
    if (b->start == b->end)
        b->start = b->end = 0;
    if (b->capacity - b->end >= more)
        return 0;
    s_block_t *prev = b->prev;
    if (b->block == NULL && prev && prev->capacity >= more
    &&  __atomic_load_n (&prev->refs, __ATOMIC_ACQUIRE) == 1) {
        b->prev = NULL;             /* its frames are gone: its pages are ready */
        b->block = prev;
        b->data = prev->data;
        b->capacity = prev->capacity;
        return 0;
    }
    size_t kept = b->end - b->start;
    if (b->start > 0) {
        memmove (b->data, b->data + b->start, kept);
        b->start = 0;
        b->end = kept;
        if (b->capacity - kept >= more)
            return 0;
    }
    size_t want = b->capacity ? b->capacity : READ_CHUNK;
    while (want - kept < more) {
        if (want > SIZE_MAX / 4)
            return -1;
        want *= 2;
    }
    s_block_t *block = (s_block_t *) realloc (b->block, sizeof (s_block_t) + want);
    if (block == NULL)
        return -1;
    b->blocks += b->block == NULL;
    block->refs = 1;
    block->capacity = want;
    b->block = block;
    b->data = block->data;
    b->capacity = want;
    return 0;
}

/*  A buffer that grew over KEEP for one big record is let go once empty,
    so an idle lane holds little memory. */
static void
s_shrink (s_buffer_t *b)
{
    if (b->start == b->end && b->capacity > KEEP) {
        s_unref (b->block);
        b->block = NULL;
        b->data = NULL;
        b->capacity = b->start = b->end = 0;
    }
}

/*  The frames of a received message were lent b's block: the bytes after
    them get a block of their own and the old one is left to the frames
    (kept as b->prev when small enough, so that once they are gone the next
    record lands in pages already faulted in). 0, or -1 when out of memory. */
static int
s_detach (s_buffer_t *b)
{
    s_buffer_t old = *b;
    memset (b, 0, sizeof *b);
    b->blocks = old.blocks;
    s_unref (old.prev);
    if (old.capacity <= KEEP)
        b->prev = old.block;        /* our reference, until it is reused */
    size_t kept = old.end - old.start;
    int rc = 0;
    if (kept && (rc = s_reserve (b, kept)) == 0) {
        memcpy (b->data, old.data + old.start, kept);
        b->end = kept;
    }
    if (old.capacity > KEEP)
        s_unref (old.block);
    return rc;
}

static void
s_fail (pyi_lane_t *self, pyi_lane_state_t state, const char *why)
{
    if (self->state == PYI_LANE_OPEN) {
        self->state = state;
        snprintf (self->error, sizeof self->error, "%s", why);
    }
}

/* -- records ------------------------------------------------------------------ */

/*  pyi_lane_decode; with block (the memory data lies in), body frames of
    LENT bytes and more point into it, each holding a reference. */
static int
s_decode (const void *data, size_t size, size_t max_record, pyi_msg_t **msg, size_t *used,
          const char **why, s_block_t *block)
{
    const uint8_t *p = (const uint8_t *) data;
    if (max_record == 0)
        max_record = PYI_LANE_MAX_RECORD;
    *used = 0;
    *msg = NULL;
    *why = "";
    if (size < PYI_LANE_PREFIX)
        return 0;
    uint32_t length = s_get32 (p);
    if (length > max_record) {
        *why = "record longer than the lane's limit";
        return -1;
    }
    if (length < PYI_LANE_PREFIX) {
        *why = "record shorter than its header size field";
        return -1;
    }
    if (size - PYI_LANE_PREFIX < length)
        return 0;
    const uint8_t *rec = p + PYI_LANE_PREFIX;
    size_t left = length;
    uint32_t hsize = s_get32 (rec);
    rec += PYI_LANE_PREFIX;
    left -= PYI_LANE_PREFIX;
    if (hsize == 0 || hsize > HEADER_MAX || hsize > left) {
        *why = "bad header size in a record";
        return -1;
    }
    pyi_msg_t *m = pyi_msg_decode (rec, hsize);
    if (m == NULL) {
        *why = "out of memory";
        return -1;
    }
    if (pyi_msg_status (m) != PYI_OK) {
        *why = "malformed message header in a record";
        pyi_msg_destroy (&m);
        return -1;
    }
    if (!s_lane_command (pyi_msg_command (m))) {
        *why = "a command that has no place on a lane";
        pyi_msg_destroy (&m);
        return -1;
    }
    rec += hsize;
    left -= hsize;
    while (left > 0) {
        if (left < PYI_LANE_PREFIX) {
            *why = "truncated frame size in a record";
            pyi_msg_destroy (&m);
            return -1;
        }
        uint32_t fsize = s_get32 (rec);
        rec += PYI_LANE_PREFIX;
        left -= PYI_LANE_PREFIX;
        if (fsize > left) {
            *why = "frame longer than what is left of its record";
            pyi_msg_destroy (&m);
            return -1;
        }
        int rc;
        if (block && fsize >= LENT) {
            __atomic_add_fetch (&block->refs, 1, __ATOMIC_ACQ_REL);
            rc = pyi_msg_append_zerocopy (m, (void *) rec, fsize, s_lent_free, block);
        }
        else
            rc = pyi_msg_append (m, rec, fsize);
        if (rc != 0) {
            *why = "too many body frames in a record";
            pyi_msg_destroy (&m);
            return -1;
        }
        rec += fsize;
        left -= fsize;
    }
    /*  Descriptor marks must name frames that exist. */
    if (pyi_msg_descriptor_end (m) > pyi_msg_frames (m)) {
        *why = "a descriptor mark names no body frame";
        pyi_msg_destroy (&m);
        return -1;
    }
    *msg = m;
    *used = PYI_LANE_PREFIX + (size_t) length;
    return 1;
}

int
pyi_lane_decode (const void *data, size_t size, size_t max_record,
                 pyi_msg_t **msg, size_t *used, const char **why)
{
    return s_decode (data, size, max_record, msg, used, why, NULL);
}

/*  Size of msg's record (the length field included) and its header in
    header (*hsize bytes). 0, or -1 with the error set. */
static int
s_measure (const pyi_msg_t *msg, size_t max_record, uint8_t *header, int *hsize,
           size_t *total)
{
    if (max_record == 0)
        max_record = PYI_LANE_MAX_RECORD;
    if (!s_lane_command (pyi_msg_command (msg))) {
        pyi_set_error ("a %s message has no place on a lane",
                       pyi_command_name (pyi_msg_command (msg)));
        return -1;
    }
    *hsize = pyi_msg_encode (msg, header, HEADER_MAX);
    if (*hsize <= 0) {
        pyi_set_error ("message header too long for a lane");
        return -1;
    }
    size_t length = PYI_LANE_PREFIX + (size_t) *hsize;
    size_t i, n = pyi_msg_frames (msg);
    for (i = 0; i < n; i++) {
        size_t fsize = pyi_msg_frame_size (msg, i);
        if (fsize > max_record || length + PYI_LANE_PREFIX + fsize > max_record) {
            pyi_set_error ("message longer than the lane's limit (%zu bytes)", max_record);
            return -1;
        }
        length += PYI_LANE_PREFIX + fsize;
    }
    *total = PYI_LANE_PREFIX + length;
    return 0;
}

/*  Write msg's record (measured: total bytes, header) at dest. */
static void
s_write (const pyi_msg_t *msg, const uint8_t *header, int hsize, size_t total, uint8_t *dest)
{
    s_put32 (dest, (uint32_t) (total - PYI_LANE_PREFIX));
    s_put32 (dest + PYI_LANE_PREFIX, (uint32_t) hsize);
    memcpy (dest + 2 * PYI_LANE_PREFIX, header, (size_t) hsize);
    dest += 2 * PYI_LANE_PREFIX + (size_t) hsize;
    size_t i, n = pyi_msg_frames (msg);
    for (i = 0; i < n; i++) {
        size_t fsize = pyi_msg_frame_size (msg, i);
        s_put32 (dest, (uint32_t) fsize);
        if (fsize)
            memcpy (dest + PYI_LANE_PREFIX, pyi_msg_frame_data (msg, i), fsize);
        dest += PYI_LANE_PREFIX + fsize;
    }
}

int
pyi_lane_encode (const pyi_msg_t *msg, size_t max_record, void **data, size_t *size)
{
    uint8_t header[HEADER_MAX];
    int hsize;
    size_t total;
    if (s_measure (msg, max_record, header, &hsize, &total) != 0)
        return -1;
    uint8_t *buffer = (uint8_t *) malloc (total);
    if (buffer == NULL) {
        pyi_set_error ("out of memory");
        return -1;
    }
    s_write (msg, header, hsize, total, buffer);
    *data = buffer;
    *size = total;
    return 0;
}

/* -- the lane ----------------------------------------------------------------- */

pyi_lane_t *
pyi_lane_new (int fd, size_t max_record)
{
    pyi_lane_t *self = (pyi_lane_t *) calloc (1, sizeof *self);
    int flags = fcntl (fd, F_GETFL);
    if (self == NULL || flags < 0 || fcntl (fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        pyi_set_error (self ? "not a descriptor the lane can use" : "out of memory");
        free (self);
        close (fd);
        return NULL;
    }
    self->fd = fd;
    self->max_record = max_record ? max_record : PYI_LANE_MAX_RECORD;
    return self;
}

void
pyi_lane_destroy (pyi_lane_t **self_p)
{
    if (self_p == NULL || *self_p == NULL)
        return;
    pyi_lane_t *self = *self_p;
    *self_p = NULL;
    if (self->fd >= 0)
        close (self->fd);
    s_unref (self->in.block);
    s_unref (self->in.prev);
    s_unref (self->out.block);
    free (self);
}

uint64_t
pyi_lane_blocks (const pyi_lane_t *self)
{
    return self->in.blocks;
}

int
pyi_lane_fd (const pyi_lane_t *self)
{
    return self->fd;
}

pyi_lane_state_t
pyi_lane_state (const pyi_lane_t *self)
{
    return self->state;
}

const char *
pyi_lane_error (const pyi_lane_t *self)
{
    return self->error;
}

size_t
pyi_lane_queued (const pyi_lane_t *self)
{
    return self->out.end - self->out.start;
}

/*  Count msg, sent (out) or received. */
static void
s_count (pyi_lane_t *self, int out, const pyi_msg_t *msg)
{
    unsigned command = (unsigned) pyi_msg_command (msg);
    if (command < COMMANDS) {
        self->count[out][command]++;
        self->bytes[out][command] += pyi_msg_body_size (msg);
    }
}

uint64_t
pyi_lane_count (const pyi_lane_t *self, bool sent, int command, uint64_t *bytes)
{
    bool known = command >= 0 && command < COMMANDS;
    if (bytes)
        *bytes = known ? self->bytes[sent][command] : 0;
    return known ? self->count[sent][command] : 0;
}

int
pyi_lane_flush (pyi_lane_t *self)
{
    s_buffer_t *b = &self->out;
    while (self->state == PYI_LANE_OPEN && b->start < b->end) {
        ssize_t n = send (self->fd, b->data + b->start, b->end - b->start,
                          MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 1;
            s_fail (self, errno == EPIPE || errno == ECONNRESET ? PYI_LANE_EOF : PYI_LANE_BROKEN,
                    errno == EPIPE || errno == ECONNRESET ? "the peer closed the lane"
                                                          : "cannot write to the lane");
            break;
        }
        b->start += (size_t) n;
    }
    if (self->state != PYI_LANE_OPEN) {
        pyi_set_error ("the lane is closed: %s", self->error);
        return -1;
    }
    s_shrink (b);
    return 0;
}

int
pyi_lane_send (pyi_lane_t *self, pyi_msg_t **msg_p)
{
    if (pyi_lane_queue (self, msg_p) != 0)
        return -1;
    /*  Queued but not written (socket full): flush once writable. */
    return pyi_lane_flush (self) < 0 ? -1 : 0;
}

int
pyi_lane_queue (pyi_lane_t *self, pyi_msg_t **msg_p)
{
    pyi_msg_t *msg = *msg_p;
    *msg_p = NULL;
    if (msg == NULL) {
        pyi_set_error ("no message");
        return -1;
    }
    if (self->state != PYI_LANE_OPEN) {
        pyi_set_error ("the lane is closed: %s", self->error);
        pyi_msg_destroy (&msg);
        return -1;
    }
    uint8_t header[HEADER_MAX];
    int hsize;
    size_t total;
    int rc = s_measure (msg, self->max_record, header, &hsize, &total);
    if (rc == 0 && s_reserve (&self->out, total) != 0) {
        pyi_set_error ("out of memory for the lane's queue");
        rc = -1;
    }
    if (rc == 0) {
        s_write (msg, header, hsize, total, self->out.data + self->out.end);
        self->out.end += total;
        s_count (self, 1, msg);
    }
    pyi_msg_destroy (&msg);
    return rc;
}

/*  Read what the socket holds (up to what the pending record needs, at
    least one chunk). 1 read something, 0 nothing now, -1 ended/broke. */
static int
s_fill (pyi_lane_t *self, size_t need)
{
    s_buffer_t *b = &self->in;
    size_t want = need > READ_CHUNK ? need : READ_CHUNK;
    if (s_reserve (b, want) != 0) {
        s_fail (self, PYI_LANE_BROKEN, "out of memory for a record");
        return -1;
    }
    ssize_t n;
    do
        n = recv (self->fd, b->data + b->end, b->capacity - b->end, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        b->end += (size_t) n;
        return 1;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (n == 0 || errno == ECONNRESET)
        s_fail (self, PYI_LANE_EOF, b->end > b->start ? "the peer closed the lane mid-record"
                                                      : "the peer closed the lane");
    else
        s_fail (self, PYI_LANE_BROKEN, "cannot read from the lane");
    return -1;
}

pyi_msg_t *
pyi_lane_recv (pyi_lane_t *self)
{
    s_buffer_t *b = &self->in;
    while (self->state == PYI_LANE_OPEN) {
        pyi_msg_t *msg;
        size_t used;
        const char *why;
        /*  (No buffer yet: nothing to decode.) */
        int rc = s_decode (b->data ? b->data + b->start : b->data, b->end - b->start,
                           self->max_record, &msg, &used, &why, b->block);
        if (rc < 0) {
            s_fail (self, PYI_LANE_BROKEN, why);
            break;
        }
        if (rc > 0) {
            b->start += used;
            if (__atomic_load_n (&b->block->refs, __ATOMIC_ACQUIRE) > 1 && s_detach (b) != 0) {
                s_fail (self, PYI_LANE_BROKEN, "out of memory for a record");
                pyi_msg_destroy (&msg);
                break;
            }
            s_shrink (b);
            s_count (self, 0, msg);
            return msg;
        }
        /*  Incomplete: read more, as much as the record needs, but room
            for at most as many bytes as came already (or a chunk): what a
            peer makes this side allocate follows what it really sent. */
        size_t have = b->end - b->start;
        size_t need = have >= PYI_LANE_PREFIX
                    ? PYI_LANE_PREFIX + (size_t) s_get32 (b->data + b->start) - have
                    : PYI_LANE_PREFIX - have;
        if (need > have && need > READ_CHUNK)
            need = have > READ_CHUNK ? have : READ_CHUNK;
        if (s_fill (self, need) <= 0)
            break;
    }
    return NULL;
}
