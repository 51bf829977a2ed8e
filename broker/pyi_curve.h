/*  pyi_curve: CURVE security for the broker's tcp endpoints (RFC 26), and
    the ZAP handler (RFC 27) that admits the peers whose public key the
    host allowed and no other. ZeroMQ has one ZAP handler per process, so
    one broker per process may bind CURVE endpoints; the handler starts
    with the first. Lives on the broker thread. Internal to libpyisolate
    (broker/).
*/
#ifndef PYI_CURVE_H_INCLUDED
#define PYI_CURVE_H_INCLUDED

#include <czmq.h>

/*  Characters of a CURVE key in Z85, without the NUL. */
#define PYI_CURVE_KEY_TEXT 40

typedef struct _pyi_curve_t pyi_curve_t;

/*  CURVE for a broker whose secret key is secret_key (Z85; "" when libzmq
    has no CURVE: then binds fail). No socket yet. NULL when out of memory. */
pyi_curve_t *pyi_curve_new (const char *secret_key);

/*  Close the ZAP handler and forget the keys. Safe on NULL and on
    *self_p == NULL. */
void pyi_curve_destroy (pyi_curve_t **self_p);

/*  Bind endpoint (tcp:// only) on router with CURVE; the router's
    endpoints bound before and after stay plain. *bound: the endpoint
    bound (borrowed from router), "" on failure. 0, or -1 with
    pyi_last_error set. */
int pyi_curve_bind (pyi_curve_t *self, zsock_t *router, const char *endpoint,
                    const char **bound);

/*  Admit the peer holding the secret key of public_key (Z85). 0, or -1
    for a malformed key. */
int pyi_curve_allow (pyi_curve_t *self, const char *public_key);

/*  The ZAP handler's descriptor for poll (ZMQ_FD, edge-triggered), or -1
    before the first CURVE bind. */
int pyi_curve_fd (pyi_curve_t *self);

/*  Answer every ZAP request waiting: 200 for CURVE peers whose key was
    allowed, 400 for anything else. Nothing before the first CURVE bind. */
void pyi_curve_handle (pyi_curve_t *self);

#endif
