/*  pyi_deadlines: a binary min-heap on when, in an array that doubles as
    it fills. Each entry knows its index, kept right by every swap. */
#include "pyi_deadlines.h"
#include <stdbool.h>
#include <stdlib.h>

#define INITIAL_CAPACITY 64         /* entries before the first growth */

struct _pyi_deadlines_t {
    pyi_deadline_t **heap;          /* heap [0] is the earliest */
    size_t size;                    /* entries in the heap */
    size_t capacity;                /* entries the array holds */
};

pyi_deadlines_t *
pyi_deadlines_new (void)
{
    return (pyi_deadlines_t *) calloc (1, sizeof (pyi_deadlines_t));
}

void
pyi_deadlines_destroy (pyi_deadlines_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free ((*self_p)->heap);
    free (*self_p);
    *self_p = NULL;
}

static void
s_swap (pyi_deadlines_t *self, size_t a, size_t b)
{
    pyi_deadline_t *t = self->heap [a];
    self->heap [a] = self->heap [b];
    self->heap [b] = t;
    self->heap [a]->index = a;
    self->heap [b]->index = b;
}

/*  Move entry i up or down until the heap order holds again. */
static void
s_fix (pyi_deadlines_t *self, size_t i)
{
    while (i > 0 && self->heap [(i - 1) / 2]->when > self->heap [i]->when) {
        s_swap (self, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    while (true) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < self->size && self->heap [l]->when < self->heap [m]->when)
            m = l;
        if (r < self->size && self->heap [r]->when < self->heap [m]->when)
            m = r;
        if (m == i)
            break;
        s_swap (self, i, m);
        i = m;
    }
}

int
pyi_deadlines_add (pyi_deadlines_t *self, pyi_deadline_t *entry)
{
    if (self->size == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : INITIAL_CAPACITY;
        pyi_deadline_t **heap = (pyi_deadline_t **) realloc (self->heap,
                                                             capacity * sizeof (*heap));
        if (!heap)
            return -1;
        self->heap = heap;
        self->capacity = capacity;
    }
    entry->index = self->size;
    self->heap [self->size++] = entry;
    s_fix (self, entry->index);
    return 0;
}

void
pyi_deadlines_remove (pyi_deadlines_t *self, pyi_deadline_t *entry)
{
    size_t i = entry->index;
    if (i == PYI_DEADLINE_NONE)
        return;
    entry->index = PYI_DEADLINE_NONE;
    if (i != --self->size) {
        self->heap [i] = self->heap [self->size];
        self->heap [i]->index = i;
        s_fix (self, i);
    }
}

pyi_deadline_t *
pyi_deadlines_first (pyi_deadlines_t *self)
{
    return self->size ? self->heap [0] : NULL;
}

size_t
pyi_deadlines_size (pyi_deadlines_t *self)
{
    return self->size;
}
