"""An extension process's output: its stdout and stderr pipes, read on the
event loop and logged one whole line at a time (logger
``pyisolate.extension.<name>``: stdout at INFO, stderr at WARNING). The last
lines of stderr are kept for the load error of a process that died early.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os

TAIL_LINES = 40


class OutputReader:
    """Owns the read ends of one process's pipes until close()."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self._loop = loop
        self._name = name
        self._logger = logging.getLogger(f"pyisolate.extension.{name}")
        self._pipes: dict[int, tuple[str, bytearray]] = {}  # fd -> (stream, partial line)
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)

    @property
    def tail(self) -> str:
        """The last lines read from stderr."""
        return "\n".join(self._tail)

    def add(self, fd: int, stream: str) -> None:
        """Read pipe fd ("stdout" or "stderr") from now on; it is closed at EOF
        or by close()."""
        os.set_blocking(fd, False)
        self._pipes[fd] = (stream, bytearray())
        self._loop.add_reader(fd, self._read, fd)

    def drain(self) -> None:
        """Log whatever the pipes hold now (without waiting for more)."""
        for fd in list(self._pipes):
            for _ in range(256):
                if not self._read(fd):
                    break

    def close(self) -> None:
        """Drain, log the partial last lines, close the pipes."""
        self.drain()
        for fd in list(self._pipes):
            stream, buf = self._pipes[fd]
            if buf:
                self._log(stream, bytes(buf))
            self._close(fd)

    def _read(self, fd: int) -> bool:
        """Read what pipe fd holds once and log its whole lines; False when
        there is nothing more to read now (would block, or closed)."""
        entry = self._pipes.get(fd)
        if entry is None:
            return False
        stream, buf = entry
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            if buf:
                self._log(stream, bytes(buf))
            self._close(fd)
            return False
        buf += data
        *lines, rest = bytes(buf).split(b"\n")
        buf[:] = rest
        for line in lines:
            self._log(stream, line)
        return True

    def _log(self, stream: str, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if stream == "stderr":
            self._tail.append(line)
            self._logger.warning("[%s] %s", self._name, line)
        else:
            self._logger.info("[%s] %s", self._name, line)

    def _close(self, fd: int) -> None:
        if self._pipes.pop(fd, None) is not None:
            try:
                self._loop.remove_reader(fd)
            except Exception:
                pass
            os.close(fd)
