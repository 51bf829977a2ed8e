"""A remote extension across network namespaces: the host runs in one (a
subprocess under ``ip netns exec``), the remote runner in another, joined
by a veth pair; tcp with CURVE is the only path between them. Cutting the
link (veth down) fails the pending call within the heartbeat window and
the runner exits by itself. Needs root and ``ip netns``: skipped, with the
reason, where namespaces cannot be made."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import EXTENSIONS, HERE, subprocess_env

pytest.importorskip("numpy")

# The host: loads a remote extension, prints its ticket, checks a call and
# an array, then leaves a call pending and reports how it ended.
HOST = r"""
import asyncio, sys, time
import numpy as np
import pyisolate
from shared_apis import Relay, Store

async def main():
    mgr = pyisolate.ExtensionManager(pyisolate.ExtensionBase, pyisolate.ExtensionManagerConfig(
        venv_root_path=sys.argv[1], heartbeat_timeout=2.0, remote_endpoint=sys.argv[2]))
    try:
        ext = mgr.load_extension(pyisolate.ExtensionConfig(
            name="across", module_path=sys.argv[3], remote=True, apis=[Store, Relay]))
        print("TICKET", ext.ticket, flush=True)
        await asyncio.wait_for(ext.wait_ready(), 60)
        a = np.arange(1 << 20, dtype=np.float64)
        same = bool((await ext.echo(a) == a).all())
        print("ECHO", same, await ext.store_set("k", 1), flush=True)
        pending = asyncio.ensure_future(ext.sleep(300))
        await asyncio.sleep(0.5)
        print("PENDING", pending.done(), flush=True)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(pending, 120)
            print("ANSWERED", flush=True)
        except pyisolate.ExtensionCrashed as exc:
            print("CRASHED %.1f %s" % (time.monotonic() - t0, exc), flush=True)
    finally:
        await mgr.stop_all()

asyncio.run(main())
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str, str, str]]:
    """Two namespaces joined by a veth pair: (host ns, its address, remote
    ns, the remote end's device)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and the ip command (iproute2)")
    tag = f"{os.getpid() % 100000}"
    a, b = f"pyi-{tag}-a", f"pyi-{tag}-b"
    dev_a, dev_b = f"pyi{tag}a", f"pyi{tag}b"
    net = f"10.{77 + os.getpid() % 100}.{os.getpid() % 250}"
    made: list[str] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns)
            made.append(ns)
        _ip("link", "add", dev_a, "type", "veth", "peer", "name", dev_b)
        _ip("link", "set", dev_a, "netns", a)
        _ip("link", "set", dev_b, "netns", b)
        for ns, dev, host in ((a, dev_a, 1), (b, dev_b, 2)):
            _ip("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except (subprocess.CalledProcessError, OSError) as exc:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        err = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot make network namespaces here: {exc} {err.decode().strip()}")
    try:
        yield a, f"{net}.1", b, dev_b
    finally:
        for ns in made:  # the veth pair goes with them
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_remote_extension_across_namespaces_and_cut_link(
    namespaces: tuple[str, str, str, str], venv_root: Path
) -> None:
    host_ns, host_ip, far_ns, far_dev = namespaces
    env = subprocess_env()
    env["PYTHONPATH"] = str(HERE)  # shared_apis
    host = subprocess.Popen(
        ["ip", "netns", "exec", host_ns, sys.executable, "-c", HOST, str(venv_root),
         f"tcp://{host_ip}:*", str(EXTENSIONS / "basic")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    far = None
    lines: list[str] = []

    def expect(word: str) -> str:
        assert host.stdout is not None
        for line in host.stdout:
            lines.append(line.rstrip())
            if line.startswith(word):
                return line.split(None, 1)[1].strip() if " " in line else ""
        raise AssertionError(f"the host ended before {word}:\n" + "\n".join(lines))

    try:
        ticket = expect("TICKET")
        from pyisolate.remote import read_ticket

        assert read_ticket(ticket)["endpoint"].startswith(f"tcp://{host_ip}:")
        far_env = subprocess_env()
        far_env["PYI_TICKET"] = ticket  # "-": from the environment
        far = subprocess.Popen(
            ["ip", "netns", "exec", far_ns, sys.executable, "-m", "pyisolate.remote", "-",
             str(EXTENSIONS / "basic")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=far_env, text=True,
        )  # fmt: skip
        assert expect("ECHO") == "True 1"  # the array; the singleton on the host
        assert expect("PENDING") == "False"
        _ip("-n", far_ns, "link", "set", far_dev, "down")  # cut the link
        crashed = expect("CRASHED")
        assert "lost" in crashed, crashed  # the broker lost it: heartbeats stopped
        # the runner notices the silence and exits by itself
        out, _ = far.communicate(timeout=120)
        assert far.returncode == 0, out
        assert "the broker went silent" in out, out
        host.wait(timeout=60)
        print("pending call failed after (s):", crashed.split()[0])
    finally:
        for proc in (far, host):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)
        if host.stdout is not None:
            host.stdout.close()
