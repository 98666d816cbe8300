"""The weights' optimizer (SGD with Nesterov momentum, no decay on BatchNorm or biases) and
the cosine learning-rate schedule every training loop uses."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


def weight_optimizer(params: Iterable[nn.Parameter], lr: float, momentum: float,
                     weight_decay: float, decay_bn: bool = False) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on conv/linear weights only (BatchNorm
    parameters and biases are the 1-D ones), or on every weight with `decay_bn`."""
    decay, no_decay = [], []
    for param in params:
        if param.requires_grad:
            (no_decay if param.ndim <= 1 and not decay_bn else decay).append(param)
    # fused on a GPU: one kernel for all parameters, and with fp16 the gradient scaler hands
    # it its inf check on the device instead of reading it on the host every step
    fused = bool(decay or no_decay) and (decay or no_decay)[0].device.type == "cuda"
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                           momentum=momentum, nesterov=True, fused=fused or None)


def cosine_schedule(steps: int, restart_at: int = 0,
                    first_scale: float = 1.0) -> Callable[[int], float]:
    """The learning-rate factor of a step: a cosine from 1 to 0 over `steps`, then 0.

    With `restart_at`, a first cosine over the steps before it (from `first_scale`) and a
    fresh one over `steps` after it (the search: one over the warm-up, one over the search,
    as the reference, whose warm-up starts from twice the search's rate).
    """
    def factor(step: int) -> float:
        if step < restart_at:
            return first_scale * _cosine(step, restart_at)
        return _cosine(step - restart_at, steps)
    return factor


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
