/*  fuzz_tensor: libFuzzer target for the tensor descriptor decoder
    (memory/pyi_tensor.c).

    Feeds arbitrary bytes to pyi_tensor_decode () and
    pyi_tensor_decode_versioned (), which must never crash, leak or read
    out of bounds. The fuzzer's process owns one 64 KiB region; the
    placeholder region name "/pyi-1-0-1-1" (as a msgpack fixstr) in an
    input is replaced by that region's name, so the seeds reach the checks
    behind the region lookup. When a descriptor is accepted:
    - every byte it can address must lie inside the region's data (checked
      from the lowest and highest element's address, not by trusting the
      decoder), and is read, so a wrong view would also fault;
    - the decoded tensor encodes again and that decodes to the same view
      (data, dtype, shape, strides), and both calls keep the region's
      in-flight count balanced.
    An input in inline form (region name "", the span's bytes after it)
    decodes into a new region of this process, once per decode: its view
    must lie inside that region, and the regions must go with the tensors.
    An input that starts with 0xff is the chunked inline form instead:
    a count byte, count little-endian 16-bit chunk sizes, then the
    descriptor, decoded by pyi_tensor_decode_chunked[_versioned] with
    chunks taken from a fixed pattern buffer; when accepted, the sizes
    add up to the span's length and the new region holds the chunks'
    bytes in order.
    Any difference aborts, which libFuzzer reports as a crash.

    Seeds (tests/fuzz/corpus_tensor): contiguous float32 [4, 5]; int32
    [3, 4] strided view; float32 [6, 8] with negative strides; float64
    0-d; empty [0, 5]; bool [10]; complex128 transposed [2, 2]; float32x4
    lanes [3]; int64 broadcast [1000, 3] (stride 0); bfloat16 [2, 3, 4]
    ending at the region's end; inline float32 [4]; the same chunked in
    three (5, 0 and 11 bytes).

    Build: tests/fuzz/run (clang, -DPYI_FUZZ=ON).
*/

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pyisolate/pyisolate.h>

#define REGION_SIZE 65536
#define PLACEHOLDER "\xac/pyi-1-0-1-1"      /* fixstr of 12 bytes */
#define PLACEHOLDER_SIZE 13

static pyi_region_t *s_region;
static uint8_t *s_data;
/*  Chunk bytes: chunk i starts at s_pattern + i % 256, at most 65535. */
static uint8_t s_pattern [65536 + 256];

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    s_region = pyi_region_new (REGION_SIZE);
    if (!s_region) {
        fprintf (stderr, "fuzz_tensor: %s\n", pyi_last_error ());
        abort ();
    }
    s_data = (uint8_t *) pyi_region_data (s_region);
    for (size_t i = 0; i < REGION_SIZE; i++)
        s_data [i] = (uint8_t) i;
    for (size_t i = 0; i < sizeof s_pattern; i++)
        s_pattern [i] = (uint8_t) (i * 7 + i / 256);
    /*  Decoding finds the region in this process's cache by name: its
        /dev/shm entry is not needed, and removing it now leaves nothing
        behind however the fuzzer ends. */
    pyi_region_remove_session (NULL);
    return 0;
}

static void
s_fail (const char *what)
{
    fprintf (stderr, "fuzz_tensor: %s\n", what);
    abort ();
}

/*  Check that the view lies inside the region data [base, base + size)
    and read it. */
static unsigned
s_touch (const DLTensor *t, const uint8_t *base, size_t size)
{
    int64_t item = (int64_t) (t->dtype.bits / 8) * t->dtype.lanes;
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape [i] == 0)
            return 0;       /* empty: addresses nothing */
    for (int i = 0; i < t->ndim; i++) {
        int64_t reach = (t->shape [i] - 1) * t->strides [i];
        if (reach < 0)
            lo += reach;
        else
            hi += reach;
    }
    const uint8_t *first = (const uint8_t *) t->data + t->byte_offset + lo * item;
    const uint8_t *end = (const uint8_t *) t->data + t->byte_offset + hi * item + item;
    if (first < base || end > base + size || first >= end)
        s_fail ("accepted a view outside the region");
    unsigned sum = 0;
    for (const uint8_t *p = first; p < end; p++)
        sum += *p;
    return sum;
}

static void
s_same (const DLTensor *a, const DLTensor *b, bool same_data)
{
    if ((same_data && a->data != b->data) || a->ndim != b->ndim || a->dtype.code != b->dtype.code
    ||  a->dtype.bits != b->dtype.bits || a->dtype.lanes != b->dtype.lanes
    ||  a->byte_offset != b->byte_offset)
        s_fail ("round trip changed the tensor");
    for (int i = 0; i < a->ndim; i++)
        if (a->shape [i] != b->shape [i]
        ||  (a->shape [i] > 1 && a->strides [i] != b->strides [i]))
            s_fail ("round trip changed shape or strides");
}

