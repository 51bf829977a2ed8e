/*  pyi_tensor: tensor descriptors over shared memory regions, and DLPack.

    A tensor crosses between processes as a descriptor: one small msgpack
    body frame with its DLPack metadata (device, dtype, shape, strides)
    and a reference to the span of a pyi_region that holds its bytes. The
    bytes themselves are not copied: the receiver maps the same region.
    docs/tensors.md specifies the descriptor and the lifetime rules.

    Decoding takes untrusted bytes and validates everything against the
    region it names; a bad descriptor gives NULL and a text in
    pyi_last_error (), never a crash nor a view outside the region.

    Ownership: every DLManagedTensor / DLManagedTensorVersioned returned
    here holds one reference to its region; its deleter (called once by
    whoever consumes it, e.g. numpy or torch) releases it and frees the
    struct. Shape and strides live as long as the struct.
*/
#ifndef PYI_TENSOR_H_INCLUDED
#define PYI_TENSOR_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include <dlpack/dlpack.h>
#include "pyi_library.h"
#include "pyi_msg.h"
#include "pyi_region.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  DLPack 1.x's versioned managed tensor, with the exact ABI of
    dlpack.h 1.0, for systems whose dlpack.h is older (Debian ships 0.6).
    numpy >= 2.1 takes it from a "dltensor_versioned" capsule and gives
    writeable arrays unless DLPACK_FLAG_BITMASK_READ_ONLY is set. */
#ifndef DLPACK_MAJOR_VERSION
#define DLPACK_MAJOR_VERSION 1
#define DLPACK_MINOR_VERSION 0
#define DLPACK_FLAG_BITMASK_READ_ONLY (1UL << 0UL)
#define DLPACK_FLAG_BITMASK_IS_COPIED (1UL << 1UL)

typedef struct {
    uint32_t major;
    uint32_t minor;
} DLPackVersion;

typedef struct DLManagedTensorVersioned {
    DLPackVersion version;
    void *manager_ctx;
    void (*deleter) (struct DLManagedTensorVersioned *self);
    uint64_t flags;
    DLTensor dl_tensor;
} DLManagedTensorVersioned;
#endif

/*  Descriptor layout version written by this library. */
#define PYI_TENSOR_LAYOUT 1
/*  Most dimensions a tensor may have. */
#define PYI_TENSOR_MAX_NDIM 32
/*  Largest descriptor frame, in bytes. */
#define PYI_TENSOR_MAX_DESCRIPTOR 1024
/*  DLPack type codes newer than dlpack.h 0.6 that descriptors accept. */
#define PYI_DL_BOOL 6              /* kDLBool, 8 bits */
#define PYI_DL_FLOAT8_FIRST 7      /* kDLFloat8_e3m4 .. */
#define PYI_DL_FLOAT8_LAST 14      /* .. kDLFloat8_e8m0fnu (DLPack 1.1), 8 bits */

/*  Write the descriptor of tensor t into buffer (size bytes). t->data
    (with byte_offset and strides, which may be negative or NULL for
    C-contiguous) must address only memory of one region mapped in this
    process (pyi_region_new, or a tensor received with pyi_tensor_decode);
    t must be a CPU tensor. Counts one message in flight on the region (the
    caller must send the bytes: see docs/tensors.md). Returns the number
    of bytes written, or -1 (buffer too small, tensor not valid, or not in
    a region: then copy it with pyi_tensor_share). */
PYI_EXPORT int pyi_tensor_pack (const DLTensor *t, void *buffer, size_t size);

/*  pyi_tensor_pack into a new body frame appended to msg, marked as a
    descriptor (pyi_msg_mark_descriptor). 0 or -1. */
PYI_EXPORT int pyi_tensor_encode (const DLTensor *t, pyi_msg_t *msg);

/*  Decode an untrusted descriptor: validate it, map its region (cached:
    no syscall when it is mapped here already), take one message off the
    region's in-flight count, and return a managed tensor over the shared
    bytes. The DLTensor's data points at element 0 (byte_offset 0) and its
    strides are always set. NULL with pyi_last_error () on any fault. */
PYI_EXPORT DLManagedTensor *pyi_tensor_decode (const void *data, size_t size);

/*  The same as a DLPack 1.0 versioned tensor; flags are its flags
    (0: writeable; DLPACK_FLAG_BITMASK_READ_ONLY for a read-only view). */
PYI_EXPORT DLManagedTensorVersioned *pyi_tensor_decode_versioned (const void *data,
                                                                  size_t size, uint64_t flags);

/*  A descriptor that will never be decoded (its message was dropped):
    give back the in-flight count it holds on its region, which then goes
    as soon as nobody maps it. No mapping of the data, no CUDA call. 0, or
    -1 when the descriptor is malformed or its region is gone. */
