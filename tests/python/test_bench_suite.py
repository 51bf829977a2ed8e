"""The benchmark suite (perf/suite.py) must not rot: run it in --tiny mode
without the peer and check that every workload produced a number and that
the JSON, the markdown table and the chart were written. Nothing about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "perf" / "suite.py"

WORKLOADS = {"small calls", "tensors", "throughput", "nested calls", "start-up", "memory"}


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    pytest.importorskip("numpy")
    out = tmp_path_factory.mktemp("suite")
    p = subprocess.run([sys.executable, str(SUITE), "--tiny", "--no-peer", "--out", str(out)],
                       capture_output=True, text=True, timeout=240, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return out, p.stdout


def test_outputs_written(suite_run):
    out, stdout = suite_run
    assert (out / "suite.json").stat().st_size > 0
    assert (out / "suite.md").stat().st_size > 0
    png = out / "suite.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "goals (issue 5):" in stdout


def test_every_workload_has_a_number(suite_run):
    out, _ = suite_run
    data = json.loads((out / "suite.json").read_text())
    assert data["excluded"]["peer"] == "--no-peer"
    assert "ours" in data["columns"], data["excluded"]
    rows = data["rows"]
    assert {r["workload"] for r in rows} == WORKLOADS
    for r in rows:
        ours = r["systems"]["ours"]
        assert isinstance(ours.get("p50"), (int, float)), (r["row"], ours)
        assert ours["p50"] >= 0 and ours["n"] >= 1, (r["row"], ours)
    # the floors answer wherever they can (calls, tensors, throughput)
    for floor in ("asyncio", "zmq"):
        if floor not in data["columns"]:
            continue
        for r in rows:
            if r["workload"] in ("small calls", "tensors", "throughput"):
                assert "p50" in r["systems"][floor], (floor, r["row"], r["systems"][floor])
    # the table has the workloads of the issue
    names = {r["row"] for r in rows}
    for want in ("int", "short str", "10 KB str", "1 MB str", "1 in flight", "8 in flight",
                 "64 in flight", "512 in flight", "venv creation alone"):
        assert want in names, want
    assert {g["goal"] for g in data["goals"]}
    assert data["meta"]["cpus"] and data["meta"]["python"]
