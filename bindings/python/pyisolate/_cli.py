"""The ``pyisolate`` command: look after extension venvs, check the machine,
call an extension from the shell.

    pyisolate list [--root DIR]              the venvs under DIR
    pyisolate repair NAME [--root DIR]       delete and recreate one venv
    pyisolate prune [--older-than DAYS] [--dry-run] [--root DIR]
    pyisolate doctor                         what this machine offers
    pyisolate run MODULE_PATH METHOD [JSON_ARGS] [--dependencies ...]
    pyisolate bench [--calls N] [--rounds R] [--json] [--root DIR]

``--root`` defaults to $PYISOLATE_VENV_ROOT, else ``./venvs`` (the
README's ``venv_root_path``). Output is a table on a terminal and plain
tab-separated text when piped (rich decides). Exit status: 0 done, 1 the
command failed (or ``doctor`` found something needed missing), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import _sandbox, _venv
from ._errors import PyisolateError

DAY = 86400.0


def _root(arg: str | None) -> Path:
    return Path(arg or os.environ.get("PYISOLATE_VENV_ROOT") or "venvs").resolve()


def _table(console: Console, columns: Sequence[str], rows: list[list[str]]) -> None:
    """A table on a terminal; tab-separated lines (a header first) otherwise."""
    if console.is_terminal:
        table = Table(*columns)
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        for row in [list(columns), *rows]:
            print("\t".join(row))


def _size(path: Path, seen: set[tuple[int, int]]) -> int:
    """Bytes under path, each hard-linked file counted once (across calls)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return "within the hour"
    if seconds < DAY:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / DAY:.0f} days ago"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop returns


