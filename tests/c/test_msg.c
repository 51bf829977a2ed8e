/*  test_msg: the pyi_msg codec and its frame-level transport.

    Guarantees checked:
    - every command encodes and decodes back to the same fields, at the
      edges of every field's range (ids 0 and 2^64-1, 255-byte names,
      1023-byte texts, 64 services);
    - encode never writes past the buffer it is given;
    - setters cut names to PYI_MAX_NAME and texts to PYI_MAX_TEXT bytes;
    - decode of hostile bytes never fails to return a message and never
      says PYI_OK for: an empty frame, bad msgpack, any truncation of a
      valid header, a wrong type in any field, too many or too few fields,
      an unknown command, strings longer than allowed, strings declaring
      more bytes than the frame holds (a str32 claiming 4 GiB), arrays
      declaring 2^32-1 elements; and it allocates nothing in proportion to
      declared lengths (checked by watching malloc in the plain build, and
      by AddressSanitizer's allocator in the sanitizer build);
    - a wrong protocol version gives PYI_ERR_VERSION;
    - fields read before a fault are kept (a bad request keeps its id);
    - pyi_msg_send / pyi_msg_recv carry the header and body frames in
      order over PAIR and DEALER/ROUTER sockets, zero-copy frames travel
      without being copied (inproc) and their free function runs exactly
      once, whether the message is sent, destroyed, or refused;
    - pyi_msg_info reports the same fields as the single accessors, for
      messages with and without body frames and for a malformed decode;
    - pyi_msg_recv drains and marks TOO_LARGE a message over max_size or
      with more than PYI_MAX_BODY_FRAMES body frames, and the next message
      still reads correctly.
*/
#include "testutil.h"
#include <stdatomic.h>
#include <zmq.h>

/*  Allocation watcher ---------------------------------------------------
    In the plain build malloc is interposed to record the largest single
    request while a decode runs. Under AddressSanitizer its own allocator
    is in charge (and a huge request aborts the test there). */
#if defined(__SANITIZE_ADDRESS__)
#   define WATCH_ALLOC 0
#elif defined(__has_feature)
#   if __has_feature(address_sanitizer)
#       define WATCH_ALLOC 0
#   endif
#endif
#ifndef WATCH_ALLOC
#   define WATCH_ALLOC 1
#endif

#if WATCH_ALLOC
extern void *__libc_malloc (size_t size);
extern void *__libc_calloc (size_t count, size_t size);
extern void *__libc_realloc (void *ptr, size_t size);
extern void __libc_free (void *ptr);

static _Atomic size_t s_largest;

static void
s_note (size_t size)
{
    size_t seen = atomic_load (&s_largest);
    while (size > seen && !atomic_compare_exchange_weak (&s_largest, &seen, size))
        ;
}

__attribute__ ((visibility ("default"))) void *
malloc (size_t size) { s_note (size); return __libc_malloc (size); }
__attribute__ ((visibility ("default"))) void *
calloc (size_t count, size_t size)
{
    s_note (count && size > SIZE_MAX / count ? SIZE_MAX : count * size);
    return __libc_calloc (count, size);
}
__attribute__ ((visibility ("default"))) void *
realloc (void *ptr, size_t size) { s_note (size); return __libc_realloc (ptr, size); }
__attribute__ ((visibility ("default"))) void
free (void *ptr) { __libc_free (ptr); }
#endif

/*  Largest allocation allowed while decoding one header: the message
    itself plus a copied text, far below any hostile declared length. */
#define DECODE_ALLOC_LIMIT (64 * 1024)

static void
s_alloc_reset (void)
{
#if WATCH_ALLOC
    atomic_store (&s_largest, 0);
#endif
}

static size_t
s_alloc_largest (void)
{
#if WATCH_ALLOC
    return atomic_load (&s_largest);
#else
    return 0;
#endif
}

/*  Decode data, check it is not OK (want status, or any fault when want
    is -1), and that decoding allocated little. Returns the message. */
static pyi_msg_t *
s_decode_bad (const char *file, int line, const void *data, size_t size, int want)
{
    s_alloc_reset ();
    pyi_msg_t *msg = pyi_msg_decode (data, size);
    size_t largest = s_alloc_largest ();
    if (!msg)
        s_fail (file, line, "pyi_msg_decode returned NULL");
    int status = pyi_msg_status (msg);
    if (status == PYI_OK || (want != -1 && status != want))
        s_fail (file, line, "decode of %zu hostile bytes: status %d %s, wanted %s",
                size, status, pyi_error_name (status),
                want == -1 ? "a fault" : pyi_error_name (want));
    if (!*pyi_msg_text (msg))
        s_fail (file, line, "decode fault has no text");
    if (largest > DECODE_ALLOC_LIMIT)
        s_fail (file, line, "decode of %zu bytes allocated %zu bytes at once", size, largest);
    return msg;
}

#define DECODE_BAD(data, size, want) \
    do { pyi_msg_t *_m = s_decode_bad (__FILE__, __LINE__, (data), (size), (want)); \
         pyi_msg_destroy (&_m); } while (0)
#define MP_BAD(mp, want) DECODE_BAD ((mp)->data, (mp)->size, (want))

static pyi_msg_t *
s_decode_ok (const char *file, int line, const void *data, size_t size)
{
    pyi_msg_t *msg = pyi_msg_decode (data, size);
    if (!msg)
        s_fail (file, line, "pyi_msg_decode returned NULL");
    if (pyi_msg_status (msg) != PYI_OK)
        s_fail (file, line, "decode: status %s (%s), wanted OK",
                pyi_error_name (pyi_msg_status (msg)), pyi_msg_text (msg));
    return msg;
}
#define DECODE_OK(data, size) s_decode_ok (__FILE__, __LINE__, (data), (size))

/*  Encode msg into a heap buffer of exactly the needed size (so that
    AddressSanitizer sees any overrun); returns it and its size. */
static uint8_t *
s_encode (const pyi_msg_t *msg, size_t *size)
{
    uint8_t big [8192];
    int length = pyi_msg_encode (msg, big, sizeof big);
    CHECK (length > 0);
    uint8_t *exact = (uint8_t *) malloc ((size_t) length);
    CHECK_INT (pyi_msg_encode (msg, exact, (size_t) length), length);
    CHECK (memcmp (exact, big, (size_t) length) == 0);
    /*  Every smaller buffer is refused, and not written past. */
    for (int n = 0; n < length; n++) {
        uint8_t *small = (uint8_t *) malloc (n ? (size_t) n : 1);
        CHECK_INT (pyi_msg_encode (msg, small, (size_t) n), -1);
        free (small);
    }
    *size = (size_t) length;
    return exact;
}

/*  Every strict prefix of a valid header must decode as a fault. */
static void
s_check_truncations (const uint8_t *data, size_t size)
{
    for (size_t n = 0; n < size; n++) {
        uint8_t *copy = (uint8_t *) malloc (n ? n : 1);
        memcpy (copy, data, n);
        DECODE_BAD (n ? copy : NULL, n, PYI_ERR_MALFORMED);
        free (copy);
    }
}

/*  Encode, check truncations, decode; the caller checks the fields. */
static pyi_msg_t *
s_round_trip (const pyi_msg_t *msg)
{
    size_t size;
    uint8_t *data = s_encode (msg, &size);
    s_check_truncations (data, size);
    pyi_msg_t *copy = DECODE_OK (data, size);
    free (data);
    CHECK_INT (pyi_msg_command (copy), pyi_msg_command (msg));
    CHECK_INT (pyi_msg_frames (copy), 0);
    return copy;
}

