"""Tensors sent again (issue 12): what crosses is what is sent now (other
views, dtypes and layouts of the same address, a tensor changed in place
between crossings, a new region where a freed one was); tensors already in
a region take one C call; a receiver keeps such a region mapped between
crossings (lingering) without holding on to its name."""

from __future__ import annotations

import gc

import pytest

from conftest import ext_config, manager, run

np = pytest.importorskip("numpy")


def test_repeated_crossings_send_what_the_tensor_is_now(venv_root) -> None:
    torch = pytest.importorskip("torch")
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("torch_repeat", "shm", share_torch=True, dependencies=["torch"])
            )
            t = pyisolate.empty(64, "float32", like="torch")
            t += torch.arange(64.0)
            # the same address seen as other shapes, strides and dtypes, each twice
            views = [t, t.view(8, 8), t.view(8, 8).t(), t.view(4, 16), t[:32], t[1::3]]
            views += [t.view(torch.int32), t.view(torch.uint8).view(16, 16)]
            for v in views:
                for _ in range(2):
                    y = await ext.echo(v)
                    assert y.data_ptr() == v.data_ptr(), "not zero-copy"
                    assert (y.dtype, y.shape, y.stride()) == (v.dtype, v.shape, v.stride())
                    assert torch.equal(y, v)
            # the same object re-shaped in place between crossings
            u = pyisolate.empty(16, "float32", like="torch")
            assert (await ext.echo(u)).shape == (16,)
            with torch.no_grad():
                u.set_(u.untyped_storage(), 4, (2, 3), (3, 1))
            y = await ext.echo(u)
            assert y.shape == (2, 3) and y.data_ptr() == u.data_ptr() and torch.equal(y, u)
            del y
            # new regions, likely where a freed one was mapped: each crossing
            # names the region the tensor is in now, with its values
            for i in range(6):
                x = pyisolate.empty(256, "float32", like="torch")
                x.fill_(i)
                d = await ext.describe(x)
                assert d["region"] == pyisolate.region_name(x)
                assert bool(((await ext.echo(x)) == i).all())
                del x, d
                gc.collect()

    run(main())


def test_repeated_numpy_crossings_send_what_the_array_is_now(venv_root) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_repeat", "shm", dependencies=["numpy>=2.2"])
            )
            a = pyisolate.empty((8, 8), "float64")
            a[...] = np.arange(64.0).reshape(8, 8)
            views = [a, a.T, a[::2], a[:, 1:3], a.reshape(4, 16), a[::-1], a.view("i4")]
            for v in views:
                for _ in range(2):
                    y = await ext.echo(v)
                    assert (y.dtype, y.shape, y.strides) == (v.dtype, v.shape, v.strides)
                    assert np.array_equal(y, v)
                    assert y.__array_interface__["data"][0] == v.__array_interface__["data"][0]
            for i in range(6):
                x = pyisolate.empty(512, "int32")
                x[...] = i
                d = await ext.describe(x)
                assert d["region"] == pyisolate.region_name(x)
                assert ((await ext.echo(x)) == i).all()
                del x, d
                gc.collect()

    run(main())


def test_what_comes_back_unchanged_is_the_object_sent(venv_root) -> None:
    """As a local call that returns its argument: an array or tensor that
    comes back with the descriptor, kind and flags it went with is the
    object sent (its message's count taken, nothing decoded); anything
    else is a new object over the same memory. The counts all come back:
    the region goes with the last object."""
    torch = pytest.importorskip("torch")

    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("echo_same", "shm", share_torch=True, dependencies=["torch"])
            )
            a = pyisolate.share(np.arange(12.0).reshape(3, 4))
            name = pyisolate.region_name(a)
            assert await ext.echo(a) is a
            v = a[::2]
            assert await ext.echo(v) is v
            x, y = await ext.echo((a, a))
            assert x is a and y is a
            # two objects with one descriptor: neither is guessed
            w = a.view()
            got = await ext.echo([a, w])
            assert got[0] is not a and got[1] is not w
            assert all(pyisolate.region_name(g) == name for g in got)
            r = await ext.changed(a, "reverse")
            assert r is not a and (r == a[::-1]).all() and pyisolate.region_name(r) == name
            frozen = await ext.changed(a, "frozen")
            assert frozen is not a and not frozen.flags.writeable and a.flags.writeable
            t = pyisolate.share(torch.arange(6.0))
            assert await ext.echo(t) is t
            t.requires_grad_(True)
            assert await ext.echo(t) is t
            d = await ext.changed(t, "detached")
            assert d is not t and not d.requires_grad and d.data_ptr() == t.data_ptr()
            flipped = await ext.changed(t, "reverse")
            assert torch.equal(flipped, t.detach().flip(0))
            t_name = pyisolate.region_name(t)
            del a, v, x, y, w, got, r, frozen, t, d, flipped
            gc.collect()
            for n in (name, t_name):
                assert _gone(n), f"{n} left: a message's count was not taken"

    run(main())


