/*  pyi_tensor: the tensor descriptor codec and its validation, and the
    DLPack managed tensors over shared regions (docs/tensors.md).

    Descriptors are encoded with msgpack-c's packer and decoded with a
    strict, allocation-free, bounds-checked reader (like pyi_msg.c's): the
    bytes come from another process and are not trusted.

    Descriptor (msgpack array of 7):
        [ layout, [device_type, device_id], [code, bits, lanes],
          [shape...], [strides...] | nil, byte_offset, [name, offset, length] ]
    The span [offset, offset + length) of the region's data holds every
    byte the tensor addresses; element 0 is at offset + byte_offset.
*/
#include "pyisolate/pyi_tensor.h"
#include "pyisolate/pyi_region.h"
#include "pyi_library_internal.h"
#include "pyi_msgpack.h"
#include "pyi_tensor_internal.h"
#include "pyi_region_internal.h"
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define DESCRIPTOR_FIELDS 7      /* top-level array length */

/*  The DLPack 1.x ABI that consumers (numpy >= 2.1, torch) expect. */
_Static_assert (offsetof (DLManagedTensorVersioned, manager_ctx) == 8, "DLPack 1.x ABI");
_Static_assert (offsetof (DLManagedTensorVersioned, flags) == 8 + 2 * sizeof (void *),
                "DLPack 1.x ABI");
_Static_assert (offsetof (DLManagedTensorVersioned, dl_tensor) == 16 + 2 * sizeof (void *),
                "DLPack 1.x ABI");

/*  One allocation per managed tensor: the DLPack struct first (the
    deleter casts back), then what it points to. */
typedef struct {
    union {
        DLManagedTensor legacy;
        DLManagedTensorVersioned versioned;
    } head;
    pyi_region_t *region;                       /* our reference */
    int64_t shape [PYI_TENSOR_MAX_NDIM];
    int64_t strides [PYI_TENSOR_MAX_NDIM];
} s_holder_t;


/*  Validation ---------------------------------------------------------- */

/*  Bytes per element (bits x lanes / 8) of a dtype we carry, else -1. */
static int64_t
s_itemsize (DLDataType dtype)
{
    int bits = dtype.bits;
    bool ok;
    switch (dtype.code) {
        case kDLInt:
        case kDLUInt:    ok = bits == 8 || bits == 16 || bits == 32 || bits == 64; break;
        case kDLFloat:   ok = bits == 16 || bits == 32 || bits == 64; break;
        case kDLBfloat:  ok = bits == 16; break;
        case kDLComplex: ok = bits == 32 || bits == 64 || bits == 128; break;
        case PYI_DL_BOOL: ok = bits == 8; break;
        case kDLOpaqueHandle:
            pyi_set_error ("dtype code 3 (opaque handle) cannot cross processes");
            return -1;
        default:
            if (dtype.code >= PYI_DL_FLOAT8_FIRST && dtype.code <= PYI_DL_FLOAT8_LAST) {
                ok = bits == 8;
                break;
            }
            pyi_set_error ("unknown dtype code %u", (unsigned) dtype.code);
            return -1;
    }
    if (!ok) {
        pyi_set_error ("dtype code %u cannot have %d bits", (unsigned) dtype.code, bits);
        return -1;
    }
    if (dtype.lanes == 0) {
        pyi_set_error ("dtype has 0 lanes");
        return -1;
    }
    return (int64_t) (bits / 8) * dtype.lanes;
}

/*  Check dtype, ndim, shape and strides; derive itemsize and the bytes
    addressed relative to element 0, without overflow. 0 or -1. */
