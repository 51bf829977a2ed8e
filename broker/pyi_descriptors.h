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

/*  Why msg (a REQUEST or an answer) may not go on to its receiver, or NULL
    when it may. The broker routes and never copies a payload, so a peer
    connected over a network gets tensors inline, made so by their sender:
    - a remote sender's marks cannot name this host's regions: refused,
      *code PYI_ERR_MALFORMED, never acted on;
    - marks for a remote receiver (to_remote): refused, *code
      PYI_ERR_INLINE, their in-flight counts given back.
    The text is static. */
const char *pyi_descriptors_refusal (pyi_msg_t *msg, bool to_remote, int *code);

#endif
