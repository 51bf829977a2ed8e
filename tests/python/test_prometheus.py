"""The stats' Prometheus export (prometheus_client): manager.metrics_text()
and manager.prometheus_collector(), scraped from another thread too."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import prometheus_client  # make python installs it
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ext_config, manager, run


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_text_counts_the_calls(venv_root: Path) -> None:
    async def main() -> tuple[str, str, Any]:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("metrics", "basic"))
            for i in range(7):
                assert await ext.echo(i) == i
            with pytest.raises(ValueError):
                await ext.fail("value")
            text = mgr.metrics_text()
            # A metrics server scrapes from its own thread while the loop runs.
            registry = prometheus_client.CollectorRegistry(auto_describe=False)
            registry.register(mgr.prometheus_collector())
            scraped = await asyncio.to_thread(prometheus_client.generate_latest, registry)
            return text, scraped.decode(), ext.pid

    text, scraped, pid = run(main())
    for t in (text, scraped):
        got = _samples(t)
        ext = (("extension", "metrics"),)
        assert got[("pyisolate_extension_calls_total", ext)] == 8
        assert got[("pyisolate_extension_errors_total", ext)] == 1
        assert got[("pyisolate_extension_in_flight", ext)] == 0
        assert got[("pyisolate_extension_up", ext)] == 1
        assert got[("pyisolate_extension_rss_bytes", ext)] > 0
        assert got[("pyisolate_extension_bytes_in_total", ext)] > 0
        echo = (("extension", "metrics"), ("method", "echo"))
        assert got[("pyisolate_method_calls_total", echo)] == 7
        assert (
            got[("pyisolate_method_errors_total", (("extension", "metrics"), ("method", "fail")))]
            == 1
        )
        p50 = got[("pyisolate_method_latency_seconds", (*echo, ("quantile", "0.5")))]
        p99 = got[("pyisolate_method_latency_seconds", (*echo, ("quantile", "0.99")))]
        assert 0 < p50 <= p99
    assert pid is not None
