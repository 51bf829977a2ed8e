/*  pyi_dealer: the DEALER set-up shared by pyi_client and pyi_worker. */
#include "pyi_dealer.h"
#include "pyi_library_internal.h"

#define PEER_HWM 100000             /* messages queued each way */
#define CURVE_KEY_TEXT 40           /* a CURVE key in Z85 */
#define CURVE_KEY_BYTES 32          /* a CURVE key in binary */

static bool
s_z85_key (const char *text)
{
    uint8_t key [CURVE_KEY_BYTES];
    return text && strlen (text) == CURVE_KEY_TEXT && zmq_z85_decode (key, text);
}

zsock_t *
pyi_dealer_new (const char *endpoint, int linger_ms, const char *server_key,
                const char *public_key, const char *secret_key)
{
    pyi_init ();
    bool curve = server_key || public_key || secret_key;
    if (curve && !(s_z85_key (server_key) && s_z85_key (public_key) && s_z85_key (secret_key))) {
        pyi_set_error ("CURVE keys must be 40 characters of Z85 (server, public and secret)");
        return NULL;
    }
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    if (!sock) {
        pyi_set_error ("cannot create a socket");
        return NULL;
    }
    zsock_set_sndhwm (sock, PEER_HWM);
    zsock_set_rcvhwm (sock, PEER_HWM);
    if (linger_ms >= 0)
        zsock_set_linger (sock, linger_ms);
    if (curve) {
        zsock_set_curve_serverkey (sock, server_key);
        zsock_set_curve_publickey (sock, public_key);
        zsock_set_curve_secretkey (sock, secret_key);
    }
    if (!endpoint || zsock_connect (sock, "%s", endpoint) == -1) {
        pyi_set_error ("cannot connect to %s", endpoint ? endpoint : "(null)");
        zsock_destroy (&sock);
    }
    return sock;
}
