"""Shared fixtures: one venv root per test session (venvs are reused by
fingerprint, so each dependency set installs once), a shared uv cache, and
the leak check that runs after every test (``no_leaks``).

The leak check looks only at what the tests started: this process's child
processes and socket descriptors, and the shared memory regions and
runtime directories of the hosts the tests started (this process, and the
processes it started with subprocess), never at the rest of /dev/shm, so
it holds in any order and next to other programs that use pyisolate."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest

HERE = Path(__file__).resolve().parent
EXTENSIONS = HERE / "extensions"
REPO = HERE.parent.parent

T = TypeVar("T")

# numpy 1.x ships wheels for Python <= 3.12 only; on newer Pythons uv would
# build it from source, so the tests that pin numpy<2 are skipped there.
requires_numpy1 = pytest.mark.skipif(
    sys.version_info >= (3, 13), reason="numpy<2 has no wheels for this Python"
)
# The older numpy of the side-by-side test, and the prefix of its version.
OLD_NUMPY, OLD_NUMPY_VERSION = (
    ("numpy<2", "1.") if sys.version_info < (3, 13) else ("numpy>=2.1,<2.2", "2.1.")
)


def _children() -> set[int]:
    me = str(os.getpid())
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            out.add(int(entry))
    return out


def _fds() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def _mapped() -> set[str]:
    """The regions this process maps (also those whose name is gone)."""
    with open("/proc/self/maps") as f:
        return {line.split("/dev/shm/", 1)[1].split()[0] for line in f if "/dev/shm/pyi-" in line}


def _sockets() -> set[str]:
    return {fd for fd, target in _fds().items() if target.startswith("socket:")}


# Processes the tests started (every subprocess.Popen, also under
# subprocess.run and asyncio's subprocesses): a host among them names its
# regions and runtime directory after its pid.
STARTED: set[int] = set()
_popen_init = subprocess.Popen.__init__


def _recording_popen_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
    _popen_init(self, *args, **kwargs)
    STARTED.add(self.pid)


subprocess.Popen.__init__ = _recording_popen_init  # type: ignore[method-assign]


def our_hosts() -> set[int]:
    """Pids whose sessions are ours: this process and those it started."""
    return {os.getpid(), *STARTED}


def our_regions(hosts: set[int] | None = None) -> set[str]:
    """The /dev/shm regions of the sessions of hosts (default: ours). A
    region is named /pyi-<session>-<creator>-<n>, a session <host pid>-<hex>."""
    prefixes = tuple(f"pyi-{pid}-" for pid in (our_hosts() if hosts is None else hosts))
    try:
        names = os.listdir("/dev/shm")
    except FileNotFoundError:
        return set()
    return {name for name in names if name.startswith(prefixes)}


def our_rundirs(hosts: set[int] | None = None) -> tuple[str, set[str]]:
    """Start a broker, which removes what dead hosts left (as the next host
    does), and return the runtime directories' base and the directories of
    hosts (default: ours) that are still there, the new broker's excepted."""
    import pyisolate._core as core

    broker = core.Broker()
    mine = os.path.basename(broker.rundir)
    base = os.path.dirname(broker.rundir)
    broker.close()
    pids = {str(pid) for pid in (our_hosts() if hosts is None else hosts)}
    left = set()
    for entry in os.listdir(base):
        pid, _, nonce = entry.partition("-")
        if entry != mine and nonce and pid in pids:
            left.add(entry)
    return base, left


class LeakCheck:
    """What a test may not leave behind: child processes and socket
    descriptors it started, regions this process still maps, and regions
    and runtime directories of our hosts. Each leftover region or directory
    is reported once (one a module fixture leaves is reported at the end of
    the next test)."""

    reported_regions: ClassVar[set[str]] = set()
    reported_dirs: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        self.children = _children()
        self.sockets = _sockets()
        self.mapped = _mapped()

    def leaks(self, wait: float = 10.0) -> list[str]:
        gc.collect()
        deadline = time.monotonic() + wait
        while True:
            children = _children() - self.children
            # Regions kept after their last use (docs/tensors.md, section
            # 3) go within a second: wait for them too.
            kept = (_mapped() - self.mapped) or (our_regions() - self.reported_regions)
            if not (children or kept) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        found = []
        if children:
            found.append(f"processes left behind: {sorted(children)}")
        sockets = _sockets() - self.sockets
        if sockets:
            found.append(f"sockets left open: {sorted(sockets)}")
        mapped = _mapped() - self.mapped
        if mapped:  # something of the test still holds an array or tensor
            found.append(f"regions still mapped here: {sorted(mapped)}")
        base, dirs = our_rundirs()  # first: a dead host's regions go with its directory
        dirs -= self.reported_dirs
        if dirs:
            LeakCheck.reported_dirs |= dirs
            found.append(f"runtime directories left in {base}: {sorted(dirs)}")
        regions = our_regions() - self.reported_regions
        if regions:
            LeakCheck.reported_regions |= regions
            found.append(f"/dev/shm regions left: {sorted(regions)}")
        return found


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """After every test: nothing it started is left (see LeakCheck)."""
    check = LeakCheck()
    yield
    leaks = check.leaks()
    assert not leaks, "; ".join(leaks)


def pytest_report_header() -> str:
    # The transport of local extensions (ExtensionConfig.transport): the
    # suite runs over the lane, and `make test` runs part of it again with
    # PYISOLATE_TRANSPORT=broker.
    return f"pyisolate transport: {os.environ.get('PYISOLATE_TRANSPORT') or 'lane (default)'}"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venvs")
    # One uv cache for the whole session, also for the seed samples that run
    # as separate programs with their own venv roots.
    os.environ.setdefault("UV_CACHE_DIR", str(root / ".uv-cache"))
    return root


@contextlib.asynccontextmanager
async def manager(
    venv_root: Path, extension_type: Any = None, **config: Any
) -> AsyncIterator[Any]:
    import pyisolate

    mgr = pyisolate.ExtensionManager(
        extension_type or pyisolate.ExtensionBase,
        pyisolate.ExtensionManagerConfig(venv_root_path=venv_root, **config),
    )
    try:
        yield mgr
    finally:
        await mgr.stop_all()


def ext_config(name: str, module: str | None = None, **kw: Any) -> Any:
    import pyisolate
    from shared_apis import Relay, Store

    if (module or name) == "basic":
        kw.setdefault("apis", [Store, Relay])
    return pyisolate.ExtensionConfig(
        name=name, module_path=str(EXTENSIONS / (module or name)), **kw
    )


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


sys.path.insert(0, str(HERE))
