"""Shared fixtures: one venv root per test session (venvs are reused by
fingerprint, so each dependency set installs once), a shared uv cache, and
a baseline for the leak check in test_zz_leaks.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine, TypeVar

import pytest

HERE = Path(__file__).resolve().parent
EXTENSIONS = HERE / "extensions"
REPO = HERE.parent.parent

T = TypeVar("T")

# numpy 1.x ships wheels for Python <= 3.12 only; on newer Pythons uv would
# build it from source, so the tests that pin numpy<2 are skipped there.
requires_numpy1 = pytest.mark.skipif(sys.version_info >= (3, 13),
                                     reason="numpy<2 has no wheels for this Python")
# The older numpy of the side-by-side test, and the prefix of its version.
OLD_NUMPY, OLD_NUMPY_VERSION = (("numpy<2", "1.") if sys.version_info < (3, 13)
                                else ("numpy>=2.1,<2.2", "2.1."))


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


BASELINE: dict[str, Any] = {
    "shm": set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set(),
    "children": _children(),
    "sockets": {k: v for k, v in _fds().items() if v.startswith("socket:")},
}


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
async def manager(venv_root: Path, extension_type: Any = None,
                  **config: Any) -> AsyncIterator[Any]:
    import pyisolate

    mgr = pyisolate.ExtensionManager(
        extension_type or pyisolate.ExtensionBase,
        pyisolate.ExtensionManagerConfig(venv_root_path=venv_root, **config))
    try:
        yield mgr
    finally:
        await mgr.stop_all()


def ext_config(name: str, module: str | None = None, **kw: Any) -> Any:
    import pyisolate
    from shared_apis import Relay, Store

    if (module or name) == "basic":
        kw.setdefault("apis", [Store, Relay])
    return pyisolate.ExtensionConfig(name=name, module_path=str(EXTENSIONS / (module or name)),
                                     **kw)


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


sys.path.insert(0, str(HERE))
