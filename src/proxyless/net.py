"""A standalone network built from an Architecture alone.

    >>> net = build_network(load_architecture("arch.json"))

Module names (`stem`, `first_block`, `blocks.<i>.op.conv_pw`, `feature_mix`, `classifier`)
are the supernet's too, so a derived network can take the supernet's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from proxyless.arch import Architecture
from proxyless.ops import Block, Classifier, ConvBNAct, MBConv, build_op
from proxyless.space import SearchSpace


class Backbone(nn.Module):
    """The fixed layers around the searchable blocks; subclasses fill `self.blocks`."""

    def __init__(self, space: SearchSpace, dropout: float = 0.0) -> None:
        super().__init__()
        self.space = space
        self.stem = ConvBNAct(space.in_channels, space.stem_channels, space.stem.kernel,
                              space.stem.stride)
        self.first_block = MBConv(space.stem_channels, space.first_block_channels,
                                  space.first_block.kernel, 1, 1)
        self.blocks = nn.ModuleList()
        self.feature_mix = ConvBNAct(space.last_channels, space.feature_mix_channels, 1)
        self.classifier = Classifier(space.feature_mix_channels, space.num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first_block(self.stem(x))
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.feature_mix(x))


class ProxylessNet(Backbone):
    """The network of one architecture: every block runs its single chosen op."""

    def __init__(self, arch: Architecture, dropout: float = 0.0) -> None:
        super().__init__(arch.space, dropout)
        self.arch = arch
        for slot, token in zip(arch.space.slots(), arch.blocks, strict=True):
            op = build_op(token, slot.in_channels, slot.out_channels, slot.stride)
            self.blocks.append(Block(op, slot.has_skip))


def build_network(arch: Architecture, dropout: float = 0.0) -> ProxylessNet:
    return ProxylessNet(arch, dropout)
