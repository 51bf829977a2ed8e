/*  pyi_sandbox: the launcher the broker spawns in place of an extension's
    interpreter. It applies the policy on its command line (pyi_policy.h)
    to itself, while it is one thread and before it runs any of the
    program's code, then executes the program, which inherits all of it:

        1. PR_SET_NO_NEW_PRIVS, and no capabilities: the bounding,
           inheritable and ambient sets emptied, so that a program run by
           root has none (else root keeps powers the other layers do not
           cover: raising its limits, reading other processes' /proc
           entries through CAP_SYS_ADMIN and CAP_PERFMON, ...),
        2. a Landlock ruleset (pyi_landlock.h),
        3. a seccomp deny-list (pyi_seccomp.h),
        4. $PYI_SANDBOX = "landlock=<ABI applied, 0: none> seccomp=<1|0>",
        5. resource limits (setrlimit; a hard limit is lowered, never raised),
           and execvp (program).

        pyi_sandbox --probe
            what the kernel offers, one "name value" line each:
            "landlock <ABI, 0: none>", "seccomp <1|0>", "cgroup <the
            controllers of a writable cgroup v2 directory of ours, or none>"
        pyi_sandbox [OPTION]... --check
            what of that policy the kernel cannot enforce, one line each;
            exit 0 when nothing is missing, else 1
        pyi_sandbox [OPTION]... -- PROGRAM [ARG]...
            run PROGRAM under the policy

    Exit status (when PROGRAM does not run): 125 for a bad command line, a
    "required" policy the kernel cannot fully enforce (the reasons on
    stderr), or a layer that failed to apply under "required"; 126 when
    PROGRAM cannot be executed, 127 when it is not found. Under
    "best_effort" a layer that fails to apply is reported on stderr and the
    program runs without it.
*/
#include "pyi_landlock.h"
#include "pyi_policy.h"
#include "pyi_seccomp.h"
#include <errno.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXIT_REFUSED 125
#define EXIT_CANNOT_EXECUTE 126
#define EXIT_NOT_FOUND 127
#define ERROR_TEXT 512              /* one reason, with its NUL */
#define MISSING_TEXT 1024           /* the lines of --check, with the NUL */
#define SUMMARY_TEXT 64             /* $PYI_SANDBOX's value */
#define PATH_TEXT 4096              /* a path we build */
#define LINE_TEXT 512               /* a line of /proc/self/cgroup or cgroup.controllers */
#define CPU_GRACE_SECONDS 1         /* from SIGXCPU to SIGKILL */
#define MEGABYTE (1024LL * 1024)

/*  Append one formatted line to text (size bytes); return 1. */
static int
s_line (char *text, size_t size, const char *format, ...)
{
    size_t used = strlen (text);
    if (used + 2 > size)
        return 1;               /* full: the count still says it */
    va_list args;
    va_start (args, format);
    vsnprintf (text + used, size - used - 1, format, args);
    va_end (args);
    strcat (text, "\n");
    return 1;
}

/*  What the kernel (Landlock at abi, seccomp) cannot enforce of policy, as
    lines in text; how many. The one place that decides it. */
static int
s_missing (const pyi_policy_t *policy, int abi, bool seccomp, char *text, size_t size)
{
    *text = 0;
    if (policy->mode == PYI_MODE_DISABLED)
        return 0;
    int n = 0;
    if (abi < 1)
        n += s_line (text, size, "Landlock unavailable (ABI %d < %d): no filesystem, network "
                     "or signal rules", abi, 1);
    else {
        if (abi < PYI_LANDLOCK_ABI_TRUNCATE)
            n += s_line (text, size, "Landlock ABI %d < %d needed to stop truncating files "
                         "outside the writable paths", abi, PYI_LANDLOCK_ABI_TRUNCATE);
        if (abi < PYI_LANDLOCK_ABI_NETWORK && policy->network == PYI_NETWORK_PORTS)
            n += s_line (text, size, "Landlock ABI %d < %d needed for network rules "
                         "(TCP ports)", abi, PYI_LANDLOCK_ABI_NETWORK);
        if (abi < PYI_LANDLOCK_ABI_SCOPE)
            n += s_line (text, size, "Landlock ABI %d < %d needed to stop signals to other "
                         "processes and connections to abstract unix sockets",
                         abi, PYI_LANDLOCK_ABI_SCOPE);
    }
    if (!seccomp)
        n += s_line (text, size, "seccomp filters unavailable: no system call deny-list, "
                     "network sockets not refused");
    return n;
}

