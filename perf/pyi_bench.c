/*  pyi_bench: round trip and throughput of the pyisolate broker, measured
    in one run beside the floors it is built on.

    Systems, all inside this one process:
      socketpair     two threads ping-pong over socketpair (AF_UNIX,
                     SOCK_STREAM): the kernel's floor.
      zmq-direct     two threads ping-pong over a ZeroMQ DEALER<->DEALER
                     pair on ipc://: the transport's floor.
      broker-inproc  client -> broker -> worker -> broker -> client, the
                     client on the broker's inproc endpoint (the host's
                     case), the worker a thread on the broker's ipc
                     endpoint with a token from pyi_broker_allow ().
      broker-ipc     the same with the client on the ipc endpoint.

    Latency: for each payload size, one request at a time, its round trip
    timed with CLOCK_MONOTONIC. Throughput: 16-byte calls with 1, 8 and 64
    requests kept in flight. The systems take turns in short chunks, round
    after round, in alternating order (A B C D D C B A ...: none always
    first), and the samples of each system are merged, so that drift of a
    shared machine falls on all of them alike.

    Prints a table and writes every number to JSON, with the goals
    evaluated. A missed goal is reported, not an error: the exit status is
    non-zero only when something did not work (no answer, a wrong answer).

    Usage: pyi_bench [--quick] [--json PATH] [--rounds N] [--samples]
*/

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/utsname.h>

#include <zmq.h>
#include <pyisolate/pyisolate.h>

#define SERVICE "echo"
#define RECV_TIMEOUT_MS 10000           /* longer than this without an answer is a failure */
#define GOAL_RATIO 1.5                  /* broker p50 / direct ZeroMQ p50 */
#define GOAL_SPEEDUP 5.0                /* calls/s at 64 in flight / at 1 */
#define CHUNK_WARMUP 5                  /* untimed calls before each chunk */
#define THROUGHPUT_SIZE 16

enum { SYS_SOCKETPAIR, SYS_ZMQ, SYS_BROKER_INPROC, SYS_BROKER_IPC, SYS_COUNT };
static const char *s_system_name [SYS_COUNT] = {
    "socketpair", "zmq-direct", "broker-inproc", "broker-ipc"
};

#define SIZE_COUNT 4
static const size_t s_sizes [SIZE_COUNT] = { 16, 1024, 64 * 1024, 1024 * 1024 };
static const char *s_size_name [SIZE_COUNT] = { "16 B", "1 KiB", "64 KiB", "1 MiB" };
/*  Timed calls per system and size (full run, quick run). */
static const int s_iterations [SIZE_COUNT] = { 10000, 10000, 3000, 500 };
static const int s_iterations_quick [SIZE_COUNT] = { 600, 600, 200, 40 };

/*  Throughput: the systems measured, the depths, the calls per depth. */
#define TP_SYSTEMS 2
static const int s_tp_system [TP_SYSTEMS] = { SYS_ZMQ, SYS_BROKER_INPROC };
#define DEPTH_COUNT 3
static const int s_depths [DEPTH_COUNT] = { 1, 8, 64 };
#define TP_CALLS 40000
#define TP_CALLS_QUICK 3000

#define MAX_SIZE (1024 * 1024)

static void s_die (const char *fmt, ...) __attribute__ ((noreturn, format (printf, 1, 2)));
static void s_die (const char *fmt, ...)
{
    va_list args;
    va_start (args, fmt);
    fprintf (stderr, "pyi_bench: ");
    vfprintf (stderr, fmt, args);
    fprintf (stderr, "\n");
    va_end (args);
    exit (2);
}

static uint64_t s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

/* ------------------------------------------------------------------------
    socketpair floor: the client writes an 8-byte length and the payload,
    the echo thread reads both in full and writes the payload back.
*/

