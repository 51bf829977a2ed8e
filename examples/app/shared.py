# shared.py - the singleton every extension shares with the host
from pyisolate import ProxiedSingleton


class SharedAPI(ProxiedSingleton):
    """Lives in the host; extensions get a proxy with awaitable methods."""

    def __init__(self):
        self.counter = 0
        self.seen = []

    def bump(self, who):
        self.counter += 1
        self.seen.append(who)
        return self.counter

    def count(self):
        return self.counter

    def make_tensor(self):
        import torch

        return torch.arange(12, dtype=torch.float32).reshape(3, 4)
