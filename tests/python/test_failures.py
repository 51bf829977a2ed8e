"""Crashes, timeouts, cancellation, load and install failures, host death."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyisolate
from conftest import EXTENSIONS, HERE, ext_config, manager, run, subprocess_env


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state == "Z"
    except FileNotFoundError:
        return True


def test_sigkill_mid_call_then_reload(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            victim = await mgr.load_extension(ext_config("victim", "sleepy"))
            other = await mgr.load_extension(ext_config("bystander", "basic"))
            pid = await victim.getpid()
            calls = [asyncio.ensure_future(victim.hang()) for _ in range(5)]
            await asyncio.sleep(0.2)
            os.kill(pid, signal.SIGKILL)
            for call in calls:
                with pytest.raises(pyisolate.ExtensionCrashed) as info:
                    await asyncio.wait_for(call, 10)
            assert info.value.exit_status == -signal.SIGKILL
            assert info.value.signal == signal.SIGKILL
            assert "SIGKILL" in str(info.value)
            # later calls fail at once
            with pytest.raises(pyisolate.ExtensionCrashed):
                await asyncio.wait_for(victim.getpid(), 2)
            # the others keep working
            assert await other.echo("alive") == "alive"
            # and a reload works
            again = await mgr.load_extension(ext_config("victim", "sleepy"))
            assert await again.getpid() != pid

    run(main())


def test_hung_extension_times_out(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("hung", "sleepy"))
            with pytest.raises(pyisolate.CallTimeout):
                await ext.with_timeout(0.5).hang()
            with pytest.raises(TimeoutError):  # CallTimeout is a TimeoutError
                await ext.with_timeout(0.3).block(2)
            assert isinstance(await ext.getpid(), int)  # still serving
        async with manager(venv_root, default_timeout=0.3) as mgr:
            ext = await mgr.load_extension(ext_config("hung2", "sleepy"))
            with pytest.raises(pyisolate.CallTimeout):
                await ext.hang()
            per_ext = await mgr.load_extension(ext_config("hung3", "sleepy", timeout=0.2))
            with pytest.raises(pyisolate.CallTimeout):
                await per_ext.hang()
            assert await per_ext.with_timeout(None).block(0.5) == 0.5  # no deadline

    run(main())


def test_cancellation_reaches_the_extension(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("cancel", "basic"))
            task = asyncio.ensure_future(ext.sleep(123))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(50):
                if await ext.cancelled() == [123]:
                    break
                await asyncio.sleep(0.05)
            assert await ext.cancelled() == [123]
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ext.sleep(77), 0.3)
            for _ in range(50):
                if 77 in await ext.cancelled():
                    break
                await asyncio.sleep(0.05)
            assert 77 in await ext.cancelled()

    run(main())


def test_import_error_is_extension_load_error(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            with pytest.raises(pyisolate.ExtensionLoadError) as info:
                await mgr.load_extension(ext_config("broken"))
            assert "this_module_does_not_exist_anywhere" in str(info.value)
            assert "Traceback" in info.value.remote_traceback
            handle = mgr.load_extension(ext_config("broken2", "broken"))
            with pytest.raises(pyisolate.ExtensionLoadError):
                await handle.anything()
            with pytest.raises(pyisolate.ExtensionLoadError, match="status 3") as info:
                await mgr.load_extension(ext_config("dies"))
            assert "about to die" in str(info.value)
            with pytest.raises(pyisolate.ExtensionLoadError):  # the same name again, at once
                await mgr.load_extension(ext_config("broken"))
            with pytest.raises(pyisolate.ExtensionLoadError, match="does not exist"):
                await mgr.load_extension(
                    pyisolate.ExtensionConfig(name="missing", module_path=str(EXTENSIONS / "nope"))
                )

    run(main())


def test_failed_install_shows_uv_output(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            with pytest.raises(pyisolate.DependencyInstallError) as info:
                await mgr.load_extension(
                    ext_config(
                        "badpkg",
                        "noclass",
                        dependencies=["pyisolate-test-no-such-package-xyzzy==0.0.1"],
                    )
                )
            err = info.value
            assert err.extension == "badpkg"
            assert "pyisolate-test-no-such-package-xyzzy" in str(err)
            assert err.returncode != 0 and err.output

    run(main())
    assert not (venv_root / "badpkg" / ".pyisolate-fingerprint").exists()


HOST_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {here!r})
    import pyisolate
    from conftest import ext_config

    async def main():
        mgr = pyisolate.ExtensionManager(pyisolate.ExtensionBase,
            pyisolate.ExtensionManagerConfig(venv_root_path={root!r}))
        ext = await mgr.load_extension(ext_config("orphan", "sleepy"))
        print(await ext.getpid(), flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_host_sigkill_leaves_no_extension(venv_root, tmp_path) -> None:
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT.format(here=str(HERE), root=str(venv_root)))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, env=subprocess_env(), text=True
    )
    try:
        line = proc.stdout.readline()
        child = int(line)
        assert not _gone(child)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child), f"extension process {child} survived its host"


def test_blocked_event_loops_are_not_declared_lost(venv_root) -> None:
    """An extension (or host) whose event loop is blocked for longer than a
    few heartbeats keeps working: liveness follows heartbeat_timeout."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("blocker", "sleepy"))
            assert await ext.block_loop(6.5) == 6.5
            time.sleep(6.5)  # noqa: ASYNC251 - the host's loop, blocked too
            assert isinstance(await ext.getpid(), int)
            assert ext.alive

    run(main())


