"""Call statistics (ext.stats(), manager.stats()): what the host's node
counts of the calls it makes to one extension, and what /proc tells of a
local process. Cheap enough to stay on: a call costs a few counter updates
and one append to a bounded ring of latencies (perf/README.md)."""

from __future__ import annotations

import os
from collections import deque
from typing import Any

SAMPLES = 1024  # latencies kept per method (the latest): p50 and p99 come from these

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class MethodStats:
    __slots__ = ("calls", "errors", "timeouts", "latencies")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.timeouts = 0
        self.latencies: deque[int] = deque(maxlen=SAMPLES)  # ns, of finished calls


class CallStats:
    """The calls one node made to one service, by method."""

    __slots__ = ("calls", "errors", "timeouts", "cancelled", "in_flight", "methods")

    def __init__(self) -> None:
        self.calls = 0  # finished: answered, failed or timed out
        self.errors = 0  # raised (timeouts included)
        self.timeouts = 0
        self.cancelled = 0  # cancelled by the caller
        self.in_flight = 0
        self.methods: dict[str, MethodStats] = {}

    def end(self, method: str, ns: int, error: bool, timeout: bool) -> None:
        self.in_flight -= 1
        self.calls += 1
        m = self.methods.get(method)
        if m is None:
            m = self.methods[method] = MethodStats()
        m.calls += 1
        m.latencies.append(ns)
        if error:
            self.errors += 1
            m.errors += 1
            if timeout:
                self.timeouts += 1
                m.timeouts += 1

    def snapshot(self) -> dict[str, Any]:
        methods = {}
        for name, m in self.methods.items():
            lat = sorted(m.latencies)
            methods[name] = {
                "calls": m.calls,
                "errors": m.errors,
                "timeouts": m.timeouts,
                "p50_ms": _quantile(lat, 0.50),
                "p99_ms": _quantile(lat, 0.99),
            }
        return {
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "in_flight": self.in_flight,
            "methods": methods,
        }


def _quantile(sorted_ns: list[int], q: float) -> float | None:
    if not sorted_ns:
        return None
    i = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[i] / 1e6


def process_stats(pid: int | None) -> dict[str, Any]:
    """A local process's resident memory (bytes), of it the shared memory
    it maps (RssShmem: its tensors' regions among them) and its CPU time
    (seconds, user and system), from /proc; None for each when there is no
    such process (in-process, remote, or gone)."""
    out: dict[str, Any] = {"pid": pid, "rss_bytes": None, "shm_bytes": None, "cpu_s": None}
    if not pid:
        return out
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss_bytes"] = int(line.split()[1]) * 1024
                elif line.startswith("RssShmem:"):
                    out["shm_bytes"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out
