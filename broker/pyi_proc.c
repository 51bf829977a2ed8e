/*  pyi_proc: runtime directory, process spawning, exit status text. */
#include "pyi_proc.h"
#include "pyi_library_internal.h"
#include "pyisolate/pyi_region.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int
s_remove_entry (const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (flag == FTW_DP ? rmdir : unlink) (path);
    return 0;
}

static void
s_remove_tree (const char *path)
{
    nftw (path, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/*  A host directory is stale when its lock can be taken. A directory with
    no lock file is stale only when the pid in its name is gone (it may be
    a host in the middle of creating it). */
static bool
s_is_stale (const char *dir, const char *name)
{
    char lock [4096];
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
            char path [4096];
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
    char base [4096];
    snprintf (base, sizeof (base), "%s/pyisolate-%u", root, (unsigned) getuid ());
    if (mkdir (base, 0700) && errno != EEXIST) {
        pyi_set_error ("cannot create %s: %s", base, strerror (errno));
        return -1;
    }
    struct stat st;
    if (lstat (base, &st) || !S_ISDIR (st.st_mode) || st.st_uid != getuid ()) {
        pyi_set_error ("%s is not a directory owned by this user", base);
        return -1;
    }
    if ((st.st_mode & 0777) != 0700 && chmod (base, 0700)) {
        pyi_set_error ("cannot make %s private: %s", base, strerror (errno));
        return -1;
    }
    s_remove_stale (base);
    pyi_region_remove_orphans ();

    uint32_t nonce;
    if (getrandom (&nonce, sizeof (nonce), 0) != sizeof (nonce))
        nonce = (uint32_t) getpid () ^ (uint32_t) time (NULL);
    int length = snprintf (path, size, "%s/%ld-%08x", base, (long) getpid (), nonce);
    /*  ipc:// paths must fit sun_path (108 bytes) with "/broker" added. */
    if (length < 0 || (size_t) length >= size || length > 90) {
        pyi_set_error ("runtime directory path too long: %s", path);
        return -1;
    }
    if (mkdir (path, 0700)) {
        pyi_set_error ("cannot create %s: %s", path, strerror (errno));
        return -1;
    }
    char lock [4096];
    snprintf (lock, sizeof (lock), "%s/lock", path);
    *lock_fd = open (lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
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

static bool
s_overridden (const char *var, const char *const extra[])
{
    const char *eq = strchr (var, '=');
    size_t name = eq ? (size_t) (eq - var) : strlen (var);
    for (size_t i = 0; extra && extra [i]; i++)
        if (strncmp (extra [i], var, name) == 0 && extra [i][name] == '=')
            return true;
    return false;
}

pid_t
pyi_proc_spawn (const char *const argv[], const char *const envp[],
                const char *const extra[], int out_fd, int err_fd)
{
    if (!argv || !argv [0]) {
        pyi_set_error ("spawn: empty argv");
        return -1;
    }
    const char *const *source = envp ? envp : (const char *const *) environ;
    size_t count = 0, extras = 0;
    while (source [count])
        count++;
    while (extra && extra [extras])
        extras++;
    const char **env = (const char **) malloc ((count + extras + 1) * sizeof (char *));
    if (!env) {
        pyi_set_error ("spawn: out of memory");
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < count; i++)
        if (!s_overridden (source [i], extra))
            env [n++] = source [i];
    for (size_t i = 0; i < extras; i++)
        env [n++] = extra [i];
    env [n] = NULL;

    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init (&actions);
    posix_spawnattr_init (&attr);
    posix_spawn_file_actions_addopen (&actions, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd != -1)
        posix_spawn_file_actions_adddup2 (&actions, out_fd, 1);
    if (err_fd != -1)
        posix_spawn_file_actions_adddup2 (&actions, err_fd, 2);
    /*  Nothing else of the host's reaches the child, CLOEXEC or not. */
    posix_spawn_file_actions_addclosefrom_np (&actions, 3);
    sigset_t none, all;
    sigemptyset (&none);
    sigfillset (&all);
    posix_spawnattr_setsigmask (&attr, &none);
    posix_spawnattr_setsigdefault (&attr, &all);
    posix_spawnattr_setpgroup (&attr, 0);
    posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
                                   | POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int rc = (strchr (argv [0], '/') ? posix_spawn : posix_spawnp)
        (&pid, argv [0], &actions, &attr, (char *const *) argv, (char *const *) env);
    posix_spawn_file_actions_destroy (&actions);
    posix_spawnattr_destroy (&attr);
    free (env);
    if (rc) {
        pyi_set_error ("cannot start %s: %s", argv [0], strerror (rc));
        return -1;
    }
    return pid;
}

int
pyi_proc_pidfd (pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int) syscall (SYS_pidfd_open, pid, 0);
#else
    return -1;
#endif
}

int
pyi_proc_describe (int wstatus, char *text, size_t size)
{
    if (WIFSIGNALED (wstatus)) {
        int sig = WTERMSIG (wstatus);
        snprintf (text, size, "killed by signal %d (%s)", sig, strsignal (sig));
        return -sig;
    }
    int code = WIFEXITED (wstatus) ? WEXITSTATUS (wstatus) : 0;
    snprintf (text, size, "exited with status %d", code);
    return code;
}
