"""Arrays and tensors cross by shared memory (docs/tensors.md): same memory
both ways, dtypes, views, containers, passing on without a copy, numpy 1 and
2, torch, hostile descriptors, and nothing left behind after a normal stop,
a killed extension or a killed host."""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import OLD_NUMPY, OLD_NUMPY_VERSION, ext_config, manager, run, subprocess_env

np = pytest.importorskip("numpy")

DTYPES = ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8", "c8", "c16"]


def _shm_names(prefix: str = "pyi-") -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def _our_mappings() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "/dev/shm/pyi-" in line]


def _wait(pred, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gc.collect()
        if pred():
            return True
        time.sleep(0.05)
    return bool(pred())


def _values(dtype: str, shape=(3, 4)):
    n = int(np.prod(shape))
    a = np.arange(n) % 7 - 3
    if dtype == "?":
        return (a > 0).reshape(shape)
    if dtype[0] == "u":
        a = np.abs(a)
    return a.astype(dtype).reshape(shape)


def test_numpy_same_memory_both_ways(venv_root) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_two", "shm", dependencies=["numpy>=2.2"])
            )
            assert (await ext.numpy_version()).startswith("2.")
            # host -> extension: a shared array is not copied, and the
            # extension's in-place write is seen here
            a = pyisolate.empty((4, 5), "float64")
            name = pyisolate.region_name(a)
            assert name and name.startswith("/pyi-")
            d = await ext.describe(a)
            assert d["region"] == name and d["writeable"] and d["shape"] == [4, 5]
            await ext.add_in_place(a, 2.5)
            assert (a == 2.5).all()
            # an ordinary array is copied once per crossing: the copy is what
            # the extension sees (numpy arrays cannot be re-pointed)
            plain = np.zeros(3)
            d = await ext.describe(plain)
            assert d["region"] and pyisolate.region_name(plain) is None
            # ... at every crossing (a new copy each time), and the
            # extension's in-place write is not seen here (README, Tensors)
            assert (await ext.describe(plain))["region"] != d["region"]
            await ext.add_in_place(plain, 1.0)
            assert (plain == 0).all()
            # extension -> host: what comes back is shared with the extension
            b = await ext.make_shared([2, 3], "int32", 7)
            assert b.dtype == np.int32 and (b == 7).all() and b.flags.writeable
            assert pyisolate.region_name(b) is not None
            await ext.write_held(0, -1)
            assert (b == -1).all()
            b[1, 2] = 42  # ... and the host's write is seen there
            back = await ext.read_held(0)
            assert back[1, 2] == 42 and pyisolate.region_name(back) == pyisolate.region_name(b)
            # the same region both ways: passing it back costs no copy
            regions = await ext.held_regions()
            assert regions[0] == pyisolate.region_name(b)
            # an ordinary numpy array returned is a copy (made at the return)
            c = await ext.make([5], "uint8", 3)
            assert (c == 3).all() and pyisolate.region_name(c) is not None
            await ext.write_held(1, 4)
            assert (c == 3).all()
            # a read-only array arrives read-only (same memory)
            ro = pyisolate.share(np.arange(3))
            ro.flags.writeable = False
            d = await ext.describe(ro)
            assert not d["writeable"] and d["region"] == pyisolate.region_name(ro)
            # opt out: a copy is private
            private = b.copy()
            await ext.write_held(0, 9)
            assert (b == 9).all() and (private != 9).any()
            await ext.drop_held()

    run(main())


