"""Shared arrays inside one process: the codec, the capsules' lifetime and
the public helpers (the cross-process behaviour is in test_tensors.py)."""

from __future__ import annotations

import gc
import os

import pytest

np = pytest.importorskip("numpy")


def _codec():
    from pyisolate._serialize import Codec

    return Codec(lambda o: None, lambda *a: None)


def _roundtrip(codec, value):
    frames = codec.dumps(value)
    return codec.loads(frames[0], [bytearray(f) for f in frames[1:]])


def _names() -> set[str]:
    """This process's regions in /dev/shm (named after its pid): other
    processes on the machine make and remove theirs meanwhile."""
    mine = f"pyi-{os.getpid()}-"
    return {n for n in os.listdir("/dev/shm") if n.startswith(mine)}


def test_codec_shares_memory_and_releases_it() -> None:
    import pyisolate
    from pyisolate import _tensors

    gc.collect()
    before, names = _tensors.mapped_regions(), _names()
    codec = _codec()
    x = pyisolate.empty((3, 4), "float32")
    y = _roundtrip(codec, {"x": x, "views": (x.T, x[::-1, ::2], x[1, 1:1])})
    assert pyisolate.region_name(y["x"]) == pyisolate.region_name(x)
    assert y["views"][0].strides == x.T.strides and y["views"][1].shape == (3, 2)
    y["views"][1][0, 1] = 5  # x[2, 2]
    assert x[2, 2] == 5
    plain = _roundtrip(codec, np.arange(6).reshape(2, 3)[:, ::-1])
    assert plain.flags.writeable and list(plain[0]) == [2, 1, 0]
    del x, y, plain
    gc.collect()
    assert _tensors.mapped_regions() == before
    assert _names() == names


def test_unconsumed_capsules_release_their_region() -> None:
    from pyisolate import _tensors

    gc.collect()
    before = _tensors.mapped_regions()
    cap = _tensors._capsule_versioned(_tensors._empty((4,), (2, 32)))
    assert _tensors.mapped_regions() == before + 1
    del cap
    assert _tensors.mapped_regions() == before
    m = _tensors._empty((2, 2), (0, 8))
    w = _tensors.lib.pyi_tensor_wrap(_tensors.ffi.addressof(m, "dl_tensor"))
    m.deleter(m)
    cap = _tensors._capsule_legacy(w)
    assert _tensors.mapped_regions() == before + 1
    del cap
    assert _tensors.mapped_regions() == before


def test_arrays_cross_by_the_buffer_protocol() -> None:
    """An array is described from its buffer and arrives as an ndarray over
    a _native.Array: dtype, shape, strides (its own on axes of length 0
    and 1), read-only flag and contiguity are what the buffer says, and the
    region goes with the last view."""
    import hashlib

    import pyisolate
    from pyisolate import _tensors

    gc.collect()
    before = _tensors.mapped_regions()
    base = pyisolate.share(np.arange(24, dtype=np.int64).reshape(2, 3, 4))
    for v in (base, base[:, ::2, 1:], base[::-1, :, ::-3], base[1, 2, 3:4], base[:, :1], base[:0]):
        desc, read_only = _tensors.describe_array(v)
        assert not read_only
        got = _tensors.decode("numpy", desc, 0)
        assert (got.dtype, got.shape, got.strides) == (v.dtype, v.shape, v.strides)
        assert (got == v).all() and got.flags.writeable
    frozen = base[1].view()
    frozen.flags.writeable = False
    desc, read_only = _tensors.describe_array(frozen)
    assert read_only
    got = _tensors.decode("numpy", desc, _tensors.FLAG_READ_ONLY)
    assert not got.flags.writeable
    with pytest.raises(TypeError):
        memoryview(got.base)[0, 0] = 1  # the exporter refuses writes too
    # a consumer that cannot walk strides gets contiguous memory or an error
    strided = _tensors.decode("numpy", _tensors.describe_array(base[:, ::2])[0], 0)
    with pytest.raises(BufferError):
        hashlib.sha256(strided.base.obj)
    whole = _tensors.decode("numpy", _tensors.describe_array(base)[0], 0)
    assert hashlib.sha256(whole.base.obj).digest() == hashlib.sha256(base).digest()
    # what the buffer protocol cannot describe takes the codec's slow path
    assert _tensors.describe_array(base.astype(">i8")) is None  # not in a region
    assert _tensors.describe_array(base.view(">i8")) is None  # byte order
    assert _tensors.describe_array(np.arange(3)) is None  # in no region
    assert _tensors.describe_array(np.array([object()])) is None
    assert _tensors.describe_array(np.array(["x"])) is None
    view = got[0:1]
    del base, v, got, frozen, strided, whole
    gc.collect()
    assert _tensors.mapped_regions() == before + 1  # view holds it
    del view
    gc.collect()
    assert _tensors.mapped_regions() == before


