/*  test_tensor_validation: pyi_tensor_decode of hand-crafted and
    corrupted descriptors.

    Guarantees checked:
    - every validation error, with hand-crafted descriptors: not an array,
      wrong field count, layout version, device, unknown dtype code,
      opaque handles, bits (not a multiple of 8, not a size of the code),
      lanes 0, ndim over 32, negative shape, shape and stride overflow,
      strides of the wrong count or type, byte_offset out of range, bytes
      addressed outside the span (above and below, with negative
      strides), span beyond the region, length beyond the region, name not
      of our form, unknown region, trailing bytes; every truncation and
      every single-byte corruption of a valid descriptor decodes safely;
    - decodes that failed after mapping took in-flight counts off (never
      below 0), so the region's release removes its name;
    - at the end nothing of ours stays in /dev/shm nor in the mappings.
*/
#include "testtensor.h"

static pyi_region_t *s_region;      /* 64 KiB the tests put tensors in */
#define REGION_SIZE 65536

/*  Hand-crafted descriptors ------------------------------------------------ */

typedef struct {
    int fields;                 /* top-level array length */
    int64_t layout;
    int64_t device [2];
    int64_t dtype [3];
    int ndim;                   /* shape entries written */
    int64_t shape [40];
    int nstrides;               /* -1: nil */
    int64_t strides [40];
    uint64_t byte_offset;
    const char *name;
    uint64_t offset, length;
    bool trailing;
} s_spec_t;

static void
mp_int (mp_t *mp, int64_t value)
{
    if (value >= 0)
        mp_uint (mp, (uint64_t) value);
    else {
        mp_byte (mp, 0xd3);
        mp_be (mp, (uint64_t) value, 8);
    }
}

static s_spec_t
s_good (void)
{
    /*  A valid [4, 5] float32 tensor at offset 0 of the test region. */
    s_spec_t spec = { 7, 1, { kDLCPU, 0 }, { kDLFloat, 32, 1 }, 2, { 4, 5 }, -1, { 0 }, 0,
                      pyi_region_name (s_region), 0, 80, false };
    return spec;
}

static void
s_write (mp_t *mp, const s_spec_t *spec)
{
    mp->size = 0;
    mp_array (mp, (uint64_t) spec->fields);
    mp_int (mp, spec->layout);
    mp_array (mp, 2);
    mp_int (mp, spec->device [0]);
    mp_int (mp, spec->device [1]);
    mp_array (mp, 3);
    for (int i = 0; i < 3; i++)
        mp_int (mp, spec->dtype [i]);
    mp_array (mp, (uint64_t) spec->ndim);
    for (int i = 0; i < spec->ndim; i++)
        mp_int (mp, spec->shape [i]);
    if (spec->nstrides < 0)
        mp_byte (mp, 0xc0);
    else {
        mp_array (mp, (uint64_t) spec->nstrides);
        for (int i = 0; i < spec->nstrides; i++)
            mp_int (mp, spec->strides [i]);
    }
    mp_uint (mp, spec->byte_offset);
    mp_array (mp, 3);
    mp_str (mp, spec->name);
    mp_uint (mp, spec->offset);
    mp_uint (mp, spec->length);
    if (spec->trailing)
        mp_byte (mp, 0xc0);
}

/*  spec must be refused with an error text holding expected. */
static void
s_refused (int line, const s_spec_t *spec, const char *expected)
{
    static mp_t mp;
    s_write (&mp, spec);
    DLManagedTensor *t = pyi_tensor_decode (mp.data, mp.size);
    if (t)
        s_fail (__FILE__, line, "accepted a bad descriptor (expected \"%s\")", expected);
    if (!strstr (pyi_last_error (), expected))
        s_fail (__FILE__, line, "error \"%s\" does not say \"%s\"", pyi_last_error (), expected);
}
#define REFUSED(spec, text) s_refused (__LINE__, &(spec), text)

