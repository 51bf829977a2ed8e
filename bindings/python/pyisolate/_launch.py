"""Launchers: each starts one extension, follows its life (``State``), runs
the calls made through its handle and stops it. The handle
(pyisolate.Extension) delegates everything here.

- ``InProcess`` (``isolated=False``): the module imported and run in the host.
- ``Process``: a process the broker spawns with the venv's python, the env
  and config it needs, and pipes for its output (_output); it serves
  ``ext.<key>`` (config.extension_key). A sandboxed or limited one starts
  through the launcher pyi_sandbox (_sandbox), with a scratch dir of its own.
- ``Remote`` (``remote=True``): a process started elsewhere with the
  handle's ticket (``python -m pyisolate.remote``), serving ``ext.<key>``
  over tcp.

The Host tells the two served kinds about their process (the Listener
methods ``on_*``). Both processes run pyisolate._child.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import json
import logging
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import _loader, _sandbox, _venv, launchers
from ._base import in_local_extension, singleton_key
from ._codes import BrokerError, Callee, call_error, exception_type
from ._errors import (
    CallTimeout,
    ExtensionCrashed,
    ExtensionLoadError,
    ExtensionStopped,
    PyisolateError,
)
from ._host import HOST_SERVICE, Host
from ._output import TAIL_LINES, OutputReader
from ._rpc import LANE_CLOSED, invoke
from ._sandbox import Policy
from ._ticket import make_ticket
from .config import ExtensionConfig, ExtensionManagerConfig, extension_key, resolve_transport
from .launchers import RemoteJob

logger = logging.getLogger("pyisolate")

# What an extension's process runs (with PYI_SYS_PATH and PYI_CONFIG set).
BOOTSTRAP = (
    "import os, sys\n"
    "sys.path[:] = [p for p in sys.path if p]\n"
    "sys.path.extend(p for p in os.environ.pop('PYI_SYS_PATH', '').split(os.pathsep) if p)\n"
    "from pyisolate._child import main\n"
    "main()\n"
)
_EXIT_WAIT = 2.0  # seconds a failed call waits for the process's exit status
_KILL_WAIT = 5.0  # seconds stop() waits for a killed process


class State(enum.Enum):
    """Where an extension is in its life. Transitions:

    - LOADING -> READY: loaded (hooks run; a process's service offered).
    - LOADING -> ENDED: loading failed, or its process exited first.
    - LOADING, READY -> LOST: the broker lost a local process that has not
      exited (its loop blocked past heartbeat_timeout, or it hung).
    - LOADING, READY, LOST -> ENDED: its process exited; a remote one was lost.
    - any other -> STOPPING: stop().
    - STOPPING -> STOPPED: stop() done; or its process exited, a remote one
      was lost.

    alive: all but ENDED and STOPPED. Calls wait in LOADING, raise
    ExtensionCrashed in LOST and ENDED (or the load error, if it never
    loaded) and ExtensionStopped in STOPPING and STOPPED.
    """

    LOADING = "loading"
    READY = "ready"
    LOST = "lost"
    ENDED = "ended"
    STOPPING = "stopping"
    STOPPED = "stopped"


_READY = State.READY
_BACKOFF_FIRST = 0.5  # seconds before the first restart; doubles per restart in the window
_BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class LifecycleEvent:
    """One step in an extension's life (``manager.on_event``, ``manager.events()``).

    ``kind``: ``"starting"`` (its process is being started: a load, a restart
    or a reload), ``"ready"`` (loaded), ``"crashed"`` (its process died or
    was lost; ``reason`` says how), ``"restarting"`` (a restart is scheduled:
    ``attempt`` is its number in the restart window, ``delay`` the backoff in
    seconds), ``"reloaded"`` (the new process serves; the old one ended),
    ``"reload_failed"`` (the new process did not load: ``reason`` says why;
    the old one, ``pid``, goes on serving), ``"watching"`` (watch=True: its
    files are watched from now on) or ``"stopped"`` (``stop()`` done).
    ``pid``: the process it is about, when known."""

    name: str
    kind: str
    pid: int | None = None
    reason: str = ""
    attempt: int = 0
    delay: float = 0.0


async def _cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel task (if any, and not done) and wait until it has ended,
    whatever it ended with."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except BaseException:  # noqa: BLE001 - its outcome is not ours to raise
        pass


def _no_events(event: LifecycleEvent) -> None:
    pass


_get_ident = threading.get_ident
_UNKNOWN = object()


def _running_here(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether loop runs the caller: asyncio.get_running_loop() is loop,
    without its getpid() (Python 3.11 makes that system call at every
    get_running_loop). asyncio's loops note the thread that runs them
    (None when stopped), and a thread runs one loop at a time; a loop
    class that does not note it asks asyncio."""
    thread = getattr(loop, "_thread_id", _UNKNOWN)
    if thread is _UNKNOWN:
        return asyncio.get_running_loop() is loop
    return bool(thread == _get_ident())


_STOPPING = (State.STOPPING, State.STOPPED)
_GONE = (State.LOST, State.ENDED)


class Launcher:
    """One extension's life; subclasses say how it is started, called and
    stopped (_launch, call, _stop)."""

    ticket: str | None = None  # Remote: what its process is started with (a secret)
    service = ""  # the broker service its process offers ("" in-process)

    def __init__(
        self, config: ExtensionConfig, base: type, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.name = config.name
        self.config = config
        self.state = State.LOADING
        self.pid: int | None = None  # its process's, once spawned
        self.exit_status: int | None = None  # its process's, once exited
        self.reason = ""  # why the broker lost it
        self._killed = False  # pyisolate killed (or the broker gave up on) its process
        self._base = base  # the manager's extension type
        self._loop = loop
        self._ready: asyncio.Future[None] = loop.create_future()  # the load's outcome (events)
        self._exited: asyncio.Future[int | None] = loop.create_future()  # its process ended
        self._start_task: asyncio.Task[None] | None = None
        # Restarts and reloads (set by the manager): where events go; what
        # makes the launcher of a new process (for a config, None: this one's).
        self.emit: Callable[[LifecycleEvent], None] = _no_events
        self.factory: Callable[[ExtensionConfig], Launcher] | None = None
        self._successor: Launcher | None = None  # the launcher that serves after this one
        self._handover: asyncio.Future[None] | None = None  # a restart or reload underway
        self._handover_task: asyncio.Task[Any] | None = None
        self._restarts: list[float] = []  # monotonic times of restarts (shared by successors)
        self._crash_told = False  # the "crashed" event was emitted
        self._retired = False  # a reload ended this one: no "stopped" event
        self._reloading: Launcher | None = None  # a reload's new launcher, until it serves

    @property
    def alive(self) -> bool:
        if self._successor is not None:
            return self._successor.alive
        return self.state is not State.ENDED and self.state is not State.STOPPED

    def latest(self) -> Launcher:
        """The launcher serving now (this one, or its successor after a
        restart or a reload)."""
        launcher = self
        while launcher._successor is not None:
            launcher = launcher._successor
        return launcher

    @property
    def stopping(self) -> bool:
        return self.state in _STOPPING

    def start(self) -> None:
        """Start loading (a task on the loop)."""
        self.emit(LifecycleEvent(self.name, "starting"))
        self._start_task = self._loop.create_task(
            self._start(), name=f"pyisolate-load-{self.name}"
        )
        self._start_task.add_done_callback(self._start_done)

    async def wait_ready(self) -> None:
        """Wait until loaded; raise why it could not be (ExtensionStopped if
        stop() came first)."""
        st = self._start_task
        assert st is not None
        try:
            await asyncio.shield(st)
        except asyncio.CancelledError:
            if st.cancelled():  # stop() cancelled the load, not our caller
                raise ExtensionStopped(self.name) from None
            raise

    async def call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        """Run ``method`` of the extension; its result."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Run the extension's stop() hook and end it (see _stop); a restart
        or reload underway is cancelled, a successor stopped."""
        await _cancel_and_wait(self._handover_task)
        if self._reloading is not None:
            # A reload underway: its new process is stopped too (the reload
            # raises ExtensionStopped).
            await self._reloading.stop()
        if self._successor is not None:
            await self._successor.stop()  # this one ended already (crashed, or reloaded)
            return
        await self._stop_self()

    async def _stop_self(self) -> None:
        if self.stopping:
            if self.pid is not None:
                await asyncio.shield(self._exited)
            return
        was_ready = self.state is State.READY or self.state is State.LOST
        self.state = State.STOPPING
        await _cancel_and_wait(self._start_task)
        await self._stop(was_ready)
        self.state = State.STOPPED
        if not self._retired:
            self.emit(LifecycleEvent(self.name, "stopped", self.pid))

    async def reload(self, config: ExtensionConfig | None = None) -> Launcher:
        """Start the extension again in a new process (_Served.reload)."""
        raise PyisolateError(
            f"extension {self.name!r}: only an isolated, local extension can be reloaded"
        )

    async def wait_exit(self, seconds: float) -> int | None:
        """Wait up to ``seconds`` for the process to end; its exit status."""
        if not self._exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), seconds)
            except asyncio.TimeoutError:
                pass
        return self.exit_status

    def kill(self) -> None:
        """SIGKILL its process, if it has one that has not exited."""
        if self.pid is not None and not self._exited.done():
            self._killed = True
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def abandon(self) -> None:
        """The manager is ending the broker without waiting (which ends the
        process): no stop() hook runs. STOPPED now; a load in progress is
        cancelled, a stop() in progress returns."""
        self.state = State.STOPPED
        if self._loop.is_closed():
            return
        if self._start_task is not None:
            self._start_task.cancel()
        if not self._exited.done():
            self._exited.set_result(self.exit_status)

    def close(self) -> None:
        """The manager has shut down: release what is left."""

    # -- for subclasses -----------------------------------------------------------
    async def _launch(self) -> None:
        """Load the extension; return once it is ready."""
        raise NotImplementedError

    async def _stop(self, was_ready: bool) -> None:
        """End the extension (state STOPPING; was_ready: it had loaded)."""
        raise NotImplementedError

    async def _admit(self) -> None:
        """A call's slow path: the right loop, not stopped, loaded."""
        if asyncio.get_running_loop() is not self._loop:
            raise RuntimeError(
                f"extension {self.name!r} belongs to another event loop: call it "
                "from the loop that loaded it (or use SyncExtensionManager)"
            )
        if self.stopping:
            raise ExtensionStopped(self.name)
        await self.wait_ready()

    def _module_path(self) -> str:
        path = os.path.abspath(os.fspath(self.config.module_path))
        if not os.path.exists(path):
            raise ExtensionLoadError(self.name, f"module path {path} does not exist")
        return path

    async def _start(self) -> None:
        try:
            await self._launch()
        except BaseException:
            self.kill()  # a process that never became ready
            if not self.stopping:
                self.state = State.ENDED  # the name may be loaded again at once
            raise
        if self.state is State.LOADING:
            self.state = State.READY
        self.emit(LifecycleEvent(self.name, "ready", self.pid))
        logger.info("[%s] ready%s", self.name, f" (pid {self.pid})" if self.pid else "")

    def _start_done(self, task: asyncio.Task[None]) -> None:
        # A handle nobody awaits must not end in "exception never retrieved":
        # the failure is logged here and raised again by every call.
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.warning("[%s] failed to load: %s", self.name, exc)


