"""manager.trace(path): every call across the host and the extension
processes in one Chrome trace-event JSON file, nested calls under their
callers, an arrow from each call to where it ran."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

import pyisolate
from conftest import ext_config, manager, run
from shared_apis import Relay


def _spans(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        e["args"]["span"]: e
        for e in data["traceEvents"]
        if e["ph"] == "X" and e["cat"] != "broker"
    }


def _inside(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    # Microseconds with three decimals: compare at 1 ns resolution.
    return round(outer["ts"] * 1000) <= round(inner["ts"] * 1000) and round(
        (inner["ts"] + inner["dur"]) * 1000
    ) <= round((outer["ts"] + outer["dur"]) * 1000)


@pytest.mark.parametrize("transport", ["lane", "broker"])
def test_nested_call_across_processes(venv_root: Path, tmp_path: Path, transport: str) -> None:
    path = tmp_path / "calls.json"

    async def main() -> int:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config(
                    "traced",
                    "basic",
                    apis=[Relay],
                    env={"EXT_NAME": "traced"},
                    transport=transport,
                )
            )
            Relay().handles["traced"] = ext
            await ext.ping_pong(2)  # not traced: before the block
            async with mgr.trace(path):
                # host -> ext.ping_pong -> host Relay.bounce -> ext.ping_pong
                assert await ext.ping_pong(2) == ["traced", "host", "traced"]
                with pytest.raises(pyisolate.PyisolateError, match="one at a time"):
                    async with mgr.trace(tmp_path / "second.json"):
                        pass
            await ext.echo(1)  # not traced: after it
            assert ext.pid is not None
            return ext.pid

    ext_pid = run(main())
    data = json.loads(path.read_text())
    spans = _spans(data)
    names = {
        e["pid"]: e["args"]["name"]
        for e in data["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    }
    assert names == {os.getpid(): "host", ext_pid: "ext traced"}
    # Only the traced call's chain: 2 calls and 2 serves of ping_pong, 1 and 1 of bounce.
    chain = sorted((e["pid"], e["cat"], e["args"]["method"]) for e in spans.values())
    host, ext = os.getpid(), ext_pid
    assert chain == sorted(
        [
            (host, "call", "ping_pong"),
            (ext, "serve", "ping_pong"),
            (ext, "call", "bounce"),
            (host, "serve", "bounce"),
            (host, "call", "ping_pong"),
            (ext, "serve", "ping_pong"),
        ]
    )
    # Walk the parents from the innermost serve up to the root.
    leaf = [
        e
        for e in spans.values()
        if e["cat"] == "serve"
        and e["args"]["method"] == "ping_pong"
        and not any(c["args"]["parent"] == e["args"]["span"] for c in spans.values())
    ]
    assert len(leaf) == 1
    path_up = [leaf[0]]
    while path_up[-1]["args"]["parent"]:
        path_up.append(spans[path_up[-1]["args"]["parent"]])
    assert [(e["pid"], e["cat"], e["args"]["method"]) for e in path_up] == [
        (ext, "serve", "ping_pong"),
        (host, "call", "ping_pong"),
        (host, "serve", "bounce"),
        (ext, "call", "bounce"),
        (ext, "serve", "ping_pong"),
        (host, "call", "ping_pong"),
    ]
    for inner, outer in itertools.pairwise(path_up):
        assert _inside(inner, outer), (inner, outer)
        if inner["pid"] == outer["pid"]:  # nested in one lane of its process
            assert inner["tid"] == outer["tid"]
    assert path_up[-1]["args"]["service"] == "ext.traced"
    assert path_up[2]["args"]["service"] == "api.shared_apis.Relay"
    hops = {
        (e["name"].split()[0], e["args"]["service"], e["args"]["rid"]): e
        for e in data["traceEvents"]
        if e["ph"] == "X" and e["cat"] == "broker"
    }
    crossed = [(i, o) for i, o in itertools.pairwise(path_up) if i["pid"] != o["pid"]]
    assert len(crossed) == 3
    arrows = set()
    starts = {e["id"]: e for e in data["traceEvents"] if e["ph"] == "s"}
    for e in data["traceEvents"]:
        if e["ph"] == "f":
            s = starts[e["id"]]
            arrows.add(((s["pid"], s["tid"]), (e["pid"], e["tid"])))
    if transport == "lane":
        # No broker thread in the path: no hop, an arrow straight from each
        # call to where it ran, and no serve span claims a broker id.
        assert hops == {}
        for served, caller in crossed:
            assert served["args"]["rid"] == 0
            assert ((caller["pid"], caller["tid"]), (served["pid"], served["tid"])) in arrows
    else:
        # The broker thread's hops: each call that crossed went through it;
        # in the order causality gives (the broker received the request
        # after the call began and before the serve began, the answer after
        # the serve ended and before the call ended; a hop's end, its
        # send's return, may come after the receiver has it).
        assert {e["tid"] for e in hops.values()} == {1000}
        assert {e["pid"] for e in hops.values()} == {host}
        broker = (host, 1000)
        for served, caller in crossed:
            rid = served["args"]["rid"]
            request = hops[("request", served["args"]["service"], rid)]
            answer = hops[("answer", served["args"]["service"], rid)]
            assert caller["ts"] <= request["ts"] <= served["ts"]
            assert served["ts"] + served["dur"] <= answer["ts"] <= caller["ts"] + caller["dur"]
            # Arrows: caller -> broker -> served -> broker -> caller.
            for a, b in [(caller, None), (None, served), (served, None), (None, caller)]:
                src = broker if a is None else (a["pid"], a["tid"])
                dst = broker if b is None else (b["pid"], b["tid"])
                assert (src, dst) in arrows
    assert data["otherData"]["dropped_spans"] == 0


def test_a_process_started_during_the_trace_is_traced(venv_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "reloaded.json"

    async def main() -> tuple[int | None, int | None]:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("retraced", "basic"))
            first = ext.pid
            async with mgr.trace(path):
                await ext.reload()  # a new process, from its "ready" on
                assert await ext.echo("after") == "after"
                await ext.sync_echo("plain")  # a plain method: a worker thread's span
            return first, ext.pid

    first, second = run(main())
    assert first != second
    data = json.loads(path.read_text())
    names = {
        e["pid"]: e["args"]["name"]
        for e in data["traceEvents"]
        if e["ph"] == "M" and e["name"] == "process_name"
    }
    assert names == {os.getpid(): "host", second: "ext retraced"}
    served = sorted(e["args"]["method"] for e in _spans(data).values() if e["cat"] == "serve")
    assert served == ["echo", "sync_echo"]
    assert all(e["pid"] == second for e in _spans(data).values() if e["cat"] == "serve")


def test_a_remote_extension_is_traced(venv_root: Path, tmp_path: Path) -> None:
    """A remote extension (over tcp): its spans come back with the trace,
    on the host's clock (moved by the offset measured at collection)."""
    import subprocess
    import sys

    from conftest import EXTENSIONS, subprocess_env

    path = tmp_path / "remote.json"

    def start_remote(ticket: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "pyisolate.remote", ticket, str(EXTENSIONS / "basic")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=subprocess_env(),
        )

    async def main() -> int:
        async with manager(venv_root) as mgr:
            ext = mgr.load_extension(ext_config("far_traced", "basic", remote=True))
            assert ext.ticket
            proc = start_remote(ext.ticket)
            try:
                await asyncio.wait_for(ext.wait_ready(), 60)
                async with mgr.trace(path):
                    assert await ext.echo(5) == 5
                await ext.stop()
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(30)
            return proc.pid

    pid = run(main())
    data = json.loads(path.read_text())
    spans = _spans(data)
    by_kind = {e["cat"]: e for e in spans.values()}
    assert set(by_kind) == {"call", "serve"}
    call, serve = by_kind["call"], by_kind["serve"]
    assert call["pid"] == os.getpid() and serve["pid"] == pid
    assert serve["args"]["parent"] == call["args"]["span"]
    assert call["args"]["method"] == serve["args"]["method"] == "echo"
    # Its middle within the call's duration of the call's middle (the
    # offset's error is at most half a round trip); nothing tighter is
    # promised.
    middle = serve["ts"] + serve["dur"] / 2
    assert abs(middle - (call["ts"] + call["dur"] / 2)) <= call["dur"]
