import numpy as np

from pyisolate import ExtensionBase


class NumpyOne(ExtensionBase):
    async def numpy_info(self):
        return {"version": np.__version__, "file": np.__file__}

    async def double(self, arr):
        return arr * 2

    async def mean(self, data):
        return np.array(data).mean()

    async def double_all(self, arrays):
        return [a * 2 if a.dtype != bool else a for a in arrays]
