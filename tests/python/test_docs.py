"""Every code sample of the documentation site (docs/*.md) runs as written.

The convention, which the pages follow:

- A ```` ```python title="path/to/file.py" ```` block is a file: it is
  written to that path in the page's own folder (one temporary folder per
  page, so a page's files accumulate in order, and a later block with the
  same title replaces the file: the tutorial grows one example that way).
- A titled block whose file is named ``main.py`` is also the program to
  run: after writing it, ``python main.py`` runs in the page's folder (with
  this interpreter, ``$UV_CACHE_DIR`` shared with the other tests) and must
  exit 0.
- A ```` ```python ```` block without a title is a program by itself: it
  runs the same way, in the page's folder, after the files before it.
- A ```` ```text title="output" ```` block right after a program is what
  that program prints: its stdout must equal it (surrounding blank space
  aside).
- Shell blocks (``bash``, ``sh``, ``console``) are commands to type, not
  run here; each command must name something real: a ``make`` target of
  the Makefile, a ``pyisolate`` command line the CLI's parser accepts, a
  module for ``python -m``, a script for ``python X.py`` that is in the
  repository or on the page, a file of the repository (or a program a
  CMakeLists.txt builds under ``build/``), or a well-known tool.
- A titled ``toml`` (``json``, ``ini``, ``cfg``) block is a data file,
  written like a python one (a sample package's ``pyproject.toml``).
- Other fences (``c``, ``abnf``, ``mermaid``, ``text``, none) are not code
  to run. A python block that cannot run here must be listed in NOT_RUN
  with the reason, and the list is kept short.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import REPO, subprocess_env

DOCS = REPO / "docs"

# (page, index of the python block on that page): why it is not run.
NOT_RUN: dict[tuple[str, int], str] = {}

# Fences of data files: with a title, written like python files (a sample's
# pyproject.toml), never run.
DATA_FILES = {"toml", "json", "ini", "cfg"}

# Commands taken as real without a check of their own.
TOOLS = {
    "pip",
    "pip3",
    "uv",
    "cmake",
    "pytest",
    "git",
    "cd",
    "export",
    "apt-get",
    "sudo",
    "taskset",
    "strace",
    "docker",
    "auditwheel",
}

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)"
    r"(?P<attrs>[^`\n]*)$"
)
TITLE = re.compile(r'title="([^"]*)"')


class Block(NamedTuple):
    lang: str
    title: str | None
    code: str
    line: int


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        title = TITLE.search(m["attrs"])
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        yield Block(m["lang"].lower(), title[1] if title else None, "\n".join(body) + "\n", i + 1)
        i = j + 1


def pages_with_python() -> list[str]:
    return sorted(p.name for p in DOCS.glob("*.md") if any(b.lang == "python" for b in blocks(p)))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", pages_with_python())
def test_python_samples_run(page: str, venv_root: Path, tmp_path: Path) -> None:
    """The page's files are written and its programs run, outputs checked."""
    del venv_root  # requested for $UV_CACHE_DIR, shared with the other tests
    found = list(blocks(DOCS / page))
    index = -1
    for n, block in enumerate(found):
        if block.lang in DATA_FILES and block.title:
            path = tmp_path / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
            continue
        if block.lang != "python":
            continue
        index += 1
        if (page, index) in NOT_RUN:
            continue
        where = f"{page}:{block.line}"
        if block.title:
            path = tmp_path / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.code)
            if path.name != "main.py":
                continue
            program = path
        else:
            program = tmp_path / f"_sample_{block.line}.py"
            program.write_text(block.code)
        proc = subprocess.run(
            [sys.executable, str(program)],
            cwd=tmp_path,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, f"{where} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        following = found[n + 1] if n + 1 < len(found) else None
        if following is not None and following.lang == "text" and following.title == "output":
            assert proc.stdout.strip() == following.code.strip(), (
                f"{where} printed:\n{proc.stdout}\nthe page says:\n{following.code}"
            )


def _cmake_builds(name: str) -> bool:
    return any(
        re.search(rf"add_executable\s*\(\s*{re.escape(name)}\b", f.read_text())
        for f in REPO.rglob("CMakeLists.txt")
        if ".venv" not in f.parts
    )


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([\w-]+):", text, re.M))


def _check_command(words: list[str], page_files: set[str]) -> str | None:
    """None if the command names something real, else what is wrong."""
    from pyisolate import _cli

    cmd, rest = words[0], words[1:]
    if cmd == "make":
        bad = [
            t for t in rest if "=" not in t and not t.startswith("-") and t not in _make_targets()
        ]
        return f"no make target {bad}" if bad else None
    if cmd == "pyisolate":
        try:
            _cli.parser().parse_args(rest)
        except SystemExit:
            return f"the CLI refuses {rest}"
        return None
    if cmd in ("python", "python3") or cmd.endswith("/bin/python"):
        if rest[:1] == ["-m"]:
            return None if importlib.util.find_spec(rest[1]) else f"no module {rest[1]}"
        script = next((w for w in rest if not w.startswith("-")), None)
        if script is None or (REPO / script).exists() or script in page_files:
            return None
        return f"no script {script}"
    if cmd.startswith("build/"):
        return None if _cmake_builds(Path(cmd).name) else f"nothing builds {cmd}"
    if "/" in cmd:
        return None if (REPO / cmd).exists() else f"no file {cmd}"
    return None if cmd in TOOLS else f"unknown command {cmd}"


def test_shell_commands_are_real() -> None:
    problems = []
    for page in sorted(DOCS.glob("*.md")):
        found = list(blocks(page))
        page_files = {b.title for b in found if b.title}
        for block in found:
            if block.lang not in ("bash", "sh", "shell", "console"):
                continue
            for k, line in enumerate(block.code.splitlines()):
                line = line.split(" #", 1)[0].strip().removeprefix("$ ")
                if not line or line.startswith("#"):
                    continue
                for part in re.split(r"&&|\|\||;|\|", line):
                    words = shlex.split(part)
                    if words:
                        why = _check_command(words, page_files)
                        if why:
                            problems.append(f"{page.name}:{block.line + k + 1}: {why}: {part}")
    assert not problems, "\n".join(problems)
