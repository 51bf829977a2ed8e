#!/usr/bin/env python3
"""Checks the shape of the tree; exits 1 naming every fault it finds.

- C: the folders that hold C depend on each other in one direction only. An
  edge A -> B is an ``#include "..."`` in a file of folder A that resolves to
  a file of folder B (quoted includes only: system headers are not ours).
  Any cycle among folders fails.
- Python: no import cycle among the modules of the package
  ``bindings/python/pyisolate``, counting imports made inside functions too
  (they cycle at run time just the same). Imports under
  ``if TYPE_CHECKING:`` are for the type checker only and do not count.
- Size: no C source or header of the project over MAX_C_LINES lines.

Usage: python3 tests/check_layout.py [--verbose]
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bindings" / "python" / "pyisolate"
MAX_C_LINES = 800
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def tracked_files() -> list[Path]:
    """The repository's files (git's view, so build trees never count)."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def folder_of(path: Path, implementations: dict[str, Path]) -> str:
    """The folder a C file belongs to, as the layout names it: the top-level
    folder, except the deeper trees (tests/c, bindings/python) which are named
    by their first two parts. A public header (include/pyisolate/NAME.h)
    belongs to the folder of NAME.c, which implements it: including it is
    depending on that folder; a public header with no NAME.c is "include"."""
    parts = path.relative_to(ROOT).parts
    if parts[0] == "include" and path.stem in implementations:
        return folder_of(implementations[path.stem], implementations)
    if parts[0] in ("tests", "bindings", "examples") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0] if len(parts) > 1 else "."


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node with
    an edge to itself (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(component))
    return cycles


def c_folder_graph(files: list[Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Folder -> folders it includes from, and the includes that resolve to
    no file of the project (reported, since a guess would hide an edge)."""
    c_files = [f for f in files if f.suffix in (".c", ".h")]
    by_name: dict[str, list[Path]] = {}
    for f in c_files:
        by_name.setdefault(f.name, []).append(f)
    implementations = {
        f.stem: f
        for f in c_files
        if f.suffix == ".c" and f.relative_to(ROOT).parts[0] not in ("tests", "perf", "examples")
    }
    graph: dict[str, set[str]] = {}
    unresolved = []
    for f in c_files:
        src = folder_of(f, implementations)
        graph.setdefault(src, set())
        for name in INCLUDE_RE.findall(f.read_text(errors="replace")):
            candidates = [f.parent / name, ROOT / "include" / name]
            target = next((c for c in candidates if c.is_file()), None)
            if target is None:
                found = by_name.get(Path(name).name, [])
                if len(found) != 1:
                    unresolved.append(f'{f.relative_to(ROOT)}: #include "{name}"')
                    continue
                target = found[0]
            dst = folder_of(target.resolve(), implementations)
            if dst != src:
                graph[src].add(dst)
    return graph, unresolved


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, module: str, is_package: bool):
    """Every module name imported anywhere in tree, relative ones resolved."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if prefix:
                yield prefix
            for alias in node.names:  # a submodule, when one exists
                yield f"{prefix}.{alias.name}" if prefix else alias.name
        todo.extend(ast.iter_child_nodes(node))


def python_import_graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        edges = set()
        for imported in _imports(tree, name, is_package):
            # importing a.b.c runs a, a.b and a.b.c: the deepest one that is
            # ours is the edge; its parents' __init__ are edges of their own
            # only when they import it (checked in their own files).
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                edges.add(imported)
        graph[name] = edges
    return graph


def main() -> int:
    verbose = "--verbose" in sys.argv
    files = tracked_files()
    faults = []

    graph, unresolved = c_folder_graph(files)
    faults += [f"unresolved include: {u}" for u in unresolved]
    for cycle in find_cycles(graph):
        faults.append("C folders include each other in a cycle: " + " <-> ".join(cycle))
    if verbose:
        for folder in sorted(graph):
            print(f"C {folder} -> {', '.join(sorted(graph[folder])) or '(nothing)'}")

    py = python_import_graph()
    for cycle in find_cycles(py):
        faults.append("Python modules import each other in a cycle: " + " <-> ".join(cycle))
    if verbose:
        for module in sorted(py):
            print(f"py {module} -> {', '.join(sorted(py[module])) or '(nothing)'}")

    for f in files:
        if f.suffix in (".c", ".h"):
            lines = f.read_text(errors="replace").count("\n")
            if lines > MAX_C_LINES:
                faults.append(f"{f.relative_to(ROOT)}: {lines} lines (limit {MAX_C_LINES})")

    for fault in faults:
        print(f"check_layout: {fault}", file=sys.stderr)
    if not faults:
        print(
            f"check_layout: ok ({len(graph)} C folders, {len(py)} Python modules, "
            f"C files <= {MAX_C_LINES} lines)"
        )
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
