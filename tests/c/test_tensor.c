/*  test_tensor: tensor descriptors and DLPack tensors.
    (Validation of hand-crafted descriptors: test_tensor_validation.c;
    what the broker does to descriptors: test_descriptors.c.)

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
    - the inline form of a strided view of plain memory decodes to the
      same values, in a region of its own;
    - the chunked inline form: pyi_tensor_inline_span of a strided view's
      descriptor gives the inline head and the span in the region (count
      consumed, the region held by the reference); chunks of uneven
      sizes decode (legacy and versioned) to the same values in a region
      of their own; chunks that add up to one byte less or more, too many
      chunks, a NULL chunk, a one-frame or a region descriptor given as
      chunked, and the chunked head given alone are refused as malformed;
    - spares (pyi_region_linger on): the region an inline tensor arrived
      in, once dropped, is kept (LOCK_EX held: no other process can map
      it, a sweep leaves it, a forked child's exit leaves it) and the next
      inline tensor of the same size arrives in it with its own values; a
      descriptor naming a spare is refused; another size gets a new region; trim and linger (0) remove
      spares; off, nothing is kept;
    - at the end nothing of ours stays in /dev/shm nor in the mappings.
*/
#include "testtensor.h"
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

static pyi_region_t *s_region;      /* 64 KiB the tests put tensors in */
#define REGION_SIZE 65536

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
test_received (void)
{
    TEST_BEGIN ("a descriptor that comes back: its count taken, nothing made");
    int64_t shape [] = { 16 };
    DLTensor t = { pyi_region_data (s_region), { kDLCPU, 0 }, 1, { kDLInt, 64, 1 },
                   shape, NULL, 0 };
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int size = pyi_tensor_pack (&t, buffer, sizeof buffer);
    CHECK (size > 0);
    CHECK_INT (pyi_region_inflight (s_region), 1);
    CHECK_INT (pyi_tensor_received (buffer, (size_t) size), 0);
    CHECK_INT (pyi_region_inflight (s_region), 0);
    CHECK_INT (pyi_region_mapped (), 1);                 /* no new mapping, none dropped */
    /*  Malformed, truncated, inline: refused, with a reason; nothing taken. */
    CHECK (pyi_tensor_received (buffer, (size_t) size - 1) == -1 && *pyi_last_error ());
    CHECK (pyi_tensor_received ("\x90", 1) == -1);
    size = pyi_tensor_pack (&t, buffer, sizeof buffer);
    size_t length = 0;
    void *inline_copy = pyi_tensor_inline_copy (buffer, (size_t) size, &length);
    CHECK (inline_copy);
    CHECK (pyi_tensor_received (inline_copy, length) == -1);
    pyi_tensor_free (inline_copy);
    CHECK_INT (pyi_region_inflight (s_region), 0);       /* the inline copy took its count */
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
}

/*  The inline form of n int32 of value v, decoded here (a remote peer's
    array arriving); the name of the region it arrived in, into name. */
static DLManagedTensor *
s_arrive (int64_t n, int32_t v, char *name)
{
    int32_t *plain = (int32_t *) malloc ((size_t) n * sizeof (int32_t));
    for (int64_t i = 0; i < n; i++)
        plain [i] = v + (int32_t) i;
    int64_t shape [1] = { n };
    DLTensor t = { plain, { kDLCPU, 0 }, 1, { kDLInt, 32, 1 }, shape, NULL, 0 };
    pyi_msg_t *msg = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_tensor_encode_inline (&t, msg), 0);
    free (plain);
    DLManagedTensor *m = pyi_tensor_decode (pyi_msg_frame_data (msg, 0),
                                            pyi_msg_frame_size (msg, 0));
    pyi_msg_destroy (&msg);
    CHECK_MSG (m, "%s", pyi_last_error ());
    for (int64_t i = 0; i < n; i++)
        CHECK_INT (((int32_t *) m->dl_tensor.data) [i], v + i);
    pyi_region_t *r = pyi_region_find (m->dl_tensor.data, NULL);
    CHECK (r);
    snprintf (name, PYI_REGION_MAX_NAME + 1, "%s", pyi_region_name (r));
    pyi_region_release (&r);
    return m;
}

