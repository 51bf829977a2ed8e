"""Calling extensions from synchronous code.

``SyncExtensionManager`` runs an ExtensionManager on a private event loop in
a background thread; its methods and the methods of the handles it returns
block until the result is there::

    with pyisolate.SyncExtensionManager(pyisolate.ExtensionBase, config) as manager:
        ext = manager.load_extension(pyisolate.ExtensionConfig(name=..., module_path=...))
        print(ext.process_data([1, 2, 3]))   # no await

Use it from code that has no event loop of its own; from async code use
ExtensionManager.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from ._base import ExtensionBase
from ._handle import Extension
from ._launch import LifecycleEvent
from ._manager import ExtensionManager
from ._profile import Profile
from .config import ExtensionConfig, ExtensionManagerConfig

R = TypeVar("R")


class SyncExtensionManager:
    """A blocking facade over ExtensionManager (see the module docstring)."""

    def __init__(
        self,
        extension_type: type[ExtensionBase] = ExtensionBase,
        config: ExtensionManagerConfig | Mapping[str, Any] | None = None,
    ) -> None:
        self._manager: ExtensionManager[Any] = ExtensionManager(extension_type, config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pyisolate-sync-loop", daemon=True
        )
        self._thread.start()
        self._closed = False
        # A program that forgets stop_all(): stop on the loop's own thread at
        # exit (before pyisolate's own last-resort clean-up runs).
        atexit.register(self._at_exit)

    def _at_exit(self) -> None:
        try:
            self.stop_all()
        except Exception:
            pass

    def _run(self, coro: Coroutine[Any, Any, R], timeout: float | None = None) -> R:
        if self._closed:
            coro.close()
            raise RuntimeError("this SyncExtensionManager is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def manager(self) -> ExtensionManager[Any]:
        """The underlying async manager (its loop runs in another thread)."""
        return self._manager

    def load_extension(self, config: ExtensionConfig | Mapping[str, Any]) -> SyncExtension:
        """Load an extension and wait until it is ready. A remote one
        (``remote=True``) is returned at once: start its process with the
        handle's ``ticket``, then ``wait_ready()`` (or just call it)."""
        cfg = ExtensionConfig.from_any(config)

        async def load() -> Extension[Any]:
            if cfg.remote:
                return self._manager.load_extension(cfg)
            return await self._manager.load_extension(cfg)

        return SyncExtension(self, self._run(load()))

    def get_extension(self, name: str) -> SyncExtension:
        """The blocking handle of the extension loaded under ``name``."""
        return SyncExtension(self, self._manager.get_extension(name))

    def reload(self, name: str, config: ExtensionConfig | Mapping[str, Any] | None = None) -> None:
        """``ExtensionManager.reload``, blocking until the new process serves."""
        self._run(self._manager.reload(name, config))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each loaded extension's ``stats()``, by name."""
        return self._manager._stats_from_any_thread()

    def on_event(self, callback: Callable[[LifecycleEvent], Any]) -> Callable[[], None]:
        """``ExtensionManager.on_event``: ``callback(event)`` runs on the
        manager's loop, in its background thread. Returns a function that
        unsubscribes it."""

        async def subscribe() -> Callable[[], None]:
            return self._manager.on_event(callback)

        return self._run(subscribe())

    @contextlib.contextmanager
    def trace(self, path: str | os.PathLike[str]) -> Iterator[None]:
        """``with manager.trace("calls.json"):``: ExtensionManager.trace."""
        recording = self._manager.trace(path)
        self._run(recording.__aenter__())
        try:
            yield
        except BaseException as exc:
            if not self._run(recording.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._run(recording.__aexit__(None, None, None))

    def prometheus_collector(self) -> Any:
        """ExtensionManager.prometheus_collector (scrapes from any thread)."""
        return self._manager.prometheus_collector()

    def metrics_text(self) -> str:
        """The extensions' stats in the Prometheus text exposition format."""
        return self._manager.metrics_text()

    def stop_all(self) -> None:
        """Stop every extension and the background loop."""
        if self._closed:
            return
        atexit.unregister(self._at_exit)
        try:
            self._run(self._manager.stop_all())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    close = stop_all

    def __enter__(self) -> SyncExtensionManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


class SyncExtension:
    """Blocking handle: ``ext.method(*args)`` returns the result."""

    def __init__(self, owner: SyncExtensionManager, ext: Extension[Any]) -> None:
        self._owner = owner
        self._ext = ext
        self.name = ext.name

    @property
    def pid(self) -> int | None:
        return self._ext.pid

    @property
    def ticket(self) -> str | None:
        """What a remote extension's process is started with (a secret)."""
        return self._ext.ticket

    def wait_ready(self, timeout: float | None = None) -> SyncExtension:
        """Block until the extension is loaded (a remote one: connected)."""
        self._owner._run(self._ext.wait_ready(), timeout)
        return self

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        method: Callable[..., Any] = getattr(self.remote, name)
        return method

    @property
    def remote(self) -> Any:
        """The extension's methods, also those whose names this handle uses
        itself (``ext.remote.pid()`` calls a method named pid)."""
        return _SyncView(self._owner, self._ext.remote)

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call ``method`` with a deadline of ``timeout`` seconds."""
        return self._owner._run(getattr(self._ext.with_timeout(timeout), method)(*args, **kwargs))

    def stop(self) -> None:
        """Stop the extension (its ``stop`` hook runs); returns when its
        process has ended."""
        self._owner._run(self._ext.stop())

    @property
    def alive(self) -> bool:
        return self._ext.alive

    def reload(self, config: ExtensionConfig | Mapping[str, Any] | None = None) -> None:
        """``Extension.reload``, blocking until the new process serves
        (ExtensionLoadError if it did not load; the old one goes on)."""
        self._owner._run(self._ext.reload(config))

    def stats(self) -> dict[str, Any]:
        """``Extension.stats()`` (taken on the manager's loop)."""

        async def take() -> dict[str, Any]:
            return self._ext.stats()

        return self._owner._run(take())

    def profile(self, seconds: float = 1.0, interval: float = 0.005) -> Profile:
        """``Extension.profile``: blocks for ``seconds``."""
        return self._owner._run(self._ext.profile(seconds, interval))

    def register_event_handler(self, name: str, handler: Callable[[Any], Any]) -> None:
        """``Extension.register_event_handler``: ``handler(payload)`` runs on
        the manager's loop, in its background thread."""

        async def register() -> None:
            self._ext.register_event_handler(name, handler)

        self._owner._run(register())


class _SyncView:
    """``SyncExtension.remote``: the extension's methods, every name of them,
    blocking."""

    def __init__(self, owner: SyncExtensionManager, view: Any) -> None:
        self._owner = owner
        self._view = view  # Extension.remote

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        call = getattr(self._view, name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self._owner._run(call(*args, **kwargs))

        method.__name__ = name
        return method
