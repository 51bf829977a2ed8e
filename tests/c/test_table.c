/*  test_table: the hash table every part uses (common/pyi_table.c), an
    internal class: this test compiles it in.

    Guarantees checked:
    - an item is found by its key (of any bytes, NULs included, of any
      length, the empty key too) and by no other key, however similar
      ("ab" is not "abc");
    - a second item with a key already present is refused, and the first
      stays;
    - removal returns the item and forgets it; removing an absent key
      returns NULL; the count follows;
    - 100000 items (growth) are all found, and a walk visits each live
      item exactly once;
    - a million insert and remove cycles (tombstones) keep the table
      correct and the count exact;
    - destroy is safe on NULL.
*/
#include "testutil.h"
#include "pyi_table.h"

#define MANY 100000
#define CYCLES 1000000

typedef struct {
    char key [32];                  /* the key bytes */
    size_t size;                    /* key length */
    int seen;                       /* times a walk visited it */
} s_item_t;

static const void *
s_key (const void *item, size_t *size)
{
    *size = ((const s_item_t *) item)->size;
    return ((const s_item_t *) item)->key;
}

static void
s_set (s_item_t *item, const void *key, size_t size)
{
    memcpy (item->key, key, size);
    item->size = size;
    item->seen = 0;
}

static void
test_basics (void)
{
    TEST_BEGIN ("find, refuse duplicates, remove");
    pyi_table_t *table = pyi_table_new (s_key);
    CHECK (table);
    static s_item_t ab, abc, empty, binary, again;
    s_set (&ab, "ab", 2);
    s_set (&abc, "abc", 3);
    s_set (&empty, "", 0);
    s_set (&binary, "a\0b", 3);
    CHECK_INT (pyi_table_insert (table, &ab), 0);
    CHECK_INT (pyi_table_insert (table, &abc), 0);
    CHECK_INT (pyi_table_insert (table, &empty), 0);
    CHECK_INT (pyi_table_insert (table, &binary), 0);
    CHECK_INT (pyi_table_size (table), 4);
    CHECK (pyi_table_lookup (table, "ab", 2) == &ab);
    CHECK (pyi_table_lookup (table, "abc", 3) == &abc);
    CHECK (pyi_table_lookup (table, "", 0) == &empty);
    CHECK (pyi_table_lookup (table, "a\0b", 3) == &binary);
    CHECK (pyi_table_lookup (table, "a", 1) == NULL);
    CHECK (pyi_table_lookup (table, "a\0c", 3) == NULL);
    CHECK (pyi_table_lookup (table, "abcd", 4) == NULL);

    s_set (&again, "ab", 2);
    CHECK_INT (pyi_table_insert (table, &again), -1);
    CHECK (pyi_table_lookup (table, "ab", 2) == &ab);
    CHECK_INT (pyi_table_size (table), 4);

    CHECK (pyi_table_remove (table, "ab", 2) == &ab);
    CHECK (pyi_table_lookup (table, "ab", 2) == NULL);
    CHECK (pyi_table_remove (table, "ab", 2) == NULL);
    CHECK (pyi_table_lookup (table, "abc", 3) == &abc);
    CHECK_INT (pyi_table_size (table), 3);
    CHECK_INT (pyi_table_insert (table, &again), 0);
    CHECK (pyi_table_lookup (table, "ab", 2) == &again);
    pyi_table_destroy (&table);
    CHECK (table == NULL);
    pyi_table_destroy (&table);
    pyi_table_destroy (NULL);
}

static void
test_many (void)
{
    TEST_BEGIN ("100000 items: growth, lookups, one visit each per walk");
    pyi_table_t *table = pyi_table_new (s_key);
    s_item_t *items = (s_item_t *) calloc (MANY, sizeof (s_item_t));
    CHECK (table && items);
    for (int i = 0; i < MANY; i++) {
        char key [32];
        int size = snprintf (key, sizeof key, "item-%d", i);
        s_set (&items [i], key, (size_t) size);
        CHECK_INT (pyi_table_insert (table, &items [i]), 0);
    }
    CHECK_INT (pyi_table_size (table), MANY);
    for (int i = 0; i < MANY; i++)
        CHECK (pyi_table_lookup (table, items [i].key, items [i].size) == &items [i]);
    /*  Remove every third; walk. */
    for (int i = 0; i < MANY; i += 3)
        CHECK (pyi_table_remove (table, items [i].key, items [i].size) == &items [i]);
    size_t cursor = 0, visited = 0;
    s_item_t *item;
    while ((item = (s_item_t *) pyi_table_next (table, &cursor))) {
        item->seen++;
        visited++;
    }
    CHECK_INT (visited, pyi_table_size (table));
    for (int i = 0; i < MANY; i++)
        CHECK_INT (items [i].seen, i % 3 ? 1 : 0);
    pyi_table_destroy (&table);
    free (items);
}

static void
test_cycles (void)
{
    TEST_BEGIN ("a million insert and remove cycles");
    pyi_table_t *table = pyi_table_new (s_key);
    static s_item_t items [64];
    for (int i = 0; i < 64; i++) {
        char key [8];
        int size = snprintf (key, sizeof key, "k%d", i);
        s_set (&items [i], key, (size_t) size);
    }
    bool present [64] = { false };
    size_t count = 0;
    uint64_t state = 0x2545f4914f6cdd1dULL;
    for (int round = 0; round < CYCLES; round++) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        int i = (int) (state % 64);
        if (present [i]) {
            CHECK (pyi_table_remove (table, items [i].key, items [i].size) == &items [i]);
            count--;
        }
        else {
            CHECK_INT (pyi_table_insert (table, &items [i]), 0);
            count++;
        }
        present [i] = !present [i];
        CHECK_INT (pyi_table_size (table), count);
    }
    for (int i = 0; i < 64; i++)
        CHECK ((pyi_table_lookup (table, items [i].key, items [i].size) != NULL) == present [i]);
    pyi_table_destroy (&table);
}

int
main (void)
{
    test_basics ();
    test_many ();
    test_cycles ();
    fprintf (stderr, "test_table: OK\n");
    return 0;
}