static char *
s_fill (char c, size_t size)
{
    char *text = (char *) malloc (size + 1);
    memset (text, c, size);
    text [size] = 0;
    return text;
}

/*  Round trips ----------------------------------------------------------- */

static void
test_round_trip (void)
{
    TEST_BEGIN ("round trip of every command and field");
    char *name255 = s_fill ('n', PYI_MAX_NAME);
    char *text1023 = s_fill ('t', PYI_MAX_TEXT);
    const uint64_t ids [] = { 0, 1, 127, 128, 255, 256, 65535, 65536, 0xffffffffULL,
                              0x100000000ULL, UINT64_MAX };
    for (size_t i = 0; i < sizeof ids / sizeof ids [0]; i++) {
        /*  REQUEST: id, service, timeout. */
        pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
        pyi_msg_set_id (msg, ids [i]);
        pyi_msg_set_service (msg, i % 2 ? "echo" : name255);
        pyi_msg_set_timeout (msg, (uint32_t) (i % 3 == 0 ? UINT32_MAX : ids [i] & 0xffffffff));
        pyi_msg_t *copy = s_round_trip (msg);
        CHECK_U64 (pyi_msg_id (copy), ids [i]);
        CHECK_STR (pyi_msg_service (copy), pyi_msg_service (msg));
        CHECK_U64 (pyi_msg_timeout (copy), pyi_msg_timeout (msg));
        pyi_msg_destroy (&copy);
        pyi_msg_destroy (&msg);
        CHECK (msg == NULL);

        /*  REPLY and CANCEL: id. */
        pyi_command_t commands [] = { PYI_REPLY, PYI_CANCEL };
        for (int c = 0; c < 2; c++) {
            msg = pyi_msg_new (commands [c]);
            pyi_msg_set_id (msg, ids [i]);
            copy = s_round_trip (msg);
            CHECK_U64 (pyi_msg_id (copy), ids [i]);
            pyi_msg_destroy (&copy);
            pyi_msg_destroy (&msg);
        }

        /*  ERROR: id, code, text, service. */
        msg = pyi_msg_new (PYI_ERROR);
        pyi_msg_set_id (msg, ids [i]);
        int code = i % 3 == 0 ? 0x7fffffff : (int) (ids [i] & 0x7fff);
        pyi_msg_set_code (msg, code);
        pyi_msg_set_text (msg, i % 2 ? "worker lost: exited with status 3" : text1023);
        pyi_msg_set_service (msg, i % 2 ? name255 : "svc");
        copy = s_round_trip (msg);
        CHECK_U64 (pyi_msg_id (copy), ids [i]);
        CHECK_INT (pyi_msg_code (copy), code);
        CHECK_STR (pyi_msg_text (copy), pyi_msg_text (msg));
        CHECK_STR (pyi_msg_service (copy), pyi_msg_service (msg));
        pyi_msg_destroy (&copy);
        pyi_msg_destroy (&msg);
    }
    /*  ERROR with empty text and service. */
    pyi_msg_t *msg = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_code (msg, PYI_ERR_TIMEOUT);
    pyi_msg_t *copy = s_round_trip (msg);
    CHECK_STR (pyi_msg_text (copy), "");
    CHECK_STR (pyi_msg_service (copy), "");
    CHECK_INT (pyi_msg_code (copy), PYI_ERR_TIMEOUT);
    pyi_msg_destroy (&copy);
    pyi_msg_destroy (&msg);

    /*  DISCONNECT: code, text. */
    msg = pyi_msg_new (PYI_DISCONNECT);
    pyi_msg_set_code (msg, PYI_ERR_VERSION);
    pyi_msg_set_text (msg, text1023);
    copy = s_round_trip (msg);
    CHECK_INT (pyi_msg_code (copy), PYI_ERR_VERSION);
    CHECK_STR (pyi_msg_text (copy), text1023);
    pyi_msg_destroy (&copy);
    pyi_msg_destroy (&msg);

    /*  HEARTBEAT: nothing. */
    msg = pyi_msg_new (PYI_HEARTBEAT);
    copy = s_round_trip (msg);
    pyi_msg_destroy (&copy);
    pyi_msg_destroy (&msg);

    /*  READY: token, services (0, 1, 64), heartbeat. */
    size_t counts [] = { 0, 1, 2, 15, 16, 64 };
    for (size_t c = 0; c < sizeof counts / sizeof counts [0]; c++) {
        msg = pyi_msg_new (PYI_READY);
        pyi_msg_set_token (msg, c % 2 ? name255 : "0123456789abcdef");
        pyi_msg_set_timeout (msg, c % 2 ? 1000 : UINT32_MAX);
        for (size_t i = 0; i < counts [c]; i++) {
            char name [PYI_MAX_NAME + 1];
            if (i == 0 && c == 5)
                snprintf (name, sizeof name, "%s", name255);
            else
                snprintf (name, sizeof name, "service.%zu", i);
            CHECK_INT (pyi_msg_add_service (msg, name), 0);
        }
        CHECK_INT (pyi_msg_services (msg), counts [c]);
        copy = s_round_trip (msg);
        CHECK_STR (pyi_msg_token (copy), pyi_msg_token (msg));
        CHECK_U64 (pyi_msg_timeout (copy), pyi_msg_timeout (msg));
        CHECK_INT (pyi_msg_services (copy), counts [c]);
        for (size_t i = 0; i < counts [c]; i++)
            CHECK_STR (pyi_msg_service_at (copy, i), pyi_msg_service_at (msg, i));
        CHECK (pyi_msg_service_at (copy, counts [c]) == NULL);
        pyi_msg_destroy (&copy);
        if (counts [c] == 64)    /* the protocol's limit */
            CHECK_INT (pyi_msg_add_service (msg, "one.too.many"), -1);
        pyi_msg_destroy (&msg);
    }
    free (name255);
    free (text1023);
}

static void
test_setters (void)
{
    TEST_BEGIN ("setters cut names and texts; getters of absent fields");
    char *long_name = s_fill ('x', 300);
    char *long_text = s_fill ('y', 5000);
    pyi_msg_t *msg = pyi_msg_new (PYI_ERROR);
    CHECK (msg);
    /*  Fields a new message does not have read as empty. */
    CHECK_U64 (pyi_msg_id (msg), 0);
    CHECK_STR (pyi_msg_service (msg), "");
    CHECK_STR (pyi_msg_text (msg), "");
    CHECK_STR (pyi_msg_token (msg), "");
    CHECK_INT (pyi_msg_code (msg), 0);
    CHECK_INT (pyi_msg_services (msg), 0);
    CHECK_INT (pyi_msg_frames (msg), 0);
    CHECK_INT (pyi_msg_body_size (msg), 0);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);

    pyi_msg_set_service (msg, long_name);
    CHECK_INT (strlen (pyi_msg_service (msg)), PYI_MAX_NAME);
    pyi_msg_set_token (msg, long_name);
    CHECK_INT (strlen (pyi_msg_token (msg)), PYI_MAX_NAME);
    pyi_msg_set_text (msg, long_text);
    CHECK_INT (strlen (pyi_msg_text (msg)), PYI_MAX_TEXT);
    /*  A message with cut fields still encodes and decodes. */
    pyi_msg_t *copy = s_round_trip (msg);
    CHECK_INT (strlen (pyi_msg_text (copy)), PYI_MAX_TEXT);
    CHECK_INT (strlen (pyi_msg_service (copy)), PYI_MAX_NAME);
    pyi_msg_destroy (&copy);
    pyi_msg_set_text (msg, "short");
    CHECK_STR (pyi_msg_text (msg), "short");
    pyi_msg_set_text (msg, "");
    CHECK_STR (pyi_msg_text (msg), "");
    pyi_msg_destroy (&msg);

    /*  READY names: empty or too long are refused, not cut. */
    msg = pyi_msg_new (PYI_READY);
    CHECK_INT (pyi_msg_add_service (msg, long_name), -1);
    CHECK_INT (pyi_msg_add_service (msg, ""), -1);
    CHECK_INT (pyi_msg_services (msg), 0);
    pyi_msg_destroy (&msg);

    /*  Destroy is safe on NULL and on a NULL pointer. */
    pyi_msg_destroy (NULL);
    msg = NULL;
    pyi_msg_destroy (&msg);

    /*  Names of commands and codes. */
    CHECK_STR (pyi_command_name (PYI_REQUEST), "REQUEST");
    CHECK_STR (pyi_command_name (PYI_DISCONNECT), "DISCONNECT");
    CHECK_STR (pyi_error_name (PYI_ERR_TIMEOUT), "TIMEOUT");
    CHECK_STR (pyi_error_name (PYI_ERR_WORKER_LOST), "WORKER_LOST");
    CHECK (pyi_command_name (99) != NULL);
    CHECK (pyi_command_name (-1) != NULL);
    CHECK (pyi_error_name (-5) != NULL);
    CHECK (pyi_error_name (12345) != NULL);
    free (long_name);
    free (long_text);
}

