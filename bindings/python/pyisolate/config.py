"""Configuration of the manager and of each extension.

Both classes accept keyword arguments or a plain dict
(``ExtensionConfig(name=..., ...)`` or ``ExtensionConfig.from_any({...})``;
every pyisolate function that takes a config also takes the dict), and
support ``config["name"]`` reads like the TypedDicts of pyisolate 0.x.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

C = TypeVar("C", bound="_ConfigBase")


class _ConfigBase:
    @classmethod
    def from_any(cls: type[C], value: Any) -> C:
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            unknown = set(value) - names
            if unknown:
                raise TypeError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
            return cls(**value)
        raise TypeError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


@dataclass
class ExtensionManagerConfig(_ConfigBase):
    """Settings shared by all extensions of one manager.

    - ``venv_root_path``: where each extension's venv (``<root>/<name>``), the
      shared uv cache (``<root>/.uv-cache``, unless $UV_CACHE_DIR is set) and
      pyisolate's runtime link folder live.
    - ``default_timeout``: seconds a call may take when the extension's config
      and the call give none; None means no limit.
    - ``start_timeout``: seconds an extension process may take to import its
      module and run its load hooks.
    - ``stop_timeout``: seconds ``stop()`` waits for the process to end before
      it kills it.
    - ``heartbeat_timeout``: seconds an extension (or the host's own event
      loop) may stay silent, e.g. with its event loop blocked, before the
      broker declares it lost. A process that dies is noticed at once,
      whatever this says (a remote one: after this).
    - ``remote_endpoint``: the ``tcp://`` address remote extensions connect
      to (bound at the first one, secured with CURVE); ``tcp://0.0.0.0:PORT``
      accepts other machines.
    - ``remote_host``: the host name or address written in remote tickets;
      None: the bound address, or this machine's name when it is 0.0.0.0.
    """

    venv_root_path: str | os.PathLike[str] = "./venvs"
    default_timeout: float | None = None
    start_timeout: float = 300.0
    stop_timeout: float = 10.0
    heartbeat_timeout: float = 60.0
    remote_endpoint: str = "tcp://127.0.0.1:*"
    remote_host: str | None = None


@dataclass
class ExtensionConfig(_ConfigBase):
    """One extension.

    - ``name``: a plain name (letters, digits, ``._-``); it becomes the venv's
      directory name and the service name ``ext.<name>``.
    - ``module_path``: the extension's package directory (with
      ``__init__.py``) or a single ``.py`` file.
    - ``isolated``: False runs it in the host process (for debugging).
    - ``dependencies``: requirement strings for ``uv pip install``: PEP 508
      requirements (``"numpy>=2"``), ``"-e <path>"``, a local path, or a URL.
    - ``apis``: ProxiedSingleton classes the extension may use.
    - ``share_torch``: make the host's torch importable in the extension.
    - ``extension_class``: which ExtensionBase subclass of the module to use
      when it defines several.
    - ``timeout``: default per-call timeout in seconds for this extension.
    - ``env``: extra environment variables for the extension's process.
    - ``allow_pickle``: let values that msgpack cannot carry cross as
      pickles between the host and this extension (arguments of the host's
      calls to it, and its results). Unpickling runs code: set it only for
      an extension you trust with the host's own code execution. Calls an
      extension makes to the host's singletons never carry pickles.
    - ``remote``: the extension runs elsewhere (another machine, a
      container): you start it with ``python -m pyisolate.remote TICKET
      MODULE_PATH``, where ``TICKET`` is the handle's ``ticket`` (a secret:
      it holds the key that admits the process). It connects over tcp with
      CURVE; its environment and dependencies are yours to provide
      (``dependencies``, ``share_torch`` and ``env`` do not apply), and
      arrays and tensors cross to it as copies (there is no shared memory).
    """

    name: str = ""
    module_path: str | os.PathLike[str] = ""
    isolated: bool = True
    dependencies: Sequence[str] = field(default_factory=list)
    apis: Sequence[type] = field(default_factory=list)
    share_torch: bool = False
    allow_pickle: bool = False
    extension_class: str | None = None
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    remote: bool = False


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def validate_name(name: Any) -> str:
    """Check that an extension name is safe as a directory name under the
    venv root; raise ValueError saying why not."""
    if not isinstance(name, str) or not name:
        raise ValueError("extension name must be a non-empty string")
    if "\x00" in name:
        raise ValueError(f"extension name {name!r} contains a NUL character")
    if "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"extension name {name!r} contains a path separator")
    if os.path.isabs(name):
        raise ValueError(f"extension name {name!r} is an absolute path")
    if name in (".", "..") or ".." in name:
        raise ValueError(f"extension name {name!r} would leave the venv root")
    if not _NAME_RE.match(name):
        raise ValueError(
            f"extension name {name!r} is not allowed: use 1-100 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit")
    return name


# A PEP 508 requirement: name, extras, version specifiers, markers.
_REQ_RE = re.compile(
    r"""^\s*[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?      # name
        \s*(?:\[\s*[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\s*\])?  # extras
        \s*(?:\(?\s*(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+
            (?:\s*,\s*(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+)*\s*\)?)?  # versions
        \s*(?:;\s*[A-Za-z0-9_.<>=!~'"() \t-]+)?\s*$          # markers
    """, re.VERBOSE)
_URL_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*\s*@\s*)?"
                     r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f`$;|&<>\\]+$")
_BAD_CHARS = set("\x00\n\r`$|&;<>\\{}*?!")


def _is_local_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~/")) or (os.sep in s and os.path.exists(s))


def validate_dependencies(deps: Sequence[str], base_dir: Path | None = None) -> list[str]:
    """Check dependency strings and turn them into uv arguments.

    Accepted forms: a PEP 508 requirement (``"numpy>=2,<3"``,
    ``"pkg[extra]; python_version>='3.10'"``), ``"name @ URL"`` or a URL,
    a local path (starting with ``/``, ``./``, ``../`` or ``~/``) and
    ``"-e <path>"``. Anything that looks like a uv option or carries shell
    metacharacters is refused with ValueError (the strings never reach a
    shell; this keeps them from becoming options or surprises)."""
    if isinstance(deps, str):
        raise TypeError("dependencies must be a list of strings, not a string")
    out: list[str] = []
    for dep in deps:
        if not isinstance(dep, str) or not dep.strip():
            raise ValueError(f"dependency {dep!r} must be a non-empty string")
        if any(ord(c) < 32 and c != "\t" for c in dep):
            raise ValueError(f"refused dependency {dep!r}: contains control characters")
        s = dep.strip()
        if s.startswith("-e ") or s.startswith("--editable "):
            path = s.split(None, 1)[1].strip()
            if not _is_local_path(path) or any(c in _BAD_CHARS for c in path):
                raise ValueError(f"refused dependency {dep!r}: '-e' takes a local path "
                                 "starting with '/', './', '../' or '~/'")
            out += ["-e", _abs_path(path, base_dir)]
            continue
        if s.startswith("-"):
            raise ValueError(f"refused dependency {dep!r}: looks like a command-line option "
                             "(only '-e <path>' is accepted)")
        if _URL_RE.match(s):
            out.append(s)
            continue
        if _is_local_path(s):
            if any(c in _BAD_CHARS for c in s):
                raise ValueError(f"refused dependency {dep!r}: shell metacharacters in path")
            out.append(_abs_path(s, base_dir))
            continue
        if any(c in s for c in "`$|&\\{}") or not _REQ_RE.match(s):
            raise ValueError(
                f"refused dependency {dep!r}: not a requirement ('name>=1.0'), "
                "'-e <path>', a local path or a URL, or it carries shell metacharacters")
        out.append(s)
    return out


def _abs_path(path: str, base_dir: Path | None) -> str:
    p = Path(os.path.expanduser(path))
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    return str(p.resolve())
