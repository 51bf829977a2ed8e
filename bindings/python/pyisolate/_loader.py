"""Loading an extension: import its module from ``module_path``, pick its
ExtensionBase subclass, make the instance and run the load hooks. The one
loader of both the extension's process (_child) and ``isolated=False``
(_launch.InProcess); it raises whatever went wrong, for the caller to report.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ._base import ExtensionBase
from ._rpc import invoke


async def load(
    module_path: str | os.PathLike[str], extension_class: str | None, base: type
) -> Any:
    """The extension's instance, its hooks run: before_module_loaded(), then
    on_module_loaded(module). ``base`` is the manager's extension type."""
    module = import_module(module_path)
    cls = pick_class(module, extension_class, base)
    ext = cls()
    await invoke(ext.before_module_loaded, [], {}, False)
    await invoke(ext.on_module_loaded, [module], {}, False)
    return ext


def import_module(module_path: str | os.PathLike[str]) -> ModuleType:
    """Import the extension's module from its package directory or file; it
    is registered in sys.modules under the directory's or file's name."""
    path = Path(os.path.abspath(os.fspath(module_path)))
    if path.is_dir():
        init = path / "__init__.py"
        if not init.exists():
            raise ImportError(f"{path} is not a package (no __init__.py)")
        name = path.name
        spec = importlib.util.spec_from_file_location(
            name, init, submodule_search_locations=[str(path)]
        )
    elif path.is_file():
        name = path.stem
        spec = importlib.util.spec_from_file_location(name, path)
    else:
        raise ImportError(f"extension module path {path} does not exist")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def pick_class(module: ModuleType, extension_class: str | None, base: type) -> type:
    """The ExtensionBase subclass defined in the module (the one named
    ``extension_class``, if several), else ``base``."""
    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ExtensionBase)
        and obj is not ExtensionBase
        and obj is not base
        and (obj.__module__ == module.__name__ or obj.__module__.startswith(module.__name__ + "."))
    ]
    if extension_class:
        for obj in found:
            if obj.__name__ == extension_class or obj.__qualname__ == extension_class:
                return obj
        named = getattr(module, extension_class, None)
        if isinstance(named, type) and issubclass(named, ExtensionBase):
            return named
        raise ImportError(
            f"the module defines no ExtensionBase subclass named {extension_class!r}"
        )
    if len(found) > 1:
        names = sorted(o.__qualname__ for o in found)
        raise ImportError(
            f"the module defines several ExtensionBase subclasses {names}: "
            "name one with ExtensionConfig(extension_class=...)"
        )
    if found:
        return found[0]
    return base


def find_class(module: str, qualname: str) -> Any:
    """A class by its module and qualified name (importing the module)."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
