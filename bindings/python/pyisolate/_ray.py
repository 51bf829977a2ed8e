"""RayLauncher's work (imported only when one is used; imports ray).

The host side (``launch``, ``logs``, ``wait``, ``terminate``) creates one
``Supervisor`` actor per remote runner, asking for the launcher's
resources (held while the actor lives), with ``max_restarts=0`` and owned
by this driver (Ray ends it when the driver ends). The actor, on its node:
makes the extension's venv with uv (pyisolate._venv: the same fingerprint
and cache rules as a local venv), unpacks the module the host sent (a tar
in the call), and runs the remote runner in that venv with the ticket in
its environment; it keeps the runner's output lines for ``logs``. The
runner gets SIGKILL when the actor's process dies (PR_SET_PDEATHSIG), and
exits by itself when it loses the broker's heartbeat; the module's folder
is removed by terminate, or (a killed actor's) by the next actor on that
node, which also removes the shared memory regions of runners that died
there. An actor that died or became unreachable (its node's raylet gone)
counts as dead: terminate kills it without asking it first.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import io
import logging
import os
import re
import shutil
import signal
import tarfile
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from . import _core, _venv
from ._errors import DependencyInstallError, ExtensionLoadError
from ._job import Ended, RemoteJob
from .remote import BOOTSTRAP

logger = logging.getLogger("pyisolate")

MODULE_MAX_BYTES = 256 << 20  # the packed module sent to the node
_KEPT_LINES = 10_000  # output lines the actor keeps for logs() not read yet
_TERM_WAIT = 5.0  # seconds between SIGTERM and SIGKILL for the runner
_PR_SET_PDEATHSIG = 1


@dataclass
class Handle:
    """One runner placed by Ray."""

    actor: Any  # the Supervisor's handle
    name: str  # the extension's
    actor_name: str  # the actor's, in Ray ("pyisolate-<key>-<nonce>")
    node: str = ""  # the node's IP address
    node_id: str = ""  # the node's Ray id
    pid: int = 0  # the runner's, on that node
    folder: str = ""  # the module's folder there
    terminated: bool = False
    lost: bool = False  # the actor died or became unreachable (wait() said so)


def _init(address: str | None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING)


def _options(resources: dict[str, float]) -> dict[str, Any]:
    res = dict(resources)
    opts: dict[str, Any] = {
        "num_cpus": res.pop("CPU", 0),
        "num_gpus": res.pop("GPU", 0),
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    if res:
        opts["resources"] = res
    return opts


def _pack(path: str) -> bytes:
    """The module (a package folder or a .py file) as a tar, __pycache__ left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(
            path,
            arcname=os.path.basename(path.rstrip(os.sep)),
            filter=lambda info: None if "__pycache__" in info.name.split("/") else info,
        )
    data = buf.getvalue()
    if len(data) > MODULE_MAX_BYTES:
        raise ValueError(f"{path} packs to {len(data)} bytes, more than {MODULE_MAX_BYTES}")
    return data


async def _get(ref: Any) -> Any:
    return await asyncio.wrap_future(ref.future())


