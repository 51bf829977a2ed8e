/*  test_tensor: tensor descriptors, their validation, and DLPack tensors.

    Guarantees checked:
    - encode + decode round trip of many dtypes (ints, uints, floats,
      bfloat16, complex, bool, float8, vector lanes) and shapes (0-d,
      empty, 1-d to 32-d, strided, transposed, broadcast (stride 0) and
      negative-stride views, byte_offset): the decoded tensor has the same
      dtype, shape, and every element at the same address (same mapping in
      this process), data at element 0, byte_offset 0, strides set;
    - encode counts one message in flight and decode takes it off; a
      thousand round trips open no file descriptor and map nothing new;
    - the versioned tensor is DLPack 1.0 with the flags asked (0:
      writeable), the legacy one a DLManagedTensor; deleters release the
      region (the name goes with the last);
    - memory outside any region is refused by encode (the error says to
      share it); pyi_tensor_share makes a C-contiguous copy in a region
      (strided and negative-stride sources too) flagged IS_COPIED;
      pyi_tensor_empty makes a zeroed one; wrap gives another view;
    - another process decodes the descriptor, sees the values and writes
      in place: the write is visible here;
    - every validation error, with hand-crafted descriptors: not an array,
      wrong field count, layout version, device, unknown dtype code,
      opaque handles, bits (not a multiple of 8, not a size of the code),
      lanes 0, ndim over 32, negative shape, shape and stride overflow,
      strides of the wrong count or type, byte_offset out of range, bytes
      addressed outside the span (above and below, with negative
      strides), span beyond the region, length beyond the region, name not
      of our form, unknown region, trailing bytes; every truncation and
      every single-byte corruption of a valid descriptor decodes safely;
    - descriptor frames are marked in their message; a request the broker
      refuses (unknown service) and a reply it drops (after the caller's
      deadline) give their regions' in-flight counts back, so the regions
      go with their last holder; pyi_tensor_discard of a descriptor whose
      region is gone, or of garbage, is an error;
    - at the end nothing of ours stays in /dev/shm nor in the mappings.
*/
#include "testutil.h"
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static pyi_region_t *s_region;      /* 64 KiB the tests put tensors in */
#define REGION_SIZE 65536

static bool
s_exists (const char *name)
{
    char path [300];
    snprintf (path, sizeof path, "/dev/shm%s", name);
    return access (path, F_OK) == 0;
}

static int64_t
s_itemsize (DLDataType dtype)
{
    return dtype.bits / 8 * dtype.lanes;
}

/*  Address of element idx (ndim indexes) of t. */
static const uint8_t *
s_element (const DLTensor *t, const int64_t *idx)
{
    int64_t offset = 0, stride = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        int64_t s = t->strides ? t->strides [i] : stride;
        offset += idx [i] * s;
        stride *= t->shape [i];
    }
    return (const uint8_t *) t->data + t->byte_offset + offset * s_itemsize (t->dtype);
}

/*  Next index in C order; false after the last. */
static bool
s_next (const DLTensor *t, int64_t *idx)
{
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (++idx [i] < t->shape [i])
            return true;
        idx [i] = 0;
    }
    return false;
}

static int64_t
s_numel (const DLTensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape [i];
    return n;
}

/*  a and b have the same dtype and shape, and every element of b is at
    the same address as in a (same_memory) or holds the same bytes. */
static void
s_same (const DLTensor *a, const DLTensor *b, bool same_memory)
{
    CHECK_INT (b->ndim, a->ndim);
    CHECK (b->dtype.code == a->dtype.code && b->dtype.bits == a->dtype.bits
           && b->dtype.lanes == a->dtype.lanes);
    CHECK_INT (b->device.device_type, kDLCPU);
    for (int i = 0; i < a->ndim; i++)
        CHECK_INT (b->shape [i], a->shape [i]);
    if (s_numel (a) == 0)
        return;
    int64_t idx [PYI_TENSOR_MAX_NDIM] = { 0 };
    do {
        if (same_memory)
            CHECK (s_element (a, idx) == s_element (b, idx));
        else
            CHECK (memcmp (s_element (a, idx), s_element (b, idx),
                           (size_t) s_itemsize (a->dtype)) == 0);
    } while (s_next (a, idx));
}

