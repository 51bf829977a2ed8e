"""Sandboxes and resource limits of extension processes (docs/security.md).

An extension process is started through the launcher ``pyi_sandbox`` (C,
``sandbox/``; installed next to ``_native``): it applies the process's
limits, Landlock rules and seccomp filter to itself, then executes the
interpreter, which inherits them. Here:

- ``Policy``: an extension's validated sandbox and limits (``policy_for``
  makes it from the configs; it travels in remote tickets as JSON);
- ``command``: the launcher's command line for a policy;
- ``environment``: what a sandboxed process's environment holds;
- ``kernel``: what the kernel offers (asked once per process, logged once);
- ``check``: a ``"required"`` policy the kernel cannot fully enforce is
  refused, a ``"best_effort"`` one warned about once. The launcher alone
  decides what is missing (``pyi_sandbox --check``).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from . import _native
from ._errors import ExtensionLoadError, PyisolateError
from ._venv import runtime_sources
from .config import (
    SANDBOX_MODES,
    ExtensionConfig,
    ExtensionManagerConfig,
    Limits,
    SandboxConfig,
)

logger = logging.getLogger("pyisolate")

LAUNCHER = "pyi_sandbox"
# What every sandboxed process reads: the system's programs, libraries and
# configuration, /proc and /sys (other processes' memory, environment and
# descriptors stay out of reach: Landlock refuses ptrace access to them).
SYSTEM_READ = (
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc",
    "/proc",
    "/sys",
)
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
GPU_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps")  # CUDA: the GPU is shared
SHM = "/dev/shm"
# The host's variables a sandboxed process gets without asking (and LC_*).
SAFE_ENV = frozenset(
    {"PATH", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "CUDA_VISIBLE_DEVICES"}
)
# Test-only: the launcher believes in at most this Landlock ABI.
TEST_SWITCH = "PYI_SANDBOX_MAX_ABI"
ADVICE = (
    "run it on Linux 6.12 or later (Landlock ABI 6, Landlock in the kernel's lsm= "
    "list) with seccomp, or set sandbox_mode='best_effort' to run it with what this "
    "kernel enforces"
)
_LIMIT_FLAGS = {
    "memory_mb": "--memory-mb",
    "cpu_seconds": "--cpu-seconds",
    "open_files": "--open-files",
    "processes": "--processes",
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_PORT = 65535
_MAX_LIMIT = 1 << 40  # the launcher's bound (sandbox/pyi_policy.c)


@dataclasses.dataclass(frozen=True)
class Policy:
    """An extension process's sandbox (paths absolute) and limits."""

    mode: str = "disabled"
    writable: tuple[str, ...] = ()
    readonly: tuple[str, ...] = ()
    network: bool | tuple[int, ...] = False
    env: tuple[str, ...] = ()
    limits: tuple[tuple[str, int], ...] = ()  # (Limits field, value) of those given

    @property
    def sandboxed(self) -> bool:
        return self.mode != "disabled"

    @property
    def launched(self) -> bool:
        """Whether the process starts through the launcher."""
        return self.sandboxed or bool(self.limits)

    def limit(self, name: str) -> int | None:
        return dict(self.limits).get(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "writable": list(self.writable),
            "readonly": list(self.readonly),
            "network": self.network if isinstance(self.network, bool) else list(self.network),
            "env": list(self.env),
            "limits": dict(self.limits),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], name: str) -> Policy:
        """A policy from a ticket (paths missing here are left out)."""
        return make_policy(
            name,
            {
                "writable_paths": data["writable"],
                "readonly_paths": data["readonly"],
                "network": data["network"],
                "env": data["env"],
            },
            data["mode"],
            data["limits"],
            check_exists=False,
        )


def policy_for(config: ExtensionConfig, defaults: ExtensionManagerConfig) -> Policy:
    """The policy of an extension: its own sandbox, mode and limits, each
    else the manager's. ValueError for bad values; an in-process extension
    that asks for a sandbox or limits is refused (the manager's defaults do
    not apply to it)."""
    if not config.isolated:
        if (
            config.sandbox is not None
            or config.limits is not None
            or config.sandbox_mode not in (None, "disabled")
        ):
            raise ValueError(
                f"extension {config.name!r}: isolated=False runs it in the host "
                "process, which cannot be sandboxed or limited: drop sandbox and "
                "limits and set sandbox_mode='disabled', or keep isolated=True"
            )
        logger.debug(
            "[%s] isolated=False: the manager's sandbox and limits do not apply", config.name
        )
        return Policy()

    def pick(own: Any, default: Any) -> Any:
        return default if own is None else own

    return make_policy(
        config.name,
        pick(config.sandbox, defaults.sandbox),
        pick(config.sandbox_mode, defaults.sandbox_mode),
        pick(config.limits, defaults.limits),
        check_exists=not config.remote,
    )


