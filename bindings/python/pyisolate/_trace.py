"""Call tracing across processes (``manager.trace(path)``).

While a trace records, each process that takes part (the host and every
extension process) keeps its own spans here, in a bounded buffer:

- a *call* span for every method call its node sends (``Node.call``, op
  "call"), from the send to the answer. The call carries its span's id to
  the callee as the keyword argument ``KEY``, which the callee's node
  removes before anything else sees the arguments (the hook in
  ``Node._serve_one``);
- a *serve* span for every call it serves that carries such an id: the
  run of the method (in the loop, or in a worker thread for a plain
  method of an extension). Its parent is the caller's span; the method's
  context holds its id, so the calls it makes (also from a worker thread:
  the context travels) are its children.

Times are CLOCK_MONOTONIC (``time.monotonic_ns``), one clock for all the
processes of one machine; a remote extension's are moved by the offset
measured when its spans are collected. At the end the host collects every
extension's spans (the "trace" operation) and writes one Chrome
trace-event JSON file (Perfetto, chrome://tracing): a complete event ("X")
per span, laid out in nested lanes per process, and a flow arrow from each
call to the serve span it caused.
"""

from __future__ import annotations

import contextvars
import inspect
import itertools
import json
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

KEY = "__pyisolate_trace__"  # the keyword argument a traced call's span id rides in
MAX_SPANS = 200_000  # spans one process keeps per trace; later ones are counted, not kept

# A span: [id, parent id, kind ("call" | "serve"), service, method, start ns,
# end ns, the broker's request id (a serve span's; 0 for a call)]
Span = list[Any]
# A broker hop: [kind (1 request, 2 answer), broker's request id, caller's
# request id, received ns, forwarded ns, service] (pyi_hop_t)
Hop = list[Any]
BROKER_LANE = 1000  # the broker thread's lane in the host's process

_current: contextvars.ContextVar[str] = contextvars.ContextVar("pyisolate_span", default="")


class Recorder:
    """This process's spans while a trace records (one per process)."""

    def __init__(self) -> None:
        self.on = False
        self.spans: list[Span] = []
        self.dropped = 0
        self._ids = itertools.count(1)
        self._prefix = ""
        self._lock = threading.Lock()  # spans end on the loop; ids come from threads too

    def start(self) -> None:
        self.spans = []
        self.dropped = 0
        self._prefix = f"{os.getpid()}."
        self.on = True

    def stop(self) -> tuple[list[Span], int]:
        """Stop recording; the spans recorded and how many were dropped."""
        self.on = False
        spans, self.spans = self.spans, []
        return spans, self.dropped

    def new_id(self) -> str:
        with self._lock:
            return f"{self._prefix}{next(self._ids)}"

    def add(self, span: Span) -> None:
        if not self.on:
            return
        if len(self.spans) < MAX_SPANS:
            self.spans.append(span)
        else:
            self.dropped += 1


recorder = Recorder()

CallFn = Callable[..., Awaitable[Any]]


def install(node: Any) -> None:
    """Start recording in this process, and trace the calls ``node`` sends
    (its ``call`` is wrapped on the instance until ``uninstall``)."""
    recorder.start()
    if "call" in vars(node):
        return
    send: CallFn = node.call

    async def call(
        service: str,
        target: str,
        method: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        op: str = "call",
        timeout: float | None = None,
    ) -> Any:
        if op != "call" or not recorder.on:
            return await send(service, target, method, args, kwargs, op=op, timeout=timeout)
        sid = recorder.new_id()
        span: Span = [sid, _current.get(), "call", service, method, time.monotonic_ns(), 0, 0]
        try:
            return await send(
                service, target, method, args, {**kwargs, KEY: sid}, op=op, timeout=timeout
            )
        finally:
            span[6] = time.monotonic_ns()
            recorder.add(span)

    node.call = call


def uninstall(node: Any) -> tuple[list[Span], int]:
    """Stop recording; this process's spans and the count dropped."""
    vars(node).pop("call", None)
    return recorder.stop()


def serving(
    fn: Callable[..., Any], service: str, method: str, parent: Any, rid: int
) -> Callable[..., Any]:
    """The hook of a served call (the broker's request id ``rid``; 0 for
    a call that came on a lane, which no broker hop matches) that
    carried a span id (``parent``): ``fn``
    wrapped to record a serve span while it runs, as the parent of the
    calls it makes. An async ``fn`` stays async, a plain one plain (it runs
    where it would have: the span is its run in the worker thread)."""
    if not recorder.on or not isinstance(parent, str):
        return fn

    def begin() -> Span:
        span: Span = [
            recorder.new_id(),
            parent,
            "serve",
            service,
            method,
            time.monotonic_ns(),
            0,
            rid,
        ]
        _current.set(span[0])  # in the serving task's (or the worker thread's) context
        return span

    def end(span: Span) -> None:
        span[6] = time.monotonic_ns()
        recorder.add(span)

    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            span = begin()
            try:
                return await fn(*args, **kwargs)
            finally:
                end(span)

        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        span = begin()
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            end(span)
            raise
        if inspect.isawaitable(result):  # a plain function that returns an awaitable

            async def finish() -> Any:
                try:
                    return await result
                finally:
                    end(span)

            return finish()
        end(span)
        return result

    return run


# -- the host: one file from every process's spans ---------------------------------


