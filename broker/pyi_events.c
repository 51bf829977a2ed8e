/*  pyi_events: one pyi_event_t per frame, copied as it is (both ends are
    in one process). */
#include "pyi_events.h"
#include "pyi_library_internal.h"
#include <czmq.h>

struct _pyi_events_t {
    zsock_t *sock;                  /* PAIR: bound (broker) or connected (host) */
};

static pyi_events_t *
s_new (zsock_t *sock)
{
    pyi_events_t *self = sock ? (pyi_events_t *) calloc (1, sizeof (pyi_events_t)) : NULL;
    if (!self) {
        zsock_destroy (&sock);
        pyi_set_error ("cannot create the event socket");
        return NULL;
    }
    self->sock = sock;
    return self;
}

pyi_events_t *
pyi_events_bind (const char *endpoint)
{
    pyi_events_t *self = s_new (zsock_new (ZMQ_PAIR));
    if (!self)
        return NULL;
    zsock_set_sndhwm (self->sock, PYI_EVENTS_MAX);
    if (zsock_bind (self->sock, "%s", endpoint) == -1) {
        pyi_set_error ("cannot bind %s: %s", endpoint, zmq_strerror (zmq_errno ()));
        pyi_events_destroy (&self);
    }
    return self;
}

pyi_events_t *
pyi_events_connect (const char *endpoint)
{
    pyi_events_t *self = s_new (zsock_new (ZMQ_PAIR));
    if (self && zsock_connect (self->sock, "%s", endpoint) != 0) {
        pyi_set_error ("cannot connect the event socket");
        pyi_events_destroy (&self);
    }
    return self;
}

void
pyi_events_destroy (pyi_events_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zsock_destroy (&(*self_p)->sock);
    free (*self_p);
    *self_p = NULL;
}

void
pyi_events_send (pyi_events_t *self, int type, int pid, int status, const char *service,
                 const char *text)
{
    pyi_event_t event;
    memset (&event, 0, sizeof (event));
    event.type = type;
    event.pid = pid;
    event.status = status;
    snprintf (event.service, sizeof (event.service), "%s", service ? service : "");
    snprintf (event.text, sizeof (event.text), "%s", text ? text : "");
    zmq_send (zsock_resolve (self->sock), &event, sizeof (event), ZMQ_DONTWAIT);
}

int
pyi_events_recv (pyi_events_t *self, pyi_event_t *event, int timeout_ms)
{
    void *handle = zsock_resolve (self->sock);
    if (timeout_ms != 0) {
        zmq_pollitem_t item = { handle, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, timeout_ms) <= 0)
            return -1;
    }
    int size = zmq_recv (handle, event, sizeof (*event), ZMQ_DONTWAIT);
    return size == (int) sizeof (*event) ? 0 : -1;
}

int
pyi_events_fd (pyi_events_t *self)
{
    return zsock_fd (self->sock);
}
