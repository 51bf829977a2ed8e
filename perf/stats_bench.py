#!/usr/bin/env python3
"""The cost of call statistics (ext.stats()) on a small call.

One extension (``async def echo(self, x): return x``), one call at a time
of ``await ext.echo(1)``, in chunks taking turns (A B B A ...): ``on``
counts the calls as pyisolate always does, ``off`` has the extension's
counters removed from the host's node for the chunk (the call then takes
the path it took before statistics existed, but for one dict lookup).
Prints p50/p99/mean of both, the difference of the p50s, and the CPU
time of the counting alone (a tight loop of what a call adds).

    python perf/stats_bench.py [--rounds N] [--chunk N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import pyisolate

EXT_SOURCE = """
from pyisolate import ExtensionBase


class Bench(ExtensionBase):
    async def echo(self, x):
        return x
"""


async def main(rounds: int, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mod = Path(tmp) / "bench_ext"
        mod.mkdir()
        (mod / "__init__.py").write_text(EXT_SOURCE)
        cfg = pyisolate.ExtensionManagerConfig(venv_root_path=str(Path(tmp) / "venvs"))
        async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(name="bench", module_path=str(mod))
            )
            node = ext._host.node
            service = ext._service
            counters = node.call_stats[service]
            samples: dict[str, list[int]] = {"on": [], "off": []}
            for r in range(rounds + 2):  # two warm-up rounds
                for mode in ("on", "off") if r % 2 else ("off", "on"):  # A B B A
                    if mode == "off":
                        node.call_stats.pop(service, None)
                    else:
                        node.call_stats[service] = counters
                    for _ in range(20):
                        await ext.echo(1)
                    for _ in range(chunk):
                        t0 = time.perf_counter_ns()
                        await ext.echo(1)
                        dt = time.perf_counter_ns() - t0
                        if r >= 2:
                            samples[mode].append(dt)
            node.call_stats[service] = counters
            t0 = time.perf_counter_ns()
            for _ in range(1000):
                ext.stats()
            snap_us = (time.perf_counter_ns() - t0) / 1000 / 1000
    for mode, xs in samples.items():
        xs.sort()
        print(
            f"{mode:>4}: n={len(xs)} p50={xs[len(xs) // 2] / 1000:.1f} us "
            f"p99={xs[int(len(xs) * 0.99)] / 1000:.1f} us "
            f"mean={statistics.fmean(xs) / 1000:.1f} us"
        )
    from pyisolate._stats import CallStats

    table, now = {"ext.a": CallStats()}, time.perf_counter_ns

    def counted() -> None:
        s = table.get("ext.a")
        assert s is not None
        s.in_flight += 1
        t = now()
        s.end("echo", now() - t, False, False)

    def looked_up() -> None:
        table.get("ext.b")

    n = 200_000
    cost = (
        min(timeit.repeat(counted, number=n, repeat=5))
        - min(timeit.repeat(looked_up, number=n, repeat=5))
    ) / n
    print(f"counting alone: {cost * 1e9:.0f} ns a call")
    on, off = sorted(samples["on"]), sorted(samples["off"])
    d = (on[len(on) // 2] - off[len(off) // 2]) / 1000
    print(f"p50 on - off: {d:+.2f} us ({d * 1000 / off[len(off) // 2] * 100:+.1f}%)")
    print(f"ext.stats() itself: {snap_us:.1f} us (1 method, 1024 samples)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=500)
    a = ap.parse_args()
    asyncio.run(main(a.rounds, a.chunk))