/*  Encode t into a message, decode it (legacy and versioned), check. */
static void
s_roundtrip (const DLTensor *t)
{
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    size_t offset;
    pyi_region_t *region = pyi_region_find (s_element (t, (int64_t [PYI_TENSOR_MAX_NDIM]) { 0 }),
                                            &offset);
    CHECK (region);
    uint32_t inflight = pyi_region_inflight (region);
    CHECK_MSG (pyi_tensor_encode (t, msg) == 0, "%s", pyi_last_error ());
    CHECK_MSG (pyi_tensor_encode (t, msg) == 0, "%s", pyi_last_error ());
    CHECK_INT (pyi_region_inflight (region), inflight + 2);
    CHECK_INT (pyi_msg_frames (msg), 2);
    CHECK (pyi_msg_frame_size (msg, 0) <= PYI_TENSOR_MAX_DESCRIPTOR);

    DLManagedTensor *legacy = pyi_tensor_decode (pyi_msg_frame_data (msg, 0),
                                                 pyi_msg_frame_size (msg, 0));
    CHECK_MSG (legacy, "%s", pyi_last_error ());
    CHECK_INT (pyi_region_inflight (region), inflight + 1);
    DLTensor *d = &legacy->dl_tensor;
    CHECK_INT (d->byte_offset, 0);
    CHECK (d->strides);
    s_same (t, d, true);
    if (s_numel (t) > 0)
        CHECK (d->data == s_element (t, (int64_t [PYI_TENSOR_MAX_NDIM]) { 0 }));

    DLManagedTensorVersioned *versioned = pyi_tensor_decode_versioned (
        pyi_msg_frame_data (msg, 1), pyi_msg_frame_size (msg, 1), 0);
    CHECK_MSG (versioned, "%s", pyi_last_error ());
    CHECK_INT (pyi_region_inflight (region), inflight);
    CHECK_INT (versioned->version.major, 1);
    CHECK_INT (versioned->version.minor, 0);
    CHECK_U64 (versioned->flags, 0);
    s_same (t, &versioned->dl_tensor, true);

    /*  The decoded tensor encodes again (passing it on to another process). */
    pyi_msg_t *again = pyi_msg_new (PYI_REQUEST);
    CHECK_MSG (pyi_tensor_encode (d, again) == 0, "%s", pyi_last_error ());
    CHECK_INT (pyi_msg_frame_size (again, 0), pyi_msg_frame_size (msg, 0));
    CHECK (memcmp (pyi_msg_frame_data (again, 0), pyi_msg_frame_data (msg, 0),
                   pyi_msg_frame_size (msg, 0)) == 0);
    DLManagedTensor *third = pyi_tensor_decode (pyi_msg_frame_data (again, 0),
                                                pyi_msg_frame_size (again, 0));
    CHECK (third);
    s_same (t, &third->dl_tensor, true);
    third->deleter (third);
    legacy->deleter (legacy);
    versioned->deleter (versioned);
    CHECK_INT (pyi_region_inflight (region), inflight);
    pyi_msg_destroy (&again);
    pyi_msg_destroy (&msg);
    pyi_region_release (&region);
}

static void
test_roundtrip (void)
{
    TEST_BEGIN ("round trip of dtypes and shapes, strided and negative views");
    uint8_t *base = (uint8_t *) pyi_region_data (s_region);
    DLDataType dtypes [] = {
        { kDLInt, 8, 1 }, { kDLInt, 16, 1 }, { kDLInt, 32, 1 }, { kDLInt, 64, 1 },
        { kDLUInt, 8, 1 }, { kDLUInt, 16, 1 }, { kDLUInt, 32, 1 }, { kDLUInt, 64, 1 },
        { kDLFloat, 16, 1 }, { kDLFloat, 32, 1 }, { kDLFloat, 64, 1 }, { kDLBfloat, 16, 1 },
        { kDLComplex, 32, 1 }, { kDLComplex, 64, 1 }, { kDLComplex, 128, 1 },
        { PYI_DL_BOOL, 8, 1 }, { PYI_DL_FLOAT8_FIRST, 8, 1 }, { PYI_DL_FLOAT8_LAST, 8, 1 },
        { kDLFloat, 32, 4 }
    };
    for (size_t k = 0; k < sizeof dtypes / sizeof dtypes [0]; k++) {
        DLDataType dtype = dtypes [k];
        int64_t item = s_itemsize (dtype);
        /*  C-contiguous shapes, strides NULL and explicit. */
        int64_t shapes [][4] = { { 5 }, { 2, 3, 4 }, { 1, 1, 1, 1 }, { 3, 0, 2 }, { 0 } };
        int ndims [] = { 1, 3, 4, 3, 1 };
        for (int s = 0; s < 5; s++) {
            DLTensor t = { base + 64, { kDLCPU, 0 }, ndims [s], dtype, shapes [s], NULL, 0 };
            s_roundtrip (&t);
            int64_t strides [4];
            int64_t stride = 1;
            for (int i = ndims [s] - 1; i >= 0; i--) {
                strides [i] = stride;
                stride *= shapes [s][i];
            }
            t.strides = strides;
            t.byte_offset = (uint64_t) item * 3;
            s_roundtrip (&t);
        }
        /*  0-d. */
        DLTensor scalar = { base + 128, { kDLCPU, 0 }, 0, dtype, NULL, NULL, 0 };
        s_roundtrip (&scalar);
        /*  A [6, 8] matrix viewed as [::2, ::2], transposed, reversed,
            broadcast. */
        int64_t view_shape [] = { 3, 4 }, view_strides [] = { 16, 2 };
        DLTensor view = { base + 256, { kDLCPU, 0 }, 2, dtype, view_shape, view_strides, 0 };
        s_roundtrip (&view);
        int64_t t_shape [] = { 8, 6 }, t_strides [] = { 1, 8 };
        DLTensor transposed = { base + 256, { kDLCPU, 0 }, 2, dtype, t_shape, t_strides, 0 };
        s_roundtrip (&transposed);
        int64_t r_shape [] = { 6, 8 }, r_strides [] = { -8, -1 };
        DLTensor reversed = { base + 256 + 47 * item, { kDLCPU, 0 }, 2, dtype, r_shape,
                              r_strides, 0 };
        s_roundtrip (&reversed);
        int64_t m_shape [] = { 6, 8 }, m_strides [] = { -8, 1 };   /* [::-1, :] */
        DLTensor mixed = { base + 256, { kDLCPU, 0 }, 2, dtype, m_shape, m_strides,
                           (uint64_t) (40 * item) };
        s_roundtrip (&mixed);
        int64_t b_shape [] = { 1000, 3 }, b_strides [] = { 0, 1 };
        DLTensor broadcast = { base + 512, { kDLCPU, 0 }, 2, dtype, b_shape, b_strides, 0 };
        s_roundtrip (&broadcast);
    }
    /*  32 dimensions, the most allowed; and a tensor that ends exactly at
        the region's end. */
    int64_t ones [PYI_TENSOR_MAX_NDIM];
    for (int i = 0; i < PYI_TENSOR_MAX_NDIM; i++)
        ones [i] = 1;
    ones [0] = 2;
    DLTensor deep = { base, { kDLCPU, 0 }, PYI_TENSOR_MAX_NDIM, { kDLFloat, 64, 1 }, ones, NULL, 0 };
    s_roundtrip (&deep);
    int64_t tail_shape [] = { 16 };
    DLTensor tail = { base + REGION_SIZE - 64, { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 },
                      tail_shape, NULL, 0 };
    s_roundtrip (&tail);
    int64_t empty_shape [] = { 0 };
    DLTensor at_end = { base + REGION_SIZE, { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 },
                        empty_shape, NULL, 0 };
    s_roundtrip (&at_end);
    /*  One byte past the region: refused. */
    int64_t over_shape [] = { 17 };
    DLTensor over = { base + REGION_SIZE - 64, { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 },
                      over_shape, NULL, 0 };
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    CHECK (pyi_tensor_encode (&over, msg) == -1);
    CHECK_MSG (strstr (pyi_last_error (), "pyi_tensor_share"), "%s", pyi_last_error ());
    CHECK_INT (pyi_region_inflight (s_region), 0);
    pyi_msg_destroy (&msg);
}

