/*  pyi_deadlines: a min-heap of deadlines, so that the broker finds the
    request that times out first at once, and adds or removes any one in
    O(log n) (a request answered in time leaves the heap unfired).

    Intrusive: the caller embeds a pyi_deadline_t in each item that has a
    deadline and sets its fields; the heap holds pointers to the entries
    and keeps each one's index in it, so that removal needs no search.
    Internal to libpyisolate (broker/).
*/
#ifndef PYI_DEADLINES_H_INCLUDED
#define PYI_DEADLINES_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

/*  The index of an entry that is in no heap. */
#define PYI_DEADLINE_NONE SIZE_MAX

typedef struct {
    int64_t when;                   /* fires at or after this (ms, monotonic) */
    size_t index;                   /* place in the heap, or PYI_DEADLINE_NONE */
    void *item;                     /* what it is the deadline of (the caller's) */
} pyi_deadline_t;

typedef struct _pyi_deadlines_t pyi_deadlines_t;

/*  An empty heap, or NULL when out of memory. */
pyi_deadlines_t *pyi_deadlines_new (void);

/*  Free the heap (not the entries); safe on NULL and on *self_p == NULL. */
void pyi_deadlines_destroy (pyi_deadlines_t **self_p);

/*  Add entry, whose when and item are set and which is in no heap.
    0, or -1 when out of memory (entry->index stays PYI_DEADLINE_NONE). */
int pyi_deadlines_add (pyi_deadlines_t *self, pyi_deadline_t *entry);

/*  Take entry out of the heap; nothing when it is not in it. */
void pyi_deadlines_remove (pyi_deadlines_t *self, pyi_deadline_t *entry);

/*  The entry with the earliest when (borrowed, still in the heap), or
    NULL when the heap is empty. */
pyi_deadline_t *pyi_deadlines_first (pyi_deadlines_t *self);

/*  Entries in the heap. */
size_t pyi_deadlines_size (pyi_deadlines_t *self);

#endif
