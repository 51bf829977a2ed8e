"""Setting up local lanes (docs/protocol.md, "Local lane").

The host listens on one Unix socket in its broker's runtime directory
(``lane.sock``, mode 0600 in a 0700 directory). It tells a process it
spawns that path in ``$PYI_LANE``; the process connects once, at start,
before it loads its extension. The host accepts a connection only from a
pid it spawned and still expects (the kernel's SO_PEERCRED, which the
peer cannot forge), of this user, and only once per pid; any other is
closed unread. The accepted socket is the lane (_core.Lane).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable

logger = logging.getLogger("pyisolate")

LANE_SOCKET = "lane.sock"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class LaneListener:
    """The host's listening socket; ``expect(pid, take)`` hands the lane
    socket of process pid (an fd, taken) to ``take``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, path: str) -> None:
        self.loop = loop
        self.path = path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock: socket.socket | None = sock
        self._expected: dict[int, Callable[[int], None]] = {}
        loop.add_reader(sock.fileno(), self._accept)

    def expect(self, pid: int, take: Callable[[int], None]) -> None:
        self._expected[pid] = take

    def forget(self, pid: int) -> None:
        self._expected.pop(pid, None)

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("lane socket: accept failed: %s", exc)
                return
            try:
                pid, uid, _gid = _UCRED.unpack(
                    conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
                )
            except OSError:
                conn.close()
                continue
            take = self._expected.pop(pid, None) if uid == os.getuid() else None
            if take is None:
                logger.warning("lane socket: refused a connection from pid %d", pid)
                conn.close()
                continue
            _grow(conn)
            take(conn.detach())

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self._expected.clear()


# Bytes a lane end may have in flight before its writes wait (the kernel
# caps it at net.core.wmem_max): a large message crosses in fewer
# wake-ups of the reader. A Unix stream socket charges its peer's unread
# bytes to the sender's buffer, so the send side is the one that counts.
LANE_SNDBUF = 4 << 20


def _grow(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, LANE_SNDBUF)


def connect(path: str) -> int:
    """The extension's end: connect to the host's lane socket; the fd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        _grow(sock)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock.detach()
