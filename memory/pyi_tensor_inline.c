/*  pyi_tensor_inline: the inline form of tensor descriptors, for peers
    without shared memory (docs/tensors.md, section 9). The descriptor
    with region name "" and offset 0, and the span's bytes either after it
    in the same frame or (chunked) in the frames that follow it. */
#include "pyi_tensor_internal.h"
#include "pyi_library_internal.h"
#include <stdlib.h>
#include <string.h>

/*  Inline form ------------------------------------------------------------ */

static void
s_free_buffer (void *data, void *hint)
{
    free (data);
}

/*  A new buffer holding the inline form of meta (its span's bytes at
    span); NULL with the error set. */
static uint8_t *
s_inline_buffer (pyi_tensor_meta_t *m, const uint8_t *span, size_t *size)
{
    uint8_t head [PYI_TENSOR_MAX_DESCRIPTOR];
    m->name [0] = 0;
    m->offset = 0;
    int length = pyi_tensor_meta_pack (m, head, sizeof (head));
    uint8_t *buffer = length < 0 ? NULL : (uint8_t *) malloc ((size_t) length + m->length);
    if (!buffer) {
        pyi_set_error ("out of memory for an inline tensor of %llu bytes",
                       (unsigned long long) m->length);
        return NULL;
    }
    memcpy (buffer, head, (size_t) length);
    if (m->length)
        memcpy (buffer + length, span, (size_t) m->length);
    *size = (size_t) length + (size_t) m->length;
    return buffer;
}

int
pyi_tensor_encode_inline (const DLTensor *t, pyi_msg_t *msg)
{
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_from (&meta, t, false))
        return -1;
    const uint8_t *first = (const uint8_t *) t->data + t->byte_offset;
    meta.length = (uint64_t) (meta.hi - meta.lo);
    meta.byte_offset = (uint64_t) -meta.lo;
    size_t size;
    uint8_t *buffer = s_inline_buffer (&meta, first + meta.lo, &size);
    if (!buffer)
        return -1;
    if (pyi_msg_append_zerocopy (msg, buffer, size, s_free_buffer, NULL)) {
        pyi_set_error ("cannot append the tensor frame (message full?)");
        return -1;
    }
    return 0;
}

/*  The region of marked descriptor meta (parsed from data, size) with its
    in-flight count consumed, its span checked; NULL with the error set. */
static pyi_region_t *
s_span_region (pyi_tensor_meta_t *meta, const void *data, size_t size)
{
    if (meta->device.device_type != kDLCPU) {
        pyi_tensor_discard (data, size);
        pyi_set_error ("a CUDA tensor cannot cross to a peer without CUDA IPC (a remote "
                       "worker): move it to the CPU first");
        return NULL;
    }
    pyi_region_t *region = pyi_region_open (meta->name);
    if (!region)
        return NULL;
    pyi_region_received (region);       /* this descriptor is consumed here */
    size_t region_size = pyi_region_size (region);
    if (meta->length > region_size || meta->offset > region_size - meta->length) {
        pyi_set_error ("span [%llu, +%llu) is beyond region %s of %zu bytes",
                       (unsigned long long) meta->offset, (unsigned long long) meta->length,
                       meta->name, region_size);
        pyi_region_release (&region);
    }
    return region;
}

void *
pyi_tensor_inline_copy (const void *data, size_t size, size_t *length)
{
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_parse (&meta, data, size, false))
        return NULL;
    if (meta.inline_data) {
        void *copy = malloc (size ? size : 1);
        if (copy) {
            memcpy (copy, data, size);
            *length = size;
        }
        else
            pyi_set_error ("out of memory");
        return copy;
    }
    pyi_region_t *region = s_span_region (&meta, data, size);
    if (!region)
        return NULL;
    uint8_t *buffer = s_inline_buffer (&meta, (const uint8_t *) pyi_region_data (region)
                                              + meta.offset, length);
    pyi_region_release (&region);
    return buffer;
}

pyi_region_t *
pyi_tensor_inline_span (const void *data, size_t size, void *head, size_t head_size,
                        size_t *head_length, const void **span, size_t *length)
{
    pyi_tensor_meta_t meta;
    if (pyi_tensor_meta_parse (&meta, data, size, false))
        return NULL;
    if (meta.is_inline) {
        pyi_set_error ("the descriptor is inline already");
        return NULL;
    }
    pyi_region_t *region = s_span_region (&meta, data, size);
    if (!region)
        return NULL;
    *span = (const uint8_t *) pyi_region_data (region) + meta.offset;
    *length = (size_t) meta.length;
    meta.name [0] = 0;
    meta.offset = 0;
    int written = pyi_tensor_meta_pack (&meta, head, head_size);
    if (written < 0) {
        pyi_set_error ("the inline descriptor does not fit in %zu bytes", head_size);
        pyi_region_release (&region);
        return NULL;
    }
    *head_length = (size_t) written;
    return region;
}

void pyi_tensor_free (void *buffer) { free (buffer); }

int
pyi_tensor_inline (pyi_msg_t *msg, size_t index)
{
    if (!pyi_msg_is_descriptor (msg, index)) {
        pyi_set_error ("body frame %zu is not a tensor descriptor", index);
        return -1;
    }
    size_t length = 0;
    void *buffer = pyi_tensor_inline_copy (pyi_msg_frame_data (msg, index),
                                           pyi_msg_frame_size (msg, index), &length);
    if (!buffer)
        return -1;
    return pyi_msg_replace_frame (msg, index, buffer, length, s_free_buffer, NULL);
}

