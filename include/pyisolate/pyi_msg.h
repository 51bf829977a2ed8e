/*  pyi_msg: one message of the pyisolate wire protocol (docs/protocol.md).

    A message is a small msgpack header frame followed by zero or more body
    frames. Body frames are opaque bytes: the broker moves them from socket
    to socket without copying or decoding them.

    Ownership: a pyi_msg_t owns its body frames. Functions that take a
    pyi_msg_t ** take ownership and set the caller's pointer to NULL, also
    when they fail.
*/
#ifndef PYI_MSG_H_INCLUDED
#define PYI_MSG_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "pyi_library.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PYI_PROTOCOL_VERSION 1
/*  Most body frames one message may carry. */
#define PYI_MAX_BODY_FRAMES 256
/*  Longest service name, token or routing id, in bytes. */
#define PYI_MAX_NAME 255
/*  Longest error or disconnect text, in bytes (longer text is cut). */
#define PYI_MAX_TEXT 1023

/*  Commands (header field 2). */
typedef enum {
    PYI_READY = 1,
    PYI_REQUEST = 2,
    PYI_REPLY = 3,
    PYI_ERROR = 4,
    PYI_CANCEL = 5,
    PYI_HEARTBEAT = 6,
    PYI_DISCONNECT = 7
} pyi_command_t;

/*  Error codes carried by ERROR and DISCONNECT. Codes below
    PYI_ERR_APPLICATION are the broker's; a worker answers a request it
    could not serve with PYI_ERR_APPLICATION or any code above it. */
typedef enum {
    PYI_OK = 0,
    PYI_ERR_UNKNOWN_SERVICE = 1,   /* no live worker offers the service */
    PYI_ERR_WORKER_LOST = 2,       /* the worker exited, crashed or went silent */
    PYI_ERR_TIMEOUT = 3,           /* the request's deadline passed */
    PYI_ERR_TOO_LARGE = 4,         /* message over the broker's size limit */
    PYI_ERR_BUSY = 5,              /* a queue or the pending table is full */
    PYI_ERR_MALFORMED = 6,         /* the header could not be decoded */
    PYI_ERR_VERSION = 7,           /* protocol version not spoken */
    PYI_ERR_DENIED = 8,            /* the broker's policy refused it */
    PYI_ERR_SHUTDOWN = 9,          /* the broker is stopping */
    PYI_ERR_INLINE = 10,           /* shared-memory tensors for a peer without
                                      shared memory: send them inline */
    PYI_ERR_APPLICATION = 100      /* the worker's handler failed */
} pyi_error_t;

typedef struct _pyi_msg_t pyi_msg_t;

/*  Create an empty message for the given command. */
PYI_EXPORT pyi_msg_t *pyi_msg_new (pyi_command_t command);

/*  Destroy a message and its frames; safe on NULL and on *self_p == NULL. */
PYI_EXPORT void pyi_msg_destroy (pyi_msg_t **self_p);

/*  Append a body frame holding a copy of data. 0 or -1 (too many frames). */
PYI_EXPORT int pyi_msg_append (pyi_msg_t *self, const void *data, size_t size);

/*  Function that frees the data of a zero-copy frame; hint is passed through. */
typedef void (pyi_free_fn) (void *data, void *hint);

/*  Append a body frame that points at data without copying it. free_fn is
    called exactly once, from any thread, when the last user of the frame
    is done with it (also when this call fails). */
PYI_EXPORT int pyi_msg_append_zerocopy (pyi_msg_t *self, void *data, size_t size,
                             pyi_free_fn *free_fn, void *hint);

/*  Header fields. Strings are borrowed and live as long as the message;
    "" when the command has no such field. */
PYI_EXPORT pyi_command_t pyi_msg_command (const pyi_msg_t *self);
PYI_EXPORT uint64_t pyi_msg_id (const pyi_msg_t *self);
PYI_EXPORT const char *pyi_msg_service (const pyi_msg_t *self);
/*  REQUEST: remaining time in milliseconds, 0 for no deadline.
    READY from the broker: its heartbeat interval in milliseconds. */
