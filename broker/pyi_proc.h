/*  pyi_proc: the host's private runtime directory and worker processes.
    Internal to libpyisolate. */
#ifndef PYI_PROC_H_INCLUDED
#define PYI_PROC_H_INCLUDED

#include <stddef.h>
#include <sys/types.h>

/*  Make this host's runtime directory (mode 0700) under
    <base>/pyisolate-<uid>/, where base is $PYI_RUNTIME_DIR, else
    $XDG_RUNTIME_DIR, else /tmp, and remove the directories of hosts that
    are gone. The directory stays locked (flock on <dir>/lock, through
    *lock_fd) while this host lives: a directory whose lock can be taken
    belongs to a dead host. 0, or -1 with pyi_last_error set. */
int pyi_rundir_create (char *path, size_t size, int *lock_fd);

/*  Remove the directory and everything in it, then release the lock. */
void pyi_rundir_remove (const char *path, int *lock_fd);

/*  posix_spawn argv with envp (NULL: this process's environment) plus the
    extra "NAME=value" strings in extra (NULL-terminated; they replace
    variables of the same name). The child gets /dev/null as stdin,
    out_fd / err_fd (unless -1) as stdout / stderr, no other descriptor,
    default signal
    dispositions, an empty signal mask and its own process group (so a
    terminal's Ctrl-C reaches only the host). Returns the pid, or -1 with
    pyi_last_error set. */
pid_t pyi_proc_spawn (const char *const argv[], const char *const envp[],
                      const char *const extra[], int out_fd, int err_fd);

/*  A pidfd for pid (Linux 5.3+), or -1 if the kernel has none. */
int pyi_proc_pidfd (pid_t pid);

/*  Describe a wait status as text ("exited with status 3", "killed by
    signal 9 (Killed)") and return the status as exit code, or -signal. */
int pyi_proc_describe (int wstatus, char *text, size_t size);

#endif
