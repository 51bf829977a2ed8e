/*  pyi_library: what every class of libpyisolate shares, owned by none of
    them: the version, the export macro, and the thread's last error.

    Every public header includes this one; pyisolate.h includes them all.
*/
#ifndef PYI_LIBRARY_H_INCLUDED
#define PYI_LIBRARY_H_INCLUDED

#ifdef __cplusplus
extern "C" {
#endif

#define PYI_VERSION_MAJOR 0
#define PYI_VERSION_MINOR 1
#define PYI_VERSION_PATCH 0

/*  Marks the functions libpyisolate exports; everything else in it is
    hidden (-fvisibility=hidden). */
#if defined(PYI_BUILDING)
#   define PYI_EXPORT __attribute__ ((visibility ("default")))
#else
#   define PYI_EXPORT
#endif

/*  Errors: a function that fails returns NULL or -1 and leaves a text
    here saying why. */

/*  Text of the last error of a pyi_ call on this thread (borrowed). */
PYI_EXPORT const char *pyi_last_error (void);

/*  The versions of libpyisolate and of the libraries it runs with, as one
    line: "pyisolate 0.1.0, libzmq 4.3.4, czmq 4.2.1, msgpack-c 4.0.0"
    (libzmq's is the one loaded; czmq's and msgpack-c's the ones built
    against). Static storage. */
PYI_EXPORT const char *pyi_library_versions (void);

#ifdef __cplusplus
}
#endif

#endif
