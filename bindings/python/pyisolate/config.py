"""Configuration of the manager and of each extension.

Both classes accept keyword arguments or a plain dict
(``ExtensionConfig(name=..., ...)`` or ``ExtensionConfig.from_any({...})``;
every pyisolate function that takes a config also takes the dict), and
support ``config["name"]`` reads like the TypedDicts of pyisolate 0.x.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import unicodedata
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="_ConfigBase")


class _ConfigBase:
    @classmethod
    def from_any(cls: type[C], value: Any) -> C:
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
            unknown = set(value) - names - set(getattr(cls, "_REFUSED_KEYS", ()))
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


class SandboxMode(str, enum.Enum):
    """``sandbox_mode``'s values (plain strings work as well). pyisolate 0.x
    had REQUIRED and DISABLED; BEST_EFFORT is the default here."""

    REQUIRED = "required"
    BEST_EFFORT = "best_effort"
    DISABLED = "disabled"


SANDBOX_MODES = tuple(m.value for m in SandboxMode)


@dataclass
class SandboxConfig(_ConfigBase):
    """What a sandboxed extension may reach beyond what it always may (its
    venv, its module, the Python installation, the system's libraries, its
    scratch dir; docs/security.md).

    - ``writable_paths``: directories or files it may also write (and read).
    - ``readonly_paths``: directories or files it may also read.
    - ``network``: False: no TCP, and no socket of any family but unix and
      netlink (UDP included); True: not filtered; a list of TCP ports: TCP
      connect and bind to those ports only (UDP is then not filtered).
    - ``env``: names of the host's environment variables passed through,
      beyond a safe base set (PATH, LANG, LC_*, TZ, TERM, USER, LOGNAME,
      CUDA_VISIBLE_DEVICES); ``ExtensionConfig.env`` sets values outright.

    Relative paths are taken from the current directory; each must exist
    when the extension is loaded (a remote extension skips those missing
    on its machine). pyisolate 0.10's ``{path: path}`` form of
    ``readonly_paths`` is accepted; a path cannot be shown elsewhere.
    """

    writable_paths: Sequence[str | os.PathLike[str]] = field(default_factory=list)
    readonly_paths: Sequence[str | os.PathLike[str]] = field(default_factory=list)
    network: bool | Sequence[int] = False
    env: Sequence[str] = field(default_factory=list)


@dataclass
class Limits(_ConfigBase):
    """Resource limits of an extension's process (None: no limit).

    - ``memory_mb``: its data (heap and private mappings, RLIMIT_DATA):
      allocations past it fail (MemoryError in Python).
    - ``cpu_seconds``: CPU time; past it the process is ended
      (``ExtensionCrashed.reason == "CPU time limit"``).
    - ``open_files``: open file descriptors (RLIMIT_NOFILE).
    - ``processes``: processes and threads of the user, counted by the
      kernel across all of the user's processes (RLIMIT_NPROC; not
      enforced for root).
    """

    memory_mb: int | None = None
    cpu_seconds: int | None = None
    open_files: int | None = None
    processes: int | None = None


@dataclass
class ExtensionManagerConfig(_ConfigBase):
    """Settings shared by all extensions of one manager.

    - ``venv_root_path``: where each extension's venv (``<root>/<key>``, see
      ``extension_key``), the shared uv cache (``<root>/.uv-cache``, unless
      $UV_CACHE_DIR is set) and pyisolate's runtime link folder live.
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
    - ``sandbox``, ``sandbox_mode``, ``limits``: the defaults for extensions
      whose config gives none (see ExtensionConfig); by default every
      extension process is sandboxed as far as the kernel allows.
    """

    venv_root_path: str | os.PathLike[str] = "./venvs"
    default_timeout: float | None = None
    start_timeout: float = 300.0
    stop_timeout: float = 10.0
    heartbeat_timeout: float = 60.0
    remote_endpoint: str = "tcp://127.0.0.1:*"
    remote_host: str | None = None
    sandbox: SandboxConfig | Mapping[str, Any] = field(default_factory=SandboxConfig)
    sandbox_mode: str = "best_effort"
    limits: Limits | Mapping[str, Any] = field(default_factory=Limits)


_NO_CONDA = (
    "conda environments are not supported: every extension's venv is made "
    "with uv (package_manager='uv')"
)


def refuse_keys(cls: type, keys: Mapping[str, Any]) -> None:
    """Raise TypeError naming the keys of ``cls._REFUSED_KEYS`` in ``keys``
    and why each is refused."""
    table: Mapping[str, str] = getattr(cls, "_REFUSED_KEYS", {})
    refused = [k for k in keys if k in table]
    if refused:
        why = "; ".join(f"{k}: {table[k]}" for k in refused)
        raise TypeError(
            f"{cls.__name__}: pyisolate 0.x keys not supported here (docs/porting.md): {why}"
        )


@dataclass
class ExtensionConfig(_ConfigBase):
    """One extension.

    - ``name``: the extension's name as people write it (spaces, any
      script, punctuation), kept as given in logs, errors and
      ``manager.get_extension(name)``. Its venv folder and service key are
      derived from it (``extension_key``: ``"node pack (v2)"`` ->
      ``node_pack_v2``, service ``ext.node_pack_v2``). A name that is a path
      (``/``, ``\\``, ``..``, NUL) or derives to nothing is refused.
    - ``module_path``: the extension's package directory (with
      ``__init__.py``) or a single ``.py`` file.
    - ``isolated``: False runs it in the host process (for debugging).
    - ``dependencies``: requirement strings for ``uv pip install``: PEP 508
      requirements (``"numpy>=2"``), ``"-e <path>"`` (or ``"-e", "<path>"``
      as two items, as pyisolate 0.x wrote it), a local path, or a URL.
    - ``extra_index_urls``: package indexes searched besides PyPI (uv's
      ``--extra-index-url``): ``http://`` or ``https://`` URLs, credentials
      (``https://user:token@host/simple``) allowed and never logged.
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
      CURVE; with the ``"manual"`` launcher its environment and
      dependencies are yours to provide (``dependencies``, ``share_torch``
      and ``env`` do not apply), and
      arrays and tensors cross to it as copies (there is no shared memory).
    - ``launcher``: who starts a remote extension's process: ``"manual"``
      (you, with the ticket, as above; the default) or a
      ``pyisolate.RemoteLauncher`` such as ``pyisolate.RayLauncher(resources=
      {"GPU": 1})``, which places it on a node, makes its venv there from
      ``dependencies`` (and ``share_torch``, ``env``), starts it, forwards
      its output to the host's logging and ends it at ``stop()``
      (docs/launchers.md).
    - ``sandbox``: a SandboxConfig (or dict) of what the process may reach;
      None: the manager's.
    - ``sandbox_mode``: ``"best_effort"`` (what the kernel enforces, and one
      warning naming the rest), ``"required"`` (refuse to start unless the
      kernel enforces all of it) or ``"disabled"`` (no sandbox); None: the
      manager's (``"best_effort"`` by default).
    - ``limits``: a Limits (or dict) of resource limits; None: the
      manager's. An extension's value replaces the manager's whole.
      ``isolated=False`` runs in the host, which cannot be sandboxed or
      limited: giving it any of these three (but ``sandbox_mode=
      "disabled"``) is refused, and the manager's defaults do not apply.
    - ``restart``: ``"never"`` (a crashed extension stays down; the default)
      or ``"on-failure"``: a process that dies after it was ready is started
      again, after a backoff of 0.5 s doubling per restart up to 30 s, at
      most ``max_restarts`` times within ``restart_window`` seconds (then it
      stays down and calls raise ExtensionCrashed). Calls made meanwhile
      wait for the new process within their deadline.
    - ``watch``: reload the extension (``ext.reload()``) when files under
      its ``module_path`` change, once per burst of changes (an isolated,
      local extension only). A reload that fails is logged and leaves the
      old process serving.

    pyisolate 0.x keys accepted here (docs/porting.md): ``share_cuda_ipc``
    (no effect: CUDA tensors always cross by CUDA IPC when the CUDA driver
    is present), ``execution_model`` (``"host-coupled"`` or
    ``"sealed_worker"``: both are this project's one model, the extension's
    venv first on its ``sys.path``), ``package_manager`` (``"uv"`` only) and
    ``module`` (unused, as in 0.x). Its conda and sealed-worker keys are
    refused (``_REFUSED_KEYS`` says why).
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
    launcher: Any = "manual"  # "manual" or a pyisolate.RemoteLauncher
    extra_index_urls: Sequence[str] = field(default_factory=list)
    sandbox: SandboxConfig | Mapping[str, Any] | None = None
    sandbox_mode: str | None = None
    limits: Limits | Mapping[str, Any] | None = None
    restart: str = "never"
    max_restarts: int = 5
    restart_window: float = 60.0
    transport: str | None = None
    watch: bool = False
    # pyisolate 0.x keys (see above and docs/porting.md)
    share_cuda_ipc: bool | None = None
    execution_model: str | None = None
    package_manager: str = "uv"
    module: str | None = None

    # pyisolate 0.x keys that ask for what this project does not do: refused
    # when given (as keywords or dict keys), with why.
    _REFUSED_KEYS: ClassVar[Mapping[str, str]] = {
        "conda_channels": _NO_CONDA,
        "conda_dependencies": _NO_CONDA,
        "conda_platforms": _NO_CONDA,
        "sealed_host_ro_paths": (
            "host folders on a sealed worker's sys.path are not supported: an extension "
            "imports its venv, its module, the host program's folder and its apis' "
            "modules; install other code into its venv (dependencies=['-e', '/path'])"
        ),
        "cuda_wheels": (
            "custom CUDA wheel resolution is not supported: give the wheel index in "
            "extra_index_urls and pin the packages in dependencies"
        ),
    }

    def __new__(cls, *args: Any, **kwargs: Any) -> ExtensionConfig:
        refuse_keys(cls, kwargs)
        return super().__new__(cls)


NAME_MAX = 100  # characters in an extension's name
KEY_MAX_BYTES = 200  # UTF-8 bytes of its folder name (filesystems allow 255)


def _kept(c: str) -> bool:
    """Whether a character stays in an extension's key: letters of any
    script (with their combining marks), digits, '.', '_' and '-'."""
    return c.isalnum() or c in "._-" or unicodedata.category(c).startswith("M")


def validate_name(name: Any) -> str:
    """Check an extension name; return it unchanged, or raise ValueError
    saying why not. Any characters are allowed but those that make it a
    path (a separator, a NUL, '..') and control characters; its key
    (``extension_key``) must not be empty, nor start with '.'."""
    extension_key(name)  # raises ValueError unless name is a str it accepts
    assert isinstance(name, str)
    return name


def validate_restart(config: ExtensionConfig) -> None:
    """ValueError for a bad restart policy."""
    if config.restart not in ("never", "on-failure"):
        raise ValueError(
            f"extension {config.name!r}: restart must be 'never' or 'on-failure', "
            f"not {config.restart!r}"
        )
    if int(config.max_restarts) < 0 or float(config.restart_window) <= 0:
        raise ValueError(
            f"extension {config.name!r}: max_restarts must be >= 0 and restart_window > 0"
        )


TRANSPORTS = ("lane", "broker")


def resolve_transport(config: ExtensionConfig) -> str:
    """The transport a local isolated extension uses (ExtensionConfig's
    ``transport``, else ``$PYISOLATE_TRANSPORT``, else "lane"); ValueError
    for any other value."""
    value = config.transport
    if value is None:
        value = os.environ.get("PYISOLATE_TRANSPORT") or "lane"
    if value not in TRANSPORTS:
        raise ValueError(
            f"extension {config.name!r}: transport must be 'lane' or 'broker', not {value!r}"
        )
    return value


def extension_key(name: Any) -> str:
    """The extension's venv folder name and service key (``ext.<key>``),
    derived from its name, the one place that does: each run of characters
    other than letters, digits, '.', '_' and '-' becomes one '_', and '_' is
    stripped at both ends (``"node pack (v2)"`` -> ``"node_pack_v2"``,
    ``"画像 tools"`` -> ``"画像_tools"``). Raises ValueError for a name
    validate_name refuses."""
    if not isinstance(name, str) or not name:
        raise ValueError("extension name must be a non-empty string")
    if "\x00" in name:
        raise ValueError(f"extension name {name!r} contains a NUL character")
    if "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"extension name {name!r} contains a path separator")
    if name in (".", "..") or ".." in name:
        raise ValueError(f"extension name {name!r} contains '..', a path step")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ValueError(
            f"extension name {name!r} contains a control character or a lone surrogate"
        )
    if len(name) > NAME_MAX:
        raise ValueError(f"extension name {name[:20]!r}... is longer than {NAME_MAX} characters")
    marked = "".join(c if _kept(c) else "\x00" for c in name)  # NUL: refused above
    key = re.sub("\x00+", "_", marked).strip("_")
    if not any(c.isalnum() for c in key):
        raise ValueError(
            f"extension name {name!r} has no letter or digit to name its venv folder with"
        )
    if key.startswith("."):
        raise ValueError(
            f"extension name {name!r} would make the hidden venv folder "
            f"{key!r} (the venv root's dot-folders are pyisolate's own): "
            "start it with a letter or digit"
        )
    if len(key.encode("utf-8")) > KEY_MAX_BYTES:
        raise ValueError(
            f"extension name {name!r} makes a venv folder name over "
            f"{KEY_MAX_BYTES} bytes: shorten it"
        )
    return key


# A PEP 508 requirement: name, extras, version specifiers, markers.
_REQ_RE = re.compile(
    r"""^\s*[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?      # name
        \s*(?:\[\s*[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\s*\])?  # extras
        \s*(?:\(?\s*(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+
            (?:\s*,\s*(?:===|==|!=|<=|>=|~=|<|>)\s*[A-Za-z0-9.*+!_-]+)*\s*\)?)?  # versions
        \s*(?:;\s*[A-Za-z0-9_.<>=!~'"() \t-]+)?\s*$          # markers
    """,
    re.VERBOSE,
)
_URL_RE = re.compile(
    r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*\s*@\s*)?"
    r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f`$;|&<>\\]+$"
)
_BAD_CHARS = set("\x00\n\r`$|&;<>\\{}*?!")


def _is_local_path(s: str) -> bool:
    return (
        s in (".", "..")
        or s.startswith(("/", "./", "../", "~/"))
        or (os.sep in s and os.path.exists(s))
    )


def validate_dependencies(deps: Sequence[str], base_dir: Path | None = None) -> list[str]:
    """Check dependency strings and turn them into uv arguments.

    Accepted forms: a PEP 508 requirement (``"numpy>=2,<3"``,
    ``"pkg[extra]; python_version>='3.10'"``), ``"name @ URL"`` or a URL,
    a local path (``.``, or starting with ``/``, ``./``, ``../`` or ``~/``)
    and ``"-e <path>"``, also as two items ``"-e", "<path>"`` (pyisolate
    0.x's form; the path is checked the same way). Anything that looks like
    a uv option or carries shell metacharacters is refused with ValueError
    (the strings never reach a shell; this keeps them from becoming options
    or surprises)."""
    if isinstance(deps, str):
        raise TypeError("dependencies must be a list of strings, not a string")
    out: list[str] = []
    items = iter(deps)
    for dep in items:
        _check_item(dep)
        s = dep.strip()
        if s in ("-e", "--editable"):
            path = next(items, None)
            if path is None:
                raise ValueError(
                    f"refused dependency {dep!r}: the last item; '-e' takes "
                    "the next item as its path (['-e', './pkg'])"
                )
            _check_item(path)
            out += ["-e", _editable_path(f"{dep} {path}", path.strip(), base_dir)]
            continue
        if s.startswith("-e ") or s.startswith("--editable "):
            out += ["-e", _editable_path(dep, s.split(None, 1)[1].strip(), base_dir)]
            continue
        if s.startswith("-"):
            raise ValueError(
                f"refused dependency {dep!r}: looks like a command-line option "
                "(only '-e <path>' is accepted)"
            )
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
                "'-e <path>', a local path or a URL, or it carries shell metacharacters"
            )
        out.append(s)
    return out


