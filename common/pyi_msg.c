/*  pyi_msg: codec of the pyisolate wire protocol (docs/protocol.md).

    Headers are encoded with msgpack-c's packer. They are decoded with a
    strict, allocation-free reader instead of msgpack-c's unpacker, because
    the unpacker allocates memory for the element count an array header
    declares before it checks that the bytes exist: a 5-byte hostile frame
    could make it reserve gigabytes.
*/
#include "pyisolate/pyi_msg.h"
#include "pyi_msgpack.h"
#include <zmq.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#define INLINE_FRAMES 4          /* body frames held without extra allocation */
#define HEADER_STACK 2048        /* encode headers up to this size on the stack */
#define READY_MAX_SERVICES 64    /* most services one READY may name */
#define REQUEST_ANSWER_INLINE 1  /* REQUEST flags bit: answer with tensors inline */
#define REQUEST_FLAGS 1          /* every REQUEST flags bit defined */

struct _pyi_msg_t {
    pyi_command_t command;
    int status;                         /* PYI_OK or why decoding failed */
    uint64_t id;                        /* request id */
    uint32_t timeout;                   /* REQUEST deadline / READY heartbeat, ms */
    int code;                           /* ERROR / DISCONNECT code */
    char service[PYI_MAX_NAME + 1];     /* REQUEST / ERROR service name */
    char token[PYI_MAX_NAME + 1];       /* READY token */
    char *text;                         /* ERROR / DISCONNECT text, NULL = "" */
    char **services;                    /* READY service names */
    size_t nservices;
    uint8_t routing_id[PYI_MAX_NAME];   /* peer, for messages read from a ROUTER */
    size_t routing_id_size;
    uint64_t descriptors[PYI_MAX_BODY_FRAMES / 64];   /* bit i: body frame i is a tensor descriptor */
    bool remote;                        /* read from a peer connected over tcp */
    bool answer_inline;                 /* REQUEST: the caller has no shared memory here */
    zmq_msg_t *frames;                  /* body frames */
    size_t nframes;
    size_t capacity;
    zmq_msg_t inline_frames[INLINE_FRAMES];
};

static const int s_fields[] = {
    /* header array length per command, index = command */
    0, 5, 5, 3, 6, 3, 2, 4
};

pyi_msg_t *
pyi_msg_new (pyi_command_t command)
{
    pyi_msg_t *self = (pyi_msg_t *) malloc (sizeof (pyi_msg_t));
    if (!self)
        return NULL;
    self->command = command;
    self->status = PYI_OK;
    self->id = 0;
    self->timeout = 0;
    self->code = 0;
    self->service[0] = 0;
    self->token[0] = 0;
    self->text = NULL;
    self->services = NULL;
    self->nservices = 0;
    self->routing_id_size = 0;
    memset (self->descriptors, 0, sizeof (self->descriptors));
    self->remote = false;
    self->answer_inline = false;
    self->frames = self->inline_frames;
    self->nframes = 0;
    self->capacity = INLINE_FRAMES;
    return self;
}

void
pyi_msg_destroy (pyi_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_msg_t *self = *self_p;
    for (size_t i = 0; i < self->nframes; i++)
        zmq_msg_close (&self->frames[i]);
    if (self->frames != self->inline_frames)
        free (self->frames);
    for (size_t i = 0; i < self->nservices; i++)
        free (self->services[i]);
    free (self->services);
    free (self->text);
    free (self);
    *self_p = NULL;
}

/*  Reserve the next frame slot; NULL when the message is full. */
static zmq_msg_t *
s_next_frame (pyi_msg_t *self)
{
    if (self->nframes >= PYI_MAX_BODY_FRAMES)
        return NULL;
    if (self->nframes == self->capacity) {
        size_t capacity = self->capacity * 2;
        zmq_msg_t *frames = (zmq_msg_t *) malloc (capacity * sizeof (zmq_msg_t));
        if (!frames)
            return NULL;
        for (size_t i = 0; i < self->nframes; i++) {
            zmq_msg_init (&frames[i]);
            zmq_msg_move (&frames[i], &self->frames[i]);
        }
        if (self->frames != self->inline_frames)
            free (self->frames);
        self->frames = frames;
        self->capacity = capacity;
    }
    return &self->frames[self->nframes];
}

int
pyi_msg_append (pyi_msg_t *self, const void *data, size_t size)
{
    zmq_msg_t *frame = s_next_frame (self);
    if (!frame || zmq_msg_init_size (frame, size))
        return -1;
    if (size)
        memcpy (zmq_msg_data (frame), data, size);
    self->nframes++;
    return 0;
}

