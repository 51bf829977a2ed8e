"""Restarts, reloads and lifecycle events, through the public API: the
tests wait for events, never for wall-clock time (bounds are hang guards)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import pyisolate
from conftest import ext_config, manager, run

GUARD = 120  # seconds: a hang guard only

SOURCE = '''
import asyncio, os
from pyisolate import ExtensionBase

VERSION = {version}


class Reloadable(ExtensionBase):
    def __init__(self):
        self.running = 0

    async def version(self):
        return VERSION

    async def getpid(self):
        return os.getpid()

    async def count_running(self):
        return self.running

    async def slow(self, flag):
        """Runs until the file ``flag`` exists; this process's pid."""
        self.running += 1
        while not os.path.exists(flag):
            await asyncio.sleep(0.01)
        return os.getpid()
'''


def _write(folder: Path, version: object) -> None:
    (folder / "__init__.py").write_text(SOURCE.format(version=version))


def _module(tmp_path: Path, version: object = 1) -> Path:
    folder = tmp_path / "reloadable"
    folder.mkdir(exist_ok=True)
    _write(folder, version)
    return folder


async def _until(
    events: AsyncIterator[pyisolate.LifecycleEvent], kind: str, seen: list
) -> pyisolate.LifecycleEvent:
    async def wait() -> pyisolate.LifecycleEvent:
        async for event in events:
            seen.append((event.kind, event.pid))
            if event.kind == kind:
                return event
        raise AssertionError(f"events ended before {kind!r}: {seen}")

    return await asyncio.wait_for(wait(), GUARD)


def test_reload_under_concurrent_calls(venv_root, tmp_path) -> None:
    async def main() -> None:
        async with manager(venv_root, stop_timeout=GUARD) as mgr:
            events = mgr.events()
            folder = _module(tmp_path, 1)
            cfg = pyisolate.ExtensionConfig(name="reloadable", module_path=str(folder))
            ext = await mgr.load_extension(cfg)
            seen: list = []
            first = await _until(events, "ready", seen)
            old_pid = await ext.getpid()
            assert first.pid == old_pid
            flag = tmp_path / "release"
            running = asyncio.ensure_future(ext.slow(str(flag)))
            while await ext.count_running() < 1:  # noqa: ASYNC110 - a count in the extension
                await asyncio.sleep(0.01)
            _write(folder, 2)
            reload = asyncio.ensure_future(ext.reload())
            await asyncio.sleep(0)  # the reload has begun
            during = asyncio.ensure_future(ext.version())  # made during the reload
            await _until(events, "starting", seen)
            ready = await _until(events, "ready", seen)
            assert ready.pid != old_pid
            assert await asyncio.wait_for(during, GUARD) == 2  # went to the new process
            assert await ext.version() == 2
            assert not reload.done()  # the old process still runs its call
            assert not running.done()
            flag.write_text("go")
            assert await asyncio.wait_for(running, GUARD) == old_pid  # finished on the old one
            await asyncio.wait_for(reload, GUARD)
            reloaded = await _until(events, "reloaded", seen)
            assert reloaded.pid == ext.pid == ready.pid
            assert mgr.get_extension("reloadable") is ext  # the same handle
            assert await mgr.get_extension("reloadable").getpid() == ready.pid
            assert [k for k, _ in seen] == ["starting", "ready", "starting", "ready", "reloaded"]
            # manager.reload: once more, the same handle
            await mgr.reload("reloadable")
            assert await ext.getpid() not in (old_pid, ready.pid)
            await ext.stop()
            assert await _until(events, "stopped", seen)

    run(main())


def test_reload_that_fails_keeps_the_old_process(venv_root, tmp_path) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            folder = _module(tmp_path, 1)
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(name="reloadable", module_path=str(folder))
            )
            pid = await ext.getpid()
            _write(folder, "1 +")  # a syntax error
            with pytest.raises(pyisolate.ExtensionLoadError) as info:
                await asyncio.wait_for(ext.reload(), GUARD)
            assert "SyntaxError" in str(info.value)
            assert await ext.getpid() == pid  # the old process serves on
            assert await ext.version() == 1
            _write(folder, 3)  # fixed: a reload now works
            await asyncio.wait_for(ext.reload(), GUARD)
            assert await ext.version() == 3

    run(main())


def test_restart_after_sigkill_with_calls_waiting(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            seen_cb: list = []
            mgr.on_event(lambda event: seen_cb.append(event.kind))
            events = mgr.events()
            ext = await mgr.load_extension(
                ext_config("restarted", "sleepy", restart="on-failure", max_restarts=3)
            )
            pid = await ext.getpid()
            seen: list = []
            await _until(events, "ready", seen)
            os.kill(pid, signal.SIGKILL)
            crashed = await _until(events, "crashed", seen)
            assert crashed.pid == pid and "signal 9" in crashed.reason
            # calls made while it restarts wait for the new process
            waiting = [asyncio.ensure_future(ext.getpid()) for _ in range(3)]
            restarting = await _until(events, "restarting", seen)
            assert restarting.attempt == 1 and restarting.delay == 0.5
            pids = await asyncio.wait_for(asyncio.gather(*waiting), GUARD)
            assert len(set(pids)) == 1 and pids[0] != pid
            assert ext.pid == pids[0] and ext.alive
            await _until(events, "ready", seen)
            kinds = [k for k, _ in seen]
            assert kinds == ["starting", "ready", "crashed", "restarting", "starting", "ready"]
            assert seen_cb == kinds

    run(main())


def test_restart_budget_exhausted(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            events = mgr.events()
            ext = await mgr.load_extension(
                ext_config(
                    "budget", "sleepy", restart="on-failure", max_restarts=1, restart_window=3600
                )
            )
            seen: list = []
            os.kill(await ext.getpid(), signal.SIGKILL)
            await _until(events, "crashed", seen)
            second = await ext.getpid()  # waits for the restart
            os.kill(second, signal.SIGKILL)
            await _until(events, "crashed", seen)
            # past max_restarts within the window: it stays down
            with pytest.raises(pyisolate.ExtensionCrashed) as info:
                await asyncio.wait_for(ext.getpid(), GUARD)
            assert info.value.exit_status == -signal.SIGKILL
            assert not ext.alive
            kinds = [k for k, _ in seen]
            assert kinds == [
                "starting",
                "ready",
                "crashed",
                "restarting",
                "starting",
                "ready",
                "crashed",
            ]

    run(main())


def test_no_restart_by_default_and_bad_policy(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            with pytest.raises(ValueError):
                mgr.load_extension(ext_config("bad", "sleepy", restart="always"))
            events = mgr.events()
            ext = await mgr.load_extension(ext_config("once", "sleepy"))
            seen: list = []
            os.kill(await ext.getpid(), signal.SIGKILL)
            await _until(events, "crashed", seen)
            with pytest.raises(pyisolate.ExtensionCrashed):
                await asyncio.wait_for(ext.getpid(), GUARD)
        # stop_all stops it (a "stopped" event), and its end ends the iterator
        assert [e.kind async for e in events] == ["stopped"]

    run(main())
