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
    return {n for n in os.listdir("/dev/shm") if n.startswith("pyi-")}


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