static int
s_check (pyi_tensor_meta_t *m)
{
    if ((m->itemsize = s_itemsize (m->dtype)) < 0)
        return -1;
    if (m->ndim < 0 || m->ndim > PYI_TENSOR_MAX_NDIM) {
        pyi_set_error ("ndim %d is over the limit of %d", m->ndim, PYI_TENSOR_MAX_NDIM);
        return -1;
    }
    int64_t numel = 1;
    m->empty = false;
    for (int i = 0; i < m->ndim; i++) {
        if (m->shape [i] < 0) {
            pyi_set_error ("shape[%d] is negative (%lld)", i, (long long) m->shape [i]);
            return -1;
        }
        if (m->shape [i] == 0)
            m->empty = true;
        else
        if (__builtin_mul_overflow (numel, m->shape [i], &numel)) {
            pyi_set_error ("shape overflows: more than 2^63 elements");
            return -1;
        }
    }
    int64_t total;
    if (__builtin_mul_overflow (numel, m->itemsize, &total)) {
        pyi_set_error ("shape x itemsize overflows");
        return -1;
    }
    /*  Element indexes reached: lo <= 0 <= hi. Computed for empty tensors
        too (a consumer may compute them): no overflow either way. */
    int64_t lo = 0, hi = 0;
    for (int i = 0; i < m->ndim; i++) {
        int64_t reach;
        int64_t last = m->shape [i] > 0 ? m->shape [i] - 1 : 0;
        if (__builtin_mul_overflow (last, m->strides [i], &reach)
        ||  __builtin_add_overflow (reach < 0 ? lo : hi, reach, reach < 0 ? &lo : &hi)) {
            pyi_set_error ("shape x strides overflows in dimension %d", i);
            return -1;
        }
    }
    if (__builtin_mul_overflow (lo, m->itemsize, &m->lo)
    ||  __builtin_mul_overflow (hi, m->itemsize, &m->hi)
    ||  __builtin_add_overflow (m->hi, m->itemsize, &m->hi)
    ||  __builtin_sub_overflow (m->hi, m->lo, &total)) {
        pyi_set_error ("strides x itemsize overflows");
        return -1;
    }
    if (m->empty)
        m->lo = m->hi = 0;      /* addresses nothing */
    return 0;
}

/*  C-contiguous strides for the shape (no overflow once s_check passed
    the shape: each is at most the product of the nonzero dimensions). */
static void
s_contiguous (pyi_tensor_meta_t *m)
{
    int64_t stride = 1;
    for (int i = m->ndim - 1; i >= 0; i--) {
        m->strides [i] = stride;
        /*  Saturate: a shape this large fails s_check anyway. */
        if (__builtin_mul_overflow (stride, m->shape [i] > 1 ? m->shape [i] : 1, &stride))
            stride = INT64_MAX;
    }
}

/*  Fill meta from a DLTensor and check it: host memory, or CUDA device
    memory when cuda is true. 0 or -1. */
int
pyi_tensor_meta_from (pyi_tensor_meta_t *m, const DLTensor *t, bool cuda)
{
    memset (m, 0, sizeof (*m));
    if (!t || t->ndim < 0 || t->ndim > PYI_TENSOR_MAX_NDIM || (t->ndim && !t->shape)) {
        pyi_set_error ("not a valid DLTensor (ndim %d)", t ? t->ndim : -1);
        return -1;
    }
    if (cuda && t->device.device_type == kDLCUDA)
        m->device = t->device;
    else
    if (t->device.device_type == kDLCPU || t->device.device_type == kDLCUDAHost) {
        m->device.device_type = kDLCPU;
        m->device.device_id = 0;
    }
    else {
        pyi_set_error ("device type %d is not %s", (int) t->device.device_type,
                       cuda ? "CPU or CUDA memory" : "CPU memory");
        return -1;
    }
    m->dtype = t->dtype;
    m->ndim = t->ndim;
    for (int i = 0; i < m->ndim; i++)
        m->shape [i] = t->shape [i];
    if (t->strides)
        memcpy (m->strides, t->strides, (size_t) m->ndim * sizeof (int64_t));
    else
        s_contiguous (m);
    return s_check (m);
}

/*  Encoding ------------------------------------------------------------- */

