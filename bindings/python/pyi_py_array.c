/*  pyi_py_array: numpy arrays over region memory (see pyi_py_array.h).

    Everything here runs with the GIL.
*/
#include "pyi_py_array.h"
#include <stdbool.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    DLManagedTensorVersioned *m; /* the tensor: its deleter runs at dealloc */
    void *data;                  /* its element 0 */
    Py_ssize_t len;              /* its bytes (elements times itemsize) */
    Py_ssize_t itemsize;
    int ndim;
    int readonly;
    char format [4];             /* struct format of the dtype */
    Py_ssize_t shape [PYI_TENSOR_MAX_NDIM];
    Py_ssize_t strides [PYI_TENSOR_MAX_NDIM];   /* in bytes */
} s_array_t;

/*  Struct format of a DLPack dtype that numpy has, or NULL. */
static const char *
s_format (DLDataType dtype)
{
    if (dtype.lanes != 1)
        return NULL;
    switch (dtype.code) {
        case kDLInt:
            return dtype.bits == 8 ? "b" : dtype.bits == 16 ? "h"
                 : dtype.bits == 32 ? "i" : dtype.bits == 64 ? "q" : NULL;
        case kDLUInt:
            return dtype.bits == 8 ? "B" : dtype.bits == 16 ? "H"
                 : dtype.bits == 32 ? "I" : dtype.bits == 64 ? "Q" : NULL;
        case kDLFloat:
            return dtype.bits == 16 ? "e" : dtype.bits == 32 ? "f"
                 : dtype.bits == 64 ? "d" : NULL;
        case kDLComplex:
            return dtype.bits == 64 ? "Zf" : dtype.bits == 128 ? "Zd" : NULL;
        case PYI_DL_BOOL:
            return dtype.bits == 8 ? "?" : NULL;
        default:
            return NULL;
    }
}

/*  The DLPack dtype of a buffer's struct format and item size: native
    byte order, one plain number type. false when it is anything else. */
static bool
s_dtype (const char *format, Py_ssize_t itemsize, DLDataType *dtype)
{
    if (format == NULL)
        format = "B";
    /*  '@' and '=' are native order; '<' too on a little-endian host. */
    if (*format == '@' || *format == '='
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    ||  *format == '<'
#else
    ||  *format == '>' || *format == '!'
#endif
       )
        format++;
    uint8_t code;
    bool complex = false;
    if (format [0] == 'Z') {
        complex = true;
        format++;
    }
    if (format [0] == '\0' || format [1] != '\0')
        return false;
    char c = format [0];
    if (complex)
        code = (c == 'f' || c == 'd') ? kDLComplex : 255;
    else if (strchr ("bhilq", c))
        code = kDLInt;
    else if (strchr ("BHILQ", c))
        code = kDLUInt;
    else if (strchr ("efd", c))
        code = kDLFloat;
    else if (c == '?')
        code = PYI_DL_BOOL;
    else
        return false;
    if (code == 255 || itemsize <= 0 || itemsize > 16)
        return false;
    dtype->code = code;
    dtype->bits = (uint8_t) (itemsize * 8);
    dtype->lanes = 1;
    /*  Sizes numpy has for the type: s_format checks them. */
    return s_format (*dtype) != NULL;
}

