/*  pyi_py_codec: the codec's hot path for arrays and tensors in regions
    (see pyi_py_codec.h). Everything here runs with the GIL.

    The msgpack body of EXT_SHARED is [kind, frame index, flags], or
    [kind, descriptor bytes, flags] in a message out of frames
    (_serialize.py); with kind a fixstr of 5 and a frame index and flags
    below 128 it is 9 bytes: the 7 of its head, then the two numbers.
*/
#include "pyi_py_codec.h"
#include "pyi_py_array.h"
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define S_EXT_SHARED 8
#define S_HEAD 7                        /* fixarray of 3, fixstr of 5 */
#define S_FLAG_READ_ONLY 2              /* _tensors.FLAG_READ_ONLY */

enum { S_NUMPY, S_TORCH, S_KINDS };

static const char s_heads [S_KINDS][S_HEAD + 1] = { "\x93\xa5numpy", "\x93\xa5torch" };

static struct {
    PyObject *ext_type;                 /* msgpack.ExtType */
    PyObject *error;                    /* _tensors.TensorDescriptorError */
    Py_ssize_t max_frames;              /* _serialize.MAX_OOB_FRAMES */
    PyObject *kind [S_KINDS];           /* "numpy", "torch" */
    PyObject *types [S_KINDS];          /* numpy.ndarray, torch.Tensor: once registered */
    PyObject *asarray;                  /* numpy.asarray */
    PyObject *dtypes;                   /* torch dtype -> (DLPack code, bits) */
    PyObject *to_dlpack, *from_dlpack, *cuda_init;
    /*  Interned attribute names. */
    PyObject *inline_, *oob, *counted, *marks, *track, *sent, *in, *echo;
    PyObject *dtype, *is_conj, *is_neg, *requires_grad;
} s;

typedef struct {
    PyObject_HEAD
    PyObject *codec;                    /* the Codec whose message state is read */
    PyObject *slow_default;             /* Codec._default */
    PyObject *slow_ext_hook;            /* Codec._ext_hook */
} s_hooks_t;

/*  The kind a str names ("numpy", "torch"), or -1 for any other object. */
static int
s_kind (PyObject *name)
{
    if (!PyUnicode_Check (name))
        return -1;
    for (int kind = 0; kind < S_KINDS; kind++)
        if (PyUnicode_Compare (name, s.kind [kind]) == 0)
            return kind;
    return -1;
}

/*  Whether codec.<name> is true: 1, 0, or -1 with an exception. */
static int
s_flag (PyObject *codec, PyObject *name)
{
    PyObject *value = PyObject_GetAttr (codec, name);
    if (value == NULL)
        return -1;
    int rc = PyObject_IsTrue (value);
    Py_DECREF (value);
    return rc;
}

/*  codec.<name> if it is a list (a new reference), else NULL (with an
    exception when the attribute is missing or not a list). */
static PyObject *
s_list (PyObject *codec, PyObject *name)
{
    PyObject *value = PyObject_GetAttr (codec, name);
    if (value && !PyList_CheckExact (value)) {
        PyErr_Format (PyExc_TypeError, "codec.%U is not a list", name);
        Py_CLEAR (value);
    }
    return value;
}

static int
s_append (PyObject *codec, PyObject *name, PyObject *item)
{
    PyObject *list = s_list (codec, name);
    int rc = list ? PyList_Append (list, item) : -1;
    Py_XDECREF (list);
    return rc;
}

/*  msgpack.ExtType (EXT_SHARED, body) for kind: [kind, at, flags] when
    desc is NULL, else [kind, desc (size bytes: a descriptor, or an inline
    one with the data), flags]. */