def test_numpy_dtypes_views_and_containers(venv_root) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_two", "shm", dependencies=["numpy>=2.2"])
            )
            for dt in DTYPES:
                x = pyisolate.share(_values(dt))
                y = await ext.echo(x)
                assert y.dtype == x.dtype and y.shape == x.shape and (y == x).all(), dt
                assert y.flags.writeable
                assert pyisolate.region_name(y) == pyisolate.region_name(x), dt
            base = pyisolate.share(np.arange(60, dtype=np.float32).reshape(6, 10))
            views = [
                base.T,
                base[::2, 1::3],
                base[::-1],
                base[:, ::-2],
                base[3:3],
                base[2, 5:6],
                base[0, 0, None],
            ]
            for v in views:
                got = await ext.echo(v)
                assert got.shape == v.shape and got.strides == v.strides
                assert (got == v).all()
                if v.size:
                    assert pyisolate.region_name(got) == pyisolate.region_name(base)
            # a write through a returned view lands in the base
            rev = await ext.echo(base[::-1, ::-1])
            rev[0, 0] = -5
            assert base[5, 9] == -5
            # 0-d and empty arrays, plain ones too
            zero = await ext.echo(np.array(3.25))
            assert zero.shape == () and zero == 3.25
            empty = await ext.echo(np.zeros((0, 4), dtype=np.int16))
            assert empty.shape == (0, 4) and empty.dtype == np.int16
            # containers, and ordinary strided arrays (copied element-wise)
            plain = np.arange(20).reshape(4, 5)[:, ::2]
            out = await ext.echo({"a": [plain, (base[1], np.ones(2, bool))], 3: plain.T})
            assert (out["a"][0] == plain).all() and isinstance(out["a"][1], tuple)
            assert (out["a"][1][0] == base[1]).all() and out["a"][1][1].dtype == bool
            assert (out[3] == plain.T).all()
            # in-place writes to several arrays of a container
            arrs = [pyisolate.empty(3, "i8"), pyisolate.empty((2, 2), "f4")]
            await ext.fill_all(arrs, 4)
            assert all((a == 4).all() for a in arrs)
            # more arrays than a message has body frames: the rest inline
            many = [pyisolate.share(np.full(2, i)) for i in range(300)]
            got = await ext.echo(many)
            assert [int(g[0]) for g in got] == list(range(300))
            assert [pyisolate.region_name(g) for g in got] == [
                pyisolate.region_name(m) for m in many
            ]
            del many, got
            # dtypes DLPack lacks still travel, by value
            s = await ext.echo(np.array(["x", "yz"]))
            assert list(s) == ["x", "yz"]
            # non-native byte order: by value too
            be = np.arange(3, dtype=">i4")
            assert (await ext.echo(be) == be).all()

    run(main())


def test_pass_on_between_extensions_without_copy(venv_root) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            a = mgr.load_extension(ext_config("np_two", "shm", dependencies=["numpy>=2.2"]))
            b = mgr.load_extension(ext_config("np_two_b", "shm", dependencies=["numpy>=2.2"]))
            await asyncio.gather(a, b)
            pid_a = a.pid
            x = await a.make_shared([1000], "float32", 1)
            name = pyisolate.region_name(x)
            assert f"-{pid_a}-" in name  # made by A
            await b.hold(x)
            assert (await b.held_regions()) == [name]
            await b.write_held(0, 8)  # B writes, A and the host see it
            assert (x == 8).all()
            assert (await a.read_held(0) == 8).all()
            y = await b.read_held(0)
            assert pyisolate.region_name(y) == name
            d = await a.describe(y)
            assert d["region"] == name and d["sum"] == 8000

    run(main())


def test_numpy_1_gets_writeable_shared_arrays(venv_root) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            one = mgr.load_extension(ext_config("np_one", "shm", dependencies=[OLD_NUMPY]))
            two = mgr.load_extension(ext_config("np_two", "shm", dependencies=["numpy>=2.2"]))
            await asyncio.gather(one, two)
            assert (await one.numpy_version()).startswith(OLD_NUMPY_VERSION)
            for ext in (one, two):
                a = pyisolate.share(np.arange(12, dtype=np.float32).reshape(3, 4))
                d = await ext.describe(a[:, ::-1])
                assert d["writeable"] and d["region"] == pyisolate.region_name(a)
                await ext.add_in_place(a[1:, ::-2], 100)
                assert a[1, 3] == 107 and a[0, 3] == 3
                for dt in DTYPES:
                    x = pyisolate.share(_values(dt))
                    y = await ext.echo(x)
                    assert y.dtype == x.dtype and (y == x).all() and y.flags.writeable
                r = await ext.make_shared([2, 2], "complex64", 1)
                assert r.flags.writeable and (r == 1).all()
                await ext.write_held(0, 2)
                assert (r == 2).all()
                await ext.drop_held()

    run(main())


