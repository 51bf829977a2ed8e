/*  testmsg.h: helpers of the pyi_msg tests (test_msg.c, test_msg_decode.c):
    a watch on the largest allocation while a header decodes, and checked
    encode, decode and round trip. Include it once per test program (it
    interposes malloc in the plain build).
*/
#ifndef PYI_TESTMSG_H_INCLUDED
#define PYI_TESTMSG_H_INCLUDED

#include "testutil.h"
#include <stdatomic.h>

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

static inline void
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

static inline void
s_alloc_reset (void)
{
#if WATCH_ALLOC
    atomic_store (&s_largest, 0);
#endif
}

static inline size_t
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
static inline pyi_msg_t *
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

static inline pyi_msg_t *
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
static inline uint8_t *
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
static inline void
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
static inline pyi_msg_t *
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

static inline char *
s_fill (char c, size_t size)
{
    char *text = (char *) malloc (size + 1);
    memset (text, c, size);
    text [size] = 0;
    return text;
}

#endif
