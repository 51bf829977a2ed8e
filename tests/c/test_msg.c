/*  test_msg: the pyi_msg codec: fields, round trips, accessors.
    (Hostile bytes: test_msg_decode.c; frames over sockets:
    test_msg_transport.c.)

    Guarantees checked:
    - every command encodes and decodes back to the same fields, at the
      edges of every field's range (ids 0 and 2^64-1, 255-byte names,
      1023-byte texts, 64 services);
    - encode never writes past the buffer it is given;
    - setters cut names to PYI_MAX_NAME and texts to PYI_MAX_TEXT bytes;
    - pyi_msg_info reports the same fields as the single accessors, for
      messages with and without body frames and for a malformed decode;
    - descriptor frame marks travel in REQUEST and REPLY headers only, a
      replaced frame loses its mark, and hostile mark lists are refused;
    - the answer-inline flag travels in REQUEST headers only (as a flags
      field after a possibly empty mark list); unknown flags are refused.
*/
#include "testmsg.h"

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
    CHECK_STR (pyi_error_name (PYI_ERR_INLINE), "INLINE");
    CHECK (pyi_command_name (99) != NULL);
    CHECK (pyi_command_name (-1) != NULL);
    CHECK (pyi_error_name (-5) != NULL);
    CHECK (pyi_error_name (12345) != NULL);
    free (long_name);
    free (long_text);
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
    CHECK_INT (pyi_msg_descriptor_end (msg), 0);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 1), 0);
    CHECK_INT (pyi_msg_descriptor_end (msg), 2);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 63), 0);
    CHECK_INT (pyi_msg_descriptor_end (msg), 64);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 64), 0);
    CHECK_INT (pyi_msg_descriptor_end (msg), 65);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 255), 0);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 256), -1);
    CHECK_INT (pyi_msg_descriptor_end (msg), 256);
    data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x96);
    pyi_msg_t *back = DECODE_OK (data, size);
    for (size_t i = 0; i < 300; i++)
        CHECK_INT (pyi_msg_is_descriptor (back, i), i == 1 || i == 63 || i == 64 || i == 255);
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

static void
test_answer_inline (void)
{
    TEST_BEGIN ("the answer-inline flag of REQUEST headers");
    pyi_msg_t *msg = pyi_msg_new (PYI_REQUEST);
    pyi_msg_set_service (msg, "svc");
    CHECK (!pyi_msg_answer_inline (msg));
    pyi_msg_set_answer_inline (msg, true);
    size_t size;
    uint8_t *data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x97);                 /* an empty list, then the flags */
    pyi_msg_t *back = DECODE_OK (data, size);
    CHECK (pyi_msg_answer_inline (back) && !pyi_msg_has_descriptors (back));
    pyi_msg_info_t info;
    pyi_msg_info (back, &info);
    CHECK (info.answer_inline);
    pyi_msg_destroy (&back);
    free (data);
    CHECK_INT (pyi_msg_mark_descriptor (msg, 2), 0);
    data = s_encode (msg, &size);
    back = DECODE_OK (data, size);
    CHECK (pyi_msg_answer_inline (back) && pyi_msg_is_descriptor (back, 2)
           && pyi_msg_has_descriptors (back));
    pyi_msg_destroy (&back);
    free (data);
    /*  Only a REQUEST carries it. */
    pyi_msg_set_command (msg, PYI_REPLY);
    data = s_encode (msg, &size);
    CHECK_INT (data [0], 0x94);
    back = DECODE_OK (data, size);
    CHECK (!pyi_msg_answer_inline (back));
    pyi_msg_destroy (&back);
    free (data);
    pyi_msg_destroy (&msg);

    /*  Unknown flags, a flags field on a REPLY, a flags field not a uint. */
    mp_t *mp = (mp_t *) calloc (1, sizeof (mp_t));
    const uint64_t flags [] = { 2, 3, 1ull << 40 };
    for (size_t k = 0; k < sizeof flags / sizeof flags [0]; k++) {
        mp->size = 0;
        mp_array (mp, 7);
        mp_uint (mp, 1);
        mp_uint (mp, PYI_REQUEST);
        mp_uint (mp, 9);
        mp_str (mp, "svc");
        mp_uint (mp, 0);
        mp_array (mp, 0);
        mp_uint (mp, flags [k]);
        MP_BAD (mp, PYI_ERR_MALFORMED);
    }
    mp->size = 0;
    mp_array (mp, 5);
    mp_uint (mp, 1);
    mp_uint (mp, PYI_REPLY);
    mp_uint (mp, 9);
    mp_array (mp, 0);
    mp_uint (mp, 1);
    MP_BAD (mp, PYI_ERR_MALFORMED);
    mp->size = 0;
    mp_array (mp, 7);
    mp_uint (mp, 1);
    mp_uint (mp, PYI_REQUEST);
    mp_uint (mp, 9);
    mp_str (mp, "svc");
    mp_uint (mp, 0);
    mp_array (mp, 0);
    mp_str (mp, "x");
    MP_BAD (mp, PYI_ERR_MALFORMED);
    free (mp);
}

int
main (void)
{
    test_round_trip ();
    test_setters ();
    test_descriptors ();
    test_answer_inline ();
    test_info ();
    fprintf (stderr, "test_msg: OK\n");
    return 0;
}
