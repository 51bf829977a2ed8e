/*  pyi_descriptors: tensor descriptor frames in messages the broker moves. */
#include "pyi_descriptors.h"
#include "pyi_library_internal.h"
#include "pyisolate/pyi_tensor.h"
#include <stdio.h>

void
pyi_descriptors_discard (pyi_msg_t *msg)
{
    size_t frames = pyi_msg_frames (msg);
    for (size_t i = 0; i < frames; i++)
        if (pyi_msg_is_descriptor (msg, i))
            pyi_tensor_discard (pyi_msg_frame_data (msg, i), pyi_msg_frame_size (msg, i));
}

int
pyi_descriptors_inline_for_remote (pyi_msg_t *msg)
{
    size_t frames = pyi_msg_frames (msg);
    for (size_t i = 0; i < frames; i++)
        if (pyi_msg_is_descriptor (msg, i) && pyi_tensor_inline (msg, i)) {
            char why [PYI_ERROR_SIZE];
            snprintf (why, sizeof (why), "%s", pyi_last_error ());
            pyi_descriptors_discard (msg);
            pyi_set_error ("%s", why);
            return -1;
        }
    return 0;
}
