"""numpy arrays and torch CPU tensors over shared memory (docs/tensors.md).

An array crosses as a descriptor (pyi_tensor_pack: DLPack metadata plus a
span of a shared region); the receiver decodes it with the C decoder (which
validates it and maps the region) and hands the DLPack managed tensor to its
library, so both sides see the same bytes.

- Memory already in a region mapped here (made with :func:`empty` or
  :func:`share`, or received from another process) is described, never
  copied.
- Other memory is copied once into a new region (pyi_tensor_share). A torch
  tensor that is the only user of its storage is then moved onto the copy
  (``tensor.set_``), so passing it again is free; a numpy array cannot be
  re-pointed and is copied at each crossing unless it was made shared.
- A torch CUDA tensor crosses by CUDA IPC (docs/tensors.md, section 8): its
  descriptor names a CUDA region, which names the tensor's whole allocation
  by IPC handle; the receiver opens the handle once per process. The
  sending process keeps the tensor's storage alive (``_cuda_keep``) until
  the C library says no receiver holds the region any more
  (:func:`collect_cuda`, run at each CUDA crossing and when an extension
  process exits).
- numpy gets an ndarray over the region's memory through the buffer
  protocol (``np.asarray`` of a ``_native.Array``, which releases the region
  when the last array over it dies); a shared array is described the same
  way. torch consumes a legacy "dltensor" capsule through
  ``torch.from_dlpack``.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from . import _native as _native_mod
from ._core import ffi, last_error, lib

KDL_CPU = 1
KDL_CUDA = 2
_MAX_DESCRIPTOR = int(lib.PYI_TENSOR_MAX_DESCRIPTOR)
_MAX_NDIM = int(lib.PYI_TENSOR_MAX_NDIM)

if lib.pyi_py_install() != 0:  # pragma: no cover - only with a broken build
    raise ImportError("pyisolate._native: cannot install the DLPack capsule functions")
_capsule_versioned = _native_mod.dlpack_capsule_versioned
_capsule_legacy = _native_mod.dlpack_capsule
_array = _native_mod.array
_decode = _native_mod.codec_decode
describe_array = _native_mod.describe_array
received = _native_mod.received

# A region made by another process stays mapped here up to this long after
# its last use, while its name lives (docs/tensors.md, section 3): a tensor
# that crosses again costs one flock, not a new mapping.
LINGER_MS = 1000
lib.pyi_region_linger(LINGER_MS)


class TensorDescriptorError(ValueError):
    """A tensor descriptor from another process was refused (bad bounds,
    unknown region, malformed): the C decoder's reason is in the message."""


# -- dtypes -------------------------------------------------------------------
_NP_KINDS = {
    "i": (0, (1, 2, 4, 8)),
    "u": (1, (1, 2, 4, 8)),
    "f": (2, (2, 4, 8)),
    "c": (5, (8, 16)),
    "b": (6, (1,)),
}
_np_cache: dict[Any, tuple[int, int] | None] = {}


def numpy_dl_dtype(dtype: Any) -> tuple[int, int] | None:
    """(DLPack code, bits) of a numpy dtype, or None when DLPack has none
    (strings, objects, records, non-native byte order, long double)."""
    try:
        return _np_cache[dtype]
    except KeyError:
        pass
    out = None
    entry = _NP_KINDS.get(dtype.kind)
    if (
        entry is not None
        and dtype.isnative
        and dtype.fields is None
        and dtype.subdtype is None
        and dtype.itemsize in entry[1]
    ):
        out = (entry[0], dtype.itemsize * 8)
    _np_cache[dtype] = out
    return out


_torch_table: dict[Any, tuple[int, int]] | None = None


