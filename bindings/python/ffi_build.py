"""Build-time generator of the cffi module ``pyisolate._native``.

Run by bindings/python/CMakeLists.txt as ``python ffi_build.py OUT.c``: it
writes the C source of an out-of-line, API-mode cffi extension module that
CMake then compiles and links against ``libpyisolate``. The declarations
below mirror include/pyisolate/*.h by hand (without the PYI_EXPORT macro);
in API mode the C compiler checks them against the real headers.
"""

from __future__ import annotations

import sys

import cffi

CDEF = r"""
/* pyi_msg.h */
#define PYI_PROTOCOL_VERSION 1
#define PYI_MAX_BODY_FRAMES 256
#define PYI_MAX_NAME 255
#define PYI_MAX_TEXT 1023

typedef enum {
    PYI_READY = 1,
    PYI_REQUEST = 2,
    PYI_REPLY = 3,
    PYI_ERROR = 4,
    PYI_CANCEL = 5,
    PYI_HEARTBEAT = 6,
    PYI_DISCONNECT = 7
} pyi_command_t;

typedef enum {
    PYI_OK = 0,
    PYI_ERR_UNKNOWN_SERVICE = 1,
    PYI_ERR_WORKER_LOST = 2,
    PYI_ERR_TIMEOUT = 3,
    PYI_ERR_TOO_LARGE = 4,
    PYI_ERR_BUSY = 5,
    PYI_ERR_MALFORMED = 6,
    PYI_ERR_VERSION = 7,
    PYI_ERR_DENIED = 8,
    PYI_ERR_SHUTDOWN = 9,
    PYI_ERR_APPLICATION = 100
} pyi_error_t;

typedef struct _pyi_msg_t pyi_msg_t;

pyi_msg_t *pyi_msg_new (pyi_command_t command);
void pyi_msg_destroy (pyi_msg_t **self_p);
int pyi_msg_append (pyi_msg_t *self, const void *data, size_t size);
pyi_command_t pyi_msg_command (const pyi_msg_t *self);
uint64_t pyi_msg_id (const pyi_msg_t *self);
const char *pyi_msg_service (const pyi_msg_t *self);
uint32_t pyi_msg_timeout (const pyi_msg_t *self);
int pyi_msg_code (const pyi_msg_t *self);
const char *pyi_msg_text (const pyi_msg_t *self);
size_t pyi_msg_frames (const pyi_msg_t *self);
const void *pyi_msg_frame_data (const pyi_msg_t *self, size_t index);
size_t pyi_msg_frame_size (const pyi_msg_t *self, size_t index);
size_t pyi_msg_body_size (const pyi_msg_t *self);
typedef struct {
    int command;
    int status;
    int code;
    uint32_t timeout_ms;
    uint64_t id;
    const char *service;
    const char *text;
    size_t services;
    size_t frames;
    const void *frame0;
    size_t frame0_size;
} pyi_msg_info_t;
void pyi_msg_info (const pyi_msg_t *self, pyi_msg_info_t *info);
void pyi_msg_set_id (pyi_msg_t *self, uint64_t id);
void pyi_msg_set_service (pyi_msg_t *self, const char *service);
void pyi_msg_set_timeout (pyi_msg_t *self, uint32_t timeout_ms);
void pyi_msg_set_code (pyi_msg_t *self, int code);
void pyi_msg_set_text (pyi_msg_t *self, const char *text);
const char *pyi_msg_token (const pyi_msg_t *self);
void pyi_msg_set_token (pyi_msg_t *self, const char *token);
size_t pyi_msg_services (const pyi_msg_t *self);
const char *pyi_msg_service_at (const pyi_msg_t *self, size_t index);
int pyi_msg_add_service (pyi_msg_t *self, const char *service);
int pyi_msg_mark_descriptor (pyi_msg_t *self, size_t index);
int pyi_msg_status (const pyi_msg_t *self);
const char *pyi_command_name (int command);
const char *pyi_error_name (int code);

/* pyi_broker.h */
typedef struct _pyi_broker_t pyi_broker_t;

pyi_broker_t *pyi_broker_new (void);
void pyi_broker_destroy (pyi_broker_t **self_p);
const char *pyi_broker_endpoint (pyi_broker_t *self);
const char *pyi_broker_inproc (pyi_broker_t *self);
const char *pyi_broker_rundir (pyi_broker_t *self);
char *pyi_broker_bind (pyi_broker_t *self, const char *endpoint);
char *pyi_broker_bind_curve (pyi_broker_t *self, const char *endpoint);
const char *pyi_broker_curve_key (pyi_broker_t *self);
int pyi_broker_allow_key (pyi_broker_t *self, const char *public_key);
int pyi_curve_keypair (char public_key [41], char secret_key [41]);

typedef enum {
    PYI_OPT_HEARTBEAT_MS = 1,
    PYI_OPT_LIVENESS = 2,
    PYI_OPT_MAX_MSG_SIZE = 3,
    PYI_OPT_MAX_PENDING = 4,
    PYI_OPT_MAX_STRIKES = 5,
    PYI_OPT_GRACE_MS = 6
} pyi_option_t;

int pyi_broker_set (pyi_broker_t *self, pyi_option_t option, int64_t value);
char *pyi_broker_allow (pyi_broker_t *self, const char *service, const char *token);
int pyi_broker_spawn (pyi_broker_t *self, const char *service,
                      const char *const argv[], const char *const envp[],
                      int stdout_fd, int stderr_fd);

typedef struct {
    uint64_t requests;
    uint64_t replies;
    uint64_t errors;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t in_flight;
    int64_t pid;
    bool ready;
} pyi_service_stats_t;

int pyi_broker_service_stats (pyi_broker_t *self, const char *service,
                              pyi_service_stats_t *stats);

typedef struct {
    uint64_t messages;
    uint64_t malformed;
    uint64_t rejected;
    uint64_t disconnected;
    uint64_t workers;
    uint64_t pending;
    uint64_t processes;
} pyi_broker_stats_t;

int pyi_broker_stats (pyi_broker_t *self, pyi_broker_stats_t *stats);

typedef enum {
    PYI_EVENT_READY = 1,
    PYI_EVENT_LOST = 2,
    PYI_EVENT_EXIT = 3,
    PYI_EVENT_REFUSED = 4
} pyi_event_type_t;

typedef struct {
    int type;
    int pid;
    int status;
    char service[256];
    char text[256];
} pyi_event_t;

int pyi_broker_event_fd (pyi_broker_t *self);
int pyi_broker_event (pyi_broker_t *self, pyi_event_t *event, int timeout_ms);
const char *pyi_last_error (void);

/* pyi_client.h */
typedef struct _pyi_client_t pyi_client_t;

pyi_client_t *pyi_client_new (const char *endpoint);
pyi_client_t *pyi_client_new_curve (const char *endpoint, const char *server_key,
                                    const char *public_key, const char *secret_key);
void pyi_client_destroy (pyi_client_t **self_p);
int pyi_client_request (pyi_client_t *self, const char *service,
                        uint64_t id, uint32_t timeout_ms, pyi_msg_t **body_p);
int pyi_client_cancel (pyi_client_t *self, uint64_t id);
pyi_msg_t *pyi_client_recv (pyi_client_t *self, int timeout_ms);
int pyi_client_fd (pyi_client_t *self);

/* pyi_worker.h */
typedef struct _pyi_worker_t pyi_worker_t;

pyi_worker_t *pyi_worker_new (const char *endpoint, const char *token,
                              int heartbeat_ms, int liveness);
pyi_worker_t *pyi_worker_new_curve (const char *endpoint, const char *token,
                                    int heartbeat_ms, int liveness, const char *server_key,
                                    const char *public_key, const char *secret_key);
void pyi_worker_destroy (pyi_worker_t **self_p);
int pyi_worker_offer (pyi_worker_t *self, const char *service);
pyi_msg_t *pyi_worker_recv (pyi_worker_t *self, int timeout_ms);
int pyi_worker_reply (pyi_worker_t *self, uint64_t id, pyi_msg_t **body_p);
int pyi_worker_error (pyi_worker_t *self, uint64_t id, int code,
                      const char *text, pyi_msg_t **body_p);
int pyi_worker_heartbeat (pyi_worker_t *self);
int pyi_worker_fd (pyi_worker_t *self);
int pyi_worker_bind_to_parent (void);

/* libc */
void free (void *ptr);

/* dlpack.h (0.6) and pyi_tensor.h's DLPack 1.0 versioned tensor */
typedef int... DLDeviceType;
typedef struct {
    DLDeviceType device_type;
    int device_id;
} DLDevice;
typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;
typedef struct {
    void *data;
    DLDevice device;
    int ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter) (struct DLManagedTensor *self);
} DLManagedTensor;
typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;
typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter) (struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;

/* pyi_region.h */
typedef struct _pyi_region_t pyi_region_t;
#define PYI_REGION_MAX_NAME 63
#define PYI_REGION_HEADER 4096

int pyi_region_set_session (const char *session);
const char *pyi_region_session (void);
pyi_region_t *pyi_region_new (size_t size);
pyi_region_t *pyi_region_open (const char *name);
pyi_region_t *pyi_region_find (const void *ptr, size_t *offset);
pyi_region_t *pyi_region_ref (pyi_region_t *self);
void pyi_region_release (pyi_region_t **self_p);
void *pyi_region_data (pyi_region_t *self);
size_t pyi_region_size (pyi_region_t *self);
const char *pyi_region_name (pyi_region_t *self);
void pyi_region_sent (pyi_region_t *self);
void pyi_region_received (pyi_region_t *self);
uint32_t pyi_region_inflight (pyi_region_t *self);
size_t pyi_region_mapped (void);
int pyi_region_sweep (const char *session, int creator);
int pyi_region_remove_session (const char *session);
pyi_region_t *pyi_region_find_cuda (const void *ptr, int device, size_t *offset);
int pyi_region_collect (char (*names) [64], int capacity);
size_t pyi_region_exported (void);
int pyi_region_device (pyi_region_t *self);

/* pyi_cuda.h */
int pyi_cuda_available (void);
int pyi_cuda_synchronize (void);
int pyi_cuda_active (void);

/* pyi_tensor.h */
#define PYI_TENSOR_MAX_NDIM 32
#define PYI_TENSOR_MAX_DESCRIPTOR 1024
int pyi_tensor_pack (const DLTensor *t, void *buffer, size_t size);
int pyi_tensor_discard (const void *data, size_t size);
void *pyi_tensor_inline_copy (const void *data, size_t size, size_t *length);
void pyi_tensor_free (void *buffer);
DLManagedTensor *pyi_tensor_decode (const void *data, size_t size);
DLManagedTensorVersioned *pyi_tensor_decode_versioned (const void *data, size_t size,
                                                       uint64_t flags);
DLManagedTensor *pyi_tensor_wrap (const DLTensor *t);
DLManagedTensorVersioned *pyi_tensor_wrap_versioned (const DLTensor *t, uint64_t flags);
DLManagedTensorVersioned *pyi_tensor_share (const DLTensor *t);
DLManagedTensorVersioned *pyi_tensor_empty (int32_t ndim, const int64_t *shape,
                                            DLDataType dtype);

/* this module's own C (SOURCE below): DLPack capsules for numpy and torch,
   and the hot path of _core.py (receive, request, reply) */
int pyi_py_install (void);
"""

