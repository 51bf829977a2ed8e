/*  pyi_tensor_internal: what the descriptor codec (pyi_tensor.c) shares
    with the inline form (pyi_tensor_inline.c). Not exported. */
#ifndef PYI_TENSOR_INTERNAL_H_INCLUDED
#define PYI_TENSOR_INTERNAL_H_INCLUDED

#include "pyisolate/pyi_tensor.h"
#include "pyisolate/pyi_region.h"
#include <stdbool.h>

/*  A tensor's metadata as decoded, or taken from a DLTensor. */
typedef struct {
    DLDevice device;
    DLDataType dtype;
    int32_t ndim;
    int64_t shape [PYI_TENSOR_MAX_NDIM];
    int64_t strides [PYI_TENSOR_MAX_NDIM];     /* in elements, always filled */
    uint64_t byte_offset;                      /* span start to element 0 */
    char name [PYI_REGION_MAX_NAME + 1];
    uint64_t offset;                           /* span start in the region data */
    uint64_t length;                           /* span bytes */
    bool is_inline;                            /* inline form: region name "" */
    const uint8_t *inline_data;                /* its span's bytes (NULL when chunked) */
    /*  Derived by s_check: */
    int64_t itemsize;
    int64_t lo, hi;            /* bytes addressed, relative to element 0: [lo, hi) */
    bool empty;                /* no elements */
} pyi_tensor_meta_t;

/*  Metadata of tensor t (CUDA allowed when cuda); 0, or -1 with the error set. */
int pyi_tensor_meta_from (pyi_tensor_meta_t *m, const DLTensor *t, bool cuda);
/*  Descriptor of m into buffer; its length, or -1. */
int pyi_tensor_meta_pack (const pyi_tensor_meta_t *m, void *buffer, size_t size);
/*  Parse and validate an untrusted descriptor; chunked: the chunked
    inline form (nothing after it). 0, or -1 with the error set. */
int pyi_tensor_meta_parse (pyi_tensor_meta_t *m, const void *data, size_t size, bool chunked);

#endif
