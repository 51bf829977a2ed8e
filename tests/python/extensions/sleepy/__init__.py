import asyncio
import os
import time

from pyisolate import ExtensionBase


class Sleepy(ExtensionBase):
    async def getpid(self):
        return os.getpid()

    async def hang(self):
        await asyncio.sleep(3600)

    def block(self, seconds):
        time.sleep(seconds)
        return seconds

    async def block_loop(self, seconds):
        # Blocks the extension's event loop (no heartbeats meanwhile).
        time.sleep(seconds)  # noqa: ASYNC251 - blocks the loop on purpose
        return seconds