class InProcess(Launcher):
    """``isolated=False``: loaded by _loader in the host, called directly
    (a plain def in the loop's default executor)."""

    def __init__(
        self, config: ExtensionConfig, base: type, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(config, base, loop)
        self._instance: Any = None

    def on_loaded(self, fn: Callable[[Any], None]) -> None:
        """Call ``fn(instance)`` once the extension's instance is loaded here
        (never when loading fails)."""
        task = self._start_task
        if task is None:
            return

        def done(_: asyncio.Task[None]) -> None:
            if self._instance is not None:
                fn(self._instance)

        task.add_done_callback(done)

    async def call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        if not _running_here(self._loop) or self.state is not _READY:
            await self._admit()
        fn = getattr(self._instance, method)
        if timeout:
            try:
                return await asyncio.wait_for(self._run(fn, args, kwargs), timeout)
            except asyncio.TimeoutError:
                raise CallTimeout(
                    f"call {self.name}.{method} timed out after {timeout}s"
                ) from None
        return await self._run(fn, args, kwargs)

    async def _launch(self) -> None:
        path = self._module_path()
        token = in_local_extension.set(True)
        try:
            self._instance = await _loader.load(path, self.config.extension_class, self._base)
        except Exception as exc:
            raise ExtensionLoadError(
                self.name, f"{type(exc).__qualname__}: {exc}", traceback.format_exc()
            ) from exc
        finally:
            in_local_extension.reset(token)

    async def _stop(self, was_ready: bool) -> None:
        try:
            if self._instance is not None:
                await self._run(self._instance.stop, (), {})
        finally:
            self.state = State.STOPPED  # even when its hook failed

    @staticmethod
    async def _run(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        token = in_local_extension.set(True)
        try:
            return await invoke(fn, list(args), dict(kwargs), offload_sync=True)
        finally:
            in_local_extension.reset(token)


class _Served(Launcher):
    """An extension in a process of its own, serving ``ext.<key>`` through
    the broker; the Host reports that process's events here."""

    def __init__(
        self,
        config: ExtensionConfig,
        base: type,
        host: Host,
        settings: ExtensionManagerConfig,
        policy: Policy = Policy(),
    ) -> None:
        super().__init__(config, base, host.loop)
        self.key = extension_key(config.name)  # its venv folder and service key
        self.service = f"ext.{self.key}"
        self.policy = policy  # its sandbox and limits
        self._host = host
        self._settings = settings  # start_timeout, stop_timeout
        self.generation = 0  # restarts and reloads before this launcher's process
        self._in_flight = 0  # calls sent to its process, not answered yet
        self._idle: asyncio.Event | None = None  # set when _in_flight drops to 0 (reload)

    def start(self) -> None:
        self._host.watch(self.service, self)
        super().start()

    async def call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        if self._successor is not None or self._handover is not None:
            # Restarting or reloading: wait (within the deadline) for the
            # process that serves next.
            start = self._loop.time()
            target = await self._next(method, timeout)
            if target is not self:
                if timeout:
                    timeout = max(timeout - (self._loop.time() - start), 0.001)
                return await target.call(method, args, kwargs, timeout)
        if not _running_here(self._loop) or self.state is not _READY:
            await self._admit()
            if self.state in _GONE:
                raise ExtensionCrashed(
                    self.name, self.exit_status, self.reason, self._limit_reason()
                )
        node = self._host.node
        if node.closed:
            raise ExtensionStopped(self.name)
        self._in_flight += 1
        try:
            return await node.call(self.service, "", method, args, kwargs, timeout=timeout)
        except BrokerError as exc:
            raise await self._call_error(exc) from None
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    async def _next(self, method: str, timeout: float | None) -> Launcher:
        """Wait out a restart or reload underway; the launcher to call."""
        while self._successor is None and self._handover is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._handover), timeout)
            except asyncio.TimeoutError:
                raise CallTimeout(
                    f"call {self.name}.{method} timed out after {timeout}s while the "
                    "extension restarted"
                ) from None
            except Exception:
                pass  # the restart or reload failed: this launcher answers
        return self._successor if self._successor is not None else self

    # -- restarts and reloads (a new launcher, a new process, the same handle) --------
    respawns = False  # whether pyisolate can start its process again (Process)

    def _crashed(self, reason: str) -> None:
        if not self._crash_told:
            self._crash_told = True
            self.emit(LifecycleEvent(self.name, "crashed", self.pid, reason))

    def _plan_restart(self) -> bool:
        """After a crash (restart="on-failure"): calls wait from now on for
        the restart, which starts once the process has exited."""
        cfg = self.config
        if cfg.restart != "on-failure" or not self.respawns or self.factory is None:
            return False
        if self._successor is not None or self._retired:
            return False
        if self._handover is None:
            self._handover = self._loop.create_future()
        return True

    def _maybe_restart(self) -> None:
        """Its process has exited after a crash: start it again unless its
        restart budget is spent."""
        if not self._plan_restart() or self._handover_task is not None:
            return
        self._handover_task = self._loop.create_task(
            self._restart(), name=f"pyisolate-restart-{self.name}"
        )

    def _budget(self) -> int:
        """Restarts in the window so far (old ones forgotten)."""
        now = time.monotonic()
        self._restarts[:] = [t for t in self._restarts if now - t < self.config.restart_window]
        return len(self._restarts)

    async def _restart(self) -> None:
        handover = self._handover
        assert handover is not None
        try:
            while True:
                count = self._budget()
                if count >= self.config.max_restarts:
                    logger.warning(
                        "[%s] %d restarts within %ss: leaving it down",
                        self.name,
                        count,
                        self.config.restart_window,
                    )
                    return
                self._restarts.append(time.monotonic())
                delay = min(_BACKOFF_FIRST * 2**count, _BACKOFF_MAX)
                self.emit(
                    LifecycleEvent(
                        self.name, "restarting", self.pid, self.reason, count + 1, delay
                    )
                )
                logger.warning(
                    "[%s] restarting in %.1fs (restart %d)", self.name, delay, count + 1
                )
                await asyncio.sleep(delay)
                new = self._spawn_successor(None)
                try:
                    await new.wait_ready()
                except asyncio.CancelledError:
                    await new.stop()
                    raise
                except Exception as exc:
                    logger.warning("[%s] restart failed: %s", self.name, exc)
                    await new.wait_exit(_KILL_WAIT)
                    new.close()
                    continue
                self._successor = new
                return
        finally:
            self._handover = None
            if not handover.done():
                handover.set_result(None)

    def _spawn_successor(self, config: ExtensionConfig | None) -> _Served:
        """Start the launcher of a new process for this extension, under a
        service name of its own (the old process may still serve its own)."""
        assert self.factory is not None
        new = self.factory(config if config is not None else self.config)
        assert isinstance(new, _Served)
        new.emit = self.emit
        new.factory = self.factory
        new._restarts = self._restarts
        new.generation = self.generation + 1
        new.service = f"ext.{new.key}@{new.generation}"
        # Its load error, reported by name, reaches the new launcher; its
        # calls count with the extension's (ext.stats()).
        self._host.watch(f"ext.{self.key}", new)
        self._host.count_with(new.service, f"ext.{self.key}")
        new.start()
        return new

    async def reload(self, config: ExtensionConfig | None = None) -> Launcher:
        """Start a new process on the extension's current files (and
        ``config``'s dependencies, if given); once it is ready, calls go to
        it and this process ends after the calls it runs (up to
        stop_timeout). Returns the new launcher. A new process that fails
        to load raises ExtensionLoadError, and this one goes on serving."""
        if not self.respawns:
            raise PyisolateError(
                f"extension {self.name!r}: only an isolated, local extension can be reloaded"
            )
        if self._successor is not None:
            return await self._successor.reload(config)
        if self._handover is not None:  # a restart or another reload: after it
            await asyncio.shield(self._handover)
            return await self.latest().reload(config)
        if self.stopping:
            raise ExtensionStopped(self.name)
        if config is not None and config.name != self.name:
            raise ValueError(f"reload of {self.name!r} with a config named {config.name!r}")
        handover = self._handover = self._loop.create_future()
        try:
            new = self._reloading = self._spawn_successor(config)
            try:
                await new.wait_ready()
            except BaseException as exc:
                self._host.watch(f"ext.{self.key}", self)
                if not isinstance(exc, Exception):  # cancelled: its process must not serve
                    await asyncio.shield(new.stop())
                await new.wait_exit(_KILL_WAIT)
                new.close()
                if isinstance(exc, Exception) and not isinstance(exc, ExtensionStopped):
                    self.emit(LifecycleEvent(self.name, "reload_failed", self.pid, str(exc)))
                raise
            if self.stopping:  # stop() came meanwhile
                await new.stop()
                raise ExtensionStopped(self.name)
            self._successor = new
        finally:
            self._reloading = None
            self._handover = None
            handover.set_result(None)
        await self._retire()
        new.emit(LifecycleEvent(self.name, "reloaded", new.pid))
        return new

    async def _retire(self) -> None:
        """A reload's end of this process: its calls finish (up to
        stop_timeout), then the stop request, as stop() does."""
        self._retired = True
        if self.alive and self._in_flight:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), self._settings.stop_timeout)
            except asyncio.TimeoutError:
                logger.warning(
                    "[%s] reload: %d calls still running on the old process after %ss",
                    self.name,
                    self._in_flight,
                    self._settings.stop_timeout,
                )
        await self._stop_self()
        self.close()

    async def _call_error(self, exc: BrokerError) -> Exception:
        """What a call the broker failed raises: the table's EXTENSION column,
        ExtensionStopped while stopping."""
        status = None
        if not self.stopping and exception_type(exc.code, Callee.EXTENSION) is ExtensionCrashed:
            status = await self.wait_exit(_EXIT_WAIT)
        if self.stopping:
            stopped = ExtensionStopped(self.name)
            if self._retired:
                stopped.args = (
                    f"extension {self.name!r} was reloaded: the call was still running "
                    f"on the old process after stop_timeout ({self._settings.stop_timeout}s)",
                )
            return stopped
        text = exc.text
        if text.startswith(LANE_CLOSED) and self.reason:
            text = self.reason  # what the broker said of its end (e.g. "heartbeat expired")
        return call_error(
            exc.code,
            text,
            Callee.EXTENSION,
            self.name,
            exit_status=status,
            reason=self._limit_reason(),
        )

    def _limit_reason(self) -> str | None:
        """The limit that ended its process, if one did."""
        return _sandbox.crash_reason(self.policy, self.exit_status, self._killed)

    async def _connect(self) -> None:
        """What the host offers before the process starts: its service, the
        extension's singletons, its pickle setting."""
        await self._host.ready()
        self._host.allow_pickles(self.service, bool(self.config.allow_pickle))
        await self._host.apis_offered(self.config.apis)

    async def _until_ready(self, late: str) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._settings.start_timeout)
        except asyncio.TimeoutError:
            raise ExtensionLoadError(self.name, late) from None

    async def _stop_request(self) -> None:
        """Ask the process to run the stop() hook and exit."""
        await self._host.node.call(
            self.service, "", "", (), {}, op="stop", timeout=self._settings.stop_timeout
        )

    def _output_tail(self) -> str:
        return ""

    # -- Listener ---------------------------------------------------------------------
    def on_ready(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def on_load_failed(self, exc: ExtensionLoadError) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
            # Nobody may await it (a handle never used): don't warn about that.
            self._ready.exception()

    def on_lost(self, text: str) -> None:
        if self.stopping:
            return
        self._killed = True  # the broker kills what it lost
        self.reason = text or "the broker lost the extension"
        was_ready = self.state is State.READY
        if self.state is State.LOADING or self.state is State.READY:
            self.state = State.LOST
        logger.warning("[%s] lost: %s", self.name, self.reason)
        if was_ready:
            self._plan_restart()
            self._crashed(self.reason)

    def on_exit(self, status: int) -> None:
        self.exit_status = status
        stopping = self.stopping
        was_serving = self.state is State.READY or self.state is State.LOST
        self.state = State.STOPPED if stopping else State.ENDED
        if not self._exited.done():
            self._exited.set_result(status)
        if not stopping:
            level = logging.WARNING if status != 0 else logging.INFO
            logger.log(level, "[%s] process %s exited with status %s", self.name, self.pid, status)
            if was_serving:
                what = f"killed by signal {-status}" if status < 0 else f"exit status {status}"
                limit = self._limit_reason()
                self._plan_restart()
                self._crashed(f"{what} ({limit})" if limit else what)
                self._maybe_restart()
        if not self._ready.done():
            # Let the pipes deliver the last lines before reporting.
            self._loop.call_later(0.05, self._fail_exit, status)

    def _fail_exit(self, status: int) -> None:
        what = f"its process exited with status {status} before it was ready"
        if status < 0:
            what = f"its process was killed by signal {-status} before it was ready"
        self.on_load_failed(ExtensionLoadError(self.name, what, self._output_tail()))


class Process(_Served):
    """A process the broker spawns in the extension's venv (made by _venv)."""

    respawns = True

    def __init__(
        self,
        config: ExtensionConfig,
        base: type,
        host: Host,
        settings: ExtensionManagerConfig,
        deps: list[str],
        venv_root: Path,
        policy: Policy = Policy(),
    ) -> None:
        super().__init__(config, base, host, settings, policy)
        self._deps = deps  # validated
        self._venv_root = venv_root
        self._output = OutputReader(host.loop, config.name)
        self._scratch: Path | None = None  # a sandboxed process's, removed at its exit
        self._removal: asyncio.Future[None] | None = None  # of the scratch dir

    async def _launch(self) -> None:
        module_path = self._module_path()
        policy = self.policy
        if policy.launched:
            await self._loop.run_in_executor(None, _sandbox.check, policy, self.name)
        deps = self._deps
        share_torch = self.config.share_torch
        if share_torch:
            kept = [
                d for d in deps if re.split(r"[\s\[<>=!~;@(]", d, maxsplit=1)[0].lower() != "torch"
            ]
            if len(kept) != len(deps):
                logger.info(
                    "[%s] share_torch: using the host's torch instead of installing it", self.name
                )
            deps = kept
        venv = await _venv.ensure_venv(
            self.name,
            self._venv_root,
            deps,
            share_torch,
            folder=self.key,
            indexes=self.config.extra_index_urls,
        )
        rt = await self._loop.run_in_executor(None, _venv.runtime_dir, self._venv_root)
        await self._connect()
        paths = [str(rt)]
        if share_torch:
            paths += _venv.host_site_packages()
        roots = api_roots(self.config, self._base)
        if policy.sandboxed:
            self._scratch = self._host.scratch(self.key)
            env = _sandbox.environment(policy, self._scratch)
        else:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PYTHON", "PYI_", "VIRTUAL_ENV", "CONDA_"))
            }
        env.update({str(k): str(v) for k, v in self.config.env.items()})
        env["VIRTUAL_ENV"] = str(venv)
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYI_SYS_PATH"] = os.pathsep.join(paths)
        env["PYI_CONFIG"] = json.dumps(child_config(self.config, self._base, roots))
        env["PYTHONUNBUFFERED"] = "1"
        # What pyisolate 0.x told its extension processes (docs/porting.md).
        env["PYISOLATE_CHILD"] = "1"
        env["PYISOLATE_EXTENSION"] = self.name
        argv = [str(venv / "bin" / "python"), "-I", "-u", "-c", BOOTSTRAP]
        # The local lane (docs/protocol.md): the process connects to it at start.
        lane = None
        if resolve_transport(self.config) == "lane":
            lane = env["PYI_LANE"] = self._host.node.lane_path(
                os.path.dirname(self._host.socket_path)
            )
        if policy.launched:
            editable = [d for flag, d in itertools.pairwise(deps) if flag == "-e"]  # sources
            read = [
                str(venv),
                module_path,
                *paths,
                *roots,
                *editable,
                *_sandbox.host_reads(),
                self._host.socket_path,
            ]
            if lane:
                read.append(lane)
            write = [str(self._scratch)] if self._scratch else []
            argv = _sandbox.command(policy, read, write, argv)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            self.pid = self._host.spawn(self.service, argv, env, out_w, err_w)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        logger.info("[%s] started process %d", self.name, self.pid)
        self._output.add(out_r, "stdout")
        self._output.add(err_r, "stderr")
        laned = None
        if lane:
            laned = self._host.node.expect_lane(self.pid, self.service, self._lane_ended)
        try:
            await self._until_ready(f"not ready after {self._settings.start_timeout}s")
            if laned is not None:  # connected before it offered its service
                await asyncio.wait_for(laned, self._settings.start_timeout)
        except asyncio.TimeoutError:
            raise ExtensionLoadError(self.name, "it did not connect its lane") from None
        finally:
            if laned is not None and not laned.done():
                self._host.node.forget_lane(self.pid)

    def _lane_ended(self, why: str, broken: bool) -> None:
        """Its lane broke (bytes that break the lane's rules): its process
        is treated as crashed (killed; the exit reports it)."""
        if broken:
            logger.error("[%s] %s: killing its process", self.name, why)
            self.kill()

    async def _stop(self, was_ready: bool) -> None:
        """The stop request, then up to stop_timeout for the exit; else SIGKILL.
        Its scratch dir is gone when this returns."""
        if self.pid is not None and not self._exited.done():
            await self._end(was_ready)
        if self._removal is not None:
            await self._removal

    async def _end(self, was_ready: bool) -> None:
        grace = self._settings.stop_timeout
        if was_ready and not self._host.node.closed:
            try:
                await self._stop_request()
            except Exception as exc:  # the process may already be gone
                logger.debug("[%s] stop request: %s", self.name, exc)
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), grace)
        except asyncio.TimeoutError:
            logger.warning("[%s] did not exit within %.1fs: killing it", self.name, grace)
            self.kill()
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), _KILL_WAIT)
            except asyncio.TimeoutError:
                pass
        self._output.drain()  # its last words reach the log before stop() returns

    def _output_tail(self) -> str:
        self._output.drain()
        return self._output.tail

    def on_exit(self, status: int) -> None:
        super().on_exit(status)
        # (At the manager's end the broker removes what is left with its
        # runtime directory.)
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            self._removal = self._loop.run_in_executor(None, shutil.rmtree, scratch, True)

    def close(self) -> None:
        self._output.close()


