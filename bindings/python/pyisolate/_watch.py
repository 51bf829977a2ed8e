"""ExtensionConfig(watch=True): reload an extension when its files change.

One task per watched extension follows its ``module_path`` with
``watchfiles`` (inotify, in a thread of its own) and reloads the extension
once per burst of changes: a burst ends when no change came for
``QUIET_MS`` (or after ``BURST_MS`` of changes). Changes made during a
reload are the next burst. What Python writes itself (``__pycache__``,
``*.pyc``) and editors' swap files are ignored (watchfiles' default
filter). The lifecycle event "watching" says it has started (changes
from then on count); a reload that fails is logged, the launcher emits
its "reload_failed" event and the old process goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from ._errors import ExtensionStopped
from ._launch import LifecycleEvent

logger = logging.getLogger("pyisolate")

QUIET_MS = 300  # a burst of changes ends after this long without one
BURST_MS = 2000  # ... or after this long in all


class Watcher:
    """Reloads one extension on changes under ``path`` until ``close()``."""

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        ready: Callable[[], Awaitable[object]],
        reload: Callable[[], Awaitable[None]],
        emit: Callable[[LifecycleEvent], None],
        pid: Callable[[], int | None],
    ) -> None:
        self.name = name
        self.path = os.path.abspath(os.fspath(path))
        self.reloads = 0  # reloads this watcher started
        self._ready = ready
        self._reload = reload
        self._emit = emit  # the manager's lifecycle events ("watching")
        self._pid = pid
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"pyisolate-watch-{name}"
        )

    async def _run(self) -> None:
        try:
            await self._ready()
        except Exception:
            pass  # a failed first load: a change may fix it
        if self._stop.is_set():
            return
        # Imported here: extension processes import this package without it.
        import watchfiles

        try:
            bursts = watchfiles.awatch(
                self.path, debounce=BURST_MS, step=QUIET_MS, stop_event=self._stop
            ).__aiter__()
            # The generator's first step sets the inotify watches up (before
            # its first await): once it has run, no change is missed.
            first = asyncio.ensure_future(bursts.__anext__())
            await asyncio.sleep(0)
            logger.info("[%s] watching %s for changes", self.name, self.path)
            self._emit(LifecycleEvent(self.name, "watching", self._pid()))
            try:
                changes = await first
            except StopAsyncIteration:
                return
            if await self._burst(changes):
                async for changes in bursts:
                    if not await self._burst(changes):
                        break
        except Exception as exc:  # e.g. out of inotify instances
            logger.error("[%s] cannot watch %s for changes: %s", self.name, self.path, exc)

    async def _burst(self, changes: set[tuple[Any, str]]) -> bool:
        """Reload for one burst of changes; whether to go on watching."""
        if self._stop.is_set():
            return False
        files = sorted({p.removeprefix(self.path + os.sep) for _, p in changes})
        logger.info("[%s] changed: %s: reloading", self.name, ", ".join(files))
        self.reloads += 1
        try:
            await self._reload()
        except ExtensionStopped:
            return False
        except Exception as exc:
            logger.error(
                "[%s] reload after a change failed (the old process goes on serving): %s",
                self.name,
                exc,
            )
        return True

    def stop(self) -> None:
        """Start no reload from now on (close() waits for the end)."""
        self._stop.set()

    async def close(self) -> None:
        """Stop watching; wait for the watcher's end (a reload underway
        ends first: stopping the extension ends it)."""
        self._stop.set()
        try:
            await self._task
        except BaseException as exc:  # noqa: BLE001 - its end is all that matters here
            if not isinstance(exc, asyncio.CancelledError):
                logger.warning("[%s] the file watcher failed: %s", self.name, exc)
