#!/usr/bin/env python3
"""Repeated tensor crossings against a small call, beside a zero-copy floor
(issue 12).

- **ours**: one echo extension (``share_torch=True``). A turn times
  ``--calls`` one-at-a-time calls of ``echo(1)``, then of ``echo(x)`` for
  each shared tensor x (torch and numpy, 4 KiB and 64 MiB) that crossed
  before.
- **zero-copy floor**: the suite's asyncio floor (a second process echoing
  over a Unix socket pair; call ids, futures and a reader task), plus one
  shared mapping (a memfd both processes map). An int crosses pickled, as
  in the floor. A tensor crosses as (offset, shape, strides) into that
  mapping: the sender reads the tensor's address, shape and strides, and
  the receiver makes its own tensor object over the mapping
  (``Tensor.as_strided``, ``np.ndarray(buffer=...)``), except that a
  tensor which comes back as it went is the caller's own object (as in
  ours: docs/tensors.md, section 7). The least an echo of a tensor can do
  without a copy, with no validation, lifetime or dtype handling.

The two take turns; each row's ratio is its p50 over the p50 of ``echo(1)``
of the same system in the same turn, and the median over turns is printed,
with the goal line of issue 12 (a repeated crossing <= 1.2x a small call).
Beside it, the CPU time per call of this process and of the echoing one
(``/proc/PID/task/*/schedstat``), which moves less than wall time between
runs on a shared VM, and what a crossing adds to each side's int call.

    .venv/bin/python perf/crossing_bench.py [--calls 400] [--rounds 8] [--json PATH]
    .venv/bin/python perf/crossing_bench.py --parts

``--parts`` times each step of a crossing in one process instead, back to
back and after a 200 us sleep (the cold caches of an echo's wake-up).

A tool to run by hand, like the rest of ``perf/``: it prints numbers and
fails only when something does not work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mmap
import os
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer_adapter import AsyncioFloor  # noqa: E402 - after the path

EXT_SOURCE = """
from pyisolate import ExtensionBase


class Echo(ExtensionBase):
    async def echo(self, value):
        return value
"""

MiB = 1 << 20
SIZES = {"4 KiB": 4096, "64 MiB": 64 * MiB}
MAPPING = 65 * MiB  # the floor's shared mapping: each size at its own offset
OFFSETS = {"4 KiB": 0, "64 MiB": MiB}


# -- the zero-copy floor ---------------------------------------------------------
def _base(lib: str, fd: int) -> tuple[Any, int]:
    """A float32 tensor over the whole mapping, and its address."""
    mm = mmap.mmap(fd, MAPPING)
    if lib == "torch":
        import torch

        t = torch.frombuffer(mm, dtype=torch.float32)
        return t, t.data_ptr()
    a = np.frombuffer(mm, dtype=np.float32)
    return a, a.__array_interface__["data"][0]


def _name(lib: str, x: Any, at: int) -> bytes:
    """b"t" + (lib, offset, ndim, shape, strides) of x, in elements."""
    if lib == "torch":
        off, shape, strides = (x.data_ptr() - at) // 4, tuple(x.shape), x.stride()
    else:
        off = (x.__array_interface__["data"][0] - at) // 4
        shape, strides = x.shape, tuple(s // 4 for s in x.strides)
    n = len(shape)
    return struct.pack(f"<sBqB{2 * n}q", b"t", lib == "torch", off, n, *shape, *strides)


def _make(bases: dict[str, Any], body: bytes) -> Any:
    """The receiver's tensor object over the mapping that body names."""
    is_torch, off, n = struct.unpack_from("<Bqb", body, 1)
    dims = struct.unpack_from(f"<{2 * n}q", body, 11)
    shape, strides = dims[:n], dims[n:]
    if is_torch:
        return bases["torch"].as_strided(shape, strides, off)
    return np.ndarray(shape, np.float32, bases["numpy"], off * 4, tuple(s * 4 for s in strides))


