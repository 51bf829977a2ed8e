#!/usr/bin/env python3
"""One benchmark host process of perf/suite.py, for one system.

perf/suite.py starts one of these per system and sends it commands, one JSON
object a line on stdin; each answer is one JSON line on the process's
original stdout (fd 1 is pointed at stderr at start, so that whatever the
library under test or its extension processes print cannot garble the
protocol). Every system runs the same code here; only a small shim differs:

- ``ours``:  this project's ``pyisolate`` (public API), run with the project's
  .venv Python;
- ``peer``:  ``pyisolate==0.10.2`` from PyPI (its public API: a synchronous
  ``load_extension``, a process started at the first call, ``stop()``),
  run with the suite's own venv for it;
- ``asyncio``: the floor: a minimal asyncio echo over a Unix socket pair to a
  second process (length-prefixed pickles);
- ``zmq``: the floor: a direct ZeroMQ DEALER<->DEALER ``ipc://`` echo to a
  second process (pyzmq; zmq.asyncio on this side).

Commands (``op``): setup, small, tensor, throughput, nested, startup,
memory, shm, quit. Times are seconds. An error answers {"error": "..."};
the suite prints it and goes on.

Tensor libraries: ``numpy``, ``torch`` (CPU) and ``cuda`` (torch tensors on
device 'cuda', by CUDA IPC: ours always; the peer with its
``share_cuda_ipc=True`` in an extension of its own; the floors skip them,
they would copy through the host).

    python perf/peer_adapter.py --lib ours|peer|asyncio|zmq --work DIR
    python perf/peer_adapter.py --echo-server asyncio FD | zmq ENDPOINT
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

EXT_SOURCE = '''
import os
from pyisolate import ExtensionBase


class Bench(ExtensionBase):
    async def echo(self, x):
        return x

    async def nested(self, n):
        from bench_apis import Pinger  # only the extension that lists it in apis
        p = Pinger()
        for i in range(n):
            await p.ping(i)
        return n

    async def keep(self, t):
        self.kept = t
        return int(t.numel()) if hasattr(t, "numel") else int(t.size)

    async def drop(self):
        self.kept = None
        return True

    async def pid(self):
        return os.getpid()
'''

APIS_SOURCE = '''
from pyisolate import ProxiedSingleton


class Pinger(ProxiedSingleton):
    async def ping(self, x):
        return x
'''


def small_value(kind: str):
    return {"int": 12345, "str": "hello pyisolate", "10k": "x" * 10_000,
            "1m": "y" * 1_000_000}[kind]


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def shm_used() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


# --------------------------------------------------------------------------
# shims: how each system loads an extension, calls it and stops it


class Lib:
    name = "?"
    extension_kind = True  # has extensions, singletons, venvs

    def __init__(self, work: Path):
        self.work = work

    async def setup(self, torch: bool) -> dict:
        raise NotImplementedError

    async def echo(self, x):
        """The echo call. The libraries' setup makes it the extension's own
        method (``self.echo = self.ext.echo``: what a user awaits), so that
        no coroutine of this harness's sits between the caller and the
        library, as none sits in front of the floors' echo."""
        raise NotImplementedError

    def tensor_arg(self, lib: str, nbytes: int, case: str, shape=None):
        """(make(i) -> argument, what) for a tensor workload."""
        raise NotImplementedError

    async def cuda_setup(self):
        """(echo for the CUDA rows, what); raises Skip where this system has
        none. Called once, before the first CUDA row; its CUDA contexts (host
        and extension) start here, untimed."""
        raise Skip("no CUDA tensors in this system")

    def check_tensor(self, lib: str, x, y) -> str:
        """Check one round trip's result (outside the timing); '' or a note
        for the row's "what". Raises AssertionError when it is wrong."""
        return ""

    def require_share_torch(self, torch: bool) -> None:
        """Raise Skip when this system cannot load extensions with
        share_torch=torch (start-up and memory rows run both ways)."""

    async def close(self) -> None:
        pass


