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
