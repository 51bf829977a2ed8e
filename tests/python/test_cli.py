"""The ``pyisolate`` command on a real venv root: list, repair, prune,
doctor, run (as a user runs it: a separate process, output piped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import manager, run, subprocess_env

EXT = """
import os
from pyisolate import ExtensionBase


class Tool(ExtensionBase):
    async def add(self, a, b=0):
        return a + b

    async def where(self):
        return os.getpid()
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pyisolate", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )


def rows(out: str) -> dict[str, dict[str, str]]:
    lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
    head, body = lines[0], lines[1:]
    return {r[0]: dict(zip(head, r, strict=True)) for r in body}


@pytest.fixture
def tool(tmp_path: Path) -> Path:
    (tmp_path / "tool").mkdir()
    (tmp_path / "tool" / "__init__.py").write_text(EXT)
    return tmp_path / "tool"


def _load(root: Path, tool: Path, name: str) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(root) as mgr:
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(name=name, module_path=str(tool))
            )
            assert await ext.add(1, 2) == 3

    run(main())


def test_list_repair_prune(tmp_path: Path, tool: Path) -> None:
    root = tmp_path / "venvs"
    _load(root, tool, "tool_a")
    _load(root, tool, "tool_b")
    out = cli("list", "--root", str(root))
    assert out.returncode == 0, out.stderr
    listed = rows(out.stdout)
    assert set(listed) == {"tool_a", "tool_b"}
    assert listed["tool_a"]["health"] == "healthy"
    assert listed["tool_a"]["fingerprint"] == listed["tool_b"]["fingerprint"]
    assert listed["tool_a"]["size"].split()[1] in ("KiB", "MiB")

    # a broken venv is said so, and repair makes it again
    (root / "tool_b" / "bin" / "python").unlink()
    assert (
        rows(cli("list", "--root", str(root)).stdout)["tool_b"]["health"]
        == "broken: no bin/python"
    )
    out = cli("repair", "tool_b", "--root", str(root))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (root / "tool_b" / "bin" / "python").exists()
    assert rows(cli("list", "--root", str(root)).stdout)["tool_b"]["health"] == "healthy"
    out = cli("repair", "nobody", "--root", str(root))
    assert out.returncode == 1 and "no venv named 'nobody'" in out.stdout
    assert "tool_a" in out.stdout

    # prune: only what was unused for longer than asked, dry run first
    old = time.time() - 40 * 86400
    os.utime(root / "tool_a" / ".pyisolate-fingerprint", (old, old))
    runtime = root / ".pyisolate-runtime" / "gone-install"
    runtime.mkdir(parents=True)
    (runtime / "pyisolate").symlink_to(tmp_path / "no-such-install")
    out = cli("prune", "--older-than", "30", "--dry-run", "--root", str(root))
    assert out.returncode == 0, out.stderr
    assert "would remove venv tool_a" in out.stdout and "tool_b" not in out.stdout
    assert "would remove runtime folder gone-install" in out.stdout
    assert (root / "tool_a").exists() and runtime.exists()
    out = cli("prune", "--older-than", "30", "--root", str(root))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not (root / "tool_a").exists() and not runtime.exists()
    assert (root / "tool_b" / "bin" / "python").exists()
    # the live runtime folder (this install's) stays
    assert any((root / ".pyisolate-runtime").iterdir())

    # loading again marks the venv used: prune leaves it
    _load(root, tool, "tool_b")
    out = cli("prune", "--older-than", "1", "--dry-run", "--root", str(root))
    assert "tool_b" not in out.stdout


def test_run_calls_one_method(tmp_path: Path, tool: Path) -> None:
    root = tmp_path / "venvs"
    out = cli("run", str(tool), "add", "[20, 22]", "--root", str(root))
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == 42
    out = cli("run", str(tool), "add", '{"a": "x", "b": "y"}', "--root", str(root))
    assert json.loads(out.stdout.strip().splitlines()[-1]) == "xy"
    out = cli("run", str(tool), "where", "--root", str(root))
    assert json.loads(out.stdout.strip().splitlines()[-1]) != os.getpid()
    bad = cli("run", str(tool), "add", "[1,", "--root", str(root))
    assert bad.returncode == 2 and "not JSON" in bad.stdout
    missing = cli("run", str(tool), "nope", "--root", str(root))
    assert missing.returncode == 1 and "AttributeError" in missing.stdout


def test_doctor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = cli("doctor")
    assert out.returncode == 0, out.stdout
    found = rows(out.stdout)
    assert found["uv"]["status"] == "ok" and found["libraries"]["found"].startswith("pyisolate ")
    assert "libzmq " in found["libraries"]["found"]
    assert found["/dev/shm"]["status"] == "ok"
    assert found["CUDA driver"]["status"] in ("ok", "absent")
    assert found["sandbox launcher"]["status"] == "ok"
    assert found["Landlock"]["status"] in ("ok", "absent")
    assert found["seccomp"]["status"] in ("ok", "absent")
    assert (
        found["sandbox"]["status"] == "ok" or "not enforced here" in found["sandbox"]["what to do"]
    )
    # something needed missing: non-zero, and what to do
    from pyisolate import _cli, _venv

    def no_uv() -> str:
        raise RuntimeError("the uv binary was not found")

    monkeypatch.setattr(_venv, "uv_binary", no_uv)
    assert _cli.main(["doctor"]) == 1
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("uv\t"))
    assert "MISSING" in line and "pip install uv" in line


def test_bench_reports_ratios_of_one_run(venv_root: Path) -> None:
    """pyisolate bench measures both sides (a number for every row, as many
    samples on each side) and its ratios are the ones of its own medians;
    nothing about speed."""
    p = cli("bench", "--calls", "30", "--rounds", "2", "--json", "--root", str(venv_root))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    report = json.loads(p.stdout)
    assert [r["row"] for r in report["rows"]] == ["int", "short str", "10 KB str", "1 MB str"]
    for r in report["rows"]:
        for side in ("ours", "asyncio"):
            s = r[side]
            assert s["n"] == 60  # 2 turns of 30 calls
            assert 0 < s["min_us"] <= s["p50_us"] <= s["p99_us"] <= s["max_us"]
        assert r["ratio_p50"] == pytest.approx(r["ours"]["p50_us"] / r["asyncio"]["p50_us"])
        assert r["ratio_p99"] == pytest.approx(r["ours"]["p99_us"] / r["asyncio"]["p99_us"])
    piped = cli("bench", "--calls", "5", "--rounds", "2", "--root", str(venv_root))
    assert piped.returncode == 0, piped.stderr[-2000:]
    table = rows(piped.stdout)
    assert set(table) == {"int", "short str", "10 KB str", "1 MB str"}
    assert table["int"]["ours/asyncio p50"].endswith("x")
    bad = cli("bench", "--rounds", "1")
    assert bad.returncode == 2