def make_policy(name: str, sandbox: Any, mode: Any, limits: Any, check_exists: bool) -> Policy:
    """Validate a sandbox (SandboxConfig or dict), a mode and limits
    (Limits or dict); paths are made absolute from the current directory."""
    mode = getattr(mode, "value", mode)  # a SandboxMode
    if mode not in SANDBOX_MODES:
        raise ValueError(
            f"extension {name!r}: sandbox_mode {mode!r} is not one of "
            f"{', '.join(repr(m) for m in SANDBOX_MODES)}"
        )
    box = SandboxConfig.from_any(sandbox)
    lim = Limits.from_any(limits)
    given = []
    for f in dataclasses.fields(Limits):
        value = getattr(lim, f.name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < _MAX_LIMIT:
            raise ValueError(
                f"extension {name!r}: limits {f.name}={value!r} is not a "
                "positive whole number (or None)"
            )
        given.append((f.name, value))
    network = box.network
    if not isinstance(network, bool):
        if isinstance(network, (str, bytes)) or not isinstance(network, Sequence):
            raise ValueError(
                f"extension {name!r}: sandbox network={network!r}: give False, "
                "True or a list of TCP ports"
            )
        for port in network:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= _MAX_PORT:
                raise ValueError(
                    f"extension {name!r}: sandbox network port {port!r} is not "
                    f"a TCP port (1-{_MAX_PORT})"
                )
        network = tuple(sorted(set(network))) or False
    if isinstance(box.env, (str, bytes)):
        raise ValueError(f"extension {name!r}: sandbox env must be a list of names")
    for var in box.env:
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            raise ValueError(f"extension {name!r}: sandbox env {var!r} is not a variable name")
    return Policy(
        mode,
        _paths(name, "writable_paths", box.writable_paths, check_exists),
        _paths(name, "readonly_paths", box.readonly_paths, check_exists),
        network,
        tuple(box.env),
        tuple(given),
    )


def _paths(name: str, key: str, paths: Any, check_exists: bool) -> tuple[str, ...]:
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError(f"extension {name!r}: sandbox {key} must be a list of paths")
    if isinstance(paths, Mapping):  # pyisolate 0.10's {source: destination} form
        moved = {
            s: d
            for s, d in paths.items()
            if os.path.abspath(os.fspath(s)) != os.path.abspath(os.fspath(d))
        }
        if moved:
            raise ValueError(
                f"extension {name!r}: sandbox {key} maps {moved}: this sandbox "
                "shows paths where they are (no mount namespace); list them"
            )
        paths = list(paths)
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or not os.fspath(p) or "\x00" in os.fspath(p):
            raise ValueError(f"extension {name!r}: sandbox {key} entry {p!r} is not a path")
        full = os.path.abspath(os.path.expanduser(os.fspath(p)))
        if check_exists and not os.path.exists(full):
            raise ValueError(
                f"extension {name!r}: sandbox {key} entry {full} does not exist (create it first)"
            )
        out.append(full)
    return tuple(out)


def launcher() -> str:
    """The launcher installed with this package."""
    path = os.path.join(os.path.dirname(os.path.abspath(_native.__file__)), LAUNCHER)
    if not os.access(path, os.X_OK):
        raise PyisolateError(f"the sandbox launcher {path} is missing: reinstall pyisolate")
    return path


def command(
    policy: Policy, read: Sequence[str], write: Sequence[str], program: Sequence[str]
) -> list[str]:
    """The launcher's command line that runs program under policy, with
    read and write granted beside the policy's own paths."""
    argv = [launcher(), "--mode", policy.mode]
    if policy.sandboxed:
        for path in (*SYSTEM_READ, *read, *policy.readonly):
            argv += ["--read", path]
        for path in (*write, *policy.writable):
            argv += ["--write", path]
        argv += ["--shm", SHM]
        for path in (*DEVICES, *(d for g in GPU_DEVICES for d in sorted(glob.glob(g)))):
            argv += ["--device", path]
        argv += _network_flags(policy.network)
    for name, value in policy.limits:
        argv += [_LIMIT_FLAGS[name], str(value)]
    return [*argv, "--", *program]


def _network_flags(network: bool | tuple[int, ...]) -> list[str]:
    if network is True:
        return ["--network", "all"]
    if network is False:
        return []
    return [flag for port in network for flag in ("--port", str(port))]


def _network_kind(network: bool | tuple[int, ...]) -> bool | tuple[int, ...]:
    """What --check needs of the network setting: all, none, or some port."""
    return network if isinstance(network, bool) else (network[0],)


def environment(policy: Policy, scratch: str | os.PathLike[str]) -> dict[str, str]:
    """A sandboxed process's environment: its scratch dir as its home,
    temporary and cache dirs, the safe base set of the host's variables,
    the ones the policy lists, and the test switch."""
    s = os.fspath(scratch)
    env = {
        "HOME": s,
        "TMPDIR": s,
        "TMP": s,
        "TEMP": s,
        "XDG_CACHE_HOME": os.path.join(s, ".cache"),
        "XDG_CONFIG_HOME": os.path.join(s, ".config"),
        "XDG_DATA_HOME": os.path.join(s, ".local", "share"),
        "XDG_STATE_HOME": os.path.join(s, ".local", "state"),
        "CUDA_CACHE_PATH": os.path.join(s, ".nv", "ComputeCache"),
    }
    for key, value in os.environ.items():
        if key in SAFE_ENV or key.startswith("LC_") or key in policy.env or key == TEST_SWITCH:
            env[key] = value
    return env


# -- what the kernel offers -----------------------------------------------------------

# Each by the test switch's value (tests change it).
_lock = threading.Lock()
_kernel: dict[str | None, dict[str, str]] = {}
_missing: dict[tuple[str | None, str, Any], list[str]] = {}
_warned: set[str] = set()


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [launcher(), *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def kernel() -> dict[str, str]:
    """What the kernel offers (``landlock``: the ABI, ``seccomp``: 1 or 0,
    ``cgroup``: the controllers of a delegated cgroup v2 directory or
    "none"); asked once, and logged once."""
    switch = os.environ.get(TEST_SWITCH)
    with _lock:
        if switch not in _kernel:
            out = _run(["--probe"]).stdout
            found = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
            abi = found.get("landlock", "0")
            logger.info(
                "sandbox: Landlock %s, seccomp filters %s, cgroup v2 delegation: %s "
                "(not used: limits are rlimits)",
                f"ABI {abi}" if abi != "0" else "unavailable",
                "available" if found.get("seccomp") == "1" else "unavailable",
                found.get("cgroup", "none"),
            )
            _kernel[switch] = found
        return _kernel[switch]


def missing(policy: Policy) -> list[str]:
    """What of policy this kernel cannot enforce (the launcher's --check)."""
    kernel()
    network = _network_kind(policy.network)
    key = (os.environ.get(TEST_SWITCH), policy.mode, network)
    with _lock:
        if key not in _missing:
            done = _run(["--mode", policy.mode, *_network_flags(network), "--check"])
            if done.returncode not in (0, 1):
                raise PyisolateError(f"the sandbox launcher failed: {done.stderr.strip()}")
            _missing[key] = [line for line in done.stdout.splitlines() if line]
        return _missing[key]


def check(policy: Policy, name: str) -> None:
    """Refuse a "required" policy the kernel cannot fully enforce (naming
    what is missing and what to do); warn once about a "best_effort" one."""
    gaps = missing(policy) if policy.sandboxed else []
    if not gaps:
        return
    text = "; ".join(gaps)
    if policy.mode == "required":
        raise ExtensionLoadError(
            name,
            f"sandbox_mode='required', but this kernel cannot "
            f"enforce it: {text}. To load it, {ADVICE}",
        )
    with _lock:
        if text in _warned:
            return
        _warned.add(text)
    logger.warning(
        "sandbox: not enforced by this kernel: %s (sandbox_mode='required' would "
        "refuse such extensions)",
        text,
    )


def crash_reason(policy: Policy, status: int | None, killed: bool) -> str | None:
    """Why a process ended, when a limit ended it: SIGXCPU, or SIGKILL that
    pyisolate did not send (``killed``) under a CPU limit (the kernel's
    hard limit, a second later, for a process that caught SIGXCPU)."""
    if status == -signal.SIGXCPU or (
        status == -signal.SIGKILL and not killed and policy.limit("cpu_seconds") is not None
    ):
        return "CPU time limit"
    return None


def host_reads() -> list[str]:
    """What an extension of this host reads beside its venv and module: the
    Python installation and the package's runtime (pyisolate, cffi,
    msgpack), wherever they are."""
    return [sys.base_prefix, sys.base_exec_prefix, *runtime_sources()]
