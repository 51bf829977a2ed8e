/*  pyi_landlock: the policy's paths, TCP ports and scopes as a Landlock
    ruleset on the calling thread (inherited by what it executes).

    Rights are negotiated: the ruleset handles only the rights that both
    this code and the kernel know. This code knows Landlock up to ABI 6:
    filesystem (1), rename and link across directories (2), truncation (3),
    TCP bind and connect by port (4), scoping of abstract unix sockets and
    signals (6). Device ioctls (5) are left unhandled: the only devices a
    policy grants are named ones (--device), and CUDA needs its ioctls.
    The constants are our own: Debian 12's headers stop at ABI 2.
*/
#ifndef PYI_LANDLOCK_H_INCLUDED
#define PYI_LANDLOCK_H_INCLUDED

#include "pyi_policy.h"
#include <stdbool.h>
#include <stddef.h>

/*  The ABI versions that brought what this code uses; the newest it knows. */
#define PYI_LANDLOCK_ABI_REFER 2        /* rename and link across directories */
#define PYI_LANDLOCK_ABI_TRUNCATE 3     /* truncation */
#define PYI_LANDLOCK_ABI_NETWORK 4      /* TCP bind and connect by port */
#define PYI_LANDLOCK_ABI_SCOPE 6        /* abstract unix sockets and signals */
#define PYI_LANDLOCK_KNOWN_ABI 6

/*  The Landlock ABI version the kernel offers (0: none), lowered to
    $PYI_SANDBOX_MAX_ABI when that is set (tests pretend an older kernel
    with it; it never raises the version). */
int pyi_landlock_abi (void);

/*  Restrict the calling thread (and what it executes) to policy, at abi
    (>= 1). PR_SET_NO_NEW_PRIVS must be set. Paths that do not exist are
    skipped; a path that cannot be added is reported on stderr and left
    out (less access, never more). 0, or -1 with errno when the ruleset
    could not be made or enforced. */
int pyi_landlock_apply (const pyi_policy_t *policy, int abi);

#endif
