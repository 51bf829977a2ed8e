/*  pyi_rundir: the host's private runtime directory, which holds the
    broker's ipc:// socket and whose name is the host's session id.
    Internal to libpyisolate (broker/).
*/
#ifndef PYI_RUNDIR_H_INCLUDED
#define PYI_RUNDIR_H_INCLUDED

#include <stddef.h>

/*  Make this host's runtime directory (mode 0700) under
    <base>/pyisolate-<uid>/, where base is $PYI_RUNTIME_DIR, else
    $XDG_RUNTIME_DIR, else /tmp, and remove the directories of hosts that
    are gone (and their shared memory regions, and the regions of any
    host that is gone). The directory stays locked (flock on <dir>/lock,
    through *lock_fd) while this host lives: a directory whose lock can
    be taken belongs to a dead host. 0, or -1 with pyi_last_error set. */
int pyi_rundir_create (char *path, size_t size, int *lock_fd);

/*  Remove the directory and everything in it, then release the lock. */
void pyi_rundir_remove (const char *path, int *lock_fd);

#endif