def test_torch_tensors_share_memory(venv_root) -> None:
    torch = pytest.importorskip("torch")
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("torchy", "shm", share_torch=True, dependencies=["torch"])
            )
            # an ordinary tensor moves into shared memory at its first crossing
            t = torch.zeros(4, 5)
            assert pyisolate.region_name(t) is None
            await ext.add_in_place(t, 1.5)
            assert pyisolate.region_name(t) is not None and bool((t == 1.5).all())
            # ... and stays there: the next crossing names the same region
            d = await ext.describe(t)
            assert d["region"] == pyisolate.region_name(t) and d["lib"] == "torch"
            # views keep their base in step
            base = torch.arange(10.0)
            v = base[2:6]
            await ext.add_in_place(v, 100)
            assert base[2] == 102 and base[0] == 0
            assert pyisolate.region_name(base) == pyisolate.region_name(v)
            # a tensor whose storage a .numpy() array also uses is not moved
            # (that would split them): the extension works on a copy
            aliased = torch.zeros(3)
            alias = aliased.numpy()
            await ext.add_in_place(aliased, 1)
            assert pyisolate.region_name(aliased) is None
            assert bool((aliased == 0).all()) and (alias == 0).all()
            # dtypes, strided views, 0-d, empty, containers
            for dt in (
                torch.bool,
                torch.uint8,
                torch.int8,
                torch.int16,
                torch.int32,
                torch.int64,
                torch.float16,
                torch.bfloat16,
                torch.float32,
                torch.float64,
                torch.complex64,
                torch.complex128,
            ):
                x = (torch.arange(12) % 3).to(dt).reshape(3, 4)
                assert torch.equal(await ext.echo(x), x)  # moves x (and its base)
                y = await ext.echo(x.t())
                assert y.dtype == dt and y.shape == (4, 3) and torch.equal(y, x.t()), dt
                assert pyisolate.region_name(y) == pyisolate.region_name(x)
            s = pyisolate.empty((3, 3), torch.float32, like="torch")
            flipped = await ext.echo(s.flip(0))  # flip copies in torch
            assert torch.equal(flipped, s.flip(0))
            zero = await ext.echo(torch.tensor(2.5))
            assert zero.shape == () and float(zero) == 2.5
            empty = await ext.echo(torch.zeros(0, 3, dtype=torch.int32))
            assert empty.shape == (0, 3) and empty.dtype == torch.int32
            out = await ext.echo({"w": [torch.ones(2), (torch.zeros(1, dtype=torch.bool),)]})
            assert torch.equal(out["w"][0], torch.ones(2)) and out["w"][1][0].dtype == torch.bool
            g = torch.ones(3, requires_grad=True)
            assert (await ext.echo(g)).requires_grad
            # the extension's tensors are shared with the host
            held = pyisolate.empty((2, 2), torch.int64, like="torch")
            await ext.hold(held)
            await ext.write_held(0, 5)
            assert bool((held == 5).all())
            back = await ext.read_held(0)
            back += 1
            assert bool((held == 6).all())
            # opt out: clone
            c = held.clone()
            await ext.add_in_place(c, 1)
            assert bool((held == 6).all())
            # a numpy array sent to a torch extension stays numpy
            arr = await ext.echo(np.ones(3))
            assert isinstance(arr, np.ndarray)
            await ext.drop_held()

    run(main())


@pytest.mark.parametrize(
    "mode", ["garbage", "span", "offset", "name", "path", "shape", "dtype", "device"]
)
def test_bad_descriptor_is_refused(venv_root, mode) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_two", "shm", dependencies=["numpy>=2.2"])
            )
            with pytest.raises(pyisolate.TensorDescriptorError, match="refused"):
                await ext.hostile(mode, np.arange(16.0))
            # the connection and the extension are fine afterwards
            assert (await ext.echo(np.arange(3)) == np.arange(3)).all()

    run(main())


def _check_clean(names_before: set[str], what: str) -> None:
    assert _wait(lambda: not (_shm_names() - names_before)), (
        f"{what}: /dev/shm left: {_shm_names() - names_before}"
    )
    assert _wait(lambda: not _our_mappings()), f"{what}: still mapped: {_our_mappings()}"


def test_no_leak_after_normal_stop(venv_root) -> None:
    import pyisolate

    before = _shm_names()

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_two", "shm", dependencies=["numpy>=2.2"])
            )
            a = pyisolate.empty(1000, "f8")
            await ext.hold(a)
            await ext.hold(np.ones(100))
            got = await ext.make([10], "i4", 1)
            assert _shm_names() - before
            # a call that times out and one that is cancelled, with arrays
            with pytest.raises(pyisolate.CallTimeout):
                await ext.with_timeout(0.1).slow_echo(np.ones(1000), 0.5)
            task = asyncio.ensure_future(ext.slow_echo([a, np.ones(10)], 0.5))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await ext.echo(a) == 0).all()
            del a, got

    run(main())
    _check_clean(before, "after a normal stop")


def test_dropped_reply_frees_its_region_at_once(venv_root) -> None:
    """A reply that comes after the caller's deadline is dropped by the
    broker, which gives its descriptors' in-flight counts back: the region
    goes while the extension still runs, not at the session's end."""
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_two", "shm", dependencies=["numpy>=2.2"])
            )
            pid = ext.pid

            def made_there() -> list[str]:
                return [n for n in _shm_names() if f"-{pid}-" in n]

            assert not made_there()
            with pytest.raises(pyisolate.CallTimeout):
                await ext.with_timeout(0.1).late_array(0.5, 100_000)
            await asyncio.sleep(0.6)  # the extension has replied by now
            assert _wait(lambda: not made_there()), (
                f"a dropped reply kept its region: {made_there()}"
            )
            assert (await ext.echo(np.arange(3)) == np.arange(3)).all()  # still runs
            assert ext.pid == pid

    run(main())