/*  Hostile headers ------------------------------------------------------- */

/*  Field kinds of each command's header after version and command:
    u = uint, s = name string, t = text string, a = array of names. */
static const char *s_layout [] = {
    NULL, "sau", "usu", "u", "uuts", "u", "", "ut"
};

/*  Write a valid field of the given kind. */
static void
s_field (mp_t *mp, char kind)
{
    switch (kind) {
        case 'u': mp_uint (mp, 7); break;
        case 's': mp_str (mp, "svc"); break;
        case 't': mp_str (mp, "some text"); break;
        case 'a': mp_array (mp, 1); mp_str (mp, "svc"); break;
    }
}

/*  Write a value of a type that kind does not accept; variant picks one. */
static int s_wrong_variants = 9;
static void
s_wrong_field (mp_t *mp, char kind, int variant)
{
    switch (variant) {
        case 0: mp_byte (mp, 0xc0); break;                      /* nil */
        case 1: mp_byte (mp, 0xc3); break;                      /* true */
        case 2: mp_byte (mp, 0xff); break;                      /* -1 */
        case 3: mp_byte (mp, 0xca); mp_be (mp, 0x3f800000, 4); break;  /* 1.0f */
        case 4: mp_byte (mp, 0xc4); mp_byte (mp, 3); mp_bytes (mp, "svc", 3); break; /* bin */
        case 5: mp_byte (mp, 0x80); break;                      /* {} */
        case 6: mp_byte (mp, 0xd4); mp_byte (mp, 1); mp_byte (mp, 0); break; /* fixext1 */
        case 7:                                                 /* a str where not a str, */
            if (kind == 'u') mp_str (mp, "7");                  /* else a uint */
            else mp_uint (mp, 7);
            break;
        case 8:                                                 /* an array where not one, */
            if (kind == 'a') mp_str (mp, "svc");                /* else an empty array */
            else mp_array (mp, 0);
            break;
    }
}

/*  [version, command, fields...] with nfields fields written (valid ones
    from the layout, then extra uints), declaring declared elements. */
static void
s_header (mp_t *mp, int command, uint64_t declared, size_t written, int wrong, int variant)
{
    mp->size = 0;
    mp_array (mp, declared);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, (uint64_t) command);
    const char *layout = s_layout [command];
    for (size_t i = 0; i < written; i++) {
        char kind = i < strlen (layout) ? layout [i] : 'u';
        if ((int) i == wrong)
            s_wrong_field (mp, kind, variant);
        else
            s_field (mp, kind);
    }
}

