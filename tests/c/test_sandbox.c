/*  test_sandbox: the launcher pyi_sandbox (sandbox/), run as the broker
    runs it, in front of this program's own "child" mode, which performs
    one action and exits with its errno (0: it worked).

    Guarantees checked:
    - --probe prints "landlock N", "seccomp N" and "cgroup ..." lines;
    - a bad command line (unknown option, relative path, port 0, no "--",
      --network all with --port) exits 125 and runs nothing; a program
      that does not exist exits 127;
    - "disabled" applies the limits only: no Landlock, no filter, and
      $PYI_SANDBOX says so;
    - a sandboxed program has no capability, even when run by root;
    - the limits: RLIMIT_DATA (an allocation past it fails with ENOMEM),
      RLIMIT_CPU (soft N, hard N + 1), RLIMIT_NOFILE, RLIMIT_NPROC;
    - Landlock (ABI 1+): a granted file reads, a file elsewhere and a
      directory listing elsewhere do not (EACCES); --read is read-only;
      --write lets it create files; --shm lets it create files but not
      list the directory;
    - Landlock ABI 4+: with --port, TCP connect to that port works and to
      another fails (EACCES);
    - Landlock ABI 6+: signals to the launcher's parent and connections
      to its abstract unix socket fail (EPERM);
    - seccomp: network "none" refuses AF_INET sockets, TCP and UDP
      (EACCES), not AF_UNIX; ptrace, unshare and namespace clones fail
      (EPERM), clone3 with ENOSYS;
    - --check lists what the kernel cannot enforce and exits 1 (0 when
      nothing is missing); $PYI_SANDBOX_MAX_ABI lowers the ABI believed
      (--check, and what is applied) and does not reach the program;
      "required" refuses (125, the reason on stderr, the program never
      runs) what "best_effort" runs with less.
    Parts the kernel lacks are skipped, saying so.
*/
#include "testutil.h"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sched.h>

#define LAUNCHER PYI_SANDBOX
#define MAX_ARGS 64
#define SIGNALLED 1000              /* s_run's result for a child killed by a signal */
#define REFUSED 125
#define NOT_FOUND 127
#define TEXT 4096

extern char **environ;

static char s_self [TEXT];          /* this program */
static char s_tmp [TEXT];           /* our scratch tree under /tmp */
static char s_output [TEXT];        /* the last run's stdout and stderr */

/* -- the child's actions: exit with the errno, 0 for success ---------------- */

