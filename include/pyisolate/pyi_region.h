/*  pyi_region: a shared memory region that tensors live in (docs/tensors.md).

    A region is a POSIX shared memory object named
        /pyi-<session>-<creator pid>-<random>
    where <session> is the host's id "<hostpid>-<hex>" (the name of its
    runtime directory) and <random> 64 random bits in decimal: a process
    that cannot list /dev/shm cannot guess the names of regions it was
    not given. It holds a 4096-byte header page (magic, layout
    version, data size, an atomic count of messages in flight that name
    it) followed by the data, so the data is page-aligned.

    Each process maps a region at most once and caches the mapping:
    opening a name that is already mapped here returns the same region
    with one more local reference. The cache is thread-safe.

    Lifetime (no timers): every process that maps a region and uses it
    holds a shared flock on it. When the last local reference goes, the process unmaps
    it and tries to take the lock exclusively; if it can (no other process
    maps it) and no message that names it is in flight, it removes the
    name. A process killed with SIGKILL loses its locks with it, so the
    last survivor to let go removes the region. See docs/tensors.md.

    Ownership: a pyi_region_t * returned by new, open, find and ref is one
    local reference, which the caller gives back with pyi_region_release.
    Errors: NULL or -1, with pyi_last_error () saying why.
*/
#ifndef PYI_REGION_H_INCLUDED
#define PYI_REGION_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "pyi_library.h"
#include "pyi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _pyi_region_t pyi_region_t;

/*  Longest region name, with its leading '/', in bytes. */
#define PYI_REGION_MAX_NAME 63
/*  Bytes before the data: the header page. */
#define PYI_REGION_HEADER 4096
/*  Largest data size of one region (1 TiB). */
#define PYI_REGION_MAX_SIZE ((size_t) 1 << 40)

/*  Set the session that names this process's new regions, "<pid>-<hex>"
    (a host passes pyi_broker_session ()). Call it before making regions:
    regions made earlier keep their name. 0, or -1 when the text is not a
    session id. Without a call, a process uses $PYI_SESSION (set in spawned
    workers), else a session of its own "<pid>-<random>". */
PYI_EXPORT int pyi_region_set_session (const char *session);

/*  This process's session (borrowed, static). */
PYI_EXPORT const char *pyi_region_session (void);

/*  Create a region with size bytes of zeroed data (0 is allowed), backed
    by memory reserved now: a full /dev/shm fails here with a clear error
    instead of SIGBUS later. Returns one reference, or NULL. */
PYI_EXPORT pyi_region_t *pyi_region_new (size_t size);

/*  Map the region named name (from a descriptor: untrusted), or take one
    more reference to it when it is mapped here already (no syscall).
    NULL when the name is not of our form, no such region exists, or it is
    not a valid region (bad header, size mismatch), or a CUDA region whose
    handle cannot be opened here (then one message naming it counts as
    received: it was consumed). */
PYI_EXPORT pyi_region_t *pyi_region_open (const char *name);

/*  The region mapped here whose data holds address ptr (its end counts,
    for empty tensors), with one more reference, and the offset of ptr in
    its data; NULL (no error text) when ptr is in no region mapped here. */
PYI_EXPORT pyi_region_t *pyi_region_find (const void *ptr, size_t *offset);

/*  CUDA regions (docs/tensors.md, section 8). A CUDA region's shared
    object is the header page alone: it names one CUDA allocation by its
    IPC handle and device UUID, and its "data" is that allocation (a
    device pointer). Lifetime follows the same rules as host regions, with
    one difference: the process that made it from its own allocation (the
    exporter) holds no lock and keeps the region, and so must keep the
    allocation alive, until pyi_region_collect finds that no other process
    maps it and no message names it. Receivers open the IPC handle once
    per process (the region cache) and close it at their last release. */

/*  The CUDA region holding device pointer ptr (on CUDA device ordinal
    device, as the caller believes), with one reference, and the offset of
    ptr in it: a region mapped here (received, or exported before), else a
    new region exporting ptr's whole allocation. NULL when ptr is not
    device memory that CUDA IPC can share, or there is no CUDA. */
PYI_EXPORT pyi_region_t *pyi_region_find_cuda (const void *ptr, int device, size_t *offset);

/*  Drop the CUDA regions this process exported that no other process maps
    and no message in flight names; write their names (when names is not
    NULL) so that the caller can let go of the memory it kept alive for
    them. At most capacity; returns how many. */
PYI_EXPORT int pyi_region_collect (char (*names) [PYI_REGION_MAX_NAME + 1], int capacity);