static void
test_cheap (void)
{
    TEST_BEGIN ("a thousand round trips: no fd, no mapping, inflight back to 0");
    int64_t shape [] = { 100, 100 };
    DLTensor t = { pyi_region_data (s_region), { kDLCPU, 0 }, 2, { kDLFloat, 32, 1 },
                   shape, NULL, 0 };
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int fds = t_count_fds ();
    int maps = t_shm_mapped ();
    for (int i = 0; i < 1000; i++) {
        int size = pyi_tensor_pack (&t, buffer, sizeof buffer);
        CHECK (size > 0);
        DLManagedTensorVersioned *d = pyi_tensor_decode_versioned (buffer, (size_t) size, 0);
        CHECK (d);
        d->deleter (d);
    }
    CHECK_INT (t_count_fds (), fds);
    CHECK_INT (t_shm_mapped (), maps);
    CHECK_INT (pyi_region_mapped (), 1);
    CHECK_INT (pyi_region_inflight (s_region), 0);
    CHECK (pyi_tensor_pack (&t, buffer, 10) == -1);     /* too small: nothing in flight */
    CHECK_INT (pyi_region_inflight (s_region), 0);
}

static void
test_share (void)
{
    TEST_BEGIN ("share, empty, wrap; memory outside regions is refused");
    int32_t plain [6][8];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 8; j++)
            plain [i][j] = i * 100 + j;
    int64_t shape [] = { 6, 8 };
    DLTensor t = { plain, { kDLCPU, 0 }, 2, { kDLInt, 32, 1 }, shape, NULL, 0 };
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    CHECK (pyi_tensor_encode (&t, msg) == -1);
    CHECK_MSG (strstr (pyi_last_error (), "pyi_tensor_share"), "%s", pyi_last_error ());
    CHECK (pyi_tensor_wrap (&t) == NULL);
    CHECK_INT (pyi_msg_frames (msg), 0);

    /*  A reversed, strided view of plain: [::-2, 1::3]. */
    int64_t v_shape [] = { 3, 3 }, v_strides [] = { -16, 3 };
    DLTensor view = { &plain [5][1], { kDLCPU, 0 }, 2, { kDLInt, 32, 1 }, v_shape, v_strides, 0 };
    DLManagedTensorVersioned *copy = pyi_tensor_share (&view);
    CHECK_MSG (copy, "%s", pyi_last_error ());
    CHECK (copy->flags & DLPACK_FLAG_BITMASK_IS_COPIED);
    s_same (&view, &copy->dl_tensor, false);
    CHECK_INT (copy->dl_tensor.strides [0], 3);
    CHECK_INT (copy->dl_tensor.strides [1], 1);
    CHECK_INT (((int32_t *) copy->dl_tensor.data) [0], 501);
    CHECK_INT (((int32_t *) copy->dl_tensor.data) [8], 107);
    CHECK_INT ((uintptr_t) copy->dl_tensor.data % 4096, 0);
    CHECK_INT (pyi_region_mapped (), 2);
    CHECK_MSG (pyi_tensor_encode (&copy->dl_tensor, msg) == 0, "%s", pyi_last_error ());
    DLManagedTensor *back = pyi_tensor_decode (pyi_msg_frame_data (msg, 0),
                                               pyi_msg_frame_size (msg, 0));
    CHECK (back && back->dl_tensor.data == copy->dl_tensor.data);
    s_same (&view, &back->dl_tensor, false);

    /*  A legacy view of the copy outlives it; the name goes with the last. */
    DLManagedTensor *wrapped = pyi_tensor_wrap (&copy->dl_tensor);
    CHECK (wrapped && wrapped->dl_tensor.data == copy->dl_tensor.data);
    size_t offset;
    pyi_region_t *region = pyi_region_find (copy->dl_tensor.data, &offset);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    pyi_region_release (&region);
    copy->deleter (copy);
    back->deleter (back);
    CHECK (s_exists (name));
    CHECK_INT (((int32_t *) wrapped->dl_tensor.data) [8], 107);
    wrapped->deleter (wrapped);
    CHECK_MSG (!s_exists (name), "the last deleter did not remove the region");
    CHECK_INT (pyi_region_mapped (), 1);

    /*  Shared from the start. */
    int64_t e_shape [] = { 3, 4 };
    DLManagedTensorVersioned *empty = pyi_tensor_empty (2, e_shape, (DLDataType) { kDLFloat, 64, 1 });
    CHECK_MSG (empty, "%s", pyi_last_error ());
    CHECK_U64 (empty->flags, 0);
    CHECK_INT (empty->dl_tensor.strides [0], 4);
    for (int i = 0; i < 12; i++)
        CHECK (((double *) empty->dl_tensor.data) [i] == 0.0);
    DLManagedTensorVersioned *ro = pyi_tensor_wrap_versioned (&empty->dl_tensor,
                                                              DLPACK_FLAG_BITMASK_READ_ONLY);
    CHECK (ro && ro->flags == DLPACK_FLAG_BITMASK_READ_ONLY);
    ro->deleter (ro);
    empty->deleter (empty);
    DLManagedTensorVersioned *scalar = pyi_tensor_empty (0, NULL, (DLDataType) { kDLInt, 8, 1 });
    CHECK (scalar);
    scalar->deleter (scalar);
    int64_t zero [] = { 0, 7 };
    DLManagedTensorVersioned *none = pyi_tensor_empty (2, zero, (DLDataType) { kDLInt, 8, 1 });
    CHECK (none);
    none->deleter (none);
    CHECK (pyi_tensor_empty (1, e_shape, (DLDataType) { kDLFloat, 12, 1 }) == NULL);
    CHECK (pyi_tensor_empty (1, e_shape, (DLDataType) { kDLOpaqueHandle, 64, 1 }) == NULL);
    int64_t negative [] = { -1 };
    CHECK (pyi_tensor_empty (1, negative, (DLDataType) { kDLInt, 8, 1 }) == NULL);
    CHECK (pyi_tensor_empty (33, NULL, (DLDataType) { kDLInt, 8, 1 }) == NULL);
    DLTensor gpu = t;
    gpu.device.device_type = kDLCUDA;
    CHECK (pyi_tensor_share (&gpu) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "not CPU memory"), "%s", pyi_last_error ());
    CHECK_INT (pyi_region_mapped (), 1);
    pyi_msg_destroy (&msg);
}