static int s_read_full (int fd, void *buffer, size_t size)
{
    char *p = buffer;
    while (size > 0) {
        ssize_t n = read (fd, p, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        size -= (size_t) n;
    }
    return 0;
}

static int s_writev_full (int fd, struct iovec *iov, int count)
{
    while (count > 0) {
        ssize_t n = writev (fd, iov, count);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        while (count > 0 && (size_t) n >= iov->iov_len) {
            n -= (ssize_t) iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (char *) iov->iov_base + n;
            iov->iov_len -= (size_t) n;
        }
    }
    return 0;
}

static void *s_socketpair_echo (void *arg)
{
    int fd = *(int *) arg;
    char *buffer = malloc (MAX_SIZE);
    if (!buffer)
        s_die ("out of memory");
    while (true) {
        uint64_t size;
        if (s_read_full (fd, &size, sizeof size) || size > MAX_SIZE
        ||  s_read_full (fd, buffer, size))
            break;              /* closed: the run is over */
        struct iovec iov = { buffer, size };
        if (s_writev_full (fd, &iov, 1))
            break;
    }
    free (buffer);
    return NULL;
}

typedef struct {
    int fds [2];                /* [0] the client's end, [1] the echo thread's */
    pthread_t thread;
    char *reply;                /* the client's receive buffer */
} socketpair_floor_t;

static void s_socketpair_start (socketpair_floor_t *self)
{
    if (socketpair (AF_UNIX, SOCK_STREAM, 0, self->fds))
        s_die ("socketpair: %s", strerror (errno));
    self->reply = malloc (MAX_SIZE);
    if (!self->reply)
        s_die ("out of memory");
    pthread_create (&self->thread, NULL, s_socketpair_echo, &self->fds [1]);
}

static void s_socketpair_call (socketpair_floor_t *self, const char *payload, size_t size)
{
    uint64_t length = size;
    struct iovec iov [2] = { { &length, sizeof length }, { (void *) payload, size } };
    if (s_writev_full (self->fds [0], iov, 2) || s_read_full (self->fds [0], self->reply, size))
        s_die ("socketpair ping-pong failed: %s", strerror (errno));
}

static void s_socketpair_stop (socketpair_floor_t *self)
{
    shutdown (self->fds [0], SHUT_RDWR);
    pthread_join (self->thread, NULL);
    close (self->fds [0]);
    close (self->fds [1]);
    free (self->reply);
}

/* ------------------------------------------------------------------------
    Direct ZeroMQ floor: a DEALER pair over ipc:// in a context of its own
    (one I/O thread, like czmq's default). The echo thread sends back the
    message it received (no copy); an empty message stops it.
*/

typedef struct {
    void *ctx;
    void *client;               /* DEALER, used by the main thread */
    void *echo;                 /* DEALER, used by the echo thread */
    char dir [64];              /* private directory of the ipc file */
    char endpoint [128];
    pthread_t thread;
} zmq_floor_t;

static void *s_zmq_echo (void *arg)
{
    void *socket = arg;
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    while (zmq_msg_recv (&msg, socket, 0) >= 0) {
        if (zmq_msg_size (&msg) == 0)
            break;
        if (zmq_msg_send (&msg, socket, 0) < 0)
            break;
    }
    zmq_msg_close (&msg);
    return NULL;
}

static void s_zmq_start (zmq_floor_t *self)
{
    int linger = 0, timeout = RECV_TIMEOUT_MS;
    snprintf (self->dir, sizeof self->dir, "/tmp/pyi-bench-XXXXXX");
    if (!mkdtemp (self->dir))
        s_die ("mkdtemp: %s", strerror (errno));
    snprintf (self->endpoint, sizeof self->endpoint, "ipc://%s/direct", self->dir);
    self->ctx = zmq_ctx_new ();
    self->echo = zmq_socket (self->ctx, ZMQ_DEALER);
    self->client = zmq_socket (self->ctx, ZMQ_DEALER);
    if (!self->ctx || !self->echo || !self->client)
        s_die ("zmq_socket: %s", zmq_strerror (zmq_errno ()));
    zmq_setsockopt (self->echo, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (self->client, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (self->client, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    if (zmq_bind (self->echo, self->endpoint) || zmq_connect (self->client, self->endpoint))
        s_die ("zmq bind/connect %s: %s", self->endpoint, zmq_strerror (zmq_errno ()));
    pthread_create (&self->thread, NULL, s_zmq_echo, self->echo);
}

static void s_zmq_send (zmq_floor_t *self, const char *payload, size_t size)
{
    if (zmq_send (self->client, payload, size, 0) < 0)
        s_die ("zmq_send: %s", zmq_strerror (zmq_errno ()));
}

static void s_zmq_recv (zmq_floor_t *self, size_t size)
{
    zmq_msg_t msg;
    zmq_msg_init (&msg);
    if (zmq_msg_recv (&msg, self->client, 0) < 0)
        s_die ("direct ZeroMQ: no answer: %s", zmq_strerror (zmq_errno ()));
    if (zmq_msg_size (&msg) != size)
        s_die ("direct ZeroMQ: answer of %zu bytes, expected %zu", zmq_msg_size (&msg), size);
    zmq_msg_close (&msg);
}

static void s_zmq_stop (zmq_floor_t *self)
{
    zmq_send (self->client, "", 0, 0);
    pthread_join (self->thread, NULL);
    zmq_close (self->client);
    zmq_close (self->echo);
    zmq_ctx_term (self->ctx);
    char path [192];
    snprintf (path, sizeof path, "%s/direct", self->dir);
    unlink (path);
    rmdir (self->dir);
}

/* ------------------------------------------------------------------------
    The broker: in this process, with one echo worker thread on its ipc
    endpoint and two clients, one on inproc and one on ipc. The worker
    answers each request with the request's own body frames (moved, not
    copied).
*/

typedef struct {
    pyi_broker_t *broker;
    char *token;
    pyi_client_t *client [SYS_COUNT];   /* indexed by system: inproc, ipc */
    pthread_t thread;
    atomic_bool stop;
    atomic_int worker_status;           /* 0 running, 1 registered, -1 failed */
    uint64_t next_id;
} broker_system_t;

static void *s_broker_worker (void *arg)
{
    broker_system_t *self = arg;
    pyi_worker_t *worker = pyi_worker_new (pyi_broker_endpoint (self->broker), self->token, 0, 0);
    if (!worker || pyi_worker_offer (worker, SERVICE)) {
        fprintf (stderr, "pyi_bench: worker: %s\n", pyi_last_error ());
        atomic_store (&self->worker_status, -1);
        pyi_worker_destroy (&worker);
        return NULL;
    }
    while (!atomic_load (&self->stop)) {
        pyi_msg_t *msg = pyi_worker_recv (worker, 100);
        if (!msg)
            continue;
        switch (pyi_msg_command (msg)) {
            case PYI_REQUEST: {
                uint64_t id = pyi_msg_id (msg);
                if (pyi_worker_reply (worker, id, &msg))
                    fprintf (stderr, "pyi_bench: worker: reply failed: %s\n", pyi_last_error ());
                break;
            }
            case PYI_READY:
                atomic_store (&self->worker_status, 1);
                break;
            case PYI_ERROR:
                fprintf (stderr, "pyi_bench: worker: offer refused: %s %s\n",
                         pyi_error_name (pyi_msg_code (msg)), pyi_msg_text (msg));
                atomic_store (&self->worker_status, -1);
                break;
            case PYI_DISCONNECT:
                atomic_store (&self->stop, true);
                break;
            default:
                break;          /* CANCEL: nothing to stop, the echo is immediate */
        }
        pyi_msg_destroy (&msg);
    }
    pyi_worker_destroy (&worker);
    return NULL;
}

static void s_broker_start (broker_system_t *self)
{
    self->broker = pyi_broker_new ();
    if (!self->broker)
        s_die ("pyi_broker_new: %s", pyi_last_error ());
    self->token = pyi_broker_allow (self->broker, SERVICE, NULL);
    if (!self->token)
        s_die ("pyi_broker_allow: %s", pyi_last_error ());
    pthread_create (&self->thread, NULL, s_broker_worker, self);

    /*  Wait until the broker says the service is ready. */
    uint64_t deadline = s_now_ns () + (uint64_t) RECV_TIMEOUT_MS * 1000000u;
    bool ready = false;
    while (!ready && atomic_load (&self->worker_status) >= 0 && s_now_ns () < deadline) {
        pyi_event_t event;
        if (pyi_broker_event (self->broker, &event, 100) == 0) {
            if (event.type == PYI_EVENT_READY && strcmp (event.service, SERVICE) == 0)
                ready = true;
            else
            if (event.type == PYI_EVENT_REFUSED)
                s_die ("the broker refused the echo worker: %s", event.text);
        }
    }
    if (!ready)
        s_die ("the echo worker did not become ready");

    self->client [SYS_BROKER_INPROC] = pyi_client_new (pyi_broker_inproc (self->broker));
    self->client [SYS_BROKER_IPC] = pyi_client_new (pyi_broker_endpoint (self->broker));
    if (!self->client [SYS_BROKER_INPROC] || !self->client [SYS_BROKER_IPC])
        s_die ("pyi_client_new: %s", pyi_last_error ());
}

static void s_broker_send (broker_system_t *self, int system, const char *payload, size_t size)
{
    pyi_msg_t *body = pyi_msg_new (PYI_REQUEST);
    if (!body || pyi_msg_append (body, payload, size))
        s_die ("pyi_msg_append: %s", pyi_last_error ());
    if (pyi_client_request (self->client [system], SERVICE, ++self->next_id, 0, &body))
        s_die ("pyi_client_request: %s", pyi_last_error ());
}

static void s_broker_recv (broker_system_t *self, int system, size_t size)
{
    pyi_msg_t *msg = pyi_client_recv (self->client [system], RECV_TIMEOUT_MS);
    if (!msg)
        s_die ("%s: no answer in %d ms", s_system_name [system], RECV_TIMEOUT_MS);
    if (pyi_msg_command (msg) != PYI_REPLY)
        s_die ("%s: got %s %s: %s", s_system_name [system],
               pyi_command_name (pyi_msg_command (msg)),
               pyi_error_name (pyi_msg_code (msg)), pyi_msg_text (msg));
    if (pyi_msg_body_size (msg) != size)
        s_die ("%s: answer of %zu bytes, expected %zu", s_system_name [system],
               pyi_msg_body_size (msg), size);
    pyi_msg_destroy (&msg);
}

static void s_broker_stop (broker_system_t *self)
{
    pyi_client_destroy (&self->client [SYS_BROKER_INPROC]);
    pyi_client_destroy (&self->client [SYS_BROKER_IPC]);
    atomic_store (&self->stop, true);
    pthread_join (self->thread, NULL);
    pyi_broker_destroy (&self->broker);
    free (self->token);
}

/* ------------------------------------------------------------------------
    The bench: one send and one receive per system, then the measurements.
*/

typedef struct {
    socketpair_floor_t socketpair;
    zmq_floor_t zmq;
    broker_system_t broker;
    char *payload;
} bench_t;

static void s_call (bench_t *self, int system, size_t size)
{
    switch (system) {
        case SYS_SOCKETPAIR:
            s_socketpair_call (&self->socketpair, self->payload, size);
            break;
        case SYS_ZMQ:
            s_zmq_send (&self->zmq, self->payload, size);
            s_zmq_recv (&self->zmq, size);
            break;
        default:
            s_broker_send (&self->broker, system, self->payload, size);
            s_broker_recv (&self->broker, system, size);
            break;
    }
}

/*  Calls with depth requests kept in flight; returns the seconds taken. */
static double s_pipeline (bench_t *self, int system, int depth, int calls)
{
    size_t size = THROUGHPUT_SIZE;
    int sent = 0, received = 0;
    uint64_t start = s_now_ns ();
    while (sent < depth && sent < calls) {
        if (system == SYS_ZMQ)
            s_zmq_send (&self->zmq, self->payload, size);
        else
            s_broker_send (&self->broker, system, self->payload, size);
        sent++;
    }
    while (received < calls) {
        if (system == SYS_ZMQ)
            s_zmq_recv (&self->zmq, size);
        else
            s_broker_recv (&self->broker, system, size);
        received++;
        if (sent < calls) {
            if (system == SYS_ZMQ)
                s_zmq_send (&self->zmq, self->payload, size);
            else
                s_broker_send (&self->broker, system, self->payload, size);
            sent++;
        }
    }
    return (double) (s_now_ns () - start) / 1e9;
}

/*  Latency samples of one system at one size. */
typedef struct {
    uint64_t *ns;
    int count;
    double p50, p99, min, max, mean;    /* microseconds */
} samples_t;

typedef struct {
    int calls;                  /* timed calls in all */
    double seconds;             /* their time in all */
    double rate;                /* calls / seconds */
    double rate_min, rate_max;  /* over the rounds */
} throughput_t;

static int s_compare_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

/*  Nearest-rank percentile of sorted samples. */
static double s_percentile_us (const uint64_t *sorted, int count, double pct)
{
    int rank = (int) (pct / 100.0 * count + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > count)
        rank = count;
    return (double) sorted [rank - 1] / 1000.0;
}

static void s_summarize (samples_t *self)
{
    qsort (self->ns, (size_t) self->count, sizeof *self->ns, s_compare_u64);
    double sum = 0;
    for (int i = 0; i < self->count; i++)
        sum += (double) self->ns [i];
    self->p50 = s_percentile_us (self->ns, self->count, 50);
    self->p99 = s_percentile_us (self->ns, self->count, 99);
    self->min = (double) self->ns [0] / 1000.0;
    self->max = (double) self->ns [self->count - 1] / 1000.0;
    self->mean = sum / self->count / 1000.0;
}

static void s_usage (FILE *out)
{
    fprintf (out,
        "usage: pyi_bench [--quick] [--json PATH] [--rounds N] [--samples]\n"
        "  --quick      few iterations (under 20 s), for a smoke test\n"
        "  --json PATH  where to write the results (default pyi_bench.json)\n"
        "  --rounds N   turns each system takes (default 20, quick 5)\n"
        "  --samples    every round trip in the JSON too (samples_us), to merge runs\n");
}

static void s_json_string (FILE *out, const char *text)
{
    fputc ('"', out);
    for (const char *p = text; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf (out, "\\%c", *p);
        else
        if ((unsigned char) *p < 0x20)
            fprintf (out, "\\u%04x", *p);
        else
            fputc (*p, out);
    }
    fputc ('"', out);
}

int main (int argc, char *argv [])
{
    bool quick = false;
    const char *json_path = "pyi_bench.json";
    int rounds = 0;
    bool raw = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp (argv [i], "--quick") == 0)
            quick = true;
        else
        if (strcmp (argv [i], "--samples") == 0)
            raw = true;
        else
        if (strcmp (argv [i], "--json") == 0 && i + 1 < argc)
            json_path = argv [++i];
        else
        if (strcmp (argv [i], "--rounds") == 0 && i + 1 < argc && atoi (argv [i + 1]) > 0)
            rounds = atoi (argv [++i]);
        else
        if (strcmp (argv [i], "--help") == 0 || strcmp (argv [i], "-h") == 0) {
            s_usage (stdout);
            return 0;
        }
        else {
            s_usage (stderr);
            return 2;
        }
    }
    if (rounds == 0)
        rounds = quick ? 5 : 20;
    const int *iterations = quick ? s_iterations_quick : s_iterations;
    int tp_calls = quick ? TP_CALLS_QUICK : TP_CALLS;

    /*  Start every system before measuring any. */
    bench_t bench;
    memset (&bench, 0, sizeof bench);
    bench.payload = malloc (MAX_SIZE);
    if (!bench.payload)
        s_die ("out of memory");
    for (size_t i = 0; i < MAX_SIZE; i++)
        bench.payload [i] = (char) ('a' + i % 26);
    s_socketpair_start (&bench.socketpair);
    s_zmq_start (&bench.zmq);
    s_broker_start (&bench.broker);

    samples_t samples [SYS_COUNT][SIZE_COUNT];
    for (int system = 0; system < SYS_COUNT; system++)
        for (int size = 0; size < SIZE_COUNT; size++) {
            samples_t *s = &samples [system][size];
            memset (s, 0, sizeof *s);
            s->ns = calloc ((size_t) iterations [size], sizeof *s->ns);
            if (!s->ns)
                s_die ("out of memory");
        }

    int major, minor, patch;
    zmq_version (&major, &minor, &patch);
    long cpus = sysconf (_SC_NPROCESSORS_ONLN);
    printf ("pyi_bench: %s run, %d rounds, %ld CPUs online, libzmq %d.%d.%d\n",
            quick ? "quick" : "full", rounds, cpus, major, minor, patch);
    fflush (stdout);
    uint64_t run_start = s_now_ns ();

    /*  Warm-up: a tenth of the timed calls, untimed, for every system and size. */
    for (int size = 0; size < SIZE_COUNT; size++)
        for (int system = 0; system < SYS_COUNT; system++)
            for (int i = 0; i < iterations [size] / 10 + CHUNK_WARMUP; i++)
                s_call (&bench, system, s_sizes [size]);

    /*  Latency, the systems taking turns round after round, in
        alternating order. */
    for (int round = 0; round < rounds; round++)
        for (int size = 0; size < SIZE_COUNT; size++)
            for (int turn = 0; turn < SYS_COUNT; turn++) {
                int system = round % 2 ? SYS_COUNT - 1 - turn : turn;
                samples_t *s = &samples [system][size];
                int target = (int) ((int64_t) iterations [size] * (round + 1) / rounds);
                for (int i = 0; i < CHUNK_WARMUP; i++)
                    s_call (&bench, system, s_sizes [size]);
                while (s->count < target) {
                    uint64_t start = s_now_ns ();
                    s_call (&bench, system, s_sizes [size]);
                    s->ns [s->count++] = s_now_ns () - start;
                }
            }
    for (int system = 0; system < SYS_COUNT; system++)
        for (int size = 0; size < SIZE_COUNT; size++)
            s_summarize (&samples [system][size]);

    /*  Throughput, likewise in turns. */
    throughput_t throughput [TP_SYSTEMS][DEPTH_COUNT];
    memset (throughput, 0, sizeof throughput);
    for (int t = 0; t < TP_SYSTEMS; t++)
        for (int d = 0; d < DEPTH_COUNT; d++)
            s_pipeline (&bench, s_tp_system [t], s_depths [d], tp_calls / 10);
    for (int round = 0; round < rounds; round++)
        for (int d = 0; d < DEPTH_COUNT; d++)
            for (int turn = 0; turn < TP_SYSTEMS; turn++) {
                int t = round % 2 ? TP_SYSTEMS - 1 - turn : turn;
                throughput_t *tp = &throughput [t][d];
                int calls = (int) ((int64_t) tp_calls * (round + 1) / rounds) - tp->calls;
                double seconds = s_pipeline (&bench, s_tp_system [t], s_depths [d], calls);
                double rate = calls / seconds;
                tp->calls += calls;
                tp->seconds += seconds;
                if (round == 0 || rate < tp->rate_min)
                    tp->rate_min = rate;
                if (round == 0 || rate > tp->rate_max)
                    tp->rate_max = rate;
            }
    for (int t = 0; t < TP_SYSTEMS; t++)
        for (int d = 0; d < DEPTH_COUNT; d++)
            throughput [t][d].rate = throughput [t][d].calls / throughput [t][d].seconds;
    double run_seconds = (double) (s_now_ns () - run_start) / 1e9;

    /*  Broker statistics, as a check that every call went through it. */
    pyi_service_stats_t service_stats;
    memset (&service_stats, 0, sizeof service_stats);
    pyi_broker_service_stats (bench.broker.broker, SERVICE, &service_stats);

    s_broker_stop (&bench.broker);
    s_zmq_stop (&bench.zmq);
    s_socketpair_stop (&bench.socketpair);

    /*  Goals, for the host's case (the client on inproc). */
    bool small_pass = true;
    double small_worst = 0;
    for (int size = 0; size < SIZE_COUNT - 1; size++) {
        double ratio = samples [SYS_BROKER_INPROC][size].p50 / samples [SYS_ZMQ][size].p50;
        if (ratio > small_worst)
            small_worst = ratio;
    }
    small_pass = small_worst <= GOAL_RATIO;
    double large_ratio = samples [SYS_BROKER_INPROC][SIZE_COUNT - 1].p50
                       / samples [SYS_ZMQ][SIZE_COUNT - 1].p50;
    bool large_pass = large_ratio <= GOAL_RATIO;
    int broker_tp = 1;          /* index of the broker in s_tp_system */
    double speedup = throughput [broker_tp][DEPTH_COUNT - 1].rate / throughput [broker_tp][0].rate;
    bool speedup_pass = speedup >= GOAL_SPEEDUP;

    /*  The table. */
    printf ("\nRound trip, microseconds (%d rounds; %s)\n", rounds,
            "ratio = p50 / zmq-direct p50 at the same size");
    printf ("%-7s %-14s %7s %9s %9s %9s %9s %9s %7s\n",
            "size", "system", "calls", "p50", "p99", "min", "max", "mean", "ratio");
    for (int size = 0; size < SIZE_COUNT; size++) {
        for (int system = 0; system < SYS_COUNT; system++) {
            samples_t *s = &samples [system][size];
            printf ("%-7s %-14s %7d %9.1f %9.1f %9.1f %9.1f %9.1f %6.2fx\n",
                    s_size_name [size], s_system_name [system], s->count,
                    s->p50, s->p99, s->min, s->max, s->mean,
                    s->p50 / samples [SYS_ZMQ][size].p50);
        }
    }
    printf ("\nThroughput, %d-byte calls (%d calls per row)\n", THROUGHPUT_SIZE, tp_calls);
    printf ("%-14s %9s %12s %12s %12s\n", "system", "in flight", "calls/s", "round min", "round max");
    for (int t = 0; t < TP_SYSTEMS; t++)
        for (int d = 0; d < DEPTH_COUNT; d++) {
            throughput_t *tp = &throughput [t][d];
            printf ("%-14s %9d %12.0f %12.0f %12.0f\n", s_system_name [s_tp_system [t]],
                    s_depths [d], tp->rate, tp->rate_min, tp->rate_max);
        }
    printf ("\nGoals (broker-inproc, the host's case)\n");
    printf ("  %-4s round trip p50 <= %.1fx direct ZeroMQ at 16 B..64 KiB: worst %.2fx\n",
            small_pass ? "PASS" : "MISS", GOAL_RATIO, small_worst);
    printf ("  %-4s 1 MiB round trip p50 <= %.1fx direct ZeroMQ: %.2fx\n",
            large_pass ? "PASS" : "MISS", GOAL_RATIO, large_ratio);
    printf ("  %-4s throughput at 64 in flight >= %.0fx at 1: %.2fx\n",
            speedup_pass ? "PASS" : "MISS", GOAL_SPEEDUP, speedup);
    printf ("\nbroker saw %" PRIu64 " requests, %" PRIu64 " replies, %" PRIu64 " errors for \"%s\"; "
            "run took %.1f s\n", service_stats.requests, service_stats.replies,
            service_stats.errors, SERVICE, run_seconds);

    /*  The JSON. */
    FILE *out = fopen (json_path, "w");
    if (!out)
        s_die ("cannot write %s: %s", json_path, strerror (errno));
    struct utsname uts;
    uname (&uts);
    char machine [512];
    snprintf (machine, sizeof machine, "%s %s %s", uts.sysname, uts.release, uts.machine);
    fprintf (out, "{\n  \"tool\": \"pyi_bench\",\n  \"quick\": %s,\n  \"rounds\": %d,\n",
             quick ? "true" : "false", rounds);
    fprintf (out, "  \"cpus\": %ld,\n  \"machine\": ", cpus);
    s_json_string (out, machine);
    fprintf (out, ",\n  \"libzmq\": \"%d.%d.%d\",\n  \"pyisolate\": \"%d.%d.%d\",\n"
             "  \"run_seconds\": %.3f,\n",
             major, minor, patch, PYI_VERSION_MAJOR, PYI_VERSION_MINOR, PYI_VERSION_PATCH,
             run_seconds);
    fprintf (out, "  \"latency\": [\n");
    for (int size = 0; size < SIZE_COUNT; size++)
        for (int system = 0; system < SYS_COUNT; system++) {
            samples_t *s = &samples [system][size];
            fprintf (out, "    {\"system\": \"%s\", \"size\": %zu, \"calls\": %d, "
                     "\"p50_us\": %.3f, \"p99_us\": %.3f, \"min_us\": %.3f, "
                     "\"max_us\": %.3f, \"mean_us\": %.3f, \"p50_vs_zmq\": %.4f",
                     s_system_name [system], s_sizes [size], s->count, s->p50, s->p99,
                     s->min, s->max, s->mean, s->p50 / samples [SYS_ZMQ][size].p50);
            for (int i = 0; raw && i < s->count; i++)
                fprintf (out, "%s%.3f", i ? ", " : ", \"samples_us\": [",
                         (double) s->ns [i] / 1000.0);
            fprintf (out, "%s}%s\n", raw && s->count ? "]" : "",
                     size == SIZE_COUNT - 1 && system == SYS_COUNT - 1 ? "" : ",");
        }
    fprintf (out, "  ],\n  \"throughput\": [\n");
    for (int t = 0; t < TP_SYSTEMS; t++)
        for (int d = 0; d < DEPTH_COUNT; d++) {
            throughput_t *tp = &throughput [t][d];
            fprintf (out, "    {\"system\": \"%s\", \"size\": %d, \"in_flight\": %d, "
                     "\"calls\": %d, \"seconds\": %.6f, \"calls_per_s\": %.1f, "
                     "\"round_min_calls_per_s\": %.1f, \"round_max_calls_per_s\": %.1f}%s\n",
                     s_system_name [s_tp_system [t]], THROUGHPUT_SIZE, s_depths [d],
                     tp->calls, tp->seconds, tp->rate, tp->rate_min, tp->rate_max,
                     t == TP_SYSTEMS - 1 && d == DEPTH_COUNT - 1 ? "" : ",");
        }
    fprintf (out, "  ],\n  \"goals\": [\n");
    fprintf (out, "    {\"name\": \"round_trip_p50_vs_direct_zmq\", \"system\": \"broker-inproc\", "
             "\"sizes\": [16, 1024, 65536], \"measured\": %.4f, \"limit\": %.1f, "
             "\"pass\": %s},\n", small_worst, GOAL_RATIO, small_pass ? "true" : "false");
    fprintf (out, "    {\"name\": \"large_p50_vs_direct_zmq\", \"system\": \"broker-inproc\", "
             "\"sizes\": [1048576], \"measured\": %.4f, \"limit\": %.1f, \"pass\": %s},\n",
             large_ratio, GOAL_RATIO, large_pass ? "true" : "false");
    fprintf (out, "    {\"name\": \"throughput_64_vs_1_in_flight\", \"system\": \"broker-inproc\", "
             "\"measured\": %.4f, \"minimum\": %.1f, \"pass\": %s}\n",
             speedup, GOAL_SPEEDUP, speedup_pass ? "true" : "false");
    fprintf (out, "  ],\n  \"broker_service_stats\": {\"requests\": %" PRIu64
             ", \"replies\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"bytes_in\": %" PRIu64
             ", \"bytes_out\": %" PRIu64 "}\n}\n",
             service_stats.requests, service_stats.replies, service_stats.errors,
             service_stats.bytes_in, service_stats.bytes_out);
    if (fclose (out))
        s_die ("cannot write %s: %s", json_path, strerror (errno));
    printf ("results written to %s\n", json_path);

    for (int system = 0; system < SYS_COUNT; system++)
        for (int size = 0; size < SIZE_COUNT; size++)
            free (samples [system][size].ns);
    free (bench.payload);
    return 0;
}
