/*  pyi_seccomp: a seccomp-bpf deny-list on the calling process (every
    thread: TSYNC), inherited by what it executes.

    Refused with EPERM: tracing and reading other processes' memory
    (ptrace, process_vm_*), the kernel keyring, bpf, perf_event_open,
    mounts and new namespaces (mount, unshare, setns, clone with a
    CLONE_NEW* flag, ...), io_uring (its operations would bypass this
    filter), module loading, kexec, reboot, swap, clock and host name
    changes. clone3 fails with ENOSYS (its flags cannot be inspected;
    the C library falls back to clone). With network "none", socket ()
    of any family but AF_UNIX and AF_NETLINK fails with EACCES (UDP and
    raw sockets included, which Landlock does not cover). A system call
    of another architecture (x32 or 32-bit calls on x86_64) kills the
    process. Built for x86_64 and aarch64; elsewhere it is unavailable.
*/
#ifndef PYI_SECCOMP_H_INCLUDED
#define PYI_SECCOMP_H_INCLUDED

#include "pyi_policy.h"
#include <stdbool.h>

/*  Whether this build knows the architecture and the kernel takes
    seccomp filters. */
bool pyi_seccomp_available (void);

/*  Install the filter for policy. PR_SET_NO_NEW_PRIVS must be set.
    0, or -1 with errno. */
int pyi_seccomp_apply (const pyi_policy_t *policy);

#endif
