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

/*  "<pid>-<hex>" of at most MAX_SESSION bytes, nothing else. */
bool pyi_region_valid_session (const char *session);

/*  "/pyi-<session>-<pid>-<random>", nothing else. */
bool pyi_region_valid_name (const char *name);

/*  Whether process pid exists (a reused pid counts as alive: never remove
    what may be live). */
bool pyi_region_alive (uint32_t pid);

/*  Take one message off the header's in-flight count, never below 0. */
void pyi_region_header_consume (pyi_region_header_t *header);

#endif
