"""The host's handle to one extension (pyisolate.Extension): a thin facade
over its launcher (_launch), which holds the extension's state.

Any attribute that is not the handle's own is a method of the extension,
so the handle has few names and no public helpers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import Any, Generic, TypeVar

from . import _profile
from ._base import ExtensionBase
from ._codes import BrokerError
from ._errors import ExtensionStopped
from ._host import Host
from ._launch import Launcher, _Served
from ._profile import Profile
from ._watch import Watcher
from .config import ExtensionConfig

T = TypeVar("T", bound=ExtensionBase)

_PROFILE_SLACK = 30.0  # seconds past a profile's own that its answer may take


class _Method:
    """``ext.<method>``: calling it returns the call's coroutine."""

    __slots__ = ("_launcher", "_name", "_timeout")

    def __init__(self, launcher: Launcher, name: str, timeout: float | None) -> None:
        self._launcher = launcher
        self._name = name
        self._timeout = timeout

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return self._launcher.call(self._name, args, kwargs, self._timeout)

    def __repr__(self) -> str:
        return f"<method {self._name} of extension {self._launcher.name!r}>"


class _TimeoutView:
    """The extension's methods, every name of them, with one deadline."""

    def __init__(self, launcher: Launcher, timeout: float | None) -> None:
        self._launcher = launcher
        self._timeout = timeout

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self._launcher, name, self._timeout)


class Extension(Generic[T]):
    """The host's handle to one extension.

    ``await ext.method(*args, **kwargs)`` runs ``method`` in the extension
    (the handle's own names, ``name config pid alive exit_status reload remote
    stop ticket wait_ready with_timeout register_event_handler stats profile``, are
    reached through ``ext.remote.<name>``).
    ``await ext`` waits until it is loaded. ``ext.with_timeout(s).method()``
    gives one call a deadline (CallTimeout past it). ``await ext.stop()``
    runs the extension's ``stop()`` hook and ends its process.
    """

    def __init__(self, config: ExtensionConfig, launcher: Launcher, timeout: float | None) -> None:
        self.name = config.name
        self.config = config
        # For ExtensionConfig(remote=True): what its process is started with
        # (python -m pyisolate.remote TICKET MODULE_PATH). A secret.
        self.ticket: str | None = launcher.ticket
        self._launcher = launcher
        self._timeout = timeout  # the calls' default deadline

    @property
    def pid(self) -> int | None:
        """The extension's process id (None in-process or before it started)."""
        return self._launcher.latest().pid

    @property
    def alive(self) -> bool:
        return self._launcher.alive

    @property
    def exit_status(self) -> int | None:
        return self._launcher.latest().exit_status

    def __await__(self) -> Generator[Any, None, Extension[T]]:
        return self.wait_ready().__await__()

    async def wait_ready(self) -> Extension[T]:
        """Wait until the extension is loaded; raise why it could not be."""
        await self._launcher.wait_ready()
        return self

    def __getattr__(self, name: str) -> _Method:
        # Called only for names the instance lacks: the method is kept in
        # its __dict__, so that later calls find it at once (reload drops
        # them, with the launcher they hold).
        if name.startswith("_"):
            raise AttributeError(name)
        method = self.__dict__[name] = _Method(self._launcher, name, self._timeout)
        return method

    @property
    def remote(self) -> Any:
        """The extension's methods, also those whose names this handle uses
        itself (``await ext.remote.stop()`` calls a method named stop)."""
        return _TimeoutView(self._launcher, self._timeout)

    def with_timeout(self, seconds: float | None) -> Any:
        """A view of this handle whose calls have a deadline of ``seconds``."""
        return _TimeoutView(self._launcher, seconds)

    async def stop(self) -> None:
        """Run the extension's stop() hook, then end its process (killing it if
        it does not exit within the manager's stop_timeout); stop watching
        its files (watch=True)."""
        watcher = self._unwatch()
        await self._launcher.stop()
        if watcher is not None:
            await watcher.close()

    async def reload(self, config: ExtensionConfig | Mapping[str, Any] | None = None) -> None:
        """Restart the extension's process on its current files (this handle
        stays valid): calls made meanwhile wait and go to the new process;
        calls running finish on the old one (up to the manager's
        stop_timeout). ``config``: a new config of the same name (its
        dependencies; the venv is rebuilt only when they changed). A new
        process that fails to load raises ExtensionLoadError, with its
        traceback, and the old one goes on serving."""
        cfg = ExtensionConfig.from_any(config) if config is not None else None
        self._launcher = await self._launcher.reload(cfg)
        for name in [k for k, v in self.__dict__.items() if type(v) is _Method]:
            del self.__dict__[name]
        if cfg is not None:
            self.config = cfg

    async def profile(self, seconds: float = 1.0, interval: float = 0.005) -> Profile:
        """A CPU profile of the extension's process, taken while it goes on
        serving: every thread's stack sampled each ``interval`` seconds for
        ``seconds`` (``Profile.collapsed()``: collapsed stacks for a flame
        graph; ``Profile.functions()``: samples per function). In-process,
        the host's threads are sampled."""
        _profile.check(seconds, interval)
        latest = self._launcher.latest()
        if latest.stopping:
            raise ExtensionStopped(self.name)
        await latest.wait_ready()
        if not isinstance(latest, _Served) or self._host is None:  # in-process
            result = await _profile.sample_async(seconds, interval)
            result.pid = os.getpid()
            return result
        try:
            got = await self._host.node.call(
                latest.service,
                "",
                "",
                (seconds, interval),
                {},
                op="profile",
                timeout=seconds + _PROFILE_SLACK,
            )
        except BrokerError as exc:  # gone meanwhile: what a call would raise
            raise await latest._call_error(exc) from None
        return _profile.from_wire(got)

    def __repr__(self) -> str:
        return f"<Extension {self.name!r} pid={self.pid} {self._launcher.latest().state.value}>"

    # Set by the manager: the host and the service the events and the
    # counts of this extension are kept under; its file watcher (watch=True).
    _host: Host | None = None
    _service: str = ""
    _watcher: Watcher | None = None

    def _unwatch(self) -> Watcher | None:
        """Stop watching its files (no reload starts from now on); the
        watcher, for its close() to be awaited."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        return watcher

    def register_event_handler(self, name: str, handler: Callable[[Any], Any]) -> None:
        """Call ``handler(payload)`` for each event ``name`` the extension
        emits (``self.emit_event(name, payload)``), in the order emitted, on
        the manager's loop; an async handler is awaited before the next
        event. A handler that raises is logged; the extension goes on."""
        if self._host is None:
            raise RuntimeError(f"extension {self.name!r} was not loaded by a manager")
        self._host.event_hub(self._service, self.name).add(name, handler)

    def stats(self) -> dict[str, Any]:
        """The extension's counters: calls (finished), errors, timeouts,
        cancelled, in_flight, per method (calls, errors, timeouts, p50_ms,
        p99_ms of the latest 1024), bytes_in and bytes_out (request and
        reply bodies through the broker), and its process's pid, rss_bytes,
        shm_bytes (shared memory it maps) and cpu_s (None in-process or
        remote)."""
        if self._host is None:
            raise RuntimeError(f"extension {self.name!r} was not loaded by a manager")
        latest = self._launcher.latest()
        out = self._host.extension_stats(self._service, self.pid, latest.service)
        out["name"] = self.name
        out["state"] = latest.state.value
        return out
