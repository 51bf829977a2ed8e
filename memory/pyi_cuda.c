/*  pyi_cuda: the CUDA driver API, loaded with dlopen when present.

    Only the driver (libcuda.so.1) is used, never the runtime: it is
    installed with every NVIDIA driver, whatever CUDA toolkit or PyTorch
    wheel the process uses, and its primary context is the runtime's. The
    few types and constants needed are declared here with the ABI of
    cuda.h, so nothing of CUDA is needed to build.
*/
#include "pyi_cuda_internal.h"
#include "pyi_library_internal.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;                   /* 0: CUDA_SUCCESS */
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;
typedef struct { char reserved [PYI_CUDA_HANDLE]; } CUipcMemHandle;
typedef struct { char bytes [PYI_CUDA_UUID]; } CUuuid;

/*  CUpointer_attribute values (cuda.h). */
#define ATTRIBUTE_MEMORY_TYPE 2
#define ATTRIBUTE_DEVICE_ORDINAL 9
#define ATTRIBUTE_LEGACY_IPC_CAPABLE 10
#define ATTRIBUTE_RANGE_START 11
#define ATTRIBUTE_RANGE_SIZE 12
#define MEMORYTYPE_DEVICE 2                 /* CU_MEMORYTYPE_DEVICE */
#define IPC_LAZY_ENABLE_PEER_ACCESS 1       /* CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS */
#define MAX_DEVICES 64

/*  The driver entry points, by the symbol names cuda.h binds the plain
    names to (a _v2 where the ABI changed, then the old name); never "_v2
    first" in general: newer drivers export _v2 variants with other
    signatures (cuCtxSynchronize_v2 takes a context). */
static struct {
    CUresult (*init) (unsigned);
    CUresult (*error_string) (CUresult, const char **);
    CUresult (*device_count) (int *);
    CUresult (*device_get) (CUdevice *, int);
    CUresult (*device_uuid) (CUuuid *, CUdevice);
    CUresult (*primary_retain) (CUcontext *, CUdevice);
    CUresult (*push) (CUcontext);
    CUresult (*pop) (CUcontext *);
    CUresult (*synchronize) (void);
    CUresult (*pointer_attribute) (void *, int, CUdeviceptr);
    CUresult (*ipc_get) (CUipcMemHandle *, CUdeviceptr);
    CUresult (*ipc_open) (CUdeviceptr *, CUipcMemHandle, unsigned);
    CUresult (*ipc_close) (CUdeviceptr);
} s_cu;

static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static bool s_ready;                       /* driver loaded and initialised */
static char s_why [256];                   /* why not, when not */
static int s_devices;
static CUuuid s_uuids [MAX_DEVICES];
static CUcontext s_contexts [MAX_DEVICES]; /* primary contexts, retained on first use */
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t s_touched;         /* bit d: device d shared or received memory */

/*  The first of names ("a|b") that library exports. */
static void *
s_symbol (void *library, const char *names)
{
    char name [64];
    while (*names) {
        size_t length = strcspn (names, "|");
        snprintf (name, sizeof (name), "%.*s", (int) length, names);
        void *symbol = dlsym (library, name);
        if (symbol)
            return symbol;
        names += length + (names [length] == '|');
    }
    return NULL;
}

