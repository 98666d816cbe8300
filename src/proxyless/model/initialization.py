"""The weights every network starts from: the authors' `he_fout` (ProxylessNAS's
`--model_init he_fout`, `MyNetwork.init_model` in the reference code's
search/utils/my_modules.py), also what timm uses for its MobileNet family.

conv: N(0, sqrt(2 / (k·k·out_channels))) -- fan-out, so a depthwise conv (one input channel
per filter) starts as small as its neighbours instead of ~4x larger under PyTorch's fan-in
default; BatchNorm: weight 1, bias 0; linear: U(±1/sqrt(in_features)), bias 0.
`"pytorch"` leaves each layer's own `reset_parameters` (the comparison in
bench/retrain_start.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

WEIGHT_INITS = ("he_fout", "pytorch")


@torch.no_grad()
def initialize(model: nn.Module, scheme: str = "he_fout") -> nn.Module:
    """Set every conv, BatchNorm and linear layer of `model` to `scheme`'s start, in place."""
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"weight init {scheme!r}: expected one of {', '.join(WEIGHT_INITS)}")
    for module in model.modules():
        if scheme == "pytorch":
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d | nn.Linear):
                module.reset_parameters()
        elif isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            module.weight.normal_(0, math.sqrt(2 / (k_h * k_w * module.out_channels)))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.fill_(1)
            module.bias.zero_()
        elif isinstance(module, nn.Linear):
            bound = 1 / math.sqrt(module.weight.shape[1])
            module.weight.uniform_(-bound, bound)
            if module.bias is not None:
                module.bias.zero_()
    return model
