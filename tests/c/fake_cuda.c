/*  fake_cuda: a stand-in for the CUDA driver (libcuda.so.1) for the tests
    of CUDA regions on machines without a GPU: test_cuda loads it through
    $PYI_CUDA_LIBRARY. It exports what a real libcuda.so.1 exports for the
    calls libpyisolate makes, under the same symbol names and with the
    signatures of cuda.h: the _v2 entry points that cuda.h binds the plain
    names to (cuDeviceGetUuid_v2, cuCtxPushCurrent_v2, cuCtxPopCurrent_v2,
    cuIpcOpenMemHandle_v2), and the plain (legacy) names the real driver
    still exports next to them, so that the tests run the path a GPU
    runs. Built with -DFAKE_CUDA_LEGACY it is a driver from before those
    _v2 names existed (plain names only), for the fallback path.

    The same rules as CUDA where the tests depend on them: nothing works
    before cuInit; a context is current per thread (a stack: push, pop),
    only a primary context retained with cuDevicePrimaryCtxRetain can be
    pushed, and the calls that need a current context (cuCtxSynchronize,
    cuIpc*) fail with CUDA_ERROR_INVALID_CONTEXT without one. "Device
    memory" is host memory in a POSIX shared memory object, an IPC handle
    names that object, opening a handle maps it (and fails in the process
    that made it, as CUDA does), pointer attributes answer for
    allocations and opened handles only.

    Extra entry points for the tests: fake_cuda_alloc (a device
    allocation), fake_cuda_alloc_vmm (one CUDA IPC cannot share, like
    PyTorch's expandable segments), fake_cuda_free, fake_cuda_opened
    (handles open now), fake_cuda_opens (handles ever opened),
    fake_cuda_syncs (cuCtxSynchronize calls), fake_cuda_depth (contexts
    pushed and not popped on the calling thread), fake_cuda_calls_v2 and
    fake_cuda_calls_legacy (calls of the four entry points under each
    name), fake_cuda_misuse (calls refused for want of a current context,
    pops of an empty stack, pushes of a context never retained).
    $FAKE_CUDA_UUID changes the device's UUID (a process that sees
    another GPU).
*/
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__ ((visibility ("default")))
#define MAX_BLOCKS 256
#define MAX_DEPTH 16                /* contexts one thread may push */

/*  The types of cuda.h, with its ABI. */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef unsigned long long CUdeviceptr;
typedef struct { char bytes [16]; } CUuuid;
typedef struct { char reserved [64]; } CUipcMemHandle;

enum {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_NOT_INITIALIZED = 3,
    CUDA_ERROR_INVALID_CONTEXT = 201,
    CUDA_ERROR_INVALID_HANDLE = 400,
};

typedef struct {
    uint8_t *base;
    size_t size;
    bool ipc;               /* legacy IPC capable */
    bool opened;            /* mapped from another process's handle */
    char name [48];
} block_t;

static block_t s_blocks [MAX_BLOCKS];
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static int s_opened, s_opens, s_syncs, s_sequence;
static int s_initialized;                   /* cuInit was called */
static int s_retained;                      /* the primary context was retained */
static int s_calls_v2, s_calls_legacy;      /* calls of the four entry points, by name */
static int s_misuse;                        /* calls refused for the context */
/*  The one device's primary context: an address, never dereferenced. */
static char s_primary;
/*  This thread's stack of current contexts. */
static __thread CUcontext s_stack [MAX_DEPTH];
static __thread int s_depth;

static void s_count (int *counter) { __atomic_fetch_add (counter, 1, __ATOMIC_SEQ_CST); }
static bool s_ready (void) { return __atomic_load_n (&s_initialized, __ATOMIC_SEQ_CST); }

/*  CUDA_SUCCESS when the driver is initialized and this thread has a
    current context (the primary one: the only one that can be pushed). */
static CUresult
s_need_context (void)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (s_depth == 0) {
        s_count (&s_misuse);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    return CUDA_SUCCESS;
}

static block_t *
s_block (uintptr_t pointer)
{
    for (int i = 0; i < MAX_BLOCKS; i++)
        if (s_blocks [i].base && pointer >= (uintptr_t) s_blocks [i].base
        &&  pointer < (uintptr_t) s_blocks [i].base + s_blocks [i].size)
            return &s_blocks [i];
    return NULL;
}

static block_t *
s_free_slot (void)
{
    for (int i = 0; i < MAX_BLOCKS; i++)
        if (!s_blocks [i].base)
            return &s_blocks [i];
    return NULL;
}