int
pyi_tensor_meta_pack (const pyi_tensor_meta_t *m, void *buffer, size_t size)
{
    pyi_writer_t writer = { (uint8_t *) buffer, size, 0 };
    msgpack_packer pk;
    msgpack_packer_init (&pk, &writer, pyi_writer_write);
    int rc = msgpack_pack_array (&pk, DESCRIPTOR_FIELDS);
    rc |= msgpack_pack_uint32 (&pk, PYI_TENSOR_LAYOUT);
    rc |= msgpack_pack_array (&pk, 2);
    rc |= msgpack_pack_uint32 (&pk, (uint32_t) m->device.device_type);
    rc |= msgpack_pack_uint32 (&pk, (uint32_t) m->device.device_id);
    rc |= msgpack_pack_array (&pk, 3);
    rc |= msgpack_pack_uint32 (&pk, m->dtype.code);
    rc |= msgpack_pack_uint32 (&pk, m->dtype.bits);
    rc |= msgpack_pack_uint32 (&pk, m->dtype.lanes);
    rc |= msgpack_pack_array (&pk, (size_t) m->ndim);
    for (int i = 0; i < m->ndim; i++)
        rc |= msgpack_pack_int64 (&pk, m->shape [i]);
    rc |= msgpack_pack_array (&pk, (size_t) m->ndim);
    for (int i = 0; i < m->ndim; i++)
        rc |= msgpack_pack_int64 (&pk, m->strides [i]);
    rc |= msgpack_pack_uint64 (&pk, m->byte_offset);
    rc |= msgpack_pack_array (&pk, 3);
    size_t name = strlen (m->name);
    rc |= msgpack_pack_str (&pk, name);
    rc |= msgpack_pack_str_body (&pk, m->name, name);
    rc |= msgpack_pack_uint64 (&pk, m->offset);
    rc |= msgpack_pack_uint64 (&pk, m->length);
    return rc ? -1 : (int) writer.used;
}

/*  The region that holds every byte t addresses, with a reference, and
    the span in meta. NULL (with the error set) when there is none. */
static pyi_region_t *
s_locate (pyi_tensor_meta_t *m, const DLTensor *t)
{
    if (pyi_tensor_meta_from (m, t, true))
        return NULL;
    const uint8_t *first = (const uint8_t *) t->data + t->byte_offset;
    const uint8_t *start = first + m->lo;
    size_t offset;
    bool cuda = m->device.device_type == kDLCUDA;
    pyi_region_t *region = cuda ? pyi_region_find_cuda (start, m->device.device_id, &offset)
                                : pyi_region_find (start, &offset);
    if (cuda && !region)
        return NULL;        /* pyi_region_find_cuda said why */
    if (region && (pyi_region_device (region) >= 0) != cuda) {
        pyi_set_error ("tensor memory is in a region of another device type");
        pyi_region_release (&region);
        return NULL;
    }
    if (!region || (uint64_t) (m->hi - m->lo) > pyi_region_size (region) - offset) {
        /*  (s_check made sure hi - lo does not overflow.) */
        pyi_set_error ("tensor memory is not in a shared region mapped here: "
                       "copy it with pyi_tensor_share");
        pyi_region_release (&region);
        return NULL;
    }
    _Static_assert (sizeof (m->name) == PYI_REGION_MAX_NAME + 1, "a region name fits");
    const char *name = pyi_region_name (region);
    memcpy (m->name, name, strlen (name) + 1);
    m->offset = offset;
    m->length = (uint64_t) (m->hi - m->lo);
    m->byte_offset = (uint64_t) -m->lo;
    return region;
}

int
pyi_tensor_pack (const DLTensor *t, void *buffer, size_t size)
{
    pyi_tensor_meta_t meta;
    pyi_region_t *region = s_locate (&meta, t);
    if (!region)
        return -1;
    int length = pyi_tensor_meta_pack (&meta, buffer, size);
    if (length < 0)
        pyi_set_error ("descriptor buffer of %zu bytes is too small", size);
    else
        pyi_region_sent (region);
    pyi_region_release (&region);
    return length;
}

int
pyi_tensor_encode (const DLTensor *t, pyi_msg_t *msg)
{
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    pyi_tensor_meta_t meta;
    pyi_region_t *region = s_locate (&meta, t);
    if (!region)
        return -1;
    int length = pyi_tensor_meta_pack (&meta, buffer, sizeof (buffer));
    int rc = length < 0 ? -1 : pyi_msg_append (msg, buffer, (size_t) length);
    if (rc)
        pyi_set_error ("cannot append the descriptor frame (message full?)");
    else {
        pyi_msg_mark_descriptor (msg, pyi_msg_frames (msg) - 1);
        pyi_region_sent (region);
    }
    pyi_region_release (&region);
    return rc;
}

