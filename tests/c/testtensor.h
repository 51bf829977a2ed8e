/*  testtensor.h: helpers of the tensor tests (test_tensor.c,
    test_tensor_validation.c, test_descriptors.c): element addressing,
    clean-up on failure, and a body with one tensor descriptor in it.
*/
#ifndef PYI_TESTTENSOR_H_INCLUDED
#define PYI_TESTTENSOR_H_INCLUDED

#include "testutil.h"

static inline bool
s_exists (const char *name)
{
    char path [300];
    snprintf (path, sizeof path, "/dev/shm%s", name);
    return access (path, F_OK) == 0;
}

static inline int64_t
s_itemsize (DLDataType dtype)
{
    return dtype.bits / 8 * dtype.lanes;
}

/*  Address of element idx (ndim indexes) of t. */
static inline const uint8_t *
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
static inline bool
s_next (const DLTensor *t, int64_t *idx)
{
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (++idx [i] < t->shape [i])
            return true;
        idx [i] = 0;
    }
    return false;
}

static inline int64_t
s_numel (const DLTensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape [i];
    return n;
}


static inline void
s_on_failure (void)
{
    pyi_region_remove_session (NULL);
}


/*  A region with one float tensor in it, encoded into a new body. */
static inline pyi_msg_t *
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

#endif
