/*  pyi_grants: the broker's policy of who may offer which service. A
    grant is a random token and the services its holder may offer
    (pyi_broker_allow, or the one a spawned process gets in $PYI_TOKEN);
    a worker presents the token in READY. A spawned process's grant is
    known by its pid too, and dies with the process. Internal to
    libpyisolate (broker/).
*/
#ifndef PYI_GRANTS_H_INCLUDED
#define PYI_GRANTS_H_INCLUDED

#include <stdbool.h>
#include <sys/types.h>

typedef struct _pyi_grants_t pyi_grants_t;
typedef struct _pyi_grant_t pyi_grant_t;

/*  No grants yet, or NULL when out of memory. */
pyi_grants_t *pyi_grants_new (void);

/*  Free every grant; safe on NULL and on *self_p == NULL. */
void pyi_grants_destroy (pyi_grants_t **self_p);

/*  Let the holder of token offer service; token NULL or "" makes a new
    grant with a new random token. The grant (borrowed), or NULL for a
    service name that is empty, too long or holds control characters,
    for a token never granted, or when out of memory. */
pyi_grant_t *pyi_grants_allow (pyi_grants_t *self, const char *service, const char *token);

/*  The grant of token, or NULL. */
pyi_grant_t *pyi_grants_lookup (pyi_grants_t *self, const char *token);

/*  The grant that spawned process pid holds, or NULL. */
pyi_grant_t *pyi_grants_of_pid (pyi_grants_t *self, pid_t pid);

/*  Grant is held by spawned process pid (> 0) from now on. 0 or -1. */
int pyi_grants_set_pid (pyi_grants_t *self, pyi_grant_t *grant, pid_t pid);

/*  Forget and free a grant (its process ended): READY with its token is
    refused from now on. Nulls the caller's pointer. */
void pyi_grants_remove (pyi_grants_t *self, pyi_grant_t **grant_p);

/*  The token (borrowed), the spawned process holding it (0: none). */
const char *pyi_grant_token (const pyi_grant_t *self);
pid_t pyi_grant_pid (const pyi_grant_t *self);

/*  Whether the grant lets its holder offer service. */
bool pyi_grant_allows (const pyi_grant_t *self, const char *service);

/*  The first service granted ("" when none): names a process's exit. */
const char *pyi_grant_service (const pyi_grant_t *self);

/*  The peer that uses the token now (the router's worker), or NULL. */
void *pyi_grant_holder (const pyi_grant_t *self);
void pyi_grant_set_holder (pyi_grant_t *self, void *holder);

#endif
