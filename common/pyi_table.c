/*  pyi_table: open addressing, linear probing, tombstones; grows at 50%
    load (counting tombstones) so probes stay short. */
#include "pyi_table.h"
#include <stdint.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_SLOTS 16
#define TOMBSTONE ((void *) 1)

typedef struct {
    uint64_t hash;
    void *item;                 /* NULL = empty, TOMBSTONE = removed */
} s_slot_t;

struct _pyi_table_t {
    pyi_table_key_fn *key_fn;   /* extracts an item's key */
    s_slot_t *slots;            /* power-of-two array */
    size_t mask;                /* slots - 1 */
    size_t size;                /* live items */
    size_t used;                /* live items + tombstones */
};

static uint64_t
s_hash (const void *key, size_t size)
{
    /*  FNV-1a, then a final mix so the low bits used for indexing spread. */
    const uint8_t *p = (const uint8_t *) key;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < size; i++)
        h = (h ^ p [i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h;
}

pyi_table_t *
pyi_table_new (pyi_table_key_fn *key_fn)
{
    pyi_table_t *self = (pyi_table_t *) calloc (1, sizeof (pyi_table_t));
    if (!self)
        return NULL;
    self->key_fn = key_fn;
    self->slots = (s_slot_t *) calloc (INITIAL_SLOTS, sizeof (s_slot_t));
    if (!self->slots) {
        free (self);
        return NULL;
    }
    self->mask = INITIAL_SLOTS - 1;
    return self;
}

void
pyi_table_destroy (pyi_table_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free ((*self_p)->slots);
    free (*self_p);
    *self_p = NULL;
}

static bool
s_matches (pyi_table_t *self, s_slot_t *slot, uint64_t hash, const void *key, size_t size)
{
    if (slot->item == TOMBSTONE || slot->hash != hash)
        return false;
    size_t item_size;
    const void *item_key = self->key_fn (slot->item, &item_size);
    return item_size == size && memcmp (item_key, key, size) == 0;
}

static s_slot_t *
s_find (pyi_table_t *self, const void *key, size_t size, uint64_t hash)
{
    for (size_t i = hash & self->mask;; i = (i + 1) & self->mask) {
        s_slot_t *slot = &self->slots [i];
        if (!slot->item)
            return NULL;
        if (s_matches (self, slot, hash, key, size))
            return slot;
    }
}

static int
s_resize (pyi_table_t *self, size_t slots)
{
    s_slot_t *fresh = (s_slot_t *) calloc (slots, sizeof (s_slot_t));
    if (!fresh)
        return -1;
    for (size_t i = 0; i <= self->mask; i++) {
        s_slot_t *slot = &self->slots [i];
        if (!slot->item || slot->item == TOMBSTONE)
            continue;
        size_t j = slot->hash & (slots - 1);
        while (fresh [j].item)
            j = (j + 1) & (slots - 1);
        fresh [j] = *slot;
    }
    free (self->slots);
    self->slots = fresh;
    self->mask = slots - 1;
    self->used = self->size;
    return 0;
}

int
pyi_table_insert (pyi_table_t *self, void *item)
{
    size_t size;
    const void *key = self->key_fn (item, &size);
    uint64_t hash = s_hash (key, size);
    if (s_find (self, key, size, hash))
        return -1;
    if ((self->used + 1) * 2 > self->mask + 1) {
        size_t slots = self->mask + 1;
        if ((self->size + 1) * 4 > slots)
            slots *= 2;
        if (s_resize (self, slots))
            return -1;
    }
    size_t i = hash & self->mask;
    while (self->slots [i].item && self->slots [i].item != TOMBSTONE)
        i = (i + 1) & self->mask;
    if (!self->slots [i].item)
        self->used++;
    self->slots [i].hash = hash;
    self->slots [i].item = item;
    self->size++;
    return 0;
}

void *
pyi_table_lookup (pyi_table_t *self, const void *key, size_t size)
{
    s_slot_t *slot = s_find (self, key, size, s_hash (key, size));
    return slot ? slot->item : NULL;
}

void *
pyi_table_remove (pyi_table_t *self, const void *key, size_t size)
{
    s_slot_t *slot = s_find (self, key, size, s_hash (key, size));
    if (!slot)
        return NULL;
    void *item = slot->item;
    slot->item = TOMBSTONE;
    self->size--;
    return item;
}

size_t
pyi_table_size (pyi_table_t *self)
{
    return self->size;
}

void *
pyi_table_next (pyi_table_t *self, size_t *cursor)
{
    while (*cursor <= self->mask) {
        void *item = self->slots [(*cursor)++].item;
        if (item && item != TOMBSTONE)
            return item;
    }
    return NULL;
}
