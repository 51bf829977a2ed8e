/*  pyi_region, internal half: the header page every process shares and
    the grammar of region names, used by both of the class's files:
      pyi_region.c        regions mapped in this process (the cache, the
                          lifetime of a mapping, CUDA export and collect);
      pyi_region_names.c  regions by name alone, without mapping their data
                          (session and name grammar, discard, sweep,
                          remove_session, remove_orphans).
    Not exported. */
#ifndef PYI_REGION_INTERNAL_H_INCLUDED
#define PYI_REGION_INTERNAL_H_INCLUDED

#include "pyisolate/pyi_region.h"
#include "pyisolate/pyi_cuda.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define REGION_MAGIC 0x4e4f494745524950ULL   /* "PIREGION" little-endian */
#define REGION_LAYOUT 1                      /* header layout version */
#define SHM_DIR "/dev/shm"                   /* where shm_open's names live */
#define NAME_PREFIX "pyi-"                   /* every name, after its '/' */
#define MAX_SESSION 40                       /* "<pid>-<hex>" */

/*  The header page, shared by every process that maps the region. */
typedef struct {
    uint64_t magic;                 /* REGION_MAGIC */
    uint32_t layout;                /* REGION_LAYOUT */
    uint32_t header_size;           /* PYI_REGION_HEADER */
    uint64_t size;                  /* data bytes */
    _Atomic uint32_t inflight;      /* messages in flight that name the region */
    uint32_t creator;               /* pid of the creator */
    uint32_t kind;                  /* KIND_HOST or KIND_CUDA */
    uint32_t reserved;
    uint8_t uuid [PYI_CUDA_UUID];   /* CUDA: the device */
    uint8_t handle [PYI_CUDA_HANDLE];   /* CUDA: IPC handle of the allocation */
} pyi_region_header_t;

#define KIND_HOST 0                 /* data follows the header page */
#define KIND_CUDA 1                 /* header page only; data is a CUDA allocation */

/*  This process's session (pyi_region_session) into out, MAX_SESSION + 1
    bytes. */
void pyi_region_session_copy (char *out);

/* -- the cache of regions mapped here (pyi_region.c), and the regions it
   keeps with no reference (pyi_region_keep.c) ----------------------------- */

typedef enum {
    KEEP_NONE,                      /* in use: refs > 0 */
    KEEP_LINGER,                    /* made elsewhere, mapped, no lock held
                                       (or LOCK_SH, while held) */
    KEEP_SPARE                      /* made here for a copy, idle: LOCK_EX held */
} pyi_region_keep_t;

struct _pyi_region_t {
    char name [PYI_REGION_MAX_NAME + 1];   /* "/pyi-<session>-<pid>-<random>" */
    int fd;                         /* holds our lock (not a CUDA exporter's) */
    uint8_t *base;                  /* the mapping: header page, then host data */
    size_t mapped;                  /* bytes mapped at base */
    uint8_t *data;                  /* host data, or the CUDA device pointer */
    size_t size;                    /* data bytes */
    int kind;                       /* KIND_* */
    int device;                     /* CUDA: local device ordinal */
    bool exporter;                  /* CUDA: made here from our own allocation */
    bool here;                      /* host: made by this process */
    bool for_copy;                  /* made by pyi_region_new_for_copy */
    pyi_region_keep_t keep;         /* KEEP_NONE unless refs is 0 */
    bool held;                      /* lingering with our LOCK_SH, until the
                                       reaper's next look */
    uint64_t since;                 /* kept since (CLOCK_MONOTONIC ns) */
    size_t refs;                    /* local references, under pyi_region_lock */
    pyi_region_t *next;             /* in pyi_region_list */
    pyi_region_t *prev;
};

static inline pyi_region_header_t *
pyi_region_header_of (pyi_region_t *self)
{
    return (pyi_region_header_t *) self->base;
}

extern pthread_mutex_t pyi_region_lock;     /* guards the list, refs and keep */
extern pyi_region_t *pyi_region_list;       /* every region mapped here */
extern size_t pyi_region_count;             /* regions in the list */

/*  Take self out of the list and its indexes; lock held. */
void pyi_region_unlist (pyi_region_t *self);

/*  What the last local reference does to self, out of the list (or
    NULL; lock not held): unmap, and remove the name when no other process
    maps the region and no message names it. */
void pyi_region_drop (pyi_region_t *self);

/*  pyi_region_keep.c (lock held for all but the last). Whether self,
    whose last reference just went, is kept (the oldest kept one may make
    room: *evicted, to drop once the lock is released). */
bool pyi_region_keep (pyi_region_t *self, pyi_region_t **evicted);

/*  One reference to self, found by name (not a spare): a lingering region
    takes our lock back; NULL when that lock is not free at once, then self
    is out of the list, in *evicted. */
pyi_region_t *pyi_region_unkeep (pyi_region_t *self, pyi_region_t **evicted);

/*  Self (kept) is kept no longer: the caller unlists and drops it. */
void pyi_region_forget (pyi_region_t *self);

/*  Regions kept now. */
size_t pyi_region_kept (void);

/*  In a child after fork (lock held): drop the child's copies of what the
    parent keeps, without touching the parent's locks or names; no reaper
    thread runs there. */
void pyi_region_keep_forked (void);

/*  A new region whose every data byte the caller writes before anybody
    else sees it (an inline tensor arriving): a spare of this size when
    one is kept, else pyi_region_new. */
pyi_region_t *pyi_region_new_for_copy (size_t size);

/*  "<pid>-<hex>" of at most MAX_SESSION bytes, nothing else. */
bool pyi_region_valid_session (const char *session);

/*  "/pyi-<session>-<pid>-<random>", nothing else. */
bool pyi_region_valid_name (const char *name);

/*  Whether process pid exists and has not ended (a zombie is gone; a
    reused pid counts as alive: never remove what may be live). */
bool pyi_region_alive (uint32_t pid);

/*  Take one message off the header's in-flight count, never below 0. */
void pyi_region_header_consume (pyi_region_header_t *header);

#endif
