/*  pyi_supervisor: spawned processes, their pidfds, reaping and killing. */
#include "pyi_supervisor.h"
#include "pyi_library_internal.h"
#include "pyisolate/pyi_region.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ENDPOINT_TEXT 256           /* an ipc:// endpoint, with its NUL */
#define SESSION_TEXT 64             /* a session id "<pid>-<hex>", with its NUL */
#define VARIABLE_TEXT 300           /* one "NAME=value" of the child's environment */
#define NUMBER_TEXT 64              /* one "NAME=<number or token>" */

extern char **environ;

typedef struct {
    pid_t pid;
    int pidfd;                      /* -1: polled with waitpid instead */
} s_proc_t;

struct _pyi_supervisor_t {
    char endpoint [ENDPOINT_TEXT];  /* PYI_ENDPOINT of the children */
    char session [SESSION_TEXT];    /* PYI_SESSION of the children */
    s_proc_t procs [PYI_SUPERVISOR_MAX];   /* not yet reaped, in no order */
    size_t nprocs;
};

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

/*  posix_spawn argv with envp (NULL: this process's environment) plus
    the extra "NAME=value" strings in extra (NULL-terminated; they replace
    variables of the same name), set up as pyi_supervisor_spawn says. */
static pid_t
s_spawn (const char *const argv[], const char *const envp[],
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

/*  A pidfd for pid (Linux 5.3+), or -1 if the kernel has none. */
static int
s_pidfd (pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int) syscall (SYS_pidfd_open, pid, 0);
#else
    return -1;
#endif
}

/*  Describe a wait status as text and return it as an exit code, or
    -signal number. */
static int
s_describe (int wstatus, char *text, size_t size)
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

pyi_supervisor_t *
pyi_supervisor_new (const char *endpoint, const char *session)
{
    pyi_supervisor_t *self = (pyi_supervisor_t *) calloc (1, sizeof (pyi_supervisor_t));
    if (!self)
        return NULL;
    snprintf (self->endpoint, sizeof (self->endpoint), "%s", endpoint);
    snprintf (self->session, sizeof (self->session), "%s", session);
    return self;
}

void
pyi_supervisor_destroy (pyi_supervisor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_supervisor_t *self = *self_p;
    for (size_t i = 0; i < self->nprocs; i++)
        if (self->procs [i].pidfd != -1)
            close (self->procs [i].pidfd);
    free (self);
    *self_p = NULL;
}

pid_t
pyi_supervisor_spawn (pyi_supervisor_t *self, const char *service, const char *token,
                      const char *const argv[], const char *const envp[],
                      int out_fd, int err_fd)
{
    if (self->nprocs >= PYI_SUPERVISOR_MAX) {
        pyi_set_error ("too many worker processes");
        return -1;
    }
    char endpoint [VARIABLE_TEXT], name [VARIABLE_TEXT], session [VARIABLE_TEXT];
    char secret [NUMBER_TEXT], parent [NUMBER_TEXT];
    snprintf (endpoint, sizeof (endpoint), "PYI_ENDPOINT=%s", self->endpoint);
    snprintf (name, sizeof (name), "PYI_SERVICE=%s", service);
    snprintf (secret, sizeof (secret), "PYI_TOKEN=%s", token);
    snprintf (parent, sizeof (parent), "PYI_PARENT_PID=%ld", (long) getpid ());
    snprintf (session, sizeof (session), "PYI_SESSION=%s", self->session);
    const char *extra [] = { endpoint, name, secret, parent, session, NULL };
    pid_t pid = s_spawn (argv, envp, extra, out_fd, err_fd);
    if (pid == -1)
        return -1;
    s_proc_t *proc = &self->procs [self->nprocs++];
    proc->pid = pid;
    proc->pidfd = s_pidfd (pid);
    return pid;
}

size_t
pyi_supervisor_size (pyi_supervisor_t *self)
{
    return self->nprocs;
}

/*  Reap the process at index if it has ended; true when it did. */
static bool
s_reap (pyi_supervisor_t *self, size_t index, int options, pyi_exit_t *ended)
{
    s_proc_t *proc = &self->procs [index];
    int wstatus = 0;
    pid_t rc = waitpid (proc->pid, &wstatus, options);
    if (rc == 0 || (rc == -1 && errno == EINTR))
        return false;
    ended->pid = proc->pid;
    if (rc == -1) {
        snprintf (ended->text, sizeof (ended->text), "exit status unknown (reaped elsewhere)");
        ended->status = 0;
    }
    else
        ended->status = s_describe (wstatus, ended->text, sizeof (ended->text));
    if (proc->pidfd != -1)
        close (proc->pidfd);
    self->procs [index] = self->procs [--self->nprocs];
    /*  Regions the process made that nobody maps any more go with it. */
    pyi_region_sweep (self->session, ended->pid);
    return true;
}

bool
pyi_supervisor_reap (pyi_supervisor_t *self, bool wait, pyi_exit_t *ended)
{
    for (size_t i = 0; i < self->nprocs; i++)
        if (s_reap (self, i, wait ? 0 : WNOHANG, ended))
            return true;
    return false;
}

void
pyi_supervisor_kill (pyi_supervisor_t *self, pid_t pid)
{
    for (size_t i = 0; i < self->nprocs; i++)
        if (self->procs [i].pid == pid) {
            kill (pid, SIGKILL);
            return;
        }
}

void
pyi_supervisor_kill_all (pyi_supervisor_t *self)
{
    for (size_t i = 0; i < self->nprocs; i++)
        kill (self->procs [i].pid, SIGKILL);
}

size_t
pyi_supervisor_pollfds (pyi_supervisor_t *self, struct pollfd *fds, bool *unwatched)
{
    size_t n = 0;
    *unwatched = false;
    for (size_t i = 0; i < self->nprocs; i++) {
        if (self->procs [i].pidfd == -1)
            *unwatched = true;
        else
            fds [n++] = (struct pollfd) { self->procs [i].pidfd, POLLIN, 0 };
    }
    return n;
}