static int
s_child (int argc, char *argv [])
{
    const char *what = argv [2];
    const char *arg = argc > 3 ? argv [3] : "";
    errno = 0;
    if (!strcmp (what, "read")) {
        int fd = open (arg, O_RDONLY);
        return fd == -1 ? errno : 0;
    }
    if (!strcmp (what, "list")) {
        DIR *dir = opendir (arg);
        return dir ? 0 : errno;
    }
    if (!strcmp (what, "create")) {
        int fd = open (arg, O_WRONLY | O_CREAT | O_EXCL, 0600);
        return fd == -1 ? errno : 0;
    }
    if (!strcmp (what, "env")) {          /* env NAME VALUE, or NAME "" for unset */
        const char *value = getenv (arg);
        const char *want = argv [4];
        if (!*want)
            return value ? 1 : 0;
        if (!value || strcmp (value, want)) {
            fprintf (stderr, "%s=%s, wanted %s\n", arg, value ? value : "(unset)", want);
            return 1;
        }
        return 0;
    }
    if (!strcmp (what, "socket")) {       /* socket inet|inet-udp|unix */
        int family = !strcmp (arg, "unix") ? AF_UNIX : AF_INET;
        int type = !strcmp (arg, "inet-udp") ? SOCK_DGRAM : SOCK_STREAM;
        return socket (family, type, 0) == -1 ? errno : 0;
    }
    if (!strcmp (what, "connect")) {      /* connect PORT (127.0.0.1) */
        struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons (atoi (arg)) };
        addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
        int fd = socket (AF_INET, SOCK_STREAM, 0);
        if (fd == -1)
            return errno;
        return connect (fd, (struct sockaddr *) &addr, sizeof (addr)) ? errno : 0;
    }
    if (!strcmp (what, "abstract")) {     /* abstract NAME */
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf (addr.sun_path + 1, sizeof (addr.sun_path) - 1, "%s", arg);
        int fd = socket (AF_UNIX, SOCK_STREAM, 0);
        socklen_t size = (socklen_t) (offsetof (struct sockaddr_un, sun_path) + 1 + strlen (arg));
        return connect (fd, (struct sockaddr *) &addr, size) ? errno : 0;
    }
    if (!strcmp (what, "capabilities")) { /* 0 when it has none */
        FILE *f = fopen ("/proc/self/status", "r");
        char line [256];
        unsigned long long effective = 1, permitted = 1;
        while (f && fgets (line, sizeof (line), f)) {
            sscanf (line, "CapEff: %llx", &effective);
            sscanf (line, "CapPrm: %llx", &permitted);
        }
        return f && effective == 0 && permitted == 0 ? 0 : 1;
    }
    if (!strcmp (what, "signal"))         /* signal the parent (0: only the check) */
        return kill (getppid (), 0) ? errno : 0;
    if (!strcmp (what, "ptrace"))
        return ptrace (PTRACE_TRACEME, 0, NULL, NULL) ? errno : 0;
    if (!strcmp (what, "unshare"))
        return unshare (CLONE_NEWUSER) ? errno : 0;
    if (!strcmp (what, "clone-ns"))
        return syscall (SYS_clone, CLONE_NEWUSER | SIGCHLD, NULL, NULL, NULL, 0) == -1 ? errno : 0;
    if (!strcmp (what, "clone3"))
        return syscall (SYS_clone3, NULL, 0) == -1 ? errno : 0;
    if (!strcmp (what, "allocate")) {     /* allocate MB */
        void *p = malloc ((size_t) atoi (arg) << 20);
        return p ? 0 : ENOMEM;
    }
    if (!strcmp (what, "rlimit")) {       /* rlimit cpu|nofile|nproc SOFT HARD */
        int resource = !strcmp (arg, "cpu") ? RLIMIT_CPU
                     : !strcmp (arg, "nofile") ? RLIMIT_NOFILE : RLIMIT_NPROC;
        struct rlimit limit;
        getrlimit (resource, &limit);
        if ((long long) limit.rlim_cur != atoll (argv [4])
        ||  (long long) limit.rlim_max != atoll (argv [5])) {
            fprintf (stderr, "%s: %lld %lld\n", arg, (long long) limit.rlim_cur,
                     (long long) limit.rlim_max);
            return 1;
        }
        return 0;
    }
    return 99;
}

/* -- the parent ---------------------------------------------------------------- */

/*  Run the launcher with the NULL-terminated policy, then "--" and this
    program's child action (unless policy holds --check or --probe, or
    program is given). Output goes to s_output. Returns the exit status,
    or SIGNALLED + the signal. */