int
pyi_msg_append_zerocopy (pyi_msg_t *self, void *data, size_t size,
                         pyi_free_fn *free_fn, void *hint)
{
    zmq_msg_t *frame = s_next_frame (self);
    if (!frame || zmq_msg_init_data (frame, data, size, free_fn, hint)) {
        if (free_fn)
            free_fn (data, hint);
        return -1;
    }
    self->nframes++;
    return 0;
}

pyi_command_t pyi_msg_command (const pyi_msg_t *self) { return self->command; }
uint64_t pyi_msg_id (const pyi_msg_t *self) { return self->id; }
const char *pyi_msg_service (const pyi_msg_t *self) { return self->service; }
uint32_t pyi_msg_timeout (const pyi_msg_t *self) { return self->timeout; }
int pyi_msg_code (const pyi_msg_t *self) { return self->code; }
const char *pyi_msg_text (const pyi_msg_t *self) { return self->text ? self->text : ""; }
const char *pyi_msg_token (const pyi_msg_t *self) { return self->token; }
size_t pyi_msg_services (const pyi_msg_t *self) { return self->nservices; }
int pyi_msg_status (const pyi_msg_t *self) { return self->status; }
size_t pyi_msg_frames (const pyi_msg_t *self) { return self->nframes; }

const char *
pyi_msg_service_at (const pyi_msg_t *self, size_t index)
{
    return index < self->nservices ? self->services[index] : NULL;
}

const void *
pyi_msg_frame_data (const pyi_msg_t *self, size_t index)
{
    return index < self->nframes ? zmq_msg_data ((zmq_msg_t *) &self->frames[index]) : NULL;
}

size_t
pyi_msg_frame_size (const pyi_msg_t *self, size_t index)
{
    return index < self->nframes ? zmq_msg_size (&self->frames[index]) : 0;
}

void
pyi_msg_info (const pyi_msg_t *self, pyi_msg_info_t *info)
{
    info->command = self->command;
    info->status = self->status;
    info->code = self->code;
    info->timeout_ms = self->timeout;
    info->id = self->id;
    info->service = self->service;
    info->text = self->text ? self->text : "";
    info->services = self->nservices;
    info->frames = self->nframes;
    info->answer_inline = self->answer_inline;
    if (self->nframes) {
        info->frame0 = zmq_msg_data ((zmq_msg_t *) &self->frames[0]);
        info->frame0_size = zmq_msg_size (&self->frames[0]);
    }
    else {
        info->frame0 = NULL;
        info->frame0_size = 0;
    }
}

size_t
pyi_msg_body_size (const pyi_msg_t *self)
{
    size_t total = 0;
    for (size_t i = 0; i < self->nframes; i++)
        total += zmq_msg_size (&self->frames[i]);
    return total;
}

const void *
pyi_msg_routing_id (const pyi_msg_t *self, size_t *size)
{
    *size = self->routing_id_size;
    return self->routing_id;
}

static void
s_copy_name (char *dest, const char *src)
{
    size_t size = src ? strnlen (src, PYI_MAX_NAME) : 0;
    if (size)
        memcpy (dest, src, size);
    dest [size] = 0;
}

void pyi_msg_set_command (pyi_msg_t *self, pyi_command_t command) { self->command = command; }
void pyi_msg_set_id (pyi_msg_t *self, uint64_t id) { self->id = id; }
void pyi_msg_set_timeout (pyi_msg_t *self, uint32_t timeout_ms) { self->timeout = timeout_ms; }
void pyi_msg_set_code (pyi_msg_t *self, int code) { self->code = code; }
void pyi_msg_set_service (pyi_msg_t *self, const char *service) { s_copy_name (self->service, service); }
void pyi_msg_set_token (pyi_msg_t *self, const char *token) { s_copy_name (self->token, token); }

void
pyi_msg_set_text (pyi_msg_t *self, const char *text)
{
    free (self->text);
    self->text = text && *text ? strndup (text, PYI_MAX_TEXT) : NULL;
}

int
pyi_msg_add_service (pyi_msg_t *self, const char *service)
{
    if (!service || !*service || strlen (service) > PYI_MAX_NAME
    ||  self->nservices >= READY_MAX_SERVICES)
        return -1;
    char **services = (char **) realloc (self->services,
                                         (self->nservices + 1) * sizeof (char *));
    if (!services)
        return -1;
    self->services = services;
    if (!(services [self->nservices] = strdup (service)))
        return -1;
    self->nservices++;
    return 0;
}

