/*  pyi_rundir: the runtime directory, and the clean-up of dead hosts'. */
#include "pyi_rundir.h"
#include "pyi_library_internal.h"
#include "pyisolate/pyi_region.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PATH_BYTES 4096             /* a path we build, with its NUL */
#define WALK_FDS 16                 /* descriptors nftw may hold open */
#define MAX_RUNDIR 90               /* ipc:// paths must fit sun_path (108) with "/broker" */
#define PRIVATE_DIR 0700            /* mode of our directories */
#define PRIVATE_FILE 0600           /* mode of the lock file */
#define MODE_BITS 0777              /* permission bits of st_mode */

static int
s_remove_entry (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (flag == FTW_DP ? rmdir : unlink) (path);
    return 0;
}

static void
s_remove_tree (const char *path)
{
    nftw (path, s_remove_entry, WALK_FDS, FTW_DEPTH | FTW_PHYS);
}

/*  A host directory is stale when its lock can be taken. A directory with
    no lock file is stale only when the pid in its name is gone (it may be
    a host in the middle of creating it). */
static bool
s_is_stale (const char *dir, const char *name)
{
    char lock [PATH_BYTES];
    snprintf (lock, sizeof (lock), "%s/%s/lock", dir, name);
    int fd = open (lock, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd == -1) {
        long pid = strtol (name, NULL, 10);
        return pid > 0 && kill ((pid_t) pid, 0) == -1 && errno == ESRCH;
    }
    bool stale = flock (fd, LOCK_EX | LOCK_NB) == 0;
    close (fd);
    return stale;
}

static void
s_remove_stale (const char *base)
{
    DIR *dir = opendir (base);
    if (!dir)
        return;
    struct dirent *entry;
    while ((entry = readdir (dir))) {
        if (entry->d_name [0] < '0' || entry->d_name [0] > '9')
            continue;
        if (s_is_stale (base, entry->d_name)) {
            char path [PATH_BYTES];
            snprintf (path, sizeof (path), "%s/%s", base, entry->d_name);
            s_remove_tree (path);
            /*  The dead host's shared memory regions, by its session id. */
            pyi_region_remove_session (entry->d_name);
        }
    }
    closedir (dir);
}

int
pyi_rundir_create (char *path, size_t size, int *lock_fd)
{
    const char *root = getenv ("PYI_RUNTIME_DIR");
    if (!root || !*root)
        root = getenv ("XDG_RUNTIME_DIR");
    if (!root || !*root || access (root, W_OK))
        root = "/tmp";
    char base [PATH_BYTES];
    snprintf (base, sizeof (base), "%s/pyisolate-%u", root, (unsigned) getuid ());
    if (mkdir (base, PRIVATE_DIR) && errno != EEXIST) {
        pyi_set_error ("cannot create %s: %s", base, strerror (errno));
        return -1;
    }
    struct stat st;
    if (lstat (base, &st) || !S_ISDIR (st.st_mode) || st.st_uid != getuid ()) {
        pyi_set_error ("%s is not a directory owned by this user", base);
        return -1;
    }
    if ((st.st_mode & MODE_BITS) != PRIVATE_DIR && chmod (base, PRIVATE_DIR)) {
        pyi_set_error ("cannot make %s private: %s", base, strerror (errno));
        return -1;
    }
    s_remove_stale (base);
    pyi_region_remove_orphans ();

    uint32_t nonce;
    if (getrandom (&nonce, sizeof (nonce), 0) != sizeof (nonce))
        nonce = (uint32_t) getpid () ^ (uint32_t) time (NULL);
    int length = snprintf (path, size, "%s/%ld-%08x", base, (long) getpid (), nonce);
    if (length < 0 || (size_t) length >= size || length > MAX_RUNDIR) {
        pyi_set_error ("runtime directory path too long: %s", path);
        return -1;
    }
    if (mkdir (path, PRIVATE_DIR)) {
        pyi_set_error ("cannot create %s: %s", path, strerror (errno));
        return -1;
    }
    char lock [PATH_BYTES];
    snprintf (lock, sizeof (lock), "%s/lock", path);
    *lock_fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, PRIVATE_FILE);
    if (*lock_fd == -1 || flock (*lock_fd, LOCK_EX | LOCK_NB)) {
        pyi_set_error ("cannot lock %s: %s", lock, strerror (errno));
        if (*lock_fd != -1)
            close (*lock_fd);
        *lock_fd = -1;
        s_remove_tree (path);
        return -1;
    }
    return 0;
}

void
pyi_rundir_remove (const char *path, int *lock_fd)
{
    s_remove_tree (path);
    if (*lock_fd != -1)
        close (*lock_fd);
    *lock_fd = -1;
}

