/*  pyi_offenders: the peers that sent the broker bad messages, and how
    many each, so that a peer past the limit is cut off and ignored from
    then on. Bounded: past MAX_OFFENDERS peers the count starts afresh (a
    forgotten peer that goes on is cut off again). Internal to
    libpyisolate (broker/).
*/
#ifndef PYI_OFFENDERS_H_INCLUDED
#define PYI_OFFENDERS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _pyi_offenders_t pyi_offenders_t;

/*  An empty record, or NULL when out of memory. */
pyi_offenders_t *pyi_offenders_new (void);

/*  Free the record; safe on NULL and on *self_p == NULL. */
void pyi_offenders_destroy (pyi_offenders_t **self_p);

/*  Count one bad message against the peer with routing id rid (at most
    PYI_MAX_NAME bytes). true when this strike is its max_strikes-th: the
    peer is banned from now on and the caller cuts it off. Later strikes
    of a banned peer give false. */
bool pyi_offenders_strike (pyi_offenders_t *self, const uint8_t *rid, size_t rid_size,
                           int64_t max_strikes);

/*  Whether the peer was banned. */
bool pyi_offenders_banned (pyi_offenders_t *self, const uint8_t *rid, size_t rid_size);

/*  Peers on record now. */
size_t pyi_offenders_size (pyi_offenders_t *self);

#endif
