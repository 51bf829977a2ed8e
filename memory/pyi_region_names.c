/*  pyi_region: regions by name alone, without mapping their data: the
    grammar of sessions and names, and what a host does to regions it
    does not map (discard, sweep, remove_session, remove_orphans). The
    mapped regions and their cache are in pyi_region.c; the lock protocol
    both follow is described there and in docs/tensors.md.
*/
#include "pyi_region_internal.h"
#include "pyi_library_internal.h"
#include <ctype.h>
#include <dirent.h>
#include <pthread.h>
#include <sys/random.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* -- this process's session ------------------------------------------------ */

static pthread_mutex_t s_session_lock = PTHREAD_MUTEX_INITIALIZER;
static char s_session [MAX_SESSION + 1];
static pthread_once_t s_session_once = PTHREAD_ONCE_INIT;

/*  fork () while another thread holds the lock would leave the child's
    copy locked forever: hold it across fork. */
static void s_prepare (void) { pthread_mutex_lock (&s_session_lock); }
static void s_after (void) { pthread_mutex_unlock (&s_session_lock); }
static void s_init (void) { pthread_atfork (s_prepare, s_after, s_after); }

int
pyi_region_set_session (const char *session)
{
    if (!pyi_region_valid_session (session)) {
        pyi_set_error ("not a session id (<pid>-<hex>): %.64s", session ? session : "(null)");
        return -1;
    }
    pthread_once (&s_session_once, s_init);
    pthread_mutex_lock (&s_session_lock);
    snprintf (s_session, sizeof (s_session), "%s", session);
    pthread_mutex_unlock (&s_session_lock);
    return 0;
}

/*  Fill s_session if it is empty; call with s_session_lock held. */
static void
s_default_session (void)
{
    if (*s_session)
        return;
    const char *env = getenv ("PYI_SESSION");
    if (pyi_region_valid_session (env)) {
        snprintf (s_session, sizeof (s_session), "%s", env);
        return;
    }
    uint32_t nonce;
    if (getrandom (&nonce, sizeof (nonce), 0) != sizeof (nonce))
        nonce = (uint32_t) getpid () ^ (uint32_t) time (NULL);
    snprintf (s_session, sizeof (s_session), "%ld-%08x", (long) getpid (), nonce);
}

void
pyi_region_session_copy (char *out)
{
    pthread_once (&s_session_once, s_init);
    pthread_mutex_lock (&s_session_lock);
    s_default_session ();
    memcpy (out, s_session, sizeof (s_session));
    pthread_mutex_unlock (&s_session_lock);
}

const char *
pyi_region_session (void)
{
    pthread_once (&s_session_once, s_init);
    pthread_mutex_lock (&s_session_lock);
    s_default_session ();
    pthread_mutex_unlock (&s_session_lock);
    return s_session;
}

/* -- names ------------------------------------------------------------------- */

/*  Skip n decimal digits (1..max); NULL if there are none or too many. */
static const char *
s_digits (const char *p, int max, int (*is) (int))
{
    int n = 0;
    while (is ((unsigned char) p [n]))
        n++;
    return n >= 1 && n <= max ? p + n : NULL;
}

/*  "<digits>-<hex>" of at most MAX_SESSION bytes; returns its end. */
static const char *
s_session_end (const char *p)
{
    const char *start = p;
    if (!(p = s_digits (p, 10, isdigit)) || *p++ != '-' || !(p = s_digits (p, 16, isxdigit)))
        return NULL;
    return p - start <= MAX_SESSION ? p : NULL;
}

bool
pyi_region_valid_session (const char *session)
{
    const char *end = session ? s_session_end (session) : NULL;
    return end && *end == 0;
}

bool
pyi_region_valid_name (const char *name)
{
    if (!name || strnlen (name, PYI_REGION_MAX_NAME + 1) > PYI_REGION_MAX_NAME
    ||  strncmp (name, "/" NAME_PREFIX, 5))
        return false;
    const char *p = s_session_end (name + 5);
    if (!p || *p++ != '-' || !(p = s_digits (p, 10, isdigit))
    ||  *p++ != '-' || !(p = s_digits (p, 20, isdigit)))
        return false;
    return *p == 0;
}

bool
pyi_region_alive (uint32_t pid)
{
    if (pid == 0 || pid > INT32_MAX || (kill ((pid_t) pid, 0) == -1 && errno == ESRCH))
        return false;
    /*  A zombie (ended, its parent has not reaped it yet) holds no mapping
        and no lock: it is gone. Its state follows the last ')' of stat. */
    char path [32], stat [128];
    snprintf (path, sizeof path, "/proc/%u/stat", pid);
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd == -1)
        return errno != ENOENT;
    ssize_t n = read (fd, stat, sizeof stat - 1);
    close (fd);
    if (n <= 0)
        return true;
    stat [n] = 0;
    const char *end = strrchr (stat, ')');
    return !(end && end [1] == ' ' && end [2] == 'Z');
}

