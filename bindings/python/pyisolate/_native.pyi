"""Types of pyisolate._native, the cffi module ffi_build.py generates, and of
the functions pyi_py_install adds to it (bindings/python/pyi_py.h)."""

from collections.abc import Sequence
from typing import Any

import _cffi_backend

# The module's FFI and lib, typed Any: the functions, constants and C data
# (struct fields, ffi.string's result) they give are typed by the cdef, which
# ffi_build.py generates from the headers at build time; a stub per symbol
# would copy it by hand. (types-cffi's FFI knows no struct field.)
ffi: Any
lib: Any

# recv_client / recv_worker / recv_lane: None when nothing waits, else
# (command, id, service, code, text, timeout_ms, frames, services, answer_inline);
# frames hold bytes (frame 0), bytearrays or memoryviews.
_Received = tuple[int, int, str, int, str, int, list[Any], list[str], bool]

def recv_client(client: _cffi_backend._CDataBase, /) -> _Received | None: ...
def recv_worker(worker: _cffi_backend._CDataBase, /) -> _Received | None: ...
def recv_lane(lane: _cffi_backend._CDataBase, /) -> _Received | None: ...

# The senders: 0 sent; 1 the send queue is full; -1 failed; -2 too many frames.
def client_request(
    client: _cffi_backend._CDataBase,
    service: bytes,
    id: int,
    timeout_ms: int,
    frames: Sequence[Any],
    marks: tuple[int, ...] = ...,
    /,
) -> int: ...
def worker_reply(
    worker: _cffi_backend._CDataBase,
    id: int,
    frames: Sequence[Any],
    marks: tuple[int, ...] = ...,
    /,
) -> int: ...
def worker_error(
    worker: _cffi_backend._CDataBase, id: int, code: int, text: bytes, frames: Sequence[Any], /
) -> int: ...

# A message on a lane: the bytes queued after it (>= 0); -1 failed; -2 too many frames.
def lane_send(
    lane: _cffi_backend._CDataBase,
    now: bool,
    command: int,
    id: int,
    service: bytes,
    timeout_ms: int,
    code: int,
    text: bytes,
    frames: Sequence[Any],
    marks: tuple[int, ...] = ...,
    /,
) -> int: ...

# A DLPack capsule over a DLManagedTensorVersioned * (resp. DLManagedTensor *), taken.
def dlpack_capsule_versioned(tensor: _cffi_backend._CDataBase, /) -> object: ...
def dlpack_capsule(tensor: _cffi_backend._CDataBase, /) -> object: ...

# An object exporting a DLManagedTensorVersioned's memory by the buffer
# protocol (numpy.asarray takes it); the tensor is taken.
class Array: ...

def array(tensor: _cffi_backend._CDataBase, /) -> Array: ...
def describe_array(obj: object, /) -> tuple[bytes, bool] | None: ...
def received(descriptor: bytes | bytearray | memoryview, /) -> bool: ...

# The codec's msgpack hooks in C (pyi_py_codec.h).
class Hooks:
    def __init__(self, codec: object, default: object, ext_hook: object, /) -> None: ...
    def default(self, obj: object, /) -> Any: ...
    def ext_hook(self, code: int, data: bytes, /) -> Any: ...
    def share(self, obj: object, is_torch: bool, /) -> Any: ...
    def descriptor(self, kind: str, desc: bytes, flags: int, mark: bool, /) -> Any: ...

def codec_setup(ext_type: type, error: type, max_frames: int, /) -> None: ...
def codec_numpy(ndarray: type, asarray: object, /) -> None: ...
def codec_decode(kind: str, descriptor: bytes | bytearray | memoryview, flags: int, /) -> Any: ...
def codec_torch(
    tensor: type,
    dtypes: dict[Any, tuple[int, int]],
    to_dlpack: object,
    from_dlpack: object,
    cuda_init: object,
    /,
) -> None: ...