def test_calls_after_stop_and_stop_during_calls(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("stopper", "basic"))
            calls = [asyncio.ensure_future(ext.sleep(30)) for _ in range(5)]
            await asyncio.sleep(0.2)
            await ext.stop()
            for call in calls:
                with pytest.raises(pyisolate.ExtensionStopped):
                    await call
            with pytest.raises(pyisolate.ExtensionStopped):
                await ext.echo(1)
            # stopping a handle that is still loading
            loading = mgr.load_extension(ext_config("stopper2", "basic"))
            await loading.stop()
            with pytest.raises(pyisolate.ExtensionStopped):
                await loading.echo(1)
            with pytest.raises(pyisolate.ExtensionStopped):
                await loading

    run(main())


def test_foreign_folder_under_venv_root_is_not_deleted(venv_root) -> None:
    foreign = venv_root / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            with pytest.raises(pyisolate.DependencyInstallError, match="not a venv"):
                await mgr.load_extension(ext_config("foreign", "noclass"))

    run(main())
    assert (foreign / "precious.txt").read_text() == "keep me"


async def _until(predicate, what: str, seconds: float = 30.0) -> None:
    """Poll an async predicate (a call to the extension) until it holds."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


def test_cancel_one_of_several_calls_cancels_exactly_its_task(venv_root) -> None:
    """With several calls in flight, cancelling the host's task of one
    cancels that call's task in the extension and no other; the others
    finish normally afterwards."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("cancel_several", "probe"))
            tags = ["a", "b", "c", "d"]
            calls = {tag: asyncio.ensure_future(ext.wait(tag)) for tag in tags}

            async def all_started() -> bool:
                return sorted((await ext.state())["started"]) == tags

            await _until(all_started, "all four calls running in the extension")
            calls["b"].cancel()
            with pytest.raises(asyncio.CancelledError):
                await calls["b"]

            await _until(lambda: _is(ext, ["b"]), "the task of 'b' cancelled in the extension")
            calls["d"].cancel()
            await _until(lambda: _is(ext, ["b", "d"]), "the task of 'd' cancelled too")
            # The others were never cancelled, and still answer.
            for tag in ("a", "c"):
                await ext.release(tag)
                assert await asyncio.wait_for(calls[tag], 30) == tag
            assert (await ext.state())["cancelled"] == ["b", "d"]

    run(main())


async def _is(ext, cancelled: list[str]) -> bool:
    return (await ext.state())["cancelled"] == cancelled


def test_timed_out_call_is_cancelled_in_the_extension(venv_root) -> None:
    """A call past its timeout fails with CallTimeout in the host and its
    task is cancelled in the extension; a call in flight beside it without
    a timeout is untouched."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("timeout_cancel", "probe"))
            patient = asyncio.ensure_future(ext.wait("patient"))
            with pytest.raises(pyisolate.CallTimeout):
                await ext.with_timeout(0.5).wait("late")
            await _until(lambda: _is(ext, ["late"]), "the timed-out task cancelled")
            state = await ext.state()
            assert sorted(state["started"]) == ["late", "patient"]
            assert not patient.done()
            await ext.release("patient")
            assert await asyncio.wait_for(patient, 30) == "patient"
            assert (await ext.state())["cancelled"] == ["late"]

    run(main())
