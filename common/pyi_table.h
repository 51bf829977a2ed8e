/*  pyi_table: an open-addressing hash table of items found by a byte-string
    key that the item itself holds (intrusive: keys are not copied, items
    are not freed). Internal to libpyisolate. */
#ifndef PYI_TABLE_H_INCLUDED
#define PYI_TABLE_H_INCLUDED

#include <stddef.h>

typedef struct _pyi_table_t pyi_table_t;

/*  Returns the key of item and its size. */
typedef const void *(pyi_table_key_fn) (const void *item, size_t *size);

pyi_table_t *pyi_table_new (pyi_table_key_fn *key_fn);
void pyi_table_destroy (pyi_table_t **self_p);
/*  0, or -1 when the key is already present or memory ran out. */
int pyi_table_insert (pyi_table_t *self, void *item);
void *pyi_table_lookup (pyi_table_t *self, const void *key, size_t size);
/*  Remove and return the item with this key, or NULL. */
void *pyi_table_remove (pyi_table_t *self, const void *key, size_t size);
size_t pyi_table_size (pyi_table_t *self);
/*  Iterate: start with *cursor = 0; returns NULL at the end. The table
    must not change during a walk. */
void *pyi_table_next (pyi_table_t *self, size_t *cursor);

#endif
