/*  pyi_seccomp: the deny-list as a classic BPF program (see the header). */
#include "pyi_seccomp.h"
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined (__x86_64__)
#   define ARCH AUDIT_ARCH_X86_64
#   define X32_SYSCALL_BIT 0x40000000U  /* x32 calls share the arch value */
#elif defined (__aarch64__)
#   define ARCH AUDIT_ARCH_AARCH64
#endif

#define MAX_FILTER 128              /* instructions; the program below uses about 100 */
#define NR_OFFSET offsetof (struct seccomp_data, nr)
#define ARCH_OFFSET offsetof (struct seccomp_data, arch)
#define ARG0_OFFSET offsetof (struct seccomp_data, args [0])   /* low half, little-endian */
/*  clone () flags that make namespaces (CLONE_NEWTIME's bit means
    something else to clone ()). */
#define NAMESPACE_FLAGS 0x7e020000U

/*  Refused with EPERM. */
static const long s_denied [] = {
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev,
    SYS_keyctl, SYS_add_key, SYS_request_key, SYS_bpf, SYS_perf_event_open,
    SYS_mount, SYS_umount2, SYS_unshare, SYS_setns, SYS_pivot_root, SYS_chroot,
    SYS_open_tree, SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick,
    SYS_mount_setattr, SYS_quotactl, SYS_quotactl_fd,
    SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
    SYS_kexec_load, SYS_kexec_file_load, SYS_init_module, SYS_finit_module,
    SYS_delete_module, SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct,
    SYS_userfaultfd, SYS_open_by_handle_at, SYS_fanotify_init, SYS_pidfd_getfd,
    SYS_syslog, SYS_vhangup, SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime,
    SYS_adjtimex, SYS_sethostname, SYS_setdomainname,
#if defined (__x86_64__)
    SYS_uselib, SYS_iopl, SYS_ioperm,
#endif
};

typedef struct {
    struct sock_filter code [MAX_FILTER];
    unsigned short size;
} s_program_t;

static void
s_add (s_program_t *self, struct sock_filter instruction)
{
    if (self->size < MAX_FILTER)
        self->code [self->size] = instruction;
    self->size++;               /* past MAX_FILTER: refused at the end */
}

bool
pyi_seccomp_available (void)
{
#ifdef ARCH
    unsigned int action = SECCOMP_RET_ERRNO;
    return syscall (SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
#else
    return false;
#endif
}

int
pyi_seccomp_apply (const pyi_policy_t *policy)
{
#ifdef ARCH
    s_program_t p = { .size = 0 };
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_LD | BPF_W | BPF_ABS, ARCH_OFFSET));
    s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_LD | BPF_W | BPF_ABS, NR_OFFSET));
#ifdef X32_SYSCALL_BIT
    s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));
#endif
    for (size_t i = 0; i < sizeof (s_denied) / sizeof (s_denied [0]); i++) {
        s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K,
                                                  (unsigned int) s_denied [i], 0, 1));
        s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
    }
    s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
    /*  clone: refused when it would make a namespace. */
    s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_LD | BPF_W | BPF_ABS, ARG0_OFFSET));
    s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JSET | BPF_K, NAMESPACE_FLAGS, 0, 1));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    if (policy->network == PYI_NETWORK_NONE) {
        /*  socket: only AF_UNIX and AF_NETLINK. */
        s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 5));
        s_add (&p, (struct sock_filter) BPF_STMT (BPF_LD | BPF_W | BPF_ABS, ARG0_OFFSET));
        s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 2, 0));
        s_add (&p, (struct sock_filter) BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, 1, 0));
        s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EACCES));
        s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    s_add (&p, (struct sock_filter) BPF_STMT (BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    if (p.size > MAX_FILTER) {
        errno = E2BIG;
        return -1;
    }
    struct sock_fprog program = { p.size, p.code };
    long rc = syscall (SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &program);
    if (rc > 0)                 /* the id of a thread that could not be synchronised */
        errno = EBUSY;
    return rc == 0 ? 0 : -1;
#else
    (void) policy;
    errno = ENOSYS;
    return -1;
#endif
}
