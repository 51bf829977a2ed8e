/*  testchild.h: helper processes for the C tests that need another
    process: a copy of the test program itself (posix_spawn of
    /proc/self/exe with argv [1] = mode) that reads one command per line
    on its stdin and answers one line on its stdout.

    t_spawn_self starts one (extra: one more "NAME=value" for its
    environment, in place of the variable's value here, or NULL), t_ask sends a command and returns the answer
    (a static buffer), t_reap waits for it to end, t_kill_children kills
    and reaps every one still running (for t_on_failure).
*/
#ifndef PYI_TESTCHILD_H_INCLUDED
#define PYI_TESTCHILD_H_INCLUDED

#include "testutil.h"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

#define T_CHILDREN 8
#define T_LINE 8192

typedef struct {
    pid_t pid;
    FILE *in;       /* its stdin */
    FILE *out;      /* its stdout */
} t_child_t;

static t_child_t t_children [T_CHILDREN];

static void
t_kill_children (void)
{
    for (int i = 0; i < T_CHILDREN; i++)
        if (t_children [i].pid > 0) {
            kill (t_children [i].pid, SIGKILL);
            waitpid (t_children [i].pid, NULL, 0);
            t_children [i].pid = 0;
        }
}

static t_child_t *
t_spawn_self (const char *mode, const char *extra)
{
    t_child_t *child = NULL;
    for (int i = 0; i < T_CHILDREN && !child; i++)
        if (t_children [i].pid <= 0)
            child = &t_children [i];
    CHECK (child);
    int to [2], from [2];
    CHECK (pipe2 (to, O_CLOEXEC) == 0 && pipe2 (from, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_adddup2 (&actions, to [0], 0);
    posix_spawn_file_actions_adddup2 (&actions, from [1], 1);
    char *env [256];
    int n = 0;
    size_t named = extra ? strcspn (extra, "=") + 1 : 0;
    for (char **e = environ; *e && n < 254; e++)
        if (!extra || strncmp (*e, extra, named) != 0)     /* extra replaces it */
            env [n++] = *e;
    if (extra)
        env [n++] = (char *) extra;
    env [n] = NULL;
    char *argv [] = { "test-child", (char *) mode, NULL };
    CHECK (posix_spawn (&child->pid, "/proc/self/exe", &actions, NULL, argv, env) == 0);
    posix_spawn_file_actions_destroy (&actions);
    close (to [0]);
    close (from [1]);
    child->in = fdopen (to [1], "w");
    child->out = fdopen (from [0], "r");
    CHECK (child->in && child->out);
    return child;
}

static const char *t_ask (t_child_t *child, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));
static const char *
t_ask (t_child_t *child, const char *format, ...)
{
    static char line [T_LINE];
    va_list args;
    va_start (args, format);
    vfprintf (child->in, format, args);
    va_end (args);
    fputc ('\n', child->in);
    fflush (child->in);
    CHECK_MSG (fgets (line, sizeof line, child->out), "child %d gave no answer", child->pid);
    line [strcspn (line, "\n")] = 0;
    return line;
}

/*  Wait for the child to end; its wait status. */
static int
t_reap (t_child_t *child)
{
    int status = 0;
    CHECK (waitpid (child->pid, &status, 0) == child->pid);
    fclose (child->in);
    fclose (child->out);
    child->pid = 0;
    return status;
}

#endif
