"""Tensors sent again (issue 12): the sender keeps the descriptors it made
(_tensors._pack_known), so these check that what crosses is what is sent
now: other views, dtypes and layouts of the same address, a tensor changed
in place between crossings, and a new region where a freed one was."""

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
