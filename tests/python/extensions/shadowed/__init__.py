"""An extension whose methods have the names of the host handle's own
attributes (test_porting): pid(), name(), config(), stop(), and through
__getattr__ any other public name, answering with that name."""

import os

from pyisolate import ExtensionBase

print("shadowed: module imported")


class Shadowed(ExtensionBase):
    def __init__(self):
        self.stops = 0

    def pid(self):
        return os.getpid()

    def name(self):
        return "the extension's own name()"

    async def config(self):
        return {"from": "the extension"}

    def stop(self):
        # A method the host may call (ext.remote.stop()) and the stop() hook.
        self.stops += 1
        path = os.environ.get("STOP_MARK")
        if path:
            with open(path, "a") as f:
                f.write(f"stop {self.stops}\n")
        return self.stops

    def import_probe(self, module):
        """The version and file of a package installed in this venv."""
        mod = __import__(module)
        return getattr(mod, "VERSION", None), mod.__file__

    def environ(self, key):
        return os.environ.get(key)

    def __getattr__(self, attr):
        if attr.startswith("_"):
            raise AttributeError(attr)
        return lambda *args, **kwargs: attr
