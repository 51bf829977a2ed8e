#!/usr/bin/env python3
"""Calls in flight: pyisolate beside the asyncio floor, with each side's CPU
time (issue 12).

Loads one echo extension and starts the suite's asyncio floor (an asyncio
client and a second process echoing over a Unix socket pair, from
``peer_adapter.py``), then takes turns between them: each turn keeps
``--depth`` calls of ``await echo(1)`` in flight until ``--calls`` have
been answered. For each turn it prints the calls per second and the CPU
time per call of the caller (this process) and of the callee (the
extension's process, or the floor's echo process), all threads, from
``/proc``. Throughput of two processes on two CPUs is bounded by the
busier one, so the CPU columns say which side to make cheaper.

    .venv/bin/python perf/inflight_bench.py [--depth 64] [--calls 20000] [--rounds 4]

A tool to run by hand, like the rest of ``perf/``: it prints numbers and
the median ratio, and fails only when something does not work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_adapter import AsyncioFloor

EXT_SOURCE = """
from pyisolate import ExtensionBase


class Echo(ExtensionBase):
    async def echo(self, value):
        return value
"""

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system time of every thread of process pid."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def turn(echo: Callable[[int], Awaitable[int]], callee: int, depth: int, calls: int) -> dict:
    """calls echo(1) calls, depth at a time: calls/s and CPU us per call."""
    sent = 0

    async def one_lane() -> None:
        nonlocal sent
        while sent < calls:
            sent += 1
            if await echo(1) != 1:
                raise RuntimeError("a wrong echo")

    me, other, t0 = time.process_time(), cpu_seconds(callee), time.perf_counter()
    await asyncio.gather(*(one_lane() for _ in range(depth)))
    wall = time.perf_counter() - t0
    return {
        "calls_per_s": calls / wall,
        "caller_us": (time.process_time() - me) / calls * 1e6,
        "callee_us": (cpu_seconds(callee) - other) / calls * 1e6,
    }


async def main(args: argparse.Namespace) -> int:
    from pyisolate import ExtensionBase, ExtensionConfig, ExtensionManager, ExtensionManagerConfig

    with tempfile.TemporaryDirectory(prefix="pyisolate-inflight-") as tmp:
        folder = Path(tmp) / "inflight_echo"
        folder.mkdir()
        (folder / "__init__.py").write_text(EXT_SOURCE)
        venvs = Path(args.venvs or Path(tmp) / "venvs")
        config = ExtensionManagerConfig(venv_root_path=str(venvs))
        manager = ExtensionManager(ExtensionBase, config)
        floor = AsyncioFloor(Path(tmp))
        try:
            ext = await manager.load_extension(
                ExtensionConfig(name="inflight_echo", module_path=str(folder))
            )
            await floor.setup(False)
            systems = {"ours": (ext.echo, ext.pid), "asyncio": (floor.echo, floor.proc.pid)}
            for echo, pid in systems.values():  # warm both
                await turn(echo, pid, args.depth, max(args.calls // 10, 2 * args.depth))
            got: dict[str, list[dict]] = {name: [] for name in systems}
            print(f"{args.depth} in flight, {args.calls} calls a turn; CPU us per call")
            for r in range(args.rounds):
                order = list(systems) if r % 2 == 0 else list(systems)[::-1]
                for name in order:
                    echo, pid = systems[name]
                    res = await turn(echo, pid, args.depth, args.calls)
                    got[name].append(res)
                    print(
                        f"  {name:8s} {res['calls_per_s']:9,.0f} calls/s   caller "
                        f"{res['caller_us']:5.1f}   callee {res['callee_us']:5.1f}"
                    )
            med = {n: statistics.median(x["calls_per_s"] for x in v) for n, v in got.items()}
            print(
                f"median: ours {med['ours']:,.0f}, asyncio {med['asyncio']:,.0f} calls/s; "
                f"ours/asyncio {med['ours'] / med['asyncio']:.2f}x"
            )
        finally:
            if getattr(floor, "proc", None) is not None:
                await floor.close()
            await manager.stop_all()
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=64, help="calls in flight (default 64)")
    ap.add_argument("--calls", type=int, default=20000, help="calls a turn (default 20000)")
    ap.add_argument("--rounds", type=int, default=4, help="turns per system (default 4)")
    ap.add_argument("--venvs", help="the extension's venv root (default: a temporary folder)")
    raise SystemExit(asyncio.run(main(ap.parse_args())))