/*  Encoding ---------------------------------------------------------- */

static int
s_pack_str (msgpack_packer *pk, const char *str)
{
    size_t size = str ? strlen (str) : 0;
    return msgpack_pack_str (pk, size) | msgpack_pack_str_body (pk, str, size);
}

bool pyi_msg_remote (const pyi_msg_t *self) { return self->remote; }
bool pyi_msg_answer_inline (const pyi_msg_t *self) { return self->answer_inline; }

void
pyi_msg_set_answer_inline (pyi_msg_t *self, bool answer_inline)
{
    self->answer_inline = answer_inline;
}

bool
pyi_msg_has_descriptors (const pyi_msg_t *self)
{
    return pyi_msg_descriptor_end (self) != 0;
}

size_t
pyi_msg_descriptor_end (const pyi_msg_t *self)
{
    for (size_t w = PYI_MAX_BODY_FRAMES / 64; w-- > 0;)
        if (self->descriptors [w])
            return w * 64 + 64 - (size_t) __builtin_clzll (self->descriptors [w]);
    return 0;
}

void
pyi_msg_clear_descriptors (pyi_msg_t *self)
{
    memset (self->descriptors, 0, sizeof (self->descriptors));
}

int
pyi_msg_replace_frame (pyi_msg_t *self, size_t index, void *data, size_t size,
                       pyi_free_fn *free_fn, void *hint)
{
    zmq_msg_t frame;
    if (index >= self->nframes || zmq_msg_init_data (&frame, data, size, free_fn, hint)) {
        if (free_fn)
            free_fn (data, hint);
        return -1;
    }
    zmq_msg_move (&self->frames [index], &frame);      /* closes the old frame */
    zmq_msg_close (&frame);
    self->descriptors [index / 64] &= ~((uint64_t) 1 << (index % 64));
    return 0;
}

int
pyi_msg_mark_descriptor (pyi_msg_t *self, size_t index)
{
    if (index >= PYI_MAX_BODY_FRAMES)
        return -1;
    self->descriptors [index / 64] |= (uint64_t) 1 << (index % 64);
    return 0;
}

bool
pyi_msg_is_descriptor (const pyi_msg_t *self, size_t index)
{
    return index < PYI_MAX_BODY_FRAMES
        && (self->descriptors [index / 64] >> (index % 64)) & 1;
}

int
pyi_msg_encode (const pyi_msg_t *self, void *buffer, size_t size)
{
    if (self->command < PYI_READY || self->command > PYI_DISCONNECT)
        return -1;
    pyi_writer_t writer = { (uint8_t *) buffer, size, 0 };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &writer, pyi_writer_write);
    /*  REQUEST and REPLY name their descriptor frames in one more field,
        only when they have any; a REQUEST to be answered inline adds the
        flags field after it (the list then possibly empty). */
    size_t marked = 0;
    if (self->command == PYI_REQUEST || self->command == PYI_REPLY)
        for (size_t i = 0; i < PYI_MAX_BODY_FRAMES / 64; i++)
            marked += (size_t) __builtin_popcountll (self->descriptors [i]);
    bool flagged = self->command == PYI_REQUEST && self->answer_inline;
    bool listed = marked > 0 || flagged;
    int rc = msgpack_pack_array (&pk, s_fields [self->command] + listed + flagged);
    rc |= msgpack_pack_uint32 (&pk, PYI_PROTOCOL_VERSION);
    rc |= msgpack_pack_uint32 (&pk, self->command);
    switch (self->command) {
        case PYI_READY:
            rc |= s_pack_str (&pk, self->token);
            rc |= msgpack_pack_array (&pk, self->nservices);
            for (size_t i = 0; i < self->nservices; i++)
                rc |= s_pack_str (&pk, self->services [i]);
            rc |= msgpack_pack_uint32 (&pk, self->timeout);
            break;
        case PYI_REQUEST:
            rc |= msgpack_pack_uint64 (&pk, self->id);
            rc |= s_pack_str (&pk, self->service);
            rc |= msgpack_pack_uint32 (&pk, self->timeout);
            break;
        case PYI_REPLY:
        case PYI_CANCEL:
            rc |= msgpack_pack_uint64 (&pk, self->id);
            break;
        case PYI_ERROR:
            rc |= msgpack_pack_uint64 (&pk, self->id);
            rc |= msgpack_pack_uint32 (&pk, (uint32_t) self->code);
            rc |= s_pack_str (&pk, self->text);
            rc |= s_pack_str (&pk, self->service);
            break;
        case PYI_DISCONNECT:
            rc |= msgpack_pack_uint32 (&pk, (uint32_t) self->code);
            rc |= s_pack_str (&pk, self->text);
            break;
        case PYI_HEARTBEAT:
            break;
    }
    if (listed) {
        rc |= msgpack_pack_array (&pk, marked);
        for (size_t i = 0, end = pyi_msg_descriptor_end (self); i < end; i++)
            if (pyi_msg_is_descriptor (self, i))
                rc |= msgpack_pack_uint32 (&pk, (uint32_t) i);
    }
    if (flagged)
        rc |= msgpack_pack_uint32 (&pk, REQUEST_ANSWER_INLINE);
    if (rc)
        return -1;
    return (int) writer.used;
}

