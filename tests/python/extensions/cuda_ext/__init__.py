"""CUDA tensors crossing calls: the extension side (tests/python/test_cuda.py).

Loaded with share_torch=True. Nothing here synchronizes the device on its
own: the library must do it before a reply leaves (docs/tensors.md), and
the writes below are queued behind a long GPU sleep so that a missing
synchronization shows as a stale value on the other side.
"""

import gc
import os

import torch

import pyisolate
from pyisolate import ExtensionBase

# About 50 to 100 ms of GPU time at 1 to 2 GHz: longer than a message takes
# to cross, so a write queued behind it is still pending when the reply
# arrives unless the device was synchronized.
SLEEP_CYCLES = 100_000_000


def _gpu_sleep():
    if hasattr(torch.cuda, "_sleep"):
        torch.cuda._sleep(SLEEP_CYCLES)
    else:  # a few large matrix products instead
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(8):
            a = a @ a
            a /= a.norm()


def _region_mappings():
    """The pyisolate regions this process maps (a CUDA region is a page of
    header in /dev/shm; its device memory is opened by IPC handle)."""
    with open("/proc/self/maps") as f:
        return sorted({line.split()[-1] for line in f if "/dev/shm/pyi-" in line})


class CudaExt(ExtensionBase):
    def __init__(self):
        super().__init__()
        self.held = []

    # 'pid' is a handle attribute on the host side: name the method otherwise
    async def getpid(self):
        return os.getpid()

    async def echo(self, x):
        return x

    async def describe(self, x):
        uuid = None
        if x.is_cuda:
            props = torch.cuda.get_device_properties(x.device)
            uuid = str(getattr(props, "uuid", "")) or None
        return {
            "is_cuda": x.is_cuda,
            "device": str(x.device),
            "uuid": uuid,
            "dtype": str(x.dtype),
            "shape": list(x.shape),
            "stride": list(x.stride()),
            "sum": float(x.double().sum()) if x.numel() else 0.0,
            "ptr": x.data_ptr(),
        }

    async def total(self, x):
        """Sum of x, computed on x's device here (reads what the host wrote)."""
        return float(x.double().sum())

    async def fill_late(self, x, value):
        """Fill x in place, queued behind a GPU sleep; no synchronize."""
        _gpu_sleep()
        x.fill_(value)
        return None

    async def add_late(self, x, value):
        _gpu_sleep()
        x.add_(value)
        return None

    async def bump(self, x):
        """One pass: add 1 in place and give x back."""
        x.add_(1)
        return x

    async def make(self, shape, value):
        t = torch.full(shape, float(value), device="cuda")
        self.held.append(t)
        return t

    async def hold(self, x):
        self.held.append(x)
        return len(self.held)

    async def held_total(self, index):
        return float(self.held[index].double().sum())

    async def fill_held_late(self, index, value):
        _gpu_sleep()
        self.held[index].fill_(value)
        return None

    async def read_held(self, index):
        return self.held[index]

    async def same_as_held(self, x, index):
        """Whether x is the very memory of held[index] (no copy on the way)."""
        h = self.held[index]
        return x.data_ptr() == h.data_ptr() and x.device == h.device

    async def drop_held(self):
        self.held.clear()
        gc.collect()
        return None

    async def drop_held_and_churn(self, numel):
        """Drop what is held, then allocate and fill tensors of numel float32
        elements: the caching allocator hands a freed block out again, so a
        tensor the host received from here is overwritten with -1 unless the
        library keeps its allocation alive while the host holds it."""
        self.held.clear()
        gc.collect()
        self.scratch = [torch.full((numel,), -1.0, device="cuda") for _ in range(2)]
        torch.cuda.synchronize()
        return None

    async def gpu_state(self):
        """Device free memory as this process sees it, its torch allocator's
        reserved bytes, and the regions it maps."""
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return {
            "free": free,
            "total": total,
            "reserved": torch.cuda.memory_reserved(),
            "regions": _region_mappings(),
        }

    async def region_of(self, x):
        return pyisolate.region_name(x)
