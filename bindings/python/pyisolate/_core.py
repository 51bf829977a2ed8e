"""Thin, owning wrappers around the C objects (pyi_broker, pyi_client,
pyi_worker), reached through the cffi module ``pyisolate._native``.

Every C function that takes ownership of a ``pyi_msg_t`` gets it through a
``pyi_msg_t **`` that C nulls; Python never attaches a destructor to those
messages, so nothing is freed twice. Receiving and sending messages goes
through the bridge's own C functions (bindings/python/pyi_py.h: one call per
message, the message never reaches Python as a handle); the wrappers pass
them their handle, a cffi pointer, and never after close(). Large frames
cross without a copy: sent ones are lent from their Python buffer until
libzmq is done with them, received ones are read-only memoryviews that keep
the received message alive (see :class:`Message`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._errors import PyisolateError

try:
    from . import _native
    from ._native import ffi as ffi  # re-exported: the package's cffi handles
    from ._native import lib as lib
except ImportError as exc:  # pragma: no cover - only when the build is broken
    raise ImportError(
        "pyisolate's native module is missing: install pyisolate with "
        "'pip install <path to pyisolate>' so that the C library is built"
    ) from exc


READY = lib.PYI_READY
REQUEST = lib.PYI_REQUEST
REPLY = lib.PYI_REPLY
ERROR = lib.PYI_ERROR
CANCEL = lib.PYI_CANCEL
DISCONNECT = lib.PYI_DISCONNECT

ERR_UNKNOWN_SERVICE = lib.PYI_ERR_UNKNOWN_SERVICE
ERR_WORKER_LOST = lib.PYI_ERR_WORKER_LOST
ERR_TIMEOUT = lib.PYI_ERR_TIMEOUT
ERR_SHUTDOWN = lib.PYI_ERR_SHUTDOWN
ERR_INLINE = lib.PYI_ERR_INLINE
ERR_APPLICATION = lib.PYI_ERR_APPLICATION

# The hot path (receive, request, reply: one call per message) is the
# bridge's C (bindings/python/pyi_py.c): Python C API functions that
# pyi_py_install adds to _native.
if lib.pyi_py_install() != 0:  # pragma: no cover - only with a broken build
    raise ImportError("pyisolate._native: cannot install its functions")
_recv_client = _native.recv_client
_recv_worker = _native.recv_worker
_client_request = _native.client_request
_worker_reply = _native.worker_reply
_worker_error = _native.worker_error
_recv_lane = _native.recv_lane
_lane_send = _native.lane_send

EVENT_READY = lib.PYI_EVENT_READY
EVENT_LOST = lib.PYI_EVENT_LOST
EVENT_EXIT = lib.PYI_EVENT_EXIT
EVENT_REFUSED = lib.PYI_EVENT_REFUSED


def last_error() -> str:
    """Text of the last error of a pyi_ call on this thread."""
    p = lib.pyi_last_error()
    return ffi.string(p).decode("utf-8", "replace") if p != ffi.NULL else "unknown error"


def error_name(code: int) -> str:
    p = lib.pyi_error_name(code)
    return ffi.string(p).decode() if p != ffi.NULL else str(code)


def _str(p: object) -> str:
    return ffi.string(p).decode("utf-8", "replace") if p != ffi.NULL else ""


class Message:
    """A received message. Frames shorter than 64 KiB are copies (frame 0
    bytes, the others writable bytearrays); longer ones are read-only
    memoryviews of the bytes received, which keep the C message alive until
    they are released or collected (msgpack, numpy.frombuffer and
    ffi.from_buffer take them as they are)."""

    __slots__ = (
        "command",
        "id",
        "service",
        "code",
        "text",
        "timeout_ms",
        "frames",
        "services",
        "answer_inline",
    )

    def __init__(
        self,
        command: int,
        id: int,
        service: str,
        code: int,
        text: str,
        timeout_ms: int,
        frames: list[Any] | None = None,
        services: list[str] | None = None,
        answer_inline: bool = False,
    ) -> None:
        self.command = command
        self.id = id
        self.service = service
        self.code = code
        self.text = text
        self.timeout_ms = timeout_ms
        self.frames = [] if frames is None else frames
        self.services = [] if services is None else services
        # REQUEST: the caller shares no memory with this host; answer with
        # tensors inline (docs/tensors.md, section 9).
        self.answer_inline = answer_inline

    def __repr__(self) -> str:
        return (
            f"Message(command={self.command}, id={self.id}, service={self.service!r}, "
            f"code={self.code}, text={self.text!r}, frames={len(self.frames)})"
        )


def _frames(frames: Sequence[Any]) -> Sequence[Any]:
    """frames as the native senders take them (buffers; a list or tuple)."""
    return frames if type(frames) is list or type(frames) is tuple else list(frames)


@dataclass(frozen=True)
class Curve:
    """CURVE keys for a connection to a broker's secured tcp endpoint: the
    broker's public key and this peer's pair (40 characters of Z85 each)."""

    server_key: str
    public_key: str
    secret_key: str

    def args(self) -> tuple[bytes, bytes, bytes]:
        return self.server_key.encode(), self.public_key.encode(), self.secret_key.encode()


def curve_keypair() -> tuple[str, str]:
    """A new CURVE key pair: (public, secret), Z85."""
    pub = ffi.new("char[41]")
    sec = ffi.new("char[41]")
    if lib.pyi_curve_keypair(pub, sec) != 0:
        raise PyisolateError(f"cannot make a CURVE key pair: {last_error()}")
    return _str(pub), _str(sec)


@dataclass
class BrokerEvent:
    type: int
    pid: int
    status: int
    service: str
    text: str


class Broker:
    """The in-host ROUTER broker (a C thread)."""

    def __init__(self) -> None:
        self._ptr = lib.pyi_broker_new()
        if self._ptr == ffi.NULL:
            raise PyisolateError(f"cannot start the pyisolate broker: {last_error()}")
        self.endpoint = _str(lib.pyi_broker_endpoint(self._ptr))
        self.inproc = _str(lib.pyi_broker_inproc(self._ptr))
        self.rundir = _str(lib.pyi_broker_rundir(self._ptr))
        self._event = ffi.new("pyi_event_t *")

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def set(self, option: int, value: int) -> None:
        if lib.pyi_broker_set(self._ptr, option, value) != 0:
            raise ValueError(f"broker option {option}={value} refused")

    @property
    def curve_key(self) -> str:
        return _str(lib.pyi_broker_curve_key(self._ptr))

    def bind_curve(self, endpoint: str) -> str:
        """Bind a CURVE-secured tcp endpoint; returns it with its port."""
        p = lib.pyi_broker_bind_curve(self._ptr, endpoint.encode())
        if p == ffi.NULL:
            raise PyisolateError(f"cannot bind {endpoint}: {last_error()}")
        try:
            value: bytes = ffi.string(p)
            return value.decode()
        finally:
            lib.free(p)

    def allow_key(self, public_key: str) -> None:
        if lib.pyi_broker_allow_key(self._ptr, public_key.encode()) != 0:
            raise PyisolateError(f"not a CURVE public key: {last_error()}")

    def allow(self, service: str, token: str | None = None) -> str:
        p = lib.pyi_broker_allow(
            self._ptr, service.encode(), token.encode() if token else ffi.NULL
        )
        if p == ffi.NULL:
            raise PyisolateError(f"broker refused service name {service!r}: {last_error()}")
        try:
            value: bytes = ffi.string(p)
            return value.decode()
        finally:
            lib.free(p)

    def spawn(
        self,
        service: str,
        argv: Sequence[str],
        env: dict[str, str] | None,
        stdout_fd: int = -1,
        stderr_fd: int = -1,
    ) -> int:
        keep = [ffi.new("char[]", os.fsencode(a)) for a in argv]
        c_argv = ffi.new("const char *[]", [*keep, ffi.NULL])
        if env is None:
            c_envp = ffi.NULL
        else:
            ekeep = [ffi.new("char[]", os.fsencode(f"{k}={v}")) for k, v in env.items()]
            keep.extend(ekeep)
            c_envp = ffi.new("const char *[]", [*ekeep, ffi.NULL])
        pid = lib.pyi_broker_spawn(
            self._ptr, service.encode(), c_argv, c_envp, stdout_fd, stderr_fd
        )
        if pid < 0:
            raise PyisolateError(f"cannot start a process for {service!r}: {last_error()}")
        return int(pid)

    def event_fd(self) -> int:
        return int(lib.pyi_broker_event_fd(self._ptr))

    def next_event(self, timeout_ms: int = 0) -> BrokerEvent | None:
        ev = self._event
        if lib.pyi_broker_event(self._ptr, ev, timeout_ms) != 0:
            return None
        return BrokerEvent(
            int(ev.type), int(ev.pid), int(ev.status), _str(ev.service), _str(ev.text)
        )

    def service_stats(self, service: str) -> dict[str, int] | None:
        st = ffi.new("pyi_service_stats_t *")
        if lib.pyi_broker_service_stats(self._ptr, service.encode(), st) != 0:
            return None
        return {
            f: int(getattr(st, f))
            for f in (
                "requests",
                "replies",
                "errors",
                "bytes_in",
                "bytes_out",
                "in_flight",
                "pid",
                "ready",
            )
        }

    def stats(self) -> dict[str, int]:
        st = ffi.new("pyi_broker_stats_t *")
        lib.pyi_broker_stats(self._ptr, st)
        return {
            f: int(getattr(st, f))
            for f in (
                "messages",
                "malformed",
                "rejected",
                "disconnected",
                "workers",
                "pending",
                "processes",
            )
        }

    def close(self) -> None:
        if self._ptr is not None:
            pp = ffi.new("pyi_broker_t **", self._ptr)
            self._ptr = None
            lib.pyi_broker_destroy(pp)


class Client:
    """A DEALER that calls services; replies come back in any order."""

    def __init__(self, endpoint: str, curve: Curve | None = None) -> None:
        self._ptr = (
            lib.pyi_client_new(endpoint.encode())
            if curve is None
            else lib.pyi_client_new_curve(endpoint.encode(), *curve.args())
        )
        if self._ptr == ffi.NULL:
            raise PyisolateError(f"cannot connect a client to {endpoint}: {last_error()}")
        self._services: dict[str, bytes] = {}

    def fd(self) -> int:
        return int(lib.pyi_client_fd(self._ptr))

    def request(
        self,
        service: str,
        rid: int,
        timeout_ms: int,
        frames: Sequence[Any],
        marks: tuple[int, ...] = (),
    ) -> bool:
        """Send a request (``marks``: the indexes of the frames that are
        tensor descriptors); False when the send queue is full (try again
        later)."""
        if self._ptr is None:
            raise PyisolateError("the client is closed")
        name = self._services.get(service)
        if name is None:
            name = service.encode()
            if len(self._services) < 1024:
                self._services[service] = name
        rc = _client_request(self._ptr, name, rid, timeout_ms, _frames(frames), marks)
        if rc == 0:
            return True
        if rc == 1:
            return False
        if rc == -2:
            raise PyisolateError(f"message has too many frames: {last_error()}")
        raise PyisolateError(f"cannot send a request to {service!r}: {last_error()}")

    def cancel(self, rid: int) -> None:
        if self._ptr is not None:
            lib.pyi_client_cancel(self._ptr, rid)

    def recv(self) -> Message | None:
        if self._ptr is None:
            return None
        t = _recv_client(self._ptr)
        return None if t is None else Message(*t)

    def close(self) -> None:
        if self._ptr is not None:
            pp = ffi.new("pyi_client_t **", self._ptr)
            self._ptr = None
            lib.pyi_client_destroy(pp)


class Worker:
    """A DEALER that offers services and answers requests."""

    def __init__(
        self,
        endpoint: str,
        token: str,
        heartbeat_ms: int = 0,
        liveness: int = 0,
        curve: Curve | None = None,
    ) -> None:
        if curve is None:
            self._ptr = lib.pyi_worker_new(
                endpoint.encode(), token.encode(), heartbeat_ms, liveness
            )
        else:
            self._ptr = lib.pyi_worker_new_curve(
                endpoint.encode(), token.encode(), heartbeat_ms, liveness, *curve.args()
            )
        if self._ptr == ffi.NULL:
            raise PyisolateError(f"cannot connect a worker to {endpoint}: {last_error()}")

    def fd(self) -> int:
        return int(lib.pyi_worker_fd(self._ptr))

    def offer(self, service: str) -> None:
        if lib.pyi_worker_offer(self._ptr, service.encode()) != 0:
            raise PyisolateError(f"cannot offer service {service!r}: {last_error()}")

    def recv(self) -> Message | None:
        if self._ptr is None:
            return None
        t = _recv_worker(self._ptr)
        return None if t is None else Message(*t)

    def reply(self, rid: int, frames: Sequence[Any], marks: tuple[int, ...] = ()) -> None:
        if self._ptr is None:
            raise PyisolateError("the worker is closed")
        rc = _worker_reply(self._ptr, rid, _frames(frames), marks)
        if rc == -2:
            raise PyisolateError(f"message has too many frames: {last_error()}")
        if rc != 0:
            raise PyisolateError(f"cannot send a reply: {last_error()}")

    def error(self, rid: int, code: int, text: str, frames: Sequence[bytes]) -> None:
        if self._ptr is None:
            raise PyisolateError("the worker is closed")
        raw = text.encode("utf-8", "replace")[:1000].replace(b"\0", b"")
        rc = _worker_error(self._ptr, rid, code, raw, _frames(frames))
        if rc == -2:
            raise PyisolateError(f"message has too many frames: {last_error()}")
        if rc != 0:
            raise PyisolateError(f"cannot send an error reply: {last_error()}")

    def heartbeat(self) -> int:
        if self._ptr is None:
            return -1
        return int(lib.pyi_worker_heartbeat(self._ptr))

    def close(self) -> None:
        if self._ptr is not None:
            pp = ffi.new("pyi_worker_t **", self._ptr)
            self._ptr = None
            lib.pyi_worker_destroy(pp)


LANE_OPEN = lib.PYI_LANE_OPEN
LANE_EOF = lib.PYI_LANE_EOF
LANE_BROKEN = lib.PYI_LANE_BROKEN


class Lane:
    """The C end of a local lane (include/pyisolate/pyi_lane.h): protocol
    messages over a connected stream socket, which it takes."""

    def __init__(self, fd: int, max_record: int = 0) -> None:
        self._ptr = lib.pyi_lane_new(fd, max_record)
        if self._ptr == ffi.NULL:
            raise PyisolateError(f"cannot make a lane: {last_error()}")
        self.fd = int(lib.pyi_lane_fd(self._ptr))

    def send(
        self,
        command: int,
        rid: int,
        frames: Sequence[Any] = (),
        marks: tuple[int, ...] = (),
        service: bytes = b"",
        timeout_ms: int = 0,
        code: int = 0,
        text: bytes = b"",
        now: bool = True,
    ) -> int:
        """Send (or queue) one message; the bytes queued after it (0: all
        went to the socket). now=False: only queue it (flush() writes it).
        PyisolateError when the lane is closed or the message cannot
        travel on it."""
        if self._ptr is None:
            raise PyisolateError("the lane is closed")
        rc = _lane_send(
            self._ptr, now, command, rid, service, timeout_ms, code, text, _frames(frames), marks
        )
        if rc == -2:
            raise PyisolateError(f"message has too many frames: {last_error()}")
        if rc < 0:
            raise PyisolateError(f"cannot send on the lane: {last_error()}")
        return rc

    def recv(self) -> Message | None:
        if self._ptr is None:
            return None
        t = _recv_lane(self._ptr)
        return None if t is None else Message(*t)

    def flush(self) -> int:
        """0 all written, 1 some left (wait for writable), -1 closed."""
        return -1 if self._ptr is None else int(lib.pyi_lane_flush(self._ptr))

    def queued(self) -> int:
        return 0 if self._ptr is None else int(lib.pyi_lane_queued(self._ptr))

    def state(self) -> int:
        return LANE_EOF if self._ptr is None else int(lib.pyi_lane_state(self._ptr))

    def error(self) -> str:
        return "closed" if self._ptr is None else _str(lib.pyi_lane_error(self._ptr))

    def count(self, sent: bool, command: int) -> tuple[int, int]:
        """Messages of ``command`` sent (or received) so far, and the bytes
        of their body frames; (0, 0) once closed."""
        if self._ptr is None:
            return 0, 0
        size = ffi.new("uint64_t *")
        n = lib.pyi_lane_count(self._ptr, sent, command, size)
        return int(n), int(size[0])

    def close(self) -> None:
        if self._ptr is not None:
            pp = ffi.new("pyi_lane_t **", self._ptr)
            self._ptr = None
            lib.pyi_lane_destroy(pp)


def bind_to_parent() -> int:
    return int(lib.pyi_worker_bind_to_parent())