static void
test_spares (void)
{
    TEST_BEGIN ("spares: an inline tensor arrives in the region the last one left");
    char first [PYI_REGION_MAX_NAME + 1], name [PYI_REGION_MAX_NAME + 1];
    pyi_region_linger (600000);
    DLManagedTensor *m = s_arrive (300000, 7, first);
    m->deleter (m);
    CHECK_INT (pyi_region_spares (), 1);
    CHECK_INT (pyi_region_mapped (), 1);           /* s_region only */
    CHECK (s_exists (first));
    /*  Nobody else can map a spare (LOCK_EX), a sweep leaves it, and a
        descriptor naming it is refused. */
    int fd = shm_open (first, O_RDWR, 0);
    CHECK (fd >= 0 && flock (fd, LOCK_SH | LOCK_NB) == -1);
    close (fd);
    CHECK_INT (pyi_region_sweep (NULL, 0), 0);
    CHECK (s_exists (first));
    CHECK (pyi_region_open (first) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "not in use"), "%s", pyi_last_error ());
    /*  A child forked now, exiting normally, leaves the parent's spare.
        (The reaper thread, started by the spare, is let reach its sleep
        first: ASan's allocator is not fork-safe while a thread starts.) */
    struct timespec settle = { 0, 200000000 };
    nanosleep (&settle, NULL);
    pid_t pid = fork ();
    if (pid == 0)
        exit (pyi_region_spares () == 0 ? 0 : 1);
    int status;
    CHECK (waitpid (pid, &status, 0) == pid && WIFEXITED (status) && WEXITSTATUS (status) == 0);
    CHECK_MSG (s_exists (first), "a forked child removed the parent's spare");

    /*  The same size again: the same region, the new values. */
    m = s_arrive (300000, 1000, name);
    CHECK_STR (name, first);
    CHECK_INT (pyi_region_spares (), 0);
    pyi_region_t *r = pyi_region_find (m->dl_tensor.data, NULL);
    CHECK_INT (pyi_region_inflight (r), 0);
    pyi_region_release (&r);
    /*  Another size while the first is in use: a region of its own. */
    DLManagedTensor *other = s_arrive (1000, 3, name);
    CHECK (strcmp (name, first) != 0);
    m->deleter (m);
    other->deleter (other);
    CHECK_INT (pyi_region_spares (), 2);
    CHECK_INT (pyi_region_trim (), 2);
    CHECK (!s_exists (first) && !s_exists (name));

    /*  Off: nothing is kept. */
    pyi_region_linger (0);
    m = s_arrive (1000, 3, name);
    m->deleter (m);
    CHECK_INT (pyi_region_spares (), 0);
    CHECK (!s_exists (name));
}

/*  The chunked decode of head refuses these chunks, saying text. */
static void
s_chunks_refused (const uint8_t *head, size_t head_size, const void *const *chunks,
                  const size_t *sizes, size_t count, const char *text)
{
    DLManagedTensor *m = pyi_tensor_decode_chunked (head, head_size, chunks, sizes, count);
    CHECK_MSG (!m, "accepted chunks that should say: %s", text);
    CHECK_MSG (strstr (pyi_last_error (), text), "error '%s' lacks '%s'", pyi_last_error (), text);
}

