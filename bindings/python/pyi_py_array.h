/*  pyi_py_array: numpy arrays over region memory, through the buffer
    protocol (PEP 3118).

    An Array object holds a DLManagedTensorVersioned (a region reference)
    and exports its memory with the tensor's shape, strides and a struct
    format; numpy.asarray (Array) makes an ndarray over it without a copy,
    read-only when the tensor's flags say so. The tensor's deleter runs
    when the Array goes, which is when the last array or view over it
    goes. Reading an array the other way (describe_array) also takes its
    buffer, so neither direction calls into numpy's Python API.

    Internal to the bridge (it needs Python.h: not read by ffi_build.py).
*/
#ifndef PYI_PY_ARRAY_H_INCLUDED
#define PYI_PY_ARRAY_H_INCLUDED

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pyisolate/pyisolate.h>

/*  Prepare the Array type, once. With the GIL. 0, or -1 (exception set). */
int pyi_py_array_setup (void);

/*  An Array over m, which it takes (its deleter runs now on failure).
    NULL with TypeError when numpy has no type for the tensor (not host
    memory, or a DLPack dtype without a buffer format), or another
    exception. */
PyObject *pyi_py_array_new (DLManagedTensorVersioned *m);

/*  The descriptor (pyi_tensor_pack, counted in flight) of the memory obj
    exports through the buffer protocol, and whether it is read-only, as
    (bytes, bool); None when it has no buffer, its format is not a DLPack
    dtype, its strides are not whole elements, or it is not wholly inside
    a region mapped here. NULL only with an exception from Python. */
PyObject *pyi_py_array_describe (PyObject *obj);

/*  pyi_py_array_describe's descriptor alone (bytes), or None; *readonly
    says whether the buffer is read-only. */
PyObject *pyi_py_array_descriptor (PyObject *obj, int *readonly);

#endif
