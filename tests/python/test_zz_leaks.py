"""Runs last: nothing the suite started is left behind (processes, sockets,
/dev/shm segments, broker runtime directories)."""

from __future__ import annotations

import gc
import os
import time

from conftest import BASELINE, _children, _fds


def test_no_leaked_processes_sockets_or_shm() -> None:
    gc.collect()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = _children() - BASELINE["children"]
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"
    sockets = {k: v for k, v in _fds().items() if v.startswith("socket:")}
    new = set(sockets) - set(BASELINE["sockets"])
    assert not new, f"sockets left open: {new}"
    if os.path.isdir("/dev/shm"):
        shm = set(os.listdir("/dev/shm")) - BASELINE["shm"]
        assert not shm, f"/dev/shm segments left: {shm}"
    # Broker runtime directories: none of this process's, none of a dead host's
    # once a new broker has swept them.
    import pyisolate._core as core

    broker = core.Broker()
    mine = os.path.basename(broker.rundir)
    base = os.path.dirname(broker.rundir)
    broker.close()
    left_dirs = []
    for entry in os.listdir(base):
        pid, _, nonce = entry.partition("-")
        if entry == mine or not (pid.isdigit() and nonce):
            continue  # not a broker's runtime directory
        if pid == str(os.getpid()) or not os.path.exists(f"/proc/{pid}"):
            left_dirs.append(entry)
    assert not left_dirs, f"runtime directories left in {base}: {left_dirs}"