/*  CUDA regions this process exports now. */
PYI_EXPORT size_t pyi_region_exported (void);

/*  The local CUDA device ordinal of a CUDA region, -1 for a host region. */
PYI_EXPORT int pyi_region_device (pyi_region_t *self);

/*  One more reference to a region the caller holds; returns self. */
PYI_EXPORT pyi_region_t *pyi_region_ref (pyi_region_t *self);

/*  Give back one reference and null the caller's pointer; safe on NULL
    and on *self_p == NULL. The last reference unmaps the region, and
    removes its name when no other process maps it and no message that
    names it is in flight. */
PYI_EXPORT void pyi_region_release (pyi_region_t **self_p);

/*  Data (page-aligned host memory, or a CUDA region's device pointer;
    size bytes, valid while a reference is held), data size and name
    ("/pyi-...", borrowed like the data). */
PYI_EXPORT void *pyi_region_data (pyi_region_t *self);
PYI_EXPORT size_t pyi_region_size (pyi_region_t *self);
PYI_EXPORT const char *pyi_region_name (pyi_region_t *self);

/*  The count of messages in flight that name the region (shared by every
    process). A sender adds one before it sends a message naming the
    region; the receiver takes one off once it has mapped it (never below
    0). pyi_tensor_encode and pyi_tensor_decode do both. */
PYI_EXPORT void pyi_region_sent (pyi_region_t *self);
PYI_EXPORT void pyi_region_received (pyi_region_t *self);
PYI_EXPORT uint32_t pyi_region_inflight (pyi_region_t *self);

/*  Take one message off the in-flight count of the region named name
    without mapping its data (a message that named it was dropped), and
    remove the name when that leaves it idle: no process maps it and no
    other message names it (a CUDA region only once its exporter is gone:
    the exporter collects its own). 0, or -1 for a bad or unknown name. */
PYI_EXPORT int pyi_region_discard (const char *name);

/*  Regions mapped in this process now and in use (kept ones not
    counted). */
PYI_EXPORT size_t pyi_region_mapped (void);

/*  Kept regions (off by default; ms 0 turns it off and drops what is
    kept). On, a region whose last local reference goes may stay mapped:
    - lingering: a region made by another process that some other process
      still maps, or a message still names, stays mapped here without its
      lock: the name's lifetime is unchanged (another process's last
      release may remove it), and the next descriptor naming it here costs
      one flock instead of open, lock, map, unmap and close. One whose
      last reference goes while a message names it keeps its lock until
      the library's thread next looks (about 50 ms): named again before
      then, it costs no flock; that thread then lets go of the lock, or
      removes the name when no other process maps it and nothing names it;
    - spare: a region made here for an inline tensor's arrival that
      nobody else maps and no message names stays mapped, holding LOCK_EX
      (nobody can map it, no sweep removes it), and the next inline tensor
      of the same size arrives in it instead of a new zero-filled region.
    A thread of this library drops a lingering region within about 50 ms
    of its name being removed, and anything kept after ms; at most 32
    linger and 4 spares are kept (the oldest goes first). */
PYI_EXPORT void pyi_region_linger (unsigned ms);

/*  Drop everything kept now (lingering regions unmapped, spares removed);
    returns how many. */
PYI_EXPORT size_t pyi_region_trim (void);

/*  Regions lingering, and spares, kept now. */
PYI_EXPORT size_t pyi_region_lingering (void);
PYI_EXPORT size_t pyi_region_spares (void);

/*  Remove the regions of session (NULL: this process's) made by creator
    (0: any) that no process maps and that no message in flight names.
    Safe at any time: a host calls it when an extension process exits.
    Returns the number removed, or -1. */
PYI_EXPORT int pyi_region_sweep (const char *session, pid_t creator);

/*  Remove the names of every region of session (NULL: this process's),
    mapped or not, in flight or not: for a session that is over (the
    host's own at its exit, once its extensions are gone, or a dead
    host's, which pyi_broker_new does). Mappings stay valid until they are
    released. Returns the number removed, or -1. */
PYI_EXPORT int pyi_region_remove_session (const char *session);

/*  Remove the names of every region whose session's host process is gone
    (the pid in "<pid>-<hex>" no longer exists, or is a zombie), whether or
    not that host had a runtime directory. A reused pid keeps its regions:
    never remove what may be live. pyi_broker_new calls it. Returns the
    number removed. */
PYI_EXPORT int pyi_region_remove_orphans (void);

#ifdef __cplusplus
}
#endif

#endif
