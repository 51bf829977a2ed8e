"""Extension environments, made with the uv CLI.

Layout under ``venv_root_path``:

- ``<name>/``: the extension's venv (``uv venv --python <host python>``, no
  system site-packages), with ``.pyisolate-fingerprint``;
- ``.uv-cache/``: one uv cache shared by all extensions (unless $UV_CACHE_DIR
  is set), on the same filesystem, with ``UV_LINK_MODE=hardlink``, so each
  package's files exist once on disk;
- ``.pyisolate-runtime/<python tag>-<hash>/``: symlinks to the host's
  pyisolate, cffi and msgpack, and the C libraries a wheel carries
  (``pyisolate.libs/``) (one folder per host install). The extension
  process appends it to ``sys.path`` after the venv's own site-packages, so
  pyisolate reaches every extension without being installed into it, and the
  extension's own packages win.

Everything here that may take time runs off the event loop (asyncio
subprocesses, executor threads).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import sysconfig
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _native
from ._errors import DependencyInstallError
from ._version import __version__
from .config import redact_url

logger = logging.getLogger("pyisolate.venv")

FINGERPRINT = ".pyisolate-fingerprint"
RUNTIME_DIR = ".pyisolate-runtime"


def uv_binary() -> str:
    try:
        import uv

        return str(uv.find_uv_bin())
    except Exception:
        found = shutil.which("uv")
        if found:
            return found
        raise RuntimeError("the uv binary was not found: pip install uv") from None


def host_site_packages() -> list[str]:
    """The host's site-packages directories (for share_torch)."""
    import site

    dirs: list[str] = []
    for d in [
        *site.getsitepackages(),
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    ]:
        if d not in dirs and os.path.isdir(d):
            dirs.append(d)
    return dirs


def uv_env(root: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")
    }
    env.setdefault("UV_CACHE_DIR", str(root / ".uv-cache"))
    env["UV_LINK_MODE"] = "hardlink"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    return env


def _runtime_targets() -> dict[str, str]:
    """What the runtime link folder holds: relative name -> real path."""
    import cffi
    import msgpack

    targets: dict[str, str] = {
        "cffi": os.path.dirname(os.path.abspath(cffi.__file__)),
        "msgpack": os.path.dirname(os.path.abspath(msgpack.__file__)),
    }
    try:
        import _cffi_backend

        targets[os.path.basename(_cffi_backend.__file__)] = os.path.abspath(_cffi_backend.__file__)
    except (ImportError, AttributeError):
        pass
    # pyisolate/ is a real folder of links, one per entry: the compiled module
    # and libpyisolate may live apart from the .py files (editable installs).
    pkg = os.path.dirname(os.path.abspath(__file__))
    for entry in os.listdir(pkg):
        if entry != "__pycache__":
            targets[f"pyisolate/{entry}"] = os.path.join(pkg, entry)
    native_dir = os.path.dirname(os.path.abspath(_native.__file__))
    for entry in os.listdir(native_dir):
        if entry.startswith(("_native.", "libpyisolate")):
            targets[f"pyisolate/{entry}"] = os.path.join(native_dir, entry)
    # A wheel repaired by auditwheel carries its C libraries in <name>.libs/
    # beside the package, found from the package's folder by the RPATH
    # $ORIGIN/../<name>.libs. $ORIGIN is the folder of links here, so the
    # libraries' folder is linked beside it too.
    for name, folder in (
        ("pyisolate", native_dir),
        ("cffi", targets["cffi"]),
        ("msgpack", targets["msgpack"]),
    ):
        libs = os.path.join(os.path.dirname(folder), f"{name}.libs")
        if os.path.isdir(libs):
            targets[f"{name}.libs"] = libs
    return targets


def runtime_sources() -> list[str]:
    """The real folders and files the runtime link folder points into (what
    a sandboxed extension must be able to read)."""
    out: list[str] = []
    for name, target in _runtime_targets().items():
        path = os.path.dirname(target) if name.startswith("pyisolate/") else target
        if path not in out:
            out.append(path)
    return out


def runtime_dir(root: Path) -> Path:
    """The folder of symlinks to the host's pyisolate and its runtime
    dependencies (made once per host install, atomically); return it."""
    targets = _runtime_targets()
    key = hashlib.sha1(json.dumps(sorted(targets.items())).encode()).hexdigest()[:12]
    base = root / RUNTIME_DIR
    d = base / f"{sys.implementation.cache_tag or 'python'}-{key}"
    if d.is_dir():
        return d
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{uuid.uuid4().hex}"
    (tmp / "pyisolate").mkdir(parents=True)
    for name, target in targets.items():
        os.symlink(target, tmp / name)
    try:
        os.rename(tmp, d)
    except OSError:  # another host made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def fingerprint(deps: Sequence[str], share_torch: bool, indexes: Sequence[str] = ()) -> str:
    data: dict[str, Any] = {
        "dependencies": list(deps),
        "python": [sys.executable, sys.version],
        "pyisolate": __version__,
        "share_torch": bool(share_torch),
    }
    if indexes:  # without their credentials: the file is not a secret
        data["extra_index_urls"] = [redact_url(u) for u in indexes]
    return json.dumps(data, sort_keys=True)


