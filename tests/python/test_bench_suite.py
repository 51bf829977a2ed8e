"""The benchmark suite (perf/suite.py) must not rot: run it in --tiny mode
without the peer and check that every workload produced a number and that
the JSON, the markdown table and the chart were written; and that it is
fair: systems take turns in alternating order, start-up and memory run
with the same share_torch on every system, the C floors' halves merge, and
a goal over several rows names every row a system could not measure.
Nothing about speed."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
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
    p = subprocess.run(
        [sys.executable, str(SUITE), "--tiny", "--no-peer", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(ROOT),
    )
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
    for want in (
        "int",
        "short str",
        "10 KB str",
        "1 MB str",
        "1 in flight",
        "8 in flight",
        "64 in flight",
        "512 in flight",
        "venv creation alone, share_torch=True",
        "venv creation alone, share_torch=False",
    ):
        assert want in names, want
    assert {g["goal"] for g in data["goals"]}
    assert data["meta"]["cpus"] and data["meta"]["python"]


def test_the_crossing_goal_quotes_the_zero_copy_floor(suite_run):
    """crossing_bench ran in the suite: both systems have a ratio for every
    row, and the repeated-crossing goal line quotes them."""
    out, _ = suite_run
    data = json.loads((out / "suite.json").read_text())
    rows = data["meta"]["crossing"]["rows"]
    assert {"int", "numpy 4 KiB", "numpy 64 MiB"} <= set(rows)
    for row, cells in rows.items():
        for system in ("ours", "zero-copy floor"):
            assert cells[system]["median_ratio"] > 0, (row, system)
    line = next(g for g in data["goals"] if g["goal"].startswith("[12] repeated numpy"))
    assert "the zero-copy floor's" in line["detail"]
    # the repeated rows' own int echo, timed in the same turns
    rep = [r for r in data["rows"] if r["workload"] == "tensors" and r["case"] == "repeated"]
    assert rep and all(r["systems"]["ours"]["int_p50"] > 0 for r in rep)
    assert "paired" in line["detail"]


def test_start_up_and_memory_both_ways_of_share_torch(suite_run):
    out, _ = suite_run
    rows = json.loads((out / "suite.json").read_text())["rows"]
    for workload in ("start-up", "memory"):
        ways = {
            r.get("share_torch")
            for r in rows
            if r["workload"] == workload and "/dev/shm" not in r["row"]
        }
        assert ways == {True, False}, (workload, ways)


def test_systems_take_turns_in_alternating_order(suite_run):
    out, _ = suite_run
    turns = json.loads((out / "suite.json").read_text())["meta"]["turn_orders"]
    assert len(turns) > 10
    firsts = set()
    for a, b in itertools.pairwise(turns):
        if sorted(a) == sorted(b) and len(a) > 1:
            assert b == a[::-1], (a, b)  # A B, then B A
        firsts.add(a[0])
    assert len(firsts) > 1  # nobody always goes first


def _suite_module():
    spec = importlib.util.spec_from_file_location("pyi_perf_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _suite(tmp_path):
    m = _suite_module()
    args = argparse.Namespace(tiny=True, full=False, out=str(tmp_path), cuda_only=False)
    return m, m.Suite(args)


def _cell(p50):
    return {"n": 3, "mean": p50, "std": 0.0, "min": p50, "max": p50, "p50": p50, "p99": p50}


def test_a_goal_names_rows_the_peer_could_not_measure(tmp_path):
    """A row where the peer failed is not dropped from the worst ratio: the
    goal line names it and cannot PASS."""
    _, suite = _suite(tmp_path)
    suite.cuda_why = "no GPU in this test"
    suite.systems = {"ours": None, "peer": None, "asyncio": None}
    for value, peer in (
        ("int", _cell(300.0)),
        ("str", _cell(300.0)),
        ("1m", {"error": "the peer's host process exited"}),
    ):
        suite.add_row(
            "small calls",
            value,
            "us",
            {"ours": _cell(50.0), "peer": peer, "asyncio": _cell(40.0)},
            value=value,
        )
    goals = {g["goal"]: g for g in suite.goals()}
    g = goals["small-call p50 <= 1/3 of the peer's"]
    assert g["pass"] is None, g  # 0.17x where measured, but one row is missing
    assert "NOT MEASURED" in g["detail"] and "1m" in g["detail"]
    assert "exited" in g["detail"]
    # and where every row is measured, the worst decides
    suite.rows[2]["systems"]["peer"] = _cell(60.0)
    goals = {g["goal"]: g for g in suite.goals()}
    g = goals["small-call p50 <= 1/3 of the peer's"]
    assert g["pass"] is False and "1m" in g["detail"] and "NOT MEASURED" not in g["detail"]


def test_c_floor_halves_merge(tmp_path):
    _, suite = _suite(tmp_path)
    suite.add_row("small calls", "int", "us", {}, value="int")
    suite.add_row("throughput", "8 in flight", "calls/s", {}, depth=8)

    def half(samples, rate):
        return {
            "latency": [{"system": "socketpair", "size": 16, "p50_us": 0, "samples_us": samples}],
            "throughput": [{"system": "zmq-direct", "in_flight": 8, "calls_per_s": rate}],
        }

    suite.c_rows([half([10.0, 11.0, 12.0], 1000.0), half([20.0, 21.0], 3000.0)])
    lat = suite.rows[0]["systems"]["c-socketpair"]
    assert lat["n"] == 5 and lat["min"] == 10.0 and lat["max"] == 21.0
    tp = suite.rows[1]["systems"]["c-zmq"]
    assert tp["n"] == 2 and tp["min"] == 1000.0 and tp["max"] == 3000.0
