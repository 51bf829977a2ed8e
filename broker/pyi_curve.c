/*  pyi_curve: the broker's CURVE endpoints and their ZAP handler, and the
    public pyi_curve_keypair. */
#include "pyi_curve.h"
#include "pyi_table.h"
#include "pyi_library_internal.h"
#include "pyisolate/pyi_broker.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"   /* ZeroMQ's, one per process */
#define ZAP_VERSION "1.0"                       /* RFC 27 */
#define CURVE_KEY_BYTES 32                      /* a CURVE key in binary */
#define TCP_SCHEME "tcp://"

/*  A CURVE public key a remote peer may connect with. */
typedef struct {
    uint8_t key [CURVE_KEY_BYTES];
} s_key_t;

struct _pyi_curve_t {
    zsock_t *zap;                   /* ZAP handler (REP), once a CURVE endpoint is bound */
    pyi_table_t *keys;              /* public keys allowed -> s_key_t */
    char secret [PYI_CURVE_KEY_TEXT + 1];   /* the broker's secret key, Z85 */
};

static const void *
s_key_key (const void *item, size_t *size)
{
    *size = CURVE_KEY_BYTES;
    return ((const s_key_t *) item)->key;
}

pyi_curve_t *
pyi_curve_new (const char *secret_key)
{
    pyi_curve_t *self = (pyi_curve_t *) calloc (1, sizeof (pyi_curve_t));
    if (!self)
        return NULL;
    if (!(self->keys = pyi_table_new (s_key_key))) {
        free (self);
        return NULL;
    }
    snprintf (self->secret, sizeof (self->secret), "%s", secret_key);
    return self;
}

void
pyi_curve_destroy (pyi_curve_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_curve_t *self = *self_p;
    if (self->zap)
        /*  Unbind now: closing frees the endpoint only later, in libzmq's
            reaper, and the next broker of this process must be able to
            bind it at once. */
        zsock_unbind (self->zap, "%s", ZAP_ENDPOINT);
    zsock_destroy (&self->zap);
    size_t cursor = 0;
    void *item;
    while ((item = pyi_table_next (self->keys, &cursor)))
        free (item);
    pyi_table_destroy (&self->keys);
    free (self);
    *self_p = NULL;
}

int
pyi_curve_bind (pyi_curve_t *self, zsock_t *router, const char *endpoint, const char **bound)
{
    *bound = "";
    if (strncmp (endpoint, TCP_SCHEME, strlen (TCP_SCHEME)) != 0) {
        pyi_set_error ("a CURVE endpoint is tcp://, not %s", endpoint);
        return -1;
    }
    if (!self->zap) {
        self->zap = zsock_new (ZMQ_REP);
        if (!self->zap || zsock_bind (self->zap, ZAP_ENDPOINT) == -1) {
            zsock_destroy (&self->zap);
            pyi_set_error ("cannot start CURVE authentication: another broker in this "
                           "process has CURVE endpoints (ZeroMQ allows one handler)");
            return -1;
        }
    }
    /*  The router's options at bind time apply to that endpoint only. */
    zsock_set_curve_server (router, 1);
    zsock_set_curve_secretkey (router, self->secret);
    int rc = zsock_bind (router, "%s", endpoint);
    if (rc == -1)
        pyi_set_error ("cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
    zsock_set_curve_server (router, 0);      /* later endpoints: plain */
    *bound = rc == -1 ? "" : zsock_endpoint (router);
    return rc == -1 ? -1 : 0;
}

int
pyi_curve_allow (pyi_curve_t *self, const char *public_key)
{
    s_key_t *entry = (s_key_t *) calloc (1, sizeof (s_key_t));
    if (!entry || !public_key || strlen (public_key) != PYI_CURVE_KEY_TEXT
    ||  !zmq_z85_decode (entry->key, public_key)) {
        free (entry);
        pyi_set_error ("not a CURVE public key (40 characters of Z85)");
        return -1;
    }
    if (pyi_table_lookup (self->keys, entry->key, CURVE_KEY_BYTES))
        free (entry);
    else
        pyi_table_insert (self->keys, entry);
    return 0;
}

int
pyi_curve_fd (pyi_curve_t *self)
{
    return self->zap ? zsock_fd (self->zap) : -1;
}

/*  Answer one ZAP request (RFC 27). */
static void
s_handle_zap (pyi_curve_t *self)
{
    zmsg_t *request = zmsg_recv (self->zap);
    if (!request)
        return;
    char *version = zmsg_popstr (request);
    char *sequence = zmsg_popstr (request);
    char *domain = zmsg_popstr (request);
    char *address = zmsg_popstr (request);
    zframe_t *identity = zmsg_pop (request);
    char *mechanism = zmsg_popstr (request);
    zframe_t *key = zmsg_pop (request);
    bool ok = version && streq (version, ZAP_VERSION) && mechanism && streq (mechanism, "CURVE")
           && key && zframe_size (key) == CURVE_KEY_BYTES
           && pyi_table_lookup (self->keys, zframe_data (key), CURVE_KEY_BYTES);
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, ZAP_VERSION);
    zmsg_addstr (reply, sequence ? sequence : "");
    zmsg_addstr (reply, ok ? "200" : "400");
    zmsg_addstr (reply, ok ? "OK" : "key not allowed");
    zmsg_addstr (reply, ok ? "pyi-curve" : "");
    zmsg_addmem (reply, "", 0);
    zmsg_send (&reply, self->zap);
    zstr_free (&version);
    zstr_free (&sequence);
    zstr_free (&domain);
    zstr_free (&address);
    zstr_free (&mechanism);
    zframe_destroy (&identity);
    zframe_destroy (&key);
    zmsg_destroy (&request);
}

void
pyi_curve_handle (pyi_curve_t *self)
{
    /*  ZAP requests come while a peer connects: a few, never many. */
    if (self->zap)
        while (zsock_events (self->zap) & ZMQ_POLLIN)
            s_handle_zap (self);
}

int
pyi_curve_keypair (char public_key [41], char secret_key [41])
{
    if (zmq_curve_keypair (public_key, secret_key) != 0) {
        pyi_set_error ("cannot make a CURVE key pair: %s", zmq_strerror (zmq_errno ()));
        return -1;
    }
    return 0;
}