static void
test_decode_hostile (void)
{
    TEST_BEGIN ("decode of hostile bytes");
    mp_t *mp = (mp_t *) calloc (1, sizeof (mp_t));
    static const uint8_t empty [1] = { 0 };

    /*  Empty frame, not an array, bad msgpack. */
    DECODE_BAD (NULL, 0, PYI_ERR_MALFORMED);
    DECODE_BAD (empty, 0, PYI_ERR_MALFORMED);
    const uint8_t not_arrays [] = { 0xc0, 0xc1, 0xc2, 0x01, 0xa3, 0x80, 0xcc, 0xd9, 0xff, 0x90 };
    for (size_t i = 0; i < sizeof not_arrays; i++)
        DECODE_BAD (&not_arrays [i], 1, PYI_ERR_MALFORMED);
    const uint8_t garbage [] = "\xde\xad\xbe\xef garbage \x00\x01\x02";
    DECODE_BAD (garbage, sizeof garbage, PYI_ERR_MALFORMED);
    /*  Arrays of fewer than two elements. */
    const uint8_t short_arrays [][2] = { { 0x90, 0 }, { 0x91, 0x01 } };
    DECODE_BAD (short_arrays [0], 1, PYI_ERR_MALFORMED);
    DECODE_BAD (short_arrays [1], 2, PYI_ERR_MALFORMED);

    /*  Well-formed headers built by hand decode (checks s_layout). */
    for (int command = PYI_READY; command <= PYI_DISCONNECT; command++) {
        size_t n = strlen (s_layout [command]);
        s_header (mp, command, 2 + n, n, -1, 0);
        pyi_msg_t *msg = DECODE_OK (mp->data, mp->size);
        CHECK_INT (pyi_msg_command (msg), command);
        pyi_msg_destroy (&msg);
    }

    /*  Version: not 1 is VERSION, not a uint is MALFORMED. */
    const uint64_t versions [] = { 0, 2, 3, 127, 255, 65535, UINT64_MAX };
    for (size_t i = 0; i < sizeof versions / sizeof versions [0]; i++) {
        mp->size = 0;
        mp_array (mp, 2);
        mp_uint (mp, versions [i]);
        mp_uint (mp, PYI_HEARTBEAT);
        MP_BAD (mp, PYI_ERR_VERSION);
        /*  Whatever follows, a version 2 peer gets VERSION, not MALFORMED:
            a later version may have other fields. */
        mp->size = 0;
        mp_array (mp, 7);
        mp_uint (mp, versions [i]);
        mp_uint (mp, 42);
        mp_str (mp, "future");
        MP_BAD (mp, PYI_ERR_VERSION);
    }
    for (int variant = 0; variant < s_wrong_variants; variant++) {
        mp->size = 0;
        mp_array (mp, 2);
        s_wrong_field (mp, 'u', variant);
        mp_uint (mp, PYI_HEARTBEAT);
        MP_BAD (mp, PYI_ERR_MALFORMED);
    }

    /*  Unknown commands. */
    const uint64_t commands [] = { 0, 8, 9, 99, 255, 0x10001, UINT64_MAX };
    for (size_t i = 0; i < sizeof commands / sizeof commands [0]; i++) {
        mp->size = 0;
        mp_array (mp, 2);
        mp_uint (mp, PYI_PROTOCOL_VERSION);
        mp_uint (mp, commands [i]);
        MP_BAD (mp, PYI_ERR_MALFORMED);
        mp->size = 0;
        mp_array (mp, 5);
        mp_uint (mp, PYI_PROTOCOL_VERSION);
        mp_uint (mp, commands [i]);
        mp_uint (mp, 1);
        mp_str (mp, "svc");
        mp_uint (mp, 0);
        MP_BAD (mp, PYI_ERR_MALFORMED);
    }
    for (int variant = 0; variant < s_wrong_variants; variant++) {
        mp->size = 0;
        mp_array (mp, 2);
        mp_uint (mp, PYI_PROTOCOL_VERSION);
        s_wrong_field (mp, 'u', variant);
        MP_BAD (mp, PYI_ERR_MALFORMED);
    }

    /*  For every command: a wrong type in each field; one field too many
        (declared and present); one too few; a count declaring more
        elements than present; trailing bytes after the array. */
    for (int command = PYI_READY; command <= PYI_DISCONNECT; command++) {
        size_t n = strlen (s_layout [command]);
        for (size_t field = 0; field < n; field++)
            for (int variant = 0; variant < s_wrong_variants; variant++) {
                s_header (mp, command, 2 + n, n, (int) field, variant);
                MP_BAD (mp, PYI_ERR_MALFORMED);
            }
        s_header (mp, command, 2 + n + 1, n + 1, -1, 0);
        MP_BAD (mp, PYI_ERR_MALFORMED);
        s_header (mp, command, 2 + n + 5, n + 5, -1, 0);
        MP_BAD (mp, PYI_ERR_MALFORMED);
        if (n) {
            s_header (mp, command, 2 + n - 1, n - 1, -1, 0);
            MP_BAD (mp, PYI_ERR_MALFORMED);
        }
        s_header (mp, command, 2 + n + 1, n, -1, 0);
        MP_BAD (mp, PYI_ERR_MALFORMED);
        s_header (mp, command, 2 + n, n, -1, 0);
        mp_uint (mp, 0);
        MP_BAD (mp, PYI_ERR_MALFORMED);
        /*  The same with a 16- and 32-bit array header. */
        s_header (mp, command, 2 + n, n, -1, 0);
        mp_t *wide = (mp_t *) calloc (1, sizeof (mp_t));
        mp_byte (wide, 0xdd);
        mp_be (wide, 2 + n, 4);
        mp_bytes (wide, mp->data + 1, mp->size - 1);
        pyi_msg_t *msg = DECODE_OK (wide->data, wide->size);
        pyi_msg_destroy (&msg);
        wide->size = 0;
        mp_byte (wide, 0xdd);
        mp_be (wide, 2 + n + 1, 4);
        mp_bytes (wide, mp->data + 1, mp->size - 1);
        MP_BAD (wide, PYI_ERR_MALFORMED);
        free (wide);
    }

    /*  Declared lengths far beyond the frame. */
    static const uint8_t array32_huge [] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02 };
    DECODE_BAD (array32_huge, sizeof array32_huge, PYI_ERR_MALFORMED);
    static const uint8_t array16_huge [] = { 0xdc, 0xff, 0xff, 0x01, 0x06 };
    DECODE_BAD (array16_huge, sizeof array16_huge, PYI_ERR_MALFORMED);
    /*  REQUEST whose service is a str32 claiming 4 GiB: MALFORMED, but
        the id read before it is kept. */
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_REQUEST);
    mp_uint (mp, 4242);
    mp_byte (mp, 0xdb);
    mp_be (mp, 0xffffffff, 4);
    mp_bytes (mp, "svc", 3);
    pyi_msg_t *msg = s_decode_bad (__FILE__, __LINE__, mp->data, mp->size, PYI_ERR_MALFORMED);
    CHECK_INT (pyi_msg_command (msg), PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (msg), 4242);
    pyi_msg_destroy (&msg);
    /*  ... and str16, str8 and fixstr declaring more than is there. */
    const uint8_t str_tags [][3] = { { 0xda, 0xff, 0xff }, { 0xd9, 0xff, 0 }, { 0xbf, 0, 0 } };
    const int str_tag_sizes [] = { 3, 2, 1 };
    for (int t = 0; t < 3; t++) {
        mp->size = 0;
        mp_array (mp, 5);
        mp_uint (mp, PYI_PROTOCOL_VERSION);
        mp_uint (mp, PYI_REQUEST);
        mp_uint (mp, 1);
        mp_bytes (mp, str_tags [t], (size_t) str_tag_sizes [t]);
        mp_bytes (mp, "svc", 3);
        MP_BAD (mp, PYI_ERR_MALFORMED);
    }
    /*  ERROR text (heap-copied) declaring 4 GiB. */
    mp->size = 0;
    mp_array (mp, 6);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_ERROR);
    mp_uint (mp, 9);
    mp_uint (mp, 100);
    mp_byte (mp, 0xdb);
    mp_be (mp, 0xffffffff, 4);
    mp_bytes (mp, "text", 4);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    /*  DISCONNECT text declaring 2^31. */
    mp->size = 0;
    mp_array (mp, 4);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_DISCONNECT);
    mp_uint (mp, 7);
    mp_byte (mp, 0xdb);
    mp_be (mp, 0x80000000, 4);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    /*  READY whose service list is an array32 of 2^32-1 names. */
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_READY);
    mp_str (mp, "token");
    mp_byte (mp, 0xdd);
    mp_be (mp, 0xffffffff, 4);
    mp_str (mp, "svc");
    mp_uint (mp, 0);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    /*  READY with 65 services (the limit is 64), and with 64. */
    for (int count = 64; count <= 65; count++) {
        mp->size = 0;
        mp_array (mp, 5);
        mp_uint (mp, PYI_PROTOCOL_VERSION);
        mp_uint (mp, PYI_READY);
        mp_str (mp, "token");
        mp_array (mp, (uint64_t) count);
        for (int i = 0; i < count; i++) {
            char name [32];
            snprintf (name, sizeof name, "s%d", i);
            mp_str (mp, name);
        }
        mp_uint (mp, 0);
        if (count == 64) {
            msg = DECODE_OK (mp->data, mp->size);
            CHECK_INT (pyi_msg_services (msg), 64);
            CHECK_STR (pyi_msg_service_at (msg, 63), "s63");
            pyi_msg_destroy (&msg);
        }
        else
            MP_BAD (mp, PYI_ERR_MALFORMED);
    }
    /*  READY with an empty service name, and with a non-string in the list. */
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_READY);
    mp_str (mp, "token");
    mp_array (mp, 2);
    mp_str (mp, "ok");
    mp_str (mp, "");
    mp_uint (mp, 0);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_READY);
    mp_str (mp, "token");
    mp_array (mp, 2);
    mp_str (mp, "ok");
    mp_uint (mp, 5);
    mp_uint (mp, 0);
    MP_BAD (mp, PYI_ERR_MALFORMED);

    /*  Names and texts: at the limit fine, one byte over refused. */
    for (int over = 0; over <= 1; over++) {
        /*  REQUEST service. */
        mp->size = 0;
        mp_array (mp, 5);
        mp_uint (mp, PYI_PROTOCOL_VERSION);
        mp_uint (mp, PYI_REQUEST);
        mp_uint (mp, 77);
        mp_str_fill (mp, 's', PYI_MAX_NAME + (size_t) over);
        mp_uint (mp, 0);
        if (over) {
            msg = s_decode_bad (__FILE__, __LINE__, mp->data, mp->size, PYI_ERR_MALFORMED);
            CHECK_U64 (pyi_msg_id (msg), 77);
            CHECK (strlen (pyi_msg_service (msg)) <= PYI_MAX_NAME);
            pyi_msg_destroy (&msg);
        }
        else {
            msg = DECODE_OK (mp->data, mp->size);
            CHECK_INT (strlen (pyi_msg_service (msg)), PYI_MAX_NAME);
            pyi_msg_destroy (&msg);
        }
        /*  READY token and service name. */
        for (int which = 0; which < 2; which++) {
            mp->size = 0;
            mp_array (mp, 5);
            mp_uint (mp, PYI_PROTOCOL_VERSION);
            mp_uint (mp, PYI_READY);
            if (which == 0)
                mp_str_fill (mp, 'k', PYI_MAX_NAME + (size_t) over);
            else
                mp_str (mp, "token");
            mp_array (mp, 1);
            if (which == 1)
                mp_str_fill (mp, 'r', PYI_MAX_NAME + (size_t) over);
            else
                mp_str (mp, "svc");
            mp_uint (mp, 0);
            if (over)
                MP_BAD (mp, PYI_ERR_MALFORMED);
            else {
                msg = DECODE_OK (mp->data, mp->size);
                pyi_msg_destroy (&msg);
            }
        }
        /*  ERROR text and service, DISCONNECT text. */
        for (int which = 0; which < 3; which++) {
            mp->size = 0;
            if (which < 2) {
                mp_array (mp, 6);
                mp_uint (mp, PYI_PROTOCOL_VERSION);
                mp_uint (mp, PYI_ERROR);
                mp_uint (mp, 1);
                mp_uint (mp, 100);
                if (which == 0)
                    mp_str_fill (mp, 't', PYI_MAX_TEXT + (size_t) over);
                else
                    mp_str (mp, "text");
                if (which == 1)
                    mp_str_fill (mp, 's', PYI_MAX_NAME + (size_t) over);
                else
                    mp_str (mp, "svc");
            }
            else {
                mp_array (mp, 4);
                mp_uint (mp, PYI_PROTOCOL_VERSION);
                mp_uint (mp, PYI_DISCONNECT);
                mp_uint (mp, 9);
                mp_str_fill (mp, 't', PYI_MAX_TEXT + (size_t) over);
            }
            if (over)
                MP_BAD (mp, PYI_ERR_MALFORMED);
            else {
                msg = DECODE_OK (mp->data, mp->size);
                pyi_msg_destroy (&msg);
            }
        }
    }

    /*  Values out of range: a timeout over 32 bits, a code over 31 bits. */
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_REQUEST);
    mp_uint (mp, 1);
    mp_str (mp, "svc");
    mp_uint (mp, 0x100000000ULL);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    mp->size = 0;
    mp_array (mp, 6);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_ERROR);
    mp_uint (mp, 1);
    mp_uint (mp, 0x80000000ULL);
    mp_str (mp, "text");
    mp_str (mp, "svc");
    MP_BAD (mp, PYI_ERR_MALFORMED);
    /*  A REQUEST for the empty service name, and one with a NUL inside. */
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_REQUEST);
    mp_uint (mp, 1);
    mp_str (mp, "");
    mp_uint (mp, 0);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, PYI_PROTOCOL_VERSION);
    mp_uint (mp, PYI_REQUEST);
    mp_uint (mp, 1);
    mp_strn (mp, "sv\0c", 4);
    mp_uint (mp, 0);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    /*  Non-minimal integer encodings are still uints (msgpack allows them). */
    mp->size = 0;
    mp_array (mp, 5);
    mp_byte (mp, 0xcf);
    mp_be (mp, PYI_PROTOCOL_VERSION, 8);
    mp_byte (mp, 0xcc);
    mp_be (mp, PYI_REQUEST, 1);
    mp_byte (mp, 0xce);
    mp_be (mp, 5, 4);
    mp_byte (mp, 0xda);
    mp_be (mp, 3, 2);
    mp_bytes (mp, "svc", 3);
    mp_byte (mp, 0xcd);
    mp_be (mp, 250, 2);
    msg = DECODE_OK (mp->data, mp->size);
    CHECK_U64 (pyi_msg_id (msg), 5);
    CHECK_STR (pyi_msg_service (msg), "svc");
    CHECK_U64 (pyi_msg_timeout (msg), 250);
    pyi_msg_destroy (&msg);
    free (mp);
}