def _check_item(dep: Any) -> None:
    if not isinstance(dep, str) or not dep.strip():
        raise ValueError(f"dependency {dep!r} must be a non-empty string")
    if any(ord(c) < 32 and c != "\t" for c in dep):
        raise ValueError(f"refused dependency {dep!r}: contains control characters")


def _editable_path(shown: str, path: str, base_dir: Path | None) -> str:
    """The absolute path of an editable install (``-e <path>``)."""
    if not _is_local_path(path) or any(c in _BAD_CHARS for c in path):
        raise ValueError(
            f"refused dependency {shown!r}: '-e' takes a local path: '.', or "
            "one starting with '/', './', '../' or '~/'"
        )
    return _abs_path(path, base_dir)


# What an index URL may hold: RFC 3986's characters (no spaces, quotes or
# non-ASCII: percent-encode those).
_INDEX_URL_RE = re.compile(r"^[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+$")


def validate_index_urls(urls: Sequence[str]) -> list[str]:
    """Check ``extra_index_urls``: each an ``http://`` or ``https://`` URL
    with a host, no whitespace, and only URL characters; credentials
    (``https://user:token@host/simple``) allowed. Raises ValueError."""
    if isinstance(urls, str):
        raise TypeError("extra_index_urls must be a list of URLs, not a string")
    out: list[str] = []
    for url in urls:
        if not isinstance(url, str) or not _INDEX_URL_RE.match(url):
            raise ValueError(
                f"refused extra index URL {redact_url(str(url))!r}: not a URL "
                "(no spaces, quotes or non-ASCII characters: percent-encode them)"
            )
        parts = urllib.parse.urlsplit(url)
        try:
            ok = (
                parts.scheme in ("http", "https")
                and bool(parts.hostname)
                and (parts.port is None or parts.port > 0)
            )
        except ValueError:  # a port that is not a number below 65536
            ok = False
        if not ok:
            raise ValueError(
                f"refused extra index URL {redact_url(url)!r}: an index is an "
                "http:// or https:// URL with a host (and a valid port)"
            )
        out.append(url)
    return out