/*  Decoding ---------------------------------------------------------- */

/*  A text of at most PYI_MAX_TEXT bytes into a new heap string (NULL for
    ""). */
static bool
s_read_text (pyi_reader_t *r, char **text)
{
    const char *data;
    size_t size;
    if (!pyi_reader_str (r, &data, &size, PYI_MAX_TEXT))
        return false;
    *text = size ? strndup (data, size) : NULL;
    return !size || *text;
}

static pyi_msg_t *
s_fault (pyi_msg_t *self, int status, const char *text)
{
    self->status = status;
    pyi_msg_set_text (self, text);
    return self;
}

pyi_msg_t *
pyi_msg_decode (const void *data, size_t size)
{
    pyi_msg_t *self = pyi_msg_new (PYI_HEARTBEAT);
    if (!self)
        return NULL;
    self->command = 0;
    pyi_reader_t r = { (const uint8_t *) data, (const uint8_t *) data + size };
    uint64_t fields, version, command, value;

    if (!pyi_reader_array (&r, &fields) || fields < 2)
        return s_fault (self, PYI_ERR_MALFORMED, "header is not a msgpack array of 2 or more fields");
    if (!pyi_reader_uint (&r, UINT64_MAX, &version))
        return s_fault (self, PYI_ERR_MALFORMED, "header field 1 (version) is not an unsigned integer");
    if (version != PYI_PROTOCOL_VERSION)
        return s_fault (self, PYI_ERR_VERSION, "protocol version not supported");
    if (!pyi_reader_uint (&r, UINT64_MAX, &command) || command < PYI_READY || command > PYI_DISCONNECT)
        return s_fault (self, PYI_ERR_MALFORMED, "unknown command");
    self->command = (pyi_command_t) command;
    bool flagged = command == PYI_REQUEST && fields == (uint64_t) s_fields [command] + 2;
    bool listed = flagged || ((command == PYI_REQUEST || command == PYI_REPLY)
                              && fields == (uint64_t) s_fields [command] + 1);
    if (fields != (uint64_t) s_fields [command] && !listed)
        return s_fault (self, PYI_ERR_MALFORMED, "wrong number of header fields for the command");

    switch (self->command) {
        case PYI_READY: {
            uint64_t count;
            if (!pyi_reader_str_copy (&r, self->token, PYI_MAX_NAME))
                return s_fault (self, PYI_ERR_MALFORMED, "READY: bad token");
            if (!pyi_reader_array (&r, &count) || count > READY_MAX_SERVICES)
                return s_fault (self, PYI_ERR_MALFORMED, "READY: bad service list");
            for (uint64_t i = 0; i < count; i++) {
                char name [PYI_MAX_NAME + 1];
                if (!pyi_reader_str_copy (&r, name, PYI_MAX_NAME) || !*name
                ||  pyi_msg_add_service (self, name))
                    return s_fault (self, PYI_ERR_MALFORMED, "READY: bad service name");
            }
            if (!pyi_reader_uint (&r, UINT64_MAX, &value) || value > UINT32_MAX)
                return s_fault (self, PYI_ERR_MALFORMED, "READY: bad heartbeat");
            self->timeout = (uint32_t) value;
            break;
        }
        case PYI_REQUEST:
            if (!pyi_reader_uint (&r, UINT64_MAX, &self->id))
                return s_fault (self, PYI_ERR_MALFORMED, "REQUEST: bad id");
            if (!pyi_reader_str_copy (&r, self->service, PYI_MAX_NAME))
                return s_fault (self, PYI_ERR_MALFORMED, "REQUEST: bad service name");
            if (!pyi_reader_uint (&r, UINT64_MAX, &value) || value > UINT32_MAX)
                return s_fault (self, PYI_ERR_MALFORMED, "REQUEST: bad timeout");
            self->timeout = (uint32_t) value;
            break;
        case PYI_REPLY:
        case PYI_CANCEL:
            if (!pyi_reader_uint (&r, UINT64_MAX, &self->id))
                return s_fault (self, PYI_ERR_MALFORMED, "bad id");
            break;
        case PYI_ERROR:
            if (!pyi_reader_uint (&r, UINT64_MAX, &self->id))
                return s_fault (self, PYI_ERR_MALFORMED, "ERROR: bad id");
            if (!pyi_reader_uint (&r, UINT64_MAX, &value) || value > INT32_MAX)
                return s_fault (self, PYI_ERR_MALFORMED, "ERROR: bad code");
            self->code = (int) value;
            if (!s_read_text (&r, &self->text))
                return s_fault (self, PYI_ERR_MALFORMED, "ERROR: bad text");
            if (!pyi_reader_str_copy (&r, self->service, PYI_MAX_NAME))
                return s_fault (self, PYI_ERR_MALFORMED, "ERROR: bad service name");
            break;
        case PYI_DISCONNECT:
            if (!pyi_reader_uint (&r, UINT64_MAX, &value) || value > INT32_MAX)
                return s_fault (self, PYI_ERR_MALFORMED, "DISCONNECT: bad code");
            self->code = (int) value;
            if (!s_read_text (&r, &self->text))
                return s_fault (self, PYI_ERR_MALFORMED, "DISCONNECT: bad text");
            break;
        case PYI_HEARTBEAT:
            break;
    }
    if (listed) {
        /*  Descriptor frames: 1 to 256 increasing body frame indexes (0
            to 256 when the flags field follows). */
        uint64_t count, index;
        int64_t last = -1;
        if (!pyi_reader_array (&r, &count) || (count == 0 && !flagged)
        ||  count > PYI_MAX_BODY_FRAMES)
            return s_fault (self, PYI_ERR_MALFORMED, "bad descriptor frame list");
        for (uint64_t i = 0; i < count; i++) {
            if (!pyi_reader_uint (&r, PYI_MAX_BODY_FRAMES - 1, &index) || (int64_t) index <= last)
                return s_fault (self, PYI_ERR_MALFORMED, "bad descriptor frame index");
            last = (int64_t) index;
            pyi_msg_mark_descriptor (self, (size_t) index);
        }
    }
    if (flagged) {
        if (!pyi_reader_uint (&r, REQUEST_FLAGS, &value))
            return s_fault (self, PYI_ERR_MALFORMED, "REQUEST: unknown flags");
        self->answer_inline = (value & REQUEST_ANSWER_INLINE) != 0;
    }
    if (r.p != r.end)
        return s_fault (self, PYI_ERR_MALFORMED, "trailing bytes after the header");
    if (self->command == PYI_REQUEST && !*self->service)
        return s_fault (self, PYI_ERR_MALFORMED, "REQUEST: empty service name");
    return self;
}