def test_bad_descriptors_raise() -> None:
    import pyisolate
    from pyisolate import _tensors

    for junk in (b"", b"\x90", b"\x97" + b"\x01" * 6, os.urandom(64)):
        for kind in ("numpy", "torch"):
            if kind == "torch":
                pytest.importorskip("torch")
            with pytest.raises(pyisolate.TensorDescriptorError, match="refused"):
                _tensors.decode(kind, junk, 0)
    with pytest.raises(pyisolate.TensorDescriptorError):
        _tensors.decode("pandas", b"\x90", 0)
    import msgpack

    from pyisolate._serialize import EXT_SHARED

    codec = _codec()
    for payload in ([1, 2], ["numpy", 5, 0], ["numpy", 0, 0], ["numpy", "x", 0]):
        head = msgpack.packb(msgpack.ExtType(EXT_SHARED, msgpack.packb(payload)))
        with pytest.raises(pyisolate.TensorDescriptorError):
            codec.loads(head, [])


def test_empty_share_region_name() -> None:
    import pyisolate

    plain = np.arange(5, dtype=np.int16)
    assert pyisolate.region_name(plain) is None
    s = pyisolate.share(plain[::-1])
    assert s.dtype == np.int16 and list(s) == [4, 3, 2, 1, 0] and s.flags.writeable
    assert pyisolate.region_name(s) is not None and pyisolate.region_name(s[2:]) is not None
    z = pyisolate.empty((), "complex128")
    assert z.shape == () and z == 0
    e = pyisolate.empty((0, 3), bool)
    assert e.shape == (0, 3) and e.dtype == bool
    with pytest.raises(TypeError):
        pyisolate.empty(3, "U4")
    with pytest.raises(ValueError):
        pyisolate.empty(3, "f4", like="jax")
    with pytest.raises(TypeError):
        pyisolate.share([1, 2])
    torch = pytest.importorskip("torch")
    t = pyisolate.empty((2, 3), torch.bfloat16, like="torch")
    assert t.dtype == torch.bfloat16 and pyisolate.region_name(t) is not None
    u = pyisolate.empty(4, "int32", like="torch")
    assert u.dtype == torch.int32
    c = pyisolate.share(torch.arange(6.0).reshape(2, 3).t())
    assert c.is_contiguous() and torch.equal(c, torch.arange(6.0).reshape(2, 3).t())
    assert pyisolate.region_name(c) is not None


def test_inline_chunks_lend_memory_and_are_checked() -> None:
    """For a receiver without shared memory a large array goes as its
    inline descriptor then frames of 1 MiB that lend the region's memory
    (no copy on the sender); the receiver joins them into a region of its
    own and refuses frames that do not add up to the descriptor."""
    import msgpack

    import pyisolate
    from pyisolate import _tensors
    from pyisolate._serialize import EXT_SHARED

    gc.collect()
    before = _tensors.mapped_regions()
    codec = _codec()
    a = pyisolate.empty((3 * 1024 + 5, 256), "float32")  # 3 MiB + 5 KiB
    a[...] = np.arange(a.size, dtype=np.float32).reshape(a.shape)
    frames = codec.dumps({"a": a, "v": a[::-3, 7::2]}, inline=True)
    assert codec.marks == ()  # inline: nothing for the broker to give back
    # head, then per array: its descriptor and 4 chunks
    assert len(frames) == 1 + 2 * 5
    chunks = frames[2:6]
    assert sum(len(c) for c in chunks) == a.nbytes and max(len(c) for c in chunks) <= 1 << 20
    lent = np.frombuffer(chunks[0], dtype=np.uint8)
    assert lent.ctypes.data == a.ctypes.data  # the array's own memory, not a copy
    del lent
    got = codec.loads(frames[0], list(frames[1:]))
    assert (got["a"] == a).all() and (got["v"] == a[::-3, 7::2]).all()
    assert pyisolate.region_name(got["a"]) != pyisolate.region_name(a)
    got["a"][0, 0] = -1
    assert a[0, 0] == 0
    # a hostile peer's chunks: one byte short, one more, a chunk missing,
    # a count past the frames, a negative count
    head = msgpack.unpackb(frames[0], raw=False)["a"]
    kind, at, flags, count = msgpack.unpackb(head.data, raw=False)
    assert (kind, at, count) == ("numpy", 1, 4)
    rest = list(frames[1:])
    for bad_frames, bad_count in (
        ([rest[0], *rest[1:4], bytes(rest[4])[:-1]], 4),
        ([rest[0], *rest[1:4], bytes(rest[4]) + b"x"], 4),
        (rest[:4], 3),
        (rest[:5], 5),
        (rest[:5], -1),
    ):
        ref = msgpack.ExtType(EXT_SHARED, msgpack.packb([kind, at, flags, bad_count]))
        with pytest.raises(pyisolate.TensorDescriptorError, match=r"malformed|refused"):
            codec.loads(msgpack.packb(ref), bad_frames)
    del frames, chunks, rest, bad_frames, got, a
    gc.collect()
    assert _tensors.mapped_regions() == before


