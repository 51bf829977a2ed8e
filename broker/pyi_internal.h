/*  Functions shared inside libpyisolate, not part of its API. */
#ifndef PYI_INTERNAL_H_INCLUDED
#define PYI_INTERNAL_H_INCLUDED

/*  A DEALER connected to endpoint, with the queue limits of clients and
    workers, and CURVE when the three keys are given (all or none). NULL
    with pyi_last_error () set. */
struct _zsock_t;
struct _zsock_t *pyi_dealer_new (const char *endpoint, int linger_ms, const char *server_key,
                                 const char *public_key, const char *secret_key);

#endif