/*  The controllers of the cgroup v2 directory this process is in, when
    it may write there (a delegated subtree); else "none". */
static void
s_probe_cgroup (char *controllers, size_t size)
{
    snprintf (controllers, size, "none");
    FILE *f = fopen ("/proc/self/cgroup", "r");
    if (!f)
        return;
    char line [LINE_TEXT], dir [PATH_TEXT] = "";
    while (fgets (line, sizeof (line), f))
        if (strncmp (line, "0::", 3) == 0) {
            line [strcspn (line, "\n")] = 0;
            const char *mount = access ("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0
                              ? "/sys/fs/cgroup" : "/sys/fs/cgroup/unified";
            snprintf (dir, sizeof (dir), "%s%s", mount, line + 3);
        }
    fclose (f);
    char path [PATH_TEXT + 32];
    snprintf (path, sizeof (path), "%s/cgroup.procs", dir);
    if (!*dir || access (dir, W_OK) || access (path, W_OK))
        return;
    snprintf (path, sizeof (path), "%s/cgroup.controllers", dir);
    f = fopen (path, "r");
    if (!f)
        return;
    if (fgets (line, sizeof (line), f)) {
        line [strcspn (line, "\n")] = 0;
        if (*line)
            snprintf (controllers, size, "%s", line);
    }
    fclose (f);
}

static void
s_probe (void)
{
    char controllers [LINE_TEXT];
    s_probe_cgroup (controllers, sizeof (controllers));
    printf ("landlock %d\nseccomp %d\ncgroup %s\n", pyi_landlock_abi (),
            pyi_seccomp_available () ? 1 : 0, controllers);
}

/*  Lower resource to value (CPU: value, and the hard limit a grace
    later); a hard limit already below it stays. 0 or -1. */
static int
s_limit (int resource, long long value, const char *name)
{
    if (value == PYI_POLICY_NO_LIMIT)
        return 0;
    struct rlimit now;
    if (getrlimit (resource, &now)) {
        fprintf (stderr, "pyisolate sandbox: cannot read %s: %s\n", name, strerror (errno));
        return -1;
    }
    rlim_t hard = (rlim_t) value + (resource == RLIMIT_CPU ? CPU_GRACE_SECONDS : 0);
    if (now.rlim_max != RLIM_INFINITY && hard > now.rlim_max)
        hard = now.rlim_max;
    struct rlimit limit = { (rlim_t) value < hard ? (rlim_t) value : hard, hard };
    if (setrlimit (resource, &limit)) {
        fprintf (stderr, "pyisolate sandbox: cannot set %s: %s\n", name, strerror (errno));
        return -1;
    }
    return 0;
}

static int
s_limits (const pyi_policy_t *policy)
{
    long long data = policy->memory_mb == PYI_POLICY_NO_LIMIT
                   ? PYI_POLICY_NO_LIMIT : policy->memory_mb * MEGABYTE;
    return s_limit (RLIMIT_DATA, data, "the memory limit (RLIMIT_DATA)")
        || s_limit (RLIMIT_CPU, policy->cpu_seconds, "the CPU time limit (RLIMIT_CPU)")
        || s_limit (RLIMIT_NOFILE, policy->open_files, "the open files limit (RLIMIT_NOFILE)")
        || s_limit (RLIMIT_NPROC, policy->processes, "the process limit (RLIMIT_NPROC)");
}

/*  Leave the program no capability (see the top). Dropping from the
    bounding set needs CAP_SETPCAP: a process without it has no capability
    to lose (PR_SET_NO_NEW_PRIVS keeps file capabilities out). 0 or -1. */
static int
s_drop_capabilities (void)
{
    for (int cap = 0; prctl (PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
        if (prctl (PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EPERM)
            return -1;
    struct __user_cap_header_struct header = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data [_LINUX_CAPABILITY_U32S_3];
    if (syscall (SYS_capget, &header, data))
        return -1;
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
        data [i].inheritable = 0;
    if (syscall (SYS_capset, &header, data))
        return -1;
    return prctl (PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) ? -1 : 0;
}

/*  A layer failed to apply: refuse under "required", else go on without. */
static bool
s_failed (const pyi_policy_t *policy, const char *layer)
{
    fprintf (stderr, "pyisolate sandbox: %s failed: %s%s\n", layer, strerror (errno),
             policy->mode == PYI_MODE_REQUIRED ? "" : " (running without it)");
    return policy->mode == PYI_MODE_REQUIRED;
}

int
main (int argc, char *argv [])
{
    if (argc == 2 && strcmp (argv [1], "--probe") == 0) {
        s_probe ();
        return 0;
    }
    pyi_policy_t policy;
    char error [ERROR_TEXT];
    if (pyi_policy_parse (&policy, argc, argv, error, sizeof (error))) {
        fprintf (stderr, "pyisolate sandbox: %s\n", error);
        return EXIT_REFUSED;
    }
    bool sandbox = policy.mode != PYI_MODE_DISABLED;
    int abi = sandbox ? pyi_landlock_abi () : 0;
    bool seccomp = sandbox && pyi_seccomp_available ();
    char missing [MISSING_TEXT];
    int nmissing = s_missing (&policy, abi, seccomp, missing, sizeof (missing));
    if (policy.check) {
        fputs (missing, stdout);
        return nmissing ? 1 : 0;
    }
    if (nmissing && policy.mode == PYI_MODE_REQUIRED) {
        fprintf (stderr, "pyisolate sandbox: refused (sandbox_mode required), the kernel "
                 "cannot enforce:\n%s", missing);
        return EXIT_REFUSED;
    }
    int applied = 0;
    bool filtered = false;
    if (sandbox) {
        if (prctl (PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
            if (s_failed (&policy, "PR_SET_NO_NEW_PRIVS"))
                return EXIT_REFUSED;
            abi = 0;
            seccomp = false;
        }
        if (s_drop_capabilities () && s_failed (&policy, "dropping capabilities"))
            return EXIT_REFUSED;
        if (abi >= 1) {
            int use = abi < PYI_LANDLOCK_KNOWN_ABI ? abi : PYI_LANDLOCK_KNOWN_ABI;
            if (pyi_landlock_apply (&policy, use) == 0)
                applied = use;
            else
            if (s_failed (&policy, "Landlock"))
                return EXIT_REFUSED;
        }
        if (seccomp) {
            if (pyi_seccomp_apply (&policy) == 0)
                filtered = true;
            else
            if (s_failed (&policy, "the seccomp filter"))
                return EXIT_REFUSED;
        }
    }
    char summary [SUMMARY_TEXT];
    snprintf (summary, sizeof (summary), "landlock=%d seccomp=%d", applied, filtered ? 1 : 0);
    if (setenv ("PYI_SANDBOX", summary, 1) || unsetenv ("PYI_SANDBOX_MAX_ABI")) {
        fprintf (stderr, "pyisolate sandbox: cannot set the environment: %s\n", strerror (errno));
        return EXIT_REFUSED;
    }
    /*  Last: nothing here allocates after them. */
    if (s_limits (&policy))
        return EXIT_REFUSED;
    execvp (policy.command [0], policy.command);
    int saved = errno;
    fprintf (stderr, "pyisolate sandbox: cannot run %s: %s\n", policy.command [0],
             strerror (saved));
    return saved == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXECUTE;
}