def test_no_leak_after_extension_killed_holding_views(venv_root) -> None:
    import pyisolate

    before = _shm_names()

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("np_two", "shm", dependencies=["numpy>=2.2"])
            )
            pid = ext.pid
            a = pyisolate.empty(1000, "f8")
            await ext.hold(a)
            await ext.hold(a[::2])
            mine = await ext.make_shared([100], "u1", 1)
            await ext.make([100], "u1", 2)  # held there only (the host dropped it)
            os.kill(pid, signal.SIGKILL)
            for _ in range(200):  # its exit reaches the handle
                if not ext.alive:
                    break
                await asyncio.sleep(0.05)
            assert ext.exit_status == -signal.SIGKILL
            # what the host holds still works after the death
            mine += 1
            assert (mine == 2).all()
            del a, mine
            gc.collect()
            created_there = [n for n in _shm_names() if f"-{pid}-" in n]
            assert _wait(lambda: not [n for n in _shm_names() if f"-{pid}-" in n]), created_there

    run(main())
    _check_clean(before, "after a SIGKILLed extension")


HOST_SCRIPT = textwrap.dedent("""
    import asyncio, os, signal, sys
    import numpy as np
    import pyisolate

    async def main():
        mgr = pyisolate.ExtensionManager(pyisolate.ExtensionBase,
            pyisolate.ExtensionManagerConfig(venv_root_path=sys.argv[1]))
        ext = await mgr.load_extension(pyisolate.ExtensionConfig(
            name="np_two", module_path=sys.argv[2], dependencies=["numpy>=2.2"]))
        a = pyisolate.empty(4096, "f4")
        await ext.hold(a)
        b = await ext.make([4096], "f4", 1)
        print("EXT", ext.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(main())
""")


def test_no_leak_after_host_killed(venv_root, tmp_path) -> None:
    """A host killed with SIGKILL leaves regions (its own, its extension's)
    that the next host start removes. Other programs start hosts on this
    machine too, and any of them would remove them first: the killed host
    gets a runtime directory of its own (no other host looks there) and
    stays unreaped (a zombie counts as alive) until they have been seen."""
    import pyisolate._core as core
    from conftest import EXTENSIONS

    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT)
    rundirs = Path(tempfile.mkdtemp(prefix="pyi-rt-", dir="/tmp"))  # ipc paths are short
    env = dict(subprocess_env(), PYI_RUNTIME_DIR=str(rundirs))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(venv_root), str(EXTENSIONS / "shm")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out = proc.stdout.read()  # until it dies (its extensions write elsewhere)
        ended = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # not reaped
        assert ended.si_status == signal.SIGKILL, proc.stderr.read()
        ext_pid = int(out.split("EXT", 1)[1].split()[0])
        # its extension dies with it (PDEATHSIG)
        assert _wait(lambda: not os.path.exists(f"/proc/{ext_pid}"))
        prefix = f"pyi-{proc.pid}-"
        left = _shm_names(prefix)
        # the host's region, the one the extension made, the copy the host sent
        assert left, "the killed host left no regions: nothing was tested"
        assert any(f"-{ext_pid}-" in n for n in left), left
    finally:
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    # the next host start removes what the dead one left
    old = os.environ.get("PYI_RUNTIME_DIR")
    os.environ["PYI_RUNTIME_DIR"] = str(rundirs)
    try:
        broker = core.Broker()
        broker.close()
    finally:
        if old is None:
            del os.environ["PYI_RUNTIME_DIR"]
        else:
            os.environ["PYI_RUNTIME_DIR"] = old
    assert not _shm_names(prefix), f"a dead host's regions survived: {_shm_names(prefix)}"
    left_dirs = [
        d for d in os.listdir(rundirs / f"pyisolate-{os.getuid()}") if d.startswith(f"{proc.pid}-")
    ]
    shutil.rmtree(rundirs)
    assert not left_dirs, "the dead host's runtime directory survived"


def test_sync_manager_shares_arrays(venv_root) -> None:
    import pyisolate

    config = pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)
    with pyisolate.SyncExtensionManager(pyisolate.ExtensionBase, config) as mgr:
        ext = mgr.load_extension(ext_config("np_two", "shm", dependencies=["numpy>=2.2"]))
        a = pyisolate.empty((2, 3), "int64")
        ext.add_in_place(a, 4)
        assert (a == 4).all()
        b = ext.make_shared([3], "float32", 1)
        ext.write_held(0, 6)
        assert (b == 6).all()
