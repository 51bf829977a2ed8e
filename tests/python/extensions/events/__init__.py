import asyncio

from pyisolate import ExtensionBase


class Events(ExtensionBase):
    async def progress_async(self, n):
        for i in range(n):
            self.emit_event("progress", {"i": i, "of": n, "from": "async"})
            await asyncio.sleep(0)
        return n

    def progress_sync(self, n):
        # A plain method: runs in a worker thread of the extension.
        for i in range(n):
            self.emit_event("progress", {"i": i, "of": n, "from": "sync"})
        return n

    async def emit(self, name, payload):
        self.emit_event(name, payload)
        return True

    async def echo(self, x):
        return x

    async def fail(self):
        raise ValueError("no")

    async def hang(self):
        await asyncio.sleep(3600)
