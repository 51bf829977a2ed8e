"""What a remote launcher is given and reports (pyisolate.launchers)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RemoteJob:
    """What a launcher starts: one extension's remote runner.

    ``ticket`` is a secret (it admits one process, once): pass it to the
    runner in its environment (``PYI_TICKET``) or on standard input, never
    on a command line others can read. ``module_path`` is the extension's
    package directory or ``.py`` file on the host; ``dependencies``,
    ``share_torch`` and ``extra_index_urls`` are what its venv needs (made
    by uv where it runs); ``venv_root`` is the host's venv_root_path."""

    name: str
    key: str
    ticket: str = field(repr=False)
    module_path: str
    dependencies: tuple[str, ...] = ()
    share_torch: bool = False
    extra_index_urls: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    venv_root: str = ""
    start_timeout: float = 300.0


@dataclass(frozen=True)
class Ended:
    """How a remote runner ended: its exit status when known (None when its
    node, pod or actor went away with it) and a sentence saying how."""

    status: int | None
    reason: str