/*  Random mutations of valid headers: decode never crashes, allocates
    little, and whatever it accepts encodes back to a header that decodes
    to the same fields. */
static void
test_decode_mutations (void)
{
    TEST_BEGIN ("decode of 200000 random mutations");
    uint8_t seeds [8][2048];
    size_t seed_sizes [8];
    size_t nseeds = 0;
    for (int command = PYI_READY; command <= PYI_DISCONNECT; command++) {
        pyi_msg_t *msg = pyi_msg_new ((pyi_command_t) command);
        pyi_msg_set_id (msg, 0x1234567890ULL);
        pyi_msg_set_service (msg, "service.name");
        pyi_msg_set_token (msg, "token");
        pyi_msg_set_text (msg, "text of an error");
        pyi_msg_set_code (msg, 300);
        pyi_msg_set_timeout (msg, 70000);
        pyi_msg_add_service (msg, "a");
        pyi_msg_add_service (msg, "bb");
        int size = pyi_msg_encode (msg, seeds [nseeds], sizeof seeds [nseeds]);
        CHECK (size > 0);
        seed_sizes [nseeds++] = (size_t) size;
        pyi_msg_destroy (&msg);
    }
    uint64_t state = 0x9e3779b97f4a7c15ULL;
    uint8_t buffer [2100];
    size_t accepted = 0;
    for (int round = 0; round < 200000; round++) {
        state ^= state << 13; state ^= state >> 7; state ^= state << 17;
        size_t seed = state % nseeds;
        size_t size = seed_sizes [seed];
        memcpy (buffer, seeds [seed], size);
        int edits = 1 + (int) ((state >> 8) % 4);
        for (int e = 0; e < edits; e++) {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            size_t at = (size_t) (state >> 16) % (size + 1);
            uint8_t value = (uint8_t) (state >> 40);
            switch ((state >> 4) % 4) {
                case 0: if (at < size) buffer [at] = value; break;          /* replace */
                case 1: if (at < size) buffer [at] ^= (uint8_t) (1 << (value % 8)); break;
                case 2: size = at; break;                                   /* truncate */
                case 3: if (size < 2048) {                                  /* insert */
                            memmove (buffer + at + 1, buffer + at, size - at);
                            buffer [at] = value;
                            size++;
                        }
                        break;
            }
        }
        /*  Decode from an exact-size heap copy so overreads are caught. */
        uint8_t *copy = (uint8_t *) malloc (size ? size : 1);
        memcpy (copy, buffer, size);
        s_alloc_reset ();
        pyi_msg_t *msg = pyi_msg_decode (copy, size);
        CHECK (msg);
        CHECK (s_alloc_largest () <= DECODE_ALLOC_LIMIT);
        int status = pyi_msg_status (msg);
        CHECK (status == PYI_OK || status == PYI_ERR_MALFORMED || status == PYI_ERR_VERSION);
        if (status == PYI_OK) {
            accepted++;
            uint8_t again [4096];
            int length = pyi_msg_encode (msg, again, sizeof again);
            CHECK (length > 0);
            pyi_msg_t *copy2 = DECODE_OK (again, (size_t) length);
            CHECK_INT (pyi_msg_command (copy2), pyi_msg_command (msg));
            CHECK_U64 (pyi_msg_id (copy2), pyi_msg_id (msg));
            CHECK_STR (pyi_msg_service (copy2), pyi_msg_service (msg));
            CHECK_STR (pyi_msg_token (copy2), pyi_msg_token (msg));
            CHECK_STR (pyi_msg_text (copy2), pyi_msg_text (msg));
            CHECK_INT (pyi_msg_code (copy2), pyi_msg_code (msg));
            CHECK_U64 (pyi_msg_timeout (copy2), pyi_msg_timeout (msg));
            CHECK_INT (pyi_msg_services (copy2), pyi_msg_services (msg));
            pyi_msg_destroy (&copy2);
        }
        else
            CHECK (*pyi_msg_text (msg));
        pyi_msg_destroy (&msg);
        free (copy);
    }
    fprintf (stderr, "   %zu of 200000 mutations were still valid headers\n", accepted);
}

