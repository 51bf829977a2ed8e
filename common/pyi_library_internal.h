/*  pyi_library, internal half: library init and setting the thread's last
    error (pyi_last_error, in include/pyisolate/pyi_library.h, reads it).
    Every part of libpyisolate uses these; not exported. */
#ifndef PYI_LIBRARY_INTERNAL_H_INCLUDED
#define PYI_LIBRARY_INTERNAL_H_INCLUDED

#include "pyisolate/pyi_library.h"

/*  Bytes of the last error's text, its terminating NUL included: longer
    texts are cut. */
#define PYI_ERROR_SIZE 512

/*  Initialise czmq once per process, without its signal handlers (in a
    Python host Ctrl-C belongs to Python) and with its log on stderr.
    Every constructor that makes a socket calls it first. */
void pyi_init (void);

/*  Set this thread's last error (printf-style). */
void pyi_set_error (const char *format, ...) __attribute__ ((format (printf, 1, 2)));

#endif
