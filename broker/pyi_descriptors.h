/*  pyi_descriptors: what the broker does to the tensor descriptor frames
    of a message it moves (docs/tensors.md). It never maps their regions
    on the routing path; it gives their in-flight counts back when the
    message goes no further. A peer connected over a network sends tensors
    inline itself: the router refuses descriptors bound for it or coming
    from it (pyi_router.c). Internal to libpyisolate (broker/).
*/
#ifndef PYI_DESCRIPTORS_H_INCLUDED
#define PYI_DESCRIPTORS_H_INCLUDED

#include "pyisolate/pyi_msg.h"

/*  A REQUEST or REPLY that goes no further: give back the in-flight
    counts of the tensor descriptors it carries (pyi_tensor_discard), so
    their regions go when their holders let go instead of at the
    session's end. Never acts on the marks of a remote peer's message
    (pyi_msg_remote): they name nothing of this host. */
void pyi_descriptors_discard (pyi_msg_t *msg);

#endif