PYI_EXPORT int pyi_tensor_discard (const void *data, size_t size);

/*  A descriptor this process made coming back unchanged (the receiver
    keeps the tensor it sent instead of decoding a new one): take its
    message off the region's in-flight count, as pyi_tensor_decode does,
    and make nothing. 0, or -1 when it is malformed, inline or names no
    region. */
PYI_EXPORT int pyi_tensor_received (const void *data, size_t size);

/*  Inline form, for peers without shared memory (workers on another
    machine): the descriptor with region name "" and offset 0, followed by
    the span's bytes, in one frame. pyi_tensor_decode takes it like any
    descriptor and gives a tensor in a new region of this process.

    pyi_tensor_encode_inline appends the inline form of CPU tensor t (any
    memory, copied) to msg, unmarked: what a remote peer sends.
    pyi_tensor_inline turns marked descriptor frame index of msg into its
    inline form (the span's bytes copied from the region; the descriptor's
    in-flight count consumed): what a sender does to a message for a
    remote peer (the broker refuses marked descriptors bound for one). A
    CUDA tensor has no inline form (refused). 0 or -1. */
PYI_EXPORT int pyi_tensor_encode_inline (const DLTensor *t, pyi_msg_t *msg);
PYI_EXPORT int pyi_tensor_inline (pyi_msg_t *msg, size_t index);

/*  The inline form of descriptor data (size bytes) in a new buffer of
    *length bytes, which the caller gives back with pyi_tensor_free; the
    descriptor's in-flight count is consumed. NULL on failure (its count
    is given back then too, when the region could be named). */
PYI_EXPORT void *pyi_tensor_inline_copy (const void *data, size_t size, size_t *length);
PYI_EXPORT void pyi_tensor_free (void *buffer);

/*  Chunked inline form, for large tensors: the inline descriptor with
    nothing after it, followed in the message by count chunk frames that
    hold the span's bytes in order (sizes adding up exactly to its
    length; count <= PYI_MAX_BODY_FRAMES): encryption, sending and
    decryption of the chunks overlap, and the sender lends its memory.

    pyi_tensor_inline_span (sender) writes the chunked inline descriptor
    of marked descriptor data into head (head_size bytes;
    PYI_TENSOR_MAX_DESCRIPTOR is enough), its length in *head_length, and
    points *span at the span's *length bytes in the region (consuming the
    descriptor's in-flight count). It returns a reference to that region
    (pyi_region_release), which keeps *span mapped: hold it until the
    chunks are sent. NULL on failure.

    pyi_tensor_decode_chunked[_versioned] (receiver) validate the
    descriptor and the chunks' sizes (an untrusted peer's: any mismatch
    is a malformed-descriptor error) and copy the chunks, once, into a
    new region, as pyi_tensor_decode does with the one-frame form. */
PYI_EXPORT pyi_region_t *pyi_tensor_inline_span (const void *data, size_t size, void *head,
                                                 size_t head_size, size_t *head_length,
                                                 const void **span, size_t *length);
PYI_EXPORT DLManagedTensor *pyi_tensor_decode_chunked (const void *data, size_t size,
                                                       const void *const *chunks,
                                                       const size_t *sizes, size_t count);
PYI_EXPORT DLManagedTensorVersioned *pyi_tensor_decode_chunked_versioned (
    const void *data, size_t size, const void *const *chunks, const size_t *sizes,
    size_t count, uint64_t flags);

/*  A new managed tensor over the same memory as t (which must lie in a
    region mapped here), holding its own region reference: for example a
    legacy capsule for torch over a versioned tensor's memory. NULL when
    t is not valid or not in a region. */
PYI_EXPORT DLManagedTensor *pyi_tensor_wrap (const DLTensor *t);
PYI_EXPORT DLManagedTensorVersioned *pyi_tensor_wrap_versioned (const DLTensor *t,
                                                                uint64_t flags);

/*  A C-contiguous copy of CPU tensor t (any strides) in a new region of
    its own: what a sender does once with memory that is not shared yet.
    The result has DLPACK_FLAG_BITMASK_IS_COPIED set. NULL on failure. */
PYI_EXPORT DLManagedTensorVersioned *pyi_tensor_share (const DLTensor *t);

/*  A new zeroed C-contiguous tensor in a region of its own, so that even
    its first crossing is free. NULL for a bad dtype or shape. */
PYI_EXPORT DLManagedTensorVersioned *pyi_tensor_empty (int32_t ndim, const int64_t *shape,
                                                       DLDataType dtype);

#ifdef __cplusplus
}
#endif

#endif