def torch_dl_dtype(torch: Any, dtype: Any) -> tuple[int, int] | None:
    global _torch_table
    if _torch_table is None:
        names = {
            "bool": (6, 8),
            "uint8": (1, 8),
            "int8": (0, 8),
            "int16": (0, 16),
            "int32": (0, 32),
            "int64": (0, 64),
            "uint16": (1, 16),
            "uint32": (1, 32),
            "uint64": (1, 64),
            "float16": (2, 16),
            "bfloat16": (4, 16),
            "float32": (2, 32),
            "float64": (2, 64),
            "complex32": (5, 32),
            "complex64": (5, 64),
            "complex128": (5, 128),
            # DLPack 1.1 float8 codes
            "float8_e4m3fn": (10, 8),
            "float8_e4m3fnuz": (11, 8),
            "float8_e5m2": (12, 8),
            "float8_e5m2fnuz": (13, 8),
        }
        table = {}
        for name, dl in names.items():
            dt = getattr(torch, name, None)
            if isinstance(dt, torch.dtype):
                table[dt] = dl
        _torch_table = table
    return _torch_table.get(dtype)


# -- raising the descriptor limit --------------------------------------------
_nofile_done = False


def _raise_nofile() -> None:
    """Each mapped region holds a file descriptor (its lock): let the
    process use as many as the hard limit allows."""
    global _nofile_done
    if _nofile_done:
        return
    _nofile_done = True
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        want = min(want, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except Exception:  # pragma: no cover - best effort
        pass


# -- C tensors ----------------------------------------------------------------
def _dltensor(
    ptr: int,
    shape: Any,
    strides: Any,
    code: int,
    bits: int,
    device: tuple[int, int] = (KDL_CPU, 0),
) -> tuple[Any, Any]:
    """A DLTensor (and the arrays that must outlive it) for memory at ptr."""
    t = ffi.new("DLTensor *")
    keep = (
        ffi.new("int64_t[]", list(shape)) if len(shape) else ffi.NULL,
        ffi.new("int64_t[]", list(strides)) if len(shape) else ffi.NULL,
    )
    t.data = ffi.cast("void *", ptr)
    t.device.device_type = device[0]
    t.device.device_id = device[1]
    t.ndim = len(shape)
    t.dtype.code = code
    t.dtype.bits = bits
    t.dtype.lanes = 1
    t.shape = keep[0]
    t.strides = keep[1]
    t.byte_offset = 0
    return t, keep


def _find(ptr: int) -> Any:
    """The region mapped here holding ptr (one reference), or None."""
    r = lib.pyi_region_find(ffi.cast("void *", ptr), ffi.NULL)
    return None if r == ffi.NULL else r


def region_name_at(ptr: int) -> str | None:
    r = _find(ptr)
    if r is None:
        return None
    try:
        name: bytes = ffi.string(lib.pyi_region_name(r))
        return name.decode()
    finally:
        lib.pyi_region_release(ffi.new("pyi_region_t **", r))


def release_region(r: Any) -> None:
    lib.pyi_region_release(ffi.new("pyi_region_t **", r))


def inline_copy(desc: Any) -> Any:
    """The inline form of a descriptor (its bytes after it), for a peer
    without shared memory; consumes the descriptor's in-flight count."""
    n = ffi.new("size_t *")
    p = lib.pyi_tensor_inline_copy(ffi.from_buffer(desc), len(desc), n)
    if p == ffi.NULL:
        raise ValueError(f"cannot send the tensor inline: {last_error()}")
    return ffi.buffer(ffi.gc(p, lib.pyi_tensor_free), n[0])


# Chunked inline form (docs/tensors.md, section 9): frames of this size
# (more when a tensor would need over MAX_CHUNKS of them).
INLINE_CHUNK = 1 << 20
MAX_CHUNKS = 64


def inline_chunks(desc: Any, budget: int) -> tuple[bytes, list[memoryview]]:
    """The chunked inline form of a descriptor: its inline head and at
    most ``budget`` (>= 1) chunks that lend the region's memory (which the
    chunks keep mapped); consumes the descriptor's in-flight count."""
    head = ffi.new("uint8_t[]", _MAX_DESCRIPTOR)
    head_length = ffi.new("size_t *")
    span = ffi.new("void **")
    length = ffi.new("size_t *")
    r = lib.pyi_tensor_inline_span(
        ffi.from_buffer(desc), len(desc), head, _MAX_DESCRIPTOR, head_length, span, length
    )
    if r == ffi.NULL:
        raise ValueError(f"cannot send the tensor inline: {last_error()}")
    n = int(length[0])
    # The region reference goes with the last view of its memory.
    owner = ffi.gc(ffi.cast("uint8_t *", span[0]), lambda _p, r=r: release_region(r))
    whole = memoryview(ffi.buffer(owner, n)).cast("B")
    count = max(1, min(-(-n // INLINE_CHUNK), MAX_CHUNKS, budget))
    step = max(1, -(-n // count))
    chunks = [whole[i : i + step] for i in range(0, n, step)]
    return bytes(ffi.buffer(head, head_length[0])), chunks


def discard(frames: Any, marks: tuple[int, ...]) -> None:
    """Give back the in-flight counts of the descriptors in frames (at the
    indexes marks) of a message that was never sent."""
    for i in marks:
        lib.pyi_tensor_discard(ffi.from_buffer(frames[i]), len(frames[i]))


def unsend_region(r: Any) -> None:
    """Undo pyi_tensor_pack's in-flight count (the message was not sent)."""
    lib.pyi_region_received(r)
    release_region(r)


def _pack(t: Any) -> bytes:
    buf = ffi.new("char[]", _MAX_DESCRIPTOR)
    n = lib.pyi_tensor_pack(t, buf, _MAX_DESCRIPTOR)
    if n < 0:
        raise ValueError(f"cannot describe the tensor: {last_error()}")
    desc: bytes = ffi.buffer(buf, n)[:]
    return desc


def _share(t: Any) -> Any:
    _raise_nofile()
    m = lib.pyi_tensor_share(t)
    if m == ffi.NULL:
        raise MemoryError(f"cannot copy the tensor into shared memory: {last_error()}")
    return m


# -- numpy --------------------------------------------------------------------
def numpy_from_versioned(np: Any, m: Any) -> Any:
    """An ndarray over the memory of DLManagedTensorVersioned m, which it
    takes (its deleter runs when the last array over it dies, or now on
    failure); read-only when m's flags say so. TypeError when numpy has no
    such dtype or m is not host memory."""
    return np.asarray(_array(m))


def numpy_tensor(np: Any, arr: Any) -> tuple[Any, Any] | None:
    """(DLTensor, keep-alive) for an ndarray, or None when DLPack cannot
    describe its dtype."""
    dl = numpy_dl_dtype(arr.dtype)
    if dl is None:
        return None
    item = arr.dtype.itemsize
    if any(s % item for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    ptr = arr.__array_interface__["data"][0]
    t, keep = _dltensor(ptr, arr.shape, [s // item for s in arr.strides], *dl)
    return t, (keep, arr)


def encode_numpy(np: Any, arr: Any) -> tuple[bytes, Any] | None:
    """(descriptor, region reference) for an ndarray: no copy when its memory
    is in a region mapped here, else a copy into a new region. None when its
    dtype does not travel by DLPack."""
    dl = numpy_dl_dtype(arr.dtype)
    if dl is None:
        return None
    item = arr.dtype.itemsize
    if any(s % item for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    ptr = arr.__array_interface__["data"][0]
    r = _find(ptr)
    if r is not None:
        try:
            made = numpy_tensor(np, arr)
            assert made is not None
            return _pack(made[0]), r
        except ValueError:
            # Not wholly inside that region (a view made with as_strided,
            # memory just past a region's end): copy it like any other.
            release_region(r)
            r = None
        except BaseException:
            release_region(r)
            raise
    made = numpy_tensor(np, arr)
    assert made is not None
    t, _keep = made  # _keep holds the array's memory while t is used
    return _describe_new(_share(t))


def _describe_new(m: Any) -> tuple[bytes, Any]:
    """(descriptor, region reference) of a tensor just made in a new region
    (DLManagedTensor m, taken: its deleter runs here; the region reference
    keeps the memory)."""
    r = None
    try:
        r = _find(int(ffi.cast("uintptr_t", m.dl_tensor.data)))
        desc = _pack(ffi.addressof(m, "dl_tensor"))
    except BaseException:
        if r is not None:
            release_region(r)
        raise
    finally:
        m.deleter(m)
    return desc, r


# -- torch --------------------------------------------------------------------
def torch_from_legacy(torch: Any, m: Any) -> Any:
    """A tensor over DLManagedTensor m (taken: its deleter runs when the
    tensor dies, or now on failure)."""
    return _from_dlpack(torch)(_capsule_legacy(m))


def torch_from_versioned(torch: Any, m: Any) -> Any:
    w = lib.pyi_tensor_wrap(ffi.addressof(m, "dl_tensor"))
    m.deleter(m)
    if w == ffi.NULL:
        raise ValueError(f"cannot wrap the shared tensor: {last_error()}")
    return torch_from_legacy(torch, w)


def _torch_dltensor(torch: Any, t: Any) -> tuple[Any, Any] | None:
    dl = torch_dl_dtype(torch, t.dtype)
    if dl is None:
        return None
    return _dltensor(t.data_ptr(), t.shape, t.stride(), *dl)


def torch_shareable(torch: Any, t: Any) -> bool:
    """Whether t crosses by descriptor: a strided CPU tensor of a DLPack
    dtype, or such a CUDA tensor when the CUDA driver is here (an empty
    CUDA tensor has no memory to name: it goes by value)."""
    if (
        t.layout != torch.strided
        or t.is_quantized
        or getattr(t, "is_nested", False)
        or torch_dl_dtype(torch, t.dtype) is None
    ):
        return False
    kind = t.device.type
    return kind == "cpu" or (kind == "cuda" and t.numel() > 0 and cuda_available())


# -- the fast path: arrays and tensors already in a region ----------------------
# The codec's C hooks (pyi_py_codec.h) describe and decode them, once their
# kind is registered here: when this process first sends or receives one.
_registered: set[str] = set()


def register(kind: str) -> None:
    """Let the codec's C hooks share and decode kind ("numpy" or "torch",
    imported here) from now on."""
    if kind in _registered:
        return
    _raise_nofile()  # each region mapped holds a descriptor
    if kind == "numpy":
        np = sys.modules["numpy"]
        _native_mod.codec_numpy(np.ndarray, np.asarray)
    else:
        torch = sys.modules["torch"]
        torch_dl_dtype(torch, torch.float32)  # fills _torch_table
        assert _torch_table is not None
        _native_mod.codec_torch(
            torch.Tensor, _torch_table, torch._C._to_dlpack, _from_dlpack(torch), torch.cuda.init
        )
    _registered.add(kind)


_torch_from_dlpack: Any = None


def _from_dlpack(torch: Any) -> Any:
    # torch.from_dlpack hands a capsule to this after a few Python checks.
    global _torch_from_dlpack
    _torch_from_dlpack = getattr(torch._C, "_from_dlpack", None) or torch.from_dlpack
    return _torch_from_dlpack


# -- CUDA -----------------------------------------------------------------------
_cuda_ok: bool | None = None
# region name -> {storage address: storage}: what this process keeps alive
# for the CUDA regions it exported, until no receiver holds them.
_cuda_keep: dict[str, dict[int, Any]] = {}
_cuda_lock = threading.Lock()


def cuda_available() -> bool:
    global _cuda_ok
    if _cuda_ok is None:
        _cuda_ok = bool(lib.pyi_cuda_available())
    return _cuda_ok


def collect_cuda() -> int:
    """Let go of the CUDA storages kept alive for regions that no other
    process maps and no message names any more; how many regions ended."""
    if not _cuda_keep:
        return 0
    names = ffi.new("char[16][64]")
    total = 0
    while True:
        n: int = lib.pyi_region_collect(names, 16)
        with _cuda_lock:
            for i in range(n):
                _cuda_keep.pop(ffi.string(names[i]).decode(), None)
        total += n
        if n < 16:
            return total


def _exported_here(name: str) -> bool:
    """Whether region name ("/pyi-<session>-<creator>-<seq>") was made here."""
    parts = name.rsplit("-", 2)
    return len(parts) == 3 and parts[1] == str(os.getpid())


def encode_cuda(torch: Any, t: Any) -> tuple[bytes, Any]:
    """(descriptor, region reference) for a CUDA tensor (torch_shareable):
    its allocation is exported once (the device is synchronized first), and
    this process keeps the storage alive until every receiver let go."""
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    collect_cuda()
    r = lib.pyi_region_find_cuda(ffi.cast("void *", t.data_ptr()), t.device.index or 0, ffi.NULL)
    if r == ffi.NULL:
        raise ValueError(f"cannot share the CUDA tensor: {last_error()}")
    try:
        dl = torch_dl_dtype(torch, t.dtype)
        assert dl is not None
        dlt, _keep = _dltensor(
            t.data_ptr(), t.shape, t.stride(), *dl, device=(KDL_CUDA, t.device.index or 0)
        )
        desc = _pack(dlt)
        name = ffi.string(lib.pyi_region_name(r)).decode()
        if _exported_here(name):
            storage = t.untyped_storage()
            with _cuda_lock:
                _cuda_keep.setdefault(name, {})[storage.data_ptr()] = storage
    except BaseException:
        release_region(r)
        raise
    return desc, r


def _storage_users(torch: Any, t: Any) -> int:
    """How many tensors (and storage objects) use t's storage, t included;
    a large number when torch cannot say."""
    try:
        storage = t.untyped_storage()
        # minus the storage object just made
        return int(torch._C._storage_Use_Count(storage._cdata)) - 1
    except Exception:
        return 1 << 30


def _move(torch: Any, t: Any) -> bool:
    """Move t's storage into a new region: copy its bytes, then re-point t
    (and its base, when the two are the storage's only users) with the same
    offsets and strides. False (nothing changed) when other tensors, storage
    objects or ``.numpy()`` arrays also use the storage: re-pointing t alone
    would split them."""
    users = _storage_users(torch, t)
    base = t._base
    if users == 1:
        group = [t]
    elif users == 2 and base is not None and base._base is None:
        group = [base, t]
    else:
        return False
    old = t.untyped_storage()
    nbytes = old.nbytes()
    raw = torch_from_versioned(torch, _empty((nbytes,), (1, 8)))
    new = raw.untyped_storage()
    new.copy_(old)
    done = []
    try:
        with torch.no_grad():
            for x in group:
                x.set_(new, x.storage_offset(), x.shape, x.stride())
                done.append(x)
    except Exception:
        with torch.no_grad():
            for x in done:
                x.set_(old, x.storage_offset(), x.shape, x.stride())
        return False
    return True


_move_lock = threading.Lock()


def _empty_descriptor(t: Any) -> tuple[bytes, Any]:
    """A descriptor of a new empty region for an empty tensor (torch gives
    empty tensors no address to find)."""
    dl = torch_dl_dtype(sys.modules["torch"], t.dtype)
    assert dl is not None
    return _describe_new(_empty(tuple(t.shape), dl))


def encode_torch(torch: Any, t: Any) -> tuple[bytes, Any]:
    """(descriptor, region reference) for a CPU tensor (torch_shareable):
    no copy when it lives in a region mapped here; else its storage is moved
    into a new region (one copy) when nothing else uses it, or its elements
    are copied into a new region at each crossing."""
    if t.device.type == "cuda":
        return encode_cuda(torch, t)
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    if t.numel() == 0:
        return _empty_descriptor(t)
    ptr = t.data_ptr()
    r = _find(ptr)
    if r is not None:
        try:
            made = _torch_dltensor(torch, t)
            assert made is not None  # torch_shareable checked the dtype
            return _pack(made[0]), r
        except ValueError:  # not wholly inside that region: copy it
            release_region(r)
            r = None
            src = share_torch(torch, t)
            r = _find(src.data_ptr())
        except BaseException:
            release_region(r)
            raise
    else:
        with _move_lock:
            moved = _move(torch, t)
        src = t if moved else share_torch(torch, t)
        r = _find(src.data_ptr())
    dlt, _keep = _torch_dltensor(torch, src)  # type: ignore[misc]
    try:
        return _pack(dlt), r
    except BaseException:
        if r is not None:
            release_region(r)
        raise


def share_torch(torch: Any, t: Any, dlt: Any = None) -> Any:
    """A C-contiguous region-backed copy of CPU tensor t."""
    if dlt is None:
        if t.is_conj() or t.is_neg():
            t = t.resolve_conj().resolve_neg()
        made = _torch_dltensor(torch, t)
        if made is None:
            raise TypeError(f"torch dtype {t.dtype} cannot live in shared memory")
        dlt, _keep = made
    m = _share(dlt)
    out = torch_from_versioned(torch, m)
    if t.requires_grad:
        out.requires_grad_(True)
    return out


# -- decoding -----------------------------------------------------------------
FLAG_REQUIRES_GRAD = 1
FLAG_READ_ONLY = 2


def decode(kind: str, desc: Any, flags: int, chunks: list[Any] | None = None) -> Any:
    """The array or tensor a descriptor names (validated by C); chunks: the
    frames of a chunked inline descriptor."""
    if chunks is None and kind in ("numpy", "torch") and kind in sys.modules:
        # One-frame descriptors: the C decoder the codec's ext hook uses.
        register(kind)
        x = _decode(kind, desc, flags)
        if (
            kind == "torch"
            and flags & FLAG_REQUIRES_GRAD
            and (x.is_floating_point() or x.is_complex())
        ):
            x.requires_grad_(True)
        return x
    _raise_nofile()
    data = ffi.from_buffer(desc)
    size = len(desc)
    if chunks is not None:
        keep = [ffi.from_buffer(c) for c in chunks]  # alive during the call
        ptrs = ffi.new("void *[]", keep or 1)
        sizes = ffi.new("size_t[]", [len(c) for c in keep] or 1)
    if kind == "torch":
        torch = _import(
            "torch",
            data,
            size,
            "received a torch tensor, but torch is not importable in this "
            "process (load the extension with share_torch=True)",
        )
        m = (
            lib.pyi_tensor_decode(data, size)
            if chunks is None
            else lib.pyi_tensor_decode_chunked(data, size, ptrs, sizes, len(keep))
        )
        if m == ffi.NULL:
            raise TensorDescriptorError(f"refused a tensor descriptor: {last_error()}")
        if m.dl_tensor.device.device_type == KDL_CUDA:
            try:
                torch.cuda.init()
            except BaseException:
                m.deleter(m)
                raise
        t = torch_from_legacy(torch, m)
        if flags & FLAG_REQUIRES_GRAD and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        return t
    if kind == "numpy":
        np = _import(
            "numpy",
            data,
            size,
            "received a numpy array, but numpy is not importable in this process "
            "(an extension needs numpy in its dependencies)",
        )
        read_only = 1 if flags & FLAG_READ_ONLY else 0
        m = (
            lib.pyi_tensor_decode_versioned(data, size, read_only)
            if chunks is None
            else lib.pyi_tensor_decode_chunked_versioned(
                data, size, ptrs, sizes, len(keep), read_only
            )
        )
        if m == ffi.NULL:
            raise TensorDescriptorError(f"refused an array descriptor: {last_error()}")
        return numpy_from_versioned(np, m)
    raise TensorDescriptorError(f"unknown shared value kind {kind!r}")


def _import(name: str, data: Any, size: int, why: str) -> Any:
    mod = sys.modules.get(name)
    if mod is not None:
        return mod
    try:
        return __import__(name)
    except ImportError:
        # Consume the descriptor all the same (its region's in-flight count).
        m = lib.pyi_tensor_decode(data, size)
        if m != ffi.NULL:
            m.deleter(m)
        raise TypeError(why) from None


# -- public helpers -------------------------------------------------------------
def empty(shape: Any, dtype: Any = "float32", like: str = "numpy") -> Any:
    """A zeroed, C-contiguous numpy array (like="numpy") or torch CPU tensor
    (like="torch") allocated in shared memory, so that even its first
    crossing to an extension costs no copy. ``dtype`` is anything numpy's
    (or torch's) dtype accepts."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if len(shape) > _MAX_NDIM or any(s < 0 for s in shape):
        raise ValueError(f"bad shape {shape}")
    _raise_nofile()
    if like == "numpy":
        import numpy as np

        dt = np.dtype(dtype)
        dl = numpy_dl_dtype(dt)
        if dl is None:
            raise TypeError(
                f"numpy dtype {dt} cannot live in shared memory (DLPack has no such type)"
            )
        m = _empty(shape, dl)
        return numpy_from_versioned(np, m)
    if like == "torch":
        import torch

        if not isinstance(dtype, torch.dtype):
            import numpy as np

            dtype = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
        dl = torch_dl_dtype(torch, dtype)
        if dl is None:
            raise TypeError(f"torch dtype {dtype} cannot live in shared memory")
        m = _empty(shape, dl)
        return torch_from_versioned(torch, m)
    raise ValueError(f"like must be 'numpy' or 'torch', not {like!r}")


def _empty(shape: tuple[int, ...], dl: tuple[int, int]) -> Any:
    dtype = ffi.new("DLDataType *")
    dtype.code, dtype.bits, dtype.lanes = dl[0], dl[1], 1
    c_shape = ffi.new("int64_t[]", list(shape) or [0])
    m = lib.pyi_tensor_empty(len(shape), c_shape, dtype[0])
    if m == ffi.NULL:
        raise MemoryError(f"cannot allocate shared memory: {last_error()}")
    return m


def share(x: Any) -> Any:
    """A copy of numpy array or torch CPU tensor x in shared memory (the
    same library, dtype, shape and values, C-contiguous): passing it to an
    extension, and again, costs no copy."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.ndarray):
        made = numpy_tensor(np, x)
        if made is None:
            raise TypeError(f"numpy dtype {x.dtype} cannot live in shared memory")
        return numpy_from_versioned(np, _share(made[0]))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu" or not torch_shareable(torch, x):
            raise TypeError(
                f"only CPU strided tensors of DLPack dtypes can live in shared "
                f"memory (got {x.dtype} on {x.device}; CUDA tensors cross by "
                f"CUDA IPC as they are)"
            )
        return share_torch(torch, x)
    raise TypeError(
        f"pyisolate.share takes a numpy array or a torch tensor, not {type(x).__qualname__}"
    )


def region_name(x: Any) -> str | None:
    """The name of the shared region ("/pyi-...") that holds the memory of
    numpy array or torch tensor x in this process, or None when x is not in
    shared memory (it would be copied at its next crossing)."""
    np = sys.modules.get("numpy")
    if np is not None and isinstance(x, np.ndarray):
        return region_name_at(x.__array_interface__["data"][0])
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type not in ("cpu", "cuda"):
            return None
        return region_name_at(x.data_ptr())
    raise TypeError(f"expected a numpy array or a torch tensor, not {type(x).__qualname__}")


def mapped_regions() -> int:
    """How many shared regions this process maps now and uses (diagnostics;
    lingering mappings not counted)."""
    return int(lib.pyi_region_mapped())


def lingering() -> int:
    """How many regions linger here (mapped, unused; diagnostics)."""
    return int(lib.pyi_region_lingering())


def trim() -> int:
    """Unmap the lingering mappings now; how many there were."""
    return int(lib.pyi_region_trim())
