"""The RPC node: one pyi_client (outgoing calls) and optionally one
pyi_worker (incoming calls), driven by an asyncio loop.

Both sockets' file descriptors are watched with ``loop.add_reader``; since
ZMQ_FD is edge-triggered, every wake-up and every send is followed by a
drain that reads until nothing is left. Each outgoing call has a 64-bit id
mapped to a future; each incoming request runs as its own task (a lane's
starts at once, start_serving), so calls nest in both directions to any
depth without deadlock.

A local isolated extension and its host also share a lane (_lane, _core.Lane:
a direct socket): calls between the two travel on it instead of the broker,
in both directions, with the same messages; the caller enforces deadlines
there and sends CANCEL itself (:class:`LaneEnd`).

Request body: a msgpack frame [op, target, method, args, kwargs], then the
out-of-band buffers of large arrays and tensors. ``op`` is "call" for method
calls; other ops are node-specific control messages (the extension's
"stop", the host's "load_error"). ``target`` is "" for the service's main
object or "o:<n>" for a registered callable. Every ProxiedSingleton is a
service of its own, ``api.<module>.<qualname>``, offered by the host's worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import itertools
import logging
import os
import sys
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from . import _core, _lane, _tensors, _trace
from ._base import ProxiedSingleton, is_singleton_proxy, singleton_key
from ._codes import reply_error
from ._errors import CallTimeout, PyisolateError, describe_exception
from ._serialize import Codec
from ._stats import CallStats

logger = logging.getLogger("pyisolate")

_REPLY = _core.REPLY
_perf_ns = time.perf_counter_ns
_REQUEST = _core.REQUEST
_CANCEL = _core.CANCEL
_DISCONNECT = _core.DISCONNECT
_ERROR = _core.ERROR
_LANE_OPEN = _core.LANE_OPEN
_lane_send = _core._lane_send
_recv_lane = _core._recv_lane
_lane_queued = _core.lib.pyi_lane_queued
_Message = _core.Message
# Bytes queued on a lane over which a caller waits before it sends another
# request (replies and cancels never wait): what a slow peer can make this
# process hold is bounded by it plus one record.
LANE_HIGH_WATER = 4 << 20
# The first LANE_BATCH messages of a pass of the loop leave at once, one
# write each; the others are queued and leave LANE_BATCH per write, the
# rest at the end of the pass: the peer starts on them while this side
# goes on. (All of a pass in one write made the two sides take turns; only
# the first alone split each round of 8 calls in flight in two writes and
# two wake-ups: perf/README.md.)
LANE_BATCH = 8
# Requests one wake-up of a lane starts (each runs up to its first
# suspension at once: start_serving) before the loop's other work.
LANE_PASS = 64
# The start of the text of the errors that fail the calls in flight on a
# lane that closed (the peer ended).
LANE_CLOSED = "the lane closed"
_TRACE_KEY = _trace.KEY


Resolver = Callable[[str], Any]
OpHandler = Callable[[str, str, list[Any], dict[str, Any]], Awaitable[Any]]

_Task = asyncio.Task
_current_task = asyncio.current_task


if sys.version_info >= (3, 12):
    # What an extension process's loop must be (None: asyncio's own).
    new_loop: Callable[[], asyncio.AbstractEventLoop] | None = None

    def start_serving(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        """A task that serves one request, run at once up to its first
        suspension (a request answered without one costs no trip through
        the loop's queue); a task as any other for the code it runs. A loop
        with a task factory (the application's) makes its own tasks."""
        if loop.get_task_factory() is not None:
            return loop.create_task(coro)
        return _Task(coro, loop=loop, eager_start=True)

else:
    _call_soon = asyncio.SelectorEventLoop.call_soon

    class ServeLoop(asyncio.SelectorEventLoop):
        """An extension process's event loop before Python 3.12 (Task has no
        ``eager_start``): Task.__init__ schedules the task's first step with
        ``loop.call_soon``; while ``_take_step`` is a list, that call is put
        there instead of the loop's queue, for start_serving to run at once."""

        def __init__(self) -> None:
            super().__init__()
            self._take_step: list[Any] | None = None

        def call_soon(  # type: ignore[override]
            self, callback: Callable[..., object], *args: Any, context: Any = None
        ) -> asyncio.Handle | None:
            take = self._take_step
            if take is None or args or context is None:
                # (What a finalizer run by a collection inside Task() may
                # schedule: the step comes with its context and no args.)
                return _call_soon(self, callback, *args, context=context)
            self._take_step = None
            take.append((callback, context))
            return None

    new_loop = ServeLoop

    def start_serving(loop: asyncio.AbstractEventLoop, coro: Any) -> asyncio.Task[Any]:
        """As above, on a ServeLoop without a task factory when no task
        runs (the step enters the task as the current one, which needs none
        current); else the task starts in the loop's next pass."""
        if (
            type(loop) is not ServeLoop
            or loop.get_task_factory() is not None
            or _current_task(loop) is not None
        ):
            return loop.create_task(coro)
        take: list[Any] = []
        loop._take_step = take
        try:
            task = _Task(coro, loop=loop)
        finally:
            loop._take_step = None
        if take:
            step, context = take[0]
            context.run(step)
        return task


class RemoteCallable:
    """A callable that lives in another process; calling it returns an
    awaitable. References stay valid while the call that passed them runs."""

    def __init__(self, node: Node, service: str, target: str, label: str) -> None:
        self._pyi_node = node
        self._pyi_service = service
        self._pyi_target = target
        self._pyi_label = label

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return self._pyi_node.call(self._pyi_service, self._pyi_target, "", args, kwargs)

    def __repr__(self) -> str:
        return f"<remote callable {self._pyi_label or self._pyi_target} in {self._pyi_service}>"


class RemoteObject:
    """An object that lives in another process: ``await obj.method(...)``."""

    def __init__(self, node: Node, service: str, target: str, label: str) -> None:
        self._pyi_node = node
        self._pyi_service = service
        self._pyi_target = target
        self._pyi_label = label

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)
        node, service, target = self._pyi_node, self._pyi_service, self._pyi_target

        def method(*args: Any, **kwargs: Any) -> Awaitable[Any]:
            return node.call(service, target, name, args, kwargs)

        return method

    def __repr__(self) -> str:
        return f"<remote {self._pyi_label or self._pyi_target} in {self._pyi_service}>"


_MethodType = types.MethodType
_FunctionType = types.FunctionType
_CoroutineType = types.CoroutineType
_CO_COROUTINE = inspect.CO_COROUTINE


def _async_callable(fn: Callable[..., Any]) -> bool:
    """inspect.iscoroutinefunction(fn) or of its type's __call__; a plain
    function (or a method of one) without attributes is answered from its
    code flags, which costs far less than inspect's checks."""
    f = fn.__func__ if type(fn) is _MethodType else fn
    if type(f) is _FunctionType and not f.__dict__:
        return bool(f.__code__.co_flags & _CO_COROUTINE)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


async def invoke(
    fn: Callable[..., Any],
    args: list[Any] | tuple[Any, ...],
    kwargs: dict[str, Any],
    offload_sync: bool,
) -> Any:
    """Call fn; await its result if awaitable. A plain function runs in the
    loop's default executor when offload_sync is set."""
    if offload_sync and not _async_callable(fn):
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        result = await loop.run_in_executor(None, functools.partial(ctx.run, fn, *args, **kwargs))
    else:
        result = fn(*args, **kwargs)
    if type(result) is _CoroutineType or inspect.isawaitable(result):
        result = await result
    return result


class LaneEnd:
    """This process's end of one lane: the calls sent on it and not yet
    answered (their ids), the requests it brought that are running, and
    what to do when it ends (``on_end(why, broken)``)."""

    def __init__(
        self,
        node: Node,
        fd: int,
        peer: str,
        lost_code: int,
        on_end: Callable[[str, bool], None] | None,
    ) -> None:
        self.node = node
        self.lane = _core.Lane(fd)
        self.fd = self.lane.fd
        self.peer = peer  # for messages: the service or process at the other end
        self.lost_code = lost_code  # the ERROR code of calls in flight when it ends
        self.on_end = on_end
        self.pending: set[int] = set()
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.waiting: dict[int, _core.Message] = {}
        self.writing = False  # bytes are queued: waiting for the socket
        # The first LANE_BATCH messages of a pass of the loop leave at once;
        # the others sent in that pass are queued and leave together,
        # LANE_BATCH at a time, the rest at its end (_end_batch).
        self._batch: asyncio.Handle | None = None
        self._alone = 0  # messages of this pass that left at once
        self._held = 0  # messages queued in this pass since the last write
        self._waiters: list[asyncio.Future[None]] = []
        self.closed = False
        node.loop.add_reader(self.fd, node._drain_lane, self)

    def send(
        self,
        command: int,
        rid: int,
        frames: Any = (),
        marks: tuple[int, ...] = (),
        service: bytes = b"",
        timeout_ms: int = 0,
        code: int = 0,
        text: bytes = b"",
    ) -> None:
        """Send or queue; PyisolateError when the lane is closed (then it
        is ended here)."""
        lane = self.lane
        now = self._alone < LANE_BATCH and not self.writing
        ptr = lane._ptr
        try:
            if ptr is None or not (type(frames) is list or type(frames) is tuple):
                queued = lane.send(
                    command, rid, frames, marks, service, timeout_ms, code, text, now
                )
            else:  # _core.Lane.send without its call
                queued = _lane_send(
                    ptr, now, command, rid, service, timeout_ms, code, text, frames, marks
                )
                if queued < 0:
                    what = (
                        "message has too many frames"
                        if queued == -2
                        else "cannot send on the lane"
                    )
                    raise PyisolateError(f"{what}: {_core.last_error()}")
        except PyisolateError:
            if lane.state() != _LANE_OPEN:
                self.node._lane_ended(self)
            raise
        if now:
            if self._batch is None:
                self._batch = self.node.loop.call_soon(self._end_batch)
            self._alone += 1
            self._held = 0
            if queued:
                self._start_writing()
        elif not self.writing:
            self._held += 1
            if self._held >= LANE_BATCH:
                self._held = 0
                if not self._flush():
                    raise PyisolateError(f"cannot send on the lane: {_core.last_error()}")

    def _end_batch(self) -> None:
        self._batch = None
        self._alone = 0
        if not (self.closed or self.writing) and self.lane.queued():
            self._flush()

    def _flush(self) -> bool:
        """Write what is queued (the rest once the socket has room); False
        when that ended the lane."""
        rc = self.lane.flush()
        if rc < 0:
            self.node._lane_ended(self)
            return False
        if rc == 1:
            self._start_writing()
        if self.lane.queued() <= LANE_HIGH_WATER:
            self._wake()
        return True

    def _start_writing(self) -> None:
        if not self.writing:
            self.writing = True
            self.node.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        rc = self.lane.flush()
        if rc != 1:
            self._stop_writing()
        if rc < 0:
            self.node._lane_ended(self)
        elif self.lane.queued() <= LANE_HIGH_WATER:
            self._wake()

    def _stop_writing(self) -> None:
        if self.writing:
            self.writing = False
            try:
                self.node.loop.remove_writer(self.fd)
            except Exception:
                pass

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def room(self) -> None:
        """Wait while more than LANE_HIGH_WATER bytes are queued."""
        while not self.closed and self.lane.queued() > LANE_HIGH_WATER:
            fut = self.node.loop.create_future()
            self._waiters.append(fut)
            await fut

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._batch is not None:
            self._batch.cancel()
            self._batch = None
        self._stop_writing()
        try:
            self.node.loop.remove_reader(self.fd)
        except Exception:
            pass
        self.lane.close()
        self._wake()


class Node:
    """One process's (or one host manager's) attachment to the broker."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        endpoint: str,
        name: str,
        curve: _core.Curve | None = None,
    ) -> None:
        self.loop = loop
        self.endpoint = endpoint
        self.name = name
        self.curve = curve
        self.client: _core.Client | None = _core.Client(endpoint, curve)
        self.worker: _core.Worker | None = None
        self.service: str | None = None
        self.offload_sync = False
        self.resolver: Resolver = lambda target: None
        self.singletons: dict[str, type[ProxiedSingleton]] = {}
        self.ops: dict[str, OpHandler] = {}
        self.on_lost: Callable[[str], None] | None = None
        self.codec = Codec(self._encode_ref, self._decode_ref)
        # Over tcp there is no shared memory with the host: arrays and
        # tensors leave this process inline (docs/tensors.md, section 9).
        self.remote = endpoint.startswith("tcp://")
        # Services served over tcp (remote extensions): calls to them carry
        # their tensors inline; the broker refuses shared memory for them.
        self.remote_services: set[str] = set()
        # Pickles (ExtensionConfig.allow_pickle): calls to these services and
        # their results may carry them; pickle_all, set in an extension that
        # allows them, also admits them in the requests it serves and its
        # results. A worker cannot tell who calls it, so the host's services
        # never accept pickles.
        self.pickle_services: set[str] = set()
        self.pickle_all = False
        self._ids = itertools.count(1)
        self._oids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[_core.Message]] = {}
        self._objects: dict[str, Any] = {}
        self._ref_sink: list[str] | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Requests whose task has not started yet: a CANCEL then drops the
        # task before it decodes anything, so the request is decoded and
        # dropped here instead (its shared arrays' in-flight counts).
        self._waiting: dict[int, _core.Message] = {}
        self._client_fd = self.client.fd()
        self._worker_fd = -1
        self._token = ""
        self._offers: dict[str, asyncio.Future[None]] = {}
        self.services: list[str] = []
        self._hb_handle: asyncio.TimerHandle | None = None
        self._drain_scheduled = False
        self.closed = False
        # Services whose method calls are counted (the host's extensions).
        self.call_stats: dict[str, CallStats] = {}
        # Lanes: the services whose calls travel on one (the host: each local
        # extension's; an extension: its host's services, host_lane).
        self.lanes: dict[str, LaneEnd] = {}
        self.host_lane: LaneEnd | None = None
        self._listener: _lane.LaneListener | None = None
        # The host's counts of what crossed its lanes, per service, as the
        # broker counts what it routes (lane_stats); None: not counted.
        self.lane_counts: dict[str, list[int]] | None = None
        loop.add_reader(self._client_fd, self._drain_client)

    # -- outgoing calls -----------------------------------------------------
    async def call(
        self,
        service: str,
        target: str,
        method: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        *,
        op: str = "call",
        timeout: float | None = None,
    ) -> Any:
        client = self.client
        if self.closed or client is None:
            raise PyisolateError(f"{self.name}: the connection to the broker is closed")
        # Counted (ext.stats()): method calls to the services in call_stats.
        st = self.call_stats.get(service) if op == "call" else None
        t0 = 0
        if st is not None:
            st.in_flight += 1
            t0 = _perf_ns()
        rid = next(self._ids)
        # Callables among the arguments are registered while encoding; they
        # stay callable until this call ends.
        refs: list[str] = []
        self._ref_sink = refs
        try:
            body = self.codec.dumps_call(
                op,
                target,
                method,
                args if type(args) is tuple else tuple(args),
                kwargs,
                service in self.pickle_services,
                self.remote or service in self.remote_services,
            )
            marks = self.codec.marks
            sent = self.codec.take_sent()
        except BaseException:
            self._release(refs)
            if st is not None:
                st.end(method, _perf_ns() - t0, True, False)
            raise
        finally:
            self._ref_sink = None
        timeout_ms = 0
        if timeout is not None and timeout > 0:
            timeout_ms = max(1, min(int(timeout * 1000), 2**32 - 1))
        fut: asyncio.Future[_core.Message] = self.loop.create_future()
        pending = self._pending
        pending[rid] = fut
        backstop: asyncio.TimerHandle | None = None
        lane = self.lanes.get(service)
        if lane is None and self.host_lane is not None and service.startswith("api."):
            lane = self.host_lane
        try:
            if lane is not None:
                try:
                    # Whatever is queued leaves at the end of this pass of
                    # the loop, or when the socket has room: room() wakes then.
                    ptr = lane.lane._ptr
                    if ptr is not None and _lane_queued(ptr) > LANE_HIGH_WATER:
                        await lane.room()
                    lane.send(_REQUEST, rid, body, marks, service.encode(), timeout_ms)
                except BaseException:
                    _tensors.discard(body, marks)  # never sent
                    if st is not None:
                        st.end(method, _perf_ns() - t0, True, False)
                    raise
                lane.pending.add(rid)
                if timeout_ms:
                    # On a lane the caller enforces the deadline.
                    backstop = self.loop.call_later(timeout or 0, self._lane_timeout, rid, lane)
                try:
                    msg = await fut
                except asyncio.CancelledError:
                    self._lane_cancel(lane, rid)
                    if st is not None:
                        st.in_flight -= 1
                        st.cancelled += 1
                    raise
                finally:
                    lane.pending.discard(rid)
            else:
                msg = await self._broker_call(
                    client, service, rid, timeout_ms, timeout, body, marks, fut, st, method, t0
                )
        finally:
            pending.pop(rid, None)
            if backstop is not None:
                backstop.cancel()
            if refs:
                self._release(refs)
        if msg.command == _REPLY:
            frames = msg.frames
            try:
                value = (
                    self.codec.loads(
                        frames[0],
                        frames[1:],
                        self.pickle_all or service in self.pickle_services,
                        sent,
                    )
                    if frames
                    else None
                )
            except BaseException:
                if st is not None:
                    st.end(method, _perf_ns() - t0, True, False)
                raise
            if st is not None:
                st.end(method, _perf_ns() - t0, False, False)
            return value
        if msg.code == _core.ERR_INLINE and marks and service not in self.remote_services:
            # A service this node did not know was remote (another
            # extension's, over tcp): the broker refused the shared memory
            # before anything ran. From now on its tensors go inline.
            self.remote_services.add(service)
            if st is not None:
                st.in_flight -= 1  # the call again counts it
            return await self.call(service, target, method, args, kwargs, op=op, timeout=timeout)
        exc = reply_error(msg, service, method, timeout)
        if st is not None:
            st.end(method, _perf_ns() - t0, True, isinstance(exc, CallTimeout))
        raise exc

    async def _broker_call(
        self,
        client: _core.Client,
        service: str,
        rid: int,
        timeout_ms: int,
        timeout: float | None,
        body: Any,
        marks: tuple[int, ...],
        fut: asyncio.Future[_core.Message],
        st: CallStats | None,
        method: str,
        t0: int,
    ) -> _core.Message:
        """Send a request through the broker; its answer."""
        backstop: asyncio.TimerHandle | None = None
        try:
            delay = 0.001
            try:
                while not client.request(service, rid, timeout_ms, body, marks):
                    # Send queue full: let replies drain, then try again.
                    self._drain_client()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.05)
                    again = self.client
                    if again is None:
                        raise PyisolateError(
                            f"{self.name}: the connection to the broker is closed"
                        )
                    client = again
            except BaseException:
                _tensors.discard(body, marks)  # never sent
                if st is not None:
                    st.end(method, _perf_ns() - t0, True, False)
                raise
            # Sending may have consumed the socket's edge-triggered wake-up:
            # read what is already there now (only this socket).
            self._drain_client()
            if timeout_ms:
                # The broker enforces the deadline; this only guards against
                # a broker that never answers.
                backstop = self.loop.call_later((timeout or 0) + 5.0, self._backstop, rid)
            try:
                return await fut
            except asyncio.CancelledError:
                if self.client is not None:
                    self.client.cancel(rid)
                    self._schedule_drain()
                if st is not None:
                    st.in_flight -= 1
                    st.cancelled += 1
                raise
        finally:
            if backstop is not None:
                backstop.cancel()

    def _backstop(self, rid: int) -> None:
        fut = self._pending.get(rid)
        if fut is not None and not fut.done():
            if self.client is not None:
                self.client.cancel(rid)
            fut.set_result(
                _core.Message(
                    _core.ERROR, rid, "", _core.ERR_TIMEOUT, "no answer from the broker", 0
                )
            )

    # -- lanes ----------------------------------------------------------------
    def _lane_timeout(self, rid: int, end: LaneEnd) -> None:
        """A call's deadline passed on a lane: it fails now, as the broker
        fails it on its path, and the callee is told to stop (CANCEL)."""
        fut = self._pending.get(rid)
        if fut is not None and not fut.done():
            self._lane_cancel(end, rid)
            fut.set_result(
                _core.Message(_ERROR, rid, "", _core.ERR_TIMEOUT, "the call's deadline passed", 0)
            )

    def _lane_cancel(self, end: LaneEnd, rid: int) -> None:
        if not end.closed:
            try:
                end.send(_CANCEL, rid)
            except PyisolateError:
                pass

    def _drain_lane(self, end: LaneEnd) -> None:
        lane = end.lane
        pending = self._pending
        served = 0
        while not end.closed:
            ptr = lane._ptr  # _core.Lane.recv without its call
            t = None if ptr is None else _recv_lane(ptr)
            if t is None:
                if lane.state() != _LANE_OPEN:
                    self._lane_ended(end)
                return
            msg = _Message(*t)
            cmd = msg.command
            rid = msg.id
            if cmd == _REQUEST:
                if self.lane_counts is not None:
                    self._count(msg.service, 0, 3, msg.frames)
                end.waiting[rid] = msg
                task = start_serving(self.loop, self._serve_one(msg, end))
                if not task.done():
                    end.tasks[rid] = task
                served += 1
                if served == LANE_PASS:
                    # Requests served at once: the loop's other work gets
                    # its turn before the rest.
                    self.loop.call_soon(self._drain_lane, end)
                    return
            elif cmd == _CANCEL:
                running = end.tasks.pop(rid, None)
                if running is not None:
                    running.cancel()
                queued = end.waiting.pop(rid, None)
                if queued is not None:
                    self._discard(queued)
            elif rid in end.pending:
                # An answer to a call sent on this lane (and only such: a
                # peer cannot answer calls it was not sent).
                end.pending.discard(rid)
                waiter = pending.get(rid)
                if waiter is not None and not waiter.done():
                    waiter.set_result(msg)
                elif cmd == _REPLY and len(msg.frames) > 1:
                    self._discard(msg)
            elif cmd == _REPLY and len(msg.frames) > 1:
                self._discard(msg)  # a late answer (timed out, cancelled)

    def _lane_ended(self, end: LaneEnd) -> None:
        """The lane closed (the peer ended or broke it): the calls sent on
        it fail at once, the requests it brought stop, calls to its
        services go through the broker from now on."""
        if end.closed:
            return
        state, why = end.lane.state(), end.lane.error()
        broken = state == _core.LANE_BROKEN
        for service, other in list(self.lanes.items()):
            if other is end:
                del self.lanes[service]
                if self.lane_counts is not None:  # its counts outlive it
                    counts = self.lane_counts.setdefault(service, [0, 0, 0, 0, 0])
                    for i, n in enumerate(_lane_calls(end)):
                        counts[i] += n
        end.close()
        if self.host_lane is end:
            self.host_lane = None
        text = f"{end.peer} broke its lane: {why}" if broken else f"{LANE_CLOSED}: {why}"
        err = _core.Message(_ERROR, 0, "", end.lost_code, text, 0)
        for rid in list(end.pending):
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_result(err)
        end.pending.clear()
        for task in list(end.tasks.values()):
            task.cancel()
        end.tasks.clear()
        for queued in end.waiting.values():
            self._discard(queued)
        end.waiting.clear()
        if broken:
            logger.error("%s: %s", self.name, text)
        if end.on_end is not None and not self.closed:
            end.on_end(text, broken)

    def lane_path(self, rundir: str) -> str:
        """The host's lane socket (made on first use) in rundir."""
        if self._listener is None:
            self._listener = _lane.LaneListener(self.loop, os.path.join(rundir, _lane.LANE_SOCKET))
        return self._listener.path

    def expect_lane(
        self, pid: int, service: str, on_end: Callable[[str, bool], None]
    ) -> asyncio.Future[None]:
        """Take the lane that process pid (serving ``service``) connects;
        the future is done once calls to ``service`` travel on it."""
        assert self._listener is not None
        fut: asyncio.Future[None] = self.loop.create_future()

        def take(fd: int) -> None:
            if self.closed:
                os.close(fd)
                return
            old = self.lanes.get(service)
            if old is not None:
                self._lane_ended(old)
            self.lanes[service] = LaneEnd(self, fd, service, _core.ERR_WORKER_LOST, on_end)
            if not fut.done():
                fut.set_result(None)

        self._listener.expect(pid, take)
        return fut

    def forget_lane(self, pid: int) -> None:
        if self._listener is not None:
            self._listener.forget(pid)

    def attach_host_lane(self, fd: int, host_service: str) -> None:
        """An extension: calls to its host's services (``host_service`` and
        every ``api.*``) travel on the lane fd from now on."""
        end = LaneEnd(self, fd, "the host", _core.ERR_SHUTDOWN, self._host_lane_ended)
        self.host_lane = end
        self.lanes[host_service] = end

    def _host_lane_ended(self, why: str, broken: bool) -> None:
        # The host closed it (it is gone or stopping): as losing the broker.
        if self.on_lost is not None:
            self.on_lost(why or "the host closed the lane")

    def _count(self, service: str, field: int, size_field: int, frames: Any) -> None:
        """Count a request to a service of this node's or its answer (the
        lanes count the calls to their own services in C)."""
        assert self.lane_counts is not None
        counts = self.lane_counts.get(service)
        if counts is None:
            counts = self.lane_counts[service] = [0, 0, 0, 0, 0]
        counts[field] += 1
        size = 0
        for frame in frames:  # bytes (most frames) measured without a view
            size += len(frame) if type(frame) is bytes else memoryview(frame).nbytes
        counts[size_field] += size

    def lane_stats(self, service: str) -> dict[str, int] | None:
        """What crossed the lanes for ``service`` (requests to it, its
        replies and errors, their body bytes), as the broker counts what
        it routes; None when nothing did (or nothing is counted here)."""
        if self.lane_counts is None:
            return None
        counts = self.lane_counts.get(service)
        end = self.lanes.get(service)
        if end is not None:
            live = _lane_calls(end)
            counts = live if counts is None else [a + b for a, b in zip(counts, live, strict=True)]
        if counts is None:
            return None
        return dict(
            zip(("requests", "replies", "errors", "bytes_in", "bytes_out"), counts, strict=True)
        )

    def _drain_client(self) -> None:
        client = self.client
        if client is None:
            return
        recv = client.recv
        pending = self._pending
        while True:
            msg = recv()
            if msg is None:
                break
            if msg.command == _DISCONNECT:
                err = _core.Message(_core.ERROR, 0, "", _core.ERR_SHUTDOWN, msg.text, 0)
                for fut in list(pending.values()):
                    if not fut.done():
                        fut.set_result(err)
                continue
            waiter = pending.get(msg.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
            elif msg.command == _REPLY and len(msg.frames) > 1:
                self._discard(msg)

    def _discard(self, msg: _core.Message) -> None:
        """A reply nobody waits for any more (cancelled, timed out): decode
        it all the same and drop it, so that the shared arrays it names are
        received (their regions' in-flight counts go back) and then freed."""
        try:
            self.codec.loads(msg.frames[0], msg.frames[1:])
        except Exception:
            pass

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled and not self.closed:
            self._drain_scheduled = True
            self.loop.call_soon(self._drain_all)

    def _drain_all(self) -> None:
        self._drain_scheduled = False
        if self.closed:
            return
        self._drain_client()
        self._drain_worker()

    # -- serving ------------------------------------------------------------
    async def serve(self, service: str, token: str) -> None:
        """Start the worker, offer ``service`` (with the broker-granted token)
        and wait until the broker has registered it."""
        self.service = service
        self._token = token
        self.services = [service]
        self._start_worker()
        await self._offers[service]

    async def offer(self, service: str) -> None:
        """Offer one more service (granted to this worker's token)."""
        if service not in self.services:
            self.services.append(service)
            if self.worker is not None:
                self._offer(service)
            else:
                self._offers[service] = self.loop.create_future()
        await self._offers[service]

    def _offer(self, service: str) -> None:
        assert self.worker is not None
        self._offers[service] = self.loop.create_future()
        self.worker.offer(service)
        self._schedule_drain()

    def _start_worker(self) -> None:
        assert self.service is not None
        self.worker = _core.Worker(self.endpoint, self._token, curve=self.curve)
        self._worker_fd = self.worker.fd()
        self.loop.add_reader(self._worker_fd, self._drain_worker)
        for service in self.services:
            self._offer(service)
        self._heartbeat()

    def _heartbeat(self) -> None:
        self._hb_handle = None
        if self.closed or self.worker is None:
            return
        ms = self.worker.heartbeat()
        self._drain_worker()
        if ms < 0:
            logger.warning("%s: the broker went silent", self.name)
            if self.on_lost is not None:
                self.on_lost("the broker went silent")
                return
            ms = 1000
        self._hb_handle = self.loop.call_later(max(ms, 10) / 1000.0, self._heartbeat)

    def _drain_worker(self) -> None:
        worker = self.worker
        if worker is None:
            return
        recv = worker.recv
        while self.worker is worker:
            msg = recv()
            if msg is None:
                break
            cmd = msg.command
            if cmd == _REQUEST:
                self._waiting[msg.id] = msg
                self._tasks[msg.id] = self.loop.create_task(self._serve_one(msg))
            elif cmd == _CANCEL:
                task = self._tasks.pop(msg.id, None)
                if task is not None:
                    task.cancel()
                queued = self._waiting.pop(msg.id, None)
                if queued is not None:
                    self._discard(queued)
            elif cmd == _core.READY:
                for name in msg.services or list(self._offers):
                    fut = self._offers.get(name)
                    if fut is not None and not fut.done():
                        fut.set_result(None)
            elif cmd == _core.ERROR:
                fut = self._offers.get(msg.service)
                if fut is not None and not fut.done():
                    fut.set_exception(
                        PyisolateError(f"the broker refused service {msg.service!r}: {msg.text}")
                    )
            elif cmd == _core.DISCONNECT:
                logger.debug("%s: broker sent DISCONNECT (%s)", self.name, msg.text)
                if self.on_lost is not None:
                    self.on_lost(msg.text or "the broker disconnected")
                break

    async def _serve_one(self, msg: _core.Message, end: LaneEnd | None = None) -> None:
        """Serve one request: from the broker (end None) or from a lane."""
        rid = msg.id
        tasks = self._tasks if end is None else end.tasks
        (self._waiting if end is None else end.waiting).pop(rid, None)
        try:
            frames = msg.frames
            if not frames:
                raise PyisolateError("empty request")
            op, target, method, args, kwargs = self.codec.loads(
                frames[0], frames[1:], self.pickle_all
            )
            if op == "call":
                # invoke(), inlined: the common case (an async def or a
                # function that need not leave the loop) costs no coroutine
                # of its own.
                fn, offload = self._resolve(msg.service, target, method)
                if kwargs and _TRACE_KEY in kwargs:  # trace hook: a traced call (_trace.py)
                    # rid 0: a lane's request, never one of the broker's ids (from 1)
                    hop = rid if end is None else 0
                    fn = _trace.serving(fn, msg.service, method, kwargs.pop(_TRACE_KEY), hop)
                if offload and not _async_callable(fn):
                    result = await invoke(fn, args, kwargs, True)
                else:
                    result = fn(*args, **kwargs)
                    if type(result) is _CoroutineType or inspect.isawaitable(result):
                        result = await result
            else:
                handler = self.ops.get(op)
                if handler is None:
                    raise PyisolateError(f"unknown operation {op!r}")
                result = await handler(target, method, args, kwargs)
            body = self.codec.dumps(
                result, "return value", self.pickle_all, self.remote or msg.answer_inline
            )
            marks = self.codec.marks
        except asyncio.CancelledError:
            # CANCEL from the caller (or shutdown): the broker forgot the request.
            tasks.pop(rid, None)
            return
        except BaseException as exc:  # noqa: BLE001 - everything crosses
            tasks.pop(rid, None)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                logger.warning("%s: a call raised %r", self.name, exc)
            self._send_error(rid, exc, end, msg.service)
            return
        tasks.pop(rid, None)
        if end is not None:
            if end.closed:
                _tensors.discard(body, marks)
                return
            try:
                end.send(_REPLY, rid, body, marks)
                if self.lane_counts is not None:
                    self._count(msg.service, 1, 4, body)
            except PyisolateError as exc:
                _tensors.discard(body, marks)
                # (Too large for the lane, say: the caller learns why.)
                self._send_error(rid, exc, end, msg.service)
        elif self.worker is None:
            _tensors.discard(body, marks)
        else:
            try:
                self.worker.reply(rid, body, marks)
            except PyisolateError as exc:
                _tensors.discard(body, marks)
                logger.warning("%s: cannot reply: %s", self.name, exc)
            # Sending may have consumed the socket's edge-triggered wake-up:
            # read what is already there now (only this socket).
            self._drain_worker()

    def _send_error(
        self, rid: int, exc: BaseException, end: LaneEnd | None = None, service: str = ""
    ) -> None:
        if (self.worker if end is None else end) is None or (end is not None and end.closed):
            return
        try:
            data = describe_exception(exc)
            body = msgpack.packb(data, use_bin_type=True)
            text = f"{data['qualname']}: {data['message']}"
            if end is not None:
                if self.lane_counts is not None:
                    self._count(service, 2, 4, ())
                raw = text.encode("utf-8", "replace")[:1000].replace(b"\0", b"")
                end.send(_ERROR, rid, [body], (), b"", 0, _core.ERR_APPLICATION, raw)
                return
            assert self.worker is not None
            self.worker.error(rid, _core.ERR_APPLICATION, text, [body])
        except Exception as inner:  # pragma: no cover - describe never fails in practice
            logger.warning("%s: cannot send an error reply: %s", self.name, inner)
        self._schedule_drain()

    async def _dispatch(
        self, service: str, target: str, method: str, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        fn, offload = self._resolve(service, target, method)
        return await invoke(fn, args, kwargs, offload)

    def _resolve(self, service: str, target: str, method: str) -> tuple[Callable[..., Any], bool]:
        """The callable a request names, and whether a plain function should
        run in the executor (the extension's own methods)."""
        if service.startswith("api."):
            cls = self.singletons.get(service[4:])
            if cls is None:
                raise PyisolateError(f"no ProxiedSingleton {service[4:]!r} is served here")
            obj = cls._pyi_get_instance()
            offload = False
        elif target.startswith("o:"):
            obj = self._objects.get(target)
            if obj is None:
                raise PyisolateError(
                    "the callable passed earlier is no longer available (references to "
                    "callables are valid only while the call that passed them runs)"
                )
            offload = False
        else:
            obj = self.resolver(target)
            if obj is None:
                raise PyisolateError(f"nothing to call at {target!r}")
            offload = self.offload_sync
        if method:
            if method.startswith("_"):
                raise AttributeError(f"private attribute {method!r} cannot be called remotely")
            fn = getattr(obj, method)
        else:
            fn = obj
        if not callable(fn):
            raise TypeError(f"{method!r} of {type(obj).__qualname__} is not callable")
        return fn, offload

    # -- references -----------------------------------------------------------
    def _encode_ref(self, obj: Any) -> tuple[str, str, str, str] | None:
        if isinstance(obj, (RemoteCallable, RemoteObject)):
            kind = "callable" if isinstance(obj, RemoteCallable) else "object"
            return (obj._pyi_service, obj._pyi_target, kind, obj._pyi_label)
        if isinstance(obj, ProxiedSingleton):
            if is_singleton_proxy(obj):
                key = singleton_key(obj.__dict__["_pyi_class"])
                if not obj.__dict__["_pyi_service"]:
                    return None
            else:
                key = singleton_key(type(obj))
                if key not in self.singletons:
                    return None
            return ("api." + key, "", "singleton", key)
        if callable(obj) and not isinstance(obj, type) and self.service:
            oid = f"o:{next(self._oids)}"
            self._objects[oid] = obj
            if self._ref_sink is not None:
                self._ref_sink.append(oid)
            label = getattr(obj, "__qualname__", "") or type(obj).__qualname__
            return (self.service, oid, "callable", str(label))
        return None

    def _decode_ref(self, service: str, target: str, kind: str, label: str) -> Any:
        if service.startswith("api.") and service[4:] in self.singletons:
            return self.singletons[service[4:]]._pyi_get_instance()
        if service == self.service:
            obj = self._objects.get(target)
            if obj is not None:
                return obj
        if kind == "callable":
            return RemoteCallable(self, service, target, label)
        if kind == "singleton":
            cls = _find_class(label)
            if cls is not None and issubclass(cls, ProxiedSingleton):
                try:
                    return cls()
                except Exception:
                    pass
        return RemoteObject(self, service, target, label)

    def _release(self, oids: list[str]) -> None:
        for oid in oids:
            self._objects.pop(oid, None)

    # -- shutdown -------------------------------------------------------------
    def close_worker(self) -> None:
        if self._hb_handle is not None:
            self._hb_handle.cancel()
            self._hb_handle = None
        for task in list(self._tasks.values()):
            task.cancel()
        self._tasks.clear()
        if self.worker is not None:
            try:
                self.loop.remove_reader(self._worker_fd)
            except Exception:
                pass
            worker, self.worker = self.worker, None
            worker.close()

    def restart_worker(self) -> None:
        """Reconnect the worker and offer the service again (after the broker
        lost it, e.g. when this loop was blocked for too long)."""
        self.close_worker()
        if not self.closed and self.service:
            self._start_worker()

    def close(self) -> None:
        if self.closed:
            return
        self.close_worker()
        self.closed = True
        err = _core.Message(_core.ERROR, 0, "", _core.ERR_SHUTDOWN, "closed", 0)
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_result(err)
        for end in {*self.lanes.values(), *([self.host_lane] if self.host_lane else [])}:
            self._lane_ended(end)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self.client is not None:
            try:
                self.loop.remove_reader(self._client_fd)
            except Exception:
                pass
            client, self.client = self.client, None
            client.close()
        self._objects.clear()


def _lane_calls(end: LaneEnd) -> list[int]:
    """The calls sent on a lane to the service at its other end, as
    lane_stats counts them: requests, replies, errors, request bytes,
    answer bytes."""
    lane = end.lane
    requests, bytes_in = lane.count(True, _REQUEST)
    replies, replied = lane.count(False, _REPLY)
    errors, failed = lane.count(False, _ERROR)
    return [requests, replies, errors, bytes_in, replied + failed]


def _find_class(label: str) -> type | None:
    module, _, qual = label.rpartition(".")
    while module:
        mod = sys.modules.get(module)
        if mod is not None:
            obj: Any = mod
            for part in qual.split("."):
                obj = getattr(obj, part, None)
                if obj is None:
                    break
            if isinstance(obj, type):
                return obj
        module, _, head = module.rpartition(".")
        qual = f"{head}.{qual}"
    return None