static PyObject *
s_ext_shared (int kind, Py_ssize_t at, const char *desc, Py_ssize_t size, long flags)
{
    if (flags < 0 || flags > 127 || at < 0 || at > 0xffff || size < 0
    ||  size > (Py_ssize_t) UINT32_MAX) {
        PyErr_SetString (PyExc_ValueError, "EXT_SHARED out of range");
        return NULL;
    }
    /*  The number: a positive fixint, uint 8 or uint 16; the bytes: bin 8,
        bin 16 or bin 32. */
    Py_ssize_t head = !desc ? (at < 128 ? 1 : at < 256 ? 2 : 3)
                    : size < 256 ? 2 : size < 65536 ? 3 : 5;
    PyObject *data = PyBytes_FromStringAndSize (NULL, S_HEAD + head + (desc ? size : 0) + 1);
    if (data == NULL)
        return NULL;
    unsigned char *body = (unsigned char *) PyBytes_AS_STRING (data);
    memcpy (body, s_heads [kind], S_HEAD);
    body += S_HEAD;
    uint64_t number = desc ? (uint64_t) size : (uint64_t) at;
    if (head > 1)
        *body++ = desc ? (head == 2 ? 0xc4 : head == 3 ? 0xc5 : 0xc6)
                       : (head == 2 ? 0xcc : 0xcd);
    for (Py_ssize_t i = head - 2; i >= 0; i--)
        *body++ = (unsigned char) (number >> (8 * i));
    if (head == 1)
        *body++ = (unsigned char) number;
    if (desc) {
        memcpy (body, desc, (size_t) size);
        body += size;
    }
    *body = (unsigned char) flags;
    PyObject *code = PyLong_FromLong (S_EXT_SHARED);
    PyObject *pair = code ? PyTuple_Pack (2, code, data) : NULL;
    PyObject *args = pair ? PyTuple_Pack (1, pair) : NULL;
    /*  tuple.__new__ (ExtType, (code, data)): ExtType.__new__ only checks
        the types of what is made right here. */
    PyObject *ext = args ? PyTuple_Type.tp_new ((PyTypeObject *) s.ext_type, args, NULL) : NULL;
    Py_XDECREF (args);
    Py_XDECREF (pair);
    Py_XDECREF (code);
    Py_DECREF (data);
    return ext;
}

/*  EXT_SHARED naming desc (a buffer) in a body frame of its own (marked
    when mark), or holding its bytes when the message has no frame left. */
static PyObject *
s_descriptor (s_hooks_t *self, int kind, PyObject *desc, long flags, bool mark)
{
    PyObject *oob = PyObject_GetAttr (self->codec, s.oob);
    if (oob == NULL)
        return NULL;
    if (!PyList_CheckExact (oob) || PyList_GET_SIZE (oob) >= s.max_frames) {
        Py_DECREF (oob);
        Py_buffer view;
        if (PyObject_GetBuffer (desc, &view, PyBUF_SIMPLE))
            return NULL;
        PyObject *ext = s_ext_shared (kind, 0, (const char *) view.buf, view.len, flags);
        PyBuffer_Release (&view);
        return ext;
    }
    int rc = PyList_Append (oob, desc);
    Py_ssize_t at = PyList_GET_SIZE (oob);      /* frame 0 is the msgpack head */
    Py_DECREF (oob);
    if (rc == 0 && mark) {
        PyObject *index = PyLong_FromSsize_t (at);
        rc = index ? s_append (self->codec, s.marks, index) : -1;
        Py_XDECREF (index);
    }
    return rc == 0 ? s_ext_shared (kind, at, NULL, 0, flags) : NULL;
}

/*  The descriptor of torch tensor t (the checks DLPack cannot make, then
    torch's own export), or None; *flags: its requires_grad bit. */
static PyObject *
s_describe_torch (PyObject *t, long *flags)
{
    PyObject *dtype = PyObject_GetAttr (t, s.dtype);
    if (dtype == NULL)
        return NULL;
    PyObject *dl = PyDict_GetItemWithError (s.dtypes, dtype);       /* borrowed */
    Py_DECREF (dtype);
    if (dl == NULL)
        return PyErr_Occurred () ? NULL : Py_NewRef (Py_None);
    long code = PyLong_AsLong (PyTuple_GET_ITEM (dl, 0));
    long bits = PyLong_AsLong (PyTuple_GET_ITEM (dl, 1));
    if (PyErr_Occurred ())
        return NULL;
    /*  DLPack would export the memory without the conjugate or negative
        bit; torch sets the conjugate bit on complex tensors only. */
    PyObject *const names [3] = { s.is_conj, s.is_neg, s.requires_grad };
    int set [3] = { 0, 0, 0 };
    for (int i = code == kDLComplex ? 0 : 1; i < 3; i++) {
        PyObject *value = i < 2 ? PyObject_VectorcallMethod (names [i], &t, 1, NULL)
                                : PyObject_GetAttr (t, names [i]);
        set [i] = value ? PyObject_IsTrue (value) : -1;
        Py_XDECREF (value);
        if (set [i] < 0)
            return NULL;
        if (i < 2 && set [i])
            Py_RETURN_NONE;
    }
    *flags = set [2];
    PyObject *capsule = PyObject_CallOneArg (s.to_dlpack, t);
    if (capsule == NULL) {
        /*  No storage or strides (sparse, nested...): the slow path decides. */
        if (!PyErr_ExceptionMatches (PyExc_Exception))
            return NULL;
        PyErr_Clear ();
        Py_RETURN_NONE;
    }
    PyObject *desc = pyi_py_describe_capsule (capsule, code, bits);
    Py_DECREF (capsule);
    return desc;
}

