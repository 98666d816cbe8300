"""BatchNorm statistics in a supernet: left untouched by validation batches, and
re-estimated for a network taken out of it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Use batch statistics but leave running statistics (and their counter) untouched."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
           and m.track_running_stats]
    for bn in bns:
        bn.track_running_stats = False
    try:
        yield
    finally:
        for bn in bns:
            bn.track_running_stats = True


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, max_batches: int) -> None:
    """Re-estimate BatchNorm running statistics of `model` as plain averages over batches.

    A supernet candidate's running statistics mix every context it was trained in, so a
    derived network evaluated with them can score near chance although its weights are good
    (the single-path one-shot literature's "BN recalibration").
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    try:
        for i, (x, _) in enumerate(batches):
            if i >= max_batches:
                break
            model(x)
    finally:
        for bn, momentum in zip(bns, momenta, strict=True):
            bn.momentum = momentum
        model.train(was_training)
