"""Remote extensions: ExtensionConfig(remote=True) gives a ticket; a process
started anywhere with ``python -m pyisolate.remote TICKET MODULE_PATH``
connects over tcp with CURVE and serves the extension. Here the "remote"
process runs on this machine, over 127.0.0.1, which changes nothing for
the library: a tcp peer shares no memory with the host."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import EXTENSIONS, ext_config, manager, run, subprocess_env

np = pytest.importorskip("numpy")


def _remote(ticket: str, module: str = "basic", *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pyisolate.remote", ticket, str(EXTENSIONS / module), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=subprocess_env(),
    )


def _end(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


def test_remote_extension_serves_calls_singletons_and_copies(venv_root) -> None:
    import pyisolate
    from shared_apis import Store

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = mgr.load_extension(ext_config("far", "basic", remote=True))
            assert ext.ticket and ext.ticket.startswith("pyi1.")
            proc = _remote(ext.ticket)
            try:
                await asyncio.wait_for(ext.wait_ready(), 60)
                assert ext.pid is None and ext.alive
                assert await ext.hooks() == ["before_module_loaded", "on_module_loaded:basic"]
                assert await ext.echo({"a": (1, 2), 3: {4}}) == {"a": (1, 2), 3: {4}}
                assert (await ext.info())["pid"] == proc.pid
                # the host's singletons, called from the remote process
                await ext.store_set("k", [1, "x"])
                assert Store().data["k"] == [1, "x"]
                assert await ext.store_get("k") == [1, "x"]
                # callables cross too
                assert await ext.call_back(lambda v: v * 2, 21) == 42
                # arrays cross as copies both ways: same values, no shared memory
                a = pyisolate.empty((64, 64), "float32")
                a[...] = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
                b = await ext.echo(a[::2, 1::3])
                assert b.dtype == np.float32 and b.shape == (32, 21)
                assert (b == a[::2, 1::3]).all()
                assert pyisolate.region_name(b) != pyisolate.region_name(a)
                # it came inline, into a region this process made: the remote
                # process named no shared memory of its own
                assert pyisolate.region_name(b).rsplit("-", 2)[1] == str(os.getpid())
                b[...] = -1
                assert (a >= 0).all()
                # an array that arrives inline lands in the region the last
                # one of its size left here (a spare), with its own values
                first = await ext.echo(a)
                name = pyisolate.region_name(first)
                del first
                again = await ext.echo(a + 1)
                assert pyisolate.region_name(again) == name and (again == a + 1).all()
                del again
                # a large one crosses in frames of 1 MiB (the chunked inline
                # form), both ways
                big = pyisolate.empty((5 * 1024 + 3, 256), "float32")
                big[...] = np.arange(big.size, dtype=np.float32).reshape(big.shape)
                back = await ext.echo({"big": big, "view": big[::-2, 3::5]})
                assert (back["big"] == big).all() and (back["view"] == big[::-2, 3::5]).all()
                del back
                # the host answers the remote process's calls inline too (the
                # broker flags them answer-inline): an array kept by the
                # host's singleton, read back from there
                await ext.store_set("arr", a[:4])
                assert Store().data["arr"].shape == (4, 64)
                got = await ext.store_get("arr")
                assert (got == a[:4]).all()
                del Store().data["arr"], got  # the singleton outlives the test
                with pytest.raises(ValueError, match="bad value"):
                    await ext.fail("value")
                await ext.stop()
                assert not ext.alive
                assert proc.wait(timeout=30) == 0, _end(proc)
            finally:
                out = _end(proc)
                Store().data.clear()  # a process-wide singleton: keep no array
            assert "serving extension 'far'" in out, out

    run(main())


def test_extension_calls_a_remote_extension_with_an_array(venv_root) -> None:
    """A local extension calls a callable of a remote extension directly
    (through the broker, not the host): its first request names shared
    memory, the broker refuses it (INLINE: it never copies a payload), and
    the caller's node sends it again inline, and inline from then on."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            far = mgr.load_extension(ext_config("far_adder", "basic", remote=True))
            proc = _remote(far.ticket)
            try:
                await asyncio.wait_for(far.wait_ready(), 60)
                near = await mgr.load_extension(
                    ext_config("near_caller", "basic", dependencies=["numpy>=2.2"])
                )
                add = await far.make_adder(1.5)
                assert await near.call_back(add, 2) == 3.5
                a = np.arange(8, dtype=np.float64)
                for _ in range(2):
                    got = await near.call_back(add, a)
                    assert (got == a + 1.5).all()
                stats = mgr.service_stats("ext.far_adder")
                assert stats is not None and stats["errors"] == 1, stats  # the one refusal
                await far.stop()
            finally:
                out = _end(proc)
            assert "serving extension 'far_adder'" in out, out

    run(main())


