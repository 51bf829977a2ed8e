"""CUDA tensors cross calls by CUDA IPC (docs/tensors.md): a torch CUDA
tensor passed as an argument or returned as a result, also inside dicts,
lists and tuples, arrives as a CUDA tensor on the same GPU with the same
dtype, shape, strides and values, backed by the same memory; writes in place
by either side are seen by the other once the call has returned (the library
synchronizes the device before a message leaves a process that uses CUDA);
the producer keeps the allocation alive while any receiver holds it; a
tensor passes on from one extension to another, or back, without a copy;
and what a killed extension held is released.

Real extension processes (tests/python/extensions/cuda_ext, share_torch).
The whole module is skipped where torch or a CUDA device is missing, unless
PYI_REQUIRE_CUDA=1 (tests/gpu/run sets it where nvidia-smi lists a GPU):
then it fails. Writes are queued behind a GPU sleep (torch.cuda._sleep) and
never synchronized by the tests, so a missing synchronization shows as a
stale value.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time

import pytest

from conftest import ext_config, manager, run


def _unavailable(reason: str) -> None:
    if os.environ.get("PYI_REQUIRE_CUDA") == "1":
        pytest.fail(f"PYI_REQUIRE_CUDA=1, but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:
    import torch
except ImportError as exc:
    _unavailable(f"CUDA tests need torch, which is not importable ({exc})")
else:
    if not torch.cuda.is_available():
        _unavailable(
            f"CUDA tests need a GPU: torch {torch.__version__} (CUDA "
            f"{torch.version.cuda}) says torch.cuda.is_available() is False"
        )

import pyisolate  # noqa: E402

MiB = 1 << 20
# Device memory that may come and go around a measurement without meaning a
# leak (kernels loaded lazily, a small block of the allocator): far below
# the 64 and 256 MiB tensors the checks are about.
TOLERANCE = 32 * MiB
SLEEP_CYCLES = 100_000_000  # about 50 to 100 ms of GPU time


def _gpu_sleep() -> None:
    if hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(SLEEP_CYCLES)
    else:
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(8):
            a = a @ a
            a /= a.norm()


def _late(fn, *args) -> None:
    """Queue fn behind a GPU sleep, without synchronizing."""
    _gpu_sleep()
    fn(*args)


async def _load(mgr, name: str = "cuda_a"):
    return await mgr.load_extension(
        ext_config(name, "cuda_ext", share_torch=True, dependencies=["torch"])
    )


def _assert_same(got, want, what: str = "") -> None:
    """got is want: a CUDA tensor over the same memory, same metadata."""
    assert isinstance(got, torch.Tensor), f"{what}: got {type(got)}"
    assert got.is_cuda, f"{what}: arrived on {got.device}, not CUDA"
    assert got.device == want.device, f"{what}: {got.device} != {want.device}"
    assert got.dtype == want.dtype, f"{what}: {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: {got.shape} != {want.shape}"
    assert got.stride() == want.stride(), f"{what}: {got.stride()} != {want.stride()}"
    assert torch.equal(got, want), f"{what}: values differ"
    assert got.data_ptr() == want.data_ptr(), (
        f"{what}: a copy came back ({got.data_ptr():#x} != {want.data_ptr():#x})"
    )


def _shm_names() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("pyi-")}


def _reserved() -> int:
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return torch.cuda.memory_reserved()


async def _settle(pred, seconds: float = 10.0, tick=None) -> bool:
    """Poll pred (after gc and empty_cache) while the loop runs, so that the
    host can process exits and releases; tick() is awaited between polls."""
    deadline = time.monotonic() + seconds
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        if tick is not None:
            await tick()
        await asyncio.sleep(0.05)


def test_round_trip_is_the_same_memory(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await _load(mgr)
            x = torch.arange(64 * 64, dtype=torch.float32, device="cuda").reshape(64, 64)
            d = await ext.describe(x)
            assert d["is_cuda"], f"the extension got a {d['device']} tensor"
            assert d["dtype"] == "torch.float32" and d["shape"] == [64, 64]
            assert d["stride"] == [64, 1] and d["sum"] == float(x.double().sum())
            props = torch.cuda.get_device_properties(x.device)
            if d["uuid"] and getattr(props, "uuid", None) is not None:
                assert d["uuid"] == str(props.uuid), "not the same physical GPU"
            _assert_same(await ext.echo(x), x, "contiguous")
            # non-contiguous views: the same strides, over the same memory
            for what, v in [
                ("transpose", x.t()),
                ("strided", x[::2, 1::3]),
                ("column", x[:, 3]),
                ("offset view", x[5:9, 7:]),
                ("strided transpose", x.t()[1::2, ::3]),
            ]:
                d = await ext.describe(v)
                assert d["is_cuda"] and d["shape"] == list(v.shape), what
                assert d["stride"] == list(v.stride()), what
                assert d["sum"] == float(v.double().sum()), what
                _assert_same(await ext.echo(v), v, what)
            for dt in (
                torch.float16,
                torch.bfloat16,
                torch.float64,
                torch.int64,
                torch.int32,
                torch.uint8,
                torch.bool,
                torch.complex64,
            ):
                t = (torch.arange(12, device="cuda") % 3).to(dt).reshape(3, 4)
                _assert_same(await ext.echo(t), t, str(dt))
            # inside containers
            out = await ext.echo({"a": [x, (x.t(), 1)], 3: x[1]})
            assert isinstance(out["a"], list) and isinstance(out["a"][1], tuple)
            _assert_same(out["a"][0], x, "in a list")
            _assert_same(out["a"][1][0], x.t(), "in a tuple")
            _assert_same(out[3], x[1], "under an int key")

    run(main())


def test_in_place_writes_are_seen_both_ways(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await _load(mgr)
            n = 1 << 22  # 16 MiB of float32
            t = torch.zeros(n, device="cuda")
            # the extension writes (queued behind a GPU sleep; the library
            # must synchronize before its reply leaves)
            await ext.fill_late(t, 3.0)
            assert float(t.double().sum()) == 3.0 * n, "the extension's write is not seen"
            # through a view: lands in the host's base tensor
            await ext.add_late(t[::2], 1.0)
            assert float(t[0]) == 4.0 and float(t[1]) == 3.0
            # the host writes (queued, not synchronized here), the extension
            # reads it on the next call
            _late(t.fill_, 7.0)
            assert await ext.total(t) == 7.0 * n, "the host's write is not seen"
            _late(t[1::2].fill_, 9.0)
            assert await ext.total(t) == (7.0 + 9.0) * n / 2

    run(main())


def test_extension_made_tensor_is_shared_with_the_host(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await _load(mgr)
            shape = [512, 512]
            n = shape[0] * shape[1]
            r = await ext.make(shape, 2.0)
            assert isinstance(r, torch.Tensor) and r.is_cuda and r.dtype == torch.float32
            assert list(r.shape) == shape and bool((r == 2).all())
            # the host writes in place, the extension sees it
            _late(r.mul_, 3.0)
            assert await ext.held_total(0) == 6.0 * n, "the host's write is not seen"
            # the extension writes, the host sees it
            await ext.fill_held_late(0, 5.0)
            assert bool((r == 5).all()), "the extension's write is not seen"
            # passing it back costs no copy: the extension's own memory
            assert await ext.same_as_held(r, 0), "passed back as a copy"
            again = await ext.read_held(0)
            assert again.data_ptr() == r.data_ptr(), "the same tensor came back as a copy"
            del again
            # the extension drops its tensor and allocates as much again:
            # the host's tensor must keep its memory (the producer keeps the
            # allocation while a receiver holds it)
            await ext.drop_held_and_churn(n)
            assert bool((r == 5).all()), "the extension reused memory the host still holds"
            r += 1
            assert bool((r == 6).all())

    run(main())


def test_repeated_passes_do_not_grow_memory(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await _load(mgr)
            t = torch.zeros(16 * MiB, device="cuda")  # 64 MiB of float32
            names_before = _shm_names()
            for _ in range(2):  # the first passes set up contexts and mappings
                y = await ext.bump(t)
                assert y.data_ptr() == t.data_ptr()
                del y
            gc.collect()
            torch.cuda.synchronize()
            free0 = torch.cuda.mem_get_info()[0]
            ext0 = await ext.gpu_state()
            names0 = _shm_names() - names_before
            for i in range(100):
                y = await ext.bump(t)
                assert y.data_ptr() == t.data_ptr(), f"pass {i}: a copy came back"
                del y
            gc.collect()
            torch.cuda.synchronize()
            free1 = torch.cuda.mem_get_info()[0]
            ext1 = await ext.gpu_state()
            names1 = _shm_names() - names_before
            assert bool((t == 102).all()), "the passes did not all write the same memory"
            assert free0 - free1 <= TOLERANCE, (
                f"GPU free memory (host) shrank by {(free0 - free1) / MiB:.0f} MiB in 100 passes"
            )
            assert ext0["free"] - ext1["free"] <= TOLERANCE, (
                f"GPU free memory (extension) shrank by "
                f"{(ext0['free'] - ext1['free']) / MiB:.0f} MiB in 100 passes"
            )
            assert ext1["reserved"] <= ext0["reserved"] + TOLERANCE, (
                f"the extension's allocator grew from {ext0['reserved'] / MiB:.0f} "
                f"to {ext1['reserved'] / MiB:.0f} MiB"
            )
            assert len(ext1["regions"]) <= len(ext0["regions"]) + 1, (
                f"regions mapped in the extension: {len(ext0['regions'])} after the first "
                f"passes, {len(ext1['regions'])} after 100 more"
            )
            assert len(names1) <= len(names0) + 1, (
                f"/dev/shm regions: {len(names0)} after the first passes, "
                f"{len(names1)} after 100 more"
            )

    run(main())


def test_host_allocation_lives_while_an_extension_holds_it(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await _load(mgr)
            n = 16 * MiB  # 64 MiB of float32
            # a small tensor whose crossings let the host look again at
            # what its extensions still hold (the library does so at each
            # CUDA crossing, and when an extension exits)
            probe = torch.zeros(4, device="cuda")
            await ext.echo(probe)
            base = _reserved()
            t = torch.full((n,), 4.0, device="cuda")
            assert await ext.hold(t) == 1
            # the host lets go and allocates as much again: the caching
            # allocator would hand the same block out, unless the library
            # keeps it for the extension
            del t
            gc.collect()
            churn = torch.full((n,), -1.0, device="cuda")
            torch.cuda.synchronize()
            assert await ext.held_total(0) == 4.0 * n, (
                "memory the extension holds was reused by the host"
            )
            del churn
            assert _reserved() >= base + n * 4, (
                "the allocation was freed while the extension holds it"
            )
            assert await ext.held_total(0) == 4.0 * n
            # once the extension lets go, the host's memory becomes freeable
            await ext.drop_held()

            async def cross() -> None:
                await ext.echo(probe)

            ok = await _settle(lambda: _reserved() <= base + TOLERANCE, 10, cross)
            assert ok, (
                f"torch.cuda.memory_reserved() stays at {_reserved() / MiB:.0f} MiB "
                f"(was {base / MiB:.0f} MiB) after the extension dropped the tensor"
            )

    run(main())


def test_killed_extension_releases_host_memory(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await _load(mgr)
            pid = await ext.getpid()
            assert pid == ext.pid
            n = 64 * MiB  # 256 MiB of float32
            base = _reserved()
            t = torch.ones(n, device="cuda")
            assert await ext.hold(t) == 1
            assert await ext.held_total(0) == float(n)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while ext.alive and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the handle; no event to await
                await asyncio.sleep(0.05)
            with pytest.raises(pyisolate.ExtensionCrashed):
                await asyncio.wait_for(ext.getpid(), 10)
            assert ext.exit_status == -signal.SIGKILL
            # the host's tensor is still good, and once dropped its memory
            # goes back (the release happens as the host processes the exit)
            assert float(t.double().sum()) == float(n)
            del t
            ok = await _settle(lambda: _reserved() <= base + TOLERANCE, 10)
            assert ok, (
                f"torch.cuda.memory_reserved() stays at {_reserved() / MiB:.0f} MiB "
                f"(was {base / MiB:.0f} MiB before the 256 MiB tensor) after the "
                f"extension that held it was killed"
            )

    run(main())


def test_pass_on_between_extensions_without_copy(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            a, b = await asyncio.gather(_load(mgr, "cuda_a"), _load(mgr, "cuda_b"))
            n = 1 << 20
            x = await a.make([n], 1.0)  # A's memory
            assert await b.hold(x) == 1  # passed on by the host
            await b.fill_held_late(0, 8.0)  # B writes ...
            assert bool((x == 8).all()), "B's write is not seen by the host"
            assert await a.held_total(0) == 8.0 * n, "B's write is not seen by A"
            _late(x.add_, 1.0)  # ... the host writes ...
            assert await b.held_total(0) == 9.0 * n, "the host's write is not seen by B"
            y = await b.read_held(0)  # back from B: still A's memory
            assert y.data_ptr() == x.data_ptr(), "B gave back a copy"
            assert await a.same_as_held(y, 0), "A got back a copy of its own tensor"
            # the reverse: a host tensor through A to B
            h = torch.zeros(n, device="cuda")
            h2 = await a.echo(h)
            assert h2.data_ptr() == h.data_ptr()
            await b.fill_late(h2, 2.0)
            assert bool((h == 2).all())

    run(main())
