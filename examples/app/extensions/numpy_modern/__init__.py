import numpy as np
from shared import SharedAPI

from pyisolate import ExtensionBase


class NumpyModern(ExtensionBase):
    async def process(self):
        n = await SharedAPI().bump("numpy_modern")
        total = np.arange(10).sum()
        return (
            f"numpy_modern saw numpy {np.__version__} from {np.__file__} "
            f"(sum 0..9 = {total}, counter now {n})"
        )