def test_remote_extension_lost_and_bad_tickets(venv_root) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root, heartbeat_timeout=2.0, start_timeout=5.0) as mgr:
            ext = mgr.load_extension(ext_config("gone", "basic", remote=True))
            proc = _remote(ext.ticket)
            try:
                await asyncio.wait_for(ext.wait_ready(), 60)
                assert await ext.echo(1) == 1
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                t0 = time.monotonic()
                while ext.alive and time.monotonic() - t0 < 15:  # noqa: ASYNC110 - polls the handle; no event to await
                    await asyncio.sleep(0.1)
                assert not ext.alive, "the host never noticed the remote process died"
                with pytest.raises(pyisolate.ExtensionCrashed):
                    await ext.echo(1)
            finally:
                _end(proc)

            # a ticket whose keys the broker never admitted: the process gives
            # up, and the extension never becomes ready
            from pyisolate._core import curve_keypair
            from pyisolate.remote import make_ticket, read_ticket

            ext2 = mgr.load_extension(ext_config("stranger", "basic", remote=True))
            fields = read_ticket(ext2.ticket)
            fields["public_key"], fields["secret_key"] = curve_keypair()
            proc = _remote(make_ticket(fields), "basic", "--connect-timeout", "2")
            try:
                assert proc.wait(timeout=30) == 1
            finally:
                out = _end(proc)
            assert "no answer from the host" in out, out
            with pytest.raises(pyisolate.ExtensionLoadError, match="did not connect"):
                await ext2.wait_ready()

    run(main())


def test_remote_cli_refuses_bad_tickets() -> None:
    for ticket in ("garbage", "pyi1.%%%", "pyi1.e30"):
        proc = subprocess.run(
            [sys.executable, "-m", "pyisolate.remote", ticket, str(EXTENSIONS / "basic")],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            timeout=60,
        )
        assert proc.returncode == 2, (ticket, proc.stderr)
        assert "pyisolate.remote:" in proc.stderr and "ticket" in proc.stderr


def test_sync_manager_remote_extension(venv_root) -> None:
    import pyisolate

    with pyisolate.SyncExtensionManager(
        pyisolate.ExtensionBase, pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)
    ) as mgr:
        ext = mgr.load_extension(ext_config("far_sync", "basic", remote=True))
        assert ext.ticket and ext.ticket.startswith("pyi1.")  # returned before it connects
        proc = _remote(ext.ticket)
        try:
            ext.wait_ready(60)
            assert ext.echo([1, 2]) == [1, 2]
            assert ext.info()["pid"] == proc.pid
            ext.stop()
            assert proc.wait(timeout=30) == 0
        finally:
            _end(proc)


def test_remote_module_path_only_over_there(venv_root) -> None:
    """With the manual launcher the module need not exist on the host: the
    runner is given its own path."""
    import pyisolate
    from shared_apis import Relay, Store

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = mgr.load_extension(
                pyisolate.ExtensionConfig(
                    name="elsewhere",
                    module_path="/nonexistent/on/the/host",
                    remote=True,
                    apis=[Store, Relay],
                )
            )
            proc = _remote(ext.ticket)
            try:
                await asyncio.wait_for(ext.wait_ready(), 60)
                assert await ext.echo(7) == 7
                await ext.stop()
                assert proc.wait(timeout=30) == 0
            finally:
                _end(proc)

    run(main())
