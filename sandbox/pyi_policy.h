/*  pyi_policy: what the launcher pyi_sandbox is asked to enforce, read
    from its command line (the policy format, docs/security.md):

        pyi_sandbox [OPTION]... -- PROGRAM [ARG]...

    --mode disabled|best_effort|required
                        disabled: limits only; best_effort: every layer
                        the kernel offers; required: refuse (exit 125)
                        unless every layer is enforced (default best_effort)
    --read PATH         read files, list directories, execute, beneath PATH
    --write PATH        as --read, and create, write, truncate, rename and
                        remove beneath PATH
    --shm PATH          files beneath PATH: read, write, create, truncate,
                        remove; no listing (for /dev/shm)
    --device PATH       read and write the device file(s) at PATH
    --network none|all  TCP and every other socket family but AF_UNIX and
                        AF_NETLINK refused, or the network left open
                        (default none)
    --port N            TCP connect and bind to port N only (repeatable;
                        other socket types are not filtered)
    --memory-mb N       RLIMIT_DATA (allocations fail past it)
    --cpu-seconds N     RLIMIT_CPU (SIGXCPU at N seconds, SIGKILL a second later)
    --open-files N      RLIMIT_NOFILE
    --processes N       RLIMIT_NPROC (processes and threads of the user)

    --check             print what the kernel cannot enforce of this policy,
                        one line each, and exit (0: everything, 1: not);
                        no program is given

    A path that does not exist is skipped: a grant left out never widens
    what the program may do. Paths and the program are kept as pointers
    into argv, which must outlive the policy.
*/
#ifndef PYI_POLICY_H_INCLUDED
#define PYI_POLICY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PYI_POLICY_MAX_PATHS 256    /* --read, --write, --shm and --device, together */
#define PYI_POLICY_MAX_PORTS 64     /* --port */
#define PYI_POLICY_NO_LIMIT (-1)    /* a limit that was not given */

typedef enum {
    PYI_MODE_DISABLED,
    PYI_MODE_BEST_EFFORT,
    PYI_MODE_REQUIRED
} pyi_mode_t;

typedef enum {
    PYI_NETWORK_NONE,               /* no TCP, only AF_UNIX and AF_NETLINK sockets */
    PYI_NETWORK_PORTS,              /* TCP to and on the listed ports only */
    PYI_NETWORK_ALL                 /* not filtered */
} pyi_network_t;

typedef enum {
    PYI_ACCESS_READ,
    PYI_ACCESS_WRITE,
    PYI_ACCESS_SHM,
    PYI_ACCESS_DEVICE
} pyi_access_t;

typedef struct {
    const char *path;               /* borrowed from argv */
    pyi_access_t access;
} pyi_grant_path_t;

typedef struct {
    pyi_mode_t mode;
    pyi_grant_path_t paths [PYI_POLICY_MAX_PATHS];
    size_t npaths;
    pyi_network_t network;
    uint16_t ports [PYI_POLICY_MAX_PORTS];
    size_t nports;
    long long memory_mb;            /* each PYI_POLICY_NO_LIMIT when not given */
    long long cpu_seconds;
    long long open_files;
    long long processes;
    bool check;                     /* --check: report, run nothing */
    char **command;                 /* the program's argv, NULL-terminated, in argv;
                                       NULL with --check */
} pyi_policy_t;

/*  Fill self from the launcher's argv (argv [0] is the launcher itself).
    0; or -1 with a one-line reason in error (a bad option or value, a
    missing "--" or program, a program after --check). */
int pyi_policy_parse (pyi_policy_t *self, int argc, char *argv[], char *error, size_t size);

#endif