static int
s_getbuffer (PyObject *self, Py_buffer *view, int flags)
{
    s_array_t *a = (s_array_t *) self;
    view->obj = NULL;
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && a->readonly) {
        PyErr_SetString (PyExc_BufferError, "the shared array is read-only");
        return -1;
    }
    view->buf = a->data;
    view->len = a->len;
    view->readonly = a->readonly;
    view->itemsize = a->itemsize;
    view->format = (flags & PyBUF_FORMAT) == PyBUF_FORMAT ? a->format : NULL;
    /*  Without shape (PyBUF_SIMPLE): one dimension of len bytes. */
    bool nd = (flags & PyBUF_ND) == PyBUF_ND;
    view->ndim = nd ? a->ndim : 1;
    view->shape = nd ? a->shape : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? a->strides : NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    /*  What the consumer cannot walk without strides must be C-contiguous,
        and a contiguity it asks for must hold. */
    Py_buffer full = *view;
    full.ndim = a->ndim;
    full.shape = a->shape;
    full.strides = a->strides;
    char order = (flags & PyBUF_ANY_CONTIGUOUS) == PyBUF_ANY_CONTIGUOUS ? 'A'
               : (flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS ? 'F'
               : (flags & PyBUF_C_CONTIGUOUS) == PyBUF_C_CONTIGUOUS ? 'C'
               : view->strides == NULL ? 'C' : 0;
    if (order && !PyBuffer_IsContiguous (&full, order)) {
        PyErr_Format (PyExc_BufferError, "the shared array is not %s-contiguous",
                      order == 'A' ? "C- or F" : order == 'F' ? "F" : "C");
        return -1;
    }
    view->obj = Py_NewRef (self);
    return 0;
}

static void
s_dealloc (PyObject *self)
{
    s_array_t *a = (s_array_t *) self;
    if (a->m && a->m->deleter)
        a->m->deleter (a->m);
    Py_TYPE (self)->tp_free (self);
}

static PyBufferProcs s_array_buffer = {
    .bf_getbuffer = s_getbuffer,
    .bf_releasebuffer = NULL,
};

static PyTypeObject s_array_type = {
    PyVarObject_HEAD_INIT (NULL, 0)
    .tp_name = "pyisolate._native.Array",
    .tp_basicsize = sizeof (s_array_t),
    .tp_dealloc = s_dealloc,
    .tp_as_buffer = &s_array_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Shared memory of one tensor, exported to numpy by the buffer protocol.",
};

int
pyi_py_array_setup (void)
{
    return PyType_Ready (&s_array_type);
}