/*  Sockets ----------------------------------------------------------- */

int
pyi_msg_send (pyi_msg_t **self_p, void *socket, const void *routing_id,
              size_t routing_id_size, int flags)
{
    pyi_msg_t *self = *self_p;
    *self_p = NULL;
    uint8_t stack [HEADER_STACK];
    uint8_t *buffer = stack;
    size_t size = sizeof (stack);
    int rc = -1;
    int length = pyi_msg_encode (self, buffer, size);
    if (length < 0) {
        /*  A READY with many names or a long text: size it and retry. */
        size = 64 + strlen (self->token) + strlen (self->service)
             + (self->text ? strlen (self->text) : 0);
        for (size_t i = 0; i < self->nservices; i++)
            size += strlen (self->services [i]) + 8;
        buffer = (uint8_t *) malloc (size);
        if (!buffer || (length = pyi_msg_encode (self, buffer, size)) < 0) {
            errno = EINVAL;
            goto done;
        }
    }
    int more = self->nframes ? ZMQ_SNDMORE : 0;
    if (routing_id
    &&  zmq_send (socket, routing_id, routing_id_size, ZMQ_SNDMORE | flags) == -1)
        goto done;
    /*  After the first frame libzmq has taken the message: the rest of its
        frames cannot fail with EAGAIN. */
    if (zmq_send (socket, buffer, length, more | flags) == -1)
        goto done;
    for (size_t i = 0; i < self->nframes; i++) {
        more = i + 1 < self->nframes ? ZMQ_SNDMORE : 0;
        if (zmq_msg_send (&self->frames [i], socket, more | flags) == -1)
            goto done;
    }
    rc = 0;
done:
    if (buffer != stack) {
        int saved = errno;
        free (buffer);
        errno = saved;
    }
    pyi_msg_destroy (&self);
    return rc;
}

