"""The broker's error codes (``PYI_ERR_*``, include/pyisolate/pyi_msg.h) and
the one table of the exceptions they become.

A call that the broker answers with an ERROR raises, by the error's code and
by what was called (``Callee``):

- ``EXTENSION``: an extension, called through its handle, which names it and
  knows how its process ended;
- ``SINGLETON``: a host ProxiedSingleton, called from an extension;
- ``OTHER``: anything else (callables and objects passed across, control
  operations): what the RPC node raises before anyone knows the callee.

From ``PYI_ERR_APPLICATION`` up the error's body carries the callee's own
exception, rebuilt here (_errors.rebuild_exception); the table's row for it
covers an error without a body.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack

from . import _core
from ._errors import (
    CallTimeout,
    ExtensionCrashed,
    ExtensionStopped,
    PyisolateError,
    rebuild_exception,
)

_lib = _core.lib


class BrokerError(PyisolateError):
    """The broker answered a call with an error of its own (``code``)."""

    def __init__(self, code: int | str, text: str = "") -> None:
        if isinstance(code, str):  # rebuilt from another process: the message only
            self.code, self.text = -1, code
            super().__init__(code)
            return
        self.code = code
        self.text = text
        super().__init__(f"{_core.error_name(code)}: {text}" if text else _core.error_name(code))


class Callee(enum.IntEnum):
    """What a failed call called: the table's column."""

    EXTENSION = 0
    SINGLETON = 1
    OTHER = 2


_Row = tuple[type[PyisolateError], type[PyisolateError], type[PyisolateError]]
_BROKER: _Row = (BrokerError, BrokerError, BrokerError)

# code -> the exception type for a call to (an extension, a host singleton,
# anything else). ExtensionCrashed: the extension's process is gone (its exit
# status, if known). PyisolateError for a singleton: the host does not serve it.
EXCEPTIONS: dict[int, _Row] = {
    _lib.PYI_ERR_UNKNOWN_SERVICE: (ExtensionCrashed, PyisolateError, BrokerError),
    _lib.PYI_ERR_WORKER_LOST: (ExtensionCrashed, BrokerError, BrokerError),
    _lib.PYI_ERR_TIMEOUT: (CallTimeout, CallTimeout, CallTimeout),
    _lib.PYI_ERR_TOO_LARGE: _BROKER,
    _lib.PYI_ERR_BUSY: _BROKER,
    _lib.PYI_ERR_MALFORMED: _BROKER,
    _lib.PYI_ERR_VERSION: _BROKER,
    _lib.PYI_ERR_DENIED: _BROKER,
    _lib.PYI_ERR_SHUTDOWN: (ExtensionStopped, BrokerError, BrokerError),
    _lib.PYI_ERR_INLINE: _BROKER,
    _lib.PYI_ERR_APPLICATION: _BROKER,
}


def exception_type(code: int, callee: Callee) -> type[PyisolateError]:
    """The table's entry (BrokerError for a code it lacks)."""
    return EXCEPTIONS.get(code, _BROKER)[callee]


def call_error(
    code: int,
    text: str,
    callee: Callee,
    name: str,
    *,
    method: str = "",
    timeout: float | None = None,
    exit_status: int | None = None,
    reason: str | None = None,
) -> PyisolateError:
    """The exception for a call to ``name`` (the extension's name, the
    singleton's key, or else the service) that failed with ``code``
    (``exit_status`` and ``reason``: how the extension's process ended)."""
    kind = exception_type(code, callee)
    if kind is CallTimeout:
        return CallTimeout(
            f"call to {method or 'callable'!s} on {name!r} timed out after {timeout}s"
        )
    if kind is ExtensionCrashed:
        return ExtensionCrashed(name, exit_status, text, reason)
    if kind is ExtensionStopped:
        return ExtensionStopped(name)
    if kind is PyisolateError:
        return PyisolateError(
            f"the host does not serve the ProxiedSingleton {name!r}: list it "
            f"in this extension's ExtensionConfig(apis=[...])"
        )
    return BrokerError(code, text)


def reply_error(
    msg: _core.Message, service: str, method: str, timeout: float | None
) -> BaseException:
    """The exception for an ERROR answer to a call of ``method`` on
    ``service``: the callee's own, or the table's for ``Callee.OTHER``."""
    if msg.command == _core.ERROR and msg.code >= _lib.PYI_ERR_APPLICATION and msg.frames:
        try:
            data: Any = msgpack.unpackb(msg.frames[0], raw=False, strict_map_key=False)
        except Exception:
            data = {"module": "builtins", "qualname": "RuntimeError", "message": msg.text}
        return rebuild_exception(data)
    return call_error(msg.code, msg.text, Callee.OTHER, service, method=method, timeout=timeout)
