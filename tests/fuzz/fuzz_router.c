/*  fuzz_router: libFuzzer target for the broker's dispatch
    (broker/pyi_router.c, and what it drives: grants, offenders,
    deadlines, descriptors, events).

    Each input is a script (fuzz_router.h) that three fake peers play
    against a router fed as the broker thread feeds it: every message a
    peer sends is read from a real ROUTER socket with pyi_msg_recv (with a
    small size limit) and handed to pyi_router_handle; time moves when the
    script says, through pyi_router_expire and pyi_router_heartbeat. Two
    peers connect over inproc (local), one over tcp on the loopback
    (remote, for pyi_msg_remote). Each input gets a new router, grants
    and supervisor; the sockets are kept.

    Checked, besides no crash, no undefined behaviour and no leak (the
    router and all it allocated are destroyed after each input, under
    LeakSanitizer):
    - everything the router sends a peer is a well-formed message;
    - the tables stay bounded: never more requests in flight than
      PYI_OPT_MAX_PENDING, never more workers than peers; once every peer
      has sent DISCONNECT, no worker and no request is left;
    - descriptor counts: the in-flight count of the fuzzer's region is
      never given back more often than descriptors of it were sent (it
      never drops below its value at the input's start, which a reserve
      of descriptors never sent keeps far above 0), and nothing a remote
      peer sends gives any back, not even descriptors of this host's
      region that it marks (a hostile peer can name a region: its marks
      are never acted on, here nor by a local receiver);
    - a remote peer never receives marked descriptors.
    A failed check aborts, which libFuzzer reports as a crash.

    Build and run: tests/fuzz/run (clang, -DPYI_FUZZ=ON). Seeds:
    tests/fuzz/corpus_router, written by fuzz_make_corpus.
*/
#include "fuzz_router.h"
#include "pyi_events.h"
#include "pyi_grants.h"
#include "pyi_library_internal.h"
#include "pyi_router.h"
#include "pyi_supervisor.h"

#include <czmq.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include <pyisolate/pyisolate.h>

#define MAX_MSG_SIZE 4096           /* the broker's size limit here: OVERSIZE goes over it */
#define OVERSIZE_FRAMES 300         /* more than PYI_MAX_BODY_FRAMES */
#define MAX_PENDING 8
#define MAX_STRIKES 6
#define HEARTBEAT_MS 1000
#define LIVENESS 3
#define STEP_MS 100                 /* TIME and REQUEST timeouts count in these */
#define RESERVE 1000                /* descriptors of the region never sent */
#define RECV_TIMEOUT_MS 10000       /* a message the broker's socket must get */
#define FAR_PID 0x7ffffff0          /* token 1's process: no such pid */
#define REGION_SIZE 4096
#define ENDPOINT "inproc://fuzz-router"
#define TEXT 64
#define HEADER 2048                 /* room for an encoded header of OVERSIZE */

static const char *s_services [FR_SERVICES] = { "svc.a", "svc.b", "svc.c", "svc.x" };
static const char *s_ops [FR_OPS] = {
    "READY", "REQUEST", "REPLY", "ERROR", "CANCEL", "HEARTBEAT", "DISCONNECT", "RAW", "TIME",
    "EXITED", "OVERSIZE"
};

/*  What lives for the whole run. */
static struct {
    void *context;
    void *socket;                   /* the broker's ROUTER */
    void *peers [FR_PEERS];         /* DEALERs */
    pyi_events_t *events;           /* the broker's end; nobody reads it */
    pyi_region_t *region;           /* what DESCRIPTOR frames describe */
} s;

/*  One input being played. */
typedef struct {
    const uint8_t *data;
    size_t size, at;
    pyi_router_t *router;
    pyi_grants_t *grants;
    char tokens [FR_TOKENS][TEXT];
    int64_t skew;                   /* how far the script moved time (ms) */
    uint32_t packed;                /* descriptors made in this step */
} s_play_t;

static void s_fail (const char *format, ...) __attribute__ ((format (printf, 1, 2), noreturn));
static void
s_fail (const char *format, ...)
{
    va_list args;
    va_start (args, format);
    fprintf (stderr, "fuzz_router: ");
    vfprintf (stderr, format, args);
    fprintf (stderr, "\n");
    va_end (args);
    abort ();
}

static uint8_t
s_byte (s_play_t *play)
{
    return play->at < play->size ? play->data [play->at++] : 0;
}

static uint32_t
s_inflight (void)
{
    return pyi_region_inflight (s.region);
}

/*  The region's name stays in /dev/shm while counts are out. */
static void
s_cleanup (void)
{
    pyi_region_remove_session (NULL);
    pyi_events_destroy (&s.events);
}

