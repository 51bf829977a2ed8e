import numpy as np
from shared import SharedAPI

from pyisolate import ExtensionBase


class NumpyLegacy(ExtensionBase):
    async def process(self):
        n = await SharedAPI().bump("numpy_legacy")
        total = np.arange(10).sum()
        return (
            f"numpy_legacy saw numpy {np.__version__} from {np.__file__} "
            f"(sum 0..9 = {total}, counter now {n})"
        )
