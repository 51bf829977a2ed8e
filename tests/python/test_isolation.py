"""Real isolation: each extension sees its own venv, numpy 1 and 2 side by
side, the host's torch through share_torch, and venv reuse."""

from __future__ import annotations

import asyncio
import logging
import site
import sysconfig

import pytest

from conftest import OLD_NUMPY, OLD_NUMPY_VERSION, ext_config, manager, requires_numpy1, run


def _host_sites() -> set[str]:
    return set(site.getsitepackages()) | {sysconfig.get_paths()["purelib"]}


def test_numpy_1_and_2_side_by_side(venv_root) -> None:
    np = pytest.importorskip("numpy")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            one = mgr.load_extension(ext_config("np_one", "np1", dependencies=[OLD_NUMPY]))
            two = mgr.load_extension(ext_config("np_two", "np2", dependencies=["numpy>=2.2"]))
            await asyncio.gather(one, two)
            i1, i2 = await asyncio.gather(one.numpy_info(), two.numpy_info())
            assert i1["version"].startswith(OLD_NUMPY_VERSION)
            assert i2["version"].startswith("2.") and not i2["version"].startswith("2.1.")
            assert i1["file"].startswith(str(venv_root / "np_one"))
            assert i2["file"].startswith(str(venv_root / "np_two"))
            for ext in (one, two):  # numpy scalars arrive as Python scalars
                m = await ext.mean([1, 2, 3, 4, 5])
                assert m == 3.0 and type(m) is float
            arr = np.arange(12, dtype=np.float32).reshape(3, 4)
            for ext in (one, two):
                got = await ext.double(arr)
                assert got.dtype == np.float32 and got.shape == (3, 4)
                assert (got == arr * 2).all()
            # large arrays travel as their own frames, and arrive writable
            big = np.arange(2_000_000, dtype=np.int64).reshape(1000, 2000)[:, ::2]
            got = await two.double(big)
            assert got.shape == (1000, 1000) and (got == big * 2).all()
            assert got.flags.writeable
            got[0, 0] = 7
            several = await one.double_all([big, np.zeros(0), np.ones((2, 2), dtype=bool)])
            assert (several[0] == big * 2).all() and several[1].size == 0
            assert several[2].dtype == bool

    run(main())


def test_extension_does_not_see_host_packages(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("plain", "basic"))
            info = await ext.info()
            assert info["executable"].startswith(str(venv_root / "plain"))
            assert not set(info["sys_path"]) & _host_sites()
            # pyisolate reaches the extension through the runtime link folder,
            # not through an install into its venv
            assert info["pyisolate"].startswith(str(venv_root / ".pyisolate-runtime"))
            assert not list((venv_root / "plain").glob("lib/python*/site-packages/pyisolate"))
            # the host has numpy and torch; the extension's venv has neither
            assert not await ext.can_import("numpy")
            assert not await ext.can_import("torch")
            assert await ext.can_import("msgpack")  # pyisolate's runtime dependency

    run(main())


def test_share_torch(venv_root) -> None:
    torch = pytest.importorskip("torch")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("torchy", share_torch=True, dependencies=["torch"])
            )
            t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
            d = await ext.describe(t)
            assert d["torch_file"] == torch.__file__
            assert d["version"] == torch.__version__
            assert d["shape"] == [2, 3] and d["sum"] == 15.0 and d["is_tensor"]
            scaled = await ext.scale(t, 2)
            assert isinstance(scaled, torch.Tensor) and torch.equal(scaled, t * 2)
            big = torch.randn(512, 1024)
            assert torch.equal(await ext.scale(big, 1), big)
            half = torch.ones(300, 300, dtype=torch.bfloat16)
            got = await ext.scale(half, 3)
            assert got.dtype == torch.bfloat16 and bool((got == 3).all())

    run(main())
    # torch was not installed into the venv
    assert not list((venv_root / "torchy").glob("lib/python*/site-packages/torch"))


@requires_numpy1
def test_share_torch_extension_dependencies_win(venv_root) -> None:
    torch = pytest.importorskip("torch")
    # The host's site-packages (numpy 2 here) come after the venv's (numpy<2).

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("torch_np", share_torch=True, dependencies=["numpy<2"])
            )
            v = await ext.versions()
            assert v["numpy"].startswith("1.")
            assert v["numpy_file"].startswith(str(venv_root / "torch_np"))
            assert v["torch_file"] == torch.__file__

    run(main())


def test_unchanged_extension_reuses_its_venv(venv_root, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pyisolate")

    async def main() -> None:
        for _ in range(2):
            async with manager(venv_root) as mgr:
                ext = await mgr.load_extension(
                    ext_config("reuse", "np2", dependencies=["numpy>=2"])
                )
                assert (await ext.numpy_info())["version"].startswith("2.")

    run(main())
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("reusing the venv" in m for m in msgs) >= 1
    assert sum("pip install" in m for m in msgs) <= 1