void
pyi_region_header_consume (pyi_region_header_t *header)
{
    _Atomic uint32_t *inflight = &header->inflight;
    uint32_t value = atomic_load (inflight);
    while (value > 0 && !atomic_compare_exchange_weak (inflight, &value, value - 1))
        ;
}

int
pyi_region_discard (const char *name)
{
    if (!pyi_region_valid_name (name)) {
        pyi_set_error ("region name not of the form /pyi-<session>-<pid>-<random>: %.64s",
                       name ? name : "(null)");
        return -1;
    }
    int fd = shm_open (name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd == -1) {
        pyi_set_error ("unknown region %s: %s", name, strerror (errno));
        return -1;
    }
    struct stat st;
    pyi_region_header_t *header = MAP_FAILED;
    if (fstat (fd, &st) == 0 && st.st_size >= PYI_REGION_HEADER)
        header = (pyi_region_header_t *) mmap (NULL, PYI_REGION_HEADER,
                                               PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (header == MAP_FAILED || header->magic != REGION_MAGIC) {
        if (header != MAP_FAILED)
            munmap (header, PYI_REGION_HEADER);
        close (fd);
        pyi_set_error ("%s is not a valid region", name);
        return -1;
    }
    pyi_region_header_consume (header);
    /*  LOCK_EX: nobody maps it, and nobody can start to while we hold it. */
    if (flock (fd, LOCK_EX | LOCK_NB) == 0 && atomic_load (&header->inflight) == 0
    &&  (header->kind != KIND_CUDA || !pyi_region_alive (header->creator)))
        shm_unlink (name);
    munmap (header, PYI_REGION_HEADER);
    close (fd);
    return 0;
}

/*  Visit /dev/shm entries named pyi-<session>-<creator>-*; force removes
    them all, else only those nobody maps and no message names. */
static int
s_sweep (const char *session, pid_t creator, bool force)
{
    char prefix [PYI_REGION_MAX_NAME + 1];
    if (!session)
        session = pyi_region_session ();
    if (!pyi_region_valid_session (session)) {
        pyi_set_error ("not a session id (<pid>-<hex>): %.64s", session);
        return -1;
    }
    if (creator > 0)
        snprintf (prefix, sizeof (prefix), NAME_PREFIX "%s-%ld-", session, (long) creator);
    else
        snprintf (prefix, sizeof (prefix), NAME_PREFIX "%s-", session);
    size_t length = strlen (prefix);
    DIR *dir = opendir (SHM_DIR);
    if (!dir) {
        pyi_set_error ("cannot list " SHM_DIR ": %s", strerror (errno));
        return -1;
    }
    int removed = 0;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        char name [PYI_REGION_MAX_NAME + 2];
        if (strncmp (entry->d_name, prefix, length)
        ||  snprintf (name, sizeof (name), "/%s", entry->d_name) >= (int) sizeof (name)
        ||  !pyi_region_valid_name (name))
            continue;
        if (force) {
            removed += shm_unlink (name) == 0;
            continue;
        }
        int fd = shm_open (name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
        if (fd == -1)
            continue;
        struct stat st;
        if (flock (fd, LOCK_EX | LOCK_NB) == 0 && fstat (fd, &st) == 0
        &&  st.st_size >= PYI_REGION_HEADER) {
            /*  Size 0: a creator between shm_open and its lock; skip. */
            pyi_region_header_t *header = (pyi_region_header_t *) mmap (
                NULL, PYI_REGION_HEADER, PROT_READ, MAP_SHARED, fd, 0);
            if (header != MAP_FAILED) {
                bool idle = header->magic != REGION_MAGIC
                         || (atomic_load (&header->inflight) == 0
                             && (header->kind != KIND_CUDA || !pyi_region_alive (header->creator)));
                munmap (header, PYI_REGION_HEADER);
                if (idle)
                    removed += shm_unlink (name) == 0;
            }
        }
        close (fd);
    }
    closedir (dir);
    return removed;
}

int
pyi_region_sweep (const char *session, pid_t creator)
{
    return s_sweep (session, creator, false);
}

int
pyi_region_remove_session (const char *session)
{
    return s_sweep (session, 0, true);
}

int
pyi_region_remove_orphans (void)
{
    DIR *dir = opendir (SHM_DIR);
    if (!dir)
        return 0;
    int removed = 0;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        char name [PYI_REGION_MAX_NAME + 2];
        if (strncmp (entry->d_name, NAME_PREFIX, strlen (NAME_PREFIX))
        ||  snprintf (name, sizeof (name), "/%s", entry->d_name) >= (int) sizeof (name)
        ||  !pyi_region_valid_name (name))
            continue;
        long pid = strtol (entry->d_name + strlen (NAME_PREFIX), NULL, 10);
        if (pid > 0 && pid <= UINT32_MAX && !pyi_region_alive ((uint32_t) pid))
            removed += shm_unlink (name) == 0;
    }
    closedir (dir);
    return removed;
}
