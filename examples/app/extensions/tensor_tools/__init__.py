import torch
from shared import SharedAPI

from pyisolate import ExtensionBase


class TensorTools(ExtensionBase):
    async def process(self):
        api = SharedAPI()
        n = await api.bump("tensor_tools")
        tensor = await api.make_tensor()  # a torch tensor from the host
        kind = "a torch.Tensor" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        return (
            f"tensor_tools saw {kind} of shape {tuple(tensor.shape)}, mean "
            f"{tensor.mean().item():.2f}, using the host's torch {torch.__version__} "
            f"from {torch.__file__} (counter now {n})"
        )
