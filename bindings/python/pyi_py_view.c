/*  pyi_py_view: read-only views of received frames (see pyi_py_view.h).

    A memoryview needs an exporter object that keeps its bytes alive: a
    frame object (one per large frame) exports its bytes read-only and
    holds the message's owner, a capsule whose destructor destroys the
    message. Everything here runs with the GIL.
*/
#include "pyi_py_view.h"
#include "pyi_py.h"
#include <stdatomic.h>

#define S_OWNER_NAME "pyisolate._native.message"

typedef struct {
    PyObject_HEAD
    PyObject *owner;             /* capsule holding the received pyi_msg_t */
    void *data;                  /* the frame's bytes, inside that message */
    Py_ssize_t size;             /* and their count */
} s_frame_t;

static atomic_size_t s_views;    /* messages kept alive by owners */

static void
s_owner_destroy (PyObject *capsule)
{
    pyi_msg_t *msg = (pyi_msg_t *) PyCapsule_GetPointer (capsule, S_OWNER_NAME);
    pyi_msg_destroy (&msg);
    atomic_fetch_sub (&s_views, 1);
}

static int
s_frame_getbuffer (PyObject *self, Py_buffer *view, int flags)
{
    s_frame_t *frame = (s_frame_t *) self;
    /*  Read-only: a request for a writable buffer fails (BufferError). */
    return PyBuffer_FillInfo (view, self, frame->data, frame->size, 1, flags);
}

static void
s_frame_dealloc (PyObject *self)
{
    s_frame_t *frame = (s_frame_t *) self;
    Py_CLEAR (frame->owner);
    Py_TYPE (self)->tp_free (self);
}

static PyBufferProcs s_frame_buffer = {
    .bf_getbuffer = s_frame_getbuffer,
    .bf_releasebuffer = NULL,
};

static PyTypeObject s_frame_type = {
    PyVarObject_HEAD_INIT (NULL, 0)
    .tp_name = "pyisolate._native.Frame",
    .tp_basicsize = sizeof (s_frame_t),
    .tp_dealloc = s_frame_dealloc,
    .tp_as_buffer = &s_frame_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The bytes of one received frame (exported read-only to memoryviews).",
};

int
pyi_py_view_setup (void)
{
    return PyType_Ready (&s_frame_type);
}

PyObject *
pyi_py_view_owner (pyi_msg_t **msg_p)
{
    PyObject *owner = PyCapsule_New (*msg_p, S_OWNER_NAME, s_owner_destroy);
    if (owner == NULL) {
        pyi_msg_destroy (msg_p);
        return NULL;
    }
    atomic_fetch_add (&s_views, 1);
    *msg_p = NULL;
    return owner;
}

PyObject *
pyi_py_view_new (PyObject *owner, const void *data, Py_ssize_t size)
{
    s_frame_t *frame = PyObject_New (s_frame_t, &s_frame_type);
    if (frame == NULL)
        return NULL;
    Py_INCREF (owner);
    frame->owner = owner;
    frame->data = (void *) data;
    frame->size = size;
    PyObject *view = PyMemoryView_FromObject ((PyObject *) frame);
    Py_DECREF (frame);           /* the memoryview holds it now */
    return view;
}

size_t
pyi_py_view_count (void)
{
    return atomic_load (&s_views);
}
