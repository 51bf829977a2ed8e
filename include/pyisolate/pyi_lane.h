/*  pyi_lane: the local lane, a direct byte stream between a host and one
    of its local extension processes (docs/protocol.md, "Local lane").

    A lane carries the messages of the wire protocol (pyi_msg) over a
    connected stream socket, one record per message:

        record  = u32 length (little-endian, bytes after this field)
                  u32 header size, header (pyi_msg_encode)
                  { u32 frame size, frame bytes }   one per body frame

    The reader treats the bytes as hostile: every size is checked against
    what is left of the record and the record against max_record before
    anything is read, and its buffer grows only as bytes arrive (a record
    that claims 512 MiB costs what was really sent); a record that breaks a rule breaks the lane (state
    PYI_LANE_BROKEN, pyi_lane_error () says why), and nothing more is read
    from it. Only REQUEST, REPLY, ERROR and CANCEL travel on a lane.

    Sending never blocks: a record goes to the socket at once when it has
    room, else it waits in the lane's queue; pyi_lane_flush () writes the
    queue when the socket is writable again. pyi_lane_queued () lets the
    caller bound the queue (the Python node waits before it sends more
    requests once it is over a high-water mark).
*/
#ifndef PYI_LANE_H_INCLUDED
#define PYI_LANE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "pyi_library.h"
#include "pyi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Bytes of a record's length field and of each size field. */
#define PYI_LANE_PREFIX 4
/*  Default longest record (pyi_lane_new with max_record 0): 512 MiB, the
    broker's default largest message. */
#define PYI_LANE_MAX_RECORD 536870912

typedef enum {
    PYI_LANE_OPEN = 0,     /* reading and writing */
    PYI_LANE_EOF = 1,      /* the peer closed its end (or it died) */
    PYI_LANE_BROKEN = 2    /* a hostile or corrupt record, or a socket error */
} pyi_lane_state_t;

typedef struct _pyi_lane_t pyi_lane_t;

/*  A lane over fd, a connected stream socket, which it takes (made
    non-blocking here, closed by destroy; closed at once on failure).
    max_record: longest record accepted and sent, 0 for
    PYI_LANE_MAX_RECORD. NULL when out of memory. */
PYI_EXPORT pyi_lane_t *pyi_lane_new (int fd, size_t max_record);

/*  Close the socket, free the queues; safe on NULL and *self_p == NULL. */
PYI_EXPORT void pyi_lane_destroy (pyi_lane_t **self_p);

/*  The socket, for poll/epoll (readable: pyi_lane_recv; writable while
    pyi_lane_queued () > 0: pyi_lane_flush). */
PYI_EXPORT int pyi_lane_fd (const pyi_lane_t *self);

/*  Send a message (taken: *msg_p is nulled, also on failure). Its
    commands: REQUEST, REPLY, ERROR, CANCEL. 0 sent or queued; -1 when the
    lane is not open, the message does not fit in max_record, or its
    command has no place on a lane (pyi_last_error () says which). */
PYI_EXPORT int pyi_lane_send (pyi_lane_t *self, pyi_msg_t **msg_p);

/*  pyi_lane_send without writing: the record only joins the queue (to
    leave with others in one write, at the next pyi_lane_flush). */
PYI_EXPORT int pyi_lane_queue (pyi_lane_t *self, pyi_msg_t **msg_p);

/*  Write what is queued: 0 all written, 1 some left (wait until the
    socket is writable), -1 the lane is not open. */
PYI_EXPORT int pyi_lane_flush (pyi_lane_t *self);

/*  Bytes queued, not yet written to the socket. */
PYI_EXPORT size_t pyi_lane_queued (const pyi_lane_t *self);

/*  The next message read from the lane, or NULL: nothing complete yet
    (state still OPEN), or the lane ended (EOF) or broke. Never blocks. */
PYI_EXPORT pyi_msg_t *pyi_lane_recv (pyi_lane_t *self);

PYI_EXPORT pyi_lane_state_t pyi_lane_state (const pyi_lane_t *self);

/*  Why the lane broke or ended ("" while open); lives as long as the lane. */
PYI_EXPORT const char *pyi_lane_error (const pyi_lane_t *self);

/*  Memory blocks the lane has allocated to receive into (diagnostics):
    the block a long received frame is lent is reused, once the message
    holding that frame is gone, for the records after it, so a steady
    stream of large records does not keep allocating (and faulting in)
    fresh memory. */
PYI_EXPORT uint64_t pyi_lane_blocks (const pyi_lane_t *self);

/*  Statistics: how many messages of command the lane has sent (sent
    true; queued counts as sent) or received so far, and in *bytes (when
    not NULL) the bytes of their body frames. 0 for an unknown command. */
PYI_EXPORT uint64_t pyi_lane_count (const pyi_lane_t *self, bool sent, int command,
                                    uint64_t *bytes);

/*  The record decoder on its own (for tests and fuzzing): decode one
    record from the start of data. 1: a message in *msg (the caller's),
    *used bytes consumed; 0: the record is not complete yet (*used 0);
    -1: the bytes break a rule (*why says which, a static string). */
PYI_EXPORT int pyi_lane_decode (const void *data, size_t size, size_t max_record,
                                pyi_msg_t **msg, size_t *used, const char **why);

/*  The record of msg (not taken) into a new heap buffer (*data, *size;
    free () it). 0, or -1 when it does not fit max_record (0: default)
    or its command has no place on a lane. */
PYI_EXPORT int pyi_lane_encode (const pyi_msg_t *msg, size_t max_record,
                                void **data, size_t *size);

#ifdef __cplusplus
}
#endif

#endif