/*  Decoding ------------------------------------------------------------- */

/*  An array of exactly count elements. */
static bool
s_expect_array (pyi_reader_t *r, uint64_t count)
{
    uint64_t n;
    return pyi_reader_array (r, &n) && n == count;
}

static int
s_bad (const char *what)
{
    pyi_set_error ("malformed tensor descriptor: %s", what);
    return -1;
}

/*  Parse and validate everything that does not need the region. chunked:
    the descriptor must be in the chunked inline form (nothing after it). */
int
pyi_tensor_meta_parse (pyi_tensor_meta_t *m, const void *data, size_t size, bool chunked)
{
    memset (m, 0, sizeof (*m));
    pyi_reader_t r = { (const uint8_t *) data, (const uint8_t *) data + size };
    uint64_t v, count;
    if (!data || !s_expect_array (&r, DESCRIPTOR_FIELDS))
        return s_bad ("not a msgpack array of 7 fields");
    if (!pyi_reader_uint (&r, UINT32_MAX, &v))
        return s_bad ("field 1 (layout version) is not an unsigned integer");
    if (v != PYI_TENSOR_LAYOUT) {
        pyi_set_error ("tensor descriptor layout %llu not supported (this library reads %d)",
                       (unsigned long long) v, PYI_TENSOR_LAYOUT);
        return -1;
    }
    uint64_t type, id;
    if (!s_expect_array (&r, 2) || !pyi_reader_uint (&r, INT32_MAX, &type)
    ||  !pyi_reader_uint (&r, INT32_MAX, &id))
        return s_bad ("field 2 (device) is not [type, id]");
    if (!(type == kDLCPU && id == 0) && type != kDLCUDA) {
        pyi_set_error ("device (%llu, %llu) not supported: only (1, 0) CPU and (2, n) CUDA",
                       (unsigned long long) type, (unsigned long long) id);
        return -1;
    }
    m->device.device_type = (DLDeviceType) type;
    m->device.device_id = (int32_t) id;
    uint64_t code, bits, lanes;
    if (!s_expect_array (&r, 3) || !pyi_reader_uint (&r, UINT8_MAX, &code)
    ||  !pyi_reader_uint (&r, UINT8_MAX, &bits) || !pyi_reader_uint (&r, UINT16_MAX, &lanes))
        return s_bad ("field 3 (dtype) is not [code, bits, lanes] in range");
    m->dtype.code = (uint8_t) code;
    m->dtype.bits = (uint8_t) bits;
    m->dtype.lanes = (uint16_t) lanes;
    if (!pyi_reader_array (&r, &count))
        return s_bad ("field 4 (shape) is not an array");
    if (count > PYI_TENSOR_MAX_NDIM) {
        pyi_set_error ("ndim %llu is over the limit of %d",
                       (unsigned long long) count, PYI_TENSOR_MAX_NDIM);
        return -1;
    }
    m->ndim = (int32_t) count;
    for (int i = 0; i < m->ndim; i++)
        if (!pyi_reader_int (&r, &m->shape [i]))
            return s_bad ("field 4 (shape) holds a non-integer");
    if (pyi_reader_need (&r, 1) && *r.p == 0xc0) {
        r.p++;
        s_contiguous (m);
    }
    else {
        if (!pyi_reader_array (&r, &count) || count != (uint64_t) m->ndim)
            return s_bad ("field 5 (strides) is neither nil nor an array of ndim integers");
        for (int i = 0; i < m->ndim; i++)
            if (!pyi_reader_int (&r, &m->strides [i]))
                return s_bad ("field 5 (strides) holds a non-integer");
    }
    if (!pyi_reader_uint (&r, INT64_MAX, &m->byte_offset))
        return s_bad ("field 6 (byte_offset) is not an integer in [0, 2^63)");
    if (!s_expect_array (&r, 3) || !pyi_reader_str_copy (&r, m->name, PYI_REGION_MAX_NAME)
    ||  !pyi_reader_uint (&r, INT64_MAX, &m->offset) || !pyi_reader_uint (&r, INT64_MAX, &m->length))
        return s_bad ("field 7 (region) is not [name, offset, length]");
    if (*m->name == 0) {
        /*  Inline form: no region; the span's bytes follow, in this frame
            or (chunked) in the frames after it. */
        m->is_inline = true;
        if (chunked) {
            if (m->offset != 0 || r.p != r.end)
                return s_bad ("chunked inline tensor: offset not 0, or bytes after it");
        }
        else {
            if (m->offset != 0 || (uint64_t) (r.end - r.p) != m->length)
                return s_bad ("inline tensor: offset not 0, or not exactly length bytes after it");
            m->inline_data = r.p;
        }
    }
    else
    if (chunked)
        return s_bad ("chunk frames follow a descriptor that is not inline");
    else
    if (r.p != r.end)
        return s_bad ("trailing bytes");
    if (s_check (m))
        return -1;
    /*  Every byte addressed must lie in the span [0, length) from its start. */
    int64_t first = 0, last = 0;
    if (__builtin_add_overflow ((int64_t) m->byte_offset, m->lo, &first)
    ||  __builtin_add_overflow ((int64_t) m->byte_offset, m->hi, &last)
    ||  first < 0 || (uint64_t) last > m->length) {
        pyi_set_error ("tensor addresses bytes [%lld, %lld) outside its span [0, %llu)",
                       (long long) first, (long long) last, (unsigned long long) m->length);
        return -1;
    }
    return 0;
}

