/*  fuzz_msg: libFuzzer target for the header codec (common/pyi_msg.c).

    Feeds arbitrary bytes to pyi_msg_decode (), which must never crash,
    leak or read out of bounds, whatever the bytes. When it accepts them
    (status PYI_OK), the message is encoded again and the encoding decoded
    once more: both decodings must carry the same fields, and encoding the
    second must give the same bytes as encoding the first. Any difference
    aborts, which libFuzzer reports as a crash.

    Build: tests/fuzz/run (clang, -DPYI_FUZZ=ON).
*/

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pyisolate/pyisolate.h>

#define FIRST_BUFFER 4096
#define LARGEST_BUFFER (16 * 1024 * 1024)

static void s_mismatch (const char *what, const char *a, const char *b)
{
    fprintf (stderr, "fuzz_msg: round trip changed %s: \"%s\" != \"%s\"\n", what, a, b);
    abort ();
}

static void s_same_number (const char *what, uint64_t a, uint64_t b)
{
    if (a != b) {
        char x [32], y [32];
        snprintf (x, sizeof x, "%llu", (unsigned long long) a);
        snprintf (y, sizeof y, "%llu", (unsigned long long) b);
        s_mismatch (what, x, y);
    }
}

static void s_same_string (const char *what, const char *a, const char *b)
{
    if (!a || !b)
        s_mismatch (what, a ? a : "(null)", b ? b : "(null)");
    if (strcmp (a, b) != 0)
        s_mismatch (what, a, b);
}

/*  Every getter must give a usable answer on any decoded message, valid
    or not; strlen () lets AddressSanitizer check the strings. */
static size_t s_touch (const pyi_msg_t *msg)
{
    size_t total = pyi_msg_command (msg) + pyi_msg_id (msg) + pyi_msg_timeout (msg)
                 + (size_t) pyi_msg_code (msg) + pyi_msg_frames (msg) + pyi_msg_body_size (msg);
    total += strlen (pyi_msg_service (msg)) + strlen (pyi_msg_text (msg))
           + strlen (pyi_msg_token (msg));
    for (size_t i = 0; i < pyi_msg_services (msg); i++)
        total += strlen (pyi_msg_service_at (msg, i));
    total += strlen (pyi_command_name (pyi_msg_command (msg)))
           + strlen (pyi_error_name (pyi_msg_code (msg)))
           + strlen (pyi_error_name (pyi_msg_status (msg)));
    return total;
}

/*  Encode msg into a buffer that grows until it fits; *size_p gets the
    length. The caller frees the buffer. */
static unsigned char *s_encode (const pyi_msg_t *msg, size_t *size_p)
{
    for (size_t capacity = FIRST_BUFFER; capacity <= LARGEST_BUFFER; capacity *= 2) {
        unsigned char *buffer = malloc (capacity);
        if (!buffer)
            abort ();
        int size = pyi_msg_encode (msg, buffer, capacity);
        if (size >= 0) {
            *size_p = (size_t) size;
            return buffer;
        }
        free (buffer);
    }
    fprintf (stderr, "fuzz_msg: a decoded message does not encode in %d bytes\n", LARGEST_BUFFER);
    abort ();
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    pyi_msg_t *first = pyi_msg_decode (data, size);
    if (!first)
        return 0;               /* out of memory */
    volatile size_t sink = s_touch (first);
    (void) sink;
    if (pyi_msg_status (first) != PYI_OK) {
        pyi_msg_destroy (&first);
        return 0;
    }
    size_t encoded_size;
    unsigned char *encoded = s_encode (first, &encoded_size);
    pyi_msg_t *second = pyi_msg_decode (encoded, encoded_size);
    if (!second)
        abort ();
    if (pyi_msg_status (second) != PYI_OK) {
        fprintf (stderr, "fuzz_msg: re-encoded header does not decode: %s: %s\n",
                 pyi_error_name (pyi_msg_status (second)), pyi_msg_text (second));
        abort ();
    }
    s_same_number ("command", pyi_msg_command (first), pyi_msg_command (second));
    s_same_number ("id", pyi_msg_id (first), pyi_msg_id (second));
    s_same_number ("timeout", pyi_msg_timeout (first), pyi_msg_timeout (second));
    s_same_number ("code", (uint64_t) (int64_t) pyi_msg_code (first),
                   (uint64_t) (int64_t) pyi_msg_code (second));
    s_same_string ("service", pyi_msg_service (first), pyi_msg_service (second));
    s_same_string ("text", pyi_msg_text (first), pyi_msg_text (second));
    s_same_string ("token", pyi_msg_token (first), pyi_msg_token (second));
    s_same_number ("service count", pyi_msg_services (first), pyi_msg_services (second));
    for (size_t i = 0; i < PYI_MAX_BODY_FRAMES; i++)
        s_same_number ("descriptor mark", pyi_msg_is_descriptor (first, i),
                       pyi_msg_is_descriptor (second, i));
    for (size_t i = 0; i < pyi_msg_services (first); i++)
        s_same_string ("service list", pyi_msg_service_at (first, i),
                       pyi_msg_service_at (second, i));
    s_same_number ("frames", pyi_msg_frames (second), 0);

    /*  Encoding is a function of the fields: the same fields, the same bytes. */
    size_t again_size;
    unsigned char *again = s_encode (second, &again_size);
    if (again_size != encoded_size || memcmp (again, encoded, encoded_size) != 0) {
        fprintf (stderr, "fuzz_msg: encoding is not stable (%zu then %zu bytes)\n",
                 encoded_size, again_size);
        abort ();
    }
    free (again);
    free (encoded);
    pyi_msg_destroy (&second);
    pyi_msg_destroy (&first);
    return 0;
}