static void
s_setup (void)
{
    pyi_init ();
    s.context = zmq_ctx_new ();
    s.socket = zmq_socket (s.context, ZMQ_ROUTER);
    int one = 1, zero = 0, hwm = 10000, timeout = RECV_TIMEOUT_MS;
    zmq_setsockopt (s.socket, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt (s.socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt (s.socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt (s.socket, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt (s.socket, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    char tcp [256];
    size_t size = sizeof tcp;
    if (zmq_bind (s.socket, ENDPOINT) || zmq_bind (s.socket, "tcp://127.0.0.1:*")
    ||  zmq_getsockopt (s.socket, ZMQ_LAST_ENDPOINT, tcp, &size))
        s_fail ("cannot bind: %s", zmq_strerror (zmq_errno ()));
    for (int p = 0; p < FR_PEERS; p++) {
        char id [16];
        snprintf (id, sizeof id, "peer-%d", p);
        s.peers [p] = zmq_socket (s.context, ZMQ_DEALER);
        zmq_setsockopt (s.peers [p], ZMQ_ROUTING_ID, id, strlen (id));
        zmq_setsockopt (s.peers [p], ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_connect (s.peers [p], p == FR_REMOTE_PEER ? tcp : ENDPOINT))
            s_fail ("cannot connect peer %d: %s", p, zmq_strerror (zmq_errno ()));
    }
    s.events = pyi_events_bind ("inproc://fuzz-router-events");
    s.region = pyi_region_new (REGION_SIZE);
    if (!s.events || !s.region)
        s_fail ("cannot set up: %s", pyi_last_error ());
    /*  The reserve: counts nobody may give back. */
    uint8_t buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int64_t shape [1] = { 4 };
    DLTensor t = { pyi_region_data (s.region), { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 },
                   shape, NULL, 0 };
    for (int i = 0; i < RESERVE; i++)
        if (pyi_tensor_pack (&t, buffer, sizeof buffer) < 0)
            s_fail ("cannot pack: %s", pyi_last_error ());
    atexit (s_cleanup);
}

/*  Read what the router sent peer p: every message must decode; a
    local peer gives back the counts of the descriptors it gets (as a
    receiver that decodes them does); a remote one must get none. */
static void
s_drain (int p)
{
    pyi_msg_t *msg;
    while ((msg = pyi_msg_recv (s.peers [p], false, 0, ZMQ_DONTWAIT))) {
        if (pyi_msg_status (msg) != PYI_OK)
            s_fail ("peer %d got a malformed %s: %s", p, pyi_command_name (pyi_msg_command (msg)),
                    pyi_msg_text (msg));
        if (pyi_msg_has_descriptors (msg)) {
            if (p == FR_REMOTE_PEER)
                s_fail ("the remote peer got a %s with marked descriptors",
                        pyi_command_name (pyi_msg_command (msg)));
            for (size_t i = 0; i < pyi_msg_frames (msg); i++)
                if (pyi_msg_is_descriptor (msg, i))
                    pyi_tensor_discard (pyi_msg_frame_data (msg, i), pyi_msg_frame_size (msg, i));
        }
        pyi_msg_destroy (&msg);
    }
}

/*  The broker thread's part: read the one message a peer sent, route it. */
static void
s_route (s_play_t *play)
{
    pyi_msg_t *msg = pyi_msg_recv (s.socket, true, MAX_MSG_SIZE, 0);
    if (!msg)
        s_fail ("the broker's socket got nothing: %s", zmq_strerror (zmq_errno ()));
    pyi_router_handle (play->router, &msg);
    pyi_msg_destroy (&msg);
}

static void
s_send (int p, pyi_msg_t **msg_p)
{
    if (pyi_msg_send (msg_p, s.peers [p], NULL, 0, 0))
        s_fail ("peer %d cannot send: %s", p, zmq_strerror (zmq_errno ()));
}

/*  Body frames from the script (see fuzz_router.h). Descriptors only go
    in a REQUEST or REPLY (the only messages whose marks travel), always
    marked: every one sent is one count the router must give back at most
    once (from a remote peer: never). */
static void
s_body (s_play_t *play, pyi_msg_t *msg)
{
    size_t count = s_byte (play) % (FR_MAX_FRAMES + 1);
    uint8_t marks = count ? s_byte (play) : 0;
    pyi_command_t command = pyi_msg_command (msg);
    bool descriptors = command == PYI_REQUEST || command == PYI_REPLY;
    for (size_t i = 0; i < count; i++) {
        int kind = s_byte (play) % FR_FRAME_KINDS;
        if (kind == FR_FRAME_DESCRIPTOR && !descriptors)
            kind = FR_FRAME_INLINE;
        size_t before = pyi_msg_frames (msg);
        if (kind == FR_FRAME_RAW) {
            uint8_t bytes [256];
            size_t length = s_byte (play);
            for (size_t j = 0; j < length; j++)
                bytes [j] = s_byte (play);
            pyi_msg_append (msg, bytes, length);
        }
        else {
            float values [4] = { 1, 2, 3, 4 };
            int64_t shape [1] = { 4 };
            DLTensor t = { kind == FR_FRAME_DESCRIPTOR ? pyi_region_data (s.region) : values,
                           { kDLCPU, 0 }, 1, { kDLFloat, 32, 1 }, shape, NULL, 0 };
            int rc = kind == FR_FRAME_DESCRIPTOR ? pyi_tensor_encode (&t, msg)
                                                 : pyi_tensor_encode_inline (&t, msg);
            if (rc)
                s_fail ("cannot make a tensor frame: %s", pyi_last_error ());
            if (kind == FR_FRAME_DESCRIPTOR)
                play->packed++;
        }
        if (pyi_msg_frames (msg) != before + 1)
            s_fail ("a body frame was not appended");
        if (marks & (1u << i))
            pyi_msg_mark_descriptor (msg, i);
    }
}

/*  A header and frames sent as they are (RAW, OVERSIZE). */
static void
s_send_raw (int p, const void *header, size_t size, pyi_msg_t *body, size_t empties,
            size_t big)
{
    static uint8_t zeros [MAX_MSG_SIZE + 1];
    size_t frames = body ? pyi_msg_frames (body) : 0;
    size_t last = frames + empties + (big ? 1 : 0);
    int rc = zmq_send (s.peers [p], header, size, last ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; rc >= 0 && i < frames; i++)
        rc = zmq_send (s.peers [p], pyi_msg_frame_data (body, i), pyi_msg_frame_size (body, i),
                       --last ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; rc >= 0 && i < empties; i++)
        rc = zmq_send (s.peers [p], "", 0, --last ? ZMQ_SNDMORE : 0);
    if (rc >= 0 && big)
        rc = zmq_send (s.peers [p], zeros, big, 0);
    if (rc < 0)
        s_fail ("peer %d cannot send: %s", p, zmq_strerror (zmq_errno ()));
}

/*  Play one step; false when the script has ended. */
static bool
s_step (s_play_t *play)
{
    if (play->at >= play->size)
        return false;
    int op = s_byte (play) % FR_OPS;
    int p = s_byte (play) % FR_PEERS;
    bool remote = p == FR_REMOTE_PEER;
    uint32_t before = s_inflight ();
    play->packed = 0;
    pyi_msg_t *msg = NULL;
    switch (op) {
        case FR_READY: {
            msg = pyi_msg_new (PYI_READY);
            pyi_msg_set_token (msg, play->tokens [s_byte (play) % FR_TOKENS]);
            int count = s_byte (play) % 4;
            for (int i = 0; i < count; i++)
                pyi_msg_add_service (msg, s_services [s_byte (play) % FR_SERVICES]);
            break;
        }
        case FR_REQUEST:
            msg = pyi_msg_new (PYI_REQUEST);
            pyi_msg_set_id (msg, s_byte (play));
            pyi_msg_set_service (msg, s_services [s_byte (play) % FR_SERVICES]);
            pyi_msg_set_timeout (msg, (uint32_t) s_byte (play) * STEP_MS);
            s_body (play, msg);
            break;
        case FR_REPLY:
            msg = pyi_msg_new (PYI_REPLY);
            pyi_msg_set_id (msg, s_byte (play));
            s_body (play, msg);
            break;
        case FR_ERROR:
            msg = pyi_msg_new (PYI_ERROR);
            pyi_msg_set_id (msg, s_byte (play));
            pyi_msg_set_code (msg, s_byte (play));
            pyi_msg_set_text (msg, "fuzzed failure");
            s_body (play, msg);
            break;
        case FR_CANCEL:
            msg = pyi_msg_new (PYI_CANCEL);
            pyi_msg_set_id (msg, s_byte (play));
            break;
        case FR_HEARTBEAT:
            msg = pyi_msg_new (PYI_HEARTBEAT);
            break;
        case FR_DISCONNECT:
            msg = pyi_msg_new (PYI_DISCONNECT);
            break;
        case FR_RAW: {
            uint8_t header [256];
            size_t length = s_byte (play);
            for (size_t i = 0; i < length; i++)
                header [i] = s_byte (play);
            pyi_msg_t *body = pyi_msg_new (PYI_ERROR);
            s_body (play, body);                /* raw frames and inline tensors only */
            s_send_raw (p, header, length, body, 0, 0);
            pyi_msg_destroy (&body);
            s_route (play);
            break;
        }
        case FR_TIME: {
            play->skew += (int64_t) s_byte (play) * STEP_MS;
            int64_t now = zclock_mono () + play->skew;
            pyi_router_expire (play->router, now);
            pyi_router_heartbeat (play->router, now);
            break;
        }
        case FR_EXITED: {
            pyi_exit_t ended = { FAR_PID + s_byte (play) % 2, -9, "killed by signal 9 (fuzz)" };
            pyi_router_exited (play->router, &ended);
            break;
        }
        case FR_OVERSIZE: {
            pyi_msg_t *header = pyi_msg_new (s_byte (play) % 2 ? PYI_REPLY : PYI_REQUEST);
            pyi_msg_set_id (header, s_byte (play));
            pyi_msg_set_service (header, s_services [s_byte (play) % FR_SERVICES]);
            bool many = s_byte (play) % 2;
            uint8_t bytes [HEADER];
            int size = pyi_msg_encode (header, bytes, sizeof bytes);
            pyi_msg_destroy (&header);
            if (size < 0)
                s_fail ("cannot encode a header");
            s_send_raw (p, bytes, (size_t) size, NULL, many ? OVERSIZE_FRAMES : 0,
                        many ? 0 : MAX_MSG_SIZE + 1);
            s_route (play);
            break;
        }
    }
    if (msg) {
        s_send (p, &msg);
        s_route (play);
    }
    for (int q = 0; q < FR_PEERS; q++)
        if (q != FR_REMOTE_PEER)
            s_drain (q);

    pyi_broker_stats_t stats;
    pyi_router_stats (play->router, &stats);
    if (stats.pending > MAX_PENDING || stats.workers > FR_PEERS)
        s_fail ("tables past their bounds: %llu requests in flight, %llu workers",
                (unsigned long long) stats.pending, (unsigned long long) stats.workers);
    uint32_t after = s_inflight ();
    if (remote && op != FR_TIME && op != FR_EXITED && after != before + play->packed)
        s_fail ("a remote peer's %s with %u descriptors took a region's count from %u to %u",
                s_ops [op], play->packed, before, after);
    return true;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        s_setup ();
        ready = true;
    }
    for (int p = 0; p < FR_PEERS; p++)
        s_drain (p);                    /* what reached the tcp peer late */

    s_play_t play = { .data = data, .size = size };
    play.grants = pyi_grants_new ();
    pyi_grant_t *first = pyi_grants_allow (play.grants, "svc.a", NULL);
    pyi_grant_t *second = pyi_grants_allow (play.grants, "svc.b", NULL);
    if (!first || !second
    ||  !pyi_grants_allow (play.grants, "svc.b", pyi_grant_token (first))
    ||  !pyi_grants_allow (play.grants, "svc.c", pyi_grant_token (second))
    ||  pyi_grants_set_pid (play.grants, second, FAR_PID))
        s_fail ("cannot make grants");
    snprintf (play.tokens [0], TEXT, "%s", pyi_grant_token (first));
    snprintf (play.tokens [1], TEXT, "%s", pyi_grant_token (second));
    snprintf (play.tokens [2], TEXT, "never-granted-token");
    pyi_supervisor_t *supervisor = pyi_supervisor_new (ENDPOINT, pyi_region_session ());
    play.router = pyi_router_new (s.socket, s.events, play.grants, supervisor, NULL);
    if (!supervisor || !play.router)
        s_fail ("out of memory");
    pyi_router_set (play.router, PYI_OPT_HEARTBEAT_MS, HEARTBEAT_MS);
    pyi_router_set (play.router, PYI_OPT_LIVENESS, LIVENESS);
    pyi_router_set (play.router, PYI_OPT_MAX_PENDING, MAX_PENDING);
    pyi_router_set (play.router, PYI_OPT_MAX_STRIKES, MAX_STRIKES);

    uint32_t start = s_inflight ();
    while (s_step (&play))
        if (s_inflight () < start)
            s_fail ("a region's count went from %u to %u: given back more often than sent",
                    start, s_inflight ());

    /*  Everyone leaves: nothing may be left in the tables. */
    for (int p = 0; p < FR_PEERS; p++) {
        pyi_msg_t *bye = pyi_msg_new (PYI_DISCONNECT);
        s_send (p, &bye);
        s_route (&play);
    }
    for (int p = 0; p < FR_PEERS; p++)
        if (p != FR_REMOTE_PEER)
            s_drain (p);
    pyi_broker_stats_t stats;
    pyi_router_stats (play.router, &stats);
    if (stats.workers || stats.pending)
        s_fail ("after every peer left: %llu workers, %llu requests in flight",
                (unsigned long long) stats.workers, (unsigned long long) stats.pending);
    if (s_inflight () < start)
        s_fail ("a region's count went from %u to %u: given back more often than sent",
                start, s_inflight ());
    pyi_router_destroy (&play.router);
    pyi_supervisor_destroy (&supervisor);
    pyi_grants_destroy (&play.grants);
    return 0;
}
