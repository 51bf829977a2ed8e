/*  pyi_descriptors: what the broker does to the tensor descriptor frames
    of a message it moves (docs/tensors.md). It never maps their regions
    on the routing path; it gives their in-flight counts back when the
    message goes no further, and (to be removed) turns them into inline
    form for a remote peer. Internal to libpyisolate (broker/).
*/
#ifndef PYI_DESCRIPTORS_H_INCLUDED
#define PYI_DESCRIPTORS_H_INCLUDED

#include "pyisolate/pyi_msg.h"

/*  A REQUEST or REPLY that goes no further: give back the in-flight
    counts of the tensor descriptors it carries (pyi_tensor_discard), so
    their regions go when their holders let go instead of at the
    session's end. */
void pyi_descriptors_discard (pyi_msg_t *msg);

/*  REMOTE INLINE CONVERSION, to be removed once remote peers send and
    take inline tensors themselves (with its two callers in
    broker/pyi_router.c, "->remote && pyi_descriptors_inline_for_remote"):
    for a peer without shared memory (connected over a network), turn
    msg's descriptor frames into inline form (pyi_tensor_inline, which
    copies the bytes with pyi_tensor_inline_copy). 0, or -1 with
    pyi_last_error () set, the frames not converted discarded. */
int pyi_descriptors_inline_for_remote (pyi_msg_t *msg);

#endif
