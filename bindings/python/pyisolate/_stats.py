"""Call statistics (ext.stats(), manager.stats()): what the host's node
counts of the calls it makes to one extension, and what /proc tells of a
local process. Cheap enough to stay on: a call costs a few counter updates
and one append to a bounded ring of latencies (perf/README.md). Also their
Prometheus export (PrometheusCollector), when prometheus_client is
installed."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
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


class PrometheusCollector:
    """The stats of a manager's extensions as Prometheus metrics (a
    ``prometheus_client`` custom collector: ``REGISTRY.register(it)``).
    ``snapshot`` returns ``manager.stats()``, taken on the manager's loop.
    Counters are ``*_total``; latencies are gauges by ``quantile`` (0.5,
    0.99) of the latest calls, in seconds."""

    def __init__(self, snapshot: Callable[[], dict[str, dict[str, Any]]]) -> None:
        _prometheus()  # a clear ImportError now, not at the first scrape
        self._snapshot = snapshot

    def describe(self) -> list[Any]:
        return []  # no fixed set: the extensions come and go

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self._snapshot()
        ext = ["extension"]
        counters = {
            key: CounterMetricFamily(f"pyisolate_extension_{key}", text, labels=ext)
            for key, text in _COUNTERS.items()
        }
        gauges = {
            key: GaugeMetricFamily(f"pyisolate_extension_{name}", text, labels=ext)
            for key, (name, text) in _GAUGES.items()
        }
        up = GaugeMetricFamily(
            "pyisolate_extension_up", "1 while the extension is ready to serve", labels=ext
        )
        per = ["extension", "method"]
        m_calls = CounterMetricFamily(
            "pyisolate_method_calls", "calls of the method, finished", labels=per
        )
        m_errors = CounterMetricFamily(
            "pyisolate_method_errors", "calls of the method that raised", labels=per
        )
        m_timeouts = CounterMetricFamily(
            "pyisolate_method_timeouts", "calls of the method past their deadline", labels=per
        )
        latency = GaugeMetricFamily(
            "pyisolate_method_latency_seconds",
            "call latency seen from the host, of the latest calls",
            labels=[*per, "quantile"],
        )
        for name, st in stats.items():
            for key, family in counters.items():
                value = st.get(key)
                if value is not None:
                    family.add_metric([name], float(value))
            for key, gauge in gauges.items():
                value = st.get(key)
                if value is not None:
                    gauge.add_metric([name], float(value))
            up.add_metric([name], 1.0 if st.get("state") == "ready" else 0.0)
            for method, m in st.get("methods", {}).items():
                m_calls.add_metric([name, method], m["calls"])
                m_errors.add_metric([name, method], m["errors"])
                m_timeouts.add_metric([name, method], m["timeouts"])
                for q, key in (("0.5", "p50_ms"), ("0.99", "p99_ms")):
                    if m.get(key) is not None:
                        latency.add_metric([name, method, q], m[key] / 1000.0)
        yield from counters.values()
        yield from gauges.values()
        yield from (up, m_calls, m_errors, m_timeouts, latency)


_COUNTERS = {  # stats key -> help (the metric: pyisolate_extension_<key>_total)
    "calls": "calls finished: answered, raised or timed out",
    "errors": "calls that raised (timeouts among them)",
    "timeouts": "calls past their deadline",
    "cancelled": "calls their caller cancelled",
    "bytes_in": "request bodies sent to the extension through the broker, in bytes",
    "bytes_out": "reply bodies the extension sent back through the broker, in bytes",
    "cpu_s": "user and system CPU seconds of its process",
}
_GAUGES = {  # stats key -> (metric name, help)
    "in_flight": ("in_flight", "calls waiting for an answer now"),
    "rss_bytes": ("rss_bytes", "resident memory of its process"),
    "shm_bytes": ("shm_bytes", "shared memory its process maps (its tensors' regions)"),
}


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ImportError(
            "the Prometheus export needs prometheus_client: pip install prometheus_client"
        ) from None
    return prometheus_client


def metrics_text(collector: PrometheusCollector) -> str:
    """The Prometheus text exposition of one collector's metrics."""
    prom = _prometheus()
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text: bytes = prom.generate_latest(registry)
    return text.decode()