class Part:
    """One process's spans, as collected."""

    def __init__(self, pid: int, label: str, spans: Iterable[Span], offset_ns: int = 0) -> None:
        self.pid = pid
        self.label = label  # the process's name in the trace
        self.spans = [list(s) for s in spans]
        for s in self.spans:  # onto the host's clock
            s[5] += offset_ns
            s[6] += offset_ns


def _lanes(spans: list[Span]) -> dict[str, int]:
    """A lane (a "thread" in the trace) per span of one process, such that
    the spans of one lane nest: spans run concurrently in one asyncio loop,
    which one thread's track cannot show. A span goes into its parent's
    lane when it fits there."""
    lanes: list[list[Span]] = []  # per lane: the stack of open spans
    where: dict[str, int] = {}
    for span in sorted(spans, key=lambda s: (s[5], -s[6])):
        order = list(range(len(lanes)))
        home = where.get(span[1])
        if home is not None:
            order.remove(home)
            order.insert(0, home)
        for i in order:
            stack = lanes[i]
            while stack and stack[-1][6] <= span[5]:
                stack.pop()
            if not stack or stack[-1][6] >= span[6]:
                stack.append(span)
                where[span[0]] = i
                break
        else:
            lanes.append([span])
            where[span[0]] = len(lanes) - 1
    return where


def chrome_trace(
    parts: Sequence[Part], dropped: int = 0, hops: Sequence[Hop] = (), broker_pid: int = 0
) -> dict[str, Any]:
    """The Chrome trace-event JSON object of these processes' spans and
    the broker thread's hops (a lane of its own in process broker_pid)."""
    events: list[dict[str, Any]] = []
    placed: dict[str, tuple[int, int, Span]] = {}  # span id -> pid, lane, span
    starts = [s[5] for p in parts for s in p.spans] + [h[3] for h in hops]
    t0 = min(starts, default=0)
    for part in parts:
        events.append(
            {"ph": "M", "name": "process_name", "pid": part.pid, "args": {"name": part.label}}
        )
        lanes = _lanes(part.spans)
        for lane in sorted(set(lanes.values())):
            events.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": part.pid,
                    "tid": lane + 1,
                    "args": {"name": f"calls {lane + 1}"},
                }
            )
        for s in part.spans:
            tid = lanes[s[0]] + 1
            placed[s[0]] = (part.pid, tid, s)
            events.append(
                {
                    "ph": "X",
                    "name": f"{s[3]}.{s[4]}" if s[4] else s[3],
                    "cat": s[2],
                    "pid": part.pid,
                    "tid": tid,
                    "ts": (s[5] - t0) / 1000.0,
                    "dur": max(s[6] - s[5], 0) / 1000.0,
                    "args": {
                        "span": s[0],
                        "parent": s[1],
                        "service": s[3],
                        "method": s[4],
                        "rid": s[7],
                    },
                }
            )
    by_request: dict[tuple[int, str, int], Hop] = {}  # (kind, service, rid) -> hop
    if hops:
        events.append(
            {
                "ph": "M",
                "name": "thread_name",
                "pid": broker_pid,
                "tid": BROKER_LANE,
                "args": {"name": "broker thread"},
            }
        )
    for h in hops:
        by_request[(h[0], h[5], h[1])] = h
        events.append(
            {
                "ph": "X",
                "name": f"{'request' if h[0] == 1 else 'answer'} {h[5]}",
                "cat": "broker",
                "pid": broker_pid,
                "tid": BROKER_LANE,
                "ts": (h[3] - t0) / 1000.0,
                "dur": max(h[4] - h[3], 0) / 1000.0,
                "args": {"rid": h[1], "caller_id": h[2], "service": h[5]},
            }
        )
    flow = 0

    def arrow(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
        """A flow arrow from (pid, lane, ns) to (pid, lane, ns), each
        inside the slice it binds to."""
        nonlocal flow
        flow += 1
        common = {"name": "call", "cat": "flow", "id": flow}
        events.append({**common, "ph": "s", "pid": a[0], "tid": a[1], "ts": (a[2] - t0) / 1e3})
        events.append(
            {**common, "ph": "f", "bp": "e", "pid": b[0], "tid": b[1], "ts": (b[2] - t0) / 1e3}
        )

    broker = (broker_pid, BROKER_LANE)
    for pid, tid, s in placed.values():
        up = placed.get(s[1])
        if up is None or up[0] == pid:
            continue
        ppid, ptid, ps = up
        inside = min(max(s[5], ps[5]), ps[6])  # inside the caller's span
        req = by_request.get((1, s[3], s[7]))
        ans = by_request.get((2, s[3], s[7]))
        if req is None:
            arrow((ppid, ptid, inside), (pid, tid, s[5]))
            continue
        # Through the broker: the caller's span, the request's hop, the
        # served span; the answer's hop back to the caller.
        arrow((ppid, ptid, min(max(req[3], ps[5]), ps[6])), (*broker, req[3]))
        arrow((*broker, req[4]), (pid, tid, s[5]))
        if ans is not None:
            arrow((pid, tid, s[6]), (*broker, ans[3]))
            arrow((*broker, ans[4]), (ppid, ptid, min(ans[4], ps[6])))
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"clock": "CLOCK_MONOTONIC", "dropped_spans": dropped},
    }


def write(
    path: str | os.PathLike[str],
    parts: Sequence[Part],
    dropped: int = 0,
    hops: Sequence[Hop] = (),
    broker_pid: int = 0,
) -> None:
    data = chrome_trace(parts, dropped, hops, broker_pid)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)
