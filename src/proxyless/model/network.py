"""A standalone network built from an Architecture alone, its weights started as the
authors' (`model.initialization`: he_fout).

    >>> net = build_network(load_architecture("arch.json"))

Module names (`stem`, `first_block`, `blocks.<i>.op.conv_pw`, `feature_mix`, `classifier`)
are the supernet's too, so a derived network can take the supernet's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from proxyless.model.architecture import Architecture
from proxyless.model.initialization import initialize
from proxyless.model.layers import block_layers, head_layers, tail_layers
from proxyless.model.space import SearchSpace


class Backbone(nn.Module):
    """The fixed layers around the searchable blocks; subclasses fill `self.blocks`."""

    def __init__(self, space: SearchSpace, dropout: float = 0.0) -> None:
        super().__init__()
        self.space = space
        head, tail = head_layers(space), tail_layers(space)
        self._head, self._tail = [layer.name for layer in head], [layer.name for layer in tail]
        for layer in head:
            self.add_module(layer.name, layer.build(dropout))
        self.blocks = nn.ModuleList()
        for layer in tail:
            self.add_module(layer.name, layer.build(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._head:
            x = getattr(self, name)(x)
        for block in self.blocks:
            x = block(x)
        for name in self._tail:
            x = getattr(self, name)(x)
        return x


class ProxylessNet(Backbone):
    """The network of one architecture: every block runs its single chosen op."""

    def __init__(self, arch: Architecture, dropout: float = 0.0) -> None:
        super().__init__(arch.space, dropout)
        self.arch = arch
        for layer in block_layers(arch):
            self.blocks.append(layer.build())
        initialize(self)


def build_network(arch: Architecture, dropout: float = 0.0) -> ProxylessNet:
    return ProxylessNet(arch, dropout)
