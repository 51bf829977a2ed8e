"""Events from the extension (ExtensionBase.emit_event, handled by
ext.register_event_handler) and call statistics (ext.stats(),
manager.stats())."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import pyisolate
from conftest import ext_config, manager, run


async def _until(pred: Any, what: str) -> None:
    """Wait for pred() (events arrive after the call that emitted them has
    returned: they are fire-and-forget); a generous bound, never a pass
    criterion of its own."""
    for _ in range(2000):
        if pred():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


@pytest.mark.parametrize("isolated", [True, False])
def test_events_reach_sync_and_async_handlers_in_order(venv_root, isolated) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("events", isolated=isolated))
            seen_sync: list[tuple[str, int]] = []
            seen_async: list[tuple[str, int]] = []

            def on_sync(p: dict[str, Any]) -> None:
                seen_sync.append((p["from"], p["i"]))

            async def on_async(p: dict[str, Any]) -> None:
                await asyncio.sleep(0)  # an awaiting handler still sees them in order
                seen_async.append((p["from"], p["i"]))

            ext.register_event_handler("progress", on_sync)
            ext.register_event_handler("progress", on_async)
            assert await ext.progress_async(50) == 50
            assert await ext.progress_sync(50) == 50
            expected = [("async", i) for i in range(50)] + [("sync", i) for i in range(50)]
            await _until(lambda: len(seen_async) == 100, "100 events")
            assert seen_sync == expected
            assert seen_async == expected
            # Events nobody handles are dropped; other names reach their handlers.
            other: list[Any] = []
            ext.register_event_handler("other", other.append)
            await ext.emit("unhandled", 1)
            await ext.emit("other", {"x": [1, 2]})
            await _until(lambda: other, "the other event")
            assert other == [{"x": [1, 2]}]

    run(main())


def test_failing_handler_is_logged_and_extension_goes_on(venv_root, caplog) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("events"))
            got: list[int] = []

            def bad(p: int) -> None:
                raise RuntimeError(f"handler broke on {p}")

            async def bad_async(p: int) -> None:
                raise KeyError(p)

            ext.register_event_handler("tick", bad)
            ext.register_event_handler("tick", bad_async)
            ext.register_event_handler("tick", got.append)
            for i in range(3):
                assert await ext.emit("tick", i) is True
            await _until(lambda: len(got) == 3, "3 ticks")
            assert got == [0, 1, 2]
            assert await ext.echo("still here") == "still here"
            assert ext.alive

    with caplog.at_level(logging.ERROR, logger="pyisolate"):
        run(main())
    broke = [r for r in caplog.records if "raised" in r.getMessage() and "tick" in r.getMessage()]
    assert len(broke) == 6, [r.getMessage() for r in caplog.records]
    assert any("handler broke on 2" in (r.exc_text or "") for r in broke)


def test_stats_count_calls_errors_timeouts(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("events"))
            before = ext.stats()
            assert before["calls"] == 0 and before["methods"] == {}
            for _ in range(20):
                assert await ext.echo(b"x" * 100) == b"x" * 100
            for _ in range(3):
                with pytest.raises(ValueError):
                    await ext.fail()
            with pytest.raises(pyisolate.CallTimeout):
                await ext.with_timeout(0.05).hang()
            # A call in flight is counted as such, and then as cancelled.
            task = asyncio.create_task(ext.hang())
            await _until(lambda: ext.stats()["in_flight"] == 1, "a call in flight")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            st = ext.stats()
            assert st["calls"] == 24
            assert st["errors"] == 4
            assert st["timeouts"] == 1
            assert st["cancelled"] == 1
            assert st["in_flight"] == 0
            echo = st["methods"]["echo"]
            assert echo["calls"] == 20 and echo["errors"] == 0
            assert 0 < echo["p50_ms"] <= echo["p99_ms"]
            assert st["methods"]["fail"] == {
                "calls": 3,
                "errors": 3,
                "timeouts": 0,
                "p50_ms": st["methods"]["fail"]["p50_ms"],
                "p99_ms": st["methods"]["fail"]["p99_ms"],
            }
            assert st["methods"]["hang"]["timeouts"] == 1
            assert st["bytes_in"] >= 20 * 100 and st["bytes_out"] >= 20 * 100
            assert st["pid"] == ext.pid
            assert st["rss_bytes"] > 0 and st["cpu_s"] >= 0 and st["shm_bytes"] >= 0
            assert st["state"] == "ready"
            all_stats = mgr.stats()
            assert list(all_stats) == ["events"]
            assert all_stats["events"]["calls"] == 24

    run(main())


def test_stats_in_process_have_no_process_figures(venv_root) -> None:
    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("events", isolated=False))
            assert await ext.echo(1) == 1
            st = ext.stats()
            assert st["pid"] is None and st["rss_bytes"] is None

    run(main())


def test_stats_and_events_go_on_across_a_reload(venv_root) -> None:
    """A reloaded process serves under a service of its own (ext.<key>@<n>):
    its calls still count with the extension's, and its events still reach
    the handlers registered on the handle."""
    seen: list[Any] = []

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("events_reloaded", "events"))
            ext.register_event_handler("tick", seen.append)
            first = ext.pid
            assert await ext.echo(1) == 1 and await ext.echo(2) == 2
            await ext.reload()
            assert ext.pid != first
            assert await ext.echo(3) == 3
            await ext.emit("tick", "after")
            for _ in range(400):
                if seen:
                    break
                await asyncio.sleep(0.05)
            stats = ext.stats()
            assert stats["calls"] == 4, stats  # 3 echo and 1 emit
            assert stats["methods"]["echo"]["calls"] == 3, stats
            assert stats["pid"] == ext.pid and stats["bytes_in"] > 0, stats
            assert seen == ["after"]

    run(main())
