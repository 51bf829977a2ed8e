"""``pyisolate bench``: the quick benchmark, from the installed package.

The "small calls" rows of the full suite (perf/suite.py, which also runs
the peer and the C floors from a source checkout): one call with a value
(an int, a short str, a 10 KB str, a 1 MB str) to an extension that
returns it, against the Python floor, a minimal asyncio echo of the
pickled value over a Unix socket pair to a second process. Both run in
this one process's event loop, taking turns in alternating order (A B,
B A, ...), ``calls`` timed calls per turn after a warm-up; each row
reports both sides' median, p99, min and max, and the ratios ours/floor
of the medians and of the p99s (below 1: ours is faster). Only ratios
from one run mean something on a shared machine.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import platform
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

VALUES: list[tuple[str, Any]] = [
    ("int", 12345),
    ("short str", "hello pyisolate"),
    ("10 KB str", "x" * 10_000),
    ("1 MB str", "y" * 1_000_000),
]
WARM_UP = 20  # untimed calls per system and row

_EXTENSION = """
from pyisolate import ExtensionBase


class Echo(ExtensionBase):
    async def echo(self, value):
        return value
"""

# The floor's second process: echo each frame (id, length, pickle) back.
_ECHO_SERVER = """
import asyncio, socket, sys

async def serve(fd):
    r, w = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    try:
        while True:
            head = await r.readexactly(16)
            body = await r.readexactly(int.from_bytes(head[8:], "little"))
            w.write(head + body)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass

asyncio.run(serve(int(sys.argv[1])))
"""
_HEAD = struct.Struct("<QQ")


class AsyncioFloor:
    """A minimal asyncio echo client over a socket pair to a second process."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.next_id = 0

    async def start(self) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _ECHO_SERVER, str(b.fileno()), pass_fds=[b.fileno()]
        )
        b.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=a)

    async def echo(self, value: Any) -> Any:
        assert self.writer is not None
        self.next_id += 1
        body = pickle.dumps(value, protocol=5)
        self.writer.write(_HEAD.pack(self.next_id, len(body)) + body)
        head = await self.reader.readexactly(_HEAD.size)
        cid, n = _HEAD.unpack(head)
        out = pickle.loads(await self.reader.readexactly(n))
        if cid != self.next_id:
            raise RuntimeError("the echo server answered out of order")
        return out

    async def close(self) -> None:
        """End the echo process (closing the socket ends it); safe if never started."""
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
        if self.proc is not None:
            await asyncio.wait_for(self.proc.wait(), 10)


def _summary(samples_ns: list[int]) -> dict[str, float]:
    us = sorted(s / 1000.0 for s in samples_ns)
    return {
        "n": len(us),
        "p50_us": statistics.median(us),
        "p99_us": us[min(len(us) - 1, int(len(us) * 0.99))],
        "min_us": us[0],
        "max_us": us[-1],
    }


async def _turn(echo: Any, value: Any, calls: int, out: list[int]) -> None:
    clock = time.perf_counter_ns
    for _ in range(calls):
        t0 = clock()
        await echo(value)
        out.append(clock() - t0)


async def run(calls: int, rounds: int, root: Path) -> dict[str, Any]:
    """Measure every row; the report (also what ``--json`` prints)."""
    from ._base import ExtensionBase
    from ._manager import ExtensionManager
    from .config import ExtensionConfig, ExtensionManagerConfig

    rows = []
    with tempfile.TemporaryDirectory(prefix="pyisolate-bench-") as tmp:
        folder = Path(tmp) / "bench_echo"
        folder.mkdir()
        (folder / "__init__.py").write_text(_EXTENSION)
        manager = ExtensionManager(ExtensionBase, ExtensionManagerConfig(venv_root_path=str(root)))
        floor = AsyncioFloor()
        try:
            ext = await manager.load_extension(
                ExtensionConfig(name="bench_echo", module_path=str(folder))
            )
            await floor.start()
            systems: dict[str, Callable[[Any], Awaitable[Any]]] = {
                "ours": ext.echo,
                "asyncio": floor.echo,
            }
            for label, value in VALUES:
                samples: dict[str, list[int]] = {name: [] for name in systems}
                for name, echo in systems.items():
                    if await echo(value) != value:  # what crossed came back whole
                        raise RuntimeError(f"{name} returned another value for {label}")
                    for _ in range(WARM_UP):
                        await echo(value)
                order = list(systems)
                for r in range(rounds):
                    for name in order if r % 2 == 0 else order[::-1]:
                        await _turn(systems[name], value, calls, samples[name])
                ours, base = _summary(samples["ours"]), _summary(samples["asyncio"])
                rows.append(
                    {
                        "row": label,
                        "ours": ours,
                        "asyncio": base,
                        "ratio_p50": ours["p50_us"] / base["p50_us"],
                        "ratio_p99": ours["p99_us"] / base["p99_us"],
                    }
                )
        finally:
            await floor.close()
            await manager.stop_all()
    return {
        "workload": "small calls: ours against the asyncio floor",
        "calls_per_turn": calls,
        "rounds": rounds,
        "python": sys.version.split()[0],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows,
    }


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for r in report["rows"]:
        o, a = r["ours"], r["asyncio"]
        out.append(
            [
                r["row"],
                f"{o['p50_us']:.1f}",
                f"{a['p50_us']:.1f}",
                f"{r['ratio_p50']:.2f}x",
                f"{o['p99_us']:.1f}",
                f"{a['p99_us']:.1f}",
                f"{r['ratio_p99']:.2f}x",
                f"{o['min_us']:.0f}-{o['max_us']:.0f}",
                f"{a['min_us']:.0f}-{a['max_us']:.0f}",
            ]
        )
    return out


COLUMNS = [
    "small call",
    "ours p50 µs",
    "asyncio p50 µs",
    "ours/asyncio p50",
    "ours p99 µs",
    "asyncio p99 µs",
    "ours/asyncio p99",
    "ours min-max µs",
    "asyncio min-max µs",
]
