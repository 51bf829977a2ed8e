#!/usr/bin/env python3
"""Where the first crossing of a fresh torch tensor spends its time (issue 12).

The suite's row "torch 1 GiB first" times ``await ext.echo(t)`` for a tensor
made just before (``torch.ones``), never shared: pyisolate moves its
storage into a new shared region (docs/tensors.md) and sends a descriptor.
This script times the parts of that, in one process and one run, each
round on a fresh tensor:

- ``alloc``: ``torch.ones(n)`` (outside the suite's timing: the tensor exists
  before the call);
- ``region``: a new empty region of the tensor's size (``pyi_tensor_empty``:
  the shared memory object is created and its memory reserved);
- ``copy (fresh region)``: the tensor's bytes into it, the region's pages
  faulted in on the way;
- ``copy (again)``: the same copy into the same, now faulted, region: the
  difference to the line above is the page faults, not the copy;
- ``set_ + descriptor``: ``set_`` onto the region (the old storage is freed)
  plus the descriptor (encode_torch
  of a tensor already moved);
- ``call (moved)``: ``await ext.echo(t)`` of the moved tensor (its first
  crossing for the extension, which maps the region);
- ``first crossing``: ``await ext.echo(t)`` of another fresh tensor, end to
  end: what the suite times;
- ``torch share_memory_()``: torch's own move into shared memory, for
  reference (what the suite's peer builds on).

    .venv/bin/python perf/first_crossing.py [--mib 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path

EXT_SOURCE = '''
from pyisolate import ExtensionBase


class Bench(ExtensionBase):
    async def echo(self, x):
        return x
'''


async def _run(nbytes: int, rounds: int) -> dict[str, list[float]]:
    import torch

    import pyisolate
    from pyisolate import _tensors

    work = Path(tempfile.mkdtemp(prefix="pyi-first-crossing-"))
    (work / "first_crossing_ext").mkdir()
    (work / "first_crossing_ext" / "__init__.py").write_text(EXT_SOURCE)
    cfg = pyisolate.ExtensionManagerConfig(venv_root_path=work / "venvs")
    pc = time.perf_counter
    out: dict[str, list[float]] = {}

    def note(name: str, seconds: float) -> None:
        out.setdefault(name, []).append(seconds)

    async with pyisolate.ExtensionManager(pyisolate.ExtensionBase, cfg) as mgr:
        ext = await mgr.load_extension(pyisolate.ExtensionConfig(
            name="first_crossing", module_path=str(work / "first_crossing_ext"),
            dependencies=[], share_torch=True))
        await ext.echo(torch.ones(1024))  # warm: imports, first descriptor
        n = nbytes // 4
        for _ in range(rounds):
            t0 = pc()
            t = torch.ones(n)
            note("alloc (torch.ones)", pc() - t0)

            t0 = pc()
            raw = _tensors.torch_from_versioned(torch, _tensors._empty((nbytes,), (1, 8)))
            new = raw.untyped_storage()
            note("region (pyi_tensor_empty)", pc() - t0)
            t0 = pc()
            new.copy_(t.untyped_storage())
            note("copy (fresh region)", pc() - t0)
            t0 = pc()
            new.copy_(t.untyped_storage())
            note("copy (again, pages faulted)", pc() - t0)
            t0 = pc()
            with torch.no_grad():
                t.set_(new, 0, t.shape, t.stride())
            desc, r = _tensors.encode_torch(torch, t)
            _tensors.unsend_region(r)
            note("set_ (frees the old pages) + descriptor", pc() - t0)
            del raw, new
            t0 = pc()
            y = await ext.echo(t)
            note("call (moved tensor)", pc() - t0)
            if y.data_ptr() != t.data_ptr():
                raise AssertionError("the echo is not zero-copy")
            del t, y
            gc.collect()

            fresh = torch.ones(n)
            t0 = pc()
            y = await ext.echo(fresh)
            note("first crossing (end to end)", pc() - t0)
            del fresh, y
            gc.collect()

            fresh = torch.ones(n)
            t0 = pc()
            fresh.share_memory_()
            note("torch share_memory_() (reference)", pc() - t0)
            del fresh
            gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="tensor size in MiB (default 1024)")
    ap.add_argument("--rounds", type=int, default=5, help="fresh tensors (default 5)")
    args = ap.parse_args()
    out = asyncio.run(_run(args.mib << 20, args.rounds))
    print(f"{args.mib} MiB torch float32, {args.rounds} rounds, ms (median, min, max)")
    for name, xs in out.items():
        print(f"{name:<36} {statistics.median(xs) * 1e3:9.1f} {min(xs) * 1e3:9.1f} "
              f"{max(xs) * 1e3:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
