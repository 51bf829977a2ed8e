/*  test_msg_decode: pyi_msg_decode of hostile bytes.

    Guarantees checked:
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
    - random mutations of valid headers decode safely, and whatever decode
      accepts encodes back to a header that decodes to the same fields.
*/
#include "testmsg.h"

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

int
main (void)
{
#if !WATCH_ALLOC
    fprintf (stderr, " (allocation sizes watched by the sanitizer's allocator)\n");
#endif
    test_decode_hostile ();
    test_decode_mutations ();
    fprintf (stderr, "test_msg_decode: OK\n");
    return 0;
}