/*  Another process decodes a descriptor (hex on stdin), answers the sum of
    its int32 elements, writes -1 into element 0 and lets go. */
static int
s_child_main (void)
{
    char hex [2 * PYI_TENSOR_MAX_DESCRIPTOR + 2];
    uint8_t bytes [PYI_TENSOR_MAX_DESCRIPTOR];
    if (!fgets (hex, sizeof hex, stdin))
        return 1;
    size_t size = strlen (hex) / 2;
    for (size_t i = 0; i < size; i++) {
        unsigned value;
        sscanf (hex + 2 * i, "%2x", &value);
        bytes [i] = (uint8_t) value;
    }
    DLManagedTensorVersioned *t = pyi_tensor_decode_versioned (bytes, size, 0);
    if (!t) {
        printf ("err %s\n", pyi_last_error ());
        return 1;
    }
    long long sum = 0;
    int64_t idx [PYI_TENSOR_MAX_NDIM] = { 0 };
    do
        sum += *(const int32_t *) s_element (&t->dl_tensor, idx);
    while (s_next (&t->dl_tensor, idx));
    *(int32_t *) t->dl_tensor.data = -1;
    printf ("%lld\n", sum);
    fflush (stdout);
    t->deleter (t);
    return 0;
}

static void
test_cross_process (void)
{
    TEST_BEGIN ("another process decodes the descriptor and writes in place");
    int64_t shape [] = { 4, 5 };
    DLManagedTensorVersioned *t = pyi_tensor_empty (2, shape, (DLDataType) { kDLInt, 32, 1 });
    CHECK (t);
    int32_t *data = (int32_t *) t->dl_tensor.data;
    for (int i = 0; i < 20; i++)
        data [i] = i;
    /*  Pass the reversed view [::-1, ::-1]: sum is the same, element 0 is
        the last of the buffer. */
    int64_t strides [] = { -5, -1 };
    DLTensor view = { data + 19, { kDLCPU, 0 }, 2, { kDLInt, 32, 1 }, shape, strides, 0 };
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int size = pyi_tensor_pack (&view, buffer, sizeof buffer);
    CHECK (size > 0);
    /*  The sender lets go at once: the message in flight keeps it. */
    size_t offset;
    pyi_region_t *region = pyi_region_find (data, &offset);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    pyi_region_release (&region);

    int to [2], from [2];
    CHECK (pipe2 (to, O_CLOEXEC) == 0 && pipe2 (from, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init (&actions);
    posix_spawn_file_actions_adddup2 (&actions, to [0], 0);
    posix_spawn_file_actions_adddup2 (&actions, from [1], 1);
    char *argv [] = { "test_tensor", "child", NULL };
    pid_t pid;
    CHECK (posix_spawn (&pid, "/proc/self/exe", &actions, NULL, argv, environ) == 0);
    posix_spawn_file_actions_destroy (&actions);
    close (to [0]);
    close (from [1]);
    FILE *in = fdopen (to [1], "w"), *out = fdopen (from [0], "r");
    for (int i = 0; i < size; i++)
        fprintf (in, "%02x", buffer [i]);
    fprintf (in, "\n");
    fclose (in);
    char line [512] = "";
    CHECK (fgets (line, sizeof line, out));
    fclose (out);
    int status;
    CHECK (waitpid (pid, &status, 0) == pid);
    CHECK_MSG (WIFEXITED (status) && WEXITSTATUS (status) == 0, "child: %s", line);
    CHECK_STR (line, "190\n");
    CHECK_INT (data [19], -1);             /* the child's write, seen here */
    CHECK_INT (data [0], 0);
    t->deleter (t);
    CHECK_MSG (!s_exists (name), "region left after both sides let go");
}

/*  Hand-crafted descriptors ------------------------------------------------ */

typedef struct {
    int fields;                 /* top-level array length */
    int64_t layout;
    int64_t device [2];
    int64_t dtype [3];
    int ndim;                   /* shape entries written */
    int64_t shape [40];
    int nstrides;               /* -1: nil */
    int64_t strides [40];
    uint64_t byte_offset;
    const char *name;
    uint64_t offset, length;
    bool trailing;
} s_spec_t;

static void
mp_int (mp_t *mp, int64_t value)
{
    if (value >= 0)
        mp_uint (mp, (uint64_t) value);
    else {
        mp_byte (mp, 0xd3);
        mp_be (mp, (uint64_t) value, 8);
    }
}

static s_spec_t
s_good (void)
{
    /*  A valid [4, 5] float32 tensor at offset 0 of the test region. */
    s_spec_t spec = { 7, 1, { kDLCPU, 0 }, { kDLFloat, 32, 1 }, 2, { 4, 5 }, -1, { 0 }, 0,
                      pyi_region_name (s_region), 0, 80, false };
    return spec;
}

static void
s_write (mp_t *mp, const s_spec_t *spec)
{
    mp->size = 0;
    mp_array (mp, (uint64_t) spec->fields);
    mp_int (mp, spec->layout);
    mp_array (mp, 2);
    mp_int (mp, spec->device [0]);
    mp_int (mp, spec->device [1]);
    mp_array (mp, 3);
    for (int i = 0; i < 3; i++)
        mp_int (mp, spec->dtype [i]);
    mp_array (mp, (uint64_t) spec->ndim);
    for (int i = 0; i < spec->ndim; i++)
        mp_int (mp, spec->shape [i]);
    if (spec->nstrides < 0)
        mp_byte (mp, 0xc0);
    else {
        mp_array (mp, (uint64_t) spec->nstrides);
        for (int i = 0; i < spec->nstrides; i++)
            mp_int (mp, spec->strides [i]);
    }
    mp_uint (mp, spec->byte_offset);
    mp_array (mp, 3);
    mp_str (mp, spec->name);
    mp_uint (mp, spec->offset);
    mp_uint (mp, spec->length);
    if (spec->trailing)
        mp_byte (mp, 0xc0);
}

/*  spec must be refused with an error text holding expected. */
static void
s_refused (int line, const s_spec_t *spec, const char *expected)
{
    static mp_t mp;
    s_write (&mp, spec);
    DLManagedTensor *t = pyi_tensor_decode (mp.data, mp.size);
    if (t)
        s_fail (__FILE__, line, "accepted a bad descriptor (expected \"%s\")", expected);
    if (!strstr (pyi_last_error (), expected))
        s_fail (__FILE__, line, "error \"%s\" does not say \"%s\"", pyi_last_error (), expected);
}
#define REFUSED(spec, text) s_refused (__LINE__, &(spec), text)

static void
test_validation (void)
{
    TEST_BEGIN ("every validation error, with hand-crafted descriptors");
    static mp_t mp;
    s_spec_t good = s_good ();
    s_write (&mp, &good);
    DLManagedTensor *t = pyi_tensor_decode (mp.data, mp.size);
    CHECK_MSG (t, "the good descriptor: %s", pyi_last_error ());
    t->deleter (t);

    s_spec_t s;
    CHECK (pyi_tensor_decode (NULL, 0) == NULL);
    CHECK (pyi_tensor_decode ("\x93\x01\x02\x03", 4) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "not a msgpack array of 7"), "%s", pyi_last_error ());
    CHECK (pyi_tensor_decode ("\xc0", 1) == NULL);
    s = good; s.fields = 8;            REFUSED (s, "array of 7");
    s = good; s.layout = 2;            REFUSED (s, "layout 2 not supported");
    s = good; s.layout = -1;           REFUSED (s, "layout version");
    s = good; s.device [0] = kDLCUDA;  REFUSED (s, "CUDA tensor names a host region");
    s = good; s.device [0] = kDLVulkan; REFUSED (s, "device (7, 0) not supported");
    s = good; s.device [1] = 1;        REFUSED (s, "device (1, 1) not supported");
    s = good; s.device [0] = -5;       REFUSED (s, "field 2 (device)");
    s = good; s.dtype [0] = 99;        REFUSED (s, "unknown dtype code 99");
    s = good; s.dtype [0] = 15;        REFUSED (s, "unknown dtype code 15");
    s = good; s.dtype [0] = 14;        REFUSED (s, "dtype code 14 cannot have 32 bits");  /* e8m0fnu: 8 */
    s = good; s.dtype [0] = 300;       REFUSED (s, "field 3 (dtype)");
    s = good; s.dtype [0] = kDLOpaqueHandle; s.dtype [1] = 64; REFUSED (s, "opaque handle");
    s = good; s.dtype [1] = 12;        REFUSED (s, "cannot have 12 bits");
    s = good; s.dtype [1] = 0;         REFUSED (s, "cannot have 0 bits");
    s = good; s.dtype [1] = 8;         REFUSED (s, "cannot have 8 bits");   /* float8 is 7..14 */
    s = good; s.dtype [0] = PYI_DL_BOOL; s.dtype [1] = 1; REFUSED (s, "cannot have 1 bits");
    s = good; s.dtype [0] = kDLBfloat; REFUSED (s, "cannot have 32 bits");
    s = good; s.dtype [2] = 0;         REFUSED (s, "0 lanes");
    s = good; s.dtype [2] = 70000;     REFUSED (s, "field 3 (dtype)");
    s = good; s.ndim = 33;
    for (int i = 0; i < 33; i++) s.shape [i] = 1;
    REFUSED (s, "ndim 33 is over the limit");
    s = good; s.shape [1] = -5;        REFUSED (s, "shape[1] is negative");
    s = good; s.ndim = 2; s.shape [0] = (int64_t) 1 << 62; s.shape [1] = 4;
    REFUSED (s, "shape overflows");
    s = good; s.ndim = 1; s.shape [0] = (int64_t) 1 << 62; REFUSED (s, "shape x itemsize overflows");
    s = good; s.ndim = 1; s.shape [0] = (int64_t) 1 << 40; s.nstrides = 1;
    s.strides [0] = (int64_t) 1 << 40; REFUSED (s, "shape x strides overflows");
    s = good; s.ndim = 2; s.shape [0] = 3; s.shape [1] = 3; s.nstrides = 2;
    s.strides [0] = INT64_MAX / 2; s.strides [1] = INT64_MAX / 2;
    REFUSED (s, "shape x strides overflows");
    s = good; s.ndim = 1; s.shape [0] = 2; s.nstrides = 1; s.strides [0] = INT64_MAX / 2;
    REFUSED (s, "strides x itemsize overflows");
    s = good; s.ndim = 2; s.shape [0] = 2; s.shape [1] = 2; s.nstrides = 2;
    s.strides [0] = INT64_MAX / 5; s.strides [1] = -(INT64_MAX / 5);
    REFUSED (s, "strides x itemsize overflows");         /* hi - lo overflows */
    s = good; s.shape [0] = 52; s.shape [1] = 0; s.nstrides = 2;    /* empty, still checked */
    s.strides [0] = -((int64_t) 1 << 58); s.strides [1] = 1; REFUSED (s, "shape x strides overflows");
    s = good; s.nstrides = 1;          REFUSED (s, "field 5 (strides)");
    s = good; s.nstrides = 3;          REFUSED (s, "field 5 (strides)");
    s = good; s.byte_offset = (uint64_t) 1 << 63; REFUSED (s, "field 6 (byte_offset)");
    /*  Bytes outside the span: one element too many above, negative
        strides below element 0 with no byte_offset to cover them. */
    s = good; s.length = 79;           REFUSED (s, "outside its span [0, 79)");
    s = good; s.byte_offset = 4;       REFUSED (s, "outside its span");
    s = good; s.nstrides = 2; s.strides [0] = -5; s.strides [1] = 1;
    REFUSED (s, "bytes [-60, 20) outside");
    s.byte_offset = 60; s.length = 79; REFUSED (s, "outside its span [0, 79)");
    s.length = 80;
    s_write (&mp, &s);
    t = pyi_tensor_decode (mp.data, mp.size);       /* covered: accepted */
    CHECK_MSG (t, "%s", pyi_last_error ());
    CHECK (t->dl_tensor.data == (uint8_t *) pyi_region_data (s_region) + 60);
    t->deleter (t);
    s = good; s.ndim = 1; s.shape [0] = 0; s.byte_offset = 81; REFUSED (s, "outside its span");
    /*  The span against the region. */
    s = good; s.offset = REGION_SIZE - 40;  REFUSED (s, "beyond region");
    s = good; s.length = REGION_SIZE + 1;   REFUSED (s, "beyond region");
    s = good; s.offset = INT64_MAX;         REFUSED (s, "beyond region");
    s = good; s.offset = REGION_SIZE - 80;
    s_write (&mp, &s);
    t = pyi_tensor_decode (mp.data, mp.size);       /* exactly at the end: accepted */
    CHECK_MSG (t, "%s", pyi_last_error ());
    t->deleter (t);
    /*  Names. */
    const char *bad_names [] = { "/etc/passwd", "pyi-1-ab-1-1", "/pyi-1-ab-1-1/../x",
                                 "/dev/shm/pyi-1-ab-1-1" };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names [0]; i++) {
        s = good; s.name = bad_names [i]; REFUSED (s, "not of the form");
    }
    s = good; s.name = "";             REFUSED (s, "inline tensor");   /* no bytes follow */
    char absent [128];
    snprintf (absent, sizeof absent, "/pyi-%s-1-4242424242", pyi_region_session ());
    s = good; s.name = absent;         REFUSED (s, "unknown region");
    char longname [200];
    memset (longname, 'a', sizeof longname - 1);
    longname [sizeof longname - 1] = 0;
    s = good; s.name = longname;       REFUSED (s, "field 7 (region)");
    s = good; s.trailing = true;       REFUSED (s, "trailing bytes");

    /*  Every truncation and every single-byte change of a valid descriptor
        (with strides) decodes safely: refused, or a view inside the region. */
    s = good; s.nstrides = 2; s.strides [0] = 5; s.strides [1] = 1;
    s_write (&mp, &s);
    uint8_t copy [256];
    size_t size = mp.size;
    CHECK (size <= sizeof copy);
    for (size_t n = 0; n < size; n++)
        CHECK (pyi_tensor_decode (mp.data, n) == NULL);
    const uint8_t *lo = (const uint8_t *) pyi_region_data (s_region);
    for (size_t i = 0; i < size; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy (copy, mp.data, size);
            copy [i] ^= (uint8_t) (1 << bit);
            DLManagedTensor *d = pyi_tensor_decode (copy, size);
            if (!d)
                continue;
            /*  Accepted: every element it can address is inside the region. */
            int64_t zero [PYI_TENSOR_MAX_NDIM] = { 0 }, last [PYI_TENSOR_MAX_NDIM];
            if (s_numel (&d->dl_tensor) > 0) {
                for (int k = 0; k < d->dl_tensor.ndim; k++)
                    last [k] = d->dl_tensor.shape [k] - 1;
                const uint8_t *a = s_element (&d->dl_tensor, zero);
                const uint8_t *b = s_element (&d->dl_tensor, last);
                CHECK (a >= lo && a < lo + REGION_SIZE && b >= lo && b < lo + REGION_SIZE);
            }
            d->deleter (d);
        }
    CHECK_INT (pyi_region_mapped (), 1);
}

