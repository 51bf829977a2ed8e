"""Who starts a remote extension's process (``ExtensionConfig(remote=True,
launcher=...)``): the interface, ``"manual"`` (you run the ticket yourself,
the default) and ``RayLauncher`` (a Ray cluster places and runs it).

A launcher starts one *remote runner* (``python -m pyisolate.remote``) per
extension, somewhere, with that extension's single-use ticket; the runner
connects to the host's broker over tcp with CURVE, which stays the only
data path. The host calls, in this order:

- ``launch(job)``: place and start the runner; return a handle (anything)
  once it is started. Raise ExtensionLoadError when it cannot be placed or
  started (DependencyInstallError with uv's output when its environment
  failed).
- ``logs(handle)``: an async iterator of ``(stream, line)`` pairs of the
  runner's output (``stream`` is ``"stdout"`` or ``"stderr"``), ending when
  the runner ends; the host logs them.
- ``wait(handle)``: returns ``Ended`` once the runner (or the place it ran:
  a node, a pod) has ended. While the extension is alive, that fails its
  pending calls with ExtensionCrashed at once.
- ``terminate(handle)``: end the runner and release its place (also after
  it ended by itself); the host calls it once, at ``stop()`` or after a
  failed load.

Ray is imported only when a RayLauncher is used (``pip install
pyisolate[ray]``).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ._errors import ExtensionLoadError
from ._job import Ended, RemoteJob

__all__ = ["Ended", "RayLauncher", "RemoteJob", "RemoteLauncher"]


class RemoteLauncher(abc.ABC):
    """Places and runs remote runners (see the module's doc for the order
    of the calls). One launcher object may serve many extensions and
    restarts: what belongs to one runner lives in its handle."""

    @abc.abstractmethod
    async def launch(self, job: RemoteJob) -> Any:
        """Start ``job``'s runner; its handle."""

    @abc.abstractmethod
    def logs(self, handle: Any) -> AsyncIterator[tuple[str, str]]:
        """The runner's output lines, ``(stream, line)``, until it ends."""

    @abc.abstractmethod
    async def wait(self, handle: Any) -> Ended:
        """Return once the runner has ended, saying how."""

    @abc.abstractmethod
    async def terminate(self, handle: Any) -> None:
        """End the runner (if running) and release what it held."""


class ManualLauncher(RemoteLauncher):
    """``launcher="manual"``: you start ``python -m pyisolate.remote TICKET
    MODULE_PATH`` yourself with the handle's ticket; pyisolate only waits
    for it to connect, and knows it ended when its connection is lost."""

    async def launch(self, job: RemoteJob) -> Any:
        return None  # (the host does not call it: it waits for the connection)

    async def logs(self, handle: Any) -> AsyncIterator[tuple[str, str]]:
        return
        yield  # an async generator that yields nothing

    async def wait(self, handle: Any) -> Ended:
        await asyncio.Event().wait()  # never: the broker reports a lost connection
        raise AssertionError("not reached")

    async def terminate(self, handle: Any) -> None:
        pass


MANUAL = ManualLauncher()


class RayLauncher(RemoteLauncher):
    """Place each remote extension on a Ray cluster node offering
    ``resources`` (``{"GPU": 1}``, ``{"CPU": 4}``, custom ones like
    ``{"gpu_box": 1}``), held for the extension's lifetime by one
    supervising actor (no restarts by Ray, ended with the host's driver).
    The actor makes the extension's venv on that node with uv, receives the
    module from the host, runs the remote runner and forwards its output to
    the host's logging.

    - ``address``: the cluster to join when this process has not called
      ``ray.init`` (``"auto"``: the one started on this machine, or
      $RAY_ADDRESS).
    - ``placement_timeout``: seconds to wait for a node with the resources;
      then the load fails with ExtensionLoadError naming them.
    - ``venv_root``: where venvs are made on the node; None: the host's
      venv_root_path (as an absolute path).
    """

    def __init__(
        self,
        resources: Mapping[str, float] | None = None,
        address: str | None = "auto",
        placement_timeout: float = 120.0,
        venv_root: str | None = None,
    ) -> None:
        self.resources = dict(resources or {})
        for k, v in self.resources.items():
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"RayLauncher: resources maps names to numbers, not {k!r}: {v!r}")
            if v < 0:
                raise ValueError(f"RayLauncher: resource {k!r} must be >= 0, not {v}")
        if not placement_timeout > 0:
            raise ValueError(
                f"RayLauncher: placement_timeout must be > 0, not {placement_timeout}"
            )
        self.address = address
        self.placement_timeout = float(placement_timeout)
        self.venv_root = venv_root

    def __repr__(self) -> str:
        return (
            f"RayLauncher(resources={self.resources!r}, address={self.address!r}, "
            f"placement_timeout={self.placement_timeout})"
        )

    async def launch(self, job: RemoteJob) -> Any:
        try:
            from . import _ray  # imports ray
        except ImportError as exc:
            raise ExtensionLoadError(
                job.name, f"RayLauncher needs ray ({exc}): pip install 'pyisolate[ray]'"
            ) from None
        return await _ray.launch(self.resources, self.address, self.placement_timeout, job)

    def logs(self, handle: Any) -> AsyncIterator[tuple[str, str]]:
        from . import _ray

        return _ray.logs(handle)

    async def wait(self, handle: Any) -> Ended:
        from . import _ray

        return await _ray.wait(handle)

    async def terminate(self, handle: Any) -> None:
        from . import _ray

        await _ray.terminate(handle)


def resolve(launcher: Any) -> RemoteLauncher:
    """The launcher a config names: ``"manual"`` or a RemoteLauncher;
    ValueError for anything else."""
    if launcher == "manual":
        return MANUAL
    if isinstance(launcher, RemoteLauncher):
        return launcher
    raise ValueError(
        f"launcher must be 'manual' or a pyisolate.RemoteLauncher (such as "
        f"pyisolate.RayLauncher(...)), not {launcher!r}"
    )