/*  Frames over sockets --------------------------------------------------- */

static atomic_int s_freed;
static void *s_freed_data;

static void
s_free_fn (void *data, void *hint)
{
    CHECK (hint == (void *) 0x5eed);
    s_freed_data = data;
    free (data);
    atomic_fetch_add (&s_freed, 1);
}

/*  Wait up to 1 s for the free function to have run want times. */
static int
s_wait_freed (int want)
{
    int64_t end = t_now_ms () + 1000;
    while (atomic_load (&s_freed) < want && t_now_ms () < end)
        t_sleep_ms (1);
    t_sleep_ms (20);        /* and make sure it does not run again */
    return atomic_load (&s_freed);
}

static void
test_zerocopy_local (void)
{
    TEST_BEGIN ("zero-copy frames: free runs once on destroy and on refusal");
    /*  Destroyed without being sent. */
    atomic_store (&s_freed, 0);
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    void *data = malloc (100);
    CHECK_INT (pyi_msg_append_zerocopy (msg, data, 100, s_free_fn, (void *) 0x5eed), 0);
    CHECK (pyi_msg_frame_data (msg, 0) == data);
    CHECK_INT (pyi_msg_frame_size (msg, 0), 100);
    CHECK_INT (atomic_load (&s_freed), 0);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);

    /*  PYI_MAX_BODY_FRAMES frames fit; the next append is refused, and a
        refused zero-copy frame is freed at once, exactly once. */
    atomic_store (&s_freed, 0);
    msg = pyi_msg_new (PYI_REPLY);
    for (int i = 0; i < PYI_MAX_BODY_FRAMES; i++)
        CHECK_INT (pyi_msg_append (msg, &i, sizeof i), 0);
    CHECK_INT (pyi_msg_frames (msg), PYI_MAX_BODY_FRAMES);
    CHECK_INT (pyi_msg_body_size (msg), PYI_MAX_BODY_FRAMES * sizeof (int));
    for (int i = 0; i < PYI_MAX_BODY_FRAMES; i++)
        CHECK (memcmp (pyi_msg_frame_data (msg, (size_t) i), &i, sizeof i) == 0);
    CHECK_INT (pyi_msg_append (msg, "x", 1), -1);
    data = malloc (10);
    CHECK_INT (pyi_msg_append_zerocopy (msg, data, 10, s_free_fn, (void *) 0x5eed), -1);
    CHECK_INT (atomic_load (&s_freed), 1);
    CHECK_INT (pyi_msg_frames (msg), PYI_MAX_BODY_FRAMES);
    CHECK (pyi_msg_frame_data (msg, PYI_MAX_BODY_FRAMES) == NULL);
    CHECK_INT (pyi_msg_frame_size (msg, PYI_MAX_BODY_FRAMES), 0);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);

    /*  Empty frames are frames. */
    msg = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_msg_append (msg, NULL, 0), 0);
    CHECK_INT (pyi_msg_append (msg, "", 0), 0);
    CHECK_INT (pyi_msg_frames (msg), 2);
    CHECK_INT (pyi_msg_body_size (msg), 0);
    pyi_msg_destroy (&msg);
}

/*  A connected pair of sockets on a private context. */
typedef struct {
    void *ctx;
    void *a;            /* PAIR or DEALER */
    void *b;            /* PAIR or ROUTER */
} pair_t;