/*  hooks.share's work: EXT_SHARED for obj, or None. */
static PyObject *
s_share (s_hooks_t *self, PyObject *obj, int kind)
{
    int inline_ = s_flag (self->codec, s.inline_);
    if (inline_ != 0)
        return inline_ < 0 ? NULL : Py_NewRef (Py_None);
    long flags = 0;
    PyObject *desc;
    if (kind == S_TORCH)
        desc = s_describe_torch (obj, &flags);
    else {
        int readonly = 0;
        desc = pyi_py_array_descriptor (obj, &readonly);
        flags = readonly ? S_FLAG_READ_ONLY : 0;
    }
    if (desc == NULL || desc == Py_None)
        return desc;
    /*  Counted in flight: once in codec._counted, the codec gives the count
        back if the message is not made. */
    if (s_append (self->codec, s.counted, desc) < 0) {
        pyi_tensor_discard (PyBytes_AS_STRING (desc), (size_t) PyBytes_GET_SIZE (desc));
        Py_DECREF (desc);
        return NULL;
    }
    PyObject *ext = NULL;
    int track = s_flag (self->codec, s.track);
    if (track > 0) {
        PyObject *f = PyLong_FromLong (flags);
        PyObject *sent = f ? PyTuple_Pack (4, s.kind [kind], desc, f, obj) : NULL;
        track = sent ? s_append (self->codec, s.sent, sent) : -1;
        Py_XDECREF (sent);
        Py_XDECREF (f);
    }
    if (track >= 0)
        ext = s_descriptor (self, kind, desc, flags, true);
    Py_DECREF (desc);
    return ext;
}

static PyObject *
s_hooks_share (s_hooks_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString (PyExc_TypeError, "share takes (obj, is_torch)");
        return NULL;
    }
    int is_torch = PyObject_IsTrue (args [1]);
    if (is_torch < 0)
        return NULL;
    if (is_torch && s.dtypes == NULL)
        Py_RETURN_NONE;                 /* torch not registered: the slow path */
    return s_share (self, args [0], is_torch ? S_TORCH : S_NUMPY);
}

static PyObject *
s_hooks_default (s_hooks_t *self, PyObject *obj)
{
    PyObject *type = (PyObject *) Py_TYPE (obj);
    for (int kind = 0; kind < S_KINDS; kind++)
        if (type == s.types [kind]) {
            PyObject *ext = s_share (self, obj, kind);
            if (ext != Py_None)
                return ext;
            Py_DECREF (ext);
            break;
        }
    return PyObject_CallOneArg (self->slow_default, obj);
}

static PyObject *
s_hooks_descriptor (s_hooks_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyUnicode_Check (args [0])) {
        PyErr_SetString (PyExc_TypeError, "descriptor takes (kind, desc, flags, mark)");
        return NULL;
    }
    int kind = s_kind (args [0]);
    long flags = PyLong_AsLong (args [2]);
    int mark = PyObject_IsTrue (args [3]);
    if ((flags == -1 && PyErr_Occurred ()) || mark < 0)
        return NULL;
    if (kind < 0) {
        PyErr_Format (PyExc_ValueError, "unknown shared value kind %R", args [0]);
        return NULL;
    }
    return s_descriptor (self, kind, args [1], flags, mark);
}

/* -- decoding ------------------------------------------------------------------ */

static PyObject *
s_refused (const char *what)
{
    PyErr_Format (s.error ? s.error : PyExc_ValueError, "refused %s descriptor: %s", what,
                  pyi_last_error ());
    return NULL;
}

/*  A new array (read-only when flags say so) or tensor over the memory
    descriptor desc names; kind registered. */
