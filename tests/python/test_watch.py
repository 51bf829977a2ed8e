"""ExtensionConfig(watch=True): a change under module_path reloads the
extension, once per burst of changes; a bad change leaves the old process
serving and says why; stop() ends the watcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import pyisolate
from conftest import manager, run

SOURCE = """
from pyisolate import ExtensionBase

VERSION = {version!r}


class Watched(ExtensionBase):
    async def version(self):
        return VERSION
"""


def _write(folder: Path, version: object, text: str | None = None) -> None:
    (folder / "__init__.py").write_text(
        text if text is not None else SOURCE.format(version=version)
    )


async def _next(queue: asyncio.Queue[pyisolate.LifecycleEvent], kinds: set[str]) -> str:
    """The next event of one of these kinds (a generous bound, never the
    pass criterion)."""
    while True:
        event = await asyncio.wait_for(queue.get(), 120)
        if event.kind in kinds:
            return event.kind if not event.reason else f"{event.kind}: {event.reason}"


def test_watch_reloads_on_change(venv_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    _write(folder, 1)

    async def main() -> None:
        async with manager(venv_root) as mgr:
            queue: asyncio.Queue[pyisolate.LifecycleEvent] = asyncio.Queue()
            mgr.on_event(queue.put_nowait)
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(name="watched", module_path=str(folder), watch=True)
            )
            assert await ext.version() == 1
            first_pid = ext.pid
            # From the "watching" event on, a change is seen (also one made
            # at once).
            assert await _next(queue, {"watching"}) == "watching"
            _write(folder, 2)
            assert await _next(queue, {"reloaded", "reload_failed"}) == "reloaded"
            assert await ext.version() == 2
            assert ext.pid != first_pid

            # A burst of edits: one reload, on the last one's code.
            for version in range(3, 8):
                _write(folder, version)
            assert await _next(queue, {"reloaded", "reload_failed"}) == "reloaded"
            assert await ext.version() == 7
            await asyncio.sleep(1.5)  # longer than the watcher's quiet period
            later = [queue.get_nowait().kind for _ in range(queue.qsize())]
            assert "starting" not in later, later

            # A bad edit: the event says why; the old process goes on serving.
            pid = ext.pid
            _write(folder, None, "def broken(:\n")
            why = await _next(queue, {"reloaded", "reload_failed"})
            assert why.startswith("reload_failed") and "SyntaxError" in why, why
            assert await ext.version() == 7
            assert ext.pid == pid

            # Fixed: reloaded again.
            _write(folder, 8)
            assert await _next(queue, {"reloaded", "reload_failed"}) == "reloaded"
            assert await ext.version() == 8
            await ext.stop()
            # Stopped: a change reloads nothing.
            _write(folder, 9)
            await asyncio.sleep(1.0)
            later = [queue.get_nowait().kind for _ in range(queue.qsize())]
            assert later == ["stopped"], later

    run(main())


@pytest.mark.parametrize("kw", [{"isolated": False}, {"remote": True}])
def test_watch_refused_where_no_reload(
    venv_root: Path, tmp_path: Path, kw: dict[str, bool]
) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            cfg = pyisolate.ExtensionConfig(
                name="nowatch", module_path=str(tmp_path), watch=True, **kw
            )
            with pytest.raises(ValueError, match="watch=True"):
                mgr.load_extension(cfg)

    run(main())
