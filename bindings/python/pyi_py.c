/*  pyi_py: the Python binding's own functions (see pyi_py.h).

    They are Python C API functions added to pyisolate._native, so that a
    message costs one call into C instead of one cffi call per header
    field and frame. Each runs with the GIL and never blocks (receives use
    timeout 0, sends ZMQ_DONTWAIT), except pyi_cuda_synchronize, which runs
    without the GIL.

    Handles arrive as cffi pointers and are read with cffi's own C API:
    _cffi_backend publishes, as the capsule _C_API, the table of functions
    that every cffi-generated module calls (cffi/_cffi_include.h), and
    _cffi_to_c_pointer in it converts an object to a C pointer of a given
    cffi type, with cffi's type check and error messages.
*/
#include "pyi_py.h"
#include "pyi_py_array.h"
#include "pyi_py_codec.h"
#include "pyi_py_loan.h"
#include "pyi_py_view.h"
#include <errno.h>
#include <string.h>
#include <stdbool.h>

#define S_MODULE "pyisolate._native"
/*  Index of _cffi_to_c_pointer in cffi's table (cffi/_cffi_include.h),
    fixed since cffi 1.0: compiled cffi modules depend on it. */
#define S_CFFI_TO_C_POINTER 11

typedef char *(s_to_pointer_fn) (PyObject *obj, PyObject *ctype);

static s_to_pointer_fn *s_to_pointer;   /* cffi's _cffi_to_c_pointer */

/*  The cffi types of the pointers the functions take (ffi.typeof). */
static struct {
    PyObject *client;            /* pyi_client_t * */
    PyObject *worker;            /* pyi_worker_t * */
    PyObject *lane;              /* pyi_lane_t * */
    PyObject *tensor;            /* DLManagedTensor * */
    PyObject *tensor_versioned;  /* DLManagedTensorVersioned * */
} s_types;

/*  The C pointer of obj, a cffi pointer of type ctype; NULL with an
    exception set when it is not one, or is NULL. */
static void *
s_pointer (PyObject *obj, PyObject *ctype)
{
    void *ptr = s_to_pointer (obj, ctype);
    if (ptr == NULL && !PyErr_Occurred ())
        PyErr_SetString (PyExc_ValueError, "NULL pointer");
    return ptr;
}

/* -- DLPack capsules -------------------------------------------------------- */

#define S_VERSIONED "dltensor_versioned"
#define S_LEGACY "dltensor"

static void
s_capsule_versioned_dtor (PyObject *capsule)
{
    if (PyCapsule_IsValid (capsule, S_VERSIONED)) {
        DLManagedTensorVersioned *m =
            (DLManagedTensorVersioned *) PyCapsule_GetPointer (capsule, S_VERSIONED);
        if (m && m->deleter)
            m->deleter (m);
    }
}

static void
s_capsule_legacy_dtor (PyObject *capsule)
{
    if (PyCapsule_IsValid (capsule, S_LEGACY)) {
        DLManagedTensor *m = (DLManagedTensor *) PyCapsule_GetPointer (capsule, S_LEGACY);
        if (m && m->deleter)
            m->deleter (m);
    }
}

static PyObject *
s_capsule_versioned (PyObject *self, PyObject *arg)
{
    (void) self;
    void *m = s_pointer (arg, s_types.tensor_versioned);
    return m ? PyCapsule_New (m, S_VERSIONED, s_capsule_versioned_dtor) : NULL;
}

static PyObject *
s_capsule_legacy (PyObject *self, PyObject *arg)
{
    (void) self;
    void *m = s_pointer (arg, s_types.tensor);
    return m ? PyCapsule_New (m, S_LEGACY, s_capsule_legacy_dtor) : NULL;
}

/*  The DLTensor a capsule holds, legacy or versioned (not consumed); NULL
    with TypeError when it is neither. */
static const DLTensor *
s_capsule_tensor (PyObject *capsule)
{
    if (PyCapsule_IsValid (capsule, S_LEGACY))
        return &((DLManagedTensor *) PyCapsule_GetPointer (capsule, S_LEGACY))->dl_tensor;
    if (PyCapsule_IsValid (capsule, S_VERSIONED))
        return &((DLManagedTensorVersioned *)
                 PyCapsule_GetPointer (capsule, S_VERSIONED))->dl_tensor;
    PyErr_SetString (PyExc_TypeError, "not an unused DLPack capsule");
    return NULL;
}