static void
s_delete_legacy (DLManagedTensor *self)
{
    s_holder_t *holder = (s_holder_t *) self;
    pyi_region_release (&holder->region);
    free (holder);
}

static void
s_delete_versioned (DLManagedTensorVersioned *self)
{
    s_holder_t *holder = (s_holder_t *) self;
    pyi_region_release (&holder->region);
    free (holder);
}

/*  A managed tensor for meta whose element 0 is at first; takes the
    region reference (released on failure too). */
static s_holder_t *
s_holder_new (const pyi_tensor_meta_t *m, uint8_t *first, pyi_region_t **region_p,
              bool versioned, uint64_t flags)
{
    s_holder_t *holder = (s_holder_t *) calloc (1, sizeof (s_holder_t));
    if (!holder) {
        pyi_set_error ("out of memory");
        pyi_region_release (region_p);
        return NULL;
    }
    holder->region = *region_p;
    *region_p = NULL;
    memcpy (holder->shape, m->shape, sizeof (holder->shape));
    memcpy (holder->strides, m->strides, sizeof (holder->strides));
    DLTensor *t;
    if (versioned) {
        holder->head.versioned.version.major = DLPACK_MAJOR_VERSION;
        holder->head.versioned.version.minor = DLPACK_MINOR_VERSION;
        holder->head.versioned.manager_ctx = holder;
        holder->head.versioned.deleter = s_delete_versioned;
        holder->head.versioned.flags = flags;
        t = &holder->head.versioned.dl_tensor;
    }
    else {
        holder->head.legacy.manager_ctx = holder;
        holder->head.legacy.deleter = s_delete_legacy;
        t = &holder->head.legacy.dl_tensor;
    }
    t->data = first;
    t->device = m->device;
    t->ndim = m->ndim;
    t->dtype = m->dtype;
    t->shape = holder->shape;
    t->strides = holder->strides;
    t->byte_offset = 0;
    return holder;
}

/*  The chunks' sizes add up exactly to length (no overflow). */
static bool
s_chunks_fit (const void *const *chunks, const size_t *sizes, size_t count, uint64_t length)
{
    if (count > PYI_MAX_BODY_FRAMES || (count && (!chunks || !sizes))) {
        pyi_set_error ("malformed tensor descriptor: %zu chunk frames (at most %d)",
                       count, PYI_MAX_BODY_FRAMES);
        return false;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < count; i++)
        if ((sizes [i] && !chunks [i])
        ||  __builtin_add_overflow (total, (uint64_t) sizes [i], &total) || total > length) {
            pyi_set_error ("malformed tensor descriptor: chunk frames hold more than its "
                           "%llu bytes", (unsigned long long) length);
            return false;
        }
    if (total != length) {
        pyi_set_error ("malformed tensor descriptor: chunk frames hold %llu bytes, not its "
                       "%llu", (unsigned long long) total, (unsigned long long) length);
        return false;
    }
    return true;
}

