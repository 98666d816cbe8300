"""The one description of a network's layers: shapes, module, cost and latency-table key.

Every layer of every network (the fixed stem, first block, feature mix and classifier, and
each searchable block's candidates) is a `Layer` record. The standalone network and the
supernet build their fixed layers from it, the profiler builds and times it, and parameter
counts, multiply-adds and latency look-ups are read off it, so none of them can drift apart.
Keys follow the reference code's latency tables (`expanded_conv-input:28x28x40-output:
14x14x80-expand:6-kernel:5-stride:2-idskip:0`, `Conv-...` for the stem, `Conv_1-...` for the
feature mix, `Logits-...` for pooling + classifier), so its published tables load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from torch import nn

from proxyless.model.architecture import Architecture
from proxyless.model.ops import Block, Classifier, ConvBNAct, MBConv, build_op, expanded_channels
from proxyless.model.space import SearchSpace, conv_out_size, parse_token

STEM, MBCONV, ZERO_OP, FEATURE_MIX, CLASSIFIER = ("stem", "mbconv", "zero", "feature_mix",
                                                  "classifier")


@dataclass(frozen=True)
class Layer:
    name: str           # "stem", "first_block", "block3", "feature_mix", "classifier"
    token: str          # op token for blocks ("k5e6", "zero"); the layer's name otherwise
    kind: str           # STEM, MBCONV, ZERO_OP, FEATURE_MIX or CLASSIFIER
    in_channels: int
    out_channels: int
    in_size: int        # input height = width
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    skip: bool = False         # identity shortcut around the op
    searchable: bool = False   # a searchable block (its module is wrapped in a `Block`)

    @property
    def out_size(self) -> int:
        return conv_out_size(self.in_size, self.stride)

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.in_channels, self.in_size, self.in_size)

    @cached_property
    def key(self) -> str:
        """The latency-table key ("" for zero: it costs nothing)."""
        i, o = self.in_size, self.out_size
        if self.kind == STEM:
            return f"Conv-input:{i}x{i}x{self.in_channels}-output:{o}x{o}x{self.out_channels}"
        if self.kind == FEATURE_MIX:
            return f"Conv_1-input:{i}x{i}x{self.in_channels}-output:{o}x{o}x{self.out_channels}"
        if self.kind == CLASSIFIER:
            return f"Logits-input:{i}x{i}x{self.in_channels}-output:{self.out_channels}"
        if self.kind == MBCONV:
            return (f"expanded_conv-input:{i}x{i}x{self.in_channels}-"
                    f"output:{o}x{o}x{self.out_channels}-expand:{self.expand}-"
                    f"kernel:{self.kernel}-stride:{self.stride}-idskip:{int(self.skip)}")
        return ""

    @cached_property
    def _cost(self) -> tuple[int, int]:
        if self.kind in (STEM, FEATURE_MIX):
            return _conv_cost(self.in_channels, self.out_channels, self.kernel, self.out_size)
        if self.kind == CLASSIFIER:
            weights = self.in_channels * self.out_channels
            return weights + self.out_channels, weights
        if self.kind == MBCONV:
            return _mbconv_cost(self)
        return 0, 0

    @property
    def params(self) -> int:
        return self._cost[0]

    @property
    def macs(self) -> int:
        return self._cost[1]

    def build(self, dropout: float = 0.0) -> nn.Module:
        """The layer's module (a searchable block's op inside its `Block`)."""
        if self.kind == STEM:
            return ConvBNAct(self.in_channels, self.out_channels, self.kernel, self.stride)
        if self.kind == FEATURE_MIX:
            return ConvBNAct(self.in_channels, self.out_channels, 1)
        if self.kind == CLASSIFIER:
            return Classifier(self.in_channels, self.out_channels, dropout)
        if not self.searchable:
            return MBConv(self.in_channels, self.out_channels, self.kernel, self.stride,
                          self.expand)
        return Block(build_op(self.token, self.in_channels, self.out_channels, self.stride),
                     self.skip)


def _bn(channels: int) -> int:
    return 2 * channels  # weight and bias (running statistics are buffers)


def _conv_cost(in_chs: int, out_chs: int, kernel: int, out_size: int,
               groups: int = 1) -> tuple[int, int]:
    params = in_chs // groups * out_chs * kernel * kernel
    return params + _bn(out_chs), params * out_size * out_size


def _mbconv_cost(layer: Layer) -> tuple[int, int]:
    mid = expanded_channels(layer.in_channels, layer.expand)
    convs = [(mid, mid, layer.kernel, layer.out_size, mid),
             (mid, layer.out_channels, 1, layer.out_size, 1)]
    if layer.expand != 1:
        convs.insert(0, (layer.in_channels, mid, 1, layer.in_size, 1))
    costs = [_conv_cost(*conv) for conv in convs]
    return sum(p for p, _ in costs), sum(m for _, m in costs)


def head_layers(space: SearchSpace) -> list[Layer]:
    """The fixed layers before the searchable blocks: the stem and the first block."""
    s = space
    return [
        Layer("stem", "stem", STEM, s.in_channels, s.stem_channels, s.input_size,
              s.stem.kernel, s.stem.stride),
        Layer("first_block", "first_block", MBCONV, s.stem_channels, s.first_block_channels,
              s.stem_out_size, s.first_block.kernel),
    ]


def tail_layers(space: SearchSpace) -> list[Layer]:
    """The fixed layers after the searchable blocks: the feature mix and the classifier."""
    s = space
    return [
        Layer("feature_mix", "feature_mix", FEATURE_MIX, s.last_channels,
              s.feature_mix_channels, s.final_size),
        Layer("classifier", "classifier", CLASSIFIER, s.feature_mix_channels, s.num_classes,
              s.final_size),
    ]


def fixed_layers(space: SearchSpace) -> list[Layer]:
    """The layers that every architecture of the space shares."""
    return head_layers(space) + tail_layers(space)


def candidate_layers(space: SearchSpace) -> list[list[Layer]]:
    """For each searchable block, one Layer per candidate (in gate order)."""
    table = []
    for slot in space.slots():
        row = []
        for token in slot.candidates:
            spec = parse_token(token)
            row.append(Layer(f"block{slot.index}", token, ZERO_OP if spec.is_zero else MBCONV,
                             slot.in_channels, slot.out_channels, slot.in_size, spec.kernel,
                             slot.stride, spec.expand, slot.has_skip, searchable=True))
        table.append(row)
    return table


def block_layers(arch: Architecture) -> list[Layer]:
    """The chosen candidate of every searchable block (zero blocks included, at 0)."""
    return [row[slot.candidates.index(token)]
            for row, slot, token in zip(candidate_layers(arch.space), arch.space.slots(),
                                        arch.blocks, strict=True)]


def walk(arch: Architecture) -> list[Layer]:
    """Every layer of the architecture's network, in order."""
    return head_layers(arch.space) + block_layers(arch) + tail_layers(arch.space)


def count_params(arch: Architecture) -> int:
    return sum(layer.params for layer in walk(arch))


def count_macs(arch: Architecture) -> int:
    return sum(layer.macs for layer in walk(arch))
