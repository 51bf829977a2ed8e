"""The extension process as docs/lifecycle.md and docs/security.md describe
it: a Python extension whose event loop hangs is killed after
heartbeat_timeout; it runs in a process group of its own (a terminal's
Ctrl-C reaches only the host), with /dev/null as standard input, no
descriptor of the host's, default signal dispositions and an empty signal
mask, whatever the host had."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import pyisolate
from conftest import HERE, ext_config, manager, run, subprocess_env


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_hung_python_extension_is_killed_after_heartbeat_timeout(venv_root) -> None:
    timeout = 4.0  # long enough that a loaded machine starves no one else that long

    async def main() -> None:
        async with manager(venv_root, heartbeat_timeout=timeout) as mgr:
            ext = await mgr.load_extension(ext_config("hung_loop", "probe"))
            other = await mgr.load_extension(ext_config("hung_loop_bystander", "probe"))
            pid = await ext.getpid()
            start = time.monotonic()
            with pytest.raises(pyisolate.ExtensionCrashed) as info:
                await ext.block_loop(3600)  # would block its event loop for an hour
            took = time.monotonic() - start
            assert "heartbeat" in str(info.value), info.value
            # Lost no earlier than heartbeat_timeout after its last sign of
            # life, which came at most one heartbeat (1 s) before the call.
            assert took >= timeout - 1.0, took
            # Killed (SIGKILL) by the broker, not left to sleep on.
            for _ in range(200):
                if _gone(pid) and ext.exit_status is not None:
                    break
                await asyncio.sleep(0.05)
            assert _gone(pid), f"the hung extension {pid} is still there"
            assert ext.exit_status == -signal.SIGKILL
            assert not ext.alive
            with pytest.raises(pyisolate.ExtensionCrashed):
                await ext.getpid()
            assert isinstance(await other.getpid(), int)  # the others keep working

    run(main())


# A host in a process group of its own, as a program started from a
# terminal is: before loading its extension it ignores SIGUSR1, blocks
# SIGUSR2 and holds an inheritable file and socket; it prints what the
# extension sees, waits for Ctrl-C (SIGINT to its process group, what the
# terminal sends), then prints how many SIGINTs the extension got.
HOST = textwrap.dedent("""
    import asyncio, json, os, signal, socket, sys
    sys.path.insert(0, {here!r})
    import pyisolate
    from conftest import ext_config

    async def main():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGUSR2}})
        marker = open({marker!r}, "w")
        os.set_inheritable(marker.fileno(), True)
        sock = socket.socket()
        os.set_inheritable(sock.fileno(), True)
        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()
        loop.add_signal_handler(signal.SIGINT, interrupted.set)
        mgr = pyisolate.ExtensionManager(pyisolate.ExtensionBase,
            pyisolate.ExtensionManagerConfig(venv_root_path={root!r}))
        ext = await mgr.load_extension(ext_config("ctrl_c", "probe"))
        await ext.watch_sigint()
        host_fds = {{}}
        for fd in os.listdir("/proc/self/fd"):
            try:
                host_fds[fd] = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                pass
        print(json.dumps({{"host": {{"pid": os.getpid(), "pgid": os.getpgid(0),
                                     "fds": host_fds,
                                     "socket": os.readlink(f"/proc/self/fd/{{sock.fileno()}}")}},
                          "ext": await ext.process()}}), flush=True)
        await interrupted.wait()
        print(await ext.sigints(), flush=True)
        await mgr.stop_all()

    asyncio.run(main())
""")


def test_extension_process_group_stdin_descriptors_signals(venv_root, tmp_path) -> None:
    marker = tmp_path / "host-only"
    script = tmp_path / "host.py"
    script.write_text(HOST.format(here=str(HERE), root=str(venv_root), marker=str(marker)))
    # Its standard input is a pipe: the extension's must not be.
    host = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        start_new_session=True,
    )
    try:
        line = host.stdout.readline()
        assert line, "the host printed nothing"
        seen = json.loads(line)
        h, e = seen["host"], seen["ext"]
        fds = {int(fd): target for fd, target in e["fds"].items()}

        # A process group of its own, not the host's: Ctrl-C at the
        # terminal (SIGINT to the foreground group) misses it.
        assert e["pgid"] == e["pid"] != h["pgid"]
        # Standard input is /dev/null; output and error go to the host.
        assert fds[0] == "/dev/null"
        assert fds[1].startswith("pipe:") and fds[2].startswith("pipe:")
        # No descriptor of the host's, even inheritable ones.
        assert str(marker) not in fds.values()
        assert h["socket"] not in fds.values()
        shared = {t for fd, t in fds.items() if fd > 2} & set(h["fds"].values())
        shared = {t for t in shared if not t.startswith("anon_inode:") and t != "/dev/null"}
        assert not shared, f"the extension holds the host's {shared}"
        # Default dispositions and an empty mask, whatever the host had
        # (SIGINT is the one the extension ignores itself until the probe
        # took it over).
        assert e["usr1_default"]
        assert not e["ignored"] & (1 << (signal.SIGUSR1 - 1))
        assert e["blocked"] == 0

        # Ctrl-C: SIGINT to the host's process group reaches the host only.
        os.killpg(h["pgid"], signal.SIGINT)
        assert host.stdout.readline().strip() == "0", "the extension got the host's SIGINT"
        assert host.wait(timeout=60) == 0
    finally:
        if host.poll() is None:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
        host.stdin.close()
        host.stdout.close()


def test_sigint_probe_sees_a_sigint(venv_root) -> None:
    """The other test's probe is not blind: a SIGINT sent to the
    extension's own process group is counted."""

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(ext_config("ctrl_c_probe", "probe"))
            info = await ext.process()
            assert info["pgid"] != os.getpgid(0)  # never signal our own group
            await ext.watch_sigint()
            os.killpg(info["pgid"], signal.SIGINT)
            for _ in range(100):
                if await ext.sigints() == 1:
                    break
                await asyncio.sleep(0.05)
            assert await ext.sigints() == 1

    run(main())
