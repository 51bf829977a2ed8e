"""Run an extension on another machine (or in a container) for a host that
loaded it with ``ExtensionConfig(remote=True)``:

    python -m pyisolate.remote TICKET [MODULE_PATH]

``TICKET`` is the host's ``extension.ticket`` (a secret: it holds the key
that admits this process, and the token for its service); ``MODULE_PATH``
is the extension's package directory or ``.py`` file on this machine
(default: the host's ``module_path``). This process needs pyisolate and
whatever the extension imports; it connects to the host's broker over tcp,
secured with CURVE, loads the module, serves the extension until the host
stops it, and exits 0 (1 when loading failed, 2 for a bad ticket). Arrays
and tensors cross as copies in both directions: there is no shared memory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import _child, _core
from ._ticket import TICKET_PREFIX, make_ticket, read_ticket  # noqa: F401 - the format, public here


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyisolate.remote",
        description="Run a pyisolate extension for a host on another machine.")
    parser.add_argument("ticket", help="the host's extension.ticket")
    parser.add_argument("module_path", nargs="?",
                        help="the extension's package directory or .py file here")
    parser.add_argument("--connect-timeout", type=float,
                        default=_child.REMOTE_CONNECT_TIMEOUT,
                        help="seconds to wait for the host (default 60)")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        fields = read_ticket(args.ticket)
    except ValueError as exc:
        sys.stderr.write(f"pyisolate.remote: {exc}\n")
        return 2
    cfg = dict(fields["config"])
    if args.module_path:
        cfg["module_path"] = os.path.abspath(args.module_path)
    if not cfg.get("module_path") or not os.path.exists(cfg["module_path"]):
        sys.stderr.write(f"pyisolate.remote: no extension module at "
                         f"{cfg.get('module_path')!r}: give its path\n")
        return 2
    curve = _core.Curve(fields["server_key"], fields["public_key"], fields["secret_key"])
    # Ctrl-C ends the extension the way the host's stop() would not: say so.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return asyncio.run(_child.run(cfg, fields["endpoint"], fields["service"],
                                      fields["token"], curve, args.connect_timeout))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
