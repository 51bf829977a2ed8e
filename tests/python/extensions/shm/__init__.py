"""Arrays and tensors over shared memory: the extension side."""

import asyncio
import os
import signal
import time

import msgpack
import numpy as np

import pyisolate
from pyisolate import ExtensionBase


def _lib(x):
    return "torch" if type(x).__module__.startswith("torch") else "numpy"


class Shm(ExtensionBase):
    def __init__(self):
        super().__init__()
        self.held = []

    async def numpy_version(self):
        return np.__version__

    async def echo(self, x):
        return x

    async def changed(self, x, how):
        """x as another object: reversed, made read-only, or detached."""
        if how == "reverse":
            return x[::-1] if _lib(x) == "numpy" else x.flip(0)
        if how == "frozen":
            x.flags.writeable = False
            return x
        return x.detach()

    async def slow_echo(self, x, delay):
        await asyncio.sleep(delay)
        return x

    async def describe(self, x):
        if _lib(x) == "torch":
            return {
                "lib": "torch",
                "dtype": str(x.dtype),
                "shape": list(x.shape),
                "region": pyisolate.region_name(x),
                "writeable": True,
            }
        return {
            "lib": "numpy",
            "dtype": x.dtype.str,
            "shape": list(x.shape),
            "region": pyisolate.region_name(x),
            "writeable": bool(x.flags.writeable),
            "sum": float(np.abs(x).sum()) if x.dtype.kind in "iufcb" else None,
        }

    async def lingering(self):
        from pyisolate import _tensors

        return _tensors.lingering()

    async def add_in_place(self, x, value):
        x += value
        return None

    async def fill_all(self, values, value):
        for v in values:
            v[...] = value

    async def hold(self, x):
        self.held.append(x)
        return len(self.held)

    async def held_regions(self):
        return [pyisolate.region_name(x) for x in self.held]

    async def write_held(self, index, value):
        self.held[index][...] = value

    async def read_held(self, index):
        return self.held[index]

    async def drop_held(self):
        self.held.clear()

    async def make(self, shape, dtype, value):
        a = np.full(shape, value, dtype=dtype)
        self.held.append(a)
        return a

    async def make_shared(self, shape, dtype, value):
        a = pyisolate.empty(shape, dtype)
        a[...] = value
        self.held.append(a)
        return a

    async def late_array(self, delay, n):
        """A new shared array, returned after delay and kept by nobody here.
        The delay blocks the loop (CPU-bound work in an async method), so
        the CANCEL of a deadline is read only after the reply left."""
        time.sleep(delay)  # noqa: ASYNC251 - blocks the loop on purpose
        return pyisolate.empty(n, "f8")

    async def roundtrip_via(self, other, x):
        # pass x on to another remote callable and return what comes back
        return await other(x)

    async def pid(self):
        return os.getpid()

    async def die(self):
        asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGKILL)

    async def hostile(self, mode, x):
        """Return x with its descriptor spoiled (a hostile peer)."""
        from pyisolate import _serialize

        dumps = _serialize.Codec.dumps

        def spoil(desc):
            d = msgpack.unpackb(desc)
            if mode == "garbage":
                return b"\x97\x01\x02\xff"
            if mode == "span":
                d[6][2] += 1 << 30
            elif mode == "offset":
                d[6][1] += 1 << 40
            elif mode == "name":
                d[6][0] = "/pyi-1-1-1-1"
            elif mode == "path":
                d[6][0] = "/../../etc/passwd"
            elif mode == "shape":
                d[3] = [1 << 40] * len(d[3])
            elif mode == "dtype":
                d[2] = [3, 64, 1]
            elif mode == "device":
                d[1] = [2, 0]
            return msgpack.packb(d)

        def spoiled(codec, *args, **kwargs):
            # Only this reply: the next request may be served before a
            # callback this call schedules runs.
            restore()
            frames = dumps(codec, *args, **kwargs)
            for at in codec.marks:  # the descriptor frames, however made
                frames[at] = spoil(bytes(frames[at]))
            return frames

        def restore():
            _serialize.Codec.dumps = dumps

        _serialize.Codec.dumps = spoiled
        asyncio.get_running_loop().call_soon(restore)
        return x