static pair_t
s_pair (int type_a, int type_b, const char *endpoint)
{
    pair_t pair;
    pair.ctx = zmq_ctx_new ();
    CHECK (pair.ctx);
    pair.a = zmq_socket (pair.ctx, type_a);
    pair.b = zmq_socket (pair.ctx, type_b);
    CHECK (pair.a && pair.b);
    int linger = 0;
    zmq_setsockopt (pair.a, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt (pair.b, ZMQ_LINGER, &linger, sizeof linger);
    if (type_b == ZMQ_ROUTER) {
        int one = 1;
        zmq_setsockopt (pair.b, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
        zmq_setsockopt (pair.a, ZMQ_ROUTING_ID, "peer-a", 6);
    }
    CHECK_INT (zmq_bind (pair.b, endpoint), 0);
    CHECK_INT (zmq_connect (pair.a, endpoint), 0);
    return pair;
}

static void
s_pair_close (pair_t *pair)
{
    zmq_close (pair->a);
    zmq_close (pair->b);
    zmq_ctx_term (pair->ctx);
}

static void
test_socket_pair (const char *endpoint)
{
    TEST_BEGIN (endpoint);
    pair_t pair = s_pair (ZMQ_PAIR, ZMQ_PAIR, endpoint);
    bool inproc = strncmp (endpoint, "inproc:", 7) == 0;

    /*  A REQUEST with three body frames, the middle one zero-copy. */
    atomic_store (&s_freed, 0);
    const size_t big = 1024 * 1024;
    uint8_t *data = (uint8_t *) malloc (big);
    for (size_t i = 0; i < big; i++)
        data [i] = (uint8_t) (i * 31 + 7);
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, UINT64_MAX - 1);
    pyi_msg_set_service (msg, "svc");
    pyi_msg_set_timeout (msg, 1234);
    CHECK_INT (pyi_msg_append (msg, "first", 5), 0);
    CHECK_INT (pyi_msg_append_zerocopy (msg, data, big, s_free_fn, (void *) 0x5eed), 0);
    CHECK_INT (pyi_msg_append (msg, "", 0), 0);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    CHECK (msg == NULL);

    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_command (msg), PYI_REQUEST);
    CHECK_U64 (pyi_msg_id (msg), UINT64_MAX - 1);
    CHECK_STR (pyi_msg_service (msg), "svc");
    CHECK_U64 (pyi_msg_timeout (msg), 1234);
    CHECK_INT (pyi_msg_frames (msg), 3);
    CHECK (t_frame_is (msg, 0, "first"));
    CHECK_INT (pyi_msg_frame_size (msg, 1), big);
    CHECK_INT (pyi_msg_frame_size (msg, 2), 0);
    CHECK_INT (pyi_msg_body_size (msg), 5 + big);
    const uint8_t *got = (const uint8_t *) pyi_msg_frame_data (msg, 1);
    for (size_t i = 0; i < big; i++)
        if (got [i] != (uint8_t) (i * 31 + 7))
            CHECK_MSG (false, "byte %zu of the zero-copy frame differs", i);
    size_t rid_size = 99;
    pyi_msg_routing_id (msg, &rid_size);
    CHECK_INT (rid_size, 0);
    if (inproc)
        /*  inproc hands the very buffer over: nothing copied it. */
        CHECK (got == data);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);
    CHECK (s_freed_data == data);

    /*  Nothing waiting: NULL and EAGAIN. */
    errno = 0;
    CHECK (pyi_msg_recv (pair.b, false, 0, ZMQ_DONTWAIT) == NULL);
    CHECK_INT (errno, EAGAIN);

    /*  Every command crosses. */
    for (int command = PYI_READY; command <= PYI_DISCONNECT; command++) {
        msg = pyi_msg_new ((pyi_command_t) command);
        pyi_msg_set_id (msg, 5);
        pyi_msg_set_code (msg, 101);
        pyi_msg_set_text (msg, "text");
        pyi_msg_set_service (msg, "svc");
        pyi_msg_set_token (msg, "tok");
        pyi_msg_add_service (msg, "svc");
        CHECK_INT (pyi_msg_append (msg, "body", 4), 0);
        CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
        msg = pyi_msg_recv (pair.b, false, 0, 0);
        CHECK (msg);
        CHECK_INT (pyi_msg_status (msg), PYI_OK);
        CHECK_INT (pyi_msg_command (msg), command);
        CHECK (t_frame_is (msg, 0, "body"));
        pyi_msg_destroy (&msg);
    }

    /*  Over max_size: drained, marked TOO_LARGE, body dropped, header kept;
        then the next message reads normally. */
    msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 31);
    pyi_msg_set_service (msg, "svc");
    char chunk [600];
    memset (chunk, 'c', sizeof chunk);
    for (int i = 0; i < 4; i++)
        pyi_msg_append (msg, chunk, sizeof chunk);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 32);
    pyi_msg_append (msg, "after", 5);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_recv (pair.b, false, 1000, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_TOO_LARGE);
    CHECK_U64 (pyi_msg_id (msg), 31);
    CHECK_INT (pyi_msg_frames (msg), 0);
    pyi_msg_destroy (&msg);
    msg = pyi_msg_recv (pair.b, false, 1000, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_U64 (pyi_msg_id (msg), 32);
    CHECK (t_frame_is (msg, 0, "after"));
    pyi_msg_destroy (&msg);
    /*  Exactly at max_size is fine (header + body). */
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 1);
    pyi_msg_append (msg, chunk, 100);
    uint8_t header [64];
    int header_size = pyi_msg_encode (msg, header, sizeof header);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_recv (pair.b, false, (size_t) header_size + 100, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_frames (msg), 1);
    pyi_msg_destroy (&msg);

    /*  More than PYI_MAX_BODY_FRAMES frames (sent raw): TOO_LARGE and
        drained; exactly PYI_MAX_BODY_FRAMES is fine. */
    for (int extra = 0; extra <= 1; extra++) {
        msg = pyi_msg_new (PYI_REPLY);
        pyi_msg_set_id (msg, 40 + (uint64_t) extra);
        int length = pyi_msg_encode (msg, header, sizeof header);
        pyi_msg_destroy (&msg);
        int frames = PYI_MAX_BODY_FRAMES + extra;
        CHECK_INT (zmq_send (pair.a, header, (size_t) length, ZMQ_SNDMORE), length);
        for (int i = 0; i < frames; i++)
            CHECK_INT (zmq_send (pair.a, "f", 1, i + 1 < frames ? ZMQ_SNDMORE : 0), 1);
        CHECK_INT (zmq_send (pair.a, header, (size_t) length, 0), length);   /* a next one */
        msg = pyi_msg_recv (pair.b, false, 0, 0);
        CHECK (msg);
        CHECK_U64 (pyi_msg_id (msg), 40 + (uint64_t) extra);
        if (extra) {
            CHECK_INT (pyi_msg_status (msg), PYI_ERR_TOO_LARGE);
            CHECK_INT (pyi_msg_frames (msg), 0);
        }
        else {
            CHECK_INT (pyi_msg_status (msg), PYI_OK);
            CHECK_INT (pyi_msg_frames (msg), PYI_MAX_BODY_FRAMES);
        }
        pyi_msg_destroy (&msg);
        msg = pyi_msg_recv (pair.b, false, 0, 0);
        CHECK (msg);
        CHECK_INT (pyi_msg_status (msg), PYI_OK);
        CHECK_INT (pyi_msg_frames (msg), 0);
        pyi_msg_destroy (&msg);
    }

    /*  Garbage header with body frames: a message (not NULL), MALFORMED,
        and the body frames do not leak into the next message. */
    CHECK_INT (zmq_send (pair.a, "\xc1garbage", 8, ZMQ_SNDMORE), 8);
    CHECK_INT (zmq_send (pair.a, "b1", 2, ZMQ_SNDMORE), 2);
    CHECK_INT (zmq_send (pair.a, "b2", 2, 0), 2);
    CHECK_INT (zmq_send (pair.a, "", 0, 0), 0);      /* empty header */
    msg = pyi_msg_new (PYI_CANCEL);
    pyi_msg_set_id (msg, 55);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);
    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_MALFORMED);
    pyi_msg_destroy (&msg);
    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_MALFORMED);
    pyi_msg_destroy (&msg);
    msg = pyi_msg_recv (pair.b, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_command (msg), PYI_CANCEL);
    CHECK_U64 (pyi_msg_id (msg), 55);
    pyi_msg_destroy (&msg);
    s_pair_close (&pair);
}

static void
test_router_dealer (void)
{
    TEST_BEGIN ("DEALER/ROUTER: routing ids, zero-copy, failed send");
    pair_t pair = s_pair (ZMQ_DEALER, ZMQ_ROUTER, "inproc://test-msg-router");

    atomic_store (&s_freed, 0);
    void *data = malloc (4096);
    memset (data, 'z', 4096);
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 1);
    pyi_msg_set_service (msg, "svc");
    pyi_msg_append_zerocopy (msg, data, 4096, s_free_fn, (void *) 0x5eed);
    CHECK_INT (pyi_msg_send (&msg, pair.a, NULL, 0, 0), 0);

    msg = pyi_msg_recv (pair.b, true, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    size_t rid_size = 0;
    const void *rid = pyi_msg_routing_id (msg, &rid_size);
    CHECK_INT (rid_size, 6);
    CHECK (memcmp (rid, "peer-a", 6) == 0);
    CHECK_INT (pyi_msg_frames (msg), 1);
    CHECK (pyi_msg_frame_data (msg, 0) == data);
    pyi_msg_destroy (&msg);
    CHECK_INT (s_wait_freed (1), 1);

    /*  Answer through the ROUTER with the routing id. */
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, 1);
    pyi_msg_append (msg, "answer", 6);
    CHECK_INT (pyi_msg_send (&msg, pair.b, "peer-a", 6, 0), 0);
    msg = pyi_msg_recv (pair.a, false, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_OK);
    CHECK_INT (pyi_msg_command (msg), PYI_REPLY);
    CHECK (t_frame_is (msg, 0, "answer"));
    pyi_msg_destroy (&msg);

    /*  A send that fails (unknown peer on a mandatory ROUTER) still takes
        the message and frees its zero-copy frame exactly once. */
    atomic_store (&s_freed, 0);
    data = malloc (64);
    msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_append_zerocopy (msg, data, 64, s_free_fn, (void *) 0x5eed);
    errno = 0;
    CHECK_INT (pyi_msg_send (&msg, pair.b, "nobody", 6, ZMQ_DONTWAIT), -1);
    CHECK_INT (errno, EHOSTUNREACH);
    CHECK (msg == NULL);
    CHECK_INT (s_wait_freed (1), 1);

    /*  A bad header read from a ROUTER is MALFORMED and keeps its routing id
        (so that the broker can answer and count it against the peer). */
    CHECK_INT (zmq_send (pair.a, "x", 1, 0), 1);
    msg = pyi_msg_recv (pair.b, true, 0, 0);
    CHECK (msg);
    CHECK_INT (pyi_msg_status (msg), PYI_ERR_MALFORMED);
    pyi_msg_routing_id (msg, &rid_size);
    CHECK_INT (rid_size, 6);
    pyi_msg_destroy (&msg);
    s_pair_close (&pair);
}

