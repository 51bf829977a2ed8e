"""Host-side API classes shared with test extensions."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pyisolate import ExtensionBase, ProxiedSingleton, local_execution


class Store(ProxiedSingleton):
    """A key-value store owned by the host (sync methods)."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}
        self.host_pid = os.getpid()

    def get(self, key: Any) -> Any:
        return self.data.get(key)

    def set(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def pid(self) -> int:
        return os.getpid()

    @local_execution
    def where(self) -> int:
        return os.getpid()


class Relay(ProxiedSingleton):
    """Async singleton that calls back into extensions (nesting)."""

    def __init__(self) -> None:
        self.handles: dict[str, Any] = {}

    async def bounce(self, ext_name: str, depth: int) -> list[str]:
        await asyncio.sleep(0)
        if depth <= 0:
            return ["host"]
        ext = self.handles[ext_name]
        return ["host"] + await ext.ping_pong(depth - 1)

    async def apply(self, fn: Any, value: Any) -> Any:
        """Call a callable the extension passed (it lives in the extension)."""
        return await fn(value)


class HostBase(ExtensionBase):
    """An extension type given to the manager; used when a module has none."""

    def hello(self) -> str:
        return f"hello from {type(self).__name__} in {os.getpid()}"


class HostError(Exception):
    """An exception type importable on both sides."""


class Unlisted(ProxiedSingleton):
    """Never given in apis=[...]: extensions cannot reach it."""

    def anything(self) -> str:
        return "should not be reachable"