def _gone(name: str, seconds: float = 5.0) -> bool:
    import os
    import time

    end = time.monotonic() + seconds
    while os.path.exists("/dev/shm" + name):
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def test_the_receiver_keeps_a_region_mapped_between_crossings(venv_root) -> None:
    """Lingering (docs/tensors.md, section 3): after its last use in the
    extension, a region the host made stays mapped there without its lock,
    so that the next crossing needs no new mapping; the host's release still
    removes the name at once, and the extension then lets go of it."""
    import pyisolate
    from conftest import our_regions

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("linger", "shm", dependencies=["numpy>=2.2"])
            )
            a = pyisolate.empty(4096, "float32")
            name = pyisolate.region_name(a).lstrip("/")
            assert await ext.lingering() == 0
            assert (await ext.describe(a))["region"] == "/" + name
            assert await _settle(ext, 1), "the region was unmapped after its use"
            assert (await ext.describe(a))["region"] == "/" + name
            assert await ext.lingering() == 1  # taken back, then lingering again
            del a
            gc.collect()
            assert name not in our_regions(), "a lingering mapping kept the name"
            assert await _settle(ext, 0), "the extension kept a region whose name is gone"

    run(main())


async def _settle(ext, want: int) -> bool:
    """Whether the extension's lingering count reaches want (it changes
    when a call's arguments go, and by its reaper every 50 ms)."""
    import asyncio

    for _ in range(200):
        if await ext.lingering() == want:
            return True
        await asyncio.sleep(0.05)
    return False


def test_tensors_in_a_region_cross_in_one_call(venv_root, monkeypatch) -> None:
    """Tensors and arrays already in a region are described in C (the
    codec's hooks); what that cannot say (a conjugate or negative view,
    memory outside a region) still takes encode_torch."""
    torch = pytest.importorskip("torch")
    import pyisolate
    from pyisolate import _tensors

    slow: list[str] = []
    for fn in ("encode_torch", "encode_numpy"):
        real = getattr(_tensors, fn)
        monkeypatch.setattr(
            _tensors, fn, lambda *a, _real=real, _fn=fn: (slow.append(_fn), _real(*a))[1]
        )

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("fast", "shm", share_torch=True, dependencies=["torch"])
            )
            t = pyisolate.empty((4, 8), "float32", like="torch")
            t += torch.arange(32.0).view(4, 8)
            g = t.clone().requires_grad_(True)  # moved into a region at its first crossing
            await ext.echo(g)
            slow.clear()
            for v in (t, t.t(), t[1:, ::2], t.view(torch.int32), g):
                y = await ext.echo(v)
                assert y.data_ptr() == v.data_ptr() and torch.equal(y, v)
                assert y.requires_grad == v.requires_grad
            a = pyisolate.empty((3, 5), "int64")
            a[...] = np.arange(15).reshape(3, 5)
            r = a[::-1]
            r.flags.writeable = False
            for v in (a, a.T, r):
                y = await ext.echo(v)
                assert np.array_equal(y, v) and y.flags.writeable == v.flags.writeable
            assert slow == [], f"took the slow path: {slow}"
            c = pyisolate.empty(4, "complex64", like="torch")
            c += torch.tensor([1 + 2j, 3 - 1j, 0j, 1j])
            y = await ext.echo(c.conj())
            assert torch.equal(y, c.conj().resolve_conj())
            assert slow == ["encode_torch"], "a conjugate view must not be described as is"
            neg = c.conj().imag  # a float view with the negative bit
            assert neg.is_neg()
            y = await ext.echo(neg)
            assert torch.equal(y, neg.resolve_neg()) and y.tolist() == [-2.0, 1.0, 0.0, -1.0]
            assert slow == ["encode_torch"] * 2, "a negative view must not be described as is"

    run(main())