/*  chunks: NULL for a descriptor frame alone, else the chunked inline
    form's count chunk frames. */
static s_holder_t *
s_decode (const void *data, size_t size, const void *const *chunks, const size_t *sizes,
          size_t count, bool versioned, uint64_t flags)
{
    pyi_tensor_meta_t meta;
    bool chunked = chunks != NULL || sizes != NULL;
    if (pyi_tensor_meta_parse (&meta, data, size, chunked))
        return NULL;
    if (chunked && !s_chunks_fit (chunks, sizes, count, meta.length))
        return NULL;
    if (meta.is_inline) {
        /*  From a peer without shared memory: into a region of our own,
            so that it crosses on from here like any other. */
        if (meta.device.device_type != kDLCPU) {
            pyi_set_error ("an inline tensor must be CPU memory");
            return NULL;
        }
        pyi_region_t *region = pyi_region_new_for_copy ((size_t) meta.length);
        if (!region)
            return NULL;
        uint8_t *to = (uint8_t *) pyi_region_data (region);
        if (!chunked)
            memcpy (to, meta.inline_data, (size_t) meta.length);
        else
            for (size_t i = 0; i < count; to += sizes [i], i++)
                if (sizes [i])
                    memcpy (to, chunks [i], sizes [i]);
        uint8_t *first = (uint8_t *) pyi_region_data (region) + meta.byte_offset;
        return s_holder_new (&meta, first, &region, versioned, flags);
    }
    pyi_region_t *region = pyi_region_open (meta.name);
    if (!region)
        return NULL;
    /*  Mapped and locked: this message no longer needs to keep it alive. */
    pyi_region_received (region);
    int device = pyi_region_device (region);
    if ((device >= 0) != (meta.device.device_type == kDLCUDA)) {
        pyi_set_error ("descriptor of a %s tensor names %s region %s",
                       device >= 0 ? "CPU" : "CUDA", device >= 0 ? "a CUDA" : "a host",
                       meta.name);
        pyi_region_release (&region);
        return NULL;
    }
    if (device >= 0)
        meta.device.device_id = device;     /* the receiver's ordinal of that GPU */
    size_t region_size = pyi_region_size (region);
    if (meta.length > region_size || meta.offset > region_size - meta.length) {
        pyi_set_error ("span [%llu, +%llu) is beyond region %s of %zu bytes",
                       (unsigned long long) meta.offset, (unsigned long long) meta.length,
                       meta.name, region_size);
        pyi_region_release (&region);
        return NULL;
    }
    uint8_t *first = (uint8_t *) pyi_region_data (region) + meta.offset + meta.byte_offset;
    return s_holder_new (&meta, first, &region, versioned, flags);
}

DLManagedTensor *
pyi_tensor_decode (const void *data, size_t size)
{
    s_holder_t *holder = s_decode (data, size, NULL, NULL, 0, false, 0);
    return holder ? &holder->head.legacy : NULL;
}

DLManagedTensor *
pyi_tensor_decode_chunked (const void *data, size_t size, const void *const *chunks,
                           const size_t *sizes, size_t count)
{
    static const size_t none = 0;
    s_holder_t *holder = s_decode (data, size, chunks, sizes ? sizes : &none, count, false, 0);
    return holder ? &holder->head.legacy : NULL;
}

DLManagedTensorVersioned *
pyi_tensor_decode_chunked_versioned (const void *data, size_t size, const void *const *chunks,
                                     const size_t *sizes, size_t count, uint64_t flags)
{
    static const size_t none = 0;
    s_holder_t *holder = s_decode (data, size, chunks, sizes ? sizes : &none, count, true,
                                   flags);
    return holder ? &holder->head.versioned : NULL;
}

