#!/usr/bin/env python3
"""Large-argument round trip, one pyisolate build against another (issue 9).

Times ``await ext.echo(value)`` with a large ``bytes`` or ``str`` value
(default 1 MiB) from a host to one extension and back, for two
installations of pyisolate side by side: each ``--python NAME=PATH`` is a
Python with its own pyisolate, run as a server process (this script with
``--serve``) that loads the extension once and times chunks of calls on
request. The driver takes turns in A B B A order, chunk by chunk, so both
see the same machine; it prints p50/p99/min/max per side and the ratio of
each side to the first.

    python perf/payload_bench.py --python before=/tmp/base/.venv/bin/python \\
        --python after=.venv/bin/python [--size 1048576] [--rounds 20] [--chunk 25]

``--kinds`` picks the values: ``bytes``, ``str``, ``int`` (a small call),
``torch`` (a tensor of ``--size`` bytes, moved into shared memory by its
first, untimed crossing) and ``numpy`` (a ``pyisolate.share``d array): the
last two time a repeated tensor crossing (issue 12).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
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


def _value(kind: str, size: int) -> object:
    if kind == "bytes":
        return os.urandom(size)
    if kind == "str":
        return "x" * size
    if kind == "int":  # a small call, the baseline of a tensor crossing
        return 1
    if kind == "torch":  # moved into shared memory at its first (untimed) crossing
        import torch

        return torch.ones(size // 4)
    if kind == "numpy":
        import numpy as np

        import pyisolate

        return pyisolate.share(np.ones(size // 4, dtype=np.float32))
    raise ValueError(kind)


def _length(x: object) -> int:
    return len(x) if isinstance(x, (bytes, str)) else int(getattr(x, "nbytes", 0))


async def _serve() -> None:
    """One side: load the extension, then time chunks on request (stdin
    lines "KIND SIZE N", answers one JSON line of seconds per call)."""
    import pyisolate

    work = Path(tempfile.mkdtemp(prefix="pyi-payload-bench-"))
    (work / "payload_bench_ext").mkdir()
    (work / "payload_bench_ext" / "__init__.py").write_text(EXT_SOURCE)
    cfg = pyisolate.ExtensionManagerConfig(venv_root_path=work / "venvs")
    loop = asyncio.get_running_loop()
    values: dict[tuple[str, int], object] = {}
    async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
        ext = await mgr.load_extension(pyisolate.ExtensionConfig(
            name="payload_bench", module_path=str(work / "payload_bench_ext"),
            dependencies=[], share_torch=True))
        print(json.dumps({"ready": pyisolate.__file__}), flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                break
            kind, size, n = line.split()
            key = (kind, int(size))
            value = values.get(key)
            if value is None:
                value = values[key] = _value(kind, int(size))
            for _ in range(3):  # untimed
                if _length(await ext.echo(value)) != _length(value):
                    raise RuntimeError("wrong echo")
            out = []
            clock = time.perf_counter
            for _ in range(int(n)):
                t0 = clock()
                r = await ext.echo(value)
                out.append(clock() - t0)
                if _length(r) != _length(value):
                    raise RuntimeError("wrong echo")
                del r
            print(json.dumps(out), flush=True)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _drive(args: argparse.Namespace) -> int:
    sides: dict[str, subprocess.Popen[str]] = {}
    for spec in args.python:
        name, _, path = spec.partition("=")
        sides[name] = subprocess.Popen([path, os.path.abspath(__file__), "--serve"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, cwd=tempfile.gettempdir())
    names = list(sides)
    try:
        for name, proc in sides.items():
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            print(f"{name}: {ready['ready']}", flush=True)
        samples = {(k, n): [] for k in args.kinds for n in names}

        def chunk(kind: str, name: str, n: int) -> list[float]:
            proc = sides[name]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{kind} {args.size} {n}\n")
            proc.stdin.flush()
            return json.loads(proc.stdout.readline())

        for kind in args.kinds:
            for name in names:  # warm-up
                chunk(kind, name, args.chunk)
            for r in range(args.rounds):
                order = names if r % 2 == 0 else names[::-1]  # A B, B A, ...
                for name in order:
                    samples[(kind, name)].extend(chunk(kind, name, args.chunk))
    finally:
        for proc in sides.values():
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in sides.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"\n{args.size} bytes per value, {args.rounds} rounds of {args.chunk} calls per side, "
          f"A B B A order; times in microseconds per round trip")
    print(f"{'value':<6} {'side':<10} {'calls':>6} {'p50':>9} {'p99':>9} {'min':>9} {'max':>9} "
          f"{'p50 vs ' + names[0]:>12}")
    result = {}
    for kind in args.kinds:
        base = statistics.median(samples[(kind, names[0])])
        for name in names:
            xs = samples[(kind, name)]
            p50 = statistics.median(xs)
            row = {"n": len(xs), "p50_us": p50 * 1e6, "p99_us": _pct(xs, 0.99) * 1e6,
                   "min_us": min(xs) * 1e6, "max_us": max(xs) * 1e6, "ratio_p50": p50 / base}
            result[f"{kind}/{name}"] = row
            print(f"{kind:<6} {name:<10} {row['n']:>6} {row['p50_us']:>9.0f} "
                  f"{row['p99_us']:>9.0f} {row['min_us']:>9.0f} {row['max_us']:>9.0f} "
                  f"{row['ratio_p50']:>11.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", default=[],
                    help="NAME=PATH of a Python with pyisolate installed (two or more)")
    ap.add_argument("--size", type=int, default=1 << 20,
                    help="bytes per value (default 1 MiB; int: ignored)")
    ap.add_argument("--kinds", type=lambda s: s.split(","), default=["bytes", "str"],
                    help="value kinds, comma-separated: bytes, str, int, torch, numpy "
                    "(default bytes,str)")
    ap.add_argument("--rounds", type=int, default=20, help="turns per side (default 20)")
    ap.add_argument("--chunk", type=int, default=25, help="timed calls per turn (default 25)")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    if len(args.python) < 2:
        ap.error("give two or more --python NAME=PATH")
    return _drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