static void *
s_alloc (size_t size, bool ipc)
{
    pthread_mutex_lock (&s_lock);
    block_t *b = s_free_slot ();
    void *out = NULL;
    if (b) {
        snprintf (b->name, sizeof b->name, "/pyifake-%d-%d", (int) getpid (), ++s_sequence);
        int fd = shm_open (b->name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0 && ftruncate (fd, (off_t) size) == 0) {
            void *p = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) {
                b->base = (uint8_t *) p;
                b->size = size;
                b->ipc = ipc;
                b->opened = false;
                out = p;
            }
        }
        if (fd >= 0)
            close (fd);
        if (!out)
            shm_unlink (b->name);
    }
    pthread_mutex_unlock (&s_lock);
    return out;
}

EXPORT void *fake_cuda_alloc (size_t size) { return s_alloc (size, true); }
EXPORT void *fake_cuda_alloc_vmm (size_t size) { return s_alloc (size, false); }

EXPORT void
fake_cuda_free (void *pointer)
{
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    if (b && !b->opened) {
        munmap (b->base, b->size);
        shm_unlink (b->name);
        memset (b, 0, sizeof *b);
    }
    pthread_mutex_unlock (&s_lock);
}

EXPORT int fake_cuda_opened (void) { return s_opened; }
EXPORT int fake_cuda_opens (void) { return s_opens; }
EXPORT int fake_cuda_syncs (void) { return s_syncs; }
EXPORT int fake_cuda_depth (void) { return s_depth; }
EXPORT int fake_cuda_calls_v2 (void) { return s_calls_v2; }
EXPORT int fake_cuda_calls_legacy (void) { return s_calls_legacy; }
EXPORT int fake_cuda_misuse (void) { return s_misuse; }

/*  The driver API. */
EXPORT CUresult
cuInit (unsigned flags)
{
    __atomic_store_n (&s_initialized, 1, __ATOMIC_SEQ_CST);
    return CUDA_SUCCESS;
}

EXPORT CUresult
cuGetErrorString (CUresult error, const char **text)
{
    *text = error == CUDA_ERROR_INVALID_CONTEXT ? "invalid device context (fake)"
          : error == CUDA_ERROR_INVALID_HANDLE ? "invalid resource handle (fake)"
          : error == CUDA_ERROR_NOT_INITIALIZED ? "initialization error (fake)"
          : "invalid argument (fake)";
    return CUDA_SUCCESS;
}

EXPORT CUresult
cuDeviceGetCount (int *count)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    *count = 1;
    return CUDA_SUCCESS;
}

EXPORT CUresult
cuDeviceGet (CUdevice *device, int ordinal)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (ordinal != 0)
        return CUDA_ERROR_INVALID_VALUE;
    *device = 0;
    return CUDA_SUCCESS;
}

static CUresult
s_device_uuid (CUuuid *uuid, CUdevice device)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0)
        return CUDA_ERROR_INVALID_VALUE;
    const char *text = getenv ("FAKE_CUDA_UUID");
    memset (uuid->bytes, 0, sizeof uuid->bytes);
    strncpy (uuid->bytes, text ? text : "fake-gpu-0", sizeof uuid->bytes);
    return CUDA_SUCCESS;
}

EXPORT CUresult
cuDevicePrimaryCtxRetain (CUcontext *context, CUdevice device)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (device != 0)
        return CUDA_ERROR_INVALID_VALUE;
    __atomic_store_n (&s_retained, 1, __ATOMIC_SEQ_CST);
    *context = (CUcontext) &s_primary;
    return CUDA_SUCCESS;
}

static CUresult
s_push (CUcontext context)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (context != (CUcontext) &s_primary || !__atomic_load_n (&s_retained, __ATOMIC_SEQ_CST)
    ||  s_depth == MAX_DEPTH) {
        s_count (&s_misuse);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    s_stack [s_depth++] = context;
    return CUDA_SUCCESS;
}

static CUresult
s_pop (CUcontext *context)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    if (s_depth == 0) {
        s_count (&s_misuse);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    CUcontext popped = s_stack [--s_depth];
    if (context)
        *context = popped;
    return CUDA_SUCCESS;
}

EXPORT CUresult
cuCtxSynchronize (void)
{
    CUresult rc = s_need_context ();
    if (rc == CUDA_SUCCESS)
        s_count (&s_syncs);
    return rc;
}

/*  Newer drivers (CUDA 12) export this variant, which takes a context:
    binding it in place of cuCtxSynchronize would be a bug, so it fails
    here. */
EXPORT CUresult cuCtxSynchronize_v2 (CUcontext context) { return CUDA_ERROR_INVALID_CONTEXT; }