class VenvInfo:
    """One venv made by pyisolate: its fingerprint and what it looks like."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = path.name
        fp = path / _venv.FINGERPRINT
        self.data: dict[str, Any] = json.loads(fp.read_text())
        self.last_used = fp.stat().st_mtime

    @property
    def dependencies(self) -> list[str]:
        return list(self.data.get("dependencies", []))

    @property
    def share_torch(self) -> bool:
        return bool(self.data.get("share_torch", False))

    @property
    def indexes(self) -> list[str]:
        return list(self.data.get("extra_index_urls", []))

    def problem(self) -> str:
        """'' when healthy, else what is wrong."""
        python = self.path / "bin" / "python"
        if not python.exists():
            return "no bin/python"
        made_with = self.data.get("python", [""])[0]
        if made_with and not os.path.exists(made_with):
            return f"made with {made_with}, which is gone"
        try:
            subprocess.run(
                [str(python), "-c", "import sys"],
                check=True,
                timeout=60,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"bin/python does not run: {exc}"
        return ""


def venvs(root: Path) -> list[VenvInfo]:
    """The venvs pyisolate made under root (folders with a fingerprint)."""
    found = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and (entry / _venv.FINGERPRINT).is_file():
                try:
                    found.append(VenvInfo(entry))
                except (OSError, ValueError):
                    continue  # a fingerprint being written, or not ours
    return found


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    root = _root(args.root)
    seen: set[tuple[int, int]] = set()
    rows = []
    now = time.time()
    for v in venvs(root):
        problem = v.problem()
        rows.append(
            [
                v.name,
                " ".join(v.dependencies) or "-",
                _venv.fingerprint_id(json.dumps(v.data, sort_keys=True)),
                _human(_size(v.path, seen)),
                _ago(now - v.last_used),
                "healthy" if not problem else f"broken: {problem}",
            ]
        )
    if not rows:
        console.print(f"no pyisolate venvs under {root}", highlight=False)
        return 0
    _table(console, ["name", "dependencies", "fingerprint", "size", "last used", "health"], rows)
    return 0


def cmd_repair(args: argparse.Namespace, console: Console) -> int:
    root = _root(args.root)
    found = {v.name: v for v in venvs(root)}
    v = found.get(args.name)
    if v is None:
        console.print(
            f"no venv named {args.name!r} under {root} "
            f"(there: {', '.join(sorted(found)) or 'none'})",
            highlight=False,
        )
        return 1
    if any("***@" in url for url in v.indexes):
        console.print(
            f"{v.name} was made with an index that needs credentials, which are "
            "not kept on disk: load the extension again to recreate it",
            highlight=False,
        )
        return 1
    console.print(
        f"recreating {v.path} with: {' '.join(v.dependencies) or 'no dependencies'}",
        highlight=False,
    )
    shutil.rmtree(v.path)
    with console.status(f"uv: making {v.name}", spinner="dots"):
        try:
            asyncio.run(
                _venv.ensure_venv(v.name, root, v.dependencies, v.share_torch, indexes=v.indexes)
            )
        except Exception as exc:  # DependencyInstallError carries uv's output
            console.print(f"repair failed: {exc}", highlight=False)
            return 1
    console.print(f"{v.name}: repaired", highlight=False)
    return 0


def _gone_runtime_dirs(root: Path) -> list[Path]:
    """Runtime link folders of host installs that are gone (a link broken)."""
    base = root / _venv.RUNTIME_DIR
    out = []
    if base.is_dir():
        for d in sorted(base.iterdir()):
            if d.is_dir() and any(p.is_symlink() and not p.exists() for p in d.iterdir()):
                out.append(d)
    return out


def cmd_prune(args: argparse.Namespace, console: Console) -> int:
    root = _root(args.root)
    now = time.time()
    old = [v for v in venvs(root) if now - v.last_used > args.older_than * DAY]
    gone = _gone_runtime_dirs(root)
    verb = "would remove" if args.dry_run else "removed"
    for v in old:
        if not args.dry_run:
            shutil.rmtree(v.path)
        console.print(
            f"{verb} venv {v.name} (last used {_ago(now - v.last_used)})", highlight=False
        )
    for d in gone:
        if not args.dry_run:
            shutil.rmtree(d)
        console.print(f"{verb} runtime folder {d.name} (its install is gone)", highlight=False)
    cache = Path(_venv.uv_env(root)["UV_CACHE_DIR"])
    if cache.is_dir():
        if args.dry_run:
            console.print(f"would run: uv cache prune ({cache})", highlight=False)
        else:
            proc = subprocess.run(
                [_venv.uv_binary(), "cache", "prune"],
                env=_venv.uv_env(root),
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                console.print(f"uv cache prune failed: {proc.stderr.strip()}", highlight=False)
                return 1
            console.print(f"uv cache pruned ({cache})", highlight=False)
    if not old and not gone:
        console.print(f"no venv unused for {args.older_than:g} days under {root}", highlight=False)
    return 0


def _doctor_checks() -> list[tuple[str, bool, str, str]]:
    """(what, needed, found, what to do) rows; found '' means missing."""
    from . import _core

    rows: list[tuple[str, bool, str, str]] = []
    try:
        uv = _venv.uv_binary()
        out = subprocess.run([uv, "--version"], capture_output=True, text=True, timeout=60)
        rows.append(
            (
                "uv",
                True,
                f"{out.stdout.strip()} ({uv})" if out.returncode == 0 else "",
                "pip install uv",
            )
        )
    except (RuntimeError, OSError, subprocess.SubprocessError):
        rows.append(("uv", True, "", "pip install uv"))
    versions = _core.ffi.string(_core.lib.pyi_library_versions()).decode()
    rows.append(("libraries", True, versions, "reinstall pyisolate"))
    try:
        st = os.statvfs("/dev/shm")
        free = st.f_bavail * st.f_frsize
        rows.append(
            (
                "/dev/shm",
                True,
                f"{_human(free)} free" if free else "",
                "mount a tmpfs on /dev/shm (docker: --shm-size=2g)",
            )
        )
    except OSError:
        rows.append(("/dev/shm", True, "", "mount a tmpfs on /dev/shm"))
    try:  # what the sandbox launcher finds (docs/security.md)
        rows.append(("sandbox launcher", True, _sandbox.launcher(), "reinstall pyisolate"))
        offered = _sandbox.kernel()
        gaps = _sandbox.missing(_sandbox.Policy(mode="best_effort"))
        abi = int(offered.get("landlock", "0"))
        rows.append(
            (
                "Landlock",
                False,
                f"ABI {abi}" if abi else "",
                "optional: Linux 5.13+ with Landlock in lsm=; ABI 6 (Linux 6.12+) for the "
                "whole sandbox",
            )
        )
        rows.append(
            (
                "seccomp",
                False,
                "filters" if offered.get("seccomp") == "1" else "",
                "optional: a kernel with seccomp filters",
            )
        )
        rows.append(
            (
                "sandbox",
                False,
                "" if gaps else "fully enforced",
                "not enforced here: " + "; ".join(gaps),
            )
        )
    except PyisolateError:
        rows.append(("sandbox launcher", True, "", "reinstall pyisolate"))
    cgroup = Path("/sys/fs/cgroup")
    if (cgroup / "cgroup.controllers").exists():
        own = Path("/proc/self/cgroup").read_text().strip().rpartition(":")[2]
        here = cgroup / own.lstrip("/")
        writable = os.access(here / "cgroup.subtree_control", os.W_OK)
        rows.append(
            (
                "cgroups",
                False,
                f"v2, {'delegated' if writable else 'not delegated'}",
                "optional: a delegated cgroup v2 subtree",
            )
        )
    else:
        rows.append(("cgroups", False, "", "optional: cgroup v2 (this is v1 or hybrid)"))
    if _core.lib.pyi_cuda_available():
        rows.append(("CUDA driver", False, "loaded", ""))
    else:
        why = _core.ffi.string(_core.lib.pyi_last_error()).decode()
        rows.append(("CUDA driver", False, "", f"optional, for CUDA tensors ({why})"))
    return rows


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    rows = _doctor_checks()
    failed = [r for r in rows if r[1] and not r[2]]
    _table(
        console,
        ["check", "status", "found", "what to do"],
        [
            [
                what,
                "ok" if found else ("MISSING" if needed else "absent"),
                found or "-",
                "" if found else todo,
            ]
            for what, needed, found, todo in rows
        ],
    )
    return 1 if failed else 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from ._base import ExtensionBase
    from ._manager import ExtensionManager
    from .config import ExtensionConfig, ExtensionManagerConfig

    try:
        call_args = json.loads(args.json_args) if args.json_args else []
    except ValueError as exc:
        console.print(f"JSON_ARGS is not JSON: {exc}", highlight=False)
        return 2
    if isinstance(call_args, dict):
        positional, keywords = [], call_args
    elif isinstance(call_args, list):
        positional, keywords = call_args, {}
    else:
        positional, keywords = [call_args], {}
    module_path = Path(args.module_path).resolve()

    async def main() -> Any:
        config = ExtensionManagerConfig(venv_root_path=str(_root(args.root)))
        manager = ExtensionManager(ExtensionBase, config)
        try:
            ext = await manager.load_extension(
                ExtensionConfig(
                    name=args.name or module_path.name,
                    module_path=str(module_path),
                    dependencies=list(args.dependencies or []),
                )
            )
            return await getattr(ext.remote, args.method)(*positional, **keywords)
        finally:
            await manager.stop_all()

    try:
        result = asyncio.run(main())
    except Exception as exc:
        console.print(f"{type(exc).__name__}: {exc}", highlight=False)
        return 1
    print(json.dumps(result, default=repr, indent=None if not console.is_terminal else 2))
    return 0


def cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from . import _bench

    if args.calls < 1 or args.rounds < 2:
        console.print("--calls must be at least 1 and --rounds at least 2", highlight=False)
        return 2
    root = Path(args.root).resolve() if args.root else None

    async def main() -> dict[str, Any]:
        if root is not None:
            return await _bench.run(args.calls, args.rounds, root)
        with tempfile.TemporaryDirectory(prefix="pyisolate-bench-venvs-") as tmp:
            return await _bench.run(args.calls, args.rounds, Path(tmp))

    try:
        report = asyncio.run(main())
    except Exception as exc:
        console.print(f"{type(exc).__name__}: {exc}", highlight=False)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console.print(
        f"{report['workload']}: {args.calls} calls per turn, {args.rounds} turns per side "
        f"in alternating order; Python {report['python']}, {report['machine']}",
        highlight=False,
    )
    _table(console, _bench.COLUMNS, _bench.table_rows(report))
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pyisolate", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    root_help = "the venv root (default: $PYISOLATE_VENV_ROOT, else ./venvs)"
    p = sub.add_parser("list", help="the venvs under the root")
    p.add_argument("--root", help=root_help)
    p.set_defaults(fn=cmd_list)
    p = sub.add_parser("repair", help="delete and recreate one venv")
    p.add_argument("name")
    p.add_argument("--root", help=root_help)
    p.set_defaults(fn=cmd_repair)
    p = sub.add_parser(
        "prune",
        help="remove venvs unused for a while, dead runtime folders, unused uv cache entries",
    )
    p.add_argument("--older-than", type=float, default=30.0, metavar="DAYS")
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.add_argument("--root", help=root_help)
    p.set_defaults(fn=cmd_prune)
    p = sub.add_parser("doctor", help="what this machine offers pyisolate")
    p.set_defaults(fn=cmd_doctor)
    p = sub.add_parser("run", help="load one extension, call one method, print the result")
    p.add_argument("module_path")
    p.add_argument("method")
    p.add_argument(
        "json_args",
        nargs="?",
        help="a JSON list (positional), object (keywords) or value (one argument)",
    )
    p.add_argument("--dependencies", nargs="*", metavar="REQ")
    p.add_argument("--name", help="the extension's name (default: the folder's)")
    p.add_argument("--root", help=root_help)
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser(
        "bench", help="the quick benchmark: small calls against the asyncio floor (ratios)"
    )
    p.add_argument("--calls", type=int, default=500, help="timed calls per turn (500)")
    p.add_argument(
        "--rounds", type=int, default=6, help="turns per side, in alternating order (6)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--root", help="the venv root for its extension (default: a temporary one)")
    p.set_defaults(fn=cmd_bench)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console(stderr=False, highlight=False)
    code: int = args.fn(args, console)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
