/*  pyi_offenders: strikes per routing id, in a pyi_table. */
#include "pyi_offenders.h"
#include "pyi_table.h"
#include "pyisolate/pyi_msg.h"
#include <stdlib.h>
#include <string.h>

#define MAX_OFFENDERS 4096          /* peers on record at most */

typedef struct {
    uint8_t rid [PYI_MAX_NAME];     /* the peer's routing id */
    size_t rid_size;
    int strikes;                    /* bad messages counted */
    bool banned;                    /* cut off: ignore whatever it sends */
} s_offender_t;

struct _pyi_offenders_t {
    pyi_table_t *table;             /* routing id -> s_offender_t */
};

static const void *
s_offender_key (const void *item, size_t *size)
{
    *size = ((const s_offender_t *) item)->rid_size;
    return ((const s_offender_t *) item)->rid;
}

pyi_offenders_t *
pyi_offenders_new (void)
{
    pyi_offenders_t *self = (pyi_offenders_t *) calloc (1, sizeof (pyi_offenders_t));
    if (self && !(self->table = pyi_table_new (s_offender_key))) {
        free (self);
        self = NULL;
    }
    return self;
}

static void
s_free_all (pyi_table_t *table)
{
    size_t cursor = 0;
    void *item;
    while ((item = pyi_table_next (table, &cursor)))
        free (item);
}

void
pyi_offenders_destroy (pyi_offenders_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_offenders_t *self = *self_p;
    s_free_all (self->table);
    pyi_table_destroy (&self->table);
    free (self);
    *self_p = NULL;
}

/*  Start counting afresh: keeps the table bounded whatever peers do. */
static void
s_forget (pyi_offenders_t *self)
{
    pyi_table_t *fresh = pyi_table_new (s_offender_key);
    if (!fresh)
        return;
    s_free_all (self->table);
    pyi_table_destroy (&self->table);
    self->table = fresh;
}

bool
pyi_offenders_strike (pyi_offenders_t *self, const uint8_t *rid, size_t rid_size,
                      int64_t max_strikes)
{
    s_offender_t *offender = (s_offender_t *) pyi_table_lookup (self->table, rid, rid_size);
    if (!offender) {
        if (pyi_table_size (self->table) >= MAX_OFFENDERS)
            s_forget (self);
        if (!(offender = (s_offender_t *) calloc (1, sizeof (s_offender_t))))
            return false;
        memcpy (offender->rid, rid, rid_size);
        offender->rid_size = rid_size;
        if (pyi_table_insert (self->table, offender)) {
            free (offender);
            return false;
        }
    }
    if (++offender->strikes < max_strikes || offender->banned)
        return false;
    offender->banned = true;
    return true;
}

bool
pyi_offenders_banned (pyi_offenders_t *self, const uint8_t *rid, size_t rid_size)
{
    s_offender_t *offender = (s_offender_t *) pyi_table_lookup (self->table, rid, rid_size);
    return offender && offender->banned;
}

size_t
pyi_offenders_size (pyi_offenders_t *self)
{
    return pyi_table_size (self->table);
}