SOURCE = r"""
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pyisolate/pyisolate.h>

/*  DLPack capsules, made here with the Python C API (cffi cannot return a
    PyObject *): pyi_py_install () adds two functions to this module,
        dlpack_capsule_versioned (address) -> "dltensor_versioned" capsule
        dlpack_capsule (address)           -> "dltensor" capsule
    over the DLManagedTensor[Versioned] at address. The capsule's destructor
    calls the tensor's deleter when nobody consumed it (numpy and torch
    rename a consumed capsule to "used_..." and call the deleter themselves
    when their array or tensor dies). */
static void pyi_py_capsule_versioned_dtor (PyObject *capsule)
{
    if (PyCapsule_IsValid (capsule, "dltensor_versioned")) {
        DLManagedTensorVersioned *m =
            (DLManagedTensorVersioned *) PyCapsule_GetPointer (capsule, "dltensor_versioned");
        if (m && m->deleter)
            m->deleter (m);
    }
}

static void pyi_py_capsule_legacy_dtor (PyObject *capsule)
{
    if (PyCapsule_IsValid (capsule, "dltensor")) {
        DLManagedTensor *m = (DLManagedTensor *) PyCapsule_GetPointer (capsule, "dltensor");
        if (m && m->deleter)
            m->deleter (m);
    }
}

static PyObject *pyi_py_capsule_versioned (PyObject *self, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr (arg);
    if (p == NULL) {
        if (!PyErr_Occurred ())
            PyErr_SetString (PyExc_ValueError, "NULL DLManagedTensorVersioned");
        return NULL;
    }
    return PyCapsule_New (p, "dltensor_versioned", pyi_py_capsule_versioned_dtor);
}

static PyObject *pyi_py_capsule_legacy (PyObject *self, PyObject *arg)
{
    void *p = PyLong_AsVoidPtr (arg);
    if (p == NULL) {
        if (!PyErr_Occurred ())
            PyErr_SetString (PyExc_ValueError, "NULL DLManagedTensor");
        return NULL;
    }
    return PyCapsule_New (p, "dltensor", pyi_py_capsule_legacy_dtor);
}

/*  The hot path of _core.py, in the Python C API: one call per message
    instead of one cffi call per header field and frame. The first argument
    of each is the address (an int) of a live pyi_client_t or pyi_worker_t:
    the caller keeps it alive for the call. They hold the GIL while they run
    (the receives never block: timeout 0), except around copies of large
    frames.

        recv_client (client) / recv_worker (worker)
            -> None when nothing is waiting, else the tuple
               (command, id, service, code, text, timeout_ms, frames, services)
               where frames[0] is bytes and the other frames are bytearrays
               (writable copies that arrays and tensors may keep) and
               services (READY only, else empty) a list of str. The C
               message is destroyed before the call returns.
        client_request (client, service: bytes, id, timeout_ms, frames[, marks])
        worker_reply (worker, id, frames[, marks])
        worker_error (worker, id, code, text: bytes, frames)
            frames: a sequence of contiguous buffers, each copied into one
            body frame; marks: the indexes of the frames that hold tensor
            descriptors (pyi_msg_mark_descriptor). -> 0 sent; 1 not sent, the send queue is full
            (EAGAIN: try again later); -1 failed (pyi_last_error () says
            why); -2 more frames than a message may carry. */
#define PYI_PY_BIG_FRAME (64 * 1024)

static PyObject *pyi_py_str (const char *s)
{
    return PyUnicode_DecodeUTF8 (s, (Py_ssize_t) strlen (s), "replace");
}

static PyObject *pyi_py_take (pyi_msg_t *msg)
{
    pyi_msg_info_t info;
    PyObject *frames = NULL, *services = NULL, *result = NULL;
    size_t i;
    pyi_msg_info (msg, &info);
    frames = PyList_New ((Py_ssize_t) info.frames);
    services = PyList_New (0);
    if (frames == NULL || services == NULL)
        goto done;
    for (i = 0; i < info.frames; i++) {
        const char *data = i ? (const char *) pyi_msg_frame_data (msg, i)
                              : (const char *) info.frame0;
        Py_ssize_t size = (Py_ssize_t) (i ? pyi_msg_frame_size (msg, i) : info.frame0_size);
        PyObject *frame = i ? PyByteArray_FromStringAndSize (NULL, size)
                            : PyBytes_FromStringAndSize (data, size);
        if (frame == NULL)
            goto done;
        if (i && size) {
            char *to = PyByteArray_AS_STRING (frame);
            if (size >= PYI_PY_BIG_FRAME) {
                Py_BEGIN_ALLOW_THREADS
                memcpy (to, data, (size_t) size);
                Py_END_ALLOW_THREADS
            }
            else
                memcpy (to, data, (size_t) size);
        }
        PyList_SET_ITEM (frames, (Py_ssize_t) i, frame);
    }
    if (info.command == PYI_READY) {
        for (i = 0; i < info.services; i++) {
            PyObject *name = pyi_py_str (pyi_msg_service_at (msg, i));
            if (name == NULL || PyList_Append (services, name) < 0) {
                Py_XDECREF (name);
                goto done;
            }
            Py_DECREF (name);
        }
    }
    result = Py_BuildValue ("(iKNiNIOO)", info.command, (unsigned long long) info.id,
                            pyi_py_str (info.service), info.code, pyi_py_str (info.text),
                            (unsigned int) info.timeout_ms, frames, services);
done:
    Py_XDECREF (frames);
    Py_XDECREF (services);
    pyi_msg_destroy (&msg);
    return result;
}

static void *pyi_py_address (PyObject *arg)
{
    void *p = PyLong_AsVoidPtr (arg);
    if (p == NULL && !PyErr_Occurred ())
        PyErr_SetString (PyExc_ValueError, "NULL handle");
    return p;
}

static PyObject *pyi_py_recv_client (PyObject *self, PyObject *arg)
{
    pyi_client_t *client = (pyi_client_t *) pyi_py_address (arg);
    if (client == NULL)
        return NULL;
    pyi_msg_t *msg = pyi_client_recv (client, 0);
    if (msg == NULL)
        Py_RETURN_NONE;
    return pyi_py_take (msg);
}

static PyObject *pyi_py_recv_worker (PyObject *self, PyObject *arg)
{
    pyi_worker_t *worker = (pyi_worker_t *) pyi_py_address (arg);
    if (worker == NULL)
        return NULL;
    pyi_msg_t *msg = pyi_worker_recv (worker, 0);
    if (msg == NULL)
        Py_RETURN_NONE;
    return pyi_py_take (msg);
}

/*  A new message for command holding copies of frames (a sequence of
    buffers). NULL with a Python exception set, or NULL with *too_many set
    when the frames do not fit in one message. */
static pyi_msg_t *pyi_py_body (int command, PyObject *frames, PyObject *marks,
                               int *too_many)
{
    /*  CUDA work on memory another process sees must be finished before
        the message leaves (docs/tensors.md): a no-op without CUDA IPC. */
    if (pyi_cuda_active ()) {
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = pyi_cuda_synchronize ();
        Py_END_ALLOW_THREADS
        if (rc != 0) {
            PyErr_Format (PyExc_RuntimeError, "%s", pyi_last_error ());
            return NULL;
        }
    }
    PyObject *seq = PySequence_Fast (frames, "frames must be a sequence");
    if (seq == NULL)
        return NULL;
    pyi_msg_t *msg = pyi_msg_new ((pyi_command_t) command);
    if (msg == NULL) {
        Py_DECREF (seq);
        PyErr_NoMemory ();
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE (seq), i;
    for (i = 0; i < n; i++) {
        Py_buffer view;
        int rc;
        if (PyObject_GetBuffer (PySequence_Fast_GET_ITEM (seq, i), &view, PyBUF_SIMPLE) < 0)
            goto failed;
        if (view.len >= PYI_PY_BIG_FRAME) {
            Py_BEGIN_ALLOW_THREADS
            rc = pyi_msg_append (msg, view.buf, (size_t) view.len);
            Py_END_ALLOW_THREADS
        }
        else
            rc = pyi_msg_append (msg, view.buf, (size_t) view.len);
        PyBuffer_Release (&view);
        if (rc != 0) {
            *too_many = 1;
            goto failed;
        }
    }
    Py_DECREF (seq);
    /*  Descriptor frames (a sequence of frame indexes), for the header. */
    if (marks != NULL && PyObject_Length (marks) > 0) {
        PyObject *list = PySequence_Fast (marks, "marks must be a sequence");
        if (list == NULL) {
            pyi_msg_destroy (&msg);
            return NULL;
        }
        for (i = 0; i < PySequence_Fast_GET_SIZE (list); i++) {
            Py_ssize_t index = PyLong_AsSsize_t (PySequence_Fast_GET_ITEM (list, i));
            if (index < 0 || pyi_msg_mark_descriptor (msg, (size_t) index) != 0) {
                if (!PyErr_Occurred ())
                    PyErr_Format (PyExc_ValueError, "bad descriptor frame index %zd", index);
                Py_DECREF (list);
                pyi_msg_destroy (&msg);
                return NULL;
            }
        }
        Py_DECREF (list);
    }
    return msg;
failed:
    Py_DECREF (seq);
    pyi_msg_destroy (&msg);
    return NULL;
}

static PyObject *pyi_py_client_request (PyObject *self, PyObject *args)
{
    PyObject *address, *frames, *marks = NULL;
    const char *service;
    unsigned long long id;
    unsigned int timeout_ms;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OyKIO|O", &address, &service, &id, &timeout_ms, &frames,
                           &marks))
        return NULL;
    pyi_client_t *client = (pyi_client_t *) pyi_py_address (address);
    if (client == NULL)
        return NULL;
    pyi_msg_t *body = pyi_py_body (PYI_REQUEST, frames, marks, &too_many);
    if (body == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    if (pyi_client_request (client, service, (uint64_t) id, (uint32_t) timeout_ms, &body) == 0)
        return PyLong_FromLong (0);
    return PyLong_FromLong (errno == EAGAIN ? 1 : -1);
}

static PyObject *pyi_py_worker_reply (PyObject *self, PyObject *args)
{
    PyObject *address, *frames, *marks = NULL;
    unsigned long long id;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OKO|O", &address, &id, &frames, &marks))
        return NULL;
    pyi_worker_t *worker = (pyi_worker_t *) pyi_py_address (address);
    if (worker == NULL)
        return NULL;
    pyi_msg_t *body = pyi_py_body (PYI_REPLY, frames, marks, &too_many);
    if (body == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    if (pyi_worker_reply (worker, (uint64_t) id, &body) == 0)
        return PyLong_FromLong (0);
    return PyLong_FromLong (errno == EAGAIN ? 1 : -1);
}

static PyObject *pyi_py_worker_error (PyObject *self, PyObject *args)
{
    PyObject *address, *frames;
    unsigned long long id;
    int code;
    const char *text;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OKiyO", &address, &id, &code, &text, &frames))
        return NULL;
    pyi_worker_t *worker = (pyi_worker_t *) pyi_py_address (address);
    if (worker == NULL)
        return NULL;
    pyi_msg_t *body = pyi_py_body (PYI_ERROR, frames, NULL, &too_many);
    if (body == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    if (pyi_worker_error (worker, (uint64_t) id, code, text, &body) == 0)
        return PyLong_FromLong (0);
    return PyLong_FromLong (errno == EAGAIN ? 1 : -1);
}

static PyMethodDef pyi_py_methods[] = {
    {"recv_client", pyi_py_recv_client, METH_O,
     "The next message for a client (address), or None: see _core.py."},
    {"recv_worker", pyi_py_recv_worker, METH_O,
     "The next message for a worker (address), or None: see _core.py."},
    {"client_request", pyi_py_client_request, METH_VARARGS,
     "Send a request: 0 sent, 1 queue full, -1 failed, -2 too many frames."},
    {"worker_reply", pyi_py_worker_reply, METH_VARARGS,
     "Send a reply: 0 sent, 1 queue full, -1 failed, -2 too many frames."},
    {"worker_error", pyi_py_worker_error, METH_VARARGS,
     "Send an error reply: 0 sent, 1 queue full, -1 failed, -2 too many frames."},
    {"dlpack_capsule_versioned", pyi_py_capsule_versioned, METH_O,
     "A 'dltensor_versioned' capsule over the DLManagedTensorVersioned at an address."},
    {"dlpack_capsule", pyi_py_capsule_legacy, METH_O,
     "A 'dltensor' capsule over the DLManagedTensor at an address."},
    {NULL, NULL, 0, NULL}
};

/*  cffi calls C with the GIL released: take it. 0, or -1. */
int pyi_py_install (void)
{
    int rc = -1;
    PyGILState_STATE gil = PyGILState_Ensure ();
    PyObject *mod = PyImport_AddModule ("pyisolate._native");   /* borrowed */
    if (mod) {
        PyMethodDef *def;
        rc = 0;
        for (def = pyi_py_methods; def->ml_name; def++) {
            PyObject *fn = PyCFunction_NewEx (def, NULL, NULL);
            if (fn == NULL || PyObject_SetAttrString (mod, def->ml_name, fn) < 0)
                rc = -1;
            Py_XDECREF (fn);
        }
    }
    if (rc)
        PyErr_Clear ();
    PyGILState_Release (gil);
    return rc;
}
"""


def make_builder() -> cffi.FFI:
    ffibuilder = cffi.FFI()
    ffibuilder.cdef(CDEF)
    ffibuilder.set_source("pyisolate._native", SOURCE)
    return ffibuilder


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: ffi_build.py OUTPUT.c\n")
        return 2
    make_builder().emit_c_code(argv[1])
    # The module is built for one Python ABI (CMake: WITH_SOABI), and its own
    # C (the hot path above) uses the buffer protocol and list macros, outside
    # the limited API that cffi selects by default.
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    with open(argv[1], "w", encoding="utf-8") as f:
        f.write("#define _CFFI_NO_LIMITED_API\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