/*  Read and drop the rest of a multipart message. */
static void
s_drain (void *socket, zmq_msg_t *part)
{
    while (zmq_msg_more (part))
        if (zmq_msg_recv (part, socket, 0) == -1)
            break;
}

pyi_msg_t *
pyi_msg_recv (void *socket, bool router, size_t max_size, int flags)
{
    zmq_msg_t part;
    zmq_msg_init (&part);
    if (zmq_msg_recv (&part, socket, flags) == -1) {
        zmq_msg_close (&part);
        return NULL;
    }
    uint8_t routing_id [PYI_MAX_NAME];
    size_t routing_id_size = 0;
    bool remote = false;
    if (router) {
        routing_id_size = zmq_msg_size (&part);
        if (routing_id_size > PYI_MAX_NAME)
            routing_id_size = PYI_MAX_NAME;
        memcpy (routing_id, zmq_msg_data (&part), routing_id_size);
        if (!zmq_msg_more (&part)) {
            zmq_msg_close (&part);
            pyi_msg_t *self = pyi_msg_new (0);
            if (self) {
                memcpy (self->routing_id, routing_id, routing_id_size);
                self->routing_id_size = routing_id_size;
                s_fault (self, PYI_ERR_MALFORMED, "message has no header frame");
            }
            return self;
        }
        zmq_msg_recv (&part, socket, 0);
        /*  ipc peers are "localhost:...", inproc ones have none: anything
            else came over a network, without shared memory. Asked of the
            header frame: a ROUTER's routing id frame does not always carry
            the connection's properties (not when ZMQ_EVENTS prefetched it). */
        const char *peer = zmq_msg_gets (&part, "Peer-Address");
        remote = peer && strncmp (peer, "localhost", 9) != 0;
    }
    size_t total = zmq_msg_size (&part);
    pyi_msg_t *self = pyi_msg_decode (zmq_msg_data (&part), zmq_msg_size (&part));
    if (!self) {
        s_drain (socket, &part);
        zmq_msg_close (&part);
        return NULL;
    }
    memcpy (self->routing_id, routing_id, routing_id_size);
    self->routing_id_size = routing_id_size;
    /*  A remote peer's descriptor marks are kept for the broker to refuse
        (they cannot name this host's memory: nothing acts on them). */
    self->remote = remote;
    bool too_large = max_size && total > max_size;
    /*  zmq_msg_move clears the flag: read it before moving each frame. */
    bool more = zmq_msg_more (&part);
    while (more) {
        if (zmq_msg_recv (&part, socket, 0) == -1)
            break;
        more = zmq_msg_more (&part);
        total += zmq_msg_size (&part);
        if (max_size && total > max_size)
            too_large = true;
        zmq_msg_t *frame = too_large ? NULL : s_next_frame (self);
        if (!frame) {
            too_large = true;
            continue;
        }
        zmq_msg_init (frame);
        zmq_msg_move (frame, &part);
        self->nframes++;
    }
    zmq_msg_close (&part);
    if (too_large) {
        for (size_t i = 0; i < self->nframes; i++)
            zmq_msg_close (&self->frames [i]);
        self->nframes = 0;
        if (self->status == PYI_OK)
            s_fault (self, PYI_ERR_TOO_LARGE, "message too large or has too many frames");
    }
    return self;
}

const char *
pyi_command_name (int command)
{
    static const char *names[] = {
        "NONE", "READY", "REQUEST", "REPLY", "ERROR", "CANCEL", "HEARTBEAT", "DISCONNECT"
    };
    return command >= 0 && command <= PYI_DISCONNECT ? names [command] : "UNKNOWN";
}

const char *
pyi_error_name (int code)
{
    static const char *names[] = {
        "OK", "UNKNOWN_SERVICE", "WORKER_LOST", "TIMEOUT", "TOO_LARGE", "BUSY",
        "MALFORMED", "VERSION", "DENIED", "SHUTDOWN", "INLINE"
    };
    if (code >= 0 && code <= PYI_ERR_INLINE)
        return names [code];
    return code >= PYI_ERR_APPLICATION ? "APPLICATION" : "UNKNOWN";
}