DLManagedTensorVersioned *
pyi_tensor_decode_versioned (const void *data, size_t size, uint64_t flags)
{
    s_holder_t *holder = s_decode (data, size, NULL, NULL, 0, true, flags);
    return holder ? &holder->head.versioned : NULL;
}

int
pyi_tensor_discard (const void *data, size_t size)
{
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_parse (&meta, data, size, false))
        return -1;
    return meta.is_inline ? 0 : pyi_region_discard (meta.name);
}

int
pyi_tensor_received (const void *data, size_t size)
{
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_parse (&meta, data, size, false))
        return -1;
    if (meta.is_inline) {
        pyi_set_error ("an inline descriptor names no region");
        return -1;
    }
    pyi_region_t *region = pyi_region_open (meta.name);
    if (!region)
        return -1;
    pyi_region_received (region);
    pyi_region_release (&region);
    return 0;
}

/*  Wrapping, sharing, allocating ------------------------------------------ */

static s_holder_t *
s_wrap (const DLTensor *t, bool versioned, uint64_t flags)
{
    pyi_tensor_meta_t meta;
    pyi_region_t *region = s_locate (&meta, t);
    if (!region)
        return NULL;
    uint8_t *first = (uint8_t *) t->data + t->byte_offset;
    return s_holder_new (&meta, first, &region, versioned, flags);
}

DLManagedTensor *
pyi_tensor_wrap (const DLTensor *t)
{
    s_holder_t *holder = s_wrap (t, false, 0);
    return holder ? &holder->head.legacy : NULL;
}

DLManagedTensorVersioned *
pyi_tensor_wrap_versioned (const DLTensor *t, uint64_t flags)
{
    s_holder_t *holder = s_wrap (t, true, flags);
    return holder ? &holder->head.versioned : NULL;
}

/*  A new region-backed C-contiguous tensor with meta's dtype and shape
    (meta's strides are replaced). */
static s_holder_t *
s_allocate (pyi_tensor_meta_t *m, uint64_t flags)
{
    int64_t bytes = m->itemsize;
    for (int i = 0; i < m->ndim; i++)
        bytes *= m->shape [i];          /* s_check: no overflow */
    s_contiguous (m);
    pyi_region_t *region = pyi_region_new ((size_t) bytes);
    if (!region)
        return NULL;
    uint8_t *data = (uint8_t *) pyi_region_data (region);
    return s_holder_new (m, data, &region, true, flags);
}

/*  Copy the elements of src (element 0 at from, strides in meta) into
    the C-contiguous buffer at to, dimension by dimension. */
static uint8_t *
s_gather (const pyi_tensor_meta_t *m, int dim, const uint8_t *from, uint8_t *to)
{
    if (dim == m->ndim) {
        memcpy (to, from, (size_t) m->itemsize);
        return to + m->itemsize;
    }
    if (dim == m->ndim - 1 && m->strides [dim] == 1) {
        size_t bytes = (size_t) (m->shape [dim] * m->itemsize);
        memcpy (to, from, bytes);
        return to + bytes;
    }
    for (int64_t i = 0; i < m->shape [dim]; i++)
        to = s_gather (m, dim + 1, from + i * m->strides [dim] * m->itemsize, to);
    return to;
}

DLManagedTensorVersioned *
pyi_tensor_share (const DLTensor *t)
{
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_from (&meta, t, false))
        return NULL;
    pyi_tensor_meta_t source = meta;
    s_holder_t *holder = s_allocate (&meta, DLPACK_FLAG_BITMASK_IS_COPIED);
    if (!holder)
        return NULL;
    if (!meta.empty)
        s_gather (&source, 0, (const uint8_t *) t->data + t->byte_offset,
                  (uint8_t *) holder->head.versioned.dl_tensor.data);
    return &holder->head.versioned;
}

DLManagedTensorVersioned *
pyi_tensor_empty (int32_t ndim, const int64_t *shape, DLDataType dtype)
{
    DLTensor t = { NULL, { kDLCPU, 0 }, ndim, dtype, (int64_t *) shape, NULL, 0 };
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_from (&meta, &t, false))
        return NULL;
    s_holder_t *holder = s_allocate (&meta, 0);
    return holder ? &holder->head.versioned : NULL;
}