/*  On failure: remove what the test made. */
static void
s_on_failure (void)
{
    pyi_region_remove_session (NULL);
}

/*  A region with one float tensor in it, encoded into a new body. */
static pyi_msg_t *
s_body_with_tensor (pyi_region_t **region_p, char *name)
{
    pyi_region_t *region = pyi_region_new (4096);
    CHECK (region);
    snprintf (name, PYI_REGION_MAX_NAME + 1, "%s", pyi_region_name (region));
    int64_t shape [1] = { 16 };
    DLTensor t = { pyi_region_data (region), { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 }, shape,
                   NULL, 0 };
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    CHECK_INT (pyi_msg_append (body, "call", 4), 0);
    CHECK_INT (pyi_tensor_encode (&t, body), 0);
    CHECK (!pyi_msg_is_descriptor (body, 0) && pyi_msg_is_descriptor (body, 1));
    CHECK_INT (pyi_region_inflight (region), 1);
    *region_p = region;
    return body;
}

static void
test_dropped (void)
{
    TEST_BEGIN ("messages the broker drops give their descriptors back");
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    CHECK (client);
    /*  A request for a service nobody offers. */
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];
    pyi_msg_t *body = s_body_with_tensor (&region, name);
    CHECK_INT (pyi_client_request (client, "nobody.here", 1, 0, &body), 0);
    pyi_msg_t *answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_command (answer) == PYI_ERROR
           && pyi_msg_code (answer) == PYI_ERR_UNKNOWN_SERVICE);
    pyi_msg_destroy (&answer);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "the dropped request kept %s", name);

    /*  A reply that comes after the caller's deadline. */
    char *token = pyi_broker_allow (broker, "late", NULL);
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_inproc (broker), token, 0, 0);
    free (token);
    CHECK (worker && pyi_worker_offer (worker, "late") == 0);
    pyi_msg_t *ready = pyi_worker_recv (worker, 5000);
    CHECK (ready && pyi_msg_command (ready) == PYI_READY);
    pyi_msg_destroy (&ready);
    CHECK_INT (pyi_client_request (client, "late", 2, 50, NULL), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_code (answer) == PYI_ERR_TIMEOUT);
    pyi_msg_destroy (&answer);
    pyi_msg_t *reply = s_body_with_tensor (&region, name);
    pyi_msg_set_command (reply, PYI_REPLY);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    /*  The broker drops it in its own thread: wait for the count. */
    for (int i = 0; i < 500 && pyi_region_inflight (region) > 0; i++)
        usleep (10000);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "the dropped reply kept %s", name);
    CHECK (pyi_client_recv (client, 100) == NULL);      /* nothing reached the caller */

    /*  A discarded descriptor whose region is gone is an error, not a crash. */
    uint8_t desc [PYI_TENSOR_MAX_DESCRIPTOR];
    body = s_body_with_tensor (&region, name);
    size_t size = pyi_msg_frame_size (body, 1);
    memcpy (desc, pyi_msg_frame_data (body, 1), size);
    CHECK_INT (pyi_tensor_discard (desc, size), 0);
    CHECK_INT (pyi_region_inflight (region), 0);
    pyi_msg_destroy (&body);
    pyi_region_release (&region);
    CHECK (!s_exists (name));
    CHECK_INT (pyi_tensor_discard (desc, size), -1);
    CHECK_INT (pyi_tensor_discard ("\x93", 1), -1);
    pyi_worker_destroy (&worker);
    pyi_client_destroy (&client);
    pyi_broker_destroy (&broker);
}

