#!/usr/bin/env python3
"""Round trip of a call that takes an array/tensor and returns it, through a
real extension process (docs/tensors.md, "Python: measured").

For numpy arrays and torch CPU tensors of 4 KiB, 1 MiB, 64 MiB and 1 GiB
(4 GiB too with --full), float32:

- first crossing: an ordinary array/tensor not yet in shared memory (numpy:
  copied at every crossing; torch: moved into a region at its first one),
  and for torch also one after torch's own ``share_memory_()``;
- repeated crossing: one already in shared memory (``pyisolate.share`` for
  numpy, a tensor after its first crossing for torch);

each beside a small call (``echo(1)``) of the same run, interleaved
(A B A B), with p50/p99 and the ratio of the p50s. Prints a table and writes
JSON. The goal, reported and not asserted: a repeated crossing of any size
within 2x of the small call.

With --cuda, the same table for torch CUDA tensors (device='cuda', CUDA IPC)
instead: first crossing of a fresh allocation (the allocator's cache emptied
before each, outside the timed call) and repeated crossing of one tensor;
each checks that the same memory comes back. Without torch or a GPU it
prints "skipped: <reason>" and exits 0.

    python perf/tensor_bench.py [--full] [--cuda] [--json out.json] [--venv-root DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import pyisolate

EXT_SOURCE = '''
from pyisolate import ExtensionBase


class Bench(ExtensionBase):
    async def echo(self, x):
        return x
'''

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _label(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n // size} {unit}"
    return f"{n} B"


async def _interleaved(ext, make_arg, reps: int, check=None) -> tuple[list[float], list[float]]:
    """Alternate a small call and a call with make_arg(i): (small, big) seconds."""
    small, big = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        await ext.echo(1)
        t1 = time.perf_counter()
        x = make_arg(i)
        t2 = time.perf_counter()
        y = await ext.echo(x)
        t3 = time.perf_counter()
        if check is not None and i == 0:
            check(x, y)
        del x, y
        small.append(t1 - t0)
        big.append(t3 - t2)
    return small, big


def _row(lib: str, size: int, case: str, small: list[float], big: list[float]) -> dict:
    s50, b50 = statistics.median(small), statistics.median(big)
    return {"lib": lib, "bytes": size, "size": _label(size), "case": case, "n": len(big),
            "p50_us": b50 * 1e6, "p99_us": _pct(big, 0.99) * 1e6,
            "small_p50_us": s50 * 1e6, "small_p99_us": _pct(small, 0.99) * 1e6,
            "ratio_p50": b50 / s50}


def _setup(args) -> tuple[list[int], Path, "pyisolate.ExtensionManagerConfig"]:
    """The sizes to measure, a folder holding the echo extension, and the
    manager's config."""
    sizes = [4 * KiB, 1 * MiB, 64 * MiB, 1 * GiB] + ([4 * GiB] if args.full else [])
    if args.max_size:
        sizes = [s for s in sizes if s <= args.max_size]
    work = Path(tempfile.mkdtemp(prefix="pyi-bench-"))
    (work / "bench_ext").mkdir()
    (work / "bench_ext" / "__init__.py").write_text(EXT_SOURCE)
    venv_root = Path(args.venv_root or work / "venvs")
    return sizes, work, pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)


async def run(args) -> list[dict]:
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811
        except ImportError:
            print("torch is not importable: numpy only", file=sys.stderr)
    sizes, work, cfg = _setup(args)
    rows: list[dict] = []
    async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
        ext = await mgr.load_extension(pyisolate.ExtensionConfig(
            name="tensor_bench", module_path=str(work / "bench_ext"),
            share_torch=torch is not None, dependencies=[] if torch is not None
            else ["numpy"]))
        for _ in range(200):  # warm up
            await ext.echo(1)
        for size in sizes:
            n = size // 4
            first_reps = 200 if size <= MiB else (10 if size <= 64 * MiB else 3)
            rep_reps = args.reps
            # numpy, first crossing: an ordinary array (copied every time)
            base = np.ones(n, dtype=np.float32)
            s, b = await _interleaved(ext, lambda i: base, first_reps)
            rows.append(_row("numpy", size, "first (ordinary array)", s, b))
            del base
            gc.collect()
            # numpy, repeated crossing: allocated shared
            shared = pyisolate.empty(n, "float32")
            shared[...] = 1

            def same(x, y):
                assert pyisolate.region_name(y) == pyisolate.region_name(x)

            s, b = await _interleaved(ext, lambda i: shared, rep_reps, same)
            rows.append(_row("numpy", size, "repeated (shared)", s, b))
            del shared
            gc.collect()
            if torch is not None:
                # a fresh tensor each time (made outside the timed call)
                s, b = await _interleaved(ext, lambda i: torch.ones(n), first_reps)
                rows.append(_row("torch", size, "first (ordinary tensor: moved)", s, b))
                gc.collect()
                if size <= 1 * GiB:
                    def torch_shared(i):
                        t = torch.ones(n)
                        t.share_memory_()
                        return t
                    t0 = time.perf_counter()
                    torch_shared(0)
                    share_cost = time.perf_counter() - t0
                    s, b = await _interleaved(ext, torch_shared,
                                              max(2, min(first_reps, 20)))
                    row = _row("torch", size, "first (after share_memory_())", s, b)
                    row["share_memory_us"] = share_cost * 1e6
                    rows.append(row)
                    gc.collect()
                t = torch.ones(n)
                await ext.echo(t)  # its first crossing moves it
                s, b = await _interleaved(ext, lambda i: t, rep_reps, same)
                rows.append(_row("torch", size, "repeated (moved)", s, b))
                del t
                gc.collect()
            print(f"done {_label(size)}", file=sys.stderr)
    return rows


