/*  testutil.h: small helpers shared by the C tests.

    CHECK (expr) prints file:line and the expression and exits non-zero
    when expr is false; unlike assert () it is never compiled out. The
    other helpers measure time, count this process's threads and file
    descriptors, and give each test its own PYI_RUNTIME_DIR.
*/
#ifndef PYI_TESTUTIL_H_INCLUDED
#define PYI_TESTUTIL_H_INCLUDED

#include <errno.h>
#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <pyisolate/pyisolate.h>

/*  Called, when set, before a failing test exits (to kill helper
    processes that would otherwise keep ctest's output pipe open). */
static void (*t_on_failure) (void);
static void s_rundir_cleanup (void);

static void s_fail (const char *file, int line, const char *fmt, ...)
    __attribute__ ((noreturn, format (printf, 3, 4)));
static void s_fail (const char *file, int line, const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "%s:%d: FAILED: ", file, line);
    vfprintf (stderr, fmt, args);
    fprintf (stderr, "\n");
    va_end (args);
    fflush (stderr);
    if (t_on_failure)
        t_on_failure ();
    s_rundir_cleanup ();
    _exit (1);
}

#define CHECK(expr) \
    do { if (!(expr)) s_fail (__FILE__, __LINE__, "CHECK (%s)", #expr); } while (0)

/*  CHECK with an explanation: CHECK_MSG (expr, "format", args...). */
#define CHECK_MSG(expr, fmt, ...) \
    do { if (!(expr)) s_fail (__FILE__, __LINE__, "CHECK (%s): " fmt, #expr, ##__VA_ARGS__); \
    } while (0)

#define CHECK_INT(a, b) \
    do { long long _a = (long long) (a), _b = (long long) (b); \
         if (_a != _b) s_fail (__FILE__, __LINE__, "CHECK_INT (%s == %s): %lld != %lld", \
                               #a, #b, _a, _b); } while (0)

#define CHECK_U64(a, b) \
    do { uint64_t _a = (uint64_t) (a), _b = (uint64_t) (b); \
         if (_a != _b) s_fail (__FILE__, __LINE__, "CHECK_U64 (%s == %s): %" PRIu64 " != %" PRIu64, \
                               #a, #b, _a, _b); } while (0)

#define CHECK_STR(a, b) \
    do { const char *_a = (a), *_b = (b); \
         if (!_a || !_b || strcmp (_a, _b) != 0) \
             s_fail (__FILE__, __LINE__, "CHECK_STR (%s == %s): \"%s\" != \"%s\"", \
                     #a, #b, _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)

/*  A message expected from a client or worker: not NULL, command cmd. */
#define CHECK_CMD(msg, cmd) \
    do { const pyi_msg_t *_m = (msg); \
         if (!_m) s_fail (__FILE__, __LINE__, "expected %s, got nothing", pyi_command_name (cmd)); \
         if ((int) pyi_msg_command (_m) != (int) (cmd)) \
             s_fail (__FILE__, __LINE__, "expected %s, got %s (code %d %s, text \"%s\")", \
                     pyi_command_name (cmd), pyi_command_name (pyi_msg_command (_m)), \
                     pyi_msg_code (_m), pyi_error_name (pyi_msg_code (_m)), \
                     pyi_msg_text (_m)); } while (0)

#define TEST_BEGIN(name) \
    do { fprintf (stderr, " * %s\n", name); } while (0)

/*  Milliseconds on the monotonic clock. */
static inline int64_t
t_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void
t_sleep_ms (int ms)
{
    struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
    while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
        ;
}

/*  Entries in a /proc directory, less "." and "..". */
static inline int
t_count_dir (const char *path)
{
    DIR *dir = opendir (path);
    if (!dir)
        return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir (dir)))
        if (strcmp (entry->d_name, ".") && strcmp (entry->d_name, ".."))
            count++;
    closedir (dir);
    return count - (strcmp (path, "/proc/self/fd") == 0);   /* the DIR's own fd */
}

static inline int t_count_threads (void) { return t_count_dir ("/proc/self/task"); }
static inline int t_count_fds (void) { return t_count_dir ("/proc/self/fd"); }

/*  Entries in /dev/shm of a region session (NULL: this process's), each
    printed; and lines of /proc/self/maps that map one of ours. */
static inline int
t_shm_leftovers (const char *session)
{
    char prefix [128];
    snprintf (prefix, sizeof prefix, "pyi-%s-", session ? session : pyi_region_session ());
    DIR *dir = opendir ("/dev/shm");
    CHECK (dir);
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir (dir)))
        if (strncmp (entry->d_name, prefix, strlen (prefix)) == 0) {
            fprintf (stderr, "   left over: /dev/shm/%s\n", entry->d_name);
            count++;
        }
    closedir (dir);
    return count;
}

static inline int
t_shm_mapped (void)
{
    FILE *maps = fopen ("/proc/self/maps", "r");
    CHECK (maps);
    char line [1024];
    int count = 0;
    while (fgets (line, sizeof line, maps))
        count += strstr (line, "/dev/shm/pyi-") != NULL;
    fclose (maps);
    return count;
}

/*  Print this process's open file descriptors (for a failing fd check). */
static inline void
t_dump_fds (void)
{
    DIR *dir = opendir ("/proc/self/fd");
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (entry->d_name[0] == '.')
            continue;
        char path [300], target [512];
        snprintf (path, sizeof path, "/proc/self/fd/%s", entry->d_name);
        ssize_t n = readlink (path, target, sizeof target - 1);
        target [n > 0 ? n : 0] = 0;
        fprintf (stderr, "   fd %s -> %s\n", entry->d_name, target);
    }
    closedir (dir);
}

/*  The fd count once libzmq's reaper thread has closed what was closed
    (zmq_close returns before a socket's descriptors are gone): wait until
    the count has not changed for 300 ms. */
static inline int
t_settled_fds (void)
{
    int count = t_count_fds ();
    int64_t stable_since = t_now_ms ();
    int64_t end = stable_since + 5000;
    while (t_now_ms () - stable_since < 300 && t_now_ms () < end) {
        t_sleep_ms (10);
        int now = t_count_fds ();
        if (now != count) {
            count = now;
            stable_since = t_now_ms ();
        }
    }
    return count;
}

/*  Wait up to ms for the thread count to come back to want (a thread that
    was joined is gone at once, but be generous with the kernel). */
static inline int
t_wait_threads (int want, int ms)
{
    int64_t end = t_now_ms () + ms;
    int count = t_count_threads ();
    while (count != want && t_now_ms () < end) {
        t_sleep_ms (5);
        count = t_count_threads ();
    }
    return count;
}

static inline bool
t_is_dir (const char *path)
{
    struct stat st;
    return stat (path, &st) == 0 && S_ISDIR (st.st_mode);
}

static int
s_rm_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove (path);
    return 0;
}

static inline void
t_rm_tree (const char *path)
{
    nftw (path, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*  Each test program gets its own fresh runtime base directory, so tests
    run in parallel don't see each other's (or a real host's) runtime
    directories. Returns the base (static storage). */
static char s_rundir_base [256];

static void
s_rundir_cleanup (void)
{
    if (*s_rundir_base)
        t_rm_tree (s_rundir_base);
}

static inline const char *
t_setup_rundir (void)
{
    snprintf (s_rundir_base, sizeof s_rundir_base, "/tmp/pyi-test-XXXXXX");
    if (!mkdtemp (s_rundir_base)) {
        perror ("mkdtemp");
        exit (1);
    }
    setenv ("PYI_RUNTIME_DIR", s_rundir_base, 1);
    atexit (s_rundir_cleanup);
    return s_rundir_base;
}

/*  A body of one frame holding a copy of a C string (without its NUL). */
static inline pyi_msg_t *
t_body_str (const char *text)
{
    pyi_msg_t *body = pyi_msg_new (PYI_REPLY);
    CHECK (body);
    CHECK_INT (pyi_msg_append (body, text, strlen (text)), 0);
    return body;
}

/*  True when frame index of msg holds exactly text. */
static inline bool
t_frame_is (const pyi_msg_t *msg, size_t index, const char *text)
{
    return index < pyi_msg_frames (msg)
        && pyi_msg_frame_size (msg, index) == strlen (text)
        && memcmp (pyi_msg_frame_data (msg, index), text, strlen (text)) == 0;
}

/*  Copy frame index as a C string into buf. */
static inline const char *
t_frame_str (const pyi_msg_t *msg, size_t index, char *buf, size_t size)
{
    size_t n = index < pyi_msg_frames (msg) ? pyi_msg_frame_size (msg, index) : 0;
    if (n >= size)
        n = size - 1;
    if (n)
        memcpy (buf, pyi_msg_frame_data (msg, index), n);
    buf [n] = 0;
    return buf;
}

/*  Wait up to ms until the broker counts want registered workers (a
    destroyed worker's DISCONNECT arrives asynchronously). Returns the
    count last seen. */
static inline uint64_t
t_wait_workers (pyi_broker_t *broker, uint64_t want, int ms)
{
    int64_t end = t_now_ms () + ms;
    pyi_broker_stats_t stats;
    while (true) {
        CHECK_INT (pyi_broker_stats (broker, &stats), 0);
        if (stats.workers == want || t_now_ms () >= end)
            return stats.workers;
        t_sleep_ms (2);
    }
}

/*  Wait for the next broker event of the given type for service (NULL:
    any), skipping others, within ms. 0 when found, -1 otherwise. */
static inline int
t_wait_event (pyi_broker_t *broker, int type, const char *service, pyi_event_t *event, int ms)
{
    int64_t end = t_now_ms () + ms;
    while (true) {
        int64_t left = end - t_now_ms ();
        if (left < 0)
            return -1;
        if (pyi_broker_event (broker, event, (int) left) == 0
        &&  event->type == type && (!service || strcmp (event->service, service) == 0))
            return 0;
    }
}

/*  Throw away the events waiting now. */
static inline void
t_drain_events (pyi_broker_t *broker)
{
    pyi_event_t event;
    while (pyi_broker_event (broker, &event, 0) == 0)
        ;
}

/*  A tiny msgpack writer for hand-crafted (and hostile) headers: every
    function appends raw bytes, so a test can write any encoding, declare
    lengths it does not supply, or mix types at will. */
typedef struct {
    uint8_t data [1 << 16];
    size_t size;
} mp_t;

static inline void
mp_byte (mp_t *mp, uint8_t byte)
{
    if (mp->size < sizeof mp->data)
        mp->data [mp->size++] = byte;
}

static inline void
mp_bytes (mp_t *mp, const void *data, size_t size)
{
    for (size_t i = 0; i < size; i++)
        mp_byte (mp, ((const uint8_t *) data) [i]);
}

/*  Big-endian integer of width bytes. */
static inline void
mp_be (mp_t *mp, uint64_t value, int width)
{
    for (int i = width - 1; i >= 0; i--)
        mp_byte (mp, (uint8_t) (value >> (8 * i)));
}

/*  Smallest unsigned encoding. */
static inline void
mp_uint (mp_t *mp, uint64_t value)
{
    if (value <= 0x7f)
        mp_byte (mp, (uint8_t) value);
    else
    if (value <= 0xff) { mp_byte (mp, 0xcc); mp_be (mp, value, 1); }
    else
    if (value <= 0xffff) { mp_byte (mp, 0xcd); mp_be (mp, value, 2); }
    else
    if (value <= 0xffffffffULL) { mp_byte (mp, 0xce); mp_be (mp, value, 4); }
    else { mp_byte (mp, 0xcf); mp_be (mp, value, 8); }
}

/*  Array header declaring count elements (smallest encoding). */
static inline void
mp_array (mp_t *mp, uint64_t count)
{
    if (count <= 15)
        mp_byte (mp, (uint8_t) (0x90 | count));
    else
    if (count <= 0xffff) { mp_byte (mp, 0xdc); mp_be (mp, count, 2); }
    else { mp_byte (mp, 0xdd); mp_be (mp, count, 4); }
}

/*  String header declaring size bytes (smallest encoding), no body. */
static inline void
mp_str_header (mp_t *mp, uint64_t size)
{
    if (size <= 31)
        mp_byte (mp, (uint8_t) (0xa0 | size));
    else
    if (size <= 0xff) { mp_byte (mp, 0xd9); mp_be (mp, size, 1); }
    else
    if (size <= 0xffff) { mp_byte (mp, 0xda); mp_be (mp, size, 2); }
    else { mp_byte (mp, 0xdb); mp_be (mp, size, 4); }
}

static inline void
mp_strn (mp_t *mp, const char *data, size_t size)
{
    mp_str_header (mp, size);
    mp_bytes (mp, data, size);
}

static inline void
mp_str (mp_t *mp, const char *text)
{
    mp_strn (mp, text, strlen (text));
}

/*  A string of size copies of byte c. */
static inline void
mp_str_fill (mp_t *mp, char c, size_t size)
{
    mp_str_header (mp, size);
    for (size_t i = 0; i < size; i++)
        mp_byte (mp, (uint8_t) c);
}

#endif