EXPORT CUresult
cuPointerGetAttribute (void *data, int attribute, CUdeviceptr pointer)
{
    if (!s_ready ())
        return CUDA_ERROR_NOT_INITIALIZED;
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    block_t copy = b ? *b : (block_t) { 0 };
    pthread_mutex_unlock (&s_lock);
    if (!b)
        return CUDA_ERROR_INVALID_VALUE;
    switch (attribute) {
        case 2:  *(unsigned *) data = 2; return CUDA_SUCCESS;                   /* device */
        case 9:  *(int *) data = 0; return CUDA_SUCCESS;                        /* ordinal */
        case 10: *(int *) data = copy.ipc && !copy.opened; return CUDA_SUCCESS; /* legacy IPC */
        case 11: *(CUdeviceptr *) data = (uintptr_t) copy.base; return CUDA_SUCCESS;
        case 12: *(size_t *) data = copy.size; return CUDA_SUCCESS;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
}

/*  Handle: the object's name, then its size. */
EXPORT CUresult
cuIpcGetMemHandle (CUipcMemHandle *handle, CUdeviceptr pointer)
{
    CUresult rc = s_need_context ();
    if (rc != CUDA_SUCCESS)
        return rc;
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    rc = b && b->ipc && !b->opened && (uintptr_t) b->base == pointer
       ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    if (rc == CUDA_SUCCESS) {
        memset (handle->reserved, 0, sizeof handle->reserved);
        memcpy (handle->reserved, b->name, strlen (b->name));
        memcpy (handle->reserved + 56, &b->size, sizeof b->size);
    }
    pthread_mutex_unlock (&s_lock);
    return rc;
}

static CUresult
s_ipc_open (CUdeviceptr *pointer, CUipcMemHandle handle, unsigned flags)
{
    CUresult rc = s_need_context ();
    if (rc != CUDA_SUCCESS)
        return rc;
    char name [48] = { 0 };
    memcpy (name, handle.reserved, sizeof name - 1);
    size_t size;
    memcpy (&size, handle.reserved + 56, sizeof size);
    int owner = 0;
    if (sscanf (name, "/pyifake-%d-", &owner) != 1)
        return CUDA_ERROR_INVALID_HANDLE;
    if (owner == (int) getpid ())
        return CUDA_ERROR_INVALID_CONTEXT;      /* CUDA refuses a handle of one's own */
    int fd = shm_open (name, O_RDWR, 0);
    if (fd < 0)
        return CUDA_ERROR_INVALID_HANDLE;
    void *p = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close (fd);
    if (p == MAP_FAILED)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock (&s_lock);
    block_t *b = s_free_slot ();
    if (b) {
        b->base = (uint8_t *) p;
        b->size = size;
        b->opened = true;
        snprintf (b->name, sizeof b->name, "%s", name);
        s_opened++;
        s_opens++;
    }
    pthread_mutex_unlock (&s_lock);
    if (!b) {
        munmap (p, size);
        return CUDA_ERROR_INVALID_VALUE;
    }
    *pointer = (uintptr_t) p;
    return CUDA_SUCCESS;
}

EXPORT CUresult
cuIpcCloseMemHandle (CUdeviceptr pointer)
{
    CUresult rc = s_need_context ();
    if (rc != CUDA_SUCCESS)
        return rc;
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    rc = b && b->opened && (uintptr_t) b->base == pointer
       ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    if (rc == CUDA_SUCCESS) {
        munmap (b->base, b->size);
        memset (b, 0, sizeof *b);
        s_opened--;
    }
    pthread_mutex_unlock (&s_lock);
    return rc;
}

/*  The four entry points that cuda.h binds to a _v2 symbol, under both
    names, as the real driver exports them; the calls are counted by name.
    A driver from before the _v2 names (-DFAKE_CUDA_LEGACY) has only the
    plain ones. */
#ifndef FAKE_CUDA_LEGACY
EXPORT CUresult
cuDeviceGetUuid_v2 (CUuuid *uuid, CUdevice device)
{
    s_count (&s_calls_v2);
    return s_device_uuid (uuid, device);
}

EXPORT CUresult
cuCtxPushCurrent_v2 (CUcontext context)
{
    s_count (&s_calls_v2);
    return s_push (context);
}

EXPORT CUresult
cuCtxPopCurrent_v2 (CUcontext *context)
{
    s_count (&s_calls_v2);
    return s_pop (context);
}

EXPORT CUresult
cuIpcOpenMemHandle_v2 (CUdeviceptr *pointer, CUipcMemHandle handle, unsigned flags)
{
    s_count (&s_calls_v2);
    return s_ipc_open (pointer, handle, flags);
}
#endif

EXPORT CUresult
cuDeviceGetUuid (CUuuid *uuid, CUdevice device)
{
    s_count (&s_calls_legacy);
    return s_device_uuid (uuid, device);
}

EXPORT CUresult
cuCtxPushCurrent (CUcontext context)
{
    s_count (&s_calls_legacy);
    return s_push (context);
}

EXPORT CUresult
cuCtxPopCurrent (CUcontext *context)
{
    s_count (&s_calls_legacy);
    return s_pop (context);
}

EXPORT CUresult
cuIpcOpenMemHandle (CUdeviceptr *pointer, CUipcMemHandle handle, unsigned flags)
{
    s_count (&s_calls_legacy);
    return s_ipc_open (pointer, handle, flags);
}