def redact_url(url: str) -> str:
    """``url`` with whatever may be credentials (up to the last '@' before
    any '?' or '#') replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    at = rest.rfind(
        "@", 0, min([i for i in (rest.find("?"), rest.find("#")) if i >= 0], default=len(rest))
    )
    return f"{scheme}://***{rest[at:]}" if sep and at >= 0 else url


_EXECUTION_MODELS = ("host-coupled", "sealed_worker")


def validate_0x_options(cfg: ExtensionConfig) -> None:
    """Check the pyisolate 0.x keys this project accepts (see ExtensionConfig);
    raise ValueError for a value it cannot honour."""
    if cfg.package_manager != "uv":
        raise ValueError(
            f"extension {cfg.name!r}: package_manager={cfg.package_manager!r} refused: {_NO_CONDA}"
        )
    model = cfg.execution_model
    if model is not None and model not in _EXECUTION_MODELS:
        raise ValueError(
            f"extension {cfg.name!r}: execution_model={model!r} refused: "
            "'host-coupled' or 'sealed_worker' (both run the extension with "
            "its own venv first on sys.path; docs/porting.md)"
        )
    if model == "sealed_worker" and cfg.share_torch:
        raise ValueError(
            f"extension {cfg.name!r}: execution_model='sealed_worker' takes "
            "share_torch=False (as in pyisolate 0.x): a sealed worker sees none "
            "of the host's packages"
        )


def _abs_path(path: str, base_dir: Path | None) -> str:
    p = Path(os.path.expanduser(path))
    if not p.is_absolute():
        p = (base_dir or Path.cwd()) / p
    return str(p.resolve())
