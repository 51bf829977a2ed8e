"""ExtensionManager: loads extensions and stops them.

One manager owns one Host (_host: the broker and the host's RPC node) on the
event loop that first uses it, and a launcher (_launch) and a handle
(_handle.Extension) per extension, by name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from . import _tensors, _trace
from ._base import ExtensionBase, ProxiedSingleton, bind_emitter
from ._errors import PyisolateError
from ._handle import Extension
from ._host import Host
from ._launch import (
    InProcess,
    Launcher,
    LifecycleEvent,
    Remote,
    State,
    _Served,
    make_launcher,
)
from ._sandbox import policy_for
from ._stats import PrometheusCollector, metrics_text
from ._watch import Watcher
from .config import (
    ExtensionConfig,
    ExtensionManagerConfig,
    extension_key,
    validate_0x_options,
    validate_dependencies,
    validate_index_urls,
    validate_restart,
)

logger = logging.getLogger("pyisolate")

T = TypeVar("T", bound=ExtensionBase)

_SCRAPE_TIMEOUT = 10.0  # seconds a scrape from another thread waits for the loop
_TRACE_OP_TIMEOUT = 10.0  # seconds an extension has to start or end its part of a trace


class ExtensionManager(Generic[T]):
    """Loads extensions and stops them.

    ``ExtensionManager(ExtensionBase, ExtensionManagerConfig(venv_root_path=...))``.
    The first ``load_extension`` binds the manager to the running event loop.
    ``async with ExtensionManager(...) as manager:`` stops every extension
    on exit; ``await manager.stop_all()`` does so explicitly.
    """

    def __init__(
        self,
        extension_type: type[T] = ExtensionBase,  # type: ignore[assignment]
        config: ExtensionManagerConfig | Mapping[str, Any] | None = None,
    ) -> None:
        if not (isinstance(extension_type, type) and issubclass(extension_type, ExtensionBase)):
            raise TypeError("extension_type must be ExtensionBase or a subclass of it")
        self.extension_type = extension_type
        self.config = ExtensionManagerConfig.from_any(config or {})
        self.venv_root = Path(os.path.abspath(os.fspath(self.config.venv_root_path)))
        self._host: Host | None = None  # from the first load_extension on
        self._loaded: dict[str, tuple[Extension[T], Launcher]] = {}  # by name: the latest
        self._closed = False
        self._event_callbacks: list[Callable[[LifecycleEvent], Any]] = []
        self._event_streams: list[asyncio.Queue[LifecycleEvent | None]] = []
        self._event_tasks: set[asyncio.Future[Any]] = set()  # async callbacks running

    def load_extension(self, config: ExtensionConfig | Mapping[str, Any]) -> Extension[T]:
        """Start loading an extension and return its handle at once.

        ``await manager.load_extension(cfg)`` waits until it is ready; a
        handle used without awaiting waits for readiness on its first call.
        Raises ValueError at once for a bad name, dependency string, sandbox
        or limits."""
        cfg = ExtensionConfig.from_any(config)
        key = extension_key(cfg.name)
        validate_0x_options(cfg)
        validate_index_urls(cfg.extra_index_urls)
        validate_restart(cfg)
        if cfg.remote and not cfg.isolated:
            raise ValueError(f"extension {cfg.name!r}: a remote extension is isolated")
        if cfg.watch and (cfg.remote or not cfg.isolated):
            raise ValueError(
                f"extension {cfg.name!r}: watch=True reloads an isolated, local extension only"
            )
        if not cfg.module_path and not cfg.remote:
            raise ValueError(f"extension {cfg.name!r}: module_path is required")
        deps = validate_dependencies(list(cfg.dependencies), Path.cwd())
        policy = policy_for(cfg, self.config)
        for api in cfg.apis:
            if not (isinstance(api, type) and issubclass(api, ProxiedSingleton)):
                raise TypeError(
                    f"extension {cfg.name!r}: apis must be ProxiedSingleton "
                    f"subclasses, got {api!r}"
                )
        if cfg.isolated:
            for cls in [self.extension_type, *cfg.apis]:
                if cls.__module__ == "__main__":
                    raise ValueError(
                        f"extension {cfg.name!r}: {cls.__qualname__} is defined "
                        "in __main__, which extensions cannot import: define it "
                        "in a module of its own"
                    )
        elif cfg.dependencies:
            logger.warning(
                "[%s] isolated=False: dependencies are not installed; the "
                "extension uses the host's packages",
                cfg.name,
            )
        if (
            cfg.remote
            and cfg.launcher == "manual"
            and (cfg.dependencies or cfg.share_torch or cfg.env)
        ):
            logger.warning(
                "[%s] remote: dependencies, share_torch and env do not apply (the "
                "remote process brings its own environment)",
                cfg.name,
            )
        self._check_key(cfg.name, key)
        if self._closed:
            raise PyisolateError("this ExtensionManager was stopped")
        host = self._bind_loop()
        for api in cfg.apis:
            host.serve_api(api)
        old = self._loaded.get(cfg.name)
        if old is not None and old[1].alive:
            if old[1].state is not State.LOST:
                raise ValueError(f"an extension named {cfg.name!r} is already loaded")
            old[1].kill()  # lost but not exited: make room for the new one
        if old is not None:
            old[0]._unwatch()
        launcher = make_launcher(
            cfg, deps, self.extension_type, host, self.config, self.venv_root, policy
        )
        timeout = cfg.timeout if cfg.timeout is not None else self.config.default_timeout
        ext: Extension[T] = Extension(cfg, launcher, timeout)
        self._loaded[cfg.name] = (ext, launcher)
        launcher.emit = self._emit_event
        launcher.factory = self._relauncher(cfg.name)
        launcher.start()
        self._wire(ext, launcher, host, f"ext.{key}")
        if cfg.watch:
            ext._watcher = Watcher(
                cfg.name,
                cfg.module_path,
                ext.wait_ready,
                ext.reload,
                self._emit_event,
                lambda: ext.pid,
            )
        return ext

    def _check_key(self, name: str, key: str) -> None:
        """Refuse a name whose key (venv folder, service) a live extension of
        another name has."""
        for other, (_, launcher) in self._loaded.items():
            if other != name and launcher.alive and extension_key(other) == key:
                raise ValueError(
                    f"extension names {other!r} (loaded) and {name!r} both make "
                    f"the venv folder and service key {key!r}: rename one"
                )

    def get_extension(self, name: str) -> Extension[T]:
        """The handle of the extension loaded under ``name`` (as given to
        ``load_extension``); ``KeyError`` when there is none."""
        return self._loaded[name][0]

    @property
    def extensions(self) -> dict[str, Extension[T]]:
        return {name: ext for name, (ext, _) in self._loaded.items()}

    async def stop_all(self) -> None:
        """Stop every extension, then the broker."""
        handles = [ext for ext, _ in self._loaded.values()]
        if handles:
            await asyncio.gather(*(ext.stop() for ext in handles), return_exceptions=True)
        await self._shutdown()

    def stop_all_extensions(self) -> None:
        """pyisolate 0.x's blocking stop_all(): returns once every extension's
        process has ended and the broker is closed (the manager is closed, as
        after stop_all()). Prefer ``await manager.stop_all()`` in async code.

        - The manager's event loop running in another thread, or idle (not
          running, not closed) with no loop running in this thread: it runs
          ``stop_all()`` on that loop and waits; the stop() hooks run.
        - Called on that loop itself (async code calling it without await, as
          0.x code does), or once the loop is closed (after asyncio.run):
          nothing may wait on the loop, so no stop() hook runs; the broker
          tells every extension to exit and kills what is left after its
          grace period (2 s), blocking until then, as 0.x's did.
        """
        host = self._host
        if host is None or self._closed:
            self._closed = True
            return
        loop = host.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not loop and not loop.is_closed():
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self.stop_all(), loop).result()
                return
            if running is None:
                loop.run_until_complete(self.stop_all())
                return
        logger.info(
            "stop_all_extensions() without waiting on the manager's loop: the "
            "extensions' stop() hooks do not run"
        )
        self._closed = True
        for _, launcher in self._loaded.values():
            launcher.abandon()
        host.close_now()
        for _, launcher in self._loaded.values():
            launcher.close()

    async def __aenter__(self) -> ExtensionManager[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    def broker_stats(self) -> dict[str, int]:
        """The broker's counters (see pyi_broker_stats)."""
        return self._host.broker_stats() if self._host is not None else {}

    def service_stats(self, service: str) -> dict[str, int] | None:
        """The broker's counters for one service (``ext.<key>``, ``host`` or
        ``api.<module>.<qualname>``), or None if it never heard of it."""
        return self._host.service_stats(service) if self._host is not None else None

    def _bind_loop(self) -> Host:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "load_extension needs a running event loop: call it from "
                "async code, or use pyisolate.SyncExtensionManager"
            ) from None
        if self._host is None:
            self.venv_root.mkdir(parents=True, exist_ok=True)
            self._host = Host(loop, self.config)
        elif self._host.loop is not loop:
            raise RuntimeError("this ExtensionManager is bound to another event loop")
        return self._host

    async def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for stream in self._event_streams:
            stream.put_nowait(None)
        if self._host is None:
            return
        await self._host.close()
        for _, launcher in self._loaded.values():
            launcher.close()
        _tensors.trim()  # what lingers of the extensions' regions

    # -- restarts, reloads and lifecycle events ------------------------------------------
    async def reload(
        self, name: str, config: ExtensionConfig | Mapping[str, Any] | None = None
    ) -> None:
        """``await manager.get_extension(name).reload(config)``."""
        await self.get_extension(name).reload(config)

    def on_event(self, callback: Callable[[LifecycleEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` (a LifecycleEvent) on the manager's loop
        for every extension's lifecycle step; an ``async def`` callback runs
        as a task. Returns a function that unsubscribes it."""
        self._event_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._event_callbacks:
                self._event_callbacks.remove(callback)

        return unsubscribe

    def events(self) -> AsyncIterator[LifecycleEvent]:
        """The lifecycle events from now on, as an async iterator (``async for
        event in manager.events()``) that ends when the manager stops."""
        queue: asyncio.Queue[LifecycleEvent | None] = asyncio.Queue()
        if self._closed:
            queue.put_nowait(None)
        self._event_streams.append(queue)
        return _EventStream(queue, self._event_streams)

    def _relauncher(self, name: str) -> Callable[[ExtensionConfig], Launcher]:
        """What makes the launcher of ``name``'s next process (a restart or a
        reload), for its current or a new config (validated here)."""

        def make(cfg: ExtensionConfig) -> Launcher:
            validate_index_urls(cfg.extra_index_urls)
            validate_restart(cfg)
            deps = validate_dependencies(list(cfg.dependencies), Path.cwd())
            policy = policy_for(cfg, self.config)
            host = self._bind_loop()
            for api in cfg.apis:
                host.serve_api(api)
            return make_launcher(
                cfg, deps, self.extension_type, host, self.config, self.venv_root, policy
            )

        return make

    def _emit_event(self, event: LifecycleEvent) -> None:
        for callback in list(self._event_callbacks):
            try:
                result = callback(event)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._event_tasks.add(task)
                    task.add_done_callback(self._event_tasks.discard)
            except Exception:
                logger.exception("lifecycle event callback %r failed", callback)
        for stream in self._event_streams:
            stream.put_nowait(event)

    def _wire(self, ext: Extension[T], launcher: Launcher, host: Host, service: str) -> None:
        """Events and counts: the handle's, the calls' and (in-process) the
        instance's emit_event, once it is loaded."""
        ext._host = host
        ext._service = service
        host.count_calls(service)
        hub = host.event_hub(service, ext.name)
        if isinstance(launcher, InProcess):
            launcher.on_loaded(lambda instance: bind_emitter(instance, hub.emit))

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each loaded extension's ``stats()``, by name."""
        return {name: ext.stats() for name, (ext, _) in self._loaded.items()}

    def prometheus_collector(self) -> PrometheusCollector:
        """The extensions' stats as a ``prometheus_client`` collector, to
        register where your metrics are served (``prometheus_client.REGISTRY
        .register(manager.prometheus_collector())``); each scrape reads
        ``stats()`` on the manager's loop. ImportError without
        prometheus_client."""
        return PrometheusCollector(self._stats_from_any_thread)

    def metrics_text(self) -> str:
        """The extensions' stats in the Prometheus text exposition format."""
        return metrics_text(self.prometheus_collector())

    def _stats_from_any_thread(self) -> dict[str, dict[str, Any]]:
        """stats(), taken on the manager's loop when called from another
        thread while it runs (a scrape from a metrics server's thread)."""
        loop = self._host.loop if self._host is not None else None
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or not loop.is_running():
            return self.stats()
        done: concurrent.futures.Future[dict[str, dict[str, Any]]] = concurrent.futures.Future()

        def take() -> None:
            try:
                done.set_result(self.stats())
            except BaseException as exc:  # noqa: BLE001 - handed to the scraping thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(take)
        return done.result(_SCRAPE_TIMEOUT)

    # -- tracing ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def trace(self, path: str | os.PathLike[str]) -> AsyncIterator[None]:
        """``async with manager.trace("calls.json"):`` records every method
        call made inside the block, in the host, in the broker thread and in
        every extension process (those that start during the block from
        their "ready" on), and then writes them to ``path`` as a Chrome
        trace-event JSON file (open it in https://ui.perfetto.dev): each
        call from the send to the answer in the caller's process, its hops
        through the broker, its run in the callee's, a nested call under
        the one that made it, and arrows along the way."""
        host = self._bind_loop()
        node = host.node
        if _trace.recorder.on:
            raise PyisolateError("a trace is recording already: one at a time")

        async def start(launcher: _Served) -> None:
            try:
                await node.call(
                    launcher.service, "", "", (True,), {}, op="trace", timeout=_TRACE_OP_TIMEOUT
                )
            except Exception as exc:
                logger.warning("[%s] not traced: %s", launcher.name, exc)

        for launcher in self._served():
            await start(launcher)
        starting: set[asyncio.Task[None]] = set()

        def on_ready(event: LifecycleEvent) -> None:
            # A process started during the trace (a load, reload or restart).
            launcher = host.listener(f"ext.{extension_key(event.name)}")
            if event.kind == "ready" and isinstance(launcher, _Served):
                task = asyncio.ensure_future(start(launcher))
                starting.add(task)
                task.add_done_callback(starting.discard)

        unsubscribe = self.on_event(on_ready)
        _trace.install(node)
        host.trace_broker(_trace.MAX_SPANS)
        try:
            yield
        finally:
            unsubscribe()
            await asyncio.gather(*starting, return_exceptions=True)
            hops, dropped = host.broker_hops()
            spans, dropped_here = _trace.uninstall(node)
            dropped += dropped_here
            parts = [_trace.Part(os.getpid(), "host", spans)]
            for launcher in self._served():
                try:
                    t0 = time.monotonic_ns()
                    got = await node.call(
                        launcher.service,
                        "",
                        "",
                        (False,),
                        {},
                        op="trace",
                        timeout=_TRACE_OP_TIMEOUT,
                    )
                    t1 = time.monotonic_ns()
                except Exception as exc:
                    logger.warning(
                        "[%s] its spans are missing from the trace: %s", launcher.name, exc
                    )
                    continue
                # Another machine's monotonic clock: moved to ours by the
                # offset seen at the round trip's middle.
                offset = (t0 + t1) // 2 - int(got["now"]) if isinstance(launcher, Remote) else 0
                parts.append(
                    _trace.Part(int(got["pid"]), f"ext {launcher.name}", got["spans"], offset)
                )
                dropped += int(got.get("dropped", 0))
            if dropped:
                logger.warning(
                    "trace: %d spans dropped (more than %d in one process)",
                    dropped,
                    _trace.MAX_SPANS,
                )
            await asyncio.get_running_loop().run_in_executor(
                None, _trace.write, path, parts, dropped, hops, os.getpid()
            )

    def _served(self) -> list[_Served]:
        """The launchers of the extension processes serving now."""
        out = []
        for _, launcher in self._loaded.values():
            latest = launcher.latest()
            if isinstance(latest, _Served) and latest.state is State.READY:
                out.append(latest)
        return out


class _EventStream:
    """manager.events(): an async iterator over one queue of events."""

    def __init__(
        self,
        queue: asyncio.Queue[LifecycleEvent | None],
        streams: list[asyncio.Queue[LifecycleEvent | None]],
    ) -> None:
        self._queue = queue
        self._streams = streams

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> LifecycleEvent:
        event = await self._queue.get()
        if event is None:
            self.aclose_now()
            raise StopAsyncIteration
        return event

    def aclose_now(self) -> None:
        """Stop receiving events."""
        if self._queue in self._streams:
            self._streams.remove(self._queue)

    async def aclose(self) -> None:
        self.aclose_now()
