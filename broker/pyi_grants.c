/*  pyi_grants: grants in a table by token, and spawned ones also in a
    table by pid. */
#include "pyi_grants.h"
#include "pyi_table.h"
#include "pyisolate/pyi_msg.h"
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TOKEN_BYTES 16              /* random bytes of a token (hex: twice as many) */
#define BYTE_VALUES 256             /* randof's range for a byte */
#define FIRST_PRINTABLE 0x20        /* bytes below are control characters */
#define DELETE 0x7f                 /* so is this one */

struct _pyi_grant_t {
    char token [2 * TOKEN_BYTES + 1];   /* hex */
    char **services;                /* names this token may offer */
    size_t nservices;
    void *holder;                   /* the peer using it now, or NULL */
    pid_t pid;                      /* spawned process holding it, or 0 */
};

struct _pyi_grants_t {
    pyi_table_t *tokens;            /* token -> pyi_grant_t, owns them */
    pyi_table_t *pids;              /* pid -> pyi_grant_t of a spawned process */
};

static const void *
s_token_key (const void *item, size_t *size)
{
    *size = strlen (((const pyi_grant_t *) item)->token);
    return ((const pyi_grant_t *) item)->token;
}

static const void *
s_pid_key (const void *item, size_t *size)
{
    *size = sizeof (pid_t);
    return &((const pyi_grant_t *) item)->pid;
}

pyi_grants_t *
pyi_grants_new (void)
{
    pyi_grants_t *self = (pyi_grants_t *) calloc (1, sizeof (pyi_grants_t));
    if (!self)
        return NULL;
    self->tokens = pyi_table_new (s_token_key);
    self->pids = pyi_table_new (s_pid_key);
    if (!self->tokens || !self->pids)
        pyi_grants_destroy (&self);
    return self;
}

static void
s_grant_free (pyi_grant_t *grant)
{
    for (size_t i = 0; i < grant->nservices; i++)
        free (grant->services [i]);
    free (grant->services);
    free (grant);
}

void
pyi_grants_destroy (pyi_grants_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_grants_t *self = *self_p;
    size_t cursor = 0;
    void *item;
    while (self->tokens && (item = pyi_table_next (self->tokens, &cursor)))
        s_grant_free ((pyi_grant_t *) item);
    pyi_table_destroy (&self->tokens);
    pyi_table_destroy (&self->pids);
    free (self);
    *self_p = NULL;
}

static void
s_new_token (char *token)
{
    uint8_t bytes [TOKEN_BYTES];
    if (getrandom (bytes, sizeof (bytes), 0) != sizeof (bytes))
        for (size_t i = 0; i < sizeof (bytes); i++)
            bytes [i] = (uint8_t) randof (BYTE_VALUES);
    for (size_t i = 0; i < TOKEN_BYTES; i++)
        sprintf (token + 2 * i, "%02x", bytes [i]);
}

static bool
s_valid_name (const char *name)
{
    size_t size = name ? strlen (name) : 0;
    if (size == 0 || size > PYI_MAX_NAME)
        return false;
    for (size_t i = 0; i < size; i++)
        if ((unsigned char) name [i] < FIRST_PRINTABLE || name [i] == DELETE)
            return false;
    return true;
}

pyi_grant_t *
pyi_grants_allow (pyi_grants_t *self, const char *service, const char *token)
{
    if (!s_valid_name (service))
        return NULL;
    pyi_grant_t *grant = token && *token ? pyi_grants_lookup (self, token) : NULL;
    if (!grant) {
        if (token && *token)
            return NULL;
        grant = (pyi_grant_t *) calloc (1, sizeof (pyi_grant_t));
        if (!grant)
            return NULL;
        s_new_token (grant->token);
        if (pyi_table_insert (self->tokens, grant)) {
            free (grant);
            return NULL;
        }
    }
    if (pyi_grant_allows (grant, service))
        return grant;
    char **services = (char **) realloc (grant->services,
                                         (grant->nservices + 1) * sizeof (char *));
    if (!services)
        return NULL;
    grant->services = services;
    if (!(services [grant->nservices] = strdup (service)))
        return NULL;
    grant->nservices++;
    return grant;
}

pyi_grant_t *
pyi_grants_lookup (pyi_grants_t *self, const char *token)
{
    return (pyi_grant_t *) pyi_table_lookup (self->tokens, token, strlen (token));
}

pyi_grant_t *
pyi_grants_of_pid (pyi_grants_t *self, pid_t pid)
{
    return (pyi_grant_t *) pyi_table_lookup (self->pids, &pid, sizeof (pid));
}

int
pyi_grants_set_pid (pyi_grants_t *self, pyi_grant_t *grant, pid_t pid)
{
    if (grant->pid > 0)
        pyi_table_remove (self->pids, &grant->pid, sizeof (grant->pid));
    grant->pid = pid;
    return pyi_table_insert (self->pids, grant);
}

void
pyi_grants_remove (pyi_grants_t *self, pyi_grant_t **grant_p)
{
    pyi_grant_t *grant = *grant_p;
    *grant_p = NULL;
    if (grant->pid > 0)
        pyi_table_remove (self->pids, &grant->pid, sizeof (grant->pid));
    pyi_table_remove (self->tokens, grant->token, strlen (grant->token));
    s_grant_free (grant);
}

const char *pyi_grant_token (const pyi_grant_t *self) { return self->token; }
pid_t pyi_grant_pid (const pyi_grant_t *self) { return self->pid; }
void *pyi_grant_holder (const pyi_grant_t *self) { return self->holder; }
void pyi_grant_set_holder (pyi_grant_t *self, void *holder) { self->holder = holder; }

bool
pyi_grant_allows (const pyi_grant_t *self, const char *service)
{
    for (size_t i = 0; i < self->nservices; i++)
        if (strcmp (self->services [i], service) == 0)
            return true;
    return false;
}

const char *
pyi_grant_service (const pyi_grant_t *self)
{
    return self->nservices ? self->services [0] : "";
}
