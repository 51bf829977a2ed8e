/*  pyi_registry: the process-wide count of live brokers, and the number
    that names each broker's inproc endpoints. */
#include "pyi_registry.h"
#include "pyisolate/pyi_region.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static int s_brokers;                   /* live brokers in this process, under s_lock */
static _Atomic unsigned long s_number;  /* the last number given */

unsigned long
pyi_registry_number (void)
{
    return ++s_number;
}

void
pyi_registry_join (const char *session)
{
    pthread_mutex_lock (&s_lock);
    if (s_brokers++ == 0)
        pyi_region_set_session (session);
    pthread_mutex_unlock (&s_lock);
}

void
pyi_registry_leave (const char *session)
{
    pthread_mutex_lock (&s_lock);
    bool last = --s_brokers == 0;
    if (strcmp (session, pyi_region_session ()) != 0)
        pyi_region_remove_session (session);
    if (last)
        pyi_region_remove_session (NULL);
    pthread_mutex_unlock (&s_lock);
}
