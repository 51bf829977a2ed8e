/*  test_grants: the broker's policy of who may offer which service
    (broker/pyi_grants.c), an internal class: this test compiles it in.

    Guarantees checked:
    - a grant without a token gets a new random one (32 hex digits), a
      different one each time; granting more services to a token extends
      the same grant, once per name; the first service names the grant;
    - a grant allows exactly the services granted to it;
    - names that are empty, over PYI_MAX_NAME bytes or hold control
      characters are refused, and so is a token never granted;
    - a grant is found by its token and, once a spawned process holds it,
      by that pid; removed, it is found by neither;
    - the holder (the worker using it) is kept and cleared;
    - destroy frees every grant (checked by the sanitizer build) and is
      safe on NULL.
*/
#include "testutil.h"
#include "pyi_grants.h"
#include <ctype.h>

#define TOKEN_HEX 32

static bool
s_hex_token (const char *token)
{
    if (strlen (token) != TOKEN_HEX)
        return false;
    for (size_t i = 0; i < TOKEN_HEX; i++)
        if (!isxdigit ((unsigned char) token [i]))
            return false;
    return true;
}

static void
test_tokens (void)
{
    TEST_BEGIN ("new tokens, more services per token, what a grant allows");
    pyi_grants_t *grants = pyi_grants_new ();
    CHECK (grants);
    pyi_grant_t *one = pyi_grants_allow (grants, "alpha", NULL);
    CHECK (one);
    CHECK_MSG (s_hex_token (pyi_grant_token (one)), "%s", pyi_grant_token (one));
    pyi_grant_t *two = pyi_grants_allow (grants, "alpha", "");
    CHECK (two && two != one);
    CHECK (strcmp (pyi_grant_token (one), pyi_grant_token (two)) != 0);
    char token [TOKEN_HEX + 1];
    snprintf (token, sizeof token, "%s", pyi_grant_token (one));
    CHECK (pyi_grants_allow (grants, "beta", token) == one);
    CHECK (pyi_grants_allow (grants, "beta", token) == one);
    CHECK (pyi_grant_allows (one, "alpha") && pyi_grant_allows (one, "beta"));
    CHECK (!pyi_grant_allows (one, "gamma") && !pyi_grant_allows (one, "alph"));
    CHECK (!pyi_grant_allows (two, "beta"));
    CHECK_STR (pyi_grant_service (one), "alpha");
    CHECK (pyi_grants_lookup (grants, token) == one);
    CHECK (pyi_grants_lookup (grants, "0123456789abcdef0123456789abcdef") == NULL);
    pyi_grants_destroy (&grants);
    CHECK (grants == NULL);
    pyi_grants_destroy (&grants);
    pyi_grants_destroy (NULL);
}

static void
test_refusals (void)
{
    TEST_BEGIN ("bad names and unknown tokens are refused");
    pyi_grants_t *grants = pyi_grants_new ();
    char name [PYI_MAX_NAME + 2];
    memset (name, 'n', sizeof name);
    name [PYI_MAX_NAME] = 0;
    CHECK (pyi_grants_allow (grants, name, NULL) != NULL);       /* 255 bytes: fine */
    name [PYI_MAX_NAME] = 'n';
    name [PYI_MAX_NAME + 1] = 0;
    CHECK (pyi_grants_allow (grants, name, NULL) == NULL);       /* 256: not */
    CHECK (pyi_grants_allow (grants, "", NULL) == NULL);
    CHECK (pyi_grants_allow (grants, NULL, NULL) == NULL);
    CHECK (pyi_grants_allow (grants, "tab\there", NULL) == NULL);
    CHECK (pyi_grants_allow (grants, "del\x7f", NULL) == NULL);
    CHECK (pyi_grants_allow (grants, "svc", "not-a-token") == NULL);
    CHECK (pyi_grants_allow (grants, "dotted.name with spaces", NULL) != NULL);
    pyi_grants_destroy (&grants);
}

static void
test_processes (void)
{
    TEST_BEGIN ("grants of spawned processes, holders, removal");
    pyi_grants_t *grants = pyi_grants_new ();
    pyi_grant_t *grant = pyi_grants_allow (grants, "svc", NULL);
    pyi_grant_t *other = pyi_grants_allow (grants, "other", NULL);
    char token [TOKEN_HEX + 1];
    snprintf (token, sizeof token, "%s", pyi_grant_token (grant));
    CHECK_INT (pyi_grant_pid (grant), 0);
    CHECK (pyi_grants_of_pid (grants, 4242) == NULL);
    CHECK_INT (pyi_grants_set_pid (grants, grant, 4242), 0);
    CHECK_INT (pyi_grants_set_pid (grants, other, 4343), 0);
    CHECK_INT (pyi_grant_pid (grant), 4242);
    CHECK (pyi_grants_of_pid (grants, 4242) == grant);
    CHECK (pyi_grants_of_pid (grants, 4343) == other);

    int worker;
    CHECK (pyi_grant_holder (grant) == NULL);
    pyi_grant_set_holder (grant, &worker);
    CHECK (pyi_grant_holder (grant) == &worker);
    pyi_grant_set_holder (grant, NULL);
    CHECK (pyi_grant_holder (grant) == NULL);

    pyi_grants_remove (grants, &grant);
    CHECK (grant == NULL);
    CHECK (pyi_grants_lookup (grants, token) == NULL);
    CHECK (pyi_grants_of_pid (grants, 4242) == NULL);
    CHECK (pyi_grants_of_pid (grants, 4343) == other);
    CHECK (pyi_grants_allow (grants, "svc", token) == NULL);     /* the token died */
    pyi_grants_destroy (&grants);
}

int
main (void)
{
    test_tokens ();
    test_refusals ();
    test_processes ();
    fprintf (stderr, "test_grants: OK\n");
    return 0;
}
