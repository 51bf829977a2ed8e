"""The extension process: started by the host's broker as

    <venv>/bin/python -I -u -c <bootstrap>

with PYI_ENDPOINT, PYI_SERVICE, PYI_TOKEN and PYI_PARENT_PID (from the
broker) and PYI_CONFIG (JSON: _launch.child_config) in its environment.

It binds its life to the host's, imports the extension's module and runs the
load hooks with a client to the host already connected (so hooks may call
host singletons), and only then offers its service: the broker's READY event
therefore means "loaded". If loading fails it sends the traceback to the
host ("load_error") and exits with status 1. The module is loaded by
_loader, as an in-process extension's is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from . import _base, _core, _lane, _loader, _profile, _trace
from ._codes import BrokerError, Callee, call_error
from ._errors import describe_exception
from ._rpc import Node, invoke, new_loop

logger = logging.getLogger("pyisolate.child")

REMOTE_CONNECT_TIMEOUT = 60.0  # seconds a remote extension waits for the host (default)


class _LoopPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        assert new_loop is not None
        return new_loop()


def main() -> None:
    # The host decides when this process ends; Ctrl-C in a terminal reaches
    # the whole process group and must not kill extensions mid-call.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if _core.bind_to_parent() != 0:
        sys.stderr.write("pyisolate: not started by a pyisolate host\n")
        sys.exit(2)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = json.loads(os.environ.pop("PYI_CONFIG"))
    if new_loop is not None:  # (Python < 3.12: the loop start_serving needs)
        asyncio.set_event_loop_policy(_LoopPolicy())
    code = asyncio.run(
        run(
            cfg, os.environ["PYI_ENDPOINT"], os.environ["PYI_SERVICE"], os.environ.pop("PYI_TOKEN")
        )
    )
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


async def run(
    cfg: dict[str, Any],
    endpoint: str,
    service: str,
    token: str,
    curve: _core.Curve | None = None,
    connect_timeout: float = REMOTE_CONNECT_TIMEOUT,
) -> int:
    """Load the extension, serve it until the host stops it or the broker
    is lost; the exit status. Also what a remote extension runs
    (pyisolate.remote), with CURVE keys: it gives up after connect_timeout
    seconds without an answer from the host."""
    loop = asyncio.get_running_loop()
    host_service = cfg["host_service"]
    name = cfg["name"]
    for p in cfg.get("paths", []):
        if p not in sys.path:
            sys.path.append(p)
    node = Node(loop, endpoint, f"ext.{name}", curve)
    node.service = service  # so callables passed to the host can be called back
    node.offload_sync = True
    node.pickle_all = bool(cfg.get("allow_pickle"))
    done = asyncio.Event()

    async def call_host(
        key: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return await node.call("api." + key, "", method, args, kwargs)
        except BrokerError as exc:
            raise call_error(exc.code, exc.text, Callee.SINGLETON, key) from None

    lane = os.environ.pop("PYI_LANE", "")
    if lane and curve is None:
        # The local lane to the host (docs/protocol.md): before anything
        # calls the host, so that every call to it travels on the lane.
        node.attach_host_lane(_lane.connect(lane), host_service)
    _base.set_child_runtime(call_host, host_service)
    _base.set_child_emitter(EventSender(node, host_service, name).emit)
    try:
        ext = await _load(cfg)
    except BaseException as exc:  # noqa: BLE001 - report every load failure
        logger.error("loading extension %r failed", name, exc_info=True)
        try:
            await node.call(
                host_service,
                name,
                "",
                (describe_exception(exc),),
                {},
                op="load_error",
                timeout=10.0,
            )
        except Exception:
            pass
        node.close()
        return 1

    async def op_stop(target: str, method: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        try:
            await invoke(ext.stop, [], {}, False)
        finally:
            # Let the reply leave before the sockets close.
            loop.call_later(0.05, done.set)

    def on_lost(why: str) -> None:
        logger.debug("lost the broker: %s", why)
        done.set()

    async def op_trace(
        target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        # manager.trace(): [True] starts recording this process's calls;
        # [False] stops and answers the spans (_trace.py).
        out: dict[str, Any] = {"pid": os.getpid()}
        if args and args[0]:
            _trace.install(node)
        else:
            out["spans"], out["dropped"] = _trace.uninstall(node)
        out["now"] = time.monotonic_ns()  # for a remote host's clock offset
        return out

    async def op_profile(
        target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        # ext.profile(seconds, interval): this process's threads, sampled.
        seconds, interval = float(args[0]), float(args[1])
        _profile.check(seconds, interval)
        profile = await _profile.sample_async(seconds, interval)
        profile.pid = os.getpid()
        return _profile.to_wire(profile)

    node.resolver = lambda target: ext if target == "" else None
    node.ops["stop"] = op_stop
    node.ops["trace"] = op_trace
    node.ops["profile"] = op_profile
    node.on_lost = on_lost
    if curve is None:
        await node.serve(service, token)
    else:
        try:  # a remote process: the host may be unreachable, or the ticket stale
            await asyncio.wait_for(node.serve(service, token), connect_timeout)
        except asyncio.TimeoutError:
            logger.error(
                "no answer from the host at %s within %ss (host gone, ticket used or "
                "stale, or a firewall)",
                endpoint,
                connect_timeout,
            )
            node.close()
            return 1
        logger.info("serving extension %r for the host at %s", name, endpoint)
    await done.wait()
    node.close()
    return 0


class EventSender:
    """ExtensionBase.emit_event in an extension process: events queue here
    (from any thread) and one task at a time sends what has queued, in
    order, as one "event" operation to the host; a lost one is logged."""

    def __init__(self, node: Node, host_service: str, name: str) -> None:
        self._node = node
        self._host_service = host_service
        self._name = name
        self._queue: list[list[Any]] = []
        self._task: asyncio.Task[None] | None = None

    def emit(self, name: str, payload: Any) -> None:
        loop = self._node.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._push(name, payload)
            return
        try:
            loop.call_soon_threadsafe(self._push, name, payload)
        except RuntimeError:  # the loop has closed: the extension is ending
            logger.debug("event %r dropped: the extension is ending", name)

    def _push(self, name: str, payload: Any) -> None:
        self._queue.append([name, payload])
        if self._task is None and not self._node.closed:
            self._task = self._node.loop.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._queue and not self._node.closed:
                batch, self._queue = self._queue, []
                try:
                    await self._node.call(
                        self._host_service, self._name, "", (batch,), {}, op="event"
                    )
                except Exception as exc:
                    logger.warning("%d event(s) not sent to the host: %s", len(batch), exc)
        finally:
            self._task = None


async def _load(cfg: dict[str, Any]) -> Any:
    base = _loader.find_class(*cfg["base"])
    return await _loader.load(cfg["module_path"], cfg.get("extension_class"), base)