static void
s_load (void)
{
    const char *path = getenv ("PYI_CUDA_LIBRARY");
    if (!path || !*path)
        path = "libcuda.so.1";
    void *library = dlopen (path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        snprintf (s_why, sizeof (s_why), "no CUDA driver: %s", dlerror ());
        return;
    }
    struct { void **slot; const char *name; } table [] = {
        { (void **) &s_cu.init, "cuInit" },
        { (void **) &s_cu.error_string, "cuGetErrorString" },
        { (void **) &s_cu.device_count, "cuDeviceGetCount" },
        { (void **) &s_cu.device_get, "cuDeviceGet" },
        { (void **) &s_cu.device_uuid, "cuDeviceGetUuid_v2|cuDeviceGetUuid" },
        { (void **) &s_cu.primary_retain, "cuDevicePrimaryCtxRetain" },
        { (void **) &s_cu.push, "cuCtxPushCurrent_v2|cuCtxPushCurrent" },
        { (void **) &s_cu.pop, "cuCtxPopCurrent_v2|cuCtxPopCurrent" },
        { (void **) &s_cu.synchronize, "cuCtxSynchronize" },
        { (void **) &s_cu.pointer_attribute, "cuPointerGetAttribute" },
        { (void **) &s_cu.ipc_get, "cuIpcGetMemHandle" },
        { (void **) &s_cu.ipc_open, "cuIpcOpenMemHandle_v2|cuIpcOpenMemHandle" },
        { (void **) &s_cu.ipc_close, "cuIpcCloseMemHandle" },
    };
    for (size_t i = 0; i < sizeof (table) / sizeof (table [0]); i++)
        if (!(*table [i].slot = s_symbol (library, table [i].name))) {
            snprintf (s_why, sizeof (s_why), "CUDA driver %s lacks %s", path, table [i].name);
            return;     /* the library stays loaded: harmless */
        }
    CUresult rc = s_cu.init (0);
    if (rc == 0)
        rc = s_cu.device_count (&s_devices);
    if (rc) {
        const char *text = NULL;
        s_cu.error_string (rc, &text);
        snprintf (s_why, sizeof (s_why), "CUDA driver cannot start: %s (error %d)",
                  text ? text : "unknown error", rc);
        return;
    }
    if (s_devices > MAX_DEVICES)
        s_devices = MAX_DEVICES;
    for (int d = 0; d < s_devices; d++) {
        CUdevice device;
        if (s_cu.device_get (&device, d) || s_cu.device_uuid (&s_uuids [d], device)) {
            snprintf (s_why, sizeof (s_why), "cannot read the UUID of CUDA device %d", d);
            return;
        }
    }
    if (s_devices == 0) {
        snprintf (s_why, sizeof (s_why), "the CUDA driver sees no device");
        return;
    }
    s_ready = true;
}

static bool
s_start (void)
{
    pthread_once (&s_once, s_load);
    if (!s_ready)
        pyi_set_error ("%s", s_why);
    return s_ready;
}

/*  Set the error text from a driver result; returns -1. */
static int
s_fail (CUresult rc, const char *what)
{
    const char *text = NULL;
    if (s_cu.error_string)
        s_cu.error_string (rc, &text);
    pyi_set_error ("%s: %s (CUDA error %d)", what, text ? text : "unknown error", rc);
    return -1;
}

/*  Make device d's primary context current on this thread (retained on
    first use, kept for the life of the process). 0 or -1. */
static int
s_enter (int d)
{
    if (d < 0 || d >= s_devices) {
        pyi_set_error ("CUDA device %d does not exist here (%d devices)", d, s_devices);
        return -1;
    }
    pthread_mutex_lock (&s_lock);
    CUresult rc = 0;
    if (!s_contexts [d]) {
        CUdevice device;
        rc = s_cu.device_get (&device, d);
        if (rc == 0)
            rc = s_cu.primary_retain (&s_contexts [d], device);
    }
    CUcontext context = s_contexts [d];
    pthread_mutex_unlock (&s_lock);
    if (rc)
        return s_fail (rc, "cannot retain the CUDA primary context");
    if ((rc = s_cu.push (context)))
        return s_fail (rc, "cannot make the CUDA context current");
    return 0;
}

static void
s_leave (void)
{
    CUcontext popped;
    s_cu.pop (&popped);
}

int
pyi_cuda_available (void)
{
    return s_start () ? 1 : 0;
}

int
pyi_cuda_active (void)
{
    return atomic_load_explicit (&s_touched, memory_order_relaxed) != 0;
}

int
pyi_cuda_synchronize (void)
{
    uint64_t touched = atomic_load_explicit (&s_touched, memory_order_acquire);
    for (int d = 0; touched && d < MAX_DEVICES; d++, touched >>= 1) {
        if (!(touched & 1))
            continue;
        if (s_enter (d))
            return -1;
        CUresult rc = s_cu.synchronize ();
        s_leave ();
        if (rc)
            return s_fail (rc, "cannot synchronize the CUDA device");
    }
    return 0;
}