def test_shared_reference_fast_form_is_msgpack() -> None:
    """The EXT_SHARED body the codec builds without the packer is the one
    the packer makes, and the reader's shortcut refuses what the full
    reader refuses (a missing frame, an unknown kind)."""
    import msgpack

    import pyisolate
    from pyisolate import _serialize, _tensors

    codec = _codec()
    x = pyisolate.empty((2, 3), "float32")
    x.flags.writeable = False
    frames = codec.dumps([x, x])
    head = msgpack.unpackb(frames[0], ext_hook=lambda code, data: (code, data))
    assert [code for code, _ in head] == [_serialize.EXT_SHARED] * 2
    assert [data for _, data in head] == [
        msgpack.packb(["numpy", i, _tensors.FLAG_READ_ONLY]) for i in (1, 2)
    ]
    y = codec.loads(frames[0], [bytearray(f) for f in frames[1:]])
    assert y[0].shape == (2, 3) and not y[0].flags.writeable
    del y
    # The same shape of body, naming a frame the message lacks, or a kind
    # nobody knows: refused like any bad reference.
    for body in (msgpack.packb(["torch", 3, 0]), msgpack.packb(["tensr", 1, 0])):
        packed = msgpack.packb(msgpack.ExtType(_serialize.EXT_SHARED, body))
        with pytest.raises(_tensors.TensorDescriptorError):
            codec.loads(packed, [bytearray(frames[1])])


