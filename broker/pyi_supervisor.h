/*  pyi_supervisor: the worker processes a broker spawned. It starts them
    (posix_spawn, with the PYI_ variables that let them find the broker),
    watches them by pidfd, reaps them, removes the shared memory regions
    they made that nobody maps any more, and kills them: a hung worker
    when the router gives up on it, the rest at the end of the grace
    period when the broker stops. It owns no socket and knows nothing of
    services or tokens: the broker thread gives it those, and tells the
    router what it reaped. Internal to libpyisolate (broker/).
*/
#ifndef PYI_SUPERVISOR_H_INCLUDED
#define PYI_SUPERVISOR_H_INCLUDED

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*  Most spawned processes not yet reaped. */
#define PYI_SUPERVISOR_MAX 1024
/*  Bytes of the text that says how a process ended. */
#define PYI_EXIT_TEXT 128

typedef struct _pyi_supervisor_t pyi_supervisor_t;

/*  How a reaped process ended. */
typedef struct {
    pid_t pid;
    int status;                     /* exit code >= 0, or -signal number */
    char text [PYI_EXIT_TEXT];      /* "exited with status 3", "killed by signal 9 (Killed)" */
} pyi_exit_t;

/*  A supervisor for the broker at endpoint (its ipc:// endpoint, which
    children connect to) of session (the host's session id, which names
    the children's regions). NULL when out of memory. */
pyi_supervisor_t *pyi_supervisor_new (const char *endpoint, const char *session);

/*  Forget the processes (the broker stops them first, see
    pyi_supervisor_kill_all and pyi_supervisor_reap) and close their
    pidfds. Safe on NULL and on *self_p == NULL. */
void pyi_supervisor_destroy (pyi_supervisor_t **self_p);

/*  Start argv with envp (NULL: this process's environment) plus
    PYI_ENDPOINT, PYI_SERVICE (service), PYI_TOKEN (token),
    PYI_PARENT_PID and PYI_SESSION, over any of the same name. The child
    gets /dev/null as stdin, out_fd / err_fd (unless -1) as stdout /
    stderr, no other descriptor, default signal dispositions, an empty
    signal mask and its own process group (so a terminal's Ctrl-C reaches
    only the host). Returns the pid, or -1 with pyi_last_error set (also
    when PYI_SUPERVISOR_MAX processes are not yet reaped). */
pid_t pyi_supervisor_spawn (pyi_supervisor_t *self, const char *service, const char *token,
                            const char *const argv[], const char *const envp[],
                            int out_fd, int err_fd);

/*  Processes not yet reaped. */
size_t pyi_supervisor_size (pyi_supervisor_t *self);

/*  Reap one process that ended (wait: block until the next one in turn
    ends): fill *ended, remove the regions it made that no process maps and
    no message names, and return true; false when none ended. */
bool pyi_supervisor_reap (pyi_supervisor_t *self, bool wait, pyi_exit_t *ended);

/*  SIGKILL pid if it is a process of ours not yet reaped. */
void pyi_supervisor_kill (pyi_supervisor_t *self, pid_t pid);

/*  SIGKILL every process not yet reaped. */
void pyi_supervisor_kill_all (pyi_supervisor_t *self);

/*  For the broker's poll: one entry per process with a pidfd (readable
    when it ended) written at fds (room for PYI_SUPERVISOR_MAX); returns
    how many. *unwatched is set when some process has no pidfd (kernels
    before 5.3): then the caller must reap now and then. */
size_t pyi_supervisor_pollfds (pyi_supervisor_t *self, struct pollfd *fds, bool *unwatched);

#endif
