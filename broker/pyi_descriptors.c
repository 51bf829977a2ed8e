/*  pyi_descriptors: tensor descriptor frames in messages the broker moves. */
#include "pyi_descriptors.h"
#include "pyi_library_internal.h"
#include "pyisolate/pyi_tensor.h"

void
pyi_descriptors_discard (pyi_msg_t *msg)
{
    if (pyi_msg_remote (msg))
        return;                 /* names of another machine's memory */
    size_t frames = pyi_msg_frames (msg);
    for (size_t i = 0; i < frames; i++)
        if (pyi_msg_is_descriptor (msg, i))
            pyi_tensor_discard (pyi_msg_frame_data (msg, i), pyi_msg_frame_size (msg, i));
}

const char *
pyi_descriptors_refusal (pyi_msg_t *msg, bool to_remote, int *code)
{
    if (!pyi_msg_has_descriptors (msg))
        return NULL;
    if (pyi_msg_remote (msg)) {
        *code = PYI_ERR_MALFORMED;
        return "descriptor marks from a peer connected over a network: "
               "its tensors must be inline";
    }
    if (!to_remote)
        return NULL;
    pyi_descriptors_discard (msg);
    *code = PYI_ERR_INLINE;
    return "the receiver is connected over a network (no shared memory with this host): "
           "send its tensors inline (a request flagged answer-inline is answered inline)";
}
