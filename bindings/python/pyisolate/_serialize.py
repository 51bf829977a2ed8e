"""Values across the boundary: msgpack with extension types.

Native msgpack carries None, bool, int (64-bit), float, str, bytes, list and
dict (any msgpack-able keys: an int key stays an int). Extension types carry
the rest: tuple (stays a tuple), set, frozenset, big ints, numpy arrays and
torch CPU tensors (shared memory: EXT_SHARED, see _tensors.py; numpy scalars
become Python scalars), arrays of dtypes DLPack lacks and CUDA tensors (by
value: EXT_NDARRAY, EXT_TENSOR), and references to objects that stay on
their side (host callables, singletons). Anything else raises TypeError
naming the type and where it sat. Pickle is never used.

EXT_SHARED holds msgpack [kind, descriptor, flags]: kind "numpy" or
"torch"; descriptor the index of the body frame that holds the C descriptor
(pyi_tensor_pack), or the descriptor's bytes themselves when the message has
no frames left; flags bit 0: requires_grad (torch), bit 1: read-only (numpy).
For a receiver without shared memory a large array goes in the chunked inline
form, [kind, descriptor, flags, count]: the descriptor frame is followed by
count frames of its bytes (docs/tensors.md, section 9).
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import msgpack

from . import _native, _tensors

EXT_TUPLE = 1
EXT_SET = 2
EXT_FROZENSET = 3
EXT_BIGINT = 4
EXT_NDARRAY = 5
EXT_TENSOR = 6
EXT_REF = 7
EXT_SHARED = 8
EXT_PICKLE = 9

# Buffers from this size on travel as their own body frames.
OOB_THRESHOLD = 64 * 1024
MAX_OOB_FRAMES = 200

_INT_MIN = -(2**63)
_NO_ECHO: Mapping[tuple[str, bytes, int], Any] = MappingProxyType({})
_native.codec_setup(msgpack.ExtType, _tensors.TensorDescriptorError, MAX_OOB_FRAMES)
# The encoders of numpy.ndarray and torch.Tensor by exact type, which the
# packer's default hook tries first (filled when _convert meets one).
_ARRAY_ENCODERS: dict[type, Callable[[Codec, Any, str], Any]] = {}
_INT_MAX = 2**64 - 1

# (service, object id, kind, label) for a reference, or None when the
# object cannot be referenced.
RefEncoder = Callable[[Any], "tuple[str, str, str, str] | None"]
RefDecoder = Callable[[str, str, str, str], Any]


class Codec:
    """Encodes and decodes values; refs are delegated to the RPC node."""

    def __init__(self, encode_ref: RefEncoder, decode_ref: RefDecoder) -> None:
        self._encode_ref = encode_ref
        self._decode_ref = decode_ref
        # Large array/tensor buffers of the message being encoded: they travel
        # as extra body frames instead of being copied into the msgpack frame.
        self._oob: list[Any] | None = None
        self._in: list[Any] = []
        # Regions described in the message being encoded (one reference each).
        self._sent: list[Any] | None = None
        # Descriptors made by the fast path (_described), each counted in
        # flight on its region: given back if the message is not made.
        self._counted: list[bytes] = []
        # Frame indexes of the tensor descriptors of the message being
        # encoded; ``marks`` holds those of the last message encoded (the
        # header names them, so that a broker dropping the message gives
        # their regions back: pyi_msg_mark_descriptor).
        self._marks: list[int] = []
        self.marks: tuple[int, ...] = ()
        # Whether the message being encoded carries arrays and tensors in
        # inline form (its receiver shares no memory with this process);
        # set per message by the caller.
        self._inline = False
        # Packers are reused (making one per message costs more than the
        # message); a failed pack resets its buffer.
        self._packer = msgpack.Packer(strict_types=True, use_bin_type=True)
        # The hot path in C (pyi_py_codec.h): arrays and tensors in regions
        # both ways; everything else comes back to _default and _ext_hook.
        self._hooks = _native.Hooks(self, self._default, self._ext_hook)
        self._hook_ext = self._hooks.ext_hook
        self._fast = msgpack.Packer(
            default=self._hooks.default, strict_types=True, use_bin_type=True
        )
        # Whether the message being encoded or decoded may carry pickles
        # (ExtensionConfig.allow_pickle); set per message by the caller.
        self._pickle = False
        # A request's arrays and tensors described by the fast path, as
        # (kind, descriptor, flags, object): its answer gives back the
        # object for a descriptor that comes back unchanged (take_sent,
        # loads). Kept only while a request is encoded (_track).
        self._track = False
        self._sent_objs: list[tuple[str, bytes, int, Any]] = []
        self._echo: Mapping[tuple[str, bytes, int], Any] = _NO_ECHO

    # -- encoding ---------------------------------------------------------
    def dumps(
        self, obj: Any, where: str = "value", allow_pickle: bool = False, inline: bool = False
    ) -> list[Any]:
        """Pack obj into frames: [msgpack, buffer, ...]. ``where`` names the
        root in error messages; ``inline``: arrays and tensors as copies of
        their bytes, for a receiver without shared memory (docs/tensors.md,
        section 9)."""
        self._pickle = allow_pickle
        self._inline = inline
        return self._encode(obj, self._slow_value, (obj, where))

    def dumps_call(
        self,
        op: str,
        target: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        allow_pickle: bool = False,
        inline: bool = False,
    ) -> list[Any]:
        self._pickle = allow_pickle
        self._inline = inline
        if self._sent_objs:  # an earlier request's, never taken
            self._sent_objs = []
        self._track = True
        try:
            return self._encode(
                [op, target, method, list(args), kwargs],
                self._slow_call,
                (op, target, method, args, kwargs),
            )
        finally:
            self._track = False

    def take_sent(self) -> Mapping[tuple[str, bytes, int], Any]:
        """The arrays and tensors of the request just encoded (dumps_call)
        that crossed by descriptor, by (kind, descriptor, flags), for
        loads(sent=) of its answer (None where two objects had the same
        key); the codec keeps no reference to them."""
        if not self._sent_objs:
            return _NO_ECHO
        sent: dict[tuple[str, bytes, int], Any] = {}
        for kind, desc, flags, obj in self._sent_objs:
            key = (kind, desc, flags)
            sent[key] = obj if sent.get(key, obj) is obj else None
        self._sent_objs = []
        return sent

    def _slow_value(self, obj: Any, where: str) -> bytes:
        out: bytes = msgpack.packb(self._convert(obj, where), strict_types=True, use_bin_type=True)
        return out

    def _slow_call(
        self, op: str, target: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> bytes:
        conv_args = [self._convert(a, f"argument {i}") for i, a in enumerate(args)]
        conv_kwargs = {k: self._convert(v, f"keyword argument {k!r}") for k, v in kwargs.items()}
        out: bytes = msgpack.packb(
            [op, target, method, conv_args, conv_kwargs], strict_types=True, use_bin_type=True
        )
        return out

    def _encode(
        self, obj: Any, slow: Callable[..., bytes], slow_args: tuple[Any, ...]
    ) -> list[Any]:
        """Pack obj with the fast packer (msgpack with a default hook), else
        with slow(*slow_args) (a walk that knows where each value sits, for big ints
        and exact error messages). Shared regions described by a failed
        attempt get their in-flight count back; the others' references are
        released once the frames are made (the counts keep the regions for
        the receiver)."""
        self._oob = []
        self._sent = []
        self._marks = []
        self.marks = ()
        try:
            try:
                head = self._fast.pack(obj)
            except (TypeError, OverflowError, ValueError):
                self._unsend()
                self._oob = []
                self._marks = []
                head = slow(*slow_args)
            if not self._oob and not self._sent and not self._counted:
                return [head]  # the common case: no buffers, no regions
            self.marks = tuple(self._marks)
            frames = [head, *self._oob]
            for r in self._sent:
                _tensors.release_region(r)
            self._sent = []
            self._counted = []
            return frames
        finally:
            if self._sent or self._counted:
                self._unsend()
            self._oob = None
            self._sent = None

    def _unsend(self) -> None:
        self._sent_objs = []
        sent, self._sent = self._sent, []
        for r in sent or ():
            _tensors.unsend_region(r)
        counted, self._counted = self._counted, []
        for desc in counted:
            _tensors.discard([desc], (0,))

    def _buffer(self, data: Any) -> Any:
        """A contiguous byte buffer: sent out of band when large, else inline."""
        mv = memoryview(data).cast("B")
        if (
            self._oob is not None
            and mv.nbytes >= OOB_THRESHOLD
            and len(self._oob) < MAX_OOB_FRAMES
        ):
            self._oob.append(mv)
            return len(self._oob)  # frame index (frame 0 is the msgpack head)
        return mv.tobytes()

    def _default(self, obj: Any) -> Any:
        encode = _ARRAY_ENCODERS.get(type(obj))
        if encode is not None:
            return encode(self, obj, "value")
        return self._convert(obj, "value")

    def _descriptor(self, kind: str, desc: bytes, flags: int, mark: bool) -> Any:
        """EXT_SHARED naming desc in a body frame of its own (marked when
        mark), or holding its bytes when the message is out of frames."""
        return self._hooks.descriptor(kind, desc, flags, mark)

    def _shared(self, kind: str, made: tuple[bytes, Any], flags: int = 0) -> Any:
        desc, region = made
        oob = self._oob
        budget = MAX_OOB_FRAMES - len(oob) if oob is not None else 0
        if self._inline and oob is not None and budget >= 2:
            # The chunked inline form: the descriptor, then frames lending
            # the region's memory (docs/tensors.md, section 9).
            try:
                head, chunks = _tensors.inline_chunks(desc, budget - 1)
            finally:
                _tensors.release_region(region)
            oob.append(head)
            at = len(oob)
            oob.extend(chunks)
            return msgpack.ExtType(EXT_SHARED, self._pack([kind, at, flags, len(chunks)]))
        if self._inline:
            # The bytes themselves (the descriptor's count is consumed).
            try:
                desc = _tensors.inline_copy(desc)
            finally:
                _tensors.release_region(region)
        elif self._sent is not None:
            self._sent.append(region)
        else:  # pragma: no cover - always inside dumps
            _tensors.release_region(region)
        return self._descriptor(kind, desc, flags, not self._inline)

    def _pack(self, obj: Any) -> bytes:
        # Never re-entered: obj is already converted (ExtTypes packed).
        out: bytes = self._packer.pack(obj)
        return out

    def _convert(self, obj: Any, path: str) -> Any:  # noqa: C901 - one dispatch
        t = type(obj)
        if obj is None or t is bool or t is str or t is bytes or t is float:
            return obj
        if t is int:
            if _INT_MIN <= obj <= _INT_MAX:
                return obj
            return msgpack.ExtType(EXT_BIGINT, str(obj).encode())
        if t is list:
            return [self._convert(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        if t is tuple:
            return msgpack.ExtType(
                EXT_TUPLE,
                self._pack([self._convert(v, f"{path}[{i}]") for i, v in enumerate(obj)]),
            )
        if t is dict:
            return {
                self._convert(k, f"{path} key {k!r}"): self._convert(v, f"{path}[{k!r}]")
                for k, v in obj.items()
            }
        if t is set or t is frozenset:
            code = EXT_SET if t is set else EXT_FROZENSET
            return msgpack.ExtType(
                code, self._pack([self._convert(v, f"{path} item {v!r}") for v in obj])
            )
        if t is bytearray or t is memoryview:
            return bytes(obj)
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(obj, np.ndarray):
                _tensors.register("numpy")
                if t is np.ndarray:
                    _ARRAY_ENCODERS[t] = Codec._ndarray
                return self._ndarray(obj, path)
            if isinstance(obj, np.generic):
                # numpy scalars travel as Python scalars: the other side may
                # have no numpy (np.float64 is a float anyway).
                return self._convert(obj.item(), path)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(obj, torch.Tensor):
            _tensors.register("torch")
            if t is torch.Tensor:
                _ARRAY_ENCODERS[t] = Codec._tensor
            return self._tensor(obj, path)
        ref = self._encode_ref(obj)
        if ref is not None:
            return msgpack.ExtType(EXT_REF, self._pack(list(ref)))
        # Subclasses of the plain types travel as the plain type.
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            return self._convert(int(obj), path)
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, bytes):
            return bytes(obj)
        if isinstance(obj, dict):
            return self._convert(dict(obj), path)
        if isinstance(obj, list):
            return self._convert(list(obj), path)
        if isinstance(obj, tuple):
            return self._convert(tuple(obj), path)
        if self._pickle:
            return msgpack.ExtType(EXT_PICKLE, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        raise TypeError(
            f"cannot send a value of type {t.__module__}.{t.__qualname__} "
            f"(at {path}) to another process: pyisolate carries None, bool, int, "
            f"float, str, bytes, list, tuple, dict, set, numpy arrays, torch tensors, "
            f"callables and ProxiedSingleton instances"
        )

    def _ndarray(self, obj: Any, path: str) -> Any:
        np = sys.modules["numpy"]
        got = self._hooks.share(obj, False)
        if got is not None:
            return got
        made = _tensors.encode_numpy(np, obj)
        if made is not None:
            return self._shared(
                "numpy", made, 0 if obj.flags.writeable else _tensors.FLAG_READ_ONLY
            )
        # By value: dtypes that DLPack does not describe (str, bytes, ...).
        scalar = False
        arr = obj
        if arr.dtype.hasobject or arr.dtype.fields is not None:
            raise TypeError(
                f"cannot send a numpy array of dtype {arr.dtype} (at {path}): "
                "only plain numeric, bool, bytes and str dtypes are carried"
            )
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        shape = list(arr.shape)
        data = self._buffer(arr.reshape(-1).view(np.uint8)) if arr.size else b""
        return msgpack.ExtType(EXT_NDARRAY, self._pack([arr.dtype.str, shape, data, scalar]))

    def _tensor(self, obj: Any, path: str) -> Any:
        torch = sys.modules["torch"]
        got = self._hooks.share(obj, True)
        if got is not None:
            return got
        if _tensors.torch_shareable(torch, obj):
            return self._shared(
                "torch", _tensors.encode_torch(torch, obj), 1 if obj.requires_grad else 0
            )
        # By value: CUDA tensors (for now), and dtypes/layouts DLPack lacks.
        t = obj.detach()
        device = str(t.device)
        if t.device.type != "cpu":
            t = t.cpu()
        t = t.contiguous()
        dtype = str(t.dtype).replace("torch.", "")
        if t.numel() == 0:
            data: Any = b""
        else:
            data = self._buffer(t.reshape(-1).view(torch.uint8).numpy())
        return msgpack.ExtType(
            EXT_TENSOR, self._pack([dtype, list(t.shape), data, device, bool(obj.requires_grad)])
        )

    # -- decoding ---------------------------------------------------------
    def loads(
        self,
        data: bytes,
        frames: list[Any] | None = None,
        allow_pickle: bool = False,
        sent: Mapping[tuple[str, bytes, int], Any] = _NO_ECHO,
    ) -> Any:
        """Unpack a msgpack frame; ``frames`` are the message's other body
        frames (out-of-band buffers: bytearrays, or read-only memoryviews
        from 64 KiB on). ``sent``: for the answer to a request, what
        take_sent gave after encoding it: an array or tensor that comes
        back as it went (the same descriptor, kind and flags) is the object
        that was sent, as a local call returning its argument gives."""
        if frames is not None:
            self._in = frames
            self._pickle = allow_pickle
            self._echo = sent
        try:
            return msgpack.unpackb(
                data, ext_hook=self._hook_ext, strict_map_key=False, raw=False, use_list=True
            )
        finally:
            if frames is not None:
                self._in = []
                self._echo = _NO_ECHO

    def _frame(self, ref: Any) -> Any:
        if isinstance(ref, int):
            if ref < 1:
                raise ValueError("message refers to a missing body frame")
            try:
                return self._in[ref - 1]
            except IndexError:
                raise ValueError("message refers to a missing body frame") from None
        return ref

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == EXT_TUPLE:
            return tuple(self.loads(data))
        if code == EXT_SET:
            return set(self.loads(data))
        if code == EXT_FROZENSET:
            return frozenset(self.loads(data))
        if code == EXT_BIGINT:
            return int(data.decode())
        if code == EXT_PICKLE:
            if not self._pickle:
                raise TypeError(
                    "received a pickled value from a peer not allowed to send "
                    "pickles (ExtensionConfig.allow_pickle)"
                )
            return pickle.loads(data)
        if code == EXT_NDARRAY:
            fields = msgpack.unpackb(data, raw=False)
            fields[2] = self._frame(fields[2])
            return _decode_ndarray(fields)
        if code == EXT_TENSOR:
            fields = msgpack.unpackb(data, raw=False)
            fields[2] = self._frame(fields[2])
            return _decode_tensor(fields)
        if code == EXT_SHARED:
            try:
                kind, ref, flags, *rest = msgpack.unpackb(data, raw=False)
                desc = self._frame(ref)
                chunks = None
                if rest:  # the chunked inline form: [kind, ref, flags, count]
                    (count,) = rest
                    if type(ref) is not int or type(count) is not int or count < 0:
                        raise ValueError("bad chunk count")
                    if ref + count > len(self._in):
                        raise ValueError("message refers to a missing chunk frame")
                    chunks = self._in[ref : ref + count]
                if not isinstance(flags, int) or not all(
                    isinstance(f, (bytes, bytearray, memoryview)) for f in [desc, *(chunks or ())]
                ):
                    raise ValueError("not a descriptor")
            except (ValueError, TypeError, msgpack.UnpackException) as exc:
                raise _tensors.TensorDescriptorError(
                    f"malformed shared array reference: {exc}"
                ) from None
            if chunks is None and self._echo and isinstance(kind, str):
                obj = self._echo.get((kind, bytes(desc), flags))
                if obj is not None and _tensors.received(desc):
                    return obj  # came back as it went (also in C: pyi_py_codec.c)
            return _tensors.decode(kind, desc, flags, chunks)
        if code == EXT_REF:
            service, oid, kind, label = msgpack.unpackb(data, raw=False)
            return self._decode_ref(service, oid, kind, label)
        raise TypeError(f"unknown pyisolate value type {code} received")


def _decode_ndarray(fields: list[Any]) -> Any:
    dtype, shape, data, scalar = fields
    try:
        import numpy as np
    except ImportError:
        raise TypeError(
            "received a numpy array, but numpy is not importable in this "
            "process (an extension needs numpy in its dependencies)"
        ) from None
    if isinstance(data, bytearray):  # an out-of-band frame: writable, ours alone
        arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)
    else:
        arr = np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape).copy()
    if scalar:
        return arr[()]
    return arr


def _decode_tensor(fields: list[Any]) -> Any:
    dtype_name, shape, data, device, requires_grad = fields
    try:
        import torch
    except ImportError:
        raise TypeError(
            "received a torch tensor, but torch is not importable in this "
            "process (load the extension with share_torch=True)"
        ) from None
    dtype = getattr(torch, dtype_name)
    if not data:
        t = torch.empty(shape, dtype=dtype)
    else:
        if not isinstance(data, bytearray):
            data = bytearray(data)
        t = torch.frombuffer(data, dtype=dtype).reshape(shape)
    if device != "cpu":
        try:
            t = t.to(device)
        except Exception:  # device not available on this side: keep it on the CPU
            pass
    if requires_grad and t.is_floating_point():
        t.requires_grad_(True)
    return t