async def launch(
    resources: dict[str, float], address: str | None, placement_timeout: float, job: RemoteJob
) -> Handle:
    """Place a Supervisor where ``resources`` are (within placement_timeout
    seconds) and start job's runner there."""
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, _init, address)
    except Exception as exc:  # no cluster there, refused, ...
        raise ExtensionLoadError(
            job.name, f"cannot join the Ray cluster (address={address!r}): {exc}"
        ) from None
    try:
        module = await loop.run_in_executor(None, _pack, job.module_path)
    except (OSError, ValueError) as exc:
        raise ExtensionLoadError(job.name, f"cannot send its module: {exc}") from None
    actor_name = f"pyisolate-{job.key}-{uuid.uuid4().hex[:8]}"
    opts = _options(resources)
    actor: Any = Supervisor.options(name=actor_name, **opts).remote()
    try:
        try:
            where = await asyncio.wait_for(_get(actor.where.remote()), placement_timeout)
        except asyncio.TimeoutError:
            raise ExtensionLoadError(
                job.name,
                f"no Ray node offered the resources {resources} within "
                f"{placement_timeout}s (placement_timeout)",
            ) from None
        except ray.exceptions.RayError as exc:
            raise ExtensionLoadError(job.name, f"its Ray actor failed to start: {exc}") from None
        node = where["ip"]
        handle = Handle(actor, job.name, actor_name, node, where["node_id"])
        logger.info("[%s] placed by Ray on node %s (actor %s)", job.name, node, actor_name)
        try:
            result = await _get(actor.start.remote(job, module))
        except ray.exceptions.RayError as exc:
            raise ExtensionLoadError(
                job.name, f"its Ray actor died while starting: {exc}"
            ) from None
    except BaseException:
        ray.kill(actor)
        raise
    if "uv" in result:
        ray.kill(actor)
        cmd, rc, out = result["uv"]
        raise DependencyInstallError(job.name, cmd, rc, out)
    if "error" in result:
        ray.kill(actor)
        raise ExtensionLoadError(
            job.name, f"starting its runner on {node} failed: {result['error']}"
        )
    handle.pid, handle.folder = result["pid"], result["folder"]
    logger.info("[%s] remote runner started on %s (pid %d)", job.name, node, handle.pid)
    return handle


async def logs(handle: Handle) -> AsyncIterator[tuple[str, str]]:
    cursor = 0
    while True:
        try:
            lines, cursor, ended = await _get(handle.actor.lines.remote(cursor))
        except ray.exceptions.RayError:
            return  # the actor is gone: wait() says how
        for stream, line in lines:
            yield stream, line
        if ended:
            return


async def wait(handle: Handle) -> Ended:
    try:
        status = await _get(handle.actor.wait.remote())
    except ray.exceptions.RayError as exc:
        handle.lost = True
        if handle.terminated:
            return Ended(None, "terminated")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ray.exceptions.ActorUnavailableError):
            # Its node died (raylet gone) or the link to it failed: Ray
            # cannot tell yet. It counts as dead; terminate() kills it.
            return Ended(None, f"its Ray actor on {handle.node} is unreachable ({first})")
        return Ended(None, f"its Ray actor on {handle.node} died ({first})")
    return Ended(status, f"its remote runner on {handle.node} exited with status {status}")


async def terminate(handle: Handle) -> None:
    if handle.terminated:
        return
    handle.terminated = True
    if not handle.lost:  # else nobody would answer: kill it at once
        try:
            await asyncio.wait_for(_get(handle.actor.terminate.remote()), _TERM_WAIT * 2)
        except (ray.exceptions.RayError, asyncio.TimeoutError) as exc:
            logger.debug("[%s] terminate: %s", handle.name, exc)
    # Also an unreachable actor: it must not keep its resources (a restart
    # places a new one) nor its runner (which dies with the actor's process).
    ray.kill(handle.actor)


# -- on the node ------------------------------------------------------------------------------
_FOLDER = "pyisolate-ray-"  # + the actor's pid, the key: the module's temporary folder


def _remove_orphans() -> None:
    """Remove the module folders of actors gone from this node (killed: Ray
    ends a dead actor's helpers too, so nobody removed them then), and the
    shared memory regions of dead runners here (a runner killed with its
    node's Ray holds the arrays it was given), as a new host does."""
    _core.lib.pyi_region_remove_orphans()
    base = tempfile.gettempdir()
    for entry in os.listdir(base):
        pid = entry[len(_FOLDER) :].split("-", 1)[0]
        if not entry.startswith(_FOLDER) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
        except PermissionError:
            pass  # another user's process: alive


def _without_torch(deps: tuple[str, ...]) -> list[str]:
    return [d for d in deps if re.split(r"[\s\[<>=!~;@(]", d, maxsplit=1)[0].lower() != "torch"]