def test_the_c_hooks_carry_arrays_and_tensors_in_regions() -> None:
    """Arrays and tensors in regions cross the codec in C (pyi_py_codec.h):
    once a kind is registered, neither the Python default hook nor the ext
    hook runs for them; torch tensors with flags, and everything else, still
    go the Python way. Frame indexes past 127 and messages out of frames
    make the forms msgpack makes."""
    import msgpack

    import pyisolate
    from pyisolate import _serialize, _tensors

    torch = pytest.importorskip("torch")
    calls = {"default": 0, "ext_hook": 0}

    class Counting(_serialize.Codec):
        def _default(self, obj):
            calls["default"] += 1
            return super()._default(obj)

        def _ext_hook(self, code, data):
            calls["ext_hook"] += 1
            return super()._ext_hook(code, data)

    gc.collect()
    before = _tensors.mapped_regions()
    codec = Counting(lambda o: None, lambda *a: None)
    a, t = pyisolate.empty((2, 3), "float32"), pyisolate.share(torch.arange(6.0))
    a[1, 2] = 7
    _roundtrip(codec, [a, t])  # registers both kinds
    calls.update(default=0, ext_hook=0)
    b, u = _roundtrip(codec, [a, t])
    assert calls == {"default": 0, "ext_hook": 0}
    assert b[1, 2] == 7 and u.tolist() == t.tolist()
    assert pyisolate.region_name(b) == pyisolate.region_name(a)
    grad = pyisolate.share(torch.ones(2)).requires_grad_()
    assert _roundtrip(codec, grad).requires_grad
    assert calls == {"default": 0, "ext_hook": 1}  # flags: decoded by Python
    assert _roundtrip(codec, (1, 2)) == (1, 2)  # another ext type
    assert calls["ext_hook"] == 2

    # Past frame 127 the index is a uint 8; past MAX_OOB_FRAMES the
    # descriptor's bytes go inside the ext.
    many = [a[i % 2] for i in range(_serialize.MAX_OOB_FRAMES + 5)]
    frames = codec.dumps(many)
    assert len(frames) == 1 + _serialize.MAX_OOB_FRAMES
    bodies = msgpack.unpackb(frames[0], ext_hook=lambda code, data: data)
    assert bodies[150] == msgpack.packb(["numpy", 151, 0])
    assert bodies[-1] == msgpack.packb(["numpy", frames[1], 0])  # a[0]'s
    back = codec.loads(frames[0], [bytearray(f) for f in frames[1:]])
    assert [list(x) for x in back] == [list(x) for x in many]

    # For a receiver without shared memory, the arrays past the message's
    # frames carry their bytes inside the ext, whatever their size.
    big = [np.full(1024, i, np.float32) for i in range(_serialize.MAX_OOB_FRAMES + 5)]
    frames = codec.dumps(big, inline=True)
    assert len(frames) == 1 + _serialize.MAX_OOB_FRAMES
    back = codec.loads(frames[0], [bytearray(f) for f in frames[1:]])
    assert all((x == i).all() and x.dtype == np.float32 for i, x in enumerate(back))

    # A spoiled descriptor is refused by the C decoder, with the C reason.
    frames = codec.dumps(a)
    with pytest.raises(pyisolate.TensorDescriptorError, match="refused an array descriptor"):
        codec.loads(frames[0], [bytearray(frames[1][: len(frames[1]) // 2])])
    _tensors.discard(frames, (1,))
    del a, b, t, u, grad, many, back
    gc.collect()
    assert _tensors.mapped_regions() == before


def test_the_c_hook_describes_torch_views_and_leaves_the_rest() -> None:
    """The C hook describes torch views at an offset, transposed, strided,
    broadcast (stride 0) and reinterpreted as another dtype: they cross as
    the same elements over the same memory, in C. What it cannot describe
    it leaves to the Python path (share gives None, raising nothing, counting
    nothing): a meta or sparse tensor, an empty one, memory in no region, a
    conjugate or negative view."""
    import pyisolate
    from pyisolate import _serialize, _tensors

    torch = pytest.importorskip("torch")
    calls = {"default": 0}

    class Counting(_serialize.Codec):
        def _default(self, obj):
            calls["default"] += 1
            return super()._default(obj)

    gc.collect()
    before = _tensors.mapped_regions()
    codec = Counting(lambda o: None, lambda *a: None)
    base = pyisolate.share(torch.arange(24.0).reshape(4, 6))
    _roundtrip(codec, base)  # registers torch
    calls["default"] = 0
    views = [
        base[1:, 2:],
        base.t(),
        base[:, 1],
        base[::2, ::3],
        base[2].expand(3, 6),
        base.view(torch.int32)[1:],
        base.unsqueeze(0)[:, 1:3],
    ]
    for v in views:
        back = _roundtrip(codec, v)
        assert back.dtype == v.dtype and back.shape == v.shape and back.stride() == v.stride()
        assert back.data_ptr() == v.data_ptr() and torch.equal(back, v)
    assert calls["default"] == 0  # all in C

    z = pyisolate.share(torch.zeros(3, dtype=torch.complex64))
    for x in (
        torch.empty(3, device="meta"),
        base.to_sparse(),
        torch.empty(0),
        torch.ones(3),
        z.conj(),
        torch._neg_view(base),
    ):
        assert codec._hooks.share(x, True) is None
    assert codec._counted == []  # nothing was counted in flight
    del base, views, v, back, z, x
    gc.collect()
    assert _tensors.mapped_regions() == before


def test_random_shared_references_are_refused_cleanly() -> None:
    """The C ext hook fed random compact references and random or mutated
    descriptor frames: a clear error or a valid array, never a crash, and
    every region mapped for them goes with them."""
    import random

    import msgpack

    import pyisolate
    from pyisolate import _serialize, _tensors

    torch = pytest.importorskip("torch")
    codec = _codec()
    a = pyisolate.empty((4, 4), "int32")
    _roundtrip(codec, [a, pyisolate.share(torch.ones(2))])  # both kinds registered
    gc.collect()
    before = _tensors.mapped_regions()
    good = bytes(codec.dumps(a)[1])
    rng = random.Random(12)
    refused = 0
    for i in range(3000):
        kind = rng.choice([b"\x93\xa5numpy", b"\x93\xa5torch", rng.randbytes(7)])
        body = kind + bytes([rng.randrange(256), rng.randrange(256)])
        if i % 3 == 0:
            body = kind + bytes([1, rng.choice([0, 1, 2, 3, 127])])
        frame = bytearray(good)
        if i % 2:
            for _ in range(rng.randrange(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        else:
            frame = bytearray(rng.randbytes(rng.randrange(0, 80)))
        head = msgpack.packb(msgpack.ExtType(_serialize.EXT_SHARED, body))
        try:
            got = codec.loads(head, [frame])
        except (ValueError, TypeError):  # TensorDescriptorError is a ValueError
            refused += 1
        else:
            assert got.nbytes <= a.nbytes
    assert refused > 2500
    _tensors.discard([good], (0,))
    gc.collect()
    assert _tensors.mapped_regions() == before