def fingerprint_id(fp: str) -> str:
    """A short id of a fingerprint, as logs and ``pyisolate list`` show it."""
    return hashlib.sha1(fp.encode()).hexdigest()[:8]


class _Board:
    """One status line on the terminal for all uv jobs running at once:
    shown only when stderr is a terminal (and $PYISOLATE_PROGRESS is not 0)."""

    _FRAMES = "|/-\\"

    def __init__(self) -> None:
        self.jobs: dict[int, list[Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ids = 0

    @staticmethod
    def enabled() -> bool:
        return sys.stderr.isatty() and os.environ.get("PYISOLATE_PROGRESS") != "0"

    def add(self, name: str, what: str) -> int:
        loop = asyncio.get_running_loop()
        self._ids += 1
        self.jobs[self._ids] = [name, what, loop.time(), ""]
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._spin())
        return self._ids

    def done(self, job: int) -> None:
        self.jobs.pop(job, None)
        if not self.jobs and self._task is not None:
            self._task.cancel()
            self._task = None
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    async def _spin(self) -> None:
        loop = asyncio.get_running_loop()
        i = 0
        while self.jobs:
            cols = shutil.get_terminal_size((80, 20)).columns
            parts = [
                f"{n}: {w} {loop.time() - t0:.0f}s" + (f" ({last})" if last else "")
                for n, w, t0, last in self.jobs.values()
            ]
            text = f"{self._FRAMES[i % 4]} pyisolate " + " | ".join(parts)
            sys.stderr.write("\r\033[K" + text[: cols - 1])
            sys.stderr.flush()
            i += 1
            await asyncio.sleep(0.2)


_board = _Board()


async def _run(name: str, cmd: list[str], env: dict[str, str], what: str) -> tuple[int, str]:
    """Run a uv command; log its output lines as progress; return (rc, output)."""
    logger.info("[%s] %s", name, " ".join(cmd[1:]))
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    job = _board.add(name, what) if _Board.enabled() else 0
    try:
        async for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                lines.append(line)
                if job:
                    _board.jobs[job][3] = line.strip()[:40]
                logger.info("[%s] uv: %s", name, line)
        rc = await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    finally:
        if job:
            _board.done(job)
    return rc, "\n".join(lines)


class _FileLock:
    """An flock on a file, taken in a thread so the loop does not block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    async def __aenter__(self) -> _FileLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        await asyncio.get_running_loop().run_in_executor(None, fcntl.flock, self.fd, fcntl.LOCK_EX)
        return self

    async def __aexit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


async def ensure_venv(
    name: str,
    root: Path,
    deps: Sequence[str],
    share_torch: bool,
    *,
    folder: str | None = None,
    indexes: Sequence[str] = (),
) -> Path:
    """Make (or reuse) the venv of extension ``name`` with ``deps`` installed,
    in ``root/folder`` (config.extension_key; default ``name``). ``indexes``:
    extra index URLs, given to uv in its environment (never on its command
    line, nor in the log, where credentials would show)."""
    loop = asyncio.get_running_loop()
    root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one local mkdir; uv runs off the loop
    folder = folder or name
    venv = root / folder
    python = venv / "bin" / "python"
    fp = fingerprint(deps, share_torch, indexes)
    fp_file = venv / FINGERPRINT
    async with _FileLock(root / f".{folder}.lock"):
        try:
            if fp_file.read_text() == fp and python.exists():
                logger.info("[%s] reusing the venv at %s", name, venv)
                os.utime(fp_file)  # last used: what `pyisolate prune` goes by
                return venv
        except OSError:
            pass
        env = uv_env(root)
        uv = uv_binary()
        if venv.exists():
            if not (venv / "pyvenv.cfg").exists() and not fp_file.exists():
                # Never delete a folder that pyisolate did not make.
                raise DependencyInstallError(
                    name,
                    [],
                    1,
                    f"{venv} exists and is not a venv made by pyisolate: "
                    "remove it or choose another venv_root_path or name",
                )
            logger.info("[%s] dependencies changed: recreating %s", name, venv)
            await loop.run_in_executor(None, shutil.rmtree, venv)
        logger.info("[%s] creating a venv at %s", name, venv)
        cmd = [uv, "venv", "--python", sys.executable, "--no-project", str(venv)]
        rc, out = await _run(name, cmd, env, "creating venv")
        if rc != 0:
            raise DependencyInstallError(name, cmd, rc, out)
        if deps:
            if indexes:  # uv's --extra-index-url, a space-separated list
                env["UV_EXTRA_INDEX_URL"] = " ".join(indexes)
                logger.info(
                    "[%s] extra indexes: %s", name, " ".join(redact_url(u) for u in indexes)
                )
            # Bytecode now: a sandboxed extension cannot write it into its venv.
            cmd = [uv, "pip", "install", "--compile-bytecode", "--python", str(python), *deps]
            rc, out = await _run(name, cmd, env, "installing " + " ".join(deps))
            if rc != 0:
                # Keep no half-made venv that a later run could mistake for good.
                await loop.run_in_executor(None, shutil.rmtree, venv, True)
                raise DependencyInstallError(name, cmd, rc, out)
        tmp = venv / (FINGERPRINT + ".tmp")
        tmp.write_text(fp)
        os.replace(tmp, fp_file)
        logger.info("[%s] venv ready (%s)", name, fingerprint_id(fp))
        return venv