PyObject *
pyi_py_describe_capsule (PyObject *capsule, long code, long bits)
{
    const DLTensor *t = s_capsule_tensor (capsule);
    if (!t)
        return NULL;
    if (t->device.device_type != kDLCPU || t->dtype.code != code || t->dtype.bits != bits
    ||  t->dtype.lanes != 1)
        Py_RETURN_NONE;
    char buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int size = pyi_tensor_pack (t, buffer, sizeof (buffer));
    if (size < 0)
        Py_RETURN_NONE;
    PyObject *desc = PyBytes_FromStringAndSize (buffer, size);
    if (desc == NULL)
        pyi_tensor_discard (buffer, (size_t) size);     /* nothing will send it */
    return desc;
}

PyObject *
pyi_py_capsule_legacy (DLManagedTensor *m)
{
    PyObject *capsule = PyCapsule_New (m, S_LEGACY, s_capsule_legacy_dtor);
    if (capsule == NULL)
        m->deleter (m);
    return capsule;
}

static PyObject *
s_array (PyObject *self, PyObject *arg)
{
    (void) self;
    DLManagedTensorVersioned *m = s_pointer (arg, s_types.tensor_versioned);
    return m ? pyi_py_array_new (m) : NULL;
}

static PyObject *
s_received (PyObject *self, PyObject *desc)
{
    (void) self;
    Py_buffer view;
    if (PyObject_GetBuffer (desc, &view, PyBUF_SIMPLE))
        return NULL;
    int rc = pyi_tensor_received (view.buf, (size_t) view.len);
    PyBuffer_Release (&view);
    return PyBool_FromLong (rc == 0);
}

static PyObject *
s_describe_array (PyObject *self, PyObject *obj)
{
    (void) self;
    return pyi_py_array_describe (obj);
}

/* -- receiving ---------------------------------------------------------------- */

static PyObject *
s_str (const char *s)
{
    return PyUnicode_DecodeUTF8 (s, (Py_ssize_t) strlen (s), "replace");
}

/*  Frame index of msg as Python: a copy when short (bytes for frame 0,
    a bytearray for the others), else a view; *owner is made for the first
    view (it takes *msg_p). NULL with an exception set. */
static PyObject *
s_frame (pyi_msg_t **msg_p, PyObject **owner, size_t index, const void *data, size_t size)
{
    if (size < PYI_PY_BIG_FRAME) {
        if (index == 0)
            return PyBytes_FromStringAndSize ((const char *) data, (Py_ssize_t) size);
        return PyByteArray_FromStringAndSize ((const char *) data, (Py_ssize_t) size);
    }
    if (*owner == NULL) {
        *owner = pyi_py_view_owner (msg_p);
        if (*owner == NULL)
            return NULL;
    }
    return pyi_py_view_new (*owner, data, (Py_ssize_t) size);
}

/*  The tuple of a received message (pyi_py.h), which it takes. */
static PyObject *
s_take (pyi_msg_t *msg)
{
    pyi_msg_info_t info;
    PyObject *frames = NULL, *services = NULL, *owner = NULL, *result = NULL;
    PyObject *service = NULL, *text = NULL;
    const pyi_msg_t *msg_read = msg;
    size_t i;
    pyi_msg_info (msg, &info);
    service = s_str (info.service);
    text = s_str (info.text);
    frames = PyList_New ((Py_ssize_t) info.frames);
    services = PyList_New (0);
    if (service == NULL || text == NULL || frames == NULL || services == NULL)
        goto done;
    if (info.command == PYI_READY) {
        for (i = 0; i < info.services; i++) {
            PyObject *name = s_str (pyi_msg_service_at (msg, i));
            if (name == NULL || PyList_Append (services, name) < 0) {
                Py_XDECREF (name);
                goto done;
            }
            Py_DECREF (name);
        }
    }
    for (i = 0; i < info.frames; i++) {
        /*  Read through msg_read: msg itself is nulled once the owner
            takes it, which keeps it alive as long as we hold owner. */
        const void *data = i ? pyi_msg_frame_data (msg_read, i) : info.frame0;
        size_t size = i ? pyi_msg_frame_size (msg_read, i) : info.frame0_size;
        PyObject *frame = s_frame (&msg, &owner, i, data, size);
        if (frame == NULL)
            goto done;
        PyList_SET_ITEM (frames, (Py_ssize_t) i, frame);
    }
    result = Py_BuildValue ("(iKOiOIOOO)", info.command, (unsigned long long) info.id,
                            service, info.code, text, (unsigned int) info.timeout_ms,
                            frames, services, info.answer_inline ? Py_True : Py_False);
done:
    Py_XDECREF (service);
    Py_XDECREF (text);
    Py_XDECREF (frames);
    Py_XDECREF (services);
    Py_XDECREF (owner);          /* the views hold it, if any */
    pyi_msg_destroy (&msg);      /* no-op when the owner took it */
    return result;
}