def _write_ext(work: Path) -> Path:
    ext = work / "bench_ext"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "__init__.py").write_text(EXT_SOURCE)
    (work / "bench_apis.py").write_text(APIS_SOURCE)
    # the peer instantiates the manager's extension_type in the child and
    # proxies only its methods: the same class, importable by name
    (work / "bench_peer_ext.py").write_text(EXT_SOURCE)
    if str(work) not in sys.path:
        sys.path.insert(0, str(work))
    return ext


def _make_array(lib: str, nbytes: int, shape):
    import numpy as np
    if lib == "numpy":
        if shape:
            return np.ones(shape, dtype=np.uint8)
        return np.ones(nbytes // 4, dtype=np.float32)
    import torch
    if lib == "cuda":
        t = (torch.ones(shape, dtype=torch.uint8, device="cuda") if shape
             else torch.ones(nbytes // 4, device="cuda"))
        torch.cuda.synchronize()  # made, and finished, outside the timed call
        return t
    if shape:
        return torch.ones(shape, dtype=torch.uint8)
    return torch.ones(nbytes // 4)


def _fresh_cuda(nbytes: int, shape):
    """A CUDA tensor in a new allocation (the allocator's cache emptied first,
    as perf/tensor_bench.py --cuda does), never shared before."""
    import torch
    torch.cuda.empty_cache()
    return _make_array("cuda", nbytes, shape)


def _cuda_unavailable() -> str:
    """Why this process cannot make CUDA tensors ('' when it can)."""
    try:
        import torch
    except Exception as e:
        return f"torch is not importable ({e})"
    if not torch.cuda.is_available():
        return (f"torch.cuda.is_available() is False (torch {torch.__version__}, "
                f"built for CUDA {torch.version.cuda})")
    return ""


async def _cuda_warm(echo) -> None:
    """The far side's CUDA context starts at its first CUDA tensor: untimed."""
    import torch
    warm = torch.ones(1, device="cuda")
    torch.cuda.synchronize()
    await echo(warm)
    del warm


class Ours(Lib):
    name = "ours"

    def __init__(self, work: Path):
        super().__init__(work)
        import pyisolate
        self.pi = pyisolate
        self.ext_dir = _write_ext(work)
        import bench_apis
        self.Pinger = bench_apis.Pinger
        self.mgrs: list = []

    def _config(self, name: str, torch: bool, apis=True):
        return self.pi.ExtensionConfig(
            name=name, module_path=str(self.ext_dir), share_torch=torch,
            dependencies=[], apis=[self.Pinger] if apis else [])

    async def new_manager(self, root: Path):
        m = self.pi.ExtensionManager(self.pi.ExtensionBase,
                                     self.pi.ExtensionManagerConfig(venv_root_path=str(root)))
        self.mgrs.append(m)
        return m

    async def load(self, mgr, name: str, torch: bool, apis=True):
        return await mgr.load_extension(self._config(name, torch, apis))

    def ext_pid(self, ext) -> int:
        return ext.pid

    async def stop_manager(self, mgr) -> None:
        await mgr.stop_all()
        if mgr in self.mgrs:
            self.mgrs.remove(mgr)

    async def create_venv(self, root: Path, name: str, torch: bool) -> None:
        from pyisolate import _venv  # internal: the venv step alone
        await _venv.ensure_venv(name, root, [], torch)

    async def setup(self, torch: bool) -> dict:
        self.mgr = await self.new_manager(self.work / "venvs")
        self.ext = await self.load(self.mgr, "bench", torch)
        self.echo = self.ext.echo
        v = {"pyisolate": getattr(self.pi, "__version__", "?"), "pyisolate_file": self.pi.__file__}
        return v

    async def nested(self, n):
        return await self.ext.nested(n)

    def tensor_arg(self, lib, nbytes, case, shape=None):
        if lib == "cuda":
            if case == "first":
                return ((lambda i: _fresh_cuda(nbytes, shape)),
                        "fresh CUDA allocation each call")
            t = _make_array(lib, nbytes, shape)
            return (lambda i: t), "CUDA tensor after its first crossing (same allocation)"
        if case == "first":
            if lib == "numpy":
                base = _make_array(lib, nbytes, shape)
                return (lambda i: base), "ordinary array (copied into shared memory each call)"
            return (lambda i: _make_array(lib, nbytes, shape)), "fresh tensor each call (moved)"
        if lib == "numpy":
            shared = self.pi.share(_make_array(lib, nbytes, shape))
            return (lambda i: shared), "pyisolate.share()d array"
        t = _make_array(lib, nbytes, shape)
        return (lambda i: t), "tensor after its first crossing"

    async def cuda_setup(self):
        why = _cuda_unavailable()
        if why:
            raise Skip(why)
        # the same extension as every other row: CUDA tensors need no option
        await _cuda_warm(self.echo)
        return self.echo, "CUDA IPC (docs/tensors.md, section 8)"

    def check_tensor(self, lib, x, y):
        if lib != "cuda":
            return ""
        if not getattr(y, "is_cuda", False):
            raise AssertionError(f"CUDA round trip: a {type(y).__name__} on "
                                 f"{getattr(y, 'device', '?')} came back, not a CUDA tensor")
        if y.data_ptr() != x.data_ptr() or tuple(y.shape) != tuple(x.shape):
            raise AssertionError(f"CUDA round trip: other memory came back (data_ptr "
                                 f"{y.data_ptr():#x}, sent {x.data_ptr():#x}): a copy")
        return "checked: the same CUDA memory came back"

    async def close(self):
        for m in list(self.mgrs):
            try:
                await m.stop_all()
            except Exception:
                pass


class Peer(Lib):
    """pyisolate 0.10.2: sandbox_mode DISABLED (it REQUIRES bubblewrap on Linux
    by default, and this machine has none: that is why a default config does
    not start here), and share_torch=True always: its child reaches
    pyisolate only through the host's site-packages (share_torch's .pth);
    without it the child venv has no pyisolate, and naming pyisolate as a
    dependency makes it install torch==<host's version> from PyPI into the
    venv too. So its extension processes import torch at start."""

    name = "peer"

    def __init__(self, work: Path):
        super().__init__(work)
        import pyisolate
        self.pi = pyisolate
        self.ext_dir = _write_ext(work)
        import bench_apis
        self.Pinger = bench_apis.Pinger
        self.mgrs: list = []

    def _config(self, name, torch, apis=True, cuda_ipc=False):
        return self.pi.ExtensionConfig(
            name=name, module_path=str(self.ext_dir), isolated=True, dependencies=[],
            apis=[self.Pinger] if apis else [], share_torch=True, share_cuda_ipc=cuda_ipc,
            sandbox_mode=self.pi.SandboxMode.DISABLED)

    async def new_manager(self, root: Path):
        import bench_peer_ext
        m = self.pi.ExtensionManager(bench_peer_ext.Bench,
                                     self.pi.ExtensionManagerConfig(venv_root_path=str(root)))
        self.mgrs.append(m)
        return m

    async def load(self, mgr, name, torch, apis=True, cuda_ipc=False):
        ext = mgr.load_extension(self._config(name, torch, apis, cuda_ipc))
        await ext.pid()  # the process starts at the first call
        return ext

    def ext_pid(self, ext) -> int:
        return ext._extension.proc.pid  # no public accessor

    async def stop_manager(self, mgr) -> None:
        # Extension.stop() waits up to 3 s for the child to exit by itself
        # after closing the RPC: stop them all in parallel threads.
        exts = list(mgr.extensions.values())
        await asyncio.gather(*(asyncio.to_thread(_quiet_stop, e) for e in exts))
        mgr.extensions.clear()
        if mgr in self.mgrs:
            self.mgrs.remove(mgr)

    def require_share_torch(self, torch: bool) -> None:
        if not torch:
            raise Skip("0.10.2 cannot run here without share_torch: its extension reaches "
                       "pyisolate only through share_torch's .pth, and naming pyisolate as a "
                       "dependency installs torch from PyPI into the venv")

    async def create_venv(self, root: Path, name: str, torch: bool) -> None:
        from pyisolate._internal.environment import create_venv, install_dependencies
        cfg = self._config(name, torch)
        create_venv(root / name, cfg)
        install_dependencies(root / name, cfg, name)

    async def setup(self, torch):
        self.mgr = await self.new_manager(self.work / "venvs")
        self.ext = await self.load(self.mgr, "bench", torch)
        self.echo = self.ext.echo
        return {"pyisolate": self.pi.__version__, "pyisolate_file": self.pi.__file__}

    async def nested(self, n):
        return await self.ext.nested(n)

    def tensor_arg(self, lib, nbytes, case, shape=None):
        if lib == "numpy" and nbytes > 64 * KiB:
            raise Skip("the peer sends numpy arrays as JSON lists (ndarray.tolist()): "
                       "about 1.4 s a call at 1 MiB here: skipped above 64 KiB")
        if lib == "cuda" and case == "first":
            return (lambda i: _fresh_cuda(nbytes, shape)), "fresh CUDA allocation each call"
        if case == "first":
            if lib == "numpy":
                base = _make_array(lib, nbytes, shape)
                return (lambda i: base), "ordinary array (JSON list)"
            return (lambda i: _make_array(lib, nbytes, shape)), "fresh tensor each call"
        a = _make_array(lib, nbytes, shape)
        return (lambda i: a), "the same array/tensor again"

    async def cuda_setup(self):
        """0.10.2 (read from its wheel): with share_torch, its registered
        tensor serializer sends a CUDA tensor by torch's CUDA IPC
        (reductions.reduce_tensor) whatever share_cuda_ipc says; the option
        makes its host probe CUDA IPC at start (refusing where it is
        unavailable) and sets PYISOLATE_ENABLE_CUDA_IPC, which keeps CUDA
        tensors on the device in its fallback paths instead of .cpu(). Set
        it, in an extension of its own, so the CPU rows keep their config.
        A CUDA tensor it received cannot be sent on by torch: it clones it
        to send it back (so the round trip returns other memory)."""
        why = _cuda_unavailable()
        if why:
            raise Skip(why)
        self.cuda_ext = await self.load(self.mgr, "bench_cuda", True, apis=False, cuda_ipc=True)
        await _cuda_warm(self.cuda_ext.echo)
        return self.cuda_ext.echo, "share_cuda_ipc=True (torch CUDA IPC)"

    def check_tensor(self, lib, x, y):
        if lib != "cuda":
            return ""
        if not getattr(y, "is_cuda", False) or tuple(y.shape) != tuple(x.shape):
            raise AssertionError(f"CUDA round trip: got {type(y).__name__} "
                                 f"{getattr(y, 'device', '?')} {tuple(getattr(y, 'shape', ()))}")
        same = y.data_ptr() == x.data_ptr()
        return ("checked: the same CUDA memory came back" if same else
                "checked: a CUDA tensor came back, in other memory (a copy)")

    async def close(self):
        for m in list(self.mgrs):
            try:
                await self.stop_manager(m)
            except Exception:
                pass


def _quiet_stop(e) -> None:
    try:
        e.stop()
    except Exception:
        pass


class Skip(Exception):
    pass


# --- floors ---------------------------------------------------------------


class _Framed(Lib):
    """Shared by the floors: call ids, futures, a reader task."""

    extension_kind = False

    def __init__(self, work):
        super().__init__(work)
        self.futs: dict[int, asyncio.Future] = {}
        self.next_id = 0

    def _payload(self, cid: int, x) -> bytes:
        """What call cid sends for x."""
        return pickle.dumps(x, protocol=5)

    def _value(self, cid: int, payload):
        """What call cid's answer payload stands for."""
        return pickle.loads(payload)

    def _resolve(self, cid: int, payload: bytes) -> None:
        f = self.futs.pop(cid, None)
        if f is not None and not f.done():
            f.set_result(self._value(cid, payload))

    async def echo(self, x):
        self.next_id += 1
        cid = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.futs[cid] = fut
        self._send(cid, self._payload(cid, x))
        return await fut

    async def cuda_setup(self):
        raise Skip("a floor would copy a CUDA tensor through the host (.cpu(), pickle, "
                   "socket): no CUDA floor")

    def tensor_arg(self, lib, nbytes, case, shape=None):
        if nbytes > self.max_tensor:
            raise Skip(f"the floor copies the bytes: skipped above {self.max_tensor >> 20} MiB")
        a = _make_array(lib, nbytes, shape)
        return (lambda i: a), "bytes copied through the socket (pickle)"


class AsyncioFloor(_Framed):
    name = "asyncio"
    max_tensor = 64 * MiB

    def _server(self, fd: int) -> tuple[list[str], list[int]]:
        """The echo process's command line and the descriptors it gets
        (fd: its end of the socket pair)."""
        return [sys.executable, __file__, "--echo-server", "asyncio", str(fd)], [fd]

    async def setup(self, torch):
        import socket
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        cmd, fds = self._server(b.fileno())
        self.proc = subprocess.Popen(cmd, pass_fds=fds)
        b.close()
        self.reader, self.writer = await asyncio.open_unix_connection(sock=a)
        self.task = asyncio.ensure_future(self._read_loop())
        await self.echo(1)
        return {"python": sys.version.split()[0]}

    def _send(self, cid, payload):
        self.writer.write(struct.pack("<QQ", cid, len(payload)))
        self.writer.write(payload)

    async def _read_loop(self):
        r = self.reader
        while True:
            hdr = await r.readexactly(16)
            cid, n = struct.unpack("<QQ", hdr)
            self._resolve(cid, await r.readexactly(n))

    async def close(self):
        self.task.cancel()
        self.writer.close()  # the echo process ends at EOF, once the loop closes the socket
        await self.writer.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 5)


class ZmqFloor(_Framed):
    name = "zmq"
    max_tensor = 64 * MiB

    async def setup(self, torch):
        import zmq
        import zmq.asyncio
        self.ctx = zmq.asyncio.Context(io_threads=1)
        self.sock = self.ctx.socket(zmq.DEALER)
        ep = f"ipc://{self.work}/zmq-floor.ipc"
        self.sock.bind(ep)
        self.proc = subprocess.Popen([sys.executable, __file__, "--echo-server", "zmq", ep])
        await asyncio.wait_for(self.sock.recv_multipart(), 30)  # the echo side's hello
        self.task = asyncio.ensure_future(self._read_loop())
        await self.echo(1)
        return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}

    def _send(self, cid, payload):
        self.sock.send_multipart([struct.pack("<Q", cid), payload], copy=False)

    async def _read_loop(self):
        while True:
            cid, payload = await self.sock.recv_multipart(copy=False)
            self._resolve(struct.unpack("<Q", cid.bytes)[0], payload.buffer)

    async def close(self):
        self.sock.send_multipart([b"", b""])
        self.proc.wait(5)
        self.sock.close(0)
        self.ctx.term()


def echo_server(kind: str, where: str) -> None:
    if kind == "asyncio":
        async def serve():
            import socket
            s = socket.socket(fileno=int(where))
            r, w = await asyncio.open_unix_connection(sock=s)
            try:
                while True:
                    hdr = await r.readexactly(16)
                    n = struct.unpack("<QQ", hdr)[1]
                    body = await r.readexactly(n)
                    w.write(hdr)
                    w.write(body)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
        asyncio.run(serve())
    else:
        import zmq
        ctx = zmq.Context(io_threads=1)
        s = ctx.socket(zmq.DEALER)
        s.connect(where)
        s.send_multipart([b"hello", b""])
        while True:
            frames = s.recv_multipart(copy=False)
            if len(frames[0]) == 0:
                break
            s.send_multipart(frames, copy=False)
        s.close(0)
        ctx.term()


LIBS = {"ours": Ours, "peer": Peer, "asyncio": AsyncioFloor, "zmq": ZmqFloor}


# --------------------------------------------------------------------------
# workloads


async def timed(fn, n: int, warm: int = 0) -> list[float]:
    for _ in range(warm):
        await fn(0)
    out = []
    pc = time.perf_counter
    for i in range(n):
        t0 = pc()
        await fn(i)
        out.append(pc() - t0)
    return out


class Host:
    def __init__(self, lib: Lib):
        self.lib = lib
        self.tensor_cache: dict = {}
        self.cuda = None  # (echo, what) or ("skip"|"error", message), after the first CUDA row

    async def op_setup(self, c):
        info = await self.lib.setup(c.get("torch", False))
        info.update(python=sys.version.split()[0], executable=sys.executable)
        for mod in ("numpy", "torch"):
            try:
                info[mod] = __import__(mod).__version__
            except Exception:
                pass
        if "torch" in info:  # does this process see a GPU? (no CUDA context yet)
            import torch
            info["torch_cuda"] = torch.version.cuda
            info["cuda_available"] = bool(torch.cuda.is_available())
            if info["cuda_available"] and self.lib.name == "ours":
                info["cuda_device"] = torch.cuda.get_device_name(0)
        return info

    async def _cuda_echo(self):
        """The echo for the CUDA rows (set up once); raises Skip or
        RuntimeError, the same each time, where there is none."""
        if self.cuda is None:
            try:
                self.cuda = await self.lib.cuda_setup()
            except Skip as e:
                self.cuda = ("skip", str(e))
            except Exception as e:
                self.cuda = ("error", f"CUDA set-up failed: {type(e).__name__}: {e}")
                traceback.print_exc()
        first, second = self.cuda
        if first == "skip":
            raise Skip(second)
        if first == "error":
            raise RuntimeError(second)
        return first, second

    async def op_small(self, c):
        x = small_value(c["value"])
        echo = self.lib.echo

        async def one(i):
            y = await echo(x)
            if c.get("check") and y != x:
                raise AssertionError("wrong echo")
        return {"samples": await timed(one, c["n"], c.get("warm", 5))}

    def _clear_tensors(self) -> None:
        cuda = any(k[0] == "cuda" for k in self.tensor_cache)
        self.tensor_cache.clear()
        gc.collect()
        if cuda:
            import torch
            torch.cuda.empty_cache()

    async def op_tensor(self, c):
        lib = c["lib"]
        key = (lib, c["bytes"], c["case"], tuple(c.get("shape") or ()))
        echo = self.lib.echo
        try:
            if lib == "cuda":
                echo, how = await self._cuda_echo()
            if key not in self.tensor_cache:
                self._clear_tensors()
                make, what = self.lib.tensor_arg(lib, c["bytes"], c["case"], c.get("shape"))
                if lib == "cuda":
                    what = f"{what}; {how}"
                self.tensor_cache[key] = (make, what)
                if c["case"] == "repeated":
                    await echo(make(0))  # its first crossing, untimed
            make, what = self.tensor_cache[key]
        except Skip as e:
            return {"skip": str(e)}
        out = []
        ints = []  # pair_int: an int echo timed after each tensor echo
        pair = c.get("pair_int")
        pc = time.perf_counter
        budget = c.get("budget", 1e9)  # seconds per turn; at least one sample
        start = pc()
        for i in range(c["n"]):
            x = make(i)
            t0 = pc()
            y = await echo(x)
            out.append(pc() - t0)
            if pair:
                t0 = pc()
                await self.lib.echo(1)
                ints.append(pc() - t0)
            if i == 0 and c.get("check"):  # outside the timing; raises if wrong
                note = self.lib.check_tensor(lib, x, y)
                if note:
                    what = f"{what}; {note}"
                    self.tensor_cache[key] = (make, what)
            del x, y
            if pc() - start > budget:
                break
        if c.get("last"):
            self._clear_tensors()
        res = {"samples": out, "what": what}
        if pair:
            res["int_samples"] = ints
        return res

    async def op_throughput(self, c):
        depth, total = c["depth"], c["calls"]
        echo = self.lib.echo
        sent = 0

        async def lane():
            nonlocal sent
            while sent < total:
                sent += 1
                await echo(1)
        t0 = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(depth)))
        dt = time.perf_counter() - t0
        return {"calls_per_s": total / dt, "seconds": dt}

    async def op_nested(self, c):
        if not self.lib.extension_kind:
            return {"skip": "no extensions or singletons in a floor"}
        per = c.get("per_call", 10)
        ns = self.lib.nested
        s = await timed(lambda i: ns(per), c["n"], 1)
        return {"samples": [x / per for x in s]}

    async def op_startup(self, c):
        """Venv creation, and load to first answered call with a fresh and
        an existing venv; share_torch as the command says (the same for
        every system)."""
        lib = self.lib
        if not lib.extension_kind:
            return {"skip": "no venvs or extensions in a floor"}
        torch = bool(c.get("torch", False))
        try:
            lib.require_share_torch(torch)
        except Skip as e:
            return {"skip": str(e)}
        root = lib.work / "startup-venvs"
        name = f"startup_ext_{'torch' if torch else 'plain'}"
        out: dict = {}
        # venv creation alone
        shutil.rmtree(root / name, ignore_errors=True)
        t0 = time.perf_counter()
        await lib.create_venv(root, name, torch)
        out["venv_create"] = time.perf_counter() - t0
        shutil.rmtree(root / name, ignore_errors=True)
        for case in ("fresh", "existing"):
            if case == "fresh":
                shutil.rmtree(root / name, ignore_errors=True)
            t0 = time.perf_counter()
            mgr = await lib.new_manager(root)
            ext = await lib.load(mgr, name, torch, apis=False)
            await ext.echo(1)
            out[case] = time.perf_counter() - t0
            await lib.stop_manager(mgr)
        return out

    async def op_memory(self, c):
        """Host RSS growth and each extension's RSS with k extensions loaded
        with share_torch as the command says (the same for every system)."""
        lib = self.lib
        if not lib.extension_kind:
            return {"skip": "no extensions in a floor"}
        torch = bool(c.get("torch", False))
        try:
            lib.require_share_torch(torch)
        except Skip as e:
            return {"skip": str(e)}
        k = c["k"]
        tag = "torch" if torch else "plain"
        root = lib.work / "mem-venvs"
        gc.collect()
        start = rss_of(os.getpid())
        mgr = await lib.new_manager(root)
        # the first extension of a manager starts its machinery: load one
        # outside the measure (reported apart), then k more
        first = await lib.load(mgr, f"mem_base_{tag}", torch, apis=False)
        await first.echo(1)
        gc.collect()
        before = rss_of(os.getpid())
        exts = []
        for i in range(k):
            exts.append(await lib.load(mgr, f"mem{k}_{tag}_{i}", torch, apis=False))
        for e in exts:
            await e.echo(1)
        gc.collect()
        await asyncio.sleep(0.2)
        after = rss_of(os.getpid())
        ext_rss = [rss_of(lib.ext_pid(e)) for e in exts]
        await lib.stop_manager(mgr)
        return {"host_rss_growth_per_ext": (after - before) / k, "ext_rss": ext_rss,
                "host_rss_before": before, "host_rss_after": after,
                "host_rss_manager_and_first_ext": before - start}

    async def op_shm(self, c):
        lib = self.lib
        if not lib.extension_kind:
            return {"skip": "no extensions in a floor"}
        import torch
        k, nbytes = c["k"], c["bytes"]
        root = lib.work / "shm-venvs"
        mgr = await lib.new_manager(root)
        exts = [await lib.load(mgr, f"shm_{i}", True, apis=False) for i in range(k)]
        gc.collect()
        before = shm_used()
        t = torch.ones(nbytes // 4)
        for e in exts:
            await e.keep(t)
        after = shm_used()
        for e in exts:
            await e.drop()
        del t
        gc.collect()
        await lib.stop_manager(mgr)
        return {"shm_delta": after - before, "tensor_bytes": nbytes, "extensions": k}


async def serve(lib: Lib, out) -> None:
    host = Host(lib)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        c = json.loads(line)
        if c["op"] == "quit":
            break
        try:
            res = await getattr(host, "op_" + c["op"])(c)
        except Exception as e:  # report, go on
            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        out.write(json.dumps(res) + "\n")
        out.flush()
    try:
        await asyncio.wait_for(lib.close(), 30)
    except Exception:
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=sorted(LIBS))
    ap.add_argument("--work")
    ap.add_argument("--echo-server", nargs=2, metavar=("KIND", "WHERE"))
    a = ap.parse_args()
    if a.echo_server:
        echo_server(*a.echo_server)
        return 0
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        lib = LIBS[a.lib](work)
    except Exception as e:
        out.write(json.dumps({"error": f"{type(e).__name__}: {e}",
                              "traceback": traceback.format_exc()}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ready": a.lib}) + "\n")
    out.flush()
    asyncio.run(serve(lib, out))
    out.close()
    os._exit(0)  # extension threads of some systems would hold the exit


if __name__ == "__main__":
    raise SystemExit(main())
