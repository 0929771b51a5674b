"""Which device a module lives on: the device of its first parameter or buffer."""
from __future__ import annotations

import torch
from torch import nn


def module_device(module: nn.Module) -> torch.device:
    """Return the device of ``module``'s first parameter or buffer (cpu if it has none)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
