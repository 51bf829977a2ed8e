#!/usr/bin/env python3
"""Small-call round trip through pyisolate beside its floor (issue 5).

In one run, taking turns in chunks (A B A B ...), it times one call at a
time of:

- ``pyisolate``: ``await ext.echo(1)`` from the host to one extension (an
  ``async def echo(self, x): return x``, no dependencies; its venv root in a
  temporary directory): host -> broker -> extension -> broker -> host;
- ``asyncio-socketpair``: the floor, a minimal asyncio echo between two
  Python processes over ``socketpair(AF_UNIX, SOCK_STREAM)``. The host's
  protocol sends a length-prefixed msgpack ``[id, 1]`` and resolves a
  future when the echo is back (and unpacked); the child (this script with
  ``--echo-child FD``) is an asyncio protocol that writes back whatever it
  reads.

Each chunk starts with a few untimed calls; after a warm-up of both, the
samples of all rounds are merged (by default 20 rounds of 500 calls: 10 000
calls each). Prints p50/p99/min/mean of both and the ratio of the p50s and
p99s; the goal, reported and not asserted, is a p50 ratio of at most 2.0.

    python perf/call_bench.py [--rounds N] [--chunk N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXT_SOURCE = '''
from pyisolate import ExtensionBase


class Bench(ExtensionBase):
    async def echo(self, x):
        return x
'''

GOAL_RATIO = 2.0
_LEN = struct.Struct("<I")


# -- the floor: asyncio echo over a socketpair -----------------------------------
class _EchoChild(asyncio.Protocol):
    """The child's side: write back every byte read."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _echo_child_main(fd: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    done: asyncio.Future[None] = loop.create_future()
    await loop.connect_accepted_socket(lambda: _EchoChild(done), sock)
    await done


class _EchoClient(asyncio.Protocol):
    """The host's side: length-prefixed msgpack frames, one future per id."""

    def __init__(self) -> None:
        import msgpack
        self._unpackb = msgpack.unpackb
        self._packb = msgpack.packb
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.pending: dict[int, asyncio.Future[object]] = {}
        self.next_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 4:
            (n,) = _LEN.unpack_from(buf)
            if len(buf) < 4 + n:
                break
            rid, value = self._unpackb(bytes(buf[4:4 + n]))
            del buf[:4 + n]
            fut = self.pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(value)

    async def echo(self, value: object) -> object:
        self.next_id += 1
        rid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        payload = self._packb([rid, value])
        assert self.transport is not None
        self.transport.write(_LEN.pack(len(payload)) + payload)
        return await fut


# -- measuring ----------------------------------------------------------------------
def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _stats(xs: list[float]) -> dict[str, float]:
    return {"n": len(xs), "p50_us": statistics.median(xs) * 1e6,
            "p99_us": _pct(xs, 0.99) * 1e6, "min_us": min(xs) * 1e6,
            "mean_us": statistics.fmean(xs) * 1e6}


async def _chunk(fn, n: int, warm: int, out: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(warm):
        if await fn(1) != 1:
            raise RuntimeError("wrong echo")
    for _ in range(n):
        t0 = clock()
        r = await fn(1)
        t1 = clock()
        if r != 1:
            raise RuntimeError("wrong echo")
        out.append(t1 - t0)


async def run(args: argparse.Namespace) -> dict:
    import pyisolate

    loop = asyncio.get_running_loop()
    # The floor's child process.
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--echo-child", str(child_sock.fileno())],
        pass_fds=(child_sock.fileno(),))
    child_sock.close()
    parent_sock.setblocking(False)
    _, client = await loop.connect_accepted_socket(_EchoClient, parent_sock)

    work = Path(tempfile.mkdtemp(prefix="pyi-call-bench-"))
    (work / "call_bench_ext").mkdir()
    (work / "call_bench_ext" / "__init__.py").write_text(EXT_SOURCE)
    cfg = pyisolate.ExtensionManagerConfig(venv_root_path=work / "venvs")
    samples: dict[str, list[float]] = {"pyisolate": [], "asyncio-socketpair": []}
    try:
        async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
            ext = await mgr.load_extension(pyisolate.ExtensionConfig(
                name="call_bench", module_path=str(work / "call_bench_ext"),
                dependencies=[]))
            systems = {"pyisolate": ext.echo, "asyncio-socketpair": client.echo}
            for fn in systems.values():  # warm-up, untimed
                await _chunk(fn, 0, args.warmup, [])
            for _ in range(args.rounds):
                for name, fn in systems.items():
                    await _chunk(fn, args.chunk, 5, samples[name])
    finally:
        if client.transport is not None:
            client.transport.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    a, b = _stats(samples["pyisolate"]), _stats(samples["asyncio-socketpair"])
    return {
        "pyisolate": a, "asyncio-socketpair": b,
        "ratio_p50": a["p50_us"] / b["p50_us"], "ratio_p99": a["p99_us"] / b["p99_us"],
        "goal_ratio_p50": GOAL_RATIO, "pass": a["p50_us"] / b["p50_us"] <= GOAL_RATIO,
        "rounds": args.rounds, "chunk": args.chunk,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20, help="A B rounds (default 20)")
    ap.add_argument("--chunk", type=int, default=500, help="timed calls per chunk (default 500)")
    ap.add_argument("--warmup", type=int, default=1000, help="untimed calls first (default 1000)")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--echo-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_child is not None:
        asyncio.run(_echo_child_main(args.echo_child))
        return 0
    res = asyncio.run(run(args))
    print(f"{'system':<20} {'calls':>6} {'p50 us':>8} {'p99 us':>8} {'min us':>8} {'mean us':>8}")
    for name in ("pyisolate", "asyncio-socketpair"):
        s = res[name]
        print(f"{name:<20} {s['n']:>6} {s['p50_us']:>8.1f} {s['p99_us']:>8.1f} "
              f"{s['min_us']:>8.1f} {s['mean_us']:>8.1f}")
    verdict = "PASS" if res["pass"] else "MISS"
    print(f"ratio pyisolate / asyncio-socketpair: p50 {res['ratio_p50']:.2f}x, "
          f"p99 {res['ratio_p99']:.2f}x  ({verdict}: goal p50 <= {GOAL_RATIO:.1f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
