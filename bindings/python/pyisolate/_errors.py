"""Exceptions raised by pyisolate, and how exceptions cross the boundary."""

from __future__ import annotations

import builtins
import sys
import traceback
from typing import Any


class PyisolateError(Exception):
    """Base class of the errors pyisolate itself raises."""


class ExtensionLoadError(PyisolateError):
    """The extension could not be loaded in its process (import or hook failed,
    or the process ended before it became ready).

    ``remote_traceback`` holds the child's traceback text when there is one.
    """

    def __init__(self, extension: str, message: str, remote_traceback: str = "") -> None:
        self.extension = extension
        self.remote_traceback = remote_traceback
        text = f"extension {extension!r} failed to load: {message}"
        if remote_traceback:
            text += "\n\nTraceback in the extension process:\n" + remote_traceback.rstrip()
        super().__init__(text)


class DependencyInstallError(PyisolateError):
    """Creating the extension's venv or installing its dependencies failed.

    ``output`` holds uv's own error output.
    """

    def __init__(self, extension: str, command: list[str], returncode: int, output: str) -> None:
        self.extension = extension
        self.command = command
        self.returncode = returncode
        self.output = output
        super().__init__(
            f"installing dependencies of extension {extension!r} failed "
            f"(uv exited with {returncode}):\n{output.rstrip()}"
        )


class ExtensionCrashed(PyisolateError):
    """The extension's process died. Pending and later calls fail with this.

    ``exit_status`` is the exit code (>= 0), or ``-signal`` when a signal
    killed it, or None when it is not known yet. ``reason`` is
    ``"CPU time limit"`` when its limit ended it (SIGXCPU, or the SIGKILL
    that follows for a process that caught SIGXCPU), else None.
    """

    def __init__(
        self, extension: str, exit_status: int | None, detail: str = "", reason: str | None = None
    ) -> None:
        self.extension = extension
        self.exit_status = exit_status
        self.reason = reason
        if exit_status is None:
            how = "its process was lost"
        elif exit_status < 0:
            import signal

            try:
                name = signal.Signals(-exit_status).name
            except ValueError:
                name = f"signal {-exit_status}"
            how = f"its process was killed by {name}"
        else:
            how = f"its process exited with status {exit_status}"
        text = f"extension {extension!r} crashed: {how}"
        if reason:
            text += f": it reached its {reason}"
        if detail:
            text += f" ({detail})"
        super().__init__(text)

    @property
    def signal(self) -> int | None:
        """The signal number that killed the process, if one did."""
        if self.exit_status is not None and self.exit_status < 0:
            return -self.exit_status
        return None


class ExtensionStopped(PyisolateError):
    """The extension was stopped (``ext.stop()`` or ``manager.stop_all()``)
    before or while the call ran."""

    def __init__(self, extension: str) -> None:
        self.extension = extension
        super().__init__(f"extension {extension!r} was stopped")


class CallTimeout(PyisolateError, TimeoutError):
    """A call did not complete before its deadline; the remote side was told
    to cancel it."""


class RemoteError(PyisolateError):
    """An exception raised on the other side whose type does not exist here.

    ``remote_type`` is the fully qualified name of the remote exception type.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str = "") -> None:
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"{remote_type}: {message}")


class RemoteTraceback(Exception):
    """Carries the remote traceback text; set as ``__cause__`` of the
    exception re-raised locally so that it shows in the local traceback."""

    def __init__(self, text: str) -> None:
        self.tb = text
        super().__init__(text)

    def __str__(self) -> str:
        return "\n\n" + self.tb.rstrip()


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """The wire form of an exception: type, message, args, traceback."""
    cls = type(exc)
    tb_text = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    args: list[Any] = []
    for a in exc.args:
        if isinstance(a, (str, int, float, bool, type(None))):
            args.append(a)
        else:
            args = [str(exc)]
            break
    data: dict[str, Any] = {
        "module": cls.__module__,
        "qualname": cls.__qualname__,
        "message": str(exc),
        "args": args,
        "traceback": tb_text,
    }
    if isinstance(exc, ExtensionCrashed):
        data["extra"] = [exc.extension, exc.exit_status, "", exc.reason]
    if isinstance(exc, RemoteError):
        data["extra"] = [exc.remote_type, exc.remote_message]
    return data


def rebuild_exception(data: dict[str, Any]) -> BaseException:
    """Turn the wire form back into an exception of the same type when that
    type is a builtin or already imported here; else a RemoteError. The remote
    traceback becomes the ``__cause__`` so it is printed with the local one."""
    module = str(data.get("module", ""))
    qualname = str(data.get("qualname", "Exception"))
    message = str(data.get("message", ""))
    args = data.get("args") or [message]
    tb_text = str(data.get("traceback", ""))
    remote_type = qualname if module == "builtins" else f"{module}.{qualname}"
    exc: BaseException | None = None
    cls = _lookup_type(module, qualname)
    if cls is not None:
        try:
            if cls is ExtensionCrashed and data.get("extra"):
                exc = ExtensionCrashed(*data["extra"])
            elif cls is RemoteError and data.get("extra"):
                exc = RemoteError(data["extra"][0], data["extra"][1], tb_text)
            else:
                exc = cls(*args)
        except Exception:  # the type's constructor wants other arguments
            exc = None
    if exc is None:
        exc = RemoteError(remote_type, message, tb_text)
    try:
        exc.remote_traceback = tb_text  # type: ignore[attr-defined]
    except AttributeError:
        pass
    if tb_text:
        exc.__cause__ = RemoteTraceback(tb_text)
    return exc


def _lookup_type(module: str, qualname: str) -> type[BaseException] | None:
    if module == "builtins":
        obj: Any = getattr(builtins, qualname, None)
    else:
        # Only types already imported here: a remote side must not make this
        # process import modules of its choosing.
        mod = sys.modules.get(module)
        if mod is None:
            return None
        obj = mod
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return None
    if isinstance(obj, type) and issubclass(obj, BaseException):
        if issubclass(obj, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            return None
        return obj
    return None
