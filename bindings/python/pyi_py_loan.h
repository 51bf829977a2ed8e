/*  pyi_py_loan: Python buffers lent to libzmq as zero-copy body frames.

    A large body frame leaves from the Python object's own memory: the
    bridge takes a Py_buffer on it (which also keeps the object alive and,
    for a bytearray, unresizable) and appends a frame that points at it
    (pyi_msg_append_zerocopy). libzmq calls the frame's free function when
    it is done with the bytes, from whatever thread that is: often one of
    its I/O threads, which may not touch Python. So the free function only
    queues the loan, and one release thread of the bridge gives the
    buffers back to Python, with the GIL, in batches (as pyzmq does).

    At interpreter exit (an atexit hook, run while threads can still take
    the GIL) the release thread stops and the loans that came back are
    released on the exiting thread; loans that libzmq gives back later are
    left to the process's end, and new frames are copied, never lent:
    nothing takes the GIL once the interpreter is going away. After fork,
    the child starts its own release thread when it first lends.

    Internal to the bridge (it needs Python.h: not read by ffi_build.py).
*/
#ifndef PYI_PY_LOAN_H_INCLUDED
#define PYI_PY_LOAN_H_INCLUDED

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pyisolate/pyisolate.h>

/*  Register the exit hook and the fork handlers, once. Call with the GIL.
    0, or -1 with a Python exception set. */
int pyi_py_loan_setup (void);

/*  Append view's bytes to msg as a frame that borrows them. Takes view
    (the caller must not release it): it is released once libzmq is done
    with the frame, or at once when the bytes were copied instead (at
    exit, or when the release thread cannot start). Call with the GIL.
    0, or -1 when msg has no room for another frame. */
int pyi_py_loan_append (pyi_msg_t *msg, Py_buffer *view);

/*  Loans not yet given back to Python (pyi_py_loans). */
size_t pyi_py_loan_count (void);

#endif
