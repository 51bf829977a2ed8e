"""Reload edge cases: a call's deadline reached while a reload is underway,
a reload whose dependencies changed (the venv is rebuilt), and stop()
during a reload (the new process is stopped too, nothing is left)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

import pyisolate
from conftest import _children, manager, run

SOURCE = """
import os
import time

from pyisolate import ExtensionBase

time.sleep(float(os.environ.get("LOAD_DELAY", "0")))  # a slow load, when asked


class Edge(ExtensionBase):
    async def getpid(self):
        return os.getpid()

    async def tiny_version(self):
        import tinypkg

        return tinypkg.VERSION
"""


def _module(tmp_path: Path) -> Path:
    folder = tmp_path / "edge"
    folder.mkdir(exist_ok=True)
    (folder / "__init__.py").write_text(SOURCE)
    return folder


def _wheel(where: Path, version: str) -> Path:
    """A tiny pure-Python wheel, tinypkg <version> (made here: no index)."""
    files = {
        "tinypkg/__init__.py": f"VERSION = {version!r}\n",
        f"tinypkg-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n"
        ),
        f"tinypkg-{version}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: pyisolate-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = f"tinypkg-{version}.dist-info/RECORD"
    lines = []
    for name, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        b64 = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        lines.append(f"{name},sha256={b64},{len(text.encode())}")
    lines.append(f"{record},,")
    path = where / f"tinypkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
        zf.writestr(record, "\n".join(lines) + "\n")
    return path


def test_deadline_reached_during_a_reload(venv_root: Path, tmp_path: Path) -> None:
    folder = _module(tmp_path)

    async def main() -> None:
        async with manager(venv_root) as mgr:
            cfg = pyisolate.ExtensionConfig(name="edge_deadline", module_path=str(folder))
            ext = await mgr.load_extension(cfg)
            old = await ext.getpid()
            slow = pyisolate.ExtensionConfig(
                name="edge_deadline", module_path=str(folder), env={"LOAD_DELAY": "3"}
            )
            reload = asyncio.ensure_future(ext.reload(slow))
            await asyncio.sleep(0.2)  # the reload has begun: its new process loads slowly
            assert not reload.done()
            # A call with a deadline waits for the new process and gives up
            # at its deadline; one without waits and reaches the new process.
            with pytest.raises(pyisolate.CallTimeout, match="restarted"):
                await ext.with_timeout(0.5).getpid()
            patient = asyncio.ensure_future(ext.getpid())
            await reload
            new = await patient
            assert new != old and new == ext.pid

    run(main())


def test_reload_with_changed_dependencies_rebuilds_the_venv(
    venv_root: Path, tmp_path: Path
) -> None:
    folder = _module(tmp_path)
    v1, v2 = _wheel(tmp_path, "1.0"), _wheel(tmp_path, "2.0")

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(
                    name="edge_deps", module_path=str(folder), dependencies=[str(v1)]
                )
            )
            assert await ext.tiny_version() == "1.0"
            venv = venv_root / "edge_deps"
            before = (venv / ".pyisolate-fingerprint").read_text()
            await ext.reload(
                pyisolate.ExtensionConfig(
                    name="edge_deps", module_path=str(folder), dependencies=[str(v2)]
                )
            )
            assert await ext.tiny_version() == "2.0"
            assert ext.config.dependencies == [str(v2)]
            assert (venv / ".pyisolate-fingerprint").read_text() != before

    run(main())


def test_stop_during_a_reload(venv_root: Path, tmp_path: Path) -> None:
    folder = _module(tmp_path)

    async def main() -> None:
        async with manager(venv_root) as mgr:
            kinds: list[str] = []
            mgr.on_event(lambda e: kinds.append(e.kind))
            ext = await mgr.load_extension(
                pyisolate.ExtensionConfig(name="edge_stop", module_path=str(folder))
            )
            slow = pyisolate.ExtensionConfig(
                name="edge_stop", module_path=str(folder), env={"LOAD_DELAY": "30"}
            )
            reload = asyncio.ensure_future(ext.reload(slow))
            await asyncio.sleep(0.5)  # its new process is loading (for 30 s)
            assert len(_children()) == 2
            await ext.stop()
            # stop() returned: both processes are gone, the reload failed.
            assert _children() == set()
            with pytest.raises(pyisolate.ExtensionStopped):
                await reload
            assert not ext.alive
            with pytest.raises(pyisolate.ExtensionStopped):
                await ext.getpid()
            assert "reloaded" not in kinds and "reload_failed" not in kinds

    run(main())
