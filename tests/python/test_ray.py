"""RayLauncher: remote extensions placed, started, watched and stopped by
a Ray cluster. The module starts a two-node cluster on this machine (the
head without the custom resource ``gpu_box``, a second node with two of
it, room for an extension asking for one and its reload; both
with token authentication, as Ray 2.60 wants for a joining node) and stops
it at the end; every extension here is pinned to the second node."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LeakCheck, ext_config, manager, run, subprocess_env

np = pytest.importorskip("numpy")
# The cluster's token: Ray reads these when it is imported.
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
ray = pytest.importorskip("ray", reason="ray is not installed (pip install pyisolate[ray])")

NODE_RESOURCE = "gpu_box"
NUMPY = "numpy>=2.2"  # what the extensions' venvs install (from uv's cache)


RAY_PORTS: set[int] = set()  # the TCP ports Ray's driver in this process listens on


def _tcp_sockets() -> dict[str, tuple[int, str]]:
    """This process's TCP sockets: fd -> (local port, state in hex)."""
    inodes: dict[str, tuple[int, str]] = {}
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                inodes[cols[9]] = (int(cols[1].rsplit(":", 1)[1], 16), cols[3])
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            out[fd] = inodes[target[8:-1]]
    return out


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """conftest's check, less the connections Ray's driver accepted on its
    own ports (from the cluster's processes: Ray's, closed by ray.shutdown)."""
    check = LeakCheck()
    yield
    check.sockets |= {fd for fd, (port, _) in _tcp_sockets().items() if port in RAY_PORTS}
    leaks = check.leaks()
    assert not leaks, "; ".join(leaks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_cli() -> str:
    cli = Path(sys.executable).parent / "ray"
    return str(cli) if cli.exists() else (shutil.which("ray") or "ray")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_COMMON = ["--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]


def _join_node(
    address: str, env: dict[str, str], resource: str, amount: int, log: Any
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a node offering ``amount`` of ``resource`` (``ray start
    --block``: its raylet and workers are this process's descendants) and
    wait until the cluster lists it alive; (its process, its node id)."""
    proc = subprocess.Popen(
        [_ray_cli(), "start", f"--address={address}", "--num-cpus=1",
         f"--resources={{\"{resource}\": {amount}}}", *_COMMON],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        node_id = next(
            (n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource)),
            "",
        )
        if node_id:
            return proc, node_id
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"the Ray node with {resource} did not join: {log.name}")
        time.sleep(0.2)


def _descendants(pid: int) -> set[int]:
    """pid's descendants now (from /proc/PID/task/*/children)."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(c) for c in f.read().split()]
                out.update(kids)
                todo += kids
        except OSError:
            continue
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    """A head node and a second node offering gpu_box; this process
    connected as the driver. Yields the address and the second node's id."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="pyi-ray-", dir="/tmp")  # Ray's socket paths are short
    env = subprocess_env()
    env["RAY_AUTH_MODE"] = os.environ["RAY_AUTH_MODE"]
    env["RAY_AUTH_TOKEN"] = os.environ["RAY_AUTH_TOKEN"]
    logs = [open(os.path.join(temp, f"{n}.log"), "wb") for n in ("head", "node")]
    procs = [
        subprocess.Popen(
            [_ray_cli(), "start", "--head", f"--port={port}", "--num-cpus=1",
             "--include-dashboard=false", f"--temp-dir={temp}", *_COMMON],
            env=env, stdout=logs[0], stderr=subprocess.STDOUT,
        )
    ]  # fmt: skip
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # the head accepts drivers
            try:
                ray.init(address=address, logging_level=logging.WARNING)
                break
            except Exception:
                if procs[0].poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        RAY_PORTS.update(port for port, state in _tcp_sockets().values() if state == "0A")
        node, node_id = _join_node(address, env, NODE_RESOURCE, 2, logs[1])
        procs.append(node)
        yield {"address": address, "node_id": node_id, "env": env, "temp": temp}
    finally:
        ray.shutdown()
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in logs:
            f.close()
        shutil.rmtree(temp, ignore_errors=True)


def _our_actors() -> list[str]:
    return [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("pyisolate-")
    ]


def _removed(path: str) -> bool:
    return not os.path.exists(path)


def _launcher(cluster: dict[str, Any], **kw: Any) -> Any:
    import pyisolate

    kw.setdefault("resources", {NODE_RESOURCE: 1})
    kw.setdefault("placement_timeout", 120)
    return pyisolate.RayLauncher(address=cluster["address"], **kw)


def _handle(ext: Any) -> Any:
    """The launcher's handle of ext's runner (the actor, its node, pids)."""
    return ext._launcher.latest()._handle


def test_ray_extension_calls_singletons_arrays_logs_and_stop(
    cluster: dict[str, Any], venv_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import pyisolate
    from shared_apis import Store

    async def main() -> None:
        async with manager(venv_root) as mgr:
            ext = await mgr.load_extension(
                ext_config(
                    "on_ray",
                    "basic",
                    remote=True,
                    dependencies=[NUMPY],
                    launcher=_launcher(cluster),
                )
            )
            handle = _handle(ext)
            assert handle.node_id == cluster["node_id"]  # the node with gpu_box
            assert _our_actors() == [handle.actor_name]
            where = await asyncio.wrap_future(handle.actor.where.remote().future())
            actor_pid = where["pid"]
            info = await ext.info()
            assert info["pid"] == handle.pid != os.getpid()
            assert await ext.hooks() == ["before_module_loaded", "on_module_loaded:basic"]
            # the host's singletons and callables, called from the node
            await ext.store_set("k", [1, "x"])
            assert Store().data["k"] == [1, "x"]
            assert await ext.call_back(lambda v: v * 2, 21) == 42
            # 64 MiB crosses inline (no shared memory with a remote runner)
            a = np.arange(16 << 20, dtype=np.float32)
            b = await ext.echo(a)
            assert b.nbytes == 64 << 20 and (b == a).all()
            # its output reaches the host's logging
            with caplog.at_level(logging.INFO, logger="pyisolate.extension"):
                await ext.say("hello from the node")
                for _ in range(100):
                    text = "\n".join(r.getMessage() for r in caplog.records)
                    if "] hello from" in text and "to stderr: hello from" in text:
                        break
                    await asyncio.sleep(0.1)
            assert "[on_ray] hello from the node" in text, text
            assert "[on_ray] to stderr: hello from the node" in text, text
            with pytest.raises(ValueError, match="bad value"):
                await ext.fail("value")
            await ext.stop()
            assert not ext.alive
            # no actor, no runner, no actor process, no module folder left
            assert _our_actors() == []
            assert handle.folder and _removed(handle.folder)
            for pid in (handle.pid, actor_pid):
                for _ in range(100):
                    if not _alive(pid):
                        break
                    await asyncio.sleep(0.1)
                assert not _alive(pid), f"process {pid} outlived stop()"
            with pytest.raises(pyisolate.ExtensionStopped):
                await ext.echo(1)
        Store().data.clear()

    run(main())


def test_ray_actor_killed_fails_pending_calls(cluster: dict[str, Any], venv_root: Path) -> None:
    import pyisolate

    async def main() -> None:
        # A heartbeat window far longer than the wait below: only the
        # launcher's report of the actor's death can fail the call in time.
        async with manager(venv_root, heartbeat_timeout=600) as mgr:
            ext = await mgr.load_extension(
                ext_config("ray_killed", "basic", remote=True, launcher=_launcher(cluster))
            )
            handle = _handle(ext)
            pending = asyncio.ensure_future(ext.sleep(300))
            await asyncio.sleep(0.5)
            assert not pending.done()
            ray.kill(handle.actor)
            with pytest.raises(pyisolate.ExtensionCrashed, match="Ray actor"):
                await asyncio.wait_for(pending, 60)
            with pytest.raises(pyisolate.ExtensionCrashed):
                await ext.echo(1)
            assert not ext.alive
            for _ in range(100):  # the runner dies with the actor's process
                if not _alive(handle.pid):
                    break
                await asyncio.sleep(0.1)
            assert not _alive(handle.pid)
            assert _our_actors() == []

    run(main())


def _regions_of(pid: int) -> set[str]:
    """The /dev/shm regions process pid made (named
    pyi-<session pid>-<hex>-<creator pid>-<random>)."""
    return {n for n in os.listdir("/dev/shm") if n.split("-")[3:4] == [str(pid)]}


def test_ray_node_death_fails_pending_calls(cluster: dict[str, Any], venv_root: Path) -> None:
    """A node that dies (its raylet killed, as in a crash of that machine's
    Ray) takes its actor and the runner with it: a pending call fails with
    ExtensionCrashed, nothing of that node is left running. A node of its
    own (the shared second node stays for the other tests)."""
    import pyisolate

    resource = "doomed_box"
    with open(os.path.join(cluster["temp"], "doomed.log"), "wb") as log:
        node, node_id = _join_node(cluster["address"], cluster["env"], resource, 1, log)
        try:

            async def main() -> None:
                # A heartbeat window far longer than the wait below: only the
                # launcher's report of the node's death can fail the call in time.
                async with manager(venv_root, heartbeat_timeout=600) as mgr:
                    ext = await mgr.load_extension(
                        ext_config(
                            "ray_node_dies",
                            "basic",
                            remote=True,
                            dependencies=[NUMPY],
                            launcher=_launcher(cluster, resources={resource: 1}),
                        )
                    )
                    handle = _handle(ext)
                    assert handle.node_id == node_id
                    # everything that node runs: raylet, workers (the actor), runner
                    doomed = _descendants(node.pid)
                    assert handle.pid in doomed
                    raylet = next(
                        pid
                        for pid in doomed
                        if os.path.basename(os.readlink(f"/proc/{pid}/exe")) == "raylet"
                    )
                    pending = asyncio.ensure_future(ext.sleep(300))
                    # and a call that holds a 64 MiB array on the node (its
                    # region there) while the host answers it: never
                    called, never = asyncio.Event(), asyncio.Event()

                    async def hold(a: Any) -> None:
                        called.set()
                        await never.wait()

                    holding = asyncio.ensure_future(
                        ext.call_back(hold, np.ones(16 << 20, dtype=np.float32))
                    )
                    await asyncio.wait_for(called.wait(), 60)
                    assert _regions_of(handle.pid), "the runner holds no region"
                    assert not pending.done()
                    os.kill(raylet, signal.SIGKILL)
                    # within the default heartbeat window (60 s), well before
                    # the call's own end (300 s) and this manager's (600 s)
                    with pytest.raises(pyisolate.ExtensionCrashed, match="Ray actor"):
                        await asyncio.wait_for(pending, 60)
                    with pytest.raises(pyisolate.ExtensionCrashed):
                        await asyncio.wait_for(holding, 60)
                    with pytest.raises(pyisolate.ExtensionCrashed):
                        await ext.echo(1)
                    assert not ext.alive
                    # the node's processes end by themselves: the actor's with its
                    # raylet, the runner with the actor's (not by the heartbeat:
                    # 600 s here)
                    for _ in range(300):
                        left = {pid for pid in doomed if _alive(pid)}
                        if not left:
                            break
                        await asyncio.sleep(0.1)
                    assert not left, f"processes of the dead node left: {sorted(left)}"
                    # the launcher killed the unreachable actor: Ray lists it no more
                    for _ in range(100):
                        if not _our_actors():
                            break
                        await asyncio.sleep(0.1)
                    assert _our_actors() == []
                    await ext.stop()
                    # The runner's region outlives it (SIGKILL): the next
                    # extension Ray places on that machine removes it (here the
                    # second node shares this machine's /dev/shm).
                    after = await mgr.load_extension(
                        ext_config("ray_after", "basic", remote=True, launcher=_launcher(cluster))
                    )
                    assert not _regions_of(handle.pid)
                    await after.stop()

            run(main())
        finally:
            node.terminate()
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


def test_ray_restart_and_reload_place_it_again(cluster: dict[str, Any], venv_root: Path) -> None:
    """restart="on-failure": a killed actor's extension is placed again (a
    new actor, a new ticket), and calls go to the new runner; reload()
    places a new one too."""
    import pyisolate

    async def main() -> None:
        async with manager(venv_root, heartbeat_timeout=600) as mgr:
            ext = await mgr.load_extension(
                ext_config(
                    "ray_again",
                    "basic",
                    remote=True,
                    restart="on-failure",
                    launcher=_launcher(cluster),
                )
            )
            first = _handle(ext)
            first_pid = (await ext.info())["pid"]
            pending = asyncio.ensure_future(ext.sleep(300))
            await asyncio.sleep(0.5)
            ray.kill(first.actor)
            with pytest.raises(pyisolate.ExtensionCrashed):
                await asyncio.wait_for(pending, 60)
            # the next call waits for the new runner
            info = await asyncio.wait_for(ext.info(), 120)
            second = _handle(ext)
            assert second is not first and second.node_id == cluster["node_id"]
            assert _removed(first.folder)  # the killed actor's, removed by the next
            assert info["pid"] == second.pid != first_pid
            assert _our_actors() == [second.actor_name]
            # reload: a new runner placed, then the old one ended
            await ext.reload()
            third = _handle(ext)
            assert third is not second and (await ext.info())["pid"] == third.pid
            assert _our_actors() == [third.actor_name]
            await ext.stop()
            assert _our_actors() == []

    run(main())


def test_ray_placement_timeout_and_load_failures(cluster: dict[str, Any], venv_root: Path) -> None:
    import pyisolate

    async def main() -> None:
        async with manager(venv_root) as mgr:
            # a resource no node has: the load fails after placement_timeout
            with pytest.raises(pyisolate.ExtensionLoadError, match="no_such_thing"):
                await mgr.load_extension(
                    ext_config(
                        "unplaced",
                        "basic",
                        remote=True,
                        launcher=_launcher(
                            cluster, resources={"no_such_thing": 1}, placement_timeout=2
                        ),
                    )
                )
            assert _our_actors() == []
            # the module fails on the node: its traceback
            with pytest.raises(pyisolate.ExtensionLoadError) as err:
                await mgr.load_extension(
                    ext_config("ray_broken", "broken", remote=True, launcher=_launcher(cluster))
                )
            assert "Traceback" in str(err.value), err.value
            for _ in range(100):
                if not _our_actors():
                    break
                await asyncio.sleep(0.1)
            assert _our_actors() == []
            # its environment fails on the node: uv's output
            not_a_project = venv_root.parent / "not_a_project"
            not_a_project.mkdir(exist_ok=True)
            with pytest.raises(pyisolate.DependencyInstallError) as failed:
                await mgr.load_extension(
                    ext_config(
                        "ray_env",
                        "basic",
                        remote=True,
                        dependencies=[str(not_a_project)],
                        launcher=_launcher(cluster),
                    )
                )
            assert "not_a_project" in failed.value.output, failed.value.output
            assert _our_actors() == []
            # a launcher without remote=True, and a launcher that is not one
            with pytest.raises(ValueError, match="remote=True"):
                mgr.load_extension(ext_config("no_remote", "basic", launcher=_launcher(cluster)))
            with pytest.raises(ValueError, match="launcher must be"):
                mgr.load_extension(ext_config("bad", "basic", remote=True, launcher="ssh"))

    run(main())


def test_ray_launcher_refuses_bad_arguments() -> None:
    import pyisolate

    with pytest.raises(TypeError, match="resources"):
        pyisolate.RayLauncher(resources={"GPU": "one"})
    with pytest.raises(ValueError, match="placement_timeout"):
        pyisolate.RayLauncher(placement_timeout=0)


def test_ray_is_imported_only_when_used() -> None:
    code = (
        "import asyncio, sys, pyisolate\n"
        "launcher = pyisolate.RayLauncher(resources={'GPU': 1})\n"
        "assert 'ray' not in sys.modules, 'ray imported'\n"
        "sys.modules['ray'] = None  # as if it were not installed\n"
        "job = pyisolate.RemoteJob(name='x', key='x', ticket='', module_path='.')\n"
        "try:\n"
        "    asyncio.run(launcher.launch(job))\n"
        "except pyisolate.ExtensionLoadError as exc:\n"
        "    assert 'pip install' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('launched without ray')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env(), timeout=60)