PyObject *
pyi_py_array_new (DLManagedTensorVersioned *m)
{
    const DLTensor *t = &m->dl_tensor;
    const char *format = s_format (t->dtype);
    if (t->device.device_type != kDLCPU) {
        m->deleter (m);
        PyErr_SetString (PyExc_TypeError,
                         "a numpy array must be in host memory, and this tensor is on a "
                         "GPU: receive it as a torch tensor");
        return NULL;
    }
    if (format == NULL || t->ndim < 0 || t->ndim > PYI_TENSOR_MAX_NDIM) {
        PyErr_Format (PyExc_TypeError,
                      "numpy has no dtype for the DLPack type (code %d, %d bits, %d lanes): "
                      "receive it as a torch tensor",
                      (int) t->dtype.code, (int) t->dtype.bits, (int) t->dtype.lanes);
        m->deleter (m);
        return NULL;
    }
    s_array_t *a = PyObject_New (s_array_t, &s_array_type);
    if (a == NULL) {
        m->deleter (m);
        return NULL;
    }
    a->m = m;
    a->itemsize = t->dtype.bits / 8;
    a->ndim = t->ndim;
    a->readonly = (m->flags & DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
    snprintf (a->format, sizeof (a->format), "%s", format);
    a->data = (uint8_t *) t->data + t->byte_offset;
    /*  Strides in bytes; NULL DLPack strides are C-contiguous. No product
        below overflows: the decoder (and pyi_tensor_empty, share) refuse a
        shape whose extents times the itemsize pass 2^63. */
    Py_ssize_t count = 1, step = a->itemsize;
    for (int i = t->ndim - 1; i >= 0; i--) {
        a->shape [i] = (Py_ssize_t) t->shape [i];
        a->strides [i] = t->strides ? (Py_ssize_t) t->strides [i] * a->itemsize : step;
        step *= a->shape [i];
        count *= a->shape [i];
    }
    a->len = count * a->itemsize;
    return (PyObject *) a;
}

/*  numpy exports the strides of a contiguous array as if it had none of
    its own on axes of length 0 or 1 (where any stride reaches the same
    bytes): read obj.strides for those, so that the receiver gets the
    array's own. Strides that are not whole elements stay as they were.
    0, or -1 with an exception from Python. */
static int
s_own_strides (PyObject *obj, int ndim, Py_ssize_t itemsize, int64_t *strides)
{
    PyObject *own = PyObject_GetAttrString (obj, "strides");
    if (own == NULL) {
        if (!PyErr_ExceptionMatches (PyExc_Exception))
            return -1;
        PyErr_Clear ();
        return 0;
    }
    if (PyTuple_Check (own) && PyTuple_GET_SIZE (own) == ndim) {
        int64_t got [PYI_TENSOR_MAX_NDIM];
        bool ok = true;
        for (int i = 0; ok && i < ndim; i++) {
            long long v = PyLong_AsLongLong (PyTuple_GET_ITEM (own, i));
            ok = !(v == -1 && PyErr_Occurred ()) && v % itemsize == 0;
            got [i] = (int64_t) (v / itemsize);
        }
        if (ok)
            memcpy (strides, got, (size_t) ndim * sizeof (int64_t));
        else if (PyErr_Occurred ())
            PyErr_Clear ();
    }
    Py_DECREF (own);
    return 0;
}

PyObject *
pyi_py_array_descriptor (PyObject *obj, int *readonly)
{
    Py_buffer view;
    if (PyObject_GetBuffer (obj, &view, PyBUF_RECORDS_RO)) {
        if (!PyErr_ExceptionMatches (PyExc_Exception))
            return NULL;
        PyErr_Clear ();          /* no buffer (object or datetime dtypes...) */
        Py_RETURN_NONE;
    }
    DLTensor t;
    int64_t shape [PYI_TENSOR_MAX_NDIM], strides [PYI_TENSOR_MAX_NDIM];
    bool ok = view.ndim >= 0 && view.ndim <= PYI_TENSOR_MAX_NDIM
           && s_dtype (view.format, view.itemsize, &t.dtype);
    bool short_axis = false;
    int64_t step = 1;
    for (int i = view.ndim - 1; ok && i >= 0; i--) {
        shape [i] = (int64_t) view.shape [i];
        short_axis |= shape [i] <= 1;
        ok = view.strides == NULL || view.strides [i] % view.itemsize == 0;
        strides [i] = view.strides ? (int64_t) (view.strides [i] / view.itemsize) : step;
        step *= shape [i];
    }
    if (ok && short_axis && s_own_strides (obj, view.ndim, view.itemsize, strides) < 0) {
        PyBuffer_Release (&view);
        return NULL;
    }
    char buffer [PYI_TENSOR_MAX_DESCRIPTOR];
    int size = -1;
    if (ok) {
        t.data = view.buf;
        t.device.device_type = kDLCPU;
        t.device.device_id = 0;
        t.ndim = view.ndim;
        t.shape = view.ndim ? shape : NULL;
        t.strides = view.ndim ? strides : NULL;
        t.byte_offset = 0;
        size = pyi_tensor_pack (&t, buffer, sizeof (buffer));
    }
    *readonly = view.readonly;
    PyBuffer_Release (&view);
    if (size < 0)
        Py_RETURN_NONE;
    PyObject *desc = PyBytes_FromStringAndSize (buffer, size);
    if (desc == NULL)
        pyi_tensor_discard (buffer, (size_t) size);     /* nothing will send it */
    return desc;
}

PyObject *
pyi_py_array_describe (PyObject *obj)
{
    int readonly = 0;
    PyObject *desc = pyi_py_array_descriptor (obj, &readonly);
    if (desc == NULL || desc == Py_None)
        return desc;
    PyObject *result = PyTuple_Pack (2, desc, readonly ? Py_True : Py_False);
    if (result == NULL)     /* nothing will send it */
        pyi_tensor_discard (PyBytes_AS_STRING (desc), (size_t) PyBytes_GET_SIZE (desc));
    Py_DECREF (desc);
    return result;
}
