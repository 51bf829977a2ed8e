"""The extension perf/remote_bench.py sends arrays to."""

from pyisolate import ExtensionBase


class Sink(ExtensionBase):
    async def size(self, array):
        """The bytes received."""
        return int(array.nbytes)