def serve(sock_fd: int, map_fd: int, libs: list[str]) -> None:
    """The floor's echo process: a pickle back as it came, a tensor made
    here and named back."""
    bases = {lib: _base(lib, map_fd) for lib in libs}
    objs = {lib: b for lib, (b, _) in bases.items()}

    async def run() -> None:
        r, w = await asyncio.open_unix_connection(sock=socket.socket(fileno=sock_fd))
        try:
            while True:
                hdr = await r.readexactly(16)
                cid, n = struct.unpack("<QQ", hdr)
                body = await r.readexactly(n)
                if body[:1] == b"t":
                    x = _make(objs, body)  # the extension's argument...
                    lib = "torch" if body[1] else "numpy"
                    body = _name(lib, x, bases[lib][1])  # ...is its return value
                    del x
                w.write(struct.pack("<QQ", cid, len(body)))
                w.write(body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    asyncio.run(run())


class ZeroCopyFloor(AsyncioFloor):
    """The client side of the floor: the suite's asyncio floor, whose
    payloads are pickles (ints here) or tensor names (b"t"...)."""

    def __init__(self, work: Path, libs: list[str]) -> None:
        super().__init__(work)
        self.libs = libs
        self.sent: dict[int, tuple[bytes, Any]] = {}  # call id -> a tensor's name, the tensor
        self.map_fd = os.memfd_create("pyi-crossing-floor")
        os.ftruncate(self.map_fd, MAPPING)
        self.bases = {lib: _base(lib, self.map_fd) for lib in libs}
        self.objs = {lib: b for lib, (b, _) in self.bases.items()}

    def _server(self, fd: int) -> tuple[list[str], list[int]]:
        libs = ",".join(self.libs)
        return ([sys.executable, __file__, "--serve", str(fd), str(self.map_fd), libs],
                [fd, self.map_fd])

    def tensor(self, lib: str, size: str) -> Any:
        return self.objs[lib][OFFSETS[size] // 4 :][: SIZES[size] // 4]

    def _payload(self, cid: int, x: Any) -> bytes:
        if isinstance(x, int):
            return super()._payload(cid, x)
        lib = "numpy" if isinstance(x, np.ndarray) else "torch"
        name = _name(lib, x, self.bases[lib][1])
        self.sent[cid] = (name, x)
        return name

    def _value(self, cid: int, payload: bytes) -> Any:
        sent = self.sent.pop(cid, None)
        if sent is not None and sent[0] == payload:
            return sent[1]  # came back as it went: the caller's own, as ours
        return _make(self.objs, payload) if payload[:1] == b"t" else super()._value(cid, payload)

    async def close(self) -> None:
        await super().close()
        os.close(self.map_fd)


# -- the measurement ---------------------------------------------------------------
async def p50(echo: Callable[[Any], Awaitable[Any]], x: Any, calls: int) -> float:
    """Median microseconds of calls one-at-a-time echo(x)."""
    pc = time.perf_counter
    times = []
    for _ in range(calls):
        t0 = pc()
        await echo(x)
        times.append(pc() - t0)
    return statistics.median(times) * 1e6


def cpu_ns(pid: int) -> int:
    """CPU time process pid has run, all its threads (ns, schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that just ended
            pass
    return total


async def measure(calls: int, rounds: int) -> dict[str, Any]:
    """Both systems, taking turns: for each row, each system's p50s (us) and
    ratios over its int call per turn, the CPU time per call of this
    process and of the echoing one (us), and their medians."""
    import pyisolate

    try:
        import torch
    except ImportError:
        torch = None
    libs = ["numpy"] + (["torch"] if torch is not None else [])
    with tempfile.TemporaryDirectory(prefix="pyi-crossing-") as tmp:
        ext_dir = Path(tmp) / "echo_ext"
        ext_dir.mkdir()
        (ext_dir / "__init__.py").write_text(EXT_SOURCE)
        mgr = pyisolate.ExtensionManager(
            pyisolate.ExtensionBase,
            pyisolate.ExtensionManagerConfig(venv_root_path=str(Path(tmp) / "venvs")),
        )
        floor = ZeroCopyFloor(Path(tmp), libs)
        try:
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(
                    name="crossing", module_path=str(ext_dir), dependencies=[],
                    share_torch=torch is not None,
                )
            )
            await floor.setup(torch is not None)
            ours_args: dict[str, Any] = {"int": 1}
            floor_args: dict[str, Any] = {"int": 1}
            for lib in libs:
                for size, nbytes in SIZES.items():
                    if lib == "torch":
                        ours_args[f"{lib} {size}"] = torch.ones(nbytes // 4)
                    else:
                        ours_args[f"{lib} {size}"] = pyisolate.share(np.ones(nbytes // 4, np.float32))
                    floor_args[f"{lib} {size}"] = floor.tensor(lib, size)
            assert ext.pid is not None
            systems = {"ours": (ext.echo, ours_args, ext.pid),
                       "zero-copy floor": (floor.echo, floor_args, floor.proc.pid)}
            for echo, xs, _ in systems.values():  # first crossings and warm-up, untimed
                for x in xs.values():
                    for _ in range(50):
                        await echo(x)
            out: dict[str, Any] = {
                row: {s: {"p50": [], "ratio": [], "host_cpu": [], "peer_cpu": []}
                      for s in systems}
                for row in ours_args
            }
            order = list(systems)
            me = os.getpid()
            for r in range(rounds):
                for name in order if r % 2 == 0 else order[::-1]:
                    echo, xs, peer = systems[name]
                    got = {}
                    for row, x in xs.items():
                        host0, peer0 = cpu_ns(me), cpu_ns(peer)
                        got[row] = await p50(echo, x, calls)
                        cell = out[row][name]
                        cell["host_cpu"].append((cpu_ns(me) - host0) / calls / 1000)
                        cell["peer_cpu"].append((cpu_ns(peer) - peer0) / calls / 1000)
                    for row, us in got.items():
                        out[row][name]["p50"].append(us)
                        out[row][name]["ratio"].append(us / got["int"])
        finally:
            if hasattr(floor, "proc"):
                await floor.close()
            else:
                os.close(floor.map_fd)
            await mgr.stop_all()
    for cells in out.values():
        for cell in cells.values():
            for key in ("p50", "ratio", "host_cpu", "peer_cpu"):
                cell[f"median_{key}"] = statistics.median(cell[key])
    worst = {}
    for name in systems:
        row = max((r for r in out if r != "int"), key=lambda r: out[r][name]["median_ratio"])
        worst[name] = {"row": row, "ratio": out[row][name]["median_ratio"]}
    return {"calls": calls, "rounds": rounds, "rows": out, "worst": worst}


def parts(n: int) -> None:
    """Each step of a repeated crossing in this process, hot (back to back)
    and cold (after a 200 us sleep, as between the calls of an echo: the
    caches hold other work by then), beside the floor's steps."""
    import pyisolate
    from pyisolate._serialize import Codec

    def timed(f: Callable[[], Any], cold: bool) -> float:
        times = []
        for _ in range(n):
            if cold:
                time.sleep(0.0002)
            t0 = time.perf_counter_ns()
            f()
            times.append(time.perf_counter_ns() - t0)
        return statistics.median(times) / 1000

    codec = Codec(lambda o: None, lambda *a: None)

    def sent(x: Any) -> tuple[bytes, list[Any]]:
        frames = codec.dumps(x)
        return frames[0], frames[1:]

    def decoder(x: Any) -> Callable[[], Any]:
        """The receiver's loads of messages made beforehand (2n: the hot
        and the cold runs)."""
        made = iter([sent(x) for _ in range(2 * n)])
        return lambda: codec.loads(*next(made))

    a = pyisolate.share(np.ones(1024, np.float32))
    base = np.ones(2048, np.float32)
    steps: dict[str, Callable[[], Any]] = {
        "nothing (the timer)": lambda: None,
        "int: dumps + loads": lambda: codec.loads(*sent(1)),
        "numpy: dumps + loads": lambda: codec.loads(*sent(a)),
        "numpy: loads (receiver)": decoder(a),
        "floor numpy: np.ndarray over a mapping": lambda: np.ndarray((1024,), np.float32, base, 0),
    }
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        t = pyisolate.share(torch.ones(1024))
        big = torch.ones(2048)
        steps.update({
            "torch: dumps + loads": lambda: codec.loads(*sent(t)),
            "torch: loads (receiver)": decoder(t),
            "torch: _to_dlpack (part of dumps)": lambda: torch._C._to_dlpack(t),
            "torch: dtype, is_neg, requires_grad": lambda: (
                t.dtype, t.is_neg(), t.requires_grad),
            "floor torch: as_strided": lambda: big.as_strided((1024,), (1,), 0),
            "floor torch: data_ptr, shape, stride": lambda: (t.data_ptr(), t.shape, t.stride()),
        })
    print(f"{'step':40s} {'hot us':>8s} {'cold us':>8s}  (median of {n})")
    for name, f in steps.items():
        print(f"{name:40s} {timed(f, False):8.2f} {timed(f, True):8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=400, help="calls per row per turn")
    ap.add_argument("--rounds", type=int, default=8, help="turns of each system")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--parts", action="store_true",
                    help="instead: each step of a crossing in one process, hot and cold")
    args = ap.parse_args()
    if args.parts:
        parts(2000)
        return
    res = asyncio.run(measure(args.calls, args.rounds))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    o, f = "ours", "zero-copy floor"
    print(f"{args.rounds} turns of {args.calls} calls per row; p50 in us, and over the "
          "same system's int call in the same turn (median of turns)")
    print(f"{'row':16s} {o:>18s} {f:>22s}")
    for row, cells in res["rows"].items():
        print(f"{row:16s} {cells[o]['median_p50']:8.1f} {cells[o]['median_ratio']:6.2f}x "
              f"{cells[f]['median_p50']:12.1f} {cells[f]['median_ratio']:6.2f}x")
    print("CPU time per call, us (median of turns): this process + the echoing one, "
          "and what a crossing adds to the same system's int call")
    print(f"{'row':16s} {o:>22s} {f:>26s}")
    base = {s: (res["rows"]["int"][s]["median_host_cpu"], res["rows"]["int"][s]["median_peer_cpu"])
            for s in (o, f)}
    for row, cells in res["rows"].items():
        line = f"{row:16s}"
        for s in (o, f):
            h, p = cells[s]["median_host_cpu"], cells[s]["median_peer_cpu"]
            add = "" if row == "int" else f"{h - base[s][0]:+.0f} {p - base[s][1]:+.0f}"
            line += f" {h:7.1f} {p:7.1f} {add:>9s}  "
        print(line)
    w = res["worst"]
    print(f"[12] repeated crossing <= 1.2x a small call: "
          f"{'PASS' if w[o]['ratio'] <= 1.2 else 'MISS'} (ours worst {w[o]['ratio']:.2f}x, "
          f"{w[o]['row']}; the zero-copy floor's worst {w[f]['ratio']:.2f}x, {w[f]['row']}; "
          f"ours/floor {w[o]['ratio'] / w[f]['ratio']:.2f})")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","))
    else:
        main()
