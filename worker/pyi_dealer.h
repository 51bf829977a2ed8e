/*  pyi_dealer: the DEALER socket both peer ends (pyi_client, pyi_worker)
    connect to a broker with. Internal to libpyisolate. */
#ifndef PYI_DEALER_H_INCLUDED
#define PYI_DEALER_H_INCLUDED

#include <czmq.h>

/*  A DEALER connected to endpoint, with the queue limits of clients and
    workers, linger_ms as its linger (-1: czmq's default), and CURVE when
    the three keys are given (all or none; 40 characters of Z85 each).
    NULL with pyi_last_error () set. */
zsock_t *pyi_dealer_new (const char *endpoint, int linger_ms, const char *server_key,
                         const char *public_key, const char *secret_key);

#endif
