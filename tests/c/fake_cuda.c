/*  fake_cuda: a stand-in for the CUDA driver (libcuda.so.1) for the tests
    of CUDA regions on machines without a GPU: test_cuda loads it through
    $PYI_CUDA_LIBRARY. It implements the driver calls libpyisolate uses,
    with the same signatures and the same rules where the tests depend on
    them: "device memory" is host memory in a POSIX shared memory object,
    an IPC handle names that object, opening a handle maps it (and fails in
    the process that made it, as CUDA does), pointer attributes answer
    for allocations and opened handles only.

    Extra entry points for the tests: fake_cuda_alloc (a device
    allocation), fake_cuda_alloc_vmm (one CUDA IPC cannot share, like
    PyTorch's expandable segments), fake_cuda_free, fake_cuda_opened
    (handles open now), fake_cuda_opens (handles ever opened),
    fake_cuda_syncs (cuCtxSynchronize calls). $FAKE_CUDA_UUID changes the
    device's UUID (a process that sees another GPU).
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
enum { OK = 0, INVALID_VALUE = 1, INVALID_CONTEXT = 201, INVALID_HANDLE = 400 };

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

/*  The driver API. */
EXPORT int cuInit (unsigned flags) { return OK; }

EXPORT int
cuGetErrorString (int error, const char **text)
{
    *text = error == INVALID_CONTEXT ? "invalid device context (fake)"
          : error == INVALID_HANDLE ? "invalid resource handle (fake)"
          : "invalid argument (fake)";
    return OK;
}

EXPORT int cuDeviceGetCount (int *count) { *count = 1; return OK; }

EXPORT int
cuDeviceGet (int *device, int ordinal)
{
    if (ordinal != 0)
        return INVALID_VALUE;
    *device = 0;
    return OK;
}

EXPORT int
cuDeviceGetUuid (char uuid [16], int device)
{
    const char *text = getenv ("FAKE_CUDA_UUID");
    memset (uuid, 0, 16);
    strncpy (uuid, text ? text : "fake-gpu-0", 16);
    return OK;
}

EXPORT int
cuDevicePrimaryCtxRetain (void **context, int device)
{
    *context = (void *) (uintptr_t) (device + 1);
    return OK;
}

EXPORT int cuCtxPushCurrent (void *context) { return context ? OK : INVALID_CONTEXT; }
EXPORT int cuCtxPopCurrent (void **context) { *context = NULL; return OK; }

EXPORT int
cuCtxSynchronize (void)
{
    __atomic_fetch_add (&s_syncs, 1, __ATOMIC_SEQ_CST);
    return OK;
}

/*  Newer drivers export this variant, which takes a context: binding it
    in place of cuCtxSynchronize would be a bug, so it fails here. */
EXPORT int cuCtxSynchronize_v2 (void *context) { return INVALID_CONTEXT; }

EXPORT int
cuPointerGetAttribute (void *data, int attribute, unsigned long long pointer)
{
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    block_t copy = b ? *b : (block_t) { 0 };
    pthread_mutex_unlock (&s_lock);
    if (!b)
        return INVALID_VALUE;
    switch (attribute) {
        case 2:  *(unsigned *) data = 2; return OK;                         /* device */
        case 9:  *(int *) data = 0; return OK;                              /* ordinal */
        case 10: *(int *) data = copy.ipc && !copy.opened; return OK;       /* legacy IPC */
        case 11: *(unsigned long long *) data = (uintptr_t) copy.base; return OK;
        case 12: *(size_t *) data = copy.size; return OK;
        default: return INVALID_VALUE;
    }
}

/*  Handle: the object's name, then its size. */
EXPORT int
cuIpcGetMemHandle (char handle [64], unsigned long long pointer)
{
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    int rc = b && b->ipc && !b->opened && (uintptr_t) b->base == pointer ? OK : INVALID_VALUE;
    if (rc == OK) {
        memset (handle, 0, 64);
        memcpy (handle, b->name, strlen (b->name));
        memcpy (handle + 56, &b->size, sizeof b->size);
    }
    pthread_mutex_unlock (&s_lock);
    return rc;
}

typedef struct { char reserved [64]; } handle_t;

EXPORT int
cuIpcOpenMemHandle (unsigned long long *pointer, handle_t handle, unsigned flags)
{
    char name [48] = { 0 };
    memcpy (name, handle.reserved, sizeof name - 1);
    size_t size;
    memcpy (&size, handle.reserved + 56, sizeof size);
    int owner = 0;
    if (sscanf (name, "/pyifake-%d-", &owner) != 1)
        return INVALID_HANDLE;
    if (owner == (int) getpid ())
        return INVALID_CONTEXT;         /* CUDA refuses a handle of one's own */
    int fd = shm_open (name, O_RDWR, 0);
    if (fd < 0)
        return INVALID_HANDLE;
    void *p = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close (fd);
    if (p == MAP_FAILED)
        return INVALID_HANDLE;
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
        return INVALID_VALUE;
    }
    *pointer = (uintptr_t) p;
    return OK;
}

EXPORT int
cuIpcCloseMemHandle (unsigned long long pointer)
{
    pthread_mutex_lock (&s_lock);
    block_t *b = s_block ((uintptr_t) pointer);
    int rc = b && b->opened && (uintptr_t) b->base == pointer ? OK : INVALID_VALUE;
    if (rc == OK) {
        munmap (b->base, b->size);
        memset (b, 0, sizeof *b);
        s_opened--;
    }
    pthread_mutex_unlock (&s_lock);
    return rc;
}
