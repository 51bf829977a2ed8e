/*  test_offenders: the broker's record of peers that sent bad messages
    (broker/pyi_offenders.c), an internal class: this test compiles it in.

    Guarantees checked:
    - strikes below the limit do not ban; the strike that reaches it bans
      the peer, and says so once: later strikes of a banned peer do not
      ban it again;
    - peers are told apart by their whole routing id, and counted apart;
    - the record is bounded: past 4096 peers it starts afresh, so that a
      banned peer is forgotten (and is banned again if it goes on);
    - destroy is safe on NULL.
*/
#include "testutil.h"
#include "pyi_offenders.h"

#define LIMIT 3
#define BOUND 4096                  /* MAX_OFFENDERS of pyi_offenders.c */

static void
test_strikes (void)
{
    TEST_BEGIN ("the limit-th strike bans, once; peers apart");
    pyi_offenders_t *offenders = pyi_offenders_new ();
    CHECK (offenders);
    const uint8_t a [] = "peer-a", b [] = "peer-b", ab [] = "peer-ab";
    CHECK (!pyi_offenders_banned (offenders, a, 6));
    CHECK (!pyi_offenders_strike (offenders, a, 6, LIMIT));
    CHECK (!pyi_offenders_strike (offenders, a, 6, LIMIT));
    CHECK (!pyi_offenders_banned (offenders, a, 6));
    CHECK (!pyi_offenders_strike (offenders, b, 6, LIMIT));
    CHECK (!pyi_offenders_strike (offenders, ab, 7, LIMIT));
    CHECK (pyi_offenders_strike (offenders, a, 6, LIMIT));
    CHECK (pyi_offenders_banned (offenders, a, 6));
    CHECK (!pyi_offenders_strike (offenders, a, 6, LIMIT));     /* told once */
    CHECK (pyi_offenders_banned (offenders, a, 6));
    CHECK (!pyi_offenders_banned (offenders, b, 6));
    CHECK (!pyi_offenders_banned (offenders, ab, 7));
    CHECK (!pyi_offenders_banned (offenders, a, 5));            /* "peer-" */
    CHECK_INT (pyi_offenders_size (offenders), 3);
    /*  A limit of one bans at the first strike. */
    CHECK (pyi_offenders_strike (offenders, (const uint8_t *) "c", 1, 1));
    pyi_offenders_destroy (&offenders);
    CHECK (offenders == NULL);
    pyi_offenders_destroy (&offenders);
    pyi_offenders_destroy (NULL);
}

static void
test_bounded (void)
{
    TEST_BEGIN ("the record is bounded and starts afresh");
    pyi_offenders_t *offenders = pyi_offenders_new ();
    const uint8_t banned [] = "banned";
    for (int i = 0; i < LIMIT; i++)
        pyi_offenders_strike (offenders, banned, 6, LIMIT);
    CHECK (pyi_offenders_banned (offenders, banned, 6));
    for (int i = 1; i < BOUND; i++) {
        char rid [32];
        int size = snprintf (rid, sizeof rid, "peer-%d", i);
        CHECK (!pyi_offenders_strike (offenders, (const uint8_t *) rid, (size_t) size, LIMIT));
    }
    CHECK_INT (pyi_offenders_size (offenders), BOUND);
    CHECK (pyi_offenders_banned (offenders, banned, 6));
    CHECK (!pyi_offenders_strike (offenders, (const uint8_t *) "one more", 8, LIMIT));
    CHECK_INT (pyi_offenders_size (offenders), 1);
    CHECK (!pyi_offenders_banned (offenders, banned, 6));
    for (int i = 0; i < LIMIT - 1; i++)
        CHECK (!pyi_offenders_strike (offenders, banned, 6, LIMIT));
    CHECK (pyi_offenders_strike (offenders, banned, 6, LIMIT));
    pyi_offenders_destroy (&offenders);
}

int
main (void)
{
    test_strikes ();
    test_bounded ();
    fprintf (stderr, "test_offenders: OK\n");
    return 0;
}
