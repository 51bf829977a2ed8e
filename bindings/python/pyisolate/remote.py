"""Run an extension on another machine (or in a container) for a host that
loaded it with ``ExtensionConfig(remote=True)``:

    python -m pyisolate.remote TICKET [MODULE_PATH]

``TICKET`` is the host's ``extension.ticket`` (a secret: it holds the key
that admits this process, and the token for its service); ``-`` takes it
from $PYI_TICKET, or from standard input when that is not set (no secret
on a command line others can read); ``MODULE_PATH``
is the extension's package directory or ``.py`` file on this machine
(default: the host's ``module_path``). This process needs pyisolate and
whatever the extension imports; it connects to the host's broker over tcp,
secured with CURVE, loads the module, serves the extension until the host
stops it or it loses the broker's heartbeat (host gone, link cut: within
a few seconds, whoever started it), and exits 0 (1 when loading failed or
the host never answered, 2 for a bad ticket, 125 when the ticket's sandbox
is "required" and this kernel cannot enforce it).
Arrays and tensors cross as copies in both directions: there is no shared
memory.

The ticket carries the extension's sandbox and limits: before loading the
module this process executes itself again through the launcher
pyi_sandbox, which applies them (same pid). It may read its Python
installation and import path and the module path, write a scratch dir of
its own (removed when it ends) and the writable paths, and open TCP
connections to the host's port (plus the ticket's ports; with network
False this is the port-list mode, so UDP is not filtered here; see
docs/security.md). Paths of the host's machine missing here are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from . import _child, _core, _sandbox
from ._errors import ExtensionLoadError
from ._ticket import TICKET_PREFIX, make_ticket, read_ticket  # noqa: F401 - the format, public here

# What runs this module from ``python -c`` with PYI_SYS_PATH appended to
# sys.path (a venv that lacks pyisolate, run with -I; the sandbox's re-exec).
BOOTSTRAP = (
    "import os, sys\n"
    "sys.path[:] = [p for p in sys.path if p]\n"
    "sys.path.extend(p for p in os.environ.pop('PYI_SYS_PATH', '').split(os.pathsep) if p)\n"
    "from pyisolate.remote import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyisolate.remote",
        description="Run a pyisolate extension for a host on another machine.",
    )
    parser.add_argument(
        "ticket", help="the host's extension.ticket ('-': $PYI_TICKET, else standard input)"
    )
    parser.add_argument(
        "module_path", nargs="?", help="the extension's package directory or .py file here"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=_child.REMOTE_CONNECT_TIMEOUT,
        help="seconds to wait for the host (default 60)",
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ticket = args.ticket
    if ticket == "-":
        ticket = os.environ.pop("PYI_TICKET", "") or sys.stdin.readline()
    try:
        fields = read_ticket(ticket)
    except ValueError as exc:
        sys.stderr.write(f"pyisolate.remote: {exc}\n")
        return 2
    cfg = dict(fields["config"])
    if args.module_path:
        cfg["module_path"] = os.path.abspath(args.module_path)
    if not cfg.get("module_path") or not os.path.exists(cfg["module_path"]):
        sys.stderr.write(
            f"pyisolate.remote: no extension module at {cfg.get('module_path')!r}: give its path\n"
        )
        return 2
    data = cfg.pop("sandbox", None)
    if data is not None and "PYI_SANDBOX" not in os.environ:
        try:
            policy = _sandbox.Policy.from_json(data, cfg["name"])
        except (KeyError, TypeError, ValueError) as exc:
            sys.stderr.write(f"pyisolate.remote: the ticket's sandbox is damaged: {exc}\n")
            return 2
        if policy.launched:  # executes this command again (or refuses)
            rest = list(sys.argv[1:] if argv is None else argv)
            return _sandboxed(policy, cfg, fields["endpoint"], rest, ticket)
    curve = _core.Curve(fields["server_key"], fields["public_key"], fields["secret_key"])
    # Ctrl-C ends the extension the way the host's stop() would not: say so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(
            _child.run(
                cfg,
                fields["endpoint"],
                fields["service"],
                fields["token"],
                curve,
                args.connect_timeout,
            )
        )
    except KeyboardInterrupt:
        return 130


def _sandboxed(
    policy: _sandbox.Policy, cfg: dict[str, Any], endpoint: str, args: list[str], ticket: str
) -> int:
    """Execute this command again through the launcher, under policy (the
    host's TCP port granted); 125 when "required" cannot be enforced."""
    log = logging.getLogger("pyisolate.remote")
    try:
        _sandbox.check(policy, cfg["name"])
    except ExtensionLoadError as exc:
        sys.stderr.write(f"pyisolate.remote: {exc}\n")
        return 125
    for path in (*policy.writable, *policy.readonly):
        if not os.path.exists(path):
            log.warning("sandbox path %s does not exist here: left out", path)
    if policy.network is not True:
        port = int(endpoint.rsplit(":", 1)[1])
        policy = dataclasses.replace(
            policy, network=tuple(sorted({*(policy.network or ()), port}))
        )
    scratch = tempfile.mkdtemp(prefix=f"pyisolate-{cfg['name']}-")
    _remove_when_done(scratch)
    # Its import path, but not the current directory that -m put first.
    imports = [p for p in sys.path if p and os.path.isabs(p) and p != os.getcwd()]
    read = [
        *imports,
        sys.prefix,
        sys.exec_prefix,
        cfg["module_path"],
        *cfg.get("paths", ()),
        *_sandbox.host_reads(),
    ]
    # Imported through a launcher's runtime link folder: what the links name.
    for mod in ("pyisolate", "pyisolate._native", "cffi", "_cffi_backend", "msgpack"):
        file = getattr(sys.modules.get(mod), "__file__", None)
        real = os.path.dirname(os.path.realpath(file)) if isinstance(file, str) else ""
        if real and real not in read:
            read.append(real)
    env = _sandbox.environment(policy, scratch)
    keep = ("PYTHON", "GLIBC_TUNABLES")  # the interpreter's and malloc's settings
    env.update({k: v for k, v in os.environ.items() if k.startswith(keep)})
    env["PYI_SYS_PATH"] = os.pathsep.join(imports)
    if ticket not in args:  # given as "-": read already, it goes on in the environment
        env["PYI_TICKET"] = ticket
    flags = ["-I", "-u"] if sys.flags.isolated else ["-u"]
    argv = _sandbox.command(
        policy, read, [scratch], [sys.executable, *flags, "-c", BOOTSTRAP, *args]
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
    return 126  # not reached: execve raises


def _remove_when_done(path: str) -> None:
    """Start a helper, outside the sandbox, that removes path once this
    process (whatever it executes next) has ended: it waits for the end of
    a pipe whose write end only this process holds."""
    r, w = os.pipe()
    os.set_inheritable(w, True)
    subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-c",
            "import os, shutil, sys\nos.read(0, 1)\nshutil.rmtree(sys.argv[1], True)",
            path,
        ],
        stdin=r,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
    os.close(r)


if __name__ == "__main__":
    sys.exit(main())