static void
test_validation (void)
{
    TEST_BEGIN ("every validation error, with hand-crafted descriptors");
    static mp_t mp;
    s_spec_t good = s_good ();
    s_write (&mp, &good);
    DLManagedTensor *t = pyi_tensor_decode (mp.data, mp.size);
    CHECK_MSG (t, "the good descriptor: %s", pyi_last_error ());
    t->deleter (t);

    s_spec_t s;
    CHECK (pyi_tensor_decode (NULL, 0) == NULL);
    CHECK (pyi_tensor_decode ("\x93\x01\x02\x03", 4) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "not a msgpack array of 7"), "%s", pyi_last_error ());
    CHECK (pyi_tensor_decode ("\xc0", 1) == NULL);
    s = good; s.fields = 8;            REFUSED (s, "array of 7");
    s = good; s.layout = 2;            REFUSED (s, "layout 2 not supported");
    s = good; s.layout = -1;           REFUSED (s, "layout version");
    s = good; s.device [0] = kDLCUDA;  REFUSED (s, "CUDA tensor names a host region");
    s = good; s.device [0] = kDLVulkan; REFUSED (s, "device (7, 0) not supported");
    s = good; s.device [1] = 1;        REFUSED (s, "device (1, 1) not supported");
    s = good; s.device [0] = -5;       REFUSED (s, "field 2 (device)");
    s = good; s.dtype [0] = 99;        REFUSED (s, "unknown dtype code 99");
    s = good; s.dtype [0] = 15;        REFUSED (s, "unknown dtype code 15");
    s = good; s.dtype [0] = 14;        REFUSED (s, "dtype code 14 cannot have 32 bits");  /* e8m0fnu: 8 */
    s = good; s.dtype [0] = 300;       REFUSED (s, "field 3 (dtype)");
    s = good; s.dtype [0] = kDLOpaqueHandle; s.dtype [1] = 64; REFUSED (s, "opaque handle");
    s = good; s.dtype [1] = 12;        REFUSED (s, "cannot have 12 bits");
    s = good; s.dtype [1] = 0;         REFUSED (s, "cannot have 0 bits");
    s = good; s.dtype [1] = 8;         REFUSED (s, "cannot have 8 bits");   /* float8 is 7..14 */
    s = good; s.dtype [0] = PYI_DL_BOOL; s.dtype [1] = 1; REFUSED (s, "cannot have 1 bits");
    s = good; s.dtype [0] = kDLBfloat; REFUSED (s, "cannot have 32 bits");
    s = good; s.dtype [2] = 0;         REFUSED (s, "0 lanes");
    s = good; s.dtype [2] = 70000;     REFUSED (s, "field 3 (dtype)");
    s = good; s.ndim = 33;
    for (int i = 0; i < 33; i++) s.shape [i] = 1;
    REFUSED (s, "ndim 33 is over the limit");
    s = good; s.shape [1] = -5;        REFUSED (s, "shape[1] is negative");
    s = good; s.ndim = 2; s.shape [0] = (int64_t) 1 << 62; s.shape [1] = 4;
    REFUSED (s, "shape overflows");
    s = good; s.ndim = 1; s.shape [0] = (int64_t) 1 << 62; REFUSED (s, "shape x itemsize overflows");
    s = good; s.ndim = 1; s.shape [0] = (int64_t) 1 << 40; s.nstrides = 1;
    s.strides [0] = (int64_t) 1 << 40; REFUSED (s, "shape x strides overflows");
    s = good; s.ndim = 2; s.shape [0] = 3; s.shape [1] = 3; s.nstrides = 2;
    s.strides [0] = INT64_MAX / 2; s.strides [1] = INT64_MAX / 2;
    REFUSED (s, "shape x strides overflows");
    s = good; s.ndim = 1; s.shape [0] = 2; s.nstrides = 1; s.strides [0] = INT64_MAX / 2;
    REFUSED (s, "strides x itemsize overflows");
    s = good; s.ndim = 2; s.shape [0] = 2; s.shape [1] = 2; s.nstrides = 2;
    s.strides [0] = INT64_MAX / 5; s.strides [1] = -(INT64_MAX / 5);
    REFUSED (s, "strides x itemsize overflows");         /* hi - lo overflows */
    s = good; s.shape [0] = 52; s.shape [1] = 0; s.nstrides = 2;    /* empty, still checked */
    s.strides [0] = -((int64_t) 1 << 58); s.strides [1] = 1; REFUSED (s, "shape x strides overflows");
    s = good; s.nstrides = 1;          REFUSED (s, "field 5 (strides)");
    s = good; s.nstrides = 3;          REFUSED (s, "field 5 (strides)");
    s = good; s.byte_offset = (uint64_t) 1 << 63; REFUSED (s, "field 6 (byte_offset)");
    /*  Bytes outside the span: one element too many above, negative
        strides below element 0 with no byte_offset to cover them. */
    s = good; s.length = 79;           REFUSED (s, "outside its span [0, 79)");
    s = good; s.byte_offset = 4;       REFUSED (s, "outside its span");
    s = good; s.nstrides = 2; s.strides [0] = -5; s.strides [1] = 1;
    REFUSED (s, "bytes [-60, 20) outside");
    s.byte_offset = 60; s.length = 79; REFUSED (s, "outside its span [0, 79)");
    s.length = 80;
    s_write (&mp, &s);
    t = pyi_tensor_decode (mp.data, mp.size);       /* covered: accepted */
    CHECK_MSG (t, "%s", pyi_last_error ());
    CHECK (t->dl_tensor.data == (uint8_t *) pyi_region_data (s_region) + 60);
    t->deleter (t);
    s = good; s.ndim = 1; s.shape [0] = 0; s.byte_offset = 81; REFUSED (s, "outside its span");
    /*  The span against the region. */
    s = good; s.offset = REGION_SIZE - 40;  REFUSED (s, "beyond region");
    s = good; s.length = REGION_SIZE + 1;   REFUSED (s, "beyond region");
    s = good; s.offset = INT64_MAX;         REFUSED (s, "beyond region");
    s = good; s.offset = REGION_SIZE - 80;
    s_write (&mp, &s);
    t = pyi_tensor_decode (mp.data, mp.size);       /* exactly at the end: accepted */
    CHECK_MSG (t, "%s", pyi_last_error ());
    t->deleter (t);
    /*  Names. */
    const char *bad_names [] = { "/etc/passwd", "pyi-1-ab-1-1", "/pyi-1-ab-1-1/../x",
                                 "/dev/shm/pyi-1-ab-1-1" };
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names [0]; i++) {
        s = good; s.name = bad_names [i]; REFUSED (s, "not of the form");
    }
    s = good; s.name = "";             REFUSED (s, "inline tensor");   /* no bytes follow */
    char absent [128];
    snprintf (absent, sizeof absent, "/pyi-%s-1-4242424242", pyi_region_session ());
    s = good; s.name = absent;         REFUSED (s, "unknown region");
    char longname [200];
    memset (longname, 'a', sizeof longname - 1);
    longname [sizeof longname - 1] = 0;
    s = good; s.name = longname;       REFUSED (s, "field 7 (region)");
    s = good; s.trailing = true;       REFUSED (s, "trailing bytes");

    /*  Every truncation and every single-byte change of a valid descriptor
        (with strides) decodes safely: refused, or a view inside the region. */
    s = good; s.nstrides = 2; s.strides [0] = 5; s.strides [1] = 1;
    s_write (&mp, &s);
    uint8_t copy [256];
    size_t size = mp.size;
    CHECK (size <= sizeof copy);
    for (size_t n = 0; n < size; n++)
        CHECK (pyi_tensor_decode (mp.data, n) == NULL);
    const uint8_t *lo = (const uint8_t *) pyi_region_data (s_region);
    for (size_t i = 0; i < size; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy (copy, mp.data, size);
            copy [i] ^= (uint8_t) (1 << bit);
            DLManagedTensor *d = pyi_tensor_decode (copy, size);
            if (!d)
                continue;
            /*  Accepted: every element it can address is inside the region. */
            int64_t zero [PYI_TENSOR_MAX_NDIM] = { 0 }, last [PYI_TENSOR_MAX_NDIM];
            if (s_numel (&d->dl_tensor) > 0) {
                for (int k = 0; k < d->dl_tensor.ndim; k++)
                    last [k] = d->dl_tensor.shape [k] - 1;
                const uint8_t *a = s_element (&d->dl_tensor, zero);
                const uint8_t *b = s_element (&d->dl_tensor, last);
                CHECK (a >= lo && a < lo + REGION_SIZE && b >= lo && b < lo + REGION_SIZE);
            }
            d->deleter (d);
        }
    CHECK_INT (pyi_region_mapped (), 1);
}

/*  On failure: remove what the test made. */
int
main (void)
{
    t_setup_rundir ();
    t_on_failure = s_on_failure;
    setenv ("PYI_SESSION", pyi_region_session (), 1);
    s_region = pyi_region_new (REGION_SIZE);
    CHECK_MSG (s_region, "%s", pyi_last_error ());
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (s_region));
    test_validation ();
    pyi_region_release (&s_region);
    /*  Decodes that failed after mapping took in-flight counts off (never
        below 0), so the release removes the name. */
    CHECK_MSG (!s_exists (name), "the test region was not removed");
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
    fprintf (stderr, "test_tensor_validation: OK\n");
    return 0;
}
