/*  pyi_library: library init and the thread's last error. Owned by no
    class: every part of libpyisolate uses them. */
#include "pyi_library_internal.h"
#include "pyisolate/pyi_library.h"
#include <czmq.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#define VERSIONS_SIZE 128    /* pyi_library_versions' line */

static __thread char s_last_error [PYI_ERROR_SIZE];

void
pyi_set_error (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (s_last_error, sizeof (s_last_error), format, args);
    va_end (args);
}

const char *
pyi_last_error (void)
{
    return s_last_error;
}

const char *
pyi_library_versions (void)
{
    static char text [VERSIONS_SIZE];
    int major, minor, patch;
    zmq_version (&major, &minor, &patch);
    snprintf (text, sizeof (text), "pyisolate %d.%d.%d, libzmq %d.%d.%d, czmq %d.%d.%d, "
              "msgpack-c %s", PYI_VERSION_MAJOR, PYI_VERSION_MINOR, PYI_VERSION_PATCH,
              major, minor, patch, CZMQ_VERSION_MAJOR, CZMQ_VERSION_MINOR,
              CZMQ_VERSION_PATCH, msgpack_version ());
    return text;
}

static void
s_init_once (void)
{
    /*  czmq must not take over SIGINT/SIGTERM: in a Python host Ctrl-C
        belongs to Python. Must run before czmq initialises. */
    zsys_handler_set (NULL);
    /*  czmq's own messages ("dangling socket") belong on stderr, never in
        the application's output. */
    zsys_set_logstream (stderr);
    zsys_init ();
}

void
pyi_init (void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once (&once, s_init_once);
}
