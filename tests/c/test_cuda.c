/*  test_cuda: CUDA tensors across processes, on a stand-in driver.

    The machines that run the tests have no GPU, so the driver here is
    tests/c/fake_cuda.c, loaded through $PYI_CUDA_LIBRARY exactly as
    libcuda.so.1 would be: the code under test (pyi_cuda.c, the CUDA
    regions, the descriptors) is the code that runs on a GPU. What only a
    GPU can show (real IPC handles, streams, PyTorch) is in
    tests/python/test_cuda.py, run by tests/gpu/run.

    Real processes: this program starts copies of itself as a "child"
    that decodes descriptors on command.

    Guarantees checked:
    - without a driver, CUDA is reported unavailable with a reason and a
      CUDA tensor is refused with an error, not a crash;
    - a CUDA tensor (a piece of a larger allocation, at an offset, as the
      PyTorch caching allocator hands out) is described by one region per
      allocation: 100 crossings of it make one region, and the receiver
      opens the IPC handle once however many descriptors it decodes;
    - the receiver sees the sender's bytes and the sender the receiver's
      writes (same memory), at the right offset;
    - the sender's work is finished before a descriptor leaves (the device
      is synchronized at export);
    - the exporter keeps the region until the receivers let go: collect
      gives nothing while a receiver maps it or a message names it, and the
      region's name once the receiver released it, exited, or was killed
      with SIGKILL while holding it; then nothing is left in /dev/shm;
    - a tensor coming back to its exporter is its own memory (no handle is
      opened), and a receiver passes a received tensor on by the same
      region (it exports nothing of its own);
    - an allocation CUDA IPC cannot share (expandable segments) is refused
      with a hint; a descriptor whose device type and region kind disagree
      is refused; a device the receiver does not see is refused;
    - the driver is bound by the names a GPU's libcuda.so.1 gets used by:
      the _v2 entry points (cuDeviceGetUuid_v2, cuCtxPushCurrent_v2,
      cuCtxPopCurrent_v2, cuIpcOpenMemHandle_v2), never their plain names,
      when the driver has both; a driver with the plain names only (before
      CUDA 11) works through them;
    - the current context: every call makes the device's primary context
      current and pops it again, on whatever thread, success or failure:
      no driver call is made without a current context, the thread's
      context stack is as the call found it, and a context the caller made
      current stays current.
*/
#include "testchild.h"
#include <dlfcn.h>
#include <pthread.h>
#include <sys/mman.h>

/*  From fake_cuda.c. */
void *fake_cuda_alloc (size_t size);
void *fake_cuda_alloc_vmm (size_t size);
void fake_cuda_free (void *pointer);
int fake_cuda_opened (void);
int fake_cuda_opens (void);
int fake_cuda_syncs (void);
int fake_cuda_depth (void);
int fake_cuda_calls_v2 (void);
int fake_cuda_calls_legacy (void);
int fake_cuda_misuse (void);
int cuDevicePrimaryCtxRetain (void **context, int device);
int cuCtxPushCurrent_v2 (void *context);
int cuCtxPopCurrent_v2 (void **context);

#define MAX_LINE T_LINE

static void
s_on_failure (void)
{
    t_kill_children ();
    pyi_region_remove_session (NULL);
    /*  The stand-in's "device memory" of this process. */
    char prefix [64];
    snprintf (prefix, sizeof prefix, "pyifake-%d-", (int) getpid ());
    DIR *dir = opendir ("/dev/shm");
    struct dirent *entry;
    while (dir && (entry = readdir (dir))) {
        char name [300];
        snprintf (name, sizeof name, "/%s", entry->d_name);
        if (strncmp (entry->d_name, prefix, strlen (prefix)) == 0)
            shm_unlink (name);
    }
    if (dir)
        closedir (dir);
}

/*  A function of the driver this process loaded ($PYI_CUDA_LIBRARY,
    which may be another stand-in than the one linked in). */
static void *
s_driver (const char *name)
{
    void *library = dlopen (getenv ("PYI_CUDA_LIBRARY"), RTLD_NOW | RTLD_NOLOAD);
    CHECK_MSG (library, "the driver is not loaded: %s", dlerror ());
    void *symbol = dlsym (library, name);
    CHECK_MSG (symbol, "the driver lacks %s", name);
    dlclose (library);
    return symbol;
}