static PyObject *
s_new (int kind, PyObject *desc, long flags)
{
    Py_buffer view;
    if (PyObject_GetBuffer (desc, &view, PyBUF_SIMPLE))
        return NULL;
    if (kind == S_NUMPY) {
        DLManagedTensorVersioned *m = pyi_tensor_decode_versioned (
            view.buf, (size_t) view.len,
            flags & S_FLAG_READ_ONLY ? DLPACK_FLAG_BITMASK_READ_ONLY : 0);
        PyBuffer_Release (&view);
        if (!m)
            return s_refused ("an array");
        PyObject *array = pyi_py_array_new (m);
        PyObject *result = array ? PyObject_CallOneArg (s.asarray, array) : NULL;
        Py_XDECREF (array);
        return result;
    }
    DLManagedTensor *m = pyi_tensor_decode (view.buf, (size_t) view.len);
    PyBuffer_Release (&view);
    if (!m)
        return s_refused ("a tensor");
    bool cuda = m->dl_tensor.device.device_type == kDLCUDA;
    PyObject *capsule = pyi_py_capsule_legacy (m);
    if (capsule == NULL)
        return NULL;
    if (cuda) {                         /* on failure the capsule frees the tensor */
        PyObject *done = PyObject_CallNoArgs (s.cuda_init);
        if (done == NULL) {
            Py_DECREF (capsule);
            return NULL;
        }
        Py_DECREF (done);
    }
    PyObject *t = PyObject_CallOneArg (s.from_dlpack, capsule);
    Py_DECREF (capsule);
    return t;
}

/*  The object that descriptor frame desc (kind, flags) names: the one sent
    when an answer names it back, else a new one over the region. */
static PyObject *
s_decode (s_hooks_t *self, int kind, PyObject *desc, long flags)
{
    PyObject *echo = PyObject_GetAttr (self->codec, s.echo);
    if (echo == NULL)
        return NULL;
    PyObject *sent = NULL;
    if (PyDict_CheckExact (echo) && PyDict_GET_SIZE (echo) > 0) {
        PyObject *bytes = PyBytes_FromObject (desc);
        PyObject *f = bytes ? PyLong_FromLong (flags) : NULL;
        PyObject *key = f ? PyTuple_Pack (3, s.kind [kind], bytes, f) : NULL;
        sent = key ? PyDict_GetItemWithError (echo, key) : NULL;     /* borrowed */
        Py_XINCREF (sent);
        Py_XDECREF (key);
        Py_XDECREF (f);
        Py_XDECREF (bytes);
    }
    Py_DECREF (echo);
    if (PyErr_Occurred ()) {
        Py_XDECREF (sent);
        return NULL;
    }
    if (sent != NULL && sent != Py_None) {
        Py_buffer view;
        if (PyObject_GetBuffer (desc, &view, PyBUF_SIMPLE)) {
            Py_DECREF (sent);
            return NULL;
        }
        int rc = pyi_tensor_received (view.buf, (size_t) view.len);
        PyBuffer_Release (&view);
        if (rc == 0)
            return sent;                /* came back as it went */
    }
    Py_XDECREF (sent);
    return s_new (kind, desc, flags);
}

static PyObject *
s_hooks_ext_hook (s_hooks_t *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs == 2 && PyLong_CheckExact (args [0]) && PyBytes_CheckExact (args [1])
    &&  PyBytes_GET_SIZE (args [1]) == S_HEAD + 2 && PyLong_AsLong (args [0]) == S_EXT_SHARED) {
        const unsigned char *body = (const unsigned char *) PyBytes_AS_STRING (args [1]);
        int kind = memcmp (body, s_heads [S_NUMPY], S_HEAD) == 0 ? S_NUMPY
                 : memcmp (body, s_heads [S_TORCH], S_HEAD) == 0 ? S_TORCH : -1;
        Py_ssize_t at = body [S_HEAD];
        long flags = body [S_HEAD + 1];
        /*  Torch with flags (requires_grad) goes the Python way. */
        if (kind >= 0 && s.types [kind] && at >= 1 && at < 128 && flags < 128
        &&  (kind == S_NUMPY || flags == 0)) {
            PyObject *frames = s_list (self->codec, s.in);
            if (frames == NULL)
                return NULL;
            PyObject *result = NULL;
            if (at <= PyList_GET_SIZE (frames)) {
                PyObject *desc = Py_NewRef (PyList_GET_ITEM (frames, at - 1));
                result = s_decode (self, kind, desc, flags);
                Py_DECREF (desc);
            }
            Py_DECREF (frames);
            if (result != NULL || PyErr_Occurred ())
                return result;
        }
    }
    return PyObject_Vectorcall (self->slow_ext_hook, args, (size_t) nargs, NULL);
}

