import torch

from pyisolate import ExtensionBase


class Torchy(ExtensionBase):
    async def describe(self, tensor):
        return {
            "torch_file": torch.__file__,
            "version": torch.__version__,
            "shape": list(tensor.shape),
            "sum": float(tensor.sum()),
            "is_tensor": isinstance(tensor, torch.Tensor),
        }

    async def scale(self, tensor, factor):
        return tensor * factor