static int
s_driver_int (const char *name)
{
    return ((int (*) (void)) s_driver (name)) ();
}

/*  "v2 legacy depth misuse": the loaded driver's counts of calls by name,
    this thread's context depth, calls refused for the context. */
static void
s_print_calls (void)
{
    printf ("%d %d %d %d\n", s_driver_int ("fake_cuda_calls_v2"),
            s_driver_int ("fake_cuda_calls_legacy"), s_driver_int ("fake_cuda_depth"),
            s_driver_int ("fake_cuda_misuse"));
}

/*  An answer of s_print_calls: bound to the _v2 names (or, legacy, to
    the plain ones), every context popped, none missing. */
static void
s_check_calls (const char *answer, bool legacy)
{
    int v2 = -1, plain = -1, depth = -1, misuse = -1;
    CHECK_MSG (sscanf (answer, "%d %d %d %d", &v2, &plain, &depth, &misuse) == 4, "%s", answer);
    if (legacy) {
        CHECK_INT (v2, 0);
        CHECK_MSG (plain > 0, "no call of the plain names: %s", answer);
    }
    else {
        CHECK_MSG (v2 > 0, "no call of the _v2 names: %s", answer);
        CHECK_MSG (plain == 0, "%d calls of the plain names where _v2 exists", plain);
    }
    CHECK_MSG (depth == 0, "%d contexts left current on the thread", depth);
    CHECK_MSG (misuse == 0, "%d driver calls refused for the context", misuse);
}

/*  Descriptors travel as hex on the pipes. */
static void
s_hex (const uint8_t *data, size_t size, char *out)
{
    for (size_t i = 0; i < size; i++)
        sprintf (out + 2 * i, "%02x", data [i]);
    out [2 * size] = 0;
}

static size_t
s_unhex (const char *text, uint8_t *out, size_t max)
{
    size_t n = 0;
    unsigned byte;
    while (n < max && sscanf (text + 2 * n, "%2x", &byte) == 1)
        out [n++] = (uint8_t) byte;
    return n;
}

/*  A 1-D float32 CUDA tensor of count elements at data. */
static DLTensor
s_tensor (void *data, int64_t *shape)
{
    DLTensor t = { data, { kDLCUDA, 0 }, 1, { kDLFloat, 32, 1 }, shape, NULL, 0 };
    return t;
}

/*  Pack t into hex (one message in flight). */
static void
s_pack_hex (const DLTensor *t, char *out)
{
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int n = pyi_tensor_pack (t, buffer, sizeof buffer);
    CHECK_MSG (n > 0, "%s", pyi_last_error ());
    s_hex (buffer, (size_t) n, out);
}

