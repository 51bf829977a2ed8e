"""What an extension process sees of itself (its process group, standard
input, descriptors, signals), calls that wait to be released or cancelled,
and values that cannot be sent back."""

import asyncio
import os
import signal
import time

from pyisolate import ExtensionBase

_started = []
_cancelled = []
_release = {}
_sigints = []


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return -1


class Probe(ExtensionBase):
    async def getpid(self):
        return os.getpid()

    async def process(self):
        fds = {}
        for fd in os.listdir("/proc/self/fd"):
            try:
                fds[int(fd)] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                pass
        return {
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "fds": fds,
            "ignored": _status("SigIgn"),
            "blocked": _status("SigBlk"),
            "usr1_default": signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL,
        }

    async def watch_sigint(self):
        # Count SIGINTs from now on (the child ignores them by default).
        signal.signal(signal.SIGINT, lambda *_: _sigints.append(time.time()))
        return True

    async def sigints(self):
        return len(_sigints)

    async def block_loop(self, seconds):
        time.sleep(seconds)  # noqa: ASYNC251 - the event loop is blocked: no heartbeats
        return seconds

    async def wait(self, tag):
        """Wait until released; record the start and a cancellation."""
        event = _release.setdefault(tag, asyncio.Event())
        _started.append(tag)
        try:
            await event.wait()
        except asyncio.CancelledError:
            _cancelled.append(tag)
            raise
        return tag

    async def release(self, tag):
        _release.setdefault(tag, asyncio.Event()).set()

    async def state(self):
        return {"started": list(_started), "cancelled": list(_cancelled)}

    def sync_unsendable(self):
        return object()

    async def unsendable_in_list(self):
        return [1, "two", {3: 1j}]

    async def unsendable_error(self):
        raise ValueError(object())

    async def callback_result(self, cb):
        try:
            await cb()
        except Exception as exc:  # noqa: BLE001 - what the extension saw
            return [type(exc).__name__, str(exc)]
        return None