/* -- the type ------------------------------------------------------------------ */

static PyObject *
s_hooks_new (PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *codec, *slow_default, *slow_ext_hook;
    static char *names [] = { "codec", "default", "ext_hook", NULL };
    if (!PyArg_ParseTupleAndKeywords (args, kwargs, "OOO:Hooks", names,
                                      &codec, &slow_default, &slow_ext_hook))
        return NULL;
    if (s.ext_type == NULL) {
        PyErr_SetString (PyExc_RuntimeError, "codec_setup () was not called");
        return NULL;
    }
    s_hooks_t *self = (s_hooks_t *) type->tp_alloc (type, 0);
    if (self) {
        self->codec = Py_NewRef (codec);
        self->slow_default = Py_NewRef (slow_default);
        self->slow_ext_hook = Py_NewRef (slow_ext_hook);
    }
    return (PyObject *) self;
}

static int
s_hooks_traverse (s_hooks_t *self, visitproc visit, void *arg)
{
    Py_VISIT (self->codec);
    Py_VISIT (self->slow_default);
    Py_VISIT (self->slow_ext_hook);
    return 0;
}

static int
s_hooks_clear (s_hooks_t *self)
{
    Py_CLEAR (self->codec);
    Py_CLEAR (self->slow_default);
    Py_CLEAR (self->slow_ext_hook);
    return 0;
}

static void
s_hooks_dealloc (s_hooks_t *self)
{
    PyObject_GC_UnTrack (self);
    s_hooks_clear (self);
    Py_TYPE (self)->tp_free ((PyObject *) self);
}

/*  A method used while the codec is alive (tp_clear leaves NULLs). */
#define S_ALIVE(self) \
    if ((self)->codec == NULL) { \
        PyErr_SetString (PyExc_RuntimeError, "the codec is gone"); \
        return NULL; \
    }

static PyObject *
s_default_method (PyObject *self, PyObject *obj)
{
    S_ALIVE ((s_hooks_t *) self);
    return s_hooks_default ((s_hooks_t *) self, obj);
}

static PyObject *
s_ext_hook_method (PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    S_ALIVE ((s_hooks_t *) self);
    return s_hooks_ext_hook ((s_hooks_t *) self, args, nargs);
}

static PyObject *
s_share_method (PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    S_ALIVE ((s_hooks_t *) self);
    return s_hooks_share ((s_hooks_t *) self, args, nargs);
}

static PyObject *
s_descriptor_method (PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    S_ALIVE ((s_hooks_t *) self);
    return s_hooks_descriptor ((s_hooks_t *) self, args, nargs);
}

#define S_FASTCALL(fn) (PyCFunction) (void (*) (void)) (fn), METH_FASTCALL

static PyMethodDef s_hooks_methods [] = {
    {"default", s_default_method, METH_O, "msgpack's default hook (pyi_py_codec.h)."},
    {"ext_hook", S_FASTCALL (s_ext_hook_method), "msgpack's ext hook (pyi_py_codec.h)."},
    {"share", S_FASTCALL (s_share_method), "EXT_SHARED for an array or tensor in a region, or None."},
    {"descriptor", S_FASTCALL (s_descriptor_method), "EXT_SHARED naming a descriptor."},
    {NULL, NULL, 0, NULL}
};

static PyTypeObject s_hooks_type = {
    PyVarObject_HEAD_INIT (NULL, 0)
    .tp_name = "pyisolate._native.Hooks",
    .tp_doc = "A codec's hot path for arrays and tensors in regions (pyi_py_codec.h).",
    .tp_basicsize = sizeof (s_hooks_t),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = s_hooks_new,
    .tp_dealloc = (destructor) s_hooks_dealloc,
    .tp_traverse = (traverseproc) s_hooks_traverse,
    .tp_clear = (inquiry) s_hooks_clear,
    .tp_methods = s_hooks_methods,
};

/* -- registration ----------------------------------------------------------------- */

static PyObject *
s_codec_setup (PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void) module;
    if (nargs != 3 || !PyType_Check (args [0]) || !PyType_Check (args [1])) {
        PyErr_SetString (PyExc_TypeError, "codec_setup takes (ExtType, error type, max_frames)");
        return NULL;
    }
    Py_ssize_t max_frames = PyLong_AsSsize_t (args [2]);
    if (max_frames == -1 && PyErr_Occurred ())
        return NULL;
    Py_XSETREF (s.ext_type, Py_NewRef (args [0]));
    Py_XSETREF (s.error, Py_NewRef (args [1]));
    s.max_frames = max_frames;
    Py_RETURN_NONE;
}