static void
test_inline (void)
{
    TEST_BEGIN ("inline form for remote peers: encode, decode, broker conversion over tcp");
    /*  A strided view of plain memory, inline and back. */
    static int32_t plain [6][5];
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 5; j++)
            plain [i][j] = i * 10 + j;
    int64_t shape [2] = { 3, 2 }, strides [2] = { 10, -2 };    /* every other row, reversed */
    DLTensor view = { &plain [0][4], { kDLCPU, 0 }, 2, { kDLInt, 32, 1 }, shape, strides, 0 };
    pyi_msg_t *msg = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_tensor_encode_inline (&view, msg), 0);
    CHECK (!pyi_msg_is_descriptor (msg, 0));
    DLManagedTensor *m = pyi_tensor_decode (pyi_msg_frame_data (msg, 0),
                                            pyi_msg_frame_size (msg, 0));
    CHECK_MSG (m, "%s", pyi_last_error ());
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++) {
            int32_t *e = (int32_t *) m->dl_tensor.data + i * m->dl_tensor.strides [0]
                       + j * m->dl_tensor.strides [1];
            CHECK_INT (*e, plain [2 * i][4 - 2 * j]);
        }
    size_t offset;
    pyi_region_t *copy = pyi_region_find (m->dl_tensor.data, &offset);
    CHECK_MSG (copy, "an inline tensor arrives in a region of its own");
    pyi_region_release (&copy);
    m->deleter (m);
    pyi_msg_destroy (&msg);

    /*  Through the broker: a worker connected over tcp is remote. */
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK (broker);
    char *tcp = pyi_broker_bind (broker, "tcp://127.0.0.1:*");
    CHECK_MSG (tcp, "%s", pyi_last_error ());
    char *token = pyi_broker_allow (broker, "far", NULL);
    pyi_worker_t *worker = pyi_worker_new (tcp, token, 0, 0);
    free (token);
    free (tcp);
    CHECK (worker && pyi_worker_offer (worker, "far") == 0);
    pyi_msg_t *ready = pyi_worker_recv (worker, 5000);
    CHECK (ready && pyi_msg_command (ready) == PYI_READY);
    pyi_msg_destroy (&ready);
    pyi_client_t *client = pyi_client_new (pyi_broker_inproc (broker));
    pyi_region_t *region;
    char name [PYI_REGION_MAX_NAME + 1];
    pyi_msg_t *body = s_body_with_tensor (&region, name);
    float *values = (float *) pyi_region_data (region);
    for (int i = 0; i < 16; i++)
        values [i] = (float) i * 1.5f;
    CHECK_INT (pyi_client_request (client, "far", 1, 0, &body), 0);
    pyi_msg_t *request = pyi_worker_recv (worker, 5000);
    if (!request) {
        pyi_msg_t *why = pyi_client_recv (client, 100);
        CHECK_MSG (false, "the worker got nothing; the caller got %s",
                   why ? pyi_msg_text (why) : "nothing");
    }
    CHECK (request && pyi_msg_command (request) == PYI_REQUEST);
    CHECK_INT (pyi_msg_frames (request), 2);
    CHECK (!pyi_msg_is_descriptor (request, 1));
    m = pyi_tensor_decode (pyi_msg_frame_data (request, 1), pyi_msg_frame_size (request, 1));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (m->dl_tensor.data != values);           /* a copy: no shared memory there */
    for (int i = 0; i < 16; i++)
        CHECK (((float *) m->dl_tensor.data) [i] == values [i]);
    CHECK_INT (pyi_region_inflight (region), 0);    /* the broker consumed the descriptor */
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "%s outlived its holders", name);
    /*  The remote worker answers inline; the caller gets a region of its own. */
    pyi_msg_t *reply = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_tensor_encode_inline (&m->dl_tensor, reply), 0);
    m->deleter (m);
    CHECK_INT (pyi_worker_reply (worker, pyi_msg_id (request), &reply), 0);
    pyi_msg_destroy (&request);
    pyi_msg_t *answer = pyi_client_recv (client, 5000);
    CHECK (answer && pyi_msg_command (answer) == PYI_REPLY && pyi_msg_frames (answer) == 1);
    m = pyi_tensor_decode (pyi_msg_frame_data (answer, 0), pyi_msg_frame_size (answer, 0));
    CHECK_MSG (m, "%s", pyi_last_error ());
    CHECK (((float *) m->dl_tensor.data) [3] == 4.5f);
    m->deleter (m);
    pyi_msg_destroy (&answer);
    pyi_client_destroy (&client);
    pyi_worker_destroy (&worker);
    pyi_broker_destroy (&broker);
}

int
main (int argc, char *argv [])
{
    if (argc > 1 && strcmp (argv [1], "child") == 0)
        return s_child_main ();
    t_setup_rundir ();
    t_on_failure = s_on_failure;
    setenv ("PYI_SESSION", pyi_region_session (), 1);
    s_region = pyi_region_new (REGION_SIZE);
    CHECK_MSG (s_region, "%s", pyi_last_error ());
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (s_region));
    test_roundtrip ();
    test_cheap ();
    test_share ();
    test_cross_process ();
    test_validation ();
    test_dropped ();
    test_inline ();
    pyi_region_release (&s_region);
    /*  Decodes that failed after mapping took in-flight counts off (never
        below 0), so the release removes the name. */
    CHECK_MSG (!s_exists (name), "the test region was not removed");
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_tensor: OK\n");
    return 0;
}