PYI_EXPORT uint32_t pyi_msg_timeout (const pyi_msg_t *self);
PYI_EXPORT int pyi_msg_code (const pyi_msg_t *self);
PYI_EXPORT const char *pyi_msg_text (const pyi_msg_t *self);

/*  Body frames. */
PYI_EXPORT size_t pyi_msg_frames (const pyi_msg_t *self);
PYI_EXPORT const void *pyi_msg_frame_data (const pyi_msg_t *self, size_t index);
PYI_EXPORT size_t pyi_msg_frame_size (const pyi_msg_t *self, size_t index);
/*  Sum of the body frames' sizes. */
PYI_EXPORT size_t pyi_msg_body_size (const pyi_msg_t *self);

/*  Body frame index holds a tensor descriptor (pyi_tensor_encode marks
    its frames). REQUEST and REPLY carry the marks in their header, so that
    a broker that drops such a message gives the descriptors' in-flight
    counts back (pyi_tensor_discard) instead of leaving their regions for
    the session's end. Mark: 0, or -1 when index >= PYI_MAX_BODY_FRAMES. */
PYI_EXPORT int pyi_msg_mark_descriptor (pyi_msg_t *self, size_t index);
PYI_EXPORT bool pyi_msg_is_descriptor (const pyi_msg_t *self, size_t index);
PYI_EXPORT void pyi_msg_clear_descriptors (pyi_msg_t *self);

/*  Replace body frame index by data (taken: free_fn (data, hint) runs when
    ZeroMQ is done with it, or now on failure), unmarked. 0, or -1 when
    there is no such frame. */
PYI_EXPORT int pyi_msg_replace_frame (pyi_msg_t *self, size_t index, void *data, size_t size,
                                      pyi_free_fn *free_fn, void *hint);

/*  Whether any body frame is marked as a tensor descriptor. */
PYI_EXPORT bool pyi_msg_has_descriptors (const pyi_msg_t *self);
/*  One past the highest marked index (0: none marked): every mark is
    below it. */
PYI_EXPORT size_t pyi_msg_descriptor_end (const pyi_msg_t *self);

/*  Whether a message read from a ROUTER came from a peer connected over a
    network (tcp: no shared memory with this host; ipc and inproc peers are
    local). Such a peer sends tensors inline: the broker refuses its
    messages that mark descriptors (they cannot name regions of this host)
    and never acts on those marks. */
PYI_EXPORT bool pyi_msg_remote (const pyi_msg_t *self);

/*  REQUEST: whether the caller shares no memory with this host, so that
    the answer must carry its tensors inline (pyi_tensor_encode_inline).
    The broker sets it on every REQUEST it forwards (a peer's own value is
    overwritten); it travels in the header's flags field. */
PYI_EXPORT bool pyi_msg_answer_inline (const pyi_msg_t *self);
PYI_EXPORT void pyi_msg_set_answer_inline (pyi_msg_t *self, bool answer_inline);

/*  Every header field and the first body frame of a message, read in one
    call (for bindings, where each call into C has a cost). The pointers are
    borrowed: they live as long as the message and no longer; strings are
    never NULL ("" when the command has no such field); frame0 is NULL and
    frame0_size 0 when the message has no body frames. */
typedef struct {
    int command;                /* pyi_command_t */
    int status;                 /* as pyi_msg_status () */
    int code;                   /* as pyi_msg_code () */
    uint32_t timeout_ms;        /* as pyi_msg_timeout () */
    uint64_t id;                /* as pyi_msg_id () */
    const char *service;        /* as pyi_msg_service () */
    const char *text;           /* as pyi_msg_text () */
    size_t services;            /* as pyi_msg_services () */
    size_t frames;              /* as pyi_msg_frames () */
    const void *frame0;         /* as pyi_msg_frame_data (self, 0) */
    size_t frame0_size;         /* as pyi_msg_frame_size (self, 0) */
    bool answer_inline;         /* as pyi_msg_answer_inline () */
} pyi_msg_info_t;