static PyObject *
s_recv_client (PyObject *self, PyObject *arg)
{
    (void) self;
    pyi_client_t *client = (pyi_client_t *) s_pointer (arg, s_types.client);
    if (client == NULL)
        return NULL;
    pyi_msg_t *msg = pyi_client_recv (client, 0);
    if (msg == NULL)
        Py_RETURN_NONE;
    return s_take (msg);
}

static PyObject *
s_recv_worker (PyObject *self, PyObject *arg)
{
    (void) self;
    pyi_worker_t *worker = (pyi_worker_t *) s_pointer (arg, s_types.worker);
    if (worker == NULL)
        return NULL;
    pyi_msg_t *msg = pyi_worker_recv (worker, 0);
    if (msg == NULL)
        Py_RETURN_NONE;
    return s_take (msg);
}

static PyObject *
s_recv_lane (PyObject *self, PyObject *arg)
{
    (void) self;
    pyi_lane_t *lane = (pyi_lane_t *) s_pointer (arg, s_types.lane);
    if (lane == NULL)
        return NULL;
    pyi_msg_t *msg = pyi_lane_recv (lane);
    if (msg == NULL)
        Py_RETURN_NONE;
    return s_take (msg);
}

/* -- sending ------------------------------------------------------------------ */

/*  Mark the descriptor frames named by marks (a sequence of indexes, or
    NULL). 0, or -1 with an exception set. */
static int
s_mark (pyi_msg_t *msg, PyObject *marks)
{
    if (marks == NULL)
        return 0;
    PyObject *list = PySequence_Fast (marks, "marks must be a sequence");
    if (list == NULL)
        return -1;
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE (list);
    for (i = 0; i < n; i++) {
        Py_ssize_t index = PyLong_AsSsize_t (PySequence_Fast_GET_ITEM (list, i));
        if (index < 0 || pyi_msg_mark_descriptor (msg, (size_t) index) != 0) {
            if (!PyErr_Occurred ())
                PyErr_Format (PyExc_ValueError, "bad descriptor frame index %zd", index);
            Py_DECREF (list);
            return -1;
        }
    }
    Py_DECREF (list);
    return 0;
}

/*  A new message for command with frames (a sequence of buffers: short
    ones copied, long ones lent) and marks. NULL with a Python exception
    set, or NULL with *too_many set when the frames do not fit. */
static pyi_msg_t *
s_body (int command, PyObject *frames, PyObject *marks, int *too_many)
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
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE (seq);
    for (i = 0; i < n; i++) {
        Py_buffer view;
        int rc;
        if (PyObject_GetBuffer (PySequence_Fast_GET_ITEM (seq, i), &view, PyBUF_SIMPLE) < 0)
            goto failed;
        if (view.len >= PYI_PY_BIG_FRAME)
            rc = pyi_py_loan_append (msg, &view);    /* takes view */
        else {
            rc = pyi_msg_append (msg, view.buf, (size_t) view.len);
            PyBuffer_Release (&view);
        }
        if (rc != 0) {
            *too_many = 1;
            goto failed;
        }
    }
    Py_DECREF (seq);
    if (s_mark (msg, marks) != 0) {
        pyi_msg_destroy (&msg);
        return NULL;
    }
    return msg;
failed:
    Py_DECREF (seq);
    pyi_msg_destroy (&msg);
    return NULL;
}

