/*  pyi_msgpack: msgpack-c's packer writing into a fixed buffer, and a
    strict, allocation-free msgpack reader for untrusted bytes (headers and
    tensor descriptors). Every declared length is checked
    against the bytes present before it is used, and nothing is allocated
    for declared counts (msgpack-c's unpacker does allocate them, so it is
    never used on bytes from a peer). Internal to libpyisolate. */
#ifndef PYI_MSGPACK_H_INCLUDED
#define PYI_MSGPACK_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*  A fixed buffer for msgpack_packer_init (pyi_writer_write as the
    callback): a write that does not fit fails, nothing is allocated. */
typedef struct {
    uint8_t *data;
    size_t size;
    size_t used;
} pyi_writer_t;

static inline int
pyi_writer_write (void *data, const char *buf, size_t len)
{
    pyi_writer_t *writer = (pyi_writer_t *) data;
    if (len == 0)
        return 0;
    if (len > writer->size - writer->used)
        return -1;
    memcpy (writer->data + writer->used, buf, len);
    writer->used += len;
    return 0;
}

typedef struct {
    const uint8_t *p;               /* next byte */
    const uint8_t *end;             /* one past the last byte */
} pyi_reader_t;

static inline bool
pyi_reader_need (pyi_reader_t *r, size_t n)
{
    return (size_t) (r->end - r->p) >= n;
}

/*  A big-endian unsigned integer of n bytes (1..8). */
static inline bool
pyi_reader_be (pyi_reader_t *r, int n, uint64_t *value)
{
    if (!pyi_reader_need (r, (size_t) n))
        return false;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | r->p [i];
    r->p += n;
    *value = v;
    return true;
}

/*  Any msgpack integer that fits int64. */
static inline bool
pyi_reader_int (pyi_reader_t *r, int64_t *value)
{
    if (!pyi_reader_need (r, 1))
        return false;
    uint8_t tag = *r->p++;
    uint64_t v;
    if (tag <= 0x7f || tag >= 0xe0) {
        *value = tag <= 0x7f ? (int64_t) tag : (int64_t) (int8_t) tag;
        return true;
    }
    switch (tag) {
        case 0xcc: case 0xcd: case 0xce: case 0xcf:
            if (!pyi_reader_be (r, 1 << (tag - 0xcc), &v) || v > INT64_MAX)
                return false;
            *value = (int64_t) v;
            return true;
        case 0xd0:
            if (!pyi_reader_be (r, 1, &v)) return false;
            *value = (int8_t) v;
            return true;
        case 0xd1:
            if (!pyi_reader_be (r, 2, &v)) return false;
            *value = (int16_t) v;
            return true;
        case 0xd2:
            if (!pyi_reader_be (r, 4, &v)) return false;
            *value = (int32_t) v;
            return true;
        case 0xd3:
            if (!pyi_reader_be (r, 8, &v)) return false;
            *value = (int64_t) v;
            return true;
        default:
            return false;
    }
}

/*  Any msgpack integer in [0, max]; the whole uint64 range is accepted. */
static inline bool
pyi_reader_uint (pyi_reader_t *r, uint64_t max, uint64_t *value)
{
    uint64_t v;
    if (pyi_reader_need (r, 1) && *r->p == 0xcf) {
        r->p++;
        if (!pyi_reader_be (r, 8, &v))
            return false;
    }
    else {
        int64_t i;
        if (!pyi_reader_int (r, &i) || i < 0)
            return false;
        v = (uint64_t) i;
    }
    if (v > max)
        return false;
    *value = v;
    return true;
}

/*  An array header: its element count. */
static inline bool
pyi_reader_array (pyi_reader_t *r, uint64_t *count)
{
    if (!pyi_reader_need (r, 1))
        return false;
    uint8_t tag = *r->p++;
    if ((tag & 0xf0) == 0x90) {
        *count = tag & 0x0f;
        return true;
    }
    if (tag == 0xdc)
        return pyi_reader_be (r, 2, count);
    if (tag == 0xdd)
        return pyi_reader_be (r, 4, count);
    return false;
}

/*  A string of at most limit bytes with no NUL: *data points into the
    input (not terminated), *size is its length. */
static inline bool
pyi_reader_str (pyi_reader_t *r, const char **data, size_t *size, size_t limit)
{
    if (!pyi_reader_need (r, 1))
        return false;
    uint8_t tag = *r->p++;
    uint64_t n;
    if ((tag & 0xe0) == 0xa0)
        n = tag & 0x1f;
    else
    if (tag == 0xd9 || tag == 0xda || tag == 0xdb) {
        if (!pyi_reader_be (r, tag == 0xd9 ? 1 : tag == 0xda ? 2 : 4, &n))
            return false;
    }
    else
        return false;
    if (n > limit || !pyi_reader_need (r, n) || memchr (r->p, 0, n))
        return false;
    *data = (const char *) r->p;
    *size = (size_t) n;
    r->p += n;
    return true;
}

/*  A string as above, copied into dest (limit + 1 bytes) and terminated. */
static inline bool
pyi_reader_str_copy (pyi_reader_t *r, char *dest, size_t limit)
{
    const char *data;
    size_t size;
    if (!pyi_reader_str (r, &data, &size, limit))
        return false;
    if (size)
        memcpy (dest, data, size);
    dest [size] = 0;
    return true;
}

#endif