class Remote(_Served):
    """A process started elsewhere with ``ticket``; it connects over tcp with
    CURVE. The config's launcher (pyisolate.launchers) starts it: "manual"
    leaves that to a person, and losing its connection is its end; another
    launcher places, watches and ends it, and its end (wait()) fails pending
    calls at once."""

    def __init__(
        self,
        config: ExtensionConfig,
        base: type,
        host: Host,
        settings: ExtensionManagerConfig,
        policy: Policy = Policy(),
        deps: Sequence[str] = (),
        venv_root: Path | None = None,
    ) -> None:
        super().__init__(config, base, host, settings, policy)
        self._ticket: str | None = None  # made at first use (a successor's service is final then)
        self.engine = launchers.resolve(config.launcher)
        self.respawns = self.engine is not launchers.MANUAL
        self._deps = tuple(deps)
        self._venv_root = venv_root
        self._handle: Any = None  # the engine's, once launched
        self._ended: asyncio.Future[None] = self._loop.create_future()  # the engine said so
        self._tasks: list[asyncio.Task[Any]] = []  # its output and its end, followed
        self._release: asyncio.Task[None] | None = None  # engine.terminate, once
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)  # stderr

    @property
    def ticket(self) -> str:  # type: ignore[override]  # read-only here
        """What its runner is started with: admits one key pair for its service."""
        if self._ticket is None:
            fields: dict[str, Any] = dict(self._host.admit_remote(self.service))
            fields["config"] = child_config(
                self.config, self._base, api_roots(self.config, self._base)
            )
            fields["config"]["sandbox"] = self.policy.to_json()  # the remote runner applies it
            self._ticket = make_ticket(fields)
        return self._ticket

    def start(self) -> None:
        self.ticket  # noqa: B018 - admitted before the load starts
        super().start()

    async def call(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
    ) -> Any:
        if not self.respawns or self._ended.done() or self._successor or self._handover:
            return await super().call(method, args, kwargs, timeout)
        work = asyncio.ensure_future(super().call(method, args, kwargs, timeout))
        try:
            await asyncio.wait((work, self._ended), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            work.cancel()
            raise
        if work.done():
            return work.result()
        work.cancel()  # its runner is gone: no answer will come
        raise ExtensionCrashed(self.name, self.exit_status, self.reason)

    async def _launch(self) -> None:
        await self._connect()
        if not self.respawns:  # "manual": the module may exist only over there
            logger.info(
                "[%s] waiting for its remote process: python -m pyisolate.remote "
                "<ext.ticket> <module path>",
                self.name,
            )
            await self._until_ready(
                f"its remote process did not connect within "
                f"{self._settings.start_timeout}s (start it with: python -m "
                f"pyisolate.remote <ticket> <module path>)"
            )
            return
        self._handle = await self.engine.launch(self._job())
        self._tasks = [
            self._loop.create_task(self._forward(), name=f"pyisolate-logs-{self.name}"),
            self._loop.create_task(self._watch(), name=f"pyisolate-watch-{self.name}"),
        ]
        try:
            await self._until_ready(
                f"its remote process did not connect within {self._settings.start_timeout}s"
            )
        except BaseException:
            self._terminate()
            raise

    def _job(self) -> RemoteJob:
        cfg = self.config
        root = self._venv_root or Path(self._settings.venv_root_path)
        return RemoteJob(
            name=self.name,
            key=self.key,
            ticket=self.ticket,
            module_path=self._module_path(),
            dependencies=self._deps,
            share_torch=bool(cfg.share_torch),
            extra_index_urls=tuple(cfg.extra_index_urls),
            env={str(k): str(v) for k, v in cfg.env.items()},
            venv_root=str(getattr(self.engine, "venv_root", None) or root.resolve()),
            start_timeout=self._settings.start_timeout,
        )

    async def _forward(self) -> None:
        """The runner's output, to logger pyisolate.extension.<name> (stdout
        and the runner's own INFO and DEBUG lines at INFO, stderr at WARNING)."""
        log = logging.getLogger(f"pyisolate.extension.{self.name}")
        async for stream, line in self.engine.logs(self._handle):
            if stream == "stderr":
                self._tail.append(line)
            if stream == "stderr" and not line.startswith(("INFO pyisolate", "DEBUG pyisolate")):
                log.warning("[%s] %s", self.name, line)
            else:
                log.info("[%s] %s", self.name, line)

    async def _watch(self) -> None:
        ended = await self.engine.wait(self._handle)
        if not self._ended.done():
            self._ended.set_result(None)
        if not self._ready.done():
            await asyncio.sleep(0.1)  # its load error, if it sent one, comes first
            self.on_load_failed(
                ExtensionLoadError(
                    self.name, f"{ended.reason} before it was ready", self._output_tail()
                )
            )
        elif not self.stopping and self.state is not State.ENDED:
            self.exit_status = ended.status
            self.on_lost(ended.reason)
        self._terminate()

    def _terminate(self) -> asyncio.Task[None]:
        """engine.terminate (once)."""
        if self._release is None:
            self._release = self._loop.create_task(self.engine.terminate(self._handle))
        return self._release

    def _output_tail(self) -> str:
        return "\n".join(self._tail)

    async def _stop(self, was_ready: bool) -> None:
        """The stop request, then up to stop_timeout for its connection's
        end; then the launcher ends what is left."""
        if was_ready and not self._exited.done() and not self._host.node.closed:
            try:
                await self._stop_request()
                await asyncio.wait_for(asyncio.shield(self._exited), self._settings.stop_timeout)
            except Exception as exc:  # gone already, or it does not answer
                logger.debug("[%s] stop request: %s", self.name, exc)
        if self._handle is not None:
            await self._terminate()
            for task in self._tasks:
                try:
                    await asyncio.wait_for(task, _KILL_WAIT)
                except (Exception, asyncio.CancelledError) as exc:
                    logger.debug("[%s] after stop: %r", self.name, exc)

    def on_lost(self, text: str) -> None:
        stopping = self.stopping
        if not stopping:
            self.reason = text or "the broker lost the extension"
        was_ready = self.state is State.READY
        self.state = State.STOPPED if stopping else State.ENDED
        if not self._exited.done():
            self._exited.set_result(None)
        if not self._ended.done():
            self._ended.set_result(None)
        if not stopping:
            logger.warning("[%s] lost: %s", self.name, self.reason)
            if was_ready:
                self._plan_restart()  # restart="on-failure" with a launcher
            self._crashed(self.reason)
            if self._handle is not None:
                self._terminate()
            if was_ready:
                self._maybe_restart()


def make_launcher(
    config: ExtensionConfig,
    deps: list[str],
    base: type,
    host: Host,
    settings: ExtensionManagerConfig,
    venv_root: Path,
    policy: Policy,
) -> Launcher:
    """The launcher for a (validated) config and its policy: InProcess,
    Remote or Process."""
    launchers.resolve(config.launcher)  # ValueError for a bad one
    if not config.isolated:
        return InProcess(config, base, host.loop)
    if config.remote:
        return Remote(config, base, host, settings, policy, deps, venv_root)
    if config.launcher != "manual":
        raise ValueError(f"extension {config.name!r}: a launcher needs remote=True")
    return Process(config, base, host, settings, deps, venv_root, policy)


def child_config(config: ExtensionConfig, base: type, paths: list[str]) -> dict[str, Any]:
    """What the extension's process is told (pyisolate._child)."""
    module_path = os.path.abspath(os.fspath(config.module_path)) if config.module_path else ""
    return {
        "name": config.name,
        "module_path": module_path,
        "extension_class": config.extension_class,
        "base": [base.__module__, base.__qualname__],
        "apis": [singleton_key(a) for a in config.apis],
        "host_service": HOST_SERVICE,
        "allow_pickle": bool(config.allow_pickle),
        "paths": paths,
    }


def api_roots(config: ExtensionConfig, base: type) -> list[str]:
    """Where the extension finds the host's API modules (shared.py and the
    like): their import roots, never the host's site-packages, and the host
    program's own directory (as a multiprocessing child would have it)."""
    extra: list[str] = []
    host_sites = tuple(_venv.host_site_packages())
    for cls in [base, *config.apis]:
        if cls.__module__ == "pyisolate" or cls.__module__.startswith("pyisolate."):
            continue
        mod = sys.modules.get(cls.__module__)
        root = _import_root(mod) if mod is not None else None
        if root is None or root in extra:
            continue
        if root.startswith(host_sites):
            logger.warning(
                "[%s] %s comes from the host's site-packages, which the "
                "extension does not see: add its package to the extension's "
                "dependencies",
                config.name,
                cls.__qualname__,
            )
            continue
        extra.append(root)
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file:
        main_dir = os.path.dirname(os.path.abspath(main_file))
        if main_dir not in extra and not main_dir.startswith(host_sites):
            extra.append(main_dir)
    return extra


def _import_root(module: ModuleType) -> str | None:
    """The sys.path entry a module was imported from."""
    path = getattr(module, "__file__", None)
    if not path:
        return None
    root = Path(path).resolve().parent
    if Path(path).name == "__init__.py":
        root = root.parent
    for _ in range(module.__name__.count(".")):
        root = root.parent
    return str(root)