def _cuda_unavailable() -> str:
    """Why CUDA tensors cannot be measured here ('' when they can)."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable ({exc})"
    if not torch.cuda.is_available():
        return (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"CUDA {torch.version.cuda})")
    return ""


async def run_cuda(args) -> list[dict]:
    """The table for torch CUDA tensors: first and repeated crossings."""
    import torch

    sizes, work, cfg = _setup(args)
    rows: list[dict] = []
    async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
        ext = await mgr.load_extension(pyisolate.ExtensionConfig(
            name="tensor_bench_cuda", module_path=str(work / "bench_ext"),
            share_torch=True, dependencies=[]))
        for _ in range(200):  # warm up
            await ext.echo(1)
        warm = torch.ones(1, device="cuda")
        await ext.echo(warm)  # the extension's CUDA context starts here, untimed
        del warm

        def same(x, y):
            assert y.is_cuda and y.data_ptr() == x.data_ptr(), "a copy came back"

        for size in sizes:
            n = size // 4
            first_reps = 200 if size <= MiB else (10 if size <= 64 * MiB else 3)

            def fresh(i):
                torch.cuda.empty_cache()  # a new allocation, never shared before
                t = torch.ones(n, device="cuda")
                torch.cuda.synchronize()
                return t

            s, b = await _interleaved(ext, fresh, first_reps, same)
            rows.append(_row("cuda", size, "first (fresh allocation)", s, b))
            gc.collect()
            t = torch.ones(n, device="cuda")
            await ext.echo(t)  # its first crossing
            s, b = await _interleaved(ext, lambda i: t, args.reps, same)
            rows.append(_row("cuda", size, "repeated (same tensor)", s, b))
            del t
            gc.collect()
            torch.cuda.empty_cache()
            print(f"done {_label(size)}", file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="add 4 GiB")
    ap.add_argument("--reps", type=int, default=1000, help="repeated-crossing calls per size")
    ap.add_argument("--max-size", type=int, default=0, help="skip sizes above this (bytes)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--cuda", action="store_true",
                    help="torch CUDA tensors instead ('skipped: <reason>', exit 0, without CUDA)")
    ap.add_argument("--venv-root", default=os.environ.get("PYI_BENCH_VENVS"))
    ap.add_argument("--json", default="tensor_bench.json")
    args = ap.parse_args()
    if args.cuda:
        reason = _cuda_unavailable()
        if reason:
            print(f"skipped: {reason}")
            return 0
    rows = asyncio.run(run_cuda(args) if args.cuda else run(args))
    print(f"{'lib':6} {'size':>7}  {'case':32} {'p50 us':>10} {'p99 us':>10} "
          f"{'small p50':>10} {'ratio':>7}")
    for r in rows:
        print(f"{r['lib']:6} {r['size']:>7}  {r['case']:32} {r['p50_us']:10.1f} "
              f"{r['p99_us']:10.1f} {r['small_p50_us']:10.1f} {r['ratio_p50']:7.2f}")
    rep = [r for r in rows if r["case"].startswith("repeated")]
    worst = max((r["ratio_p50"] for r in rep), default=0.0)
    print(f"goal (repeated crossing within 2x of a small call): worst ratio {worst:.2f} -> "
          f"{'met' if worst <= 2.0 else 'NOT met'}")
    info = {"python": sys.version.split()[0], "numpy": np.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows}
    try:
        import torch

        info["torch"] = torch.__version__
        if args.cuda:
            info["cuda"] = {"version": torch.version.cuda,
                            "device": torch.cuda.get_device_name(0)}
    except ImportError:
        pass
    Path(args.json).write_text(json.dumps(info, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
