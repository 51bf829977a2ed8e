/*  test_library: what every class shares (pyi_library): the version and
    the thread's last error.

    Guarantees checked:
    - pyisolate.h gives the version of pyi_library.h;
    - pyi_last_error () is "" in a thread where nothing failed, and holds
      the reason of the last failing call of this thread: a failure in
      one thread leaves another thread's text as it was;
    - a long reason is cut, not overflowed, and stays terminated;
    - pyi_library_versions names this library's version and the loaded
      libzmq's (zmq_version), czmq's and msgpack-c's.
*/
#include "testutil.h"
#include <pthread.h>
#include <zmq.h>

_Static_assert (PYI_VERSION_MAJOR == 0 && PYI_VERSION_MINOR >= 1, "the library's version");

static char s_seen [512];           /* what the other thread's text was */

static void *
s_other_thread (void *arg)
{
    snprintf (s_seen, sizeof s_seen, "%s", pyi_last_error ());
    /*  Fail here too: the main thread's text must not change. */
    CHECK (pyi_region_open ("/pyi-other-thread") == NULL);
    return NULL;
}

static void
test_per_thread (void)
{
    TEST_BEGIN ("the last error is per thread");
    CHECK_STR (pyi_last_error (), "");
    CHECK (pyi_region_open ("not a region") == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "not a region"), "%s", pyi_last_error ());
    char mine [512];
    snprintf (mine, sizeof mine, "%s", pyi_last_error ());
    pthread_t thread;
    CHECK_INT (pthread_create (&thread, NULL, s_other_thread, NULL), 0);
    CHECK_INT (pthread_join (thread, NULL), 0);
    CHECK_STR (s_seen, "");
    CHECK_STR (pyi_last_error (), mine);
}

static void
test_cut (void)
{
    TEST_BEGIN ("a long reason is cut and terminated");
    char endpoint [4096];
    memset (endpoint, 'x', sizeof endpoint - 1);
    memcpy (endpoint, "bogus://", 8);
    endpoint [sizeof endpoint - 1] = 0;
    CHECK (pyi_client_new (endpoint) == NULL);
    const char *text = pyi_last_error ();
    CHECK_MSG (strncmp (text, "cannot connect to bogus://xxx", 29) == 0, "%.80s", text);
    size_t length = strlen (text);
    CHECK_MSG (length >= 256 && length < 1024, "%zu bytes", length);
}

static void
test_versions (void)
{
    TEST_BEGIN ("the versions of the library and what it runs with");
    char expected [128];
    int major, minor, patch;
    zmq_version (&major, &minor, &patch);
    snprintf (expected, sizeof expected, "pyisolate %d.%d.%d, libzmq %d.%d.%d, czmq ",
              PYI_VERSION_MAJOR, PYI_VERSION_MINOR, PYI_VERSION_PATCH, major, minor, patch);
    const char *text = pyi_library_versions ();
    CHECK_MSG (strncmp (text, expected, strlen (expected)) == 0, "%s", text);
    CHECK_MSG (strstr (text, ", msgpack-c ") && text [strlen (text) - 1] != ' ', "%s", text);
}

int
main (void)
{
    test_per_thread ();
    test_cut ();
    test_versions ();
    fprintf (stderr, "test_library: OK\n");
    return 0;
}