static void
test_chunked (void)
{
    TEST_BEGIN ("chunked inline form: span lent by the sender, chunks validated and joined");
    int32_t *base = (int32_t *) pyi_region_data (s_region);
    for (int i = 0; i < 30; i++)
        base [i] = 1000 + i;
    /*  Every other row of a [6, 5] int32 array, columns reversed. */
    int64_t shape [2] = { 3, 5 }, strides [2] = { 10, -1 };
    DLTensor view = { base + 4, { kDLCPU, 0 }, 2, { kDLInt, 32, 1 }, shape, strides, 0 };
    uint8_t desc [PYI_TENSOR_MAX_DESCRIPTOR], head [PYI_TENSOR_MAX_DESCRIPTOR];
    uint32_t inflight = pyi_region_inflight (s_region);
    int desc_size = pyi_tensor_pack (&view, desc, sizeof desc);
    CHECK (desc_size > 0);
    size_t head_size = 0, length = 0;
    const void *span = NULL;
    pyi_region_t *held = pyi_tensor_inline_span (desc, (size_t) desc_size, head, sizeof head,
                                                 &head_size, &span, &length);
    CHECK_MSG (held, "%s", pyi_last_error ());
    CHECK (held == s_region);
    CHECK_INT (pyi_region_inflight (s_region), inflight);     /* consumed */
    CHECK (span == (const void *) base && length == 25 * sizeof (int32_t));
    /*  The span in three uneven chunks. */
    const uint8_t *bytes = (const uint8_t *) span;
    const void *chunks [3] = { bytes, bytes + 7, bytes + 40 };
    size_t sizes [3] = { 7, 33, length - 40 };
    DLManagedTensor *m = pyi_tensor_decode_chunked (head, head_size, chunks, sizes, 3);
    CHECK_MSG (m, "%s", pyi_last_error ());
    DLManagedTensorVersioned *v = pyi_tensor_decode_chunked_versioned (head, head_size, chunks,
                                                                       sizes, 3, 0);
    CHECK_MSG (v, "%s", pyi_last_error ());
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) {
            const DLTensor *t [2] = { &m->dl_tensor, &v->dl_tensor };
            for (int k = 0; k < 2; k++) {
                int32_t *e = (int32_t *) t [k]->data + i * t [k]->strides [0]
                           + j * t [k]->strides [1];
                CHECK_INT (*e, 1000 + 10 * i + 4 - j);
            }
        }
    size_t offset;
    pyi_region_t *copy = pyi_region_find (m->dl_tensor.data, &offset);
    CHECK_MSG (copy && copy != s_region, "chunks arrive in a region of their own");
    pyi_region_release (&copy);
    m->deleter (m);
    v->deleter (v);

    /*  A hostile peer's chunks. */
    size_t short_sizes [3] = { 7, 33, length - 41 };
    s_chunks_refused (head, head_size, chunks, short_sizes, 3, "malformed");
    size_t long_sizes [3] = { 7, 33, length - 39 };
    s_chunks_refused (head, head_size, chunks, long_sizes, 3, "malformed");
    size_t huge [2] = { SIZE_MAX, 2 };
    s_chunks_refused (head, head_size, chunks, huge, 2, "malformed");
    s_chunks_refused (head, head_size, chunks, sizes, PYI_MAX_BODY_FRAMES + 1, "malformed");
    const void *null_chunks [3] = { bytes, NULL, bytes + 40 };
    s_chunks_refused (head, head_size, null_chunks, sizes, 3, "malformed");
    s_chunks_refused (head, head_size, NULL, sizes, 3, "malformed");
    s_chunks_refused (head, head_size, chunks, sizes, 0, "malformed");
    /*  The one-frame inline form, and a region's descriptor, as chunked. */
    pyi_msg_t *msg = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_tensor_encode_inline (&view, msg), 0);
    s_chunks_refused (pyi_msg_frame_data (msg, 0), pyi_msg_frame_size (msg, 0), chunks, sizes,
                      3, "malformed");
    pyi_msg_destroy (&msg);
    s_chunks_refused (desc, (size_t) desc_size, chunks, sizes, 3, "malformed");
    /*  The chunked head alone is not the one-frame form. */
    CHECK (!pyi_tensor_decode (head, head_size));
    CHECK (strstr (pyi_last_error (), "malformed"));
    pyi_region_release (&held);
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
    test_received ();
    test_share ();
    test_cross_process ();
    test_inline ();
    test_chunked ();
    test_spares ();
    pyi_region_release (&s_region);
    CHECK_MSG (!s_exists (name), "the test region was not removed");
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_tensor: OK\n");
    return 0;
}