int
pyi_cuda_export (const void *ptr, int hint, uintptr_t *base, size_t *size, int *device,
                 uint8_t uuid [PYI_CUDA_UUID], uint8_t handle [PYI_CUDA_HANDLE])
{
    if (!s_start ())
        return -1;
    /*  Ask in the context of the device the caller named, then work in
        the context of the device the pointer is on. */
    if (s_enter (hint >= 0 && hint < s_devices ? hint : 0))
        return -1;
    CUdeviceptr pointer = (CUdeviceptr) (uintptr_t) ptr;
    int ordinal = -1, kind = 0;
    CUresult rc = s_cu.pointer_attribute (&ordinal, ATTRIBUTE_DEVICE_ORDINAL, pointer);
    if (rc == 0)
        rc = s_cu.pointer_attribute (&kind, ATTRIBUTE_MEMORY_TYPE, pointer);
    s_leave ();
    if (rc || kind != MEMORYTYPE_DEVICE)
        return s_fail (rc, "not CUDA device memory");
    if (s_enter (ordinal))
        return -1;
    CUdeviceptr start = 0;
    size_t length = 0;
    int capable = 0;
    CUipcMemHandle ipc;
    if ((rc = s_cu.pointer_attribute (&start, ATTRIBUTE_RANGE_START, pointer))
    ||  (rc = s_cu.pointer_attribute (&length, ATTRIBUTE_RANGE_SIZE, pointer))) {
        s_leave ();
        return s_fail (rc, "cannot find the allocation of a CUDA tensor");
    }
    rc = s_cu.pointer_attribute (&capable, ATTRIBUTE_LEGACY_IPC_CAPABLE, pointer);
    if (rc == 0 && !capable) {
        s_leave ();
        pyi_set_error ("this CUDA allocation cannot be shared with CUDA IPC (made with the "
                       "virtual memory API or from a memory pool: with PyTorch, unset "
                       "expandable_segments and backend:cudaMallocAsync in "
                       "PYTORCH_CUDA_ALLOC_CONF)");
        return -1;
    }
    /*  The receiver must read finished data. */
    if ((rc = s_cu.synchronize ()) || (rc = s_cu.ipc_get (&ipc, start))) {
        s_leave ();
        return s_fail (rc, "cannot make a CUDA IPC handle");
    }
    s_leave ();
    atomic_fetch_or (&s_touched, (uint64_t) 1 << ordinal);
    *base = (uintptr_t) start;
    *size = length;
    *device = ordinal;
    memcpy (uuid, s_uuids [ordinal].bytes, PYI_CUDA_UUID);
    memcpy (handle, ipc.reserved, PYI_CUDA_HANDLE);
    return 0;
}

int
pyi_cuda_open (const uint8_t uuid [PYI_CUDA_UUID], const uint8_t handle [PYI_CUDA_HANDLE],
               uintptr_t *pointer, int *device)
{
    if (!s_start ())
        return -1;
    int d = 0;
    while (d < s_devices && memcmp (s_uuids [d].bytes, uuid, PYI_CUDA_UUID))
        d++;
    if (d == s_devices) {
        pyi_set_error ("the CUDA tensor's device is not visible in this process "
                       "(CUDA_VISIBLE_DEVICES differs?)");
        return -1;
    }
    if (s_enter (d))
        return -1;
    CUipcMemHandle ipc;
    memcpy (ipc.reserved, handle, PYI_CUDA_HANDLE);
    CUdeviceptr opened = 0;
    CUresult rc = s_cu.ipc_open (&opened, ipc, IPC_LAZY_ENABLE_PEER_ACCESS);
    s_leave ();
    if (rc)
        return s_fail (rc, "cannot open the CUDA IPC handle");
    atomic_fetch_or (&s_touched, (uint64_t) 1 << d);
    *pointer = (uintptr_t) opened;
    *device = d;
    return 0;
}

void
pyi_cuda_close (uintptr_t pointer, int device)
{
    if (!s_ready || s_enter (device))
        return;
    s_cu.ipc_close ((CUdeviceptr) pointer);
    s_leave ();
}
