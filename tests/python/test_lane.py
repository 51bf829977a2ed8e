"""The local lane (docs/protocol.md, section 10): which calls travel on it,
hostile bytes written into it by an extension, backpressure, a crash of
either side with calls in flight, strangers at the lane socket, the
transport switch. The rest of the suite runs over the lane by default and
again over the broker path (PYISOLATE_TRANSPORT=broker, see the Makefile)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import pytest

import pyisolate
from conftest import ext_config, manager, run
from pyisolate import _rpc
from shared_apis import Relay, Store


def _node(mgr):
    return mgr._host.node


def _broker_requests(mgr, service: str) -> int:
    """Requests the broker itself routed to service (lanes not counted)."""
    stats = mgr._host._broker.service_stats(service)
    return 0 if stats is None else stats["requests"]


def test_calls_both_ways_travel_on_the_lane(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("laned", "lanes", apis=[Store], transport="lane")
            )
            assert "ext.laned" in _node(mgr).lanes
            for i in range(5):
                assert await ext.size(b"x" * i) == i
            assert await ext.store_roundtrip("k", [1, 2]) == [1, 2]
            # Neither direction went through the broker ...
            assert _broker_requests(mgr, "ext.laned") == 0
            assert _broker_requests(mgr, "api.shared_apis.Store") == 0
            # ... and the service statistics still count them.
            stats = mgr.service_stats("api.shared_apis.Store")
            assert stats is not None and stats["requests"] == 2 and stats["replies"] == 2
            stats = mgr.service_stats("ext.laned")
            assert (stats["requests"], stats["replies"], stats["errors"]) == (6, 6, 0)
            assert stats["bytes_in"] >= 10 and stats["bytes_out"] > 0
            with pytest.raises(AttributeError):
                await ext.no_such_method()
            # A new process (service ext.laned@1), a new lane: what the old
            # lane counted stays.
            cached = ext.size  # a handle keeps its methods ...
            assert ext.size is cached
            await ext.reload()
            # ... and drops them on reload, with the launcher they hold.
            assert ext.size is not cached and ext.size._launcher is ext._launcher
            assert await ext.size(b"abc") == 3
            assert "ext.laned" not in _node(mgr).lanes
            old = _node(mgr).lane_stats("ext.laned")
            # (7 calls, then the reload's "stop", answered)
            assert (old["requests"], old["replies"], old["errors"]) == (8, 7, 1), old
            stats = mgr.service_stats("ext.laned@1")
            assert (stats["requests"], stats["replies"], stats["errors"]) == (1, 1, 0), stats

    run(main())


def test_start_serving_runs_a_request_up_to_its_first_suspension() -> None:
    """A request's task runs at once, in the reader's callback (no trip
    through the loop's queue), as the current task; one that suspends goes
    on as any task. Inside a running task it starts in the next pass."""
    loop = _rpc.new_loop() if _rpc.new_loop is not None else asyncio.new_event_loop()
    seen: dict[str, object] = {}

    async def answers():
        seen["answers"] = asyncio.current_task()
        return "now"

    async def waits(gate):
        seen["waits"] = asyncio.current_task()
        async with asyncio.timeout(30):
            return await gate

    async def in_a_task():
        task = _rpc.start_serving(loop, answers())
        return task, task.done(), await task

    try:
        gate = loop.create_future()
        done = loop.create_future()

        def reader_callback():  # what _drain_lane is
            quick = _rpc.start_serving(loop, answers())
            slow = _rpc.start_serving(loop, waits(gate))
            done.set_result((quick, quick.done(), seen.get("answers"), slow, slow.done()))

        loop.call_soon(reader_callback)
        quick, quick_done, quick_current, slow, slow_done = loop.run_until_complete(done)
        assert quick_done and quick.result() == "now" and quick_current is quick
        assert not slow_done and seen["waits"] is slow
        gate.set_result("later")
        assert loop.run_until_complete(slow) == "later"
        task, started, result = loop.run_until_complete(in_a_task())
        assert result == "now" and seen["answers"] is task
        if sys.version_info < (3, 12):
            assert not started  # no eager_start: queued behind the running task
        # An application's task factory makes the tasks, as create_task's.
        made = []

        def factory(loop, coro, **kw):
            made.append(coro)
            return asyncio.Task(coro, loop=loop, **kw)

        loop.set_task_factory(factory)
        done = loop.create_future()
        loop.call_soon(lambda: done.set_result(_rpc.start_serving(loop, answers())))
        task = loop.run_until_complete(done)
        assert len(made) == 1 and loop.run_until_complete(task) == "now"
    finally:
        loop.close()


def test_a_wake_up_of_the_lane_serves_a_bounded_number_of_requests(tmp_path) -> None:
    """Requests that arrive together are served LANE_PASS per pass of the
    loop: a callback the first one schedules runs before the rest (a burst
    cannot hold the loop)."""
    loop = _rpc.new_loop() if _rpc.new_loop is not None else asyncio.new_event_loop()
    order: list[object] = []

    class Echo:
        async def echo(self, value):
            if not order:
                asyncio.get_running_loop().call_soon(order.append, "callback")
            order.append(value)
            return value

    async def main() -> None:
        node = _rpc.Node(asyncio.get_running_loop(), f"ipc://{tmp_path}/none", "lane-test")
        echo = Echo()
        node.resolver = lambda target: echo if target == "" else None
        mine, theirs = socket.socketpair()
        end = _rpc.LaneEnd(node, mine.detach(), "the host", pyisolate._core.ERR_SHUTDOWN, None)
        peer = pyisolate._core.Lane(theirs.detach())
        try:
            total = 3 * _rpc.LANE_PASS
            for i in range(total):
                body = node.codec.dumps_call("call", "", "echo", (i,), {})
                peer.send(pyisolate._core.REQUEST, i + 1, body, (), b"svc", 0, 0, b"", False)
            assert peer.flush() == 0  # all of them in one write
            answered = 0
            while answered < total:
                await asyncio.sleep(0.01)
                while (msg := peer.recv()) is not None:
                    assert msg.command == pyisolate._core.REPLY
                    answered += 1
        finally:
            peer.close()
            end.close()
            node.close()
        assert [v for v in order if v != "callback"] == list(range(total))
        assert order.index("callback") <= _rpc.LANE_PASS

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_a_call_runs_in_a_task_and_context_of_its_own(venv_root) -> None:
    """Started at once or not, a call's code has what a task gives it from
    its first line: asyncio.current_task(), timeout(), TaskGroup, a copy of
    the context (what one call sets, the next does not see)."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("eager", "lanes", transport="lane"))
            a, b = await asyncio.gather(ext.as_a_task(0.2), ext.as_a_task(0.2))
            assert a[1:] == [True, "child", 0] and b[1:] == [True, "child", 0]
            assert a[0] != b[0]  # two tasks at once
            assert (await ext.as_a_task(0))[1:] == [True, "child", 0]

    run(main())


def test_broker_transport_keeps_the_broker_path(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("brokered", "lanes", apis=[Store], transport="broker")
            )
            assert "ext.brokered" not in _node(mgr).lanes
            assert await ext.size(b"abc") == 3
            assert await ext.store_roundtrip("k", 1) == 1
            assert _broker_requests(mgr, "ext.brokered") >= 2
            assert _broker_requests(mgr, "api.shared_apis.Store") == 2
            with pytest.raises(ValueError, match="transport must be"):
                await mgr.load_extension(ext_config("bad", "lanes", transport="pipe"))

    run(main())


def test_hostile_bytes_on_the_lane(venv_root, caplog) -> None:
    """An extension that writes garbage into its lane: the host reads a
    clear error, fails its calls as a crash, kills it and stays up."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            bad = await mgr.load_extension(ext_config("hostile", "lanes", transport="lane"))
            other = await mgr.load_extension(ext_config("bystander", "lanes", transport="lane"))
            pending = asyncio.ensure_future(bad.hang())
            await asyncio.sleep(0.1)
            # A record claiming 4 GiB, then a header of garbage.
            with pytest.raises(pyisolate.ExtensionCrashed) as info:
                await bad.write_garbage(b"\xff\xff\xff\xff" + b"\xc1" * 60)
            assert "broke" in str(info.value) and "longer than the lane's limit" in str(info.value)
            with pytest.raises(pyisolate.ExtensionCrashed):
                await asyncio.wait_for(pending, 10)
            assert "ext.hostile" not in _node(mgr).lanes
            assert await other.size(b"still here") == 10
            again = await mgr.load_extension(ext_config("hostile", "lanes", transport="lane"))
            assert await again.size(b"ok") == 2

    with caplog.at_level(logging.ERROR, logger="pyisolate"):
        run(main())
    assert any("longer than the lane's limit" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("record,count", [(1 << 20, 48), (4096, 6000)])
def test_lane_backpressure_bounds_the_queue(venv_root, record, count) -> None:
    """A peer that does not read: requests wait once LANE_HIGH_WATER bytes
    are queued; the queue never holds more than that plus one record, also
    when all the requests are made in one pass of the loop (small ones do
    not fill the socket first)."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("slow", "lanes", transport="lane"))
            end = _node(mgr).lanes["ext.slow"]
            blocked = asyncio.ensure_future(ext.block_loop(2.0))
            await asyncio.sleep(0.2)
            calls = [asyncio.ensure_future(ext.size(b"x" * record)) for _ in range(count)]
            most = 0
            while not all(c.done() for c in calls):
                most = max(most, end.lane.queued())
                await asyncio.sleep(0.005)
            assert await blocked == 2.0
            assert [c.result() for c in calls] == [record] * count
            # 48 or 24 MiB were sent: the queue filled up to the mark, never past it.
            assert _rpc.LANE_HIGH_WATER // 2 < most <= _rpc.LANE_HIGH_WATER + record + 4096
            assert end.lane.queued() == 0

    run(main())


def test_messages_of_one_pass_leave_a_few_at_a_time(venv_root) -> None:
    """The first LANE_BATCH messages of a pass of the loop leave at once (a
    few calls in flight are not split across passes); the others leave
    LANE_BATCH per write, not all at its end: the peer starts on the first
    while this side goes on."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("batch", "lanes", transport="lane"))
            end = _node(mgr).lanes["ext.batch"]
            assert await ext.getpid() > 0
            # CANCELs for ids the extension never saw: it drops them.
            sizes = []
            for i in range(4 * _rpc.LANE_BATCH):
                end.send(_rpc._CANCEL, (1 << 40) + i)
                sizes.append(end.lane.queued())
            first, rest = sizes[: _rpc.LANE_BATCH], sizes[_rpc.LANE_BATCH :]
            assert first == [0] * _rpc.LANE_BATCH, sizes  # each left at once
            one = rest[0]
            assert one > 0
            assert max(rest) < _rpc.LANE_BATCH * one, sizes
            await asyncio.sleep(0.05)  # the rest leaves at the end of the pass
            assert end.lane.queued() == 0
            assert await ext.getpid() > 0  # and the lane still works

    run(main())


def test_crash_fails_pending_lane_calls(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("crashy", "lanes", transport="lane"))
            end = _node(mgr).lanes["ext.crashy"]
            pid = await ext.getpid()
            calls = [asyncio.ensure_future(ext.hang()) for _ in range(5)]
            await asyncio.sleep(0.2)
            assert len(end.pending) == 5
            os.kill(pid, 9)
            for call in calls:
                with pytest.raises(pyisolate.ExtensionCrashed) as info:
                    await asyncio.wait_for(call, 10)
                assert info.value.exit_status == -9
            assert end.closed and not end.pending

    run(main())


def test_lane_socket_refuses_strangers(venv_root) -> None:
    """Only a process the host spawned (and expects) gets a lane."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("guarded", "lanes", transport="lane"))
            path = _node(mgr)._listener.path
            assert oct(os.stat(path).st_mode & 0o777) == "0o600"
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.setblocking(False)
                await loop.sock_connect(s, path)
                s.sendall(b"\x00" * 16)
                try:  # closed unread: an EOF or a reset
                    assert await asyncio.wait_for(loop.sock_recv(s, 16), 10) == b""
                except ConnectionResetError:
                    pass
            assert await ext.size(b"fine") == 4

    run(main())


def test_host_end_of_the_lane_going_fails_the_extensions_calls(venv_root, caplog) -> None:
    """What the extension sees when the host goes (its end of the lane
    closes, as when the host process dies): its calls in flight to the host
    fail at once, and it stops."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config("orphan", "lanes", apis=[Relay], transport="lane")
            )
            node = _node(mgr)
            end = node.lanes["ext.orphan"]
            await ext.wait_on_host()
            # In flight: ext -> host (Relay.apply) -> ext; the node's state has no event.
            while not end.pending:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            node._lane_ended(end)  # the host's end goes
            assert await asyncio.wait_for(ext._launcher.wait_exit(10), 11) == 0

    with caplog.at_level(logging.INFO, logger="pyisolate.extension"):
        run(main())
    outcomes = [r.getMessage() for r in caplog.records if "outcome:" in r.getMessage()]
    assert outcomes and "outcome: BrokerError: SHUTDOWN" in outcomes[0], outcomes