class _Supervisor:
    """The actor (async: its methods run on one event loop, concurrently)."""

    def __init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: str | None = None  # the unpacked module's temporary folder
        self._lines: collections.deque[tuple[str, str]] = collections.deque(maxlen=_KEPT_LINES)
        self._count = 0  # lines read so far
        self._open = 0  # pipes not at EOF
        self._changed: asyncio.Condition | None = None

    async def where(self) -> dict[str, Any]:
        """Its node (address and Ray id) and process id."""
        return {
            "ip": ray.util.get_node_ip_address(),  # type: ignore[no-untyped-call]
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
        }

    async def start(self, job: RemoteJob, module: bytes) -> dict[str, Any]:
        self._changed = asyncio.Condition()
        try:
            root = Path(job.venv_root)
            deps = _without_torch(job.dependencies) if job.share_torch else list(job.dependencies)
            venv = await _venv.ensure_venv(
                job.name,
                root,
                deps,
                job.share_torch,
                folder=job.key,
                indexes=job.extra_index_urls,
            )
        except DependencyInstallError as exc:
            return {"uv": [exc.command, exc.returncode, exc.output]}
        except Exception as exc:
            return {"error": f"making its venv: {exc}"}
        try:
            rt = _venv.runtime_dir(root)
            _remove_orphans()
            self._dir = tempfile.mkdtemp(prefix=f"{_FOLDER}{os.getpid()}-{job.key}-")
            with tarfile.open(fileobj=io.BytesIO(module), mode="r:gz") as tar:
                tar.extractall(self._dir, filter="data")
            module_path = os.path.join(self._dir, os.listdir(self._dir)[0])
            paths = [str(rt)]
            if job.share_torch:
                paths += _venv.host_site_packages()
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PYTHON", "PYI_", "VIRTUAL_ENV", "CONDA_"))
            }
            env.update(job.env)
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
            env["PYI_SYS_PATH"] = os.pathsep.join(paths)
            env["PYI_TICKET"] = job.ticket
            env["PYTHONUNBUFFERED"] = "1"
            # Large inline arrays arrive in fresh malloc'd buffers (libzmq's
            # CURVE decoder among them): huge pages spare most of their page
            # faults (perf/README.md, remote throughput).
            tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
            if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
                env["GLIBC_TUNABLES"] = ":".join([*tunables, "glibc.malloc.hugetlb=1"])
            prctl = ctypes.CDLL(None, use_errno=True).prctl
            self._proc = await asyncio.create_subprocess_exec(
                str(venv / "bin" / "python"),
                "-I",
                "-u",
                "-c",
                BOOTSTRAP,
                "-",  # the ticket: $PYI_TICKET
                module_path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                preexec_fn=lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGKILL),
            )
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        for stream, pipe in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            self._open += 1
            asyncio.get_running_loop().create_task(self._read(stream, pipe))
        return {"pid": self._proc.pid, "folder": self._dir}

    async def _read(self, stream: str, pipe: asyncio.StreamReader | None) -> None:
        assert pipe is not None and self._changed is not None
        async for raw in pipe:
            async with self._changed:
                self._lines.append((stream, raw.decode("utf-8", "replace").rstrip("\r\n")))
                self._count += 1
                self._changed.notify_all()
        async with self._changed:
            self._open -= 1
            self._changed.notify_all()

    async def lines(self, cursor: int) -> tuple[list[tuple[str, str]], int, bool]:
        """The lines from number ``cursor`` on (waiting for one), the next
        cursor, and whether the output has ended."""
        if self._changed is None:
            return [], cursor, True
        async with self._changed:
            await self._changed.wait_for(lambda: self._count > cursor or self._open == 0)
            first = self._count - len(self._lines)
            out = list(self._lines)[max(cursor - first, 0) :]
            return out, self._count, self._open == 0

    async def wait(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def terminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), _TERM_WAIT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


Supervisor: Any = ray.remote(_Supervisor)