static int
s_chunked (const uint8_t *data, size_t size)
{
    if (size < 2 || size < 2 + 2 * (size_t) data [1])
        return 0;
    size_t count = data [1];
    const void *chunks [256];
    size_t sizes [256], total = 0;
    for (size_t i = 0; i < count; i++) {
        chunks [i] = s_pattern + i % 256;
        sizes [i] = (size_t) data [2 + 2 * i] | (size_t) data [3 + 2 * i] << 8;
        total += sizes [i];
    }
    const uint8_t *desc = data + 2 + 2 * count;
    size_t desc_size = size - 2 - 2 * count;
    DLManagedTensor *legacy = pyi_tensor_decode_chunked (desc, desc_size, chunks, sizes, count);
    DLManagedTensorVersioned *versioned = pyi_tensor_decode_chunked_versioned (
        desc, desc_size, chunks, sizes, count, 0);
    if (!legacy != !versioned)
        s_fail ("legacy and versioned chunked decoding disagree");
    if (!legacy) {
        if (!*pyi_last_error ())
            s_fail ("refused chunks without an error text");
        return 0;
    }
    size_t offset;
    pyi_region_t *own = pyi_region_find (legacy->dl_tensor.data, &offset);
    if (!own || own == s_region || pyi_region_size (own) < total)
        s_fail ("chunks are not in a region of their own, or do not fit it");
    const uint8_t *at = (const uint8_t *) pyi_region_data (own);
    for (size_t i = 0; i < count; at += sizes [i], i++)
        if (memcmp (at, chunks [i], sizes [i]) != 0)
            s_fail ("the region does not hold the chunks in order");
    s_touch (&legacy->dl_tensor, (const uint8_t *) pyi_region_data (own), pyi_region_size (own));
    s_same (&legacy->dl_tensor, &versioned->dl_tensor, false);
    pyi_region_release (&own);
    legacy->deleter (legacy);
    versioned->deleter (versioned);
    if (pyi_region_mapped () != 1)
        s_fail ("a region reference leaked");
    return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size && data [0] == 0xff)
        return s_chunked (data, size);
    /*  Put the real region name in place of the placeholder. */
    uint8_t input [2 * PYI_TENSOR_MAX_DESCRIPTOR];
    const char *name = pyi_region_name (s_region);
    size_t name_size = strlen (name);
    const uint8_t *at = size >= PLACEHOLDER_SIZE
        ? memmem (data, size, PLACEHOLDER, PLACEHOLDER_SIZE) : NULL;
    if (at && size - PLACEHOLDER_SIZE + 1 + name_size <= sizeof input) {
        size_t head = (size_t) (at - data);
        memcpy (input, data, head);
        input [head] = (uint8_t) (0xa0 | name_size);
        memcpy (input + head + 1, name, name_size);
        memcpy (input + head + 1 + name_size, at + PLACEHOLDER_SIZE,
                size - head - PLACEHOLDER_SIZE);
        data = input;
        size = size - PLACEHOLDER_SIZE + 1 + name_size;
    }
    uint32_t inflight = pyi_region_inflight (s_region);
    DLManagedTensor *legacy = pyi_tensor_decode (data, size);
    DLManagedTensorVersioned *versioned = pyi_tensor_decode_versioned (data, size, 0);
    if (!legacy != !versioned)
        s_fail ("legacy and versioned decoding disagree");
    if (!legacy) {
        if (!*pyi_last_error ())
            s_fail ("refused without an error text");
        return 0;
    }
    /*  The inline form (region name "") arrives in a new region of its own,
        one per decode; anything else is a view of our region. */
    pyi_region_t *own = NULL;
    size_t offset;
    bool inline_form = legacy->dl_tensor.data < (void *) s_data
                    || legacy->dl_tensor.data > (void *) (s_data + REGION_SIZE);
    if (inline_form) {
        own = pyi_region_find (legacy->dl_tensor.data, &offset);
        if (!own || own == s_region)
            s_fail ("an inline tensor is not in a region of its own");
        s_touch (&legacy->dl_tensor, (const uint8_t *) pyi_region_data (own),
                 pyi_region_size (own));
        pyi_region_release (&own);
    }
    else
        s_touch (&legacy->dl_tensor, s_data, REGION_SIZE);
    s_same (&legacy->dl_tensor, &versioned->dl_tensor, !inline_form);

    uint8_t again [PYI_TENSOR_MAX_DESCRIPTOR];
    int length = pyi_tensor_pack (&legacy->dl_tensor, again, sizeof again);
    if (length < 0)
        s_fail ("an accepted tensor does not encode again");
    DLManagedTensor *second = pyi_tensor_decode (again, (size_t) length);
    if (!second)
        s_fail ("the re-encoded descriptor is refused");
    s_same (&legacy->dl_tensor, &second->dl_tensor, true);
    second->deleter (second);
    legacy->deleter (legacy);
    versioned->deleter (versioned);
    /*  Decoding takes in-flight counts off (never below 0); pack added one
        that the second decode took off. */
    if (pyi_region_inflight (s_region) > inflight)
        s_fail ("in-flight count grew");
    if (pyi_region_mapped () != 1)
        s_fail ("a region reference leaked");
    return 0;
}
