"""What tests/python/test_lane.py drives: a well-behaved extension, and one
that acts as a compromised one would on its lane."""

import asyncio
import contextvars
import gc
import os
import time

from pyisolate import ExtensionBase

_CALLS = contextvars.ContextVar("calls", default=0)


class Lanes(ExtensionBase):
    async def as_a_task(self, pause):
        # What a call's code may rely on, before and after its first
        # suspension: it runs as a task of its own, in a context of its own.
        first = asyncio.current_task()
        seen = _CALLS.get()
        _CALLS.set(seen + 1)
        async with asyncio.timeout(30):
            async with asyncio.TaskGroup() as group:
                child = group.create_task(asyncio.sleep(pause, "child"))
        return [
            id(first),
            first is not None and first is asyncio.current_task(),
            child.result(),
            seen,
        ]

    async def getpid(self):
        return os.getpid()

    async def size(self, data):
        return len(data)

    async def hang(self):
        await asyncio.sleep(3600)

    async def block_loop(self, seconds):
        time.sleep(seconds)  # noqa: ASYNC251 - blocks the loop on purpose
        return seconds

    async def store_roundtrip(self, key, value):
        from shared_apis import Store  # given as apis=[Store]

        store = Store()
        await store.set(key, value)
        return await store.get(key)

    async def write_garbage(self, data):
        # What a compromised extension can do: write anything into its lane.
        ends = [o for o in gc.get_objects() if type(o).__name__ == "LaneEnd"]
        for end in ends:
            os.write(end.fd, data)
        return len(ends)

    async def wait_on_host(self):
        # Starts, in a task of its own, a call to the host that cannot end
        # (the host calls back into a callable that sleeps); what that call
        # raised when the host's end of the lane goes is printed.
        from shared_apis import Relay  # given as apis=[Relay]

        async def forever(value):
            await asyncio.sleep(3600)

        async def wait():
            try:
                await Relay().apply(forever, 1)
                outcome = "returned"
            except Exception as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            print(f"outcome: {outcome}", flush=True)

        self._waiting = asyncio.ensure_future(wait())
