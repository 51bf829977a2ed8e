import asyncio
import os
import sys
import time

from pyisolate import ExtensionBase
from shared_apis import HostError, Relay, Store

_cancelled = []


class Custom(Exception):
    pass


class Basic(ExtensionBase):
    def __init__(self):
        self.events = []

    def before_module_loaded(self):
        self.events.append("before_module_loaded")

    async def on_module_loaded(self, module):
        self.events.append(f"on_module_loaded:{module.__name__}")

    def stop(self):
        path = os.environ.get("STOP_MARK")
        if path:
            with open(path, "w") as f:
                f.write("stopped")

    async def hooks(self):
        return self.events

    async def echo(self, value):
        return value

    def sync_echo(self, value):
        time.sleep(0.001)
        return value

    async def info(self):
        import pyisolate

        return {
            "pid": os.getpid(),
            "sys_path": sys.path,
            "executable": sys.executable,
            "pyisolate": pyisolate.__file__,
            "modules": sorted(m for m in ("numpy", "torch") if m in sys.modules),
        }

    async def types(self, value):
        return [type(v).__name__ for v in value]

    async def say(self, text):
        print(text)
        print("to stderr: " + text, file=sys.stderr)
        return True

    async def fail(self, kind):
        if kind == "value":
            raise ValueError("bad value")
        if kind == "key":
            raise KeyError("missing")
        if kind == "custom":
            raise Custom("custom failure")
        if kind == "host":
            raise HostError("shared type")
        if kind == "zero":
            return 1 / 0
        if kind == "unsendable":
            return object()
        return None

    async def sleep(self, seconds):
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            _cancelled.append(seconds)
            raise
        return seconds

    async def cancelled(self):
        return list(_cancelled)

    async def call_back(self, cb, value):
        return await cb(value)

    async def make_adder(self, n):
        def add(v):
            return v + n

        return add

    async def store_set(self, key, value):
        db = Store()
        await db.set(key, value)
        return await db.get(key)

    async def store_get(self, key):
        return await Store().get(key)

    async def store_pids(self):
        db = Store()
        return {
            "remote": await db.pid(),
            "local": db.where(),
            "me": os.getpid(),
            "isinstance": isinstance(db, Store),
        }

    async def ping_pong(self, depth):
        if depth <= 0:
            return [os.environ.get("EXT_NAME", "?")]
        return [os.environ.get("EXT_NAME", "?")] + await Relay().bounce(
            os.environ.get("EXT_NAME", "?"), depth - 1
        )

    async def nested_cb(self, cb, depth):
        # host -> ext -> host callback -> ext ... to depth
        if depth <= 0:
            return ["ext"]
        return ["ext"] + await cb(depth - 1)

    async def can_import(self, name):
        import importlib

        try:
            importlib.import_module(name)
        except ImportError:
            return False
        return True

    async def unlisted_singleton(self):
        from shared_apis import Unlisted

        return await Unlisted().anything()

    async def round_trip_callable(self, value):
        def plus_one(v):
            return v + 1

        return await Relay().apply(plus_one, value)

    async def use_passed_store(self, store, key):
        return [isinstance(store, Store), await store.get(key)]