static void
test_info (void)
{
    TEST_BEGIN ("pyi_msg_info matches the accessors");
    pyi_msg_info_t info;
    /*  No body frames: frame0 NULL, strings "" but never NULL. */
    pyi_msg_t *msg = pyi_msg_new (PYI_REPLY);
    pyi_msg_set_id (msg, UINT64_MAX);
    pyi_msg_info (msg, &info);
    CHECK_INT (info.command, PYI_REPLY);
    CHECK_INT (info.status, PYI_OK);
    CHECK_U64 (info.id, UINT64_MAX);
    CHECK_STR (info.service, "");
    CHECK_STR (info.text, "");
    CHECK_U64 (info.frames, 0);
    CHECK_U64 (info.services, 0);
    CHECK (info.frame0 == NULL);
    CHECK_U64 (info.frame0_size, 0);
    pyi_msg_destroy (&msg);

    /*  ERROR with every field and two body frames. */
    msg = pyi_msg_new (PYI_ERROR);
    pyi_msg_set_id (msg, 42);
    pyi_msg_set_code (msg, PYI_ERR_APPLICATION + 1);
    pyi_msg_set_text (msg, "it failed");
    pyi_msg_set_service (msg, "svc");
    CHECK_INT (pyi_msg_append (msg, "abc", 3), 0);
    CHECK_INT (pyi_msg_append (msg, "defgh", 5), 0);
    pyi_msg_info (msg, &info);
    CHECK_INT (info.command, pyi_msg_command (msg));
    CHECK_INT (info.code, pyi_msg_code (msg));
    CHECK_U64 (info.id, pyi_msg_id (msg));
    CHECK_STR (info.service, pyi_msg_service (msg));
    CHECK_STR (info.text, pyi_msg_text (msg));
    CHECK (info.service == pyi_msg_service (msg));    /* borrowed, not copied */
    CHECK_U64 (info.frames, 2);
    CHECK (info.frame0 == pyi_msg_frame_data (msg, 0));
    CHECK_U64 (info.frame0_size, 3);
    CHECK (memcmp (info.frame0, "abc", 3) == 0);
    pyi_msg_destroy (&msg);

    /*  REQUEST with a timeout and an empty first frame. */
    msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_id (msg, 7);
    pyi_msg_set_service (msg, "echo");
    pyi_msg_set_timeout (msg, 1500);
    CHECK_INT (pyi_msg_append (msg, NULL, 0), 0);
    pyi_msg_info (msg, &info);
    CHECK_INT (info.command, PYI_REQUEST);
    CHECK_U64 (info.timeout_ms, 1500);
    CHECK_STR (info.service, "echo");
    CHECK_U64 (info.frames, 1);
    CHECK_U64 (info.frame0_size, 0);
    pyi_msg_destroy (&msg);

    /*  READY: the number of services. */
    msg = pyi_msg_new (PYI_READY);
    CHECK_INT (pyi_msg_add_service (msg, "a"), 0);
    CHECK_INT (pyi_msg_add_service (msg, "b"), 0);
    pyi_msg_info (msg, &info);
    CHECK_U64 (info.services, 2);
    pyi_msg_destroy (&msg);

    /*  A malformed decode: the status, and the text that says why. */
    msg = pyi_msg_decode ("\xc1", 1);
    CHECK (msg != NULL);
    pyi_msg_info (msg, &info);
    CHECK_INT (info.status, pyi_msg_status (msg));
    CHECK (info.status != PYI_OK);
    CHECK_STR (info.text, pyi_msg_text (msg));
    pyi_msg_destroy (&msg);
}

static void
s_free_strdup (void *data, void *hint)
{
    free (data);
}

static void
test_descriptors (void)
{
    TEST_BEGIN ("descriptor frame marks in REQUEST and REPLY headers");
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_service (msg, "svc");
    size_t size;
    uint8_t *data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x95);                 /* no marks: the plain header */
    free (data);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 1), 0);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 255), 0);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 256), -1);
    data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x96);
    pyi_msg_t *back = DECODE_OK (data, size);
    for (size_t i = 0; i < 300; i++)
        CHECK_INT (pyi_msg_is_descriptor (back, i), i == 1 || i == 255);
    pyi_msg_destroy (&back);
    free (data);
    /*  Kept when a reply is built from it; not sent with other commands. */
    pyi_msg_set_command (msg, PYI_REPLY);
    data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x94);
    back = DECODE_OK (data, size);
    CHECK (pyi_msg_is_descriptor (back, 1) && pyi_msg_is_descriptor (back, 255));
    pyi_msg_destroy (&back);
    free (data);
    pyi_msg_set_command (msg, PYI_ERROR);
    data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x96);                 /* ERROR's own 6 fields */
    free (data);
    /*  A replaced frame loses its mark; no marks left, no list. */
    pyi_msg_t *one = pyi_msg_new (PYI_REPLY);
    CHECK_INT (pyi_msg_append (one, "x", 1), 0);
    CHECK_INT (pyi_msg_mark_descriptor (one, 0), 0);
    CHECK_INT (pyi_msg_replace_frame (one, 0, strdup ("yz"), 2, s_free_strdup, NULL), 0);
    CHECK (!pyi_msg_is_descriptor (one, 0));
    CHECK_INT (pyi_msg_frame_size (one, 0), 2);
    CHECK_INT (pyi_msg_replace_frame (one, 1, strdup ("no"), 2, s_free_strdup, NULL), -1);
    data = s_encode (one, &size);
    CHECK_INT (data [0], 0x93);
    pyi_msg_destroy (&one);
    back = DECODE_OK (data, size);
    CHECK (!pyi_msg_is_descriptor (back, 1));
    pyi_msg_destroy (&back);
    free (data);
    pyi_msg_destroy (&msg);

    /*  Hostile lists. */
    mp_t *mp = (mp_t *) calloc (1, sizeof (mp_t));
    const int64_t lists [][4] = {
        { 0 },                  /* empty */
        { 2, 3, 1 },            /* decreasing */
        { 2, 1, 1 },            /* repeated */
        { 1, 256 },             /* beyond the frame limit */
        { 1, -1 },              /* negative */
    };
    for (size_t k = 0; k < sizeof lists / sizeof lists [0]; k++) {
        mp->size = 0;
        mp_array (mp, 6);
        mp_uint (mp, 1);
        mp_uint (mp, PYI_REQUEST);
        mp_uint (mp, 9);
        mp_str (mp, "svc");
        mp_uint (mp, 0);
        mp_array (mp, (uint32_t) lists [k][0]);
        for (int64_t i = 1; i <= lists [k][0]; i++) {
            if (lists [k][i] < 0)
                mp_byte (mp, 0xff);     /* negative fixint -1 */
            else
                mp_uint (mp, (uint64_t) lists [k][i]);
        }
        MP_BAD (mp, PYI_ERR_MALFORMED);
    }
    mp->size = 0;                               /* not an array */
    mp_array (mp, 4);
    mp_uint (mp, 1);
    mp_uint (mp, PYI_REPLY);
    mp_uint (mp, 9);
    mp_str (mp, "x");
    MP_BAD (mp, PYI_ERR_MALFORMED);
    mp->size = 0;                               /* CANCEL takes no list */
    mp_array (mp, 4);
    mp_uint (mp, 1);
    mp_uint (mp, PYI_CANCEL);
    mp_uint (mp, 9);
    mp_array (mp, 1);
    mp_uint (mp, 1);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    free (mp);
}

int
main (void)
{
#if !WATCH_ALLOC
    fprintf (stderr, " (allocation sizes watched by the sanitizer's allocator)\n");
#endif
    test_round_trip ();
    test_setters ();
    test_decode_hostile ();
    test_decode_mutations ();
    test_descriptors ();
    test_zerocopy_local ();
    test_info ();
    test_socket_pair ("inproc://test-msg-pair");
    char endpoint [128];
    snprintf (endpoint, sizeof endpoint, "ipc:///tmp/pyi-test-msg-%d", (int) getpid ());
    test_socket_pair (endpoint);
    unlink (endpoint + 6);
    test_router_dealer ();
    fprintf (stderr, "test_msg: OK\n");
    return 0;
}
