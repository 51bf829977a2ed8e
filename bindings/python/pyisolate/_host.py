"""The host's end of the broker, one per ExtensionManager: the broker (a C
thread), and on the manager's event loop one RPC node, whose client calls
extensions and whose worker offers the service ``host`` (the callables the
host passes to extensions) and one service per ProxiedSingleton
(``api.<module>.<qualname>``).

The broker's events (READY, EXIT, LOST, REFUSED) and the extensions'
``load_error`` operation go to the Listener watching the extension's
service (its launcher), or the one that spawned that pid.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import socket
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from . import _core, _tensors
from ._base import ProxiedSingleton, singleton_key
from ._errors import ExtensionLoadError, PyisolateError
from ._rpc import Node
from ._stats import CallStats, process_stats
from .config import ExtensionManagerConfig, extension_key

logger = logging.getLogger("pyisolate")

HOST_SERVICE = "host"
_HEARTBEAT_MS = 1000

_live_brokers: weakref.WeakSet[_core.Broker] = weakref.WeakSet()
_live_nodes: weakref.WeakSet[Node] = weakref.WeakSet()


@atexit.register
def _close_brokers() -> None:  # pragma: no cover - interpreter exit
    # A program that never called stop_all(): close the host's sockets, then
    # the brokers (which end the extension processes).
    for node in list(_live_nodes):
        try:
            node.close()
        except Exception:
            pass
    for broker in list(_live_brokers):
        try:
            broker.close()
        except Exception:
            pass


class Listener(Protocol):
    """What the Host tells about one extension (implemented by its launcher)."""

    name: str
    pid: int | None

    def on_ready(self) -> None: ...
    def on_exit(self, status: int) -> None: ...
    def on_lost(self, text: str) -> None: ...
    def on_load_failed(self, exc: ExtensionLoadError) -> None: ...


EventHandler = Callable[[Any], Any]


class EventHub:
    """The host's end of one extension's events (ExtensionBase.emit_event):
    its handlers by event name, and the events received but not yet handed
    to them. One task at a time runs the handlers, event by event, in the
    order the extension emitted them (an async handler is awaited before
    the next event); a handler that raises is logged and the rest go on."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        self.name = name
        self.handlers: dict[str, list[EventHandler]] = {}
        self._queue: deque[tuple[str, Any]] = deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, handler: EventHandler) -> None:
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, not {handler!r}")
        self.handlers.setdefault(name, []).append(handler)

    def remove(self, name: str, handler: EventHandler) -> None:
        handlers = self.handlers.get(name, [])
        if handler in handlers:
            handlers.remove(handler)

    def emit(self, name: str, payload: Any) -> None:
        """An in-process extension's emit_event (from any thread)."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.deliver([(name, payload)])
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.deliver, [(name, payload)])

    def deliver(self, events: Sequence[Sequence[Any]]) -> None:
        for name, payload in events:
            if self.handlers.get(str(name)):
                self._queue.append((str(name), payload))
        if self._queue and self._task is None:
            self._task = self.loop.create_task(self._run(), name=f"pyisolate-events-{self.name}")

    async def _run(self) -> None:
        try:
            while self._queue:
                name, payload = self._queue.popleft()
                for handler in list(self.handlers.get(name, ())):
                    try:
                        result = handler(payload)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.exception(
                            "[%s] the handler %r of event %r raised", self.name, handler, name
                        )
        finally:
            self._task = None

    def close(self) -> None:
        """Drop the events not handled yet (the manager has stopped)."""
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()


class Host:
    """Started by the manager's first load_extension; ended by close()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: ExtensionManagerConfig) -> None:
        self.loop = loop
        self._config = config
        broker = _core.Broker()
        _live_brokers.add(broker)
        beats = max(2, int(config.heartbeat_timeout * 1000 / _HEARTBEAT_MS + 0.5))
        broker.set(_core.lib.PYI_OPT_HEARTBEAT_MS, _HEARTBEAT_MS)
        broker.set(_core.lib.PYI_OPT_LIVENESS, beats)
        logger.debug("broker started at %s", broker.endpoint)
        self._broker: _core.Broker | None = broker  # None once closed
        self.socket_path = broker.endpoint[len("ipc://") :]  # what local extensions connect to
        self._rundir = Path(broker.rundir)
        self.node = Node(loop, broker.inproc, "host")
        self.node.lane_counts = {}  # what crosses the lanes counts as routed (service_stats)
        _live_nodes.add(self.node)
        self.node.ops["load_error"] = self._op_load_error
        self.node.ops["event"] = self._op_event
        self.event_hubs: dict[str, EventHub] = {}  # service -> its extension's events
        self.node.on_lost = self._on_worker_lost
        self._token = broker.allow(HOST_SERVICE)  # also grants the singletons' services
        self._served = loop.create_task(self.node.serve(HOST_SERVICE, self._token))
        self._api_offers: dict[str, asyncio.Task[None]] = {}  # singleton key -> its offer
        self._listeners: dict[str, Listener] = {}  # service -> the latest extension's
        self._by_pid: dict[int, Listener] = {}  # until the process's EXIT
        self._remote_endpoint: str | None = None
        self._event_fd = broker.event_fd()
        loop.add_reader(self._event_fd, self._drain_events)
        loop.call_soon(self._drain_events)

    # -- for launchers ----------------------------------------------------------
    async def ready(self) -> None:
        """Wait until the service ``host`` is offered."""
        await asyncio.shield(self._served)

    def serve_api(self, api: type[ProxiedSingleton]) -> None:
        """Offer the singleton as the service ``api.<module>.<qualname>`` (once)."""
        key = singleton_key(api)
        node = self.node
        if node.singletons.get(key) is api:
            return
        if key in node.singletons:
            raise ValueError(f"two ProxiedSingleton classes are named {key!r}")
        node.singletons[key] = api

        async def offer() -> None:
            await self._served
            assert self._broker is not None
            self._broker.allow("api." + key, self._token)
            await node.offer("api." + key)

        self._api_offers[key] = self.loop.create_task(offer())

    async def apis_offered(self, apis: Sequence[type]) -> None:
        """Wait until these singletons (serve_api) are offered."""
        for api in apis:
            await asyncio.shield(self._api_offers[singleton_key(api)])

    def allow_pickles(self, service: str, allowed: bool) -> None:
        """Whether calls to ``service`` and their results may carry pickles."""
        if allowed:
            self.node.pickle_services.add(service)
        else:
            self.node.pickle_services.discard(service)

    def watch(self, service: str, listener: Listener) -> None:
        """Send the events of ``service`` to ``listener`` (replacing an
        earlier one's, whose process's events still reach it by pid)."""
        self._listeners[service] = listener

    def listener(self, service: str) -> Listener | None:
        """The listener watching ``service`` (its newest launcher)."""
        return self._listeners.get(service)

    def spawn(
        self,
        service: str,
        argv: Sequence[str],
        env: dict[str, str],
        stdout_fd: int,
        stderr_fd: int,
    ) -> int:
        """Start a process for the watched ``service``; its pid."""
        assert self._broker is not None
        self.node.remote_services.discard(service)  # a local process now
        pid = self._broker.spawn(service, argv, env, stdout_fd, stderr_fd)
        self._by_pid[pid] = self._listeners[service]
        return pid

    def scratch(self, name: str) -> Path:
        """A new private directory for extension ``name``'s process, in the
        broker's runtime directory (so that a host that dies leaves none:
        the next host removes its runtime directory)."""
        base = self._rundir / "scratch"
        base.mkdir(mode=0o700, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))

    def admit_remote(self, service: str) -> dict[str, str]:
        """Bind the CURVE endpoint (once), admit a new key pair and grant a
        token for ``service``: a ticket's fields but its config."""
        broker = self._broker
        assert broker is not None
        if self._remote_endpoint is None:
            bound = broker.bind_curve(self._config.remote_endpoint)
            host, _, port = bound[len("tcp://") :].rpartition(":")
            if self._config.remote_host:
                host = self._config.remote_host
            elif host in ("0.0.0.0", "*", "[::]", "::"):
                host = socket.getfqdn()
            self._remote_endpoint = f"tcp://{host}:{port}"
            logger.info("remote extensions connect to %s (CURVE)", self._remote_endpoint)
        public, secret = _core.curve_keypair()
        broker.allow_key(public)
        token = broker.allow(service)
        # It shares no memory with this host: calls to it send tensors inline.
        self.node.remote_services.add(service)
        return {
            "endpoint": self._remote_endpoint,
            "server_key": broker.curve_key,
            "public_key": public,
            "secret_key": secret,
            "token": token,
            "service": service,
        }

    # -- for the manager --------------------------------------------------------
    def broker_stats(self) -> dict[str, int]:
        return self._broker.stats() if self._broker is not None else {}

    def service_stats(self, service: str) -> dict[str, int] | None:
        """The broker's counters for ``service``, plus what crossed the
        local lanes for it (docs/protocol.md, "Local lane")."""
        stats = self._broker.service_stats(service) if self._broker is not None else None
        lane = self.node.lane_stats(service)
        if stats is not None and lane is not None:
            for field, value in lane.items():
                stats[field] += value
        return stats

    def trace_broker(self, capacity: int) -> None:
        """Record the broker thread's hops, up to ``capacity`` (manager.trace)."""
        if self._broker is not None and not self._broker.closed:
            if _core.lib.pyi_broker_trace_start(self._broker._ptr, capacity) != 0:
                raise PyisolateError(f"cannot trace the broker: {_core.last_error()}")

    def broker_hops(self) -> tuple[list[list[Any]], int]:
        """Stop recording the broker's hops; them (_trace.Hop) and how many
        were dropped."""
        broker = self._broker
        if broker is None or broker.closed:
            return [], 0
        ffi, lib = _core.ffi, _core.lib
        trace = lib.pyi_broker_trace_stop(broker._ptr)
        if trace == ffi.NULL:
            return [], 0
        try:
            hops = []
            for i in range(lib.pyi_trace_size(trace)):
                h = lib.pyi_trace_hop(trace, i)
                service = ffi.string(h.service).decode("utf-8", "replace")
                hops.append([h.kind, h.rid, h.caller_id, h.received_ns, h.forwarded_ns, service])
            return hops, int(lib.pyi_trace_dropped(trace))
        finally:
            holder = ffi.new("pyi_trace_t **", trace)
            lib.pyi_trace_destroy(holder)

    async def close(self) -> None:
        """Close the node, then the broker (which ends the extension processes)."""
        if not self._served.done():
            self._served.cancel()
        for task in self._api_offers.values():
            if not task.done():
                task.cancel()
        self.node.close()
        for hub in self.event_hubs.values():
            hub.close()
        try:
            self.loop.remove_reader(self._event_fd)
        except Exception:
            pass
        broker, self._broker = self._broker, None
        if broker is not None:
            # Destroying waits up to the grace period for children: off the loop
            # (unless the interpreter is exiting and executors are gone).
            try:
                await self.loop.run_in_executor(None, broker.close)
            except RuntimeError:
                broker.close()
            _live_brokers.discard(broker)

    def close_now(self) -> None:
        """close() for a caller that cannot await (on the loop, which must
        not wait for itself, or with the loop closed): the broker's destroy
        blocks here for up to its grace period."""
        if not self.loop.is_closed():
            for task in [self._served, *self._api_offers.values()]:
                task.cancel()
        try:
            self.node.close()
            if not self.loop.is_closed():
                for hub in self.event_hubs.values():
                    hub.close()
            self.loop.remove_reader(self._event_fd)
        finally:
            broker, self._broker = self._broker, None
            if broker is not None:
                broker.close()
                _live_brokers.discard(broker)

    # -- events -----------------------------------------------------------------
    def _on_worker_lost(self, why: str) -> None:
        if not self.node.closed:
            logger.warning("host service lost (%s): offering it again", why)
            self.node.restart_worker()

    def _drain_events(self) -> None:
        broker = self._broker
        while broker is not None and not broker.closed:
            ev = broker.next_event(0)
            if ev is None:
                break
            logger.debug("broker event %s", ev)
            if ev.type == _core.EVENT_EXIT:
                _tensors.collect_cuda()  # what the dead process held is free
            ext = self._by_pid.get(ev.pid) if ev.pid else None
            if ext is None and ev.service.startswith("ext."):
                cand = self._listeners.get(ev.service)
                if cand is not None and (not ev.pid or cand.pid in (None, ev.pid)):
                    ext = cand
            if ext is None:
                continue
            if ev.type == _core.EVENT_READY:
                ext.on_ready()
            elif ev.type == _core.EVENT_EXIT:
                self._by_pid.pop(ev.pid, None)
                ext.on_exit(ev.status)
            elif ev.type == _core.EVENT_LOST:
                ext.on_lost(ev.text)
            elif ev.type == _core.EVENT_REFUSED:
                ext.on_load_failed(
                    ExtensionLoadError(ext.name, f"the broker refused its service: {ev.text}")
                )

    async def _op_load_error(
        self, target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """An extension's process could not load it: ``target`` is its name,
        ``args[0]`` the exception (_errors.describe_exception)."""
        try:
            ext = self._listeners.get("ext." + extension_key(target))
        except ValueError:  # not a name this host would have given
            return
        if ext is not None and args:
            data = args[0]
            ext.on_load_failed(
                ExtensionLoadError(
                    ext.name,
                    f"{data.get('qualname')}: {data.get('message')}",
                    str(data.get("traceback", "")),
                )
            )

    async def _op_event(
        self, target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> None:
        """Events from an extension's process (ExtensionBase.emit_event):
        ``target`` is its name, ``args[0]`` a list of [name, payload]; they
        are handed to its EventHub, whose task runs the handlers (this
        answer does not wait for them)."""
        try:
            hub = self.event_hubs.get("ext." + extension_key(target))
        except ValueError:  # not a name this host would have given
            return
        if hub is not None and args and isinstance(args[0], list):
            hub.deliver(args[0])

    def event_hub(self, service: str, name: str) -> EventHub:
        """The EventHub of the extension serving ``service`` (made once)."""
        hub = self.event_hubs.get(service)
        if hub is None:
            hub = self.event_hubs[service] = EventHub(self.loop, name)
        return hub

    def count_calls(self, service: str) -> None:
        """Count the calls to ``service`` from now on (afresh)."""
        self.node.call_stats[service] = CallStats()

    def count_with(self, service: str, counted: str) -> None:
        """Count the calls to ``service`` (a restarted or reloaded process's)
        with those to ``counted`` (its extension's), if those are counted."""
        stats = self.node.call_stats.get(counted)
        if stats is not None:
            self.node.call_stats[service] = stats

    def extension_stats(self, service: str, pid: int | None, serving: str) -> dict[str, Any]:
        """ext.stats(): the host's counts of its calls to ``service`` (its
        processes', reloaded and restarted ones' included), the broker's
        byte counts for ``serving`` (the service its current process
        offers), and /proc's figures for ``pid``."""
        st = self.node.call_stats.get(service)
        out = st.snapshot() if st is not None else CallStats().snapshot()
        broker = self.service_stats(serving) or {}
        out["bytes_in"] = broker.get("bytes_in", 0)  # request bodies it was sent
        out["bytes_out"] = broker.get("bytes_out", 0)  # reply bodies it sent back
        out.update(process_stats(pid))
        return out