static int
s_launch (const char *const policy [], const char *program, const char *const action [])
{
    const char *argv [MAX_ARGS];
    size_t n = 0;
    argv [n++] = LAUNCHER;
    bool bare = false;
    for (size_t i = 0; policy [i]; i++) {
        bare |= !strcmp (policy [i], "--check") || !strcmp (policy [i], "--probe");
        argv [n++] = policy [i];
    }
    if (!bare) {
        argv [n++] = "--";
        argv [n++] = program ? program : s_self;
        if (!program)
            argv [n++] = "child";
        for (size_t i = 0; action [i]; i++)
            argv [n++] = action [i];
    }
    argv [n] = NULL;
    CHECK (n < MAX_ARGS);
    char out [TEXT + 16];
    snprintf (out, sizeof (out), "%s/output", s_tmp);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_addopen (&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2 (&actions, 1, 2);
    pid_t pid;
    CHECK (posix_spawn (&pid, LAUNCHER, &actions, NULL, (char *const *) argv, environ) == 0);
    posix_spawn_file_actions_destroy (&actions);
    int status;
    CHECK (waitpid (pid, &status, 0) == pid);
    FILE *f = fopen (out, "r");
    CHECK (f);
    size_t got = fread (s_output, 1, sizeof (s_output) - 1, f);
    s_output [got] = 0;
    fclose (f);
    unlink (out);
    return WIFEXITED (status) ? WEXITSTATUS (status) : SIGNALLED + WTERMSIG (status);
}

#define RUN(policy, ...) s_launch (policy, NULL, (const char *const []) { __VA_ARGS__, NULL })
#define POLICY(...) ((const char *const []) { __VA_ARGS__, NULL })
/*  What every sandboxed child needs: the system's libraries, /proc (for
    the sanitizers), this build. */
#define BASE "--read", "/usr", "--read", "/lib", "--read", "/lib64", "--read", "/etc", \
             "--read", "/proc", "--read", PYI_BUILD_DIR

static void
s_path (char *path, const char *name)
{
    snprintf (path, TEXT, "%s/%s", s_tmp, name);
}

static void
s_make_file (const char *name)
{
    char path [TEXT];
    s_path (path, name);
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK (fd != -1);
    CHECK (write (fd, "x", 1) == 1);
    close (fd);
}

static int
s_probe_value (const char *name)
{
    const char *line = strstr (s_output, name);
    return line ? atoi (line + strlen (name) + 1) : -1;
}

/*  A listening TCP socket on 127.0.0.1; its port. */
static int
s_listen_tcp (int *fd)
{
    struct sockaddr_in addr = { .sin_family = AF_INET };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t size = sizeof (addr);
    *fd = socket (AF_INET, SOCK_STREAM, 0);
    CHECK (*fd != -1);
    CHECK (bind (*fd, (struct sockaddr *) &addr, size) == 0);
    CHECK (listen (*fd, 4) == 0);
    CHECK (getsockname (*fd, (struct sockaddr *) &addr, &size) == 0);
    return ntohs (addr.sin_port);
}

int
main (int argc, char *argv [])
{
    if (argc > 2 && !strcmp (argv [1], "child"))
        _exit (s_child (argc, argv));   /* no exit handlers: LeakSanitizer's would ptrace */
    setvbuf (stderr, NULL, _IONBF, 0);
    CHECK (realpath ("/proc/self/exe", s_self));
    snprintf (s_tmp, sizeof (s_tmp), "%s", t_setup_rundir ());   /* removed at exit */
    char secret [TEXT], readonly [TEXT], writable [TEXT], shm [TEXT], path [TEXT];
    s_make_file ("secret");
    s_path (secret, "secret");
    s_path (readonly, "readonly");
    s_path (writable, "writable");
    s_path (shm, "shm");
    CHECK (mkdir (readonly, 0700) == 0 && mkdir (writable, 0700) == 0 && mkdir (shm, 0700) == 0);
    s_make_file ("readonly/file");

    TEST_BEGIN ("--probe");
    CHECK_INT (s_launch (POLICY ("--probe"), NULL, NULL), 0);
    int abi = s_probe_value ("landlock");
    int seccomp = s_probe_value ("seccomp");
    CHECK_MSG (abi >= 0 && (seccomp == 0 || seccomp == 1) && strstr (s_output, "cgroup "),
               "%s", s_output);
    fprintf (stderr, "   kernel: Landlock ABI %d, seccomp %d\n", abi, seccomp);

    TEST_BEGIN ("bad command lines run nothing");
    CHECK_INT (RUN (POLICY ("--bogus", "1"), "create", secret), REFUSED);
    CHECK_INT (RUN (POLICY ("--read", "relative/path"), "read", secret), REFUSED);
    CHECK_INT (RUN (POLICY ("--port", "0"), "read", secret), REFUSED);
    CHECK_INT (RUN (POLICY ("--network", "all", "--port", "80"), "read", secret), REFUSED);
    CHECK_INT (RUN (POLICY ("--mode", "strict"), "read", secret), REFUSED);
    CHECK_INT (RUN (POLICY ("--memory-mb", "lots"), "read", secret), REFUSED);
    const char *no_separator [] = { LAUNCHER, "--read", "/usr", s_self, "child", NULL };
    pid_t pid;
    int status;
    CHECK (posix_spawn (&pid, LAUNCHER, NULL, NULL, (char *const *) no_separator, environ) == 0);
    CHECK (waitpid (pid, &status, 0) == pid && WEXITSTATUS (status) == REFUSED);
    CHECK_INT (s_launch (POLICY ("--mode", "disabled"), "/nonexistent/program",
                         (const char *const []) { NULL }), NOT_FOUND);

    TEST_BEGIN ("disabled: limits only");
    CHECK_INT (RUN (POLICY ("--mode", "disabled"), "read", secret), 0);
    CHECK_INT (RUN (POLICY ("--mode", "disabled"), "env", "PYI_SANDBOX", "landlock=0 seccomp=0"),
               0);
    CHECK_INT (RUN (POLICY ("--mode", "disabled"), "socket", "inet"), 0);

    TEST_BEGIN ("no capabilities");
    CHECK_INT (RUN (POLICY (BASE), "capabilities"), 0);
    if (geteuid () == 0)
        CHECK_INT (RUN (POLICY ("--mode", "disabled"), "capabilities"), 1);

    TEST_BEGIN ("limits");
    /*  (The shell: a sanitized child could not start under 64 MB.) */
    CHECK_INT (s_launch (POLICY ("--mode", "disabled", "--memory-mb", "64"), "/bin/sh",
                         (const char *const []) { "-c", "test \"$(ulimit -d)\" = 65536", NULL }),
               0);
#ifdef __SANITIZE_ADDRESS__
    fprintf (stderr, "   SKIPPED allocations past RLIMIT_DATA: AddressSanitizer's shadow "
             "memory does not fit under it\n");
#else
    CHECK_INT (RUN (POLICY ("--mode", "disabled", "--memory-mb", "64"), "allocate", "128"), ENOMEM);
    CHECK_INT (RUN (POLICY ("--mode", "disabled", "--memory-mb", "64"), "allocate", "16"), 0);
#endif
    CHECK_INT (RUN (POLICY ("--mode", "disabled", "--cpu-seconds", "30"),
                    "rlimit", "cpu", "30", "31"), 0);
    CHECK_INT (RUN (POLICY ("--mode", "disabled", "--open-files", "40"),
                    "rlimit", "nofile", "40", "40"), 0);
    CHECK_INT (RUN (POLICY ("--mode", "disabled", "--processes", "500"),
                    "rlimit", "nproc", "500", "500"), 0);

    if (abi < 1)
        fprintf (stderr, "   SKIPPED Landlock checks: the kernel has no Landlock\n");
    else {
        TEST_BEGIN ("Landlock: files");
        s_path (path, "readonly/file");
        CHECK_INT (RUN (POLICY (BASE, "--read", readonly), "read", path), 0);
        CHECK_INT (RUN (POLICY (BASE, "--read", readonly), "read", secret), EACCES);
        CHECK_INT (RUN (POLICY (BASE, "--read", readonly), "list", s_tmp), EACCES);
        CHECK_INT (RUN (POLICY (BASE, "--read", readonly), "list", "/"), EACCES);
        s_path (path, "readonly/new");
        CHECK_INT (RUN (POLICY (BASE, "--read", readonly), "create", path), EACCES);
        s_path (path, "writable/new");
        CHECK_INT (RUN (POLICY (BASE, "--write", writable), "create", path), 0);
        CHECK_INT (RUN (POLICY (BASE, "--write", writable), "read", path), 0);
        s_path (path, "shm/region");
        CHECK_INT (RUN (POLICY (BASE, "--shm", shm), "create", path), 0);
        CHECK_INT (RUN (POLICY (BASE, "--shm", shm), "list", shm), EACCES);
        CHECK_INT (RUN (POLICY (BASE, "--shm", shm), "read", path), 0);
        /*  A path that is not there is skipped, the rest applies. */
        CHECK_INT (RUN (POLICY (BASE, "--read", "/nonexistent", "--read", readonly),
                        "read", secret), EACCES);
        char applied [64];
        snprintf (applied, sizeof (applied), "landlock=%d seccomp=%d", abi < 6 ? abi : 6, seccomp);
        CHECK_INT (RUN (POLICY (BASE), "env", "PYI_SANDBOX", applied), 0);
    }
    if (abi < 4)
        fprintf (stderr, "   SKIPPED TCP port rules: Landlock ABI %d < 4\n", abi);
    else {
        TEST_BEGIN ("Landlock: TCP ports");
        int open_fd, closed_fd;
        char open_port [16], closed_port [16];
        snprintf (open_port, sizeof (open_port), "%d", s_listen_tcp (&open_fd));
        snprintf (closed_port, sizeof (closed_port), "%d", s_listen_tcp (&closed_fd));
        CHECK_INT (RUN (POLICY (BASE, "--port", open_port), "connect", open_port), 0);
        CHECK_INT (RUN (POLICY (BASE, "--port", open_port), "connect", closed_port), EACCES);
        CHECK_INT (RUN (POLICY (BASE, "--network", "all"), "connect", closed_port), 0);
        close (open_fd);
        close (closed_fd);
    }
    if (abi < 6)
        fprintf (stderr, "   SKIPPED scoping: Landlock ABI %d < 6\n", abi);
    else {
        TEST_BEGIN ("Landlock: signals and abstract unix sockets");
        char name [64];
        snprintf (name, sizeof (name), "pyi-test-sandbox-%d", (int) getpid ());
        struct sockaddr_un addr = { .sun_family = AF_UNIX };
        snprintf (addr.sun_path + 1, sizeof (addr.sun_path) - 1, "%s", name);
        socklen_t size = (socklen_t) (offsetof (struct sockaddr_un, sun_path) + 1 + strlen (name));
        int fd = socket (AF_UNIX, SOCK_STREAM, 0);
        CHECK (bind (fd, (struct sockaddr *) &addr, size) == 0 && listen (fd, 4) == 0);
        CHECK_INT (RUN (POLICY ("--mode", "disabled"), "abstract", name), 0);
        CHECK_INT (RUN (POLICY (BASE), "abstract", name), EPERM);
        CHECK_INT (RUN (POLICY ("--mode", "disabled"), "signal"), 0);
        CHECK_INT (RUN (POLICY (BASE), "signal"), EPERM);
        close (fd);
    }
    if (!seccomp)
        fprintf (stderr, "   SKIPPED seccomp checks: no seccomp filters here\n");
    else {
        TEST_BEGIN ("seccomp");
        CHECK_INT (RUN (POLICY (BASE), "socket", "inet"), EACCES);
        CHECK_INT (RUN (POLICY (BASE), "socket", "inet-udp"), EACCES);
        CHECK_INT (RUN (POLICY (BASE), "socket", "unix"), 0);
        CHECK_INT (RUN (POLICY (BASE, "--network", "all"), "socket", "inet-udp"), 0);
        CHECK_INT (RUN (POLICY (BASE), "ptrace"), EPERM);
        CHECK_INT (RUN (POLICY (BASE), "unshare"), EPERM);
        CHECK_INT (RUN (POLICY (BASE), "clone-ns"), EPERM);
        CHECK_INT (RUN (POLICY (BASE), "clone3"), ENOSYS);
        CHECK_INT (RUN (POLICY ("--mode", "disabled"), "clone3"), EINVAL);
    }

    TEST_BEGIN ("--check, the test switch, required and best_effort");
    CHECK_INT (s_launch (POLICY ("--check", "--port", "443"), NULL, NULL),
               abi >= 6 && seccomp ? 0 : 1);
    if (abi >= 4) {
        setenv ("PYI_SANDBOX_MAX_ABI", "3", 1);
        CHECK_INT (s_launch (POLICY ("--check", "--port", "443"), NULL, NULL), 1);
        CHECK_MSG (strstr (s_output, "Landlock ABI 3 < 4 needed for network rules"), "%s",
                   s_output);
        CHECK_INT (s_launch (POLICY ("--check", "--mode", "disabled", "--port", "443"),
                             NULL, NULL), 0);
        CHECK_INT (RUN (POLICY (BASE), "env", "PYI_SANDBOX_MAX_ABI", ""), 0);
        CHECK_INT (RUN (POLICY (BASE), "env", "PYI_SANDBOX",
                        seccomp ? "landlock=3 seccomp=1" : "landlock=3 seccomp=0"), 0);
        s_path (path, "writable/required");
        CHECK_INT (RUN (POLICY (BASE, "--mode", "required", "--write", writable, "--port", "443"),
                        "create", path), REFUSED);
        CHECK_MSG (strstr (s_output, "Landlock ABI 3 < 4 needed for network rules"), "%s",
                   s_output);
        CHECK_INT (access (path, F_OK), -1);
        CHECK_INT (RUN (POLICY (BASE, "--mode", "best_effort", "--write", writable,
                                "--port", "443"), "create", path), 0);
        CHECK_INT (RUN (POLICY (BASE), "signal"), 0);    /* no scoping at ABI 3 */
        unsetenv ("PYI_SANDBOX_MAX_ABI");
    }
    fprintf (stderr, "test_sandbox: OK\n");
    return 0;
}