/*  The result of a send (pyi_py.h): 0 sent, 1 queue full, -1 failed. */
static PyObject *
s_sent (int rc)
{
    return PyLong_FromLong (rc == 0 ? 0 : errno == EAGAIN ? 1 : -1);
}

static PyObject *
s_client_request (PyObject *self, PyObject *args)
{
    (void) self;
    PyObject *handle, *frames, *marks = NULL;
    const char *service;
    unsigned long long id;
    unsigned int timeout_ms;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OyKIO|O", &handle, &service, &id, &timeout_ms, &frames,
                           &marks))
        return NULL;
    pyi_client_t *client = (pyi_client_t *) s_pointer (handle, s_types.client);
    if (client == NULL)
        return NULL;
    pyi_msg_t *body = s_body (PYI_REQUEST, frames, marks, &too_many);
    if (body == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    return s_sent (pyi_client_request (client, service, (uint64_t) id, (uint32_t) timeout_ms,
                                       &body));
}

static PyObject *
s_worker_reply (PyObject *self, PyObject *args)
{
    (void) self;
    PyObject *handle, *frames, *marks = NULL;
    unsigned long long id;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OKO|O", &handle, &id, &frames, &marks))
        return NULL;
    pyi_worker_t *worker = (pyi_worker_t *) s_pointer (handle, s_types.worker);
    if (worker == NULL)
        return NULL;
    pyi_msg_t *body = s_body (PYI_REPLY, frames, marks, &too_many);
    if (body == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    return s_sent (pyi_worker_reply (worker, (uint64_t) id, &body));
}

static PyObject *
s_worker_error (PyObject *self, PyObject *args)
{
    (void) self;
    PyObject *handle, *frames;
    unsigned long long id;
    int code;
    const char *text;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OKiyO", &handle, &id, &code, &text, &frames))
        return NULL;
    pyi_worker_t *worker = (pyi_worker_t *) s_pointer (handle, s_types.worker);
    if (worker == NULL)
        return NULL;
    pyi_msg_t *body = s_body (PYI_ERROR, frames, NULL, &too_many);
    if (body == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    return s_sent (pyi_worker_error (worker, (uint64_t) id, code, text, &body));
}

static PyObject *
s_lane_send (PyObject *self, PyObject *args)
{
    (void) self;
    PyObject *handle, *frames, *marks = NULL;
    const char *service, *text;
    unsigned long long id;
    unsigned int timeout_ms;
    int command, code, now;
    int too_many = 0;
    if (!PyArg_ParseTuple (args, "OpiKyIiyO|O", &handle, &now, &command, &id, &service,
                           &timeout_ms, &code, &text, &frames, &marks))
        return NULL;
    pyi_lane_t *lane = (pyi_lane_t *) s_pointer (handle, s_types.lane);
    if (lane == NULL)
        return NULL;
    pyi_msg_t *msg = s_body (command, frames, marks, &too_many);
    if (msg == NULL)
        return too_many ? PyLong_FromLong (-2) : NULL;
    pyi_msg_set_id (msg, (uint64_t) id);
    if (command == PYI_REQUEST || command == PYI_ERROR)
        pyi_msg_set_service (msg, service);
    if (command == PYI_REQUEST)
        pyi_msg_set_timeout (msg, (uint32_t) timeout_ms);
    if (command == PYI_ERROR) {
        pyi_msg_set_code (msg, code);
        pyi_msg_set_text (msg, text);
    }
    if ((now ? pyi_lane_send (lane, &msg) : pyi_lane_queue (lane, &msg)) != 0)
        return PyLong_FromLong (-1);
    return PyLong_FromSize_t (pyi_lane_queued (lane));
}

/* -- the module ----------------------------------------------------------------- */

static PyMethodDef s_methods[] = {
    {"recv_client", s_recv_client, METH_O,
     "The next message for a client (pyi_client_t *), or None: see pyi_py.h."},
    {"recv_worker", s_recv_worker, METH_O,
     "The next message for a worker (pyi_worker_t *), or None: see pyi_py.h."},
    {"client_request", s_client_request, METH_VARARGS,
     "Send a request: 0 sent, 1 queue full, -1 failed, -2 too many frames."},
    {"worker_reply", s_worker_reply, METH_VARARGS,
     "Send a reply: 0 sent, 1 queue full, -1 failed, -2 too many frames."},
    {"worker_error", s_worker_error, METH_VARARGS,
     "Send an error reply: 0 sent, 1 queue full, -1 failed, -2 too many frames."},
    {"recv_lane", s_recv_lane, METH_O,
     "The next message read from a lane (pyi_lane_t *), or None: see pyi_py.h."},
    {"lane_send", s_lane_send, METH_VARARGS,
     "Send a message on a lane: the bytes queued (>= 0), -1 failed, -2 too many frames."},
    {"dlpack_capsule_versioned", s_capsule_versioned, METH_O,
     "A 'dltensor_versioned' capsule over a DLManagedTensorVersioned * (taken)."},
    {"dlpack_capsule", s_capsule_legacy, METH_O,
     "A 'dltensor' capsule over a DLManagedTensor * (taken)."},
    {"array", s_array, METH_O,
     "An Array (numpy.asarray takes it) over a DLManagedTensorVersioned * (taken)."},
    {"received", s_received, METH_O,
     "pyi_tensor_received of a descriptor: True when its count was taken."},
    {"describe_array", s_describe_array, METH_O,
     "(descriptor, read_only) of a buffer wholly in a region, counted in flight; or None."},
    {NULL, NULL, 0, NULL}
};

/*  ffi.typeof (name) of the module's ffi, into *ctype (a new reference). */
static int
s_ctype (PyObject *ffi, const char *name, PyObject **ctype)
{
    *ctype = PyObject_CallMethod (ffi, "typeof", "s", name);
    return *ctype ? 0 : -1;
}

/*  cffi's table of C functions, from _cffi_backend._C_API. */
static int
s_cffi_api (void)
{
    PyObject *backend = PyImport_ImportModule ("_cffi_backend");
    PyObject *api = backend ? PyObject_GetAttrString (backend, "_C_API") : NULL;
    void **table = api ? (void **) PyCapsule_GetPointer (api, "cffi") : NULL;
    Py_XDECREF (api);
    Py_XDECREF (backend);
    if (table == NULL)
        return -1;
    s_to_pointer = (s_to_pointer_fn *) table[S_CFFI_TO_C_POINTER];
    return s_to_pointer ? 0 : -1;
}

static int
s_install (void)
{
    PyObject *mod = PyImport_AddModule (S_MODULE);   /* borrowed */
    if (mod == NULL)
        return -1;
    PyObject *ffi = PyObject_GetAttrString (mod, "ffi");
    if (ffi == NULL)
        return -1;
    int rc = s_ctype (ffi, "pyi_client_t *", &s_types.client)
          || s_ctype (ffi, "pyi_worker_t *", &s_types.worker)
          || s_ctype (ffi, "pyi_lane_t *", &s_types.lane)
          || s_ctype (ffi, "DLManagedTensor *", &s_types.tensor)
          || s_ctype (ffi, "DLManagedTensorVersioned *", &s_types.tensor_versioned)
          || s_cffi_api ()
          || pyi_py_view_setup ()
          || pyi_py_array_setup ()
          || pyi_py_loan_setup ()
          || pyi_py_codec_setup (mod) ? -1 : 0;
    Py_DECREF (ffi);
    for (PyMethodDef *def = s_methods; rc == 0 && def->ml_name; def++) {
        PyObject *fn = PyCFunction_NewEx (def, NULL, NULL);
        if (fn == NULL || PyObject_SetAttrString (mod, def->ml_name, fn) < 0)
            rc = -1;
        Py_XDECREF (fn);
    }
    return rc;
}

int
pyi_py_install (void)
{
    static bool installed = false;
    int rc = 0;
    PyGILState_STATE gil = PyGILState_Ensure ();
    if (!installed) {
        rc = s_install ();
        if (rc == 0)
            installed = true;
        else {
            PyErr_WriteUnraisable (NULL);
            PyErr_Clear ();
        }
    }
    PyGILState_Release (gil);
    return rc;
}

size_t
pyi_py_loans (void)
{
    return pyi_py_loan_count ();
}

size_t
pyi_py_views (void)
{
    return pyi_py_view_count ();
}
