"""Calling extensions from synchronous code."""

from __future__ import annotations

import pytest

import pyisolate
from conftest import ext_config


def test_sync_manager(venv_root) -> None:
    config = pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)
    with pyisolate.SyncExtensionManager(pyisolate.ExtensionBase, config) as manager:
        ext = manager.load_extension(ext_config("sync_user", "basic"))
        assert ext.echo((1, 2)) == (1, 2)
        assert ext.sync_echo("x") == "x"
        with pytest.raises(ValueError, match="bad value"):
            ext.fail("value")
        with pytest.raises(pyisolate.CallTimeout):
            ext.call("sleep", 10, timeout=0.3)
        assert ext.pid is not None
        ext.stop()


def test_sync_manager_cleans_up_at_exit(venv_root, tmp_path) -> None:
    """A program that never calls stop_all(): its extensions end with it and
    nothing complains on its output."""
    import subprocess
    import sys

    from conftest import HERE, subprocess_env

    script = tmp_path / "forgetful.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "import pyisolate\n"
        "from conftest import ext_config\n"
        f"m = pyisolate.SyncExtensionManager(config={{'venv_root_path': {str(venv_root)!r}}})\n"
        "e = m.load_extension(ext_config('forgetful', 'basic'))\n"
        "print('pid', e.pid, e.echo('hi'))\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "dangling" not in proc.stdout + proc.stderr
    pid = int(proc.stdout.split()[1])
    import os

    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_sync_operations(venv_root, tmp_path) -> None:
    """The operations surface from blocking code: events, stats, reload,
    lifecycle events, profile, trace and the Prometheus text."""
    import json
    import threading

    config = pyisolate.ExtensionManagerConfig(venv_root_path=venv_root)
    with pyisolate.SyncExtensionManager(pyisolate.ExtensionBase, config) as manager:
        kinds: list[str] = []
        unsubscribe = manager.on_event(lambda e: kinds.append(e.kind))
        ext = manager.load_extension(ext_config("sync_ops", "events"))
        got: list[int] = []
        all_in = threading.Event()

        def on_progress(p):
            got.append(p["i"])
            if len(got) == 5:
                all_in.set()

        ext.register_event_handler("progress", on_progress)
        assert ext.progress_sync(5) == 5
        assert all_in.wait(60)
        assert got == [0, 1, 2, 3, 4]
        st = ext.stats()
        assert st["calls"] == 1 and st["methods"]["progress_sync"]["calls"] == 1
        assert manager.stats()["sync_ops"]["calls"] == 1
        assert "pyisolate_extension_calls_total" in manager.metrics_text()
        pid = ext.pid
        ext.reload()
        assert ext.pid != pid and ext.alive
        manager.reload("sync_ops")
        assert kinds.count("reloaded") == 2
        assert ext.echo(3) == 3
        profile = ext.profile(0.2, 0.01)
        assert profile.pid == ext.pid and profile.samples > 0
        path = tmp_path / "sync.json"
        with manager.trace(path):
            assert ext.echo(4) == 4
        events = json.loads(path.read_text())["traceEvents"]
        spans = [e for e in events if e["ph"] == "X" and e["cat"] != "broker"]
        assert sorted((e["cat"], e["args"]["method"]) for e in spans) == [
            ("call", "echo"),
            ("serve", "echo"),
        ]
        unsubscribe()
        ext.stop()
        assert not ext.alive and "stopped" not in kinds
