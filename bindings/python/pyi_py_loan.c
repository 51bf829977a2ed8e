/*  pyi_py_loan: Python buffers lent to libzmq (see pyi_py_loan.h).

    Threads: Python threads lend (with the GIL); any thread gives back
    (s_returned, called by libzmq, never with Python state); the release
    thread releases (it takes the GIL for each batch). s_lock guards the
    queue and the flags, and is never held while the GIL is taken.
*/
#include "pyi_py_loan.h"
#include "pyi_py.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct s_loan_t {
    Py_buffer view;              /* the Python buffer the frame's bytes are in */
    struct s_loan_t *next;       /* next loan in the returned queue */
} s_loan_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_wake = PTHREAD_COND_INITIALIZER;   /* loans came back, or stop */
static pthread_cond_t s_idle = PTHREAD_COND_INITIALIZER;   /* release thread left Python */
static s_loan_t *s_queue;        /* loans libzmq gave back, newest first */
static bool s_running;           /* the release thread runs (in this process) */
static bool s_busy;              /* it is releasing a batch (with the GIL) */
static bool s_stopped;           /* interpreter exit: lend no more, release nothing */
static atomic_size_t s_loans;    /* loans not yet released */

/*  Give the buffers of a list of loans back to Python. With the GIL. */
static void
s_release_all (s_loan_t *loan)
{
    while (loan) {
        s_loan_t *next = loan->next;
        PyBuffer_Release (&loan->view);
        free (loan);
        atomic_fetch_sub (&s_loans, 1);
        loan = next;
    }
}

/*  The frame's free function: libzmq is done with the bytes. Any thread,
    no GIL: queue the loan for the release thread. */
static void
s_returned (void *data, void *hint)
{
    (void) data;
    s_loan_t *loan = (s_loan_t *) hint;
    pthread_mutex_lock (&s_lock);
    loan->next = s_queue;
    s_queue = loan;
    pthread_cond_signal (&s_wake);
    pthread_mutex_unlock (&s_lock);
}

static void *
s_release_thread (void *arg)
{
    (void) arg;
    pthread_mutex_lock (&s_lock);
    while (!s_stopped) {
        if (s_queue == NULL) {
            pthread_cond_wait (&s_wake, &s_lock);
            continue;
        }
        s_loan_t *batch = s_queue;
        s_queue = NULL;
        s_busy = true;
        pthread_mutex_unlock (&s_lock);
        PyGILState_STATE gil = PyGILState_Ensure ();
        s_release_all (batch);
        PyGILState_Release (gil);
        pthread_mutex_lock (&s_lock);
        s_busy = false;
        pthread_cond_broadcast (&s_idle);
    }
    pthread_mutex_unlock (&s_lock);
    return NULL;
}

/*  Start the release thread unless it runs. With the GIL. true when it
    runs and loans may be made. */
static bool
s_start (void)
{
    bool ok;
    pthread_mutex_lock (&s_lock);
    if (!s_running && !s_stopped) {
        pthread_attr_t attr;
        pthread_t thread;
        sigset_t all, old;
        /*  Signals are for Python's main thread, not for this one. */
        sigfillset (&all);
        pthread_sigmask (SIG_SETMASK, &all, &old);
        if (pthread_attr_init (&attr) == 0) {
            pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
            s_running = pthread_create (&thread, &attr, s_release_thread, NULL) == 0;
            pthread_attr_destroy (&attr);
        }
        pthread_sigmask (SIG_SETMASK, &old, NULL);
    }
    ok = s_running && !s_stopped;
    pthread_mutex_unlock (&s_lock);
    return ok;
}

int
pyi_py_loan_append (pyi_msg_t *msg, Py_buffer *view)
{
    s_loan_t *loan = NULL;
    if (s_start ())
        loan = (s_loan_t *) malloc (sizeof (s_loan_t));
    if (loan == NULL) {
        /*  No lending (exiting, or no thread or memory for it): a copy. */
        int rc = pyi_msg_append (msg, view->buf, (size_t) view->len);
        PyBuffer_Release (view);
        return rc;
    }
    loan->view = *view;          /* the loan owns the buffer from here */
    loan->next = NULL;
    atomic_fetch_add (&s_loans, 1);
    /*  On failure the free function has run already: the loan is queued. */
    return pyi_msg_append_zerocopy (msg, loan->view.buf, (size_t) loan->view.len,
                                    s_returned, loan);
}

size_t
pyi_py_loan_count (void)
{
    return atomic_load (&s_loans);
}

/*  atexit: stop the release thread (waiting, without the GIL, for the
    batch it may be releasing) and release what came back, here. */
static PyObject *
s_stop (PyObject *self, PyObject *unused)
{
    (void) self;
    (void) unused;
    s_loan_t *left;
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock (&s_lock);
    s_stopped = true;
    pthread_cond_broadcast (&s_wake);
    while (s_busy)
        pthread_cond_wait (&s_idle, &s_lock);
    left = s_queue;
    s_queue = NULL;
    pthread_mutex_unlock (&s_lock);
    Py_END_ALLOW_THREADS
    s_release_all (left);
    Py_RETURN_NONE;
}

static PyMethodDef s_stop_def = {
    "_pyi_py_loan_stop", s_stop, METH_NOARGS,
    "Stop lending Python buffers to libzmq (interpreter exit)."
};

/*  fork: the child has no release thread (it starts one when it first
    lends); the lock is held across fork so that the queue is whole. */
static void
s_before_fork (void)
{
    pthread_mutex_lock (&s_lock);
}

static void
s_after_fork_parent (void)
{
    pthread_mutex_unlock (&s_lock);
}

static void
s_after_fork_child (void)
{
    s_running = false;
    s_busy = false;              /* a batch the parent's thread held stays unreleased */
    pthread_mutex_unlock (&s_lock);
}

int
pyi_py_loan_setup (void)
{
    static bool done = false;
    if (done)
        return 0;
    PyObject *stop = PyCFunction_New (&s_stop_def, NULL);
    if (stop == NULL)
        return -1;
    PyObject *atexit = PyImport_ImportModule ("atexit");
    PyObject *rc = atexit ? PyObject_CallMethod (atexit, "register", "O", stop) : NULL;
    Py_XDECREF (atexit);
    Py_DECREF (stop);
    if (rc == NULL)
        return -1;
    Py_DECREF (rc);
    if (pthread_atfork (s_before_fork, s_after_fork_parent, s_after_fork_child) != 0) {
        PyErr_SetString (PyExc_RuntimeError, "pyisolate: pthread_atfork failed");
        return -1;
    }
    done = true;
    return 0;
}
