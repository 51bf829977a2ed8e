/*  test_deadlines: the broker's deadline heap (broker/pyi_deadlines.c),
    an internal class: this test compiles it in.

    Guarantees checked:
    - the first entry is always one with the earliest deadline: taking
      the first and removing it, again and again, gives every entry in
      order of when (ties included), for 10000 entries in random order;
    - removing entries from the middle keeps that order for the rest, and
      a removed entry never comes out again; its index says it is in no
      heap, and removing it twice does nothing;
    - entries added while others are removed keep the order (the router's
      pattern: requests come and go, deadlines fire);
    - an empty heap has no first entry; destroy is safe on NULL.
*/
#include "testutil.h"
#include "pyi_deadlines.h"

#define COUNT 10000

static uint64_t s_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
s_random (void)
{
    s_state ^= s_state << 13;
    s_state ^= s_state >> 7;
    s_state ^= s_state << 17;
    return s_state;
}

/*  Take every entry out in order; check nondecreasing whens; return count. */
static size_t
s_drain (pyi_deadlines_t *heap)
{
    int64_t last = INT64_MIN;
    size_t taken = 0;
    pyi_deadline_t *first;
    while ((first = pyi_deadlines_first (heap))) {
        CHECK_MSG (first->when >= last, "when %lld after %lld", (long long) first->when,
                   (long long) last);
        last = first->when;
        pyi_deadlines_remove (heap, first);
        CHECK (first->index == PYI_DEADLINE_NONE);
        taken++;
    }
    CHECK_INT (pyi_deadlines_size (heap), 0);
    return taken;
}

static void
test_order (void)
{
    TEST_BEGIN ("entries come out in order of their deadlines");
    pyi_deadlines_t *heap = pyi_deadlines_new ();
    CHECK (heap);
    CHECK (pyi_deadlines_first (heap) == NULL);
    static pyi_deadline_t entries [COUNT];
    for (int i = 0; i < COUNT; i++) {
        entries [i] = (pyi_deadline_t) { (int64_t) (s_random () % 1000), PYI_DEADLINE_NONE,
                                         &entries [i] };
        CHECK_INT (pyi_deadlines_add (heap, &entries [i]), 0);
        CHECK (entries [i].index != PYI_DEADLINE_NONE);
    }
    CHECK_INT (pyi_deadlines_size (heap), COUNT);
    CHECK (pyi_deadlines_first (heap)->item == (void *) pyi_deadlines_first (heap));
    CHECK_INT (s_drain (heap), COUNT);
    pyi_deadlines_destroy (&heap);
    CHECK (heap == NULL);
    pyi_deadlines_destroy (&heap);
    pyi_deadlines_destroy (NULL);
}

static void
test_removal (void)
{
    TEST_BEGIN ("removal from the middle keeps the order of the rest");
    pyi_deadlines_t *heap = pyi_deadlines_new ();
    static pyi_deadline_t entries [COUNT];
    for (int i = 0; i < COUNT; i++) {
        entries [i] = (pyi_deadline_t) { (int64_t) (s_random () % 100000), PYI_DEADLINE_NONE,
                                         &entries [i] };
        CHECK_INT (pyi_deadlines_add (heap, &entries [i]), 0);
    }
    size_t removed = 0;
    for (int i = 0; i < COUNT; i += 2) {
        pyi_deadlines_remove (heap, &entries [i]);
        CHECK (entries [i].index == PYI_DEADLINE_NONE);
        pyi_deadlines_remove (heap, &entries [i]);     /* twice: nothing */
        removed++;
    }
    CHECK_INT (pyi_deadlines_size (heap), COUNT - removed);
    /*  Every index still names its entry's place: the odd ones come out,
        in order, and no even one does. */
    int64_t last = INT64_MIN;
    pyi_deadline_t *first;
    while ((first = pyi_deadlines_first (heap))) {
        CHECK_INT (((pyi_deadline_t *) first->item - entries) % 2, 1);
        CHECK (first->when >= last);
        last = first->when;
        pyi_deadlines_remove (heap, first);
    }
    pyi_deadlines_destroy (&heap);
}

static void
test_churn (void)
{
    TEST_BEGIN ("entries added while others fire or are removed");
    pyi_deadlines_t *heap = pyi_deadlines_new ();
    static pyi_deadline_t entries [COUNT];
    for (int i = 0; i < COUNT; i++)
        entries [i].index = PYI_DEADLINE_NONE;
    int64_t now = 0;
    for (int round = 0; round < 20 * COUNT; round++) {
        pyi_deadline_t *entry = &entries [s_random () % COUNT];
        switch (s_random () % 3) {
            case 0:                 /* a request with a deadline arrives */
                if (entry->index == PYI_DEADLINE_NONE) {
                    entry->when = now + (int64_t) (s_random () % 500);
                    entry->item = entry;
                    CHECK_INT (pyi_deadlines_add (heap, entry), 0);
                }
                break;
            case 1:                 /* it is answered in time */
                pyi_deadlines_remove (heap, entry);
                break;
            case 2: {               /* time passes: what is due fires, in order */
                now += 10;
                pyi_deadline_t *first;
                int64_t last = INT64_MIN;
                while ((first = pyi_deadlines_first (heap)) && first->when <= now) {
                    CHECK (first->when >= last);
                    last = first->when;
                    pyi_deadlines_remove (heap, first);
                }
                if (first)
                    CHECK (first->when > now);
                break;
            }
        }
    }
    size_t in_heap = 0;
    for (int i = 0; i < COUNT; i++)
        in_heap += entries [i].index != PYI_DEADLINE_NONE;
    CHECK_INT (pyi_deadlines_size (heap), in_heap);
    CHECK_INT (s_drain (heap), in_heap);
    pyi_deadlines_destroy (&heap);
}

int
main (void)
{
    test_order ();
    test_removal ();
    test_churn ();
    fprintf (stderr, "test_deadlines: OK\n");
    return 0;
}
