/*  pyi_py_codec: the codec's hot path for arrays and tensors in regions.

    A Hooks object belongs to one _serialize.Codec and reads and fills the
    state of the message that codec is making or reading (its attributes
    _inline, _oob, _counted, _marks, _track, _sent_objs, _in, _echo). It
    gives the codec three calls:

        hooks.default (obj)            msgpack's default hook
            an exact numpy.ndarray or torch.Tensor that lies wholly in a
            region mapped here becomes EXT_SHARED naming a new descriptor
            frame, counted in flight (as Codec._ndarray and _tensor make
            it); anything else goes to the Codec's own _default.
        hooks.ext_hook (code, data)    msgpack's ext hook
            the compact EXT_SHARED form (head, frame index, flags) of a
            registered kind is decoded here: the argument sent, when the
            answer names it back (the codec's _echo), else a new array or
            tensor over the region; anything else goes to the Codec's own
            _ext_hook.
        hooks.share (obj, is_torch)    -> EXT_SHARED, or None
            the describing step of default for any ndarray (is_torch
            false) or Tensor, subclasses too: None when obj is not wholly
            in a region mapped here, or the message is inline.
        hooks.descriptor (kind, desc, flags, mark) -> EXT_SHARED
            desc (a buffer: a descriptor, or an inline one with its data)
            in a body frame of its own, marked when mark; or its bytes
            inside the ext when the message has no frame left.

    A kind is decoded here once registered (codec_numpy, codec_torch),
    which _tensors.py does when it first meets one; until then, and for
    torch tensors with flags, the Codec's Python path decodes. Module
    functions (pyi_py.c adds them to pyisolate._native):

        codec_setup (ExtType, TensorDescriptorError, max_frames)
        codec_numpy (numpy.ndarray, numpy.asarray)
        codec_torch (torch.Tensor, {dtype: (code, bits)}, torch._C._to_dlpack,
                     torch._C._from_dlpack, torch.cuda.init)
        codec_decode (kind, descriptor, flags) -> a new array or tensor
            over what the descriptor names, as the ext hook makes it
            (kind registered; flags: read-only for numpy, ignored for
            torch); TensorDescriptorError when refused.

    Internal to the bridge (it needs Python.h: not read by ffi_build.py).
*/
#ifndef PYI_PY_CODEC_H_INCLUDED
#define PYI_PY_CODEC_H_INCLUDED

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pyisolate/pyisolate.h>

/*  Prepare the Hooks type and add it and the codec_* functions to module.
    With the GIL. 0, or -1 (exception set). */
int pyi_py_codec_setup (PyObject *module);

/*  From pyi_py.c: the descriptor (bytes, counted in flight) of the CPU
    tensor of DLPack dtype (code, bits) an unused DLPack capsule holds, or
    None; NULL with an exception. */
PyObject *pyi_py_describe_capsule (PyObject *capsule, long code, long bits);

/*  From pyi_py.c: an unused "dltensor" capsule over m, which it takes (its
    deleter runs when nobody consumed it, or now on failure). */
PyObject *pyi_py_capsule_legacy (DLManagedTensor *m);

#endif
