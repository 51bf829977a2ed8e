import numpy
import torch

from pyisolate import ExtensionBase


class TorchNumpy(ExtensionBase):
    async def versions(self):
        return {
            "numpy": numpy.__version__,
            "numpy_file": numpy.__file__,
            "torch_file": torch.__file__,
        }
