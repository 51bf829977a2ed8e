"""The leak check that runs after every test (conftest.no_leaks) sees what
it claims to see, and only that: regions (named, and mapped here),
runtime directories, processes and sockets of what the tests started, not
of other programs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

import pyisolate
from conftest import STARTED, LeakCheck, our_regions, our_rundirs, subprocess_env

# A host in a process of its own: a broker (its runtime directory) and a
# region of its session; it prints both and waits to be killed.
HOST = textwrap.dedent("""
    import os, sys, numpy
    import pyisolate, pyisolate._core as core
    broker = core.Broker()
    arr = pyisolate.share(numpy.zeros(1000))
    print(os.path.basename(broker.rundir), pyisolate.region_name(arr)[1:], flush=True)
    sys.stdin.read()
""")


def _forget(regions: set[str]) -> None:
    """Take what a test left on purpose out of the regions reported."""
    LeakCheck.reported_regions -= regions


def test_sees_a_region_of_this_process() -> None:
    np = pytest.importorskip("numpy")
    check = LeakCheck()
    arr = pyisolate.share(np.zeros(1000))
    name = pyisolate.region_name(arr)[1:]
    assert name in our_regions()
    leaks = check.leaks(wait=0)
    _forget({name})
    assert any(name in line for line in leaks if "regions left" in line), leaks
    assert any(name in line for line in leaks if "still mapped" in line), leaks
    del arr
    assert name not in our_regions()


def test_sees_processes_and_sockets_left_open() -> None:
    check = LeakCheck()
    sleeper = subprocess.Popen(["sleep", "60"])
    sock = socket.socket()
    try:
        leaks = check.leaks(wait=0.2)
        assert any(str(sleeper.pid) in line for line in leaks if "processes" in line), leaks
        assert any(str(sock.fileno()) in line for line in leaks if "sockets" in line), leaks
    finally:
        sock.close()
        sleeper.kill()
        sleeper.wait()
    assert not check.leaks(wait=0)


def test_sees_a_host_it_started_and_what_it_left() -> None:
    """A host started with subprocess is one of ours: its runtime directory
    and regions are seen while it lives; killed, the next host (the check
    starts one) removes both, as for any dead host."""
    pytest.importorskip("numpy")
    host = subprocess.Popen(
        [sys.executable, "-c", HOST],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        rundir, region = host.stdout.readline().split()
        assert host.pid in STARTED
        assert region.startswith(f"pyi-{host.pid}-") and region in our_regions()
        assert rundir in our_rundirs()[1]
        # Another program's host is none of ours.
        assert region not in our_regions({os.getpid()})
        assert rundir not in our_rundirs({os.getpid()})[1]
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
        host.stdin.close()
        host.stdout.close()
    assert rundir not in our_rundirs()[1]
    assert region not in our_regions()