static PyObject *
s_codec_numpy (PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void) module;
    if (nargs != 2 || !PyType_Check (args [0])) {
        PyErr_SetString (PyExc_TypeError, "codec_numpy takes (ndarray, asarray)");
        return NULL;
    }
    Py_XSETREF (s.asarray, Py_NewRef (args [1]));
    Py_XSETREF (s.types [S_NUMPY], Py_NewRef (args [0]));
    Py_RETURN_NONE;
}

static PyObject *
s_codec_torch (PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void) module;
    if (nargs != 5 || !PyType_Check (args [0]) || !PyDict_CheckExact (args [1])) {
        PyErr_SetString (PyExc_TypeError, "codec_torch takes (Tensor, dtypes, to_dlpack, "
                                          "from_dlpack, cuda_init)");
        return NULL;
    }
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next (args [1], &pos, &key, &value))
        if (!PyTuple_CheckExact (value) || PyTuple_GET_SIZE (value) != 2) {
            PyErr_SetString (PyExc_TypeError, "dtypes maps to (code, bits)");
            return NULL;
        }
    Py_XSETREF (s.dtypes, Py_NewRef (args [1]));
    Py_XSETREF (s.to_dlpack, Py_NewRef (args [2]));
    Py_XSETREF (s.from_dlpack, Py_NewRef (args [3]));
    Py_XSETREF (s.cuda_init, Py_NewRef (args [4]));
    Py_XSETREF (s.types [S_TORCH], Py_NewRef (args [0]));
    Py_RETURN_NONE;
}

static PyObject *
s_codec_decode (PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void) module;
    int kind = nargs == 3 ? s_kind (args [0]) : -1;
    if (kind < 0 || !s.types [kind]) {
        PyErr_SetString (PyExc_TypeError, "decode takes (kind, descriptor, flags) of a "
                                          "registered kind");
        return NULL;
    }
    long flags = PyLong_AsLong (args [2]);
    if (flags == -1 && PyErr_Occurred ())
        return NULL;
    return s_new (kind, args [1], flags);
}

static PyMethodDef s_functions [] = {
    {"codec_setup", S_FASTCALL (s_codec_setup), "Hooks' ExtType, error and frame limit."},
    {"codec_numpy", S_FASTCALL (s_codec_numpy), "Hooks decode and share numpy arrays from now on."},
    {"codec_torch", S_FASTCALL (s_codec_torch), "Hooks decode and share torch tensors from now on."},
    {"codec_decode", S_FASTCALL (s_codec_decode),
     "A new array or tensor over what a descriptor names (kind registered)."},
    {NULL, NULL, 0, NULL}
};

int
pyi_py_codec_setup (PyObject *module)
{
    static bool ready = false;
    if (ready)
        return 0;
    struct { PyObject **slot; const char *text; } names [] = {
        {&s.kind [S_NUMPY], "numpy"}, {&s.kind [S_TORCH], "torch"},
        {&s.inline_, "_inline"}, {&s.oob, "_oob"}, {&s.counted, "_counted"},
        {&s.marks, "_marks"}, {&s.track, "_track"}, {&s.sent, "_sent_objs"},
        {&s.in, "_in"}, {&s.echo, "_echo"}, {&s.dtype, "dtype"}, {&s.is_conj, "is_conj"},
        {&s.is_neg, "is_neg"}, {&s.requires_grad, "requires_grad"},
    };
    for (size_t i = 0; i < sizeof (names) / sizeof (names [0]); i++) {
        *names [i].slot = PyUnicode_InternFromString (names [i].text);
        if (*names [i].slot == NULL)
            return -1;
    }
    if (PyType_Ready (&s_hooks_type) < 0
    ||  PyObject_SetAttrString (module, "Hooks", (PyObject *) &s_hooks_type) < 0)
        return -1;
    for (PyMethodDef *def = s_functions; def->ml_name; def++) {
        PyObject *fn = PyCFunction_NewEx (def, NULL, NULL);
        if (fn == NULL || PyObject_SetAttrString (module, def->ml_name, fn) < 0) {
            Py_XDECREF (fn);
            return -1;
        }
        Py_DECREF (fn);
    }
    ready = true;
    return 0;
}
