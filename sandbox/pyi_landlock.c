/*  pyi_landlock: a Landlock ruleset from the policy (see the header). */
#include "pyi_landlock.h"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/*  The kernel's interface (uapi linux/landlock.h), under our own names. */
#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#define __NR_landlock_add_rule 445
#define __NR_landlock_restrict_self 446
#endif
#define CREATE_RULESET_VERSION (1U << 0)
#define RULE_PATH_BENEATH 1
#define RULE_NET_PORT 2

#define FS_EXECUTE      (1ULL << 0)
#define FS_WRITE_FILE   (1ULL << 1)
#define FS_READ_FILE    (1ULL << 2)
#define FS_READ_DIR     (1ULL << 3)
#define FS_REMOVE_DIR   (1ULL << 4)
#define FS_REMOVE_FILE  (1ULL << 5)
#define FS_MAKE_CHAR    (1ULL << 6)
#define FS_MAKE_DIR     (1ULL << 7)
#define FS_MAKE_REG     (1ULL << 8)
#define FS_MAKE_SOCK    (1ULL << 9)
#define FS_MAKE_FIFO    (1ULL << 10)
#define FS_MAKE_BLOCK   (1ULL << 11)
#define FS_MAKE_SYM     (1ULL << 12)
#define FS_ABI1         ((1ULL << 13) - 1)      /* every right of ABI 1 */
#define FS_REFER        (1ULL << 13)            /* ABI 2 */
#define FS_TRUNCATE     (1ULL << 14)            /* ABI 3 */
#define NET_BIND_TCP    (1ULL << 0)             /* ABI 4 */
#define NET_CONNECT_TCP (1ULL << 1)
#define SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)  /* ABI 6 */
#define SCOPE_SIGNAL    (1ULL << 1)

/*  Rights that apply to a file (not a directory). */
#define FILE_RIGHTS (FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE)
#define READ_RIGHTS (FS_EXECUTE | FS_READ_FILE | FS_READ_DIR)
#define SHM_RIGHTS (FS_READ_FILE | FS_WRITE_FILE | FS_MAKE_REG | FS_REMOVE_FILE | FS_TRUNCATE)
#define DEVICE_RIGHTS (FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE)
/*  Write access: everything but making device nodes. */
#define WRITE_EXCLUDED (FS_MAKE_CHAR | FS_MAKE_BLOCK)

typedef struct {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
} s_ruleset_attr_t;

typedef struct {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__ ((packed)) s_path_beneath_t;

typedef struct {
    uint64_t allowed_access;
    uint64_t port;
} s_net_port_t;

int
pyi_landlock_abi (void)
{
    long abi = syscall (__NR_landlock_create_ruleset, NULL, 0, CREATE_RULESET_VERSION);
    if (abi < 0)
        abi = 0;
    const char *cap = getenv ("PYI_SANDBOX_MAX_ABI");
    if (cap && *cap) {
        char *end;
        long value = strtol (cap, &end, 10);
        if (!*end && value >= 0 && value < abi)
            abi = value;
    }
    return (int) abi;
}

static uint64_t
s_handled_fs (int abi)
{
    uint64_t fs = FS_ABI1;
    if (abi >= PYI_LANDLOCK_ABI_REFER)
        fs |= FS_REFER;
    if (abi >= PYI_LANDLOCK_ABI_TRUNCATE)
        fs |= FS_TRUNCATE;
    return fs;
}

static uint64_t
s_rights (pyi_access_t access, uint64_t handled)
{
    switch (access) {
        case PYI_ACCESS_READ: return READ_RIGHTS & handled;
        case PYI_ACCESS_WRITE: return handled & ~WRITE_EXCLUDED;
        case PYI_ACCESS_SHM: return SHM_RIGHTS & handled;
        case PYI_ACCESS_DEVICE: return DEVICE_RIGHTS & handled;
    }
    return 0;
}

/*  Add the rule for one path; a path that is not there is skipped. */
static void
s_add_path (int ruleset, const pyi_grant_path_t *grant, uint64_t handled)
{
    int fd = open (grant->path, O_PATH | O_CLOEXEC);
    if (fd == -1) {
        if (errno != ENOENT && errno != ENOTDIR)
            fprintf (stderr, "pyisolate sandbox: %s left out: %s\n",
                     grant->path, strerror (errno));
        return;
    }
    s_path_beneath_t rule = { s_rights (grant->access, handled), fd };
    struct stat st;
    if (fstat (fd, &st) == 0 && !S_ISDIR (st.st_mode))
        rule.allowed_access &= FILE_RIGHTS;
    if (rule.allowed_access
    &&  syscall (__NR_landlock_add_rule, ruleset, RULE_PATH_BENEATH, &rule, 0))
        fprintf (stderr, "pyisolate sandbox: %s left out: %s\n",
                 grant->path, strerror (errno));
    close (fd);
}

int
pyi_landlock_apply (const pyi_policy_t *policy, int abi)
{
    s_ruleset_attr_t attr = { s_handled_fs (abi), 0, 0 };
    if (abi >= PYI_LANDLOCK_ABI_NETWORK && policy->network != PYI_NETWORK_ALL)
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
    if (abi >= PYI_LANDLOCK_ABI_SCOPE)
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL;
    int ruleset = (int) syscall (__NR_landlock_create_ruleset, &attr, sizeof (attr), 0);
    if (ruleset == -1)
        return -1;
    for (size_t i = 0; i < policy->npaths; i++)
        s_add_path (ruleset, &policy->paths [i], attr.handled_access_fs);
    int rc = 0;
    for (size_t i = 0; rc == 0 && attr.handled_access_net && i < policy->nports; i++) {
        s_net_port_t rule = { NET_BIND_TCP | NET_CONNECT_TCP, policy->ports [i] };
        rc = (int) syscall (__NR_landlock_add_rule, ruleset, RULE_NET_PORT, &rule, 0);
    }
    if (rc == 0)
        rc = (int) syscall (__NR_landlock_restrict_self, ruleset, 0);
    int saved = errno;
    close (ruleset);
    errno = saved;
    return rc ? -1 : 0;
}