/*  Fill info with the message's fields (see pyi_msg_info_t). Never fails. */
PYI_EXPORT void pyi_msg_info (const pyi_msg_t *self, pyi_msg_info_t *info);

/*  Change the command (a body built for one command can be sent as another). */
PYI_EXPORT void pyi_msg_set_command (pyi_msg_t *self, pyi_command_t command);

/*  Setters for header fields; strings are copied (and cut to PYI_MAX_NAME
    or PYI_MAX_TEXT bytes). */
PYI_EXPORT void pyi_msg_set_id (pyi_msg_t *self, uint64_t id);
PYI_EXPORT void pyi_msg_set_service (pyi_msg_t *self, const char *service);
PYI_EXPORT void pyi_msg_set_timeout (pyi_msg_t *self, uint32_t timeout_ms);
PYI_EXPORT void pyi_msg_set_code (pyi_msg_t *self, int code);
PYI_EXPORT void pyi_msg_set_text (pyi_msg_t *self, const char *text);

/*  READY carries a token and a list of service names. */
PYI_EXPORT const char *pyi_msg_token (const pyi_msg_t *self);
PYI_EXPORT void pyi_msg_set_token (pyi_msg_t *self, const char *token);
PYI_EXPORT size_t pyi_msg_services (const pyi_msg_t *self);
PYI_EXPORT const char *pyi_msg_service_at (const pyi_msg_t *self, size_t index);
PYI_EXPORT int pyi_msg_add_service (pyi_msg_t *self, const char *service);

/*  Encode the header into buffer (at most size bytes). Returns the number
    of bytes written, or -1 if the buffer is too small. */
PYI_EXPORT int pyi_msg_encode (const pyi_msg_t *self, void *buffer, size_t size);

/*  Decode an untrusted header frame into a new message with no body.
    Never fails to return a message (NULL only when out of memory): when
    the bytes are not a valid header, pyi_msg_status () says why and
    pyi_msg_text () describes it; fields read before the fault are kept,
    so a malformed request can still be answered by its id. */
PYI_EXPORT pyi_msg_t *pyi_msg_decode (const void *data, size_t size);

/*  PYI_OK for a well-formed message, else PYI_ERR_MALFORMED,
    PYI_ERR_VERSION or PYI_ERR_TOO_LARGE. */
PYI_EXPORT int pyi_msg_status (const pyi_msg_t *self);

/*  Send the message on a libzmq socket (a void * socket handle). When the
    socket is a ROUTER, pass the peer's routing id, else NULL. Takes
    ownership of *self_p. flags are libzmq send flags (ZMQ_DONTWAIT).
    0, or -1 with errno set by libzmq. */
PYI_EXPORT int pyi_msg_send (pyi_msg_t **self_p, void *socket, const void *routing_id,
                  size_t routing_id_size, int flags);

/*  Receive one message from a libzmq socket. For a ROUTER socket pass
    router=true: the routing id frame is kept in the message. Returns NULL
    when nothing could be read (errno set, EAGAIN with ZMQ_DONTWAIT).
    Any multipart message that did arrive yields a message: check
    pyi_msg_status (); messages over max_size bytes (0 = no limit) or with
    too many frames are drained and marked PYI_ERR_TOO_LARGE. */
PYI_EXPORT pyi_msg_t *pyi_msg_recv (void *socket, bool router, size_t max_size, int flags);

/*  Routing id of a message read from a ROUTER socket (else size 0). */
PYI_EXPORT const void *pyi_msg_routing_id (const pyi_msg_t *self, size_t *size);

/*  Name of a command or error code, for logs ("REQUEST", "TIMEOUT"). */
PYI_EXPORT const char *pyi_command_name (int command);
PYI_EXPORT const char *pyi_error_name (int code);

#ifdef __cplusplus
}
#endif

#endif
