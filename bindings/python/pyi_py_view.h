/*  pyi_py_view: read-only views of the frames of a received message.

    A large received frame reaches Python as a memoryview of the bytes
    libzmq received, not a copy. The views of one message share one owner
    (a capsule holding the pyi_msg_t); the message is destroyed, with the
    GIL, when the last view of it is released or collected. Views are
    read-only: with inproc peers the bytes may be a sender's own Python
    buffer (pyi_py_loan.h). msgpack.unpackb, numpy.frombuffer and
    ffi.from_buffer take them as they are; a consumer that needs writable
    memory copies.

    Internal to the bridge (it needs Python.h: not read by ffi_build.py).
*/
#ifndef PYI_PY_VIEW_H_INCLUDED
#define PYI_PY_VIEW_H_INCLUDED

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pyisolate/pyisolate.h>

/*  Prepare the view type, once. With the GIL. 0, or -1 (exception set). */
int pyi_py_view_setup (void);

/*  The owner of a received message: takes *msg_p (nulled, also on
    failure: then the message is destroyed). NULL with an exception set. */
PyObject *pyi_py_view_owner (pyi_msg_t **msg_p);

/*  A read-only memoryview of size bytes at data, which lie in the message
    that owner (pyi_py_view_owner) holds; the view keeps it alive. NULL
    with an exception set. */
PyObject *pyi_py_view_new (PyObject *owner, const void *data, Py_ssize_t size);

/*  Received messages that views keep alive now (pyi_py_views). */
size_t pyi_py_view_count (void);

#endif
