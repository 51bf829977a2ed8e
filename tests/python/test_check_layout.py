"""The layout checker (tests/check_layout.py) finds what it claims to find:
a cycle among folders or modules, and none where there is none."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parent.parent / "check_layout.py"
_spec = importlib.util.spec_from_file_location("check_layout", _path)
check_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_layout)


def test_cycle_found():
    graph = {
        "broker": {"common", "memory"},
        "memory": {"common", "worker"},
        "worker": {"broker"},
        "common": set(),
    }
    assert check_layout.find_cycles(graph) == [["broker", "memory", "worker"]]


def test_one_direction_passes():
    graph = {
        "broker": {"common", "memory"},
        "worker": {"common", "memory"},
        "memory": {"common"},
        "common": set(),
    }
    assert check_layout.find_cycles(graph) == []


def test_self_edge_is_a_cycle():
    assert check_layout.find_cycles({"a": {"a"}}) == [["a"]]


def test_imports_inside_functions_count_and_type_checking_does_not():
    import ast

    src = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from . import _typed_only\n"
        "def f():\n    from ._late import x\n    from .. import other\n"
    )
    found = set(check_layout._imports(ast.parse(src), "pkg.mod", False))
    assert "pkg._late" in found and "pkg._late.x" in found
    assert not any("_typed_only" in m for m in found)
    assert "other" in found and "" not in found  # above the package: not ours