/*  The child: decodes descriptors and keeps the tensors. */
static int
s_child_main (void)
{
    static char line [MAX_LINE];
    DLManagedTensor *held [128];
    int count = 0;
    setvbuf (stdout, NULL, _IOLBF, 0);
    while (fgets (line, sizeof line, stdin)) {
        uint8_t desc [PYI_TENSOR_MAX_DESCRIPTOR];
        char hex [2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
        unsigned long a, b;
        if (strncmp (line, "decode ", 7) == 0) {
            size_t n = s_unhex (line + 7, desc, sizeof desc);
            DLManagedTensor *m = pyi_tensor_decode (desc, n);
            if (!m)
                printf ("err %s\n", pyi_last_error ());
            else {
                held [count++] = m;
                printf ("ok %d %d\n", (int) m->dl_tensor.device.device_type,
                        m->dl_tensor.device.device_id);
            }
        }
        else
        if (sscanf (line, "read %lu", &a) == 1)
            printf ("%u\n", ((uint8_t *) held [count - 1]->dl_tensor.data) [a]);
        else
        if (sscanf (line, "write %lu %lu", &a, &b) == 2) {
            ((uint8_t *) held [count - 1]->dl_tensor.data) [a] = (uint8_t) b;
            printf ("ok\n");
        }
        else
        if (strncmp (line, "pack", 4) == 0) {
            /*  Pass the last tensor on. */
            int n = pyi_tensor_pack (&held [count - 1]->dl_tensor, desc, sizeof desc);
            if (n < 0)
                printf ("err %s\n", pyi_last_error ());
            else {
                s_hex (desc, (size_t) n, hex);
                printf ("%s %zu\n", hex, pyi_region_exported ());
            }
        }
        else
        if (strncmp (line, "opened", 6) == 0)
            printf ("%d %d\n", s_driver_int ("fake_cuda_opened"),
                    s_driver_int ("fake_cuda_opens"));
        else
        if (strncmp (line, "calls", 5) == 0)
            s_print_calls ();
        else
        if (strncmp (line, "release", 7) == 0) {
            while (count > 0) {
                DLManagedTensor *m = held [--count];
                m->deleter (m);
            }
            printf ("ok\n");
        }
        else
        if (strncmp (line, "exit", 4) == 0)
            exit (0);
        else
            printf ("err unknown command\n");
    }
    return 0;
}

static int
s_collect (char *name)
{
    char names [8][PYI_REGION_MAX_NAME + 1];
    int n = pyi_region_collect (names, 8);
    if (n > 0 && name)
        snprintf (name, PYI_REGION_MAX_NAME + 1, "%s", names [0]);
    return n;
}

static bool
s_exists (const char *name)
{
    char path [300];
    snprintf (path, sizeof path, "/dev/shm%s", name);
    return access (path, F_OK) == 0;
}

/*  This process's driver calls so far: by the _v2 names, contexts popped. */
static void
s_check_here (void)
{
    char answer [64];
    snprintf (answer, sizeof answer, "%d %d %d %d", fake_cuda_calls_v2 (),
              fake_cuda_calls_legacy (), fake_cuda_depth (), fake_cuda_misuse ());
    s_check_calls (answer, false);
}

static void
test_no_driver (void)
{
    TEST_BEGIN ("no driver: unavailable, CUDA tensors refused cleanly");
    /*  A process of its own: the driver is loaded once per process. */
    char *argv [] = { "test_cuda", "nodriver", NULL };
    char *env [] = { "PYI_CUDA_LIBRARY=/nonexistent/libcuda.so.1", NULL };
    pid_t pid;
    CHECK (posix_spawn (&pid, "/proc/self/exe", NULL, NULL, argv, env) == 0);
    int status;
    CHECK (waitpid (pid, &status, 0) == pid);
    CHECK_MSG (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
}

static int
s_nodriver_main (void)
{
    CHECK_INT (pyi_cuda_available (), 0);
    CHECK_MSG (strstr (pyi_last_error (), "no CUDA driver"), "%s", pyi_last_error ());
    CHECK_INT (pyi_cuda_synchronize (), 0);        /* nothing to do */
    float host [16];
    int64_t shape [1] = { 16 };
    DLTensor t = s_tensor (host, shape);
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    CHECK_INT (pyi_tensor_pack (&t, buffer, sizeof buffer), -1);
    CHECK_MSG (strstr (pyi_last_error (), "no CUDA driver"), "%s", pyi_last_error ());
    /*  Host regions work as ever. */
    pyi_region_t *region = pyi_region_new (64);
    CHECK (region);
    pyi_region_release (&region);
    return 0;
}

static void
test_cross (void)
{
    TEST_BEGIN ("one region per allocation, one open per process, same memory");
    CHECK_MSG (pyi_cuda_available () == 1, "%s", pyi_last_error ());
    size_t size = 1 << 20;
    uint8_t *block = (uint8_t *) fake_cuda_alloc (size);
    CHECK (block);
    for (size_t i = 0; i < size; i++)
        block [i] = (uint8_t) (i % 251);
    /*  A piece of the allocation, at an offset. */
    int64_t shape [1] = { 1024 };
    DLTensor t = s_tensor (block + 8192, shape);
    int syncs = fake_cuda_syncs ();
    static char hex [100][2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
    for (int i = 0; i < 100; i++)
        s_pack_hex (&t, hex [i]);
    CHECK_MSG (fake_cuda_syncs () > syncs, "the device was not synchronized at export");
    CHECK_INT (pyi_region_exported (), 1);
    size_t offset = 0;
    pyi_region_t *region = pyi_region_find_cuda (block + 8192, 0, &offset);
    CHECK (region);
    CHECK_INT (offset, 8192);
    CHECK (pyi_region_data (region) == block);
    CHECK_INT (pyi_region_size (region), size);
    CHECK_INT (pyi_region_device (region), 0);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    CHECK_INT (pyi_region_inflight (region), 100);
    pyi_region_release (&region);
    CHECK (s_exists (name));

    t_child_t *child = t_spawn_self ("child", NULL);
    for (int i = 0; i < 100; i++)
        CHECK_STR (t_ask (child, "decode %s", hex [i]), "ok 2 0");
    CHECK_STR (t_ask (child, "opened"), "1 1");     /* one handle opened, once */
    char expect [16];
    snprintf (expect, sizeof expect, "%u", block [8192 + 5]);
    CHECK_STR (t_ask (child, "read 5"), expect);    /* element 0 is at the offset */
    CHECK_INT (s_collect (NULL), 0);                /* the child maps it */
    CHECK_STR (t_ask (child, "write 3 77"), "ok");
    CHECK_INT (block [8192 + 3], 77);
    block [8192 + 4] = 99;
    CHECK_STR (t_ask (child, "read 4"), "99");

    /*  Passing on: the same region, nothing exported by the child. */
    const char *answer = t_ask (child, "pack");
    char passed [2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
    size_t exported = 9;
    CHECK (sscanf (answer, "%2048s %zu", passed, &exported) == 2);
    CHECK_INT (exported, 0);
    uint8_t desc [PYI_TENSOR_MAX_DESCRIPTOR];
    size_t n = s_unhex (passed, desc, sizeof desc);
    /*  Back at the exporter: its own memory, no handle opened. */
    int opens = fake_cuda_opens ();
    DLManagedTensor *back = pyi_tensor_decode (desc, n);
    CHECK_MSG (back, "%s", pyi_last_error ());
    CHECK (back->dl_tensor.data == block + 8192);
    CHECK_INT (back->dl_tensor.device.device_type, kDLCUDA);
    CHECK_INT (fake_cuda_opens (), opens);
    CHECK_INT (s_collect (NULL), 0);                /* our own view holds it */
    back->deleter (back);

    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK_STR (t_ask (child, "opened"), "0 1");     /* closed at the last release */
    s_check_calls (t_ask (child, "calls"), false);  /* the receiver's driver calls */
    char collected [PYI_REGION_MAX_NAME + 1] = "";
    CHECK_INT (s_collect (collected), 1);
    CHECK_STR (collected, name);
    CHECK (!s_exists (name));
    CHECK_INT (pyi_region_exported (), 0);
    fprintf (child->in, "exit\n");
    fflush (child->in);
    CHECK (WIFEXITED (t_reap (child)));
    fake_cuda_free (block);
    s_check_here ();                                /* the exporter's */
}

static void
test_killed (void)
{
    TEST_BEGIN ("a receiver killed while holding: the exporter can collect");
    uint8_t *block = (uint8_t *) fake_cuda_alloc (65536);
    CHECK (block);
    int64_t shape [1] = { 16 };
    DLTensor t = s_tensor (block, shape);
    char hex [2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
    s_pack_hex (&t, hex);
    t_child_t *child = t_spawn_self ("child", NULL);
    CHECK_STR (t_ask (child, "decode %s", hex), "ok 2 0");
    CHECK_INT (s_collect (NULL), 0);
    kill (child->pid, SIGKILL);
    CHECK (WIFSIGNALED (t_reap (child)));
    CHECK_INT (s_collect (NULL), 1);
    CHECK_INT (pyi_region_exported (), 0);

    /*  A message in flight keeps it; a receiver that exits normally
        without releasing lets go too. */
    s_pack_hex (&t, hex);
    CHECK_INT (s_collect (NULL), 0);
    child = t_spawn_self ("child", NULL);
    CHECK_STR (t_ask (child, "decode %s", hex), "ok 2 0");
    fprintf (child->in, "exit\n");
    fflush (child->in);
    CHECK (WIFEXITED (t_reap (child)));
    CHECK_INT (s_collect (NULL), 1);
    fake_cuda_free (block);
}

static void
test_refused (void)
{
    TEST_BEGIN ("refused: unshareable allocation, kind mismatch, unseen device");
    uint8_t *vmm = (uint8_t *) fake_cuda_alloc_vmm (4096);
    CHECK (vmm);
    int64_t shape [1] = { 16 };
    DLTensor t = s_tensor (vmm, shape);
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    CHECK_INT (pyi_tensor_pack (&t, buffer, sizeof buffer), -1);
    CHECK_MSG (strstr (pyi_last_error (), "expandable_segments"), "%s", pyi_last_error ());
    fake_cuda_free (vmm);
    /*  Host memory that claims to be CUDA. */
    float host [16];
    t = s_tensor (host, shape);
    CHECK_INT (pyi_tensor_pack (&t, buffer, sizeof buffer), -1);
    CHECK_MSG (strstr (pyi_last_error (), "not CUDA device memory"), "%s", pyi_last_error ());

    /*  A host region's descriptor that says CUDA, and the other way. */
    pyi_region_t *region = pyi_region_new (64);
    CHECK (region);
    DLTensor h = { pyi_region_data (region), { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 }, shape,
                   NULL, 0 };
    int n = pyi_tensor_pack (&h, buffer, sizeof buffer);
    CHECK (n > 4 && buffer [2] == 0x92 && buffer [3] == kDLCPU);
    buffer [3] = kDLCUDA;
    CHECK (pyi_tensor_decode (buffer, (size_t) n) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "names a host region"), "%s", pyi_last_error ());
    pyi_region_release (&region);

    uint8_t *block = (uint8_t *) fake_cuda_alloc (4096);
    t = s_tensor (block, shape);
    n = pyi_tensor_pack (&t, buffer, sizeof buffer);
    CHECK (n > 4 && buffer [3] == kDLCUDA);
    char hex [2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
    s_hex (buffer, (size_t) n, hex);
    buffer [3] = kDLCPU;
    CHECK (pyi_tensor_decode (buffer, (size_t) n) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "names a CUDA region"), "%s", pyi_last_error ());

    /*  A receiver whose GPU is another one. */
    s_pack_hex (&t, hex);
    t_child_t *child = t_spawn_self ("child", "FAKE_CUDA_UUID=another-gpu");
    const char *answer = t_ask (child, "decode %s", hex);
    CHECK_MSG (strstr (answer, "not visible"), "%s", answer);
    fprintf (child->in, "exit\n");
    fflush (child->in);
    CHECK (WIFEXITED (t_reap (child)));
    CHECK_INT (s_collect (NULL), 1);
    fake_cuda_free (block);
}

/*  Pack a descriptor of t on a thread of its own (no context current
    there before the call): its result, and the thread's depth after. */
typedef struct {
    DLTensor tensor;
    int packed;
    int depth;
} s_packer_t;

static void *
s_packer (void *arg)
{
    s_packer_t *job = (s_packer_t *) arg;
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    job->packed = pyi_tensor_pack (&job->tensor, buffer, sizeof buffer);
    job->depth = fake_cuda_depth ();
    if (job->packed > 0)
        pyi_tensor_discard (buffer, (size_t) job->packed);
    return NULL;
}

static void
test_contexts (void)
{
    TEST_BEGIN ("the current context: pushed and popped by every call, on any thread");
    uint8_t *block = (uint8_t *) fake_cuda_alloc (4096);
    CHECK (block);
    int64_t shape [1] = { 16 };
    DLTensor t = s_tensor (block, shape);
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];

    /*  A thread that never made a context current: the call makes its own. */
    for (int i = 0; i < 3; i++) {
        s_packer_t job = { t, 0, -1 };
        pthread_t thread;
        CHECK (pthread_create (&thread, NULL, s_packer, &job) == 0);
        CHECK (pthread_join (thread, NULL) == 0);
        CHECK_MSG (job.packed > 0, "pack on a new thread failed");
        CHECK_INT (job.depth, 0);
    }

    /*  The caller's own current context (as PyTorch has one) stays
        current, on top of the stack, after a call and after a failure. */
    void *mine = NULL;
    CHECK_INT (cuDevicePrimaryCtxRetain (&mine, 0), 0);
    CHECK_INT (cuCtxPushCurrent_v2 (mine), 0);
    int n = pyi_tensor_pack (&t, buffer, sizeof buffer);
    CHECK_MSG (n > 0, "%s", pyi_last_error ());
    CHECK_INT (fake_cuda_depth (), 1);
    pyi_tensor_discard (buffer, (size_t) n);
    float host [16];
    DLTensor bad = s_tensor (host, shape);
    CHECK_INT (pyi_tensor_pack (&bad, buffer, sizeof buffer), -1);   /* not device memory */
    CHECK_INT (fake_cuda_depth (), 1);
    void *popped = NULL;
    CHECK_INT (cuCtxPopCurrent_v2 (&popped), 0);
    CHECK (popped == mine);
    CHECK_INT (fake_cuda_depth (), 0);
    CHECK_INT (pyi_cuda_synchronize (), 0);
    CHECK_INT (fake_cuda_depth (), 0);
    CHECK_INT (s_collect (NULL), 1);                /* the discarded descriptors' region */
    fake_cuda_free (block);
    s_check_here ();
}

/*  A process on a driver from before the _v2 names ($PYI_CUDA_LIBRARY is
    the legacy stand-in): exports a tensor of the stand-in's memory. */
static int
s_legacy_main (void)
{
    static char line [MAX_LINE];
    CHECK_MSG (pyi_cuda_available () == 1, "%s", pyi_last_error ());   /* loads it */
    void *(*alloc) (size_t) = (void *(*) (size_t)) s_driver ("fake_cuda_alloc");
    void (*release) (void *) = (void (*) (void *)) s_driver ("fake_cuda_free");
    uint8_t *block = NULL;
    setvbuf (stdout, NULL, _IOLBF, 0);
    while (fgets (line, sizeof line, stdin)) {
        if (strncmp (line, "pack", 4) == 0) {
            block = (uint8_t *) alloc (4096);
            CHECK (block);
            for (int i = 0; i < 4096; i++)
                block [i] = (uint8_t) (i % 199);
            int64_t shape [1] = { 64 };
            DLTensor t = s_tensor (block, shape);
            char hex [2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
            s_pack_hex (&t, hex);
            printf ("%s\n", hex);
        }
        else
        if (strncmp (line, "collect", 7) == 0)
            printf ("%d\n", s_collect (NULL));
        else
        if (strncmp (line, "calls", 5) == 0)
            s_print_calls ();
        else
        if (strncmp (line, "exit", 4) == 0) {
            release (block);
            exit (0);
        }
        else
            printf ("err unknown command\n");
    }
    return 0;
}

static void
test_legacy_driver (void)
{
    TEST_BEGIN ("a driver with the plain names only: bound to them, and it works");
    char variable [PATH_MAX + 32];
    snprintf (variable, sizeof variable, "PYI_CUDA_LIBRARY=%s", FAKE_CUDA_LEGACY);
    t_child_t *exporter = t_spawn_self ("legacy", variable);
    t_child_t *receiver = t_spawn_self ("child", variable);
    char hex [2 * PYI_TENSOR_MAX_DESCRIPTOR + 1];
    snprintf (hex, sizeof hex, "%s", t_ask (exporter, "pack"));
    CHECK_STR (t_ask (receiver, "decode %s", hex), "ok 2 0");
    CHECK_STR (t_ask (receiver, "read 70"), "70");
    CHECK_STR (t_ask (receiver, "opened"), "1 1");
    s_check_calls (t_ask (receiver, "calls"), true);
    CHECK_STR (t_ask (receiver, "release"), "ok");
    CHECK_STR (t_ask (receiver, "opened"), "0 1");
    fprintf (receiver->in, "exit\n");
    fflush (receiver->in);
    CHECK (WIFEXITED (t_reap (receiver)));
    CHECK_STR (t_ask (exporter, "collect"), "1");
    s_check_calls (t_ask (exporter, "calls"), true);
    fprintf (exporter->in, "exit\n");
    fflush (exporter->in);
    CHECK (WIFEXITED (t_reap (exporter)));
}

int
main (int argc, char *argv [])
{
    if (argc > 1 && strcmp (argv [1], "child") == 0)
        return s_child_main ();
    if (argc > 1 && strcmp (argv [1], "nodriver") == 0)
        return s_nodriver_main ();
    if (argc > 1 && strcmp (argv [1], "legacy") == 0)
        return s_legacy_main ();
    t_setup_rundir ();
    t_on_failure = s_on_failure;
    setenv ("PYI_SESSION", pyi_region_session (), 1);
    test_no_driver ();
    test_cross ();
    test_killed ();
    test_refused ();
    test_contexts ();
    test_legacy_driver ();
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_cuda: OK\n");
    return 0;
}
